"""@jit: ties the stages together. A call looks up a cache entry by its guards; a miss traces
the function (running it eagerly, so the result is already right), optimises the graph, and
compiles it when the same entry is met again. Also explain(), ir(), source(), cache_info()."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import inspect
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .autograd import OpNode
from .dispatch import STATE, user_location
from .errors import warn_at_user
from .flags import get as get_flag
from .ir.graph import walk
from .ir.printer import print_graph
from .ops.structural import FUSED
from .passes import run_pipeline
from .runtime.entry import MISSED, Entry
from .runtime.log import log
from .tensor import Tensor
from .trace.lazy import Replay, SegmentEntry
from .trace.pystate import PythonStateWatcher
from .trace.scalars import ScalarArg, plain
from .trace.tracer import Tracer, TraceResult, UndoLog

if TYPE_CHECKING:
    from .runtime.profile import Profile


# a function split at its graph breaks: replays before timing (the first compile the segments),
# then how many replays and eager calls are timed to choose between them (_split_call)
SPLIT_WARM = 3
SPLIT_TIMED = 3


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    traces: int
    compiles: int
    fallbacks: int
    segments: int = 0  # segments compiled around graph breaks (a lazy replay's programs)
    replays: int = 0  # calls run as a lazy replay (their tensor work in those segments)

    def __repr__(self) -> str:  # (the last two shown only for a function that replays)
        names = self._fields if self.replays or self.segments else self._fields[:5]
        return "CacheInfo(" + ", ".join(f"{n}={getattr(self, n)}" for n in names) + ")"


_disabled_depth = 0


@contextlib.contextmanager
def disable_jit() -> Iterator[None]:
    """Run every @jit function eagerly inside this block (like jax.disable_jit)."""
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


class JitWarning(UserWarning):
    pass


def _warn(msg: str) -> None:
    warn_at_user(msg, JitWarning)


_NUMBERS = (int, float)  # Python numbers that may become inputs (bool stays a guard)
_MAX_DEPTH = 4  # objects nested deeper than this inside an argument are keyed by identity
_MAX_ATTRS = 64
_by_contents: dict[type, bool] = {}  # type -> flattened by its attributes (else by identity)


def _contents_type(tp: type) -> bool:
    r = _by_contents.get(tp)
    if r is None:
        from .creation import Generator
        from .nn.module import Module
        from .optim.optimizer import Optimizer

        by_id = (Module, Optimizer, Generator, type, types.FunctionType, types.MethodType,
                 types.BuiltinFunctionType, types.ModuleType, functools.partial, np.ndarray,
                 contextlib.AbstractContextManager)
        mod = getattr(tp, "__module__", None) or "builtins"
        r = (not issubclass(tp, by_id) and mod != "builtins"
             # schedulers and data loaders hold an optimizer or iteration state: identity
             and not mod.startswith(("tracejit.optim", "tracejit.utils"))
             and (dataclasses.is_dataclass(tp) or "__dict__" in dir(tp)))
        _by_contents[tp] = r
    return r


def _flatten(obj: Any, path: str, flat: list[Any], names: list[str], key: list[Any],
             depth: int = 0) -> None:
    """Flatten arguments into tensors/leaves, and build the hashable part of the guard key.
    Plain objects (dataclasses, classes with a __dict__) are flattened by their attributes, so
    a new object each call with the same structure hits the same entry with its own tensors;
    modules, optimizers and other objects are keyed by identity and put in `flat`, where the
    entry holds them alive (so their id cannot be reused by another object)."""
    if type(obj) is Tensor or isinstance(obj, Tensor):
        flat.append(obj)
        names.append(path)
        key.append((obj._data.shape, obj._dtype, obj._requires_grad, obj._device))
    elif isinstance(obj, (bool, int, float, str, type(None))):
        key.append((type(obj), obj))
    elif isinstance(obj, (tuple, list)):
        key.append((type(obj), len(obj)))
        for i, x in enumerate(obj):
            _flatten(x, f"{path}[{i}]", flat, names, key, depth)
    elif isinstance(obj, dict):
        key.append((dict, tuple(obj.keys())))
        for k, x in obj.items():
            _flatten(x, f"{path}[{k!r}]", flat, names, key, depth)
    elif isinstance(obj, np.generic):
        key.append((type(obj), obj.item()))
    else:
        attrs = _attributes(obj) if depth < _MAX_DEPTH else None
        if attrs is None:
            flat.append(obj)
            names.append(path)
            key.append(("id", id(obj)))
        else:
            key.append((type(obj), tuple(attrs)))
            for k, x in attrs.items():
                _flatten(x, f"{path}.{k}", flat, names, key, depth + 1)


def _attributes(obj: Any) -> dict[str, Any] | None:
    if not _contents_type(type(obj)):
        return None
    d = getattr(obj, "__dict__", None)
    if type(d) is not dict:
        if not dataclasses.is_dataclass(obj):
            return None
        d = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return d if len(d) <= _MAX_ATTRS else None


def _describe_key_change(old: tuple, new: tuple, names: list[str]) -> str:
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            if i == 0:
                return f"grad mode changed ({a} -> {b})"
            return f"argument component {i - 1} changed: {a!r} -> {b!r}"
    return "argument structure changed"


class JitFunction:
    """What @jit returns. Call it like the function it wraps."""

    def __init__(self, fn: Callable, *, fallback: bool = True, check: bool = False,
                 max_traces: int = 8) -> None:
        self.fn = fn
        self.fallback = fallback
        self.check = check
        self.max_traces = max_traces
        self.name = getattr(fn, "__name__", None) or type(fn).__name__.lower()
        self._entries: dict[tuple, list[Entry]] = {}
        self._stats = Counter[str]()
        self._changes = Counter[str]()
        self._events: list[str] = []
        self._gave_up = False
        self._last_key: tuple | None = None
        self._warned: set[str] = set()
        # Python int/float arguments (by name) traced as 0-d inputs since their value changed,
        # with why; and those that stay guards because their value steered a trace, with where
        self._dynamic: dict[str, str] = {}
        self._static: dict[str, str] = {}
        # the segments and breaks of calls run as a lazy replay (entries whose trace broke)
        self._replay = Replay(self.name)
        self._is_module = isinstance(getattr(fn, "training", None), bool)
        try:
            sig = inspect.signature(fn)
            self._argnames = [p.name for p in sig.parameters.values()]
        except (TypeError, ValueError):
            self._argnames = []
        functools.update_wrapper(self, fn, updated=())

    # ---- public API --------------------------------------------------------------------------
    def cache_info(self) -> CacheInfo:
        s = self._stats
        r = self._replay
        return CacheInfo(s["hits"], s["misses"], s["traces"], s["compiles"] + r.compiles,
                         s["fallbacks"], sum(1 for e in r.segments.values() if e.program),
                         r.calls)

    def clear_cache(self) -> None:
        self._entries.clear()
        self._stats.clear()
        self._changes.clear()
        self._gave_up = False
        self._dynamic.clear()
        self._static.clear()
        self._replay = Replay(self.name)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if STATE.tracer is not None or _disabled_depth or get_flag("disable"):
            return self.fn(*args, **kwargs)  # inside another trace: trace through
        flat: list[Any] = []
        names: list[str] = []
        key: list[Any] = [STATE.grad_enabled]
        self._flatten_args(args, kwargs, flat, names, key)
        k0 = k = tuple(key)
        entries = self._entries.get(k)
        if entries is None and self._last_key is not None and self._entries and \
                self._promote(self._last_key, k, args, kwargs):
            flat, names, key = [], [], [STATE.grad_enabled]  # the number is now an input
            self._flatten_args(args, kwargs, flat, names, key)
            k = tuple(key)
            entries = self._entries.get(k)
        if entries is not None:
            for e in entries:
                if e.lazy:  # its Python runs every call, so no guards: compiled in segments
                    e.hits += 1
                    return self._split_call(e, args, kwargs)
                failed = e.guards_hold(flat) if e.trace.guards else None
                if failed is None:
                    if e.program is not None and not self.check and not get_flag("check"):
                        self._stats["hits"] += 1  # the fast path: compiled and unchecked
                        r = e.run(flat)  # (a call that raises counts as a hit)
                        if r is not MISSED:
                            return r
                        self._stats["hits"] -= 1
                    else:
                        r = self._run(e, flat, args, kwargs)
                        if r is not MISSED:
                            return r
                    # down a branch this trace did not take, nothing committed: another
                    # entry may be that path; else it is traced (eagerly, so it is right)
                    self._changes[e.miss_reason()] += 1
                    continue
                self._changes[failed.reason()] += 1
        elif self._last_key is not None and self._entries:
            self._changes[_describe_key_change(self._last_key, k0, names)] += 1
        self._last_key = k
        self._stats["misses"] += 1
        if self._gave_up:
            self._stats["fallbacks"] += 1
            return self.fn(*args, **kwargs)
        if self._stats["traces"] >= self.max_traces:
            self._give_up()
            self._stats["fallbacks"] += 1
            return self.fn(*args, **kwargs)
        return self._trace(k, flat, names, args, kwargs)[0]

    # ---- internals ---------------------------------------------------------------------------
    def _split_call(self, e: Entry, args: tuple, kwargs: dict) -> Any:
        """A call of an entry split at its graph breaks: a lazy replay, or plain eager mode when
        that measured faster. The replay's recording costs about what eager dispatch does per
        op, so a small matmul-bound step replays slower than it runs eagerly; the first replays
        compile the segments, the next SPLIT_TIMED are timed, then as many eager calls, and
        the faster way (the replay unless eager is clearly faster) runs from then on. Both give
        eager's results (segments draw the same random numbers), so the choice changes only
        the speed; explain() says which was chosen and why."""
        t = e.split_times
        if not e.split_choice:
            forced = get_flag("split")
            if forced not in ("auto", "replay", "eager"):
                raise ValueError(f"TRACEJIT_SPLIT must be auto, replay or eager, got {forced!r}")
            e.split_choice = "" if forced == "auto" else forced
        if e.split_choice == "eager":
            self._stats["fallbacks"] += 1
            return self.fn(*args, **kwargs)
        if e.split_choice == "replay" or self._replay.calls < SPLIT_WARM:
            return self._replay.call(self.fn, args, kwargs)
        eager = len(t["replay"]) >= SPLIT_TIMED
        t0 = time.perf_counter()
        out = self.fn(*args, **kwargs) if eager else self._replay.call(self.fn, args, kwargs)
        t["eager" if eager else "replay"].append(time.perf_counter() - t0)
        if eager:
            self._stats["fallbacks"] += 1
        if len(t["eager"]) >= SPLIT_TIMED:
            rep, eag = min(t["replay"]), min(t["eager"])
            e.split_choice = "eager" if eag < 0.9 * rep else "replay"
            msg = (f"{self.name}: split at its graph breaks, a call took {rep * 1e3:.3g} ms as a "
                   f"lazy replay and {eag * 1e3:.3g} ms eagerly (best of {SPLIT_TIMED}): it runs "
                   + ("eagerly from now on (the compiled segments save less than recording the "
                      "ops costs)" if e.split_choice == "eager" else "as a lazy replay"))
            self._events.append(msg)
            log("recompiles", msg)
        return out

    def _flatten_args(self, args: tuple, kwargs: dict, flat: list[Any], names: list[str],
                      key: list[Any], slots: list[tuple[int, str]] | None = None) -> None:
        """`slots`, when given, gets (index into the key, name) of each Python int/float
        argument keyed by its value (those that may become inputs)."""
        argnames = self._argnames
        for i, a in enumerate(args):
            if type(a) is Tensor:  # the common case, inlined
                flat.append(a)
                names.append(argnames[i] if i < len(argnames) else f"arg{i}")
                key.append((a._data.shape, a._dtype, a._requires_grad, a._device))
                continue
            self._flatten_one(a, argnames[i] if i < len(argnames) else f"arg{i}", flat, names,
                              key, slots)
        for kname in sorted(kwargs):
            key.append(("kw", kname))
            self._flatten_one(kwargs[kname], kname, flat, names, key, slots)
        if self._is_module:
            key.append(("training", getattr(self.fn, "training", None)))
        if len(flat) > 1:
            # (numbers among them are inputs: equal ones may share an id, and mean nothing)
            ids = [id(t._data) if isinstance(t, Tensor) else -i if type(t) in _NUMBERS else id(t)
                   for i, t in enumerate(flat)]
            if len(set(ids)) != len(ids):
                # the same tensor (or array) passed twice was traced as one value: a call
                # passing two different tensors there must not reuse that trace
                first: dict[int, int] = {}
                key.append(("same", tuple(first.setdefault(k, i) for i, k in enumerate(ids))))

    def _promote(self, old: tuple, new: tuple, args: tuple, kwargs: dict) -> bool:
        """A Python int/float argument whose value changed since the last trace (all else
        equal in structure) becomes a 0-d input of the program, unless a trace found that its
        value steers the computation. Returns whether any argument was promoted."""
        if len(old) != len(new):
            return False
        slots: list[tuple[int, str]] = []
        self._flatten_args(args, kwargs, [], [], [STATE.grad_enabled], slots)
        done = False
        for i, name in slots:
            a, b = old[i], new[i]
            if (a != b and name not in self._static and name not in self._dynamic
                    and type(a) is tuple and len(a) == 2 and a[0] in _NUMBERS and a[0] is b[0]):
                self._dynamic[name] = f"its value changed between calls ({a[1]!r} -> {b[1]!r})"
                msg = (f"{self.name}: argument {name} ({a[0].__name__}) {self._dynamic[name]}: "
                       "traced again with it as a 0-d input of the compiled program")
                self._events.append(msg)
                log("recompiles", msg)
                done = True
        return done

    def _flatten_one(self, a: Any, name: str, flat: list[Any], names: list[str], key: list[Any],
                     slots: list[tuple[int, str]] | None) -> None:
        if type(a) in _NUMBERS:
            if self._dynamic and name in self._dynamic:  # a program input: keyed by its type
                flat.append(a)
                names.append(name)
                key.append((type(a), "input"))
                return
            if slots is not None:
                slots.append((len(key), name))
        _flatten(a, name, flat, names, key)

    def _give_up(self) -> None:
        self._gave_up = True
        why = self._changes.most_common(1)
        reason = why[0][0] if why else "guards kept failing"
        msg = (f"tracejit: {self.name} was traced {self._stats['traces']} times (max_traces="
               f"{self.max_traces}); it now runs eagerly. The guard that kept changing: "
               f"{reason}")
        self._events.append(msg)
        log("recompiles", msg)
        _warn(msg)

    def _trace(self, k: tuple, flat: list[Any], names: list[str], args: tuple, kwargs: dict,
               undo: UndoLog | None = None) -> tuple[Any, Entry | None]:
        """Trace a call (running it eagerly) and keep its entry if it can be reused. Returns
        the call's result and the entry. With `undo` (an inspection: ir/source/explain on
        inputs not seen yet) the tracer records into it what it changes, and an entry that is
        not kept (a graph break under fallback=False, new tensors stored into Python state) is
        still made and returned, for printing."""
        tracer = Tracer(self.name, _tensor_names(self.fn, args))
        tracer.undo = undo
        scal = {i: ScalarArg(n) for i, (a, n) in enumerate(zip(flat, names))
                if type(a) in _NUMBERS}  # (in flat only when they are inputs)
        proxies = tracer.add_inputs(flat, names, scal)
        if proxies:
            args, kwargs = self._with_proxies(args, kwargs, {names[i]: p for i, p in
                                                              proxies.items()})
        held = [a for a in flat if not isinstance(a, (Tensor, int, float))]  # keyed by id
        for a in held:
            if hasattr(a, "named_modules") and hasattr(a, "_parameters"):
                tracer.use_module(a)  # a module argument: its attributes are guarded too
        owner = self.fn if self._is_module else getattr(self.fn, "__self__", None)
        if hasattr(owner, "_parameters") and hasattr(owner, "named_modules"):
            tracer.use_module(owner)  # the jitted module, or the module of a bound method
        n = self._stats["traces"] + 1
        if n > 1:
            log("recompiles", f"{self.name}: tracing again ({n}), at {user_location()}")
        STATE.tracer = tracer
        try:
            with PythonStateWatcher(tracer, self.fn):
                out = self.fn(*args, **kwargs)
        except BaseException as exc:
            if scal:  # (maybe code that wants a real int or float): guards from now on
                self._keep_guards(scal.values(), f"the call raised {type(exc).__name__} "
                                  "while it was a traced input")
            raise
        finally:
            STATE.tracer = None
        # counted only once the function returned: a call that raises is not a (re)trace
        self._stats["traces"] = n
        result = tracer.finish(out)
        if scal:
            out = plain(out, "returned")
            steered = [a for a in scal.values() if a.steered]
            if steered:  # this trace holds for its values only: it is dropped
                self._keep_guards(steered, "")
                if undo is None:
                    return out, None
                entry = Entry(result, run_pipeline(result.graph), held=held)
                entry.notes.append("not cached: a Python number traced as an input steered "
                                   "the trace; it is a guard from now on")
                return out, entry
        backward = self._trace_backward(tracer, result, out) if STATE.grad_enabled else None
        if result.breaks:
            # (a CUDA trace runs eagerly at its breaks: the lazy replay's segments are
            # compiled for the CPU)
            split = self.fallback and not (self.check or get_flag("check")) and \
                not _cuda_graph(result.graph)
            self._record_breaks(result, split)
            entry = Entry(result, result.graph, failed="" if split else "graph break", held=held,
                          lazy=split)
            if not self.fallback:
                if undo is not None:
                    return out, entry  # shown, not kept: a call raises
                raise RuntimeError(f"tracejit: {self.name} cannot be compiled (fallback=False): "
                                   + "; ".join(map(str, result.breaks)))
            self._entries.setdefault(k, []).append(entry)
            return out, entry
        keep = _alive_ids(out, result, tracer)
        escaped = tracer.escaped(out, keep)
        if escaped:  # maybe only garbage in a reference cycle: collect, then look again
            gc.collect()
            escaped = tracer.escaped(out, keep)
        if escaped:
            # the function stored new tensors into Python state (an optimizer's first step):
            # this trace cannot be replayed; the next call traces again
            note = (f"trace {self._stats['traces']} stored {len(escaped)} new tensor(s) into "
                    f"Python state ({escaped[0]}, ...); traced again on the next call")
            self._events.append(note)
            log("recompiles", f"{self.name}: {note}")
            if undo is None:
                return out, None
            entry = Entry(result, run_pipeline(result.graph), backward=backward, held=held)
            entry.notes.append(f"not cached: this trace stored {len(escaped)} new tensor(s) "
                               f"into Python state ({escaped[0]}, ...), so a call traces again")
            return out, entry
        graph = run_pipeline(result.graph)
        entry = Entry(result, graph, backward=backward, held=held)
        entry = self._merge_paths(k, entry)
        log("ir", f"{self.name}:\n{print_graph(entry.graph)}")
        return out, entry

    def _merge_paths(self, k: tuple, entry: Entry) -> Entry:
        """Keep a new entry under key `k`: merged with an entry of the key that went the other
        way at one of its branches, when the two can be one program (trace/merge.py: the
        graph then holds a cond, and calls alternating between the paths run one compiled
        entry), else beside them, guarded by its path, with why not in its notes."""
        from .trace.merge import merge_traces, part_at

        entries = self._entries.setdefault(k, [])

        def mergeable(e: Entry) -> bool:
            return bool(e.graph.checks) and not (e.lazy or e.failed or e.backward is not None)

        if mergeable(entry):
            for n in range(len(entries) - 1, -1, -1):
                old = entries[n]
                if not mergeable(old) or part_at(old.trace, entry.trace) is None:
                    continue  # (the same path under other guards: nothing to merge)
                got = merge_traces(old.trace, entry.trace)
                if isinstance(got, str):
                    note = f"not merged with the entry of the other path: {got}"
                    entry.notes.append(note)
                    self._events.append(f"{self.name}: paths kept as guarded entries: {got}")
                    continue
                merged = Entry(got, run_pipeline(got.graph), held=old.held + entry.held)
                merged.notes.append("merged paths: the branch" + (
                    "es" if len(got.merged) > 1 else "") + " at " + ", ".join(got.merged) +
                    " in one program (a cond region each)")
                self._events.append(f"{self.name}: merged two paths at {got.merged[-1]} into "
                                    "one entry with a cond")
                log("recompiles", self._events[-1])
                del entries[n]
                return self._merge_paths(k, merged)  # (it may merge again, one level up)
        if entry.trace.merged:
            # first: the key's hot entry from now on (the entries it came from are gone; any
            # left were traced under other guards, say a .grad still None)
            entries.insert(0, entry)
        else:
            entries.append(entry)
        return entry

    def _trace_backward(self, tracer: Tracer, result: TraceResult, out: Any) -> Any:
        """Capture the backward of outputs that require grad as a second graph (so a jitted
        forward used from eager code is differentiable). Adds the values it needs to the
        forward graph's outputs."""
        from .autograd import grad
        from .runtime.backward import BackwardInfo, leaf_sources
        from .trace.sources import ArgSource

        if result.breaks:
            return None
        spec_out = [s for s in _spec_leaves(result.out_spec) if s[0] == "t"]
        g = result.graph
        outs_t = [(i, _find_tensor(out, g.outputs[i], tracer)) for _, i in spec_out]
        diff = [(i, t) for i, t in outs_t if t is not None and t._requires_grad and
                t._grad_fn is not None]
        leaves = leaf_sources(result.params)
        if not diff or not leaves:
            return None
        bt = Tracer(self.name + "_backward")
        bt.parent = tracer
        gos = []
        for k, (_, t) in enumerate(diff):
            go = Tensor._make(np.ones(t.shape, t.dtype.np), t.dtype)
            bt.add_param(go, ArgSource(k, f"grad{k}"), f"grad{k}")
            gos.append(go)
        STATE.tracer = bt
        try:
            grads = grad([t for _, t in diff], [t for t, _ in leaves], gos, retain_graph=True,
                         allow_unused=True)
        except RuntimeError:
            return None  # the graph was freed inside the function (a training step)
        finally:
            STATE.tracer = None
        bres = bt.finish(tuple(grads))
        if bres.breaks:
            return None
        bg = bres.graph
        outputs = []
        for kind, x in bres.out_spec[1]:
            if kind == "t":
                outputs.append(bg.outputs[x])
            elif kind == "p":
                outputs.append(next(p.value for p in bres.params if p.source is x))
            else:
                outputs.append(None)
        fwd_outputs = list(g.outputs)
        saved: list[tuple[str, Any]] = []
        fparams = [p.value for p in result.params]
        parent_of = {bv: fv for fv, bv in bt.from_parent}
        for p in bres.params[len(diff):]:
            fv = parent_of.get(p.value)
            if fv is None:
                saved.append(("ref", p.source))
            elif fv in fparams:
                saved.append(("param", fparams.index(fv)))
            else:
                if fv not in fwd_outputs:
                    fwd_outputs.append(fv)
                saved.append(("out", fwd_outputs.index(fv)))
        result.graph = g.replace(outputs=tuple(fwd_outputs))
        keep = [o for o in outputs if o is not None]
        bgraph = run_pipeline(bg.replace(outputs=tuple(keep)))
        return BackwardInfo(bgraph, [i for i, _ in diff], saved, [s for _, s in leaves],
                            leaf_map=[None if o is None else keep.index(o) for o in outputs],
                            param_sources=[p.source for p in result.params])

    def _with_proxies(self, args: tuple, kwargs: dict, by_name: dict[str, Any]) -> tuple:
        argnames = self._argnames
        new_args = tuple(
            by_name.get(argnames[i] if i < len(argnames) else f"arg{i}", a)
            if type(a) in _NUMBERS else a for i, a in enumerate(args))
        new_kwargs = {k: by_name.get(k, a) if type(a) in _NUMBERS else a
                      for k, a in kwargs.items()}
        return new_args, new_kwargs

    def _keep_guards(self, scalars: Any, why: str) -> None:
        """These arguments' values steered a trace: they are guards on their value again."""
        for a in scalars:
            self._dynamic.pop(a.name, None)
            reason = why or "its value steered the trace: " + "; ".join(a.steered[:3])
            self._static[a.name] = reason
            msg = f"{self.name}: argument {a.name} stays a guard on its value ({reason})"
            self._events.append(msg)
            log("recompiles", msg)

    def _record_breaks(self, result: TraceResult, split: bool) -> None:
        for b in result.breaks:
            text = f"graph break in {self.name} at {b.loc}: {b.reason}"
            if text not in self._warned:
                self._warned.add(text)
                self._events.append(text)
                log("graph_breaks", text)
                _warn(f"tracejit: {text}; " + (
                    "from the next call the function runs as a lazy replay, compiled in "
                    "segments around its breaks" if split else
                    "with fallback=False a call raises" if not self.fallback else
                    "on CUDA it runs eagerly (CUDA graphs are not split into segments)"
                    if _cuda_graph(result.graph) else
                    "check mode runs it eagerly (check mode does not split graphs)"))

    def _run(self, e: Entry, flat: list[Any], args: tuple, kwargs: dict) -> Any:
        """Run an entry that is not compiled yet (compiling it), failed, or in check mode.
        Returns MISSED, having committed nothing, when the call takes another branch."""
        if e.failed:
            self._stats["fallbacks"] += 1
            return self.fn(*args, **kwargs)
        if e.program is None:
            self._compile(e)
            if e.failed:
                self._stats["hits"] += 1
                self._stats["fallbacks"] += 1
                return self.fn(*args, **kwargs)
        self._stats["hits"] += 1
        e.hits += 1
        if self.check or get_flag("check"):
            from .runtime.check import run_checked

            r = run_checked(e, flat)
        else:
            r = e.run(flat)
        if r is MISSED:  # not this entry's path: not a hit
            self._stats["hits"] -= 1
            e.hits -= 1
        return r

    def _compile(self, e: Entry) -> None:
        from .codegen.cpu import compile_graph
        from .codegen.lower import UnsupportedError
        from .cuda.program import JitCudaProgram, on_cuda

        try:  # CUDA tensors: the kernel IR rendered as numba.cuda kernels (cuda/program.py)
            prog = JitCudaProgram(e.graph) if on_cuda(e.graph) else compile_graph(e.graph)
        except UnsupportedError as exc:
            e.failed = f"no compilation rule: {exc}"
            text = f"graph break in {self.name}: {exc}"
            self._events.append(text)
            log("graph_breaks", text)
            _warn(f"tracejit: {text}; it runs eagerly")
            return
        e.program = prog
        e.source_text = prog.source
        e.compiled_from_disk = prog.from_disk
        if not prog.from_disk:
            self._stats["compiles"] += 1
        log("cache", f"{self.name}: {'loaded from disk' if prog.from_disk else 'compiled'} "
            f"{prog.name}")
        log("code", f"{self.name}:\n{prog.source}")

    # ---- introspection -----------------------------------------------------------------------
    def _entry_for(self, args: tuple, kwargs: dict) -> Entry:
        """The entry these inputs run (guards checked as a call checks them); inputs not seen
        yet are traced now (`_inspect`), as `jax.jit(f).lower(x)` does."""
        flat: list[Any] = []
        names: list[str] = []
        key: list[Any] = [STATE.grad_enabled]
        self._flatten_args(args, kwargs, flat, names, key)
        k = tuple(key)
        for e in self._entries.get(k, []):
            if e.guards_hold(flat) is None and self._takes_path(e, flat):
                return e
        return self._inspect(k, flat, names, args, kwargs)

    @staticmethod
    def _takes_path(e: Entry, flat: list[Any]) -> bool:
        """Would these inputs go down `e`'s branches? Asked of the reference interpreter,
        which writes nothing (a call down another path may fail inside it: not this path)."""
        if not e.graph.checks:
            return True
        from .ir.interpret import interpret

        try:
            with np.errstate(all="ignore"):
                outs, _ = interpret(e.graph, e.gather(flat))
        except Exception:
            return False
        return e.failed_check(outs) < 0

    def _inspect(self, k: tuple, flat: list[Any], names: list[str], args: tuple,
                 kwargs: dict) -> Entry:
        """Trace for ir()/source()/explain() without changing the caller's state.

        Tracing runs the function eagerly (that is how tracejit captures it), so a training
        step really computes its loss, its gradients and its update here. Whatever that
        changes in state tracejit can see is put back afterwards, even if the function raises:
        the contents of every tensor that existed before and was written in place (parameters,
        buffers, optimizer moments), with its version counter; every `.grad` assigned; the
        per-parameter state, param groups and attributes of the optimizers and learning-rate
        schedulers the function can reach (its arguments, closure, globals and bound object),
        so Adam's lazily created moments are gone again; and tracejit's random generators. The
        call's result is dropped. Other Python side effects (a print, a list appended to, a
        counter in your own object) happen once, as they do while JAX traces.

        The entry is kept, exactly as a first call would keep it, when it can be reused: the
        state is back to what its guards describe, so the next real call with these inputs
        runs it without tracing again (and compiles it: it is then met for the second time)."""
        if STATE.tracer is not None:
            raise RuntimeError(f"tracejit: {self.name}.ir()/source()/explain() cannot trace "
                               "inside another traced function")
        undo = UndoLog()
        saved = _PythonState(self.fn, flat)
        try:
            _, entry = self._trace(k, flat, names, args, kwargs, undo=undo)
        finally:
            undo.restore()
            saved.restore()
        assert entry is not None
        return entry

    def ir(self, *args: Any, **kwargs: Any) -> str:
        """The optimised IR for these inputs, as text, with the buffer plan it compiles with,
        then the kernel IR of each fused group and reduction (`kernel %5`: the node whose
        first result is %5).
        Inputs not seen yet are traced first, leaving your tensors as they were (`_inspect`)."""
        from .ir.plan import make_plan
        from .kir.lower import format_graph_kernels

        e = self._entry_for(args, kwargs)
        g = e.graph
        plan = make_plan(g)
        text = print_graph(g, plan=plan)
        kernels = format_graph_kernels(g, plan)
        if kernels:
            text += "\n" + kernels.rstrip("\n")
        notes = [f"# graph break at {b.loc}: {b.reason}" for b in e.breaks] + \
            [f"# {n}" for n in e.notes]
        return "\n".join([text, *notes])

    def source(self, *args: Any, **kwargs: Any) -> str:
        """The generated Numba source for these inputs (compiling it if needed): the driver,
        then every kernel it calls, each under a `# ---- kernel NAME` header. Inputs not seen
        yet are traced first, as ir() does."""
        from .runtime import cache

        e = self._entry_for(args, kwargs)
        if e.lazy:
            return self._segment_sources()
        if e.program is None and not e.failed:
            self._compile(e)
        if not e.source_text:
            return f"# not compiled: {e.failed}"
        parts = [e.source_text.rstrip("\n") + "\n"]
        for name in getattr(e.program, "kernels", None) or ():
            text = cache.kernel_source(name)
            parts.append(f"# ---- kernel {name} " + "-" * max(0, 80 - len(name) - 15) + "\n"
                         + (text.rstrip("\n") + "\n" if text is not None
                            else "# (source not registered)\n"))
        return "\n\n".join(parts)

    def profile(self, *args: Any, calls: int = 20, show: bool = True,
                **kwargs: Any) -> Profile:
        """Run the compiled program for these inputs `calls` times (after one warm-up call)
        through an instrumented copy of its driver, and print (unless `show=False`) and return
        where a call's time goes: each kernel, BLAS call and driver-level op with its median time,
        share of the call and bytes moved, and the runtime's parts (key and guards, gather,
        finish). The calls really run, as `calls + 1` ordinary calls would: a training step
        trains. Inputs not seen yet are traced first, as ir() does. (`calls` and `show` are
        taken by profile, not passed on to the function.)"""
        from .runtime.profile import profile_entry

        e = self._entry_for(args, kwargs)
        if e.program is None and not e.failed:
            self._compile(e)
        if e.program is None:
            raise RuntimeError(f"tracejit: {self.name} is not compiled for these inputs "
                               f"({e.failed or 'no program'}); nothing to profile")

        def flat_of() -> list[Any]:
            flat: list[Any] = []
            self._flatten_args(args, kwargs, flat, [], [STATE.grad_enabled])
            return flat

        prof = profile_entry(e, flat_of, max(1, calls))
        if show:
            print(prof.table())
        return prof

    def _segment_sources(self) -> str:
        """source() of a function run as a lazy replay: each compiled segment's driver."""
        parts = []
        for i, seg in enumerate(self._replay.segments.values()):
            head = f"# ---- segment {i}, ended by {_ended_by(seg)}"
            parts.append(head + "\n" + (seg.program.source.rstrip("\n") if seg.program else
                                        f"# not compiled: {seg.failed}"))
        return "\n\n".join(parts) or ("# a lazy replay around graph breaks: no segment compiled "
                                       "yet (each compiles the second time it is met)")

    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        """What @jit did with this function. Given inputs, they are traced first if not seen
        yet (as ir() does) and their entry is marked."""
        entry = self._entry_for(args, kwargs) if args or kwargs else None
        return Explanation(self, args, kwargs, entry)


class _PythonState:
    """Python-side state an inspection trace may change that tracejit knows how to put back:
    the optimizers and learning-rate schedulers a function can reach (its arguments, the
    object it is bound to, its closure and the globals it names, and the attributes of plain
    objects among those), and random generators (the default one, and those passed in)."""

    def __init__(self, fn: Any, flat: list[Any]) -> None:
        from .creation import Generator, default_generator
        from .optim.lr_scheduler import LRScheduler
        from .optim.optimizer import Optimizer

        kinds = (Optimizer, LRScheduler)
        found: dict[int, Any] = {}
        gens: dict[int, Any] = {id(default_generator): default_generator}

        def visit(obj: Any, depth: int) -> None:
            if isinstance(obj, kinds):
                found.setdefault(id(obj), obj)
                if isinstance(obj, LRScheduler):
                    visit(obj.optimizer, depth)
            elif isinstance(obj, Generator):
                gens.setdefault(id(obj), obj)
            elif depth <= 0 or isinstance(obj, (Tensor, str, bytes, int, float, type,
                                                types.ModuleType)):
                return
            elif isinstance(obj, (list, tuple)):
                for x in obj[:_MAX_ATTRS]:
                    visit(x, depth - 1)
            elif isinstance(obj, dict):
                for x in list(obj.values())[:_MAX_ATTRS]:
                    visit(x, depth - 1)
            elif _contents_type(type(obj)):
                d = getattr(obj, "__dict__", None)
                if type(d) is dict and len(d) <= _MAX_ATTRS:
                    for x in d.values():
                        visit(x, depth - 1)

        roots: list[Any] = list(flat)
        target = getattr(fn, "__self__", None)
        if target is not None:
            roots.append(target)
            roots.extend(getattr(target, "__dict__", {}).values())
        code_fn = getattr(fn, "__func__", fn)
        glb = getattr(code_fn, "__globals__", {})
        code = getattr(code_fn, "__code__", None)
        if code is not None:
            roots.extend(glb[n] for n in code.co_names if n in glb)
            for cell in getattr(code_fn, "__closure__", None) or ():
                try:
                    roots.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
        for r in roots:
            visit(r, 2)
        self._objects = [(o, {k: _snap(v, 3) for k, v in vars(o).items()})
                         for o in found.values()]
        self._gens = [(g, g._seed, g._key._data.copy(), g._offset._data.copy())
                      for g in gens.values()]

    def restore(self) -> None:
        for o, attrs in self._objects:
            d = vars(o)
            for k in [k for k in d if k not in attrs]:
                del d[k]
            for k, s in attrs.items():
                d[k] = _unsnap(s)
        for g, seed, key, offset in self._gens:
            g._seed = seed
            g._key._data[...] = key  # in place: programs read these tensors
            g._offset._data[...] = offset


def _snap(v: Any, depth: int) -> tuple[Any, Any]:
    """(v, a copy of its contents, `depth` levels of dicts and lists down)."""
    if depth and isinstance(v, dict):
        return v, [(k, _snap(x, depth - 1)) for k, x in v.items()]
    if depth and isinstance(v, list):
        return v, [_snap(x, depth - 1) for x in v]
    return v, None


def _unsnap(s: tuple[Any, Any]) -> Any:
    """Put the contents back into the same objects (others may hold them: an optimizer's
    param group, a parameter's state dict)."""
    v, inner = s
    if inner is None:
        return v
    if isinstance(v, dict):
        items = [(k, _unsnap(x)) for k, x in inner]
        v.clear()
        v.update(items)
    else:
        v[:] = [_unsnap(x) for x in inner]
    return v


class Explanation:
    """What @jit did with a function: guards, graph breaks, fused kernels, fallbacks and what
    changed between traces. Printable."""

    def __init__(self, jf: JitFunction, args: tuple, kwargs: dict,
                 entry: Entry | None = None) -> None:
        self.info = jf.cache_info()
        self.entry = entry  # the entry of the inputs explain() was given (None without)
        self.events = list(jf._events)
        self.changes = jf._changes.most_common()
        self.entries = [e for es in jf._entries.values() for e in es]
        self.cached = len(self.entries)
        if entry is not None and not any(e is entry for e in self.entries):
            self.entries.append(entry)  # traced for inspection and not cached (see its note)
        self.graph_breaks = [b for e in self.entries for b in e.breaks]
        # Python number arguments: name -> why it is a 0-d input / why it stays a guard
        self.scalar_inputs = dict(jf._dynamic)
        self.scalar_guards = dict(jf._static)
        self.name = jf.name
        r = jf._replay
        self.segments = list(r.segments.values())
        # breaks the lazy replay ran (reason, file:line) -> how many times
        self.segment_breaks = dict(r.breaks)
        self.replayed = r.calls
        self.fused = [
            (n.attrs.get("index", 0), [m.name for m in n.attrs["body"].nodes], n.loc)
            for e in self.entries for n in walk(e.graph.nodes) if n.op is FUSED
        ]  # (those in loop bodies and branches too)

    def __str__(self) -> str:
        i = self.info
        c = self.cached
        lines = [f"tracejit.explain({self.name}): {c} cache entr"
                 f"{'y' if c == 1 else 'ies'}; hits={i.hits} misses={i.misses} "
                 f"traces={i.traces} compiles={i.compiles} fallbacks={i.fallbacks}"
                 + (f" segments={i.segments} replays={i.replays}" if i.replays else "")]
        for n, e in enumerate(self.entries):
            state = "compiled" if e.program else (
                "eager: " + e.failed if e.failed else
                "split at its graph breaks: runs as a lazy replay, in compiled segments"
                if e.lazy else "traced, not yet compiled")
            mark = "  <- these inputs" if e is self.entry else ""
            lines.append(f"entry {n}: {len(e.graph.nodes)} nodes, {state}{mark}")
            lines += [f"  note: {x}" for x in e.notes]
            if e.lazy:
                lines.append("  (no guards: its Python runs on every call)")
                continue
            lines += [f"  path: the branch at {c.loc} was {c.taken} (checked by the program; "
                      "the other way misses this entry)" for c in e.graph.checks]
            for g in e.trace.guards:
                lines.append(f"  guard: {g.describe()}")
            if e.program is not None and hasattr(e.program, "explain"):  # a CUDA program
                lines += [f"  {x}" for x in e.program.explain().splitlines()]
        if self.scalar_inputs or self.scalar_guards:
            lines.append("Python number arguments:")
            lines += [f"  {n}: a 0-d input of the compiled program ({why})"
                      for n, why in self.scalar_inputs.items()]
            lines += [f"  {n}: a guard on its value ({why})"
                      for n, why in self.scalar_guards.items()]
        if self.graph_breaks:
            lines.append("graph breaks:")
            lines += [f"  {b.loc}: {b.reason}" for b in self.graph_breaks]
        if self.replayed:
            n = sum(1 for s in self.segments if s.program)
            lines.append(f"segments (lazy replay, {self.replayed} calls; {n} compiled, each on "
                         "its second sighting):")
            for k, seg in enumerate(self.segments):
                state = "compiled" if seg.program else "interpreted: " + seg.failed
                lines.append(f"  segment {k}: {len(seg.graph.nodes)} nodes, {state}, ended by "
                             f"{_ended_by(seg)}, ran {seg.runs}x")
            lines.append("graph breaks met by the replay (each ends a segment):")
            lines += [f"  {loc}: {why} ({n}x)" for (why, loc), n in
                      self.segment_breaks.items()]
        if self.fused:
            lines.append("fused kernels:")
            lines += [f"  fused.{i}: {' ; '.join(m)}  # {loc}" for i, m, loc in self.fused]
        matmuls = _matmul_lines(self.entries)
        if matmuls:
            lines.append("matmuls (BLAS chosen by timing, tracejit/runtime/blas.py):")
            lines += matmuls
        if self.changes:
            lines.append("cache misses, by what changed:")
            lines += [f"  {n}x {what}" for what, n in self.changes]
        if self.events:
            lines.append("events:")
            lines += [f"  {e}" for e in self.events]
        return "\n".join(lines)

    __repr__ = __str__


def _cuda_graph(g: Any) -> bool:
    from .cuda.program import on_cuda

    return on_cuda(g)


def _ended_by(seg: SegmentEntry) -> str:
    return "the return" if seg.ended_by is None else f"{seg.ended_by} at {seg.loc}"


def _matmul_lines(entries: list[Entry]) -> list[str]:
    """For each 2-d matmul of a compiled entry: its shape and the BLAS chosen for it (with the
    measured times) by the calls made so far."""
    from .runtime import blas

    lines = []
    for k, e in enumerate(entries):
        if e.program is None or hasattr(e.program, "explain"):  # (CUDA: in its explain())
            continue
        for n in e.graph.nodes:
            if n.op.name != "matmul" or len(n.out.type.shape) != 2 or \
                    not all(hasattr(v, "type") for v in n.inputs):
                continue
            a, b = (getattr(v, "type") for v in n.inputs)  # noqa: B009 (Values, checked above)
            m, kk = a.shape
            nn = b.shape[1]
            head = f"  entry {k}, {n.loc}: "
            shape = f"{a.dtype.name} {m}x{kk} @ {kk}x{nn}"
            if getattr(e.program, "native", False):
                lines.append(f"{head}{shape}: np.dot inside the native njit driver (Numba's "
                             "BLAS)")
                continue
            if a.dtype.name not in ("float32", "float64"):
                continue
            found = blas.choices_for(a.dtype.np, m, nn, kk)
            if not found:
                lines.append(f"{head}{shape}: np.dot (no BLAS chosen: a zero dimension, an "
                             "unusual layout, or not called in this process yet)")
            lines += [head + c.describe() for c in found]
    return lines


def _tensor_names(fn: Any, args: tuple) -> dict[int, str]:
    """Readable names for tensors a function may lift: a module's parameters and buffers
    (its own, or of modules among the arguments, globals and closure), and global tensors."""
    names: dict[int, str] = {}

    def add(obj: Any, prefix: str) -> None:
        if isinstance(obj, Tensor):
            names.setdefault(id(obj), prefix)
        elif hasattr(obj, "named_parameters") and hasattr(obj, "named_buffers"):
            for n, t in list(obj.named_parameters()) + list(obj.named_buffers()):
                names.setdefault(id(t), f"{prefix}.{n}" if prefix else n)

    target = getattr(fn, "__self__", fn)
    add(target, "")
    for i, a in enumerate(args):
        add(a, f"arg{i}")
    code_fn = getattr(fn, "__func__", fn)
    glb = getattr(code_fn, "__globals__", {})
    code = getattr(code_fn, "__code__", None)
    if code is not None:
        for n in code.co_names:
            if n in glb:
                add(glb[n], n)
        for n, cell in zip(code.co_freevars, getattr(code_fn, "__closure__", None) or ()):
            try:
                add(cell.cell_contents, n)
            except ValueError:  # an empty cell
                pass
    return {k: "".join(c if c.isalnum() or c == "_" else "_" for c in v) for k, v in
            names.items()}


def spec_paths(spec: Any, path: str = "result") -> list[tuple[Any, str]]:
    """The leaves of a traced output structure (the tracer's tagged tuples) in order, each
    with its place in the result for messages (`result[0]['loss']`)."""
    kind, x = spec
    if kind in ("tuple", "list"):
        parts = [(s, f"{path}[{i}]") for i, s in enumerate(x)]
    elif kind == "namedtuple":
        parts = [(s, f"{path}[{i}]") for i, s in enumerate(x[1])]
    elif kind == "dict":
        parts = [(s, f"{path}[{k!r}]") for k, s in x]
    else:
        return [(spec, path)]
    return [leaf for s, q in parts for leaf in spec_paths(s, q)]


def _spec_leaves(spec: Any) -> list[Any]:
    return [leaf for leaf, _ in spec_paths(spec)]


def _find_tensor(out: Any, v: Any, tracer: Tracer) -> Tensor | None:
    stack = [out]
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            if tracer.env.get(id(o._data)) is v:
                return o
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return None


def _alive_ids(out: Any, result: TraceResult, tracer: Tracer) -> set[int]:
    """Tensors that may legitimately outlive the trace: the outputs, .grad writes, and what
    the outputs' autograd graphs saved."""
    ids: set[int] = set()
    stack = [out]
    nodes = []
    while stack:
        o = stack.pop()
        if isinstance(o, Tensor):
            ids.add(id(o))
            if o._grad_fn is not None:
                nodes.append(o._grad_fn)
            if o._base is not None:
                stack.append(o._base)  # a view keeps its base alive
        elif isinstance(o, (tuple, list)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    for gw in tracer.grad_writes.values():
        if gw.tensor is not None:
            ids.add(id(gw.tensor))
            if gw.tensor._base is not None:
                ids.add(id(gw.tensor._base))
    seen = set()
    while nodes:
        n = nodes.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        saved = list(n.saved[0]) if isinstance(n, OpNode) and n.saved is not None else []
        saved += list(getattr(getattr(n, "ctx", None), "_saved", ()) or ())
        for s in saved:
            t = getattr(s, "t", None)
            while t is not None:  # a saved view keeps its base alive too
                ids.add(id(t))
                t = t._base
        nodes.extend(nx for nx, _ in n.next_functions if nx is not None)
    return ids


def jit(fn: Callable | None = None, *, fallback: bool = True, check: bool = False,
        max_traces: int = 8) -> Any:
    """Compile `fn` (a function, bound method or nn.Module) by tracing it.

    >>> import tracejit as tj
    >>> @tj.jit
    ... def f(x):
    ...     return x * 2 + 1
    >>> f(tj.ones(3))
    tensor([3., 3., 3.])
    """
    if fn is None:
        return lambda f: JitFunction(f, fallback=fallback, check=check, max_traces=max_traces)
    return JitFunction(fn, fallback=fallback, check=check, max_traces=max_traces)
