"""Eager fast paths for composites (layer_norm, softmax over the last dim, tanh-GELU): one row
kernel forward (kernels/cpu/norm.py) and one backward, instead of the composite's dozen NumPy
passes and dispatched ops with their autograd nodes.

Taken only eagerly (no tracer: a trace records the composite's primitives, which fuse in the
compiled program), for float32/float64 tensors of at least MIN_NUMEL elements (the kernels
compile once per dtype and rank on first use; below that size the composite is as quick).
Values are the composite's up to rounding: the kernels accumulate in float64 where the
composite sums in the tensors' dtype (tests/test_fused.py bounds the difference). The node's
backward runs the kernel; under `create_graph` it computes the same closed form in tensor
ops, so that gradients of gradients exist and are those of the formula.
Imports tensor and autograd; imported by functional and nn.functional."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from .autograd import _FREED, Node, SavedTensor, _edge
from .dispatch import STATE
from .tensor import Tensor

MIN_NUMEL = 4096
_FLOATS = (dt.float32, dt.float64)


def usable(x: Any, *others: Any) -> bool:
    """Whether the fast path applies: eager, a big enough float32/float64 tensor, and every
    other operand None or a tensor of its dtype."""
    if STATE.tracer is not None or type(x) is not Tensor and not isinstance(x, Tensor):
        return False
    if x._dtype not in _FLOATS or x._data.size < MIN_NUMEL or x._device.type != "cpu":
        return False  # (CUDA tensors take the composites' kernels)
    return all(o is None or isinstance(o, Tensor) and o._dtype is x._dtype for o in others)


def _kernels() -> Any:
    # imported (and compiled) on the first big enough call; by name, so that mypy, which
    # does not check kernels/, does not follow it into Numba's typing
    return importlib.import_module("tracejit.kernels.cpu.norm")


class FusedBackward(Node):
    """The grad_fn of a fused composite: `arrays` (what the forward kernel saved) and the
    inputs, as SavedTensors (checked against in-place changes, as every node's are)."""

    kernel: Callable[..., Sequence[np.ndarray | None]]  # (g, *inputs' arrays, *arrays)
    formula: Callable[..., Sequence[Any]]  # (g, *inputs, *arrays as tensors): tensor ops

    def __init__(self, inputs: Sequence[Tensor | None], arrays: Sequence[Any],
                 out: Tensor | None = None) -> None:
        self.next_functions = tuple(_edge(t) for t in inputs)
        self.in_types = [t._type() if t is not None else None for t in inputs]
        self.saved: list[Any] | None = [SavedTensor(t) if t is not None else None
                                        for t in inputs]
        self.arrays = list(arrays)
        self.out = None
        if out is not None:  # kept without its Tensor object (which owns this node)
            alias = Tensor._make(out._data, out._dtype, out._device)
            alias._version = out._version
            self.out = SavedTensor(alias, True)

    def apply(self, grads: list[Any], create_graph: bool) -> Sequence[Any]:
        if self.saved is None:
            raise RuntimeError(_FREED.args[0])
        ins = [s.unpack(self) if s is not None else None for s in self.saved]
        out = self.out.unpack(self) if self.out is not None else None
        g = grads[0]
        needs = [e[0] is not None for e in self.next_functions]
        if create_graph:
            return list(self.formula(g, needs, out, *ins, *self.arrays))
        gs = self.kernel(np.ascontiguousarray(g._data), needs,
                         out._data if out is not None else None,
                         *[t._data if t is not None else None for t in ins], *self.arrays)
        return [Tensor._make(a, t._dtype) if a is not None and n and t is not None else None
                for a, t, n in zip(gs, ins, needs)]

    def release(self) -> None:
        self.saved, self.arrays, self.out = None, [], None


def _finish(data: np.ndarray, x: Tensor, node_cls: type[FusedBackward],
            inputs: Sequence[Tensor | None], arrays: Sequence[Any], save_out: bool) -> Tensor:
    out = Tensor._make(data, x._dtype)
    if STATE.grad_enabled and any(t is not None and t._requires_grad for t in inputs):
        node = node_cls(inputs, arrays, out if save_out else None)
        out._grad_fn, out._requires_grad = node, True
    return out


def _as_rows(a: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1, n)


# ---- layer norm ---------------------------------------------------------------------------------

_NONE = np.empty(0)


class NativeLayerNormBackward0(FusedBackward):
    @staticmethod
    def kernel(g: np.ndarray, needs: list[bool], out: Any, x: np.ndarray, w: Any, b: Any,
               mean: np.ndarray, rstd: np.ndarray, eps: float) -> Sequence[Any]:
        n = mean.size and x.size // mean.size
        wf = w.reshape(-1) if w is not None else _NONE.astype(x.dtype)
        dx, dw, db = _kernels().layernorm_bwd(_as_rows(g, n), _as_rows(x, n), wf, mean, rstd)
        return (dx.reshape(x.shape), dw.reshape(w.shape) if w is not None else None,
                db.reshape(b.shape) if b is not None else None)

    @staticmethod
    def formula(g: Tensor, needs: list[bool], out: Any, x: Tensor, w: Any, b: Any,
                mean: np.ndarray, rstd: np.ndarray, eps: float) -> Sequence[Any]:
        k = w.ndim if w is not None else (b.ndim if b is not None else 1)
        dims = tuple(range(x.ndim - k, x.ndim))
        lead = tuple(range(x.ndim - k))
        mu = x.mean(dims, keepdim=True)
        xc = x - mu
        r = ((xc * xc).mean(dims, keepdim=True) + eps).rsqrt()
        xhat = xc * r
        gw = g * w if w is not None else g
        dx = r * (gw - gw.mean(dims, keepdim=True) - xhat * (gw * xhat).mean(dims, keepdim=True))
        dw = (g * xhat).sum(lead) if w is not None and needs[1] else None
        db = g.sum(lead) if b is not None and needs[2] else None
        return dx if needs[0] else None, dw, db


def layer_norm(x: Tensor, shape: tuple[int, ...], w: Tensor | None, b: Tensor | None,
               eps: float) -> Tensor | None:
    """Fused layer_norm, or None when the operands do not fit the kernel (the caller then
    runs the composite, which also reports what is wrong with them)."""
    if (w is not None and tuple(w.shape) != shape) or (b is not None and tuple(b.shape) != shape):
        return None
    n = 1
    for s in shape:
        n *= s
    if n == 0:
        return None
    xd = x._data
    wf = w._data.reshape(-1) if w is not None else _NONE.astype(xd.dtype)
    bf = b._data.reshape(-1) if b is not None else _NONE.astype(xd.dtype)
    y, mean, rstd = _kernels().layernorm_fwd(_as_rows(xd, n), wf, bf, float(eps))
    node_in = [x, w, b]
    return _finish(y.reshape(xd.shape), x, NativeLayerNormBackward0, node_in,
                   [mean, rstd, float(eps)], False)


# ---- softmax over the last dim ------------------------------------------------------------------


class SoftmaxBackward0(FusedBackward):
    @staticmethod
    def kernel(g: np.ndarray, needs: list[bool], y: np.ndarray, x: np.ndarray) -> Sequence[Any]:
        n = y.shape[-1]
        return (_kernels().softmax_bwd(_as_rows(g, n), _as_rows(y, n)).reshape(y.shape),)

    @staticmethod
    def formula(g: Tensor, needs: list[bool], y: Tensor, x: Tensor) -> Sequence[Any]:
        # y recomputed from x in tensor ops (the composite's), so the result depends on x
        e = (x - x.detach().amax(-1, keepdim=True)).exp()
        y = e * (1 / e.sum(-1, keepdim=True))
        return (y * (g - (g * y).sum(-1, keepdim=True)),)


def softmax_last(x: Tensor) -> Tensor | None:
    """Fused softmax over the last dim of a tensor with at least one dim of size >= 1."""
    xd = x._data
    if xd.ndim == 0 or xd.shape[-1] == 0:
        return None
    y = _kernels().softmax_fwd(_as_rows(xd, xd.shape[-1])).reshape(xd.shape)
    return _finish(y, x, SoftmaxBackward0, [x], [], True)


# ---- GELU, tanh form ----------------------------------------------------------------------------


class GeluBackward0(FusedBackward):
    @staticmethod
    def kernel(g: np.ndarray, needs: list[bool], out: Any, x: np.ndarray) -> Sequence[Any]:
        return (_kernels().gelu_tanh_bwd(g, np.ascontiguousarray(x)),)

    @staticmethod
    def formula(g: Tensor, needs: list[bool], out: Any, x: Tensor) -> Sequence[Any]:
        c = 2 * math.sqrt(2 / math.pi)
        s = 1 / ((x * (x * x * (-0.044715 * c) - c)).exp() + 1)
        return (g * (s + x * s * (1 - s) * (x * x * (3 * 0.044715 * c) + c)),)


def gelu_tanh(x: Tensor) -> Tensor:
    y = _kernels().gelu_tanh_fwd(np.ascontiguousarray(x._data))
    return _finish(y, x, GeluBackward0, [x], [], False)
