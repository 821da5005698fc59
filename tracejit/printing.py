"""Tensor repr in PyTorch's style: tensor([...], dtype=..., requires_grad=True)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes as dt


def tensor_repr(t: Any) -> str:
    a = t._data
    prefix = "tensor("
    if a.dtype.kind == "f":
        finite = a[np.isfinite(a)]
        integral = finite.size == 0 or bool(np.all(finite == np.round(finite)))
        big = finite.size and (np.abs(finite).max() >= 1e8 or
                               (np.abs(finite[finite != 0]).min(initial=1) < 1e-4))
        fmt = {"float_kind": (lambda v: f"{v:.4e}") if big else
               ((lambda v: f"{v:.0f}.") if integral else (lambda v: f"{v:.4f}"))}
        body = np.array2string(a, separator=", ", prefix=prefix, formatter=fmt, threshold=1000,
                               edgeitems=3, max_line_width=80)
    elif a.dtype == np.bool_:
        body = np.array2string(a, separator=", ", prefix=prefix,
                               formatter={"bool": lambda v: "True" if v else "False"})
    else:
        body = np.array2string(a, separator=", ", prefix=prefix, threshold=1000)
    extras = []
    if a.size == 0:
        extras.append(f"size={tuple(a.shape)}")
    default = dt.get_default_dtype()
    if t.dtype not in (default, dt.int64, dt.bool_) or (a.size == 0 and t.dtype is not default):
        extras.append(f"dtype={t.dtype}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        extras.append("requires_grad=True")
    return prefix + body + "".join(", " + e for e in extras) + ")"
