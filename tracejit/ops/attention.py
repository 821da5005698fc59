"""Scaled dot-product attention as one op, `attention`, so that eager mode and compiled code run
it as one fused kernel (kernels/cpu/attention.py) instead of a matmul, a mask, a softmax, a
dropout and a second matmul with the (L, S) weights stored between them. Its VJP is a second
op, `attention_bwd`, which recomputes each row and returns dq, dk and dv packed in one flat
array (an op has one result); the VJP slices them out, views that cost nothing.

Operands: query (..., L, E), key (..., S, E), value (..., S, Ev) with equal batch dims, then the
mask when attrs["mask"] is "bool" or "float" (broadcastable to (..., L, S)), then the
generator's key and a copy of its offset (0-d int64) when attrs["p"] > 0. Attributes: scale,
causal, mask ("none" | "bool" | "float"), p (the dropout probability).
`nn.functional.scaled_dot_product_attention` uses it when those hold (and keeps its composite
of matmul and softmax otherwise: broadcast batch dims, float16, a float mask that requires
grad)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .registry import (
    DTypeError,
    Kind,
    Operand,
    ShapeError,
    TensorType,
    VjpContext,
    broadcast_shapes,
    defop,
    lit,
    same_device,
)

ATTRS = ("scale", "causal", "mask", "p")


def _split(ops: Sequence[Any], mask: str, p: float) -> tuple[Any, Any, Any, Any, Any, Any]:
    q, k, v = ops[:3]
    rest = list(ops[3:])
    m = rest.pop(0) if mask != "none" else None
    key, off = (rest[0], rest[1]) if p > 0 else (None, None)
    return q, k, v, m, key, off


def _check(ops: Sequence[Operand], mask: str, p: float) -> tuple[TensorType, ...]:
    q, k, v, m, key, off = _split(ops, mask, p)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, TensorType) or len(t.shape) < 2:
            raise ShapeError(f"attention: {name} must be a tensor of at least 2 dims, got {t}")
        if t.dtype not in (dt.float32, dt.float64) or t.dtype is not q.dtype:
            raise DTypeError(f"attention: query, key and value must be float32 or float64 of "
                             f"one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ShapeError(f"attention: query, key and value must have the same batch dims, got "
                         f"{list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"attention: shapes {list(q.shape)}, {list(k.shape)}, "
                         f"{list(v.shape)} do not match as [..., L, E], [..., S, E], [..., S, Ev]")
    weights = q.shape[:-1] + (k.shape[-2],)
    if m is not None:
        want = dt.bool_ if mask == "bool" else q.dtype
        if not isinstance(m, TensorType) or m.dtype is not want:
            raise DTypeError(f"attention: expected a {want} mask, got {m}")
        if broadcast_shapes("attention", m.shape, weights) != weights:
            raise ShapeError(f"attention: the mask {list(m.shape)} does not broadcast to the "
                             f"weights' shape {list(weights)}")
    if p > 0:
        for t in (key, off):
            if not isinstance(t, TensorType) or t.dtype is not dt.int64 or t.shape != ():
                raise DTypeError("attention: dropout needs the generator's key and offset as "
                                 "0-d int64 tensors")
    return q, k, v


def _fwd_infer(ops: Sequence[Operand], *, scale: float, causal: bool, mask: str,
               p: float) -> TensorType:
    q, k, v = _check(ops, mask, p)
    return TensorType(q.shape[:-1] + (v.shape[-1],), q.dtype, same_device("attention", ops))


def _bwd_infer(ops: Sequence[Operand], *, scale: float, causal: bool, mask: str,
               p: float) -> TensorType:
    q, k, v = _check(ops[:-1], mask, p)
    g = ops[-1]
    if not isinstance(g, TensorType) or g.shape != q.shape[:-1] + (v.shape[-1],):
        raise ShapeError(f"attention_bwd: the output gradient {g} does not match the output")
    n = math.prod(q.shape) + math.prod(k.shape) + math.prod(v.shape)
    return TensorType((n,), q.dtype, same_device("attention_bwd", ops))


def _three(shape: Sequence[int]) -> tuple[int, int, int]:
    """(batch, rows, columns): the batch dims flattened (explicitly: -1 is ambiguous when a
    dim is 0)."""
    return (math.prod(shape[:-2]), shape[-2], shape[-1])


def _as3(a: np.ndarray) -> np.ndarray:
    """C-contiguous (batch, rows, columns), as the kernels' BLAS calls want."""
    return np.ascontiguousarray(a).reshape(_three(a.shape))


def _kernel_args(arrays: Sequence[np.ndarray], scale: float, causal: bool, mask: str,
                 p: float) -> tuple[Any, ...]:
    q, k, v, m, key, off = _split(arrays, mask, p)
    ty = q.dtype.type
    weights = q.shape[:-1] + (k.shape[-2],)
    if m is None:
        m3 = np.zeros((1, 1, 1), np.bool_)
    else:
        m3 = np.ascontiguousarray(np.broadcast_to(m, weights)).reshape(_three(weights))
    mk = {"none": 0, "bool": 1, "float": 2}[mask]
    keep, dscale = (ty(1.0 - p), ty(1.0 / (1.0 - p))) if 0 < p < 1 else (ty(0), ty(0))
    kv = np.int64(key) if key is not None else np.int64(0)
    ov = np.int64(off) if off is not None else np.int64(0)
    return (_as3(q), _as3(k), _as3(v), m3, mk, causal, ty(scale), float(p), kv, ov, keep, dscale,
            1.0 if q.dtype == np.float64 else 0.0)


def _fwd_eager(*arrays: np.ndarray, scale: float, causal: bool, mask: str,
               p: float) -> np.ndarray:
    from ..kernels.cpu.attention import attention_fwd  # compiled on first use

    q, v = arrays[0], arrays[2]
    out = np.empty(q.shape[:-1] + (v.shape[-1],), q.dtype)
    attention_fwd(*_kernel_args(arrays, scale, causal, mask, p), _as3(out))
    return out


def _bwd_eager(*arrays: np.ndarray, scale: float, causal: bool, mask: str,
               p: float) -> np.ndarray:
    from ..kernels.cpu.attention import attention_bwd

    q, k, v = arrays[:3]
    g = arrays[-1]
    flat = np.empty(q.size + k.size + v.size, q.dtype)
    dq, dk, dv = _unpack(flat, q.shape, k.shape, v.shape)
    attention_bwd(*_kernel_args(arrays[:-1], scale, causal, mask, p), _as3(g), _as3(dq),
                  _as3(dk), _as3(dv))
    return flat


def _unpack(flat: Any, qs: tuple[int, ...], ks: tuple[int, ...],
            vs: tuple[int, ...]) -> tuple[Any, Any, Any]:
    a, b = math.prod(qs), math.prod(ks)
    return (flat[:a].reshape(qs), flat[a:a + b].reshape(ks), flat[a + b:].reshape(vs))


def _fwd_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    from ..dispatch import dispatch

    q, k, v = c.inputs[:3]
    flat = dispatch(attention_bwd_op, (*c.inputs, g), c.attrs)
    grads = _unpack(flat, tuple(q.shape), tuple(k.shape), tuple(v.shape))
    return tuple(grads) + (None,) * (len(c.inputs) - 3)


def _rule_args(a: list[str], ins: list[Any], at: dict[str, Any]) -> list[str] | None:
    q = ins[0]
    if q.dtype not in (dt.float32, dt.float64):
        return None
    mask, p = at["mask"], at["p"]
    weights = tuple(q.shape[:-1]) + (ins[1].shape[-2],)
    three = [f"np.ascontiguousarray({x}).reshape({_three(t.shape)!r})"
             for x, t in zip(a[:3], ins[:3])]
    rest = a[3:]
    if mask == "none":
        m3 = "np.zeros((1, 1, 1), np.bool_)"
    else:
        m3 = (f"np.ascontiguousarray(np.broadcast_to({rest.pop(0)}, {weights!r}))"
              f".reshape({_three(weights)!r})")
    d = q.dtype
    if p > 0:
        key, off = (f"np.int64({rest[0]}[()])", f"np.int64({rest[1]}[()])")
    else:
        key = off = "np.int64(0)"
    keep, dscale = (lit(1.0 - p, d), lit(1.0 / (1.0 - p), d)) if 0 < p < 1 else \
        (lit(0.0, d), lit(0.0, d))
    mk = {"none": 0, "bool": 1, "float": 2}[mask]
    wide = "1.0" if d is dt.float64 else "0.0"
    return three + [m3, str(mk), repr(bool(at["causal"])), lit(float(at["scale"]), d),
                    repr(float(p)), key, off, keep, dscale, wide]


def _fwd_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    args = _rule_args(a, ins, at)
    if args is None:
        return None
    buf = f"np.empty({_three(out.shape)!r}, np.{out.dtype.np.name})"
    return f"attention_fwd({', '.join(args)}, {buf}).reshape({tuple(out.shape)!r})"


def _bwd_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    args = _rule_args(a[:-1], ins[:-1], at)
    if args is None:
        return None
    g = ins[-1]
    g3 = f"np.ascontiguousarray({a[-1]}).reshape({_three(g.shape)!r})"
    return f"attention_bwd_flat({', '.join(args)}, {g3})"


attention_op = defop(
    "attention", Kind.CONTRACT, infer=_fwd_infer, eager=_fwd_eager, attrs=ATTRS,
    saves=("inputs",), vjp=_fwd_vjp, kernels={"cpu": _fwd_rule},
)
attention_bwd_op = defop(
    "attention_bwd", Kind.CONTRACT, infer=_bwd_infer, eager=_bwd_eager, attrs=ATTRS,
    differentiable=False, kernels={"cpu": _bwd_rule},
)
