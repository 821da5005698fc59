"""The buffer plan (tracejit/ir/plan.py): outputs, gradients and saved values never share
memory unless eager's would; the plan is printed with the IR, verified, made for the graph it
runs with, commits no effect before a node that may raise, and check mode blames the node
that is actually wrong with the plan on."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.ir.plan import BufferPlan, PlanError, Reuse, make_plan, verify_plan
from tracejit.runtime.check import CheckError


def _np(t: tj.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _compiled(f: tj.jit) -> bool:  # type: ignore[valid-type]
    """Did the calls run compiled code (from this process or the disk cache)?"""
    entries = [e for es in f._entries.values() for e in es]
    return bool(entries) and all(e.program is not None for e in entries)


def _returns_view_then_backward(x: tj.Tensor) -> tj.Tensor:
    h = x.tanh().reshape(-1)
    (h * h).sum().backward()
    return h


def test_a_returned_view_never_shares_memory_with_a_gradient() -> None:
    f = tj.jit(_returns_view_then_backward)
    rng = np.random.default_rng(0)
    for call in range(4):
        data = rng.standard_normal((3, 4)).astype(np.float32)
        x = tj.tensor(data, requires_grad=True)
        h = f(x)
        assert not np.shares_memory(_np(h), x.grad.numpy()), f"call {call + 1}"
        np.testing.assert_allclose(_np(h), np.tanh(data.astype(np.float64)).reshape(-1),
                                   rtol=1e-6)
        t = np.tanh(data.astype(np.float64))
        np.testing.assert_allclose(x.grad.numpy(), 2 * t * (1 - t * t), rtol=1e-5, atol=1e-6)
    assert _compiled(f) and f.cache_info().traces == 1


def test_outputs_and_saved_values_stay_distinct_across_calls() -> None:
    # an output kept from call 1 must not be overwritten by call 2
    f = tj.jit(lambda x: ((x * 2).reshape(-1), (x + 1).exp()))
    x1 = tj.ones(2, 3)
    f(x1)
    a1, b1 = f(x1)  # compiled
    keep = (_np(a1).copy(), _np(b1).copy())
    a2, b2 = f(tj.full((2, 3), 5.0))
    np.testing.assert_array_equal(_np(a1), keep[0])
    np.testing.assert_array_equal(_np(b1), keep[1])
    assert not np.shares_memory(_np(a1), _np(a2))


def test_a_view_of_a_constant_is_returned_as_a_copy() -> None:
    big = np.arange(5000, dtype=np.float32)  # too big to fold: stays a constant node

    def fn(x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor]:
        c = tj.tensor(big)
        return c.reshape(50, 100), x + 1

    f = tj.jit(fn)
    f(tj.ones(2))
    out, _ = f(tj.ones(2))
    out.add_(1.0)  # the user writes into what they got
    again, _ = f(tj.ones(2))
    np.testing.assert_array_equal(_np(again).reshape(-1), big)


def _sgd_step(model: nn.Module, x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    with tj.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    return loss


def test_the_plan_is_printed_with_the_ir_and_verified() -> None:
    tj.manual_seed(0)
    model = nn.Linear(3, 2)
    step = tj.jit(_sgd_step)
    x, y = tj.randn(4, 3), tj.randn(4, 2)
    step(model, x, y)
    step(model, x, y)
    text = step.ir(model, x, y)
    assert "buffers:" in text and "effect written in place" in text, text
    assert "inplace" not in text


def _graph_of(fn, *args):  # type: ignore[no-untyped-def]
    f = tj.jit(fn)
    f(*args)
    return next(e for es in f._entries.values() for e in es).graph


def test_verify_plan_rejects_a_write_over_a_live_buffer() -> None:
    g = _graph_of(lambda x: (x.exp(), x.exp().reshape(-1) * 2), tj.ones(2, 2))
    good = make_plan(g)
    verify_plan(g, good)
    # the second fused node reads a view of the first's result, which is returned: reusing that
    # first result's buffer anywhere later clobbers an output
    fused = [i for i, n in enumerate(g.nodes) if n.name == "fused"]
    first = g.nodes[fused[0]].outs[0]
    for i in fused[1:]:
        n = g.nodes[i]
        for j, w in enumerate(n.inputs):
            if w is first:
                with pytest.raises(PlanError, match="still needed|view"):
                    verify_plan(g, BufferPlan((Reuse(i, 0, j, False),)))
    with pytest.raises(PlanError, match="does not exist"):
        verify_plan(g, BufferPlan((Reuse(99, 0, 0, False),)))


def test_a_plan_is_made_for_its_own_graph_not_inherited() -> None:
    g = _graph_of(lambda x: (x.exp() + 1).sin(), tj.ones(3))
    wide = g.replace(outputs=tuple(o for n in g.nodes for o in n.outs))
    plan = make_plan(wide)
    verify_plan(wide, plan)
    assert not plan.reuses  # every value is returned there: nothing may be overwritten


def test_no_effect_is_committed_before_a_node_that_may_raise() -> None:
    w = tj.zeros(4)
    table = tj.arange(5.0)

    def step(idx: tj.Tensor) -> tj.Tensor:
        with tj.no_grad():
            w.sub_(1.0)  # an effect, planned before the index read below
        return table[idx]

    g = _graph_of(step, tj.tensor([1, 2]))
    w.zero_()
    plan = make_plan(g)
    assert not any(r.effect for r in plan.reuses), plan
    f = tj.jit(step)
    f(tj.tensor([0]))
    f(tj.tensor([1]))
    assert _compiled(f)
    before = _np(w).copy()
    with pytest.raises(IndexError):
        f(tj.tensor([7]))
    np.testing.assert_array_equal(_np(w), before)  # the model is untouched


def test_check_mode_blames_the_node_that_is_wrong_with_the_plan_on() -> None:
    from tracejit.codegen import cpu

    original = cpu.SCALAR["sin"]
    fn = tj.jit(lambda x: ((x * 3).exp().reshape(-1) + 1).sin() * 2, check=True)
    x = tj.randn(2, 3)
    fn(x)
    cpu.SCALAR["sin"] = "cos({0})"  # the planted bug: sin compiled as cos
    try:
        with pytest.raises(CheckError, match=r"fused, user code test_plan.py:\d+") as e:
            fn(x)
    finally:
        cpu.SCALAR["sin"] = original
    g = next(e for es in fn._entries.values() for e in es).graph
    wrong = next(k for k, n in enumerate(g.nodes) if n.name == "fused" and
                 any(m.name == "sin" for m in n.attrs["body"].nodes))
    assert wrong > 0 and f"IR node {wrong} " in str(e.value), str(e.value)


def _twice(f, *args):  # type: ignore[no-untyped-def]
    f(*args)
    return f(*args)


def test_outputs_share_memory_with_arguments_only_where_eager_does() -> None:
    x = tj.ones(2, 3)
    dropped = tj.jit(lambda x: (x * 1).reshape(-1))  # simplify removes the * 1
    assert not np.shares_memory(_np(_twice(dropped, x)), _np(x))
    assert not np.shares_memory(_np((x * 1).reshape(-1)), _np(x))  # as eager
    view = tj.jit(lambda x: x.reshape(-1))  # a view in eager too
    assert np.shares_memory(_np(_twice(view, x)), _np(x))
    merged = tj.jit(lambda x: (x * 2, x * 2))  # CSE makes these one value
    a, b = _twice(merged, x)
    assert not np.shares_memory(_np(a), _np(b))
    a.add_(1.0)
    np.testing.assert_array_equal(_np(b), np.full((2, 3), 2.0, np.float32))
    assert _compiled(dropped) and _compiled(view) and _compiled(merged)


def test_a_jitted_loss_saving_views_compiles_once_and_backpropagates_like_eager() -> None:
    import tracejit.nn.functional as F

    tj.manual_seed(0)
    model = nn.Linear(4, 3)
    loss_of = tj.jit(lambda x, t: F.cross_entropy(model(x), t))  # saves views for backward
    rng = np.random.default_rng(1)
    for _ in range(4):
        x = tj.tensor(rng.standard_normal((5, 4)).astype(np.float32))
        t = tj.tensor(rng.integers(0, 3, 5))
        loss_of(x, t).backward()  # a 0-d gradient flows into the compiled backward
        got = [p.grad.numpy().copy() for p in model.parameters()]
        model.zero_grad()
        F.cross_entropy(model(x), t).backward()
        for a, b in zip(got, [p.grad.numpy() for p in model.parameters()]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        model.zero_grad()
    assert loss_of.cache_info().traces == 1 and _compiled(loss_of)


def test_a_comprehension_over_an_argument_does_not_hold_it() -> None:
    def f(x: tj.Tensor) -> tj.Tensor:
        parts = [x * k for k in range(3)]  # a closure over x, made anew on every call
        return sum(p.sum() for p in parts)  # type: ignore[return-value]

    jf = tj.jit(f)
    for k in range(4):
        x = tj.full((3,), float(k))
        assert float(jf(x)) == pytest.approx(9.0 * k)
    assert jf.cache_info().traces == 1 and _compiled(jf)
    assert "closure variable x" not in str(jf.explain())


def test_changing_a_saved_output_in_place_is_an_error_as_in_eager() -> None:
    f = tj.jit(lambda x: x.tanh())  # tanh saves its output for backward
    for _ in range(3):  # traced, then compiled
        x = tj.randn(3, requires_grad=True)
        y = f(x)
        y.mul_(2.0)  # the compiled backward would read the changed values
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()
    assert _compiled(f)
    x = tj.randn(3, requires_grad=True)
    f(x).sum().backward()  # unchanged: fine
    np.testing.assert_allclose(x.grad.numpy(), 1 - np.tanh(_np(x)) ** 2, rtol=1e-5)


def test_a_compiled_backward_that_saved_a_lifted_scalar_runs() -> None:
    from tracejit.dispatch import read_value

    cfg = {"scale": 2.0}

    def f(x: tj.Tensor) -> tj.Tensor:
        return (x * read_value(cfg, "scale")).tanh()  # the backward saves the lifted scalar

    jf = tj.jit(f)
    for scale in (2.0, 2.0, 0.5):  # traced, compiled, then a new value without retracing
        cfg["scale"] = scale
        x = tj.randn(3, requires_grad=True)
        jf(x).sum().backward()
        t = np.tanh(_np(x).astype(np.float64) * scale)
        np.testing.assert_allclose(x.grad.numpy(), scale * (1 - t * t), rtol=1e-5, atol=1e-6)
    assert _compiled(jf) and jf.cache_info().traces == 1
