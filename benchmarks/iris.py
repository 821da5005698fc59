"""iris: 1000 full-batch Adam steps (lr=0.01) of the 4-10-3 ReLU classifier with cross entropy
on Fisher's Iris data (benchmarks/data/iris.csv, shipped with the package). One call is the
whole training run; the check compares its final loss and parameter updates with float64 NumPy.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

from . import train
from .core import Inputs, Outputs, Workload, register_workload

SIZES = {"full": {"steps": 1000, "hidden": 10}, "quick": {"steps": 50, "hidden": 10}}


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """(features float64 150x4, classes int64); the first line of the file is a header."""
    text = resources.files(__package__).joinpath("data/iris.csv").read_text()
    rows = np.loadtxt(text.splitlines()[1:], delimiter=",")
    return rows[:, :4], rows[:, 4].astype(np.int64)


def make_inputs(size: dict[str, Any]) -> Inputs:
    features, classes = load_iris()
    rng = np.random.default_rng(0)
    return {"x": features.astype(np.float32), "y": classes,
            "params": train.init_params(rng, [4, size["hidden"], 3]),
            "loss": "ce", "lr": 0.01, "steps": size["steps"]}


def reference(inp: Inputs) -> Outputs:
    return train.reference(inp, inp["steps"])


WORKLOAD = register_workload(Workload(
    name="iris",
    description="Iris 4-10-3 MLP, cross entropy, Adam: the whole training run per call",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls={
        "tracejit-jit": lambda inp: train.tracejit_case(inp, inp["steps"], jit=True),
        "tracejit-eager": lambda inp: train.tracejit_case(inp, inp["steps"], jit=False),
        "numpy": lambda inp: train.numpy_case(inp, inp["steps"]),
        "torch": lambda inp: train.torch_case(inp, inp["steps"], compile=False),
        "torch-compile": lambda inp: train.torch_case(inp, inp["steps"], compile=True),
        "jax": lambda inp: train.jax_case(inp, inp["steps"]),
    },
    tolerance=1e-3,
    repeat=5,
))
