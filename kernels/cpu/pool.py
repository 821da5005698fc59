"""Pooling kernels (tracejit/ops/pool.py), eager mode's and generated code's alike. Each works
on C-contiguous (planes, H, W) arrays: the op's rule flattens batch and channels into planes,
so one kernel serves batched and unbatched inputs.

`maxpool2d_argmax` finds each window's maximum as torch's CPU kernel does (max_pool2d's
cpu_max_pool): the window starts at o * stride - padding and steps by the dilation, padded
positions are skipped (padding counts as -inf), a strictly greater value or a NaN takes the
place (so the first of equal values wins, and the last NaN), and a window of -inf keeps its
first valid position; integers too. It returns the flat index h * W + w within the plane,
torch's `return_indices`; the op's composite gathers the values through it, so the gradient
is the gather's, a scatter of each output's gradient onto its argmax.

`window_avg` and `window_avg_bwd` average over windows [h0, h1) x [w0, w1) and spread each
output's gradient back over its window: avg_pool2d's windows (start o * stride - padding, end
min(start + kernel, size + padding) clipped to the input; the divisor the clipped window's
size, the padded one's with `include_pad`, or `divisor` when positive, as torch's avg_pool2d)
or, with `adaptive`, adaptive_avg_pool2d's [floor(o * size / out), ceil((o + 1) * size / out)).
Sums accumulate in float64 and are divided once, then rounded to the output's dtype.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _window(o, size, osize, k, s, p, adaptive):  # type: ignore[no-untyped-def]
    """(start, end, padded extent) of output position o's window along one dim."""
    if adaptive:
        start = (o * size) // osize
        end = ((o + 1) * size + osize - 1) // osize
        return start, end, end - start
    start = o * s - p
    end = min(start + k, size + p)
    extent = end - start
    return max(start, 0), min(end, size), extent


@numba.njit(cache=True, inline="always")
def max_window(o, size, k, s, p, d):  # type: ignore[no-untyped-def]
    """[start, stop) of output position o's max-pooling window along one dim, stepping by d:
    it starts at o * s - p, moved past the padding to its first position in the input, and
    stops at the input's end (torch's cpu_max_pool). The ONNX export builds its table of
    window positions with it too (tracejit/onnx/table_cnn.py), so both agree by construction."""
    start = o * s - p
    stop = min(start + (k - 1) * d + 1, size)
    while start < 0:
        start += d
    return start, stop


@numba.njit(cache=True)
def _maxpool2x2_argmax(x, sh, sw, out):  # type: ignore[no-untyped-def]
    """maxpool2d_argmax for 2x2 windows that all lie inside the input (no padding, dilation
    1): constant trip counts the compiler unrolls, and selects instead of branches (3x faster
    than the general loops on MaxPool2d(2) of 64 x 16 x 8 x 8 float32, both timed in one
    process)."""
    B, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for b in range(B):
        xb = x[b]
        ob = out[b]
        for oh in range(OH):
            h0 = oh * sh
            for ow in range(OW):
                w0 = ow * sw
                best = xb[h0, w0]
                idx = h0 * W + w0
                for i in range(2):
                    for j in range(2):
                        v = xb[h0 + i, w0 + j]
                        take = (v > best) | (v != v)
                        best = v if take else best
                        idx = (h0 + i) * W + w0 + j if take else idx
                ob[oh, ow] = idx
    return out


@numba.njit(cache=True)
def maxpool2d_argmax(x, kh, kw, sh, sw, ph, pw, dh, dw, out):  # type: ignore[no-untyped-def]
    """out[b, oh, ow] = the flat index h * W + w of the maximum of x[b]'s window (oh, ow)."""
    B, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    if kh == 2 and kw == 2 and ph == 0 and pw == 0 and dh == 1 and dw == 1 and OH > 0 and \
            OW > 0 and (OH - 1) * sh + 2 <= H and (OW - 1) * sw + 2 <= W:
        return _maxpool2x2_argmax(x, sh, sw, out)
    for b in range(B):
        for oh in range(OH):
            h0, h1 = max_window(oh, H, kh, sh, ph, dh)
            for ow in range(OW):
                w0, w1 = max_window(ow, W, kw, sw, pw, dw)
                idx = h0 * W + w0
                if h0 >= h1 or w0 >= w1:  # no valid position: torch's index, out of range
                    out[b, oh, ow] = idx  # (the gather of the values then raises)
                    continue
                # starting from the first value (instead of -inf) picks the same index for
                # every dtype: a later value replaces it exactly when it would replace -inf
                best = x[b, h0, w0]
                for h in range(h0, h1, dh):
                    for w in range(w0, w1, dw):
                        v = x[b, h, w]
                        if v > best or v != v:
                            best = v
                            idx = h * W + w
                out[b, oh, ow] = idx
    return out


@numba.njit(cache=True, inline="always")
def _divisor(hp, wp, h0, h1, w0, w1, include_pad, divisor, adaptive):  # type: ignore[no-untyped-def]
    if divisor > 0 and not adaptive:
        return divisor
    if include_pad and not adaptive:
        return hp * wp
    return (h1 - h0) * (w1 - w0)


@numba.njit(cache=True)
def window_avg(x, kh, kw, sh, sw, ph, pw, include_pad, divisor, adaptive,
               out):  # type: ignore[no-untyped-def]
    """out[b, oh, ow] = the sum of x[b]'s window (oh, ow) / its divisor (0 for an empty one)."""
    B, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for b in range(B):
        for oh in range(OH):
            h0, h1, hp = _window(oh, H, OH, kh, sh, ph, adaptive)
            for ow in range(OW):
                w0, w1, wp = _window(ow, W, OW, kw, sw, pw, adaptive)
                if h0 >= h1 or w0 >= w1:
                    out[b, oh, ow] = 0
                    continue
                acc = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        acc += x[b, h, w]
                out[b, oh, ow] = acc / _divisor(hp, wp, h0, h1, w0, w1, include_pad, divisor,
                                                adaptive)
    return out


@numba.njit(cache=True)
def window_avg_bwd(g, kh, kw, sh, sw, ph, pw, include_pad, divisor, adaptive,
                   out):  # type: ignore[no-untyped-def]
    """out (B, H, W) = the gradient of window_avg: g[b, oh, ow] / divisor added over each
    window (in float64, rounded once to out's dtype)."""
    B, H, W = out.shape
    OH, OW = g.shape[1], g.shape[2]
    acc = np.zeros((H, W), np.float64)
    for b in range(B):
        acc[:] = 0.0
        for oh in range(OH):
            h0, h1, hp = _window(oh, H, OH, kh, sh, ph, adaptive)
            for ow in range(OW):
                w0, w1, wp = _window(ow, W, OW, kw, sw, pw, adaptive)
                if h0 >= h1 or w0 >= w1:
                    continue
                v = g[b, oh, ow] / _divisor(hp, wp, h0, h1, w0, w1, include_pad, divisor,
                                            adaptive)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        acc[h, w] += v
        for h in range(H):
            for w in range(W):
                out[b, h, w] = acc[h, w]
    return out


@numba.njit(cache=True)
def maxpool_relu_bwd(g, idx, y, out):  # type: ignore[no-untyped-def]
    """The gradient through max pooling and the ReLU before it, in one pass per plane (what
    passes/conv.py makes of scatter_add into zeros, reshape, and `* (y > 0)`): out[b] = +0.0,
    each window's g[b, k] added at its argmax idx[b, k] (in window order, as scatter_add adds),
    then every element multiplied by 1 where y > 0, else by 0 (so -0.0 and NaN come out as the
    unfused multiply gives them). (planes, K) g and idx, (planes, H*W) y and out."""
    B, K = g.shape
    HW = out.shape[1]
    one = np.ones(1, out.dtype)[0]
    zero = np.zeros(1, out.dtype)[0]
    for b in range(B):
        ob = out[b]
        for i in range(HW):
            ob[i] = zero
        for k in range(K):
            ob[idx[b, k]] += g[b, k]
        yb = y[b]
        for i in range(HW):
            ob[i] = ob[i] * (one if yb[i] > 0 else zero)
    return out
