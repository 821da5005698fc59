"""Index ops: gather, scatter_add, advanced indexing (`index`, `index_put`), `check_index`
(an index tensor checked against a range, passed through) and `nonzero`, the one op whose
output shape depends on values (so the JIT breaks the graph at it).

Every index is checked, eagerly and in compiled code, before anything is read or written:
`IndexBoundsError` (an IndexError) names the op, the value, the size and the user's line.
Negative indices follow torch: `x[idx]` and `index_put` count them from the end; `gather`,
`scatter_add`, `index_select`, `embedding` and loss targets reject them."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .registry import (
    ArgError,
    DTypeError,
    Kind,
    Operand,
    ShapeError,
    TensorType,
    VjpContext,
    broadcast_shapes,
    defop,
    fmt_shape,
)


def _to_last(ndim: int, dim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    perm = tuple(d for d in range(ndim) if d != dim) + (dim,)
    inv = tuple(int(i) for i in np.argsort(perm))
    return perm, inv


# The compiled index kernels check every index before the loop that uses it and raise
# IndexBoundsError naming the op, the dimension (passed as `np.int64(dim)`) and the user's line.
# "{loc}" is the code generator's placeholder for the node's file:line, a string literal;
# `str(...)` and `np.int64(...)` keep Numba from compiling one specialisation per call site
# (literal arguments) when the driver itself is njit.
LOC = "str({loc})"


def _where(dim: int) -> str:
    return f"np.int64({dim}), {LOC}"


def _gather_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    if out.ndim == 0:
        return None  # 0-d: eager only
    perm, inv = _to_last(out.ndim, at["dim"])
    if at["dim"] == out.ndim - 1:  # along the last dim: straight into a planned buffer
        return f"gather_last({a[0]}, {a[1]}, {_where(at['dim'])}{{into}})"
    return (f"np.transpose(gather_last(np.transpose({a[0]}, {perm!r}), "
            f"np.transpose({a[1]}, {perm!r}), {_where(at['dim'])}), {inv!r})")


def _scatter_add_rule(a: list[str], at: dict[str, Any], out: TensorType,
                      ins: list[Any]) -> str | None:
    if out.ndim == 0:
        return None  # 0-d: eager only
    perm, inv = _to_last(out.ndim, at["dim"])
    return (f"np.transpose(scatter_add_last(np.transpose({a[0]}, {perm!r}), np.transpose("
            f"{a[1]}, {perm!r}), np.transpose({a[2]}, {perm!r}), {_where(at['dim'])}), "
            f"{inv!r})")


def _to_first(ndim: int, dim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    perm = (dim,) + tuple(d for d in range(ndim) if d != dim)
    return perm, tuple(int(i) for i in np.argsort(perm))


def _index_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    if len(at["dims"]) != 1:
        return None  # several index tensors: eager only for now
    x, idx, d = ins[0], ins[1], at["dims"][0]
    perm, _ = _to_first(x.ndim, d)
    rest = tuple(x.shape[p] for p in perm[1:])
    taken = (f"take_first(np.transpose({a[0]}, {perm!r}), "
             f"np.ascontiguousarray({a[1]}).reshape(({_numel(idx.shape)},)), {_where(d)})")
    shaped = f"{taken}.reshape({idx.shape + rest!r})"
    # the index's dims come first; move them to where dim d was
    r = idx.ndim
    order = tuple(range(r, r + d)) + tuple(range(r)) + tuple(range(r + d, r + len(rest)))
    return f"np.transpose({shaped}, {order!r})"


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _index_put_rule(a: list[str], at: dict[str, Any], out: TensorType,
                    ins: list[Any]) -> str | None:
    if len(at["dims"]) != 1:
        return None  # several index tensors: eager only for now
    x, idx, d = ins[0], ins[2], at["dims"][0]
    perm, inv = _to_first(x.ndim, d)
    rest = tuple(x.shape[p] for p in perm[1:])
    r = idx.ndim
    target = x.shape[:d] + idx.shape + x.shape[d + 1:]  # what x[idx] would be
    front = tuple(range(d, d + r)) + tuple(range(d)) + tuple(range(d + r, len(target)))
    vals = (f"np.ascontiguousarray(np.transpose(np.broadcast_to({a[1]}, {target!r}), "
            f"{front!r})).reshape({(_numel(idx.shape),) + rest!r})")
    flat = f"np.ascontiguousarray({a[2]}).reshape(({_numel(idx.shape)},))"
    return (f"np.transpose(put_first(np.transpose({a[0]}, {perm!r}), {vals}, {flat}, "
            f"{at['accumulate']!r}, {_where(d)}), {inv!r})")

X = Kind.INDEX


_TEXTS: list[str] = []
_TEXT_IDS: dict[str, int] = {}


def text_ids(texts: tuple[str, ...]) -> tuple[int, ...]:
    """Ids for these strings, registered in this process. A generated Python driver passes the
    index-check kernels ids, not str objects, for the op name, style and user line of their
    error message: Numba types a str argument in Python (3 us a call), an int in C (under 1 us);
    IndexBoundsError turns the ids back into text."""
    out = []
    for t in texts:
        if t not in _TEXT_IDS:
            _TEXT_IDS[t] = len(_TEXTS)
            _TEXTS.append(t)
        out.append(_TEXT_IDS[t])
    return tuple(out)


def _text(v: Any) -> str:
    return _TEXTS[int(v)] if isinstance(v, (int, np.integer)) else v


class IndexBoundsError(ArgError, RuntimeError):
    """An index outside the dimension it indexes. An IndexError, as torch raises for `x[idx]`,
    `index_select`, `embedding` and loss targets, and a RuntimeError, as torch raises for
    `gather` and `scatter_add`; an ArgError like tracejit's other bad-argument errors.

    Raised by the eager implementations below (the message then ends with the user's file:line
    from the stack) and by the compiled kernels in `tracejit/kernels/cpu/index.py`, which Numba
    builds from the same arguments, with `loc`, the IR node's user file:line, passed in by the
    generated code (a kernel is shared by every call site, so it cannot know the line)."""

    def __init__(self, op: str, value: int | None = None, size: int = 0, dim: int = 0,
                 style: str = "index", loc: str = "", ignore: int = 0) -> None:
        if value is None:  # a finished message (copy.copy, pickle)
            super().__init__(op)
            return
        op, style, loc = _text(op), _text(style), _text(loc)  # (ids from compiled code)
        self.op, self.value, self.size, self.dim = op, int(value), int(size), int(dim)
        if style == "target":
            msg = (f"{op}: Target {value} is out of bounds: expected a class index in "
                   f"[0, {size}) or ignore_index ({ignore})")
        elif style == "zero":  # check_index on (divisor == 0): integer division by zero
            msg = (f"{op}: ZeroDivisionError: integer division by zero (a divisor element is "
                   "0)")
        elif style == "range":
            what = "num_embeddings" if op == "embedding" else f"dimension {dim} has size"
            msg = (f"{op}: index {value} is out of range in self ({what} {size}; indices must "
                   f"be in [0, {size}))")
        else:
            msg = f"{op}: index {value} is out of bounds for dimension {dim} with size {size}"
        super().__init__(msg + (f" (at {loc})" if loc else ""))


def _check_index(op: str, t: Operand) -> TensorType:
    assert isinstance(t, TensorType)
    if t.dtype not in (dt.int64, dt.int32):
        raise DTypeError(f"{op}: expected an int64 index tensor, got {t.dtype}; convert it with "
                         ".long()")
    return t


def _gather_infer(ops: Sequence[Operand], *, dim: int) -> TensorType:
    x, idx = ops
    assert isinstance(x, TensorType)
    idx = _check_index("gather", idx)
    if idx.ndim != x.ndim:
        raise ShapeError(f"gather: index tensor must have the same number of dimensions as input "
                         f"(input {fmt_shape(x.shape)}, index {fmt_shape(idx.shape)})")
    for d, (a, b) in enumerate(zip(idx.shape, x.shape)):
        if d != dim and a > b:
            raise ShapeError(f"gather: size {a} of index does not fit input size {b} at dim {d}")
    return TensorType(idx.shape, x.dtype, x.device)


def _bounds(op: str, idx: np.ndarray, n: int, dim: int, *, negative: bool,
            style: str = "index", ignore: int | None = None) -> None:
    """Raise IndexBoundsError for the first element of `idx` (in C order) outside [0, n), or
    [-n, n) when negative indices count from the end; `ignore` is one more allowed value."""
    if not idx.size:
        return
    lo = -n if negative else 0
    lo_seen, hi_seen = idx.min(), idx.max()
    if lo_seen >= lo and hi_seen < n:
        return
    bad = (idx < lo) | (idx >= n)
    if ignore is not None:
        bad &= idx != ignore
    if bad.any():
        raise IndexBoundsError(op, int(idx.reshape(-1)[int(np.argmax(bad.reshape(-1)))]), n, dim,
                               style, "", ignore if ignore is not None else 0)


def _gather_eager(x: np.ndarray, idx: np.ndarray, *, dim: int) -> np.ndarray:
    _bounds("gather", idx, x.shape[dim] if x.ndim else 1, dim, negative=False)  # no negatives
    if x.ndim == 0:  # a 0-d tensor is one element along "dimension 0"
        return x.copy()
    sub = x[tuple(slice(None) if d == dim else slice(0, n) for d, n in enumerate(idx.shape))]
    return np.take_along_axis(sub, idx, axis=dim)


gather_op = defop(
    "gather", X, infer=_gather_infer, eager=_gather_eager, attrs=("dim",), saves=(1,),
    vjp=lambda c, g: (g.new_zeros(c.in_types[0].shape).scatter_add(c.attrs["dim"], c.inputs[1],
                                                                    g), None),
    kernels={"cpu": _gather_rule},
)


def _scatter_add_infer(ops: Sequence[Operand], *, dim: int) -> TensorType:
    x, idx, src = ops
    assert isinstance(x, TensorType) and isinstance(src, TensorType)
    idx = _check_index("scatter_add", idx)
    if not (idx.ndim == x.ndim == src.ndim):
        raise ShapeError("scatter_add: index, input and src must have the same number of dims")
    for d, (i, n, s) in enumerate(zip(idx.shape, x.shape, src.shape)):
        if i > s or (d != dim and i > n):
            raise ShapeError(f"scatter_add: index {fmt_shape(idx.shape)} must be no larger than "
                             f"src {fmt_shape(src.shape)} in every dimension and than input "
                             f"{fmt_shape(x.shape)} apart from dimension {dim}")
    return x


def _scatter_add_eager(x: np.ndarray, idx: np.ndarray, src: np.ndarray, *, dim: int) -> np.ndarray:
    _bounds("scatter_add", idx, x.shape[dim] if x.ndim else 1, dim, negative=False)
    out = x.copy()
    if x.ndim == 0:
        return out + src
    key: list[Any] = list(np.indices(idx.shape, sparse=True))
    key[dim] = idx
    np.add.at(out, tuple(key), src[tuple(slice(0, n) for n in idx.shape)])
    return out


scatter_add_op = defop(
    "scatter_add", X, infer=_scatter_add_infer, eager=_scatter_add_eager, attrs=("dim",),
    saves=(1,), compute_dtype=lambda ops: (ops[0].dtype, None, ops[0].dtype),  # type: ignore
    vjp=lambda c, g: (g, None, _scatter_add_src_grad(c, g)),
    kernels={"cpu": _scatter_add_rule},
)


def _scatter_add_src_grad(c: VjpContext, g: Any) -> Any:
    # src elements beyond the index's extent are not read: their gradient is zero
    picked = g.gather(c.attrs["dim"], c.inputs[1])
    src = c.in_types[2]
    assert isinstance(src, TensorType)
    if picked.shape == src.shape:
        return picked
    n = len(src.shape)
    return picked.new_zeros(src.shape)._slice_scatter(
        picked, starts=(0,) * n, stops=tuple(picked.shape), steps=(1,) * n)


def index_shape(x: tuple[int, ...], idx: Sequence[tuple[int, ...]], dims: tuple[int, ...],
                op: str = "index") -> tuple[int, ...]:
    """NumPy's advanced-indexing rule: index tensors at `dims` broadcast together; their shape
    replaces those dims when they are adjacent, and goes first otherwise."""
    b = broadcast_shapes(op, *idx)
    rest = [n for d, n in enumerate(x) if d not in dims]
    adjacent = list(dims) == list(range(dims[0], dims[0] + len(dims)))
    if adjacent:
        before = [n for d, n in enumerate(x) if d < dims[0]]
        return tuple(before) + b + tuple(rest[len(before):])
    return b + tuple(rest)


def _index_infer(ops: Sequence[Operand], *, dims: tuple[int, ...]) -> TensorType:
    x, *idx = ops
    assert isinstance(x, TensorType)
    its = [_check_index("index", i) for i in idx]
    return TensorType(index_shape(x.shape, [i.shape for i in its], dims), x.dtype, x.device)


def np_key(ndim: int, idx: Sequence[np.ndarray], dims: tuple[int, ...]) -> tuple[Any, ...]:
    key: list[Any] = [slice(None)] * ndim
    for d, i in zip(dims, idx):
        key[d] = i
    return tuple(key)


def _index_eager(x: np.ndarray, *idx: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    for d, i in zip(dims, idx):
        _bounds("index", i, x.shape[d], d, negative=True)
    return np.array(x[np_key(x.ndim, idx, dims)])


def _index_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    x = c.in_types[0]
    assert isinstance(x, TensorType)
    zeros = g.new_zeros(x.shape)
    gx = zeros._index_put(g, *c.inputs[1:], dims=c.attrs["dims"], accumulate=True)
    return (gx,) + (None,) * (len(c.inputs) - 1)


index_op = defop("index", X, infer=_index_infer, eager=_index_eager, attrs=("dims",),
                 saves=("inputs",), vjp=_index_vjp, kernels={"cpu": _index_rule})


def _index_put_infer(ops: Sequence[Operand], *, dims: tuple[int, ...],
                     accumulate: bool) -> TensorType:
    x, v, *idx = ops
    assert isinstance(x, TensorType)
    its = [_check_index("index_put", i) for i in idx]
    target = index_shape(x.shape, [i.shape for i in its], dims, "index_put")
    if isinstance(v, TensorType):
        try:
            broadcast_shapes("index_put", v.shape, target)
        except ShapeError:
            raise ShapeError(f"index_put: shape mismatch: value tensor of shape "
                             f"{fmt_shape(v.shape)} cannot be broadcast to indexing result of "
                             f"shape {fmt_shape(target)}") from None
    return x


def _index_put_eager(x: np.ndarray, v: np.ndarray, *idx: np.ndarray, dims: tuple[int, ...],
                     accumulate: bool) -> np.ndarray:
    for d, i in zip(dims, idx):
        _bounds("index_put", i, x.shape[d], d, negative=True)
    if accumulate and dims == (0,) and x.ndim >= 1 and idx[0].size * x[0].size >= 4096 \
            and x.dtype.kind == "f":
        return _put_rows(x, v, idx[0])
    out = x.copy()
    key = np_key(x.ndim, idx, dims)
    if accumulate:
        np.add.at(out, key, v)
    else:
        out[key] = v
    return out


def _put_rows(x: np.ndarray, v: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """index_put with accumulate along dim 0 (an embedding's backward) through the compiled
    `put_first`: the same additions in the same order as np.add.at (each row of v added to
    its target row, in index order), so the same result, without np.add.at's per-element
    cost (a (512, 64) gradient into (65, 64) rows: ~0.6 ms)."""
    # by name: mypy does not check kernels/ and should not follow into Numba's typing there
    put_first = importlib.import_module("tracejit.kernels.cpu.index").put_first
    rows = np.ascontiguousarray(np.broadcast_to(v, idx.shape + x.shape[1:]), x.dtype)
    flat = np.ascontiguousarray(idx).reshape(-1)
    loc = text_ids(("",))[0]
    return put_first(x, rows.reshape((flat.size,) + x.shape[1:]), flat, True, 0, loc)


def _index_put_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    idx, dims = c.inputs[2:], c.attrs["dims"]
    gx = g if c.attrs["accumulate"] else g._index_put(0.0, *idx, dims=dims, accumulate=False)
    gv = g._index(*idx, dims=dims) if c.needs[1] else None
    return (gx, gv) + (None,) * len(idx)


index_put_op = defop(
    "index_put", X, infer=_index_put_infer, eager=_index_put_eager, attrs=("dims", "accumulate"),
    saves=("inputs",), vjp=_index_put_vjp, kernels={"cpu": _index_put_rule},
    compute_dtype=lambda ops: (ops[0].dtype, ops[0].dtype) + (None,) * (len(ops) - 2),  # type: ignore
)


def _check_index_infer(ops: Sequence[Operand], *, size: int, negative: bool,
                       ignore: int | None, op: str, style: str, dim: int) -> TensorType:
    (idx,) = ops
    return _check_index(op, idx)


def _check_index_eager(idx: np.ndarray, *, size: int, negative: bool, ignore: int | None,
                       op: str, style: str, dim: int) -> np.ndarray:
    _bounds(op, idx, size, dim, negative=negative, style=style, ignore=ignore)
    return idx


def _check_index_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str:
    if at["ignore"] is None:
        lo = -at["size"] if at["negative"] else 0
        call = (f"check_range({a[0]}, np.int64({lo}), np.int64({at['size']}), "
                f"str({at['op']!r}), str({at['style']!r}), {_where(at['dim'])})")
    else:
        assert not at["negative"]
        call = (f"check_target({a[0]}, np.int64({at['size']}), np.int64({at['ignore']}), "
                f"str({at['op']!r}), {LOC})")
    return f"{call}\n{{out}} = {a[0]}"


# The index tensor passed through unchanged (a view), after checking it against [0, size)
# ([-size, size) with `negative`; `ignore` is one more allowed value): how a composite whose
# indices reach a kernel only after other ops (embedding, the targets of nll_loss) checks them
# with torch's rule and message, in eager and compiled code alike. Kind.INDEX: it may raise.
check_index_op = defop(
    "check_index", X, infer=_check_index_infer, eager=_check_index_eager, view=True,
    differentiable=False, attrs=("size", "negative", "ignore", "op", "style", "dim"),
    kernels={"cpu": _check_index_rule},
)


def _nonzero_infer(ops: Sequence[Operand]) -> TensorType:
    (x,) = ops
    assert isinstance(x, TensorType)
    return TensorType((-1, x.ndim), dt.int64, x.device)  # -1: known only after it runs


nonzero_op = defop(
    "nonzero", X, infer=_nonzero_infer, dynamic_shape=True, differentiable=False,
    eager=lambda x: np.stack(np.nonzero(x), axis=1).astype(np.int64) if x.ndim
    else np.zeros((int(bool(x)), 0), np.int64),
)
