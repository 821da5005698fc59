"""Pooling, BatchNorm and Dropout2d (issue 15): values and gradients against NumPy float64
references written here as direct loops, and against torch when it is installed; finite
differences; BatchNorm's running statistics over several steps; eager vs @jit on a small
training step and for Dropout2d's draws."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F  # noqa: N812
from tracejit.testing import check_grad

try:
    import torch
except ImportError:  # (the torch-marked tests are skipped by conftest.py)
    torch = None

# ---- NumPy float64 references (direct loops) ---------------------------------------------


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[-1])


def _osize(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """The number of windows: the last must start inside the input or its left padding."""
    span = n + 2 * p - d * (k - 1) - 1
    o = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def ref_max_pool2d(x: np.ndarray, k: Any, s: Any = None, p: Any = 0, d: Any = 1,
                   ceil: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Values and flat argmax indices; ties: the first in row-major window order; a NaN wins
    (the last NaN); padding never wins."""
    (kh, kw), (ph, pw), (dh, dw) = _pair(k), _pair(p), _pair(d)
    sh, sw = _pair(k if s is None else s)
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    oh, ow = _osize(H, kh, sh, ph, dh, ceil), _osize(W, kw, sw, pw, dw, ceil)
    vals = np.zeros(lead + (oh, ow))
    idx = np.zeros(lead + (oh, ow), np.int64)
    for pos in np.ndindex(*lead):
        for i in range(oh):
            for j in range(ow):
                best, at = -np.inf, None
                for a in range(kh):
                    for b in range(kw):
                        h, w = i * sh - ph + a * dh, j * sw - pw + b * dw
                        if not (0 <= h < H and 0 <= w < W):
                            continue
                        v = x[pos + (h, w)]
                        if at is None:  # a window of -inf keeps its first valid position
                            at = h * W + w
                        if v > best or np.isnan(v):
                            best, at = v, h * W + w
                vals[pos + (i, j)] = best
                idx[pos + (i, j)] = at
    return vals, idx


def ref_max_pool2d_grad(x: np.ndarray, g: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape)
    H, W = x.shape[-2:]
    for pos in np.ndindex(*idx.shape):
        i = idx[pos]
        out[pos[:-2] + (i // W, i % W)] += g[pos]
    return out


def _avg_windows(hi: int, wi: int, k: Any, s: Any, p: Any, ceil: bool, cip: bool,
                 div: int | None) -> list[tuple[int, int, list[tuple[int, int]], float]]:
    """(i, j, the input positions of window (i, j), its divisor), as torch defines them."""
    (kh, kw), (ph, pw) = _pair(k), _pair(p)
    sh, sw = _pair(k if s is None else s)
    oh, ow = _osize(hi, kh, sh, ph, 1, ceil), _osize(wi, kw, sw, pw, 1, ceil)
    out = []
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, hi + ph), min(w0 + kw, wi + pw)
            padded = (h1 - h0) * (w1 - w0)
            cells = [(h, w) for h in range(max(h0, 0), min(h1, hi))
                     for w in range(max(w0, 0), min(w1, wi))]
            n = div if div is not None else (padded if cip else len(cells))
            out.append((i, j, cells, float(n)))
    return out


def _adaptive_windows(hi: int, wi: int, out: tuple[int, int]
                      ) -> list[tuple[int, int, list[tuple[int, int]], float]]:
    res = []
    for i in range(out[0]):
        h0, h1 = (i * hi) // out[0], -(-((i + 1) * hi) // out[0])
        for j in range(out[1]):
            w0, w1 = (j * wi) // out[1], -(-((j + 1) * wi) // out[1])
            cells = [(h, w) for h in range(h0, h1) for w in range(w0, w1)]
            res.append((i, j, cells, float(len(cells))))
    return res


def _windows_fwd(x: np.ndarray, wins: list[Any], oh: int, ow: int) -> np.ndarray:
    out = np.zeros(x.shape[:-2] + (oh, ow))
    for pos in np.ndindex(*x.shape[:-2]):
        for i, j, cells, n in wins:
            out[pos + (i, j)] = sum(x[pos + c] for c in cells) / n if cells else 0.0
    return out


def _windows_bwd(g: np.ndarray, wins: list[Any], hi: int, wi: int) -> np.ndarray:
    out = np.zeros(g.shape[:-2] + (hi, wi))
    for pos in np.ndindex(*g.shape[:-2]):
        for i, j, cells, n in wins:
            for c in cells:
                out[pos + c] += g[pos + (i, j)] / n
    return out


def ref_avg_pool2d(x: np.ndarray, k: Any, s: Any = None, p: Any = 0, ceil: bool = False,
                   cip: bool = True, div: int | None = None) -> np.ndarray:
    wins = _avg_windows(*x.shape[-2:], k, s, p, ceil, cip, div)
    return _windows_fwd(x, wins, wins[-1][0] + 1, wins[-1][1] + 1)


def ref_avg_pool2d_grad(x: np.ndarray, g: np.ndarray, k: Any, s: Any = None, p: Any = 0,
                        ceil: bool = False, cip: bool = True, div: int | None = None
                        ) -> np.ndarray:
    return _windows_bwd(g, _avg_windows(*x.shape[-2:], k, s, p, ceil, cip, div), *x.shape[-2:])


def ref_adaptive_avg_pool2d(x: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    return _windows_fwd(x, _adaptive_windows(*x.shape[-2:], out), *out)


def ref_adaptive_avg_pool2d_grad(x: np.ndarray, g: np.ndarray, out: tuple[int, int]
                                 ) -> np.ndarray:
    return _windows_bwd(g, _adaptive_windows(*x.shape[-2:], out), *x.shape[-2:])


def ref_batch_norm_train(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None,
                         eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(out, batch mean, unbiased batch variance) per channel of dim 1."""
    dims = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    n = x.size // x.shape[1]
    mean = x.mean(dims)
    var = ((x - mean.reshape(shape)) ** 2).mean(dims)
    out = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if w is not None:
        out = out * w.reshape(shape)
    if b is not None:
        out = out + b.reshape(shape)
    return out, mean, var * n / (n - 1)


# ---- helpers ------------------------------------------------------------------------------------


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _x(shape: tuple[int, ...], seed: int = 0, ties: bool = False) -> np.ndarray:
    a = _rng(seed).uniform(-2, 2, shape)
    return np.round(a) if ties else a


def _grad(fn: Any, x: np.ndarray, g: np.ndarray, dtype: Any = None) -> tuple[Any, np.ndarray]:
    t = tj.tensor(x, dtype=dtype or tj.float64, requires_grad=True)
    out = fn(t)
    vals = out[0] if isinstance(out, tuple) else out
    vals.backward(tj.tensor(g, dtype=vals.dtype))
    return out, t.grad.numpy()


MAX_GRID = [  # (shape, kernel, stride, padding, dilation, ceil_mode)
    ((2, 3, 7, 6), 2, None, 0, 1, False),
    ((1, 2, 7, 6), 3, 2, 1, 1, False),
    ((1, 2, 7, 6), 3, 2, 1, 1, True),
    ((2, 1, 8, 9), (3, 2), (2, 1), (1, 0), 1, True),
    ((1, 2, 9, 8), 3, 1, 1, 2, False),
    ((1, 1, 10, 7), (2, 3), 3, (1, 1), (2, 1), True),
    ((3, 5, 5), 2, 2, 1, 1, True),  # unbatched
    ((1, 1, 1, 1), 1, None, 0, 1, False),
]


@pytest.mark.parametrize("case", MAX_GRID, ids=lambda c: f"{c}")
def test_max_pool2d_values_indices_and_grad_vs_numpy(case: Any) -> None:
    shape, k, s, p, d, ceil = case
    for ties in (False, True):
        x = _x(shape, 1, ties)
        want, want_idx = ref_max_pool2d(x, k, s, p, d, ceil)
        g = _rng(2).standard_normal(want.shape)
        (got, idx), gx = _grad(lambda t: F.max_pool2d(t, k, s, p, d, ceil, return_indices=True),
                               x, g)
        np.testing.assert_array_equal(idx.numpy(), want_idx)
        np.testing.assert_array_equal(got.detach().numpy(), want)
        np.testing.assert_allclose(gx, ref_max_pool2d_grad(x, g, want_idx), atol=1e-12)


AVG_GRID = [  # (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ((2, 3, 6, 6), 2, None, 0, False, True, None),
    ((1, 2, 7, 6), 3, 2, 1, False, True, None),
    ((1, 2, 7, 6), 3, 2, 1, True, True, None),
    ((1, 2, 7, 6), 3, 2, 1, True, False, None),
    ((2, 1, 8, 5), (3, 2), (2, 1), (1, 1), False, False, None),
    ((1, 2, 5, 5), 3, 2, 1, True, True, 4),
    ((3, 7, 5), (2, 3), 2, (1, 0), True, False, None),  # unbatched
]


@pytest.mark.parametrize("case", AVG_GRID, ids=lambda c: f"{c}")
def test_avg_pool2d_values_and_grad_vs_numpy(case: Any) -> None:
    shape, k, s, p, ceil, cip, div = case
    x = _x(shape, 3)
    want = ref_avg_pool2d(x, k, s, p, ceil, cip, div)
    g = _rng(4).standard_normal(want.shape)
    got, gx = _grad(lambda t: F.avg_pool2d(t, k, s, p, ceil, cip, div), x, g)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, ref_avg_pool2d_grad(x, g, k, s, p, ceil, cip, div),
                               rtol=1e-12, atol=1e-12)


ADAPTIVE_GRID = [  # (shape, output_size)
    ((2, 3, 6, 6), (2, 3)),
    ((1, 2, 7, 5), (3, 2)),  # sizes that do not divide: windows overlap
    ((1, 2, 5, 7), (5, 7)),
    ((1, 1, 4, 4), (6, 5)),  # larger than the input: windows repeat
    ((2, 1, 5, 9), 1),
    ((3, 7, 5), (None, 3)),  # unbatched, None keeps a dim
]


@pytest.mark.parametrize("case", ADAPTIVE_GRID, ids=lambda c: f"{c}")
def test_adaptive_avg_pool2d_values_and_grad_vs_numpy(case: Any) -> None:
    shape, out = case
    size = (out, out) if isinstance(out, int) else \
        tuple(shape[-2 + i] if o is None else o for i, o in enumerate(out))
    x = _x(shape, 5)
    want = ref_adaptive_avg_pool2d(x, size)
    g = _rng(6).standard_normal(want.shape)
    got, gx = _grad(lambda t: F.adaptive_avg_pool2d(t, out), x, g)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, ref_adaptive_avg_pool2d_grad(x, g, size), rtol=1e-12,
                               atol=1e-12)


def test_pool_float32_rounds_like_float64() -> None:
    x = _x((2, 3, 9, 8), 7)
    for fn in (lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
               lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
               lambda t: F.adaptive_avg_pool2d(t, (4, 3))):
        a = fn(tj.tensor(x, dtype=tj.float32)).numpy()
        b = fn(tj.tensor(x, dtype=tj.float64)).numpy()
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_max_pool2d_nan_and_inf_vs_numpy() -> None:
    x = _x((1, 2, 6, 6), 8)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan  # two NaN in one window
    x[0, 0, 4, 4] = np.inf
    x[0, 1, :3, :3] = -np.inf  # a window of -inf
    x[0, 1, 4, 5] = np.nan
    want, want_idx = ref_max_pool2d(x, 3, 2, 1, 1, True)
    got, idx = F.max_pool2d(tj.tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_array_equal(got.numpy(), want)


def test_pool_finite_differences() -> None:
    x = _x((1, 2, 5, 4), 9)
    check_grad(lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False), x)
    check_grad(lambda t: F.adaptive_avg_pool2d(t, (3, 3)), x)
    check_grad(lambda t: F.max_pool2d(t, 2, 1, 1, dilation=1), x)  # distinct values: smooth
    # avg_pool2d's VJP op is linear; its own VJP (double backward) is avg_pool2d again
    check_grad(lambda t: tj.autograd.grad(F.avg_pool2d(t * t, 2, 1).sum(), t,
                                          create_graph=True)[0], x)


def test_batch_norm_finite_differences() -> None:
    x = _x((3, 2, 2, 2), 10)
    w, b = _x((2,), 11), _x((2,), 12)
    check_grad(lambda t, wt, bt: F.batch_norm(t, None, None, wt, bt, training=True), x, w, b,
               atol=1e-5)
    rm, rv = _x((2,), 13), _rng(14).uniform(0.5, 2, 2)
    check_grad(lambda t, wt, bt: F.batch_norm(t, tj.tensor(rm), tj.tensor(rv), wt, bt), x, w, b)


# ---- against torch ----------------------------------------------------------------------------


def _both(fn: Any, x: np.ndarray, g: np.ndarray) -> tuple[Any, Any]:
    outs = []
    for lib in (tj, torch):
        t = lib.tensor(x, dtype=lib.float32, requires_grad=True)
        out = fn(lib, t)
        vals = out[0] if isinstance(out, tuple) else out
        vals.backward(lib.tensor(g, dtype=lib.float32))
        outs.append((out, t.grad.detach().numpy()))
    return outs[0], outs[1]


@pytest.mark.torch
@pytest.mark.parametrize("case", MAX_GRID, ids=lambda c: f"{c}")
def test_max_pool2d_vs_torch(case: Any) -> None:
    shape, k, s, p, d, ceil = case
    for ties in (False, True):
        x = _x(shape, 15, ties)
        g = _rng(16).standard_normal(ref_max_pool2d(x, k, s, p, d, ceil)[0].shape)
        ((v, i), gx), ((tv, ti), tgx) = _both(
            lambda m, t: m.nn.functional.max_pool2d(t, k, s, p, d, ceil, True), x, g)
        np.testing.assert_array_equal(i.numpy(), ti.numpy())
        np.testing.assert_array_equal(v.detach().numpy(), tv.detach().numpy())
        np.testing.assert_allclose(gx, tgx, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_max_pool2d_nan_and_inf_vs_torch() -> None:
    x = _x((2, 2, 6, 7), 17, ties=True)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = x[1, 1, 3, 3] = np.nan
    x[0, 1, 2, 2] = np.inf
    x[1, 0, :4, :4] = -np.inf
    for args in ((3, 2, 1, 1, True), (2, None, 0, 1, False), (2, 1, 1, 2, False)):
        (v, i), (tv, ti) = [m.nn.functional.max_pool2d(m.tensor(x, dtype=m.float32), *args,
                                                       return_indices=True) for m in (tj, torch)]
        np.testing.assert_array_equal(i.numpy(), ti.numpy())
        np.testing.assert_array_equal(v.numpy(), tv.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("case", AVG_GRID, ids=lambda c: f"{c}")
def test_avg_pool2d_vs_torch(case: Any) -> None:
    shape, k, s, p, ceil, cip, div = case
    x = _x(shape, 18)
    g = _rng(19).standard_normal(ref_avg_pool2d(x, k, s, p, ceil, cip, div).shape)
    (v, gx), (tv, tgx) = _both(
        lambda m, t: m.nn.functional.avg_pool2d(t, k, s, p, ceil, cip, div), x, g)
    np.testing.assert_allclose(v.detach().numpy(), tv.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx, tgx, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("case", ADAPTIVE_GRID, ids=lambda c: f"{c}")
def test_adaptive_avg_pool2d_vs_torch(case: Any) -> None:
    shape, out = case
    x = _x(shape, 20)
    t_out = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), out)
    g = _rng(21).standard_normal(t_out.shape)
    (v, gx), (tv, tgx) = _both(lambda m, t: m.nn.functional.adaptive_avg_pool2d(t, out), x, g)
    np.testing.assert_allclose(v.detach().numpy(), tv.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gx, tgx, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_pool_float16_and_integer_inputs_vs_torch() -> None:
    x = _x((2, 3, 7, 6), 24)
    for fn in (lambda m, t: m.nn.functional.max_pool2d(t, 3, 2, 1, ceil_mode=True),
               lambda m, t: m.nn.functional.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
               lambda m, t: m.nn.functional.adaptive_avg_pool2d(t, (3, 4))):
        a, b = [fn(m, m.tensor(x, dtype=m.float16)) for m in (tj, torch)]
        assert a.dtype is tj.float16
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    xi = _rng(25).integers(-5, 5, (2, 3, 7, 6))
    for name in ("int32", "int64"):  # max pooling takes integers, as torch's
        (a, i), (b, j) = [m.nn.functional.max_pool2d(m.tensor(xi, dtype=getattr(m, name)), 3,
                                                     2, 1, return_indices=True)
                          for m in (tj, torch)]
        assert str(a.dtype).endswith(name)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(i.numpy(), j.numpy())


@pytest.mark.torch
def test_pool_modules_match_torch() -> None:
    x = _x((2, 3, 9, 8), 22)
    for name, args, kw in (("MaxPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}),
                           ("MaxPool2d", ((2, 3),), {"dilation": (2, 1)}),
                           ("AvgPool2d", (3, 2, 1), {"count_include_pad": False}),
                           ("AdaptiveAvgPool2d", ((4, None),), {})):
        mine, theirs = getattr(tj.nn, name)(*args, **kw), getattr(torch.nn, name)(*args, **kw)
        assert repr(mine) == repr(theirs)
        np.testing.assert_allclose(mine(tj.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy(),
                                   rtol=1e-12, atol=1e-12)
    idx = tj.nn.MaxPool2d(2, return_indices=True)(tj.tensor(x))[1]
    np.testing.assert_array_equal(
        idx.numpy(), torch.nn.MaxPool2d(2, return_indices=True)(torch.tensor(x))[1].numpy())


def _copy_bn(src: Any, dst: Any) -> None:
    """Same weights in both libraries (non-trivial, so affine matters)."""
    rng = _rng(23)
    if src.weight is not None:
        w = rng.uniform(0.5, 1.5, src.num_features).astype(np.float32)
        b = rng.uniform(-1, 1, src.num_features).astype(np.float32)
        for m in (src, dst):
            m.weight.data.copy_(_lib_of(m).tensor(w))
            m.bias.data.copy_(_lib_of(m).tensor(b))


def _lib_of(m: Any) -> Any:
    return tj if isinstance(m, tj.nn.Module) else torch


@pytest.mark.torch
@pytest.mark.parametrize("kind,shape,kw", [
    ("BatchNorm2d", (4, 3, 5, 5), {}),
    ("BatchNorm2d", (2, 3, 3, 4), {"momentum": None}),
    ("BatchNorm2d", (3, 2, 2, 2), {"affine": False, "momentum": 0.3}),
    ("BatchNorm2d", (3, 2, 4, 2), {"track_running_stats": False}),
    ("BatchNorm1d", (6, 4), {"eps": 1e-3}),
    ("BatchNorm1d", (3, 4, 5), {"momentum": None}),
])
def test_batch_norm_modules_match_torch_over_steps(kind: str, shape: tuple[int, ...],
                                                   kw: dict[str, Any]) -> None:
    mine, theirs = getattr(tj.nn, kind)(shape[1], **kw), getattr(torch.nn, kind)(shape[1], **kw)
    assert repr(mine) == repr(theirs)
    _copy_bn(mine, theirs)
    for step in range(4):
        x = _x(shape, 30 + step) * (step + 1) + step
        g = _rng(40 + step).standard_normal(shape)
        outs = []
        for m, lib in ((mine, tj), (theirs, torch)):
            m.train(step != 2)  # one eval step in the middle
            t = lib.tensor(x, dtype=lib.float32, requires_grad=True)
            y = m(t)
            y.backward(lib.tensor(g, dtype=lib.float32))
            grads = [t.grad] + [p.grad for p in m.parameters()]
            outs.append((y.detach().numpy(), [q.detach().numpy().copy() for q in grads]))
            for p in m.parameters():
                p.grad = None
        np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=2e-5)
        for a, b in zip(outs[0][1], outs[1][1]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        ours, want = mine.state_dict(), theirs.state_dict()
        assert list(ours) == list(want)
        for key in want:
            np.testing.assert_allclose(ours[key].numpy(), want[key].numpy(), rtol=1e-5,
                                       atol=1e-6, err_msg=key)


@pytest.mark.torch
def test_batch_norm_state_dict_round_trip_with_torch() -> None:
    theirs = torch.nn.BatchNorm2d(3)
    theirs(torch.randn(4, 3, 2, 2) * 3 + 1)
    theirs(torch.randn(4, 3, 2, 2))
    mine = tj.nn.BatchNorm2d(3)
    mine.load_state_dict({k: tj.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    assert int(mine.num_batches_tracked) == 2
    mine.eval()
    theirs.eval()
    x = _x((2, 3, 2, 2), 50)
    np.testing.assert_allclose(mine(tj.tensor(x, dtype=tj.float32)).detach().numpy(),
                               theirs(torch.tensor(x, dtype=torch.float32)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    back = torch.nn.BatchNorm2d(3)
    back.load_state_dict({k: torch.tensor(v.numpy()) for k, v in mine.state_dict().items()})
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy())


def test_batch_norm_running_stats_vs_numpy() -> None:
    bn = tj.nn.BatchNorm2d(2, momentum=0.25).double()
    rm, rv = np.zeros(2), np.ones(2)
    for step in range(3):
        x = _x((3, 2, 3, 2), 60 + step) + step
        out = bn(tj.tensor(x)).detach().numpy()
        want, mean, var = ref_batch_norm_train(x, np.ones(2), np.zeros(2), 1e-5)
        rm, rv = 0.75 * rm + 0.25 * mean, 0.75 * rv + 0.25 * var
        np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3
    bn.eval()
    x = _x((2, 2, 2, 2), 70)
    want = (x - rm.reshape(1, 2, 1, 1)) / np.sqrt(rv.reshape(1, 2, 1, 1) + 1e-5)
    np.testing.assert_allclose(bn(tj.tensor(x)).detach().numpy(), want, rtol=1e-10, atol=1e-12)
    assert int(bn.num_batches_tracked) == 3  # eval leaves the statistics alone
    bn.train()
    assert bn(tj.zeros(0, 2, 3, 3, dtype=tj.float64)).shape == (0, 2, 3, 3)  # an empty batch
    np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-12)  # (as torch: unchanged)


# ---- errors -----------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors() -> None:
    x = tj.randn(1, 2, 5, 5)
    with pytest.raises(RuntimeError, match="pad should be smaller than or equal to half"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(RuntimeError, match="Output size is too small"):
        F.avg_pool2d(tj.randn(1, 1, 2, 2), 3)
    with pytest.raises(RuntimeError, match="kernel size should be greater than zero"):
        F.max_pool2d(x, 0)
    with pytest.raises(RuntimeError, match="stride should be greater than zero"):
        F.avg_pool2d(x, 2, stride=(1, 0))
    with pytest.raises(RuntimeError, match="dilation should be greater than zero"):
        F.max_pool2d(x, 2, dilation=0)
    with pytest.raises(RuntimeError, match="kernel_size must be a single int, or a tuple of two"):
        F.max_pool2d(x, (2, 2, 2))
    with pytest.raises(RuntimeError, match=r"3-d \(C, H, W\) or 4-d .* got \[5, 5\]"):
        F.max_pool2d(tj.randn(5, 5), 2)
    with pytest.raises(RuntimeError, match="floating-point input, got int64.*float()"):
        F.avg_pool2d(tj.ones(1, 1, 4, 4, dtype=tj.int64), 2)
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(RuntimeError, match="test_pool_bn.py"):  # the user's file:line
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        tj.nn.BatchNorm2d(2)(tj.randn(2, 3, 3))
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        tj.nn.BatchNorm1d(2)(tj.randn(2, 2, 3, 3))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        tj.nn.BatchNorm1d(3)(tj.randn(1, 3))
    with pytest.raises(RuntimeError, match="running_mean should contain 3 elements"):
        F.batch_norm(tj.randn(2, 3), tj.zeros(4), tj.ones(4))
    with pytest.raises(RuntimeError, match="must be defined in evaluation mode"):
        F.batch_norm(tj.randn(2, 3), None, None)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        tj.nn.Dropout2d(1.5)


# ---- Dropout2d --------------------------------------------------------------------------------


def test_dropout2d_zeroes_whole_channels() -> None:
    tj.manual_seed(0)
    x = tj.ones(8, 16, 3, 4, requires_grad=True)
    y = F.dropout2d(x, 0.5)
    a = y.detach().numpy()
    per_channel = a.reshape(8, 16, -1)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))
    kept = (per_channel[..., 0] != 0).mean()
    assert 0.3 < kept < 0.7
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), a)  # the mask times 1/(1-p)
    assert F.dropout2d(x, 0.5, training=False) is x
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        z = F.dropout2d(tj.ones(4, 6, 5), 0.5)  # (N, C, L), as torch
    assert any("3D input" in str(m.message) for m in w)
    zz = z.numpy()
    assert np.all((zz == 0).all(-1) | (zz == 2).all(-1))
    m = tj.nn.Dropout2d(0.3)
    assert repr(m) == "Dropout2d(p=0.3, inplace=False)"
    m.eval()
    assert m(x) is x


def test_dropout2d_eager_and_jit_draw_the_same_numbers() -> None:
    x = tj.randn(2, 6, 3, 3)

    def f(t: Any) -> Any:
        return F.dropout2d(t, 0.4) * 2.0

    tj.manual_seed(123)
    eager = [f(x).numpy() for _ in range(3)]
    tj.manual_seed(123)
    jf = tj.jit(f)
    jitted = [jf(x).numpy() for _ in range(3)]
    for a, b in zip(eager, jitted):
        np.testing.assert_array_equal(a, b)
    info = jf.cache_info()
    assert info.fallbacks == 0 and info.traces == 1 and info.hits == 2, info
    assert all(e.program is not None for e in jf.explain().entries)  # compiled, not eager


# ---- eager vs @jit ----------------------------------------------------------------------------


class _Net(tj.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = tj.nn.BatchNorm2d(3)
        self.pool = tj.nn.MaxPool2d(2, ceil_mode=True)
        self.avg = tj.nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.gap = tj.nn.AdaptiveAvgPool2d((2, 2))
        self.bn1 = tj.nn.BatchNorm1d(12, momentum=None)
        self.fc = tj.nn.Linear(12, 4)

    def forward(self, x: Any) -> Any:
        h = self.pool(self.bn(x).relu())
        h = self.gap(self.avg(h)).flatten(1)
        return self.fc(self.bn1(h))


def _net(seed: int) -> _Net:
    tj.manual_seed(seed)
    return _Net()


def test_jit_training_step_with_batchnorm_and_pooling_matches_eager() -> None:
    data = [(tj.tensor(_x((4, 3, 7, 6), 80 + i), dtype=tj.float32),
             tj.tensor(_rng(90 + i).integers(0, 4, 4))) for i in range(4)]

    def make() -> tuple[_Net, Any]:
        net = _net(5)
        opt = tj.optim.SGD(net.parameters(), lr=0.1)

        def step(x: Any, y: Any) -> Any:
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss

        return net, step

    eager_net, eager_step = make()
    jit_net, step = make()
    fast = tj.jit(step)
    for x, y in data:
        le = eager_step(x, y)
        lj = fast(x, y)
        np.testing.assert_allclose(lj.item(), le.item(), rtol=1e-5, atol=1e-6)
    for (k, a), (_, b) in zip(jit_net.state_dict().items(), eager_net.state_dict().items()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    info = fast.cache_info()
    # (the first call traces with every .grad None, the second with gradients: two traces)
    assert info.fallbacks == 0 and info.traces == 2 and info.hits == 2, info
    assert any(e.program is not None for e in fast.explain().entries)  # (compiled or loaded)
    assert int(jit_net.bn.num_batches_tracked) == len(data)

    # eval mode: a new trace (the training flag is guarded) whose BatchNorm is a per-channel
    # scale and shift, the running statistics untouched
    eager_net.eval()
    jit_net.eval()
    infer = tj.jit(jit_net)
    x = data[0][0]
    before = {k: v.numpy().copy() for k, v in jit_net.state_dict().items()}
    with tj.no_grad():
        for _ in range(2):
            np.testing.assert_allclose(infer(x).numpy(), eager_net(x).numpy(), rtol=1e-5,
                                       atol=1e-6)
    assert infer.cache_info().fallbacks == 0 and infer.cache_info().hits == 1
    for k, v in jit_net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
