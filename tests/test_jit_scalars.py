"""Python numbers that change between calls become 0-d inputs of the compiled program (after
their value changed once), unless their value steers the trace (a branch, a shape), when they
stay guards; and in-place writes into views compile with eager's aliasing. Every result is
compared with the same code run eagerly (and torch where it runs the same program)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.jit import JitWarning


def _close(a: Any, b: Any, tol: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _adam_like(w: tj.Tensor) -> Any:
    """A step with Adam-like bias correction and a decaying learning rate, both computed from
    the Python step counter t."""

    def step(x: tj.Tensor, y: tj.Tensor, t: int) -> tj.Tensor:
        loss = ((x @ w - y) ** 2).mean()
        g = 2 * x.t() @ (x @ w - y) / y.numel()
        bc1 = 1 - 0.9 ** t
        bc2 = 1 - 0.999 ** t
        lr = 0.1 * 0.99 ** t
        with tj.no_grad():
            w.sub_(g * (lr / bc1) / (bc2 ** 0.5 + 1e-8))
        return loss

    return step


def test_step_counter_becomes_an_input() -> None:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 2)).astype(np.float32)
    wj, we = tj.tensor(w0.copy()), tj.tensor(w0.copy())
    fj, fe = tj.jit(_adam_like(wj)), _adam_like(we)
    with warnings.catch_warnings():
        warnings.simplefilter("error", JitWarning)
        for t in range(1, 31):
            x = tj.tensor(rng.standard_normal((4, 3)).astype(np.float32))
            y = tj.tensor(rng.standard_normal((4, 2)).astype(np.float32))
            lj, le = fj(x, y, t), fe(x, y, t)
            assert lj.dtype is le.dtype is tj.float32
            _close(lj.numpy(), le.numpy(), 1e-5)
            _close(wj.numpy(), we.numpy(), 1e-5)
    info = fj.cache_info()
    # traced twice (the first trace baked t = 1), compiled once: the first entry never ran again
    assert info.traces == 2 and info.compiles == 1 and info.fallbacks == 0, info
    assert info.hits >= 27, info
    ex = fj.explain()
    assert "t" in ex.scalar_inputs and not ex.scalar_guards
    assert "t: a 0-d input of the compiled program" in str(ex)
    e = fj._entry_for((x, y, 31), {})
    assert e.program is not None  # the calls ran compiled code
    assert any(v.type.dtype is tj.int64 and v.type.shape == () for v in e.graph.inputs)


def test_float_temperature() -> None:
    def f(x: tj.Tensor, temp: float) -> tj.Tensor:
        return (x / temp).softmax(-1) * temp

    jf = tj.jit(f)
    x = tj.randn(4, 5)
    for i in range(12):
        temp = 0.5 + 0.37 * i
        r, e = jf(x, temp), f(x, temp)
        assert r.dtype is tj.float32
        _close(r.numpy(), e.numpy())
    info = jf.cache_info()
    assert info.traces == 2 and info.fallbacks == 0 and info.hits == 10, info
    assert "temp" in jf.explain().scalar_inputs


def test_branch_on_the_number_is_a_checked_branch() -> None:
    # `if t % 10 == 0:` on a traced int is a branch the program checks (not a guard on the
    # value): one entry per path, t stays a 0-d input, calls down either path run compiled
    def f(x: tj.Tensor, t: int) -> tj.Tensor:
        if t % 10 == 0:
            return x * 0
        return x * t

    jf = tj.jit(f)
    x = tj.randn(3)
    for t in range(1, 25):
        _close(jf(x, t).numpy(), f(x, t).numpy())
    ex = jf.explain()
    assert "t" in ex.scalar_inputs and "t" not in ex.scalar_guards
    # both paths seen: the two guarded entries became one entry holding a cond
    assert "merged two paths at test_jit_scalars.py:" in str(ex)
    info = jf.cache_info()
    # t=1 keyed by value; t=2 traced as an input (the t % 10 != 0 path); t=10 the other path
    assert info.traces == 3 and info.fallbacks == 0 and info.compiles <= 2, info
    assert info.hits == 24 - 3, info


def test_number_used_as_a_shape_stays_a_guard() -> None:
    def f(x: tj.Tensor, n: int) -> tj.Tensor:
        return tj.zeros(n) + x.sum()

    jf = tj.jit(f)
    x = tj.randn(3)
    for n in (2, 3, 4, 3, 2):
        r, e = jf(x, n), f(x, n)
        assert r.shape == e.shape == (n,)
        _close(r.numpy(), e.numpy())
    assert "used as an index, a size" in jf.explain().scalar_guards["n"]
    assert jf.cache_info().fallbacks == 0


def test_int_and_float_values_of_one_argument() -> None:
    def f(x: tj.Tensor, s: Any) -> Any:
        return x * s + s // 2 - (s * 3 - 1)

    jf = tj.jit(f)
    xf, xi = tj.randn(4), tj.tensor([1, -2, 3, 7])
    for s in (1, 2, 2.5, -3, 3.5, 4, -0.75, 7, 0, -8.25, 5, 1.5):
        for x in (xf, xi):
            r, e = jf(x, s), f(x, s)
            assert r.dtype is e.dtype, (s, x.dtype, r.dtype, e.dtype)
            _close(r.numpy(), e.numpy())
    info = jf.cache_info()
    assert info.fallbacks == 0 and info.traces <= 6 and info.hits >= 18, info
    assert "s" in jf.explain().scalar_inputs


def test_returned_number_stays_a_guard() -> None:
    def f(x: tj.Tensor, s: int) -> Any:
        return x * s, s * 3 - 1

    jf = tj.jit(f)
    x = tj.randn(3)
    for s in (1, 2, -3, 4, 2):
        (rt, rs), (et, es) = jf(x, s), f(x, s)
        assert type(rs) is type(es) and rs == es
        _close(rt.numpy(), et.numpy())
    assert "returned by the function" in jf.explain().scalar_guards["s"]


def test_negative_and_power_values() -> None:
    def f(x: tj.Tensor, k: int) -> tj.Tensor:
        return x * (2 ** k) + x * (k ** 2) - k % 3

    jf = tj.jit(f)
    x = tj.randn(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitWarning)
        for k in (1, 2, -1, 3, -4, 5, 0, -2):
            _close(jf(x, k).numpy(), f(x, k).numpy())
    # 2 ** k is an int or a float by k's sign: k stays a guard
    assert "int power" in jf.explain().scalar_guards["k"]


def test_bool_argument_stays_a_guard() -> None:
    f = tj.jit(lambda x, flag: x * 2 if flag else x)
    x = tj.randn(3)
    for flag in (True, False, True, False):
        _close(f(x, flag).numpy(), (x * 2 if flag else x).numpy())
    assert f.cache_info().traces == 2 and not f.explain().scalar_inputs


def _model_and_opt(seed: int, sched: bool) -> tuple[Any, Any, Any]:
    tj.manual_seed(seed)
    m = nn.Linear(3, 2)
    opt = tj.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    s = tj.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9) if sched else None
    return m, opt, s


@pytest.mark.parametrize("how", ["param_groups", "scheduler"])
def test_learning_rate_changes_run_compiled(how: str) -> None:
    def make(m: Any, opt: Any) -> Any:
        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            opt.zero_grad()
            loss = ((m(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            return loss
        return step

    mj, oj, sj = _model_and_opt(0, how == "scheduler")
    me, oe, se = _model_and_opt(0, how == "scheduler")
    fj, fe = tj.jit(make(mj, oj)), make(me, oe)
    rng = np.random.default_rng(1)
    for i in range(20):
        x = tj.tensor(rng.standard_normal((5, 3)).astype(np.float32))
        y = tj.tensor(rng.standard_normal((5, 2)).astype(np.float32))
        _close(fj(x, y).detach().numpy(), fe(x, y).detach().numpy(), 1e-5)
        if how == "scheduler":
            sj.step()
            se.step()
        else:
            for o in (oj, oe):
                o.param_groups[0]["lr"] = 0.1 * 0.95 ** (i + 1)
        assert oj.param_groups[0]["lr"] == oe.param_groups[0]["lr"]
        _close(mj.weight.detach().numpy(), me.weight.detach().numpy(), 1e-5)
    info = fj.cache_info()
    assert info.traces <= 2 and info.fallbacks == 0 and info.hits >= 18, info


# ---- in-place writes into views --------------------------------------------------------------


def _col_add(x: Any) -> Any:
    x[:, 0] += 1
    return x * 2


def _slice_assign(x: Any, y: Any) -> Any:
    x[1:3] = y
    return x.sum(0)


def _data_mul(x: Any) -> Any:
    x.data[:2].mul_(0.5)
    return x + 0


def _flat_set(x: Any) -> Any:
    v = x.view(-1)
    v[3] = 0
    return v * 1 + x.sum()  # reads the view and its base after the write


CASES = [(_col_add, ()), (_slice_assign, ((2, 4),)), (_data_mul, ()), (_flat_set, ())]


@pytest.mark.parametrize("fn,extra", CASES, ids=[c[0].__name__ for c in CASES])
def test_inplace_view_updates_compile(fn: Any, extra: tuple) -> None:
    rng = np.random.default_rng(2)
    jf = tj.jit(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", JitWarning)  # no graph break
        for _ in range(4):
            base = rng.standard_normal((3, 4)).astype(np.float32)
            ys = [rng.standard_normal(s).astype(np.float32) for s in extra]
            xj, xe = tj.tensor(base.copy()), tj.tensor(base.copy())
            rj = jf(xj, *[tj.tensor(y) for y in ys])
            re = fn(xe, *[tj.tensor(y) for y in ys])
            _close(rj.numpy(), re.numpy())
            _close(xj.numpy(), xe.numpy())  # the caller's tensor was changed in place
    info = jf.cache_info()
    assert info.traces == 1 and info.fallbacks == 0 and info.hits == 3, info
    ex = jf.explain()
    assert not ex.graph_breaks and "compiled" in str(ex)


@pytest.mark.torch
@pytest.mark.parametrize("fn,extra", CASES, ids=[c[0].__name__ for c in CASES])
def test_inplace_view_updates_match_torch(fn: Any, extra: tuple) -> None:
    import torch

    rng = np.random.default_rng(3)
    jf = tj.jit(fn)
    for _ in range(3):
        base = rng.standard_normal((3, 4)).astype(np.float32)
        ys = [rng.standard_normal(s).astype(np.float32) for s in extra]
        xj, xt = tj.tensor(base.copy()), torch.tensor(base.copy())
        rj = jf(xj, *[tj.tensor(y) for y in ys])
        rt = fn(xt, *[torch.tensor(y) for y in ys])
        _close(rj.numpy(), rt.numpy())
        _close(xj.numpy(), xt.numpy())


def test_view_write_into_an_input_that_is_a_view() -> None:
    """The input is itself a view (of a tensor the function never sees): the write reaches
    that tensor too, as in eager mode."""
    def f(x: Any) -> Any:
        x[0, 1:3] = -1.0
        x[:, 3] *= 2
        return x.sum()

    jf = tj.jit(f)
    for i in range(3):
        outer_j, outer_e = tj.arange(24.0) + i, tj.arange(24.0) + i
        rj, re = jf(outer_j[4:16].view(3, 4)), f(outer_e[4:16].view(3, 4))
        _close(rj.numpy(), re.numpy())
        _close(outer_j.numpy(), outer_e.numpy())
    assert jf.cache_info().fallbacks == 0 and jf.cache_info().hits == 2


def test_read_of_a_view_changed_through_its_base_is_still_right() -> None:
    def f(x: Any) -> Any:
        v = x[0]
        x.mul_(2)  # v now holds other values than those traced for it
        v += 1
        return v * 1

    jf = tj.jit(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitWarning)
        for _ in range(3):
            xj, xe = tj.ones(2, 3), tj.ones(2, 3)
            _close(jf(xj).numpy(), f(xe).numpy())
            _close(xj.numpy(), xe.numpy())
