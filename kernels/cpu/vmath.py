"""Vectorisable scalar math: exp, log, tanh, sigmoid, erf, rsqrt and ipow written so that LLVM
can vectorise a loop calling them. This Numba has no SVML, so `np.exp`/`math.tanh` inside a
loop are scalar libm calls and the loop stays scalar; the float32 versions here use only
arithmetic, comparisons, selects and bit manipulation (two tiny LLVM intrinsics below build
2^k and split a float into mantissa and exponent), so a loop over a float32 array calling
them compiles to <8 x float> (ymm) code.

Generated code calls these for the kernel IR's exp, log, tanh, sigmoid, erf, rsqrt and ipow
(codegen/cpu.py's SCALAR). Polynomials and range reductions use `_fma` (llvm.fma: one rounding,
one instruction) where the CPU has FMA, a multiply and an add otherwise; on AVX-512, exp and
tanh scale by 2**k with llvm.ldexp (vscalefps). The ulp bounds below were swept over all 2^32
inputs on 2026-12-01 on an Intel Xeon with FMA and AVX-512 (exp 1, log 1, tanh 1, sigmoid 2,
erf 2); without them exp, log, sigmoid and erf compute exactly what the earlier sweep (without
FMA) covered, while tanh's fallback (a multiply and an add per step) has been sampled
(`tests/test_vmath.py` without TRACEJIT_VMATH_FULL), not swept.

Each public function is a plain Python function with a Numba `overload` on the argument type
(as `scalar.zero_like`), so float32 stays float32:
- float32: range reduction + polynomial, computed in float32. Max error against float64
  NumPy rounded to float32, over every float32 bit pattern (tests/test_vmath.py, see
  ULP_BOUND): exp 1, log 1, tanh 2, sigmoid 2, erf 2, rsqrt 1 ulp.
- float64: the libm function (not vectorised) except rsqrt, `1 / sqrt(x)`, which vectorises;
  integers and bools are computed in float64, as NumPy does.
Special values are NumPy's, bitwise: NaN in gives NaN out; exp(-inf)=0, exp(x>88.72)=inf,
log(+-0)=-inf, log(x<0)=nan, log(inf)=inf, tanh(+-inf)=+-1, tanh(-0.)=-0., sigmoid(-inf)=0,
sigmoid(inf)=1, erf(+-inf)=+-1, erf(-0.)=-0., rsqrt(0)=inf, rsqrt(-0.)=-inf, rsqrt(inf)=0,
rsqrt(x<0)=nan; denormal inputs and outputs are handled (no flush to zero).

`ipow(x, n)` for a compile-time integer n expands into multiplications (repeated squaring,
1 / x**-n for a negative n) instead of a libm `pow` call.

The polynomial coefficients were fitted for this module (Lawson-reweighted least squares on
Chebyshev nodes against mpmath, i.e. near-minimax), then rounded to float32.

LLVM only vectorises a loop whose body has no calls left: tanh_f32 and erf_f32 (which contain
exp_f32) exceed its inlining threshold, so they and the public overloads are inlined at the
Numba level (`inline="always"`; it costs a fraction of a second of typing per caller).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir as _ir
from numba.core import cgutils as _cgutils
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic
from numba.extending import overload as _overload

_jit = numba.njit(error_model="numpy", cache=True)
# the functions that call exp are past LLVM's inlining threshold, and a call in the loop body
# blocks vectorisation: they are inlined at the Numba level instead
_jit_inline = numba.njit(error_model="numpy", cache=True, inline="always")
_JO = {"error_model": "numpy"}

_f = np.float32

# ---------------------------------------------------------------- bit manipulation (float32)

_I32 = _ir.IntType(32)


@_intrinsic
def _pow2_f32(typingctx, k):  # type: ignore[no-untyped-def]
    """2**k for an integral float32 k in [-126, 127], built from the exponent bits."""
    if k != _types.float32:
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ki = builder.fptosi(args[0], _I32)
        bits = builder.shl(builder.add(ki, _ir.Constant(_I32, 127)), _ir.Constant(_I32, 23))
        return builder.bitcast(bits, _ir.FloatType())

    return _types.float32(_types.float32), codegen


def _target_has(feature: str) -> bool:
    """Does the CPU Numba compiles for have `feature`? Its features are NUMBA_CPU_FEATURES when
    set (tracejit/_vector_width.py sets it to the host's, less a tuning flag), else the host's."""
    try:
        from numba.core import config

        if config.CPU_FEATURES:
            return f"+{feature}" in config.CPU_FEATURES.split(",")
        import llvmlite.binding as ll

        return bool(ll.get_host_cpu_features().get(feature))
    except Exception:
        return False


_HAS_FMA = _target_has("fma")


@_intrinsic
def _fma(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a * b + c rounded once (llvm.fma) where the CPU has FMA; else a multiply and an add.
    Horner steps and Cody-Waite reductions written with it are one instruction each."""
    if not (a == b == c == _types.float32):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        if not _HAS_FMA:
            return builder.fadd(builder.fmul(args[0], args[1]), args[2])
        t = args[0].type
        fn = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(t, [t, t, t]),
                                             "llvm.fma.f32")
        return builder.call(fn, args)

    return _types.float32(_types.float32, _types.float32, _types.float32), codegen


# p * 2**k through llvm.ldexp, which LLVM turns into AVX-512's vscalefps in a vectorised loop
# (exp: 0.33 -> 0.24 ns an element on the Xeon, bit for bit the same results); without AVX-512
# it would be a libm call per element, so there exp keeps its two exact multiplications
_USE_LDEXP = _target_has("avx512f")


@_intrinsic
def _ldexp_f32(typingctx, p, k):  # type: ignore[no-untyped-def]
    """p * 2**k for an integral float32 k (llvm.ldexp: correctly rounded, denormals and
    overflow included)."""
    if p != _types.float32 or k != _types.float32:
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ki = builder.fptosi(args[1], _I32)
        fnty = _ir.FunctionType(_ir.FloatType(), [_ir.FloatType(), _I32])
        fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.ldexp.f32.i32")
        return builder.call(fn, [args[0], ki])

    return _types.float32(_types.float32, _types.float32), codegen


# log's split of a positive normal x = 2**k * m with m in [sqrt(1/2), sqrt(2)): offsetting the
# bits by those of sqrt(1/2) makes the exponent field count from there
_SQRTH_BITS = 0x3F3504F3


@_intrinsic
def _log_mant_f32(typingctx, x):  # type: ignore[no-untyped-def]
    if x != _types.float32:
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        off = _ir.Constant(_I32, _SQRTH_BITS)
        ix = builder.sub(builder.bitcast(args[0], _I32), off)
        m = builder.add(builder.and_(ix, _ir.Constant(_I32, 0x7FFFFF)), off)
        return builder.bitcast(m, _ir.FloatType())

    return _types.float32(_types.float32), codegen


@_intrinsic
def _log_expo_f32(typingctx, x):  # type: ignore[no-untyped-def]
    if x != _types.float32:
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        ix = builder.sub(builder.bitcast(args[0], _I32), _ir.Constant(_I32, _SQRTH_BITS))
        return builder.sitofp(builder.ashr(ix, _ir.Constant(_I32, 23)), _ir.FloatType())

    return _types.float32(_types.float32), codegen


# ---------------------------------------------------------------- float32 kernels

_ONE = _f(1.0)
_TWO = _f(2.0)
_HALF = _f(0.5)
_INF = _f(np.inf)
_NAN = _f(np.nan)
_ROUND = _f(12582912.0)  # 1.5 * 2**23: (y + _ROUND) - _ROUND rounds y to an integer (|y| < 2**22)

# exp: x = k*ln2 + r, |r| <= ln2/2; e**r = 1 + r + r**2 * P(r)
_LOG2E = _f(1.4426950408889634)
_LN2_HI = _f(0.693145751953125)  # 15 significant bits: k * _LN2_HI is exact for |k| < 512
_LN2_LO = _f(1.4286067653301870e-06)
_EXP_HI = _f(89.0)  # above log(FLT_MAX) = 88.72: the result overflows to inf
_EXP_LO = _f(-104.0)  # below log(FLT_TRUE_MIN / 2) = -103.97: it underflows to 0
_E0 = _f(0.5000000096782407)
_E1 = _f(0.16666517181478746)
_E2 = _f(0.04166620066692364)
_E3 = _f(0.00836908828389103)
_E4 = _f(0.001395083345481496)


@_jit
def exp_f32(x):  # type: ignore[no-untyped-def]
    xc = x if x < _EXP_HI else _EXP_HI  # NaN also becomes _EXP_HI here, restored at the end
    xc = xc if xc > _EXP_LO else _EXP_LO
    k = _fma(xc, _LOG2E, _ROUND) - _ROUND
    r = _fma(-k, _LN2_LO, _fma(-k, _LN2_HI, xc))
    q = _fma(r, _fma(r, _fma(r, _fma(r, _E4, _E3), _E2), _E1), _E0)
    p = _ONE + _fma(r * r, q, r)
    if _USE_LDEXP:  # a constant: the other branch is never compiled in
        y = _ldexp_f32(p, k)  # one instruction (vscalefps), rounded once, inf on overflow
    else:
        # 2**k in two factors, each within the normal range, so one rounding makes a denormal
        k1 = (k * _HALF + _ROUND) - _ROUND
        y = (p * _pow2_f32(k1)) * _pow2_f32(k - k1)
    return y if x == x else x


# log: x = 2**k * (1 + f), 1 + f in [sqrt(1/2), sqrt(2)); s = f / (2 + f),
# log(1 + f) = f - f*f/2 + s * (f*f/2 + R(s*s))
_FLT_MIN = _f(1.1754943508222875e-38)
_TWO23 = _f(8388608.0)
_M23 = _f(-23.0)
_ZERO = _f(0.0)
_L0 = _f(0.6666666654837888)
_L1 = _f(0.4000012650696065)
_L2 = _f(0.28550315048734987)
_L3 = _f(0.2334378108635815)


@_jit
def log_f32(x):  # type: ignore[no-untyped-def]
    tiny = x < _FLT_MIN  # denormals: scale into the normal range first
    xs = x * _TWO23 if tiny else x
    kadj = _M23 if tiny else _ZERO
    m = _log_mant_f32(xs)
    k = _log_expo_f32(xs) + kadj
    f = m - _ONE
    s = f / (_TWO + f)
    z = s * s
    rr = z * (_L0 + z * (_L1 + z * (_L2 + z * _L3)))
    hf = _HALF * f * f
    y = k * _LN2_HI - ((hf - (s * (hf + rr) + k * _LN2_LO)) - f)
    # +-0 -> -inf, x < 0 -> nan, inf and nan -> themselves
    special = -_INF if x == _ZERO else (_NAN if x < _ZERO else x)
    return y if (x > _ZERO and x < _INF) else special


# tanh: |x| < 0.625: x + x**3 * P(x*x); otherwise 1 - 2 / (exp(2|x|) + 1) with x's sign
_TANH_SPLIT = _f(0.625)
_T0 = _f(-0.33333330906671726)
_T1 = _f(0.133332097637954)
_T2 = _f(-0.053947204269349416)
_T3 = _f(0.02170296710580244)
_T4 = _f(-0.008182673859993883)
_T5 = _f(0.00214753686316216)


_TANH_SAT = _f(20.0)  # 2|x| beyond it: 1 - 2 / (e**20 + 1) rounds to 1.0


@_jit_inline
def tanh_f32(x):  # type: ignore[no-untyped-def]
    a = abs(x)
    z = x * x
    q = _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _T5, _T4), _T3), _T2), _T1), _T0)
    small = _fma(x * z, q, x)
    # e**t for t = 2|x| in [1.25, 20]: exp_f32's reduction and polynomial with one 2**k
    # factor (the result is never denormal and never overflows); inf and NaN clamp to 20
    t = a + a
    t = t if t < _TANH_SAT else _TANH_SAT
    k = _fma(t, _LOG2E, _ROUND) - _ROUND
    r = _fma(-k, _LN2_LO, _fma(-k, _LN2_HI, t))
    p = _fma(r, _fma(r, _fma(r, _fma(r, _E4, _E3), _E2), _E1), _E0)
    if _USE_LDEXP:
        e = _ldexp_f32(_ONE + _fma(r * r, p, r), k)
    else:
        e = (_ONE + _fma(r * r, p, r)) * _pow2_f32(k)
    big = _ONE - _TWO / (e + _ONE)
    big = -big if x < _ZERO else big
    y = small if a < _TANH_SPLIT else big
    y = y if x == x else x  # NaN
    return y if x != _ZERO else x  # -0 + (-0 * z * P(z)) would be +0


@_jit
def sigmoid_f32(x):  # type: ignore[no-untyped-def]
    # exp of -|x| never overflows; x < 0 gives e / (1 + e)
    e = exp_f32(-abs(x))
    d = _ONE + e
    return _ONE / d if x >= _ZERO else e / d


# erf: |x| < 1: x * P(x*x); 1 <= |x| < 4: 1 - exp(Q(|x|)), Q fitted to log(erfc); |x| >= 4
# rounds to +-1 (erfc(4) = 1.5e-8 is below half a float32 ulp of 1)
_ERF_SPLIT = _ONE
_ERF_SAT = _f(4.0)
_P0 = _f(1.1283791659137516)
_P1 = _f(-0.37612627135965826)
_P2 = _f(0.11283600176256356)
_P3 = _f(-0.02685444459184602)
_P4 = _f(0.005189535339186119)
_P5 = _f(-0.0008020841278094798)
_P6 = _f(7.889119525308907e-05)
_Q0 = _f(-0.00035370892815761576)
_Q1 = _f(-1.127040079978427)
_Q2 = _f(-0.6382256023687544)
_Q3 = _f(-0.10303743551813976)
_Q4 = _f(0.02180535115573279)
_Q5 = _f(-0.002939615735683243)
_Q6 = _f(0.00018557489322812426)


@_jit_inline
def erf_f32(x):  # type: ignore[no-untyped-def]
    a = abs(x)
    z = x * x
    small = x * (_P0 + z * (_P1 + z * (_P2 + z * (_P3 + z * (_P4 + z * (_P5 + z * _P6))))))
    t = a if a < _ERF_SAT else _ERF_SAT  # inf and NaN too (NaN is restored below)
    q = _Q0 + t * (_Q1 + t * (_Q2 + t * (_Q3 + t * (_Q4 + t * (_Q5 + t * _Q6)))))
    big = _ONE - exp_f32(q)
    big = -big if x < _ZERO else big
    y = small if a < _ERF_SPLIT else big
    return y if x == x else x


@_jit
def rsqrt_f32(x):  # type: ignore[no-untyped-def]
    return _ONE / np.sqrt(x)  # sqrt and divide are vector instructions


# ---------------------------------------------------------------- float64 (libm)


@_jit
def sigmoid_f64(x):  # type: ignore[no-untyped-def]
    e = np.exp(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


# ---------------------------------------------------------------- public, typed by overload


def _public(name, f32, f64, doc):  # type: ignore[no-untyped-def]
    def py(x):  # type: ignore[no-untyped-def]
        return jitted(x)

    py.__name__ = py.__qualname__ = name
    py.__doc__ = doc

    @_overload(py, jit_options=_JO, inline="always")
    def _ov(x):  # type: ignore[no-untyped-def]
        if x == _types.float32:
            return lambda x: f32(x)
        if x == _types.float64:
            return lambda x: f64(x)
        if isinstance(x, (_types.Integer, _types.Boolean)):
            return lambda x: f64(np.float64(x))
        return None

    jitted = numba.njit(error_model="numpy")(lambda x: py(x))
    return py


@_jit
def _exp64(x):  # type: ignore[no-untyped-def]
    return np.exp(x)


@_jit
def _log64(x):  # type: ignore[no-untyped-def]
    return np.log(x)


@_jit
def _tanh64(x):  # type: ignore[no-untyped-def]
    return np.tanh(x)


@_jit
def _erf64(x):  # type: ignore[no-untyped-def]
    return math.erf(x)


@_jit
def _rsqrt64(x):  # type: ignore[no-untyped-def]
    return 1.0 / np.sqrt(x)


exp = _public("exp", exp_f32, _exp64, "e**x; vectorisable for float32.")
log = _public("log", log_f32, _log64, "Natural logarithm; vectorisable for float32.")
tanh = _public("tanh", tanh_f32, _tanh64, "Hyperbolic tangent; vectorisable for float32.")
sigmoid = _public("sigmoid", sigmoid_f32, sigmoid_f64, "1 / (1 + e**-x); vectorisable for float32.")
erf = _public("erf", erf_f32, _erf64, "Error function; vectorisable for float32.")
rsqrt = _public("rsqrt", rsqrt_f32, _rsqrt64, "1 / sqrt(x) in x's type; vectorisable.")


def ipow(x, n):  # type: ignore[no-untyped-def]
    """x**n for an integer n known at compile time, as multiplications (repeated squaring);
    a negative n gives 1 / x**-n. Inside njit code, a literal n is expanded at compile time."""
    return x**n


def _ipow_source(n):  # type: ignore[no-untyped-def]
    lines = ["def impl(x, n):"]
    m = abs(n)
    if m == 0:
        lines.append("    return one_like(x)")
    else:
        lines.append("    b = x")
        acc = None
        while True:
            if m & 1:
                lines.append("    r = b" if acc is None else "    r = r * b")
                acc = True
            m >>= 1
            if not m:
                break
            lines.append("    b = b * b")
        lines.append("    return one_like(x) / r" if n < 0 else "    return r")
    return "\n".join(lines) + "\n"


@_overload(ipow, jit_options=_JO)
def _ov_ipow(x, n):  # type: ignore[no-untyped-def]
    if not isinstance(x, (_types.Float, _types.Integer)):
        return None
    if isinstance(n, _types.IntegerLiteral):
        from .scalar import one_like

        ns = {"one_like": one_like}
        exec(_ipow_source(int(n.literal_value)), ns)  # noqa: S102 (generated from an int only)
        return ns["impl"]
    if isinstance(n, _types.Integer):
        return lambda x, n: x**n
    return None
