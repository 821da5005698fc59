"""Accumulator updates that LLVM may vectorise: a reduction loop `acc = acc + x[i]` stays
scalar unless the additions may be reordered, and Numba's `fastmath` would license that (and
more) for every operation of the kernel, including the range reductions of kernels/cpu/vmath.py
that must not be reordered. These put the licence on the accumulating instruction only:
- `radd`/`rmul`: an `fadd`/`fmul` flagged `reassoc` (floats; plain + and * otherwise);
- `rmax`/`rmin`: `llvm.maximum`/`llvm.minimum` (floats; NaN propagates, and -0.0 < +0.0, as
  IEEE 754-2019's maximum/minimum), which LLVM vectorises as a reduction; integers use the
  builtin max/min, bools `|`/`&`.
A reordered float sum differs from the sequential one by rounding only (sums accumulate in
float64 in generated code).

`rmaxnum`/`rminnum` are the quicker float max/min of a row reduction: `llvm.maxnum`/`minnum`
flagged `nnan nsz`, which LLVM vectorises with several accumulators in flight (vmaxps, one
instruction a vector) where `llvm.maximum`'s NaN and zero handling makes one long dependency
chain (a (4096, 1024) float32 row max: 0.34 -> 0.18 ms). They say nothing about NaN or the sign
of a zero result, so the generated code keeps two flags beside them (`x != x` and
`is_pos_zero`/`is_neg_zero`, or-reduced) and fixes the result up after the loop: NaN if any
element was NaN, and a zero result's sign as IEEE 754-2019's maximum/minimum give it."""

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


def _float_extreme(name: str, fastmath: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """llvm.<name> (maximum, minimum, maxnum, minnum) on two floats, with these flags."""
    @_intrinsic
    def op(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not isinstance(a, _types.Float) or a != b:
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            t = args[0].type
            suffix = "f32" if t == _ir.FloatType() else "f64"
            fn = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(t, [t, t]),
                                                 f"llvm.{name}.{suffix}")
            return builder.call(fn, args, fastmath=fastmath)

        return a(a, b), codegen

    return op


_fadd = _float_binop("add")
_fmul = _float_binop("mul")
_fmax = _float_extreme("maximum")
_fmin = _float_extreme("minimum")


rmaxnum = _float_extreme("maxnum", ("nnan", "nsz"))
rminnum = _float_extreme("minnum", ("nnan", "nsz"))


def _zero_test(negative: bool):  # type: ignore[no-untyped-def]
    @_intrinsic
    def op(typingctx, a):  # type: ignore[no-untyped-def]
        if not isinstance(a, _types.Float):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            bits = args[0].type == _ir.FloatType() and 32 or 64
            it = _ir.IntType(bits)
            want = (1 << (bits - 1)) if negative else 0
            return builder.icmp_unsigned("==", builder.bitcast(args[0], it), _ir.Constant(it, want))

        return _types.boolean(a), codegen

    return op


is_pos_zero = _zero_test(False)  # x is +0.0 (its bits are all zero)
is_neg_zero = _zero_test(True)  # x is -0.0


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
