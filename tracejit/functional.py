"""Composites written in primitive ops (so they trace, differentiate and fuse for free), and
the function forms of the ops (tracejit.exp(x), tracejit.cat(...)). Also binds the
table-driven Tensor methods for unary ops."""

from __future__ import annotations

import builtins as _builtins
import inspect
import math
from collections.abc import Sequence
from typing import Any

from . import fused as _fused
from .dispatch import STATE, dispatch
from .errors import located
from .ops import REGISTRY as R
from .ops.registry import DTypeError, norm_dim, norm_dims
from .tensor import Tensor, _from_value

UNARY = ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "neg", "sin", "cos", "tanh",
         "sigmoid", "relu", "sign", "floor", "ceil", "round", "erf")


def _unary(name: str) -> Any:
    op = R[name]

    def method(self: Tensor) -> Tensor:
        return dispatch(op, (self,))

    method.__name__ = name
    method.__doc__ = f"Elementwise {name} (the `{name}` op)."
    return method


# note: the function forms below (abs, round, max, min, sum, all, any...) shadow the builtins
# in this module's globals; code here must say _builtins.max etc.
def _write_out(name: str, out: Any, result: Any) -> Any:
    """Write `result` into the caller's `out=` tensor, as torch does: same shape, or an empty
    `out` resized to it; a non-empty `out` of another shape is an error here (torch resizes it
    with a deprecation warning)."""
    if isinstance(out, (tuple, list)):
        if not isinstance(result, tuple) or len(out) != len(result):
            raise TypeError(located(f"{name}(): out= got {len(out)} tensors for "
                                    f"{len(result) if isinstance(result, tuple) else 1} result"))
        return type(result)(*(_write_out(name, o, r) for o, r in zip(out, result)))
    if not isinstance(out, Tensor):
        raise TypeError(located(f"{name}(): argument 'out' must be Tensor, not "
                                f"{type(out).__name__}"))
    if STATE.grad_enabled and (out.requires_grad or result.requires_grad):
        raise RuntimeError(located(f"{name}(): functions with out=... arguments don't support "
                                   "automatic differentiation, but one of the arguments requires "
                                   "grad; call it under tracejit.no_grad() or drop out="))
    if result.dtype.category > out.dtype.category:
        raise RuntimeError(located(f"{name}(): result type {result.dtype.name} can't be cast to "
                                   f"the desired output type {out.dtype.name}"))
    if out.shape != result.shape:
        if out.numel():
            raise RuntimeError(located(
                f"{name}(): out= has shape {list(out.shape)} but the result has shape "
                f"{list(result.shape)}; pass an out of the result's shape (or an empty one)"))
        if STATE.tracer is not None:
            STATE.tracer.graph_break("out= resizing an empty tensor")
        out._data = result._data.astype(out.dtype.np)  # resized, as torch does an empty out
        out._version.v += 1
        return out
    return out.copy_(result)


def _function(name: str, method: Any, with_out: bool) -> Any:
    """The function form tracejit.name(input, ...) of a Tensor method, with torch's parameter
    names (`input` first) and `out=` where torch has it."""

    def f(input: Any, *a: Any, out: Any = None, **kw: Any) -> Any:
        r = getattr(_t(input), name)(*a, **kw)
        return r if out is None else _write_out(name, out, r)

    sig = inspect.signature(method)
    params = list(sig.parameters.values())
    params[0] = params[0].replace(name="input", annotation=Any)
    if with_out:
        params.append(inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=None))
    f.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"tracejit.{name}(input, ...): Tensor.{name} as a function (torch's names)."
    return f


for _n in UNARY:
    setattr(Tensor, _n, _unary(_n))
    globals()[_n] = _function(_n, getattr(Tensor, _n), True)
negative = globals()["neg"]
absolute = globals()["abs"]
_round_half_even = Tensor.round


def _round(self: Tensor, *, decimals: int = 0) -> Tensor:
    """Round half to even; to `decimals` places as torch computes it: round(x * 10^d) / 10^d
    (d < 0: round(x / 10^-d) * 10^-d), in x's dtype."""
    if not isinstance(decimals, int) or isinstance(decimals, bool):
        raise TypeError(located(f"round: decimals must be an int, got {type(decimals).__name__}"))
    if decimals == 0:
        return _round_half_even(self)
    if not self.dtype.is_floating_point:
        raise RuntimeError(located("round: decimals= is only supported for floating-point "
                                   f"tensors, got {self.dtype.name}"))
    scale = 10.0 ** _builtins.abs(decimals)
    if decimals > 0:
        return _round_half_even(self * scale) / scale
    return _round_half_even(self / scale) * scale


_round.__name__ = "round"
Tensor.round = _round  # type: ignore[method-assign]
globals()["round"] = _function("round", _round, True)


def _t(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else _from_value(x, None, copy=False)


def matmul(input: Any, other: Any, *, out: Any = None) -> Tensor:
    """PyTorch's matmul: 1-d operands are promoted to matrices and the added dim removed."""
    if out is not None:
        return _write_out("matmul", out, matmul(input, other))
    a, b = _t(input), _t(other)
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(located("matmul: both arguments need at least 1 dimension, got "
                           f"{a.ndim}-D and {b.ndim}-D; use * for scalars"))
    if a.ndim == 1 and b.ndim == 1:
        return (a.unsqueeze(0).matmul(b.unsqueeze(1))).reshape(())
    if a.ndim == 1:
        return dispatch(R["matmul"], (a.unsqueeze(0), b)).squeeze(-2)
    if b.ndim == 1:
        return dispatch(R["matmul"], (a, b.unsqueeze(1))).squeeze(-1)
    return dispatch(R["matmul"], (a, b))


def mm(input: Tensor, mat2: Tensor, *, out: Any = None) -> Tensor:
    return input.mm(mat2) if out is None else _write_out("mm", out, input.mm(mat2))


def bmm(input: Tensor, mat2: Tensor, *, out: Any = None) -> Tensor:
    return input.bmm(mat2) if out is None else _write_out("bmm", out, input.bmm(mat2))


def dot(input: Tensor, tensor: Tensor, *, out: Any = None) -> Tensor:
    if input.ndim != 1 or tensor.ndim != 1:
        raise RuntimeError(located("dot: 1D tensors expected, but got "
                           f"{input.ndim}D and {tensor.ndim}D tensors"))
    return matmul(input, tensor, out=out)


def addmm(input: Tensor, mat1: Tensor, mat2: Tensor, *, beta: float = 1,
          alpha: float = 1) -> Tensor:
    prod = mat1.mm(mat2)
    if alpha != 1:
        prod = prod * alpha
    return prod + (input if beta == 1 else input * beta)


def _float_only(name: str, x: Tensor, dtype: Any = None) -> Tensor:
    if dtype is not None:
        return x.to(dtype)
    if not x.dtype.is_floating_point:
        raise DTypeError(f"{name}(): could not infer output dtype; input dtype must be a "
                         f"floating point type, got {x.dtype.name}; use x.float() first")
    return x


def mean(input: Tensor, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
    x = _float_only("mean", input, dtype)
    dims = norm_dims("mean", dim, x.ndim)
    n = math.prod(x.shape[d] for d in dims)
    return x.sum(dims, keepdim) / n if n else x.sum(dims, keepdim) * math.nan


def var(input: Tensor, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
        correction: Any = None) -> Tensor:
    x = _float_only("var", input)
    if isinstance(unbiased, bool) or unbiased is None:
        corr = (1 if unbiased in (None, True) else 0) if correction is None else correction
    else:
        raise TypeError(located("var: unbiased must be a bool; use correction= for a number"))
    dims = norm_dims("var", dim, x.ndim)
    n = math.prod(x.shape[d] for d in dims)
    centred = x - x.mean(dims, keepdim=True)
    return (centred * centred).sum(dims, keepdim) / _builtins.max(n - corr, 0)


def std(input: Tensor, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *,
        correction: Any = None) -> Tensor:
    return var(input, dim, unbiased, keepdim, correction=correction).sqrt()


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    x = _float_only("logsumexp", input)
    dims = norm_dims("logsumexp", dim, x.ndim)
    # subtract the max for stability; a row of -inf stays -inf rather than nan
    m = x.detach().amax(dims, keepdim=True)
    m = m.where(m.abs().lt(math.inf), 0)
    out = (x - m).exp().sum(dims, keepdim=True).log() + m
    return out if keepdim else out.squeeze(dims)


def softmax(input: Tensor, dim: int, dtype: Any = None) -> Tensor:
    x = _float_only("softmax", input, dtype)
    d = norm_dim("softmax", dim, x.ndim)
    if d == x.ndim - 1 and _fused.usable(x):
        fast = _fused.softmax_last(x)
        if fast is not None:
            return fast
    e = (x - x.detach().amax(d, keepdim=True)).exp()
    # times the sum's reciprocal, as torch's CPU softmax computes (one division per row, not
    # one per element: a row kernel's last pass is then a multiply)
    return e * (1 / e.sum(d, keepdim=True))


def log_softmax(input: Tensor, dim: int, dtype: Any = None) -> Tensor:
    x = _float_only("log_softmax", input, dtype)
    d = norm_dim("log_softmax", dim, x.ndim)
    # (x - max) - log(sum(exp(x - max))), as torch: x - logsumexp(x) would lose everything to
    # rounding when the max is huge (a row [max, max] gave 0, not -log 2), and a row holding
    # +inf or only -inf is NaN, as in torch
    shifted = x - x.detach().amax(d, keepdim=True)
    return shifted - shifted.exp().sum(d, keepdim=True).log()


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate == "tanh":
        # 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x**3), is x * sigmoid(2u) = x / (1 +
        # exp(-2u)): the same function without the cancellation of 1 + tanh(u) (in float32 the
        # tanh form's relative error grows from 2e-5 at x = -3 to 100% below x = -5; this one
        # stays within 1.3e-5 over [-10, 10]), and one exp where tanh computes two paths
        if _fused.usable(x):
            return _fused.gelu_tanh(x)
        c = 2 * math.sqrt(2 / math.pi)
        return x / ((x * (x * x * (-0.044715 * c) - c)).exp() + 1)
    if approximate != "none":
        raise ValueError(located(f"gelu: approximate must be 'none' or 'tanh', got "
                                 f"{approximate!r}"))
    return x * 0.5 * ((x * (1 / math.sqrt(2))).erf() + 1)


def silu(x: Tensor) -> Tensor:
    return x * x.sigmoid()


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    bx = x * beta if beta != 1 else x
    # log1p(exp(-|bx|)) + relu(bx): never overflows; linear above the threshold, as torch
    soft = ((-bx.abs()).exp().log1p() + bx.relu()) / beta if beta != 1 else \
        (-bx.abs()).exp().log1p() + bx.relu()
    return x.where(bx > threshold, soft)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    return x.where(x > 0, x * negative_slope)


def norm(input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, out: Any = None,
         dtype: Any = None) -> Tensor:
    """The p-norm over dim (all dims by default), computed in dtype when given."""
    x = input if dtype is None else input.to(dtype)
    r = _norm(x, p, dim, keepdim)
    return r if out is None else _write_out("norm", out, r)


def _norm(x: Tensor, p: Any, dim: Any, keepdim: bool) -> Tensor:
    if p in ("fro", 2, 2.0):
        return (x * x).sum(dim, keepdim).sqrt()
    if p in (1, 1.0):
        return x.abs().sum(dim, keepdim)
    if p == math.inf:
        return x.abs().amax(dim if dim is not None else (), keepdim)
    return x.abs().pow(p).sum(dim, keepdim).pow(1.0 / p)


def isnan(input: Tensor) -> Tensor:
    return input.ne(input)


def isinf(input: Tensor) -> Tensor:
    return input.abs().eq(math.inf)


def isfinite(input: Tensor) -> Tensor:
    return input.abs().lt(math.inf)


def cat(tensors: Sequence[Tensor], dim: int = 0, *, out: Any = None) -> Tensor:
    if out is not None:
        return _write_out("cat", out, cat(tensors, dim))
    ts = [_t(t) for t in tensors]
    if not ts:
        raise RuntimeError(located("cat(): expected a non-empty list of Tensors"))
    ref = next((t for t in ts if t.shape != (0,)), ts[0])
    d = norm_dim("cat", dim, _builtins.max(ref.ndim, 1))
    return dispatch(R["cat"], ts, {"dim": d})


concat = cat
concatenate = cat


def stack(tensors: Sequence[Tensor], dim: int = 0, *, out: Any = None) -> Tensor:
    if out is not None:
        return _write_out("stack", out, stack(tensors, dim))
    ts = [_t(t) for t in tensors]
    if not ts:
        raise RuntimeError(located("stack expects a non-empty TensorList"))
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape:
            raise RuntimeError(located(f"stack expects each tensor to be equal size, but got "
                               f"{list(ts[0].shape)} at entry 0 and {list(t.shape)} at entry {i}"))
    d = norm_dim("stack", dim, ts[0].ndim + 1)
    return dispatch(R["cat"], [t.unsqueeze(d) for t in ts], {"dim": d})


def where(condition: Tensor, input: Any = None, other: Any = None, *, out: Any = None) -> Any:
    if input is None and other is None:
        return tuple(condition.nonzero().unbind(1))
    r = dispatch(R["where"], (condition, input, other))
    return r if out is None else _write_out("where", out, r)


def nonzero(input: Tensor, *, as_tuple: bool = False) -> Any:
    out = dispatch(R["nonzero"], (input,))
    return tuple(out.unbind(1)) if as_tuple else out


def allclose(input: Tensor, other: Tensor, rtol: float = 1e-5, atol: float = 1e-8,
             equal_nan: bool = False) -> bool:
    import numpy as np

    a, b = _t(input), _t(other)
    if a.device != b.device:
        raise RuntimeError(f"allclose: expected both tensors on the same device, got {a.device} "
                           f"and {b.device}; move one with .to(device)")
    if a.is_cuda:
        a, b = a.cpu(), b.cpu()
    return bool(np.allclose(a._data, b._data, rtol, atol, equal_nan))


def equal(input: Tensor, other: Tensor) -> bool:
    return input.shape == other.shape and bool((input == other).all())


def clamp(input: Tensor, min: Any = None, max: Any = None, *, out: Any = None) -> Tensor:
    r = input.clamp(min, max)
    return r if out is None else _write_out("clamp", out, r)


def reshape(input: Tensor, shape: Sequence[int]) -> Tensor:
    return _t(input).reshape(shape)


def permute(input: Tensor, dims: Sequence[int]) -> Tensor:
    return _t(input).permute(dims)


def split(tensor: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    return tensor.split(split_size_or_sections, dim)


def square(input: Tensor, *, out: Any = None) -> Tensor:
    r = input * input
    return r if out is None else _write_out("square", out, r)


clip = clamp


# torch's function forms that take out= (the others: views, splits, clone, detach, numel)
_OUT = {"add", "sub", "mul", "div", "true_divide", "pow", "maximum", "minimum", "sum", "prod",
        "amax", "amin", "argmax", "argmin", "max", "min", "all", "any", "gather", "index_select",
        "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "trunc",
        "floor_divide"}

for _n in ("add", "sub", "mul", "div", "true_divide", "pow", "maximum", "minimum", "sum", "prod",
           "amax", "amin", "argmax", "argmin", "max", "min", "all", "any", "reshape", "flatten",
           "unflatten", "squeeze", "unsqueeze", "transpose", "swapaxes", "permute", "t",
           "narrow", "split", "chunk", "unbind", "gather", "scatter_add", "index_select",
           "masked_fill", "clone", "detach", "eq", "ne", "lt", "le", "gt", "ge", "logical_and",
           "logical_or", "logical_not", "numel", "trunc", "repeat", "expand", "broadcast_to",
           "floor_divide"):
    if _n not in globals():
        globals()[_n] = _function(_n, getattr(Tensor, _n), _n in _OUT)
subtract, multiply, divide = globals()["sub"], globals()["mul"], globals()["div"]


def _norm_method(self: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False,
                 dtype: Any = None) -> Tensor:
    return norm(self, p, dim, keepdim, dtype=dtype)


_norm_method.__name__ = "norm"
for _n, _f in {"mean": mean, "var": var, "std": std, "logsumexp": logsumexp, "softmax": softmax,
               "log_softmax": log_softmax, "norm": _norm_method, "isnan": isnan, "isinf": isinf,
               "isfinite": isfinite, "square": square, "nonzero": nonzero}.items():
    setattr(Tensor, _n, _f)
