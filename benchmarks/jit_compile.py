"""jit-compile: the cold compile time of a jitted L-layer MLP SGD training step (issue 5), for
each L in its own fresh process with an empty compile cache (TRACEJIT_CACHE_DIR, NUMBA_CACHE_DIR,
TORCHINDUCTOR_CACHE_DIR, JAX_COMPILATION_CACHE_DIR all inside a new temporary directory).

The step: `Sequential` of L `Linear(width, width)` layers with `ReLU` between them, batch 64,
width 128, MSE loss, `optim.SGD(lr=0.01)`, `zero_grad`, `backward`, `step`, as users write it.
tracejit.jit traces the step while `.grad` changes from None to a tensor and compiles on the
first call whose guards match a trace, so each child calls the step until `cache_info()` shows a
compiled hit (torch.compile and jax.jit compile on the first call). Per L:

- `L{n}_first_s`: the parent's spawn of the child to the end of its first compiled step
  (interpreter start, imports, set-up, the tracing calls, the compile, the first compiled run);
- `L{n}_compile_s`: that first compiled call minus the median of five later calls, i.e. the
  time spent compiling (for tracejit: lowering, Numba's compile and the disk-cache write);
- `first_ratio` and `compile_ratio`: the largest L's figure over the smallest L's (issue 5's
  bar: the 32-layer step compiles in under twice the 2-layer step's time).

Run as `python -m tracejit.benchmarks.jit_compile IMPL LAYERS BATCH WIDTH`, it is the child: at
the first compiled step it checks the loss and every parameter's total update against a float64
NumPy reference (later steps of the 32-layer net part from float64 in float32, eager too, see
`child`), then times five more steps and prints one JSON line. The runner's check of
an implementation is one such child at the smallest L, its reported error compared with the
tolerance.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from . import compile as compile_wl
from . import peers, train
from .core import Case, Inputs, Outputs, UnavailableError, Workload, max_error, register_workload
from .jitprobe import JitProbe

TIMEOUT_S = 600
LR = 0.01
STEADY_CALLS = 5
MAX_CALLS_TO_COMPILE = 6
TOLERANCE = 1e-3  # float32 SGD vs float64: ~5e-5 at L=32 (total updates, max error)
SIZES = {"full": {"layers": [2, 8, 32], "batch": 64, "width": 128},
         "quick": {"layers": [1, 2], "batch": 8, "width": 16}}


def size_metrics(size: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ls = sorted(size["layers"])
    lo, hi = ls[0], ls[-1]
    names = [f"L{hi}_first_s"] + [f"L{n}_first_s" for n in ls[:-1]]
    names += [f"L{n}_compile_s" for n in ls]
    names += [f"first_ratio_L{hi}_L{lo}", f"compile_ratio_L{hi}_L{lo}"]
    units = ["s"] * (2 * len(ls)) + ["x", "x"]
    return tuple(names), tuple(units)


def make_inputs(size: dict[str, Any]) -> Inputs:
    return dict(size)


def reference(inp: Inputs) -> Outputs:
    return [np.zeros(())]  # the children compare with their own float64 reference


# ---- the child ----------------------------------------------------------------------------

def child_inputs(layers: int, batch: int, width: int) -> Inputs:
    """Weights uniform(+-sqrt(6/in)) (Kaiming, as for ReLU nets) so that activations and
    gradients keep their size through 32 layers: with nn.Linear's +-1/sqrt(in) they shrink
    ~6x in variance per layer, and the first layers' updates would be float32 rounding noise."""
    rng = np.random.default_rng(layers)
    params = []
    for _ in range(layers):
        params.append(rng.uniform(-1, 1, (width, width)).astype(np.float32) * np.sqrt(6 / width,
                                                                                    dtype=np.float32))
        params.append(rng.uniform(-1, 1, (width,)).astype(np.float32) / np.sqrt(width,
                                                                              dtype=np.float32))
    return {"x": rng.standard_normal((batch, width)).astype(np.float32),
            "y": rng.standard_normal((batch, width)).astype(np.float32), "params": params}


def child_reference(inp: Inputs, steps: int) -> Outputs:
    """float64 NumPy: `steps` SGD steps; the last loss and each parameter's total update."""
    x, y = inp["x"].astype(np.float64), inp["y"].astype(np.float64)
    params = [p.astype(np.float64) for p in inp["params"]]
    loss = 0.0
    for _ in range(steps):
        loss, grads = train.numpy_loss_grads(x, y, params, "mse")
        for p, g in zip(params, grads):
            p -= LR * g
    return train.outputs(inp, loss, params)


def _nn_step(lib: Any, inp: Inputs, wrap: Any = None) -> tuple[list[Any], Any]:
    nn, optim = lib.nn, lib.optim
    layers: list[Any] = []
    ps = inp["params"]
    for i in range(len(ps) // 2):
        lin = nn.Linear(ps[2 * i].shape[1], ps[2 * i].shape[0])
        with lib.no_grad():
            lin.weight.copy_(lib.from_numpy(ps[2 * i].copy()))
            lin.bias.copy_(lib.from_numpy(ps[2 * i + 1].copy()))
        layers += [lin, nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    fwd = wrap(model) if wrap is not None else model
    params = [t for lin in layers[::2] for t in (lin.weight, lin.bias)]
    opt = optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.MSELoss()

    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = loss_fn(fwd(x), y)
        loss.backward()
        opt.step()
        return loss

    return params, step


def child_case(impl: str, inp: Inputs) -> Case:
    if impl in ("tracejit-jit", "tracejit-eager"):
        tj = peers.tracejit_jit() if impl == "tracejit-jit" else peers.tracejit()
        params, step = _nn_step(tj, inp)
        x, y = peers.tj_tensor(tj, inp["x"]), peers.tj_tensor(tj, inp["y"])
        if impl == "tracejit-jit":
            step = tj.jit(step)
    elif impl in ("torch", "torch-compile"):
        th = peers.torch_compile() if impl == "torch-compile" else peers.torch()
        params, step = _nn_step(th, inp, wrap=th.compile if impl == "torch-compile" else None)
        x, y = peers.torch_tensor(th, inp["x"]), peers.torch_tensor(th, inp["y"])
    elif impl == "jax":
        return _jax_case(inp)
    else:
        raise UnavailableError(f"{impl} has no jit-compile implementation")
    case = train._loop_case(inp, 1, step, x, y, params)
    if impl == "tracejit-jit":
        case.jit = JitProbe(step)
    return case


def _jax_case(inp: Inputs) -> Case:
    jax = peers.jax()

    def loss_fn(params: list[Any], x: Any, y: Any) -> Any:
        return ((train._logits(jax.nn.relu, x, params) - y) ** 2).mean()

    @jax.jit
    def step(params: list[Any], x: Any, y: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return loss, [p - LR * g for p, g in zip(params, grads)]

    x, y = jax.numpy.asarray(inp["x"]), jax.numpy.asarray(inp["y"])
    st: dict[str, Any] = {"p": [jax.numpy.asarray(p) for p in inp["params"]], "loss": None}

    def run() -> Any:
        st["loss"], st["p"] = step(st["p"], x, y)
        jax.block_until_ready(st["p"])
        return st["loss"].block_until_ready()

    def output() -> Outputs:
        return train.outputs(inp, float(st["loss"]), [np.asarray(p) for p in st["p"]])

    return Case(run, output)


def child(impl: str, layers: int, batch: int, width: int) -> None:
    """The measured process: call the step until compiled code has run, time five more steps,
    check against float64 NumPy, print one JSON line."""
    inp = child_inputs(layers, batch, width)
    result: dict[str, Any] = {"skip": ""}
    try:
        case = child_case(impl, inp)
    except UnavailableError as e:
        print(json.dumps({"skip": str(e)}), flush=True)
        os._exit(0)
    calls = 0
    while True:
        t0 = time.perf_counter()
        case.run()
        first = time.perf_counter() - t0
        calls += 1
        if case.jit is None or case.jit.compiled():
            break
        if calls >= MAX_CALLS_TO_COMPILE:
            result["skip"] = (f"tracejit.jit did not run compiled code in {calls} calls: "
                              f"{case.jit.describe()}")
            break
    done_at = time.time()
    # checked at the first compiled step: a 32-layer ReLU net in float32 parts from float64
    # after ~8-11 SGD steps (a pre-activation near 0 flips sign; eager too), a step earlier or
    # later depending on rounding order, so later steps cannot be compared at a tight tolerance
    err = max_error(case.output(), child_reference(inp, calls))
    steady = []
    for _ in range(STEADY_CALLS):
        t0 = time.perf_counter()
        case.run()
        steady.append(time.perf_counter() - t0)
    if case.jit is not None and not result["skip"]:
        case.jit.mark()  # a later call must be a compiled hit too, not a retrace or fallback
        case.run()
        problem = case.jit.problem("timed")
        if problem:
            result["skip"] = problem
    info = case.jit.info() if case.jit is not None else None
    result.update({"first_call_s": first, "steady_s": statistics.median(steady),
                   "done_at": done_at, "calls_to_compiled": calls, "max_error": err,
                   "correct": err <= TOLERANCE, "cache_info": info})
    print(json.dumps(result), flush=True)
    os._exit(0)  # interpreter shutdown (torch's thread pools) is not part of the measurement


# ---- the parent ---------------------------------------------------------------------------

def _run_child(impl: str, layers: int, size: dict[str, Any]) -> dict[str, Any]:
    """One fresh process with a new, empty cache directory for every compiler."""
    with tempfile.TemporaryDirectory(prefix="tracejit-bench-jit-compile-") as cache:
        env = compile_wl.cache_env(cache)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", __name__, impl, str(layers), str(size["batch"]),
             str(size["width"])], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"child exited {proc.returncode}: {tail}")
    got = json.loads(lines[-1])
    if got["skip"]:
        raise UnavailableError(got["skip"])
    got["start_to_first_s"] = got["done_at"] - start
    return got


class _ChildCase(Case):
    """The parent's side of one implementation: its check is one child at the smallest L
    (a cold, fresh process like every sample), kept as the first repeat's sample for that L so
    that no child runs only to be checked."""

    def __init__(self, impl: str, inp: Inputs) -> None:
        self.impl, self.inp = impl, inp
        self.pending: dict[str, Any] | None = None
        self.checked: dict[str, Any] = {}
        super().__init__(self._check_child, self._error)

    def _check_child(self) -> None:
        self.pending = _run_child(self.impl, min(self.inp["layers"]), self.inp)
        self.checked = self.pending

    def _error(self) -> Outputs:
        return [np.asarray(self.checked["max_error"], dtype=np.float64)]

    def child(self, layers: int) -> dict[str, Any]:
        if self.pending is not None and layers == min(self.inp["layers"]):
            got, self.pending = self.pending, None
            return got
        return _run_child(self.impl, layers, self.inp)


def measure(impl: str, case: Case, inp: Inputs, quick: bool) -> dict[str, float]:
    assert isinstance(case, _ChildCase)
    ls = sorted(inp["layers"])
    names, _ = size_metrics(inp)
    out: dict[str, float] = {}
    ok, worst = True, 0.0
    for n in ls:
        got = case.child(n)
        out[f"L{n}_first_s"] = got["start_to_first_s"]
        out[f"L{n}_compile_s"] = max(got["first_call_s"] - got["steady_s"], 0.0)
        ok, worst = ok and got["correct"], max(worst, got["max_error"])
    lo, hi = ls[0], ls[-1]
    out[names[-2]] = out[f"L{hi}_first_s"] / out[f"L{lo}_first_s"]
    out[names[-1]] = out[f"L{hi}_compile_s"] / max(out[f"L{lo}_compile_s"], 1e-9)
    out["correct"], out["max_error"] = (1.0 if ok else 0.0), worst
    return out


def _factory(impl: str) -> Any:
    def factory(inp: Inputs) -> Case:
        # availability in the parent (a one-line skip reason); the check runs in a child
        if impl == "torch-compile":
            peers.torch_compile()
        elif impl == "jax":
            peers.jax()
        elif impl == "tracejit-jit":
            peers.tracejit_jit()
        return _ChildCase(impl, inp)

    return factory


WORKLOAD = register_workload(Workload(
    name="jit-compile",
    description="cold compile of an L-layer MLP SGD train step (Linear+ReLU, MSE), fresh "
                "process and empty cache per L: spawn to first compiled step, compile time",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    # tracejit-eager: no compile, the floor of process start, imports and a first step
    impls={name: _factory(name) for name in ("tracejit-jit", "tracejit-eager", "torch-compile",
                                             "jax")},
    tolerance=TOLERANCE,
    repeat=3,
    kind="metrics",
    metrics=size_metrics(SIZES["full"])[0],
    metric_units=size_metrics(SIZES["full"])[1],
    measure=measure,
    in_subprocess=True,
    size_metrics=size_metrics,
    error=lambda got, want: float(np.asarray(got[0])),
))

if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
