"""The kernel IR (ir.py), how fused groups are scheduled into passes over rows (schedule.py)
and lowered to it (lower.py). Renderers in codegen/ turn it into source text."""

from .ir import (
    COMBINES,
    SCALAR_OPS,
    Accum,
    Alloc,
    Dim,
    Expr,
    Kernel,
    Let,
    Lit,
    Load,
    Loop,
    Op,
    Param,
    Prefetch,
    Stmt,
    Store,
    Var,
    format_kernel,
)

__all__ = ["COMBINES", "SCALAR_OPS", "Accum", "Alloc", "Dim", "Expr", "Kernel", "Let", "Lit",
           "Load", "Loop", "Op", "Param", "Prefetch", "Stmt", "Store", "Var", "format_kernel"]
