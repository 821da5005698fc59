"""Matmul for generated CPU code: BLAS through np.dot on C- or F-contiguous operands
(transposed views are free); other layouts are copied first."""

from __future__ import annotations

import numba
import numpy as np
from numba.extending import overload


def as_blas(x):  # type: ignore[no-untyped-def]
    """Return x when BLAS can read it as is, else a C-contiguous copy."""
    return np.ascontiguousarray(x)


@overload(as_blas, inline="always")
def _as_blas(x):  # type: ignore[no-untyped-def]
    if x.layout in ("C", "F"):
        return lambda x: x
    return lambda x: np.ascontiguousarray(x)


@numba.njit(cache=True)
def matmul2d(a, b):  # type: ignore[no-untyped-def]
    return np.dot(as_blas(a), as_blas(b))


@numba.njit(cache=True)
def matmul_batched(a, b):  # type: ignore[no-untyped-def]
    """(B, M, K) @ (B, K, N): one BLAS call per batch entry, into one output."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    for i in range(a.shape[0]):
        out[i] = np.dot(as_blas(a[i]), as_blas(b[i]))
    return out
