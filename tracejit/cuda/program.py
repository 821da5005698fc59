"""@jit on CUDA tensors: a cache entry's program for a graph whose tensors live on a CUDA
device. It wraps the CUDA renderer's CudaProgram (codegen/cuda.py, one per graph and device)
in the interface runtime/entry.py calls (`prog(params) -> (outputs, None)`, the program
writing its effects itself), and runs it on the tensors' own DeviceArray storage, zero-copy:
each parameter is handed to the renderer as a numba device-array view of its buffer (a
contiguous span), so parameter and optimizer-state updates are written on the device, into
the tensors themselves; outputs come back as DeviceArrays (CUDA tensors). A Python number that
is an input (a learning rate), or a 0-d CPU tensor that joins CUDA ones (Adam's step count,
kept on the CPU as torch keeps it), is copied to the device per call (one element), and such a
CPU tensor the program writes is copied back (one element) after the call.

What the renderer refuses raises UnsupportedError at build time: the jit then runs the entry
eagerly and explain() gives the reason. Nothing here copies a tensor to the host."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codegen.lower import UnsupportedError
from ..ir.graph import Graph, Value
from .array import DeviceArray, c_strides


def on_cuda(g: Graph) -> bool:
    """Does graph g compute on a CUDA device (any parameter or output there)?"""
    vals = list(g.params) + [o for o in g.outputs if isinstance(o, Value)]
    return any(v.type.device.type == "cuda" for v in vals)


class JitCudaProgram:
    """The compiled program of a cache entry whose tensors are CUDA tensors."""

    from_disk = False  # (kernels are compiled in this process; not cached on disk)

    def __init__(self, g: Graph) -> None:
        from ..codegen.cuda import program_for

        devs = {str(v.type.device) for v in g.params if v.type.device.type == "cuda"}
        for v in g.params:
            # a CPU tensor among CUDA ones: only a 0-d one (a number) may join, as in eager
            if v.type.device.type != "cuda" and v.type.shape != ():
                raise UnsupportedError(
                    f"CUDA: the graph mixes devices ({', '.join(sorted(devs))} and "
                    f"{v.type.device}: parameter {v}); move every tensor to one device first")
        self.graph = g
        self.prog = program_for(g)
        self.name = g.name
        self.source = self.prog.explain() + "\n\n" + "\n\n".join(
            rk.source for rk in self.prog.kernels)
        self._outs = [o for o in g.outputs]
        self._param_pos = {v: i for i, v in enumerate(g.params)}
        self._targets = {g.params.index(e.target) for e in g.effects}

    def explain(self) -> str:
        return self.prog.explain()

    def __call__(self, params: list[Any]) -> tuple[list[Any], None]:
        from numba import cuda

        g = self.graph
        views = []
        for i, (v, a) in enumerate(zip(g.params, params)):
            want = tuple(v.type.shape) or (1,)
            if isinstance(a, DeviceArray):
                views.append(_device_view(a, want, i in self._targets, v))
            elif isinstance(a, np.ndarray) and a.ndim == 0:  # a Python number, or a 0-d CPU
                views.append(cuda.to_device(a.reshape(1)))  # tensor: one element copied in
            else:
                raise RuntimeError(
                    f"tracejit: parameter {v} of the CUDA program {g.name} is a "
                    f"{type(a).__name__} on the host, not a CUDA tensor (was a module or "
                    "tensor the function reads moved with .cpu() after it was compiled?); "
                    "move it back with .cuda() or clear the cache (fn.clear_cache())")
        outs = self.prog(views)
        for i in self._targets:
            a = params[i]
            if isinstance(a, np.ndarray):  # a 0-d CPU tensor the step writes (Adam's step
                a[()] = views[i].copy_to_host()[0]  # count, on the CPU as in torch): back
        result: list[Any] = []
        for o, arr in zip(self._outs, outs):
            if isinstance(o, Value) and o in self._param_pos and \
                    isinstance(params[self._param_pos[o]], DeviceArray):
                result.append(params[self._param_pos[o]])  # the input itself, returned
                continue
            if not isinstance(o, Value):
                result.append(arr)
            elif o.type.device.type != "cuda":  # a CPU 0-d value (from Adam's step count)
                result.append(arr.copy_to_host().reshape(tuple(o.type.shape)))
            else:
                result.append(_wrap(arr, tuple(o.type.shape)))
        return result, None


def _device_view(a: DeviceArray, want: tuple[int, ...], target: bool, v: Value) -> Any:
    """The numba device-array view of a DeviceArray's elements with shape `want` (sharing
    its buffer). A non-contiguous input (a transposed or sliced view) is copied on the device
    first, unless the program writes into it (an effect's target must be the storage)."""
    if not a.is_contiguous():
        if target:
            raise RuntimeError(
                f"tracejit: the CUDA program writes into parameter {v}, a non-contiguous view "
                "of a CUDA tensor; pass a contiguous tensor (.contiguous()) or call the "
                "function eagerly")
        a = a.copy()
    return a.buf[a.offset:a.offset + a.size].reshape(want)


def _wrap(arr: Any, shape: tuple[int, ...]) -> DeviceArray:
    """A renderer's output (a numba device array, 0-d ones as 1 element) as a DeviceArray."""
    return DeviceArray(arr.reshape(arr.size), 0, shape, c_strides(shape), np.dtype(arr.dtype),
                       True)
