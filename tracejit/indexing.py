"""x[key] and x[key] = v: PyTorch/NumPy indexing lowered to the slice, reshape, index,
index_put and where ops, so indexing traces and differentiates like any other op."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes as dt
from .dispatch import STATE
from .ops.registry import ArgError
from .tensor import Tensor, _from_value


def _is_adv(k: Any) -> bool:
    return isinstance(k, (Tensor, np.ndarray, list)) and not isinstance(k, bool)


def _expand_key(x: Tensor, key: Any) -> list[Any]:
    if not isinstance(key, tuple):
        key = (key,)
    key = [_from_value(k, None, copy=False) if isinstance(k, (np.ndarray, list)) else k
           for k in key]
    if x.is_cuda:  # index tensors made from lists, or on the CPU, join x's device (as torch)
        key = [k.to(x.device) if isinstance(k, Tensor) and k.device != x.device else k
               for k in key]
    n_used = sum(k.ndim if isinstance(k, Tensor) and k.dtype is dt.bool_ else
                 (0 if k is None or k is Ellipsis else 1) for k in key)
    if n_used > x.ndim:
        raise ArgError(f"too many indices for tensor of dimension {x.ndim} (got {n_used})")
    if sum(k is Ellipsis for k in key) > 1:
        raise ArgError("an index can only have a single ellipsis ('...')")
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + [slice(None)] * (x.ndim - n_used) + key[i + 1:]
    else:
        key = key + [slice(None)] * (x.ndim - n_used)
    return key


def _basic(x: Tensor, key: list[Any]) -> tuple[Tensor, list[Any]]:
    """Apply ints, slices and None; return the view and the remaining (advanced) key."""
    starts: list[int] = []
    stops: list[int] = []
    steps: list[int] = []
    out_shape: list[int] = []
    rest: list[Any] = []
    d = 0
    sliced = False
    for k in key:
        if k is None:
            out_shape.append(1)
            rest.append(slice(None))
            continue
        if isinstance(k, Tensor) and k.dtype is dt.bool_:
            if k.ndim == 0:  # NumPy: a new axis of length 1, then masked by the 0-d bool
                out_shape.append(1)
            for _ in range(k.ndim):
                starts.append(0)
                stops.append(x.shape[d])
                steps.append(1)
                out_shape.append(x.shape[d])
                d += 1
            rest.append(k)
            continue
        n = x.shape[d]
        if isinstance(k, (bool, np.bool_)):
            raise ArgError("indexing with a Python bool is not supported; use a bool tensor")
        if isinstance(k, (int, np.integer)) or (isinstance(k, Tensor) and k.ndim == 0 and
                                                k.dtype.category == 1 and not STATE.tracer):
            i = int(k)
            if not -n <= i < n:
                raise ArgError(f"index {i} is out of bounds for dimension {d} with size {n}")
            i %= n
            starts.append(i)
            stops.append(i + 1)
            steps.append(1)
            sliced = True
        elif isinstance(k, slice):
            if k.step is not None and k.step <= 0:
                raise ArgError("step must be greater than zero (negative steps are not "
                               "supported; use flip)")
            a, b, s = k.indices(n)
            b = max(a, b)
            starts.append(a)
            stops.append(b)
            steps.append(s)
            out_shape.append(len(range(a, b, s)))
            sliced = sliced or (a, b, s) != (0, n, 1)
            rest.append(slice(None))
        elif isinstance(k, Tensor):
            starts.append(0)
            stops.append(n)
            steps.append(1)
            out_shape.append(n)
            rest.append(k)
        else:
            raise ArgError(f"invalid index of type {type(k).__name__}; use ints, slices, None, "
                           "..., bool masks or integer tensors")
        d += 1
    y = x._slice(starts=tuple(starts), stops=tuple(stops), steps=tuple(steps)) if sliced else x
    if tuple(out_shape) != y.shape:
        y = y.reshape(tuple(out_shape))
    return y, rest


def _advanced(y: Tensor, rest: list[Any]) -> tuple[list[Tensor], tuple[int, ...]]:
    idx: list[Tensor] = []
    dims: list[int] = []
    d = 0
    for k in rest:
        if isinstance(k, Tensor) and k.dtype is dt.bool_:
            for j in range(max(k.ndim, 1)):
                dims.append(d + j)
            nz = k.nonzero() if k.ndim else k.reshape(1).nonzero()
            idx.extend(nz.unbind(1))
            d += max(k.ndim, 1)
        elif isinstance(k, Tensor):
            if k.dtype.category != 1:
                raise ArgError(f"tensors used as indices must be long, int or bool tensors, got "
                               f"{k.dtype.name}")
            idx.append(k)
            dims.append(d)
            d += 1
        else:
            d += 1
    return idx, tuple(dims)


def getitem(x: Tensor, key: Any) -> Tensor:
    k = _expand_key(x, key)
    y, rest = _basic(x, k)
    if not any(isinstance(r, Tensor) for r in rest):
        return y
    idx, dims = _advanced(y, rest)
    return y._index(*idx, dims=dims)


def _full_mask(x: Tensor, key: Any) -> Tensor | None:
    """A bool mask with x's leading shape: x[mask] = v is where(mask, v, x), static in shape."""
    if isinstance(key, Tensor) and key.dtype is dt.bool_ and key.shape == x.shape[:key.ndim]:
        return key.reshape(key.shape + (1,) * (x.ndim - key.ndim))
    return None


def setitem(x: Tensor, key: Any, value: Any) -> None:
    mask = _full_mask(x, key)
    v = value if isinstance(value, Tensor) else value
    if isinstance(v, (np.ndarray, list)):
        v = _from_value(v, x.dtype, copy=False)
        if x.is_cuda:
            v = v.to(x.device)
    if mask is not None and (not isinstance(v, Tensor) or v.numel() == 1):
        vv = v.reshape(()) if isinstance(v, Tensor) else v
        x._inplace(x.where(mask.logical_not(), vv).to(x.dtype))
        return
    k = _expand_key(x, key)
    has_adv = any(isinstance(r, Tensor) for r in k)
    if not has_adv:
        target_shape = getitem(x, key).shape
        vt = v if isinstance(v, Tensor) else x.new_full((), v)
        vt = vt.to(x.dtype).expand(target_shape)
        starts, stops, steps, keep = [], [], [], []
        d = 0
        for kk in k:
            if kk is None:
                continue
            n = x.shape[d]
            if isinstance(kk, slice):
                a, b, s = kk.indices(n)
                starts.append(a)
                stops.append(max(a, b))
                steps.append(s)
                keep.append(len(range(a, max(a, b), s)))
            else:
                i = int(kk) % n
                starts.append(i)
                stops.append(i + 1)
                steps.append(1)
                keep.append(1)
            d += 1
        src = vt.reshape(tuple(keep))
        x._inplace(x._slice_scatter(src, starts=tuple(starts), stops=tuple(stops),
                                    steps=tuple(steps)))
        return
    if any(isinstance(kk, (int, slice)) and kk != slice(None) for kk in k if kk is not None) or \
            any(kk is None for kk in k):
        raise ArgError("assignment with advanced indices mixed with ints, partial slices or None "
                       "is not supported; index the tensor first and assign to the result of "
                       "index_put_")
    idx, dims = _advanced(x, k)
    vt = v if isinstance(v, Tensor) else x.new_full((), v)
    x._inplace(x._index_put(vt.to(x.dtype), *idx, dims=dims, accumulate=False))
