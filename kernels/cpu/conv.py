"""The loops of a compiled convolution (tracejit/ops/conv.py), around the one BLAS GEMM per group
the driver calls between them: im2col (an input's windows as the columns of a (groups, Cg*kh*kw,
N*oh*ow) matrix), col2im (its adjoint: columns summed back into the windows they came from) and
the moves between a conv's (N, O, oh, ow) layout and the GEMM's (groups, O / groups, N*oh*ow).

Every function writes the array it is given (and returns it), fully: the driver passes buffers
it allocated or planned. Arrays are 4-d (a 1-d conv has height 1); inputs may have any layout.
Padding is (top, left): the bottom and right padding is implied by the output size."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _span(ph, i, dh, sh, h, oh):  # type: ignore[no-untyped-def]
    """The output rows y in [lo, hi) whose input row y*sh + i*dh - ph lies in [0, h)."""
    off = i * dh - ph
    lo = 0 if off >= 0 else (-off + sh - 1) // sh
    hi = 0 if h - off <= 0 else min(oh, (h - off + sh - 1) // sh)
    return lo, max(lo, hi)


@numba.njit(cache=True)
def conv_im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups,
                cols):  # type: ignore[no-untyped-def]
    """cols[g, (c*kh + i)*kw + j, (n*oh + y)*ow + xo] = x[n, g*Cg + c, y*sh + i*dh - ph,
    xo*sw + j*dw - pw], zero outside the input."""
    n_, c_, h, w = x.shape
    cg = c_ // groups
    zero = np.zeros(1, cols.dtype)[0]  # (typed as the columns: float32 stays float32)
    for g in range(groups):
        for c in range(cg):
            ci = g * cg + c
            for i in range(kh):
                ylo, yhi = _span(ph, i, dh, sh, h, oh)
                for j in range(kw):
                    xlo, xhi = _span(pw, j, dw, sw, w, ow)
                    row = cols[g, (c * kh + i) * kw + j]
                    xoff = j * dw - pw
                    for n in range(n_):
                        for y in range(oh):
                            base = (n * oh + y) * ow
                            if y < ylo or y >= yhi:
                                for xo in range(ow):
                                    row[base + xo] = zero
                                continue
                            src = x[n, ci, y * sh + i * dh - ph]
                            for xo in range(xlo):
                                row[base + xo] = zero
                            for xo in range(xlo, xhi):
                                row[base + xo] = src[xo * sw + xoff]
                            for xo in range(xhi, ow):
                                row[base + xo] = zero
    return cols


@numba.njit(cache=True)
def conv_col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups,
                out):  # type: ignore[no-untyped-def]
    """The adjoint of conv_im2col: out (N, C, H, W) = 0, then every column element added to
    the input position it was read from (the columns loop in conv_im2col's order)."""
    n_, c_, h, w = out.shape
    cg = c_ // groups
    out[...] = 0
    for g in range(groups):
        for c in range(cg):
            ci = g * cg + c
            for i in range(kh):
                ylo, yhi = _span(ph, i, dh, sh, h, oh)
                for j in range(kw):
                    xlo, xhi = _span(pw, j, dw, sw, w, ow)
                    row = cols[g, (c * kh + i) * kw + j]
                    xoff = j * dw - pw
                    for n in range(n_):
                        for y in range(ylo, yhi):
                            base = (n * oh + y) * ow
                            dst = out[n, ci, y * sh + i * dh - ph]
                            for xo in range(xlo, xhi):
                                dst[xo * sw + xoff] += row[base + xo]
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
def conv_from_gcl(m, out):  # type: ignore[no-untyped-def]
    """out[n, g*Og + o, y, xo] = m[g, o, (n*oh + y)*ow + xo]: a GEMM's result in the conv
    output's layout."""
    n_, o_, oh, ow = out.shape
    groups = m.shape[0]
    og = o_ // groups
    for g in range(groups):
        for o in range(og):
            row = m[g, o]
            for n in range(n_):
                for y in range(oh):
                    dst = out[n, g * og + o, y]
                    base = (n * oh + y) * ow
                    for xo in range(ow):
                        dst[xo] = row[base + xo]
    return out
