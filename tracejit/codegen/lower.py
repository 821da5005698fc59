"""Shared by the code generators: what cannot be compiled, and scalar-expression rendering
from the ops' `expr` templates (used for fused loops on every device)."""

from __future__ import annotations

from typing import Any

from ..dtypes import DType
from ..ir.graph import Const, Node, Value
from ..ops.registry import OpDef, lit, np_name


class UnsupportedError(Exception):
    """A node with no compiled form on this device: the entry runs eagerly (a graph break)."""


def compute_dtypes(n: Node) -> list[DType | None]:
    """The dtype each operand is converted to before the op's scalar expression runs."""
    assert isinstance(n.op, OpDef)
    if n.op.compute_dtype is None:
        return [None] * len(n.inputs)
    types = [v.type if isinstance(v, Value) else v.value for v in n.inputs]
    cd = n.op.compute_dtype(types)
    return list(cd) if isinstance(cd, tuple) else [cd] * len(n.inputs)


def operand_dtype(o: Any) -> DType | None:
    return o.type.dtype if isinstance(o, Value) else None


def render_expr(n: Node, args: list[str]) -> str:
    """The node's scalar expression over operand expressions `args`, converted to its output
    dtype. Literals are typed (Numba would compute float32 * 2.0 in float64)."""
    assert isinstance(n.op, OpDef) and n.op.expr is not None
    cds = compute_dtypes(n)
    ops = []
    for o, a, cd in zip(n.inputs, args, cds):
        if isinstance(o, Const):
            ops.append(lit(o.value, cd or o.dtype))
        elif cd is not None and operand_dtype(o) is not cd:
            ops.append(f"{np_name(cd)}({a})")
        else:
            ops.append(a)
    fmt: dict[str, str] = {}
    out_d = n.out.type.dtype
    for k, v in n.attrs.items():
        if isinstance(v, DType):
            fmt[k] = np_name(v)
        elif isinstance(v, (bool, int, float)) or v is None:
            fmt[k] = lit(v, None if v is None else out_d)
    expr = n.op.expr.format(*ops, **fmt)
    return f"{np_name(out_d)}({expr})"
