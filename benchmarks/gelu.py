"""gelu: the tanh approximation of GELU over 2^24 float32 values (bandwidth-bound: the table
shows the fraction of a same-size copy's speed)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import functions
from .core import Inputs, Outputs, Workload, register_workload

SIZES = {"full": {"n": 2**24}, "quick": {"n": 2**16}}
C = math.sqrt(2 / math.pi)


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    return {"x": (3 * rng.standard_normal(size["n"])).astype(np.float32)}


def numpy_gelu(x: np.ndarray) -> np.ndarray:
    """By hand; in float32 for float32 input (NumPy 2 keeps Python floats weak)."""
    return 0.5 * x * (1 + np.tanh(C * (x + 0.044715 * (x * x * x))))


def reference(inp: Inputs) -> Outputs:
    return [numpy_gelu(inp["x"].astype(np.float64))]


WORKLOAD = register_workload(Workload(
    name="gelu",
    description="GELU (tanh approximation) over 2^24 float32",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls=functions.impls(
        ("x",),
        tracejit=lambda tj: lambda x: tj.gelu(x, approximate="tanh"),
        numpy=numpy_gelu,
        torch=lambda th: lambda x: th.nn.functional.gelu(x, approximate="tanh"),
        jax=lambda jx: lambda x: jx.nn.gelu(x, approximate=True),
    ),
    tolerance=1e-5,
    repeat=9,
    roofline_bytes=lambda size: 4 * size["n"],
))
