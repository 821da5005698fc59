"""Data types and PyTorch's type-promotion rules.

Imports nothing from tracejit except flags-free basics: every other module may import this one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import located


class DType:
    """A tensor element type, printed and compared like ``torch.float32``."""

    __slots__ = ("name", "short", "np", "category", "itemsize")

    def __init__(self, name: str, short: str, np_dtype: Any, category: int) -> None:
        self.name = name
        self.short = short  # as the IR prints it: f32, i64, bool
        self.np = np.dtype(np_dtype)
        self.category = category  # 0 bool, 1 integer, 2 floating: the promotion lattice
        self.itemsize = self.np.itemsize

    @property
    def is_floating_point(self) -> bool:
        return self.category == 2

    def __repr__(self) -> str:
        return f"tracejit.{self.name}"

    def __reduce__(self) -> str:
        return self.name  # pickles as the module-level singleton


bool_ = DType("bool", "bool", np.bool_, 0)
int32 = DType("int32", "i32", np.int32, 1)
int64 = DType("int64", "i64", np.int64, 1)
float16 = DType("float16", "f16", np.float16, 2)
float32 = DType("float32", "f32", np.float32, 2)
float64 = DType("float64", "f64", np.float64, 2)

ALL = (bool_, int32, int64, float16, float32, float64)
_BY_NP = {d.np: d for d in ALL}
_BY_NAME: dict[str, DType] = {d.name: d for d in ALL}
_BY_NAME.update(
    {"float": float32, "double": float64, "half": float16, "int": int32, "long": int64,
     "bool": bool_, "f32": float32, "f64": float64, "f16": float16, "i32": int32, "i64": int64}
)

_default_float = float32


def get_default_dtype() -> DType:
    return _default_float


def set_default_dtype(d: DType) -> None:
    global _default_float
    d = as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"set_default_dtype: only floating-point types are allowed, got {d}")
    _default_float = d


def as_dtype(d: Any) -> DType:
    """Accept a DType, a name ('float32', 'float'), a NumPy dtype or Python type."""
    if isinstance(d, DType):
        return d
    if isinstance(d, str):
        try:
            return _BY_NAME[d.removeprefix("torch.").removeprefix("tracejit.")]
        except KeyError:
            names = ", ".join(x.name for x in ALL)
            raise TypeError(located(f"unknown dtype {d!r}; expected one of {names}")) from None
    if d is float:
        return _default_float
    if d is int:
        return int64
    if d is bool:
        return bool_
    name = getattr(d, "name", None)  # a torch.dtype or jax dtype names itself
    if isinstance(name, str) and name in _BY_NAME and not isinstance(d, np.dtype):
        return _BY_NAME[name]
    try:
        nd = np.dtype(d)
    except TypeError:
        raise TypeError(located(f"unknown dtype {d!r}")) from None
    try:
        return _BY_NP[nd]
    except KeyError:
        names = ", ".join(x.name for x in ALL)
        raise TypeError(f"dtype {nd} is not supported by tracejit; supported: {names}") from None


def from_numpy_dtype(nd: np.dtype) -> DType:
    try:
        return _BY_NP[nd]
    except KeyError:
        names = ", ".join(x.name for x in ALL)
        raise TypeError(
            f"NumPy dtype {nd} is not supported by tracejit; convert it first "
            f"(for example arr.astype(np.float32)); supported: {names}"
        ) from None


def scalar_dtype(v: bool | int | float) -> DType:
    """The dtype a Python number takes when it decides a promotion (PyTorch's rule)."""
    if isinstance(v, bool):
        return bool_
    if isinstance(v, int):
        return int64
    return _default_float


def _promote_same_priority(dts: list[DType]) -> DType:
    top = max(d.category for d in dts)
    best = None
    for d in dts:
        if d.category == top and (best is None or d.itemsize > best.itemsize):
            best = d
    assert best is not None
    return best


def promote(dim_tensors: list[DType], zero_dim: list[DType], scalars: list[DType]) -> DType:
    """PyTorch's result_type: dimensioned tensors decide, unless a zero-dim tensor or a Python
    scalar of a higher category (bool < int < float) is present; so float32 * 2.0 stays float32
    and int64 * 2.5 becomes the default float."""
    result: DType | None = None
    for group in (dim_tensors, zero_dim, scalars):
        if not group:
            continue
        g = _promote_same_priority(group)
        if result is None or g.category > result.category:
            result = g
    assert result is not None, "promote() needs at least one operand"
    return result
