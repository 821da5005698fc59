"""Pooling ops over the two trailing (spatial) dims of a 3-d (C, H, W) or 4-d (N, C, H, W)
tensor, eagerly and compiled the same Numba kernels (kernels/cpu/pool.py), over the leading
dims flattened into planes.

- `max_pool2d_indices`: each window's argmax, the flat index h * W + w in its plane (torch's
  `return_indices`, with its ties and NaN: see the kernel). `F.max_pool2d` gathers the values
  through it, so its gradient is the gather's: each output's gradient scattered onto its argmax.
- `avg_pool2d` and its VJP `avg_pool2d_bwd` (which spreads each output's gradient over its
  window; its own VJP is `avg_pool2d` again: the two are adjoint linear maps).
- `adaptive_avg_pool2d` and `adaptive_avg_pool2d_bwd`, likewise, with torch's windows
  [floor(o * in / out), ceil((o + 1) * in / out)).

Attributes are torch's, each pair (height, width) a tuple: kernel_size, stride, padding,
dilation, ceil_mode; count_include_pad and divisor_override (None or a positive int) for
avg_pool2d; output_size for the adaptive pool; input_size (H, W) for the VJP ops. The shape
checks and messages follow torch's pool2d_shape_check, and raise ShapeError (a RuntimeError, as
torch's)."""

from __future__ import annotations

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
    defop,
    fmt_shape,
)

W = Kind.WINDOW
Pair = tuple[int, int]


def _input(op: str, x: Operand, ints: bool = False) -> TensorType:
    """The pooled operand: 3-d or 4-d, float (float16 computes in float32, eagerly: float16
    graphs are not compiled on CPU), or also int32/int64 for max pooling (as torch)."""
    if not isinstance(x, TensorType):
        raise ShapeError(f"{op}: expected a tensor input, got {type(x).__name__}")
    if x.ndim not in (3, 4) or any(n == 0 for n in x.shape[-3:]):
        raise ShapeError(f"{op}: expected a 3-d (C, H, W) or 4-d (N, C, H, W) input with "
                         f"non-zero C, H and W (a batch of 0 is allowed), got "
                         f"{fmt_shape(x.shape)}")
    if not (x.dtype.is_floating_point or (ints and x.dtype in (dt.int32, dt.int64))):
        allowed = "a floating-point or int32/int64" if ints else "a floating-point"
        raise DTypeError(f"{op}: expected {allowed} input, got {x.dtype.name}; convert it with "
                         f".float()")
    return x


def _compute(ops: Sequence[Operand]) -> Any:
    """float16 pools in float32 (the result is rounded once to float16, as torch's CPU
    kernels accumulate half in float)."""
    x = ops[0]
    return dt.float32 if isinstance(x, TensorType) and x.dtype is dt.float16 else None


def out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: floor (or ceil) of the window count, where with ceil_mode
    the last window must start inside the input or its left padding."""
    n = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    return n


def _pool_shape(op: str, x: TensorType, kernel_size: Pair, stride: Pair, padding: Pair,
                dilation: Pair, ceil_mode: bool) -> tuple[int, ...]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    if kh <= 0 or kw <= 0:
        raise ShapeError(f"{op}: kernel size should be greater than zero, but got kH: {kh} "
                       f"kW: {kw}")
    if sh <= 0 or sw <= 0:
        raise ShapeError(f"{op}: stride should be greater than zero, but got dH: {sh} dW: {sw}")
    if dh <= 0 or dw <= 0:
        raise ShapeError(f"{op}: dilation should be greater than zero, but got dilationH: {dh} "
                       f"dilationW: {dw}")
    if ph < 0 or pw < 0:
        raise ShapeError(f"{op}: pad must be non-negative, but got padH: {ph} padW: {pw}")
    if kh // 2 < ph or kw // 2 < pw:
        raise ShapeError(f"{op}: pad should be smaller than or equal to half of kernel size, but "
                       f"got padW = {pw}, padH = {ph}, kW = {kw}, kH = {kh}")
    H, Wd = x.shape[-2:]
    oh = out_size(H, kh, sh, ph, dh, ceil_mode)
    ow = out_size(Wd, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ShapeError(f"{op}: Given input size: ({x.shape[-3]}x{H}x{Wd}). Calculated output "
                         f"size: ({x.shape[-3]}x{oh}x{ow}). Output size is too small (make the "
                         f"kernel smaller or pad the input)")
    return x.shape[:-2] + (oh, ow)


def _planes(shape: Sequence[int]) -> tuple[int, int, int]:
    b = 1
    for n in shape[:-2]:
        b *= n
    return (b, shape[-2], shape[-1])


def _as3(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(_planes(a.shape))


def _rule_in(a: str, t: TensorType) -> str:
    return f"np.ascontiguousarray({a}).reshape({_planes(t.shape)!r})"


def _rule_out(out: TensorType) -> str:
    return f"np.empty({_planes(out.shape)!r}, np.{out.dtype.np.name})"


# ---- max_pool2d_indices ------------------------------------------------------------------------

MAX_ATTRS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _max_infer(ops: Sequence[Operand], *, kernel_size: Pair, stride: Pair, padding: Pair,
               dilation: Pair, ceil_mode: bool) -> TensorType:
    (x,) = ops
    x = _input("max_pool2d", x, ints=True)
    shape = _pool_shape("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    return TensorType(shape, dt.int64, x.device)


def _max_args(kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair) -> tuple[int, ...]:
    return (*kernel_size, *stride, *padding, *dilation)


def _max_eager(x: np.ndarray, *, kernel_size: Pair, stride: Pair, padding: Pair,
               dilation: Pair, ceil_mode: bool) -> np.ndarray:
    from ..kernels.cpu.pool import maxpool2d_argmax as kernel  # compiled on first use

    shape = _max_infer((TensorType(x.shape, dt.from_numpy_dtype(x.dtype)),),
                       kernel_size=kernel_size, stride=stride, padding=padding,
                       dilation=dilation, ceil_mode=ceil_mode).shape
    out = np.empty(_planes(shape), np.int64)
    run: Any = kernel  # (a Numba dispatcher)
    run(_as3(x), *_max_args(kernel_size, stride, padding, dilation), out)
    return out.reshape(shape)


def _max_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    if ins[0].dtype is dt.float16:
        return None
    args = ", ".join(map(str, _max_args(at["kernel_size"], at["stride"], at["padding"],
                                        at["dilation"])))
    return (f"maxpool2d_argmax({_rule_in(a[0], ins[0])}, {args}, "
            f"np.empty({_planes(out.shape)!r}, np.int64)).reshape({tuple(out.shape)!r})")


max_pool2d_indices_op = defop(
    "max_pool2d_indices", W, infer=_max_infer, eager=_max_eager, attrs=MAX_ATTRS,
    differentiable=False, compute_dtype=_compute, kernels={"cpu": _max_rule},
)


# ---- avg_pool2d, adaptive_avg_pool2d and their VJPs ---------------------------------------------
# One pair of kernels serves both: window_avg(x, kh, kw, sh, sw, ph, pw, include_pad, divisor,
# adaptive, out) and window_avg_bwd(g, ..., out), out of the input's shape.

AVG_ATTRS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override")


def _avg_shape(x: TensorType, at: dict[str, Any]) -> tuple[int, ...]:
    d = at["divisor_override"]
    if d is not None and (not isinstance(d, int) or d <= 0):
        raise ShapeError(f"avg_pool2d: divisor must be not zero (a positive int or None), got {d}")
    return _pool_shape("avg_pool2d", x, at["kernel_size"], at["stride"], at["padding"], (1, 1),
                       at["ceil_mode"])


def _adaptive_shape(x: TensorType, output_size: Pair) -> tuple[int, ...]:
    if any(not isinstance(n, int) or n < 0 for n in output_size):
        raise ShapeError(f"adaptive_avg_pool2d: output_size must be non-negative ints, got "
                       f"{output_size}")
    return x.shape[:-2] + tuple(output_size)


def _kernel_args(adaptive: bool, at: dict[str, Any]) -> tuple[Any, ...]:
    """The scalar arguments of window_avg / window_avg_bwd after the array."""
    if adaptive:
        return (0, 0, 1, 1, 0, 0, False, 0, True)
    d = at["divisor_override"]
    return (*at["kernel_size"], *at["stride"], *at["padding"], bool(at["count_include_pad"]),
            0 if d is None else int(d), False)


def _avg_infer(ops: Sequence[Operand], **at: Any) -> TensorType:
    (x,) = ops
    x = _input("avg_pool2d", x)
    return TensorType(_avg_shape(x, at), x.dtype, x.device)


def _adaptive_infer(ops: Sequence[Operand], *, output_size: Pair) -> TensorType:
    (x,) = ops
    x = _input("adaptive_avg_pool2d", x)
    return TensorType(_adaptive_shape(x, output_size), x.dtype, x.device)


def _bwd_check(op: str, g: Operand, input_size: Pair, want: tuple[int, ...]) -> TensorType:
    assert isinstance(g, TensorType)
    if tuple(g.shape[-2:]) != tuple(want[-2:]):
        raise ShapeError(f"{op}: the output gradient {fmt_shape(g.shape)} does not match the "
                         f"pooled shape {fmt_shape(want)}")
    return TensorType(g.shape[:-2] + tuple(input_size), g.dtype, g.device)


def _avg_bwd_infer(ops: Sequence[Operand], *, input_size: Pair, **at: Any) -> TensorType:
    (g,) = ops
    g = _input("avg_pool2d_bwd", g)
    x = TensorType(g.shape[:-2] + tuple(input_size), g.dtype, g.device)
    return _bwd_check("avg_pool2d_bwd", g, input_size, _avg_shape(x, at))


def _adaptive_bwd_infer(ops: Sequence[Operand], *, output_size: Pair,
                        input_size: Pair) -> TensorType:
    (g,) = ops
    g = _input("adaptive_avg_pool2d_bwd", g)
    x = TensorType(g.shape[:-2] + tuple(input_size), g.dtype, g.device)
    return _bwd_check("adaptive_avg_pool2d_bwd", g, input_size, _adaptive_shape(x, output_size))


def _run(fwd: bool, adaptive: bool, a: np.ndarray, shape: tuple[int, ...],
         at: dict[str, Any]) -> np.ndarray:
    from ..kernels.cpu.pool import window_avg, window_avg_bwd  # compiled on first use

    out = np.empty(_planes(shape), a.dtype)
    run: Any = window_avg if fwd else window_avg_bwd  # (Numba dispatchers)
    run(_as3(a), *_kernel_args(adaptive, at), out)
    return out.reshape(shape)


def _avg_eager(x: np.ndarray, **at: Any) -> np.ndarray:
    x_t = TensorType(x.shape, dt.from_numpy_dtype(x.dtype))
    return _run(True, False, x, _avg_shape(x_t, at), at)


def _avg_bwd_eager(g: np.ndarray, *, input_size: Pair, **at: Any) -> np.ndarray:
    return _run(False, False, g, g.shape[:-2] + tuple(input_size), at)


def _adaptive_eager(x: np.ndarray, *, output_size: Pair) -> np.ndarray:
    return _run(True, True, x, x.shape[:-2] + tuple(output_size), {})


def _adaptive_bwd_eager(g: np.ndarray, *, output_size: Pair, input_size: Pair) -> np.ndarray:
    return _run(False, True, g, g.shape[:-2] + tuple(input_size), {})


def _avg_rule_for(fwd: bool, adaptive: bool) -> Any:
    name = "window_avg" if fwd else "window_avg_bwd"

    def rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
        if ins[0].dtype is dt.float16:
            return None
        args = ", ".join(map(repr, _kernel_args(adaptive, at)))
        return (f"{name}({_rule_in(a[0], ins[0])}, {args}, {_rule_out(out)})"
                f".reshape({tuple(out.shape)!r})")

    return rule


def _avg_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    from ..dispatch import dispatch

    x = c.in_types[0]
    assert isinstance(x, TensorType)
    return (dispatch(avg_pool2d_bwd_op, (g,), {**c.attrs, "input_size": tuple(x.shape[-2:])}),)


def _avg_bwd_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    from ..dispatch import dispatch

    at = {k: v for k, v in c.attrs.items() if k != "input_size"}
    return (dispatch(avg_pool2d_op, (g,), at),)


def _adaptive_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    from ..dispatch import dispatch

    x = c.in_types[0]
    assert isinstance(x, TensorType)
    return (dispatch(adaptive_avg_pool2d_bwd_op, (g,),
                     {**c.attrs, "input_size": tuple(x.shape[-2:])}),)


def _adaptive_bwd_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    from ..dispatch import dispatch

    return (dispatch(adaptive_avg_pool2d_op, (g,), {"output_size": c.attrs["output_size"]}),)


avg_pool2d_op = defop(
    "avg_pool2d", W, infer=_avg_infer, eager=_avg_eager, attrs=AVG_ATTRS, vjp=_avg_vjp,
    compute_dtype=_compute, kernels={"cpu": _avg_rule_for(True, False)},
)
avg_pool2d_bwd_op = defop(
    "avg_pool2d_bwd", W, infer=_avg_bwd_infer, eager=_avg_bwd_eager,
    attrs=AVG_ATTRS + ("input_size",), vjp=_avg_bwd_vjp, compute_dtype=_compute,
    kernels={"cpu": _avg_rule_for(False, False)},
)
adaptive_avg_pool2d_op = defop(
    "adaptive_avg_pool2d", W, infer=_adaptive_infer, eager=_adaptive_eager,
    attrs=("output_size",), vjp=_adaptive_vjp, compute_dtype=_compute,
    kernels={"cpu": _avg_rule_for(True, True)},
)
adaptive_avg_pool2d_bwd_op = defop(
    "adaptive_avg_pool2d_bwd", W, infer=_adaptive_bwd_infer, eager=_adaptive_bwd_eager,
    attrs=("output_size", "input_size"), vjp=_adaptive_bwd_vjp, compute_dtype=_compute,
    kernels={"cpu": _avg_rule_for(False, True)},
)


# ---- compiled only: passes/conv.py's fusion of the max-pool gradient with a ReLU's --------------


def _relu_bwd_infer(ops: Sequence[Operand]) -> TensorType:
    g, idx, y = ops
    if not all(isinstance(t, TensorType) for t in ops):
        raise ShapeError("max_pool2d_relu_bwd: expected three tensors")
    assert isinstance(g, TensorType) and isinstance(idx, TensorType) and isinstance(y, TensorType)
    if g.ndim != 3 or idx.shape != g.shape or y.ndim != 4 or y.shape[:2] != g.shape[:2] or \
            g.dtype is not y.dtype or idx.dtype is not dt.int64:
        raise ShapeError(f"max_pool2d_relu_bwd: gradient {g}, indices {idx} and ReLU output {y} "
                         f"do not match ((N, C, K), (N, C, K) int64, (N, C, H, W))")
    return y


def _relu_bwd_eager(g: np.ndarray, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    n, c, h, w = y.shape
    out = np.zeros((n, c, h * w), g.dtype)
    np.add.at(out, (np.arange(n)[:, None, None], np.arange(c)[None, :, None], idx), g)
    return out.reshape(y.shape) * (y > 0).astype(g.dtype)


def _relu_bwd_rule(a: list[str], at: dict[str, Any], out: TensorType,
                   ins: list[Any]) -> str | None:
    g, _, y = ins
    if 0 in out.shape or 0 in g.shape or out.dtype not in (dt.float32, dt.float64):
        return None
    planes = (y.shape[0] * y.shape[1],)
    flat = [f"np.ascontiguousarray({v}).reshape({planes + (int(np.prod(t.shape[2:])),)!r})"
            for v, t in zip(a, ins)]
    return (f"maxpool_relu_bwd({flat[0]}, {flat[1]}, {flat[2]}, "
            f"np.empty({planes + (y.shape[2] * y.shape[3],)!r}, np.{out.dtype.np.name}))"
            f".reshape({tuple(out.shape)!r})")


max_pool2d_relu_bwd_op = defop(
    "max_pool2d_relu_bwd", W, infer=_relu_bwd_infer, eager=_relu_bwd_eager,
    differentiable=False, kernels={"cpu": _relu_bwd_rule},
)
