"""Eager mode's own kernels and fast paths (issue 13): the matmul that runs through the
measured BLAS (tracejit/runtime/blas.py), checked against float64 NumPy and torch, with the
layouts, sizes and values that break kernels."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.ops import contract
from tracejit.runtime import blas


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """Each test: its own cache directory, no remembered choices, short timing samples."""
    monkeypatch.setattr(blas, "SAMPLE_SECONDS", 2e-5)
    blas.reset()
    with tj.flags(cache_dir=str(tmp_path / "cache")):
        yield
    blas.reset()


def _close(got: tj.Tensor, a: np.ndarray, b: np.ndarray) -> None:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = a64 @ b64
    assert tuple(got.shape) == ref.shape and got.dtype == tj.from_numpy(a).dtype
    scale = np.abs(a64) @ np.abs(b64)
    eps = np.finfo(a.dtype).eps
    err = np.abs(got.numpy().astype(np.float64) - ref)
    assert np.all(err <= 4 * a.shape[-1] * eps * scale + 1e-30), err.max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_large_matmul_runs_through_the_measured_blas(dtype, ta, tb, batch):
    rng = np.random.default_rng(1)
    m, k, n = 80, 64, 72  # above EAGER_BLAS_MIN_WORK
    assert m * k * n >= contract.EAGER_BLAS_MIN_WORK
    a = rng.standard_normal(batch + ((k, m) if ta else (m, k))).astype(dtype)
    a = np.swapaxes(a, -1, -2) if ta else a
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    b = b.T if tb else b
    got = tj.from_numpy(a) @ tj.from_numpy(b)
    _close(got, a, b)
    rows = int(np.prod(batch, dtype=np.int64)) * m
    assert blas.choices_for(dtype, rows, n, k), "the GEMM did not go through runtime.blas"


def test_small_matmuls_stay_on_numpy_and_are_not_timed():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    _close(tj.from_numpy(a) @ tj.from_numpy(b), a, b)
    assert blas.choices() == []


@pytest.mark.parametrize("shape_a,shape_b", [((0, 64), (64, 4096)), ((4096, 64), (64, 0)),
                                             ((64, 0), (0, 64)), ((1, 1), (1, 1)),
                                             ((1, 512), (512, 512)), ((512, 512), (512, 1))])
def test_empty_and_size_one_matmuls(shape_a, shape_b):
    rng = np.random.default_rng(3)
    a = rng.standard_normal(shape_a).astype(np.float32)
    b = rng.standard_normal(shape_b).astype(np.float32)
    got = tj.from_numpy(a) @ tj.from_numpy(b)
    np.testing.assert_allclose(got.numpy(), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_nan_inf_and_signed_zero_propagate_like_numpy():
    a = np.ones((128, 64), np.float32)
    b = np.ones((64, 64), np.float32)
    a[3, 5], a[7, 0], b[1, 9] = np.nan, np.inf, -np.inf
    got = (tj.from_numpy(a) @ tj.from_numpy(b)).numpy()
    ref = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-5)
    z = (tj.zeros(128, 64) @ tj.zeros(64, 64).neg()).numpy()
    assert not np.signbit(z).any()  # a sum of -0 and +0 products is +0, as NumPy and torch


def test_matmul_values_change_between_calls_and_views():
    rng = np.random.default_rng(4)
    w = tj.from_numpy(rng.standard_normal((96, 64)).astype(np.float32))
    for _ in range(3):
        x = rng.standard_normal((2, 128, 96)).astype(np.float32)
        xt = tj.from_numpy(x)
        _close(xt @ w, x, w.numpy())
        _close(xt[1] @ w, x[1], w.numpy())  # a view
        _close(xt[:, ::2] @ w, x[:, ::2], w.numpy())  # strided rows: copied first


def test_matmul_and_its_gradients_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 64, 64)).astype(np.float32)
    w = rng.standard_normal((192, 64)).astype(np.float32)
    g = rng.standard_normal((4, 64, 192)).astype(np.float32)
    tx, tw = (tj.from_numpy(v.copy()).requires_grad_() for v in (x, w))
    px, pw = (torch.from_numpy(v.copy()).requires_grad_() for v in (x, w))
    out = tx @ tw.T
    pout = px @ pw.T
    out.backward(tj.from_numpy(g))
    pout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out.detach().numpy(), pout.detach().numpy(), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(tx.grad.numpy(), px.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tw.grad.numpy(), pw.grad.numpy(), rtol=1e-4, atol=1e-3)


def _sdpa_ref(q, k, v, causal):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return w @ v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 64, 16), (1, 1, 1, 1), (2, 2, 5, 3), (1, 2, 40, 80)])
def test_attention_small_head_loops_match_float64_and_torch_gradients(causal, shape):
    """Heads up to SMALL_E run as loops that skip the keys a causal row cannot see; larger ones
    (E=80) take the BLAS path: both against float64 NumPy, and gradients against torch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    g = rng.standard_normal(shape).astype(np.float32)
    ours = [tj.from_numpy(x.copy()).requires_grad_() for x in (q, k, v)]
    theirs = [torch.from_numpy(x.copy()).requires_grad_() for x in (q, k, v)]
    out = tj.nn.functional.scaled_dot_product_attention(*ours, is_causal=causal)
    ref = torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=causal)
    np.testing.assert_allclose(out.detach().numpy(), _sdpa_ref(q, k, v, causal), rtol=1e-4,
                               atol=1e-5)
    out.backward(tj.from_numpy(g))
    ref.backward(torch.from_numpy(g))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-3, atol=1e-4)


def test_causal_attention_with_a_non_finite_value_gives_torchs_nans():
    """A causal row's zero weight on an inf value is NaN in torch: the loops that skip hidden
    keys fall back to every key for such an entry, forward and backward."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, 2, 6, 4)).astype(np.float32) for _ in range(3))
    v[0, 1, 5, 0] = np.inf
    ours = [tj.from_numpy(x.copy()).requires_grad_() for x in (q, k, v)]
    theirs = [torch.from_numpy(x.copy()).requires_grad_() for x in (q, k, v)]
    out = tj.nn.functional.scaled_dot_product_attention(*ours, is_causal=True)
    ref = torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=True)
    a, b = out.detach().numpy(), ref.detach().numpy()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    fin = np.isfinite(b)
    np.testing.assert_allclose(a[fin], b[fin], rtol=1e-4, atol=1e-5)
    out.sum().backward()
    ref.sum().backward()
    assert np.isnan(ours[0].grad.numpy()[0, 1]).any()  # the inf reaches q's gradient
    np.testing.assert_allclose(ours[0].grad.numpy()[0, 0], theirs[0].grad.numpy()[0, 0],
                               rtol=1e-3, atol=1e-4)  # the finite head is untouched
