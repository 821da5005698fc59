"""softmax-xent-bwd: the mean cross entropy of (4096, 1024) float32 logits against int64 class
targets, and its gradient with respect to the logits (issue 10: "their backward (softmax +
cross-entropy) faster than torch eager's"; bandwidth-bound).

One call is the forward and the backward, as a training step runs them: the loss and
d loss / d logits = (softmax(x) - onehot(t)) / N. tracejit and torch call
`nn.functional.cross_entropy` on logits that require grad and `autograd.grad` (pure: no `.grad`
accumulates between calls); jax is `jax.jit(jax.value_and_grad)` of log_softmax and picking the
target; NumPy is the analytic gradient by hand, which in float64 is the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functions
from .core import Inputs, Outputs, Workload, register_workload

SIZES = {"full": {"rows": 4096, "cols": 1024}, "quick": {"rows": 256, "cols": 1024}}


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    rows, cols = size["rows"], size["cols"]
    return {"x": (4 * rng.standard_normal((rows, cols))).astype(np.float32),
            "t": rng.integers(0, cols, rows, dtype=np.int64)}


def numpy_xent_grad(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean cross entropy, its gradient wrt the logits) by hand; float32 in, float32 out
    (float64 for the reference). loss = mean_i(log sum_j exp(x_ij) - x_i,t_i), with the row
    max taken out of the exponent; gradient = (softmax(x) - onehot(t)) / N."""
    n = x.shape[0]
    rows = np.arange(n)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    loss = (np.log(s[:, 0]) + m[:, 0] - x[rows, t]).mean()
    g = e / (s * n)
    g[rows, t] -= 1.0 / n
    return np.asarray(loss), g


def reference(inp: Inputs) -> Outputs:
    return list(numpy_xent_grad(inp["x"].astype(np.float64), inp["t"]))


def autograd_xent_grad(lib: Any) -> Any:
    """tracejit and torch alike: the loss users write and autograd's gradient of it."""
    f = lib.nn.functional

    def xent_grad(x: Any, t: Any) -> Any:
        loss = f.cross_entropy(x, t)
        (gx,) = lib.autograd.grad(loss, x)
        return loss.detach(), gx

    return xent_grad


def torch_compile_xent_grad(th: Any) -> Any:
    """torch.compile on the loss; autograd.grad runs the backward graph AOTAutograd made."""
    loss_fn = th.compile(lambda x, t: th.nn.functional.cross_entropy(x, t))

    def xent_grad(x: Any, t: Any) -> Any:
        loss = loss_fn(x, t)
        (gx,) = th.autograd.grad(loss, x)
        return loss.detach(), gx

    return xent_grad


def jax_xent_grad(jx: Any) -> Any:
    jnp = jx.numpy

    def loss(x: Any, t: Any) -> Any:
        logp = jx.nn.log_softmax(x, axis=1)
        return -jnp.take_along_axis(logp, t[:, None], axis=1).mean()

    return jx.value_and_grad(loss)


WORKLOAD = register_workload(Workload(
    name="softmax-xent-bwd",
    description="mean cross entropy of (4096, 1024) float32 logits and its gradient "
                "(forward + backward)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls=functions.impls(
        ("x", "t"),
        tracejit=autograd_xent_grad,
        numpy=numpy_xent_grad,
        torch=autograd_xent_grad,
        jax=jax_xent_grad,
        grad=("x",),
        torch_compile=torch_compile_xent_grad,
    ),
    tolerance=1e-5,
    repeat=15,
    # the least traffic: read the logits once, write their gradient once (a copy's)
    roofline_bytes=lambda size: 4 * size["rows"] * size["cols"],
))
