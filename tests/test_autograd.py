"""Autograd semantics as PyTorch defines them: accumulation, hooks, retain_graph, the version
counter, custom Functions, autograd.grad, higher-order gradients, the graph's shape
(grad_fn.name(), next_functions, AccumulateGrad.variable) and grad modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_ops import ROWS

import tracejit as tj
from tracejit.autograd import AccumulateGrad, Function, grad
from tracejit.testing import check_grad


def leaf(*values: float | list, dtype=tj.float64) -> tj.Tensor:
    return tj.tensor(list(values) if len(values) > 1 else values[0], dtype=dtype,
                     requires_grad=True)


# ---- accumulation and backward -------------------------------------------------------------------


def test_grad_accumulates_over_backward_calls() -> None:
    x = leaf(1.0, 2.0, 3.0)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1, 2, 3]) + 3)


def test_input_used_twice_sums_both_paths() -> None:
    x = leaf(0.5, -1.5)
    y = x.exp() * x.sin() + x
    y.sum().backward()
    a = np.array([0.5, -1.5])
    np.testing.assert_allclose(x.grad.numpy(), np.exp(a) * (np.sin(a) + np.cos(a)) + 1)


def test_zero_grad_in_place_then_reuse() -> None:
    w = leaf(1.0, 2.0)
    (w * 2).sum().backward()
    g = w.grad
    w.grad.zero_()
    (w * 5).sum().backward()
    assert w.grad is g  # accumulated into the same tensor, as PyTorch does
    np.testing.assert_allclose(w.grad.numpy(), [5.0, 5.0])


def test_grad_does_not_alias_between_leaves() -> None:
    a, b = leaf(1.0, 2.0), leaf(3.0, 4.0)
    (a + b).sum().backward()
    a.grad.add_(1)
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])


def _shares(*ts: tj.Tensor) -> list[tuple[int, int]]:
    """The pairs (i, j) of tensors whose memory overlaps."""
    arrs = [t.detach().numpy() for t in ts]
    return [(i, j) for i in range(len(arrs)) for j in range(i + 1, len(arrs))
            if np.shares_memory(arrs[i], arrs[j])]


def test_leaf_gradients_own_their_memory() -> None:
    # add's VJP hands the incoming gradient to both inputs unchanged: each leaf's .grad must
    # still be its own buffer, and neither may be the caller's `gradient=` (torch copies it)
    a, b = leaf(1.0, 2.0, 3.0), leaf(4.0, 5.0, 6.0)
    g = tj.tensor([1.0, 2.0, 3.0], dtype=tj.float64)
    (a + b).backward(g)
    assert _shares(a.grad, b.grad, g) == []
    a.grad.add_(10)
    b.grad.mul_(-1)
    np.testing.assert_array_equal(g.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(a.grad.numpy(), [11.0, 12.0, 13.0])
    np.testing.assert_array_equal(b.grad.numpy(), [-1.0, -2.0, -3.0])


def test_leaf_gradients_own_their_memory_when_the_root_is_the_leaf() -> None:
    a = leaf(1.0, 2.0)
    g = tj.tensor([3.0, 4.0], dtype=tj.float64)
    a.backward(g)
    assert _shares(a.grad, g) == []
    a.grad.zero_()
    np.testing.assert_array_equal(g.numpy(), [3.0, 4.0])


def test_leaf_gradients_own_their_memory_with_the_same_leaf_twice() -> None:
    a, b = leaf(1.0, -2.0), leaf(0.5, 0.25)
    g = tj.tensor([1.0, 1.0], dtype=tj.float64)
    (a + a + b).backward(g)
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])
    assert _shares(a.grad, b.grad, g) == []
    b.grad.add_(1)
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(g.numpy(), [1.0, 1.0])


def test_leaf_gradients_own_their_memory_with_retain_graph() -> None:
    a, b = leaf(1.0, 2.0, 3.0), leaf(4.0, 5.0, 6.0)
    g = tj.tensor([1.0, 0.0, -1.0], dtype=tj.float64)
    y = a + b
    y.backward(g, retain_graph=True)
    y.backward(g)  # accumulates in place into each leaf's own buffer
    assert _shares(a.grad, b.grad, g) == []
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 0.0, -2.0])
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 0.0, -2.0])
    np.testing.assert_array_equal(g.numpy(), [1.0, 0.0, -1.0])


def test_leaf_gradients_own_their_memory_with_inputs_hooks_and_functions() -> None:
    a, b = leaf(1.0, 2.0), leaf(3.0, 4.0)
    g = tj.tensor([1.0, 1.0], dtype=tj.float64)
    (a + b).backward(g, inputs=[a, b])
    assert _shares(a.grad, b.grad, g) == []

    kept = tj.tensor([7.0, 8.0], dtype=tj.float64)
    c = leaf(1.0, 2.0)
    c.register_hook(lambda grad: kept)  # a hook handing back a tensor its caller keeps
    (c * 2).sum().backward()
    assert _shares(c.grad, kept) == []
    c.grad.zero_()
    np.testing.assert_array_equal(kept.numpy(), [7.0, 8.0])

    class Pass(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, grad_out):
            return kept  # a backward returning a tensor the user holds

    d = leaf(5.0, 6.0)
    Pass.apply(d).sum().backward()
    assert _shares(d.grad, kept) == []
    d.grad.add_(1)
    np.testing.assert_array_equal(kept.numpy(), [7.0, 8.0])

    h = leaf(1.0, 2.0)
    m = h * 1
    m.retain_grad()
    (m + h).backward(g)  # the non-leaf's retained gradient is its own too
    assert _shares(m.grad, h.grad, g) == []


def test_leaf_gradients_match_torch_after_writes() -> None:
    torch = pytest.importorskip("torch")
    vals = np.array([0.5, -1.0, 2.0])
    a, b = leaf(*vals), leaf(*(vals * 2))
    ta = torch.tensor(vals, requires_grad=True)
    tb = torch.tensor(vals * 2, requires_grad=True)
    g, tg = tj.tensor(vals, dtype=tj.float64), torch.tensor(vals)
    (a * 1 + b).backward(g)
    (ta * 1 + tb).backward(tg)
    for x, tx in ((a, ta), (b, tb)):
        x.grad.add_(1)
        with torch.no_grad():
            tx.grad.add_(1)
    for x, tx in ((a, ta), (b, tb), (g, tg)):
        got = x.grad.numpy() if x is not g else g.numpy()
        want = tx.grad.numpy() if tx is not tg else tg.numpy()
        np.testing.assert_array_equal(got, want)


def test_compiled_step_outputs_do_not_alias_gradients_or_inputs() -> None:
    a, b = leaf(1.0, 2.0, 3.0), leaf(4.0, 5.0, 6.0)

    @tj.jit
    def step(x, g):
        (a + b).backward(g)
        return x + 0, x * 1, x.clone(), g + 0

    for call in range(3):  # the tracing call and the compiled ones
        a.grad = b.grad = None
        x = tj.tensor([1.0, -0.0, 3.0], dtype=tj.float64)
        g = tj.tensor([1.0, 2.0, 3.0], dtype=tj.float64)
        outs = step(x, g)
        assert _shares(x, g, a.grad, b.grad, a, b, *outs) == [], call
        a.grad.add_(1)
        outs[0].add_(5)
        np.testing.assert_array_equal(g.numpy(), [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(b.grad.numpy(), [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(x.numpy(), [1.0, -0.0, 3.0])


def test_broadcast_gradient_is_summed_to_the_input_shape() -> None:
    b = tj.zeros(3, requires_grad=True)
    x = tj.ones(4, 3)
    (x + b).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), [4.0, 4.0, 4.0])


def test_non_scalar_backward_needs_a_gradient() -> None:
    x = leaf(1.0, 2.0)
    y = x * 2
    with pytest.raises(RuntimeError, match="implicitly created only for scalar outputs"):
        y.backward()
    y.backward(tj.tensor([1.0, 10.0], dtype=tj.float64))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 20.0])


def test_backward_of_tensor_without_grad_raises() -> None:
    with pytest.raises(RuntimeError, match="does not require grad"):
        tj.ones(2).sum().backward()


def test_integer_tensors_cannot_require_grad() -> None:
    with pytest.raises(RuntimeError, match="floating point"):
        tj.tensor([1, 2]).requires_grad_()


def test_empty_tensor_backward() -> None:
    x = tj.zeros(0, 3, requires_grad=True)
    x.sum().backward()
    assert x.grad.shape == (0, 3)


# ---- hooks ---------------------------------------------------------------------------------------


def test_hook_on_leaf_can_replace_the_gradient() -> None:
    x = leaf(1.0, 2.0)
    seen = []
    h = x.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 10)
    (x * 3).sum().backward()
    np.testing.assert_allclose(seen[0], [3.0, 3.0])
    np.testing.assert_allclose(x.grad.numpy(), [30.0, 30.0])
    h.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_hook_on_non_leaf_changes_what_flows_upstream() -> None:
    x = leaf(1.0, 2.0)
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    y.register_hook(lambda g: g * 0.5)
    (y * y).sum().backward()
    np.testing.assert_allclose(seen[0], 2 * np.array([2.0, 4.0]))
    np.testing.assert_allclose(x.grad.numpy(), 0.5 * 2 * np.array([2.0, 4.0]) * 2)
    assert y.grad is None  # non-leaf .grad is not kept unless retain_grad()


def test_retain_grad_keeps_a_non_leaf_gradient() -> None:
    x = leaf(1.0, 2.0)
    y = x * 3
    y.retain_grad()
    (y * y).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [6.0, 12.0])


def test_hook_requires_grad() -> None:
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        tj.ones(2).register_hook(lambda g: g)


# ---- retain_graph and freed graphs ---------------------------------------------------------------


def test_second_backward_through_freed_graph_raises() -> None:
    x = leaf(1.0, 2.0)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_retain_graph_allows_a_second_backward() -> None:
    x = leaf(1.0, 2.0)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)


# ---- the version counter -------------------------------------------------------------------------


def test_in_place_change_of_a_saved_input_raises_at_backward() -> None:
    x = leaf(1.0, 2.0)
    a = x * 2
    b = a.sin()  # saves a
    a.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as e:
        b.sum().backward()
    assert "SinBackward0" in str(e.value) and "version 1" in str(e.value)


def test_in_place_change_of_a_saved_output_raises_at_backward() -> None:
    x = leaf(1.0, 2.0)
    b = x.exp()  # saves its output
    b.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()


def test_in_place_on_a_view_bumps_the_shared_version() -> None:
    x = leaf(1.0, 2.0, 3.0)
    a = x * 1
    b = a.tanh()  # saves its output
    v = b[1:]
    with tj.no_grad():
        v.mul_(2)
    assert b._version_value == 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()


def test_in_place_op_that_needs_its_own_input_is_fine() -> None:
    x, w = leaf(1.0, 2.0), leaf(3.0, 4.0)
    y = x * 1
    y.mul_(w)  # needs the original y for w's gradient
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_in_place_on_a_leaf_requiring_grad_raises() -> None:
    x = leaf(1.0, 2.0)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x.add_(1)
    with tj.no_grad():
        x.add_(1)  # allowed: the optimizer update
    np.testing.assert_allclose(x.detach().numpy(), [2.0, 3.0])


# ---- custom Functions ----------------------------------------------------------------------------


class MyReLU(Function):
    """USER-PROGRAMS.md, verbatim apart from the module name."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_y):
        (x,) = ctx.saved_tensors
        grad_input = grad_y.clone()
        grad_input[x < 0] = 0
        return grad_input


def test_custom_function_my_relu_matches_clamp() -> None:
    rng = np.random.default_rng(0)
    xv, wv = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    x = tj.tensor(xv)
    w1 = tj.tensor(wv, requires_grad=True)
    y = MyReLU.apply(x.mm(w1))
    assert y.grad_fn.name() == "MyReLUBackward"
    (y * y).sum().backward()
    h = xv @ wv
    np.testing.assert_allclose(w1.grad.numpy(), xv.T @ (2 * np.maximum(h, 0) * (h > 0)),
                               rtol=1e-5)


def test_custom_function_needs_input_grad_and_non_differentiable_outputs() -> None:
    seen = {}

    class SortLike(Function):
        @staticmethod
        def forward(ctx, x, scale):
            seen["needs"] = ctx.needs_input_grad
            idx = x.argmax(0, keepdim=True)
            out = x * scale
            ctx.save_for_backward(scale)
            ctx.mark_non_differentiable(idx)
            return out, idx

        @staticmethod
        def backward(ctx, g_out, g_idx):
            (scale,) = ctx.saved_tensors
            return g_out * scale, None

    x = leaf(1.0, 3.0, 2.0)
    scale = tj.tensor(2.0, dtype=tj.float64)
    out, idx = SortLike.apply(x, scale)
    assert seen["needs"] == (True, False)
    assert out.requires_grad and not idx.requires_grad
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_custom_function_saved_tensors_freed_after_backward() -> None:
    x = leaf(1.0, -2.0)
    y = MyReLU.apply(x * 1)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.sum().backward()


def test_custom_function_wrong_gradient_count() -> None:
    class Bad(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, g):
            return g, g, g

    with pytest.raises(RuntimeError, match="incorrect number of gradients"):
        Bad.apply(leaf(1.0), leaf(2.0)).backward()


def test_custom_function_without_grad_returns_plain_tensors() -> None:
    y = MyReLU.apply(tj.tensor([1.0, -1.0]))
    assert y.grad_fn is None and not y.requires_grad


# ---- autograd.grad and higher order --------------------------------------------------------------


def test_grad_returns_gradients_without_touching_dot_grad() -> None:
    x, w = leaf(1.0, 2.0), leaf(3.0, 4.0)
    (gx,) = grad((x * w).sum(), x)
    np.testing.assert_allclose(gx.numpy(), [3.0, 4.0])
    assert x.grad is None and w.grad is None
    assert not gx.requires_grad


def test_grad_allow_unused() -> None:
    x, unused = leaf(1.0, 2.0), leaf(5.0)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        grad((x * 2).sum(), [x, unused])
    gx, gu = grad((x * 2).sum(), [x, unused], allow_unused=True)
    assert gu is None
    np.testing.assert_allclose(gx.numpy(), [2.0, 2.0])


def test_grad_with_grad_outputs() -> None:
    x = leaf(1.0, 2.0)
    (g,) = grad(x * x, x, grad_outputs=tj.tensor([1.0, 0.5], dtype=tj.float64))
    np.testing.assert_allclose(g.numpy(), [2.0, 2.0])


def test_second_derivative_of_cube_is_6x() -> None:
    x = leaf(0.5, -2.0, 3.0)
    (g,) = grad((x**3).sum(), x, create_graph=True)
    assert g.requires_grad
    np.testing.assert_allclose(g.detach().numpy(), 3 * np.array([0.5, -2.0, 3.0]) ** 2)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * np.array([0.5, -2.0, 3.0]))


def test_second_derivative_of_tanh_via_backward() -> None:
    a = np.array([0.3, -1.2])
    x = tj.tensor(a, requires_grad=True)
    (g,) = grad(x.tanh().sum(), x, create_graph=True)
    g.sum().backward()
    t = np.tanh(a)
    np.testing.assert_allclose(x.grad.numpy(), -2 * t * (1 - t * t), rtol=1e-12)


def test_third_derivative_of_exp_sin() -> None:
    a = 0.7
    x = leaf(a)
    y = (x.sin()).exp()
    (d1,) = grad(y, x, create_graph=True)
    (d2,) = grad(d1, x, create_graph=True)
    (d3,) = grad(d2, x)
    e, s, c = math.exp(math.sin(a)), math.sin(a), math.cos(a)
    # d3/dx3 exp(sin x) = e^(sin x) (cos^3 - 3 sin cos - cos)
    assert d3.item() == pytest.approx(e * (c**3 - 3 * s * c - c), rel=1e-12)


SECOND_ORDER = [r for r in ROWS if r.grad and r.name in (
    "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "sin", "cos", "erf", "mul", "div", "pow",
    "maximum", "softmax", "log_softmax", "logsumexp", "var", "matmul", "gather", "prod", "amax",
    "getitem_intarray", "gelu", "softplus", "norm", "expm1", "log1p", "cat", "where",
    "setitem_mask")]


@pytest.mark.parametrize("row", SECOND_ORDER, ids=lambda r: r.name)
def test_second_derivatives_match_finite_differences(row) -> None:
    """The gradient function (built with create_graph=True) is itself checked against finite
    differences: VJPs are written in tracejit ops, so they differentiate again."""
    xs = row.inputs(0)
    rng = np.random.default_rng(1)

    def first_grads(*ts):
        out = row.fn(tj, *ts)
        diff = [t for t in ts if isinstance(t, tj.Tensor) and t.requires_grad]
        cot = tj.tensor(rng_cot(out.shape))
        return grad(out, diff, grad_outputs=cot, create_graph=True, allow_unused=True,
                    materialize_grads=True)

    cache = {}

    def rng_cot(shape):
        if shape not in cache:
            cache[shape] = rng.standard_normal(shape)
        return cache[shape]

    check_grad(first_grads, *xs, atol=1e-5, rtol=1e-4)


# ---- the graph as PyTorch shows it ---------------------------------------------------------------


def test_grad_fn_names_and_next_functions() -> None:
    w1 = tj.randn(4, 3, requires_grad=True)
    x, y = tj.randn(2, 4), tj.randn(2, 3)
    loss = (x.mm(w1) - y).pow(2).sum()
    fn = loss.grad_fn
    assert fn.name() == "SumBackward0"
    (pow_fn, nr), = fn.next_functions
    assert pow_fn.name() == "PowBackward0" and nr == 0
    sub_fn = pow_fn.next_functions[0][0]
    assert sub_fn.name() == "SubBackward0"
    assert pow_fn.next_functions[1] == (None, 0)  # the exponent is a Python number
    mm_fn, _ = sub_fn.next_functions[0]
    assert sub_fn.next_functions[1] == (None, 0)  # y does not require grad
    acc = mm_fn.next_functions[1][0]
    assert isinstance(acc, AccumulateGrad) and acc.name() == "AccumulateGrad"
    assert acc.variable is w1
    assert mm_fn.next_functions[0] == (None, 0)
    assert "SumBackward0" in repr(fn)
    assert "grad_fn=<SumBackward0>" in repr(loss)


def test_accumulate_grad_node_is_shared_per_leaf() -> None:
    w = leaf(1.0, 2.0)
    a, b = w * 2, w * 3
    assert a.grad_fn.next_functions[0][0] is b.grad_fn.next_functions[0][0]


def test_is_leaf_and_requires_grad_propagation() -> None:
    w = leaf(1.0)
    c = tj.tensor([2.0])
    assert w.is_leaf and c.is_leaf
    y = w * c
    assert not y.is_leaf and y.requires_grad
    z = c * 2
    assert z.is_leaf and not z.requires_grad and z.grad_fn is None


# ---- grad modes, detach -------------------------------------------------------------------------


def test_no_grad_context_and_decorator() -> None:
    w = leaf(1.0, 2.0)
    with tj.no_grad():
        y = w * 2
    assert not y.requires_grad and y.grad_fn is None

    @tj.no_grad()
    def f(t):
        return t * 2

    assert not f(w).requires_grad
    assert tj.is_grad_enabled()


def test_enable_grad_inside_no_grad() -> None:
    w = leaf(1.0)
    with tj.no_grad():
        with tj.enable_grad():
            assert (w * 2).requires_grad
        assert not (w * 2).requires_grad


def test_set_grad_enabled_as_context_and_call() -> None:
    w = leaf(1.0)
    with tj.set_grad_enabled(False):
        assert not (w * 2).requires_grad
    assert tj.is_grad_enabled()
    tj.set_grad_enabled(False)
    try:
        assert not tj.is_grad_enabled()
    finally:
        tj.set_grad_enabled(True)
    assert (w * 2).requires_grad


def test_inference_mode() -> None:
    w = leaf(1.0)
    with tj.inference_mode():
        assert not (w * 2).requires_grad
    with tj.inference_mode(False):
        assert (w * 2).requires_grad


def test_grad_mode_restored_after_exception() -> None:
    with pytest.raises(ValueError):
        with tj.no_grad():
            raise ValueError
    assert tj.is_grad_enabled()


def test_detach_shares_storage_and_stops_gradients() -> None:
    w = leaf(1.0, 2.0)
    d = w.detach()
    assert not d.requires_grad and d.grad_fn is None
    d[0] = 5.0  # shares memory, as PyTorch's detach does
    assert w.detach().numpy()[0] == 5.0
    y = (w * w.detach()).sum()
    y.backward()
    np.testing.assert_allclose(w.grad.numpy(), [5.0, 2.0])


def test_requires_grad_() -> None:
    x = tj.ones(2)
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    x.requires_grad = False
    assert not x.requires_grad


# ---- the seed program's gradients by hand vs autograd --------------------------------------------


def test_two_layer_net_gradients_match_the_hand_written_ones() -> None:
    rng = np.random.default_rng(0)
    xv, yv = rng.standard_normal((8, 6)), rng.standard_normal((8, 3))
    w1v, w2v = rng.standard_normal((6, 5)), rng.standard_normal((5, 3))
    x, y = tj.tensor(xv), tj.tensor(yv)
    w1, w2 = tj.tensor(w1v, requires_grad=True), tj.tensor(w2v, requires_grad=True)
    loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
    loss.backward()
    h = xv @ w1v
    hr = np.maximum(h, 0)
    gy = 2 * (hr @ w2v - yv)
    gh = gy @ w2v.T
    gh[h < 0] = 0
    np.testing.assert_allclose(w2.grad.numpy(), hr.T @ gy, rtol=1e-10)
    np.testing.assert_allclose(w1.grad.numpy(), xv.T @ gh, rtol=1e-10)
