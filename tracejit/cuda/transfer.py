"""Moving tensors between the host and a CUDA device, differentiably (`x.to('cuda')` of a
tensor that requires grad gets a ToCopyBackward0 node whose backward moves the gradient back),
and writing a result into a CUDA tensor's storage (in-place ops)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function
from ..device import device
from ..dispatch import STATE
from ..tensor import Tensor
from .array import DeviceArray


def _copy(t: Tensor, dev: device) -> Tensor:
    if STATE.tracer is not None:
        STATE.tracer.graph_break(f"moving a tensor to {dev} (CUDA under @jit is not built yet)")
    data: Any = t._data
    out: Any
    if dev.type == "cuda":
        if t.is_cuda:  # another CUDA device: one device in this build, checked by as_device
            out = data.copy()
        else:
            from .eager import _nb

            _nb(np.dtype(t._dtype.np))  # a clear error for dtypes CUDA kernels do not take
            out = DeviceArray.from_host(np.asarray(data))
    else:
        out = data.host()
    return Tensor._make(out, t._dtype, dev)


class _ToDevice(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dev: device) -> Tensor:
        ctx.src = x.device
        return _copy(x, dev)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Any:
        return g.to(ctx.src), None


def to_device(t: Tensor, dev: device) -> Tensor:
    if t._requires_grad and STATE.grad_enabled:
        out: Tensor = _ToDevice.apply(t, dev)
        return out
    return _copy(t, dev)


def write_into(target: Tensor, result: Tensor) -> None:
    """target's storage = result's values (cast to target's dtype)."""
    from .eager import copy_into

    src = result._data
    if not isinstance(src, DeviceArray):
        raise RuntimeError(f"an in-place operation on a {target.device} tensor got a result on "
                           f"{result.device}; move operands with .to(device)")
    copy_into(target._data, src)
