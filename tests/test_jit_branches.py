"""Tensor-dependent Python branches under @jit: `if loss < prev:`, `w = a if cond else b`, a
traced number compared in Python. Each trace is one path, guarded by its predicate: the program
computes the predicate and, when a call goes the other way, stops before committing any effect,
and the call is traced down the new path (eagerly, so it is right). Every test runs the same
code eagerly on an identical copy of the state as the reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime.entry import MISSED


def _close(a: Any, b: Any, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=tol, atol=tol, equal_nan=True)


def _state(seed: int) -> dict[str, tj.Tensor]:
    tj.manual_seed(seed)
    return {"w": tj.randn(4, 3), "b": tj.zeros(3), "steps": tj.zeros((), dtype=tj.int64)}


def _make_step(s: dict[str, tj.Tensor]) -> Callable[[tj.Tensor], tj.Tensor]:
    def step(x: tj.Tensor) -> tj.Tensor:
        h = x @ s["w"] + s["b"]
        loss = (h * h).mean()
        if loss > 1.0:  # a tensor predicate: each side updates different state
            s["w"].mul_(0.5)
            out = loss * 2
        else:
            s["b"].add_(1.0)
            s["steps"].add_(1)
            out = loss - 1
        return out
    return step


def _inputs(n: int) -> list[tj.Tensor]:
    rng = np.random.default_rng(1)
    # large and small inputs, so the two sides alternate irregularly
    return [tj.tensor((rng.standard_normal((5, 4)) * (3.0 if i % 3 else 0.1)).astype(np.float32))
            for i in range(n)]


def _sides(xs: list[tj.Tensor]) -> list[bool]:
    s = _state(0)
    step = _make_step(s)
    out = []
    for x in xs:
        h = x @ s["w"] + s["b"]
        out.append(bool((h * h).mean() > 1.0))
        step(x)
    return out


@pytest.mark.parametrize("driver", ["python", "native"])
def test_alternating_paths_run_one_merged_entry(driver: str) -> None:
    """Once both sides of the branch are traced, the two paths are one entry whose graph holds
    a cond on the predicate: calls alternating between them run one compiled program."""
    xs = _inputs(14)
    sides = _sides(xs)
    assert any(sides) and not all(sides)
    se, sj = _state(0), _state(0)
    eager, jf = _make_step(se), tj.jit(_make_step(sj))
    with tj.flags(driver=driver):
        for x in xs:
            _close(jf(x).numpy(), eager(x).numpy())
            for k in se:
                _close(sj[k].numpy(), se[k].numpy())
        info = jf.cache_info()
        assert info.traces == 2 and info.fallbacks == 0 and info.compiles <= 2, info
        assert info.hits == len(xs) - 2, info
        entries = [e for es in jf._entries.values() for e in es]
        assert len(entries) == 1 and entries[0].program is not None
        (e,) = entries
        assert not e.graph.checks and e.trace.merged == [e.graph.nodes[-1].loc]
        assert sum(n.name == "cond" for n in e.graph.nodes) == 1
        src = jf.source(xs[0])
        assert "PathNotTakenError" not in src and "    if v" in src and "    else:" in src
        assert "native driver" not in src  # (a graph with control flow: a Python driver)
    text = str(jf.explain())
    assert "1 cache entry" in text and "note: merged paths: the branch at " \
        "test_jit_branches.py:34 in one program" in text
    assert "merged two paths at test_jit_branches.py:34" in text


def _unmergeable() -> tuple[Callable[[tj.Tensor], Any], tj.Tensor]:
    w = tj.zeros(3)

    def f(x: tj.Tensor) -> Any:
        if x.sum() > 0:
            w.add_(x)
            return x * 2
        return (x - 1).sum()  # another type than the other side's result
    return f, w


@pytest.mark.parametrize("driver", ["python", "native"])
def test_paths_that_cannot_merge_stay_guarded_entries(driver: str) -> None:
    """Paths whose results differ in type cannot be one cond: each stays its own entry,
    guarded by its predicate, which the program checks before it writes any effect; a call
    down the other path runs the other entry; explain() says why they were not merged."""
    (eager, we), (f, wj) = _unmergeable(), _unmergeable()
    jf = tj.jit(f)
    rng = np.random.default_rng(2)
    xs = [tj.tensor(rng.standard_normal(3).astype(np.float32)) for _ in range(30)]
    with tj.flags(driver=driver):
        for x in xs:
            _close(jf(x).numpy(), eager(x).numpy())
            _close(wj.numpy(), we.numpy())
        info = jf.cache_info()
        assert info.traces == 2 and info.fallbacks == 0 and info.hits == len(xs) - 2, info
        entries = [e for es in jf._entries.values() for e in es]
        assert len(entries) == 2 and all(e.program is not None for e in entries)
        assert {e.graph.checks[0].taken for e in entries} == {True, False}
        pos = tj.ones(3)
        src = jf.source(pos)
        assert "raise PathNotTakenError(0)" in src
        assert ("native driver" in src) == (driver == "native")
        body = src.split("# ---- kernel")[0]  # the check comes before every effect
        assert body.index("raise PathNotTakenError") < body.index("# effect")
    text = str(jf.explain())
    assert text.count("path: the branch at test_jit_branches.py:") == 2
    assert "was True" in text and "was False" in text and "went the other way" in text
    assert "not merged with the entry of the other path: the paths return tensors of " \
        "different types" in text
    before = wj.numpy().copy()
    assert "is False" in jf.ir(-pos) and "is True" not in jf.ir(-pos)  # that path's entry
    assert "check %" in jf.ir(pos) and "is True" in jf.ir(pos)
    np.testing.assert_array_equal(wj.numpy(), before)  # inspecting runs nothing for real


def test_a_miss_commits_nothing() -> None:
    s = _state(0)
    jf = tj.jit(_make_step(s))
    big, small = tj.full((5, 4), 3.0), tj.full((5, 4), 0.01)
    jf(big)
    jf(big)  # compiled: the loss > 1 path
    (entry,) = [e for es in jf._entries.values() for e in es]
    assert entry.program is not None
    before = {k: (t.numpy().copy(), t._version.v) for k, t in s.items()}
    flat = [small]
    assert entry.run(flat) is MISSED  # the other side: the program stopped at its check
    for k, t in s.items():
        np.testing.assert_array_equal(t.numpy(), before[k][0])
        assert t._version.v == before[k][1], k
    assert "went the other way (True in this trace)" in entry.miss_reason()
    # a real call down that side: traced (eagerly), with eager's result and effects
    ref = _state(0)
    eager = _make_step(ref)
    eager(big)
    eager(big)
    _close(jf(small).numpy(), eager(small).numpy())
    for k in s:
        _close(s[k].numpy(), ref[k].numpy())
    assert jf.cache_info().traces == 2


def test_branch_chooses_which_parameter_gets_the_gradient() -> None:
    # the seeds' dynamic graph: w2a or w2b by the previous loss (a tensor here)
    def make() -> tuple[Callable[..., Any], list[tj.Tensor]]:
        tj.manual_seed(3)
        w1 = tj.randn(6, 5, requires_grad=True)
        w2a = tj.randn(5, 2, requires_grad=True)
        w2b = tj.randn(5, 2, requires_grad=True)

        def step(x: tj.Tensor, y: tj.Tensor, prev: tj.Tensor) -> tj.Tensor:
            w2 = w2a if prev < 4.0 else w2b
            loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
            loss.backward()
            with tj.no_grad():
                for w in (w1, w2):
                    w -= 1e-2 * w.grad
                    w.grad.zero_()
            return loss.detach()
        return step, [w1, w2a, w2b]

    tj.manual_seed(4)
    x, y = tj.randn(8, 6), tj.randn(8, 2)
    (eager, pe), (step, pj) = make(), make()
    jf = tj.jit(step)
    prev_e = prev_j = tj.tensor(10.0)
    for _ in range(3):  # only w2b is chosen: w2a's .grad stays None
        prev_e, prev_j = eager(x, y, prev_e), jf(x, y, prev_j)
        assert pj[1].grad is None and pe[1].grad is None
        _close(prev_j.numpy(), prev_e.numpy(), 1e-4)
    taken = []
    for t in range(30):
        taken.append(float(prev_e) < 4.0)
        if t % 4 == 0:
            prev_e = prev_j = tj.tensor(1.0 if t % 8 else 10.0)  # force both sides
        prev_e, prev_j = eager(x, y, prev_e), jf(x, y, prev_j)
        _close(prev_j.numpy(), prev_e.numpy(), 1e-4)
        for a, b in zip(pj, pe):
            _close(a.detach().numpy(), b.detach().numpy(), 1e-4)
            assert (a.grad is None) == (b.grad is None)
    assert any(taken) and not all(taken)
    info = jf.cache_info()
    # each side traced once more when its .grad went None -> a tensor (a guard on .grad)
    assert info.fallbacks == 0 and info.traces <= 4 and info.compiles <= 4, info


def test_nested_branches() -> None:
    def make() -> tuple[Callable[..., Any], tj.Tensor]:
        acc = tj.zeros(2)

        def f(x: tj.Tensor) -> tj.Tensor:
            a, b = x[0], x[1]
            if a > 0:
                if b > 0:
                    acc.add_(tj.stack([a, b]))
                    return x * 2
                acc.sub_(1.0)
                return x - 1
            return x.abs() if b > a else -x
        return f, acc

    (eager, ae), (f, aj) = make(), make()
    jf = tj.jit(f)
    cases = [(1, 1), (1, -1), (-1, 2), (-2, -3), (1, 1), (1, -1), (-1, 2), (-2, -3)] * 2
    for a, b in cases:
        x = tj.tensor([float(a), float(b)])
        _close(jf(x).numpy(), eager(x).numpy())
        _close(aj.numpy(), ae.numpy())
    info = jf.cache_info()
    assert info.traces == 4 and info.fallbacks == 0 and info.hits == len(cases) - 4, info
    # merged from the inside out: (a > 0, b > 0) both ways, then (a <= 0, b > a) both
    # ways, then those two on a > 0: one entry, a cond with a cond in each branch
    (e,) = [e for es in jf._entries.values() for e in es]
    assert not e.graph.checks and len(e.trace.merged) == 3 and e.program is not None
    text = jf.ir(tj.tensor([1.0, 1.0]))
    assert text.count(" = cond ") == 3 and "check %" not in text


def test_nan_predicates_follow_python_truth() -> None:
    # bool(nan) is True (as torch's bool(torch.tensor(nan))); nan > 0 is False
    def f(x: tj.Tensor) -> tj.Tensor:
        s = x.sum()
        y = x * 2 if s else x * 3  # bool(): s != 0, true for NaN
        if s > 0:
            y = y + 1
        return y

    jf = tj.jit(f)
    vals = [1.0, math.nan, 0.0, -1.0, math.nan, 1.0, 0.0, math.inf, -math.inf, math.nan]
    for v in vals * 2:
        x = tj.tensor([v, 0.0])
        _close(jf(x).numpy(), f(x).numpy())
    assert bool(tj.tensor(math.nan)) is True
    info = jf.cache_info()
    # paths: (T, T) 1, (T, F) nan/-1/-inf, (F, F) 0
    assert info.traces == 3 and info.fallbacks == 0, info


def test_traced_number_compared_in_python() -> None:
    # a Python float argument whose value changes is a 0-d input; comparing it is a branch
    def f(x: tj.Tensor, prev: float) -> tj.Tensor:
        if prev < 5.0 and prev != 2.0:
            return x * prev
        return x - prev

    jf = tj.jit(f)
    x = tj.randn(3)
    for p in [7.0, 1.0, 9.0, 2.0, 3.0, 6.0, 2.0, 0.5, 12.0, 4.0] * 2:
        _close(jf(x, p).numpy(), f(x, p).numpy())
    ex = jf.explain()
    assert "prev" in ex.scalar_inputs
    info = jf.cache_info()
    # 7.0 keyed by value; then the three paths (< 5 and != 2, < 5 and == 2, >= 5)
    assert info.traces == 4 and info.fallbacks == 0, info


@pytest.mark.parametrize("driver", ["python", "native"])
def test_one_element_and_integer_predicates(driver: str) -> None:
    def f(x: tj.Tensor, n: tj.Tensor, flag: tj.Tensor) -> tj.Tensor:
        if flag:  # a bool argument: checked before any node runs
            x = x + 1
        if n:  # an int64 (1,) tensor
            x = x * n
        return x

    jf = tj.jit(f)
    x = tj.ones(3)
    cases = [(True, 2), (False, 0), (True, 0), (False, 3)]
    with tj.flags(driver=driver):
        for k, (fl, n) in enumerate(cases * 2):
            a, b = tj.tensor(fl), tj.tensor([n])
            _close(jf(x, b, a).numpy(), f(x, b, a).numpy())
            if k == 1:  # (T, T) and (F, F): a branch after the one they part at, so they
                # stay guarded entries until the inner paths are known
                assert len([e for es in jf._entries.values() for e in es]) == 2
                src = jf.source(x, tj.tensor([2]), tj.tensor(True))
                # the bool argument's check is the driver's first statement
                body = src.split("# ----")[0].split("):\n", 1)[1]
                assert body.lstrip().startswith("if p2.item() != True:")
        info = jf.cache_info()
        assert info.traces == 4 and info.fallbacks == 0 and info.hits == 4, info
        (e,) = [e for es in jf._entries.values() for e in es]  # then all four merged
        assert not e.graph.checks and e.program is not None


def test_branch_inside_backward() -> None:
    class Clip(tj.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: tj.Tensor) -> tj.Tensor:
            return x * 1.0

        @staticmethod
        def backward(ctx: Any, g: tj.Tensor) -> tj.Tensor:
            n = (g * g).sum()
            if n > 1.0:  # a branch on the gradient, taken inside loss.backward()
                return g / n.sqrt()
            return g

    def make() -> tuple[Callable[..., Any], tj.Tensor]:
        tj.manual_seed(5)
        w = tj.randn(3, 2, requires_grad=True)

        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            loss = ((Clip.apply(x @ w) - y) ** 2).sum()
            loss.backward()
            with tj.no_grad():
                w.sub_(0.1 * w.grad)
                w.grad.zero_()
            return loss.detach()
        return step, w

    (eager, we), (step, wj) = make(), make()
    jf = tj.jit(step)
    tj.manual_seed(6)
    x = tj.randn(4, 3)
    for k in range(12):
        y = tj.full((4, 2), 10.0 if k % 3 == 0 else 0.01)
        _close(jf(x, y).numpy(), eager(x, y).numpy(), 1e-4)
        _close(wj.detach().numpy(), we.detach().numpy(), 1e-4)
    info = jf.cache_info()
    assert info.fallbacks == 0 and info.traces <= 4, info  # (+1: .grad None at first)
    assert any(e.graph.checks for es in jf._entries.values() for e in es)


def test_explain_shows_the_merged_entry() -> None:
    w = tj.ones(3)

    def f(x: tj.Tensor) -> tj.Tensor:
        if x.sum() > 0:
            w.add_(x)
            return x * 2
        return x - 1

    jf = tj.jit(f)
    pos, neg = tj.ones(3), -tj.ones(3)
    for x in (pos, neg, pos):
        jf(x)
    text = str(jf.explain())
    assert "1 cache entry" in text and "path: the branch" not in text
    assert "note: merged paths: the branch at test_jit_branches.py:" in text
    assert "1x the branch at test_jit_branches.py:" in text  # the miss that traced neg
    before = w.numpy().copy()
    for x in (pos, neg):  # one entry for both: a cond, no check
        ir = jf.ir(x)
        assert " = cond " in ir and "check %" not in ir and "effects: %" in ir
    np.testing.assert_array_equal(w.numpy(), before)  # inspecting runs nothing for real
    assert jf.cache_info().traces == 2  # ir() found the entry: nothing traced again


def test_check_mode_with_branches() -> None:
    se, sj = _state(0), _state(0)
    eager, jf = _make_step(se), tj.jit(_make_step(sj), check=True)
    for x in _inputs(8):
        _close(jf(x).numpy(), eager(x).numpy())
    for k in se:
        _close(sj[k].numpy(), se[k].numpy())
    assert jf.cache_info().traces == 2


def test_seeds_branching_program_as_one_jitted_step() -> None:
    # USER-PROGRAMS' dynamic graph, the branch on the previous loss (a Python float, from
    # loss.item() outside the step) inside the jitted step: 40 steps down both branches
    def make() -> tuple[Callable[..., Any], list[tj.Tensor]]:
        tj.manual_seed(7)
        w1 = tj.randn(20, 8, requires_grad=True)
        w2a = tj.randn(8, 3, requires_grad=True)
        w2b = tj.randn(8, 3, requires_grad=True)

        def step(x: tj.Tensor, y: tj.Tensor, prev_loss: float) -> tj.Tensor:
            w2 = w2a if prev_loss < 60.0 else w2b
            y_pred = x.mm(w1).clamp(min=0).mm(w2)
            loss = (y_pred - y).pow(2).sum()
            loss.backward()
            with tj.no_grad():
                for w in (w1, w2):
                    w -= 1e-3 * w.grad
                    w.grad = None
            return loss
        return step, [w1, w2a, w2b]

    tj.manual_seed(8)
    x, y = tj.randn(16, 20), tj.randn(16, 3)
    (eager, pe), (step, pj) = make(), make()
    jf = tj.jit(step)
    prev_e = prev_j = 80.0
    sides = []
    for _ in range(40):
        sides.append(prev_e < 60.0)
        assert (prev_j < 60.0) == sides[-1]
        le, lj = eager(x, y, prev_e), jf(x, y, prev_j)
        _close(lj.detach().numpy(), le.detach().numpy(), 1e-4)
        for a, b in zip(pj, pe):  # the chosen weight only, as eager: no wrong-path update
            _close(a.detach().numpy(), b.detach().numpy(), 1e-4)
            assert a.grad is None
        prev_e, prev_j = le.item(), lj.item()
    assert sides.count(True) >= 5 and sides.count(False) >= 5, sides
    info = jf.cache_info()
    # one trace keyed by the first value, then one per branch with the loss as an input
    assert info.traces == 3 and info.fallbacks == 0 and info.compiles <= 3, info
    assert info.hits == 40 - 3, info
    # the two paths (w2a, w2b) are one entry with a cond: one program for both sides
    compiled = [e for es in jf._entries.values() for e in es if e.program is not None]
    assert len(compiled) == 1 and not compiled[0].graph.checks and compiled[0].trace.merged
    assert "prev_loss" in jf.explain().scalar_inputs
    assert "note: merged paths" in str(jf.explain())


def test_a_missed_path_draws_no_random_numbers() -> None:
    # the generator's offset is an effect: a call that misses the dropout path's entry must
    # not advance it, so the jitted run draws the same numbers as the eager run
    def f(x: tj.Tensor) -> tj.Tensor:
        if x.sum() > 0:
            return tj.nn.functional.dropout(x, 0.5, training=True)
        return x * 2

    xs = [tj.ones(8) * (1 if k % 3 else -1) for k in range(10)]
    tj.manual_seed(11)
    want = [f(x).numpy().copy() for x in xs]
    jf = tj.jit(f)
    tj.manual_seed(11)
    got = [jf(x).numpy().copy() for x in xs]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    info = jf.cache_info()
    assert info.traces == 2 and info.fallbacks == 0 and info.hits == 8, info


def test_alternating_merged_paths_allocate_only_what_they_return() -> None:
    """Before the merge a call down the path second in the list ran the other program up to
    its check, which raised and dropped that call's workspace; now both paths are one
    program, so steady-state calls alternating between the sides allocate only the array
    they return (NumPy's count; Numba's less the records it makes to unbox arguments)."""
    from test_allocations import _unboxed

    from tracejit.testing import count_allocations

    s = _state(0)
    jf = tj.jit(_make_step(s))
    big, small = tj.full((5, 4), 3.0), tj.full((5, 4), 0.01)
    for x in (big, small) * 3:  # traced twice (merged), compiled, warm
        jf(x)
    (e,) = [e for es in jf._entries.values() for e in es]
    assert e.program is not None and not e.graph.checks
    ref = _state(0)
    eager = _make_step(ref)
    for x in (big, small) * 3:
        eager(x)
    with _unboxed(e.program.fn) as unboxed, count_allocations() as n:
        outs = [jf(x) for x in (big, small) * 50]
    assert n.numpy == 100 and n.numba - unboxed[0] == 0, (n, unboxed)
    assert jf.cache_info().traces == 2
    for k, x in enumerate((big, small) * 50):  # and they were right
        _close(outs[k].numpy(), eager(x).numpy())
    for k in s:
        _close(s[k].numpy(), ref[k].numpy())


def _three_paths() -> tuple[Callable[[tj.Tensor], tj.Tensor], tj.Tensor]:
    acc = tj.zeros(3)

    def f(x: tj.Tensor) -> tj.Tensor:
        s = x.sum()
        if s > 1.0:
            acc.mul_(0.5)
            return x * s
        elif s < -1.0:
            acc.add_(x)
            return x - s
        acc.sub_(0.25)
        return x.exp()
    return f, acc


def test_a_third_path_merges_when_its_side_is_known() -> None:
    """if / elif / else: the first two paths part at the `if` with a branch after it on one
    side (the elif), so they stay guarded entries (both compiled, alternating as before);
    when the third path arrives, the elif's two sides merge, then that with the if's: one
    entry for every path, values and effects equal eager's over the 40 calls."""
    (eager, ae), (f, aj) = _three_paths(), _three_paths()
    jf = tj.jit(f)
    rng = np.random.default_rng(9)

    def x_for(side: int) -> tj.Tensor:
        v = rng.uniform(0.5, 1.0, 3).astype(np.float32) * (1, -1, 0.1)[side]
        return tj.tensor(v)

    sides = [0, 1] * 6 + [2] + [0, 2, 1, 1, 2, 0, 2] * 4
    for k, side in enumerate(sides):
        x = x_for(side)
        _close(jf(x).numpy(), eager(x).numpy())
        _close(aj.numpy(), ae.numpy())
        entries = [e for es in jf._entries.values() for e in es]
        if k == 11:  # two paths known: guarded entries, both compiled
            assert len(entries) == 2 and all(e.program is not None for e in entries)
            assert "a branch after the one the paths part at" in str(jf.explain())
    assert len(sides) >= 30
    (e,) = entries
    assert not e.graph.checks and len(e.trace.merged) == 2
    info = jf.cache_info()
    assert info.traces == 3 and info.fallbacks == 0 and info.hits == len(sides) - 3, info
