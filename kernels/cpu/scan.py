"""Scan kernels for generated CPU code (tracejit/ops/scan.py): each works on a C-contiguous
(rows, n) array, the scanned dim last, which the code generator makes with transpose and
reshape, so one kernel serves every rank and dim."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def cumsum_rows(x, reverse, zero, out):  # type: ignore[no-untyped-def]
    """Running sums along each row of x into `out` (from the right with `reverse`), one
    addition an element in the type of `zero` (the accumulator: wider than x for float32),
    each rounded to out's dtype, as np.cumsum(x, dtype=...) then a cast."""
    rows, n = x.shape
    for i in range(rows):
        acc = zero
        for k in range(n):
            j = n - 1 - k if reverse else k
            acc += x[i, j]
            out[i, j] = acc
    return out


@numba.njit(cache=True)
def argsort_rows(x, descending):  # type: ignore[no-untyped-def]
    """The stable sort order of each row (NaN above +inf, as NumPy). Descending: the ascending
    order of the reversed row, reversed, so ties keep increasing index order."""
    rows, n = x.shape
    out = np.empty((rows, n), np.int64)
    for i in range(rows):
        if descending:
            r = np.argsort(x[i, ::-1].copy(), kind="mergesort")
            for j in range(n):
                out[i, j] = n - 1 - r[n - 1 - j]
        else:
            out[i] = np.argsort(x[i], kind="mergesort")
    return out
