"""A cache entry: one trace of a function for one set of guards, its optimised graph, and the
program that runs it (the interpreter until compiled). Calling it gathers the parameters from
their sources, runs the program, writes effects back and rebuilds the outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.graph import Graph
from ..ir.interpret import interpret
from ..tensor import Tensor
from ..trace.sources import ArgSource, Guard, ScalarArgSource, ScalarSource, Source
from ..trace.tracer import GraphBreak, TraceResult

Program = Callable[[list[np.ndarray]], tuple[list[Any], list[Any]]]


@dataclass
class Entry:
    trace: TraceResult
    graph: Graph  # optimised
    hits: int = 0
    program: Any = None  # a compiled Program; None until the entry is hit again
    compiled_from_disk: bool = False
    failed: str = ""  # why compilation failed (the entry then runs eagerly)
    source_text: str = ""
    backward: Any = None  # runtime.backward.BackwardInfo when outputs need a grad_fn
    notes: list[str] = field(default_factory=list)
    # argument objects keyed by id() (modules, optimizers, ...): held so that, while this
    # entry exists, no other object can be born at the same address and match its key
    held: list[Any] = field(default_factory=list)
    # its trace met a graph break: calls run the function as a lazy replay, compiled in
    # segments around the breaks (trace/lazy.py)
    lazy: bool = False

    @property
    def breaks(self) -> list[GraphBreak]:
        return self.trace.breaks

    def guards_hold(self, flat: list[Any]) -> Guard | None:
        for g in self.trace.guards:
            if not g.check(flat):
                return g
        return None

    def __post_init__(self) -> None:
        # plans computed once, so a call does no lookups it could have done at trace time
        self._args = all(type(p.source) is ArgSource for p in self.trace.params)
        g = self.graph
        index = {v: i for i, v in enumerate(g.params)}
        self._effect_src = [self.trace.params[index[e.target]].source for e in g.effects]
        self._out_dtypes = [v.type.dtype for v in g.outputs]  # type: ignore[union-attr]
        self._grad_writes = [(owner, None if v is None else g.outputs.index(v))
                             for owner, v in self.trace.grad_writes]
        spec = self.trace.out_spec
        self._single = spec[1] if spec[0] == "t" else None

    def gather(self, flat: list[Any]) -> list[np.ndarray]:
        if self._args:
            return [flat[p.source.index]._data for p in self.trace.params]  # type: ignore
        out = []
        for p in self.trace.params:
            src = p.source
            if type(src) is ArgSource:
                out.append(flat[src.index]._data)
            elif isinstance(src, ScalarArgSource):
                out.append(np.array(flat[src.index], src.dtype.np))
            elif isinstance(src, ScalarSource):
                out.append(np.array(src.get(flat), src.dtype.np))
            else:
                out.append(src.get(flat)._data)
        return out

    def run(self, flat: list[Any]) -> Any:
        params = self.gather(flat)
        prog = self.program
        if prog is None:
            outs, effects = interpret(self.graph, params)
        else:
            outs, effects = prog(params)
        return self.finish(flat, params, outs, effects)

    def finish(self, flat: list[Any], params: list[np.ndarray], outs: list[Any],
               effects: list[Any] | None) -> Any:
        for k, src in enumerate(self._effect_src):
            t = src.get(flat)
            if effects is not None:  # (a compiled program writes its effects itself)
                np.copyto(t._data, effects[k], casting="unsafe")
            t._version.v += 1
        make = Tensor._make
        tensors = [make(o, d) if type(o) is np.ndarray and o.dtype == d.np else _wrap(o, d)
                   for o, d in zip(outs, self._out_dtypes)]
        for owner, i in self._grad_writes:
            owner.get(flat)._grad = None if i is None else tensors[i]
        if self.backward is not None:
            self.backward.attach(flat, params, tensors, outs)
        if self._single is not None:
            return tensors[self._single]
        return _rebuild(self.trace.out_spec, tensors, flat)


def _wrap(a: Any, d: Any) -> Tensor:
    arr = a if isinstance(a, np.ndarray) else np.asarray(a)
    if arr.dtype != d.np:
        arr = arr.astype(d.np)
    return Tensor._make(arr, d)


def _rebuild(spec: Any, tensors: list[Tensor], flat: list[Any]) -> Any:
    kind, x = spec
    if kind == "t":
        return tensors[x]
    if kind == "p":
        src: Source = x
        return src.get(flat)
    if kind == "c":
        return x
    if kind == "tuple":
        items = [_rebuild(s, tensors, flat) for s in x]
        return tuple(items)
    if kind == "list":
        return [_rebuild(s, tensors, flat) for s in x]
    if kind == "namedtuple":
        return x[0](*[_rebuild(s, tensors, flat) for s in x[1]])
    if kind == "dict":
        return {k: _rebuild(s, tensors, flat) for k, s in x}
    raise AssertionError(kind)
