"""Lazy replay: how a function whose trace met a graph break is still compiled, in segments.
Each call runs the Python again with dispatch deferring ops into a `Segment`; whatever needs
real values (a graph break, a read of a tensor's data, an op without a compiled form, returning)
flushes it: the segment is looked up by its structure, compiled on its second sighting, run,
and its values land in the deferred tensors. Sees tensor and IR, as trace/ does."""

from __future__ import annotations

import os
import sys
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..dispatch import STATE
from ..errors import user_location
from ..ir.graph import Const, Effect, Graph, Node, Value
from ..ir.interpret import interpret
from ..ops.registry import Kind, OpDef, TensorType, norm_dim
from ..tensor import Size, Tensor, _raw

_set_raw: Any = Tensor.__dict__["_data"].__set__


class _Active:
    """The segment of the lazy replay running now (None outside one)."""

    __slots__ = ("segment",)

    def __init__(self) -> None:
        self.segment: Segment | None = None


ACTIVE = _Active()

_NEVER = ("tracejit: this tensor's value was never computed: the compiled segment that was to "
          "compute it raised an exception (see that exception); compute it again")


class _Deferred:
    """Mixin of a tensor whose value the pending segment computes, or of a real tensor with an
    in-place change pending. Reading `_data` (anything that needs the values) runs the segment
    first; the metadata methods below read the array's shape only. At the flush the tensor
    gets its real class back, so a materialised tensor costs nothing afterwards."""

    __slots__ = ()

    @property
    def _data(self) -> np.ndarray:
        seg = ACTIVE.segment
        if seg is not None:
            seg.flush("a read of a tensor's values")
        if isinstance(self, _Deferred):
            raise RuntimeError(_NEVER)
        return _raw(self)

    @_data.setter
    def _data(self, value: np.ndarray) -> None:
        seg = ACTIVE.segment
        if seg is not None:
            seg.flush("a tensor's storage replaced")
        if isinstance(self, _Deferred):
            self.__class__ = _REAL[type(self)]
        _set_raw(self, value)

    def _type(self: Any) -> TensorType:
        return TensorType(_raw(self).shape, self._dtype, self._device)

    @property
    def shape(self) -> Size:
        return Size(_raw(self).shape)

    def size(self, dim: int | None = None) -> Any:
        s = _raw(self).shape
        return Size(s) if dim is None else s[norm_dim("size", dim, len(s))]

    @property
    def ndim(self) -> int:
        return int(_raw(self).ndim)

    def dim(self) -> int:
        return int(_raw(self).ndim)

    def numel(self) -> int:
        return int(_raw(self).size)

    def stride(self: Any, dim: int | None = None) -> Any:
        a = _raw(self)
        s = tuple(x // self._dtype.itemsize for x in a.strides)
        return s if dim is None else s[norm_dim("stride", dim, a.ndim)]

    def is_contiguous(self) -> bool:
        return bool(_raw(self).flags.c_contiguous)

    def __len__(self) -> int:
        a = _raw(self)
        if not a.ndim:
            raise TypeError("len() of a 0-d tensor")
        return int(a.shape[0])

    def __iter__(self: Any) -> Any:
        n = len(self)
        return (self[i] for i in range(n))


_DEFERRED: dict[type, type] = {}  # a tensor class -> its deferred subclass
_REAL: dict[type, type] = {}  # and back


def _deferred_class(cls: type) -> type:
    d = _DEFERRED.get(cls)
    if d is None:
        # same layout as `cls` (no new slots), so `t.__class__ = d` and back is allowed
        d = type(f"Deferred{cls.__name__}", (_Deferred, cls), {"__slots__": ()})
        _DEFERRED[cls] = d
        _REAL[d] = cls
    return d


def _defer(t: Tensor) -> None:
    if not isinstance(t, _Deferred):
        t.__class__ = _deferred_class(type(t))


def _undefer(t: Tensor) -> None:
    if isinstance(t, _Deferred):
        t.__class__ = _REAL[type(t)]


_TENSOR_D = _deferred_class(Tensor)


def _owner(a: np.ndarray) -> Any:
    """The object owning an array's memory: arrays with different owners never overlap."""
    b = a.base
    while isinstance(b, np.ndarray):
        a, b = b, b.base
    return a if b is None else b


_COMPILABLE: dict[str, bool] = {}  # op name -> compilable (op names are unique)


def compilable(op: OpDef) -> bool:
    """Whether codegen has a form for `op` (a rule may still refuse some operands: then the
    segment runs in the interpreter)."""
    r = _COMPILABLE.get(op.name)
    if r is None:
        r = _COMPILABLE[op.name] = _compilable(op)
    return r


def _compilable(op: OpDef) -> bool:
    if op.dynamic_shape or op.kind is Kind.STRUCTURAL:
        return False
    if op.kind is Kind.ELEMENTWISE and op.scalar is not None:
        return True
    if op.kind is Kind.REDUCE and op.reduce is not None:
        return True
    return "cpu" in op.kernels


_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_user_file: dict[str, str | None] = {}  # co_filename -> its basename, or None if not the user's


def _location() -> str:
    """user_location(), memoised per file: it runs for every deferred op."""
    f: Any = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        base = _user_file.get(fn, "")
        if base == "":
            ab = os.path.abspath(fn)
            base = None if ("<frozen" in fn or ab.startswith(_PKG) or
                            os.path.basename(ab) in ("contextlib.py", "functools.py")) \
                else os.path.basename(fn)
            _user_file[fn] = base
        if base is not None:
            return f"{base}:{f.f_lineno}"
        f = f.f_back
    return "<unknown>"


# ---- the segment ---------------------------------------------------------------------------------


class Segment:
    """The ops deferred since the last flush: dispatch's hooks while a lazy replay runs (the
    Tracer's interface; what only tracing needs, guards and undo, does nothing here)."""

    lazy = True
    undo = None
    parent = None

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self._reset()

    def _reset(self) -> None:
        self.nodes: list[Node] = []
        self.env: dict[int, Value] = {}  # id(array) -> its current value
        # real tensors read: (value at entry, the array then, the tensor)
        self.params: list[tuple[Value, np.ndarray, Tensor]] = []
        self.param_of: dict[int, int] = {}  # id(array) -> index in params
        self.owners: list[int] = []  # id of the buffer owning each param's array
        # arrays this segment allocated for deferred results: id -> [array, weakrefs of the
        # tensor objects holding it]
        self.roots: dict[int, list[Any]] = {}
        self.views: list[weakref.ref] = []  # deferred results that are views
        self.view_arrays: list[np.ndarray] = []  # (their arrays, so ids stay unique)
        self.view_parent: dict[int, np.ndarray] = {}
        self.views_of: dict[int, list[int]] = {}
        self.stale: set[int] = set()
        self.pending: list[Tensor] = []  # real tensors written in place (deferred class)
        self.mutated: list[np.ndarray] = []  # their arrays
        self.scalars: dict[tuple[int, Any], Tensor] = {}
        # param index -> indices of the params written here whose memory it overlaps
        self.overlaps: dict[int, set[int]] = {}
        self.num: dict[Value, int] = {}  # value -> its number in the key
        self.key: list[Any] = []  # the structure key, a part per node
        self.mutated_roots: set[int] = set()  # id of the buffer owning each mutated array

    # ---- values -------------------------------------------------------------------------------
    def _add(self, n: Node) -> None:
        """Append a node, and its part of the segment's structure key (see `structure`)."""
        num = self.num
        self.nodes.append(n)
        self.key.append((n.op.name, tuple(num[i] if isinstance(i, Value) else
                                          (i.value, type(i.value), i.dtype) for i in n.inputs),
                         tuple(n.attrs.items()), n.outs[0].type))
        num[n.outs[0]] = len(num)

    def value_of(self, t: Tensor) -> Value:
        arr = _raw(t)
        v = self.env.get(id(arr))
        if v is None:
            if isinstance(t, _Deferred):  # deferred, but in no segment: its segment raised
                raise RuntimeError(_NEVER)
            v = Value(TensorType(arr.shape, t._dtype, t._device))
            self.num[v] = len(self.num)
            self.env[id(arr)] = v
            self.param_of[id(arr)] = len(self.params)
            self.params.append((v, arr, t))
            self.owners.append(id(_owner(arr)))
        return v

    def _must_flush(self, a: Tensor) -> bool:
        """Reading `a` needs the values computed first: a view made here whose base changed
        since, or a real tensor sharing memory with one written in place here."""
        arr = _raw(a)
        k = id(arr)
        if k in self.stale:
            return True
        if k not in self.env and self.mutated and id(_owner(arr)) in self.mutated_roots:
            return any(np.may_share_memory(arr, m) for m in self.mutated)
        return False

    # ---- hooks from dispatch, autograd, tensor ---------------------------------------------
    def defer(self, op: OpDef, args: Any, attrs: dict[str, Any], out_t: TensorType,
              cd: Any) -> Tensor | None:
        """Record `op` and return its deferred result; or flush and return None, for dispatch
        to compute it eagerly on real values (an op without a compiled form, or whose shape
        depends on the data)."""
        if not compilable(op):
            why = ("its output shape depends on the data" if op.dynamic_shape
                   else "it has no compiled form")
            self.flush(f"{op.name} ({why})")
            return None
        if self.stale or self.mutated:
            for a in args:
                if isinstance(a, Tensor) and self._must_flush(a):
                    self.flush("a read of a view whose base was changed in place")
                    break
        ins: list[Any] = []
        for i, a in enumerate(args):
            if isinstance(a, Tensor):
                ins.append(self.value_of(a))
            else:
                d = cd[i] if isinstance(cd, tuple) else cd
                ins.append(Const(a, d or dt.scalar_dtype(a)))
        src = args[0] if args and isinstance(args[0], Tensor) else None
        data: Any = None
        if op.view and src is not None:
            # a view: made on the operand's array (a placeholder or real memory), so it has
            # eager's layout and shares eager's memory
            base = _raw(src)
            data = op.eager(*[_raw(a) if isinstance(a, Tensor) else a for a in args], **attrs)
            if type(data) is not np.ndarray or data.dtype != out_t.dtype.np:
                data = None
            elif data is base:
                data = data.view()
        if data is not None and np.may_share_memory(data, base):
            out = Tensor._make(data, out_t.dtype)
            out.__class__ = _TENSOR_D
            out._version = src._version  # type: ignore[union-attr]
            out._base = src._base if src._base is not None else src  # type: ignore[union-attr]
            self.views.append(weakref.ref(out))
            self.view_arrays.append(data)
            self.views_of.setdefault(id(base), []).append(id(data))
            self.view_parent[id(data)] = base
        else:
            if data is None:
                data = np.empty(out_t.shape, out_t.dtype.np)  # a placeholder, never read
            out = Tensor._make(data, out_t.dtype)
            out.__class__ = _TENSOR_D
            self.roots[id(data)] = [data, [weakref.ref(out)]]
        v = Value(out_t)
        self._add(Node(op, tuple(ins), (v,), dict(attrs), _location()))
        self.env[id(data)] = v
        return out

    def alias(self, src: Tensor, out: Tensor) -> None:
        """`out` shares `src`'s array (detach, autograd's saved outputs)."""
        if not isinstance(src, _Deferred):
            return
        _defer(out)
        entry = self.roots.get(id(_raw(src)))
        if entry is not None:
            entry[1].append(weakref.ref(out))
        elif id(_raw(src)) in self.view_parent:
            self.views.append(weakref.ref(out))
        else:
            self.pending.append(out)

    def assign(self, target: Tensor, result: Tensor) -> None:
        """An in-place write (assign_inplace): deferred as a new value of the target's array
        (an effect, for a real tensor), or, where the write cannot be followed, run now."""
        ta = _raw(target)
        k = id(ta)
        if k in self.view_parent:
            if self._assign_view(target, result):
                return
        elif k in self.roots:
            self.env[k] = self._conform(self.value_of(result), self.value_of(target).type)
            self._invalidate_views(k, keep=-1)
            return
        elif id(_owner(ta)) not in self.mutated_roots or not any(
                m is not ta and np.may_share_memory(m, ta) for m in self.mutated):
            # inputs overlapping the target (a saved `w.t()` beside `w`) are read as they were
            # at the segment's start (from a copy, where the program writes the target in
            # place before their last read); read again after this write, they flush first
            old = self.value_of(target)
            ti = self.param_of[k]
            own, owners = id(_owner(ta)), self.owners
            for i, (_, a, _) in enumerate(self.params):
                if owners[i] == own and a is not ta and np.may_share_memory(a, ta):
                    self.stale.add(id(a))
                    self.overlaps.setdefault(i, set()).add(ti)
            self.env[k] = self._conform(self.value_of(result), old.type)
            self._invalidate_views(k, keep=-1)
            if not isinstance(target, _Deferred):
                _defer(target)
                self.pending.append(target)
            self.mutated.append(ta)
            self.mutated_roots.add(id(_owner(ta)))
            return
        self.flush("an in-place write the segment cannot follow")
        np.copyto(_raw(target), result._data, casting="unsafe")

    def _shares(self, arr: np.ndarray) -> bool:
        """`arr` overlaps another array this segment reads or writes (not itself)."""
        for _, a, _ in self.params:
            if a is not arr and np.may_share_memory(a, arr):
                return True
        return any(m is not arr and np.may_share_memory(m, arr) for m in self.mutated)

    def _assign_view(self, target: Tensor, result: Tensor) -> bool:
        """A write into a view made in this segment: its base gets a new value, the old one
        with the view's elements replaced (as Tracer._mutate_view). False: not followable."""
        from ..ops import REGISTRY as R
        from ..ops.structural import CONSTANT

        arr = base = _raw(target)
        while id(base) in self.view_parent:
            base = self.view_parent[id(base)]
        ka, kr = id(arr), id(base)
        item = arr.itemsize
        if (kr not in self.env or kr in self.stale or not base.flags.c_contiguous
                or arr.dtype != base.dtype or any(s % item for s in arr.strides)
                or not np.may_share_memory(arr, base) or
                (kr not in self.roots and self._shares(base))):
            return False
        old = self.value_of(target)
        rv = self._conform(self.value_of(result), old.type)
        self.env[ka] = rv
        bv = self.env[kr]
        if arr.size:
            offset = (arr.__array_interface__["data"][0]
                      - base.__array_interface__["data"][0]) // item
            flat = np.arange(base.size, dtype=np.int64)
            pos = np.lib.stride_tricks.as_strided(
                flat[offset:], arr.shape, tuple(s // item * 8 for s in arr.strides)).copy()
            loc = _location()
            bt, n = bv.type, arr.size
            vflat = TensorType((base.size,), bt.dtype, bt.device)
            f = Value(vflat)
            self._add(Node(R["reshape"], (bv,), (f,), {"shape": (base.size,)}, loc))
            idx = Value(TensorType((n,), dt.int64, bt.device))
            self._add(Node(CONSTANT, (), (idx,), {"value": pos.reshape(n)}, loc))
            src = Value(TensorType((n,), bt.dtype, bt.device))
            self._add(Node(R["reshape"], (rv,), (src,), {"shape": (n,)}, loc))
            put = Value(vflat)
            self._add(Node(R["index_put"], (f, src, idx), (put,),
                                   {"dims": (0,), "accumulate": False}, loc))
            nb = Value(bt)
            self._add(Node(R["reshape"], (put,), (nb,), {"shape": bt.shape}, loc))
            self.env[kr] = nb
        self._invalidate_views(kr, keep=ka)
        if kr not in self.roots:  # a real tensor's memory: an effect, pending
            i = self.param_of[kr]
            t = self.params[i][2]
            if not isinstance(t, _Deferred):
                _defer(t)
                self.pending.append(t)
            self.mutated.append(base)
            self.mutated_roots.add(id(_owner(base)))
        return True

    def _invalidate_views(self, k: int, keep: int) -> None:
        todo = list(self.views_of.pop(k, ()))
        while todo:
            vk = todo.pop()
            if vk != keep:
                self.stale.add(vk)
            todo.extend(self.views_of.pop(vk, ()))

    def _conform(self, v: Value, t: TensorType) -> Value:
        """Cast/broadcast an in-place result to the target's type, as copyto does."""
        from ..ops import REGISTRY as R

        if v.type == t:
            return v
        loc = _location()
        if v.type.dtype is not t.dtype:
            c = Value(TensorType(v.type.shape, t.dtype, t.device))
            self._add(Node(R["cast"], (v,), (c,), {"dtype": t.dtype}, loc))
            v = c
        if v.type.shape != t.shape:
            e = Value(t)
            self._add(Node(R["expand"], (v,), (e,), {"shape": t.shape}, loc))
            v = e
        return v

    def graph_break(self, reason: str, loc: str | None = None) -> None:
        self.flush(reason)

    def lift_scalar(self, container: Any, key: Any, v: Any) -> Tensor:
        k = (id(container), key)
        t = self.scalars.get(k)
        if t is None:
            d = dt.float64 if isinstance(v, float) else dt.int64
            t = self.scalars[k] = Tensor._make(np.array(v, d.np), d)
        return t

    def concrete_attrs(self, op: OpDef, attrs: dict[str, Any]) -> dict[str, Any]:
        return attrs

    def record(self, *a: Any) -> None:  # an op computed eagerly after a flush: a real value
        pass

    def _nothing(self, *a: Any, **kw: Any) -> None:
        pass

    # guards, undo and the trace's own bookkeeping: the Python runs on every call here
    constant = snapshot = mutate = before_write = read_grad = write_grad = _nothing
    guard_value = guard_attr = use_module = guard_python = _nothing

    # ---- the flush ------------------------------------------------------------------------------
    def flush(self, reason: str | None, is_break: bool = True) -> None:
        """Run what was deferred and put the values in place. `reason`: the break that needs
        them (None: the call returns)."""
        replay = self.replay
        if reason is not None and is_break:
            replay.breaks[(reason, user_location())] += 1
        if not self.nodes and not self.pending:
            self._reset()
            return
        outputs: list[Value] = []
        targets: list[tuple[np.ndarray, list[Tensor], bool]] = []
        # what only kept ids unique goes first, so the reference counts below are exact
        self.view_arrays.clear()
        self.view_parent.clear()
        for k, (ph, refs) in self.roots.items():
            live = [t for t in (r() for r in refs) if t is not None and _raw(t) is ph]
            # held by: the roots entry, `ph`, getrefcount's argument, and each live tensor
            others = sys.getrefcount(ph) - 3 - len(live)
            if not live and not others:
                continue  # dead: nothing reads it
            outputs.append(self.env[k])
            targets.append((ph, live, others == 0))
        effects = tuple(Effect(v0, self.env[id(arr)]) for v0, arr, _ in self.params
                        if self.env[id(arr)] is not v0)
        g = Graph(replay.name, tuple(p[0] for p in self.params), (), tuple(self.nodes),
                  tuple(outputs), effects)
        arrays = [p[1] for p in self.params]
        num = self.num
        key: Any = (tuple(p[0].type for p in self.params), tuple(self.key),
                    tuple(num[o] for o in outputs),
                    tuple((num[e.target], num[e.source]) for e in effects))
        try:
            hash(key)
        except TypeError:  # an unhashable attribute (an array): the slow, exact key
            key = structure(g)
        try:
            outs = replay.run_segment(g, key, arrays, reason, self.overlaps)
        except BaseException:
            self._abandon()
            raise
        used = {id(a if a.base is None else a.base) for a in arrays}
        for (ph, live, swap), o in zip(targets, outs):
            if type(o) is not np.ndarray or o.dtype != ph.dtype:
                o = np.asarray(o).astype(ph.dtype)
            if swap:  # only its tensors hold the placeholder: they take the result
                r = id(o if o.base is None else o.base)
                if r in used:  # (the same buffer as an input or another result: a copy)
                    o = o.copy()
                    r = id(o)
                used.add(r)
                for t in live:
                    _set_raw(t, o)
            else:  # views or aliases of it exist: the values go into the placeholder
                np.copyto(ph, o)
            for t in live:
                _undefer(t)
        self._finish()

    def _finish(self) -> None:
        for r in self.views:
            t = r()
            if t is not None:
                _undefer(t)
        for t in self.pending:
            _undefer(t)
        self._reset()

    def _abandon(self) -> None:
        """The segment raised: real tensors keep their values (no effect was written) and the
        deferred results stay deferred, so reading one raises instead of showing garbage."""
        for t in self.pending:
            _undefer(t)
        self._reset()


# ---- the replay ---------------------------------------------------------------------------------


@dataclass
class SegmentEntry:
    """One compiled segment, keyed by its structure."""

    graph: Graph  # optimised
    ended_by: str | None  # the break that ended it (None: the function's return)
    loc: str
    program: Any = None
    failed: str = ""  # why it runs in the interpreter
    runs: int = 0
    # param index -> the node whose kernel writes its effect in place (the buffer plan); and
    # param index -> the last node reading its buffer (directly or through a view)
    inplace_at: dict[int, int] = field(default_factory=dict)
    last_read: dict[int, float] = field(default_factory=dict)


@dataclass
class Replay:
    """The lazy replay of one jitted function: its segments, by structure, and its breaks."""

    name: str
    max_segments: int = 64
    segments: dict[Any, SegmentEntry] = field(default_factory=dict)
    seen_once: dict[Any, int] = field(default_factory=dict)
    breaks: Counter[tuple[str, str]] = field(default_factory=Counter)
    calls: int = 0
    compiles: int = 0
    interpreted: int = 0  # segment runs in the interpreter (first sightings, no compiled form)
    on_compile: Callable[[SegmentEntry], None] | None = None

    def call(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        self.calls += 1
        seg = Segment(self)
        prev, prev_active = STATE.tracer, ACTIVE.segment
        STATE.tracer, ACTIVE.segment = seg, seg
        try:
            try:
                out = fn(*args, **kwargs)
            except BaseException:
                # eager mode ran every op before the exception: so does this call
                seg.flush("an exception", is_break=False)
                raise
            seg.flush(None)
        finally:
            STATE.tracer, ACTIVE.segment = prev, prev_active
        return out

    def run_segment(self, g: Graph, key: Any, arrays: list[np.ndarray], reason: str | None,
                    overlaps: dict[int, set[int]]) -> list[Any]:
        """Run a flushed segment's graph (`key`: its structure) on `arrays` (its params);
        returns its outputs, with the effects written. `overlaps`: params that share memory
        with a written one."""
        e = self.segments.get(key)
        if e is None:
            if key not in self.seen_once or len(self.segments) >= self.max_segments:
                # the first sighting runs in the interpreter (as eager would): compiled on
                # reuse, as an entry is; a segment that differs on every call (a Python number
                # that changes baked into it) so never compiles
                if len(self.seen_once) >= 4 * self.max_segments:
                    self.seen_once.clear()
                self.seen_once[key] = 1
                return self._interpret(g, arrays)
            del self.seen_once[key]
            e = self._compile(g, reason)
            self.segments[key] = e
        e.runs += 1
        if e.program is None:
            return self._interpret(g, arrays)
        for b, written in overlaps.items():
            # the program writes `a` in place at node inplace_at[a]: a param overlapping it
            # and read at or after that node is passed as a copy of its values at the start
            if any(e.last_read.get(b, -1) >= e.inplace_at.get(a, 1 << 62) for a in written):
                arrays[b] = arrays[b].copy()
        outs, _ = e.program(arrays)
        return list(outs)

    def _interpret(self, g: Graph, arrays: list[np.ndarray]) -> list[Any]:
        self.interpreted += 1
        outs, effects = interpret(g, arrays)
        for e, x in zip(g.effects, effects):
            np.copyto(arrays[g.params.index(e.target)], x, casting="unsafe")
        return list(outs)

    def _compile(self, g: Graph, reason: str | None) -> SegmentEntry:
        from ..codegen.cpu import compile_graph
        from ..codegen.lower import UnsupportedError
        from ..ir.plan import last_reads, make_plan, roots
        from ..passes import run_pipeline

        graph = run_pipeline(g)
        e = SegmentEntry(graph, reason, user_location())
        plan = make_plan(graph)
        index = {v: i for i, v in enumerate(graph.params)}
        for r in plan.reuses:
            w = graph.nodes[r.node].inputs[r.operand]
            if r.effect and isinstance(w, Value) and w in index:
                e.inplace_at[index[w]] = r.node
        last = last_reads(graph, roots(graph))
        e.last_read = {index[v]: i for v, i in last.items() if v in index}
        try:
            e.program = compile_graph(graph)
        except UnsupportedError as exc:
            e.failed = f"no compilation rule: {exc}"
        else:
            if not e.program.from_disk:
                self.compiles += 1
        if self.on_compile is not None:
            self.on_compile(e)
        return e


def structure(g: Graph) -> tuple:
    """A hashable key of a segment's structure: what it computes, never which tensors (its
    inputs are passed by position). Python numbers and constants count by value."""
    num: dict[Value, int] = {}

    def ref(o: Any) -> Any:
        if type(o) is Const:
            return (o.value, type(o.value), o.dtype)
        return num[o]

    parts: list[Any] = []
    for v in g.params:
        num[v] = len(num)
        parts.append(v.type)
    for n in g.nodes:
        attrs = tuple((k, _hashable(x)) for k, x in n.attrs.items())
        parts.append((n.op.name, tuple(ref(i) for i in n.inputs), attrs,
                      tuple(o.type for o in n.outs)))
        for o in n.outs:
            num[o] = len(num)
    parts.append(tuple(ref(o) for o in g.outputs))
    parts.append(tuple((num[e.target], num[e.source]) for e in g.effects))
    return tuple(parts)


def _hashable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return (x.shape, x.dtype.str, x.tobytes())
    if isinstance(x, list):
        return tuple(_hashable(y) for y in x)
    try:
        hash(x)
    except TypeError:
        return repr(x)
    return x
