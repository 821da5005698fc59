"""Shared pieces of the MLP-with-Adam workloads (mlp-large, iris): parameters, the float64
reference written by hand in NumPy, and the step for each implementation.

Layers are PyTorch Linear layers (`x @ W.T + b`), ReLU between them; the loss is MSE or cross
entropy; Adam is torch.optim.Adam's update (bias corrections, eps outside the square root).
tracejit uses tracejit.nn/optim when they exist, else the same step in raw tensor ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import peers
from .core import Case, Inputs, Outputs
from .jitprobe import JitProbe

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def init_params(rng: np.random.Generator, widths: list[int]) -> list[np.ndarray]:
    """[W1, b1, W2, b2, ...] float32, W as (out, in), uniform(+-1/sqrt(in)) like nn.Linear."""
    params = []
    for d_in, d_out in zip(widths[:-1], widths[1:]):
        bound = 1 / np.sqrt(d_in)
        params.append(rng.uniform(-bound, bound, (d_out, d_in)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, (d_out,)).astype(np.float32))
    return params


# ---- NumPy by hand (also the float64 reference) -------------------------------------------

def cross_entropy_grad(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Cross entropy on integer labels, mean over the batch: (value, d value / d logits)."""
    n = logits.shape[0]
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    value = float(-(logits - m - np.log(s))[np.arange(n), y].mean())
    g = e / s
    g[np.arange(n), y] -= 1
    return value, g * (1.0 / n)


def numpy_loss_grads(x: np.ndarray, y: np.ndarray, params: list[np.ndarray],
                     loss: str) -> tuple[float, list[np.ndarray]]:
    layers = len(params) // 2
    acts, pres = [x], []
    h = x
    for i in range(layers):
        z = h @ params[2 * i].T + params[2 * i + 1]
        pres.append(z)
        h = np.maximum(z, 0) if i < layers - 1 else z
        acts.append(h)
    if loss == "mse":
        d = h - y
        value = float((d * d).mean())
        g = d * (2.0 / d.size)
    else:
        value, g = cross_entropy_grad(h, y)
    grads: list[np.ndarray] = [np.empty(0)] * len(params)
    for i in reversed(range(layers)):
        if i < layers - 1:
            g = g * (pres[i] > 0)
        grads[2 * i] = g.T @ acts[i]
        grads[2 * i + 1] = g.sum(axis=0)
        if i:
            g = g @ params[2 * i]
    return value, grads


class NumpyAdam:
    def __init__(self, params: list[np.ndarray], lr: float) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        bc1, bc2 = 1 - BETA1**self.t, 1 - BETA2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= BETA1
            m += (1 - BETA1) * g
            v *= BETA2
            v += (1 - BETA2) * (g * g)
            p -= (self.lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + EPS)


def reference(inp: Inputs, steps: int) -> Outputs:
    x = inp["x"].astype(np.float64)
    y = inp["y"] if inp["loss"] == "ce" else inp["y"].astype(np.float64)
    params = [p.astype(np.float64) for p in inp["params"]]
    opt = NumpyAdam(params, inp["lr"])
    value = 0.0
    for _ in range(steps):
        value, grads = numpy_loss_grads(x, y, params, inp["loss"])
        opt.step(grads)
    return outputs(inp, value, params)


def outputs(inp: Inputs, loss: float, params: list[Any]) -> Outputs:
    """The last loss and every parameter's total update."""
    return [np.float64(loss)] + [np.asarray(p, dtype=np.float64) - p0
                                 for p, p0 in zip(params, inp["params"])]


def numpy_case(inp: Inputs, steps: int) -> Case:
    params = [p.copy() for p in inp["params"]]
    opt = NumpyAdam(params, inp["lr"])
    last = [0.0]

    def run() -> float:
        for _ in range(steps):
            last[0], grads = numpy_loss_grads(inp["x"], inp["y"], params, inp["loss"])
            opt.step(grads)
        return last[0]

    return Case(run, lambda: outputs(inp, last[0], params))


# ---- tracejit and torch: the same program, raw ops or nn/optim ----------------------------

def raw_forward_loss(lib: Any, x: Any, y: Any, params: list[Any], loss: str) -> Any:
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = h @ params[2 * i].T + params[2 * i + 1]
        if i < layers - 1:
            h = h.relu()
    if loss == "mse":
        return ((h - y) ** 2).mean()
    return -lib.log_softmax(h, 1).gather(1, y.unsqueeze(1)).mean()


def raw_adam_step(lib: Any, params: list[Any], state: dict[str, Any], lr: float) -> None:
    """Adam by hand with in-place updates; the bias corrections come from running products
    held in tensors, so a jitted step sees no Python number that changes every step."""
    with lib.no_grad():
        state["b1t"].mul_(BETA1)
        state["b2t"].mul_(BETA2)
        step_size = lr / (1 - state["b1t"])
        root_bc2 = (1 - state["b2t"]).sqrt()
        for p, m, v in zip(params, state["m"], state["v"]):
            g = p.grad
            m.mul_(BETA1).add_(g * (1 - BETA1))
            v.mul_(BETA2).add_(g * g * (1 - BETA2))
            p.sub_(step_size * m / (v.sqrt() / root_bc2 + EPS))
            p.grad = None


def _raw_state(lib: Any, params: list[Any]) -> dict[str, Any]:
    return {"b1t": lib.ones(()), "b2t": lib.ones(()),
            "m": [lib.zeros_like(p) for p in params], "v": [lib.zeros_like(p) for p in params]}


def tracejit_case(inp: Inputs, steps: int, jit: bool) -> Case:
    tj = peers.tracejit_jit() if jit else peers.tracejit()
    x = peers.tj_tensor(tj, inp["x"])
    y = peers.tj_tensor(tj, inp["y"])
    nn_optim = peers.tracejit_nn()
    if nn_optim is not None:
        params, step = _module_step(tj, nn_optim[0], nn_optim[1], inp)
    else:
        params = [peers.tj_tensor(tj, p, True) for p in inp["params"]]
        state = _raw_state(tj, params)

        def step(x: Any, y: Any) -> Any:
            loss = raw_forward_loss(tj, x, y, params, inp["loss"])
            loss.backward()
            raw_adam_step(tj, params, state, inp["lr"])
            return loss

    if not jit:
        return _loop_case(inp, steps, step, x, y, params)
    jf = tj.jit(step)
    case = _loop_case(inp, steps, jf, x, y, params)
    case.jit = JitProbe(jf)
    return case


def module_model(lib: Any, nn: Any, optim: Any,
                 inp: Inputs) -> tuple[Any, list[Any], Any, Any]:
    """(model, params, Adam, loss) as users build them with nn and optim, holding the inputs'
    weights (tracejit and torch)."""
    layers: list[Any] = []
    ps = inp["params"]
    for i in range(len(ps) // 2):
        lin = nn.Linear(ps[2 * i].shape[1], ps[2 * i].shape[0])
        with lib.no_grad():
            lin.weight.copy_(lib.from_numpy(ps[2 * i].copy()))
            lin.bias.copy_(lib.from_numpy(ps[2 * i + 1].copy()))
        layers += [lin, nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    params = [t for lin in layers[::2] for t in (lin.weight, lin.bias)]
    opt = optim.Adam(model.parameters(), lr=inp["lr"])
    loss_fn = nn.MSELoss() if inp["loss"] == "mse" else nn.CrossEntropyLoss()
    return model, params, opt, loss_fn


def _module_step(lib: Any, nn: Any, optim: Any, inp: Inputs,
                 wrap: Callable | None = None) -> tuple[list[Any], Callable]:
    """The step as users write it with nn and optim (tracejit once they land, and torch)."""
    model, params, opt, loss_fn = module_model(lib, nn, optim, inp)
    fwd = wrap(model) if wrap is not None else model

    def step(x: Any, y: Any) -> Any:
        loss = loss_fn(fwd(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return params, step


def _loop_case(inp: Inputs, steps: int, step: Callable, x: Any, y: Any,
               params: list[Any]) -> Case:
    last: list[Any] = [None]

    def run() -> Any:
        for _ in range(steps):
            last[0] = step(x, y)
        return last[0]

    def output() -> Outputs:
        return outputs(inp, float(last[0].item()), [p.detach().numpy() for p in params])

    return Case(run, output)


def torch_case(inp: Inputs, steps: int, compile: bool) -> Case:
    """torch.nn, torch.optim.Adam; with `compile`, torch.compile on the model (forward and,
    through AOTAutograd, backward) while the loss and the optimizer stay eager."""
    th = peers.torch_compile() if compile else peers.torch()
    x, y = peers.torch_tensor(th, inp["x"]), peers.torch_tensor(th, inp["y"])
    params, step = _module_step(th, th.nn, th.optim, inp, wrap=th.compile if compile else None)
    return _loop_case(inp, steps, step, x, y, params)


def _logits(relu: Callable[[Any], Any], x: Any, params: list[Any]) -> Any:
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = h @ params[2 * i].T + params[2 * i + 1]
        if i < layers - 1:
            h = relu(h)
    return h


# ---- jax ----------------------------------------------------------------------------------

def jax_adam_step(jax: Any, inp: Inputs) -> Callable[..., Any]:
    """The functional step, not jitted: (params, m, v, t, x, y) -> (loss, params, m, v, t),
    value_and_grad of the MLP's loss and Adam's update (jax_case jits it per step; iris-fori
    runs it in lax.fori_loop)."""
    jnp = jax.numpy
    kind, lr = inp["loss"], inp["lr"]

    def loss_fn(params: list[Any], x: Any, y: Any) -> Any:
        h = _logits(jax.nn.relu, x, params)
        if kind == "mse":
            return ((h - y) ** 2).mean()
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()

    def step(params: list[Any], m: list[Any], v: list[Any], t: Any, x: Any, y: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        t = t + 1
        bc1, bc2 = 1 - BETA1**t, 1 - BETA2**t
        m = [BETA1 * mi + (1 - BETA1) * g for mi, g in zip(m, grads)]
        v = [BETA2 * vi + (1 - BETA2) * g * g for vi, g in zip(v, grads)]
        params = [p - (lr / bc1) * mi / (jnp.sqrt(vi) / jnp.sqrt(bc2) + EPS)
                  for p, mi, vi in zip(params, m, v)]
        return loss, params, m, v, t

    return step


def jax_case(inp: Inputs, steps: int) -> Case:
    """jax.jit of the whole functional step: value_and_grad and Adam, called once per step."""
    jax = peers.jax()
    jnp = jax.numpy
    step = jax.jit(jax_adam_step(jax, inp))

    x, y = jnp.asarray(inp["x"]), jnp.asarray(inp["y"])
    params = [jnp.asarray(p) for p in inp["params"]]
    st: dict[str, Any] = {"p": params, "m": [jnp.zeros_like(p) for p in params],
                          "v": [jnp.zeros_like(p) for p in params],
                          "t": jnp.asarray(0.0, dtype=jnp.float32), "loss": None}

    def run() -> Any:
        for _ in range(steps):
            st["loss"], st["p"], st["m"], st["v"], st["t"] = step(
                st["p"], st["m"], st["v"], st["t"], x, y)
        jax.block_until_ready(st["p"])
        return st["loss"].block_until_ready()

    def output() -> Outputs:
        return outputs(inp, float(st["loss"]), [np.asarray(p) for p in st["p"]])

    return Case(run, output)
