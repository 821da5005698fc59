"""@jit and the Python state a trace depends on: argument objects by their contents (or held
alive by identity), scalar globals and closure variables read by any function the trace
entered, module attributes and reassigned parameters, calls into Python's random, NumPy's
random, time and print (graph breaks with the user's line), calls that raise (not counted as
traces) and where warnings point. Every case runs several calls with changing state and
compares with the same code run eagerly. Kernels are kept tiny and shared between tests."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
import sys
import textwrap
import time
import warnings
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.jit import JitWarning


def _close(a: Any, b: Any, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _vec(seed: int) -> tj.Tensor:
    return tj.tensor(np.random.default_rng(seed).standard_normal(3).astype(np.float32))


# ---- argument objects ---------------------------------------------------------------------------


class Batch:
    def __init__(self, x: tj.Tensor, y: tj.Tensor) -> None:
        self.x, self.y = x, y


@dataclasses.dataclass
class Pair:
    x: tj.Tensor
    y: tj.Tensor
    k: float = 2.0


def _loss(b: Any) -> tj.Tensor:
    return ((b.x - b.y) ** 2).mean()


def test_argument_objects_are_keyed_by_contents_not_id() -> None:
    """A new Batch (or dataclass) per call, the old one deleted so CPython may reuse its
    address: each call must read its own tensors, and the entry is reused (one trace)."""
    for make in (Batch, Pair):
        step = tj.jit(_loss)
        for i in range(5):
            b = make(_vec(2 * i), _vec(2 * i + 1))
            _close(step(b), _loss(b))
            del b
        assert step.cache_info().traces == 1, make


def test_a_scalar_attribute_of_an_argument_object_is_part_of_the_key() -> None:
    f = tj.jit(lambda p: p.x * p.k + p.y)
    for k in (2.0, 2.0, 3.0, 3.0, 2.0):
        p = Pair(_vec(1), _vec(2), k)
        _close(f(p), p.x * k + p.y)
    assert f.cache_info().traces == 2


class Slotted:
    __slots__ = ("x",)

    def __init__(self, x: tj.Tensor) -> None:
        self.x = x


def test_objects_keyed_by_identity_are_held_alive() -> None:
    """An object without a __dict__ stays keyed by id(); the entry holds it, so a later object
    can never be born at the same address and read the first one's tensor."""
    f = tj.jit(lambda o: o.x * 2.0, max_traces=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitWarning)
        for i in range(5):
            o = Slotted(_vec(i))
            _close(f(o), o.x * 2.0)
            del o
    held = [h for e in f.explain().entries for h in e.held]
    assert held and all(isinstance(h, Slotted) for h in held)


# ---- globals and closures -----------------------------------------------------------------------

SCALE = 2.0


def _scaled(x: tj.Tensor) -> tj.Tensor:
    return x * SCALE  # a helper reading a global: guarded although the jitted function is not it


def test_a_global_read_by_a_helper_is_guarded() -> None:
    global SCALE
    f = tj.jit(lambda x: _scaled(x))
    x = _vec(0)
    try:
        for v in (2.0, 2.0, 3.0, 3.0, 2.0):
            SCALE = v
            _close(f(x), x * v)
    finally:
        SCALE = 2.0
    assert f.cache_info().traces == 2
    assert any("global SCALE == 2.0" in str(g.describe()) for e in f.explain().entries
               for g in e.trace.guards)
    assert any("global SCALE changed" in what for what, _ in f.explain().changes)


def test_a_closure_variable_is_guarded() -> None:
    k = 2.0

    def helper(x: tj.Tensor) -> tj.Tensor:
        return x * k

    f = tj.jit(helper)
    x = _vec(1)
    for v in (2.0, 2.0, 3.0, 3.0, 2.0):
        k = v
        _close(f(x), x * v)
    assert f.cache_info().traces == 2
    assert "closure variable k" in str(f.explain())


x_counter = 0


class _Counter:
    def __init__(self, t: tj.Tensor) -> None:
        self.x_counter = t


def test_an_attribute_name_is_not_taken_for_a_global() -> None:
    """`b.x_counter` puts "x_counter" in co_names; a global loop counter of that name must not
    become a guard (it would retrace on every call)."""
    global x_counter
    f = tj.jit(lambda b: b.x_counter * 2.0)
    for i in range(4):
        x_counter = i
        f(_Counter(_vec(0)))
    assert f.cache_info().traces == 1


# ---- module attributes and parameters -----------------------------------------------------------


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = 2.0
        self.w = nn.Parameter(tj.ones(3))

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        return x * self.scale


class Weighted(Scaled):
    def forward(self, x: tj.Tensor) -> tj.Tensor:
        return x * self.w


def test_a_module_attribute_change_retraces() -> None:
    m = Scaled()
    f = tj.jit(m)
    x = _vec(2)
    for v in (2.0, 2.0, 3.0, 3.0, 2.0):
        m.scale = v
        _close(f(x), x * v)
    assert f.cache_info().traces == 2  # back to 2.0: the first entry again
    assert "module attribute Scaled.scale was assigned" in str(f.explain())


def test_reassigning_a_parameter_is_seen() -> None:
    m = Weighted()
    f = tj.jit(lambda x: m(x) + 1)
    x = _vec(3)
    for w in (1.0, 1.0, 4.0, 4.0):
        if float(m.w[0]) != w:
            m.w = nn.Parameter(tj.full((3,), w))
        _close(f(x), x * w + 1)
    assert f.cache_info().traces == 2


def test_training_steps_do_not_retrace() -> None:
    """optimizer.step, zero_grad, train()/eval() and .grad writes are no attribute
    assignments: a steady-state training loop traces a bounded number of times."""
    tj.manual_seed(0)
    m = nn.Linear(3, 1)
    opt = tj.optim.SGD(m.parameters(), lr=0.1)

    def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    f = tj.jit(step)
    x, y = tj.randn(4, 3), tj.randn(4, 1)
    for i in range(6):
        m.train(i % 2 == 0)
        f(x, y)
    assert f.cache_info().traces <= 2, f.explain()


# ---- random, time and print ---------------------------------------------------------------------


class DynamicNet(nn.Module):
    """The "Learning PyTorch with Examples" dynamic net: a random number of middle terms."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d, self.e = (nn.Parameter(tj.randn(())) for _ in range(5))

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        y = self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3
        for exp in range(4, random.randint(4, 6)):
            y = y + self.e * x ** exp
        return y


def _train_dynamic(jitted: bool) -> tuple[list[float], Any]:
    tj.manual_seed(0)
    model = DynamicNet()
    opt = tj.optim.SGD(model.parameters(), lr=1e-8, momentum=0.9)
    x = tj.linspace(-math.pi, math.pi, 50)
    y = tj.sin(x)

    def step() -> tj.Tensor:
        loss = (model(x) - y).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    f = tj.jit(step) if jitted else step
    random.seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitWarning)
        losses = [float(f()) for _ in range(6)]
    return losses, f


def test_python_random_in_forward_runs_eagerly_and_is_reported() -> None:
    want, _ = _train_dynamic(False)
    got, f = _train_dynamic(True)
    _close(got, want, 1e-4)
    text = str(f.explain())
    assert "random.Random.randint" in text and "test_jit_python_state.py:" in text, text
    assert "tracejit.randint" in text


@pytest.mark.parametrize("case", ["print", "time", "numpy", "numpy_global"])
def test_print_time_and_numpy_random_are_graph_breaks(case: str, capsys: Any) -> None:
    rng = np.random.default_rng(0)
    fns = {
        "print": lambda x: (print("traced"), x * 2.0)[1],
        "time": lambda x: x * 0.0 + time.time(),
        "numpy": lambda x: x * float(np.random.rand()),
        "numpy_global": lambda x: x * float(rng.random()),
    }
    f = tj.jit(fns[case])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        outs = [f(tj.ones(3)) for _ in range(3)]
    breaks = [b for e in f.explain().entries for b in e.breaks]
    assert breaks and breaks[0].loc.startswith("test_jit_python_state.py:"), breaks
    # each call runs the function again (a lazy replay): print's x * 2.0 compiles as a segment;
    # the others bake a new Python number into theirs on every call, so nothing compiles
    assert f.cache_info().segments == (1 if case == "print" else 0)
    assert [m.filename for m in w if issubclass(m.category, JitWarning)] == [__file__]
    if case == "print":
        assert capsys.readouterr().out.count("traced") == 3  # printed on every call
    elif case in ("numpy", "numpy_global"):
        assert float(outs[0][0]) != float(outs[1][0])  # new numbers every call, as eager


def test_numba_compiling_inside_a_trace_is_not_the_users_random(tmp_path: Any) -> None:
    # in a fresh process the first trace of a dropout makes Numba compile, and Numba's
    # lowering calls a namedtuple's generated __new__ (code from "<string>") with an argument
    # named random_function: that is library code, not a use of NumPy's random by the user
    code = textwrap.dedent("""
        import warnings, tracejit as tj
        warnings.simplefilter("error")
        f = tj.jit(lambda x: tj.nn.functional.dropout(x, 0.5, training=True) * 2.0)
        for _ in range(3):
            f(tj.ones(64))
        info = f.cache_info()
        assert info.compiles == 1 and info.hits >= 1 and info.fallbacks == 0, f.explain()
        print("ok")
    """)
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path))
    os.chmod(tmp_path, 0o700)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


# ---- calls that raise, and where warnings point -------------------------------------------------


def test_a_call_that_raises_is_not_a_trace() -> None:
    def f(x: tj.Tensor, bad: bool) -> tj.Tensor:
        if bad:
            raise ValueError("bad input")
        return x * 2.0

    jf = tj.jit(f, max_traces=1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            with pytest.raises(ValueError):
                jf(tj.ones(3), True)
        _close(jf(tj.ones(3), False), np.full(3, 2.0))
        _close(jf(tj.ones(3), False), np.full(3, 2.0))
    assert jf.cache_info().traces == 1 and jf.cache_info().fallbacks == 0
    assert not [m for m in w if issubclass(m.category, JitWarning)]


def test_warnings_point_at_the_users_line() -> None:
    f = tj.jit(lambda x: x * 2.0, max_traces=1)
    g = tj.jit(lambda x: x * float(x.sum()))  # .item-like read: a graph break
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        f(tj.ones(3))
        f(tj.ones(4))  # past max_traces: warns
        g(tj.ones(3))
    jw = [m for m in w if issubclass(m.category, JitWarning)]
    assert len(jw) == 2 and all(m.filename == __file__ for m in jw), \
        [(m.filename, m.lineno) for m in jw]


def test_a_tensor_passed_twice_is_not_taken_for_two_different_tensors() -> None:
    # traced with f(x, x), the graph reads one parameter for both: f(x, y) must trace anew
    f = tj.jit(lambda a, b: a + b * 10)
    x, y = tj.ones(3), tj.zeros(3)
    for _ in range(2):
        np.testing.assert_array_equal(f(x, x).numpy(), np.full(3, 11.0, np.float32))
    np.testing.assert_array_equal(f(x, y).numpy(), np.ones(3, np.float32))
    np.testing.assert_array_equal(f(y, x).numpy(), np.full(3, 10.0, np.float32))
    np.testing.assert_array_equal(f(y, y).numpy(), np.zeros(3, np.float32))
    assert f.cache_info().traces == 2  # (x, x) and (y, y) share one; (x, y), (y, x) another


def test_warnings_from_code_run_with_python_c_point_at_its_line() -> None:
    # `python -c` code has no source file: the warning must still be raised, not crash
    import subprocess
    import sys

    code = ("import tracejit as tj\n"
            "f = tj.jit(lambda x: print('p') or x + 1)\n"
            "print(float(f(tj.ones(2)).sum()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines()[-1] == "4.0"
    assert "<string>:3: JitWarning" in out.stderr and "print() while tracing" in out.stderr
