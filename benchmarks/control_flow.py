"""Workloads whose step holds control flow (issue 12): a tensor-dependent branch, a recurrent
net over time with `scan`, and a whole Iris training run as one `fori_loop`.

- branch: the seed's dynamic-graph program (USER-PROGRAMS.md): `w2 = w2a if prev_loss < 5 else
  w2b`, prev_loss the previous step's loss as a tensor, then the seed's SGD update of the weights
  used. One call is 10 steps from the same starting weights (reset at the start of the call, a
  copy), over batches whose targets alternate between near the net's output (loss far below 5)
  and far from it (loss far above), so each call takes both branches five times.
- scan-rnn: an Elman RNN, h_t = tanh(x_t Wx + h_{t-1} Wh + b), over T steps, a linear readout
  of every h_t, MSE against targets, backward through time and one SGD step per call. tracejit
  writes the loop with `tracejit.scan`, jax with `lax.scan`, torch and NumPy with a Python loop.
- iris-fori: the iris workload's 1000 Adam steps as one call of a jitted function that runs
  `fori_loop(0, 1000, body, ...)`, the body doing forward, backward and `opt.step()`; jax runs
  its step in `lax.fori_loop` inside `jax.jit`; torch and NumPy loop in Python as in iris.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import iris, peers, train
from .core import Case, Inputs, Outputs, UnavailableError, Workload, norm_error, register_workload
from .jitprobe import JitProbe


def _need(tj: Any, name: str) -> Any:
    fn = getattr(tj, name, None)
    if fn is None:
        raise UnavailableError(f"tracejit.{name} not available")
    return fn


# ---- branch ---------------------------------------------------------------------------------

BRANCH_STEPS = 10
BRANCH_SIZES = {"full": {"N": 64, "D_in": 1000, "H": 100, "D_out": 10},
                "quick": {"N": 8, "D_in": 32, "H": 16, "D_out": 4}}
THRESHOLD = 5.0


def branch_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    n, d, h, o = size["N"], size["D_in"], size["H"], size["D_out"]
    f32 = np.float32
    w1 = (rng.standard_normal((d, h)) / np.sqrt(d)).astype(f32)
    w2a = (rng.standard_normal((h, o)) / np.sqrt(h)).astype(f32)
    w2b = (rng.standard_normal((h, o)) / np.sqrt(h)).astype(f32)
    xs = rng.standard_normal((BRANCH_STEPS, n, d)).astype(f32)
    ys = np.empty((BRANCH_STEPS, n, o), f32)
    # step 0 uses w2b (prev_loss starts at the threshold); a step whose loss is small sends the
    # next one to w2a, whose target is far; a far target's large loss sends the next to w2b
    near = 0.5 / np.sqrt(n * o)  # the near targets' loss is about 0.25
    for t in range(BRANCH_STEPS):
        pred = np.maximum(xs[t] @ w1, 0) @ (w2b if t % 2 == 0 else w2a)
        ys[t] = pred + near * rng.standard_normal(pred.shape) if t % 2 == 0 else \
            pred + 3.0 * rng.standard_normal(pred.shape)
    return {"xs": xs, "ys": ys, "w1": w1, "w2a": w2a, "w2b": w2b, "lr": 1e-4}


def branch_numpy(inp: Inputs, dtype: Any) -> tuple[list[float], list[np.ndarray]]:
    """The 10 steps by hand: (losses, [w1, w2a, w2b] after)."""
    w = [inp[k].astype(dtype) for k in ("w1", "w2a", "w2b")]
    lr = inp["lr"]
    prev, losses = THRESHOLD, []
    for x, y in zip(inp["xs"].astype(dtype), inp["ys"].astype(dtype)):
        k = 1 if prev < THRESHOLD else 2
        h = x @ w[0]
        hr = np.maximum(h, 0)
        diff = hr @ w[k] - y
        loss = float((diff * diff).sum())
        g = 2.0 * diff
        gw2 = hr.T @ g
        gh = g @ w[k].T
        gh[h < 0] = 0
        w[0] -= lr * (x.T @ gh)
        w[k] -= lr * gw2
        losses.append(loss)
        prev = loss
    return losses, w


def branch_reference(inp: Inputs) -> Outputs:
    losses, w = branch_numpy(inp, np.float64)
    return _branch_outputs(inp, losses, w)


def _branch_outputs(inp: Inputs, losses: list[float], w: list[Any]) -> Outputs:
    return [np.asarray(losses, np.float64)] + [
        np.asarray(a, np.float64) - inp[k] for a, k in zip(w, ("w1", "w2a", "w2b"))]


def branch_step(lib: Any, x: Any, y: Any, prev: Any, w1: Any, w2a: Any, w2b: Any,
                lr: float) -> Any:
    """The seed's loop body with its branch on the previous loss, a tensor (tracejit, torch)."""
    w2 = w2a if prev < THRESHOLD else w2b
    loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
    loss.backward()
    with lib.no_grad():
        for w in (w1, w2):
            w -= lr * w.grad
            w.grad.zero_()
    return loss.detach()


def _branch_case(lib: Any, tensor: Any, inp: Inputs, wrap: Any = None,
                 probe: bool = False) -> Case:
    xs = [tensor(lib, a) for a in inp["xs"]]
    ys = [tensor(lib, a) for a in inp["ys"]]
    w = [tensor(lib, inp[k], True) for k in ("w1", "w2a", "w2b")]
    init = [tensor(lib, inp[k]) for k in ("w1", "w2a", "w2b")]
    lr = inp["lr"]
    body = lambda x, y, prev: branch_step(lib, x, y, prev, w[0], w[1], w[2], lr)
    step = wrap(body) if wrap is not None else body
    start = tensor(lib, np.float32(THRESHOLD))
    last: list[Any] = []

    def run() -> Any:
        with lib.no_grad():
            for a, b in zip(w, init):
                a.copy_(b)
        prev = start
        out = []
        for x, y in zip(xs, ys):
            prev = step(x, y, prev)
            out.append(prev)
        last[:] = out
        return prev

    def output() -> Outputs:
        return _branch_outputs(inp, [float(v.item()) for v in last],
                               [a.detach().numpy() for a in w])

    return Case(run, output, jit=JitProbe(step) if probe else None)


def branch_tracejit(inp: Inputs, jit: bool) -> Case:
    tj = peers.tracejit_jit() if jit else peers.tracejit()
    return _branch_case(tj, peers.tj_tensor, inp, tj.jit if jit else None, probe=jit)


def branch_torch(inp: Inputs, compile: bool) -> Case:
    th = peers.torch_compile() if compile else peers.torch()
    return _branch_case(th, peers.torch_tensor, inp, th.compile if compile else None)


def branch_numpy_case(inp: Inputs) -> Case:
    last: list[Any] = [None]

    def run() -> Any:
        last[0] = branch_numpy(inp, np.float32)
        return last[0]

    return Case(run, lambda: _branch_outputs(inp, *last[0]))


def branch_jax(inp: Inputs) -> Case:
    """jax.jit of the step with `lax.cond` choosing w2a or w2b; both are carried, the one not
    chosen gets a zero gradient and no update. Called once per step, as the others."""
    jax = peers.jax()
    jnp, lax = jax.numpy, jax.lax
    lr = inp["lr"]

    def loss_fn(w1: Any, w2: Any, x: Any, y: Any) -> Any:
        d = jnp.maximum(x @ w1, 0) @ w2 - y
        return (d * d).sum()

    @jax.jit
    def step(w1: Any, w2a: Any, w2b: Any, x: Any, y: Any, prev: Any) -> Any:
        def take(which: int) -> Any:
            def go(ws: Any) -> Any:
                w1, w2a, w2b = ws
                w2 = w2a if which == 0 else w2b
                loss, (g1, g2) = jax.value_and_grad(loss_fn, argnums=(0, 1))(w1, w2, x, y)
                w2 = w2 - lr * g2
                return loss, (w1 - lr * g1, w2, w2b) if which == 0 else (w1 - lr * g1, w2a, w2)
            return go
        return lax.cond(prev < THRESHOLD, take(0), take(1), (w1, w2a, w2b))

    xs, ys = [jnp.asarray(a) for a in inp["xs"]], [jnp.asarray(a) for a in inp["ys"]]
    init = [jnp.asarray(inp[k]) for k in ("w1", "w2a", "w2b")]
    st: dict[str, Any] = {"w": init, "losses": []}

    def run() -> Any:
        w, prev, losses = init, jnp.asarray(THRESHOLD, jnp.float32), []
        for x, y in zip(xs, ys):
            prev, w = step(*w, x, y, prev)
            losses.append(prev)
        jax.block_until_ready(w)
        st["w"], st["losses"] = w, losses
        return prev

    return Case(run, lambda: _branch_outputs(inp, [float(v) for v in st["losses"]],
                                             [np.asarray(a) for a in st["w"]]))


register_workload(Workload(
    name="branch",
    description="the seed's branching step (w2a or w2b by the previous loss), N=64 "
                "1000-100-10, SGD: 10 steps per call, both branches five times each",
    sizes=BRANCH_SIZES,
    make_inputs=branch_inputs,
    reference=branch_reference,
    impls={"tracejit-jit": lambda inp: branch_tracejit(inp, True),
           "tracejit-eager": lambda inp: branch_tracejit(inp, False),
           "numpy": branch_numpy_case,
           "torch": lambda inp: branch_torch(inp, False),
           "torch-compile": lambda inp: branch_torch(inp, True),
           "jax": branch_jax},
    # relative L2 per array: the near-target steps' gradients are differences of nearly equal
    # float32 numbers (float32 NumPy is 2e-4 off there); a wrong branch is off by O(1)
    error=norm_error,
    tolerance=1e-3,
    repeat=15,
    check_runs=2,
))


# ---- scan-rnn -------------------------------------------------------------------------------

RNN_SIZES = {"full": {"T": 64, "B": 32, "I": 16, "H": 64},
             "quick": {"T": 8, "B": 4, "I": 4, "H": 8}}
RNN_CHECK = 3
RNN_NAMES = ("wx", "wh", "b", "wo")


def rnn_inputs(size: dict[str, Any]) -> Inputs:
    rng = np.random.default_rng(0)
    t, b, i, h = size["T"], size["B"], size["I"], size["H"]
    f32 = np.float32
    return {"xs": rng.standard_normal((t, b, i)).astype(f32),
            "ys": rng.standard_normal((t, b, 1)).astype(f32),
            "h0": np.zeros((b, h), f32),
            "wx": (rng.standard_normal((i, h)) / np.sqrt(i)).astype(f32),
            "wh": (rng.standard_normal((h, h)) / np.sqrt(h)).astype(f32),
            "b": np.zeros(h, f32),
            "wo": (rng.standard_normal((h, 1)) / np.sqrt(h)).astype(f32),
            "lr": 0.05}


def rnn_numpy_step(inp: Inputs, w: list[np.ndarray], dtype: Any) -> float:
    """Forward, backward through time and the SGD update of w = [wx, wh, b, wo], in place."""
    wx, wh, b, wo = w
    xs, ys = inp["xs"].astype(dtype), inp["ys"].astype(dtype)
    hs = [inp["h0"].astype(dtype)]
    for x in xs:
        hs.append(np.tanh(x @ wx + hs[-1] @ wh + b))
    hseq = np.stack(hs[1:])
    diff = hseq @ wo - ys
    loss = float((diff * diff).mean())
    g = (2.0 / diff.size) * diff
    gwo = np.einsum("tbh,tbo->ho", hseq, g)
    gwx, gwh, gb = np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(b)
    dh = np.zeros_like(hs[0])
    for t in reversed(range(len(xs))):
        dh = dh + g[t] @ wo.T
        da = dh * (1 - hs[t + 1] * hs[t + 1])
        gwx += xs[t].T @ da
        gwh += hs[t].T @ da
        gb += da.sum(0)
        dh = da @ wh.T
    lr = dtype(inp["lr"])
    for p, gr in zip(w, (gwx, gwh, gb, gwo)):
        p -= lr * gr
    return loss


def rnn_reference(inp: Inputs) -> Outputs:
    w = [inp[k].astype(np.float64) for k in RNN_NAMES]
    loss = 0.0
    for _ in range(RNN_CHECK):
        loss = rnn_numpy_step(inp, w, np.float64)
    return _rnn_outputs(inp, loss, w)


def _rnn_outputs(inp: Inputs, loss: float, w: list[Any]) -> Outputs:
    return [np.float64(loss)] + [np.asarray(a, np.float64) - inp[k]
                                 for a, k in zip(w, RNN_NAMES)]


def _sgd(lib: Any, w: list[Any], lr: float) -> None:
    with lib.no_grad():
        for p in w:
            p -= lr * p.grad
            p.grad.zero_()


def rnn_tracejit(inp: Inputs, jit: bool) -> Case:
    tj = peers.tracejit_jit() if jit else peers.tracejit()
    scan = _need(tj, "scan")
    xs, ys, h0 = (peers.tj_tensor(tj, inp[k]) for k in ("xs", "ys", "h0"))
    w = [peers.tj_tensor(tj, inp[k], True) for k in RNN_NAMES]
    lr = inp["lr"]

    def step(xs: Any, ys: Any, h0: Any) -> Any:
        wx, wh, b, wo = w

        def cell(h: Any, x: Any) -> Any:
            h = tj.tanh(x @ wx + h @ wh + b)
            return h, h

        _, hseq = scan(cell, h0, xs)
        loss = ((hseq @ wo - ys) ** 2).mean()
        loss.backward()
        _sgd(tj, w, lr)
        return loss.detach()

    fn = tj.jit(step) if jit else step
    return _rnn_case(fn, (xs, ys, h0), w, inp, JitProbe(fn) if jit else None)


def _rnn_case(fn: Any, args: tuple, w: list[Any], inp: Inputs, probe: Any) -> Case:
    last: list[Any] = [None]

    def run() -> Any:
        last[0] = fn(*args)
        return last[0]

    return Case(run, lambda: _rnn_outputs(inp, float(last[0].item()),
                                          [p.detach().numpy() for p in w]), jit=probe)


def rnn_torch(inp: Inputs, compile: bool) -> Case:
    """A Python loop over time (torch has no scan); torch.compile unrolls it into one graph."""
    th = peers.torch_compile() if compile else peers.torch()
    xs, ys, h0 = (peers.torch_tensor(th, inp[k]) for k in ("xs", "ys", "h0"))
    w = [peers.torch_tensor(th, inp[k], True) for k in RNN_NAMES]
    lr = inp["lr"]

    def forward(xs: Any, ys: Any, h0: Any, wx: Any, wh: Any, b: Any, wo: Any) -> Any:
        h, hs = h0, []
        for x in xs:
            h = th.tanh(x @ wx + h @ wh + b)
            hs.append(h)
        return ((th.stack(hs) @ wo - ys) ** 2).mean()

    fwd = th.compile(forward) if compile else forward

    def step(xs: Any, ys: Any, h0: Any) -> Any:
        loss = fwd(xs, ys, h0, *w)
        loss.backward()
        _sgd(th, w, lr)
        return loss.detach()

    return _rnn_case(step, (xs, ys, h0), w, inp, None)


def rnn_numpy_case(inp: Inputs) -> Case:
    w = [inp[k].copy() for k in RNN_NAMES]
    last = [0.0]

    def run() -> float:
        last[0] = rnn_numpy_step(inp, w, np.float32)
        return last[0]

    return Case(run, lambda: _rnn_outputs(inp, last[0], w))


def rnn_jax(inp: Inputs) -> Case:
    """jax.jit of value_and_grad over `lax.scan` and the SGD update."""
    jax = peers.jax()
    jnp, lax = jax.numpy, jax.lax
    lr = inp["lr"]

    def loss_fn(w: list[Any], xs: Any, ys: Any, h0: Any) -> Any:
        wx, wh, b, wo = w

        def cell(h: Any, x: Any) -> Any:
            h = jnp.tanh(x @ wx + h @ wh + b)
            return h, h

        _, hseq = lax.scan(cell, h0, xs)
        return ((hseq @ wo - ys) ** 2).mean()

    @jax.jit
    def step(w: list[Any], xs: Any, ys: Any, h0: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(w, xs, ys, h0)
        return loss, [p - lr * g for p, g in zip(w, grads)]

    xs, ys, h0 = (jnp.asarray(inp[k]) for k in ("xs", "ys", "h0"))
    st: dict[str, Any] = {"w": [jnp.asarray(inp[k]) for k in RNN_NAMES], "loss": None}

    def run() -> Any:
        st["loss"], st["w"] = step(st["w"], xs, ys, h0)
        jax.block_until_ready(st["w"])
        return st["loss"].block_until_ready()

    return Case(run, lambda: _rnn_outputs(inp, float(st["loss"]),
                                          [np.asarray(a) for a in st["w"]]))


register_workload(Workload(
    name="scan-rnn",
    description="Elman RNN over T=64 steps (batch 32, 16 -> 64, tanh), readout MSE, backward "
                "through time, SGD: one step per call (tracejit.scan, jax lax.scan)",
    sizes=RNN_SIZES,
    make_inputs=rnn_inputs,
    reference=rnn_reference,
    impls={"tracejit-jit": lambda inp: rnn_tracejit(inp, True),
           "tracejit-eager": lambda inp: rnn_tracejit(inp, False),
           "numpy": rnn_numpy_case,
           "torch": lambda inp: rnn_torch(inp, False),
           "torch-compile": lambda inp: rnn_torch(inp, True),
           "jax": rnn_jax},
    tolerance=1e-4,
    repeat=15,
    check_runs=RNN_CHECK,
))


# ---- iris-fori ------------------------------------------------------------------------------

def iris_fori_tracejit(inp: Inputs, jit: bool) -> Case:
    """The whole run as `fori_loop(0, steps, body, loss)`, steps a 0-d int tensor argument (so
    every count is one program). jit: two warm-up calls of one step (a trace, which creates
    Adam's state, then the compile), after which the weights are put back and Adam's state
    zeroed, which is Adam's state before any step: the checked call starts where the others do.
    """
    tj = peers.tracejit_jit() if jit else peers.tracejit()
    fori_loop = _need(tj, "fori_loop")
    nn_optim = peers.tracejit_nn()
    if nn_optim is None:
        raise UnavailableError("tracejit.nn / tracejit.optim not available")
    x, y = peers.tj_tensor(tj, inp["x"]), peers.tj_tensor(tj, inp["y"])
    ps = inp["params"]
    model, params, opt, loss_fn = train.module_model(tj, nn_optim[0], nn_optim[1], inp)

    def reset() -> None:
        with tj.no_grad():
            for p, p0 in zip(params, ps):
                p.copy_(tj.from_numpy(p0.copy()))
            for st in opt.state.values():
                for v in st.values():
                    if isinstance(v, tj.Tensor):
                        v.zero_()

    def body(i: Any, loss: Any) -> Any:
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.detach()

    def run_all(x: Any, y: Any, steps: Any) -> Any:
        return fori_loop(0, steps, body, tj.zeros(()))

    fn = tj.jit(run_all) if jit else run_all
    reset()
    if jit:
        for _ in range(2):
            fn(x, y, tj.tensor(1))
        reset()
    steps = tj.tensor(inp["steps"])
    last: list[Any] = [None]

    def run() -> Any:
        last[0] = fn(x, y, steps)
        return last[0]

    return Case(run, lambda: train.outputs(inp, float(last[0].item()),
                                           [p.detach().numpy() for p in params]),
                jit=JitProbe(fn) if jit else None)


def iris_fori_jax(inp: Inputs) -> Case:
    """The iris workload's jax step inside `lax.fori_loop`, the whole run one jax.jit call."""
    jax = peers.jax()
    jnp, lax = jax.numpy, jax.lax
    steps = inp["steps"]
    step = train.jax_adam_step(jax, inp)

    def body(i: Any, c: Any) -> Any:
        params, m, v, t, _ = c
        loss, params, m, v, t = step(params, m, v, t, x, y)
        return params, m, v, t, loss

    @jax.jit
    def run_all(c: Any) -> Any:
        return lax.fori_loop(0, steps, body, c)

    x, y = jnp.asarray(inp["x"]), jnp.asarray(inp["y"])
    params = [jnp.asarray(p) for p in inp["params"]]
    st: dict[str, Any] = {"c": (params, [jnp.zeros_like(p) for p in params],
                                [jnp.zeros_like(p) for p in params],
                                jnp.asarray(0.0, jnp.float32), jnp.asarray(0.0, jnp.float32))}

    def run() -> Any:
        st["c"] = run_all(st["c"])
        jax.block_until_ready(st["c"])
        return st["c"][4]

    return Case(run, lambda: train.outputs(inp, float(st["c"][4]),
                                           [np.asarray(p) for p in st["c"][0]]))


register_workload(Workload(
    name="iris-fori",
    description="Iris 4-10-3 MLP, cross entropy, Adam: 1000 steps as one jitted fori_loop "
                "(torch and NumPy: a Python loop)",
    sizes=iris.SIZES,
    make_inputs=iris.make_inputs,
    reference=iris.reference,
    impls={"tracejit-jit": lambda inp: iris_fori_tracejit(inp, True),
           "tracejit-eager": lambda inp: iris_fori_tracejit(inp, False),
           "numpy": lambda inp: train.numpy_case(inp, inp["steps"]),
           "torch": lambda inp: train.torch_case(inp, inp["steps"], compile=False),
           "torch-compile": lambda inp: train.torch_case(inp, inp["steps"], compile=True),
           "jax": iris_fori_jax},
    tolerance=1e-3,
    repeat=5,
))
