"""Movement ops: reshape, permute, expand, slice, slice_scatter, cat, clone, and the creation
ops full and arange. No arithmetic here; views alias their input's memory in eager mode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..device import CPU
from .elementwise import promoted
from .registry import (
    ArgError,
    Kind,
    Operand,
    ShapeError,
    TensorType,
    VjpContext,
    defop,
    fmt_shape,
    lit,
    np_name,
)

M = Kind.MOVEMENT


def _one(ops: Sequence[Operand]) -> TensorType:
    (x,) = ops
    assert isinstance(x, TensorType)
    return x


def resolve_shape(op: str, shape: Sequence[int], numel: int, old: Sequence[int]) -> tuple[int, ...]:
    """Fill in one -1 and check the element count (reshape/view)."""
    shape = tuple(int(n) for n in shape)
    if shape.count(-1) > 1:
        raise ArgError(f"{op}: only one dimension can be inferred (-1), got {list(shape)}")
    if any(n < -1 for n in shape):
        raise ArgError(f"{op}: invalid shape dimension in {list(shape)} (sizes must be >= 0)")
    known = math.prod(n for n in shape if n != -1)
    if -1 in shape:
        if known == 0 or numel % known:
            raise ShapeError(f"{op}: shape {list(shape)} is invalid for input of size {numel} "
                             f"(shape {fmt_shape(old)})")
        shape = tuple(numel // known if n == -1 else n for n in shape)
    elif known != numel:
        raise ShapeError(f"{op}: shape {list(shape)} is invalid for input of size {numel} "
                         f"(shape {fmt_shape(old)})")
    return shape


def _reshape_infer(ops: Sequence[Operand], *, shape: tuple[int, ...]) -> TensorType:
    x = _one(ops)
    return TensorType(resolve_shape("reshape", shape, math.prod(x.shape), x.shape), x.dtype,
                      x.device)


reshape_op = defop(
    "reshape", M, infer=_reshape_infer, attrs=("shape",), view=True,
    eager=lambda x, *, shape: x.reshape(shape),
    vjp=lambda c, g: (g.reshape(c.in_types[0].shape),),
    kernels={"cpu": lambda a, at, out, ins: f"np.ascontiguousarray({a[0]}).reshape({out.shape!r})"},
)


def _permute_infer(ops: Sequence[Operand], *, dims: tuple[int, ...]) -> TensorType:
    x = _one(ops)
    if sorted(dims) != list(range(x.ndim)):
        raise ArgError(f"permute: dims {list(dims)} must be a permutation of 0..{x.ndim - 1} for a "
                       f"{x.ndim}-d tensor")
    return TensorType(tuple(x.shape[d] for d in dims), x.dtype, x.device)


def _permute_text(a: str, dims: tuple[int, ...]) -> str:
    # a matrix transpose (every backward matmul's operand) as `.T`: an attribute read, where
    # np.transpose's Python wrapper cost a Python driver 0.7 us a call (both mean the same to
    # Numba's native driver)
    if dims == (1, 0):
        return f"{a}.T"
    return f"np.transpose({a}, {dims!r})"


permute_op = defop(
    "permute", M, infer=_permute_infer, attrs=("dims",), view=True,
    eager=lambda x, *, dims: np.transpose(x, dims),
    kernels={"cpu": lambda a, at, out, ins: _permute_text(a[0], tuple(at["dims"]))},
    vjp=lambda c, g: (g.permute(*np.argsort(c.attrs["dims"]).tolist()),),
)


def _expand_infer(ops: Sequence[Operand], *, shape: tuple[int, ...]) -> TensorType:
    x = _one(ops)
    if len(shape) < x.ndim:
        raise ShapeError(f"expand: the number of sizes provided ({len(shape)}) must be greater or "
                         f"equal to the number of dimensions in the tensor ({x.ndim})")
    lead = len(shape) - x.ndim
    out = list(shape[:lead])
    if any(n < 0 for n in out):
        raise ArgError(f"expand: -1 is not allowed in a leading, non-existing dimension {shape}")
    for n, m in zip(x.shape, shape[lead:]):
        if m == -1 or m == n:
            out.append(n)
        elif n == 1 and m >= 0:
            out.append(m)
        else:
            raise ShapeError(f"expand: the expanded size {m} must match the existing size {n} at "
                             f"a non-singleton dimension (from {fmt_shape(x.shape)} to "
                             f"{list(shape)})")
    return TensorType(tuple(out), x.dtype, x.device)


# expand: identity VJP; the engine's central un-broadcasting sums g back to the input's shape
expand_op = defop(
    "expand", M, infer=_expand_infer, attrs=("shape",), view=True,
    eager=lambda x, *, shape: np.broadcast_to(x, _expand_infer([_np_type(x)], shape=shape).shape),
    vjp=lambda c, g: (g,),
    kernels={"cpu": lambda a, at, out, ins: f"np.broadcast_to({a[0]}, {out.shape!r})"},
)


def _np_type(x: np.ndarray) -> TensorType:
    from ..dtypes import from_numpy_dtype

    return TensorType(x.shape, from_numpy_dtype(x.dtype), CPU)


def _slice_len(n: int, start: int, stop: int, step: int) -> int:
    return len(range(start, stop, step)) if n else 0


def _slice_infer(ops: Sequence[Operand], *, starts: tuple[int, ...], stops: tuple[int, ...],
                 steps: tuple[int, ...]) -> TensorType:
    x = _one(ops)
    shape = tuple(_slice_len(n, a, b, s) for n, a, b, s in zip(x.shape, starts, stops, steps))
    return TensorType(shape, x.dtype, x.device)


def _key(starts: Sequence[int], stops: Sequence[int], steps: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps))


SA = ("starts", "stops", "steps")


def _slice_text(at: dict[str, Any]) -> str:
    return ", ".join(f"{a}:{b}:{s}" for a, b, s in zip(at["starts"], at["stops"], at["steps"]))

slice_op = defop(
    "slice", M, infer=_slice_infer, attrs=SA, view=True,
    eager=lambda x, *, starts, stops, steps: x[_key(starts, stops, steps)],
    vjp=lambda c, g: (g.new_zeros(c.in_types[0].shape)._slice_scatter(g, **c.attrs),),
    kernels={"cpu": lambda a, at, out, ins: f"{a[0]}[{_slice_text(at)}]" if out.shape else None},
)


def _slice_scatter_eager(base: np.ndarray, src: np.ndarray, *, starts: Any, stops: Any,
                         steps: Any) -> np.ndarray:
    out = base.copy()
    out[_key(starts, stops, steps)] = src
    return out


def _slice_scatter_infer(ops: Sequence[Operand], **attrs: Any) -> TensorType:
    base, src = ops
    assert isinstance(base, TensorType)
    want = _slice_infer([base], **attrs).shape
    if isinstance(src, TensorType) and src.shape != want:
        raise ShapeError(f"slice_scatter: src of shape {fmt_shape(src.shape)} does not match the "
                         f"slice's shape {fmt_shape(want)}")
    return base


slice_scatter_op = defop(
    "slice_scatter", M, infer=_slice_scatter_infer, attrs=SA, eager=_slice_scatter_eager,
    compute_dtype=lambda ops: (None, ops[0].dtype),  # type: ignore[union-attr]
    vjp=lambda c, g: (g._slice_scatter(g.new_zeros(c.in_types[1].shape), **c.attrs),
                      g._slice(**c.attrs)),
    kernels={"cpu": lambda a, at, out, ins: (
        f"{{out}} = {a[0]}.copy()\n{{out}}[{_slice_text(at)}] = {a[1]}" if out.shape else None)},
)


def _cat_infer(ops: Sequence[Operand], *, dim: int) -> TensorType:
    ts = [o for o in ops if isinstance(o, TensorType)]
    if not ts:
        raise ArgError("cat: expected a non-empty list of tensors")
    # PyTorch (legacy): 1-d empty tensors are skipped
    ref = next((t for t in ts if t.shape != (0,)), ts[0])
    total = 0
    for i, t in enumerate(ts):
        if t.shape == (0,) and ref.shape != (0,):
            continue
        if t.ndim != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if j != dim):
            raise ShapeError(f"cat: sizes of tensors must match except in dimension {dim}; tensor "
                             f"0 has shape {fmt_shape(ref.shape)} and tensor {i} has shape "
                             f"{fmt_shape(t.shape)}")
        total += t.shape[dim]
    shape = list(ref.shape)
    shape[dim] = total
    return TensorType(tuple(shape), promoted(ts), ref.device)


def _cat_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    dim, grads, at = c.attrs["dim"], [], 0
    for t, need in zip(c.in_types, c.needs):
        assert isinstance(t, TensorType)
        if t.shape == (0,) and g.ndim != 1:  # an empty 1-d input that cat skipped
            grads.append(g.new_zeros((0,)) if need else None)
            continue
        grads.append(g.narrow(dim, at, t.shape[dim]) if need else None)
        at += t.shape[dim]
    return tuple(grads)


cat_op = defop(
    "cat", M, infer=_cat_infer, attrs=("dim",), compute_dtype=promoted,
    eager=lambda *xs, dim: np.concatenate([x for x in xs if x.shape != (0,)] or [xs[0]], axis=dim),
    vjp=_cat_vjp,
    kernels={"cpu": lambda a, at, out, ins: "np.concatenate((" + "".join(
        f"{x}.astype({np_name(out.dtype)}), " for x, t in zip(a, ins) if t.shape != (0,) or
        out.ndim == 1) + f"), axis={at['dim']})"},
)

# clone: always a C-contiguous copy (torch preserves strides; contiguous() relies on this)
clone_op = defop(
    "clone", M, infer=lambda ops: _one(ops), eager=lambda x: np.array(x, order="C", copy=True),
    vjp=lambda c, g: (g,), kernels={"cpu": lambda a, at, out, ins: f"{a[0]}.copy()"},
)


# ---- creation (no tensor inputs) -----------------------------------------------------------------
def _full_infer(ops: Sequence[Operand], *, shape: tuple[int, ...], value: Any,
                dtype: Any) -> TensorType:
    if any(n < 0 for n in shape):
        raise ShapeError(f"full: trying to create tensor with negative dimension in "
                         f"{list(shape)}")
    return TensorType(tuple(shape), dtype, CPU)


full_op = defop(
    "full", Kind.CREATION, infer=_full_infer, attrs=("shape", "value", "dtype"),
    eager=lambda *, shape, value, dtype: np.full(shape, value, dtype.np), differentiable=False,
    kernels={"cpu": lambda a, at, out, ins: (
        f"np.full({out.shape!r}, {lit(at['value'], out.dtype)}, {np_name(out.dtype)})")},
)


def arange_len(start: float, end: float, step: float) -> int:
    if step == 0:
        raise ArgError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise ArgError(f"arange: upper bound and larger bound inconsistent with step sign "
                       f"(start={start}, end={end}, step={step})")
    return max(0, math.ceil((end - start) / step))


arange_op = defop(
    "arange", Kind.CREATION, attrs=("start", "end", "step", "dtype"), differentiable=False,
    infer=lambda ops, *, start, end, step, dtype: TensorType((arange_len(start, end, step),),
                                                             dtype),
    eager=lambda *, start, end, step, dtype: (
        start + np.arange(arange_len(start, end, step), dtype=np.float64) * step
    ).astype(dtype.np) if dtype.is_floating_point else np.arange(start, end, step, dtype=dtype.np),
    kernels={"cpu": lambda a, at, out, ins: (
        f"({lit(float(at['start']))} + np.arange({out.shape[0]}) * {lit(float(at['step']))})"
        f".astype({np_name(out.dtype)})")},
)
