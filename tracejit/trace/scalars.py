"""Python numbers that are inputs of a compiled program. An int or float argument whose value
changed between calls is traced as a `TracedScalar`: it behaves as the number in Python
arithmetic (its value is always the real one, so the traced call computes what eager mode
computes), records that arithmetic as 0-d int64/float64 graph values, and enters tensor ops as
a Python number would (weakly typed: `x * lr` stays float32). Anything that needs the concrete
value to decide what to compute (`int()`, `range()`, a shape, an index, text) marks the
argument as steering the trace: the trace is then not replayable with another value, and the
argument stays a guard (see jit.py). A comparison is recorded (a traced bool), and `bool()` of a
traced number (an `if`) is a branch: the program checks its predicate, and a call down the
other path traces that path (the tracer's `branch`)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dispatch
from .. import dtypes as dt
from ..errors import user_location
from ..tensor import Tensor


@dataclass(eq=False)
class ScalarArg:
    """One argument traced as an input; `steered` says where its value decided the trace."""

    name: str
    steered: list[str] = field(default_factory=list)


class TracedScalar:
    __slots__ = ("value", "tensor", "origins")

    def __init__(self, value: int | float, tensor: Tensor, origins: tuple[ScalarArg, ...]) -> None:
        self.value = value
        self.tensor = tensor  # 0-d int64 (an int) or float64 (a float): its graph value
        self.origins = origins

    # ---- the concrete value: the trace depends on it ---------------------------------------------
    def concrete(self, why: str) -> int | float:
        """The value, for a use that decides what is computed: the arguments it came from
        stay guards."""
        if dispatch.STATE.tracer is not None:
            self.steer(f"{why} at {user_location()}")
        return self.value

    def steer(self, text: str) -> None:
        for o in self.origins:
            if text not in o.steered:
                o.steered.append(text)

    def __bool__(self) -> bool:
        # a branch, not a steer: the program checks the predicate (`value != 0`) and a call
        # down the other path traces that path, so the argument stays an input
        taken = bool(self.value)
        tracer = dispatch.STATE.tracer
        if tracer is None:
            return taken
        tracer.branch(self.tensor, taken)
        return taken

    def __index__(self) -> int:
        v = self.concrete("used as an index, a size or a range()")
        return operator.index(v)  # type: ignore[arg-type]

    def __int__(self) -> int:
        return int(self.concrete("int() of it"))

    def __float__(self) -> float:
        return float(self.concrete("float() of it (a math function, a NumPy scalar)"))

    def __complex__(self) -> complex:
        return complex(self.concrete("complex() of it"))

    def __hash__(self) -> int:
        return hash(self.concrete("hashed (a dict key, a set member)"))

    def __round__(self, n: int | None = None) -> Any:
        return round(self.concrete("round() of it"), n)

    def __trunc__(self) -> int:
        return math.trunc(self.concrete("math.trunc() of it"))

    def __floor__(self) -> int:
        return math.floor(self.concrete("math.floor() of it"))

    def __ceil__(self) -> int:
        return math.ceil(self.concrete("math.ceil() of it"))

    def __format__(self, spec: str) -> str:
        return format(self.concrete("formatted as text"), spec)

    def __repr__(self) -> str:
        return repr(self.concrete("converted to text"))

    __str__ = __repr__

    def _compare(self, o: Any, op: Callable[[Any, Any], bool], sym: str) -> Any:
        """A comparison is recorded (a bool[] graph value) and gives a traced bool, so that
        `if lr > 0.1:` is a branch the program checks rather than a guard on the value."""
        if isinstance(o, TracedScalar):
            ov: Any = o.value
            ot: Any = o.tensor
            origins = self.origins + tuple(x for x in o.origins if x not in self.origins)
        elif isinstance(o, (int, float)):
            ov = ot = o
            origins = self.origins
        else:
            return NotImplemented
        value = op(self.value, ov)
        if dispatch.STATE.tracer is None or type(value) is not bool:
            return value
        a, b = self.tensor, ot
        if type(self.value) is bool or type(ov) is bool or \
                (isinstance(ot, Tensor) and ot.dtype is not a.dtype):
            d = dt.float64 if float in (type(self.value), type(ov)) else dt.int64
            a, b = _as(a, d), _as(b, d)
        t: Any = op(a, b)  # (a Tensor: a is one)
        return TracedScalar(value, t, origins)

    def __eq__(self, o: Any) -> Any:  # type: ignore[override]
        return self._compare(o, operator.eq, "==")

    def __ne__(self, o: Any) -> Any:  # type: ignore[override]
        return self._compare(o, operator.ne, "!=")

    def __lt__(self, o: Any) -> Any:
        return self._compare(o, operator.lt, "<")

    def __le__(self, o: Any) -> Any:
        return self._compare(o, operator.le, "<=")

    def __gt__(self, o: Any) -> Any:
        return self._compare(o, operator.gt, ">")

    def __ge__(self, o: Any) -> Any:
        return self._compare(o, operator.ge, ">=")

    # ---- arithmetic: recorded -------------------------------------------------------------------
    def _arith(self, o: Any, name: str, reflected: bool) -> Any:
        if isinstance(o, TracedScalar):
            ov: Any = o.value
            ot: Any = o.tensor
            origins = self.origins + tuple(x for x in o.origins if x not in self.origins)
        elif isinstance(o, (int, float)):
            ov = ot = o
            origins = self.origins
        else:
            return NotImplemented  # a Tensor: its reflected method takes this as a number
        a, b = (ov, self.value) if reflected else (self.value, ov)
        ta, tb = (ot, self.tensor) if reflected else (self.tensor, ot)
        if name == "pow" and type(a) is int and type(b) is int and isinstance(tb, Tensor):
            # an int to a traced int power is an int or a float by the exponent's sign
            exp = self if reflected else o
            b = exp.concrete("an int raised to it as an int power")
        value = _PYOPS[name](a, b)  # Python's own result (and its ZeroDivisionError)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return self.concrete(f"{name} giving a {type(value).__name__}")
        d = dt.float64 if isinstance(value, float) else dt.int64
        ta, tb = _as(ta, d), _as(tb, d)
        if name == "mod":  # Python's sign rule: a - floor(a / b) * b
            t = ta - (ta // tb) * tb
        else:
            t = _TENSOROPS[name](ta, tb)
        if not isinstance(t, Tensor):  # both operands were Python numbers
            t = Tensor._make(np.array(t, d.np), d)
        elif t.dtype is not d:
            t = t.to(d)
        return TracedScalar(value, t, origins)

    def __add__(self, o: Any) -> Any:
        return self._arith(o, "add", False)

    def __radd__(self, o: Any) -> Any:
        return self._arith(o, "add", True)

    def __sub__(self, o: Any) -> Any:
        return self._arith(o, "sub", False)

    def __rsub__(self, o: Any) -> Any:
        return self._arith(o, "sub", True)

    def __mul__(self, o: Any) -> Any:
        return self._arith(o, "mul", False)

    def __rmul__(self, o: Any) -> Any:
        return self._arith(o, "mul", True)

    def __truediv__(self, o: Any) -> Any:
        return self._arith(o, "truediv", False)

    def __rtruediv__(self, o: Any) -> Any:
        return self._arith(o, "truediv", True)

    def __floordiv__(self, o: Any) -> Any:
        return self._arith(o, "floordiv", False)

    def __rfloordiv__(self, o: Any) -> Any:
        return self._arith(o, "floordiv", True)

    def __mod__(self, o: Any) -> Any:
        return self._arith(o, "mod", False)

    def __rmod__(self, o: Any) -> Any:
        return self._arith(o, "mod", True)

    def __pow__(self, o: Any) -> Any:
        return self._arith(o, "pow", False)

    def __rpow__(self, o: Any) -> Any:
        return self._arith(o, "pow", True)

    def __neg__(self) -> TracedScalar:
        return TracedScalar(-self.value, -self.tensor, self.origins)

    def __pos__(self) -> TracedScalar:
        return self

    def __abs__(self) -> TracedScalar:
        return TracedScalar(abs(self.value), self.tensor.abs(), self.origins)


def _as(t: Any, d: Any) -> Any:
    if isinstance(t, Tensor):
        return t if t.dtype is d else t.to(d)
    return float(t) if d is dt.float64 else t


_PYOPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "pow": operator.pow,
}
_TENSOROPS = dict(_PYOPS)


def plain(obj: Any, why: str) -> Any:
    """`obj` with its traced scalars replaced by their values (what the function returned)."""
    if isinstance(obj, TracedScalar):
        return obj.concrete(why)
    if type(obj) in (tuple, list):
        return type(obj)(plain(x, why) for x in obj)
    if type(obj) is dict:
        return {k: plain(x, why) for k, x in obj.items()}
    return obj


dispatch._Scalar = TracedScalar
