"""layernorm-bwd: the gradients dx, dw, db of y = layer_norm(x, (1024,), w, b, eps=1e-5) over a
(4096, 1024) float32 matrix, for the loss sum(y * g) with a given upstream gradient g (issue 10:
"their backward (..., layernorm) faster than torch eager's"; bandwidth-bound).

One call is the forward and the backward, as a training step runs them. tracejit and torch call
`nn.functional.layer_norm` on x, w, b that require grad and `autograd.grad(y, (x, w, b), g)`,
the vector-Jacobian product with g, which is the gradient of sum(y * g) without forming the
product; jax is `jax.jit` of `jax.vjp`; NumPy is the analytic gradient by hand (float64: the
reference):

    xhat = (x - mean(x)) * rstd,  rstd = 1 / sqrt(var(x) + eps)    (per row, biased var)
    db = sum_rows(g),  dw = sum_rows(g * xhat)
    dx = rstd * (g*w - mean(g*w) - xhat * mean(g*w * xhat))         (means over the row)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functions
from .core import Inputs, Outputs, Workload, register_workload
from .layernorm import EPS, jax_layernorm

SIZES = {"full": {"rows": 4096, "cols": 1024}, "quick": {"rows": 256, "cols": 1024}}


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    rows, cols = size["rows"], size["cols"]
    return {"x": (2 * rng.standard_normal((rows, cols)) + 1).astype(np.float32),
            "w": (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32),
            "b": (0.1 * rng.standard_normal(cols)).astype(np.float32),
            "g": rng.standard_normal((rows, cols)).astype(np.float32)}


def numpy_layernorm_bwd(x: np.ndarray, w: np.ndarray, b: np.ndarray,
                        g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db) by hand, in the inputs' dtype; b does not enter the gradients."""
    del b
    mu = x.mean(axis=1, keepdims=True)
    c = x - mu
    rstd = 1 / np.sqrt((c * c).mean(axis=1, keepdims=True) + EPS)
    xhat = c * rstd
    gx = g * w
    dx = rstd * (gx - gx.mean(axis=1, keepdims=True)
                 - xhat * (gx * xhat).mean(axis=1, keepdims=True))
    return dx, (g * xhat).sum(axis=0), g.sum(axis=0)


def reference(inp: Inputs) -> Outputs:
    return list(numpy_layernorm_bwd(*(inp[k].astype(np.float64) for k in ("x", "w", "b", "g"))))


def autograd_layernorm_bwd(lib: Any) -> Any:
    """tracejit and torch alike: layer_norm as users call it and autograd's vjp with g."""
    f = lib.nn.functional

    def layernorm_bwd(x: Any, w: Any, b: Any, g: Any) -> Any:
        y = f.layer_norm(x, (x.shape[-1],), w, b, EPS)
        return lib.autograd.grad(y, (x, w, b), g)

    return layernorm_bwd


def torch_compile_layernorm_bwd(th: Any) -> Any:
    """torch.compile on the forward; autograd.grad runs the backward graph AOTAutograd made."""
    fwd = th.compile(lambda x, w, b: th.nn.functional.layer_norm(x, (x.shape[-1],), w, b, EPS))

    def layernorm_bwd(x: Any, w: Any, b: Any, g: Any) -> Any:
        return th.autograd.grad(fwd(x, w, b), (x, w, b), g)

    return layernorm_bwd


def jax_layernorm_bwd(jx: Any) -> Any:
    layer_norm = jax_layernorm(jx)

    def layernorm_bwd(x: Any, w: Any, b: Any, g: Any) -> Any:
        _, vjp = jx.vjp(layer_norm, x, w, b)
        return vjp(g)

    return layernorm_bwd


WORKLOAD = register_workload(Workload(
    name="layernorm-bwd",
    description="layer norm (weight, bias) over (4096, 1024) float32 and its gradients dx, dw, "
                "db for an upstream gradient (forward + backward)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls=functions.impls(
        ("x", "w", "b", "g"),
        tracejit=autograd_layernorm_bwd,
        numpy=numpy_layernorm_bwd,
        torch=autograd_layernorm_bwd,
        jax=jax_layernorm_bwd,
        grad=("x", "w", "b"),
        torch_compile=torch_compile_layernorm_bwd,
    ),
    tolerance=1e-5,
    repeat=15,
    # the least traffic: read x and g once, write dx once (w, b, dw, db are rows), which is
    # what a copy of 1.5 such matrices moves
    roofline_bytes=lambda size: 6 * size["rows"] * size["cols"],
))
