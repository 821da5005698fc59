"""Elementwise ops: one stanza each. `scalar` names the kernel IR operation fused loops compute
(kir/ir.py's SCALAR_OPS); how each device spells it is its renderer's business (codegen/).
VJPs use Tensor methods only, so backward traces like forward."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..dtypes import DType
from .registry import (
    DTypeError,
    Kind,
    Operand,
    TensorType,
    VjpContext,
    broadcast_shapes,
    defop,
    same_device,
)

E = Kind.ELEMENTWISE


def promoted(ops: Sequence[Operand]) -> DType:
    dims: list[DType] = []
    zero: list[DType] = []
    scal: list[DType] = []
    for o in ops:
        if isinstance(o, TensorType):
            (dims if o.shape else zero).append(o.dtype)
        else:
            scal.append(dt.scalar_dtype(o))
    return dt.promote(dims, zero, scal)


def promoted_float(ops: Sequence[Operand]) -> DType:
    d = promoted(ops)
    return d if d.is_floating_point else dt.get_default_dtype()


def _shape(name: str, ops: Sequence[Operand]) -> tuple[int, ...]:
    shapes = [o.shape for o in ops if isinstance(o, TensorType)]
    return shapes[0] if len(shapes) == 1 else broadcast_shapes(name, *shapes)


def _rule(result: str, name: str) -> Any:
    """Shape/dtype rule for an elementwise op: `same` keeps the promoted type, `float` turns
    integers into the default float, `bool` returns bool (comparisons, logical ops)."""

    def infer(ops: Sequence[Operand], **_: Any) -> TensorType:
        shape = _shape(name, ops)
        d = promoted(ops)
        if result == "float" and not d.is_floating_point:
            d = dt.get_default_dtype()
        elif result == "bool":
            d = dt.bool_
        elif result == "nobool" and d is dt.bool_:
            raise DTypeError(
                f"{name}: not supported for bool tensors; convert first with .int() or .float()"
            )
        return TensorType(shape, d, same_device(name, ops))

    return infer


def unary(name: str, eager: Any, vjp: Any, saves: tuple = (), result: str = "float",
          **kw: Any) -> Any:
    kw.setdefault("scalar", name)
    return defop(name, E, infer=_rule(result, name), eager=eager, vjp=vjp,
                 saves=saves, compute_dtype=promoted_float if result == "float" else promoted,
                 **kw)


def binary(name: str, eager: Any, vjp: Any, saves: tuple = (0, 1),
           result: str = "same", **kw: Any) -> Any:
    compute = promoted_float if result == "float" else promoted
    kw.setdefault("scalar", name)
    return defop(name, E, infer=_rule(result, name), eager=eager, vjp=vjp,
                 saves=saves, compute_dtype=compute, **kw)


def _pick(c: VjpContext, *thunks: Any) -> tuple[Any, ...]:
    """Compute only the input gradients that are needed."""
    return tuple(f() if need and f is not None else None for f, need in zip(thunks, c.needs))


def _erf(x: np.ndarray) -> np.ndarray:
    from ..kernels.cpu.ufunc import erf_ufunc  # built on first use: NumPy has no erf

    if x.dtype == np.float16:  # computed in float32, as float16 kernels are
        return erf_ufunc(x.astype(np.float32)).astype(np.float16)
    return erf_ufunc(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1/(1+exp(-x)) overflows exp for x << 0 (a harmless inf, but it warns); split on the sign
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _rsqrt(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.reciprocal(np.sqrt(x))


def _quiet(f: Any) -> Any:
    """NumPy warns where PyTorch silently returns inf/nan (log(0), 0/0): match PyTorch."""

    def run(*a: Any, **kw: Any) -> Any:
        with np.errstate(all="ignore"):
            return f(*a, **kw)

    run.__name__ = getattr(f, "__name__", "op")
    return run


# ---- unary --------------------------------------------------------------------------------------
neg_op = unary("neg", np.negative, lambda c, g: (-g,), result="nobool")
exp_op = unary("exp", _quiet(np.exp), lambda c, g: (g * c.out,), saves=("out",))
log_op = unary("log", _quiet(np.log), lambda c, g: (g / c.inputs[0],), saves=(0,))
log1p_op = unary("log1p", _quiet(np.log1p), lambda c, g: (g / (c.inputs[0] + 1),), saves=(0,))
expm1_op = unary("expm1", _quiet(np.expm1), lambda c, g: (g * (c.out + 1),),
                 saves=("out",))
sqrt_op = unary("sqrt", _quiet(np.sqrt), lambda c, g: (g / (2 * c.out),),
                saves=("out",))
rsqrt_op = unary("rsqrt", _rsqrt, lambda c, g: (g * c.out.pow(3) * -0.5,),
                 saves=("out",))
abs_op = unary("abs", np.abs, lambda c, g: (g * c.inputs[0].sign(),), saves=(0,),
               result="same")  # abs: gradient 0 at x == 0, as torch (sign(0) == 0)
sin_op = unary("sin", _quiet(np.sin), lambda c, g: (g * c.inputs[0].cos(),),
               saves=(0,))
cos_op = unary("cos", _quiet(np.cos), lambda c, g: (-g * c.inputs[0].sin(),),
               saves=(0,))
tanh_op = unary("tanh", np.tanh, lambda c, g: (g * (1 - c.out * c.out),),
                saves=("out",))
sigmoid_op = unary("sigmoid", _sigmoid, lambda c, g: (g * c.out * (1 - c.out),), saves=("out",))
erf_op = unary("erf", _erf,
               lambda c, g: (g * (c.inputs[0] * c.inputs[0] * -1).exp() * 1.1283791670955126,),
               saves=(0,))
def _sign(x: np.ndarray) -> np.ndarray:
    out = np.sign(x)
    if x.dtype.kind == "f":  # torch: sign(nan) is 0 (NumPy's is nan)
        out = np.where(np.isnan(out), x.dtype.type(0), out)
    return out


# On a tie (-0.0 vs +0.0) NumPy's maximum/minimum return the second operand, in every loop,
# as torch's vectorised loops do (its scalar loops return the first). So relu and clamp pass x
# second: relu(-0.0) is -0.0 and clamp keeps x on a tie, as in torch.
# relu: gradient 0 at x == 0, as torch
relu_op = unary("relu", lambda x: np.maximum(x.dtype.type(0), x),
                lambda c, g: (g * (c.out > 0),), saves=("out",), result="same")
sign_op = unary("sign", _sign, lambda c, g: (g * 0,), result="same")
floor_op = unary("floor", np.floor, lambda c, g: (g * 0,), result="same")
ceil_op = unary("ceil", np.ceil, lambda c, g: (g * 0,), result="same")
# round: half to even, as torch and NumPy
round_op = unary("round", np.round, lambda c, g: (g * 0,), result="same")
logical_not_op = unary("logical_not", np.logical_not, None, result="bool",
                       differentiable=False)


def _cast_infer(ops: Sequence[Operand], *, dtype: DType) -> TensorType:
    (x,) = ops
    assert isinstance(x, TensorType)
    return TensorType(x.shape, dtype, x.device)


cast_op = defop("cast", E, infer=_cast_infer, attrs=("dtype",),
                eager=lambda x, *, dtype: x.astype(dtype.np),
                vjp=lambda c, g: (g.to(c.in_types[0].dtype),), scalar="cast")


def _clamp_infer(ops: Sequence[Operand], *, min: Any, max: Any) -> TensorType:
    (x,) = ops
    assert isinstance(x, TensorType)
    bounds = [b for b in (min, max) if b is not None]
    d = promoted([x, *bounds])
    return TensorType(x.shape, d, x.device)


def _clamp_eager(x: np.ndarray, *, min: Any, max: Any) -> np.ndarray:
    out = x
    if min is not None:
        out = np.maximum(x.dtype.type(min), out)
    if max is not None:
        out = np.minimum(x.dtype.type(max), out)
    return out if out is not x else x.copy()


def _clamp_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    # gradient flows where min <= x <= max (inclusive at the bounds, as torch)
    x, lo, hi = c.inputs[0], c.attrs["min"], c.attrs["max"]
    mask = None
    if lo is not None:
        mask = x >= lo
    if hi is not None:
        m2 = x <= hi
        mask = m2 if mask is None else mask.logical_and(m2)
    return (g if mask is None else g * mask,)


clamp_op = defop("clamp", E, infer=_clamp_infer, eager=_clamp_eager, vjp=_clamp_vjp,
                 attrs=("min", "max"), saves=(0,), compute_dtype=None,
                 scalar="clamp")

# ---- binary -------------------------------------------------------------------------------------
add_op = binary("add", np.add, lambda c, g: (g, g), saves=())
sub_op = binary("sub", np.subtract, lambda c, g: _pick(c, lambda: g, lambda: -g),
                saves=(),
                result="nobool")
mul_op = binary("mul", np.multiply,
                lambda c, g: _pick(c, lambda: g * c.inputs[1], lambda: g * c.inputs[0]))
div_op = binary("div", _quiet(np.true_divide),
                lambda c, g: _pick(c, lambda: g / c.inputs[1],
                                   lambda: -g * c.inputs[0] / (c.inputs[1] * c.inputs[1])),
                result="float")


def _pow_eager(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and np.any(b < 0):
        raise DTypeError("pow: integers to negative integer powers are not allowed")
    with np.errstate(all="ignore"):
        return np.power(a, b)


def _pow_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    a, b = c.inputs

    def da() -> Any:
        if isinstance(b, (int, float)):  # a Python exponent: x ** 2 needs no pow in backward
            return g * 0 if b == 0 else g * b if b == 1 else g * b * (a if b == 2 else a.pow(b - 1))
        return g * b * a.pow(b - 1)

    def db() -> Any:
        # d/db a**b = a**b * log(a); defined as 0 where a == 0 and b >= 0, as torch
        if isinstance(a, (int, float)):  # a Python base (2 ** x)
            if a == 0:
                return (g * c.out * -math.inf).where(b < 0, 0)
            return g * c.out * (math.log(a) if a > 0 else math.nan)
        return g * c.out * a.log().where(a.eq(0).logical_and(b >= 0).logical_not(), 0)

    return _pick(c, da, db)


pow_op = binary("pow", _pow_eager, _pow_vjp, saves=(0, 1, "out"))
maximum_op = binary("maximum", np.maximum,
                    lambda c, g: _tie_split(c, g, c.inputs[0] > c.inputs[1]))
minimum_op = binary("minimum", np.minimum,
                    lambda c, g: _tie_split(c, g, c.inputs[0] < c.inputs[1]))


def _tie_split(c: VjpContext, g: Any, first_wins: Any) -> tuple[Any, ...]:
    # maximum/minimum: ties split the gradient evenly, as torch
    tie = c.inputs[0].eq(c.inputs[1])
    wa = first_wins.to(g.dtype) + tie.to(g.dtype) * 0.5
    return _pick(c, lambda: g * wa, lambda: g * (1 - wa))


def _compare(name: str, f: Any) -> Any:
    return binary(name, f, None, saves=(), result="bool", differentiable=False)


eq_op = _compare("eq", np.equal)
ne_op = _compare("ne", np.not_equal)
lt_op = _compare("lt", np.less)
le_op = _compare("le", np.less_equal)
gt_op = _compare("gt", np.greater)
ge_op = _compare("ge", np.greater_equal)
logical_and_op = binary("logical_and", np.logical_and, None, saves=(),
                        result="bool", differentiable=False)
logical_or_op = binary("logical_or", np.logical_or, None, saves=(),
                       result="bool", differentiable=False)


def _where_infer(ops: Sequence[Operand], **_: Any) -> TensorType:
    cond, a, b = ops
    if isinstance(cond, TensorType) and cond.dtype is not dt.bool_:
        raise DTypeError(
            f"where: expected condition to be a bool tensor, got {cond.dtype}; compare first "
            "(for example x > 0)"
        )
    shape = _shape("where", ops)
    return TensorType(shape, promoted([a, b]), same_device("where", ops))


where_op = defop(
    "where", E, infer=_where_infer, saves=(0,),
    eager=lambda c, a, b: np.where(c, a, b),
    compute_dtype=lambda ops: (None, promoted(ops[1:]), promoted(ops[1:])),
    # Tensor.where(cond, other) is torch's: cond ? self : other
    vjp=lambda c, g: _pick(c, None, lambda: g.where(c.inputs[0], 0),
                           lambda: g.where(c.inputs[0].logical_not(), 0)),
    scalar="where",
)
