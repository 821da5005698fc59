"""Where a compiled program finds its parameters on each call (sources) and what must hold
for it to be reused (guards). Both are re-evaluated on every call, so they stay cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class Source:
    """How to find an object at call time, starting from the flattened arguments."""

    def get(self, flat: list[Any]) -> Any:
        raise NotImplementedError

    def emit(self, ns: dict[str, Any]) -> str:
        """A Python expression over `flat` (and names it adds to `ns`) that evaluates to
        `get(flat)`: `runtime/entry.py` compiles an entry's guards and gather into one
        function of such expressions."""
        return f"{bind(ns, self)}.get(flat)"

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class ArgSource(Source):
    index: int
    name: str

    def get(self, flat: list[Any]) -> Any:
        return flat[self.index]

    def emit(self, ns: dict[str, Any]) -> str:
        return f"flat[{self.index}]"

    def describe(self) -> str:
        return f"argument {self.name}"


@dataclass(frozen=True, eq=False)
class ScalarArgSource(ArgSource):
    """A Python int or float argument that is an input of the program (a 0-d tensor of
    `dtype`: int64 or float64), after its value changed between calls."""

    dtype: Any

    def describe(self) -> str:
        return f"argument {self.name} (a Python number, a 0-d {self.dtype.name} input)"


@dataclass(frozen=True, eq=False)
class RefSource(Source):
    """A tensor the function reached that was not an argument (a parameter, a global): held
    by identity, its current data read on every call."""

    obj: Any
    name: str

    def get(self, flat: list[Any]) -> Any:
        return self.obj

    def emit(self, ns: dict[str, Any]) -> str:
        return bind(ns, self.obj)

    def describe(self) -> str:
        return f"lifted tensor {self.name}"


@dataclass(frozen=True, eq=False)
class GradSource(Source):
    owner: Source

    def get(self, flat: list[Any]) -> Any:
        return self.owner.get(flat)._grad

    def emit(self, ns: dict[str, Any]) -> str:
        return f"{self.owner.emit(ns)}._grad"

    def describe(self) -> str:
        return f"{self.owner.describe()}.grad"


@dataclass(frozen=True, eq=False)
class ScalarSource(Source):
    """A number read anew on every call (an optimizer's learning rate)."""

    container: Any
    key: Any
    dtype: Any

    def get(self, flat: list[Any]) -> Any:
        return self.container[self.key]

    def emit(self, ns: dict[str, Any]) -> str:
        return f"{bind(ns, self.container)}[{bind(ns, self.key)}]"

    def describe(self) -> str:
        return f"value [{self.key!r}] of a {type(self.container).__name__}"


# ---- guards -------------------------------------------------------------------------------------


def bind(ns: dict[str, Any], obj: Any) -> str:
    """A name in `ns` for `obj` (one per object), for generated expressions."""
    for k, v in ns.items():
        if v is obj and k.startswith("_o"):
            return k
    name = f"_o{len(ns)}"
    ns[name] = obj
    return name


class Guard:
    def check(self, flat: list[Any]) -> bool:
        raise NotImplementedError

    def emit(self, ns: dict[str, Any]) -> str:
        """A Python expression over `flat` that is `check(flat)` (see `Source.emit`)."""
        return f"{bind(ns, self)}.check(flat)"

    def describe(self) -> str:
        raise NotImplementedError

    def reason(self) -> str:
        """Why a failed guard failed (what changed), for explain() and the max_traces warning."""
        return self.describe()


@dataclass(frozen=True, eq=False)
class TensorMetaGuard(Guard):
    """A lifted tensor (or a .grad) still exists with the traced shape and dtype, and on the
    same kind of device (its storage's type: a NumPy array on the CPU, a DeviceArray on CUDA),
    so a module moved between devices after the trace is traced again."""

    source: Source
    shape: tuple[int, ...]
    dtype: Any
    storage: type = np.ndarray  # (any other type than a DeviceArray counts as the CPU's)

    def _cuda(self) -> bool:
        return self.storage.__name__ == "DeviceArray"

    def check(self, flat: list[Any]) -> bool:
        t = self.source.get(flat)
        return t is not None and t._data.shape == self.shape and t._dtype is self.dtype and \
            (type(t._data).__name__ == "DeviceArray") == self._cuda()

    def emit(self, ns: dict[str, Any]) -> str:
        from ..cuda.array import DeviceArray

        where = f"type(t._data) is {'' if self._cuda() else 'not '}{bind(ns, DeviceArray)}"
        return (f"((t := {self.source.emit(ns)}) is not None and t._data.shape == "
                f"{self.shape!r} and t._dtype is {bind(ns, self.dtype)} and {where})")

    def describe(self) -> str:
        where = " CUDA" if self._cuda() else ""
        return (f"{self.source.describe()} is a{where} {self.dtype.name} tensor of shape "
                f"{list(self.shape)}")


@dataclass(frozen=True, eq=False)
class NoneGuard(Guard):
    source: Source

    def check(self, flat: list[Any]) -> bool:
        return self.source.get(flat) is None

    def emit(self, ns: dict[str, Any]) -> str:
        return f"({self.source.emit(ns)} is None)"

    def describe(self) -> str:
        return f"{self.source.describe()} is None"


_PLAIN = (bool, int, float, str)  # values whose == is a plain bool


@dataclass(frozen=True, eq=False)
class ValueGuard(Guard):
    """A Python value that shaped the computation (momentum, a module's training flag)."""

    container: Any
    key: Any
    value: Any

    def check(self, flat: list[Any]) -> bool:
        try:
            v = self.container[self.key]
        except (KeyError, IndexError, TypeError):
            return False
        if type(v) is not type(self.value):
            return False
        same = v == self.value
        # a plain bool for numbers, strings and tuples of them (np.all of one cost 3 us, and an
        # Adam step checks six of these); arrays compare elementwise
        return same if type(same) is bool else bool(np.all(same))

    def emit(self, ns: dict[str, Any]) -> str:
        if type(self.container) is not dict or type(self.value) not in _PLAIN:
            return super().emit(ns)
        return (f"(type(v := {bind(ns, self.container)}.get({bind(ns, self.key)}, _MISSING)) "
                f"is {bind(ns, type(self.value))} and v == {bind(ns, self.value)})")

    def describe(self) -> str:
        return f"[{self.key!r}] == {self.value!r} (a {type(self.container).__name__})"


@dataclass(frozen=True, eq=False)
class AttrGuard(Guard):
    obj: Any
    attr: str
    value: Any

    def check(self, flat: list[Any]) -> bool:
        return getattr(self.obj, self.attr, None) == self.value

    def emit(self, ns: dict[str, Any]) -> str:
        return (f"(getattr({bind(ns, self.obj)}, {self.attr!r}, None) == "
                f"{bind(ns, self.value)})")

    def describe(self) -> str:
        return f"{type(self.obj).__name__}.{self.attr} == {self.value!r}"


# ---- Python state the trace read (globals, closure cells, module attributes) ---------------------

# bumped by every attribute assignment on any nn.Module (Module.__setattr__): while it has not
# moved since a ModuleVersionsGuard last held, none of its modules can have changed
MODULE_EPOCH = [0]

_MISSING = object()


class PyGuard(Guard):
    """A guard on Python state outside the arguments. `reason()` says what changed."""

    def reason(self) -> str:
        return f"{self.describe()} no longer holds"


class GlobalGuard(PyGuard):
    """A scalar global read by a function the trace entered; its value is baked into the
    graph, so a new value retraces."""

    __slots__ = ("namespace", "name", "value", "where")

    def __init__(self, namespace: dict, name: str, value: Any, where: str) -> None:
        self.namespace, self.name, self.value, self.where = namespace, name, value, where

    def check(self, flat: list[Any]) -> bool:
        v = self.namespace.get(self.name, _MISSING)
        return v is self.value or (type(v) is type(self.value) and v == self.value)

    def describe(self) -> str:
        return f"global {self.name} == {self.value!r} (read in {self.where})"

    def reason(self) -> str:
        v = self.namespace.get(self.name, _MISSING)
        now = "deleted" if v is _MISSING else repr(v)
        return f"global {self.name} changed ({self.value!r} -> {now}, read in {self.where})"


class GlobalIdentityGuard(PyGuard):
    """A global that held a tensor or a module the trace used still holds that object."""

    __slots__ = ("namespace", "name", "obj", "where")

    def __init__(self, namespace: dict, name: str, obj: Any, where: str) -> None:
        self.namespace, self.name, self.obj, self.where = namespace, name, obj, where

    def check(self, flat: list[Any]) -> bool:
        return self.namespace.get(self.name, _MISSING) is self.obj

    def emit(self, ns: dict[str, Any]) -> str:
        return f"({bind(ns, self.namespace)}.get({self.name!r}, _MISSING) is {bind(ns, self.obj)})"

    def describe(self) -> str:
        return (f"global {self.name} is the same {type(self.obj).__name__} object (read in "
                f"{self.where})")

    def reason(self) -> str:
        return f"global {self.name} was rebound to another object (read in {self.where})"


class CellGuard(PyGuard):
    """A closure variable (a cell) read by a function the trace entered: a scalar keeps its
    value, a tensor or module stays the same object."""

    __slots__ = ("cell", "name", "value", "identity", "where")

    def __init__(self, cell: Any, name: str, value: Any, identity: bool, where: str) -> None:
        self.cell, self.name, self.value, self.identity, self.where = (cell, name, value,
                                                                         identity, where)

    def check(self, flat: list[Any]) -> bool:
        try:
            v = self.cell.cell_contents
        except ValueError:  # the cell was emptied (del)
            return False
        return v is self.value or (not self.identity and type(v) is type(self.value)
                                   and v == self.value)

    def describe(self) -> str:
        what = (f"is the same {type(self.value).__name__} object" if self.identity
                else f"== {self.value!r}")
        return f"closure variable {self.name} {what} (read in {self.where})"

    def reason(self) -> str:
        try:
            now = repr(self.cell.cell_contents)
        except ValueError:
            now = "deleted"
        if self.identity:
            return f"closure variable {self.name} was rebound (read in {self.where})"
        return f"closure variable {self.name} changed ({self.value!r} -> {now}, read in " \
               f"{self.where})"


_SCALAR_TYPES = (bool, int, float, str, type(None))
_TABLES = ("_parameters", "_buffers", "_modules")
_NOT_STATE = ("_jit_version", "_jit_last_set")


def module_state(m: Any) -> tuple:
    """What of a module a trace may depend on: its attributes (scalars by value, anything else
    by identity) and the entries of its parameter, buffer and submodule tables."""
    out = []
    for k, v in m.__dict__.items():
        if k in _NOT_STATE:
            continue
        out.append((k, tuple(v.items()) if k in _TABLES else v))
    return tuple(out)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return isinstance(a, _SCALAR_TYPES) and a == b


class ModuleVersionsGuard(PyGuard):
    """No attribute of the modules the trace used (whose forward ran, or that it reached
    through an argument, a global or a closure) changed since: their Python scalars are baked
    into the graph and their parameters are lifted by identity. Each Module.__setattr__ bumps
    the module's `_jit_version` and MODULE_EPOCH, so while the epoch has not moved the check
    is one comparison; when a module's version moved, its attributes are compared with those
    traced (so assigning the same value, or flipping back to it, still hits)."""

    __slots__ = ("items", "epoch", "failed")

    def __init__(self, modules: list[Any]) -> None:
        self.items = [[m, m.__dict__.get("_jit_version", 0), module_state(m)] for m in modules]
        self.epoch = MODULE_EPOCH[0]
        self.failed: Any = None

    def emit(self, ns: dict[str, Any]) -> str:
        g = bind(ns, self)  # the epoch test inline, the rest only when a module was assigned
        return f"(_EPOCH[0] == {g}.epoch or {g}.check(flat))"

    def check(self, flat: list[Any]) -> bool:
        if MODULE_EPOCH[0] == self.epoch:
            return True
        for it in self.items:
            m = it[0]
            v = m.__dict__.get("_jit_version", 0)
            if v != it[1]:
                if not _same(module_state(m), it[2]):
                    self.failed = m
                    return False
                it[1] = v  # reassigned to what was traced
        self.epoch = MODULE_EPOCH[0]  # nothing used changed: hold until the next assignment
        return True

    def describe(self) -> str:
        names = sorted({type(it[0]).__name__ for it in self.items})
        return (f"attributes of the {len(self.items)} module(s) used ({', '.join(names)}) are "
                "as traced")

    def reason(self) -> str:
        m = self.failed
        if m is None:
            return self.describe() + " no longer holds"
        attr = m.__dict__.get("_jit_last_set", "?")
        return (f"module attribute {type(m).__name__}.{attr} was assigned (module attributes "
                "are part of the trace)")
