"""mlp-large: one training step of a 3-layer 1024-wide MLP (three Linear layers, ReLU between),
batch 512, MSE loss, Adam (lr=1e-3). The check runs three steps and compares the last loss and
every parameter's total update with the float64 NumPy reference, in relative L2 norm: Adam's
first steps move every weight by about +-lr whatever its gradient's size, so the few weights
whose gradient is ~1e-12 take a sign from float32 rounding (a max-norm error of ~0.8 for any
float32 implementation, 5e-3 in L2 norm), while a wrong gradient or update is off by O(1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import train
from .core import Inputs, Outputs, Workload, norm_error, register_workload

CHECK_STEPS = 3  # the jit traces twice (lazy Adam state, .grad) and compiles on step 3
SIZES = {"full": {"batch": 512, "width": 1024, "layers": 3},
         "quick": {"batch": 64, "width": 128, "layers": 3}}


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    b, w = size["batch"], size["width"]
    return {"x": rng.standard_normal((b, w)).astype(np.float32),
            "y": rng.standard_normal((b, w)).astype(np.float32),
            "params": train.init_params(rng, [w] * (size["layers"] + 1)),
            "loss": "mse", "lr": 1e-3}


def reference(inp: Inputs) -> Outputs:
    return train.reference(inp, CHECK_STEPS)


WORKLOAD = register_workload(Workload(
    name="mlp-large",
    description="3x1024 MLP train step, batch 512, MSE, Adam (one step per call)",
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
    repeat=15,
    check_runs=CHECK_STEPS,
))
