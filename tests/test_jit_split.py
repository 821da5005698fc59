"""Graph breaks split, not abandon: a function whose trace broke runs as a lazy replay, its
tensor work compiled in segments around the breaks (trace/lazy.py). Tested like a user against
eager mode over many steps: logged values, printed tensors, .numpy(), data-dependent shapes,
ops without a compiled form, breaks around backward and the optimizer step, parameters after
20 steps, aliasing of outputs, breaks that stop happening, and exceptions mid-step."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.jit import JitWarning

STEPS = 20


@pytest.fixture(autouse=True)
def _always_replay() -> Any:
    # these tests are about the replay itself: never let the measured choice (tiny tensors
    # run faster eagerly) switch a function to plain eager calls
    with tj.flags(split="replay"):
        yield


def _quiet(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitWarning)
        return fn()


def _model(seed: int = 0) -> tuple[nn.Module, Any]:
    tj.manual_seed(seed)
    m = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    return m, tj.optim.Adam(m.parameters(), lr=0.02)


def _batches(n: int = STEPS) -> list[tuple[tj.Tensor, tj.Tensor]]:
    rng = np.random.default_rng(1)
    return [(tj.tensor(rng.standard_normal((16, 6)).astype(np.float32)),
             tj.tensor(rng.integers(0, 3, 16))) for _ in range(n)]


def _params(m: nn.Module) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in m.parameters()]


def _same_params(a: nn.Module, b: nn.Module) -> None:
    for x, y in zip(_params(a), _params(b)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def _run_both(make_step: Callable[[nn.Module, Any, list], Callable]) -> tuple[Any, ...]:
    """The same step, eager and jitted, from the same weights over the same batches."""
    me, oe = _model()
    mj, oj = _model()
    le: list[Any] = []
    lj: list[Any] = []
    eager, jitted = make_step(me, oe, le), tj.jit(make_step(mj, oj, lj))
    for x, y in _batches():
        eager(x, y)
        _quiet(lambda x=x, y=y: jitted(x, y))  # type: ignore[misc]
    return me, mj, le, lj, jitted


def test_loss_item_logging_mid_step_compiles_around_the_break() -> None:
    def make(m: nn.Module, opt: Any, log: list) -> Callable:
        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            log.append(loss.item())  # between forward and backward
            loss.backward()
            log.append(m[0].weight.grad.abs().sum().item())  # between backward and step
            opt.step()
            log.append(loss.item())  # after the step: still this step's loss
            return loss
        return step

    me, mj, le, lj, jf = _run_both(make)
    assert len(le) == len(lj) == 3 * STEPS  # logged on every call
    np.testing.assert_allclose(lj, le, rtol=1e-4, atol=1e-6)
    _same_params(me, mj)
    info = jf.cache_info()
    assert info.segments >= 3 and info.fallbacks == 0 and info.traces == 1, info
    assert info.replays == STEPS - 1
    text = str(jf.explain())
    assert "segments (lazy replay" in text and "ended by .item() at test_jit_split.py:" in text
    assert "compiled" in text


def test_reading_after_the_step_sees_what_eager_sees() -> None:
    """The lazy frontend keeps the user's mutation order: a value read before opt.step() is the
    old weight's, one read after is the new weight's, whatever the flush order."""
    def make(m: nn.Module, opt: Any, log: list) -> Callable:
        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            opt.zero_grad()
            w = m[2].weight
            before = w.sum()
            wt = w.t()  # a view of the parameter, made before the update
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            after = w.sum()
            log.append((before.item(), after.item(), wt.sum().item(), loss.item()))
            return loss
        return step

    me, mj, le, lj, _ = _run_both(make)
    np.testing.assert_allclose(np.array(lj), np.array(le), rtol=1e-4, atol=1e-5)
    assert all(b != a for b, a, _, _ in le)  # (the step does change the weight)
    _same_params(me, mj)


def test_print_of_a_tensor_mid_step_prints_every_call(capsys: Any) -> None:
    def make(m: nn.Module, opt: Any, log: list) -> Callable:
        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            opt.zero_grad()
            out = m(x)
            print(out[0, :2].detach())
            loss = nn.functional.cross_entropy(out, y)
            loss.backward()
            opt.step()
            return loss
        return step

    me, mj, _, _, jf = _run_both(make)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 * STEPS  # eager's line and the jitted one, each call
    eager = [lines[i] for i in range(0, len(lines), 2)]
    jitted = [lines[i] for i in range(1, len(lines), 2)]

    def nums(s: str) -> list[float]:
        return [float(v) for v in s.split("[")[1].split("]")[0].split(",")]

    np.testing.assert_allclose([nums(s) for s in jitted], [nums(s) for s in eager], atol=2e-4)
    _same_params(me, mj)
    assert jf.cache_info().segments >= 2 and jf.cache_info().replays == STEPS - 1


def test_numpy_mid_step_and_a_python_branch_on_the_value() -> None:
    def make(m: nn.Module, opt: Any, log: list) -> Callable:
        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            opt.zero_grad()
            out = m(x)
            arr = out.detach().numpy()
            log.append(arr.copy())
            loss = nn.functional.cross_entropy(out, y)
            if loss.item() > 1.0:  # a data-dependent Python branch: either way is replayed
                loss = loss * 2.0
            loss.backward()
            opt.step()
            return loss
        return step

    me, mj, le, lj, _ = _run_both(make)
    for a, b in zip(le, lj):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    _same_params(me, mj)


def test_boolean_mask_and_nonzero_with_shapes_that_change_between_calls() -> None:
    def f(x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
        h = x * 2.0 + 1.0
        picked = h[h > 1.5]  # data-dependent shape: runs eagerly between two segments
        idx = (x > 0).nonzero()
        return (picked.exp() * 3.0).sum() + idx.shape[0], picked

    jf = tj.jit(f)
    rng = np.random.default_rng(2)
    for _ in range(6):
        x = tj.tensor(rng.standard_normal(32).astype(np.float32))
        want_s, want_p = f(x)
        got_s, got_p = _quiet(lambda x=x: jf(x))  # type: ignore[misc]
        assert got_p.shape == want_p.shape
        np.testing.assert_allclose(got_p.numpy(), want_p.numpy(), rtol=1e-6)
        np.testing.assert_allclose(got_s.item(), want_s.item(), rtol=1e-5)
    text = str(jf.explain())
    assert "its output shape depends on the data" in text and "segment" in text


def test_an_op_without_a_compiled_form_runs_eagerly_between_segments() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        h = x.relu() * 2.0
        r = tj.randperm(4)  # no compiled form: a graph break
        return h.sum() + r.float().sum() * h.mean()

    jf = tj.jit(f)
    xs = [tj.randn(4, 3) for _ in range(5)]
    tj.manual_seed(3)
    want = [f(x).item() for x in xs]
    tj.manual_seed(3)
    got = [_quiet(lambda x=x: jf(x)).item() for x in xs]  # type: ignore[misc]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert jf.cache_info().segments >= 1 and "randperm" in str(jf.explain())


def test_outputs_do_not_alias_internal_buffers_or_each_other() -> None:
    w = tj.ones(4, 3)

    def f(x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor, tj.Tensor]:
        a = x @ w
        b = a * 1.0
        s = a.sum().item()
        c = (x @ w) * 1.0  # the same computation as b, in the next segment
        return a + s, b, c

    jf = tj.jit(f)
    x = tj.randn(2, 4)
    outs = [_quiet(lambda: jf(x)) for _ in range(4)]
    want = f(x)
    for o in outs:
        for g, e in zip(o, want):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-6)
    last, prev = outs[-1], outs[-2]
    arrays = [t.numpy() for t in last] + [t.numpy() for t in prev] + [w.numpy()]
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)
    last[1].add_(100.0)  # writing a result changes nothing else
    np.testing.assert_allclose(_quiet(lambda: jf(x))[1].numpy(), want[1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), np.ones((4, 3)))


def test_a_function_whose_breaks_stop_happening() -> None:
    def make(m: nn.Module, opt: Any, log: list) -> Callable:
        calls = [0]

        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            calls[0] += 1
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            if calls[0] <= 3:
                log.append(loss.item())  # only the first calls log
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    me, mj, le, lj, jf = _run_both(make)
    np.testing.assert_allclose(lj, le, rtol=1e-4)
    assert len(lj) == 3
    _same_params(me, mj)
    segs = jf.explain().segments
    assert any(s.ended_by is None and s.program is not None and s.runs >= 10 for s in segs)


def test_an_exception_mid_step_leaves_state_as_eager_does() -> None:
    def make(m: nn.Module, opt: Any, log: list) -> Callable:
        calls = [0]

        def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
            calls[0] += 1
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            log.append(loss.item())
            loss.backward()
            opt.step()  # committed before the exception, in eager mode too
            if calls[0] % 4 == 0:
                raise ValueError("a failure after the step")
            return loss
        return step

    me, oe = _model()
    mj, oj = _model()
    le: list[float] = []
    lj: list[float] = []
    eager, jitted = make(me, oe, le), tj.jit(make(mj, oj, lj))
    for x, y in _batches(12):
        for fn in (eager, jitted):
            try:
                _quiet(lambda fn=fn, x=x, y=y: fn(x, y))  # type: ignore[misc]
            except ValueError:
                pass
    np.testing.assert_allclose(lj, le, rtol=1e-4)
    _same_params(me, mj)


def test_an_in_place_update_of_a_deferred_result_and_views_of_it() -> None:
    def f(x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
        h = x * 2.0
        v = h[:, 0]  # a view of a deferred result
        h.add_(1.0)  # the view sees the write, as in eager mode
        v.mul_(10.0)  # and a write through the view reaches h
        s = h.sum().item()
        return h * s, v

    jf = tj.jit(f)
    for _ in range(4):
        x = tj.randn(3, 4)
        want = f(x)
        got = _quiet(lambda x=x: jf(x))  # type: ignore[misc]
        for g, e in zip(got, want):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5)
        got[1].add_(1.0)  # still a view of h, as eager's
        np.testing.assert_allclose(got[0].numpy()[:, 0] / want[0].numpy()[:, 0],
                                   np.ones(3), rtol=1e-6)


def test_check_mode_keeps_the_eager_fallback_and_says_so() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        return x * x.sum().item()

    jf = tj.jit(f, check=True)
    with pytest.warns(JitWarning, match="check mode runs it eagerly"):
        jf(tj.ones(3))
    for _ in range(2):
        np.testing.assert_allclose(jf(tj.ones(3)).numpy(), np.full(3, 3.0))
    assert jf.cache_info().fallbacks == 2 and jf.cache_info().segments == 0
    assert "eager: graph break" in str(jf.explain())


def test_a_deferred_value_never_computed_raises_instead_of_showing_garbage() -> None:
    kept: list[tj.Tensor] = []

    def f(x: tj.Tensor, i: tj.Tensor) -> tj.Tensor:
        h = x * 2.0
        kept.append(h)
        g = x.gather(0, i)  # an index out of range raises when the segment runs
        return g.sum() + x.sum().item()

    jf = tj.jit(f)
    ok = tj.tensor([0, 1])
    for _ in range(3):
        _quiet(lambda: jf(tj.ones(4), ok))
    kept.clear()
    with pytest.raises(IndexError):
        jf(tj.ones(4), tj.tensor([0, 9]))
    with pytest.raises(RuntimeError, match="never computed"):
        kept[-1].numpy()


def test_shape_reads_and_iteration_stay_deferred() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        k = x.sum().item()  # the break that makes this a replay
        h = x * k
        rows = [r.sum() for r in h]  # len(), shape and iteration: no values needed
        return tj.stack(rows) * h.shape[0] * len(h) + float(h.is_contiguous())

    jf = tj.jit(f)
    for _ in range(4):
        x = tj.randn(3, 2)
        np.testing.assert_allclose(_quiet(lambda x=x: jf(x)).numpy(), f(x).numpy(), rtol=1e-5)
    assert [why for why, _ in jf.explain().segment_breaks] == [".item()"]


@pytest.mark.parametrize("mode", ["auto", "eager"])
def test_the_faster_of_replay_and_eager_is_chosen_and_both_give_eagers_results(mode: str) -> None:
    m, opt = _model(4)
    ref, ropt = _model(4)
    logged: list[list[float]] = [[], []]

    def step(model: nn.Module, o: Any, x: tj.Tensor, y: tj.Tensor, log: list[float]) -> Any:
        o.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        log.append(loss.item())  # a graph break
        loss.backward()
        o.step()
        return loss

    jf = tj.jit(lambda x, y: step(m, opt, x, y, logged[0]))
    with tj.flags(split=mode):
        for x, y in _batches(12):
            _quiet(lambda: jf(x, y))
            step(ref, ropt, x, y, logged[1])
    np.testing.assert_allclose(logged[0], logged[1], rtol=1e-5, atol=1e-6)
    _same_params(m, ref)
    events = " ".join(jf.explain().events)
    if mode == "auto":  # three replays compile, three are timed, three eager calls timed
        assert "ms as a lazy replay and" in events and "(best of 3)" in events, events
    else:
        assert jf.cache_info().replays == 0 and jf.cache_info().fallbacks == 11
