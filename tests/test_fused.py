"""Eager fast paths: tracejit/fused.py's layer_norm, softmax and tanh-GELU through row kernels
agree with their composites (forward, gradients, gradients of gradients), keep autograd's
in-place checks and are never taken while tracing; the embedding-backward index_put and the
direct in-place add_/sub_/mul_ equal their op paths bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit import fused

F = tj.nn.functional


def _ln(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


CASES = {
    "layer_norm": (lambda x, w, b: _ln(x, w, b), (6, 20, 48), True, "NativeLayerNormBackward0"),
    "layer_norm_plain": (lambda x, w, b: _ln(x, None, None), (6, 20, 48), False,
                         "NativeLayerNormBackward0"),
    "softmax": (lambda x, w, b: tj.softmax(x, -1), (3, 4, 20, 24), False, "SoftmaxBackward0"),
    "gelu": (lambda x, w, b: F.gelu(x, approximate="tanh"), (6, 20, 48), False,
             "GeluBackward0"),
}


def _run(name, dtype, fast, monkeypatch, create_graph=False):
    f, shape, affine, _ = CASES[name]
    monkeypatch.setattr(fused, "MIN_NUMEL", 1 if fast else 1 << 60)
    rng = np.random.default_rng(0)
    x0 = (2 * rng.standard_normal(shape) + 0.5).astype(dtype)
    g0 = rng.standard_normal(shape).astype(dtype)
    x = tj.tensor(x0, requires_grad=True)
    w = tj.tensor(rng.standard_normal(shape[-1]).astype(dtype), requires_grad=True)
    b = tj.tensor(rng.standard_normal(shape[-1]).astype(dtype), requires_grad=True)
    y = f(x, w, b)
    wrt = (x, w, b) if affine else (x,)
    grads = tj.autograd.grad(y, wrt, tj.tensor(g0), create_graph=create_graph)
    return y, grads, wrt


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_fused_matches_composite(name, dtype, monkeypatch):
    tol = 2e-5 if dtype == "float32" else 1e-12
    y0, g0, _ = _run(name, dtype, False, monkeypatch)
    y1, g1, _ = _run(name, dtype, True, monkeypatch)
    assert type(y1.grad_fn).__name__ == CASES[name][3]
    assert type(y0.grad_fn).__name__ != CASES[name][3]
    for a, b in zip((y0, *g0), (y1, *g1)):
        assert a.dtype is b.dtype and a.shape == b.shape
        a64, b64 = a.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)
        assert np.abs(a64 - b64).max() <= tol * max(1.0, np.abs(a64).max())


@pytest.mark.parametrize("name", list(CASES))
def test_fused_double_backward_is_the_composites(name, monkeypatch):
    """create_graph: the gradient is the closed form in tensor ops, differentiable again."""
    out = []
    for fast in (False, True):
        _, grads, wrt = _run(name, "float64", fast, monkeypatch, create_graph=True)
        out.append(tj.autograd.grad(sum((g * g).sum() for g in grads), wrt, allow_unused=True))
    for a, b in zip(*out):
        assert (a is None) == (b is None)
        if a is not None:
                np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9, atol=1e-9)


def test_fused_softmax_special_rows(monkeypatch):
    """A row of -inf or holding NaN is NaN, as the composite (and torch.softmax) give."""
    monkeypatch.setattr(fused, "MIN_NUMEL", 1)
    x = np.zeros((3, 5), np.float32)
    x[0] = -np.inf
    x[1, 2] = np.nan
    x[2] = [1, -np.inf, 2, 3, -np.inf]
    y = tj.softmax(tj.tensor(x), -1).numpy()
    assert np.isnan(y[:2]).all()
    e = np.exp(np.array([1, 2, 3], np.float64) - 3)
    np.testing.assert_allclose(y[2][[0, 2, 3]], e / e.sum(), rtol=1e-6)
    assert (y[2][[1, 4]] == 0).all()


def test_fused_checks_inplace_changes(monkeypatch):
    monkeypatch.setattr(fused, "MIN_NUMEL", 1)
    x = tj.randn(4, 8, requires_grad=True)
    y = tj.softmax(x * 1, -1)
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_fused_not_taken_while_tracing(monkeypatch):
    monkeypatch.setattr(fused, "MIN_NUMEL", 1)

    def f(x):
        return F.layer_norm(tj.softmax(x, -1), (8,))

    jf = tj.jit(f)
    x = tj.randn(4, 8)
    want = f(x)
    for _ in range(2):
        np.testing.assert_allclose(jf(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    ir = str(jf.ir(x))  # the composites' primitives, fused by the compiler
    assert "exp" in ir and "rsqrt" in ir, ir


def test_index_put_accumulate_rows_is_add_at_bit_for_bit():
    """An embedding's backward (index_put with accumulate along dim 0, big enough) runs the
    compiled put_first; it adds in np.add.at's order, so the results are identical."""
    from tracejit.ops.index import _index_put_eager

    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        x = rng.standard_normal((65, 64)).astype(dtype)
        idx = rng.integers(-65, 65, (8, 64))
        for v in (rng.standard_normal((8, 64, 64)).astype(dtype),
                  rng.standard_normal(64).astype(dtype)):
            want = x.copy()
            np.add.at(want, (idx,), v)
            got = _index_put_eager(x, v, idx, dims=(0,), accumulate=True)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", ["add_", "sub_", "mul_"])
def test_direct_inplace_is_the_op_path(method, monkeypatch):
    """`x.add_(y)` written straight into x (Tensor._direct_inplace) gives the out-of-place
    result copied back bit for bit, and moves the version as the op path does."""
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((5, 6)).astype(np.float32)
    for other in (0.37, 3, tj.tensor(rng.standard_normal((5, 6)).astype(np.float32)),
                  tj.tensor(np.float32(1.5)), tj.tensor(rng.standard_normal(6)),
                  tj.tensor(rng.standard_normal(6).astype(np.float32))):
        got = []
        for direct in (True, False):
            if not direct:
                monkeypatch.setattr(tj.Tensor, "_direct_inplace", lambda *a: False)
            x = tj.tensor(x0)
            v = x._version.v
            getattr(x, method)(other)
            got.append((x.numpy().copy(), x._version.v - v, x.dtype))
            monkeypatch.undo()
        np.testing.assert_array_equal(got[0][0], got[1][0])
        assert got[0][1:] == got[1][1:]
    w = tj.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.sub_(1.0)  # grad mode on: the op path, with autograd's check
