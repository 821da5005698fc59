"""ir(), source() and explain() on inputs a jitted function has not seen: they trace on demand
(as `jax.jit(f).lower(x)` does) and leave the caller's state as it was, although tracing runs
the function eagerly: parameters, `.grad`, optimizer state, buffers written without being read,
random generators, even when the function raises. The entry they make is the one the next call
uses (no second trace). source() shows the driver and then every kernel it calls."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.jit import JitWarning


def _close(a: Any, b: Any) -> None:
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5)


def _state(model: Any) -> list[tuple[Any, ...]]:
    """Every parameter's values, version and grad (identity and values)."""
    out = []
    for p in model.parameters():
        g = p.grad
        out.append((p.detach().numpy().copy(), p._version.v, id(g),
                    None if g is None else g.numpy().copy()))
    return out


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b)
    for (va, ver_a, ga, gva), (vb, ver_b, gb, gvb) in zip(a, b):
        np.testing.assert_array_equal(va, vb)
        assert ver_a == ver_b and ga == gb
        if gva is None:
            assert gvb is None
        else:
            np.testing.assert_array_equal(gva, gvb)


def _sgd_setup() -> tuple[Any, Any, Any, Any]:
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    ref = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    ref.load_state_dict(model.state_dict())
    return model, ref, tj.optim.SGD(model.parameters(), lr=0.1), \
        tj.optim.SGD(ref.parameters(), lr=0.1)


def _step(m: Any, o: Any, x: Any, y: Any) -> Any:
    o.zero_grad(set_to_none=False)
    loss = ((m(x) - y) ** 2).mean()
    loss.backward()
    o.step()
    return loss


def test_sgd_step_inspected_on_unseen_shapes_changes_nothing_and_is_not_traced_twice() -> None:
    model, ref, opt, ref_opt = _sgd_setup()
    fast = tj.jit(lambda x, y: _step(model, opt, x, y))
    x, y = tj.randn(6, 3), tj.randn(6, 2)
    for _ in range(3):  # .grad now holds tensors, as on every later step
        _step(ref, ref_opt, x, y)
        fast(x, y)
    traces = fast.cache_info().traces
    before = _state(model)
    x2, y2 = tj.randn(5, 3), tj.randn(5, 2)  # shapes not seen yet
    text = fast.ir(x2, y2)
    assert "f32[5,3]" in text and "effects:" in text
    _same(before, _state(model))
    src = fast.source(x2, y2)
    assert "# tracejit program" in src
    assert str(fast.explain(x2, y2)).count("<- these inputs") == 1
    _same(before, _state(model))
    assert fast.cache_info().traces == traces + 1  # one trace for all three
    for _ in range(2):  # the inspected entry is the one the call runs: no second trace
        _close(fast(x2, y2), _step(ref, ref_opt, x2, y2))
    assert fast.cache_info().traces == traces + 1
    for a, b in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5)


def test_first_inspection_of_a_fresh_step_leaves_grads_none() -> None:
    model, ref, opt, ref_opt = _sgd_setup()

    def step(x: Any, y: Any) -> Any:
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()  # set_to_none
        return loss

    fast = tj.jit(step)
    x, y = tj.randn(6, 3), tj.randn(6, 2)
    before = _state(model)
    assert all(p.grad is None for p in model.parameters())
    fast.ir(x, y)
    _same(before, _state(model))
    for _ in range(3):
        loss = fast(x, y)
        want = ((ref(x) - y) ** 2).mean()
        want.backward()
        ref_opt.step()
        ref_opt.zero_grad()
        _close(loss, want)
    assert fast.cache_info().traces == 1 and fast.cache_info().compiles <= 1


def test_adam_state_made_by_an_inspection_is_undone() -> None:
    tj.manual_seed(1)
    model, ref = nn.Linear(3, 2), nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    opt, ref_opt = (tj.optim.Adam(m.parameters(), lr=0.01) for m in (model, ref))
    x = tj.randn(4, 3)

    def step(m: Any, o: Any) -> Any:
        o.zero_grad()
        loss = m(x).pow(2).sum()
        loss.backward()
        o.step()
        return loss

    fast = tj.jit(step)
    groups = [dict(g) for g in opt.param_groups]
    before = _state(model)
    text = fast.ir(model, opt)
    assert "not cached" in text  # Adam's first step makes its moments: not reusable
    _same(before, _state(model))
    assert len(opt.state) == 0 and opt.param_groups == groups and not opt._opt_called
    for _ in range(4):
        _close(fast(model, opt), step(ref, ref_opt))
    before = _state(model)
    moments = {k: v.numpy().copy() for k, v in opt.state[next(iter(opt.state))].items()}
    fast.ir(model, opt)  # a compiled entry exists: nothing is traced, nothing changes
    fast.source(nn.Linear(3, 2), opt)  # another module: traced, then undone
    _same(before, _state(model))
    for k, v in opt.state[next(iter(opt.state))].items():
        np.testing.assert_array_equal(v.numpy(), moments[k])
    _close(fast(model, opt), step(ref, ref_opt))
    for a, b in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5)


def test_plain_function_inspected_before_any_call() -> None:
    f = tj.jit(lambda x, y: (x * 2 + y).exp().sum(1))
    x, y = tj.randn(3, 4), tj.randn(4)
    text = f.ir(x, y)
    assert text.startswith("graph <lambda>(%x: f32[3,4], %y: f32[4])")
    assert f.cache_info().traces == 1 and f.cache_info().misses == 0
    src = f.source(x, y)
    assert f.explain().entries[0].program is not None and f.cache_info().compiles <= 1
    np.testing.assert_allclose(f(x, y).numpy(), (x * 2 + y).exp().sum(1).numpy(), rtol=1e-6)
    assert f.cache_info().traces == 1 and f.cache_info().hits == 1
    assert f.source(x, y) == src


def test_source_shows_the_driver_then_every_kernel_it_calls() -> None:
    f = tj.jit(lambda x: tj.softmax(x * 3, 1) + x.sum(0))
    x = tj.randn(4, 8)
    src = f.source(x)
    assert src.startswith("# tracejit program ")
    called = re.findall(r"^(\w+) = _k\('\w+'\)$", src, re.M)
    assert len(called) >= 2
    headers = re.findall(r"^# ---- kernel (\w+) -*$", src, re.M)
    assert headers == called  # each kernel once, in the order the driver loads them
    sections = re.split(r"^# ---- kernel \w+ -*$", src, flags=re.M)
    assert "def " + f.explain().entries[0].program.name + "(" in sections[0]  # driver first
    for name, body in zip(headers, sections[1:]):
        assert re.search(rf"^def {name}\(", body, re.M), name


def test_tensors_written_before_being_read_are_restored() -> None:
    buf = tj.arange(6.0)
    w = tj.ones(2, 3)

    def f(x: tj.Tensor) -> tj.Tensor:
        buf.zero_()  # written first, never read before: the tracer lifts it at the write
        buf.add_(x.sum())
        w[0] = x[:3]  # an indexed write into a lifted tensor
        return buf * 2 + w.sum()

    jf = tj.jit(f)
    x = tj.randn(4)
    b0, w0, v0 = buf.numpy().copy(), w.numpy().copy(), buf._version.v
    jf.ir(x)
    np.testing.assert_array_equal(buf.numpy(), b0)
    np.testing.assert_array_equal(w.numpy(), w0)
    assert buf._version.v == v0
    got = jf(x)  # the inspected entry, run for real: the same effects as eager
    b1, w1 = buf.numpy().copy(), w.numpy().copy()
    buf.copy_(tj.tensor(b0))
    w.copy_(tj.tensor(w0))
    np.testing.assert_allclose(got.numpy(), f(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(b1, buf.numpy(), rtol=1e-6)
    np.testing.assert_allclose(w1, w.numpy(), rtol=1e-6)
    assert jf.cache_info().traces == 1


def test_state_is_restored_when_the_function_raises() -> None:
    w = tj.ones(3, requires_grad=True)

    def f(x: tj.Tensor) -> tj.Tensor:
        (w * x).sum().backward()
        with tj.no_grad():
            w.sub_(1.0)
        raise ValueError("boom")

    jf = tj.jit(f)
    with pytest.raises(ValueError, match="boom"):
        jf.ir(tj.ones(3))
    np.testing.assert_array_equal(w.detach().numpy(), np.ones(3, np.float32))
    assert w.grad is None and jf.cache_info().traces == 0


def test_random_numbers_in_an_inspection_do_not_advance_the_generator() -> None:
    f = tj.jit(lambda x: x + tj.randn(3))
    tj.manual_seed(5)
    text = f.ir(tj.zeros(3))
    assert "philox" in text and "graph break" not in text
    got = tj.randn(3).numpy()
    tj.manual_seed(5)
    np.testing.assert_array_equal(got, tj.randn(3).numpy())


def test_explain_with_inputs_traces_them_and_marks_their_entry() -> None:
    f = tj.jit(lambda x: x.relu() * 2)
    f(tj.ones(2))
    report = str(f.explain(tj.ones(5)))
    assert "2 cache entries" in report and report.count("<- these inputs") == 1
    assert "<- these inputs" not in str(f.explain())


def test_inspecting_a_graph_break_under_fallback_false_shows_it_without_raising() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        return x * x.sum().item()

    jf = tj.jit(f, fallback=False)
    with pytest.warns(JitWarning, match=r"item\(\)"):
        text = jf.ir(tj.ones(3))
    assert "# graph break at test_inspect.py:" in text
    assert "# not compiled: graph break" == jf.source(tj.ones(3))
    with pytest.raises(RuntimeError, match="fallback=False"):
        jf(tj.ones(3))  # a call still refuses to run it eagerly
