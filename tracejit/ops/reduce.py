"""Reductions over `dims` (a normalised sorted tuple) with `keepdim`. Mean, var, softmax and
logsumexp are composites in functional.py; these are the primitives."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .registry import (
    ArgError,
    DTypeError,
    Kind,
    Operand,
    ReduceSpec,
    TensorType,
    VjpContext,
    defop,
    norm_dim,
)

R = Kind.REDUCE


def reduced_shape(shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> tuple[int, ...]:
    if keepdim:
        return tuple(1 if i in dims else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in dims)


def expand_back(g: Any, shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> Any:
    """Broadcast a reduction's gradient back over the reduced dims (a VJP helper)."""
    if not keepdim and dims != tuple(range(len(dims))):  # (expand adds leading dims itself)
        g = g.reshape(reduced_shape(shape, dims, True))
    return g.expand(shape)


def _rule(name: str, out_dtype: str) -> Any:
    def infer(ops: Sequence[Operand], *, dims: tuple[int, ...], keepdim: bool) -> TensorType:
        (x,) = ops
        assert isinstance(x, TensorType)
        if out_dtype == "sum":
            d = x.dtype if x.dtype.is_floating_point else dt.int64
        elif out_dtype == "bool":
            d = dt.bool_
        else:
            d = x.dtype
        if out_dtype == "nonempty" and any(x.shape[i] == 0 for i in dims):
            raise ArgError(
                f"{name}: cannot reduce over a zero-size dimension of a tensor of shape "
                f"{list(x.shape)} (the result has no identity); pass a non-empty tensor"
            )
        return TensorType(reduced_shape(x.shape, dims, keepdim), d, x.device)

    return infer


def _sum_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    t = c.in_types[0]
    assert isinstance(t, TensorType)
    return (expand_back(g, t.shape, c.attrs["dims"], c.attrs["keepdim"]),)


def _extreme_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    # amax/amin: ties share the gradient evenly, as torch
    x = c.inputs[0]
    dims, keepdim = c.attrs["dims"], c.attrs["keepdim"]
    out = expand_back(c.out, x.shape, dims, keepdim)
    mask = x.eq(out).to(g.dtype)
    count = mask.sum(dim=dims, keepdim=True)
    return (expand_back(g, x.shape, dims, keepdim) * mask / count,)


def _prod_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    # d prod / d x_i = product of the others; computed without dividing by zero
    x = c.inputs[0]
    dims, keepdim = c.attrs["dims"], c.attrs["keepdim"]
    zeros = x.eq(0)
    nz = zeros.to(x.dtype).sum(dim=dims, keepdim=True)
    p_nz = x.where(zeros.logical_not(), 1).prod(dim=dims, keepdim=True)
    at_zero = p_nz.where(nz.eq(1), 0)
    elsewhere = (p_nz / x.where(zeros.logical_not(), 1)).where(nz.eq(0), 0)
    local = at_zero.where(zeros, elsewhere)
    return (expand_back(g, x.shape, dims, keepdim) * local,)


def _np_reduce(f: Any, int_out: bool = False) -> Any:
    def run(x: np.ndarray, *, dims: tuple[int, ...], keepdim: bool) -> np.ndarray:
        kw = {"dtype": np.int64} if int_out and x.dtype.kind in "biu" else {}
        return np.asarray(f(x, axis=dims, keepdims=keepdim, **kw))

    return run


RA = ("dims", "keepdim")
sum_op = defop("sum", R, infer=_rule("sum", "sum"), eager=_np_reduce(np.sum, True), attrs=RA,
               vjp=_sum_vjp, reduce=ReduceSpec(0, "add"))
prod_op = defop("prod", R, infer=_rule("prod", "sum"), eager=_np_reduce(np.prod, True),
                attrs=RA, vjp=_prod_vjp, saves=(0,), reduce=ReduceSpec(1, "mul"))
# amax/amin: NaN propagates (torch, NumPy): the scalar maximum/minimum, not Python's max/min
amax_op = defop("amax", R, infer=_rule("amax", "nonempty"), eager=_np_reduce(np.max), attrs=RA,
                vjp=_extreme_vjp, saves=(0, "out"),
                reduce=ReduceSpec(-math.inf, "max"))
amin_op = defop("amin", R, infer=_rule("amin", "nonempty"), eager=_np_reduce(np.min), attrs=RA,
                vjp=_extreme_vjp, saves=(0, "out"),
                reduce=ReduceSpec(math.inf, "min"))
all_op = defop("all", R, infer=_rule("all", "bool"), eager=_np_reduce(np.all), attrs=RA,
               differentiable=False, reduce=ReduceSpec(True, "and"))
any_op = defop("any", R, infer=_rule("any", "bool"), eager=_np_reduce(np.any), attrs=RA,
               differentiable=False, reduce=ReduceSpec(False, "or"))


def _arg_infer(name: str) -> Any:
    def infer(ops: Sequence[Operand], *, dim: int | None, keepdim: bool) -> TensorType:
        (x,) = ops
        assert isinstance(x, TensorType)
        if x.dtype is dt.bool_:
            raise DTypeError(f"{name}: not implemented for bool tensors; use .int() first")
        if dim is None:
            if 0 in x.shape:
                raise ArgError(f"{name}: expected a non-empty tensor, got shape {list(x.shape)}")
            return TensorType((1,) * x.ndim if keepdim else (), dt.int64, x.device)
        d = norm_dim(name, dim, x.ndim)
        if x.ndim and x.shape[d] == 0:
            raise ArgError(f"{name}: cannot reduce over dimension {dim} of size 0")
        return TensorType(reduced_shape(x.shape, (d,) if x.ndim else (), keepdim), dt.int64,
                          x.device)

    return infer


def _arg_eager(f: Any) -> Any:
    def run(x: np.ndarray, *, dim: int | None, keepdim: bool) -> np.ndarray:
        if dim is None:
            r = np.asarray(f(x.reshape(-1)), dtype=np.int64)
            return r.reshape((1,) * x.ndim) if keepdim else r
        if x.ndim == 0:
            return np.zeros((), np.int64)
        return np.asarray(f(x, axis=dim, keepdims=keepdim), dtype=np.int64)

    return run


# arg-reductions keep the index of the first element that wins; NaN wins and stays, as NumPy
argmax_op = defop("argmax", R, infer=_arg_infer("argmax"), eager=_arg_eager(np.argmax),
                  attrs=("dim", "keepdim"), differentiable=False,
                  reduce=ReduceSpec(-math.inf, "argmax", index=True))
argmin_op = defop("argmin", R, infer=_arg_infer("argmin"), eager=_arg_eager(np.argmin),
                  attrs=("dim", "keepdim"), differentiable=False,
                  reduce=ReduceSpec(math.inf, "argmin", index=True))
