"""Row kernels for eager mode's fused composites (tracejit/fused.py): layer norm, softmax and
tanh-GELU, forward and backward, over a C-contiguous (rows, n) array, each one compiled loop
nest instead of the dozen NumPy passes the composite makes in tensor ops.

Sums and the normalisation statistics accumulate in float64 (float32 data is converted on
load, each result rounded once on store), so these are at least as accurate as the composites
(float32 sums of float32 terms); exp is `vmath.exp` (within 1 ulp for float32, libm for
float64). Not called by generated code."""

from __future__ import annotations

import numba
import numpy as np
from tracejit.kernels.cpu.vmath import exp

_jit = numba.njit(cache=True, error_model="numpy")


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _sum64(a):  # type: ignore[no-untyped-def]
    """Sum in float64; reassociation lets LLVM vectorise it (a sum of positive terms)."""
    s = 0.0
    for j in range(a.size):
        s += np.float64(a[j])
    return s


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _sqdev64(a, mu):  # type: ignore[no-untyped-def]
    s = 0.0
    for j in range(a.size):
        d = a[j] - mu
        s += d * d
    return s


@_jit
def layernorm_fwd(x, w, b, eps):  # type: ignore[no-untyped-def]
    """(out, mean, rstd) of layer norm over each row; w, b of size 0 when absent."""
    rows, n = x.shape
    out = np.empty_like(x)
    mean = np.empty(rows, np.float64)
    rstd = np.empty(rows, np.float64)
    for i in range(rows):
        xi = x[i]
        mu = _sum64(xi) / n
        r = 1.0 / np.sqrt(_sqdev64(xi, mu) / n + eps)
        mean[i] = mu
        rstd[i] = r
        o = out[i]
        if w.size and b.size:
            for j in range(n):
                o[j] = (xi[j] - mu) * r * w[j] + b[j]
        elif w.size:
            for j in range(n):
                o[j] = (xi[j] - mu) * r * w[j]
        elif b.size:
            for j in range(n):
                o[j] = (xi[j] - mu) * r + b[j]
        else:
            for j in range(n):
                o[j] = (xi[j] - mu) * r
    return out, mean, rstd


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _ln_row_sums(g, x, w, mu, r):  # type: ignore[no-untyped-def]
    """sum(g * w) and sum(g * w * xhat) over one row (w of size 0: 1)."""
    a = 0.0
    c = 0.0
    for j in range(x.size):
        gw = np.float64(g[j]) * w[j] if w.size else np.float64(g[j])
        a += gw
        c += gw * ((x[j] - mu) * r)
    return a, c


@_jit
def layernorm_bwd(g, x, w, mean, rstd):  # type: ignore[no-untyped-def]
    """(dx, dw, db) for the upstream gradient g (rows, n); dw, db are sums over the rows.
    xhat = (x - mean) * rstd; dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w."""
    rows, n = x.shape
    dx = np.empty_like(x)
    dw = np.zeros(n, np.float64)
    db = np.zeros(n, np.float64)
    for i in range(rows):
        mu = mean[i]
        r = rstd[i]
        gi = g[i]
        xi = x[i]
        a, c = _ln_row_sums(gi, xi, w, mu, r)
        a /= n
        c /= n
        d = dx[i]
        for j in range(n):
            xh = (xi[j] - mu) * r
            gj = np.float64(gi[j])
            dw[j] += gj * xh
            db[j] += gj
            gw = gj * w[j] if w.size else gj
            d[j] = r * (gw - a - xh * c)
    return dx, dw.astype(x.dtype), db.astype(x.dtype)


@_jit
def _rowmax(a):  # type: ignore[no-untyped-def]
    """max(a), NaN if a holds one; four running maxima so the compares do not wait on each
    other (an FP max reduction does not vectorise without fast-math)."""
    n = a.size
    m0 = m1 = m2 = m3 = a[0]
    nan = False
    j = 0
    while j + 4 <= n:
        v0, v1, v2, v3 = a[j], a[j + 1], a[j + 2], a[j + 3]
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
        j += 4
    while j < n:
        v = a[j]
        m0 = v if v > m0 else m0
        nan |= v != v
        j += 1
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m0 = m2 if m2 > m0 else m0
    return a.dtype.type(np.nan) if nan else m0


@_jit
def softmax_fwd(x):  # type: ignore[no-untyped-def]
    """exp(x - max) / sum(exp(x - max)) over each row; NaN in a row makes the row NaN."""
    rows, n = x.shape
    out = np.empty_like(x)
    for i in range(rows):
        m = _rowmax(x[i])
        o = out[i]
        xi = x[i]
        for j in range(n):
            o[j] = exp(xi[j] - m)
        r = 1.0 / _sum64(o)
        for j in range(n):
            o[j] = o[j] * r
    return out


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _dot64(a, b):  # type: ignore[no-untyped-def]
    s = 0.0
    for j in range(a.size):
        s += np.float64(a[j]) * b[j]
    return s


@_jit
def softmax_bwd(g, y):  # type: ignore[no-untyped-def]
    """dx = y * (g - sum(g * y)) over each row, y the softmax."""
    rows, n = y.shape
    dx = np.empty_like(y)
    for i in range(rows):
        s = _dot64(g[i], y[i])
        for j in range(n):
            dx[i, j] = y[i, j] * (g[i, j] - s)
    return dx


_C = np.sqrt(2 / np.pi)  # GELU's tanh form: x / (1 + exp(-2 c (x + 0.044715 x^3)))


@_jit
def gelu_tanh_fwd(x):  # type: ignore[no-untyped-def]
    """0.5 x (1 + tanh(c (x + 0.044715 x^3))) written as x / (1 + exp(-2u)), as the composite."""
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    k1 = flat.dtype.type(-2 * _C)
    k3 = flat.dtype.type(-2 * _C * 0.044715)
    one = flat.dtype.type(1)
    for i in range(flat.size):
        v = flat[i]
        out[i] = v / (exp(v * (v * v * k3 + k1)) + one)
    return out.reshape(x.shape)


@_jit
def gelu_tanh_bwd(g, x):  # type: ignore[no-untyped-def]
    """d/dx of x * s(z), s the logistic function, z = 2c (x + 0.044715 x^3):
    s + x * s * (1 - s) * 2c (1 + 3 * 0.044715 x^2)."""
    fx = x.reshape(-1)
    fg = g.reshape(-1)
    out = np.empty_like(fx)
    k1 = fx.dtype.type(-2 * _C)
    k3 = fx.dtype.type(-2 * _C * 0.044715)
    d1 = fx.dtype.type(2 * _C)
    d3 = fx.dtype.type(2 * _C * 3 * 0.044715)
    one = fx.dtype.type(1)
    for i in range(fx.size):
        v = fx[i]
        s = one / (exp(v * (v * v * k3 + k1)) + one)
        q = s * (one - s)  # 0 where s saturates: keeps x * q * (...) from 0 * inf
        dz = v * (v * v * d3 + d1)
        out[i] = fg[i] * (s + (q * dz if q != 0 else q))
    return out.reshape(x.shape)
