"""Tensor repr in PyTorch's style: tensor([...], dtype=..., requires_grad=True). Elements are
right-aligned to one width; floats print as integers ("1."), fixed ("1.5000") or scientific
("1.0000e+10") by PyTorch's rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import dtypes as dt


def _float_style(a: np.ndarray) -> Callable[[float], str]:
    finite = a[np.isfinite(a)].astype(np.float64)
    nz = np.abs(finite[finite != 0])
    big, small = (float(nz.max()), float(nz.min())) if nz.size else (0.0, 0.0)
    if np.all(finite == np.round(finite)):
        fmt = "{:.4e}" if big > 1e8 else "{:.0f}."
    elif big > 1e8 or small < 1e-4 or (small and big / small > 1000):
        fmt = "{:.4e}"
    else:
        fmt = "{:.4f}"

    def one(v: float) -> str:
        if not np.isfinite(v):
            return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
        return fmt.format(v)

    return one


def _element_formatter(a: np.ndarray) -> tuple[str, Callable[[Any], str]]:
    if a.dtype.kind == "f":
        kind, one = "float_kind", _float_style(a)
    elif a.dtype == np.bool_:
        kind, one = "bool", (lambda v: "True" if v else "False")
    else:
        kind, one = "int", (lambda v: str(int(v)))
    shown = a if a.size <= 1000 else np.concatenate([a.reshape(-1)[:3], a.reshape(-1)[-3:]])
    width = max((len(one(v)) for v in shown.reshape(-1)), default=0)
    return kind, lambda v: one(v).rjust(width)


def tensor_repr(t: Any) -> str:
    a = t._data
    prefix = "tensor("
    if a.size == 0:
        body = "[]"
    else:
        kind, fmt = _element_formatter(a)
        body = np.array2string(a, separator=", ", prefix=prefix, formatter={kind: fmt},  # type: ignore[dict-item]
                               threshold=1000, edgeitems=3, max_line_width=80)
    extras = []
    if a.size == 0 and a.shape != (0,):
        extras.append(f"size={tuple(a.shape)}")
    default = dt.get_default_dtype()
    if t.dtype not in (default, dt.int64, dt.bool_) or (a.size == 0 and t.dtype is not default):
        extras.append(f"dtype={t.dtype}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    return prefix + body + "".join(", " + e for e in extras) + ")"
