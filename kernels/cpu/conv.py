"""The loops of a compiled convolution (tracejit/ops/conv.py), around the one BLAS GEMM per group
the driver calls between them: im2col (an input's windows as the columns of a (groups, Cg*kh*kw,
N*oh*ow) matrix), col2im (its adjoint: columns summed back into the windows they came from) and
the moves between a conv's (N, O, oh, ow) layout and the GEMM's (groups, O / groups, N*oh*ow).

`conv_bias_act` moves a GEMM's result into the conv output's layout with the epilogue
passes/conv.py fuses into it: the bias of each output channel added and ReLU applied as the
move writes each element (the bias add and activation of a conv layer cost no pass of their
own); with neither, it is the plain move.

Every function writes the array it is given (and returns it), fully: the driver passes buffers
it allocated or planned. Arrays are 4-d (a 1-d conv has height 1); inputs may have any layout.
Padding is (top, left): the bottom and right padding is implied by the output size."""

from __future__ import annotations

import numba
import numpy as np

from .scalar import relu, zero_like

# The loops test each position's bounds (an if per element) rather than computing the valid
# range of every row: with rows as short as a digits image's (8), the branchy form ran 3-4x
# faster (64 x 16 x 8 x 8, 3x3 pad 1: im2col 0.43 ms against 1.3-1.9 ms, col2im 0.16-0.24
# against 0.64 ms, float32, both forms timed in one process on the AMD EPYC under load).


@numba.njit(cache=True, inline="always")
def _windows(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups,
             gather):  # type: ignore[no-untyped-def]
    """The one loop nest of im2col (gather: each window position's value into its column
    element, zero outside the input) and of its adjoint col2im (each column element added
    back to its position). Inlined into both with `gather` a constant, so each compiles to
    its own branch-free-of-the-flag loops."""
    n_, c_, h, w = x.shape
    cg = c_ // groups
    zero = np.zeros(1, cols.dtype)[0]  # (typed as the columns: float32 stays float32)
    for g in range(groups):
        for c in range(cg):
            ci = g * cg + c
            for i in range(kh):
                for j in range(kw):
                    row = cols[g, (c * kh + i) * kw + j]
                    for n in range(n_):
                        img = x[n, ci]
                        for y in range(oh):
                            iy = y * sh + i * dh - ph
                            base = (n * oh + y) * ow
                            if iy < 0 or iy >= h:
                                if gather:
                                    for xo in range(ow):
                                        row[base + xo] = zero
                                continue
                            for xo in range(ow):
                                ix = xo * sw + j * dw - pw
                                inside = ix >= 0 and ix < w
                                if gather:
                                    row[base + xo] = img[iy, ix] if inside else zero
                                elif inside:
                                    img[iy, ix] += row[base + xo]


@numba.njit(cache=True)
def conv_im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups,
                cols):  # type: ignore[no-untyped-def]
    """cols[g, (c*kh + i)*kw + j, (n*oh + y)*ow + xo] = x[n, g*Cg + c, y*sh + i*dh - ph,
    xo*sw + j*dw - pw], zero outside the input."""
    _windows(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, True)
    return cols


@numba.njit(cache=True)
def conv_col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups,
                out):  # type: ignore[no-untyped-def]
    """The adjoint of conv_im2col: out (N, C, H, W) = 0, then every column element added to
    the input position it was read from (in conv_im2col's order)."""
    out[...] = 0
    _windows(out, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, False)
    return out


@numba.njit(cache=True)
def conv_to_gcl(t, groups, out):  # type: ignore[no-untyped-def]
    """out[g, o, (n*oh + y)*ow + xo] = t[n, g*Og + o, y, xo]."""
    n_, o_, oh, ow = t.shape
    og = o_ // groups
    for g in range(groups):
        for o in range(og):
            row = out[g, o]
            for n in range(n_):
                for y in range(oh):
                    src = t[n, g * og + o, y]
                    base = (n * oh + y) * ow
                    for xo in range(ow):
                        row[base + xo] = src[xo]
    return out


@numba.njit(cache=True)
def conv_bias_act(m, bias, act, out):  # type: ignore[no-untyped-def]
    """out[n, g*Og + o, y, xo] = act(m[g, o, (n*oh + y)*ow + xo] + bias[g*Og + o]): a GEMM's
    result in the conv output's layout, with the bias (skipped when it has no elements) and,
    for act == 1, ReLU (scalar.relu: -0.0 and NaN kept), rounded as the separate add and relu
    round (one add in the output's dtype)."""
    n_, o_, oh, ow = out.shape
    groups = m.shape[0]
    og = o_ // groups
    has_bias = bias.shape[0] > 0
    for g in range(groups):
        for o in range(og):
            row = m[g, o]
            c = g * og + o
            b = zero_like(row[0])  # (typed as the output; m has elements: empties run eagerly)
            if has_bias:
                b = bias[c]
            for n in range(n_):
                for y in range(oh):
                    dst = out[n, c, y]
                    base = (n * oh + y) * ow
                    for xo in range(ow):
                        v = row[base + xo] + b if has_bias else row[base + xo]
                        dst[xo] = relu(v) if act == 1 else v
    return out
