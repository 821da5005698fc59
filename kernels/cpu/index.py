"""Index kernels for generated CPU code, rank-generic through np.ndindex. The code generator
moves the indexed dimension last (gather/scatter_add) or first (index/index_put) with
np.transpose, so one kernel serves every rank and dim."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def gather_last(x, idx):  # type: ignore[no-untyped-def]
    out = np.empty(idx.shape, x.dtype)
    n = x.shape[-1]
    for pos in np.ndindex(idx.shape[:-1]):
        for j in range(idx.shape[-1]):
            k = idx[pos + (j,)]
            if k < 0:
                k += n
            out[pos + (j,)] = x[pos + (k,)]
    return out


@numba.njit(cache=True)
def scatter_add_last(x, idx, src):  # type: ignore[no-untyped-def]
    out = x.copy()
    n = x.shape[-1]
    for pos in np.ndindex(idx.shape[:-1]):
        for j in range(idx.shape[-1]):
            k = idx[pos + (j,)]
            if k < 0:
                k += n
            out[pos + (k,)] += src[pos + (j,)]
    return out


@numba.njit(cache=True)
def take_first(x, idx):  # type: ignore[no-untyped-def]
    """x[idx] along the first dim, for a 1-d idx."""
    out = np.empty((idx.shape[0],) + x.shape[1:], x.dtype)
    n = x.shape[0]
    for i in range(idx.shape[0]):
        k = idx[i]
        if k < 0:
            k += n
        out[i] = x[k]
    return out


@numba.njit(cache=True)
def put_first(x, values, idx, accumulate):  # type: ignore[no-untyped-def]
    """x.index_put((idx,), values) along the first dim; values broadcast to idx's rows."""
    out = x.copy()
    n = x.shape[0]
    for i in range(idx.shape[0]):
        k = idx[i]
        if k < 0:
            k += n
        if accumulate:
            out[k] += values[i]
        else:
            out[k] = values[i]
    return out
