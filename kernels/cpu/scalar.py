"""Scalar functions shared by eager kernels and generated code: the `expr` templates of the
elementwise ops call these names inside fused loops (one scalar function behind every
backend). NumPy's semantics: NaN propagates through maximum/minimum/clamp/sign."""

from __future__ import annotations

import math

import numba
import numpy as np

# Plain njit functions: LLVM inlines them into the fused loops; Numba-level inline="always"
# costs seconds of typing per kernel and bought nothing measurable.
_inline = numba.njit(error_model="numpy", cache=True)


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf_ufunc(x):  # type: ignore[no-untyped-def]
    return math.erf(x)


@_inline
def exp(x):  # type: ignore[no-untyped-def]
    return np.exp(x)


@_inline
def log(x):  # type: ignore[no-untyped-def]
    return np.log(x)


@_inline
def log1p(x):  # type: ignore[no-untyped-def]
    return np.log1p(x)


@_inline
def expm1(x):  # type: ignore[no-untyped-def]
    return np.expm1(x)


@_inline
def sqrt(x):  # type: ignore[no-untyped-def]
    return np.sqrt(x)


@_inline
def rsqrt(x):  # type: ignore[no-untyped-def]
    return 1.0 / np.sqrt(x)


@_inline
def sin(x):  # type: ignore[no-untyped-def]
    return np.sin(x)


@_inline
def cos(x):  # type: ignore[no-untyped-def]
    return np.cos(x)


@_inline
def tanh(x):  # type: ignore[no-untyped-def]
    return np.tanh(x)


@_inline
def erf(x):  # type: ignore[no-untyped-def]
    return math.erf(x)


@_inline
def sigmoid(x):  # type: ignore[no-untyped-def]
    # split on the sign so exp never overflows (as the eager kernel)
    e = np.exp(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


@_inline
def relu(x):  # type: ignore[no-untyped-def]
    return x if (x > 0 or x != x) else x - x


@_inline
def sign(x):  # type: ignore[no-untyped-def]
    if x > 0:
        return 1
    if x < 0:
        return -1
    return x  # 0 stays 0 (with its sign), NaN stays NaN


@_inline
def floor(x):  # type: ignore[no-untyped-def]
    return np.floor(x)


@_inline
def ceil(x):  # type: ignore[no-untyped-def]
    return np.ceil(x)


@_inline
def rint(x):  # type: ignore[no-untyped-def]
    return np.rint(x)  # half to even, as torch.round


@_inline
def maximum(a, b):  # type: ignore[no-untyped-def]
    return a if (a > b or a != a) else b


@_inline
def minimum(a, b):  # type: ignore[no-untyped-def]
    return a if (a < b or a != a) else b


@_inline
def clamp(x, lo, hi):  # type: ignore[no-untyped-def]
    # lo/hi may be None: Numba prunes the branch at compile time
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x
