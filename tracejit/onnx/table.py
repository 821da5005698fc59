"""The mapping table of tracejit.onnx: one entry per tracejit op, keyed by the op's name, each a
rule `rule(e: Emit) -> [output names]` that appends ONNX nodes computing the op exactly as its
`eager` does. A new op is one entry here (and a row in tests/test_onnx.py).

Every rule receives its operands already cast to the op's `compute_dtype` (as dispatch and the
interpreter cast them; a Python literal becomes a 0-d constant of that dtype) and must return
results of exactly the node's output types (ONNX checks types strictly). Where an ONNX
operator's corner cases differ from tracejit's (NaN in ReduceMax and ArgMax, Sign(NaN), bools
in arithmetic), the rule spells tracejit's meaning out. Control flow lives in control.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..dtypes import DType
from ..ops.registry import TensorType
from ..ops.structural import CONSTANT
from .builder import INT64_MIN, Builder, onnx_type


@dataclass
class Emit:
    """What a rule sees: the builder, the node, its operands' names and types (after the cast
    to the compute dtype), its result types and attributes."""

    b: Builder
    node: Any  # ir.graph.Node
    xs: list[str]
    ts: list[TensorType]
    outs: list[TensorType]
    attrs: dict[str, Any]
    # for control.py: region(parent builder, region, names bound to its params) -> the
    # subgraph's builder and result names; inline(builder, region, names) -> result names
    # (the region's nodes appended to that builder)
    region: Callable[..., Any] = field(default=None)  # type: ignore[assignment]
    inline: Callable[..., Any] = field(default=None)  # type: ignore[assignment]

    @property
    def out(self) -> TensorType:
        return self.outs[0]


Rule = Callable[[Emit], list[str]]
RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(f: Rule) -> Rule:
        for n in names:
            RULES[n] = f
        return f

    return register


def _simple(onnx_op: str) -> Rule:
    return lambda e: [e.b.cast(e.b.op(onnx_op, e.xs), e.ts[0].dtype, e.out.dtype)]


def _floats_only(onnx_op: str) -> Rule:
    """Floor/ceil/round: integers and bools are their own result."""

    def emit(e: Emit) -> list[str]:
        x, t = e.xs[0], e.ts[0]
        y = e.b.op(onnx_op, [x]) if t.dtype.is_floating_point else e.b.op("Identity", [x])
        return [e.b.cast(y, t.dtype, e.out.dtype)]

    return emit


def _nan(b: Builder, d: DType) -> str:
    return b.const(np.array(np.nan, d.np))


def _zero(b: Builder, d: DType) -> str:
    return b.const(np.zeros((), d.np))


# ---- elementwise: unary ---------------------------------------------------------------------
for _name, _onnx in {"neg": "Neg", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "abs": "Abs",
                     "sin": "Sin", "cos": "Cos", "tanh": "Tanh", "sigmoid": "Sigmoid",
                     "erf": "Erf", "relu": "Relu"}.items():
    RULES[_name] = _simple(_onnx)
for _name, _onnx in {"floor": "Floor", "ceil": "Ceil", "round": "Round"}.items():
    RULES[_name] = _floats_only(_onnx)  # Round: half to even in both


@rule("rsqrt")
def _rsqrt(e: Emit) -> list[str]:
    return [e.b.op("Reciprocal", [e.b.op("Sqrt", e.xs)])]


@rule("log1p")
def _log1p(e: Emit) -> list[str]:
    # ONNX has no log1p and log(1 + x) loses tiny x entirely. Goldberg's identity is exact to
    # a few ulp: log1p(x) = log(u) * x / (u - 1) with u = 1 + x, and x itself where u == 1;
    # u = inf (x = inf) gives inf, and u <= 0 the NaN or -inf that log gives.
    b, (x,), d = e.b, e.xs, e.ts[0].dtype
    one = b.const(np.ones((), d.np))
    u = b.op("Add", [one, x])
    um1 = b.op("Sub", [u, one])
    ratio = b.op("Mul", [b.op("Log", [u]), b.op("Div", [x, um1])])
    special = b.op("Or", [b.op("IsInf", [u]), b.op("LessOrEqual", [u, _zero(b, d)])])
    y = b.op("Where", [special, b.op("Log", [u]), ratio])
    return [b.op("Where", [b.op("Equal", [u, one]), x, y])]


@rule("expm1")
def _expm1(e: Emit) -> list[str]:
    # Kahan's identity: expm1(x) = (u - 1) * x / log(u) with u = exp(x); x where u == 1,
    # -1 where u - 1 == -1 (x very negative), u where u is inf
    b, (x,), d = e.b, e.xs, e.ts[0].dtype
    one = b.const(np.ones((), d.np))
    u = b.op("Exp", [x])
    um1 = b.op("Sub", [u, one])
    ratio = b.op("Mul", [um1, b.op("Div", [x, b.op("Log", [u])])])
    y = b.op("Where", [b.op("IsInf", [u]), u, ratio])
    y = b.op("Where", [b.op("Equal", [um1, b.const(np.array(-1, d.np))]), um1, y])
    return [b.op("Where", [b.op("Equal", [u, one]), x, y])]


@rule("sign")
def _sign(e: Emit) -> list[str]:
    b, (x,), t = e.b, e.xs, e.ts[0]
    if t.dtype is dt.bool_:
        return [b.op("Identity", [x])]
    s = b.op("Sign", [x])
    if t.dtype.is_floating_point:  # torch: sign(NaN) is 0 (ONNX Sign keeps the NaN)
        s = b.op("Where", [b.op("IsNaN", [x]), _zero(b, t.dtype), s])
    return [s]


@rule("logical_not")
def _logical_not(e: Emit) -> list[str]:
    return [e.b.op("Not", [e.b.cast(e.xs[0], e.ts[0].dtype, dt.bool_)])]


@rule("cast")
def _cast(e: Emit) -> list[str]:
    # float -> int truncates toward zero, as NumPy's astype (out-of-range values are undefined
    # in both); anything -> bool is `!= 0` (NaN is true in both)
    return [e.b.op("Cast", e.xs, to=onnx_type(e.out.dtype))] if e.ts[0].dtype is not \
        e.out.dtype else [e.b.op("Identity", e.xs)]


@rule("clamp")
def _clamp(e: Emit) -> list[str]:
    # as _clamp_eager: the bounds in x's dtype (int(0.5) is 0), max then min (NaN stays NaN),
    # then the promoted result type
    b, (x,), t = e.b, e.xs, e.ts[0]
    lo, hi = e.attrs["min"], e.attrs["max"]
    y = x
    work = dt.int32 if t.dtype is dt.bool_ else t.dtype  # (ONNX Max/Min take no bools)
    y = b.cast(y, t.dtype, work)
    if lo is not None:
        y = b.op("Max", [b.const(np.array(t.dtype.np.type(lo), work.np)), y])
    if hi is not None:
        y = b.op("Min", [b.const(np.array(t.dtype.np.type(hi), work.np)), y])
    if y == x:
        y = b.op("Identity", [x])
    return [b.cast(y, work, e.out.dtype)]


# ---- elementwise: binary --------------------------------------------------------------------
def _arith(onnx_op: str, bool_op: str | None = None) -> Rule:
    """Add/Mul/Max/Min; on bools (which ONNX arithmetic does not take) their logical form,
    which is what NumPy's add/multiply/maximum/minimum of bools compute."""

    def emit(e: Emit) -> list[str]:
        d = e.ts[0].dtype
        if d is dt.bool_ and bool_op is not None:
            return [e.b.op(bool_op, e.xs)]
        return [e.b.cast(e.b.op(onnx_op, e.xs), d, e.out.dtype)]

    return emit


RULES["add"] = _arith("Add", "Or")
RULES["sub"] = _arith("Sub")
RULES["mul"] = _arith("Mul", "And")
RULES["div"] = _arith("Div")  # computed in a float dtype: never ONNX's truncating int Div
RULES["pow"] = _arith("Pow")
RULES["maximum"] = _arith("Max", "Or")  # NaN propagates (onnxruntime, as torch)
RULES["minimum"] = _arith("Min", "And")


def _compare(onnx_op: str, negate: bool = False) -> Rule:
    def emit(e: Emit) -> list[str]:
        xs, d = e.xs, e.ts[0].dtype
        if d is dt.bool_ and onnx_op != "Equal":  # Less & co take no bools: compare as ints
            xs = [e.b.cast(x, d, dt.int32) for x in xs]
        y = e.b.op(onnx_op, xs)
        return [e.b.op("Not", [y]) if negate else y]

    return emit


RULES["eq"] = _compare("Equal")
RULES["ne"] = _compare("Equal", negate=True)
RULES["lt"] = _compare("Less")
RULES["le"] = _compare("LessOrEqual")
RULES["gt"] = _compare("Greater")
RULES["ge"] = _compare("GreaterOrEqual")


def _logical(onnx_op: str) -> Rule:
    def emit(e: Emit) -> list[str]:
        return [e.b.op(onnx_op, [e.b.cast(x, t.dtype, dt.bool_) for x, t in zip(e.xs, e.ts)])]

    return emit


RULES["logical_and"] = _logical("And")
RULES["logical_or"] = _logical("Or")


@rule("where")
def _where(e: Emit) -> list[str]:
    c, a, b_ = e.xs
    return [e.b.op("Where", [e.b.cast(c, e.ts[0].dtype, dt.bool_), a, b_])]


# ---- reductions -----------------------------------------------------------------------------
def _reduce_call(b: Builder, onnx_op: str, x: str, dims: tuple[int, ...], keepdim: bool) -> str:
    if not dims:  # a 0-d operand (dims are never empty otherwise)
        return b.op("Identity", [x])
    return b.op(onnx_op, [x, b.ints(dims)], keepdims=int(keepdim))


def _any_nan(b: Builder, x: str, dims: tuple[int, ...], keepdim: bool) -> str:
    """bool: the reduced set holds a NaN."""
    flags = b.cast(b.op("IsNaN", [x]), dt.bool_, dt.int32)
    return b.cast(_reduce_call(b, "ReduceMax", flags, dims, keepdim), dt.int32, dt.bool_)


def _reduce(onnx_op: str, nan_wins: bool = False) -> Rule:
    def emit(e: Emit) -> list[str]:
        b, (x,), t = e.b, e.xs, e.ts[0]
        dims, keepdim = e.attrs["dims"], e.attrs["keepdim"]
        work = e.out.dtype if e.out.dtype is not dt.bool_ else dt.int32
        y = _reduce_call(b, onnx_op, b.cast(x, t.dtype, work), dims, keepdim)
        if nan_wins and t.dtype.is_floating_point and dims:
            # ONNX ReduceMax/Min skip NaN in onnxruntime; torch's amax/amin propagate it
            y = b.op("Where", [_any_nan(b, x, dims, keepdim), _nan(b, t.dtype), y])
        return [b.cast(y, work, e.out.dtype)]

    return emit


RULES["sum"] = _reduce("ReduceSum")  # integers and bools sum in int64, as torch
RULES["prod"] = _reduce("ReduceProd")
RULES["amax"] = _reduce("ReduceMax", nan_wins=True)
RULES["amin"] = _reduce("ReduceMin", nan_wins=True)


def _all_any(onnx_op: str) -> Rule:
    def emit(e: Emit) -> list[str]:
        b, (x,), t = e.b, e.xs, e.ts[0]
        flags = b.cast(b.cast(x, t.dtype, dt.bool_), dt.bool_, dt.int32)
        y = _reduce_call(b, onnx_op, flags, e.attrs["dims"], e.attrs["keepdim"])
        return [b.cast(y, dt.int32, dt.bool_)]

    return emit


RULES["all"] = _all_any("ReduceMin")
RULES["any"] = _all_any("ReduceMax")


def _arg(onnx_op: str) -> Rule:
    # the first index that wins; a NaN wins (the first NaN), as NumPy and torch. onnxruntime's
    # ArgMax/ArgMin skip NaN, so where a row holds one, the first NaN's index is taken instead.
    def emit(e: Emit) -> list[str]:
        b, (x,), t = e.b, e.xs, e.ts[0]
        dim, keepdim = e.attrs["dim"], e.attrs["keepdim"]
        if t.ndim == 0:
            return [b.const(np.zeros((), np.int64))]
        if dim is None:
            x = b.op("Reshape", [x, b.ints([-1])])
            axis = 0
        else:
            axis = dim % t.ndim
        keep = int(keepdim and dim is not None)
        y = b.op(onnx_op, [x], axis=axis, keepdims=keep, select_last_index=0)
        if t.dtype.is_floating_point:
            flags = b.cast(b.op("IsNaN", [x]), dt.bool_, dt.int32)
            first_nan = b.op("ArgMax", [flags], axis=axis, keepdims=keep, select_last_index=0)
            has = b.cast(b.op("ReduceMax", [flags, b.ints([axis])], keepdims=keep), dt.int32,
                         dt.bool_)
            y = b.op("Where", [has, first_nan, y])
        if dim is None and keepdim:
            y = b.op("Reshape", [y, b.ints([1] * t.ndim)])
        return [y]

    return emit


RULES["argmax"] = _arg("ArgMax")
RULES["argmin"] = _arg("ArgMin")


# ---- scan ops -------------------------------------------------------------------------------
@rule("cumsum")
def _cumsum(e: Emit) -> list[str]:
    # accumulated in the wider type tracejit (and torch's CPU kernel) uses: float32 in float64
    b, (x,), t = e.b, e.xs, e.ts[0]
    acc = {dt.float16: dt.float32, dt.float32: dt.float64}.get(t.dtype, e.out.dtype)
    y = b.op("CumSum", [b.cast(x, t.dtype, acc), b.const(np.array(e.attrs["dim"], np.int64))],
             reverse=int(e.attrs["reverse"]))
    return [b.cast(y, acc, e.out.dtype)]


@rule("argsort")
def _argsort(e: Emit) -> list[str]:
    # TopK over the whole row: ties in index order (ONNX's tie rule, as tracejit's stable sort
    # in both directions) and NaN above +inf (onnxruntime, as tracejit)
    b, (x,), t = e.b, e.xs, e.ts[0]
    dim = e.attrs["dim"]
    if t.dtype is dt.bool_:
        x = b.cast(x, t.dtype, dt.int32)
    _, idx = b.op("TopK", [x, b.ints([t.shape[dim]])], n_out=2, axis=dim,
                  largest=int(e.attrs["descending"]), sorted=1)
    return [idx]


# ---- movement -------------------------------------------------------------------------------
@rule("reshape")
def _reshape(e: Emit) -> list[str]:
    # allowzero: a 0 in the shape is a size, not "copy this dimension"
    return [e.b.op("Reshape", [e.xs[0], e.b.ints(e.out.shape)], allowzero=1)]


@rule("permute")
def _permute(e: Emit) -> list[str]:
    return [e.b.op("Transpose", e.xs, perm=list(e.attrs["dims"]))]


@rule("expand")
def _expand(e: Emit) -> list[str]:
    return [e.b.op("Expand", [e.xs[0], e.b.ints(e.out.shape)])]


Part = tuple[int, int, int, int]  # (axis, start, stop, step) of a Slice


def _slice_parts(shape: tuple[int, ...], attrs: dict[str, Any]) -> list[Part]:
    """(axis, start, stop, step) for each dimension the slice does not take whole."""
    parts: list[Part] = []
    for axis, (n, a, z, s) in enumerate(zip(shape, attrs["starts"], attrs["stops"],
                                            attrs["steps"])):
        if (a, z, s) != (0, n, 1):
            parts.append((axis, a, z, s))
    return parts


def _slice_node(b: Builder, x: str, parts: Sequence[Part]) -> str:
    if not parts:
        return b.op("Identity", [x])
    axes, starts, stops, steps = zip(*parts)
    stops = tuple(INT64_MIN if s < 0 and z < 0 else z for z, s in zip(stops, steps))
    return b.op("Slice", [x, b.ints(starts), b.ints(stops), b.ints(axes), b.ints(steps)])


@rule("slice")
def _slice(e: Emit) -> list[str]:
    return [_slice_node(e.b, e.xs[0], _slice_parts(e.ts[0].shape, e.attrs))]


@rule("slice_scatter")
def _slice_scatter(e: Emit) -> list[str]:
    # ScatterND at the positions the slice names, listed as a constant (static shapes)
    b, (base, src), ts = e.b, e.xs, e.ts[1]
    if math.prod(ts.shape) == 0:
        return [b.op("Identity", [base])]
    ranges = [np.arange(a, z, s)[:n] for a, z, s, n in
              zip(e.attrs["starts"], e.attrs["stops"], e.attrs["steps"], ts.shape)]
    if not ranges:  # 0-d: the source replaces the base
        return [b.op("Identity", [src])]
    where = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).astype(np.int64)
    return [b.op("ScatterND", [base, b.const(where), src])]


@rule("cat")
def _cat(e: Emit) -> list[str]:
    # (1-d empty operands are skipped, as torch's legacy rule; the operands already have the
    # promoted dtype)
    keep = [x for x, t in zip(e.xs, e.ts) if t.shape != (0,) or e.out.ndim == 1]
    if len(keep) == 1:
        return [e.b.op("Identity", keep)]
    return [e.b.op("Concat", keep, axis=e.attrs["dim"])]


RULES["clone"] = lambda e: [e.b.op("Identity", e.xs)]
# check_index raises in tracejit on an index out of range (or a zero divisor of integer //);
# ONNX has no assertion operator, so the index passes through: onnxruntime's own Gather
# kernels reject out-of-range indices, a zero integer divisor gives an unspecified value
RULES["check_index"] = lambda e: [e.b.op("Identity", e.xs)]


# ---- creation and constants -----------------------------------------------------------------
@rule("full")
def _full(e: Emit) -> list[str]:
    value = e.b.numpy_helper.from_array(np.array([e.attrs["value"]], e.out.dtype.np))
    return [e.b.op("ConstantOfShape", [e.b.ints(e.out.shape)], value=value)]


RULES["arange"] = lambda e: [e.b.const(e.node.op.eager(**e.attrs).astype(e.out.dtype.np))]
RULES[CONSTANT.name] = lambda e: [e.b.const(np.asarray(e.attrs["value"]))]


# ---- contraction ----------------------------------------------------------------------------
RULES["matmul"] = lambda e: [e.b.op("MatMul", e.xs)]  # batch dims broadcast as NumPy's


@rule("attention")
def _attention(e: Emit) -> list[str]:
    """softmax(scale q k^T, masked) v as kernels/cpu/attention.py computes it: a bool mask
    hides with -inf, a float mask is added, causal hides keys j > i, and a row that attends
    nowhere gives zeros (torch 2.13's safe softmax)."""
    b, xs, ts, at = e.b, e.xs, e.ts, e.attrs
    if at["p"] > 0:
        raise NotImplementedError("attention with dropout_p > 0 draws random numbers; export "
                                  "with dropout_p=0 (in eval mode)")
    q, k, v = xs[:3]
    d = ts[0].dtype
    L, S = ts[0].shape[-2], ts[1].shape[-2]
    perm = list(range(ts[1].ndim - 2)) + [ts[1].ndim - 1, ts[1].ndim - 2]
    s = b.op("MatMul", [q, b.op("Transpose", [k], perm=perm)])
    s = b.op("Mul", [s, b.const(np.array(at["scale"], d.np))])
    ninf = b.const(np.array(-np.inf, d.np))
    if at["mask"] == "bool":
        s = b.op("Where", [xs[3], s, ninf])
    elif at["mask"] == "float":
        s = b.op("Add", [s, xs[3]])
    if at["causal"]:
        s = b.op("Where", [b.const(np.tril(np.ones((L, S), np.bool_))), s, ninf])
    top = b.op("ReduceMax", [s, b.ints([-1])], keepdims=1)
    nowhere = b.op("Equal", [top, ninf])
    top = b.op("Where", [nowhere, _zero(b, d), top])
    ex = b.op("Exp", [b.op("Sub", [s, top])])
    w = b.op("Div", [ex, b.op("ReduceSum", [ex, b.ints([-1])], keepdims=1)])
    w = b.op("Where", [nowhere, _zero(b, d), w])
    return [b.op("MatMul", [w, v])]


# ---- indexing -------------------------------------------------------------------------------
@rule("gather")
def _gather(e: Emit) -> list[str]:
    # GatherElements reads the input over the index's extent (eager slices it so first)
    b, (x, idx), (tx, ti) = e.b, e.xs, e.ts
    if tx.ndim == 0:
        return [b.op("Identity", [x])]
    dim = e.attrs["dim"]
    parts = [(a, 0, ti.shape[a], 1) for a in range(tx.ndim) if a != dim and
             ti.shape[a] != tx.shape[a]]
    x = _slice_node(b, x, parts) if parts else x
    return [b.op("GatherElements", [x, b.cast(idx, ti.dtype, dt.int64)], axis=dim)]


@rule("scatter_add")
def _scatter_add(e: Emit) -> list[str]:
    b, (x, idx, src), (tx, ti, ts) = e.b, e.xs, e.ts
    if tx.ndim == 0:
        return [b.op("Add", [x, src])]
    parts = [(a, 0, ti.shape[a], 1) for a in range(ts.ndim) if ti.shape[a] != ts.shape[a]]
    src = _slice_node(b, src, parts) if parts else src
    return [b.op("ScatterElements", [x, b.cast(idx, ti.dtype, dt.int64), src],
                 axis=e.attrs["dim"], reduction="add")]


def _stacked_index(b: Builder, idx: list[str], types: list[TensorType],
                   sizes: list[int]) -> tuple[str, tuple]:
    """The index tensors broadcast together, negative ones counted from the end of their
    dim's size, and stacked on a last axis: GatherND's and ScatterND's (B..., k) indices."""
    from ..ops.registry import broadcast_shapes

    shape = broadcast_shapes("index", *(t.shape for t in types))
    parts = []
    for i, t, n in zip(idx, types, sizes):
        i = b.cast(i, t.dtype, dt.int64)
        i = b.op("Where", [b.op("Less", [i, b.const(np.zeros((), np.int64))]),
                           b.op("Add", [i, b.const(np.array(n, np.int64))]), i])
        parts.append(b.op("Unsqueeze", [b.op("Expand", [i, b.ints(shape)]), b.ints([-1])]))
    stacked = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=-1)
    return stacked, shape


def _front(ndim: int, dims: tuple[int, ...]) -> list[int]:
    return list(dims) + [d for d in range(ndim) if d not in dims]


@rule("index")
def _index(e: Emit) -> list[str]:
    # NumPy's advanced indexing: the indexed dims moved to the front, one GatherND over them,
    # then the broadcast index dims moved where NumPy puts them (in place of adjacent indexed
    # dims, first otherwise). Negative indices count from the end, in both.
    b, x, tx, dims = e.b, e.xs[0], e.ts[0], tuple(e.attrs["dims"])
    if len(dims) == 1:  # one index tensor: Gather in place
        return [b.op("Gather", [x, b.cast(e.xs[1], e.ts[1].dtype, dt.int64)], axis=dims[0])]
    perm = _front(tx.ndim, dims)
    xt = b.op("Transpose", [x], perm=perm) if perm != list(range(tx.ndim)) else x
    stacked, bshape = _stacked_index(b, e.xs[1:], e.ts[1:], [tx.shape[d] for d in dims])
    y = b.op("GatherND", [xt, stacked])
    adjacent = list(dims) == list(range(dims[0], dims[0] + len(dims)))
    if adjacent and dims[0] > 0:  # (B..., before..., after...) -> (before..., B..., after...)
        nb, before = len(bshape), dims[0]
        order = list(range(nb, nb + before)) + list(range(nb)) + \
            list(range(nb + before, e.out.ndim))
        y = b.op("Transpose", [y], perm=order)
    return [y]


@rule("index_put")
def _index_put(e: Emit) -> list[str]:
    # x[idx...] = v (accumulate: +=), with v broadcast to what the index selects, laid out as
    # the indexed dims moved to the front; ScatterND without reduction keeps the last write
    # among duplicates, as NumPy's assignment
    b, (x, v), (tx, tv), dims = e.b, e.xs[:2], e.ts[:2], tuple(e.attrs["dims"])
    perm = _front(tx.ndim, dims)
    inv = [int(i) for i in np.argsort(perm)]
    xt = b.op("Transpose", [x], perm=perm) if perm != list(range(tx.ndim)) else x
    stacked, bshape = _stacked_index(b, e.xs[2:], e.ts[2:], [tx.shape[d] for d in dims])
    rest = tuple(tx.shape[d] for d in range(tx.ndim) if d not in dims)
    adjacent = list(dims) == list(range(dims[0], dims[0] + len(dims)))
    nb, before = len(bshape), dims[0] if adjacent else 0
    sel = tuple(rest[:before]) + bshape + tuple(rest[before:])  # what x[idx] has
    vv = b.op("Expand", [b.cast(v, tv.dtype, tx.dtype), b.ints(sel)])
    if before:  # (before..., B..., after...) -> (B..., before..., after...)
        order = list(range(before, before + nb)) + list(range(before)) + \
            list(range(before + nb, len(sel)))
        vv = b.op("Transpose", [vv], perm=order)
    kw: dict[str, Any] = {"reduction": "add"} if e.attrs["accumulate"] else {}
    y = b.op("ScatterND", [xt, stacked, vv], **kw)
    return [b.op("Transpose", [y], perm=inv) if perm != list(range(tx.ndim)) else y]


# the convolution and pooling entries, in a module of their own (registers into RULES)
from . import table_cnn  # noqa: E402, F401
