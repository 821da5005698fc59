"""Stage 1: concrete tracing. While a @jit function runs eagerly, dispatch reports every op
here; the tracer builds the IR graph, lifts tensors it meets by identity, turns in-place
changes into effects and records guards and graph breaks.
Sees both sides (tensor and IR) by design, as only trace/ and jit.py do."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..dispatch import user_location
from ..ir.graph import Check, Const, Effect, Graph, Node, Value
from ..ops.registry import OpDef, TensorType
from ..ops.structural import CONSTANT
from ..tensor import Tensor
from .scalars import TracedScalar
from .sources import (
    ArgSource,
    AttrGuard,
    GradSource,
    Guard,
    ModuleVersionsGuard,
    NoneGuard,
    RefSource,
    ScalarArgSource,
    ScalarSource,
    Source,
    TensorMetaGuard,
    ValueGuard,
)


@dataclass
class GraphBreak:
    reason: str
    loc: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.reason}"


@dataclass
class Param:
    value: Value
    source: Source
    tensor: Any  # the object (kept alive while tracing)


@dataclass
class GradWrite:
    owner: Source
    tensor: Tensor | None  # what was assigned to .grad


@dataclass
class TraceResult:
    graph: Graph
    params: list[Param]
    guards: list[Guard]
    # .grad := the graph output at this index (or None); an index, not a Value, because the
    # optimised graph's outputs are other Values (CSE merges two zeroed gradients of one shape)
    grad_writes: list[tuple[Source, int | None]]
    # pytree: ("t", index into graph outputs) | ("p", Source) | ("c", value), in ("tuple",
    # [...]), ("list", [...]), ("dict", [(key, ...)]) or ("namedtuple", (its type, [...]))
    out_spec: Any
    breaks: list[GraphBreak]
    escaped: list[str] = field(default_factory=list)
    # how many nodes of the graph come before each check's branch (what two paths share)
    branch_at: list[int] = field(default_factory=list)
    # the branches merged into a cond (trace/merge.py), by their user's line
    merged: list[str] = field(default_factory=list)



def _shares(a: Any, b: Any) -> bool:
    """Do two tensors' storages overlap? NumPy arrays as np.may_share_memory says; a CUDA
    tensor's DeviceArray when both are views of one device buffer (never a host array)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.may_share_memory(a, b))
    buf = getattr(a, "buf", None)
    return buf is not None and buf is getattr(b, "buf", None)

class Tracer:
    lazy = False  # a lazy replay's segment (trace/lazy.py) says True: dispatch defers to it

    def __init__(self, name: str, names: dict[int, str] | None = None) -> None:
        self.name = name
        self.hints = names or {}  # id(tensor) -> a readable name for lifted tensors
        self.env: dict[int, Value] = {}  # id(ndarray) -> its current SSA value
        self.keep: list[Any] = []  # arrays kept alive so their ids stay unique
        self.nodes: list[Node] = []
        self.params: list[Param] = []
        self.param_of: dict[int, Param] = {}  # id(tensor object) -> Param
        self.initial: dict[int, Value] = {}  # id(ndarray) of a param -> its value at entry
        self.guards: list[Guard] = []
        self.breaks: list[GraphBreak] = []
        self.grad_writes: dict[int, GradWrite] = {}
        self.scalars: dict[tuple[int, Any], Tensor] = {}
        self._attr_guards: set[tuple[int, str]] = set()
        self.modules: dict[int, Any] = {}  # id -> nn.Module used (guarded by version)
        self._py_guards: set[Any] = set()  # keys of the Python-state guards already made
        self.views_of: dict[int, list[int]] = {}
        # id(array of a view made here) -> the array it was made from (not the tensor: holding
        # that would look like a tensor the trace stored into Python state)
        self.view_parent: dict[int, np.ndarray] = {}
        self.stale: set[int] = set()
        self.produced: list[weakref.ref] = []
        self.inner_ids: set[int] = set()  # arrays made inside regions (trace/regions.py)
        # a backward tracer reads the forward's values: (forward value, its param here)
        self.parent: Tracer | None = None
        self.from_parent: list[tuple[Value, Value]] = []
        # an inspection trace (jit's ir/source/explain on unseen inputs) keeps what it changes
        # in tensors that existed before it, to put back afterwards
        self.undo: UndoLog | None = None
        # branches on tensor values: (bool[] value, what bool() gave, the user's line)
        self.branches: list[tuple[Value, bool, str]] = []
        self.branch_at: list[int] = []  # len(self.nodes) at each branch

    # ---- values ------------------------------------------------------------------------------
    def _bind(self, arr: np.ndarray, v: Value) -> None:
        self.env[id(arr)] = v
        self.keep.append(arr)

    def add_param(self, t: Tensor, source: Source, name: str) -> Value:
        v = Value(t._type(), name)
        p = Param(v, source, t)
        self.params.append(p)
        self.param_of[id(t)] = p
        self._bind(t._data, v)
        self.initial[id(t._data)] = v
        return v

    def value_of(self, t: Tensor) -> Value:
        k = id(t._data)
        if k in self.stale:
            self.graph_break("read of a view whose base was changed in place")
        v = self.env.get(k)
        if v is None and self.parent is not None and k in self.parent.env:
            fv = self.parent.env[k]
            v = self.add_param(t, RefSource(t, f"saved{len(self.from_parent)}"),
                               f"saved{len(self.from_parent)}")
            self.from_parent.append((fv, v))
            return v
        if v is None:
            name = self.hints.get(id(t)) or f"l{len(self.params)}"
            v = self.add_param(t, RefSource(t, name), name)
            self.guards.append(TensorMetaGuard(self.params[-1].source, t._data.shape, t._dtype,
                                               type(t._data)))
        return v

    def _operand(self, a: Any, types: Sequence[Any], cd: Any, i: int) -> Any:
        if isinstance(a, Tensor):
            return self.value_of(a)
        d = cd[i] if isinstance(cd, tuple) else cd
        if type(a) is TracedScalar:  # a 0-d graph value, converted as the number would be
            v = self.value_of(a.tensor)
            d = d or dt.scalar_dtype(a.value)
            if v.type.dtype is not d:
                from ..ops import REGISTRY as R

                c = Value(TensorType((), d, v.type.device))
                self.nodes.append(Node(R["cast"], (v,), (c,), {"dtype": d}, user_location()))
                v = c
            return v
        return Const(a, d or dt.scalar_dtype(a))

    def concrete_attrs(self, op: OpDef, attrs: dict[str, Any]) -> dict[str, Any]:
        """An op's attributes are static: a traced scalar among them is used by value."""
        def conc(k: str, v: Any) -> Any:
            if type(v) is TracedScalar:
                return v.concrete(f"passed to {op.name} as its {k}")
            if type(v) in (tuple, list) and any(type(x) is TracedScalar for x in v):
                return type(v)(conc(k, x) for x in v)
            return v

        for k, v in attrs.items():
            if type(v) is TracedScalar or (type(v) in (tuple, list)
                                           and any(type(x) is TracedScalar for x in v)):
                return {k: conc(k, v) for k, v in attrs.items()}
        return attrs

    # ---- hooks called from dispatch / tensor / autograd ---------------------------------------
    def record(self, op: OpDef, args: Sequence[Any], attrs: dict[str, Any], out: Tensor) -> None:
        if op.dynamic_shape:
            self.graph_break(f"{op.name} (its output shape depends on the data)")
        types = [a._type() if isinstance(a, Tensor) else a.value if type(a) is TracedScalar
                 else a for a in args]
        cd = op.compute_dtype(types) if op.compute_dtype is not None else None
        ins = tuple(self._operand(a, types, cd, i) for i, a in enumerate(args))
        v = Value(out._type())
        self.nodes.append(Node(op, ins, (v,), dict(attrs), user_location()))
        self._bind(out._data, v)
        self.produced.append(weakref.ref(out))
        if op.view and out._base is not None and args and isinstance(args[0], Tensor):
            self.views_of.setdefault(id(args[0]._data), []).append(id(out._data))
            self.view_parent[id(out._data)] = args[0]._data

    def constant(self, t: Tensor) -> None:
        v = Value(t._type())
        value = t._data.copy() if isinstance(t._data, np.ndarray) else t._data.host()
        self.nodes.append(Node(CONSTANT, (), (v,), {"value": value}, user_location()))
        self._bind(t._data, v)
        self.produced.append(weakref.ref(t))

    def snapshot(self, src: Tensor, copy: Tensor) -> None:
        """`copy` holds `src`'s current value (autograd keeping an in-place op's input)."""
        self._bind(copy._data, self.value_of(src))

    def alias(self, src: Tensor, out: Tensor) -> None:
        self.produced.append(weakref.ref(out))  # same array object: same value, nothing to do

    def mutate(self, target: Tensor, result: Tensor) -> None:
        if id(target._data) in self.view_parent:  # a view made by the trace: write its base
            self._mutate_view(target, result)
            return
        old = self.value_of(target)
        rv = self.value_of(result)
        if rv.type != old.type:
            rv = self._conform(rv, old.type)
        k = id(target._data)
        self.env[k] = rv
        self._invalidate_views(k, keep=-1)
        self._check_shared(target._data)

    def _invalidate_views(self, k: int, keep: int) -> None:
        """Views made from the array with id `k` (and views of those) no longer hold their
        traced value: a read of one is a graph break. `keep` is the one just written."""
        todo = list(self.views_of.pop(k, ()))
        while todo:
            vk = todo.pop()
            if vk != keep:
                self.stale.add(vk)
            todo.extend(self.views_of.pop(vk, ()))

    def _mutate_view(self, target: Tensor, result: Tensor) -> None:
        """An in-place write into a view made during the trace (`x[:, 0] += 1`, `x[1:3] = y`,
        `w.data[:2].mul_(0.5)`): the view's base gets a new value, the old one with the
        view's elements replaced (an `index_put` at the flat positions the view's strides
        name in the base's memory), so the base (and, for an input, the caller's tensor)
        sees the change as in eager mode."""
        from ..ops import REGISTRY as R

        arr = base = target._data  # base: the array the view was made from, through views
        while id(base) in self.view_parent:  # made here
            base = self.view_parent[id(base)]
        ka, kr = id(arr), id(base)
        item = arr.itemsize
        if (kr not in self.env or kr in self.stale or not base.flags.c_contiguous
                or arr.dtype != base.dtype or any(s % item for s in arr.strides)
                or not _shares(arr, base)):
            self.graph_break("in-place update of a view whose base the trace cannot follow (a "
                             "view of a non-contiguous tensor, of a view changed since, or one "
                             "that reinterprets its dtype); write the whole tensor or use an "
                             "out-of-place op")
            return
        old = self.value_of(target)
        rv = self.value_of(result)
        if rv.type != old.type:
            rv = self._conform(rv, old.type)
        self.env[ka] = rv
        bv = self.env[kr]
        if arr.size:
            if isinstance(arr, np.ndarray):
                offset = (arr.__array_interface__["data"][0]
                          - base.__array_interface__["data"][0]) // item
            else:  # a CUDA tensor's DeviceArray: offsets in elements of one buffer
                offset = arr.offset - base.offset
            flat = np.arange(base.size, dtype=np.int64)
            pos = np.lib.stride_tricks.as_strided(
                flat[offset:], arr.shape, tuple(s // item * 8 for s in arr.strides)).copy()
            loc = user_location()
            bt, n = bv.type, arr.size
            vflat = TensorType((base.size,), bt.dtype, bt.device)
            f = Value(vflat)
            self.nodes.append(Node(R["reshape"], (bv,), (f,), {"shape": (base.size,)}, loc))
            idx = Value(TensorType((n,), dt.int64, bt.device))
            self.nodes.append(Node(CONSTANT, (), (idx,), {"value": pos.reshape(n)}, loc))
            src = Value(TensorType((n,), bt.dtype, bt.device))
            self.nodes.append(Node(R["reshape"], (rv,), (src,), {"shape": (n,)}, loc))
            put = Value(vflat)
            self.nodes.append(Node(R["index_put"], (f, src, idx), (put,),
                                   {"dims": (0,), "accumulate": False}, loc))
            nb = Value(bt)
            self.nodes.append(Node(R["reshape"], (put,), (nb,), {"shape": bt.shape}, loc))
            self.env[kr] = nb
        self._invalidate_views(kr, keep=ka)
        self._check_shared(base)

    def _check_shared(self, arr: np.ndarray) -> None:
        if id(arr) in self.initial:
            for p in self.params:
                other = p.tensor._data
                if other is not arr and _shares(other, arr):
                    self.graph_break("in-place update of a tensor that shares memory with "
                                     "another input")

    def _conform(self, v: Value, t: TensorType) -> Value:
        """Cast/broadcast an in-place result to the target's type, as copyto does."""
        from ..ops import REGISTRY as R

        loc = user_location()
        if v.type.dtype is not t.dtype:
            c = Value(TensorType(v.type.shape, t.dtype, t.device))
            self.nodes.append(Node(R["cast"], (v,), (c,), {"dtype": t.dtype}, loc))
            v = c
        if v.type.shape != t.shape:
            e = Value(t)
            self.nodes.append(Node(R["expand"], (v,), (e,), {"shape": t.shape}, loc))
            v = e
        return v

    def branch(self, t: Tensor, taken: bool) -> None:
        """`bool(t)` of a one-element tensor gave `taken` (an `if`, `and`, `while`, or a
        conditional expression on a tensor): the trace is the path that value chose. The
        predicate, `t != 0` as bool() means it (NaN is true), becomes a bool[] result of the
        program, which checks it before committing anything (a `Check` of the graph)."""
        from ..ops import REGISTRY as R

        loc = user_location()
        if self.parent is not None:  # a jitted forward's captured backward: no runtime check
            self.graph_break("bool() of a tensor in the backward of a jitted function that "
                             "is differentiated outside it (a data-dependent branch)", loc)
            return
        v = self.value_of(t)
        if v.type.shape != ():
            r = Value(TensorType((), v.type.dtype, v.type.device))
            self.nodes.append(Node(R["reshape"], (v,), (r,), {"shape": ()}, loc))
            v = r
        if v.type.dtype is not dt.bool_:
            p = Value(TensorType((), dt.bool_, v.type.device))
            self.nodes.append(Node(R["ne"], (v, Const(0, v.type.dtype)), (p,), {}, loc))
            v = p
        self.branches.append((v, taken, loc))
        self.branch_at.append(len(self.nodes))

    def graph_break(self, reason: str, loc: str | None = None) -> None:
        loc = loc or user_location()
        if not any(b.reason == reason and b.loc == loc for b in self.breaks):
            self.breaks.append(GraphBreak(reason, loc))

    def _param_for_grad(self, t: Tensor) -> Param | None:
        """The param whose .grad is touched, lifting it first if the function has not used it
        yet (zero_grad runs before the forward): guards must describe the state at entry."""
        p = self.param_of.get(id(t))
        if p is None and id(t._data) not in self.env:
            self.value_of(t)
            p = self.param_of.get(id(t))
        return p

    def read_grad(self, t: Tensor) -> None:
        p = self._param_for_grad(t)
        if p is None or id(t) in self.grad_writes:
            return
        g = t._grad
        src = GradSource(p.source)
        if g is None:
            self.guards.append(NoneGuard(src))
        elif id(g._data) not in self.env:
            self.add_param(g, src, f"{p.value.name}_grad")
            self.guards.append(TensorMetaGuard(src, g._data.shape, g._dtype, type(g._data)))

    def before_write(self, t: Tensor) -> None:
        """`t`'s storage is about to be written in place (called before the write)."""
        if self.undo is not None:
            self.undo.before_write(t, self)

    def write_grad(self, t: Tensor, value: Tensor | None) -> None:
        p = self._param_for_grad(t)
        if p is None:
            return
        if self.undo is not None:
            self.undo.before_grad_write(t)
        if value is not None:
            self.value_of(value)
        self.grad_writes[id(t)] = GradWrite(p.source, value)

    def lift_scalar(self, container: Any, key: Any, v: Any) -> Tensor:
        k = (id(container), key)
        t = self.scalars.get(k)
        if t is None:
            d = dt.float64 if isinstance(v, float) else dt.int64
            t = Tensor._make(np.array(v, d.np), d)
            self.add_param(t, ScalarSource(container, key, d), str(key))
            self.scalars[k] = t
        return t

    def guard_value(self, container: Any, key: Any, v: Any) -> None:
        self.guards.append(ValueGuard(container, key, v))

    def guard_attr(self, obj: Any, attr: str, v: Any) -> None:
        k = (id(obj), attr)
        if k not in self._attr_guards:
            self._attr_guards.add(k)
            self.guards.append(AttrGuard(obj, attr, v))

    def use_module(self, m: Any) -> None:
        """`m` (an nn.Module) and its submodules were used: the entry is guarded on their
        attributes not being reassigned (a ModuleVersionsGuard made by finish())."""
        if id(m) in self.modules:
            return
        for sub in m.modules():
            self.modules.setdefault(id(sub), sub)

    def guard_python(self, key: Any, guard: Guard) -> None:
        """A guard on Python state the trace read (a global, a closure cell), once per key."""
        if key not in self._py_guards:
            self._py_guards.add(key)
            self.guards.append(guard)

    # ---- finishing ---------------------------------------------------------------------------
    def add_inputs(self, flat: list[Any], names: list[str],
                   scalars: dict[int, Any] | None = None) -> dict[int, TracedScalar]:
        """Parameters for the tensor arguments, and for the Python numbers at the indices in
        `scalars` (index -> its ScalarArg): 0-d int64/float64 inputs. Returns their
        TracedScalars, to pass to the function in place of the numbers."""
        out: dict[int, TracedScalar] = {}
        for i, (a, n) in enumerate(zip(flat, names)):
            if isinstance(a, Tensor) and id(a) not in self.param_of:
                self.add_param(a, ArgSource(i, n), n)
            elif scalars is not None and i in scalars:
                d = dt.float64 if isinstance(a, float) else dt.int64
                t = Tensor._make(np.array(a, d.np), d)
                self.add_param(t, ScalarArgSource(i, n, d), n)
                out[i] = TracedScalar(a, t, (scalars[i],))
        return out

    def finish(self, out: Any) -> TraceResult:
        outputs: list[Value] = []

        def spec(o: Any) -> Any:
            if isinstance(o, Tensor):
                p = self.param_of.get(id(o))
                v = self.value_of(o)
                if p is not None and v is p.value:
                    return ("p", p.source)
                outputs.append(v)
                return ("t", len(outputs) - 1)
            if isinstance(o, tuple) and hasattr(o, "_fields"):  # a named tuple (sort, max)
                return ("namedtuple", (type(o), [spec(x) for x in o]))
            if isinstance(o, (tuple, list)):
                return ("list" if isinstance(o, list) else "tuple", [spec(x) for x in o])
            if isinstance(o, dict):
                return ("dict", [(k, spec(x)) for k, x in o.items()])
            if type(o) is TracedScalar:  # a number returned: its value is part of the trace
                o.steer("returned by the function")
                return ("c", o.value)
            return ("c", o)

        out_spec = spec(out)
        if self.modules:  # versions as the trace leaves them (a forward may assign attributes)
            self.guards.append(ModuleVersionsGuard(list(self.modules.values())))
        effects = []
        for p in self.params:
            cur = self.env[id(p.tensor._data)]
            if cur is not p.value:
                effects.append(Effect(p.value, cur))
        grad_writes: list[tuple[Source, int | None]] = []
        for gw in self.grad_writes.values():
            if gw.tensor is None:
                grad_writes.append((gw.owner, None))
            else:
                outputs.append(self.value_of(gw.tensor))
                grad_writes.append((gw.owner, len(outputs) - 1))
        checks = []
        for v, taken, loc in self.branches:
            checks.append(Check(len(outputs), taken, loc))
            outputs.append(v)
        inputs = tuple(p.value for p in self.params if isinstance(p.source, ArgSource))
        lifted = tuple(p.value for p in self.params if not isinstance(p.source, ArgSource))
        order = [p for p in self.params if isinstance(p.source, ArgSource)] + \
                [p for p in self.params if not isinstance(p.source, ArgSource)]
        g = Graph(self.name, inputs, lifted, tuple(self.nodes), tuple(outputs), tuple(effects),
                  tuple(checks))
        return TraceResult(g, order, self.guards, grad_writes, out_spec, self.breaks,
                           branch_at=list(self.branch_at))

    def escaped(self, out: Any, keep_alive: set[int]) -> list[str]:
        """Tensors made during the trace that Python state still holds (an optimizer's new
        state, a cache): a compiled program would not recreate them, so the trace is not
        reusable. `keep_alive` holds ids of tensors legitimately alive (outputs, grads, saved
        for backward)."""
        found = []
        for r in self.produced:
            t = r()
            if t is not None and id(t) not in keep_alive and (id(t._data) in self.env
                                                              or id(t._data) in self.inner_ids):
                found.append(f"a {t.dtype.name} tensor of shape {list(t.shape)}")
        return found


class UndoLog:
    """What a trace changed in tensors that existed before it began, recorded just before each
    change, so `restore()` can put everything back: the storage of every tensor written in place
    (a copy taken before its first write, with its version counter and autograd fields), and
    every `.grad` assigned (the tensor it held before). Tensors the trace itself made are not
    recorded (nothing outside the trace can see their old values)."""

    def __init__(self) -> None:
        self.data: dict[int, tuple[Tensor, np.ndarray, np.ndarray, int, Any, int, bool]] = {}
        self.grads: dict[int, tuple[Tensor, Tensor | None]] = {}

    def before_write(self, t: Tensor, tracer: Tracer) -> None:
        root = t
        while root._base is not None:  # a view writes into its base's memory: keep the base
            root = root._base
        k = id(root._data)
        if k in self.data or (k in tracer.env and k not in tracer.initial):
            return  # recorded already, or made by the trace
        self.data[k] = (root, root._data, root._data.copy(), root._version.v, root._grad_fn,
                        root._out_nr, root._requires_grad)
        if root is not t:  # the view's own autograd fields change too
            self.data.setdefault(id(t._data), (t, t._data, t._data.copy(), t._version.v,
                                               t._grad_fn, t._out_nr, t._requires_grad))

    def before_grad_write(self, t: Tensor) -> None:
        self.grads.setdefault(id(t), (t, t._grad))

    def restore(self) -> None:
        for t, old in self.grads.values():
            t._grad = old
        for t, arr, copy, version, grad_fn, out_nr, requires_grad in reversed(
                list(self.data.values())):
            t._data = arr
            if isinstance(arr, np.ndarray):
                np.copyto(arr, copy, casting="no")
            else:  # a CUDA tensor's storage: copied back on the device
                from ..cuda.eager import copy_into

                copy_into(arr, copy)
            # the values are back as they were: so are the version counters, which a saved
            # tensor or a compiled backward compares
            t._version.v = version
            t._grad_fn, t._out_nr, t._requires_grad = grad_fn, out_nr, requires_grad
        self.data.clear()
        self.grads.clear()
