"""Tensor basics with PyTorch's semantics: factories and random numbers, dtype promotion,
metadata and conversions (NumPy, DLPack), repr, indexing and assignment, in-place ops, and
error messages a user can act on (they name the op, the shapes or dtypes, the fix, and the
user's file:line)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import tracejit as tj

HERE = os.path.basename(__file__)


def at_this_file(e: pytest.ExceptionInfo) -> bool:
    return re.search(rf"\(at {re.escape(HERE)}:\d+\)", str(e.value)) is not None


# ---- factories -----------------------------------------------------------------------------------


def test_tensor_copies_and_infers_dtypes() -> None:
    a = np.array([1.0, 2.0])
    t = tj.tensor(a)
    a[0] = 9.0
    assert t.tolist() == [1.0, 2.0] and t.dtype is tj.float64  # NumPy arrays keep their dtype
    assert tj.tensor([1.0, 2.0]).dtype is tj.float32
    assert tj.tensor([1, 2]).dtype is tj.int64
    assert tj.tensor([True]).dtype is tj.bool
    assert tj.tensor(3.5).shape == () and tj.tensor(3.5).item() == 3.5
    assert tj.tensor([[1, 2]], dtype=tj.float64).dtype is tj.float64
    assert tj.tensor(0.7, dtype=tj.float64).item() == 0.7  # not rounded through float32
    assert tj.tensor([]).shape == (0,)


def test_as_tensor_and_from_numpy_share_memory() -> None:
    a = np.zeros(3, np.float32)
    t = tj.as_tensor(a)
    f = tj.from_numpy(a)
    a[1] = 5.0
    assert t[1].item() == 5.0 and f[1].item() == 5.0
    f[2] = 7.0
    assert a[2] == 7.0
    assert tj.as_tensor(t) is t
    assert tj.as_tensor(a, dtype=tj.float64).dtype is tj.float64  # a converting copy
    with pytest.raises(TypeError, match="from_numpy"):
        tj.from_numpy([1, 2])


def test_shape_factories() -> None:
    assert tj.zeros(2, 3).shape == (2, 3) and tj.zeros(2, 3).dtype is tj.float32
    assert tj.ones((2, 3)).sum().item() == 6
    assert tj.zeros([4]).shape == (4,)
    assert tj.empty(2, 0).shape == (2, 0)
    assert tj.full((2,), 3).dtype is tj.int64
    assert tj.full((2,), 3.0).dtype is tj.float32
    assert tj.full((2,), True).dtype is tj.bool
    assert tj.zeros(2, dtype=tj.int32).dtype is tj.int32
    assert tj.ones(2, dtype="float64").dtype is tj.float64
    assert tj.zeros(2, requires_grad=True).requires_grad


def test_ranges_and_eye() -> None:
    assert tj.arange(5).tolist() == [0, 1, 2, 3, 4] and tj.arange(5).dtype is tj.int64
    assert tj.arange(1, 2, 0.25).tolist() == [1.0, 1.25, 1.5, 1.75]
    assert tj.arange(1, 2, 0.25).dtype is tj.float32
    assert tj.arange(0, 10, 3).tolist() == [0, 3, 6, 9]
    np.testing.assert_allclose(tj.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1.0])
    assert tj.linspace(2, 3, 1).tolist() == [2.0]
    np.testing.assert_array_equal(tj.eye(3).numpy(), np.eye(3))
    assert tj.eye(2, 3).shape == (2, 3) and tj.eye(2).dtype is tj.float32


def test_like_factories_keep_shape_and_dtype() -> None:
    x = tj.zeros(2, 3, dtype=tj.float64)
    for f in (tj.zeros_like, tj.ones_like, tj.empty_like, tj.rand_like, tj.randn_like):
        y = f(x)
        assert y.shape == (2, 3) and y.dtype is tj.float64, f.__name__
    assert tj.full_like(x, 7).tolist() == [[7.0] * 3] * 2
    assert tj.ones_like(x, dtype=tj.int64).dtype is tj.int64


def test_random_ranges_and_dtypes() -> None:
    tj.manual_seed(0)
    r = tj.rand(1000)
    assert r.dtype is tj.float32 and 0 <= r.min().item() and r.max().item() < 1
    n = tj.randn(4000, dtype=tj.float64)
    assert abs(n.mean().item()) < 0.1 and abs(n.std().item() - 1) < 0.1
    i = tj.randint(3, 7, (100,))
    assert i.dtype is tj.int64 and i.min().item() >= 3 and i.max().item() < 7
    assert tj.randint(5, (2, 2)).shape == (2, 2)
    assert sorted(tj.randperm(5).tolist()) == [0, 1, 2, 3, 4]


def test_manual_seed_reproducibility_and_generators() -> None:
    tj.manual_seed(123)
    a = tj.randn(5)
    tj.manual_seed(123)
    b = tj.randn(5)
    assert tj.equal(a, b)
    g1 = tj.Generator().manual_seed(7)
    g2 = tj.Generator().manual_seed(7)
    x = tj.rand(3, generator=g1)
    tj.randn(10)  # the default generator does not disturb g1/g2
    assert tj.equal(x, tj.rand(3, generator=g2))
    assert g1.initial_seed() == 7
    state = tj.get_rng_state()
    c = tj.rand(4)
    tj.set_rng_state(state)
    assert tj.equal(c, tj.rand(4))


# ---- dtype promotion -----------------------------------------------------------------------------

f32, f64, f16, i32, i64, b8 = "float32", "float64", "float16", "int32", "int64", "bool"

# (description, fn(m) building the result, expected dtype): PyTorch's result_type rules
PROMOTION = [
    ("f32 * python float", lambda m: m.ones(2) * 2.5, f32),
    ("f32 * python int", lambda m: m.ones(2) * 2, f32),
    ("i64 * python float", lambda m: m.arange(3) * 2.5, f32),
    ("i64 * python int", lambda m: m.arange(3) * 2, i64),
    ("i32 + python int", lambda m: m.arange(3, dtype=m.int32) + 5, i32),
    ("i32 + i64", lambda m: m.arange(3, dtype=m.int32) + m.arange(3), i64),
    ("bool + python int", lambda m: m.tensor([True, False]) + 1, i64),
    ("bool * python float", lambda m: m.tensor([True, False]) * 1.5, f32),
    ("f16 + f32 0-d", lambda m: m.ones(2, dtype=m.float16) + m.tensor(1.0), f16),
    ("i64 + f32 0-d", lambda m: m.arange(3) + m.tensor(1.0), f32),
    ("f32 + f64 0-d", lambda m: m.ones(2) + m.tensor(1.0, dtype=m.float64), f32),
    ("f32 + f64", lambda m: m.ones(2) + m.ones(2, dtype=m.float64), f64),
    ("0-d i64 + 0-d f64", lambda m: m.tensor(1) + m.tensor(1.0, dtype=m.float64), f64),
    ("0-d f32 * python float", lambda m: m.tensor(2.0) * 1.5, f32),
    ("i64 / i64", lambda m: m.arange(3) / m.arange(1, 4), f32),
    ("i32 / python int", lambda m: m.arange(3, dtype=m.int32) / 2, f32),
    ("f16 * python float", lambda m: m.ones(2, dtype=m.float16) * 2.0, f16),
    ("f32 > python float", lambda m: m.ones(2) > 0.5, b8),
    ("i64 sum", lambda m: m.arange(3).sum(), i64),
    ("bool sum", lambda m: m.tensor([True, True]).sum(), i64),
    ("i32 sum", lambda m: m.arange(3, dtype=m.int32).sum(), i64),
    ("f32 where python float", lambda m: m.where(m.ones(2) > 0, m.ones(2), 0.0), f32),
    ("f64 pow python int", lambda m: m.ones(2, dtype=m.float64) ** 2, f64),
    ("python float pow i64", lambda m: 2.0 ** m.arange(3), f32),
    ("i64 max(dim) indices", lambda m: m.ones(2, 3).max(1)[1], i64),
    ("cat f32 f64", lambda m: m.cat([m.ones(2), m.ones(2, dtype=m.float64)]), f64),
    ("float() of i64", lambda m: m.arange(3).float(), f32),
    ("long() of f32", lambda m: m.ones(2).long(), i64),
]


@pytest.mark.parametrize("desc,fn,want", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_promotion(desc, fn, want) -> None:
    assert fn(tj).dtype.name == want


def test_mean_of_integers_is_an_error_with_the_fix() -> None:
    with pytest.raises(RuntimeError, match=r"mean\(\).*x.float\(\)"):
        tj.arange(3).mean()


# ---- metadata and conversion -------------------------------------------------------------------


def test_metadata() -> None:
    x = tj.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and isinstance(x.shape, tj.Size)
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.dim() == 3 and x.ndim == 3 and x.numel() == 24
    assert x.dtype is tj.float32 and x.device == tj.device("cpu") and str(x.device) == "cpu"
    assert repr(x.shape) == "tracejit.Size([2, 3, 4])"
    assert x.T.shape == (4, 3, 2) and x.mT.shape == (2, 4, 3)
    assert tj.zeros(2, 3).t().shape == (3, 2) and tj.zeros(3).t().shape == (3,)
    assert len(x) == 2 and x.is_contiguous() and not x.mT.is_contiguous()
    assert x.stride() == (12, 4, 1)


def test_item_tolist_numpy() -> None:
    t = tj.tensor([[1.5, 2.0], [3.0, 4.0]])
    assert t[0, 0].item() == 1.5 and isinstance(t[0, 0].item(), float)
    assert tj.tensor(3).item() == 3 and isinstance(tj.tensor(3).item(), int)
    assert t.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    n = t.numpy()
    n[0, 0] = 9.0  # numpy() shares memory, as PyTorch's does
    assert t[0, 0].item() == 9.0
    assert float(tj.tensor([2.5])) == 2.5 and int(tj.tensor(3)) == 3
    with pytest.raises(RuntimeError, match="detach"):
        tj.ones(2, requires_grad=True).numpy()
    with pytest.raises(RuntimeError, match="2 elements"):
        tj.ones(2).item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(tj.ones(2))


def test_clone_detach_and_casts() -> None:
    x = tj.tensor([1.7, -2.5])
    c = x.clone()
    c[0] = 0.0
    assert x[0].item() == pytest.approx(1.7)
    d = x.detach()
    d[1] = 4.0
    assert x[1].item() == 4.0
    assert x.float() is x  # no-op casts return self, as PyTorch
    assert x.double().dtype is tj.float64
    assert x.long().tolist() == [1, 4] and x.long().dtype is tj.int64
    assert x.to(tj.float64).dtype is tj.float64
    assert x.to("cpu") is x and x.to(tj.device("cpu")) is x
    assert x.to(tj.zeros(1, dtype=tj.float16)).dtype is tj.float16
    assert x.to("cpu", tj.float64).dtype is tj.float64
    assert x.int().dtype is tj.int32 and x.half().dtype is tj.float16
    assert tj.tensor([0.0, 2.0]).bool().tolist() == [False, True]


def test_array_protocol() -> None:
    x = tj.tensor([[1.0, 2.0]])
    a = np.asarray(x)
    assert a.dtype == np.float32 and a.shape == (1, 2)
    a[0, 0] = 5.0
    assert x[0, 0].item() == 5.0
    assert np.array(x, dtype=np.float64).dtype == np.float64
    assert isinstance(np.exp(np.asarray(x)), np.ndarray)


def test_dlpack_numpy_round_trip() -> None:
    x = tj.arange(6).reshape(2, 3)
    a = np.from_dlpack(x)
    assert a.shape == (2, 3) and a.dtype == np.int64
    a[0, 0] = 42
    assert x[0, 0].item() == 42
    src = np.arange(4, dtype=np.float32)
    t = tj.from_dlpack(src)
    src[1] = -1
    assert t.tolist() == [0.0, -1.0, 2.0, 3.0]


@pytest.mark.torch
def test_dlpack_torch_round_trip() -> None:
    import torch

    x = tj.tensor([[1.0, 2.0], [3.0, 4.0]])
    tt = torch.from_dlpack(x)
    assert tt.dtype == torch.float32 and tuple(tt.shape) == (2, 2)
    tt[0, 0] = 10.0
    assert x[0, 0].item() == 10.0
    back = tj.from_dlpack(tt)
    back[1, 1] = -4.0
    assert tt[1, 1].item() == -4.0 and x[1, 1].item() == -4.0


# ---- repr ----------------------------------------------------------------------------------------

REPRS = [
    (lambda m: m.tensor([1.0, 2.0, 3.0]), "tensor([1., 2., 3.])"),
    (lambda m: m.tensor([[1.5, 2.25]]), "tensor([[1.5000, 2.2500]])"),
    (lambda m: m.tensor(3.5), "tensor(3.5000)"),
    (lambda m: m.tensor([1, 2]), "tensor([1, 2])"),
    (lambda m: m.tensor([1, 2], dtype=m.int32), "tensor([1, 2], dtype=torch.int32)"),
    (lambda m: m.tensor([1.0, 2.0], dtype=m.float64), "tensor([1., 2.], dtype=torch.float64)"),
    (lambda m: m.tensor([True, False]), "tensor([ True, False])"),
    (lambda m: m.zeros(0), "tensor([])"),
    (lambda m: m.zeros(2, 0), "tensor([], size=(2, 0))"),
    (lambda m: m.tensor([1e10, 1.0]), "tensor([1.0000e+10, 1.0000e+00])"),
    (lambda m: m.ones(2, requires_grad=True), "tensor([1., 1.], requires_grad=True)"),
    (lambda m: m.ones(2, requires_grad=True).sum(), "tensor(2., grad_fn=<SumBackward0>)"),
    (lambda m: m.tensor([[1.0, -2.0], [3.0, 4.0]]), "tensor([[ 1., -2.],\n        [ 3.,  4.]])"),
]


@pytest.mark.parametrize("fn,want", REPRS, ids=[w for _, w in REPRS])
def test_repr_like_pytorch(fn, want) -> None:
    assert repr(fn(tj)) == want.replace("torch.", "tracejit.")


# ---- indexing and assignment ---------------------------------------------------------------------


def test_getitem_variants() -> None:
    a = np.arange(24.0).reshape(2, 3, 4)
    x = tj.tensor(a)
    for key in (1, -1, (0, 2), slice(1, None), (slice(None), slice(None, None, 2)), (..., 1),
                (None, 0), (0, ..., None), (1, slice(0, 2), -1), ([1, 0],), (0, [2, 0, 1]),
                (slice(None), [0, 2], [1, 3])):
        np.testing.assert_array_equal(x[key].numpy(), a[key], err_msg=str(key))
    mask = a > 10
    np.testing.assert_array_equal(x[tj.tensor(mask)].numpy(), a[mask])
    np.testing.assert_array_equal(x[tj.tensor([True, False])].numpy(), a[[True, False]])
    np.testing.assert_array_equal(x[tj.tensor(1)].numpy(), a[1])


def test_basic_getitem_is_a_view() -> None:
    x = tj.zeros(3, 4)
    v = x[1, 1:3]
    v.add_(1)
    assert x.sum().item() == 2 and x[1, 1].item() == 1


def test_setitem_variants() -> None:
    a = np.zeros((3, 4), np.float32)
    x = tj.tensor(a)
    for key, val in ((1, 5.0), ((slice(None), 0), tj.tensor([1.0, 2.0, 3.0])),
                     ((0, slice(1, None, 2)), 7.0), ((..., -1), 2.0),
                     (tj.tensor([2, 0]), tj.ones(2, 4) * 3),
                     (tj.tensor([[True, False, True, False]] * 3), -1.0)):
        x[key] = val
        k = key.numpy() if isinstance(key, tj.Tensor) else key
        a[k] = val.numpy() if isinstance(val, tj.Tensor) else val
        np.testing.assert_array_equal(x.numpy(), a, err_msg=str(key))


def test_grad_h_masked_assignment_from_the_seed_program() -> None:
    h = tj.tensor([[-1.0, 2.0], [3.0, -4.0]])
    grad_h = tj.ones(2, 2)
    grad_h[h < 0] = 0
    assert grad_h.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_setitem_bumps_version_and_casts_value() -> None:
    x = tj.zeros(3, dtype=tj.int64)
    v0 = x._version_value
    x[1] = 2.7  # cast to the tensor's dtype, as PyTorch does
    assert x.tolist() == [0, 2, 0] and x._version_value == v0 + 1


# ---- in-place ops --------------------------------------------------------------------------------


def test_in_place_ops_return_self_and_update() -> None:
    x = tj.tensor([1.0, 2.0, 3.0])
    assert x.add_(1) is x and x.tolist() == [2.0, 3.0, 4.0]
    assert x.sub_(tj.tensor([1.0, 1.0, 1.0])) is x and x.tolist() == [1.0, 2.0, 3.0]
    assert x.mul_(2) is x and x.tolist() == [2.0, 4.0, 6.0]
    assert x.div_(4) is x and x.tolist() == [0.5, 1.0, 1.5]
    assert x.clamp_(0.75, 1.25) is x and x.tolist() == [0.75, 1.0, 1.25]
    assert x.fill_(3) is x and x.tolist() == [3.0] * 3
    assert x.copy_(tj.tensor([1, 2, 3])) is x and x.tolist() == [1.0, 2.0, 3.0]
    assert x.dtype is tj.float32
    assert x.zero_() is x and x.tolist() == [0.0] * 3
    assert x._version_value == 8


def test_augmented_assignment_keeps_identity() -> None:
    x = tj.ones(2)
    before = x
    x += 1
    x -= tj.tensor([0.5, 0.5])
    x *= 4
    x /= 2
    assert x is before and x.tolist() == [3.0, 3.0]
    y = tj.ones(2, 3)
    y += tj.tensor([1.0, 2.0, 3.0])  # the operand broadcasts
    assert y[1].tolist() == [2.0, 3.0, 4.0]


def test_in_place_keeps_storage_shared_with_numpy() -> None:
    a = np.ones(3, np.float32)
    x = tj.from_numpy(a)
    x.mul_(3)
    assert a.tolist() == [3.0, 3.0, 3.0]


def test_in_place_errors() -> None:
    x = tj.arange(3)
    with pytest.raises(RuntimeError, match="can't be cast"):
        x += 1.5  # float result into an int64 tensor, as PyTorch refuses
    y = tj.ones(3, 1)
    with pytest.raises(RuntimeError, match=r"doesn't match the broadcast shape \[3, 4\]"):
        y.add_(tj.ones(4))
    z = tj.ones(1).expand(3)
    with pytest.raises(RuntimeError, match="clone"):
        z.add_(1)


def test_optimizer_update_under_no_grad() -> None:
    w = tj.ones(2, requires_grad=True)
    (w * 3).sum().backward()
    with tj.no_grad():
        w -= 0.1 * w.grad
        w.grad.zero_()
    assert w.requires_grad and w.is_leaf
    np.testing.assert_allclose(w.detach().numpy(), [0.7, 0.7], rtol=1e-6)
    assert w.grad.tolist() == [0.0, 0.0]


# ---- errors a user can act on --------------------------------------------------------------------


def test_broadcast_error_names_op_shapes_and_line() -> None:
    with pytest.raises(RuntimeError) as e:
        tj.ones(2, 3) + tj.ones(4)
    msg = str(e.value)
    assert "add" in msg and "[2, 3]" in msg and "[4]" in msg and at_this_file(e)


def test_float64_numpy_data_into_float32_weights() -> None:
    x = tj.tensor(np.ones((2, 3)))  # NumPy data: float64
    w = tj.randn(3, 4)
    with pytest.raises(RuntimeError) as e:
        x.mm(w)
    msg = str(e.value)
    assert "float64" in msg and "float32" in msg and "x.float()" in msg and ".double()" in msg
    assert "matmul" in msg and at_this_file(e)


def test_matmul_shape_error() -> None:
    with pytest.raises(RuntimeError, match=r"cannot be multiplied \(2x3 and 4x5\)") as e:
        tj.ones(2, 3) @ tj.ones(4, 5)
    assert at_this_file(e)


def test_dim_out_of_range() -> None:
    with pytest.raises(IndexError, match=r"sum: dimension out of range .*\[-2, 1\].* got 2") as e:
        tj.ones(2, 3).sum(2)
    assert at_this_file(e)
    with pytest.raises(IndexError, match="softmax: dimension out of range") as e:
        tj.ones(2, 3).softmax(-3)
    assert at_this_file(e)


def test_negative_sizes() -> None:
    for f in (tj.zeros, tj.ones, tj.empty, tj.rand, tj.randn):
        with pytest.raises(RuntimeError, match="negative dimension") as e:
            f(2, -1)
        assert at_this_file(e), f.__name__


def test_unknown_dtype_name() -> None:
    with pytest.raises(TypeError, match="unknown dtype 'flaot32'; expected one of") as e:
        tj.zeros(2, dtype="flaot32")
    assert at_this_file(e)


def test_reshape_and_view_errors() -> None:
    with pytest.raises(RuntimeError, match=r"shape \[4, 4\] is invalid for input of size 6") as e:
        tj.ones(2, 3).reshape(4, 4)
    assert at_this_file(e)
    with pytest.raises(RuntimeError, match=r"reshape\(") as e:
        tj.ones(2, 3).t().view(6)
    assert at_this_file(e)


def test_index_errors() -> None:
    x = tj.ones(3, 2)
    with pytest.raises(IndexError, match="index 5 is out of bounds for dimension 0 with size 3"):
        x[5]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]
    with pytest.raises(IndexError, match="out of bounds") as e:
        x[tj.tensor([0, 7])]
    assert at_this_file(e)
    with pytest.raises(IndexError, match="out of bounds"):
        x.gather(0, tj.tensor([[3, 0]]))
    with pytest.raises(RuntimeError, match="int64 index"):
        x.gather(0, tj.tensor([[0.0, 1.0]]))


def test_ragged_and_unsupported_data() -> None:
    with pytest.raises(TypeError, match="ragged") as e:
        tj.tensor([[1, 2], [3]])
    assert at_this_file(e)
    with pytest.raises(TypeError, match="not supported"):
        tj.from_numpy(np.zeros(2, np.complex64))


def test_no_bare_numpy_errors_from_common_mistakes() -> None:
    """Each of these raises a tracejit message naming the op, never NumPy's own text."""
    cases = [
        lambda: tj.ones(2, 3) * tj.ones(3, 2),
        lambda: tj.cat([tj.ones(2, 3), tj.ones(2, 4)]),
        lambda: tj.stack([tj.ones(2), tj.ones(3)]),
        lambda: tj.ones(2, 3).expand(4, 3),
        lambda: tj.ones(2, 3).permute(0, 0),
        lambda: tj.ones(2, 3).transpose(0, 2),
        lambda: tj.ones(6).split([2, 2]),
        lambda: tj.ones(3).narrow(0, 2, 5),
        lambda: tj.where(tj.ones(2), tj.ones(2), tj.ones(2)),
        lambda: tj.ones(2, 3).index_select(1, tj.tensor([5])),
        lambda: tj.ones(3).scatter_add(0, tj.tensor([4]), tj.ones(1)),
        lambda: tj.ones(2, 3).unflatten(1, (2, 2)),
        lambda: tj.ones(2).max(3),
        lambda: tj.zeros(0).amax(),
    ]
    for i, f in enumerate(cases):
        with pytest.raises((RuntimeError, IndexError, TypeError)) as e:
            f()
        assert at_this_file(e), f"case {i}: {e.value!r}"
