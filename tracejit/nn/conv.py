"""Convolution layers and their functional forms (conv1d, conv2d, conv_transpose1d/2d) with
PyTorch's signatures, defaults, initialisation and errors, over the `conv` and `conv_transpose`
ops (tracejit/ops/conv.py); the bias is a broadcast add after the op, which fuses with a
following activation under @jit. Padding modes other than zeros pad with `cat` of slices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..creation import empty, tensor
from ..device import as_device
from ..errors import located
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "Conv1d", "Conv2d",
           "ConvTranspose1d", "ConvTranspose2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _tuple(name: str, v: Any, r: int, what: str, low: int) -> tuple[int, ...]:
    """An int or a sequence of r ints, each >= low, as a tuple (torch's _single/_pair)."""
    vals = (v,) * r if isinstance(v, int) and not isinstance(v, bool) else tuple(v) \
        if isinstance(v, (tuple, list)) else None
    if vals is None or len(vals) != r or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in vals):
        raise TypeError(located(f"{name}: {what} must be an int or a tuple of {r} ints, got "
                                f"{v!r}"))
    if any(x < low for x in vals):
        sign = "positive" if low else "non-negative"
        raise RuntimeError(located(f"{name}: {what} should be {sign}, got {v!r}"))
    return vals


def _padding(name: str, padding: Any, r: int, k: Sequence[int], stride: Sequence[int],
             dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """(before, after) per spatial dim; "same" as torch pads: d*(k-1) in all, the odd one
    after."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * r
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(located(f"{name}: padding='same' is not supported for strided "
                                         f"convolutions (stride={tuple(stride)}); pad explicitly"))
            total = [d * (kk - 1) for d, kk in zip(dilation, k)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ValueError(located(f"{name}: invalid padding string {padding!r}, should be one of "
                                 "{'valid', 'same'}"))
    return tuple((p, p) for p in _tuple(name, padding, r, "padding", 0))


def _check_input(name: str, input: Any, weight: Any, r: int) -> bool:
    """Whether the input is unbatched; raises torch's errors for wrong types and ranks."""
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(located(f"{name}(): argument 'input' and 'weight' must be Tensors, got "
                                f"{type(input).__name__} and {type(weight).__name__}"))
    if weight.ndim != r + 2:
        raise RuntimeError(located(
            f"{name}: expected a {r + 2}-d weight (out_channels, in_channels / groups, "
            f"{'kW' if r == 1 else 'kH, kW'}), but got weight of size {list(weight.shape)}"))
    if input.ndim not in (r + 1, r + 2):
        raise RuntimeError(located(
            f"{name}: expected {r + 1}D (unbatched) or {r + 2}D (batched) input to {name}, but "
            f"got input of size: {list(input.shape)}"))
    if input.dtype is not weight.dtype:
        raise TypeError(located(
            f"{name}: input dtype {input.dtype.name} does not match the weight dtype "
            f"{weight.dtype.name}; convert the input with .to({weight.dtype}) (NumPy data is "
            f"float64: tracejit.tensor(array, dtype=tracejit.float32)) or the model with "
            f".to({input.dtype})"))
    return input.ndim == r + 1


def _bias(name: str, out: Tensor, bias: Tensor | None, channels: int, r: int,
          weight: Tensor) -> Tensor:
    if bias is None:
        return out
    if not isinstance(bias, Tensor) or bias.shape != (channels,):
        shape = list(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise RuntimeError(located(
            f"{name}: given weight of size {list(weight.shape)}, expected bias to be "
            f"1-dimensional with {channels} elements, but got bias of size {shape} instead"))
    if bias.dtype is not out.dtype:
        raise TypeError(located(f"{name}: the bias is {bias.dtype.name} but the input and "
                                f"weight are {out.dtype.name}; convert it with "
                                f".to({out.dtype})"))
    return out + bias.reshape((channels,) + (1,) * r)


def _conv(name: str, r: int, input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any,
          padding: Any, dilation: Any, groups: Any) -> Tensor:
    from ..dispatch import dispatch
    from ..ops.conv import conv_op

    unbatched = _check_input(name, input, weight, r)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise RuntimeError(located(f"{name}: non-positive groups is not supported (groups="
                                   f"{groups!r})"))
    s = _tuple(name, stride, r, "stride", 1)
    d = _tuple(name, dilation, r, "dilation", 1)
    p = _padding(name, padding, r, weight.shape[2:], s, d)
    x = input.unsqueeze(0) if unbatched else input
    out = dispatch(conv_op, (x, weight), {"stride": s, "padding": p, "dilation": d,
                                          "groups": groups})
    out = _bias(name, out, bias, weight.shape[0], r, weight)
    return out.squeeze(0) if unbatched else out


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-d convolution (cross-correlation, as torch) of (N, C, L) or (C, L) input with an
    (O, C / groups, k) weight.

    >>> import tracejit as torch
    >>> x = torch.ones(1, 1, 5)
    >>> torch.nn.functional.conv1d(x, torch.ones(1, 1, 3), padding=1)
    tensor([[[2., 3., 3., 3., 2.]]])
    """
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-d convolution (cross-correlation, as torch) of (N, C, H, W) or (C, H, W) input with an
    (O, C / groups, kH, kW) weight; padding an int, a pair, "valid" or "same".

    >>> import tracejit as torch
    >>> torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2)).shape
    tracejit.Size([1, 1, 2, 2])
    """
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(name: str, r: int, input: Tensor, weight: Tensor, bias: Tensor | None,
                    stride: Any, padding: Any, output_padding: Any, groups: Any,
                    dilation: Any) -> Tensor:
    from ..dispatch import dispatch
    from ..ops.conv import conv_transpose_op

    unbatched = _check_input(name, input, weight, r)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise RuntimeError(located(f"{name}: non-positive groups is not supported (groups="
                                   f"{groups!r})"))
    if isinstance(padding, str):
        raise TypeError(located(f"{name}: padding must be an int or a tuple of ints (a "
                                f"transposed convolution takes no {padding!r} padding)"))
    s = _tuple(name, stride, r, "stride", 1)
    d = _tuple(name, dilation, r, "dilation", 1)
    p = _tuple(name, padding, r, "padding", 0)
    op = _tuple(name, output_padding, r, "output_padding", 0)
    for o, ss, dd in zip(op, s, d):
        if o >= max(ss, dd):
            raise RuntimeError(located(
                f"{name}: output padding must be smaller than either stride or dilation, but "
                f"got output_padding={op}, stride={s}, dilation={d}"))
    x = input.unsqueeze(0) if unbatched else input
    out = dispatch(conv_transpose_op, (x, weight), {
        "stride": s, "padding": tuple((q, q) for q in p), "dilation": d, "groups": groups,
        "output_padding": op})
    out = _bias(name, out, bias, weight.shape[1] * groups, r, weight)
    return out.squeeze(0) if unbatched else out


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
                     stride: Any = (1,), padding: Any = (0,), output_padding: Any = (0,),
                     groups: int = 1, dilation: Any = (1,)) -> Tensor:
    """Transposed 1-d convolution (the gradient of conv1d in its input) of (N, C_in, L) input
    with a (C_in, C_out / groups, k) weight. (Defaults are tuples as in torch's schema.)"""
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,
                     stride: Any = (1, 1), padding: Any = (0, 0), output_padding: Any = (0, 0),
                     groups: int = 1, dilation: Any = (1, 1)) -> Tensor:
    """Transposed 2-d convolution (the gradient of conv2d in its input) of (N, C_in, H, W)
    input with a (C_in, C_out / groups, kH, kW) weight.

    >>> import tracejit as torch
    >>> x = torch.ones(1, 1, 2, 2)
    >>> torch.nn.functional.conv_transpose2d(x, torch.ones(1, 1, 2, 2), stride=2).shape
    tracejit.Size([1, 1, 4, 4])
    """
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding,
                           output_padding, groups, dilation)


# ---- padding modes other than zeros --------------------------------------------------------------


def _pad_dim(x: Tensor, dim: int, lo: int, hi: int, mode: str) -> Tensor:
    n = x.shape[dim]
    if lo == hi == 0:
        return x
    if mode == "circular":
        if lo > n or hi > n:
            raise ValueError(located(f"padding_mode='circular': padding ({lo}, {hi}) is larger "
                                     f"than the input's size {n} in dim {dim}"))
        parts = [x.narrow(dim, n - lo, lo), x, x.narrow(dim, 0, hi)]
    elif mode == "replicate":
        parts = [x.narrow(dim, 0, 1).expand(*x.shape[:dim], lo, *x.shape[dim + 1:]), x,
                 x.narrow(dim, n - 1, 1).expand(*x.shape[:dim], hi, *x.shape[dim + 1:])]
    else:  # reflect: the edge itself is not repeated
        if lo >= n or hi >= n:
            raise ValueError(located(f"padding_mode='reflect': padding ({lo}, {hi}) must be "
                                     f"smaller than the input's size {n} in dim {dim}"))
        before = tensor(list(range(lo, 0, -1)))
        after = tensor(list(range(n - 2, n - 2 - hi, -1)))
        parts = [x.index_select(dim, before), x, x.index_select(dim, after)]
    from ..functional import cat

    return cat([p for p in parts if p.shape[dim]], dim)


def _mode_pad(x: Tensor, pads: Sequence[tuple[int, int]], mode: str) -> Tensor:
    for i, (lo, hi) in enumerate(pads):
        x = _pad_dim(x, x.ndim - len(pads) + i, lo, hi, mode)
    return x


# ---- modules -------------------------------------------------------------------------------------


class _ConvNd(Module):
    _r = 2
    _transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None,
                 output_padding: Any = 0) -> None:
        super().__init__()
        name = type(self).__name__
        r = self._r
        if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"{name}: in_channels must be divisible by groups (in_channels="
                             f"{in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"{name}: out_channels must be divisible by groups (out_channels="
                             f"{out_channels}, groups={groups})")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {PADDING_MODES}, but got "
                             f"padding_mode='{padding_mode}'")
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f"Only \"zeros\" padding mode is supported for {name}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _tuple(name, kernel_size, r, "kernel_size", 1)
        self.stride = _tuple(name, stride, r, "stride", 1)
        self.dilation = _tuple(name, dilation, r, "dilation", 1)
        if isinstance(padding, str):
            if self._transposed:
                raise ValueError(f"{name}: padding must be an int or a tuple of ints, got "
                                 f"{padding!r}")
            _padding(name, padding, r, self.kernel_size, self.stride, self.dilation)
            self.padding: Any = padding
        else:
            self.padding = _tuple(name, padding, r, "padding", 0)
        self.output_padding = _tuple(name, output_padding, r, "output_padding", 0)
        self.groups = groups
        self.padding_mode = padding_mode
        self.transposed = self._transposed
        shape = ((in_channels, out_channels // groups) if self._transposed else
                 (out_channels, in_channels // groups)) + self.kernel_size
        as_device(device)
        self.weight = Parameter(empty(*shape, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # (fan_in of the weight: in_channels / groups * prod(kernel), out_channels / groups *
        # prod(kernel) for a transposed conv's weight)
        init._reset_affine_(self.weight, self.bias, empty_bias="keep")

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        r = self._r
        if self.padding != (0,) * r:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * r:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * r:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        fn = conv1d if self._r == 1 else conv2d
        if self.padding_mode == "zeros":
            return fn(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if not isinstance(input, Tensor) or input.ndim not in (self._r + 1, self._r + 2):
            _check_input(fn.__name__, input, weight, self._r)
        pads = _padding(fn.__name__, self.padding, self._r, self.kernel_size, self.stride,
                        self.dilation)
        return fn(_mode_pad(input, pads, self.padding_mode), weight, bias, self.stride, 0,
                  self.dilation, self.groups)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight, self.bias)


class Conv1d(_ConvNd):
    """Applies a 1-d convolution over (N, C_in, L) or (C_in, L) input: weight (C_out, C_in /
    groups, k), bias (C_out,), both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch.

    >>> import tracejit as torch
    >>> torch.nn.Conv1d(4, 8, 3, padding="same")
    Conv1d(4, 8, kernel_size=(3,), stride=(1,), padding=same)
    """

    _r = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)


class Conv2d(_ConvNd):
    """Applies a 2-d convolution over (N, C_in, H, W) or (C_in, H, W) input: weight (C_out,
    C_in / groups, kH, kW), bias (C_out,), both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch.

    >>> import tracejit as torch
    >>> conv = torch.nn.Conv2d(1, 16, 3, padding=1)
    >>> conv(torch.zeros(64, 1, 8, 8)).shape
    tracejit.Size([64, 16, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)


class _ConvTransposeNd(_ConvNd):
    _transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype, output_padding)

    def _output_padding(self, input: Tensor, output_size: Sequence[int] | None) -> tuple[int, ...]:
        """torch's: the output_padding that gives `output_size` (its last r entries)."""
        if output_size is None:
            return self.output_padding
        r = self._r
        size = list(output_size)[-r:] if len(output_size) >= r else None
        if size is None or len(output_size) not in (r, r + 1, r + 2):
            raise ValueError(f"{type(self).__name__}: output_size must have {r} or {r + 2} "
                             f"elements (got {len(output_size)})")
        out = []
        for i in range(r):
            n = input.shape[input.ndim - r + i]
            least = (n - 1) * self.stride[i] - 2 * self.padding[i] + \
                self.dilation[i] * (self.kernel_size[i] - 1) + 1
            most = least + self.stride[i] - 1
            if not least <= size[i] <= most:
                raise ValueError(f"{type(self).__name__}: requested an output size of {size}, "
                                 f"but valid sizes range from {least} to {most} (for an input "
                                 f"of {list(input.shape[input.ndim - r:])})")
            out.append(size[i] - least)
        return tuple(out)

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        fn = conv_transpose1d if self._r == 1 else conv_transpose2d
        if isinstance(input, Tensor) and input.ndim in (self._r + 1, self._r + 2):
            op = self._output_padding(input, output_size)
        else:
            op = self.output_padding
        return fn(input, self.weight, self.bias, self.stride, self.padding, op, self.groups,
                  self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """The transposed 1-d convolution (weight (C_in, C_out / groups, k)), as torch's."""

    _r = 1


class ConvTranspose2d(_ConvTransposeNd):
    """The transposed 2-d convolution (weight (C_in, C_out / groups, kH, kW)), as torch's.

    >>> import tracejit as torch
    >>> up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
    >>> up(torch.zeros(1, 16, 4, 4)).shape
    tracejit.Size([1, 8, 8, 8])
    """
