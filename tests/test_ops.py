"""The op table: one row per registered op and per composite in functional.py. Each row runs
through tracejit.testing: values in float32 against NumPy in float64 (with the registry's
shape/dtype rule checked on every dispatched op), gradients in float64 against central
differences, on broadcast, size-1, size-0 and non-contiguous inputs.

A row's `fn(m, *xs)` is written against the PyTorch API with `m` the library module, so
test_torch_compare.py runs the same rows with m = torch."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from test_conv import ref_conv, ref_conv_transpose
from test_pool_bn import (
    ref_adaptive_avg_pool2d,
    ref_avg_pool2d,
    ref_batch_norm_train,
    ref_max_pool2d,
)
from test_rng import ref_uniform

import tracejit
from tracejit.ops import REGISTRY, Kind
from tracejit.testing import _InferCheck, check_grad, check_op

# ---- argument specs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class A:
    """A float array of `shape`, uniform in [lo, hi) (rounded to integers when `ints`, so that
    comparisons see ties)."""

    shape: tuple[int, ...]
    lo: float = -2.0
    hi: float = 2.0
    ints: bool = False

    def make(self, rng: np.random.Generator) -> np.ndarray:
        a = np.asarray(rng.uniform(self.lo, self.hi, self.shape))
        return np.asarray(np.round(a)) if self.ints else a


def P(*shape: int) -> A:
    """Positive floats (log, sqrt, pow bases, denominators)."""
    return A(shape, 0.5, 2.0)


def F(*shape: int) -> A:
    return A(shape)


@dataclass(frozen=True)
class I:  # noqa: E742 - an index-array spec
    """An int64 array of `shape` with values in [0, high)."""

    shape: tuple[int, ...]
    high: int

    def make(self, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(rng.integers(0, self.high, self.shape), np.int64)


@dataclass(frozen=True)
class B:
    """A bool array of `shape`."""

    shape: tuple[int, ...]

    def make(self, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(rng.random(self.shape) < 0.5)


@dataclass(frozen=True)
class Row:
    name: str
    fn: Callable[..., Any]  # fn(m, *tensors), m = tracejit (or torch)
    ref: Callable[..., Any]  # ref(*arrays) in NumPy float64
    args: tuple[tuple[Any, ...], ...] = ((),)  # argument sets; the first also runs non-contiguous
    grad: bool = True
    xfail: str = ""  # why this row is expected to fail
    atol: float = 1e-5
    rtol: float = 1e-4
    grad_eps: float = 1e-6
    grad_atol: float = 1e-6
    out_dtypes: tuple[str, ...] | None = None
    torch_grad: str = ""  # why torch's gradient is not compared (test_torch_compare.py)

    def inputs(self, k: int) -> list[Any]:
        rng = np.random.default_rng(_seed(self, k))
        return [a.make(rng) if hasattr(a, "make") else a for a in self.args[k]]


def _seed(row: Row, k: int) -> int:
    return sum(map(ord, row.name)) * 31 + k  # stable across processes (hash() is salted)


def nn_functional(m: Any) -> Any:
    """torch.nn.functional, or tracejit.functional (tracejit.nn.functional when it exists)."""
    f = getattr(getattr(m, "nn", None), "functional", None)
    return f if f is not None and hasattr(f, "gelu") else m.functional


# ---- NumPy references ---------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _red(f: Callable[..., Any], **kw: Any) -> Callable[[np.ndarray], Any]:
    return lambda a: f(a, **kw)


def _logsumexp(a: np.ndarray, axis: Any, keepdims: bool = False) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _softmax(a: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _gelu_tanh(a: np.ndarray) -> np.ndarray:
    return 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))


def _softplus(a: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    return np.where(a * beta > threshold, a, np.log1p(np.exp(a * beta)) / beta)


def _scatter_add(x: np.ndarray, dim: int, idx: np.ndarray, src: np.ndarray) -> np.ndarray:
    out = x.copy()
    for pos in np.ndindex(idx.shape):
        tgt = list(pos)
        tgt[dim] = idx[pos]
        out[tuple(tgt)] += src[pos]
    return out


def _gather(x: np.ndarray, dim: int, idx: np.ndarray) -> np.ndarray:
    out = np.zeros(idx.shape)
    for pos in np.ndindex(idx.shape):
        src = list(pos)
        src[dim] = idx[pos]
        out[pos] = x[tuple(src)]
    return out


def _setitem(key: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """x.clone()[key] = v, for tracejit/torch and for NumPy."""

    def fn(m: Any, x: Any, v: Any) -> Any:
        y = x.clone()
        y[key] = v
        return y

    def ref(x: np.ndarray, v: Any) -> np.ndarray:
        y = x.copy()
        y[key] = v
        return y

    return fn, ref


def _relu_mask_fn(m: Any, x: Any) -> Any:
    y = x.clone() * 2  # grad_h = grad_h_relu.clone(); grad_h[h < 0] = 0
    y[x < 0] = 0
    return y


def _relu_mask_ref(a: np.ndarray) -> np.ndarray:
    y = np.array(a * 2)
    y[a < 0] = 0
    return y


def _inplace(name: str, *args: Any) -> Callable[..., Any]:
    def fn(m: Any, x: Any, *xs: Any) -> Any:
        y = x * 1  # a non-leaf, so in-place ops are allowed with autograd
        return getattr(y, name)(*xs, *args)

    return fn


# ---- argument sets ------------------------------------------------------------------------------

UN = ((F(3, 4),), (F(),), (F(0, 3),), (F(1, 5),))
UN_POS = ((P(3, 4),), (P(),), (P(0, 3),), (P(1, 5),))
BIN = ((F(3, 4), F(3, 4)), (F(3, 1), F(4)), (F(), F(2, 3)), (F(0, 3), F(1, 3)), (F(1, 4), F(3, 1)))
BIN_DEN = ((F(3, 4), P(3, 4)), (F(3, 1), P(4)), (F(), P(2, 3)), (F(0, 3), P(1, 3)))
BIN_TIES = ((A((3, 4), ints=True), A((3, 4), ints=True)),
            (A((3, 1), ints=True), A((4,), ints=True)),
            (A((), ints=True), A((2, 3), ints=True)), (F(0, 3), F(1, 3)))
BOOL2 = ((B((3, 4)), B((3, 4))), (B((3, 1)), B((4,))), (B((0, 2)), B((1, 2))))
RED = ((F(3, 4),), (F(2, 3, 4),), (F(1, 5),), (F(),))
INPLACE = ((F(3, 4), F(3, 4)), (F(3, 4), F(4)), (F(2, 3), F()))
INPLACE_DEN = ((F(3, 4), P(3, 4)), (F(3, 4), P(4)), (F(2, 3), P()))
MAT = ((F(3, 4), F(4, 5)), (F(1, 4), F(4, 1)), (F(0, 4), F(4, 2)), (F(3, 0), F(0, 2)))

ROWS: list[Row] = [
    # ---- elementwise unary (float)
    Row("neg", lambda m, x: -x, np.negative, UN),
    Row("neg_method", lambda m, x: x.neg(), np.negative, UN[:1]),
    Row("exp", lambda m, x: x.exp(), np.exp, UN),
    Row("log", lambda m, x: x.log(), np.log, UN_POS),
    Row("log1p", lambda m, x: x.log1p(), np.log1p, UN_POS),
    Row("expm1", lambda m, x: x.expm1(), np.expm1, UN),
    Row("sqrt", lambda m, x: x.sqrt(), np.sqrt, UN_POS),
    Row("rsqrt", lambda m, x: x.rsqrt(), lambda a: 1 / np.sqrt(a), UN_POS),
    Row("abs", lambda m, x: x.abs(), np.abs, UN),
    Row("sin", lambda m, x: x.sin(), np.sin, UN),
    Row("cos", lambda m, x: x.cos(), np.cos, UN),
    Row("tanh", lambda m, x: x.tanh(), np.tanh, UN),
    Row("sigmoid", lambda m, x: x.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), UN),
    Row("sigmoid_extreme", lambda m, x: (x * 60).sigmoid(), lambda a: 1 / (1 + np.exp(-60 * a)),
        UN[:1], grad_atol=1e-4),
    Row("erf", lambda m, x: x.erf(), _erf, UN),
    Row("relu", lambda m, x: x.relu(), lambda a: np.maximum(a, 0), UN),
    Row("sign", lambda m, x: x.sign(), np.sign, UN),
    Row("floor", lambda m, x: x.floor(), np.floor, UN),
    Row("ceil", lambda m, x: x.ceil(), np.ceil, UN),
    Row("round", lambda m, x: (x * 3).round(), lambda a: np.round(a * 3), UN),
    Row("trunc", lambda m, x: (x * 3).trunc(), lambda a: np.trunc(a * 3), UN),
    Row("square", lambda m, x: x.square(), np.square, UN[:2]),
    # ---- elementwise binary
    Row("add", lambda m, a, b: a + b, np.add, BIN),
    Row("add_alpha", lambda m, a, b: a.add(b, alpha=2), lambda a, b: a + 2 * b, BIN[:2]),
    Row("sub", lambda m, a, b: a - b, np.subtract, BIN),
    Row("mul", lambda m, a, b: a * b, np.multiply, BIN),
    Row("div", lambda m, a, b: a / b, np.divide, BIN_DEN),
    Row("floordiv", lambda m, a, b: a // b, np.floor_divide, BIN_DEN[:2],
        torch_grad="torch has no derivative for floor_divide (tracejit's is zero)"),
    Row("pow", lambda m, a, b: a**b, np.power, ((P(3, 4), F(3, 4)), (P(3, 1), F(4)),
                                                (P(), F(2, 3)), (P(0, 3), F(1, 3)))),
    Row("pow_scalar", lambda m, x: x**3, lambda a: a**3, UN),
    Row("pow_half", lambda m, x: x.pow(0.5), np.sqrt, UN_POS),
    Row("pow_zero", lambda m, x: x.pow(0), lambda a: a**0, UN[:2]),
    Row("rpow", lambda m, x: 2**x, lambda a: 2.0**a, UN),
    Row("maximum", lambda m, a, b: a.maximum(b), np.maximum, BIN),
    Row("minimum", lambda m, a, b: m.minimum(a, b), np.minimum, BIN),
    Row("maximum_ties", lambda m, a, b: a.maximum(b), np.maximum, BIN_TIES, grad=False),
    Row("radd", lambda m, x: 1.5 + x, lambda a: 1.5 + a, UN[:2]),
    Row("rsub", lambda m, x: 2 - x, lambda a: 2 - a, UN[:2]),
    Row("rmul", lambda m, x: 2.5 * x, lambda a: 2.5 * a, UN[:2]),
    Row("rdiv", lambda m, x: 1 / x, lambda a: 1 / a, UN_POS[:2]),
    Row("eq", lambda m, a, b: a == b, np.equal, BIN_TIES, grad=False),
    Row("ne", lambda m, a, b: a != b, np.not_equal, BIN_TIES, grad=False),
    Row("lt", lambda m, a, b: a < b, np.less, BIN_TIES, grad=False),
    Row("le", lambda m, a, b: a <= b, np.less_equal, BIN_TIES, grad=False),
    Row("gt", lambda m, a, b: a > b, np.greater, BIN_TIES, grad=False),
    Row("ge", lambda m, a, b: a >= b, np.greater_equal, BIN_TIES, grad=False),
    Row("gt_scalar", lambda m, x: x > 0.5, lambda a: a > 0.5, UN, grad=False),
    Row("logical_and", lambda m, a, b: a.logical_and(b), np.logical_and, BOOL2, grad=False),
    Row("logical_or", lambda m, a, b: a | b, np.logical_or, BOOL2, grad=False),
    Row("logical_not", lambda m, a: a.logical_not(), np.logical_not, ((B((3, 4)),), (B(()),)),
        grad=False),
    Row("where", lambda m, c, a, b: m.where(c, a, b), np.where,
        ((B((3, 4)), F(3, 4), F(3, 4)), (B((3, 1)), F(4), F(3, 4)), (B(()), F(2, 3), F()),
         (B((0, 3)), F(1, 3), F(3)))),
    Row("where_scalar", lambda m, x: m.where(x > 0, x, 0.0), lambda a: np.where(a > 0, a, 0.0),
        UN),
    Row("clamp", lambda m, x: x.clamp(-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), UN),
    Row("clamp_min", lambda m, x: x.clamp(min=0), lambda a: np.maximum(a, 0), UN),
    Row("clamp_max", lambda m, x: x.clip(max=0.3), lambda a: np.minimum(a, 0.3), UN),
    Row("clamp_tensor", lambda m, x, lo: x.clamp(min=lo), np.maximum, BIN[:2]),
    Row("masked_fill", lambda m, x: x.masked_fill(x > 0, -1.0), lambda a: np.where(a > 0, -1, a),
        UN),
    # ---- dtypes and casts
    Row("cast_double", lambda m, x: x.double() * 1, lambda a: a, UN[:2],
        out_dtypes=("float64",), grad_eps=1e-3, grad_atol=1e-4),
    Row("cast_float", lambda m, x: x.float().double(), lambda a: a, UN[:1],
        out_dtypes=("float64",), atol=1e-6, grad_eps=1e-2, grad_atol=1e-4),
    Row("cast_long", lambda m, x: (x * 3).long(), lambda a: np.trunc(a * 3).astype(np.int64),
        UN, grad=False),
    Row("int_add", lambda m, x: (x * 3).long() + (x * 2).long(),
        lambda a: np.trunc(a * 3).astype(np.int64) + np.trunc(a * 2).astype(np.int64), UN[:2],
        grad=False),
    Row("int_times_float", lambda m, x: (x * 3).long() * 2.5,
        lambda a: np.trunc(a * 3) * 2.5, UN[:2], grad=False),
    Row("int_div", lambda m, x: (x * 3).long() / 2, lambda a: np.trunc(a * 3) / 2, UN[:2],
        grad=False),
    Row("bool_sum", lambda m, x: (x > 0).sum(), lambda a: np.sum(a > 0), UN, grad=False),
    # ---- reductions
    Row("sum", lambda m, x: x.sum(), np.sum, RED + ((F(0, 3),),)),
    Row("sum_dim", lambda m, x: x.sum(-1), _red(np.sum, axis=-1), RED[:3] + ((F(0, 3),),)),
    Row("sum_dim0_empty", lambda m, x: x.sum(0), _red(np.sum, axis=0), ((F(0, 3),),)),
    Row("sum_dims_keepdim", lambda m, x: x.sum((0, 1), keepdim=True),
        _red(np.sum, axis=(0, 1), keepdims=True), RED[:3]),
    Row("prod", lambda m, x: x.prod(1), _red(np.prod, axis=1), RED[:3] + ((F(0, 3),),)),
    Row("prod_zeros", lambda m, x: (x * (x.abs() > 1)).prod(1),
        lambda a: np.prod(a * (np.abs(a) > 1), axis=1), ((F(4, 5),),)),
    Row("amax", lambda m, x: x.amax(-1), _red(np.max, axis=-1), RED[:3]),
    Row("amin", lambda m, x: x.amin((0, 1), keepdim=True), _red(np.min, axis=(0, 1), keepdims=True),
        RED[:3]),
    Row("max_all", lambda m, x: x.max(), np.max, RED),
    Row("min_all", lambda m, x: x.min(), np.min, RED),
    Row("max_dim", lambda m, x: x.max(1), lambda a: (a.max(1), a.argmax(1)), RED[:3]),
    Row("min_dim_keepdim", lambda m, x: x.min(0, keepdim=True),
        lambda a: (a.min(0, keepdims=True), a.argmin(0, keepdims=True)), RED[:3]),
    Row("max_binary", lambda m, a, b: a.max(b), np.maximum, BIN[:2]),
    Row("argmax", lambda m, x: x.argmax(), np.argmax, RED, grad=False),
    Row("argmax_dim", lambda m, x: x.argmax(1, keepdim=True),
        lambda a: a.argmax(1, keepdims=True), RED[:3], grad=False),
    Row("argmin_dim", lambda m, x: x.argmin(-1), lambda a: a.argmin(-1), RED[:3], grad=False),
    Row("all", lambda m, x: (x > -1).all(), lambda a: np.all(a > -1), RED + ((F(0, 3),),),
        grad=False),
    Row("any_dim", lambda m, x: (x > 1).any(1), lambda a: np.any(a > 1, 1), RED[:3] +
        ((F(0, 3),),), grad=False),
    Row("mean", lambda m, x: x.mean(), np.mean, RED),
    Row("mean_dim", lambda m, x: x.mean(1, keepdim=True), _red(np.mean, axis=1, keepdims=True),
        RED[:3] + ((F(0, 3),),)),
    Row("var", lambda m, x: x.var(), lambda a: np.var(a, ddof=1), RED[:3]),
    Row("var_dim_biased", lambda m, x: x.var(1, unbiased=False), _red(np.var, axis=1), RED[:3]),
    Row("std", lambda m, x: x.std(0), lambda a: np.std(a, axis=0, ddof=1), RED[:2]),
    Row("logsumexp", lambda m, x: x.logsumexp(1), lambda a: _logsumexp(a, 1), RED[:3]),
    Row("logsumexp_big", lambda m, x: (x * 100).logsumexp(-1),
        lambda a: _logsumexp(a * 100, -1), RED[:1], rtol=1e-4, atol=1e-4, grad_atol=1e-5),
    Row("softmax", lambda m, x: x.softmax(-1), lambda a: _softmax(a, -1), RED[:3]),
    Row("softmax_fn", lambda m, x: m.softmax(x * 50, 0), lambda a: _softmax(a * 50, 0), RED[:1],
        grad_atol=1e-5),
    Row("log_softmax", lambda m, x: x.log_softmax(1),
        lambda a: np.log(_softmax(a, 1)), RED[:3]),
    Row("norm", lambda m, x: x.norm(), lambda a: np.sqrt(np.sum(a * a)), RED[:3]),
    # ---- activations (composites)
    Row("gelu", lambda m, x: nn_functional(m).gelu(x), lambda a: 0.5 * a * (1 + _erf(a / 2**0.5)),
        UN),
    Row("gelu_tanh", lambda m, x: nn_functional(m).gelu(x, approximate="tanh"), _gelu_tanh, UN),
    Row("silu", lambda m, x: nn_functional(m).silu(x), lambda a: a / (1 + np.exp(-a)), UN),
    Row("softplus", lambda m, x: nn_functional(m).softplus(x), _softplus, UN),
    Row("softplus_beta", lambda m, x: nn_functional(m).softplus(x * 10, beta=2, threshold=15),
        lambda a: _softplus(a * 10, 2, 15), UN[:1], grad_atol=1e-5),
    Row("leaky_relu", lambda m, x: nn_functional(m).leaky_relu(x, 0.1),
        lambda a: np.where(a > 0, a, 0.1 * a), UN),
    # ---- movement
    Row("reshape", lambda m, x: x.reshape(4, -1), lambda a: a.reshape(4, -1), ((F(3, 4),),
                                                                               (F(2, 2, 3),))),
    Row("reshape_empty", lambda m, x: x.reshape(-1, 3, 2), lambda a: a.reshape(-1, 3, 2),
        ((F(0, 6),),)),
    Row("view", lambda m, x: x.contiguous().view(2, 6), lambda a: a.reshape(2, 6), ((F(3, 4),),)),
    Row("flatten", lambda m, x: x.flatten(1),
        lambda a: a.reshape(a.shape[0], math.prod(a.shape[1:])),
        ((F(2, 3, 4),), (F(1, 1, 1),), (F(0, 2, 3),))),
    Row("flatten_0d", lambda m, x: x.flatten(), lambda a: a.reshape(1), ((F(),),)),
    Row("unflatten", lambda m, x: x.unflatten(1, (2, -1)),
        lambda a: a.reshape(a.shape[0], 2, a.shape[1] // 2),
        ((F(3, 4),), (F(0, 6),))),
    Row("squeeze", lambda m, x: x.squeeze(), np.squeeze, ((F(1, 3, 1),), (F(2, 3),), (F(1),))),
    Row("squeeze_dim", lambda m, x: x.squeeze(0), lambda a: a[0] if a.shape[0] == 1 else a,
        ((F(1, 3, 1),), (F(2, 3),))),
    Row("unsqueeze", lambda m, x: x.unsqueeze(-1), lambda a: a[..., None], ((F(3, 4),), (F(),))),
    Row("transpose", lambda m, x: x.transpose(0, 2), lambda a: a.transpose(2, 1, 0),
        ((F(2, 3, 4),), (F(1, 0, 2),))),
    Row("permute", lambda m, x: x.permute(1, 2, 0), lambda a: a.transpose(1, 2, 0),
        ((F(2, 3, 4),),)),
    Row("t", lambda m, x: x.t(), lambda a: a.T, ((F(3, 4),), (F(4),), (F(),))),
    Row("T", lambda m, x: x.T, lambda a: a.T, ((F(3, 4),),)),  # (torch deprecates .T on n-d)
    Row("mT", lambda m, x: x.mT, lambda a: np.swapaxes(a, -1, -2), ((F(2, 3, 4),),)),
    Row("expand", lambda m, x: x.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)),
        ((F(3, 1),), (F(4),), (F(),))),
    Row("expand_keep", lambda m, x: x.expand(-1, 4), lambda a: np.broadcast_to(a, (3, 4)),
        ((F(3, 1),),)),
    Row("repeat", lambda m, x: x.repeat(2, 3), lambda a: np.tile(a, (2, 3)), ((F(2, 3),), (F(3),),
                                                                             (F(0, 2),))),
    Row("cat", lambda m, a, b: m.cat([a, b], 1), lambda a, b: np.concatenate([a, b], 1),
        ((F(2, 3), F(2, 4)), (F(2, 0), F(2, 1)), (F(0, 3), F(0, 1)))),
    Row("cat_dim0_three", lambda m, a, b: m.cat([a, b, a], 0),
        lambda a, b: np.concatenate([a, b, a], 0), ((F(2, 3), F(1, 3)),)),
    Row("stack", lambda m, a, b: m.stack([a, b], -1), lambda a, b: np.stack([a, b], -1),
        ((F(2, 3), F(2, 3)), (F(), F()))),
    Row("split", lambda m, x: x.split(2, 1), lambda a: np.split(a, [2, 4], 1), ((F(3, 5),),)),
    Row("split_sizes", lambda m, x: x.split([1, 3], 0), lambda a: np.split(a, [1], 0),
        ((F(4, 2),),)),
    Row("chunk", lambda m, x: x.chunk(3, -1), lambda a: np.array_split(a, 3, -1), ((F(2, 6),),)),
    Row("narrow", lambda m, x: x.narrow(1, 1, 2), lambda a: a[:, 1:3], ((F(3, 4),), (F(0, 4),))),
    Row("contiguous", lambda m, x: x.t().contiguous(), lambda a: a.T.copy(), ((F(3, 4),),)),
    Row("clone", lambda m, x: x.clone(), lambda a: a.copy(), UN),
    Row("unbind", lambda m, x: x.unbind(1), lambda a: [a[:, i] for i in range(a.shape[1])],
        ((F(2, 3),),)),
    # ---- indexing
    Row("getitem_int", lambda m, x: x[1], lambda a: a[1], ((F(3, 4),), (F(2, 3, 4),))),
    Row("getitem_neg", lambda m, x: x[-1, 2], lambda a: a[-1, 2], ((F(3, 4),),)),
    Row("getitem_slice", lambda m, x: x[1:, :3], lambda a: a[1:, :3], ((F(3, 4),), (F(0, 4),))),
    Row("getitem_step", lambda m, x: x[::2, 1::2], lambda a: a[::2, 1::2], ((F(5, 4),),)),
    Row("getitem_none_ellipsis", lambda m, x: x[None, ..., 1], lambda a: a[None, ..., 1],
        ((F(2, 3, 4),),)),
    Row("getitem_empty_slice", lambda m, x: x[3:1], lambda a: a[3:1], ((F(4, 2),),)),
    Row("getitem_mask", lambda m, x: x[x > 0], lambda a: a[a > 0],
        ((F(3, 4),), (F(0, 3),), (F(),), (A((), 0.5, 1.0),))),
    Row("getitem_row_mask", lambda m, x, k: x[k], lambda a, k: a[k], ((F(4, 3), B((4,))),)),
    Row("getitem_intarray", lambda m, x, i: x[i], lambda a, i: a[i],
        ((F(4, 3), I((5,), 4)), (F(4, 3), I((2, 2), 4)))),
    Row("getitem_intarray_dim1", lambda m, x, i: x[:, i], lambda a, i: a[:, i],
        ((F(3, 4), I((5,), 4)),)),
    Row("getitem_two_arrays", lambda m, x, i, j: x[i, j], lambda a, i, j: a[i, j],
        ((F(3, 4), I((5,), 3), I((5,), 4)),)),
    Row("index_select", lambda m, x, i: x.index_select(1, i), lambda a, i: a[:, i],
        ((F(3, 4), I((6,), 4)), (F(3, 4), I((0,), 4)))),
    Row("gather", lambda m, x, i: x.gather(1, i), lambda a, i: _gather(a, 1, i),
        ((F(3, 4), I((3, 5), 4)), (F(3, 4), I((2, 2), 4)))),
    Row("scatter_add", lambda m, x, i, s: x.scatter_add(0, i, s),
        lambda a, i, s: _scatter_add(a, 0, i, s), ((F(3, 4), I((5, 4), 3), F(5, 4)),
                                                   (F(3, 4), I((2, 4), 3), F(2, 4)))),
    Row("scatter_add_small_index", lambda m, x, i, s: x.scatter_add(0, i, s),
        lambda a, i, s: _scatter_add(a, 0, i, s), ((F(3, 4), I((2, 2), 3), F(3, 3)),),
        torch_grad="torch 2.13 rejects its own src gradient when index is smaller than src"),
    Row("nonzero", lambda m, x: (x > 0).nonzero(), lambda a: np.argwhere(a > 0), UN[:3],
        grad=False),
    Row("setitem_slice", *_setitem((slice(1, None), slice(None, None, 2))),
        ((F(3, 4), F(2, 2)), (F(3, 4), F(2, 1)), (F(3, 4), 1.5))),
    Row("setitem_int", *_setitem(1), ((F(3, 4), F(4)), (F(3, 4), 0.0))),
    Row("setitem_mask", _relu_mask_fn, _relu_mask_ref, UN),
    Row("setitem_intarray", *_setitem(np.array([2, 0])), ((F(3, 4), F(2, 4)), (F(3, 4), 7.0))),
    # ---- in place (on a non-leaf)
    Row("add_", _inplace("add_"), np.add, INPLACE),
    Row("sub_", _inplace("sub_"), np.subtract, INPLACE),
    Row("mul_", _inplace("mul_"), np.multiply, INPLACE),
    Row("div_", _inplace("div_"), np.divide, INPLACE_DEN),
    Row("clamp_", _inplace("clamp_", -0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5), UN[:2]),
    Row("copy_", _inplace("copy_"), lambda a, b: np.broadcast_to(b, a.shape).copy(), INPLACE),
    Row("fill_", _inplace("fill_", 2.0), lambda a: np.full_like(a, 2.0), UN[:2]),
    Row("zero_", _inplace("zero_"), np.zeros_like, UN[:2]),
    # ---- contractions
    Row("matmul", lambda m, a, b: a @ b, np.matmul, MAT),
    Row("matmul_batched", lambda m, a, b: m.matmul(a, b), np.matmul,
        ((F(2, 3, 4), F(4, 5)), (F(3, 4), F(2, 4, 5)), (F(2, 1, 3, 4), F(3, 4, 2)))),
    Row("matmul_vec", lambda m, a, b: a.matmul(b), np.matmul,
        ((F(4), F(4, 3)), (F(3, 4), F(4)), (F(4), F(4)), (F(2, 3, 4), F(4)))),
    Row("mm", lambda m, a, b: a.mm(b), np.matmul, MAT[:2]),
    Row("mm_transposed", lambda m, a, b: a.t().mm(b), lambda a, b: a.T @ b, ((F(4, 3), F(4, 2)),)),
    Row("bmm", lambda m, a, b: m.bmm(a, b), np.matmul, ((F(2, 3, 4), F(2, 4, 5)),)),
    Row("addmm", lambda m, c, a, b: m.addmm(c, a, b), lambda c, a, b: c + a @ b,
        ((F(3, 5), F(3, 4), F(4, 5)), (F(5), F(3, 4), F(4, 5)))),
    Row("addmm_scaled", lambda m, c, a, b: m.addmm(c, a, b, beta=0.5, alpha=2),
        lambda c, a, b: 0.5 * c + 2 * (a @ b), ((F(3, 5), F(3, 4), F(4, 5)),)),
    # ---- creation
    Row("full", lambda m: m.full((2, 3), 1.5), lambda: np.full((2, 3), 1.5)),
    Row("zeros", lambda m: m.zeros(2, 0), lambda: np.zeros((2, 0))),
    Row("ones_like", lambda m, x: m.ones_like(x) + x, lambda a: 1 + a, UN),
    Row("arange", lambda m: m.arange(5), lambda: np.arange(5)),
    Row("arange_float", lambda m: m.arange(0.5, 2.0, 0.25), lambda: np.arange(0.5, 2.0, 0.25)),
    Row("arange_neg_step", lambda m: m.arange(3, -3, -2), lambda: np.arange(3, -3, -2)),
    Row("linspace", lambda m: m.linspace(-1, 1, 5), lambda: np.linspace(-1, 1, 5)),
    Row("eye", lambda m: m.eye(3, 4), lambda: np.eye(3, 4)),
    # ---- random (philox): against tests/test_rng.py's own NumPy Philox
    Row("rand", lambda m: m.rand(3, 5, generator=m.Generator().manual_seed(7)),
        lambda: ref_uniform(7, 15, False).reshape(3, 5), grad=False, atol=0, rtol=0),
]
# rows whose values are draws of a generator: compared against a NumPy Philox here; eager vs
# compiled from the same seed is tests/test_rng.py's (a replayed draw differs by design), and
# torch's streams are not tracejit's
RANDOM_ROWS = {"rand"}


# ---- tril/triu, cumsum, sort/argsort/topk, einsum (tracejit/tensor_ops.py, contractions.py)


def _stable_order(a: np.ndarray, axis: int, descending: bool = False) -> np.ndarray:
    """Indices of a stable sort (ties in index order), also descending (no NaN here)."""
    return np.argsort(-a if descending else a, axis=axis, kind="stable")


def _sort_ref(axis: int, descending: bool = False) -> Callable[[np.ndarray], Any]:
    def ref(a: np.ndarray) -> Any:
        idx = _stable_order(a, axis, descending)
        return np.take_along_axis(a, idx, axis), idx

    return ref


def _topk_ref(k: int, axis: int, largest: bool = True) -> Callable[[np.ndarray], Any]:
    def ref(a: np.ndarray) -> Any:
        idx = np.take(_stable_order(a, axis, largest), np.arange(k), axis=axis)
        return np.take_along_axis(a, idx, axis), idx

    return ref


def _einsum(name: str, eq: str, *args: tuple[Any, ...], **kw: Any) -> Row:
    return Row(f"einsum_{name}", lambda m, *xs: m.einsum(eq, *xs),
               lambda *a: np.einsum(eq, *a), args, **kw)


TRI = ((F(3, 4),), (F(2, 3, 4),), (F(0, 3),), (F(1, 1),), (F(4, 2),))
SDPA = ((F(4, 5), F(6, 5), F(6, 3)), (F(2, 3, 4, 5), F(2, 3, 6, 5), F(2, 3, 6, 3)),
        (F(1, 2), F(1, 2), F(1, 2)), (F(3, 2), F(0, 2), F(0, 4)))


def _sdpa_ref(causal: bool = False, scale: float | None = None) -> Callable[..., np.ndarray]:
    """softmax(q k^T * scale (+ mask)) v in float64; causal: key j <= query i."""
    def ref(q: np.ndarray, k: np.ndarray, v: np.ndarray,
            m: np.ndarray | None = None) -> np.ndarray:
        s = q @ np.swapaxes(k, -1, -2) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
        if causal:
            s = np.where(np.arange(s.shape[-2])[:, None] >= np.arange(s.shape[-1]), s, -np.inf)
        if m is not None:
            s = s + m
        if s.shape[-1] == 0:
            return np.zeros(s.shape[:-1] + (v.shape[-1],))
        return _softmax(s, -1) @ v
    return ref


def _sdpa(**kw: Any) -> Callable[..., Any]:
    return lambda m, q, k, v, *mask: nn_functional(m).scaled_dot_product_attention(
        q, k, v, *mask, **kw)


ROWS += [
    Row("sdpa", _sdpa(), _sdpa_ref(), SDPA),
    Row("sdpa_causal_scale", _sdpa(is_causal=True, scale=0.3), _sdpa_ref(True, 0.3), SDPA[:3]),
    Row("sdpa_float_mask", _sdpa(), _sdpa_ref(), ((F(4, 5), F(6, 5), F(6, 3), F(4, 6)),
                                                   (F(2, 4, 5), F(2, 6, 5), F(2, 6, 3), F(6)))),
]

ALONG = ((F(3, 4),), (F(2, 3, 4),), (F(0, 3),), (F(1, 5),))
TIES = ((A((3, 6), ints=True),), (A((2, 3, 4), ints=True),))

ROWS += [
    Row("tril", lambda m, x: x.tril(), np.tril, TRI),
    Row("tril_diag", lambda m, x: m.tril(x, 1), lambda a: np.tril(a, 1), TRI[:2]),
    Row("tril_beyond", lambda m, x: x.tril(-5), lambda a: np.tril(a, -5), TRI[:2]),
    Row("triu", lambda m, x: m.triu(x), np.triu, TRI),
    Row("triu_diag", lambda m, x: x.triu(-1), lambda a: np.triu(a, -1), TRI[:2]),
    Row("triu_beyond", lambda m, x: x.triu(7), lambda a: np.triu(a, 7), TRI[:1]),
    Row("tril_", _inplace("tril_", 1), lambda a: np.tril(a, 1), TRI[:2]),
    Row("triu_", _inplace("triu_"), np.triu, TRI[:2]),
    Row("tril_long", lambda m, x: (x * 3).long().tril(), lambda a: np.tril(np.trunc(a * 3))
        .astype(np.int64), TRI[:2], grad=False),
    Row("cumsum", lambda m, x: x.cumsum(1), lambda a: np.cumsum(a, 1), ALONG),
    Row("cumsum_neg_dim", lambda m, x: m.cumsum(x, -1), lambda a: np.cumsum(a, -1),
        ALONG + ((F(2, 3, 1),),)),
    Row("cumsum_dim0", lambda m, x: x.cumsum(0), lambda a: np.cumsum(a, 0), ALONG),
    Row("cumsum_0d", lambda m, x: x.cumsum(0), lambda a: a.copy(), ((F(),),)),
    Row("cumsum_dtype", lambda m, x: m.cumsum(x, 0, dtype=m.float64), lambda a: np.cumsum(a, 0),
        ALONG[:2], out_dtypes=("float64",), grad_eps=1e-3, grad_atol=1e-4),
    Row("cumsum_long", lambda m, x: (x * 3).long().cumsum(1),
        lambda a: np.cumsum(np.trunc(a * 3).astype(np.int64), 1), ALONG, grad=False),
    Row("cumsum_int32", lambda m, x: (x * 3).int().cumsum(0),
        lambda a: np.cumsum(np.trunc(a * 3).astype(np.int64), 0), ALONG[:2], grad=False),
    Row("cumsum_bool", lambda m, x: (x > 0).cumsum(-1), lambda a: np.cumsum(a > 0, -1),
        ALONG[:2], grad=False),
    Row("sort", lambda m, x: x.sort(), _sort_ref(-1), ALONG),
    Row("sort_desc_dim0", lambda m, x: m.sort(x, 0, descending=True), _sort_ref(0, True), ALONG),
    Row("sort_0d", lambda m, x: x.sort(), lambda a: (a.copy(), np.zeros((), np.int64)), ((F(),),)),
    Row("sort_ties_stable", lambda m, x: x.sort(dim=1, stable=True), _sort_ref(1), TIES,
        grad=False),
    Row("sort_ties_stable_desc", lambda m, x: m.sort(x, dim=-1, descending=True, stable=True),
        _sort_ref(-1, True), TIES, grad=False),
    Row("sort_long", lambda m, x: (x * 3).long().sort(dim=0, stable=True),
        lambda a: _sort_ref(0)(np.trunc(a * 3).astype(np.int64)), ALONG, grad=False),
    Row("argsort", lambda m, x: x.argsort(), lambda a: _stable_order(a, -1), ALONG, grad=False),
    Row("argsort_desc", lambda m, x: m.argsort(x, dim=0, descending=True, stable=True),
        lambda a: _stable_order(a, 0, True), ALONG + TIES, grad=False),
    Row("topk", lambda m, x: x.topk(2), _topk_ref(2, -1), ALONG),
    Row("topk_smallest_dim0", lambda m, x: m.topk(x, 1, dim=0, largest=False),
        _topk_ref(1, 0, largest=False), ALONG[:2] + ((F(1, 5),),)),
    Row("topk_all", lambda m, x: x.topk(4, 1), _topk_ref(4, 1), ((F(3, 4),), (F(0, 4),))),
    Row("topk_k0", lambda m, x: x.topk(0), _topk_ref(0, -1), ALONG[:2]),
    Row("topk_long", lambda m, x: (x * 3).long().topk(2, dim=0),
        lambda a: _topk_ref(2, 0)(np.trunc(a * 3).astype(np.int64)), ALONG[:2], grad=False),
    _einsum("matmul", "ij,jk->ik", (F(3, 4), F(4, 5)), (F(1, 4), F(4, 1)), (F(0, 4), F(4, 2)),
            (F(3, 0), F(0, 2))),
    _einsum("implicit", "ij,jk", (F(3, 4), F(4, 5))),
    _einsum("bmm", "bij,bjk->bik", (F(2, 3, 4), F(2, 4, 5)), (F(1, 3, 4), F(1, 4, 1))),
    _einsum("outer", "i,j->ij", (F(3), F(4)), (F(0), F(2))),
    _einsum("dot", "i,i", (F(5), F(5)), (F(0), F(0))),
    _einsum("trace", "ii", (F(4, 4),), (F(1, 1),), (F(0, 0),)),
    _einsum("diagonal", "ii->i", (F(4, 4),)),
    _einsum("diagonal_batched", "bii,bi->bi", (F(2, 3, 3), F(2, 3))),
    _einsum("transpose", "ij->ji", (F(3, 4),)),
    _einsum("sum_index", "ijk->j", (F(2, 3, 4),)),
    _einsum("sum_all", "ij->", (F(3, 4),)),
    _einsum("hadamard", "ij,ij->ij", (F(3, 4), F(3, 4))),
    _einsum("batched_dot", "bi,bi->b", (F(3, 4), F(3, 4))),
    _einsum("bilinear", "bn,anm,bm->ba", (F(2, 3), F(4, 3, 5), F(2, 5))),
    _einsum("attention", "bhqd,bhkd->bhqk", (F(2, 3, 4, 5), F(2, 3, 6, 5))),
    _einsum("attention_values", "bhqk,bhkd->bhqd", (F(2, 3, 4, 6), F(2, 3, 6, 5))),
    _einsum("ellipsis", "...ij,...jk->...ik", (F(2, 3, 4), F(4, 5)), (F(3, 4), F(2, 4, 5))),
    _einsum("ellipsis_implicit", "i...->...", (F(3, 2, 4),)),
    _einsum("broadcast_one", "ij,ij->i", (F(3, 1), F(3, 4))),
    _einsum("uppercase", "Ab,bA", (F(2, 3), F(3, 2))),
    Row("einsum_list", lambda m, a, b: m.einsum("ij,kj->ik", [a, b]),
        lambda a, b: np.einsum("ij,kj->ik", a, b), ((F(3, 4), F(2, 4)),)),
    Row("einsum_long", lambda m, a, b: m.einsum("ij,jk->ik", (a * 3).long(), (b * 3).long()),
        lambda a, b: np.einsum("ij,jk->ik", np.trunc(a * 3).astype(np.int64),
                               np.trunc(b * 3).astype(np.int64)), ((F(3, 4), F(4, 2)),),
        grad=False),
]

# convolutions (ops/conv.py): a conv2d row's gradient reaches conv_transpose and
# conv_weight_grad; the references are tests/test_conv.py's direct loops
ROWS += [
    Row("conv2d", lambda m, x, w, b: nn_functional(m).conv2d(x, w, b, stride=(2, 1), padding=1,
                                                             groups=2),
        lambda x, w, b: ref_conv(x, w, b, stride=(2, 1), padding=1, groups=2),
        ((F(2, 4, 5, 6), F(6, 2, 3, 2), F(6)), (F(1, 2, 1, 1), F(2, 1, 3, 3), F(2)))),
    Row("conv_transpose1d", lambda m, x, w: nn_functional(m).conv_transpose1d(
        x, w, stride=2, padding=1, output_padding=1),
        lambda x, w: ref_conv_transpose(x, w, None, stride=2, padding=1, output_padding=1),
        ((F(2, 3, 5), F(3, 2, 3)),)),
]

POOL = ((F(2, 3, 6, 5),), (F(3, 5, 4),), (F(0, 2, 4, 4),), (F(1, 1, 1, 1),))


def _bn_eval_ref(x: np.ndarray, rm: np.ndarray, rv: np.ndarray, w: np.ndarray,
                 b: np.ndarray) -> np.ndarray:
    s = (1, -1) + (1,) * (x.ndim - 2)
    return (x - rm.reshape(s)) / np.sqrt(rv.reshape(s) + 1e-5) * w.reshape(s) + b.reshape(s)


ROWS += [  # pooling and batch norm (issue 15; more cases in test_pool_bn.py)
    Row("max_pool2d", lambda m, x: nn_functional(m).max_pool2d(x, 2, 1, 1, ceil_mode=True),
        lambda a: ref_max_pool2d(a, 2, 1, 1, 1, True)[0], POOL),
    Row("avg_pool2d", lambda m, x: nn_functional(m).avg_pool2d(x, 3, 2, 1, True, False),
        lambda a: ref_avg_pool2d(a, 3, 2, 1, True, False), POOL),
    Row("adaptive_avg_pool2d", lambda m, x: nn_functional(m).adaptive_avg_pool2d(x, (2, 3)),
        lambda a: ref_adaptive_avg_pool2d(a, (2, 3)), POOL),
    Row("batch_norm_train", lambda m, x, w, b: nn_functional(m).batch_norm(
        x, None, None, w, b, training=True),
        lambda x, w, b: ref_batch_norm_train(x, w, b, 1e-5)[0],
        ((F(4, 3, 2, 2), F(3), F(3)), (F(5, 2), F(2), F(2))), grad_atol=1e-5),
    Row("batch_norm_eval", lambda m, x, rm, rv, w, b: nn_functional(m).batch_norm(
        x, rm, rv, w, b), _bn_eval_ref,
        ((F(2, 3, 2, 2), F(3), P(3), F(3), F(3)), (F(4, 2, 3), F(2), P(2), F(2), F(2))),
        torch_grad="torch's batch_norm refuses running statistics that require grad"),
]

BY_NAME = {r.name: r for r in ROWS}


def cases(rows: list[Row]) -> list[Any]:
    """(row, argument set, layout) triples: every set contiguous, the first one also stored
    transposed and strided."""
    out = []
    for r in rows:
        for k in range(len(r.args)):
            layouts = ["contiguous"]
            if k == 0 and any(getattr(a, "shape", ()) != () for a in r.args[0]):
                layouts += ["transposed", "strided"]
            for lay in layouts:
                marks = [pytest.mark.xfail(reason=r.xfail, strict=True)] if r.xfail else []
                out.append(pytest.param(r, k, lay, id=f"{r.name}-{k}-{lay[0]}", marks=marks))
    return out


def repro(request: pytest.FixtureRequest, e: BaseException) -> AssertionError:
    return AssertionError(f"{e}\n  repeat with: python -m pytest '{request.node.nodeid}'")


@pytest.mark.parametrize("row,k,layout", cases(ROWS))
def test_op(row: Row, k: int, layout: str, request: pytest.FixtureRequest) -> None:
    xs = row.inputs(k)
    try:
        check_op(lambda *ts: row.fn(tracejit, *ts), row.ref, *xs, layout=layout,
                 atol=row.atol, rtol=row.rtol, out_dtypes=row.out_dtypes)
        if row.grad:
            check_grad(lambda *ts: row.fn(tracejit, *ts), *xs, layout=layout, eps=row.grad_eps,
                       atol=row.grad_atol)
    except Exception as e:
        raise repro(request, e) from e


# ops that only a pass makes, after autodiff (no Tensor method or VJP dispatches them), and
# where their values are tested instead
PASS_MADE = {
    "conv_im2col": "passes/conv.py; tests/test_conv_fuse.py",
    "conv_gemm": "passes/conv.py; tests/test_conv_fuse.py",
    "conv_weight_grad_cols": "passes/conv.py; tests/test_conv_fuse.py",
    "max_pool2d_relu_bwd": "passes/conv.py; tests/test_conv_fuse.py",
}


def test_every_registered_op_has_a_row() -> None:
    """Runs each row once under a recording checker and collects the ops it dispatched,
    its backward's included (an op only a VJP dispatches, attention_bwd, counts when a row's
    gradient reaches it). Structural ops (constant, fused) are left out: they exist only in
    graphs and no Tensor method dispatches them; tests/test_structural.py and the jit tests
    cover them."""
    seen: set[str] = set()
    for r in ROWS:
        from tracejit.dispatch import STATE

        checker = _InferCheck()
        STATE.tracer = checker
        try:
            ins = [tracejit.tensor(a, requires_grad=r.grad and a.dtype.kind == "f")
                   if isinstance(a, np.ndarray) else a for a in r.inputs(0)]
            out = r.fn(tracejit, *ins)
            if r.grad and isinstance(out, tracejit.Tensor) and out.requires_grad:
                out.sum().backward()
        finally:
            STATE.tracer = None
        seen.update(checker.seen)
    missing = sorted(n for n, op in REGISTRY.items()
                     if op.kind is not Kind.STRUCTURAL and n not in seen and
                     n not in PASS_MADE
                     # (collectives need a process group: tests/test_distributed.py under mpiexec)
                     and op.kind is not Kind.COLLECTIVE)
    assert not missing, f"registered ops with no row in tests/test_ops.py: {missing}"


def test_rows_have_unique_names() -> None:
    assert len(BY_NAME) == len(ROWS)
