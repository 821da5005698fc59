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

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class ArgSource(Source):
    index: int
    name: str

    def get(self, flat: list[Any]) -> Any:
        return flat[self.index]

    def describe(self) -> str:
        return f"argument {self.name}"


@dataclass(frozen=True, eq=False)
class RefSource(Source):
    """A tensor the function reached that was not an argument (a parameter, a global): held
    by identity, its current data read on every call."""

    obj: Any
    name: str

    def get(self, flat: list[Any]) -> Any:
        return self.obj

    def describe(self) -> str:
        return f"lifted tensor {self.name}"


@dataclass(frozen=True, eq=False)
class GradSource(Source):
    owner: Source

    def get(self, flat: list[Any]) -> Any:
        return self.owner.get(flat)._grad

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

    def describe(self) -> str:
        return f"value [{self.key!r}] of a {type(self.container).__name__}"


# ---- guards -------------------------------------------------------------------------------------


class Guard:
    def check(self, flat: list[Any]) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class TensorMetaGuard(Guard):
    """A lifted tensor (or a .grad) still exists with the traced shape and dtype."""

    source: Source
    shape: tuple[int, ...]
    dtype: Any

    def check(self, flat: list[Any]) -> bool:
        t = self.source.get(flat)
        return t is not None and t._data.shape == self.shape and t._dtype is self.dtype

    def describe(self) -> str:
        return f"{self.source.describe()} is a {self.dtype.name} tensor of shape {list(self.shape)}"


@dataclass(frozen=True, eq=False)
class NoneGuard(Guard):
    source: Source

    def check(self, flat: list[Any]) -> bool:
        return self.source.get(flat) is None

    def describe(self) -> str:
        return f"{self.source.describe()} is None"


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
        return type(v) is type(self.value) and bool(np.all(v == self.value))

    def describe(self) -> str:
        return f"[{self.key!r}] == {self.value!r} (a {type(self.container).__name__})"


@dataclass(frozen=True, eq=False)
class AttrGuard(Guard):
    obj: Any
    attr: str
    value: Any

    def check(self, flat: list[Any]) -> bool:
        return getattr(self.obj, self.attr, None) == self.value

    def describe(self) -> str:
        return f"{type(self.obj).__name__}.{self.attr} == {self.value!r}"
