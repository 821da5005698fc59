"""Tensor repr in PyTorch's style: tensor([...], dtype=..., requires_grad=True).

The layout rules are PyTorch's print options (precision 4, 80 columns, summarise past 1000
elements with 3 edge items): every element is right-aligned to one width, measured on the
nonzero finite values that are shown; floats print as integers ("1."), fixed ("1.5000") or
scientific ("1.0000e+10")."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import dtypes as dt

PRECISION, LINEWIDTH, THRESHOLD, EDGEITEMS = 4, 80, 1000, 3


def _edges(a: np.ndarray) -> np.ndarray:
    """The elements a summarised print shows (the first and last EDGEITEMS along each dim)."""
    if a.ndim == 0:
        return a.reshape(1)
    rows = range(a.shape[0])
    if a.shape[0] > 2 * EDGEITEMS:
        rows = [*range(EDGEITEMS), *range(a.shape[0] - EDGEITEMS, a.shape[0])]  # type: ignore[assignment]
    return np.concatenate([_edges(a[i]).reshape(-1) for i in rows]) if len(rows) else a.reshape(-1)


def _formatter(shown: np.ndarray) -> Callable[[Any], str]:
    """One element -> its string, padded to the common width."""
    if shown.dtype.kind != "f":
        def plain(v: Any) -> str:
            return str(bool(v)) if shown.dtype == np.bool_ else str(int(v))

        width = max((len(plain(v)) for v in shown), default=1)
        return lambda v: plain(v).rjust(width)
    vals = shown.astype(np.float64)
    nz = vals[np.isfinite(vals) & (vals != 0)]
    style = "int"  # PyTorch keeps integer style when nothing is nonzero and finite
    if nz.size:
        big, small = float(np.abs(nz).max()), float(np.abs(nz).min())
        integral = bool(np.all(nz == np.ceil(nz)))
        if big / small > 1000 or big > 1e8 or (not integral and small < 1e-4):
            style = "sci"
        elif not integral:
            style = "fixed"

    def one(v: float) -> str:
        if style == "sci":
            return f"{v:.{PRECISION}e}"
        if style == "int":
            return f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        return f"{v:.{PRECISION}f}"

    width = max((len(one(float(v))) for v in nz), default=1)
    return lambda v: one(float(v)).rjust(width)


def _body(a: np.ndarray, fmt: Callable[[Any], str], width: int, indent: int,
          summarize: bool) -> str:
    cut = summarize and a.shape[0] > 2 * EDGEITEMS
    idx = [*range(EDGEITEMS), None, *range(a.shape[0] - EDGEITEMS, a.shape[0])] if cut \
        else list(range(a.shape[0]))
    if a.ndim == 1:
        items = [" ..." if i is None else fmt(a[i]) for i in idx]
        per_line = max(1, (LINEWIDTH - indent) // (width + 2))
        lines = [", ".join(items[j:j + per_line]) for j in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    parts = ["..." if i is None else _body(a[i], fmt, width, indent + 1, summarize) for i in idx]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def tensor_repr(t: Any) -> str:
    from .dispatch import STATE

    if STATE.tracer is not None:  # the values are printed: under @jit, a graph break
        STATE.tracer.graph_break("printing a tensor")
    a = t._data
    if t.is_cuda:
        a = a.host()
    prefix = "tensor("
    summarize = a.size > THRESHOLD
    if a.size == 0:
        body = "[]"
    else:
        fmt = _formatter(_edges(a) if summarize else a.reshape(-1))
        width = len(fmt(a.reshape(-1)[0]))
        body = fmt(a.item()) if a.ndim == 0 else _body(a, fmt, width, len(prefix), summarize)
    extras = []
    if a.size == 0 and a.shape != (0,):
        extras.append(f"size={tuple(a.shape)}")
    if t.is_cuda:
        extras.append(f"device='{t.device}'")
    default = dt.get_default_dtype()
    if t.dtype not in (default, dt.int64, dt.bool_) or (a.size == 0 and t.dtype is not default):
        extras.append(f"dtype={t.dtype}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    return prefix + body + "".join(", " + e for e in extras) + ")"
