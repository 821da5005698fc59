"""Accumulator updates that LLVM may vectorise: a reduction loop `acc = acc + x[i]` stays
scalar unless the additions may be reordered, and Numba's `fastmath` would license that (and
more) for every operation of the kernel, including the range reductions of kernels/cpu/vmath.py
that must not be reordered. These put the licence on the accumulating instruction only:
- `radd`/`rmul`: an `fadd`/`fmul` flagged `reassoc` (floats; plain + and * otherwise);
- `rmax`/`rmin`: `llvm.maximum`/`llvm.minimum` (floats; NaN propagates, and -0.0 < +0.0, as
  IEEE 754-2019's maximum/minimum), which LLVM vectorises as a reduction; integers use the
  builtin max/min, bools `|`/`&`.
A reordered float sum differs from the sequential one by rounding only (sums accumulate in
float64 in generated code)."""

from __future__ import annotations

from llvmlite import ir as _ir
from numba.core import cgutils as _cgutils
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic
from numba.extending import overload as _overload


def _float_binop(flag_op: str):  # type: ignore[no-untyped-def]
    @_intrinsic
    def op(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not isinstance(a, _types.Float) or a != b:
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            f = builder.fadd if flag_op == "add" else builder.fmul
            return f(args[0], args[1], flags=("reassoc",))

        return a(a, b), codegen

    return op


def _float_extreme(name: str):  # type: ignore[no-untyped-def]
    @_intrinsic
    def op(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not isinstance(a, _types.Float) or a != b:
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            t = args[0].type
            suffix = "f32" if t == _ir.FloatType() else "f64"
            fn = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(t, [t, t]),
                                                 f"llvm.{name}.{suffix}")
            return builder.call(fn, args)

        return a(a, b), codegen

    return op


_fadd = _float_binop("add")
_fmul = _float_binop("mul")
_fmax = _float_extreme("maximum")
_fmin = _float_extreme("minimum")


def radd(a, b):  # type: ignore[no-untyped-def]
    return a + b


def rmul(a, b):  # type: ignore[no-untyped-def]
    return a * b


def rmax(a, b):  # type: ignore[no-untyped-def]
    return a if (a > b or a != a) else b


def rmin(a, b):  # type: ignore[no-untyped-def]
    return a if (a < b or a != a) else b


_JO = {"error_model": "numpy"}


@_overload(radd, jit_options=_JO, inline="always")
def _ov_radd(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, _types.Float) and a == b:
        return lambda a, b: _fadd(a, b)
    return lambda a, b: a + b


@_overload(rmul, jit_options=_JO, inline="always")
def _ov_rmul(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, _types.Float) and a == b:
        return lambda a, b: _fmul(a, b)
    return lambda a, b: a * b


@_overload(rmax, jit_options=_JO, inline="always")
def _ov_rmax(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, _types.Float) and a == b:
        return lambda a, b: _fmax(a, b)
    if isinstance(a, _types.Boolean):
        return lambda a, b: a | b
    return lambda a, b: max(a, b)


@_overload(rmin, jit_options=_JO, inline="always")
def _ov_rmin(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, _types.Float) and a == b:
        return lambda a, b: _fmin(a, b)
    if isinstance(a, _types.Boolean):
        return lambda a, b: a & b
    return lambda a, b: min(a, b)
