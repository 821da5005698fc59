"""layernorm: layer normalisation over the last dimension of a (4096, 1024) float32 matrix,
with weight and bias, eps=1e-5 (bandwidth-bound)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functions
from .core import Inputs, Outputs, Workload, register_workload

SIZES = {"full": {"rows": 4096, "cols": 1024}, "quick": {"rows": 256, "cols": 1024}}
EPS = 1e-5


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    rows, cols = size["rows"], size["cols"]
    return {"x": (2 * rng.standard_normal((rows, cols)) + 1).astype(np.float32),
            "w": (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32),
            "b": (0.1 * rng.standard_normal(cols)).astype(np.float32)}


def numpy_layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=1, keepdims=True)
    c = x - mu
    var = (c * c).mean(axis=1, keepdims=True)
    return c / np.sqrt(var + EPS) * w + b


def reference(inp: Inputs) -> Outputs:
    return [numpy_layernorm(*(inp[k].astype(np.float64) for k in ("x", "w", "b")))]


def tracejit_layernorm(tj: Any) -> Any:
    """nn.functional.layer_norm once tracejit.nn has it; written in primitives until then."""
    fn = getattr(getattr(getattr(tj, "nn", None), "functional", None), "layer_norm", None)
    if fn is not None:
        return lambda x, w, b: fn(x, (x.shape[-1],), w, b, EPS)

    def layer_norm(x: Any, w: Any, b: Any) -> Any:
        c = x - x.mean(-1, keepdim=True)
        var = (c * c).mean(-1, keepdim=True)
        return c * (var + EPS).rsqrt() * w + b

    return layer_norm


def jax_layernorm(jx: Any) -> Any:
    jnp = jx.numpy

    def layer_norm(x: Any, w: Any, b: Any) -> Any:
        c = x - x.mean(axis=-1, keepdims=True)
        return c * jx.lax.rsqrt((c * c).mean(axis=-1, keepdims=True) + EPS) * w + b

    del jnp
    return layer_norm


WORKLOAD = register_workload(Workload(
    name="layernorm",
    description="layer norm (weight, bias) over the rows of a (4096, 1024) float32 matrix",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls=functions.impls(
        ("x", "w", "b"),
        tracejit=tracejit_layernorm,
        numpy=numpy_layernorm,
        torch=lambda th: lambda x, w, b: th.nn.functional.layer_norm(
            x, (x.shape[-1],), w, b, EPS),
        jax=jax_layernorm,
    ),
    tolerance=1e-5,
    repeat=15,
    roofline_bytes=lambda size: 4 * size["rows"] * size["cols"],
))
