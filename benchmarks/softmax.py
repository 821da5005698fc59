"""softmax: row softmax of a (4096, 1024) float32 matrix (bandwidth-bound)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functions
from .core import Inputs, Outputs, Workload, register_workload

SIZES = {"full": {"rows": 4096, "cols": 1024}, "quick": {"rows": 256, "cols": 1024}}


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    return {"x": (4 * rng.standard_normal((size["rows"], size["cols"]))).astype(np.float32)}


def numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference(inp: Inputs) -> Outputs:
    return [numpy_softmax(inp["x"].astype(np.float64))]


WORKLOAD = register_workload(Workload(
    name="softmax",
    description="softmax over the rows of a (4096, 1024) float32 matrix",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls=functions.impls(
        ("x",),
        tracejit=lambda tj: lambda x: tj.softmax(x, 1),
        numpy=numpy_softmax,
        torch=lambda th: lambda x: th.softmax(x, 1),
        jax=lambda jx: lambda x: jx.nn.softmax(x, axis=1),
    ),
    tolerance=1e-5,
    repeat=15,
    roofline_bytes=lambda size: 4 * size["rows"] * size["cols"],
))
