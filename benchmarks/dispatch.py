"""dispatch: the per-call cost of `x * 2 + 1` on a 16-element float32 tensor, where the work
is nothing and the framework's overhead (dispatch, guards, allocation) is everything."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functions
from .core import Inputs, Outputs, Workload, register_workload

SIZES = {"full": {"n": 16}, "quick": {"n": 16}}


def make_inputs(size: dict[str, Any]) -> Inputs:
    return {"x": np.random.default_rng(0).standard_normal(size["n"]).astype(np.float32)}


def x2p1(x: Any) -> Any:
    return x * 2 + 1


def reference(inp: Inputs) -> Outputs:
    return [x2p1(inp["x"].astype(np.float64))]


WORKLOAD = register_workload(Workload(
    name="dispatch",
    description="x * 2 + 1 on 16 float32 elements, per call (two ops in eager mode)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls=functions.impls(("x",), tracejit=lambda tj: x2p1, numpy=x2p1,
                          torch=lambda th: x2p1, jax=lambda jx: x2p1),
    tolerance=1e-6,
    repeat=25,
))
