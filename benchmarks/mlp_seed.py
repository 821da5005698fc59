"""mlp-seed: one training step of the seed's autograd two-layer net (USER-PROGRAMS.md,
"Autograd"): N=64, 1000-100-10, ReLU, sum-of-squares loss, SGD with lr=1e-6, grads zeroed.

The check runs three steps (torch.compile was seen to agree for two steps and then diverge on
this program) and compares the last loss and the parameters' total updates. tracejit.jit traces
this step twice (`.grad` is None on the first call, a tensor after) and compiles on the third, so
the checked result is the compiled step's; the runner verifies that with `cache_info()`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import peers
from .core import Case, Inputs, Outputs, Workload, register_workload
from .jitprobe import JitProbe

CHECK_STEPS = 3
SIZES = {
    "full": {"N": 64, "D_in": 1000, "H": 100, "D_out": 10},
    "quick": {"N": 64, "D_in": 1000, "H": 100, "D_out": 10},
}


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    n, d_in, h, d_out = size["N"], size["D_in"], size["H"], size["D_out"]
    f32 = np.float32
    return {
        "x": rng.standard_normal((n, d_in)).astype(f32),
        "y": rng.standard_normal((n, d_out)).astype(f32),
        "w1": rng.standard_normal((d_in, h)).astype(f32),
        "w2": rng.standard_normal((h, d_out)).astype(f32),
        "lr": 1e-6,
    }


def numpy_step(x: np.ndarray, y: np.ndarray, w1: np.ndarray, w2: np.ndarray,
               lr: float) -> float:
    """The step by hand in NumPy (forward, backward, update in place); works in any dtype."""
    h = x @ w1
    h_relu = np.maximum(h, 0)
    y_pred = h_relu @ w2
    diff = y_pred - y
    loss = float((diff * diff).sum())
    grad_y_pred = 2.0 * diff
    grad_w2 = h_relu.T @ grad_y_pred
    grad_h = grad_y_pred @ w2.T
    grad_h[h < 0] = 0
    grad_w1 = x.T @ grad_h
    w1 -= lr * grad_w1
    w2 -= lr * grad_w2
    return loss


def reference(inp: Inputs) -> Outputs:
    x, y = inp["x"].astype(np.float64), inp["y"].astype(np.float64)
    w1, w2 = inp["w1"].astype(np.float64), inp["w2"].astype(np.float64)
    loss = 0.0
    for _ in range(CHECK_STEPS):
        loss = numpy_step(x, y, w1, w2, inp["lr"])
    return [np.float64(loss), w1 - inp["w1"], w2 - inp["w2"]]


def outputs(inp: Inputs, loss: float, w1: Any, w2: Any) -> Outputs:
    """What the check compares: the last loss and each parameter's total update (the update is
    ~1e-3 of the weight, so comparing the weights themselves would hide a wrong gradient)."""
    w1n = np.asarray(w1, dtype=np.float64)
    w2n = np.asarray(w2, dtype=np.float64)
    return [np.float64(loss), w1n - inp["w1"], w2n - inp["w2"]]


def autograd_step(lib: Any, x: Any, y: Any, w1: Any, w2: Any, lr: float) -> Any:
    """The seed program's loop body, as users write it (works for tracejit and torch)."""
    y_pred = x.mm(w1).clamp(min=0).mm(w2)
    loss = (y_pred - y).pow(2).sum()
    loss.backward()
    with lib.no_grad():
        w1 -= lr * w1.grad
        w2 -= lr * w2.grad
        w1.grad.zero_()
        w2.grad.zero_()
    return loss


def _eager_case(lib: Any, tensor: Any, inp: Inputs, jit: Any = None) -> Case:
    x, y = tensor(lib, inp["x"]), tensor(lib, inp["y"])
    w1, w2 = tensor(lib, inp["w1"], True), tensor(lib, inp["w2"], True)
    lr = inp["lr"]
    body = lambda x, y, w1, w2: autograd_step(lib, x, y, w1, w2, lr)
    step = jit(body) if jit is not None else body
    last: list[Any] = [None]

    def run() -> Any:
        last[0] = step(x, y, w1, w2)
        return last[0]

    def output() -> Outputs:
        return outputs(inp, float(last[0].item()), w1.detach().numpy(), w2.detach().numpy())

    return Case(run, output, jit=JitProbe(step) if jit is not None else None)


def tracejit_eager(inp: Inputs) -> Case:
    return _eager_case(peers.tracejit(), peers.tj_tensor, inp)


def tracejit_jit(inp: Inputs) -> Case:
    tj = peers.tracejit_jit()
    return _eager_case(tj, peers.tj_tensor, inp, jit=tj.jit)


def torch_eager(inp: Inputs) -> Case:
    return _eager_case(peers.torch(), peers.torch_tensor, inp)


def torch_compile(inp: Inputs) -> Case:
    """torch.compile on the forward and loss (how users apply it); backward runs the compiled
    backward graph AOTAutograd made, the SGD update stays eager."""
    th = peers.torch_compile()
    x, y = peers.torch_tensor(th, inp["x"]), peers.torch_tensor(th, inp["y"])
    w1 = peers.torch_tensor(th, inp["w1"], True)
    w2 = peers.torch_tensor(th, inp["w2"], True)
    lr = inp["lr"]
    fwd = th.compile(lambda x, y, w1, w2: (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum())
    last: list[Any] = [None]

    def run() -> Any:
        loss = fwd(x, y, w1, w2)
        loss.backward()
        with th.no_grad():
            w1.sub_(lr * w1.grad)
            w2.sub_(lr * w2.grad)
            w1.grad.zero_()
            w2.grad.zero_()
        last[0] = loss
        return loss

    def output() -> Outputs:
        return outputs(inp, float(last[0].item()), w1.detach().numpy(), w2.detach().numpy())

    return Case(run, output)


def numpy_impl(inp: Inputs) -> Case:
    x, y = inp["x"], inp["y"]
    w1, w2 = inp["w1"].copy(), inp["w2"].copy()
    lr = inp["lr"]
    last = [0.0]

    def run() -> float:
        last[0] = numpy_step(x, y, w1, w2, lr)
        return last[0]

    return Case(run, lambda: outputs(inp, last[0], w1, w2))


def jax_impl(inp: Inputs) -> Case:
    """jax.jit of the whole functional step (value_and_grad and the update)."""
    jax = peers.jax()
    jnp = jax.numpy
    lr = inp["lr"]

    def loss_fn(w1: Any, w2: Any, x: Any, y: Any) -> Any:
        d = jnp.maximum(x @ w1, 0) @ w2 - y
        return (d * d).sum()

    @jax.jit
    def step(x: Any, y: Any, w1: Any, w2: Any) -> Any:
        loss, (g1, g2) = jax.value_and_grad(loss_fn, argnums=(0, 1))(w1, w2, x, y)
        return loss, w1 - lr * g1, w2 - lr * g2

    state = [jnp.asarray(inp["w1"]), jnp.asarray(inp["w2"]), None]
    x, y = jnp.asarray(inp["x"]), jnp.asarray(inp["y"])

    def run() -> Any:
        loss, state[0], state[1] = step(x, y, state[0], state[1])
        state[2] = loss.block_until_ready()
        state[1].block_until_ready()
        return loss

    def output() -> Outputs:
        return outputs(inp, float(state[2]), np.asarray(state[0]), np.asarray(state[1]))

    return Case(run, output)


IMPLS = {
    "tracejit-jit": tracejit_jit,
    "tracejit-eager": tracejit_eager,
    "numpy": numpy_impl,
    "torch": torch_eager,
    "torch-compile": torch_compile,
    "jax": jax_impl,
}

WORKLOAD = register_workload(Workload(
    name="mlp-seed",
    description="seed 2-layer net train step, N=64 1000-100-10, SGD (one step per call)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls=dict(IMPLS),
    tolerance=1e-4,
    repeat=25,
    check_runs=CHECK_STEPS,
))
