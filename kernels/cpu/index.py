"""Index kernels for generated CPU code, rank-generic through np.ndindex. The code generator
moves the indexed dimension last (gather/scatter_add) or first (index/index_put) with
np.transpose, so one kernel serves every rank and dim.

Every kernel checks all of its indices in one pass before its loop reads or writes anything,
and raises IndexBoundsError (an IndexError) naming the op, the value, the dimension `dim` of
the user's tensor, its size, and `loc`, the user's file:line the generated code passes in (a
kernel is shared by every call site, so the location is an argument, never in its source).
Negative indices count from the end in `take_first`/`put_first` (x[idx], index_put), as in
torch, and are out of range for `gather_last`/`scatter_add_last`, as in torch."""

from __future__ import annotations

import numba
import numpy as np

from tracejit.ops.index import IndexBoundsError


@numba.njit(cache=True)
def check_range(idx, lo, hi, op, style, dim, loc):  # type: ignore[no-untyped-def]
    """Raise at the first element of idx (any layout) outside [lo, hi)."""
    for v in idx.flat:
        if v < lo or v >= hi:
            raise IndexBoundsError(op, np.int64(v), hi, dim, style, loc)


@numba.njit(cache=True)
def check_target(idx, n, ignore, op, loc):  # type: ignore[no-untyped-def]
    """Raise at the first class index outside [0, n) that is not `ignore` (ignore_index)."""
    for v in idx.flat:
        if (v < 0 or v >= n) and v != ignore:
            raise IndexBoundsError(op, np.int64(v), n, np.int64(1), "target", loc, ignore)


@numba.njit(cache=True)
def gather_last(x, idx, dim, loc, out=None):  # type: ignore[no-untyped-def]
    """x[..., idx] along the last dim, into `out` when given (a driver's planned buffer)."""
    n = x.shape[-1]
    check_range(idx, 0, n, "gather", "index", dim, loc)
    if out is None:
        out = np.empty(idx.shape, x.dtype)
    for pos in np.ndindex(idx.shape[:-1]):
        for j in range(idx.shape[-1]):
            out[pos + (j,)] = x[pos + (idx[pos + (j,)],)]
    return out


@numba.njit(cache=True)
def scatter_add_last(x, idx, src, dim, loc):  # type: ignore[no-untyped-def]
    n = x.shape[-1]
    check_range(idx, 0, n, "scatter_add", "index", dim, loc)
    out = x.copy()
    for pos in np.ndindex(idx.shape[:-1]):
        for j in range(idx.shape[-1]):
            out[pos + (idx[pos + (j,)],)] += src[pos + (j,)]
    return out


@numba.njit(cache=True)
def take_first(x, idx, dim, loc):  # type: ignore[no-untyped-def]
    """x[idx] along the first dim, for a 1-d idx."""
    n = x.shape[0]
    check_range(idx, -n, n, "index", "index", dim, loc)
    out = np.empty((idx.shape[0],) + x.shape[1:], x.dtype)
    for i in range(idx.shape[0]):
        k = idx[i]
        if k < 0:
            k += n
        out[i] = x[k]
    return out


@numba.njit(cache=True)
def put_first(x, values, idx, accumulate, dim, loc):  # type: ignore[no-untyped-def]
    """x.index_put((idx,), values) along the first dim; values broadcast to idx's rows."""
    n = x.shape[0]
    check_range(idx, -n, n, "index_put", "index", dim, loc)
    out = x.copy()
    for i in range(idx.shape[0]):
        k = idx[i]
        if k < 0:
            k += n
        if accumulate:
            out[k] += values[i]
        else:
            out[k] = values[i]
    return out
