"""The Python state a trace depends on, found while the function runs (a profile hook):

- scalar globals and closure variables read by the functions the trace entered (the traced
  function, helpers, a module's forward) become guards: their values are baked into the graph;
- globals and closure variables holding a tensor or a module are guarded by identity, and the
  modules among them (and every module whose method ran) are guarded on their attributes;
- calls into Python's `random`, `numpy.random`, `time` clocks and `print` are graph breaks with
  the user's line: a compiled program would freeze their results (or drop the print), so the
  function runs eagerly instead.

Only frames outside tracejit, NumPy and the standard library are looked at. The hook runs only
while tracing; the per-call cost is that of the guards it leaves (see sources.py)."""

from __future__ import annotations

import dis
import functools
import gc
import os
import random
import sys
import sysconfig
import time
import types
from typing import Any

import llvmlite
import numba
import numpy as np

from ..tensor import Tensor
from .sources import _SCALAR_TYPES as _SCALARS
from .sources import CellGuard, GlobalGuard, GlobalIdentityGuard

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIP = tuple(os.path.normcase(os.path.abspath(p)) + os.sep for p in {
    _PKG,
    os.path.dirname(os.path.abspath(np.__file__)),
    # the compiler tracejit drives: Numba compiles (a kernel, or an eager op's njit function on
    # its first use) inside a trace, and its globals are not the user's state
    os.path.dirname(os.path.abspath(numba.__file__)),
    os.path.dirname(os.path.abspath(llvmlite.__file__)),
    sysconfig.get_paths()["stdlib"],
    sysconfig.get_paths()["platstdlib"],
})
_PKG_DIR = os.path.normcase(os.path.abspath(_PKG)) + os.sep
_RANDOM_FILE = random.__file__
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_LOAD_OPS = _GLOBAL_OPS | {"LOAD_DEREF", "LOAD_FAST", "LOAD_CLASSDEREF"}
_CLOCKS = frozenset({"time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic",
                     "monotonic_ns", "process_time", "process_time_ns", "thread_time",
                     "thread_time_ns", "localtime", "gmtime", "ctime", "asctime", "strftime"})
_NP_RANDOM = (np.random.RandomState, np.random.Generator, np.random.BitGenerator)
_FIX = ("pass the value in as an argument of the jitted function, or use tracejit's own random "
        "numbers (tracejit.randint, tracejit.randn)")


def _guardable(v: Any) -> bool:
    if isinstance(v, _SCALARS):
        return True
    return type(v) is tuple and len(v) <= 16 and all(_guardable(x) for x in v)


@functools.lru_cache(maxsize=4096)
def _global_refs(code: types.CodeType) -> tuple[tuple[str, str | None, int, bool], ...]:
    """(name, the attribute loaded from it next or None, line, is a global) for each global,
    closure variable or argument read:
    NumPy's random functions are Cython functions, which raise no profile events, so their use
    is found in the bytecode (`np.random.rand()`, `rng.normal()`, `from numpy.random import
    randn`)."""
    out = []
    ins = list(dis.get_instructions(code))
    line = code.co_firstlineno
    for i, x in enumerate(ins):
        if x.positions is not None and x.positions.lineno is not None:
            line = x.positions.lineno
        if x.opname in _LOAD_OPS and isinstance(x.argval, str):
            nxt = ins[i + 1] if i + 1 < len(ins) else None
            attr = nxt.argval if nxt is not None and nxt.opname in ("LOAD_ATTR", "LOAD_METHOD") \
                else None
            out.append((x.argval, attr, line, x.opname in _GLOBAL_OPS))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names a code object reads as globals (LOAD_GLOBAL), not attribute names (co_names holds
    both: `opt.step()` must not guard a global loop counter called `step`)."""
    return tuple(sorted({n for n, _, _, glob in _global_refs(code) if glob}))


def _is_np_random(v: Any, attr: str | None) -> bool:
    if v is np:
        return attr == "random"
    if v is np.random or isinstance(v, _NP_RANDOM):
        return True
    mod = getattr(v, "__module__", None)
    if isinstance(mod, str) and mod.startswith("numpy.random"):
        return True
    return isinstance(getattr(v, "__self__", None), _NP_RANDOM)


def _np_global_state() -> Any:
    st = np.random.mtrand._rand._bit_generator.state
    return st["state"]["pos"], st["state"]["key"].copy()


def _is_user_file(filename: str) -> bool:
    if filename.startswith("<"):
        return not filename.startswith("<frozen")  # <stdin>, <string>, doctests: the user's
    return not os.path.normcase(os.path.abspath(filename)).startswith(_SKIP)


def _where(code: types.CodeType) -> str:
    return f"{code.co_qualname} at {os.path.basename(code.co_filename)}:{code.co_firstlineno}"


class PythonStateWatcher:
    """Installed (a sys.setprofile hook, the previous one restored after) around the eager run
    of a traced function; reports to the tracer."""

    def __init__(self, tracer: Any, fn: Any) -> None:
        from ..nn.module import Module

        self.tracer = tracer
        self._module_type = Module
        self._user: dict[types.CodeType, bool] = {}
        self._closures: dict[types.CodeType, list[Any]] = {}
        self._frames: set[int] = set()  # user frames entered while tracing
        top = getattr(fn, "__func__", fn)
        if isinstance(top, types.FunctionType):
            self._closures[top.__code__] = [top]
        code = getattr(top, "__code__", None) or getattr(
            getattr(getattr(fn, "forward", None), "__func__", None), "__code__", None)
        self._top_loc = (f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
                         if code is not None else "<unknown>")
        self._prev: Any = None
        self._clocks = {id(getattr(time, n)) for n in _CLOCKS if hasattr(time, n)}

    def __enter__(self) -> PythonStateWatcher:
        self._np_state = _np_global_state()
        self._np_seen = False
        self._prev = sys.getprofile()
        sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.setprofile(self._prev)
        pos, key = self._np_state
        now = _np_global_state()
        if not self._np_seen and (now[0] != pos or not np.array_equal(now[1], key)):
            # numpy's global generator moved but the call was not found in the bytecode
            self.tracer.graph_break(
                f"NumPy's global random generator (numpy.random) was used while tracing: "
                f"every compiled call would reuse the same numbers, so this function runs "
                f"eagerly; to compile it, {_FIX}", self._top_loc)

    # ---- the hook ----------------------------------------------------------------------------
    def _is_user(self, code: types.CodeType) -> bool:
        u = self._user.get(code)
        if u is None:
            u = self._user[code] = _is_user_file(code.co_filename)
        return u

    def _is_user_frame(self, frame: Any) -> bool:
        """A frame of user code. Code compiled from a string (`<string>`, `<stdin>`, a
        doctest) is the user's when the user's code or tracejit (the jitted function itself)
        called it; a library's generated code (a namedtuple's `__new__` that Numba calls while
        it compiles) is not."""
        code = frame.f_code
        if not self._is_user(code):
            return False
        if not code.co_filename.startswith("<"):
            return True
        back = frame.f_back
        if back is None:
            return True
        if self._is_user_frame(back):
            return True
        name = os.path.normcase(os.path.abspath(back.f_code.co_filename))
        return name.startswith(_PKG_DIR)

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        try:
            if event == "call":
                code = frame.f_code
                if self._is_user_frame(frame):
                    self._entered(frame, code)
                elif code.co_filename == _RANDOM_FILE:
                    back = frame.f_back
                    if back is not None and self._is_user_frame(back):
                        self._random_call(back, f"random.{code.co_qualname}", "Python's random")
            elif event == "c_call" and self._is_user_frame(frame):
                self._c_call(frame, arg)
        except Exception:  # never break the user's function: at worst a guard is missing
            pass

    def _c_call(self, frame: Any, fn: Any) -> None:
        if fn is print:
            self.tracer.graph_break(
                "print() while tracing: a compiled call would not print, so this function runs "
                "eagerly and prints on every call (print outside the jitted function, or return "
                "the value, to compile it)", _loc(frame))
            return
        if id(fn) in self._clocks:
            self.tracer.graph_break(
                f"call to time.{fn.__name__}() while tracing: its value would be frozen into the "
                "compiled program, so this function runs eagerly; pass the time in as an "
                "argument to compile it", _loc(frame))
            return
        owner = getattr(fn, "__self__", None)
        mod = getattr(fn, "__module__", None) or ""
        name = getattr(fn, "__name__", "?")
        if isinstance(owner, random.Random):
            self._random_call(frame, f"random.{name}", "Python's random")
        elif isinstance(owner, _NP_RANDOM) or mod.startswith("numpy.random"):
            self._random_call(frame, f"numpy.random {name}", "NumPy's random")

    def _random_call(self, frame: Any, what: str, lib: str) -> None:
        self.tracer.graph_break(
            f"call to {what} ({lib}) while tracing: it would run only at trace time and every "
            f"compiled call would reuse its result, so this function runs eagerly; to compile "
            f"it, {_FIX}", _loc(frame))

    def _entered(self, frame: Any, code: types.CodeType) -> None:
        self._frames.add(id(frame))
        t = self.tracer
        g = frame.f_globals
        loc: Any = None
        for n, attr, line, glob in _global_refs(code):
            if glob:
                ns = g
            else:  # a closure variable or an argument: its value as the frame starts
                ns = loc = frame.f_locals if loc is None else loc
            if n in ns and _is_np_random(ns[n], attr):
                self._np_seen = True
                what = f"{n}.{attr}" if attr else n
                t.graph_break(
                    f"use of {what} (NumPy's random) while tracing: it would run only at trace "
                    f"time and every compiled call would reuse its result, so this function "
                    f"runs eagerly; to compile it, {_FIX}",
                    f"{os.path.basename(code.co_filename)}:{line}")
        names = _global_names(code)
        if names:
            for n in names:
                if n not in g:
                    continue  # a builtin (or not defined yet)
                v = g[n]
                key = (id(g), n)
                if key in t._py_guards:
                    continue
                if _guardable(v):
                    t.guard_python(key, GlobalGuard(g, n, v, _where(code)))
                elif isinstance(v, (Tensor, self._module_type)):
                    t.guard_python(key, GlobalIdentityGuard(g, n, v, _where(code)))
                    if isinstance(v, self._module_type):
                        t.use_module(v)
        if code.co_freevars:
            self._closure(frame, code)
        if code.co_argcount and code.co_varnames[0] == "self":
            me = frame.f_locals.get("self")
            if isinstance(me, self._module_type):
                t.use_module(me)

    def _closure(self, frame: Any, code: types.CodeType) -> None:
        loc = frame.f_locals
        wanted = {}
        for n in code.co_freevars:
            if n in loc:
                v = loc[n]
                if self._fresh_cell(frame, n) or (isinstance(v, Tensor) and self._made(v)):
                    continue  # a closure made during this call (a comprehension over an
                    # argument): its cell is new on every call, and guarding it would keep
                    # its tensor alive as if the function had stored it
                if _guardable(v) or isinstance(v, (Tensor, self._module_type)):
                    wanted[n] = v
        if not wanted:
            return
        fns = self._closures.get(code)
        if fns is None:  # functions made from this code; the ones this frame runs match it
            fns = self._closures[code] = [
                r for r in gc.get_referrers(code)
                if isinstance(r, types.FunctionType) and r.__code__ is code]
        t = self.tracer
        for f in fns:
            cells = dict(zip(code.co_freevars, f.__closure__ or ()))
            try:
                if any(cells[n].cell_contents is not v for n, v in wanted.items()):
                    continue  # another closure over the same code
            except (KeyError, ValueError):
                continue
            for n, v in wanted.items():
                ident = not _guardable(v)
                t.guard_python(("cell", id(cells[n])),
                               CellGuard(cells[n], n, v, ident, _where(code)))
                if isinstance(v, self._module_type):
                    t.use_module(v)


    def _fresh_cell(self, frame: Any, n: str) -> bool:
        """Is free variable `n` of this frame a cell of the frame that called it, entered
        during this trace (a comprehension or lambda made and run by the traced code)?"""
        back = frame.f_back
        return back is not None and id(back) in self._frames and n in back.f_code.co_cellvars

    def _made(self, v: Tensor) -> bool:
        """Was `v` made by the traced call (not an argument, not lifted)?"""
        t = self.tracer
        return id(v) not in t.param_of and id(v._data) in t.env


def _loc(frame: Any) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
