"""Differentiable compiled forwards: when a jitted function's outputs require grad, the trace
also captures the backward pass (the VJPs run through dispatch) as a second graph. The
compiled forward returns the values that graph needs; its outputs get a grad_fn that runs the
compiled backward, so eager `loss.backward()` through `jit(model)(x)` gives eager's grads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Node, _edge
from ..ir.graph import Graph, Value
from ..ir.interpret import interpret
from ..tensor import Tensor
from ..trace.sources import ArgSource, RefSource, Source


@dataclass
class BackwardInfo:
    graph: Graph  # params: grad outputs, then values saved from the forward
    diff_outputs: list[int]  # indices (into forward outputs) of outputs that require grad
    saved: list[tuple[str, Any]]  # ("out", fwd output index) | ("param", fwd param) | ("ref", src)
    leaves: list[Source]  # whose gradients the graph returns, in order
    leaf_map: list[int | None]  # leaf -> index into the graph's outputs (None: no gradient)
    program: Any = None
    # where each forward param is found on a call (set by jit.py; the saved ("param", i) index it)
    param_sources: list[Source] = field(default_factory=list)

    def attach(self, flat: list[Any], params: list[np.ndarray], tensors: list[Tensor],
               outs: list[Any]) -> None:
        saved: list[Any] = []  # the arrays the backward graph reads
        watched: list[tuple[Tensor, int]] = []  # the tensors behind them, and their versions
        for kind, i in self.saved:
            if kind == "out":
                saved.append(outs[i])
                owner: Any = tensors[i]
            elif kind == "param":
                saved.append(params[i])
                owner = self.param_sources[i].get(flat)  # (a lifted scalar is no tensor)
            else:
                owner = i.get(flat)
                saved.append(owner._data)
            if isinstance(owner, Tensor):
                watched.append((owner, owner._version.v))
        leaves = [s.get(flat) for s in self.leaves]
        node = CompiledFunctionBackward(self, saved, [tensors[i]._type() for i in
                                                       self.diff_outputs])
        node.watched = watched
        node.next_functions = tuple(_edge(t) for t in leaves)
        for k, i in enumerate(self.diff_outputs):
            t = tensors[i]
            t._grad_fn, t._out_nr, t._requires_grad = node, k, True

    def run(self, params: list[np.ndarray]) -> list[Any]:
        if self.program is None:
            from ..codegen.cpu import compile_graph
            from ..codegen.lower import UnsupportedError
            from ..cuda.program import JitCudaProgram, on_cuda

            if on_cuda(self.graph):  # (no interpreter runs on device arrays)
                try:
                    self.program = JitCudaProgram(self.graph)
                except UnsupportedError as e:
                    raise RuntimeError(
                        f"tracejit: the backward of a @jit function on CUDA cannot be compiled "
                        f"({e}); call backward() on the result of the function run eagerly "
                        "(tracejit.disable_jit()), or call backward() inside the function"
                    ) from None
            try:
                if self.program is None:
                    self.program = compile_graph(self.graph)
            except UnsupportedError:
                self.program = lambda p: interpret(self.graph, p)
        outs, _ = self.program(params)
        return outs


class CompiledFunctionBackward(Node):
    def __init__(self, info: BackwardInfo, saved: list[Any], out_types: list[Any]) -> None:
        self.info, self.saved, self.out_types = info, saved, out_types
        self.watched: list[tuple[Tensor, int]] = []  # saved tensors and their versions

    def _check_versions(self) -> None:
        for t, v in self.watched:  # as eager's saved tensors: an in-place change is an error
            if t._version.v != v:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by "
                    f"an inplace operation: [{t.dtype.name} {list(t.shape)}], which is saved by "
                    f"{self.name()}, is at version {t._version.v}; expected version {v} "
                    "instead. Hint: replace the in-place operation (x += ..., x[...] = ..., "
                    "x.add_(...)) with an out-of-place one")

    def apply(self, grads: list[Any], create_graph: bool) -> list[Any]:
        if self.saved is None:
            raise RuntimeError("Trying to backward through the graph of a jitted function a "
                               "second time; pass retain_graph=True to backward the first time")
        if create_graph:
            raise RuntimeError("higher-order gradients through a @jit function are not "
                               "supported yet; call it under tracejit.disable_jit() for those")
        self._check_versions()
        gs: list[Any] = []
        on_device = any(t.device.type == "cuda" for t in self.out_types)
        for g, t in zip(list(grads) + [None] * len(self.out_types), self.out_types):
            if on_device:  # a CUDA function's gradients stay on the device
                from ..cuda.array import DeviceArray

                gs.append(DeviceArray.from_host(np.zeros(t.shape, t.dtype.np)) if g is None
                          else g._data if g._dtype is t.dtype else g.to(t.dtype)._data)
                continue
            gs.append(np.zeros(t.shape, t.dtype.np) if g is None else
                      np.asarray(g._data, t.dtype.np, order="C"))  # (ascontiguousarray
            # would make a 0-d gradient 1-d)
        outs = self.info.run(gs + list(self.saved))
        vals = [o for o in self.info.graph.outputs if isinstance(o, Value)]
        types = [o.type.dtype for o in vals]
        if on_device:
            return [None if k is None else Tensor._make(outs[k], types[k], vals[k].type.device)
                    for k in self.info.leaf_map]
        return [None if k is None else Tensor._make(np.asarray(outs[k]), types[k])
                for k in self.info.leaf_map]

    def release(self) -> None:
        self.saved = None  # type: ignore[assignment]


def leaf_sources(params: list[Any]) -> list[tuple[Any, Source]]:
    """Trace params that are autograd leaves requiring grad: (tensor, source)."""
    out: list[tuple[Any, Source]] = []
    for p in params:
        t = p.tensor
        if isinstance(p.source, (ArgSource, RefSource)) and t._requires_grad:
            out.append((t, p.source))
    return out


__all__ = ["BackwardInfo", "CompiledFunctionBackward", "leaf_sources", "Value"]
