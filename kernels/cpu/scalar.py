"""Scalar functions shared by eager kernels and generated code: the `expr` templates of the
elementwise ops call these names inside fused loops (one scalar function behind every
backend). PyTorch's semantics on special values, which eager mode (NumPy) shares: NaN
propagates through maximum/minimum/clamp/relu; relu(-inf) is 0 and relu(-0.0) is -0.0;
sign(-0.0) and sign(nan) are +0.0; on a tie (-0.0 vs +0.0) maximum/minimum return the second
operand, as NumPy and torch's vectorised loops do, and clamp keeps x; rounding an integer is
the identity;
integer powers wrap around like NumPy's and torch's (repeated squaring).

A function that must depend on the operand's type (a typed zero, rounding of integers) is a
plain Python function with a Numba `overload`: generated code keeps float32 in float32."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import types as _types
from numba.extending import overload as _overload
from numba.np.numpy_support import as_dtype as _as_dtype

# Plain njit functions: LLVM inlines them into the fused loops; Numba-level inline="always"
# costs seconds of typing per kernel and bought nothing measurable.
_inline = numba.njit(error_model="numpy", cache=True)


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
    return one_like(x) / np.sqrt(x)  # in x's type, as eager's reciprocal(sqrt(x))


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
    one = one_like(e)
    return one / (one + e) if x >= 0 else e / (one + e)


def zero_like(x):  # type: ignore[no-untyped-def]
    """+0 of x's type (`x - x` is NaN for an infinite x)."""
    return type(x)(0)


@_overload(zero_like, jit_options={"error_model": "numpy"})
def _zero_like(x):  # type: ignore[no-untyped-def]
    t = _as_dtype(x).type

    def impl(x):  # type: ignore[no-untyped-def]
        return t(0)

    return impl


def one_like(x):  # type: ignore[no-untyped-def]
    """1 of x's type (a bare 1.0 would make a float32 expression float64)."""
    return type(x)(1)


@_overload(one_like, jit_options={"error_model": "numpy"})
def _one_like(x):  # type: ignore[no-untyped-def]
    t = _as_dtype(x).type

    def impl(x):  # type: ignore[no-untyped-def]
        return t(1)

    return impl


@_inline
def relu(x):  # type: ignore[no-untyped-def]
    # -0.0 and NaN are kept (torch's clamp_min(x, 0)); -inf gives +0
    return zero_like(x) if x < 0 else x


@_inline
def sign(x):  # type: ignore[no-untyped-def]
    if x > 0:
        return 1
    if x < 0:
        return -1
    return zero_like(x)  # +0 for either zero and for NaN, as torch


def _rounding(name, f):  # type: ignore[no-untyped-def]
    """floor/ceil/rint: NumPy's on floats, the identity on integers and bools (converting
    int64 through float64 would lose the low bits of large values)."""

    def py(x):  # type: ignore[no-untyped-def]
        return f(x)

    py.__name__ = py.__qualname__ = name

    @_overload(py, jit_options={"error_model": "numpy"})
    def _ov(x):  # type: ignore[no-untyped-def]
        if isinstance(x, (_types.Integer, _types.Boolean)):
            return lambda x: x
        return lambda x: f(x)

    return py


floor = _rounding("floor", np.floor)
ceil = _rounding("ceil", np.ceil)
rint = _rounding("rint", np.rint)  # half to even, as torch.round


def pow(a, b):  # type: ignore[no-untyped-def]  # noqa: A001 (the `pow` of expr templates)
    return a**b


@_overload(pow, jit_options={"error_model": "numpy"})
def _pow(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, _types.Integer) and isinstance(b, _types.Integer):
        t = _as_dtype(a).type

        def ipow(a, b):  # type: ignore[no-untyped-def]
            # repeated squaring, wrapping on overflow (NumPy's and torch's integer power);
            # a negative exponent (rejected eagerly) gives the truncated 1 / a**-b
            if b < 0:
                return t(1) if a == 1 else t(0) if a != -1 else (t(1) if b % 2 == 0 else a)
            r = t(1)
            base = a
            e = b
            while e:
                if e & 1:
                    r = r * base
                base = base * base
                e >>= 1
            return r

        return ipow
    return lambda a, b: a**b


@_inline
def maximum(a, b):  # type: ignore[no-untyped-def]
    # NaN in either operand gives NaN; on a tie (-0.0 vs +0.0) the second operand
    return a if (a > b or a != a) else b


@_inline
def minimum(a, b):  # type: ignore[no-untyped-def]
    return a if (a < b or a != a) else b


@_inline
def clamp(x, lo, hi):  # type: ignore[no-untyped-def]
    # lo/hi may be None: Numba prunes the branch at compile time
    # (x second: it is kept on a tie, as torch's clamp; a NaN bound gives NaN)
    if lo is not None:
        x = maximum(lo, x)
    if hi is not None:
        x = minimum(hi, x)
    return x
