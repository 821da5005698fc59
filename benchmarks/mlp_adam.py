"""mlp-adam: one training step of issue 4's model, `Sequential(Linear(1000, 100), ReLU(),
Linear(100, 10))`, batch 64, MSE loss, Adam (lr=1e-3), written with nn and optim as users do
(`zero_grad`, `backward`, `step`). The check runs three steps (the jit traces while Adam's state
and `.grad` are created, and compiles on the third) and compares the last loss and every
parameter's total update with float64 NumPy in relative L2 norm (Adam, see mlp_large.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import train
from .core import Inputs, Outputs, Workload, norm_error, register_workload

CHECK_STEPS = 3
SIZES = {"full": {"batch": 64, "widths": [1000, 100, 10]},
         "quick": {"batch": 64, "widths": [1000, 100, 10]}}


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    b, widths = size["batch"], size["widths"]
    return {"x": rng.standard_normal((b, widths[0])).astype(np.float32),
            "y": rng.standard_normal((b, widths[-1])).astype(np.float32),
            "params": train.init_params(rng, list(widths)), "loss": "mse", "lr": 1e-3}


def reference(inp: Inputs) -> Outputs:
    return train.reference(inp, CHECK_STEPS)


WORKLOAD = register_workload(Workload(
    name="mlp-adam",
    description="Sequential(Linear(1000,100), ReLU, Linear(100,10)) train step, batch 64, MSE, "
                "Adam (one step per call)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls={
        "tracejit-jit": lambda inp: train.tracejit_case(inp, 1, jit=True),
        "tracejit-eager": lambda inp: train.tracejit_case(inp, 1, jit=False),
        "numpy": lambda inp: train.numpy_case(inp, 1),
        "torch": lambda inp: train.torch_case(inp, 1, compile=False),
        "torch-compile": lambda inp: train.torch_case(inp, 1, compile=True),
        "jax": lambda inp: train.jax_case(inp, 1),
    },
    tolerance=2e-2,
    error=norm_error,
    repeat=25,
    check_runs=CHECK_STEPS,
))
