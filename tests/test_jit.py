"""@jit semantics: guards and recompiles, max_traces fallback, graph breaks, the disable
switch, check mode, jitted forward + eager backward, the disk cache across processes, a
corrupted cache, bad input, and learning-rate changes without recompiling. Every comparison is
against the same code run eagerly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.jit import JitWarning
from tracejit.runtime.check import CheckError


def _close(a: Any, b: Any, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_first_call_traces_second_compiles_and_no_retrace() -> None:
    f = tj.jit(lambda x, y: (x * 2 + y).exp().sum(1))
    x, y = tj.randn(3, 4), tj.randn(4)
    _close(f(x, y), (x * 2 + y).exp().sum(1))
    x2, y2 = tj.randn(3, 4), tj.randn(4)
    _close(f(x2, y2), (x2 * 2 + y2).exp().sum(1))
    f(x2, y2)
    info = f.cache_info()
    assert (info.traces, info.compiles, info.hits, info.fallbacks) == (1, info.compiles, 2, 0)
    assert info.compiles <= 1 and all(e.program is not None for e in f.explain().entries)


def test_guards_shape_dtype_scalar_and_grad_mode_retrace() -> None:
    f = tj.jit(lambda x, k: x * k)
    f(tj.ones(3), 2.0)
    f(tj.ones(3), 2.0)
    assert f.cache_info().traces == 1
    _close(f(tj.ones(5), 2.0), np.full(5, 2.0))  # shape
    _close(f(tj.ones(3, dtype=tj.float64), 2.0), np.full(3, 2.0))  # dtype
    _close(f(tj.ones(3), 3.0), np.full(3, 3.0))  # a Python scalar is a guard
    with tj.no_grad():
        f(tj.ones(3), 2.0)  # grad mode
    assert f.cache_info().traces == 5


def test_max_traces_falls_back_with_one_warning_naming_the_guard() -> None:
    f = tj.jit(lambda x: x + 1, max_traces=2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for n in range(1, 6):
            _close(f(tj.ones(n)), np.full(n, 2.0))
    msgs = [str(m.message) for m in w if issubclass(m.category, JitWarning)]
    assert len(msgs) == 1 and "max_traces=2" in msgs[0] and "changed" in msgs[0], msgs
    assert f.cache_info().fallbacks >= 2 and f.cache_info().traces == 2


def test_graph_break_splits_the_function_and_is_reported_with_the_line() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        s = x.sum().item()  # a graph break: Python needs the value
        return x * s

    jf = tj.jit(f)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            x = tj.randn(4)
            _close(jf(x), f(x))
    breaks = [str(m.message) for m in w if issubclass(m.category, JitWarning)]
    assert len(breaks) == 1 and "item()" in breaks[0] and "test_jit.py:" in breaks[0]
    report = str(jf.explain())
    assert "graph breaks" in report and ".item()" in report
    # x.sum() before the break compiles; x * s does not, as s bakes a new number each call
    info = jf.cache_info()
    assert info.segments == 1 and info.fallbacks == 0 and info.replays == 2, info


def test_disable_switch_runs_eagerly_and_compiles_nothing() -> None:
    f = tj.jit(lambda x: x * 3)
    with tj.disable_jit():
        for _ in range(3):
            _close(f(tj.ones(2)), [3, 3])
    with tj.flags(disable=True):  # what TRACEJIT_DISABLE=1 sets
        f(tj.ones(2))
    assert f.cache_info() == (0, 0, 0, 0, 0, 0, 0)


def test_disable_env_var_in_a_fresh_process() -> None:
    code = ("import tracejit as tj\nf = tj.jit(lambda x: x + 1)\n"
            "[f(tj.ones(2)) for _ in range(3)]\nprint(tuple(f.cache_info()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TRACEJIT_DISABLE": "1"}, check=True)
    assert out.stdout.strip() == "(0, 0, 0, 0, 0, 0, 0)"


def test_check_mode_catches_a_planted_miscompile() -> None:
    from tracejit.codegen import cpu

    original = cpu.SCALAR["mul"]
    cpu.SCALAR["mul"] = "({0} + {1})"  # the bug: mul compiled as add
    try:
        f = tj.jit(lambda x: (x * 3).exp(), check=True)
        x = tj.randn(2, 3)
        f(x)  # the trace runs eagerly: right
        with pytest.raises(CheckError, match=r"IR node 0 \(fused, user code test_jit.py:\d+\)"):
            f(x)
    finally:
        cpu.SCALAR["mul"] = original
    g = tj.jit(lambda x: (x * 3).exp(), check=True)
    g(x)
    _close(g(x), (x * 3).exp())  # the real template passes


def test_jitted_forward_then_eager_backward_gives_eager_grads() -> None:
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    fast = tj.jit(model)
    for _ in range(3):
        x = tj.randn(4, 5, requires_grad=True)
        loss = (fast(x) ** 2).mean()
        loss.backward()
        got = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
        model.zero_grad()
        x.grad = None
        (model(x) ** 2).mean().backward()
        want = [p.grad for p in model.parameters()] + [x.grad]
        for a, b in zip(got, want):
            _close(a, b)
        model.zero_grad()
    assert fast.cache_info().traces == 1 and fast.cache_info().hits == 2


def test_learning_rate_change_does_not_recompile() -> None:
    tj.manual_seed(0)
    model = nn.Linear(3, 2)
    ref = nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    opt, ref_opt = tj.optim.SGD(model.parameters(), lr=0.1), tj.optim.SGD(ref.parameters(), lr=0.1)
    x, y = tj.randn(6, 3), tj.randn(6, 2)

    def step(m: Any, o: Any) -> tj.Tensor:
        o.zero_grad()
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        o.step()
        return loss

    fast = tj.jit(step)
    for i in range(6):
        for o in (opt, ref_opt):
            o.param_groups[0]["lr"] = 0.1 / (i + 1)
        _close(fast(model, opt), step(ref, ref_opt))
    for a, b in zip(model.parameters(), ref.parameters()):
        _close(a, b)
    assert fast.cache_info().traces <= 2 and fast.cache_info().compiles <= 1


def test_bad_input_raises_the_eager_error_at_the_user_line() -> None:
    f = tj.jit(lambda a, b: a.mm(b))
    f(tj.ones(2, 3), tj.ones(3, 4))
    with pytest.raises(RuntimeError, match=r"2x3 and 4x4.*test_jit.py:\d+"):
        f(tj.ones(2, 3), tj.ones(4, 4))
    with pytest.raises(RuntimeError, match=r"float64.*float32.*\.float\(\)"):
        f(tj.ones(2, 3, dtype=tj.float64), tj.ones(3, 4))


def test_in_place_effects_and_grad_none_match_eager() -> None:
    tj.manual_seed(1)
    net, ref = nn.Linear(4, 3), nn.Linear(4, 3)
    ref.load_state_dict(net.state_dict())
    opts = [tj.optim.Adam(m.parameters(), lr=1e-2) for m in (net, ref)]
    x = tj.randn(5, 4)

    def step(m: Any, o: Any) -> tj.Tensor:
        loss = m(x).pow(2).sum()
        loss.backward()
        o.step()
        o.zero_grad(set_to_none=True)
        return loss

    fast = tj.jit(step)
    for _ in range(8):
        _close(fast(net, opts[0]), step(ref, opts[1]), 1e-4)
    for a, b in zip(net.parameters(), ref.parameters()):
        _close(a, b, 1e-5)
        assert a.grad is None and b.grad is None
    for a, b in zip(opts[0].state.values(), opts[1].state.values()):
        for k in a:
            _close(a[k], b[k], 1e-5)
    info = fast.cache_info()
    assert info.compiles <= 1 and info.hits >= 5, fast.explain()


def test_same_shaped_gradients_zeroed_in_the_step_compile_and_do_not_alias() -> None:
    # two biases of one shape, their gradients made and zeroed inside the step: CSE merges the
    # two zero fills, and the `.grad` each parameter gets must still be its own tensor
    rng = np.random.default_rng(0)
    mk = lambda a: tj.tensor(a.astype(np.float32), requires_grad=True)
    w, b1, b2 = mk(rng.standard_normal((3, 5))), mk(np.ones(5)), mk(np.ones(5))
    ref = [mk(p.detach().numpy()) for p in (w, b1, b2)]
    x = tj.tensor(rng.standard_normal((4, 3)).astype(np.float32))

    def step(w: tj.Tensor, b1: tj.Tensor, b2: tj.Tensor) -> tj.Tensor:
        loss = ((x @ w + b1).relu() * b2).sum()
        loss.backward()
        with tj.no_grad():
            for p in (w, b1, b2):
                p -= 0.1 * p.grad
                p.grad.zero_()
        return loss

    fast = tj.jit(step)
    for _ in range(5):
        _close(fast(w, b1, b2), step(*ref), 1e-5)
    assert fast.cache_info().hits >= 2, fast.explain()
    for a, b in zip((w, b1, b2), ref):
        _close(a, b, 1e-5)
    assert not np.shares_memory(b1.grad.numpy(), b2.grad.numpy())
    b1.grad.add_(1.0)
    _close(b2.grad, np.zeros(5), 0)


def test_ir_printer_and_source() -> None:
    w = tj.randn(4, 3)
    f = tj.jit(lambda x: (x @ w).relu() * 2.0)
    x = tj.randn(2, 4)
    f(x)
    text = f.ir(x)
    assert text.splitlines()[0].startswith("graph <lambda>(%x: f32[2,4]) lifted(")
    assert "= matmul %x, %" in text and "relu ; mul" in text and "# test_jit.py:" in text
    f(x)
    src = f.source(x)
    assert "# tracejit program" in src and "matmul2d(" in src and " = _k('k" in src
    with tj.flags(driver="native"):
        g = tj.jit(lambda x: (x @ w).relu() * 2.0)
        g(x)
        _close(g(x), f(x))
        assert "@numba.njit(cache=True" in g.source(x)


DISK = """
import tracejit as tj, numpy as np
w = tj.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
f = tj.jit(lambda x: (x @ w).tanh().sum(0))
x = tj.tensor(np.ones((2, 4), np.float32))
f(x); r = f(x)
print(tuple(f.cache_info()), float(r.sum()))
"""


def _run(code: str, cache: str) -> str:
    env = {**os.environ, "TRACEJIT_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env, check=True)
    return out.stdout.strip().splitlines()[-1] + out.stderr


def test_disk_cache_second_process_compiles_nothing(tmp_path: Any) -> None:
    first = _run(DISK, str(tmp_path))
    second = _run(DISK, str(tmp_path))
    assert first.startswith("(1, 1, 1, 1, 0, 0, 0)"), first
    assert second.startswith("(1, 1, 1, 0, 0, 0, 0)"), second  # loaded from disk: zero compiles
    assert first.split()[-1] == second.split()[-1]


def test_corrupted_cache_is_reported_and_rebuilt(tmp_path: Any) -> None:
    _run(DISK, str(tmp_path))
    files = [f for f in os.listdir(tmp_path) if f.endswith(".py")]
    assert files
    for f in files:
        with open(tmp_path / f, "w") as fh:
            fh.write("this is not python (\n")
    pyc = tmp_path / "__pycache__"
    for f in os.listdir(pyc) if pyc.exists() else []:
        with open(pyc / f, "wb") as fh:
            fh.write(b"\x00garbage")
    out = _run(DISK, str(tmp_path))
    assert "stale or corrupted; rebuilt" in out or "could not be loaded" in out, out
    assert out.startswith("(1, 1, 1,"), out


def test_module_training_flag_is_a_guard_and_dropout_compiles_in_training() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    fast = tj.jit(model)
    x = tj.randn(2, 4)
    model.eval()
    fast(x)
    _close(fast(x).detach(), model(x).detach())  # eval: dropout is the identity, compiled
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model.train()
        tj.manual_seed(2)
        got = [fast(x).detach() for _ in range(3)]  # training: a new trace, then compiled
    assert not any("graph break" in str(m.message) for m in w)
    tj.manual_seed(2)
    for g in got:  # the same masks as eager mode draws from the same seed
        np.testing.assert_array_equal(g.numpy(), model(x).detach().numpy())
    model.eval()
    _close(fast(x).detach(), model(x).detach())
    info = fast.cache_info()
    assert info.traces == 2 and info.compiles <= 2 and info.fallbacks == 0


def test_sgd_update_is_written_into_the_weights_in_place() -> None:
    w = tj.randn(5, 3, requires_grad=True)
    x = tj.randn(4, 5)

    def step() -> tj.Tensor:
        loss = (x @ w).pow(2).sum()
        loss.backward()
        with tj.no_grad():
            w.sub_(0.01 * w.grad)
            w.grad = None
        return loss

    ref = w.detach().clone()
    fast = tj.jit(step)
    for _ in range(3):
        fast()
    src = fast.source()
    assert "was updated in place" in src, src
    r = ref.clone()
    for _ in range(3):  # the same three steps by hand, in NumPy float64
        xa, ra = x.numpy().astype(np.float64), r.numpy().astype(np.float64)
        r = tj.tensor(ra - 0.01 * 2 * xa.T @ (xa @ ra))
    _close(w.detach(), r, 1e-4)
