"""Convolutions: `conv` (PyTorch's conv1d/conv2d without the bias), `conv_transpose` (its
adjoint in the input: the gradient of a conv, and ConvTranspose) and `conv_weight_grad` (its
adjoint in the weight). The three are bilinear and each one's VJP is the other two, so
gradients of every order stay in this closed set. Eagerly: kernels/cpu/conv.py's im2col / col2im
loops and one NumPy BLAS GEMM per group between them (float32 stays float32); compiled: the
same loops around the BLAS call the driver makes (runtime/blas.py in a Python driver).

Operands are (N, C, *spatial) inputs and (O, C / groups, *kernel) weights with one or two
spatial dims (a 1-d conv is computed as a 2-d one of height 1). Attributes, one entry per
spatial dim: `stride`, `padding` (a (before, after) pair: "same" pads an even kernel more
after, as torch does), `dilation`; `groups`; `output_padding` (conv_transpose: extra rows at
the end of its output); `kernel_size` (conv_weight_grad: the weight's spatial shape)."""

from __future__ import annotations

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
    defop,
    np_name,
    same_device,
)

ATTRS = ("stride", "padding", "dilation", "groups")


def _check_attrs(op: str, r: int, stride: Any, padding: Any, dilation: Any, groups: Any) -> None:
    if r not in (1, 2):
        raise ShapeError(f"{op}: only 1-d and 2-d convolutions are implemented (the weight has "
                         f"{r} spatial dims)")
    for name, v in (("stride", stride), ("dilation", dilation)):
        if len(v) != r or any(int(s) < 1 for s in v):
            raise ArgError(f"{op}: {name} must be {r} positive ints, got {v}")
    if len(padding) != r or any(len(p) != 2 or min(p) < 0 for p in padding):
        raise ArgError(f"{op}: padding must be {r} (before, after) pairs of ints >= 0, got "
                       f"{padding}")
    if int(groups) < 1:
        raise ArgError(f"{op}: groups must be a positive integer, got {groups}")


def _floats(op: str, a: TensorType, b: TensorType, names: tuple[str, str]) -> None:
    if a.dtype is not b.dtype:
        raise DTypeError(
            f"{op}: the {names[0]} is {a.dtype.name} but the {names[1]} is {b.dtype.name}; "
            f"convert one of them (x.float() for float32: NumPy data is float64, or "
            f"model.double() for float64)")
    if a.dtype not in (dt.float32, dt.float64):
        raise DTypeError(f"{op}: not implemented for {a.dtype.name} tensors; use .float()")


def _out_size(op: str, x: TensorType, w: TensorType, stride: Sequence[int],
              padding: Sequence[Sequence[int]], dilation: Sequence[int]) -> tuple[int, ...]:
    sp = x.shape[2:]
    padded = [n + lo + hi for n, (lo, hi) in zip(sp, padding)]
    ext = [d * (k - 1) + 1 for d, k in zip(dilation, w.shape[2:])]
    if any(p < e for p, e in zip(padded, ext)):
        shown = " x ".join(map(str, padded))
        ks = " x ".join(map(str, ext))
        raise ShapeError(f"{op}: calculated padded input size per channel: ({shown}). Kernel "
                         f"size (dilated): ({ks}). Kernel size can't be greater than actual "
                         f"input size; pad the input or use a smaller kernel")
    return tuple((p - e) // s + 1 for p, e, s in zip(padded, ext, stride))


def _operands(op: str, ops: Sequence[Operand]) -> tuple[TensorType, TensorType]:
    x, w = ops
    if not isinstance(x, TensorType) or not isinstance(w, TensorType):
        raise ArgError(f"{op}: expected two tensors, got {type(x).__name__} and "
                       f"{type(w).__name__}")
    return x, w


def _conv_infer(ops: Sequence[Operand], *, stride: tuple[int, ...],
                padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
                groups: int) -> TensorType:
    x, w = _operands("conv", ops)
    r = w.ndim - 2
    _check_attrs("conv", r, stride, padding, dilation, groups)
    if x.ndim != r + 2:
        raise ShapeError(f"conv: expected a {r + 2}-d input (batch, channels, {r} spatial) for "
                         f"a {r + 2}-d weight {list(w.shape)}, got input of size {list(x.shape)}")
    _floats("conv", x, w, ("input", "weight"))
    if w.shape[0] % groups:
        raise ShapeError(f"conv: given groups={groups}, expected weight to be divisible by "
                         f"{groups} at dimension 0, but got weight of size {list(w.shape)}")
    if x.shape[1] != w.shape[1] * groups:
        raise ShapeError(
            f"conv: given groups={groups}, weight of size {list(w.shape)}, expected "
            f"input{list(x.shape)} to have {w.shape[1] * groups} channels, but got "
            f"{x.shape[1]} channels instead")
    out = _out_size("conv", x, w, stride, padding, dilation)
    return TensorType((x.shape[0], w.shape[0]) + out, x.dtype, same_device("conv", ops))


def _transpose_size(x: TensorType, w: TensorType, stride: Sequence[int],
                    padding: Sequence[Sequence[int]], dilation: Sequence[int],
                    output_padding: Sequence[int]) -> tuple[int, ...]:
    return tuple((n - 1) * s - lo - hi + d * (k - 1) + 1 + op for n, s, (lo, hi), d, k, op in
                 zip(x.shape[2:], stride, padding, dilation, w.shape[2:], output_padding))


def _transpose_infer(ops: Sequence[Operand], *, stride: tuple[int, ...],
                     padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
                     groups: int, output_padding: tuple[int, ...]) -> TensorType:
    x, w = _operands("conv_transpose", ops)
    r = w.ndim - 2
    _check_attrs("conv_transpose", r, stride, padding, dilation, groups)
    if len(output_padding) != r or min(output_padding) < 0:
        raise ArgError(f"conv_transpose: output_padding must be {r} ints >= 0, got "
                       f"{output_padding}")
    if x.ndim != r + 2:
        raise ShapeError(f"conv_transpose: expected a {r + 2}-d input (batch, channels, {r} "
                         f"spatial) for a {r + 2}-d weight {list(w.shape)}, got input of size "
                         f"{list(x.shape)}")
    _floats("conv_transpose", x, w, ("input", "weight"))
    if w.shape[0] % groups:
        raise ShapeError(f"conv_transpose: given groups={groups}, expected weight to be "
                         f"divisible by {groups} at dimension 0, but got weight of size "
                         f"{list(w.shape)}")
    if x.shape[1] != w.shape[0]:
        raise ShapeError(
            f"conv_transpose: given transposed=1, weight of size {list(w.shape)}, expected "
            f"input{list(x.shape)} to have {w.shape[0]} channels, but got {x.shape[1]} "
            f"channels instead")
    out = _transpose_size(x, w, stride, padding, dilation, output_padding)
    if min(out, default=1) < 1:
        raise ShapeError(f"conv_transpose: the output size {list(out)} of input "
                         f"{list(x.shape)} and weight {list(w.shape)} is too small (the "
                         f"padding removes more than the transposed convolution adds)")
    return TensorType((x.shape[0], w.shape[1] * groups) + out, x.dtype,
                      same_device("conv_transpose", ops))


def _wgrad_infer(ops: Sequence[Operand], *, stride: tuple[int, ...],
                 padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...], groups: int,
                 kernel_size: tuple[int, ...]) -> TensorType:
    x, g = _operands("conv_weight_grad", ops)
    r = len(kernel_size)
    _check_attrs("conv_weight_grad", r, stride, padding, dilation, groups)
    if x.ndim != r + 2 or g.ndim != r + 2 or x.shape[0] != g.shape[0]:
        raise ShapeError(f"conv_weight_grad: input {list(x.shape)} and output gradient "
                         f"{list(g.shape)} must be (N, C, {r} spatial) with one batch size")
    _floats("conv_weight_grad", x, g, ("input", "output gradient"))
    if x.shape[1] % groups or g.shape[1] % groups:
        raise ShapeError(f"conv_weight_grad: groups={groups} must divide the channels of the "
                         f"input {list(x.shape)} and of the output gradient {list(g.shape)}")
    for n, (lo, hi), d, k, s, m in zip(x.shape[2:], padding, dilation, kernel_size, stride,
                                       g.shape[2:]):
        if k < 1 or (m - 1) * s + d * (k - 1) + 1 > n + lo + hi:
            raise ShapeError(f"conv_weight_grad: the output gradient {list(g.shape)} has "
                             f"more windows than the input {list(x.shape)} holds")
    return TensorType((g.shape[1], x.shape[1] // groups) + tuple(kernel_size), x.dtype,
                      same_device("conv_weight_grad", ops))


# ---- eager: everything as 2-d (a 1-d conv has height 1) ------------------------------------------


def _as2d(a: np.ndarray) -> np.ndarray:
    return a[:, :, None, :] if a.ndim == 3 else a


def _attrs2d(stride: Sequence[int], padding: Sequence[Sequence[int]],
             dilation: Sequence[int]) -> tuple[tuple[int, int], tuple[tuple[int, int], ...],
                                               tuple[int, int]]:
    if len(stride) == 1:
        return (1, stride[0]), ((0, 0), tuple(padding[0])), (1, dilation[0])  # type: ignore
    return ((stride[0], stride[1]), (tuple(padding[0]), tuple(padding[1])),  # type: ignore
            (dilation[0], dilation[1]))


def _cols(x: np.ndarray, k: Sequence[int], stride: tuple[int, int],
          padding: Sequence[Sequence[int]], dilation: tuple[int, int], out: Sequence[int],
          groups: int) -> np.ndarray:
    """im2col: (groups, Cg*kh*kw, N*oh*ow), column (n, y, x) holding the window of output
    position (y, x) of image n (kernels/cpu/conv.py's loop: 2-3x NumPy's strided copy)."""
    from ..kernels.cpu.conv import conv_im2col  # compiled on first use

    n, c = x.shape[:2]
    cols = np.empty((groups, c // groups * k[0] * k[1], n * out[0] * out[1]), x.dtype)
    return conv_im2col(np.ascontiguousarray(x), k[0], k[1], stride[0], stride[1],
                       padding[0][0], padding[1][0], dilation[0], dilation[1], out[0], out[1],
                       groups, cols)


def _gcl(t: np.ndarray, groups: int) -> np.ndarray:
    """(N, O, *spatial) -> (groups, O / groups, N * L): a conv output's layout as a GEMM's."""
    n, o = t.shape[:2]
    return np.ascontiguousarray(t.reshape(n, groups, o // groups, -1).transpose(1, 2, 0, 3)) \
        .reshape(groups, o // groups, -1)


def _gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(g, m, k) @ (g, k, n): one GEMM per group (np.dot for the common groups=1)."""
    if a.shape[0] == 1:
        return np.dot(a[0], b[0])[None]
    return np.matmul(a, b)


def _conv_eager(x: np.ndarray, w: np.ndarray, *, stride: tuple[int, ...],
                padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
                groups: int) -> np.ndarray:
    s, p, d = _attrs2d(stride, padding, dilation)
    x4, w4 = _as2d(x), _as2d(w)
    n, o = x4.shape[0], w4.shape[0]
    oh = (x4.shape[2] + p[0][0] + p[0][1] - d[0] * (w4.shape[2] - 1) - 1) // s[0] + 1
    ow = (x4.shape[3] + p[1][0] + p[1][1] - d[1] * (w4.shape[3] - 1) - 1) // s[1] + 1
    if 0 in (n, o, oh, ow):
        return np.zeros((n, o) + ((ow,) if x.ndim == 3 else (oh, ow)), x.dtype)
    cols = _cols(x4, w4.shape[2:], s, p, d, (oh, ow), groups)
    m = _gemm(w4.reshape(groups, o // groups, -1), cols)  # (g, Og, N*L)
    out = np.ascontiguousarray(m.reshape(o, n, oh * ow).transpose(1, 0, 2))
    return out.reshape((n, o) + ((ow,) if x.ndim == 3 else (oh, ow)))


def _col2im(dc: np.ndarray, shape: tuple[int, ...], k: Sequence[int],
            stride: tuple[int, int], padding: Sequence[Sequence[int]],
            dilation: tuple[int, int], out: Sequence[int], groups: int) -> np.ndarray:
    """The adjoint of _cols: columns (groups, Cg*kh*kw, N*oh*ow) summed into the windows they
    came from, an (N, C, H, W) array (padding cropped)."""
    from ..kernels.cpu.conv import conv_col2im

    return conv_col2im(np.ascontiguousarray(dc), k[0], k[1], stride[0], stride[1],
                       padding[0][0], padding[1][0], dilation[0], dilation[1], out[0], out[1],
                       groups, np.empty(shape, dc.dtype))


def _transpose_eager(x: np.ndarray, w: np.ndarray, *, stride: tuple[int, ...],
                     padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...],
                     groups: int, output_padding: tuple[int, ...]) -> np.ndarray:
    s, p, d = _attrs2d(stride, padding, dilation)
    x4, w4 = _as2d(x), _as2d(w)
    n, o = x4.shape[:2]  # o: the channels of the conv this is the adjoint of
    cg = w4.shape[1]
    k = w4.shape[2:]
    op = (0, output_padding[0]) if x.ndim == 3 else tuple(output_padding)
    h, wd = ((m - 1) * st - lo - hi + dd * (kk - 1) + 1 + e
             for m, st, (lo, hi), dd, kk, e in zip(x4.shape[2:], s, p, d, k, op))
    shape = (n, cg * groups, h, wd)
    if 0 in (n, o, cg) or x4.shape[2] * x4.shape[3] == 0:
        res = np.zeros(shape, x.dtype)
    else:
        wm = w4.reshape(groups, o // groups, cg * k[0] * k[1]).transpose(0, 2, 1)
        dc = _gemm(wm, _gcl(x4, groups))  # (g, Cg*kh*kw, N*L)
        res = _col2im(dc, shape, k, s, p, d, x4.shape[2:], groups)
    return res[:, :, 0, :] if x.ndim == 3 else res


def _wgrad_eager(x: np.ndarray, g: np.ndarray, *, stride: tuple[int, ...],
                 padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...], groups: int,
                 kernel_size: tuple[int, ...]) -> np.ndarray:
    s, p, d = _attrs2d(stride, padding, dilation)
    x4, g4 = _as2d(x), _as2d(g)
    k = (1, kernel_size[0]) if x.ndim == 3 else tuple(kernel_size)
    o, c = g4.shape[1], x4.shape[1]
    shape = (o, c // groups) + tuple(kernel_size)
    if 0 in (o, c) or g4.size == 0:
        return np.zeros(shape, x.dtype)
    cols = _cols(x4, k, s, p, d, g4.shape[2:], groups)  # type: ignore[arg-type]
    gw = _gemm(_gcl(g4, groups), cols.transpose(0, 2, 1))  # (g, Og, Cg*kh*kw)
    return gw.reshape(shape)


# ---- VJPs: each op's adjoints are the other two -------------------------------------------------


def _shape_attrs(at: dict[str, Any]) -> dict[str, Any]:
    return {k: at[k] for k in ATTRS}


def _fit(t: Any, spatial: Sequence[int]) -> Any:
    """Narrow t's spatial dims to `spatial` (a conv of a transpose can have more windows than
    the transpose's input when output_padding >= stride: they are outside its gradient)."""
    for i, m in enumerate(spatial):
        if t.shape[2 + i] != m:
            t = t.narrow(2 + i, 0, m)
    return t


def _output_padding(target: Sequence[int], g: Sequence[int], w: Sequence[int],
                    at: dict[str, Any]) -> tuple[int, ...]:
    """The output_padding that makes conv_transpose of `g` (spatial dims) `target` long."""
    return tuple(t - ((m - 1) * s - lo - hi + d * (k - 1) + 1) for t, m, s, (lo, hi), d, k in
                 zip(target, g, at["stride"], at["padding"], at["dilation"], w))


def _transpose(g: Any, w: Any, target: Sequence[int], at: dict[str, Any]) -> Any:
    from ..dispatch import dispatch

    op = _output_padding(target, g.shape[2:], w.shape[2:], at)
    return dispatch(conv_transpose_op, (g, w), {**_shape_attrs(at), "output_padding": op})


def _conv(x: Any, w: Any, spatial: Sequence[int], at: dict[str, Any]) -> Any:
    from ..dispatch import dispatch

    return _fit(dispatch(conv_op, (x, w), _shape_attrs(at)), spatial)


def _wgrad(x: Any, g: Any, kernel: Sequence[int], at: dict[str, Any]) -> Any:
    from ..dispatch import dispatch

    return dispatch(conv_weight_grad_op, (x, g), {**_shape_attrs(at),
                                                  "kernel_size": tuple(kernel)})


def _conv_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    x, w = c.inputs
    gx = _transpose(g, w, x.shape[2:], c.attrs) if c.needs[0] else None
    gw = _wgrad(x, g, w.shape[2:], c.attrs) if c.needs[1] else None
    return gx, gw


def _transpose_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    x, w = c.inputs  # y = T(x, w), the adjoint of conv(., w): <conv(u, w), x> = <u, y>
    gx = _conv(g, w, x.shape[2:], c.attrs) if c.needs[0] else None
    gw = _wgrad(g, x, w.shape[2:], c.attrs) if c.needs[1] else None
    return gx, gw


def _wgrad_vjp(c: VjpContext, gw: Any) -> tuple[Any, ...]:
    x, g = c.inputs  # <gw, wgrad(x, g)> = <conv(x, gw), g> = <x, T(g, gw)>
    gx = _transpose(g, gw, x.shape[2:], c.attrs) if c.needs[0] else None
    gg = _conv(x, gw, g.shape[2:], c.attrs) if c.needs[1] else None
    return gx, gg


# ---- compiled only: what passes/conv.py rewrites convolutions into ---------------------------
# After autodiff, a conv becomes `conv_im2col` (its input's windows as columns) and `conv_gemm`
# (the GEMM with the bias add and ReLU as its epilogue), and a conv_weight_grad of the same input
# reads those columns through `conv_weight_grad_cols` instead of building them again. They
# exist only in graphs (no Tensor method dispatches them) and have no VJP: the backward is
# already in the graph when the pass runs. Their eager forms serve the reference interpreter.

ACTS = ("", "relu")  # conv_gemm's epilogue activations


def _im2col_infer(ops: Sequence[Operand], *, stride: tuple[int, ...],
                  padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...], groups: int,
                  kernel_size: tuple[int, ...]) -> TensorType:
    (x,) = ops
    if not isinstance(x, TensorType):
        raise ArgError(f"conv_im2col: expected a tensor, got {type(x).__name__}")
    r = len(kernel_size)
    _check_attrs("conv_im2col", r, stride, padding, dilation, groups)
    if x.ndim != r + 2 or x.shape[1] % groups:
        raise ShapeError(f"conv_im2col: input {list(x.shape)} must be (N, C, {r} spatial) "
                         f"with C divisible by groups={groups}")
    w = TensorType((1, 1) + tuple(kernel_size), x.dtype, x.device)
    out = _out_size("conv_im2col", x, w, stride, padding, dilation)
    k = int(np.prod(kernel_size))
    return TensorType((groups, x.shape[1] // groups * k, x.shape[0] * int(np.prod(out))),
                      x.dtype, x.device)


def _im2col_eager(x: np.ndarray, *, stride: tuple[int, ...],
                  padding: tuple[tuple[int, int], ...], dilation: tuple[int, ...], groups: int,
                  kernel_size: tuple[int, ...]) -> np.ndarray:
    s, p, d = _attrs2d(stride, padding, dilation)
    x4 = _as2d(x)
    k = _spatial2(kernel_size)
    out = [(n + lo + hi - dd * (kk - 1) - 1) // st + 1
           for n, (lo, hi), dd, kk, st in zip(x4.shape[2:], p, d, k, s)]
    if 0 in x4.shape or 0 in out:
        return np.zeros((groups, x4.shape[1] // groups * k[0] * k[1],
                         x4.shape[0] * out[0] * out[1]), x.dtype)
    return _cols(x4, k, s, p, d, out, groups)


def _gemm_infer(ops: Sequence[Operand], *, out_shape: tuple[int, ...],
                act: str) -> TensorType:
    if len(ops) not in (2, 3) or not all(isinstance(t, TensorType) for t in ops):
        raise ArgError("conv_gemm: expected the columns, the weight and optionally the bias")
    cols, w = ops[0], ops[1]
    assert isinstance(cols, TensorType) and isinstance(w, TensorType)
    _floats("conv_gemm", cols, w, ("columns", "weight"))
    g = cols.shape[0] if cols.ndim == 3 else 0
    n_l = int(np.prod((out_shape[0],) + tuple(out_shape[2:])))
    if cols.ndim != 3 or w.ndim != len(out_shape) or not g or w.shape[0] != out_shape[1] or \
            w.shape[0] % g or cols.shape[1] != int(np.prod(w.shape[1:])) or \
            cols.shape[2] != n_l:
        raise ShapeError(f"conv_gemm: columns {list(cols.shape)} and weight {list(w.shape)} "
                         f"do not make an output {list(out_shape)}")
    if len(ops) == 3:
        b = ops[2]
        assert isinstance(b, TensorType)
        if b.shape != (w.shape[0],) or b.dtype is not w.dtype:
            raise ShapeError(f"conv_gemm: the bias must be {w.dtype.name}[{w.shape[0]}], got {b}")
    if act not in ACTS:
        raise ArgError(f"conv_gemm: act must be one of {ACTS}, got {act!r}")
    return TensorType(tuple(out_shape), w.dtype, same_device("conv_gemm", ops))


def _gemm_eager(cols: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
                out_shape: tuple[int, ...], act: str) -> np.ndarray:
    g, o = cols.shape[0], w.shape[0]
    m = _gemm(w.reshape(g, o // g, -1), cols)  # (g, Og, N*L)
    out = np.ascontiguousarray(m.reshape(o, out_shape[0], -1).transpose(1, 0, 2))
    if b is not None:  # the unfused program's broadcast add, in the same dtype
        out = out + b.reshape(1, o, 1)
    if act == "relu":
        out = np.maximum(out.dtype.type(0), out)
    return out.reshape(out_shape)


def _wgrad_cols_infer(ops: Sequence[Operand], *, kernel_size: tuple[int, ...]) -> TensorType:
    cols, g = _operands("conv_weight_grad_cols", ops)
    _floats("conv_weight_grad_cols", cols, g, ("columns", "output gradient"))
    k = int(np.prod(kernel_size))
    if cols.ndim != 3 or g.ndim != len(kernel_size) + 2 or cols.shape[1] % k or \
            g.shape[1] % cols.shape[0] or cols.shape[2] != int(np.prod(
                (g.shape[0],) + g.shape[2:])):
        raise ShapeError(f"conv_weight_grad_cols: columns {list(cols.shape)} do not match the "
                         f"output gradient {list(g.shape)}")
    return TensorType((g.shape[1], cols.shape[1] // k) + tuple(kernel_size), g.dtype,
                      same_device("conv_weight_grad_cols", ops))


def _wgrad_cols_eager(cols: np.ndarray, g: np.ndarray, *,
                      kernel_size: tuple[int, ...]) -> np.ndarray:
    k = int(np.prod(kernel_size))
    shape = (g.shape[1], cols.shape[1] // k) + tuple(kernel_size)
    gw = _gemm(_gcl(_as2d(g), cols.shape[0]), cols.transpose(0, 2, 1))
    return gw.reshape(shape)


# ---- compiled: kernels/cpu/conv.py's loops around the driver's BLAS call -------------------------


def _as4(a: str, t: TensorType) -> str:
    """Source for operand `a` as a 4-d array (a 1-d conv's operands get height 1)."""
    if t.ndim == 4:
        return a
    return f"np.ascontiguousarray({a}).reshape({(t.shape[0], t.shape[1], 1, t.shape[2])!r})"


def _mm(a: str, b: str, groups: int, shape: tuple[int, int, int]) -> str:
    """(g, m, k) @ (g, k, n) in source: the driver's matmul2d for one group (BLAS chosen by
    measurement in a Python driver), matmul_batched for several."""
    if groups == 1:
        return f"matmul2d({a}[0], {b}[0]).reshape({shape!r})"
    return f"matmul_batched({a}, {b})"


def _k2(at: dict[str, Any], kernel: Sequence[int]) -> tuple[list[int], str]:
    s, p, d = _attrs2d(at["stride"], at["padding"], at["dilation"])
    k = (1, kernel[0]) if len(kernel) == 1 else tuple(kernel)
    return list(k), f"{k[0]}, {k[1]}, {s[0]}, {s[1]}, {p[0][0]}, {p[1][0]}, {d[0]}, {d[1]}"


def _spatial2(shape: Sequence[int]) -> tuple[int, int]:
    return (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])


def _skip(out: TensorType, *ins: TensorType) -> bool:
    """No compiled form: not float, or empty (empty convolutions run eagerly)."""
    return out.dtype not in (dt.float32, dt.float64) or any(0 in t.shape for t in (out,) + ins)


def _im2col_src(x: str, xt: TensorType, at: dict[str, Any], kernel: Sequence[int],
                out: Sequence[int], groups: int) -> str:
    """An expression: the columns of input `x` for windows of `kernel` at output size `out`."""
    k, kargs = _k2(at, kernel)
    oh, ow = _spatial2(out)
    shape = (groups, xt.shape[1] // groups * k[0] * k[1], xt.shape[0] * oh * ow)
    return (f"conv_im2col({_as4(x, xt)}, {kargs}, {oh}, {ow}, {groups}, "
            f"np.empty({shape!r}, {np_name(xt.dtype)}))")


def _gemm_src(cols: str, w: str, bias: str | None, act: str, groups: int, kk: int,
              out: TensorType) -> str:
    """Statements assigning {out}: act(weight @ columns + bias) in the conv output's layout."""
    n, o = out.shape[:2]
    oh, ow = _spatial2(out.shape[2:])
    ty = np_name(out.dtype)
    return (f"{{out}}_w = np.ascontiguousarray({w}).reshape({(groups, o // groups, kk)!r})\n"
            f"{{out}}_m = {_mm('{out}_w', cols, groups, (1, o, n * oh * ow))}\n"
            f"{{out}} = conv_bias_act({{out}}_m, {bias or f'np.empty(0, {ty})'}, "
            f"{ACTS.index(act)}, np.empty({(n, o, oh, ow)!r}, {ty}))"
            + ("" if out.ndim == 4 else f".reshape({tuple(out.shape)!r})"))


def _wgrad_src(cols: str, gr: str, grt: TensorType, groups: int, out: TensorType) -> str:
    """Statements assigning {out}: the output gradient (as the GEMM's layout) @ columns.T."""
    n, o = grt.shape[:2]
    oh, ow = _spatial2(grt.shape[2:])
    if groups == 1:  # (the columns transposed: a free F-contiguous view BLAS reads as it is)
        mm = f"matmul2d({{out}}_g[0], {cols}[0].T)"
    else:
        mm = f"matmul_batched({{out}}_g, {cols}.transpose((0, 2, 1)))"
    return (f"{{out}}_g = conv_to_gcl({_as4(gr, grt)}, {groups}, "
            f"np.empty({(groups, o // groups, n * oh * ow)!r}, {np_name(out.dtype)}))\n"
            f"{{out}} = np.ascontiguousarray({mm}).reshape({tuple(out.shape)!r})")


def _conv_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    x, w = ins
    if _skip(out, x):
        return None
    g = at["groups"]
    cols = _im2col_src(a[0], x, at, w.shape[2:], out.shape[2:], g)
    return f"{{out}}_c = {cols}\n" + _gemm_src("{out}_c", a[1], None, "", g,
                                                int(np.prod(w.shape[1:])), out)


def _transpose_rule(a: list[str], at: dict[str, Any], out: TensorType,
                    ins: list[Any]) -> str | None:
    x, w = ins
    if _skip(out, x):
        return None
    g = at["groups"]
    n, o = x.shape[:2]
    h, ww = _spatial2(out.shape[2:])
    oh, ow = _spatial2(x.shape[2:])
    _, kargs = _k2(at, w.shape[2:])
    kk = int(np.prod(w.shape[1:]))
    ty = np_name(out.dtype)
    return (f"{{out}}_x = conv_to_gcl({_as4(a[0], x)}, {g}, "
            f"np.empty({(g, o // g, n * oh * ow)!r}, {ty}))\n"
            f"{{out}}_w = np.ascontiguousarray(np.ascontiguousarray({a[1]})"
            f".reshape({(g, o // g, kk)!r}).transpose((0, 2, 1)))\n"
            f"{{out}}_d = {_mm('{out}_w', '{out}_x', g, (1, kk, n * oh * ow))}\n"
            f"{{out}} = conv_col2im({{out}}_d, {kargs}, {oh}, {ow}, {g}, "
            f"np.empty({(n, out.shape[1], h, ww)!r}, {ty}))"
            + ("" if out.ndim == 4 else f".reshape({tuple(out.shape)!r})"))


def _wgrad_rule(a: list[str], at: dict[str, Any], out: TensorType,
                ins: list[Any]) -> str | None:
    x, gr = ins
    if _skip(out, gr):
        return None
    g = at["groups"]
    cols = _im2col_src(a[0], x, at, at["kernel_size"], gr.shape[2:], g)
    return f"{{out}}_c = {cols}\n" + _wgrad_src("{out}_c", a[1], gr, g, out)


conv_op = defop(
    "conv", Kind.CONTRACT, infer=_conv_infer, eager=_conv_eager, attrs=ATTRS, saves=(0, 1),
    vjp=_conv_vjp, kernels={"cpu": _conv_rule},
)
conv_transpose_op = defop(
    "conv_transpose", Kind.CONTRACT, infer=_transpose_infer, eager=_transpose_eager,
    attrs=ATTRS + ("output_padding",), saves=(0, 1), vjp=_transpose_vjp,
    kernels={"cpu": _transpose_rule},
)
conv_weight_grad_op = defop(
    "conv_weight_grad", Kind.CONTRACT, infer=_wgrad_infer, eager=_wgrad_eager,
    attrs=ATTRS + ("kernel_size",), saves=(0, 1), vjp=_wgrad_vjp, kernels={"cpu": _wgrad_rule},
)


def _im2col_rule(a: list[str], at: dict[str, Any], out: TensorType,
                 ins: list[Any]) -> str | None:
    (x,) = ins
    if _skip(out, x):
        return None
    s, p, d = _attrs2d(at["stride"], at["padding"], at["dilation"])
    k = _spatial2(at["kernel_size"])
    size = tuple((n + lo + hi - dd * (kk - 1) - 1) // st + 1
                 for n, (lo, hi), dd, kk, st in zip(_spatial2(x.shape[2:]), p, d, k, s))
    return _im2col_src(a[0], x, at, at["kernel_size"], size, at["groups"])


def _gemm_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    cols = ins[0]
    if _skip(out, cols):
        return None
    return _gemm_src(a[0], a[1], a[2] if len(a) == 3 else None, at["act"], cols.shape[0],
                     cols.shape[1], out)


def _wgrad_cols_rule(a: list[str], at: dict[str, Any], out: TensorType,
                     ins: list[Any]) -> str | None:
    cols, gr = ins
    if _skip(out, gr):
        return None
    return _wgrad_src(a[0], a[1], gr, cols.shape[0], out)


conv_im2col_op = defop(
    "conv_im2col", Kind.CONTRACT, infer=_im2col_infer, eager=_im2col_eager,
    attrs=ATTRS + ("kernel_size",), differentiable=False, kernels={"cpu": _im2col_rule},
)
conv_gemm_op = defop(
    "conv_gemm", Kind.CONTRACT, infer=_gemm_infer, eager=_gemm_eager,
    attrs=("out_shape", "act"), differentiable=False, kernels={"cpu": _gemm_rule},
)
conv_weight_grad_cols_op = defop(
    "conv_weight_grad_cols", Kind.CONTRACT, infer=_wgrad_cols_infer, eager=_wgrad_cols_eager,
    attrs=("kernel_size",), differentiable=False, kernels={"cpu": _wgrad_cols_rule},
)
