"""Fused scaled dot-product attention (tracejit/ops/attention.py), one call for every batch
entry and head: per entry, the scores Q K^T (one BLAS call into an (L, S) scratch that every
entry reuses), then per row the scale, mask, numerically safe softmax and dropout, then the
weights times V (BLAS, into the output). No (..., L, S) weights are stored between calls: the
backward recomputes each entry's weights (as flash attention does) and makes dv = A^T dO,
dP = dO V^T, dS = P (dP - rowsum(P dP)) scale, dq = dS K and dk = dS^T Q with BLAS.

Arrays are (B, L, E) queries, (B, S, E) keys, (B, S, Ev) values, any layout; `mask` is (B, L,
S) bool (True = attend) with `mkind` 1, of the query's dtype (added to the scores) with `mkind`
2, or ignored with `mkind` 0; `causal` hides keys j > i. A row that can attend nowhere gives
zeros (torch 2.13's safe softmax); a row with a NaN score gives NaN. Dropout (p > 0) keeps an
attention weight where element (b, i, j)'s float32 (or float64, `wide`) Philox uniform from
(key, offset) is below `keep`, and scales the kept by `dscale`: the numbers `rand_like` of the
(B, L, S) weights would draw (tracejit/runtime/philox.py).
"""

from __future__ import annotations

import numba
import numpy as np

from ...runtime.philox import draw
from .accum import radd, rmax
from .vmath import exp as vexp

# Up to this head size (queries' and values' E) and key count the per-entry products are loops
# here rather than BLAS calls: a GPT head's 64 x 16 @ 16 x 64 is ~65k multiply-adds, which a
# vectorised row-update loop does in a few microseconds while one BLAS call through NumPy's
# one-thread OpenBLAS costs ~20 us; the loops also skip the keys a causal row cannot see.
SMALL_E = 64
SMALL_S = 512


@numba.njit(cache=True)
def _small(q, k, v):  # type: ignore[no-untyped-def]
    return q.shape[2] <= SMALL_E and v.shape[2] <= SMALL_E and k.shape[1] <= SMALL_S


@numba.njit(cache=True)
def _finite(x):  # type: ignore[no-untyped-def]
    """Every element of the 2-d x finite (no inf, no NaN)."""
    t = 0.0
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            t += x[i, j] * 0  # inf * 0 and NaN * 0 are NaN: the sum stays 0 only when finite
    return t == 0


@numba.njit(cache=True)
def _qk(qb, kt, s, causal):  # type: ignore[no-untyped-def]
    """s[i, :n] = q_b[i] . k_b[j] for the n keys row i sees (kt: k_b transposed, (E, S)):
    row updates s[i, :n] += q[i, e] * kt[e, :n], each a contiguous, vectorised loop."""
    L, E = qb.shape
    S = kt.shape[1]
    for i in range(L):
        n = min(i + 1, S) if causal else S
        row = s[i]
        for j in range(n):
            row[j] = 0
        for e in range(E):
            x = qb[i, e]
            ke = kt[e]
            for j in range(n):
                row[j] += x * ke[j]


@numba.njit(cache=True)
def _rows_times(a, m, out, causal, zero_first):  # type: ignore[no-untyped-def]
    """out[i] (+)= sum over the n keys row i sees of a[i, j] * m[j] (A @ M, A (L, S))."""
    L, S = a.shape
    W = m.shape[1]
    for i in range(L):
        n = min(i + 1, S) if causal else S
        o = out[i]
        if zero_first:
            for e in range(W):
                o[e] = 0
        for j in range(n):
            w = a[i, j]
            mj = m[j]
            for e in range(W):
                o[e] += w * mj[e]


@numba.njit(cache=True)
def _cols_times(a, m, out, causal):  # type: ignore[no-untyped-def]
    """out = A^T @ M over the weights rows can see (A (L, S), M (L, W), out (S, W))."""
    L, S = a.shape
    W = m.shape[1]
    out[:] = 0
    for i in range(L):
        n = min(i + 1, S) if causal else S
        mi = m[i]
        for j in range(n):
            w = a[i, j]
            o = out[j]
            for e in range(W):
                o[e] += w * mi[e]


@numba.njit(cache=True)
def _weights(s, mask, mkind, causal, scale, b):  # type: ignore[no-untyped-def]
    """Scores of batch entry b (in s, (L, S)) -> their softmax weights, in place: scaled,
    masked (-inf), exp(x - row max) / row sum. A row masked everywhere becomes 0; a NaN
    score makes its row NaN (through the max). Each step is its own branch-free loop, so
    LLVM vectorises it (exp is vmath's; the sum may be reordered)."""
    L, S = s.shape
    ninf = np.full(1, -np.inf, s.dtype)[0]  # (typed as the scores: float32 stays float32)
    zero = np.zeros(1, s.dtype)[0]
    for i in range(L):
        n = min(i + 1, S) if causal else S  # keys j > i are hidden: weight 0
        row = s[i]
        for j in range(n):
            row[j] = row[j] * scale
        if mkind == 1:
            for j in range(n):
                row[j] = row[j] if mask[b, i, j] else ninf
        elif mkind == 2:
            for j in range(n):
                row[j] = row[j] + mask[b, i, j]
        big = ninf
        for j in range(n):
            big = rmax(big, row[j])  # (NaN propagates: then the whole row is NaN)
        if big == ninf:  # attends nowhere (or nothing to attend to)
            row[:] = 0
            continue
        total = zero
        for j in range(n):
            e = vexp(row[j] - big)
            row[j] = e
            total = radd(total, e)
        inv = 1 / total
        for j in range(n):
            row[j] = row[j] * inv
        row[n:] = 0


@numba.njit(cache=True)
def _dropout(d, b, key, offset, keep, dscale, wide):  # type: ignore[no-untyped-def]
    """d[i, j] = the dropout factor of weight (b, i, j): dscale where its uniform is below
    keep, else 0 (the uniform holds 24 or 53 bits, so comparing in float64 is exact)."""
    L, S = d.shape
    for i in range(L):
        base = (b * L + i) * S
        for j in range(S):
            u = draw(np.int64(base + j), key, offset, wide, 0.0)
            d[i, j] = dscale if u < keep else 0 * dscale


@numba.njit(cache=True)
def attention_fwd(q, k, v, mask, mkind, causal, scale, p, key, offset, keep,
                  dscale, wide, out):  # type: ignore[no-untyped-def]
    """out[b] = dropout(softmax(mask(scale Q_b K_b^T))) V_b, into out (B, L, Ev); q, k, v and
    out C-contiguous."""
    B, L, S = q.shape[0], q.shape[1], k.shape[1]
    s = np.empty((L, S), q.dtype)
    d = np.empty((L, S) if p > 0 else (0, 0), q.dtype)
    small = _small(q, k, v)
    kt = np.empty((q.shape[2], S) if small else (0, 0), q.dtype)
    for b in range(B):
        if small:
            kt[:] = k[b].T
            _qk(q[b], kt, s, causal)
        elif S == 0 or q.shape[2] == 0:
            s[:] = 0
        else:
            np.dot(q[b], k[b].T, s)
        _weights(s, mask, mkind, causal, scale, b)
        if p > 0:
            _dropout(d, b, key, offset, keep, dscale, wide)
            s *= d
        if small:
            # a causal row skips the keys it cannot see, unless a value is inf or NaN: their
            # zero weights then give NaN, as torch's kernels and the BLAS path do
            _rows_times(s, v[b], out[b], causal and _finite(v[b]), True)
        elif S == 0:
            out[b] = 0
        else:
            np.dot(s, v[b], out[b])
    return out


@numba.njit(cache=True)
def attention_bwd(q, k, v, mask, mkind, causal, scale, p, key, offset, keep, dscale, wide,
                  dout, dq, dk, dv):  # type: ignore[no-untyped-def]
    """Gradients of sum(out * dout) into dq, dk, dv, every entry's weights recomputed."""
    B, L, S = q.shape[0], q.shape[1], k.shape[1]
    s = np.empty((L, S), q.dtype)
    a = np.empty((L, S), q.dtype)
    dp = np.empty((L, S), q.dtype)
    d = np.empty((L, S) if p > 0 else (0, 0), q.dtype)
    zero = np.zeros(1, q.dtype)[0]
    if S == 0 or L == 0:
        dq[:] = 0
        dk[:] = 0
        dv[:] = 0
        return dq
    small = _small(q, k, v)
    kt = np.empty((q.shape[2], S) if small else (0, 0), q.dtype)
    vt = np.empty((v.shape[2], S) if small else (0, 0), q.dtype)
    for b in range(B):
        skip = causal and small and _finite(q[b]) and _finite(k[b]) and _finite(v[b]) and \
            _finite(dout[b])  # (see attention_fwd: a non-finite operand makes masked NaNs)
        if small:
            kt[:] = k[b].T
            _qk(q[b], kt, s, causal)
        elif q.shape[2] == 0:
            s[:] = 0
        else:
            np.dot(q[b], k[b].T, s)
        _weights(s, mask, mkind, causal, scale, b)
        if p > 0:
            _dropout(d, b, key, offset, keep, dscale, wide)
            a[:] = s * d
        else:
            a[:] = s
        if small:
            _cols_times(a, dout[b], dv[b], skip)
            vt[:] = v[b].T
            _qk(dout[b], vt, dp, skip)
        else:
            np.dot(a.T, dout[b], dv[b])
            if v.shape[2] == 0:
                dp[:] = 0
            else:
                np.dot(dout[b], v[b].T, dp)
        if p > 0:
            dp *= d
        for i in range(L):
            n = min(i + 1, S) if skip else S
            dot = zero
            for j in range(n):
                dot = radd(dot, s[i, j] * dp[i, j])
            for j in range(n):
                dp[i, j] = s[i, j] * (dp[i, j] - dot) * scale
        if small:
            _rows_times(dp, k[b], dq[b], skip, True)
            _cols_times(dp, q[b], dk[b], skip)
            continue
        if q.shape[2] == 0:
            continue
        np.dot(dp, k[b], dq[b])
        np.dot(dp.T, q[b], dk[b])
    return dq


@numba.njit(cache=True)
def attention_bwd_flat(q, k, v, mask, mkind, causal, scale, p, key, offset, keep, dscale,
                       wide, dout):  # type: ignore[no-untyped-def]
    """attention_bwd into one flat array: dq, then dk, then dv (the op's one result)."""
    nq, nk = q.size, k.size
    flat = np.empty(nq + nk + v.size, q.dtype)
    dq = flat[:nq].reshape(q.shape)
    dk = flat[nq:nq + nk].reshape(k.shape)
    dv = flat[nq + nk:].reshape(v.shape)
    attention_bwd(q, k, v, mask, mkind, causal, scale, p, key, offset, keep, dscale, wide,
                  dout, dq, dk, dv)
    return flat
