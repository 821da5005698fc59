"""dropout: one SGD training step of a 3-layer ReLU MLP with dropout after each hidden layer
(N=256, 256-512-512-10, p=0.2, MSE), the dropout masks drawn inside the step.

Each library draws its masks from its own generator, so no fixed reference can hold the same
numbers. The check therefore compares one step with float64 NumPy given the masks the step used:
every implementation returns its two dropped activations, whose zeros (where the activation
before dropout was positive) are the dropped elements; the reference recomputes the step from
the parameters the implementation held before it, with those masks, and compares the loss, the
dropped activations and the parameter updates. The fraction kept must be within 5 standard
deviations of 1 - p, so a generator that keeps everything (or nothing) fails. Before the check
every case runs three warm-up steps (tracejit.jit traces while `.grad` is first created, then
compiles), so the checked step is the compiled one; each step returns its two activations beside
the loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import peers
from .core import Case, Inputs, Outputs, Workload, register_workload
from .jitprobe import JitProbe

WARMUP = 3
SIZES = {
    "full": {"N": 256, "D": 256, "H": 512, "O": 10, "p": 0.2},
    "quick": {"N": 32, "D": 32, "H": 64, "O": 10, "p": 0.2},
}
NAMES = ("w1", "b1", "w2", "b2", "w3", "b3")


def make_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    n, d, h, o = size["N"], size["D"], size["H"], size["O"]
    f32 = np.float32
    params = {}
    for i, (a, b) in enumerate(((d, h), (h, h), (h, o)), start=1):
        bound = 1 / np.sqrt(a)
        params[f"w{i}"] = rng.uniform(-bound, bound, (a, b)).astype(f32)
        params[f"b{i}"] = rng.uniform(-bound, bound, (b,)).astype(f32)
    return {"x": rng.standard_normal((n, d)).astype(f32),
            "y": rng.standard_normal((n, o)).astype(f32),
            "params": params, "p": size["p"], "lr": 0.05}


def reference(inp: Inputs) -> Outputs:
    """The inputs the check needs in float64 (the step itself depends on the masks, which the
    error function takes from the implementation's output)."""
    return [inp["x"].astype(np.float64), inp["y"].astype(np.float64), np.float64(inp["p"]),
            np.float64(inp["lr"])]


def _step64(x: np.ndarray, y: np.ndarray, prm: list[np.ndarray], m1: np.ndarray,
            m2: np.ndarray, p: float, lr: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One step in float64 with given keep masks: ([loss, h1, h2, d1, d2], updates)."""
    w1, b1, w2, b2, w3, b3 = prm
    s = 1.0 / (1.0 - p)
    z1 = x @ w1 + b1
    h1 = np.maximum(z1, 0)
    d1 = h1 * m1 * s
    z2 = d1 @ w2 + b2
    h2 = np.maximum(z2, 0)
    d2 = h2 * m2 * s
    out = d2 @ w3 + b3
    diff = out - y
    loss = (diff * diff).mean()
    g = 2.0 * diff / diff.size
    gw3, gb3 = d2.T @ g, g.sum(0)
    gz2 = (g @ w3.T) * m2 * s * (z2 > 0)
    gw2, gb2 = d1.T @ gz2, gz2.sum(0)
    gz1 = (gz2 @ w2.T) * m1 * s * (z1 > 0)
    gw1, gb1 = x.T @ gz1, gz1.sum(0)
    grads = [gw1, gb1, gw2, gb2, gw3, gb3]
    return [np.float64(loss), h1, h2, d1, d2], [-lr * gr for gr in grads]


def error(got: Outputs, want: Outputs) -> float:
    """got: [loss, d1, d2, *params before the step, *params after]; want: [x, y, p, lr]."""
    x, y, p, lr = want[0], want[1], float(want[2]), float(want[3])
    loss, d1, d2 = got[0], np.asarray(got[1], np.float64), np.asarray(got[2], np.float64)
    before = [np.asarray(a, np.float64) for a in got[3:3 + len(NAMES)]]
    after = [np.asarray(a, np.float64) for a in got[3 + len(NAMES):]]
    # the masks: an element was kept where its dropped activation is nonzero; where the
    # activation before dropout is 0 the mask changes nothing, so either value is right
    m1, m2 = (d1 != 0).astype(np.float64), (d2 != 0).astype(np.float64)
    vals, updates = _step64(x, y, before, m1, m2, p, lr)
    rloss, h1, h2, r1, r2 = vals
    for m, h in ((m1, h1), (m2, h2)):
        live = h > 1e-6
        n = int(live.sum())  # kept fraction within 5 standard deviations of 1 - p
        if n < 100 or abs(m[live].mean() - (1 - p)) > 5 * np.sqrt(p * (1 - p) / n):
            return float("inf")
    scale = [max(float(np.max(np.abs(u))), 1e-30) for u in updates]
    errs = [abs(float(loss) - float(rloss)) / max(abs(float(rloss)), 1e-30),
            float(np.max(np.abs(d1 - r1))) / max(float(np.max(np.abs(r1))), 1e-30),
            float(np.max(np.abs(d2 - r2))) / max(float(np.max(np.abs(r2))), 1e-30)]
    errs += [float(np.max(np.abs((a - b) - u))) / s
             for a, b, u, s in zip(after, before, updates, scale)]
    worst = max(errs)
    return worst if np.isfinite(worst) else float("inf")


def autograd_step(lib: Any, x: Any, y: Any, prm: list[Any], p: float, lr: float) -> Any:
    """The step as users write it with tensors and F.dropout (tracejit and torch)."""
    F = lib.nn.functional
    w1, b1, w2, b2, w3, b3 = prm
    d1 = F.dropout(F.relu(x @ w1 + b1), p, training=True)
    d2 = F.dropout(F.relu(d1 @ w2 + b2), p, training=True)
    loss = F.mse_loss(d2 @ w3 + b3, y)
    loss.backward()
    with lib.no_grad():
        for w in prm:
            w -= lr * w.grad
            w.grad.zero_()
    return loss, d1.detach(), d2.detach()


def _case(lib: Any, tensor: Any, inp: Inputs, wrap: Any = None, probe: bool = False) -> Case:
    x, y = tensor(lib, inp["x"]), tensor(lib, inp["y"])
    prm = [tensor(lib, inp["params"][k], True) for k in NAMES]
    p, lr = inp["p"], inp["lr"]
    lib.manual_seed(0)
    body = lambda x, y, *prm: autograd_step(lib, x, y, list(prm), p, lr)
    step = wrap(body) if wrap is not None else body
    last: list[Any] = [None]
    for _ in range(WARMUP):
        step(x, y, *prm)
    start = [w.detach().numpy().copy() for w in prm]

    def run() -> Any:
        last[0] = step(x, y, *prm)
        return last[0]

    def output() -> Outputs:
        loss, d1, d2 = last[0]
        return [float(loss.item()), d1.numpy(), d2.numpy(), *start,
                *[w.detach().numpy() for w in prm]]

    return Case(run, output, jit=JitProbe(step) if probe else None)


def tracejit_eager(inp: Inputs) -> Case:
    return _case(peers.tracejit(), peers.tj_tensor, inp)


def tracejit_jit(inp: Inputs) -> Case:
    tj = peers.tracejit_jit()
    return _case(tj, peers.tj_tensor, inp, wrap=tj.jit, probe=True)


def torch_eager(inp: Inputs) -> Case:
    return _case(peers.torch(), peers.torch_tensor, inp)


def torch_compile(inp: Inputs) -> Case:
    """torch.compile of the whole step function (forward, dropout, backward, update), as
    users apply it; Dynamo breaks the graph at backward() and compiles the pieces."""
    th = peers.torch_compile()
    return _case(th, peers.torch_tensor, inp, wrap=th.compile)


def numpy_impl(inp: Inputs) -> Case:
    """By hand in float32 NumPy, masks from NumPy's generator."""
    x, y = inp["x"], inp["y"]
    prm = [inp["params"][k].copy() for k in NAMES]
    p, lr = inp["p"], np.float32(inp["lr"])
    s = np.float32(1 / (1 - p))
    rng = np.random.default_rng(0)
    last: list[Any] = [None]

    def run() -> Any:
        w1, b1, w2, b2, w3, b3 = prm
        z1 = x @ w1 + b1
        m1 = (rng.random(z1.shape, dtype=np.float32) >= p) * s
        d1 = np.maximum(z1, 0) * m1
        z2 = d1 @ w2 + b2
        m2 = (rng.random(z2.shape, dtype=np.float32) >= p) * s
        d2 = np.maximum(z2, 0) * m2
        diff = d2 @ w3 + b3 - y
        loss = (diff * diff).mean()
        g = diff * np.float32(2.0 / diff.size)
        gz2 = (g @ w3.T) * m2 * (z2 > 0)
        gz1 = (gz2 @ w2.T) * m1 * (z1 > 0)
        grads = [x.T @ gz1, gz1.sum(0), d1.T @ gz2, gz2.sum(0), d2.T @ g, g.sum(0)]
        for w, gr in zip(prm, grads):
            w -= lr * gr
        last[0] = (loss, d1, d2)
        return loss

    for _ in range(WARMUP):
        run()
    start = [w.copy() for w in prm]

    def output() -> Outputs:
        loss, d1, d2 = last[0]
        return [float(loss), d1, d2, *start, *prm]

    return Case(run, output)


def jax_impl(inp: Inputs) -> Case:
    """jax.jit of the functional step: value_and_grad, jax.random masks from a key split each
    step, and the SGD update."""
    jax = peers.jax()
    jnp = jax.numpy
    p, lr = inp["p"], inp["lr"]

    def forward(prm: Any, x: Any, y: Any, key: Any) -> Any:
        w1, b1, w2, b2, w3, b3 = prm
        k1, k2 = jax.random.split(key)
        d1 = jnp.where(jax.random.bernoulli(k1, 1 - p, (x.shape[0], w1.shape[1])),
                       jnp.maximum(x @ w1 + b1, 0) / (1 - p), 0)
        d2 = jnp.where(jax.random.bernoulli(k2, 1 - p, d1.shape),
                       jnp.maximum(d1 @ w2 + b2, 0) / (1 - p), 0)
        diff = d2 @ w3 + b3 - y
        return (diff * diff).mean(), (d1, d2)

    @jax.jit
    def step(prm: Any, x: Any, y: Any, key: Any) -> Any:
        key, sub = jax.random.split(key)
        (loss, (d1, d2)), grads = jax.value_and_grad(forward, has_aux=True)(prm, x, y, sub)
        return loss, d1, d2, [w - lr * g for w, g in zip(prm, grads)], key

    x, y = jnp.asarray(inp["x"]), jnp.asarray(inp["y"])
    state: dict[str, Any] = {"prm": [jnp.asarray(inp["params"][k]) for k in NAMES],
                             "key": jax.random.PRNGKey(0), "last": None}

    def run() -> Any:
        loss, d1, d2, state["prm"], state["key"] = step(state["prm"], x, y, state["key"])
        state["prm"][-1].block_until_ready()
        state["last"] = (loss.block_until_ready(), d1, d2)
        return loss

    for _ in range(WARMUP):
        run()
    start = [np.asarray(w) for w in state["prm"]]

    def output() -> Outputs:
        loss, d1, d2 = state["last"]
        return [float(loss), np.asarray(d1), np.asarray(d2), *start,
                *[np.asarray(w) for w in state["prm"]]]

    return Case(run, output)


WORKLOAD = register_workload(Workload(
    name="dropout",
    description="3-layer MLP train step with dropout (masks drawn in the step), N=256 "
                "256-512-512-10, p=0.2, MSE, SGD (one step per call)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls={"tracejit-jit": tracejit_jit, "tracejit-eager": tracejit_eager, "numpy": numpy_impl,
           "torch": torch_eager, "torch-compile": torch_compile, "jax": jax_impl},
    tolerance=1e-4,
    repeat=15,
    error=error,
))
