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


@_jit
def layernorm_fwd(x, w, b, eps):  # type: ignore[no-untyped-def]
    """(out, mean, rstd) of layer norm over each row; w, b of size 0 when absent."""
    rows, n = x.shape
    out = np.empty_like(x)
    mean = np.empty(rows, np.float64)
    rstd = np.empty(rows, np.float64)
    for i in range(rows):
        s = 0.0
        for j in range(n):
            s += x[i, j]
        mu = s / n
        v = 0.0
        for j in range(n):
            d = x[i, j] - mu
            v += d * d
        r = 1.0 / np.sqrt(v / n + eps)
        mean[i] = mu
        rstd[i] = r
        for j in range(n):
            y = (x[i, j] - mu) * r
            if w.size:
                y = y * w[j]
            if b.size:
                y = y + b[j]
            out[i, j] = y
    return out, mean, rstd


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
        a = 0.0
        c = 0.0
        for j in range(n):
            xh = (x[i, j] - mu) * r
            gj = np.float64(g[i, j])
            gw = gj * w[j] if w.size else gj
            a += gw
            c += gw * xh
            dw[j] += gj * xh
            db[j] += gj
        a /= n
        c /= n
        for j in range(n):
            xh = (x[i, j] - mu) * r
            gw = np.float64(g[i, j]) * w[j] if w.size else np.float64(g[i, j])
            dx[i, j] = r * (gw - a - xh * c)
    return dx, dw.astype(x.dtype), db.astype(x.dtype)


@_jit
def softmax_fwd(x):  # type: ignore[no-untyped-def]
    """exp(x - max) / sum(exp(x - max)) over each row; NaN in a row makes the row NaN."""
    rows, n = x.shape
    out = np.empty_like(x)
    for i in range(rows):
        m = x[i, 0]
        for j in range(1, n):
            v = x[i, j]
            if v > m or v != v:
                m = v
        for j in range(n):
            out[i, j] = exp(x[i, j] - m)
        s = 0.0
        for j in range(n):
            s += out[i, j]
        r = 1.0 / s
        for j in range(n):
            out[i, j] = out[i, j] * r
    return out


@_jit
def softmax_bwd(g, y):  # type: ignore[no-untyped-def]
    """dx = y * (g - sum(g * y)) over each row, y the softmax."""
    rows, n = y.shape
    dx = np.empty_like(y)
    for i in range(rows):
        s = 0.0
        for j in range(n):
            s += np.float64(g[i, j]) * y[i, j]
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
