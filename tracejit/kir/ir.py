"""The kernel IR: one compiled kernel as a small typed tree of loops, loads, stores, scalar
operations and reduction accumulators, printable, between the graph IR (what to compute) and
source text (how a device spells it).

A kernel iterates over a *domain*, the shape passed as its first argument (`shape`); `Dim(k)`
is its k-th extent. Its other parameters are arrays: inputs, then the outputs it writes (always
passed in: a kernel never allocates what it returns, so the caller chooses where results live).
Scalar operations are named (`Op("exp", ...)`), never spelled: `SCALAR_OPS` lists them with
their arity, and each renderer (codegen/cpu.py today, CUDA next) says how its device writes
them. Accumulators combine with `Accum`, whose combine may be reordered by the renderer (so
that reductions vectorise); everything else keeps the order written.

Nothing here imports codegen: renderers import this module, never the other way round."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..dtypes import DType, int64

# name -> arity. Elementwise OpDefs name one of these as their `scalar`; a few exist only here.
SCALAR_OPS: dict[str, int] = {
    # unary
    "neg": 1, "exp": 1, "log": 1, "log1p": 1, "expm1": 1, "sqrt": 1, "rsqrt": 1, "abs": 1,
    "sin": 1, "cos": 1, "tanh": 1, "sigmoid": 1, "erf": 1, "relu": 1, "sign": 1, "floor": 1,
    "ceil": 1, "round": 1, "logical_not": 1, "cast": 1, "clamp": 1, "ipow": 1,
    "is_pos_zero": 1, "is_neg_zero": 1,  # float -> bool: the value is +0.0 / -0.0
    # binary
    "add": 2, "sub": 2, "mul": 2, "div": 2, "pow": 2, "maximum": 2, "minimum": 2,
    "eq": 2, "ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2, "logical_and": 2, "logical_or": 2,
    # ternary
    "where": 3,
    "philox": 3,  # (linear index, key, offset) -> a uniform or normal draw (runtime/philox.py)
}
# how an accumulator combines (and its identity is given by the reduction's init). fmax and fmin
# are max and min for floats that promise nothing for NaN or for the sign of a zero: quicker
# (they vectorise with several accumulators), used with flags that restore both (kir/lower.py)
COMBINES = ("add", "mul", "max", "min", "and", "or", "fmax", "fmin")


# ---- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    """A scalar variable: a loop index (int64), a computed value, an accumulator."""

    name: str
    dtype: DType


@dataclass(frozen=True)
class Lit:
    value: Any  # bool, int, float (may be inf or nan)
    dtype: DType


@dataclass(frozen=True)
class Dim:
    """The k-th extent of the kernel's domain."""

    k: int
    dtype: DType = int64


@dataclass(frozen=True)
class Load:
    buf: str
    index: tuple[Expr, ...]  # () for a 0-d array
    dtype: DType


@dataclass(frozen=True)
class Op:
    op: str  # a key of SCALAR_OPS
    args: tuple[Expr, ...]
    dtype: DType  # the result's
    attrs: tuple[tuple[str, Any], ...] = ()  # static attributes (cast's dtype, clamp's bounds)

    def attr(self, name: str) -> Any:
        return dict(self.attrs)[name]


Expr = Var | Lit | Dim | Load | Op


# ---- statements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Let:
    var: Var
    value: Expr
    note: str = ""  # which graph node this computes ("%3 sub"), printed and rendered


@dataclass(frozen=True)
class Store:
    buf: str
    index: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True)
class Accum:
    """`var = combine(var, value)`; the order of the updates is free (a reduction)."""

    var: Var
    combine: str
    value: Expr


@dataclass(frozen=True)
class Alloc:
    """A scratch array the kernel owns (a row kept between passes, an accumulator array)."""

    buf: str
    shape: tuple[Expr, ...]
    dtype: DType
    fill: Lit | None = None  # None: uninitialised


@dataclass(frozen=True)
class Prefetch:
    """A hint: bring buf[index] into cache (for writing with `write`), when `guard` holds (the
    index is then inside the array). Changes no value."""

    buf: str
    index: tuple[Expr, ...]
    guard: Expr
    write: bool = False


@dataclass(frozen=True)
class Loop:
    """`for var in range(start, extent, step)` (start 0 unless given)."""

    var: Var
    extent: Expr
    body: tuple[Stmt, ...]
    parallel: bool = False
    start: Expr | None = None
    step: int = 1


Stmt = Let | Store | Accum | Alloc | Prefetch | Loop


@dataclass(frozen=True)
class Param:
    name: str
    dtype: DType
    ndim: int
    out: bool = False  # written by the kernel (results); inputs are only read
    # a scratch array the caller passes (in the domain's extents), whose contents the kernel
    # never reads before it writes them: `kir.passes.scratch_params` makes them of `Alloc`s
    scratch: tuple[Expr, ...] | None = None


@dataclass(frozen=True)
class Kernel:
    hint: str  # a readable part of the name ("sub_exp_sum_div")
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    note: str = ""  # what it fuses, one line
    rank: int = 0  # the domain's rank
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


# ---- traversal ------------------------------------------------------------------------------


def sub_exprs(e: Expr) -> Iterator[Expr]:
    yield e
    if isinstance(e, Load):
        for i in e.index:
            yield from sub_exprs(i)
    elif isinstance(e, Op):
        for a in e.args:
            yield from sub_exprs(a)


def stmts(body: tuple[Stmt, ...]) -> Iterator[Stmt]:
    for s in body:
        yield s
        if isinstance(s, Loop):
            yield from stmts(s.body)


# ---- printing -------------------------------------------------------------------------------


def _lit(v: Any) -> str:
    if isinstance(v, float) and v != v:
        return "nan"
    return repr(v)


def format_expr(e: Expr) -> str:
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Lit):
        if e.dtype is int64 and isinstance(e.value, int):
            return str(e.value)  # index arithmetic
        return f"{_lit(e.value)}:{e.dtype.short}"
    if isinstance(e, Dim):
        return f"D{e.k}"
    if isinstance(e, Load):
        return f"{e.buf}[{', '.join(format_expr(i) for i in e.index)}]"
    attrs = "".join(f" {k}={v.short if isinstance(v, DType) else format_expr(v)}"
                    if isinstance(v, (DType, Lit)) else f" {k}={_lit(v)}" for k, v in e.attrs)
    return f"{e.op}{attrs}({', '.join(format_expr(a) for a in e.args)})"


def _format_body(body: tuple[Stmt, ...], indent: str, out: list[str]) -> None:
    for s in body:
        if isinstance(s, Let):
            note = f"  # {s.note}" if s.note else ""
            out.append(f"{indent}{s.var.name}: {s.var.dtype.short} = {format_expr(s.value)}{note}")
        elif isinstance(s, Store):
            out.append(f"{indent}{s.buf}[{', '.join(format_expr(i) for i in s.index)}] = "
                       f"{format_expr(s.value)}")
        elif isinstance(s, Accum):
            out.append(f"{indent}{s.var.name} <{s.combine}= {format_expr(s.value)}")
        elif isinstance(s, Prefetch):
            out.append(f"{indent}prefetch{'w' if s.write else ''} {s.buf}"
                       f"[{', '.join(format_expr(i) for i in s.index)}] if "
                       f"{format_expr(s.guard)}")
        elif isinstance(s, Alloc):
            fill = f" fill {format_expr(s.fill)}" if s.fill is not None else ""
            out.append(f"{indent}{s.buf} = alloc {s.dtype.short}"
                       f"[{', '.join(format_expr(d) for d in s.shape)}]{fill}")
        else:
            kind = " parallel" if s.parallel else ""
            span = format_expr(s.extent) if s.start is None else \
                f"{format_expr(s.start)}..{format_expr(s.extent)}"
            step = f" step {s.step}" if s.step != 1 else ""
            out.append(f"{indent}for {s.var.name} in {span}{step}{kind}:")
            _format_body(s.body, indent + "  ", out)


def format_kernel(k: Kernel, name: str | None = None) -> str:
    """The kernel as text: a signature line, then the body, two spaces per level."""
    params = ", ".join(f"{p.name}: {p.dtype.short}{'[' + ','.join('_' * p.ndim) + ']'}"
                       f"{' scratch' if p.scratch is not None else ' out' if p.out else ''}"
                       for p in k.params)
    note = f"  # {k.note}" if k.note else ""
    dom = f"[{', '.join(f'D{i}' for i in range(k.rank))}]"
    lines = [f"kernel {name or k.hint}(domain {dom}; {params}){note}"]
    _format_body(k.body, "  ", lines)
    return "\n".join(lines) + "\n"
