"""A cache entry: one trace of a function for one set of guards, its optimised graph, and the
program that runs it (the interpreter until compiled). Calling it gathers the parameters from
their sources, runs the program, writes effects back and rebuilds the outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PathNotTakenError
from ..ir.graph import Graph, Value
from ..ir.interpret import interpret
from ..tensor import Tensor
from ..trace.sources import ArgSource, Guard, ScalarArgSource, ScalarSource, Source, bind
from ..trace.tracer import GraphBreak, TraceResult

Program = Callable[[list[np.ndarray]], tuple[list[Any], list[Any]]]


class _Missed:
    """What `Entry.run` returns when the call went down a branch this entry's trace did not
    take: nothing was committed, and the caller tries another entry or traces."""

    def __repr__(self) -> str:
        return "MISSED"


MISSED: Any = _Missed()


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
    profiled: Any = None  # the instrumented twin of `program` that profile() runs
    missed: int = -1  # the check (index into graph.checks) that the last missed call failed
    # its trace met a graph break: calls run the function as a lazy replay, compiled in
    # segments around the breaks (trace/lazy.py)
    lazy: bool = False
    # a lazy entry's measured choice between replaying and plain eager calls (jit._split_call)
    split_choice: str = ""
    split_times: dict[str, list[float]] = field(
        default_factory=lambda: {"replay": [], "eager": []})

    @property
    def breaks(self) -> list[GraphBreak]:
        return self.trace.breaks

    def guards_hold(self, flat: list[Any]) -> Guard | None:
        if self._all_hold(flat):
            return None
        for g in self.trace.guards:  # which one failed
            if not g.check(flat):
                return g
        return None

    def __post_init__(self) -> None:
        # plans computed once, so a call does no lookups it could have done at trace time
        g = self.graph
        index = {v: i for i, v in enumerate(g.params)}
        self._effect_src = [self.trace.params[index[e.target]].source for e in g.effects]
        self._out_dtypes = [v.type.dtype for v in g.outputs]  # type: ignore[union-attr]
        self._out_devs = [v.type.device for v in g.outputs]  # type: ignore[union-attr]
        self._grad_writes = list(self.trace.grad_writes)  # (output positions)
        spec = self.trace.out_spec
        self._single = spec[1] if spec[0] == "t" else None
        # Python numbers are passed as 0-d arrays: one per number made once and refilled by
        # every call, unless the program may return it (or a view of it), or a backward keeps
        # the call's parameters; a list of free sets, so concurrent calls never share one
        from ..ir.plan import roots

        root = roots(g)
        returned = {root.get(o, o) for o in g.outputs if isinstance(o, Value)}
        self._scalar_slots = [k for k, p in enumerate(self.trace.params)
                              if isinstance(p.source, (ScalarArgSource, ScalarSource))
                              and g.params[k] not in returned]
        self._free_scalars: list[dict[int, np.ndarray]] = []
        self._all_hold, self._gather_fn, self._after = _compile_call(
            self.trace, self._effect_src, self._grad_writes)
        self._checked = {c.output for c in g.checks}  # predicates: never user-visible tensors

    def gather(self, flat: list[Any]) -> list[np.ndarray]:
        return self._gather(flat)[0]

    def _gather(self, flat: list[Any]) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
        """The parameter arrays, and the set of number buffers among them (to hand back with
        `self._free_scalars.append` once the program has run, or to drop)."""
        bufs = self._scalar_buffers() if self._scalar_slots else {}
        return self._gather_fn(flat, bufs), bufs

    def _gather_slow(self, flat: list[Any], bufs: dict[int, np.ndarray]) -> list[np.ndarray]:
        """What the generated gather (`_compile_call`) computes, source by source."""
        out = []
        for k, p in enumerate(self.trace.params):
            src = p.source
            if type(src) is ArgSource:
                out.append(flat[src.index]._data)
            elif isinstance(src, (ScalarArgSource, ScalarSource)):
                value = flat[src.index] if isinstance(src, ScalarArgSource) else src.get(flat)
                buf = bufs.get(k)
                if buf is None:
                    out.append(np.array(value, src.dtype.np))
                else:
                    buf[()] = value
                    out.append(buf)
            else:
                out.append(src.get(flat)._data)
        return out

    def _scalar_buffers(self) -> dict[int, np.ndarray]:
        try:  # (not "if free: pop": another thread may take the last set between)
            return self._free_scalars.pop()
        except IndexError:
            pass
        if not self._scalar_slots or self.backward is not None or self.program is None:
            return {}
        return {k: np.empty((), self.trace.params[k].source.dtype.np)  # type: ignore
                for k in self._scalar_slots}

    def run(self, flat: list[Any]) -> Any:
        params, bufs = self._gather(flat)
        prog = self.program
        if prog is None:
            outs, effects = interpret(self.graph, params)
            k = self.failed_check(outs)
            if k >= 0:
                self.missed = k
                return MISSED
        else:
            try:
                outs, effects = prog(params)
            except PathNotTakenError as e:  # raised before any effect was written
                if bufs:
                    self._free_scalars.append(bufs)
                self.missed = e.args[0]
                return MISSED
        if bufs:
            self._free_scalars.append(bufs)  # (the program read them only while it ran)
        return self.finish(flat, params, outs, effects)

    def failed_check(self, outs: list[Any]) -> int:
        """The first check whose predicate in `outs` differs from the trace's, or -1."""
        for k, c in enumerate(self.graph.checks):
            if bool(np.asarray(outs[c.output])) != c.taken:
                return k
        return -1

    def miss_reason(self) -> str:
        c = self.graph.checks[self.missed]
        return f"the branch at {c.loc} went the other way ({c.taken} in this trace)"

    def finish(self, flat: list[Any], params: list[np.ndarray], outs: list[Any],
               effects: list[Any] | None) -> Any:
        if effects is not None:  # the interpreter's: written here (a program writes its own)
            for k, src in enumerate(self._effect_src):
                np.copyto(src.get(flat)._data, effects[k], casting="unsafe")
        make = Tensor._make
        tensors: list[Any]
        if not self._checked:
            tensors = [make(o, d) if type(o) is np.ndarray and o.dtype == d.np else
                       _wrap(o, d, dev) for o, d, dev in zip(outs, self._out_dtypes,
                                                             self._out_devs)]
        else:  # (a branch's predicate is the program's business, never returned)
            tensors = [None if i in self._checked else _wrap(o, d, dev)
                       for i, (o, d, dev) in enumerate(zip(outs, self._out_dtypes,
                                                           self._out_devs))]
        self._after(flat, tensors)  # version counters of the effects' targets, .grad writes
        if self.backward is not None:
            self.backward.attach(flat, params, tensors, outs)
        if self._single is not None:
            return tensors[self._single]
        return _rebuild(self.trace.out_spec, tensors, flat)


def _number(bufs: dict[int, np.ndarray], k: int, value: Any, dtype: Any) -> np.ndarray:
    """Parameter k, a Python number: into its buffer when the call has one (Entry._gather)."""
    buf = bufs.get(k)
    if buf is None:
        return np.array(value, dtype)
    buf[()] = value
    return buf


def _compile_call(trace: TraceResult, effect_src: list[Source],
                  grad_writes: list[tuple[Source, int | None]]) -> tuple[Any, Any, Any]:
    """Three functions generated for one entry, of the sources' and guards' `emit`
    expressions: `all_hold(flat)`, every guard as one `and` in the guards' order (a failed
    one is then found with the guards' own `check`); `gather(flat, bufs)`, the parameter list
    as one list display; and `after(flat, tensors)`, the version bumps of the effects' targets
    and the `.grad` assignments, one statement each. Done one method call at a time, the
    20 guards, 23 parameters and 16 effects of the iris Adam step cost about 10 us a call."""
    from ..trace.sources import _MISSING, MODULE_EPOCH

    ns: dict[str, Any] = {"_MISSING": _MISSING, "_EPOCH": MODULE_EPOCH, "_number": _number,
                          "np": np}
    conds = [g.emit(ns) for g in trace.guards] or ["True"]
    items = []
    for k, p in enumerate(trace.params):
        src = p.source
        if isinstance(src, (ScalarArgSource, ScalarSource)):
            items.append(f"_number(bufs, {k}, {src.emit(ns)}, {bind(ns, src.dtype.np)})")
        else:
            items.append(f"{src.emit(ns)}._data")
    after = [f"{src.emit(ns)}._version.v += 1" for src in effect_src]
    after += [f"{owner.emit(ns)}._grad = {'None' if i is None else f'tensors[{i}]'}"
              for owner, i in grad_writes]
    text = ("def all_hold(flat):\n    return bool(" + "\n            and ".join(conds) + ")\n\n"
            "def gather(flat, bufs):\n    return [" + ",\n            ".join(items) + "]\n\n"
            "def after(flat, tensors):\n    " + "\n    ".join(after or ["pass"]) + "\n")
    exec(compile(text, "<tracejit guards and gather>", "exec"), ns)
    return ns["all_hold"], ns["gather"], ns["after"]


def _wrap(a: Any, d: Any, dev: Any = None) -> Tensor:
    if hasattr(a, "buf") and hasattr(a, "estrides"):  # a CUDA program's DeviceArray
        if a.dtype != d.np:
            raise AssertionError(f"a CUDA program returned {a.dtype} for a {d.name} output")
        return Tensor._make(a, d, dev)
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
