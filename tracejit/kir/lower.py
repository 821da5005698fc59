"""Lowering: a `fused` node of the graph IR, or a lone reduction, becomes a kernel IR Kernel.

A fused group lowers to loops over its domain's leading (row) dimensions and, inside, one loop
nest per pass over the reduced dimensions (kir/schedule.py); a group without reductions is one
loop nest. Scalar expressions come from the members' ops (`OpDef.scalar` names a kernel IR
scalar op), with operands converted to the op's compute dtype and typed literals, as eager
mode computes them. Values computed in one pass and read in a later one are kept in a scratch
row (or read back from the result they were stored to)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..dtypes import DType
from ..ir.graph import Const, Node, Region, Value
from ..ops.registry import ReduceSpec
from ..ops.structural import FUSED
from .ir import (
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
)
from .passes import optimise
from .schedule import Schedule, is_reduction, schedule

I64 = dt.int64
CHUNK = 256  # elements per float32 partial sum (see _Fused._chunked)
# a value a later pass reads is computed again there when it takes at most REMAT_OPS of these:
# a store of a scratch row and its load become the reload of an input that pass reads anyway
REMAT_OPS = 2
REMAT_CHEAP = {"add", "sub", "mul", "neg", "abs", "maximum", "minimum", "relu", "cast",
               "where", "eq", "ne", "lt", "le", "gt", "ge"}
# software prefetch (see _Fused._streams, _prefetch_next_row): streams of at least PF_MIN_STREAM
# elements go in steps of PF_STEP, asking for PF_AHEAD elements ahead (one hint per PF_LINE: a
# step of 64 float32 is four 512-bit vectors, which LLVM interleaves; a step of one vector kept
# GELU's exp chain latency-bound: 0.52 -> 0.37 ns an element over 2^24); rows of at least
# PF_MIN_ROW elements (PF_MIN_TOTAL in all) ask for the next row, one hint per PF_LINE elements
PF_MIN_STREAM, PF_STEP, PF_AHEAD = 1 << 16, 64, 2048
PF_MIN_ROW, PF_MIN_TOTAL, PF_LINE = 256, 1 << 18, 16


# ---- scalar expressions ---------------------------------------------------------------------


def _spec(m: Node) -> ReduceSpec:
    assert m.op.reduce is not None
    return m.op.reduce


def compute_dtypes(n: Node) -> list[DType | None]:
    """The dtype each operand is converted to before the op's scalar expression runs."""
    if n.op.compute_dtype is None:
        return [None] * len(n.inputs)
    types = [v.type if isinstance(v, Value) else v.value for v in n.inputs]
    cd = n.op.compute_dtype(types)
    return list(cd) if isinstance(cd, tuple) else [cd] * len(n.inputs)


def cast(e: Expr, d: DType) -> Expr:
    if e.dtype is d:
        return e
    if isinstance(e, Lit):
        return Lit(_convert(e.value, d), d)
    return Op("cast", (e,), d, (("dtype", d),))


def _convert(v: Any, d: DType) -> Any:
    if d is dt.bool_:
        return bool(v)
    if d.is_floating_point:
        return float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return v  # an integer cast of inf/nan: left to the renderer's conversion
    return int(v)


def scalar_expr(m: Node, args: list[Expr | None]) -> Expr:
    """The member's scalar computation over operand expressions (None where the operand is a
    Const), in the op's compute dtypes, giving the output dtype."""
    assert m.op.scalar is not None
    cds = compute_dtypes(m)
    ops: list[Expr] = []
    for o, a, cd in zip(m.inputs, args, cds):
        if isinstance(o, Const):
            d = cd or o.dtype
            ops.append(Lit(_convert(o.value, d), d))
        else:
            assert a is not None
            ops.append(cast(a, cd) if cd is not None else a)
    out = m.out.type.dtype
    attrs: list[tuple[str, Any]] = []
    for k, v in m.attrs.items():
        if isinstance(v, DType):
            attrs.append((k, v))
        elif isinstance(v, (bool, int, float)) or v is None:
            attrs.append((k, None if v is None else Lit(_convert(v, out), out)))
    name = m.op.scalar
    if name == "pow" and isinstance(ops[1], Lit) and float(ops[1].value).is_integer() and \
            abs(ops[1].value) <= 8 and (ops[0].dtype.is_floating_point or ops[1].value >= 0) \
            and ops[0].dtype is not dt.bool_:
        # x ** 3: multiplications, not a libm call (vectorisable)
        return cast(Op("ipow", (ops[0],), ops[0].dtype, (("n", int(ops[1].value)),)), out)
    return Op(name, tuple(ops), out, tuple(attrs))


# ---- reductions -----------------------------------------------------------------------------

COMBINE_OP = {"add": "add", "mul": "mul", "max": "maximum", "min": "minimum",
              "and": "logical_and", "or": "logical_or"}


def acc_dtype(spec: ReduceSpec, out: DType) -> DType:
    # float sums and products accumulate in float64 (NumPy sums pairwise instead)
    if out.is_floating_point and spec.combine in ("add", "mul"):
        return dt.float64
    return out


def init_lit(spec: ReduceSpec, d: DType) -> Lit:
    v = spec.init
    if d is dt.bool_:
        return Lit(bool(v) if not isinstance(v, float) else v > 0, d)
    if isinstance(v, float) and math.isinf(v) and not d.is_floating_point:
        info = np.iinfo(d.np)
        return Lit(int(info.min if v < 0 else info.max), d)
    return Lit(_convert(v, d), d)


# ---- fused groups ---------------------------------------------------------------------------


def _nest(idx: list[Var], dims: range | list[int], body: list[Stmt]) -> list[Stmt]:
    """Loops over the domain's dimensions `dims` (outermost first) around `body`."""
    for d in reversed(dims):
        body = [Loop(idx[d], Dim(d), tuple(body))]
    return body


def _block_end(c: Var, step: int, extent: Expr) -> Expr:
    """min(c + step, extent): where the block starting at c ends."""
    return Op("minimum", (Op("add", (c, Lit(step, I64)), I64), extent), I64)


def _blocked(i: Var, c: Var, extent: Expr, step: int, head: list[Stmt], body: list[Stmt],
             tail: list[Stmt]) -> Loop:
    """`for c in range(0, extent, step)`: head, then `for i in c..min(c + step, extent)`:
    body, then tail (chunked partial sums, prefetched streams)."""
    inner = Loop(i, _block_end(c, step, extent), tuple(body), start=c)
    return Loop(c, extent, (*head, inner, *tail), step=step)


def _aligned_index(shape: tuple[int, ...], rank: int, idx: Sequence[Expr]) -> tuple[Expr, ...]:
    """Index reading an array of `shape` broadcast (right-aligned) against loops `idx` over a
    shape of `rank` dimensions; broadcast dimensions read at 0."""
    lead = rank - len(shape)
    return tuple(idx[lead + j] if n != 1 else Lit(0, I64) for j, n in enumerate(shape))


class _Fused:
    def __init__(self, n: Node, alias: dict[int, int] | None = None, gpu: bool = False) -> None:
        body: Region = n.attrs["body"]
        # gpu: the schedule a GPU renderer maps rows to blocks with (codegen/cuda.py): no
        # software prefetch, no chunked float64 partials (a float32 sum stays float32: the
        # block's tree of partial sums keeps it accurate, and a float32 kernel runs no float64
        # instruction), and a scratch row per row of the domain (rows run at once)
        self.gpu = gpu
        self.body = body
        domain = tuple(n.attrs.get("domain", n.outs[0].type.shape))
        self.s: Schedule = schedule(body, domain, n.attrs.get("rdims", 0))
        self.r = len(domain)
        self.m = self.s.outer
        self.idx = [Var(f"i{d}", I64) for d in range(self.r)]
        self.pname = {p: f"a{j}" for j, p in enumerate(body.params)}
        self.oname = {v: f"o{k}" for k, v in enumerate(body.results)}
        # results written into an operand's buffer (the buffer plan): stored through that
        # parameter, so LLVM sees one array read and written at the same index, not two
        # arrays it must check for overlap at run time (they always overlap: it then ran the
        # scalar loop, 2.3x slower for an SGD update of a (1000, 100) weight)
        self.alias = dict(alias or {})
        for k, j in self.alias.items():
            self.oname[body.results[k]] = self.pname[body.params[j]]
        self.written = {body.params[j] for j in self.alias.values()}  # inputs also outputs
        self.tname = {m.out: f"t{j}" for j, m in enumerate(body.nodes)}
        self.number = {m.out: j for j, m in enumerate(body.nodes)}
        # full values read in a pass after their own: computed again there when that costs an
        # operation or two on inputs and row scalars (layernorm's x - mean), else kept in a
        # scratch row (softmax's exp) unless stored
        self.node_of = {m.out: m for m in body.nodes}
        self.remat: set[Value] = set()
        self.kept: dict[Value, str] = {}
        for m in body.nodes:
            if self.s.kind[m.out] == "row":
                continue
            here = self.s.pass_of[m.out]
            for v in m.values_in():
                if self.s.kind.get(v) == "full" and self.s.pass_of[v] < here and \
                        v not in self.oname and v not in self.kept and v not in self.remat:
                    if self._recompute_cost(v) <= REMAT_OPS:
                        self._add_remat(v)
                    else:
                        self.kept[v] = f"s{len(self.kept)}"

    def _add_remat(self, v: Value) -> None:
        """v and the full values of the group it is computed from (all cheap: see
        _recompute_cost) are computed again where a later pass reads them."""
        self.remat.add(v)
        for i in self.node_of[v].inputs:
            if isinstance(i, Value) and self.s.kind.get(i) == "full":
                self._add_remat(i)

    def _recompute_cost(self, v: Value) -> int:
        """How many cheap operations computing v again takes from the group's inputs, row
        scalars and constants (REMAT_OPS + 1 when it reads anything else, or an input the
        kernel writes: a later pass would read the new value)."""
        m = self.node_of[v]
        if m.op.scalar not in REMAT_CHEAP:
            return REMAT_OPS + 1
        cost = 1
        for i in m.inputs:
            if not isinstance(i, Value):
                continue
            kind = self.s.kind.get(i)
            if kind in ("row", "reduce"):
                continue
            if kind is None:  # a parameter
                if i in self.written:
                    return REMAT_OPS + 1
                continue
            if kind != "full" or i in self.oname:
                return REMAT_OPS + 1
            cost += self._recompute_cost(i)
        return cost

    def _var(self, v: Value) -> Var:
        return Var(self.tname[v], v.type.dtype)

    def _full_operand(self, v: Value, p: int, out: list[Stmt], cache: dict[Value, Var]) -> Expr:
        if v in cache:
            return cache[v]
        kind = self.s.kind.get(v)
        if kind in ("row", "reduce"):
            return self._var(v)
        if kind == "full" and self.s.pass_of[v] == p:
            return self._var(v)
        if kind == "full" and v in self.remat:  # an earlier pass's value, computed again
            m = self.node_of[v]
            args = [self._full_operand(i, p, out, cache) if isinstance(i, Value) else None
                    for i in m.inputs]
            var = Var(f"q{self.number[v]}", v.type.dtype)
            out.append(Let(var, scalar_expr(m, args), f"%{self.number[v]} {m.name} again"))
            cache[v] = var
            return var
        if kind == "full":  # an earlier pass's value: read back
            if v in self.oname:
                load = Load(self.oname[v], tuple(self.idx), v.type.dtype)
            else:
                load = Load(self.kept[v], self._row_index(), v.type.dtype)
            var = Var(f"r{self.number[v]}", v.type.dtype)
        else:  # a parameter
            j = self.body.params.index(v)
            load = Load(self.pname[v], _aligned_index(v.type.shape, self.r, self.idx),
                        v.type.dtype)
            var = Var(f"x{j}", v.type.dtype)
        out.append(Let(var, load))
        cache[v] = var
        return var

    def _pass_body(self, p: int) -> list[Stmt]:
        out: list[Stmt] = []
        cache: dict[Value, Var] = {}
        for j, m in enumerate(self.body.nodes):
            v = m.out
            if self.s.kind[v] == "row" or self.s.pass_of[v] != p:
                continue
            args = [self._full_operand(i, p, out, cache) if isinstance(i, Value) else None
                    for i in m.inputs]
            note = f"%{j} {m.name}"
            if is_reduction(m):
                assert m.op.reduce is not None
                a = args[0]
                assert a is not None
                if self.s.kind[v] == "col":  # a column total: one accumulator per column
                    d = self._acc_dtype(m.op.reduce, v.type.dtype)
                    idx = tuple(self.idx[self.m:])
                    out.append(Store(f"cacc{j}", idx, Op(COMBINE_OP[m.op.reduce.combine],
                                                         (Load(f"cacc{j}", idx, d), cast(a, d)),
                                                         d)))
                    continue
                if self._chunked(m):  # into the chunk's float32 partial
                    part = Var(f"acc{j}c", m.out.type.dtype)
                    out.append(Accum(part, m.op.reduce.combine, cast(a, part.dtype)))
                    continue
                acc = Var(f"acc{j}", self._acc_dtype(m.op.reduce, v.type.dtype))
                if self._quick_extreme(m):  # fmax/fmin, and the flags that make it exact
                    a = cast(a, acc.dtype)
                    out.append(Accum(acc, "f" + m.op.reduce.combine, a))
                    out.append(Accum(Var(f"nan{j}", dt.bool_), "or",
                                     Op("ne", (a, a), dt.bool_)))
                    zero = "is_pos_zero" if m.op.reduce.combine == "max" else "is_neg_zero"
                    out.append(Accum(Var(f"zero{j}", dt.bool_), "or", Op(zero, (a,), dt.bool_)))
                    continue
                out.append(Accum(acc, m.op.reduce.combine, cast(a, acc.dtype)))
                continue
            out.append(Let(self._var(v), scalar_expr(m, args), note))
        for v in self.body.results:
            if self.s.kind[v] == "full" and self.s.pass_of[v] == p:
                out.append(Store(self.oname[v], tuple(self.idx), self._var(v)))
        for v, buf in self.kept.items():
            if self.s.pass_of[v] == p:
                out.append(Store(buf, self._row_index(), self._var(v)))
        return out

    def _row_operand(self, v: Value, shape: tuple[int, ...], out: list[Stmt]) -> Expr:
        if v in self.s.kind:
            return self._var(v)
        j = self.body.params.index(v)
        # a parameter broadcast to the row's shape: index by the row loops only
        if len(shape) == self.r:
            idx: list[Expr] = [*self.idx[:self.m], *[Lit(0, I64)] * self.s.rdims]
        else:
            idx = list(self.idx[:self.m])
        var = Var(f"y{j}_{len(out)}", v.type.dtype)
        out.append(Let(var, Load(self.pname[v], _aligned_index(v.type.shape, len(shape), idx),
                                 v.type.dtype)))
        return var

    def _between(self, ready: int) -> list[Stmt]:
        """Row values that become ready before pass `ready`: reductions' results, then the
        row members over them, then their stores."""
        out: list[Stmt] = []
        for j, m in enumerate(self.body.nodes):
            v = m.out
            if self.s.kind[v] in ("full", "col") or self.s.ready[v] != ready:
                continue
            note = f"%{j} {m.name}"
            if is_reduction(m):
                acc = Var(f"acc{j}", self._acc_dtype(_spec(m), v.type.dtype))
                value: Expr = acc
                if self._quick_extreme(m):
                    value = self._exact_extreme(j, acc, _spec(m).combine == "max")
                out.append(Let(self._var(v), cast(value, v.type.dtype), note))
                continue
            args = [self._row_operand(i, m.out.type.shape, out) if isinstance(i, Value)
                    else None for i in m.inputs]
            out.append(Let(self._var(v), scalar_expr(m, args), note))
        for v in self.body.results:
            if self.s.kind[v] in ("row", "reduce") and self.s.ready[v] == ready:
                keep = len(v.type.shape) == self.r
                idx = tuple(self.idx[:self.m]) + ((Lit(0, I64),) * self.s.rdims if keep else ())
                out.append(Store(self.oname[v], idx, self._var(v)))
        return out

    def _inits(self, p: int) -> list[Stmt]:
        out: list[Stmt] = []
        for j, m in enumerate(self.body.nodes):
            if is_reduction(m) and self.s.pass_of[m.out] == p and self.s.kind[m.out] != "col":
                assert m.op.reduce is not None
                d = self._acc_dtype(m.op.reduce, m.out.type.dtype)
                out.append(Let(Var(f"acc{j}", d), init_lit(m.op.reduce, d)))
                if self._quick_extreme(m):
                    out.append(Let(Var(f"nan{j}", dt.bool_), Lit(False, dt.bool_)))
                    out.append(Let(Var(f"zero{j}", dt.bool_), Lit(False, dt.bool_)))
        return out

    def _acc_dtype(self, spec: ReduceSpec, out: DType) -> DType:
        if self.gpu and out is dt.float32:
            return out
        return acc_dtype(spec, out)

    def _row_index(self) -> tuple[Expr, ...]:
        """How a scratch row is indexed: by the reduced loops (one row at a time), or on a
        GPU by every loop (one scratch row per row of the domain)."""
        return tuple(self.idx) if self.gpu else tuple(self.idx[self.m:])

    def _quick_extreme(self, m: Node) -> bool:
        """A float max or min of a row: accumulated with fmax/fmin (one vector instruction,
        several accumulators in flight) beside two flags, whether a NaN was seen and whether a
        +0.0 (max) or -0.0 (min) was, which make the result exactly IEEE 754-2019's."""
        spec = m.op.reduce
        return spec is not None and spec.combine in ("max", "min") and \
            m.out.type.dtype.is_floating_point and self.s.kind[m.out] == "reduce"

    def _exact_extreme(self, j: int, acc: Var, is_max: bool) -> Expr:
        """NaN if a NaN was seen; a zero result is +0.0 for max when a +0.0 was seen (else
        -0.0), -0.0 for min when a -0.0 was (else +0.0); otherwise what fmax/fmin found."""
        d = acc.dtype
        seen, nan = Var(f"zero{j}", dt.bool_), Var(f"nan{j}", dt.bool_)
        pos, neg = Lit(0.0, d), Lit(-0.0, d)
        zero = Op("where", (seen, pos, neg) if is_max else (seen, neg, pos), d)
        is_zero = Op("eq", (acc, Lit(0.0, d)), dt.bool_)
        return Op("where", (nan, Lit(math.nan, d), Op("where", (is_zero, zero, acc), d)), d)

    def _chunked(self, m: Node) -> bool:
        """A float32 sum or product accumulates in float64 through float32 partial results,
        one per CHUNK elements of the innermost reduced loop: a float64 accumulator fed by
        float32 work (exp) keeps LLVM from vectorising the loop; a float32 one alone would
        lose accuracy over long rows."""
        assert m.op.reduce is not None
        return not self.gpu and \
            acc_dtype(m.op.reduce, m.out.type.dtype) is not m.out.type.dtype and \
            m.out.type.dtype is dt.float32

    def _reduced_loops(self, p: int, inner: list[Stmt]) -> list[Stmt]:
        """The loop nest of pass p over the reduced dimensions around its body."""
        chunked = [(j, m) for j, m in enumerate(self.body.nodes)
                   if is_reduction(m) and self.s.pass_of[m.out] == p and
                   self.s.kind[m.out] == "reduce" and self._chunked(m)]
        if not chunked:
            return _nest(self.idx, range(self.m, self.r), inner)
        last = self.r - 1
        head: list[Stmt] = [Let(Var(f"acc{j}c", dt.float32), init_lit(_spec(m), dt.float32))
                            for j, m in chunked]
        if self._prefetches_next_row() and p == self._chunked_pass():
            # this block's share of the next row's lines (see _prefetch_next_row)
            c, h = Var(f"c{last}", I64), Var(f"h{last}", I64)
            head.append(Loop(h, _block_end(c, CHUNK, Dim(last)), self._next_row_hints(h),
                             start=c, step=PF_LINE))
        tail: list[Stmt] = [Accum(Var(f"acc{j}", dt.float64), _spec(m).combine,
                                  cast(Var(f"acc{j}c", dt.float32), dt.float64))
                            for j, m in chunked]
        blocked = _blocked(self.idx[last], Var(f"c{last}", I64), Dim(last), CHUNK, head, inner,
                           tail)
        return _nest(self.idx, range(self.m, last), [blocked])

    # ---- software prefetch (kernels/cpu/prefetch.py): only for arrays far larger than cache

    def _full_arrays(self) -> list[tuple[str, bool]]:
        """(buffer, written) for the inputs and outputs of the domain's own shape."""
        written = {self.oname[v] for v in self.body.results if v.type.shape == self.s.domain}
        out = [(self.pname[p], False) for p in self.body.params
               if p.type.shape == self.s.domain and self.pname[p] not in written]
        out += [(self.oname[v], True) for v in self.body.results
                if v.type.shape == self.s.domain]
        return out

    def _streams(self) -> bool:
        """One pass over a long innermost dimension, no reductions: stream it in steps of
        PF_STEP, prefetching PF_AHEAD elements ahead."""
        dom = self.s.domain
        return not self.gpu and self.s.rdims == 0 and self.r >= 1 and \
            dom[-1] >= PF_MIN_STREAM and \
            bool(self._full_arrays())

    def _prefetched_stream(self, body: list[Stmt]) -> list[Stmt]:
        last = self.r - 1
        c = Var(f"c{last}", I64)
        hints: list[Stmt] = []
        for off in range(PF_AHEAD, PF_AHEAD + PF_STEP, PF_LINE):  # one hint per cache line
            ahead = Op("add", (c, Lit(off, I64)), I64)
            guard = Op("lt", (ahead, Dim(last)), dt.bool_)
            hints += [Prefetch(buf, (*self.idx[:last], ahead), guard, write)
                      for buf, write in self._full_arrays()]
        return [_blocked(self.idx[last], c, Dim(last), PF_STEP, hints, body, [])]

    def _prefetches_next_row(self) -> bool:
        dom = self.s.domain
        return not self.gpu and self.r == 2 and self.s.rdims == 1 and dom[0] > 1 and \
            dom[1] >= PF_MIN_ROW and \
            dom[0] * dom[1] >= PF_MIN_TOTAL and bool(self._full_arrays())

    def _next_row_hints(self, c: Var) -> tuple[Stmt, ...]:
        nxt = Op("add", (self.idx[0], Lit(1, I64)), I64)
        guard = Op("lt", (nxt, Dim(0)), dt.bool_)
        return tuple(Prefetch(buf, (nxt, c), guard, write) for buf, write in self._full_arrays())

    def _prefetch_next_row(self) -> list[Stmt]:
        """Rows of a 2-d domain reduced over its last dimension: ask for the next row's cache
        lines while this row's passes compute (they read the row from cache). Spread over the
        blocks of the first chunked pass when there is one (`_chunked_pass`): a burst of one
        hint per line at the row's start fills the CPU's queue of misses and waits (softmax
        over (4096, 1024): 2.0 ms with the burst, 1.3 ms spread over the exp pass)."""
        if not self._prefetches_next_row() or self._chunked_pass() is not None:
            return []
        c = Var("c1", I64)
        return [Loop(c, Dim(1), self._next_row_hints(c), step=PF_LINE)]

    def _chunked_pass(self) -> int | None:
        """The first pass with chunked partial sums (its loop goes in blocks of CHUNK)."""
        for m in self.body.nodes:
            if is_reduction(m) and self.s.kind[m.out] == "reduce" and self._chunked(m):
                return self.s.pass_of[m.out]
        return None

    def kernel(self) -> Kernel:
        body = self.body
        params = [Param(f"a{j}", p.type.dtype, len(p.type.shape), out=p in self.written)
                  for j, p in enumerate(body.params)]
        params += [Param(f"o{k}", v.type.dtype, len(v.type.shape), out=True)
                   for k, v in enumerate(body.results) if k not in self.alias]
        first = 0 if self.gpu else self.m
        top: list[Stmt] = [Alloc(buf, tuple(Dim(d) for d in range(first, self.r)),
                                 v.type.dtype) for v, buf in self.kept.items()]
        cols = [(j, m) for j, m in enumerate(body.nodes) if self.s.kind[m.out] == "col"]
        for j, m in cols:
            ad = self._acc_dtype(_spec(m), m.out.type.dtype)
            top.append(Alloc(f"cacc{j}", tuple(Dim(k) for k in range(self.m, self.r)), ad,
                             init_lit(_spec(m), ad)))
        row: list[Stmt] = self._between(0)  # per-row scalars of the inputs alone
        for p in range(self.s.npasses):
            row += self._inits(p)
            row += self._reduced_loops(p, self._pass_body(p))
            row += self._between(p + 1)
        row = self._prefetch_next_row() + row
        if self._streams():
            nest = _nest(self.idx, range(self.m - 1), self._prefetched_stream(row))
        else:
            nest = _nest(self.idx, range(self.m), row)
        for j, m in cols:  # every row is done: store the column totals
            if m.out not in self.oname:
                continue
            ad = self._acc_dtype(_spec(m), m.out.type.dtype)
            idx = tuple(self.idx[self.m:])
            keep = len(m.out.type.shape) == self.r
            oidx = ((Lit(0, I64),) * self.m if keep else ()) + idx
            nest += _nest(self.idx, range(self.m, self.r),
                          [Store(self.oname[m.out], oidx,
                                 cast(Load(f"cacc{j}", idx, ad), m.out.type.dtype))])
        hint = "_".join(m.name for m in body.nodes)
        note = " ; ".join(m.name for m in body.nodes)
        # how a GPU renderer maps the loops (not printed: CPU kernels and goldens unchanged)
        meta = {"outer": self.m, "rdims": self.s.rdims, "cols": len(cols)}
        return Kernel(hint, tuple(params), tuple(top + nest), note, self.r, meta)


def lower_fused(n: Node, alias: dict[int, int] | None = None, gpu: bool = False) -> Kernel:
    """The kernel of a fused node. `alias` maps a result's index to the operand whose buffer
    it is written into (the buffer plan's reuse): the kernel then has no parameter for that
    result and stores through the operand's. `gpu`: the schedule for a GPU renderer (see
    _Fused); meta["outer"] says how many leading loops are rows."""
    return optimise(_Fused(n, alias, gpu).kernel())


# ---- a lone reduction -----------------------------------------------------------------------


def lower_reduce(n: Node) -> Kernel:
    """Any reduction over any dims (and the arg-reductions): loops over the input in order,
    accumulating into an array of the kept shape, then a loop storing the result. (Trailing
    reductions fused with elementwise work go through lower_fused instead.)"""
    assert n.op.reduce is not None
    spec = n.op.reduce
    x = n.inputs[0]
    assert isinstance(x, Value)
    xt, out = x.type, n.out.type
    r = len(xt.shape)
    if spec.index:
        dim = n.attrs["dim"]
        dims = tuple(range(r)) if dim is None else ((dim,) if r else ())
    else:
        dims = tuple(n.attrs["dims"])
    keepdim = bool(n.attrs.get("keepdim"))
    idx = [Var(f"i{d}", I64) for d in range(r)]
    zero = Lit(0, I64)
    kidx = tuple(zero if d in dims else idx[d] for d in range(r))
    kshape = tuple(Lit(1, I64) if d in dims else Dim(d) for d in range(r))
    xd = xt.dtype
    v = Var("v", xd)
    body: list[Stmt] = [Let(v, Load("a0", tuple(idx), xd))]
    top: list[Stmt] = []
    if spec.index:
        top.append(Alloc("best", kshape, xd, init_lit(spec, xd)))
        top.append(Alloc("acc", kshape, I64, Lit(0, I64)))
        best = Var("b", xd)
        body.append(Let(best, Load("best", kidx, xd)))
        wins = Op("gt" if spec.combine == "argmax" else "lt", (v, best), dt.bool_)
        nan = Op("logical_and", (Op("ne", (v, v), dt.bool_), Op("eq", (best, best), dt.bool_)),
                 dt.bool_)
        cond = Var("w", dt.bool_)
        body.append(Let(cond, Op("logical_or", (wins, nan), dt.bool_)))
        if dim is None:  # the flat position
            pos: Expr = Lit(0, I64)
            for d in range(r):
                pos = Op("add", (Op("mul", (pos, Dim(d)), I64), idx[d]), I64)
        else:
            pos = idx[dims[0]] if r else Lit(0, I64)
        body.append(Store("best", kidx, Op("where", (cond, v, best), xd)))
        body.append(Store("acc", kidx, Op("where", (cond, pos, Load("acc", kidx, I64)), I64)))
        result: Expr = Load("acc", kidx, I64)
    else:
        ad = acc_dtype(spec, out.dtype)
        top.append(Alloc("acc", kshape, ad, init_lit(spec, ad)))
        body.append(Store("acc", kidx, Op(COMBINE_OP[spec.combine],
                                          (Load("acc", kidx, ad), cast(v, ad)), ad)))
        result = cast(Load("acc", kidx, ad), out.dtype)
    nest = _nest(idx, range(r), body)
    oidx = tuple(zero if d in dims else idx[d] for d in range(r) if keepdim or d not in dims)
    final = _nest(idx, [d for d in range(r) if d not in dims], [Store("o0", oidx, result)])
    params = (Param("a0", xd, r), Param("o0", out.dtype, len(out.shape), out=True))
    return optimise(Kernel(n.name, params, tuple(top + nest + final), n.name, r))


def lower_reduce_rows(n: Node) -> Kernel:
    """A lone reduction as rows for a GPU renderer: the domain is the input's kept dimensions
    (the rows, meta["outer"] of them) then its reduced ones, so one row of the domain is one
    output element and every reduced loop follows the rows (a block per row, its threads over
    the row). Float32 sums accumulate in float32 (the block's tree of partials). Index
    reductions (argmax/argmin) are not lowered here: ValueError."""
    assert n.op.reduce is not None
    spec = n.op.reduce
    if spec.index:
        raise ValueError(f"{n.name}: an index reduction has no row lowering")
    x = n.inputs[0]
    assert isinstance(x, Value)
    xt, out = x.type, n.out.type
    r = len(xt.shape)
    dims = tuple(d % r for d in n.attrs["dims"]) if r else ()
    keepdim = bool(n.attrs.get("keepdim"))
    kept = [d for d in range(r) if d not in dims]
    order = kept + [d for d in range(r) if d in dims]  # domain position -> input dimension
    m = len(kept)
    idx = [Var(f"i{k}", I64) for k in range(r)]
    of_dim = {d: idx[k] for k, d in enumerate(order)}
    xd = xt.dtype
    ad = out.dtype if out.dtype is dt.float32 else acc_dtype(spec, out.dtype)
    acc = Var("acc", ad)
    v = Var("v", xd)
    inner: list[Stmt] = [Let(v, Load("a0", tuple(of_dim[d] for d in range(r)), xd)),
                         Accum(acc, spec.combine, cast(v, ad))]
    zero = Lit(0, I64)
    oidx = tuple(zero if d in dims else of_dim[d] for d in range(r) if keepdim or d not in dims)
    row: list[Stmt] = [Let(acc, init_lit(spec, ad)), *_nest(idx, range(m, r), inner),
                       Store("o0", oidx, cast(acc, out.dtype))]
    params = (Param("a0", xd, r), Param("o0", out.dtype, len(out.shape), out=True))
    meta = {"outer": m, "rdims": r - m, "cols": 0, "domain": tuple(xt.shape[d] for d in order)}
    return Kernel(n.name, params, tuple(_nest(idx, range(m), row)), n.name, r, meta)


# ---- a whole graph ---------------------------------------------------------------------------


def graph_kernels(g: Any, plan: Any = None) -> list[tuple[int, Kernel]]:
    """The kernel IR of every node of a graph that codegen lowers through it (fused groups and
    reductions), with the node's index, as `step.ir()` shows them; with the buffer plan the
    codegen uses, fused kernels store into the operands the plan reuses."""
    out = []
    for i, n in enumerate(g.nodes):
        if n.op is FUSED:
            out.append((i, lower_fused(n, plan.for_node(i) if plan is not None else None)))
        elif n.op.reduce is not None:
            out.append((i, lower_reduce(n)))
    return out


def format_graph_kernels(g: Any, plan: Any = None) -> str:
    """Every kernel of `g` in print order, those inside control regions too (each region with
    the buffer plan the driver gives it), named by the number of the node's first result."""
    from ..ir.printer import value_numbers

    parts = _kernel_texts(g, plan, value_numbers(g))
    return "kernels:\n" + "\n".join(parts) if parts else ""


def _kernel_texts(g: Any, plan: Any, num: list[int]) -> list[str]:
    from ..ir.graph import Graph
    from ..ir.plan import make_plan
    from ..ir.printer import value_numbers, values_printed
    from .ir import format_kernel

    kernels = dict(graph_kernels(g, plan))
    parts = []
    for i, n in enumerate(g.nodes):
        if i in kernels:
            parts.append(format_kernel(kernels[i], f"%{num[i]}"))
        if n.op.control:
            base = num[i] + len(n.outs)
            for r in n.regions():
                sub = Graph(g.name, r.params, (), r.nodes, r.results)
                sub_num = [base + len(r.params) + k for k in value_numbers(sub)]
                parts += _kernel_texts(sub, make_plan(sub), sub_num)
                base += len(r.params) + sum(values_printed(m) for m in r.nodes)
    return parts
