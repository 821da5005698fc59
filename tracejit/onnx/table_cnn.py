"""Mapping-table entries for the convolutional ops (issue 15): `conv`, `conv_transpose`,
`max_pool2d_indices`, `avg_pool2d`, `adaptive_avg_pool2d`, registered into table.py's RULES
(which imports this module). Entries for ops not in the registry are inert.

Convolutions map to ONNX Conv / ConvTranspose, whose arithmetic is the same. Pooling is
spelled out from static index and weight constants instead of ONNX MaxPool / AveragePool,
whose ceil_mode windows, ties, NaN and divisors are not torch's everywhere: max pooling
gathers each window's positions (valid ones first, padding pointing at an appended -inf) and
picks the first maximum, or the last NaN, as tracejit's kernel; average pooling is separable,
A_h @ x @ A_w^T with each row of A holding its window's 1/extent (or the divisor override),
computed in float64 as the kernel sums, then rounded once."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtypes as dt
from .table import Emit, rule


def _pads(padding: Any) -> list[int]:
    """tracejit's ((before, after), ...) per spatial dim -> ONNX's [begins..., ends...]."""
    return [int(p[0]) for p in padding] + [int(p[1]) for p in padding]


@rule("conv")
def _conv(e: Emit) -> list[str]:
    at = e.attrs
    return [e.b.op("Conv", e.xs, strides=list(at["stride"]), pads=_pads(at["padding"]),
                   dilations=list(at["dilation"]), group=int(at["groups"]),
                   kernel_shape=list(e.ts[1].shape[2:]))]


@rule("conv_transpose")
def _conv_transpose(e: Emit) -> list[str]:
    at = e.attrs
    return [e.b.op("ConvTranspose", e.xs, strides=list(at["stride"]),
                   pads=_pads(at["padding"]), dilations=list(at["dilation"]),
                   group=int(at["groups"]), output_padding=list(at["output_padding"]),
                   kernel_shape=list(e.ts[1].shape[2:]))]


def _max_windows(shape: tuple[int, int], osize: tuple[int, int],
                 at: dict[str, Any]) -> np.ndarray:
    """(OH * OW, K) flat plane indices h * W + w of each window's valid positions in the
    kernel's order, then H * W (the appended -inf) for the rest."""
    (H, W), (OH, OW) = shape, osize
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (at["kernel_size"], at["stride"], at["padding"],
                                              at["dilation"])
    from ..kernels.cpu.pool import max_window  # (the compiled kernel's windows, from Python)

    out = np.full((OH * OW, kh * kw), H * W, np.int64)
    for oh in range(OH):
        h0, h1 = max_window(oh, H, kh, sh, ph, dh)
        for ow in range(OW):
            w0, w1 = max_window(ow, W, kw, sw, pw, dw)
            where = [h * W + w for h in range(h0, h1, dh) for w in range(w0, w1, dw)]
            out[oh * OW + ow, :len(where)] = where
    return out


@rule("max_pool2d_indices")
def _max_pool2d_indices(e: Emit) -> list[str]:
    b, (x,), t = e.b, e.xs, e.ts[0]
    H, W = t.shape[-2:]
    OH, OW = e.out.shape[-2:]
    lead = list(t.shape[:-2])
    win = _max_windows((H, W), (OH, OW), e.attrs)
    K = win.shape[1]
    flat = b.op("Reshape", [x, b.ints(lead + [H * W])], allowzero=1)
    ninf = b.op("Expand", [b.const(np.array(-np.inf, t.dtype.np)), b.ints(lead + [1])])
    padded = b.op("Concat", [flat, ninf], axis=-1)
    vals = b.op("Gather", [padded, b.const(win.reshape(-1))], axis=-1)
    vals = b.op("Reshape", [vals, b.ints(lead + [OH * OW, K])], allowzero=1)
    first_max = b.op("ArgMax", [vals], axis=-1, keepdims=1, select_last_index=0)
    flags = b.cast(b.op("IsNaN", [vals]), dt.bool_, dt.int32)
    last_nan = b.op("ArgMax", [flags], axis=-1, keepdims=1, select_last_index=1)
    has_nan = b.cast(b.op("ReduceMax", [flags, b.ints([-1])], keepdims=1), dt.int32, dt.bool_)
    pick = b.op("Where", [has_nan, last_nan, first_max])
    table = b.op("Expand", [b.const(win), b.ints(lead + [OH * OW, K])])
    idx = b.op("GatherElements", [table, pick], axis=-1)
    return [b.op("Reshape", [idx, b.ints(lead + [OH, OW])], allowzero=1)]


def _avg_matrix(size: int, osize: int, k: int, s: int, p: int, include_pad: bool,
                adaptive: bool) -> np.ndarray:
    """(osize, size): row o holds 1 / (its window's divisor along this dim) over the window
    (kernels/cpu/pool.py's _window and _divisor, one dim at a time)."""
    a = np.zeros((osize, size), np.float64)
    for o in range(osize):
        if adaptive:
            start, end = (o * size) // osize, ((o + 1) * size + osize - 1) // osize
            extent = end - start
        else:
            start = o * s - p
            end = min(start + k, size + p)
            extent = end - start
            start, end = max(start, 0), min(end, size)
        if start < end:
            a[o, start:end] = 1.0 / (extent if include_pad else end - start)
    return a


def _separable(e: Emit, ah: np.ndarray, aw: np.ndarray, scale: float | None) -> list[str]:
    b, (x,), t = e.b, e.xs, e.ts[0]
    if scale is not None:  # a divisor override: sums, divided once
        ah, aw = (ah != 0).astype(np.float64), (aw != 0).astype(np.float64) / scale
    x64 = b.cast(x, t.dtype, dt.float64)
    y = b.op("MatMul", [b.op("MatMul", [b.const(ah), x64]), b.const(np.ascontiguousarray(aw.T))])
    return [b.cast(y, dt.float64, e.out.dtype)]


@rule("avg_pool2d")
def _avg_pool2d(e: Emit) -> list[str]:
    at, t = e.attrs, e.ts[0]
    (kh, kw), (sh, sw), (ph, pw) = at["kernel_size"], at["stride"], at["padding"]
    H, W = t.shape[-2:]
    OH, OW = e.out.shape[-2:]
    pad = bool(at["count_include_pad"])
    ah = _avg_matrix(H, OH, kh, sh, ph, pad, False)
    aw = _avg_matrix(W, OW, kw, sw, pw, pad, False)
    d = at["divisor_override"]
    return _separable(e, ah, aw, None if d is None else float(d))


@rule("adaptive_avg_pool2d")
def _adaptive_avg_pool2d(e: Emit) -> list[str]:
    H, W = e.ts[0].shape[-2:]
    OH, OW = e.out.shape[-2:]
    return _separable(e, _avg_matrix(H, OH, 0, 0, 0, False, True),
                      _avg_matrix(W, OW, 0, 0, 0, False, True), None)
