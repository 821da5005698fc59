"""The functional forms of pooling, batch normalisation and channel dropout (re-exported by
tracejit.nn.functional), with torch's signatures, defaults and semantics.

Pooling dispatches the ops of tracejit/ops/pool.py: `max_pool2d` gathers the values through
the `max_pool2d_indices` op (so its gradient scatters onto the argmax), the averages are ops
with their own VJP ops. `batch_norm` is a composite of reductions and elementwise ops: in
training the batch statistics (biased variance for normalising, unbiased into `running_var`),
the running statistics updated in place under no_grad (effects of a compiled step, like an
optimizer's state); in evaluation one per-channel scale and shift, which a compiled program
computes on the C channels and applies in one fused elementwise pass. `dropout2d` zeroes whole
channels with one Philox uniform per (sample, channel): `rand` of shape (N, C, 1, 1), the
numbers eager and compiled code draw alike."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from .. import dtypes as dt
from ..autograd import no_grad
from ..creation import rand
from ..dispatch import dispatch
from ..errors import located
from ..ops.pool import (
    adaptive_avg_pool2d_op,
    avg_pool2d_op,
    max_pool2d_indices_op,
)
from ..ops.registry import ShapeError
from ..tensor import Tensor

__all__ = ["max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
           "batch_norm", "dropout2d"]


def _pair(op: str, name: str, v: Any) -> tuple[int, int]:
    """An int or a sequence of one or two ints -> (height, width), as torch's _pair."""
    if isinstance(v, bool):
        raise ShapeError(f"{op}: {name} must be an int or a tuple of two ints, got {v!r}")
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, Sequence) and len(v) in (1, 2) and \
            all(isinstance(n, int) and not isinstance(n, bool) for n in v):
        return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])
    raise ShapeError(f"{op}: {name} must be a single int, or a tuple of two ints, got {v!r}")


def _window_attrs(op: str, kernel_size: Any, stride: Any, padding: Any) -> dict[str, Any]:
    k = _pair(op, "kernel_size", kernel_size)
    s = k if stride is None or (isinstance(stride, Sequence) and len(stride) == 0) else \
        _pair(op, "stride", stride)
    return {"kernel_size": k, "stride": s, "padding": _pair(op, "padding", padding)}


def _tensor(op: str, x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(located(f"{op}: expected a Tensor input, got {type(x).__name__}"))
    return x


# ---- pooling ----------------------------------------------------------------------------------


def max_pool2d_with_indices(input: Tensor, kernel_size: Any, stride: Any = None,
                            padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                            return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """Each window's maximum and its flat index h * W + w within its (H, W) plane."""
    _tensor("max_pool2d", input)
    at = _window_attrs("max_pool2d", kernel_size, stride, padding)
    at["dilation"] = _pair("max_pool2d", "dilation", dilation)
    at["ceil_mode"] = bool(ceil_mode)
    idx = dispatch(max_pool2d_indices_op, (input,), at)
    plane = input.flatten(-2)
    values = plane.gather(plane.ndim - 1, idx.flatten(-2)).reshape(tuple(idx.shape))
    return values, idx


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """2-d max pooling over (C, H, W) or (N, C, H, W); padding counts as -inf. With
    return_indices, also each maximum's flat index in its plane (torch's)."""
    values, idx = max_pool2d_with_indices(input, kernel_size, stride, padding, dilation,
                                          ceil_mode)
    return (values, idx) if return_indices else values


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = (), padding: Any = (0, 0),
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """2-d average pooling: each window's sum over its size (the padded size with
    count_include_pad, or divisor_override when given). stride () or None: the kernel size
    (torch's native defaults)."""
    _tensor("avg_pool2d", input)
    at = _window_attrs("avg_pool2d", kernel_size, stride, padding)
    at.update(ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad),
              divisor_override=divisor_override)
    return dispatch(avg_pool2d_op, (input,), at)


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """Averages over windows [floor(i * in / out), ceil((i + 1) * in / out)) that tile each
    spatial dim into output_size (an int, or a pair whose None entries keep the input's)."""
    _tensor("adaptive_avg_pool2d", input)
    if input.ndim not in (3, 4):
        raise ShapeError(f"adaptive_avg_pool2d: expected a 3-d (C, H, W) or 4-d (N, C, H, W) "
                         f"input, got {list(input.shape)}")
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        size: Sequence[Any] = (output_size, output_size)
    elif isinstance(output_size, Sequence) and len(output_size) == 2:
        size = output_size
    else:
        raise ShapeError(f"adaptive_avg_pool2d: output_size must be an int or a pair of ints "
                       f"(None keeps the input's size), got {output_size!r}")
    hw = tuple(int(input.shape[-2 + i]) if s is None else s for i, s in enumerate(size))
    return dispatch(adaptive_avg_pool2d_op, (input,), {"output_size": hw})


# ---- batch norm -------------------------------------------------------------------------------


def _per_channel(op: str, name: str, t: Tensor | None, c: int) -> None:
    if t is not None and tuple(t.shape) != (c,):
        raise ShapeError(f"{op}: {name} should contain {c} elements (one per channel of dim 1), "
                         f"not {t.numel()} (shape {list(t.shape)})")


def _channel_mean(x: Tensor, n: int) -> Tensor:
    """The mean over every dim but 1, kept as (1, C, 1, ...): the trailing dims summed first
    (a row reduction, which a compiled program fuses with the elementwise work that makes its
    input), then the batch dim (a column total of a small (N, C) array)."""
    s = x.sum(tuple(range(2, x.ndim)), keepdim=True) if x.ndim > 2 else x
    return s.sum(0, keepdim=True) * (1.0 / n)


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: Any = 0.1, eps: float = 1e-05) -> Tensor:
    """Normalise each channel (dim 1) over the batch and the other dims. In training the
    batch's statistics, and running_mean/running_var (when given) updated in place to
    (1 - momentum) * running + momentum * batch (the unbiased variance); else the running
    statistics, as one per-channel scale and shift. `momentum` may be a 0-d tensor (the
    modules' cumulative average, 1 / num_batches_tracked)."""
    _tensor("batch_norm", input)
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: expected an input of at least 2 dims (N, C, ...), got "
                         f"{list(input.shape)}")
    c = int(input.shape[1])
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _per_channel("batch_norm", name, t, c)
    bshape = (1, c) + (1,) * (input.ndim - 2)
    if training:
        n = input.numel() // max(c, 1)
        if n == 0:  # an empty batch: nothing to normalise, the statistics left alone (torch)
            return input.clone()
        if n == 1:
            raise ValueError(located(f"Expected more than 1 value per channel when training, "
                                     f"got input size {list(input.shape)}"))
        mean = _channel_mean(input, n)
        xc = input - mean
        var = _channel_mean(xc * xc, n)
        out = xc * (var + eps).rsqrt()
        if weight is not None:
            out = out * weight.reshape(bshape)
        if bias is not None:
            out = out + bias.reshape(bshape)
        if (running_mean is None) != (running_var is None):
            raise ShapeError("batch_norm: running_mean and running_var must both be tensors or "
                           "both None")
        if running_mean is not None and running_var is not None:
            with no_grad():
                m = momentum
                keep = 1.0 - m
                bm = mean.detach().reshape(c)
                bv = var.detach().reshape(c) * (n / (n - 1))  # unbiased, as torch keeps
                running_mean.copy_(bm * m + running_mean * keep)
                running_var.copy_(bv * m + running_var * keep)
        return out
    if running_mean is None or running_var is None:
        raise RuntimeError(located("batch_norm: running_mean and running_var must be defined "
                                   "in evaluation mode (training=False); pass them, or "
                                   "training=True to use the batch's statistics"))
    scale = (running_var + eps).rsqrt()
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale if bias is None else bias - running_mean * scale
    return input * scale.reshape(bshape) + shift.reshape(bshape)


# ---- channel dropout --------------------------------------------------------------------------


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """Zero whole channels (input[n, c]) with probability p, scaling the rest by 1 / (1 - p);
    the identity when not training. A 3-d input is (N, C, L), as torch treats it today."""
    _tensor("dropout2d", input)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    nd = input.ndim
    if nd not in (3, 4):
        warnings.warn(f"dropout2d: Received a {nd}-D input to dropout2d, which is deprecated "
                      "and will result in an error in a future release. To retain the behavior "
                      "and silence this warning, please use dropout instead. Note that dropout2d "
                      "exists to provide channel-wise dropout on inputs with 2 spatial "
                      "dimensions, a channel dimension, and an optional batch dimension (i.e. 3D "
                      "or 4D inputs).", stacklevel=2)
    if nd == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
                      "1D dropout behavior is desired - input is interpreted as shape (N, C, L), "
                      "where C is the channel dim. This behavior will change in a future release "
                      "to interpret the input as one without a batch dimension, i.e. shape (C, H, "
                      "W). To maintain the 1D channel-wise dropout behavior, please switch to "
                      "using dropout1d instead.", stacklevel=2)
    if not training or p == 0.0:
        return input
    if nd < 2:
        raise RuntimeError(located(f"dropout2d: Feature dropout requires at least 2 dimensions "
                                   f"in the input, got {list(input.shape)}"))
    if not input.dtype.is_floating_point:
        raise TypeError(located(f"dropout2d: expected a floating-point input, got "
                                f"{input.dtype.name}; convert it with .float()"))
    if p == 1.0:
        out = input * 0.0
    else:
        noise = tuple(input.shape[:2]) + (1,) * (nd - 2)
        d = input.dtype if input.dtype in (dt.float32, dt.float64) else dt.float32
        keep = (rand(*noise, dtype=d) < 1.0 - p).to(input.dtype)
        out = input * (keep * (1.0 / (1.0 - p)))
    return input.copy_(out) if inplace else out
