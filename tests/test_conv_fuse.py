"""passes/conv.py and the ops it makes (conv_im2col, conv_gemm, conv_weight_grad_cols): their
eager forms against float64 NumPy; convolutions with their bias and ReLU fused under @jit bit
for bit equal to eager, special values included; an eval BatchNorm folded into the conv against
the unfolded eager module, float64 NumPy and torch; what must not fuse left alone; and the
2x2 max-pooling kernel's fast path against the reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_conv import ref_conv
from test_pool_bn import ref_max_pool2d

import tracejit
import tracejit.nn as nn
from tracejit.ops.conv import conv_gemm_op, conv_im2col_op, conv_weight_grad_cols_op
from tracejit.ops.pool import max_pool2d_relu_bwd_op

RNG = np.random.default_rng(15)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _attrs(r: int, stride: int = 1, pad: int = 0, dil: int = 1, groups: int = 1) -> dict:
    return {"stride": (stride,) * r, "padding": ((pad, pad),) * r, "dilation": (dil,) * r,
            "groups": groups}


CASES = [  # (x shape, w shape, stride, padding, dilation, groups)
    ((2, 4, 5, 6), (6, 2, 3, 2), 2, 1, 1, 2),
    ((1, 1, 1, 1), (2, 1, 1, 1), 1, 0, 1, 1),
    ((3, 2, 7), (4, 2, 3), 1, 2, 2, 1),
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_pass_ops_eager_against_numpy(case: Any) -> None:
    """cols -> gemm (+ bias, ReLU) is the conv; cols -> wgrad is sum(g * windows)."""
    xs, ws, s, p, d, g = case
    x, w, b = _f32(*xs), _f32(*ws), _f32(ws[0])
    r = len(ws) - 2
    at = _attrs(r, s, p, d, g)
    cols = conv_im2col_op.eager(x, **at, kernel_size=ws[2:])
    want = ref_conv(x, w, b, stride=s, padding=p, dilation=d, groups=g)
    out = conv_gemm_op.eager(cols, w, b, out_shape=want.shape, act="")
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    relu = conv_gemm_op.eager(cols, w, b, out_shape=want.shape, act="relu")
    np.testing.assert_allclose(relu, np.maximum(want, 0), rtol=1e-5, atol=1e-5)
    nob = conv_gemm_op.eager(cols, w, out_shape=want.shape, act="")
    np.testing.assert_allclose(nob, want - b.reshape((-1,) + (1,) * r), rtol=1e-5, atol=1e-5)
    # the weight gradient of sum(gy * conv): each output's window times gy, summed
    gy = _f32(*want.shape)
    gw = conv_weight_grad_cols_op.eager(cols, gy, kernel_size=ws[2:])
    eps = 1e-3
    w64 = w.astype(np.float64)
    k = (0,) * len(ws)
    wp = w64.copy()
    wp[k] += eps
    wm = w64.copy()
    wm[k] -= eps
    fd = (np.sum(gy * ref_conv(x, wp, None, stride=s, padding=p, dilation=d, groups=g)) -
          np.sum(gy * ref_conv(x, wm, None, stride=s, padding=p, dilation=d, groups=g))) / (2 * eps)
    assert gw.shape == w.shape
    np.testing.assert_allclose(gw[k], fd, rtol=1e-4, atol=1e-4)


def test_pass_ops_check_their_operands() -> None:
    from tracejit.ops.registry import ArgError, ShapeError, TensorType

    t = TensorType
    f32 = tracejit.float32
    with pytest.raises(ShapeError, match="do not make an output"):
        conv_gemm_op.infer([t((1, 9, 16), f32), t((4, 2, 3, 3), f32)], out_shape=(1, 4, 4, 4),
                           act="")
    with pytest.raises(ArgError, match="act must be one of"):
        conv_gemm_op.infer([t((1, 9, 16), f32), t((4, 1, 3, 3), f32)], out_shape=(1, 4, 4, 4),
                           act="gelu")
    with pytest.raises(ShapeError, match="bias must be"):
        conv_gemm_op.infer([t((1, 9, 16), f32), t((4, 1, 3, 3), f32), t((3,), f32)],
                           out_shape=(1, 4, 4, 4), act="")


class _Block(nn.Module):
    def __init__(self, r: int = 2, bias: bool = True) -> None:
        super().__init__()
        conv = nn.Conv2d if r == 2 else nn.Conv1d
        self.c1 = conv(2, 4, 3, padding=1, bias=bias)
        self.c2 = conv(4, 3, 2, stride=2, groups=1)

    def forward(self, x: Any) -> Any:
        return self.c2(self.c1(x).relu()).relu()


@pytest.mark.parametrize("r", [1, 2])
def test_fused_bias_relu_is_bitwise_eager_with_special_values(r: int) -> None:
    """NaN, inf, -0.0 through the conv, its bias and ReLU: the fused epilogue keeps eager's
    bits (ReLU keeps -0.0 and NaN); new values on every call, one compile."""
    tracejit.manual_seed(1)
    m = _Block(r)
    f = tracejit.jit(lambda x: m(x))
    shape = (3, 2, 6, 6) if r == 2 else (3, 2, 6)
    for k in range(3):
        a = _f32(*shape)
        if k == 1:
            a.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30]
        x = tracejit.tensor(a)
        with tracejit.no_grad():
            want = m(x).numpy()
            got = f(x).numpy()
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    with tracejit.no_grad():
        ir = f.ir(x)
    assert ir.count("act='relu'] ") == 2 and "= conv[" not in ir, ir
    assert f.cache_info().traces == 1 and f.cache_info().fallbacks == 0


def test_a_conv_output_read_twice_keeps_its_add_and_relu() -> None:
    """The epilogue takes only what the conv alone feeds: here the pre-bias output is read
    again, so the bias add and ReLU stay elementwise (and the values are eager's)."""
    w, b = tracejit.tensor(_f32(4, 2, 3, 3)), tracejit.tensor(_f32(4))

    def fn(x: Any) -> Any:
        y = nn.functional.conv2d(x, w)
        return (y + b.reshape(4, 1, 1)).relu(), y * 2

    f = tracejit.jit(fn)
    x = tracejit.tensor(_f32(2, 2, 5, 5))
    got, want = f(x), fn(x)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), e.numpy())
    ir = f.ir(x)
    assert "act='']" in ir and "act='relu'" not in ir, ir


def _bn_model(r: int, conv_bias: bool) -> Any:
    conv = nn.Conv2d if r == 2 else nn.Conv1d
    bn = nn.BatchNorm2d if r == 2 else nn.BatchNorm1d
    m = nn.Sequential(conv(2, 4, 3, padding=1, bias=conv_bias), bn(4), nn.ReLU(),
                      conv(4, 3, 3), bn(3))
    with tracejit.no_grad():
        for layer in m.modules():
            if isinstance(layer, bn):
                c = layer.num_features
                layer.running_mean.copy_(tracejit.tensor(_f32(c)))
                layer.running_var.copy_(tracejit.tensor(RNG.uniform(0.5, 2, c)
                                                        .astype(np.float32)))
                layer.weight.copy_(tracejit.tensor(_f32(c)))
                layer.bias.copy_(tracejit.tensor(_f32(c)))
    return m.eval()


def _ref_bn_model(m: Any, x: np.ndarray) -> np.ndarray:
    """The unfolded eval model in float64 NumPy."""
    h = x.astype(np.float64)
    for layer in m:
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            b = None if layer.bias is None else layer.bias.detach().numpy()
            h = ref_conv(h, layer.weight.detach().numpy().astype(np.float64), b,
                         padding=layer.padding)
        elif isinstance(layer, nn.ReLU):
            h = np.maximum(h, 0)
        else:
            s = (1, -1) + (1,) * (h.ndim - 2)
            rm, rv = (layer.running_mean.numpy().astype(np.float64),
                      layer.running_var.numpy().astype(np.float64))
            h = (h - rm.reshape(s)) / np.sqrt(rv.reshape(s) + layer.eps) * \
                layer.weight.detach().numpy().reshape(s) + layer.bias.detach().numpy().reshape(s)
    return h


@pytest.mark.parametrize("r,conv_bias", [(2, True), (2, False), (1, True)])
def test_eval_batchnorm_folded_into_the_conv(r: int, conv_bias: bool) -> None:
    """Folded (w * scale, bias * scale + shift, in the graph) against the unfolded eager module
    and float64 NumPy; the running statistics changed between calls are read, not baked in."""
    m = _bn_model(r, conv_bias)
    f = tracejit.jit(lambda x: m(x))
    shape = (2, 2, 6, 6) if r == 2 else (2, 2, 9)
    for _ in range(3):
        x = tracejit.tensor(_f32(*shape))
        with tracejit.no_grad():
            got, want = f(x).numpy(), m(x).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, _ref_bn_model(m, x.numpy()), rtol=1e-4, atol=1e-5)
        with tracejit.no_grad():
            m[1].running_var.mul_(1.5)
            m[4].running_mean.add_(0.25)
    with tracejit.no_grad():
        ir = f.ir(x)
    # both BatchNorms became the convs' weights and biases: no per-element mul left
    assert ir.count("= conv_gemm[") == 2 and "batch_norm" not in ir
    assert ir.count("act='relu'] ") == 1, ir
    assert f.cache_info().traces == 1


@pytest.mark.torch
def test_eval_batchnorm_fold_against_torch() -> None:
    torch = pytest.importorskip("torch")
    m = _bn_model(2, True)
    tm = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                             torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3), torch.nn.BatchNorm2d(3))
    tm.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                        for k, v in m.state_dict().items()})
    tm.eval()
    x = _f32(4, 2, 7, 7)
    f = tracejit.jit(lambda x: m(x))
    with tracejit.no_grad():
        f(tracejit.tensor(x))
        got = f(tracejit.tensor(x)).numpy()
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_eval_batchnorm_with_gradients_is_not_folded() -> None:
    """With autograd on, the BatchNorm's own weight needs the conv output for its gradient:
    nothing is folded, and the gradients are eager's."""
    m = _bn_model(2, True)
    ref = _bn_model(2, True)
    ref.load_state_dict(m.state_dict())

    def loss(model: Any, x: Any) -> Any:
        out = model(x).sum()
        out.backward()
        return out

    f = tracejit.jit(loss)
    x = tracejit.tensor(_f32(2, 2, 6, 6))
    for _ in range(2):
        m.zero_grad()
        ref.zero_grad()
        np.testing.assert_allclose(f(m, x).item(), loss(ref, x).item(), rtol=1e-5)
        for p, q in zip(m.parameters(), ref.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert "act='relu'" not in f.ir(m, x).split("conv_gemm")[1].split("\n")[0]


@pytest.mark.parametrize("ceil", [False, True])
def test_max_pool_2x2_fast_path_against_numpy(ceil: bool) -> None:
    """The 2x2 path (no padding, dilation 1): first of equal values wins, the last NaN, -inf
    windows keep their first position; odd sizes with ceil_mode take the general loops."""
    x = RNG.integers(0, 3, (2, 3, 7, 6)).astype(np.float32)  # ties everywhere
    x[0, 0, 0, :2] = np.nan
    x[0, 1, :2, :2] = -np.inf
    x[1, 2, 2, 2] = np.nan
    t = tracejit.tensor(x)
    for s in (2, 1):
        want, want_idx = ref_max_pool2d(x, 2, s, 0, 1, ceil)
        out, idx = nn.functional.max_pool2d(t, 2, s, ceil_mode=ceil, return_indices=True)
        np.testing.assert_array_equal(idx.numpy(), want_idx)
        np.testing.assert_array_equal(out.numpy(), want)
        f = tracejit.jit(lambda a, s=s: nn.functional.max_pool2d(a, 2, s, ceil_mode=ceil))
        f(t)
        np.testing.assert_array_equal(f(t).numpy(), want)


def test_max_pool_relu_bwd_eager_against_numpy() -> None:
    """Each window's gradient added at its argmax onto +0.0 (overlapping windows sum), then
    masked by y > 0: NaN and -0.0 as the unfused multiply gives them."""
    y = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y[0, 0, 0, 0] = np.nan
    idx = RNG.integers(0, 20, (2, 3, 6))
    g = RNG.standard_normal((2, 3, 6)).astype(np.float32)
    g[1, 1, 0] = -0.0
    want = np.zeros((2, 3, 20))
    for b in range(2):
        for c in range(3):
            for k in range(6):
                want[b, c, idx[b, c, k]] += g[b, c, k]
    want = want.reshape(y.shape) * (y > 0)
    got = max_pool2d_relu_bwd_op.eager(g, idx, y)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


class _PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 3 * 3, 3)

    def forward(self, x: Any) -> Any:
        x = self.pool(self.c1(x).relu())
        # stride 1: overlapping windows, whose gradients add at a shared argmax
        x = nn.functional.max_pool2d(self.c2(x).relu(), 2, stride=1)
        return self.fc(x.flatten(1))


def test_cnn_training_step_with_fused_pool_relu_gradient_matches_eager() -> None:
    """Conv-ReLU-MaxPool training (the digits CNN's shape): the pool-and-ReLU gradient is one
    kernel and every step's loss and weights are eager's, with ties in the pooling windows
    (integer-valued images) and values changing between calls."""
    tracejit.manual_seed(3)
    a = _PoolNet()
    b = _PoolNet()
    b.load_state_dict(a.state_dict())
    oa = tracejit.optim.Adam(a.parameters(), lr=1e-2)
    ob = tracejit.optim.Adam(b.parameters(), lr=1e-2)

    def step(m: Any, opt: Any, x: Any, y: Any) -> Any:
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    f = tracejit.jit(step)
    for k in range(4):
        x = tracejit.tensor(RNG.integers(0, 3, (5, 1, 8, 8)).astype(np.float32) if k % 2 else
                            _f32(5, 1, 8, 8))
        y = tracejit.tensor(RNG.integers(0, 3, 5))
        want, got = step(a, oa, x, y), f(b, ob, x, y)
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)
        for p, q in zip(a.parameters(), b.parameters()):
            np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5,
                                       atol=1e-6)
    ir = f.ir(b, ob, x, y)
    assert ir.count("= max_pool2d_relu_bwd ") == 2 and "= scatter_add[" not in ir, ir
    assert f.cache_info().fallbacks == 0
