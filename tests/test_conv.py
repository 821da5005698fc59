"""Convolutions (tracejit/ops/conv.py, tracejit/nn/conv.py): values and gradients of conv1d,
conv2d and the transposed convolutions against NumPy float64 references written here as direct
loops over output (or input) positions, independent of the im2col the library uses, and
against torch when installed; central differences on tiny float64 cases (second order too);
the modules' initialisation, repr and errors; eager vs @jit on a small conv net training step
(one compiled function shared by the jit tests: Numba compiles are slow on 2 cores)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

import tracejit
import tracejit.nn.functional as F
from tracejit.testing import check_grad

# ---- NumPy float64 references: direct loops, no im2col -------------------------------------------


def _pairs(padding: Any, r: int, k: tuple[int, ...], dilation: tuple[int, ...]) -> list[tuple]:
    if padding == "valid":
        return [(0, 0)] * r
    if padding == "same":
        tot = [d * (kk - 1) for d, kk in zip(dilation, k)]
        return [(t // 2, t - t // 2) for t in tot]
    p = (padding,) * r if isinstance(padding, int) else tuple(padding)
    return [(q, q) for q in p]


def _tup(v: Any, r: int) -> tuple[int, ...]:
    return (v,) * r if isinstance(v, int) else tuple(v)


def ref_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Any = 1,
             padding: Any = 0, dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """out[n, o, p] = b[o] + sum_{c in o's group, q} x[n, c, p*s + q*d - pad] w[o, c, q]."""
    r = w.ndim - 2
    s, d = _tup(stride, r), _tup(dilation, r)
    pads = _pairs(padding, r, w.shape[2:], d)
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    og = o // groups
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + pads)
    outs = [(xp.shape[2 + i] - d[i] * (w.shape[2 + i] - 1) - 1) // s[i] + 1 for i in range(r)]
    out = np.zeros((n, o, *outs))
    for pos in itertools.product(*map(range, outs)):
        for q in itertools.product(*map(range, w.shape[2:])):
            idx = tuple(p * ss + qq * dd for p, ss, qq, dd in zip(pos, s, q, d))
            for g in range(groups):
                xs = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + idx]  # (n, cg)
                ws = w[(slice(g * og, (g + 1) * og), slice(None)) + q]  # (og, cg)
                out[(slice(None), slice(g * og, (g + 1) * og)) + pos] += xs @ ws.T
    if b is not None:
        out += b.reshape((o,) + (1,) * r)
    return out


def ref_conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Any = 1,
                       padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                       dilation: Any = 1) -> np.ndarray:
    """Each input position scatters x[n, ci, p] w[ci, co, q] to output p*s + q*d - pad."""
    r = w.ndim - 2
    s, d, pad, op = (_tup(v, r) for v in (stride, dilation, padding, output_padding))
    n, cin = x.shape[:2]
    cog = w.shape[1]
    ig = cin // groups
    full = [(x.shape[2 + i] - 1) * s[i] + d[i] * (w.shape[2 + i] - 1) + 1 + op[i]
            for i in range(r)]
    out = np.zeros((n, cog * groups, *full))
    for pos in itertools.product(*map(range, x.shape[2:])):
        for q in itertools.product(*map(range, w.shape[2:])):
            idx = tuple(p * ss + qq * dd for p, ss, qq, dd in zip(pos, s, q, d))
            for g in range(groups):
                xs = x[(slice(None), slice(g * ig, (g + 1) * ig)) + pos]  # (n, ig)
                ws = w[(slice(g * ig, (g + 1) * ig), slice(None)) + q]  # (ig, cog)
                out[(slice(None), slice(g * cog, (g + 1) * cog)) + idx] += xs @ ws
    crop = tuple(slice(p, f - p) for p, f in zip(pad, full))
    out = out[(slice(None), slice(None)) + crop]
    if b is not None:
        out = out + b.reshape((-1,) + (1,) * r)
    return out


def ref_conv_grads(x: np.ndarray, w: np.ndarray, g: np.ndarray, **kw: Any
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of sum(g * conv(x, w, b)) by direct loops: dx (scatter of each output's
    weighted window), dw (sum of windows times g) and db."""
    r = w.ndim - 2
    s, d = _tup(kw.get("stride", 1), r), _tup(kw.get("dilation", 1), r)
    groups = kw.get("groups", 1)
    pads = _pairs(kw.get("padding", 0), r, w.shape[2:], d)
    o, cg = w.shape[:2]
    og = o // groups
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + pads)
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    for pos in itertools.product(*map(range, g.shape[2:])):
        for q in itertools.product(*map(range, w.shape[2:])):
            idx = tuple(p * ss + qq * dd for p, ss, qq, dd in zip(pos, s, q, d))
            for k in range(groups):
                cs, os_ = slice(k * cg, (k + 1) * cg), slice(k * og, (k + 1) * og)
                gs = g[(slice(None), os_) + pos]  # (n, og)
                dxp[(slice(None), cs) + idx] += gs @ w[(os_, slice(None)) + q]
                dw[(os_, slice(None)) + q] += gs.T @ xp[(slice(None), cs) + idx]
    crop = tuple(slice(lo, xp.shape[2 + i] - hi) for i, (lo, hi) in enumerate(pads))
    return dxp[(slice(None), slice(None)) + crop], dw, g.sum(axis=(0, *range(2, g.ndim)))


def test_references_agree_with_each_other() -> None:
    """The transposed reference is the adjoint of the conv reference: <conv(u), v> = <u, T(v)>
    (so neither can be wrong the same way as the other by construction)."""
    rng = np.random.default_rng(0)
    u, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    y = ref_conv(u, w, None, **kw)
    v = rng.standard_normal(y.shape)
    op = tuple(n - ((m - 1) * s - 2 * p + d * (k - 1) + 1) for n, m, s, p, d, k in
               zip(u.shape[2:], y.shape[2:], (2, 1), (1, 2), (1, 2), (3, 2)))
    t = ref_conv_transpose(v, w, None, stride=(2, 1), padding=(1, 2), output_padding=op,
                           groups=2, dilation=(1, 2))
    assert t.shape == u.shape
    np.testing.assert_allclose(np.sum(y * v), np.sum(u * t), rtol=1e-12)
    dx, _, _ = ref_conv_grads(u, w, v, **kw)
    np.testing.assert_allclose(dx, t, atol=1e-12)


# ---- the grid ------------------------------------------------------------------------------------

# (function, input shape, weight shape, keyword arguments); bias on every other case
CONV = [
    ("conv2d", (2, 3, 6, 7), (4, 3, 3, 3), {}),
    ("conv2d", (2, 3, 6, 7), (4, 3, 3, 3), dict(padding=1)),
    ("conv2d", (2, 2, 7, 8), (4, 2, 3, 2), dict(stride=2, padding=(1, 0))),
    ("conv2d", (1, 4, 9, 8), (6, 2, 3, 3), dict(groups=2, dilation=2, padding=2)),
    ("conv2d", (2, 4, 6, 6), (4, 1, 3, 3), dict(groups=4, padding="same")),  # depthwise
    ("conv2d", (2, 2, 6, 7), (3, 2, 2, 4), dict(padding="same")),  # even kernel: pad after
    ("conv2d", (2, 2, 8, 7), (3, 2, 2, 3), dict(padding="same", dilation=(3, 2))),
    ("conv2d", (2, 3, 5, 5), (2, 3, 3, 3), dict(padding="valid", stride=(1, 3))),
    ("conv2d", (1, 1, 4, 4), (1, 1, 4, 4), {}),  # kernel = input: one output
    ("conv2d", (3, 1, 5, 4), (1, 1, 2, 2), dict(stride=3)),  # channel 1, windows left over
    ("conv1d", (2, 3, 9), (4, 3, 3), dict(padding=1)),
    ("conv1d", (1, 4, 11), (6, 2, 4), dict(stride=2, dilation=2, groups=2, padding="valid")),
    ("conv1d", (2, 2, 8), (3, 2, 4), dict(padding="same", dilation=3)),
]
TRANSPOSE = [
    ("conv_transpose2d", (2, 4, 3, 4), (4, 3, 3, 3), {}),
    ("conv_transpose2d", (2, 4, 3, 4), (4, 2, 3, 2), dict(stride=2, padding=1, output_padding=1)),
    ("conv_transpose2d", (1, 4, 4, 3), (4, 3, 2, 3), dict(stride=(2, 3), padding=(0, 1),
                                                         groups=2, dilation=(2, 1),
                                                         output_padding=(1, 2))),
    ("conv_transpose2d", (2, 3, 2, 2), (3, 1, 2, 2), dict(stride=2)),  # 2x upsampling
    ("conv_transpose1d", (2, 4, 5), (4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("conv_transpose1d", (1, 2, 4), (2, 2, 3), dict(dilation=2, groups=2)),
]
CASES = CONV + TRANSPOSE
IDS = [f"{f}-{x}-{w}-{kw}".replace(" ", "") for f, x, w, kw in CASES]


def _arrays(case: tuple, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    fn, xs, ws, kw = case
    rng = np.random.default_rng(k)
    nb = ws[1] * kw.get("groups", 1) if "transpose" in fn else ws[0]
    b = rng.standard_normal(nb) if k % 2 == 0 else None
    return rng.standard_normal(xs), rng.standard_normal(ws), b


def _ref(fn: str, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, kw: dict) -> np.ndarray:
    return (ref_conv_transpose if "transpose" in fn else ref_conv)(x, w, b, **kw)


@pytest.mark.parametrize("k", range(len(CASES)), ids=IDS)
def test_values_and_gradients_against_numpy(k: int) -> None:
    """float32 values against the float64 loops; float64 gradients of sum(g * out) against the
    adjoint loops (dx of a conv is a transposed conv of g, and the reverse)."""
    fn, _, _, kw = CASES[k]
    x, w, b = _arrays(CASES[k], k)
    want = _ref(fn, x, w, b, kw)
    f32 = [tracejit.tensor(a, dtype=tracejit.float32) if a is not None else None
           for a in (x, w, b)]
    got = getattr(F, fn)(*f32, **kw)
    assert got.dtype is tracejit.float32 and tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)

    t64 = [tracejit.tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
    out = getattr(F, fn)(*t64, **kw)
    g = np.random.default_rng(100 + k).standard_normal(out.shape)
    out.backward(tracejit.tensor(g))
    if "transpose" in fn:
        # y = T(x, w) is the adjoint of conv(., w): dx = conv(g, w); dw from the conv
        # reference's weight gradient with the roles of input and output gradient swapped
        ckw = {key: v for key, v in kw.items() if key != "output_padding"}
        dx = ref_conv(g, w, None, **ckw)
        dx = dx[(slice(None), slice(None)) + tuple(slice(0, n) for n in x.shape[2:])]
        _, dw, _ = ref_conv_grads(g, w, x, **ckw)
        db = g.sum(axis=(0, *range(2, g.ndim)))
    else:
        dx, dw, db = ref_conv_grads(x, w, g, **kw)
    np.testing.assert_allclose(t64[0].grad.numpy(), dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(t64[1].grad.numpy(), dw, rtol=1e-10, atol=1e-10)
    if b is not None:
        np.testing.assert_allclose(t64[2].grad.numpy(), db, rtol=1e-10, atol=1e-10)


@pytest.mark.torch
@pytest.mark.parametrize("k", range(len(CASES)), ids=IDS)
def test_values_and_gradients_against_torch(k: int) -> None:
    torch = pytest.importorskip("torch")
    fn, _, _, kw = CASES[k]
    x, w, b = _arrays(CASES[k], k + 1)  # (the other bias choice than the NumPy test's)
    tt = [torch.tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
    tj = [tracejit.tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
    want = getattr(torch.nn.functional, fn)(*tt, **kw)
    got = getattr(F, fn)(*tj, **kw)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-10,
                               atol=1e-10)
    g = np.random.default_rng(k).standard_normal(tuple(want.shape))
    want.backward(torch.tensor(g))
    got.backward(tracejit.tensor(g))
    for a, c in zip(tj, tt):
        if a is not None:
            np.testing.assert_allclose(a.grad.numpy(), c.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.torch
def test_float32_against_torch_on_digits_shapes() -> None:
    """float32 computes in float32 and agrees with torch's float32 (a 144-term dot product)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    got = F.conv2d(tracejit.tensor(x), tracejit.tensor(w), padding=1)
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding=1)
    assert got.dtype is tracejit.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_unbatched_and_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 9, 2, 8))  # read as a transposed view (2, 3, 8, 9)
    w = rng.standard_normal((4, 3, 3, 3))
    xt = tracejit.tensor(x).permute(2, 0, 3, 1)
    assert not xt.is_contiguous()
    want = ref_conv(np.transpose(x, (2, 0, 3, 1)), w, None, stride=2, padding=1)
    np.testing.assert_allclose(F.conv2d(xt, tracejit.tensor(w), stride=2, padding=1).numpy(),
                               want, atol=1e-12)
    sliced = tracejit.tensor(rng.standard_normal((2, 3, 12, 10)))[:, :, ::2, 1:]
    np.testing.assert_allclose(F.conv2d(sliced, tracejit.tensor(w)).numpy(),
                               ref_conv(sliced.numpy(), w, None), atol=1e-12)
    chw = tracejit.tensor(x)[:, :, 0, :]  # a (3, 9, 8) view with a stride of 2
    one = F.conv2d(chw, tracejit.tensor(w), padding="same")
    assert tuple(one.shape) == (4, 9, 8)  # (C, H, W) in, (O, H, W) out
    np.testing.assert_allclose(
        one.numpy(), ref_conv(x[None, :, :, 0, :], w, None, padding="same")[0], atol=1e-12)
    x1 = tracejit.tensor(rng.standard_normal((3, 10)))
    w1 = rng.standard_normal((2, 3, 3))
    np.testing.assert_allclose(F.conv1d(x1, tracejit.tensor(w1)).numpy(),
                               ref_conv(x1.numpy()[None], w1, None)[0], atol=1e-12)


def test_finite_differences_first_and_second_order() -> None:
    """Central differences in float64 on tiny cases, through the three ops and (second order)
    through their VJPs, which are the other two ops."""
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((4, 1, 2, 3)), \
        rng.standard_normal(4)
    check_grad(lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 1), groups=2,
                                        dilation=(1, 2)), x, w, b)
    wt = rng.standard_normal((2, 3, 3, 2))
    check_grad(lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
               x, wt)

    def grad_of_conv(x: Any, w: Any) -> Any:
        y = F.conv2d(x, w, padding=1, stride=2, groups=2)
        gx, gw = tracejit.autograd.grad((y * y).sum(), (x, w), create_graph=True)
        return gx, gw

    check_grad(grad_of_conv, x, rng.standard_normal((2, 1, 3, 3)), atol=1e-5)


# ---- modules -------------------------------------------------------------------------------------


def test_module_shapes_init_and_repr() -> None:
    tracejit.manual_seed(0)
    c = tracejit.nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, bias=True)
    assert tuple(c.weight.shape) == (8, 2, 3, 3) and tuple(c.bias.shape) == (8,)
    bound = 1 / math.sqrt(2 * 9)  # kaiming_uniform_(a=sqrt(5)): 1/sqrt(fan_in), as the bias
    for p in (c.weight, c.bias):
        v = p.detach().numpy()
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.7 * bound
    assert repr(c) == "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2)"
    t = tracejit.nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2, bias=False)
    assert tuple(t.weight.shape) == (6, 2, 2, 2) and t.bias is None
    assert repr(t) == ("ConvTranspose2d(6, 4, kernel_size=(2, 2), stride=(2, 2), groups=2, "
                       "bias=False)")
    assert np.abs(t.weight.detach().numpy()).max() <= 1 / math.sqrt(2 * 4)
    c1 = tracejit.nn.Conv1d(3, 5, 4, padding="same", dilation=2)
    assert repr(c1) == ("Conv1d(3, 5, kernel_size=(4,), stride=(1,), padding=same, "
                        "dilation=(2,))")
    x = tracejit.randn(2, 3, 10)
    assert tuple(c1(x).shape) == (2, 5, 10)
    assert tuple(t(tracejit.randn(1, 6, 3, 3)).shape) == (1, 4, 6, 6)
    assert tuple(c(tracejit.randn(4, 5, 5)).shape) == (8, 3, 3)  # unbatched


@pytest.mark.torch
def test_modules_against_torch_with_the_same_weights() -> None:
    """Every module form, padding modes and ConvTranspose2d(output_size=...) included."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    mods = [
        ("Conv2d", (3, 4, 3), dict(padding=1, padding_mode="reflect"), (2, 3, 6, 5)),
        ("Conv2d", (3, 4, (2, 3)), dict(padding=(1, 2), padding_mode="replicate"), (2, 3, 6, 5)),
        ("Conv2d", (3, 4, 3), dict(padding="same", padding_mode="circular"), (2, 3, 6, 5)),
        ("Conv2d", (4, 4, 3), dict(groups=2, stride=2, bias=False), (1, 4, 7, 7)),
        ("Conv1d", (3, 2, 3), dict(padding=2, padding_mode="reflect", dilation=2), (2, 3, 8)),
        ("ConvTranspose2d", (4, 2, 3), dict(stride=2, padding=1), (2, 4, 3, 3)),
        ("ConvTranspose1d", (4, 2, 3), dict(stride=3, groups=2), (2, 4, 4)),
    ]
    for name, args, kw, xs in mods:
        tm, jm = getattr(torch.nn, name)(*args, **kw).double(), \
            getattr(tracejit.nn, name)(*args, **kw).double()
        assert repr(tm) == repr(jm)
        for (pn, tp), (qn, jp) in zip(tm.named_parameters(), jm.named_parameters()):
            assert pn == qn and tuple(tp.shape) == tuple(jp.shape)
            with tracejit.no_grad():
                jp.copy_(tracejit.tensor(tp.detach().numpy()))
        x = rng.standard_normal(xs)
        want = tm(torch.tensor(x))
        got = jm(tracejit.tensor(x))
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), atol=1e-12)
        g = rng.standard_normal(tuple(want.shape))
        want.backward(torch.tensor(g))
        got.backward(tracejit.tensor(g))
        for tp, jp in zip(tm.parameters(), jm.parameters()):
            np.testing.assert_allclose(jp.grad.numpy(), tp.grad.numpy(), atol=1e-10)
    tm = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    jm = tracejit.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    with tracejit.no_grad():
        jm.weight.copy_(tracejit.tensor(tm.weight.detach().numpy()))
        jm.bias.copy_(tracejit.tensor(tm.bias.detach().numpy()))
    x = rng.standard_normal((1, 2, 4, 4))
    for size in ([7, 7], [8, 8], (1, 3, 8, 7)):
        want = tm(torch.tensor(x), output_size=size).detach().numpy()
        got = jm(tracejit.tensor(x), output_size=size).detach().numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-12)


# ---- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, err, words", [
    (lambda: F.conv2d(tracejit.randn(2, 3, 8, 8), tracejit.randn(4, 2, 3, 3)), RuntimeError,
     "expected input[2, 3, 8, 8] to have 2 channels, but got 3 channels"),
    (lambda: F.conv2d(tracejit.randn(2, 4, 8, 8), tracejit.randn(3, 2, 3, 3), groups=2),
     RuntimeError, "divisible by 2 at dimension 0"),
    (lambda: F.conv2d(tracejit.randn(2, 1, 2, 2), tracejit.randn(4, 1, 3, 3)), RuntimeError,
     "Kernel size can't be greater than actual input size"),
    (lambda: F.conv2d(tracejit.randn(8, 8), tracejit.randn(4, 1, 3, 3)), RuntimeError,
     "Expected 3D (unbatched) or 4D (batched) input to conv2d".lower()),
    (lambda: F.conv1d(tracejit.randn(2, 1, 8, 8), tracejit.randn(4, 1, 3)), RuntimeError,
     "input to conv1d, but got input of size: [2, 1, 8, 8]"),
    (lambda: F.conv2d(tracejit.randn(1, 1, 8, 8, dtype=tracejit.float64),
                      tracejit.randn(4, 1, 3, 3)), TypeError, "does not match the weight dtype"),
    (lambda: F.conv2d(tracejit.randn(1, 1, 8, 8), tracejit.randn(4, 1, 3, 3), stride=2,
                      padding="same"), ValueError, "not supported for strided"),
    (lambda: F.conv2d(tracejit.randn(1, 1, 8, 8), tracejit.randn(4, 1, 3, 3), padding="full"),
     ValueError, "invalid padding string"),
    (lambda: F.conv2d(tracejit.randn(1, 1, 8, 8), tracejit.randn(4, 1, 3, 3),
                      tracejit.randn(3)), RuntimeError, "expected bias to be 1-dimensional "
     "with 4 elements"),
    (lambda: F.conv2d(tracejit.randn(1, 1, 8, 8), tracejit.randn(4, 1, 3, 3), stride=0),
     RuntimeError, "stride should be positive"),
    (lambda: F.conv_transpose2d(tracejit.randn(1, 2, 3, 3), tracejit.randn(2, 1, 3, 3),
                                stride=2, output_padding=2), RuntimeError,
     "output padding must be smaller than either stride or dilation"),
    (lambda: F.conv_transpose2d(tracejit.randn(1, 3, 3, 3), tracejit.randn(2, 1, 3, 3)),
     RuntimeError, "to have 2 channels, but got 3 channels"),
    (lambda: tracejit.nn.Conv2d(3, 4, 3, groups=2), ValueError,
     "in_channels must be divisible by groups"),
    (lambda: tracejit.nn.Conv2d(4, 3, 3, groups=2), ValueError,
     "out_channels must be divisible by groups"),
    (lambda: tracejit.nn.Conv2d(4, 4, 3, padding_mode="mirror"), ValueError,
     "padding_mode must be one of"),
    (lambda: tracejit.nn.ConvTranspose2d(4, 4, 3, padding_mode="reflect"), ValueError,
     'Only "zeros" padding mode'),
    (lambda: tracejit.nn.Conv2d(4, 4, 3, stride=2, padding="same"), ValueError,
     "not supported for strided"),
])
def test_bad_input_errors(call: Any, err: type, words: str) -> None:
    with pytest.raises(err) as e:
        call()
    assert words.lower() in str(e.value).lower()
    if err is not ValueError:  # (constructor errors are Python's; op errors name the line)
        assert "test_conv.py" in str(e.value)


# ---- @jit ----------------------------------------------------------------------------------------


class _Net(tracejit.nn.Module):
    """Every op and form at once (1-d, 2-d, groups, "same", transposed, bias and none)."""

    def __init__(self, nn: Any) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, padding="same", groups=2, bias=False)
        self.up = nn.ConvTranspose2d(6, 2, 2, stride=2)
        self.c3 = nn.Conv1d(2, 3, 3, stride=2, dilation=2)
        self.fc = nn.Linear(3 * 6, 5)

    def forward(self, x: Any) -> Any:
        h = self.c1(x).relu()
        h = self.c2(h).relu()
        h = self.up(h)  # (N, 2, 10, 10)
        h = h.reshape(h.shape[0], 2, 100)[:, :, :16]
        return self.fc(self.c3(h).relu().flatten(1))


def _models() -> tuple[Any, Any, Any, Any]:
    tracejit.manual_seed(0)
    a = _Net(tracejit.nn)
    tracejit.manual_seed(0)
    b = _Net(tracejit.nn)
    return a, tracejit.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), b, \
        tracejit.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)


def _step(model: Any, opt: Any, x: Any, y: Any) -> Any:
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def test_jit_training_step_matches_eager() -> None:
    """A few SGD steps of a conv net: eager and @jit give the same losses and weights; no
    fallback, the second entry (with .grad buffers) compiled and hit afterwards; the IR holds
    the convs as passes/conv.py rewrites them (im2col, then the GEMM with the bias and ReLU as
    its epilogue; the weight gradients reading the forward's columns)."""
    ea, eo, ja, jo = _models()
    step = tracejit.jit(_step)
    rng = np.random.default_rng(2)
    for _ in range(4):
        x = tracejit.tensor(rng.standard_normal((3, 1, 5, 5)), dtype=tracejit.float32)
        y = tracejit.tensor(rng.integers(0, 5, 3))
        want = _step(ea, eo, x, y)
        got = step(ja, jo, x, y)
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)
        for p, q in zip(ea.parameters(), ja.parameters()):
            np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), atol=1e-5)
    info = step.cache_info()
    # (compiles is 0 when an earlier process left the program in the disk cache)
    assert info.fallbacks == 0 and info.traces == 2 and info.hits == 2, info
    assert "nodes, compiled" in str(step.explain())
    ir = step.ir(ja, jo, x, y)
    for op in ("= conv_im2col[", "= conv_transpose[", "= conv_weight_grad_cols["):
        assert op in ir, op
    assert "= conv[" not in ir and "= conv_weight_grad[" not in ir
    # c1, c2 (no bias) and c3 (1-d) with their ReLU; the transposed conv's gradient (a conv
    # sharing its columns with the weight's) without
    assert ir.count("act='relu'] ") == 3 and ir.count("act=''] ") == 1, ir
    assert "conv_bias_act(" in step.source(ja, jo, x, y)
