"""Stage 4, CUDA: the kernel IR rendered as `numba.cuda.jit` kernels, a second renderer of the
same IR as codegen/cpu.py, not a second compiler. Each fused group (lowered with
`lower_fused(..., gpu=True)`: the GPU schedule of kir/lower.py) becomes one kernel with one
explicit signature:

- no reduction: a grid-stride loop over the flattened domain, each element's indices
  recovered from its flat position;
- a row reduction (softmax, layernorm, mse and their backward passes): one block per row
  (grid-stride over rows), each pass over the row a block-stride loop, and after it each of
  its accumulators combined across the block: warp shuffles (`shfl_down_sync`), one partial
  per warp in shared memory, `syncthreads`, the first warp combining the partials; every
  thread then reads the row's total, so the whole row is one kernel, one launch.
  Numba's CUDA simulator has no warp operations: under it the same kernel combines through a
  shared-memory tree instead (`warp=False`); compile_ptx checks the shuffle form.

`CudaProgram` runs a graph: the nodes' kernels launched in order on one stream over device
buffers planned once (every value that does not escape the call lives in a buffer allocated
when the program is built; the graph IR's buffer plan writes results into dying operands),
with no copy to the host inside a call. Matmul goes to cuBLAS when its library loads
(kernels/cuda/cublas.py), else to a tiled shared-memory kernel (kernels/cuda/gemm.py);
`explain()` says which. What it cannot render it refuses with UnsupportedError naming the op
and why. numba-cuda is imported only when a kernel is built (this module imports without it).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes as dt
from .. import kir
from ..dtypes import DType
from ..ir.graph import Const, Graph, Node, Value
from ..ir.plan import is_view, make_plan, verify_plan
from ..kir.lower import lower_fused, lower_reduce_rows
from ..ops.registry import Kind, np_name
from ..ops.structural import CONSTANT, FUSED
from ..runtime import cache
from .lower import UnsupportedError
from .writer import Writer

ELEM_THREADS = 256  # threads per block of a grid-stride kernel
ROW_THREADS = 256  # threads per block (one row) of a row kernel on a GPU: 8 warps
SIM_THREADS = 32  # ... under the simulator (each thread is a Python thread there)
MAX_BLOCKS = 1 << 16  # grid-stride: at most this many blocks, each thread then loops
FULL_MASK = 0xFFFFFFFF


def simulator() -> bool:
    """Is Numba's CUDA simulator on (NUMBA_ENABLE_CUDASIM=1)?"""
    import numba

    return bool(getattr(numba.config, "ENABLE_CUDASIM", False))


def missing() -> str | None:
    """Why CUDA kernels cannot be built here (one line), or None when they can."""
    try:
        from numba import cuda
    except Exception as e:  # noqa: BLE001 (any import failure means the same to the user)
        return (f"numba-cuda is not importable ({type(e).__name__}: {e}); install it with "
                "pip install 'numba-cuda==0.30.4' 'numpy<2.5'")
    if not hasattr(cuda, "jit"):
        return "numba.cuda has no jit: install numba-cuda (pip install 'numba-cuda==0.30.4')"
    if simulator():
        return None
    try:
        if not cuda.is_available():
            return ("no CUDA GPU is visible (cuda.is_available() is False); set "
                    "NUMBA_ENABLE_CUDASIM=1 to run on Numba's simulator")
    except Exception as e:  # noqa: BLE001
        return f"the CUDA driver failed to start ({type(e).__name__}: {str(e)[:120]})"
    return None


# ---- scalar expressions ------------------------------------------------------------------------

# float functions: libdevice's float32 (…f) and float64 spellings, so a float32 kernel never
# converts to double (math.exp on a float32 would still be float32 in Numba, but floor/ceil
# return int64 there and abs/round have no float32 overloads worth trusting)
_FN = {"exp": "expf", "log": "logf", "log1p": "log1pf", "expm1": "expm1f", "sqrt": "sqrtf",
       "rsqrt": "rsqrtf", "sin": "sinf", "cos": "cosf", "tanh": "tanhf", "erf": "erff",
       "floor": "floorf", "ceil": "ceilf", "round": "rintf", "abs": "fabsf", "pow": "powf"}
_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _fn(name: str, d: DType) -> str:
    f = _FN[name]
    if d is dt.float32:
        return f"_ld.{f}"
    if d is dt.float64:
        return f"_ld.{f[:-1]}"
    raise UnsupportedError(f"CUDA: {name} on {d.name} operands is not rendered (float32 and "
                           "float64 only; convert with .float())")


def _typed(d: DType, v: float | int | bool) -> str:
    if d is dt.bool_:
        return "True" if v else "False"
    if isinstance(v, float) and not math.isfinite(v):
        text = "np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf")
    else:
        text = repr(float(v) if d.is_floating_point else int(v))
    return f"{np_name(d)}({text})"


def render_lit(e: kir.Lit) -> str:
    if e.dtype is dt.int64 and isinstance(e.value, int) and not isinstance(e.value, bool):
        return str(e.value)  # index arithmetic (Numba types an int literal as int64)
    return _typed(e.dtype, e.value)


def _wrap(d: DType, text: str) -> str:
    """The value in dtype d (Numba widens int32 + int32 to int64; float32 stays float32)."""
    return text if d is dt.bool_ else f"{np_name(d)}({text})"


def _maximum(a: str, b: str) -> str:  # NaN in either gives NaN; a tie gives the second
    return f"({a} if ({a} > {b} or {a} != {a}) else {b})"


def _minimum(a: str, b: str) -> str:
    return f"({a} if ({a} < {b} or {a} != {a}) else {b})"


def render_expr(e: kir.Expr) -> str:
    if isinstance(e, kir.Var):
        return e.name
    if isinstance(e, kir.Lit):
        return render_lit(e)
    if isinstance(e, kir.Dim):
        return f"d{e.k}"
    if isinstance(e, kir.Load):
        return f"{e.buf}[{_index(e.index)}]"
    return _render_op(e)


def _render_op(e: kir.Op) -> str:
    op, d = e.op, e.dtype
    a = [render_expr(x) for x in e.args]
    x0 = e.args[0].dtype if e.args else d
    zero, one = _typed(x0, 0), _typed(x0, 1)
    if op in _ARITH:
        return _wrap(d, f"({a[0]} {_ARITH[op]} {a[1]})")
    if op in _CMP:
        return f"({a[0]} {_CMP[op]} {a[1]})"
    if op == "neg":
        return _wrap(d, f"(-{a[0]})") if d is not dt.bool_ else f"(not {a[0]})"
    if op == "cast":
        to: DType = e.attr("dtype")
        if to is dt.bool_:
            return f"({a[0]} != {zero})" if x0 is not dt.bool_ else a[0]
        return _wrap(to, a[0])
    if op in ("floor", "ceil", "round"):
        return a[0] if not x0.is_floating_point else _wrap(d, f"{_fn(op, x0)}({a[0]})")
    if op == "abs":
        if not x0.is_floating_point:
            return _wrap(d, f"({a[0]} if {a[0]} >= {zero} else -{a[0]})")
        return _wrap(d, f"{_fn(op, x0)}({a[0]})")
    if op in ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf"):
        return _wrap(d, f"{_fn(op, x0)}({a[0]})")
    if op == "pow":
        if not (x0.is_floating_point and e.args[1].dtype is x0):
            raise UnsupportedError(f"CUDA: pow of {x0.name} by {e.args[1].dtype.name} is not "
                                   "rendered (float ** float of one dtype only)")
        return _wrap(d, f"{_fn(op, x0)}({a[0]}, {a[1]})")
    if op == "sigmoid":  # split on the sign so exp never overflows (as the CPU kernel)
        ex = f"{_fn('exp', x0)}(-{_fn('abs', x0)}({a[0]}))"
        return _wrap(d, f"({one} / ({one} + {ex}) if {a[0]} >= {zero} else "
                        f"{ex} / ({one} + {ex}))")
    if op == "relu":  # -0.0 and NaN kept, -inf gives +0
        return f"({zero} if {a[0]} < {zero} else {a[0]})"
    if op == "sign":
        return _wrap(d, f"({one} if {a[0]} > {zero} else (-{one} if {a[0]} < {zero} else "
                        f"{zero}))")
    if op == "logical_not":
        return f"(not {a[0]})"
    if op in ("logical_and", "logical_or"):
        return f"({a[0]} {op[8:]} {a[1]})"
    if op == "where":
        return f"({a[1]} if {a[0]} else {a[2]})"
    if op == "maximum":
        return _maximum(a[0], a[1])
    if op == "minimum":
        return _minimum(a[0], a[1])
    if op == "clamp":  # x second: kept on a tie; a NaN bound gives NaN
        x = a[0]
        lo, hi = e.attr("min"), e.attr("max")
        if lo is not None:
            x = _maximum(render_expr(lo), x)
        if hi is not None:
            x = _minimum(render_expr(hi), x)
        return x
    if op == "ipow":
        n = int(e.attr("n"))
        if n == 0:
            return one
        prod = " * ".join([a[0]] * abs(n))
        if n < 0:
            if not x0.is_floating_point:
                raise UnsupportedError("CUDA: a negative integer power of an integer is not "
                                       "rendered")
            return _wrap(d, f"({one} / ({prod}))")
        return _wrap(d, f"({prod})")
    if op in ("is_pos_zero", "is_neg_zero"):
        if not x0.is_floating_point:
            return "False" if op == "is_neg_zero" else f"({a[0]} == {zero})"
        cmp = ">" if op == "is_pos_zero" else "<"
        cs = "_ld.copysignf" if x0 is dt.float32 else "_ld.copysign"
        return f"({a[0]} == {zero} and {cs}({one}, {a[0]}) {cmp} {zero})"
    raise UnsupportedError(f"CUDA: the scalar op {op!r} is not rendered (random draws and "
                           "integer powers run on the CPU or eagerly)")


def _index(index: tuple[kir.Expr, ...]) -> str:
    return ", ".join(render_expr(i) for i in index) if index else "0"  # 0-d: a 1-element array


# ---- accumulators --------------------------------------------------------------------------------


def _combine(c: str, d: DType, a: str, b: str) -> str:
    if c == "add":
        return _wrap(d, f"({a} + {b})")
    if c == "mul":
        return _wrap(d, f"({a} * {b})")
    if c in ("max", "min"):
        if d.is_floating_point:
            return _maximum(a, b) if c == "max" else _minimum(a, b)
        return f"({a} if {a} {'>' if c == 'max' else '<'} {b} else {b})"
    if c == "fmax":  # NaN and the sign of zero: the flags beside it (kir/lower.py)
        return f"({a} if {a} > {b} else {b})"
    if c == "fmin":
        return f"({a} if {a} < {b} else {b})"
    if c in ("and", "or"):
        if d is dt.bool_:
            return f"({a} {c} {b})"
        return f"({a} {'&' if c == 'and' else '|'} {b})"
    raise UnsupportedError(f"CUDA: an accumulator combining with {c!r} is not rendered")


def _shared_dtype(d: DType) -> DType:
    """What a value of dtype d travels as through shuffles and shared memory."""
    if d is dt.bool_ or d.np.itemsize < 4:
        return dt.int32
    return d


def _identity(c: str, d: DType) -> str:
    if c == "add" or (c == "or" and not d.is_floating_point):
        return _typed(d, 0)
    if c == "mul" or c == "and":  # (and: over bools, carried as int32 0/1)
        return _typed(d, 1)
    big = math.inf if d.is_floating_point else int(np.iinfo(d.np).max)
    small = -math.inf if d.is_floating_point else int(np.iinfo(d.np).min)
    return _typed(d, small if c in ("max", "fmax") else big)


def _block_reduce(w: Writer, acc: kir.Var, combine: str, k: int, warp: bool, nt: int) -> None:
    """Combine each thread's `acc` across the block; every thread ends with the total."""
    sd = _shared_dtype(acc.dtype)
    c = {"and": "min", "or": "max"}.get(combine, combine) if acc.dtype is dt.bool_ \
        else combine
    sm, r = f"_sm{k}", f"_r{k}"
    w.line(f"{r} = {_wrap(sd, acc.name)}")
    if warp:
        for off in (16, 8, 4, 2, 1):
            shfl = f"cuda.shfl_down_sync({FULL_MASK:#x}, {r}, {off})"
            w.line(f"{r} = {_combine(c, sd, r, shfl)}")
        w.line("if _lane == 0:")
        w.line(f"    {sm}[_warp] = {r}")
        w.line("cuda.syncthreads()")
        w.line("if _warp == 0:")
        with w.indent():
            w.line(f"{r} = {sm}[_lane] if _lane < {nt // 32} else {_identity(c, sd)}")
            for off in (16, 8, 4, 2, 1):
                shfl = f"cuda.shfl_down_sync({FULL_MASK:#x}, {r}, {off})"
            w.line(f"{r} = {_combine(c, sd, r, shfl)}")
            w.line("if _lane == 0:")
            w.line(f"    {sm}[0] = {r}")
    else:  # the simulator: a shared-memory tree
        w.line(f"{sm}[_tid] = {r}")
        w.line("cuda.syncthreads()")
        s = nt // 2
        while s:
            w.line(f"if _tid < {s}:")
            w.line(f"    {sm}[_tid] = {_combine(c, sd, f'{sm}[_tid]', f'{sm}[_tid + {s}]')}")
            w.line("cuda.syncthreads()")
            s //= 2
    w.line("cuda.syncthreads()")
    back = f"({sm}[0] != 0)" if acc.dtype is dt.bool_ else _wrap(acc.dtype, f"{sm}[0]")
    w.line(f"{acc.name} = {back}")
    w.line("cuda.syncthreads()  # (before the next row's partials overwrite it)")


# ---- loop nests ----------------------------------------------------------------------------------


def _peel(body: tuple[kir.Stmt, ...], dims: range
          ) -> tuple[list[kir.Let], list[kir.Stmt], list[kir.Var]]:
    """A loop nest over the domain's dimensions `dims` (each level: Lets hoisted before one
    Loop over Dim(d)) flattened: the Lets before the outermost loop (run once per thread),
    the statements to run per element, in order, and the loop variables, outermost first.
    Anything else: UnsupportedError."""
    stmts: list[kir.Stmt] = []
    vs: list[kir.Var] = []
    cur = list(body)
    first: list[kir.Let] = []
    for d in dims:
        *pre, last = cur if cur else [None]
        if not isinstance(last, kir.Loop) or not isinstance(last.extent, kir.Dim) or \
                last.extent.k != d or last.start is not None or last.step != 1 or \
                not all(isinstance(s, kir.Let) for s in pre):
            raise UnsupportedError("CUDA: a loop nest of another shape than the GPU schedule's "
                                   "(blocked, prefetched or strided loops) is not rendered")
        if d == dims.start:
            first = [s for s in pre if isinstance(s, kir.Let)]
        else:
            stmts += [s for s in pre if isinstance(s, kir.Let)]
        vs.append(last.var)
        cur = list(last.body)
    return first, stmts + cur, vs


def _decompose(w: Writer, flat: str, vs: list[kir.Var], dims: list[int]) -> None:
    """Loop variables `vs` (over Dim(dims[j])) from the flat position `flat`, row-major."""
    if len(vs) == 1:
        w.line(f"{vs[0].name} = {flat}")
        return
    q = f"{flat}_q"
    w.line(f"{q} = {flat}")
    for v, d in zip(reversed(vs), reversed(dims)):
        if v is vs[0]:
            w.line(f"{v.name} = {q}")
        else:
            w.line(f"{v.name} = {q} % d{d}")
            w.line(f"{q} = {q} // d{d}")


def _extent(dims: list[int]) -> str:
    return " * ".join(f"d{d}" for d in dims) if dims else "1"


def _plain(w: Writer, body: list[kir.Stmt], guard_stores: bool) -> None:
    for s in body:
        if isinstance(s, kir.Let):
            note = f"  # {s.note}" if s.note else ""
            w.line(f"{s.var.name} = {render_expr(s.value)}{note}")
        elif isinstance(s, kir.Store) and s.buf.startswith("cacc") and \
                isinstance(s.value, kir.Op) and isinstance(s.value.args[0], kir.Load) and \
                s.value.args[0].buf == s.buf:  # a column total: rows add to it at once
            if s.value.op != "add":
                raise UnsupportedError(f"CUDA: a column total combining with {s.value.op} is "
                                       "not rendered (sums only)")
            at = _index(s.index) if len(s.index) <= 1 else f"({_index(s.index)})"
            w.line(f"cuda.atomic.add({s.buf}, {at}, {render_expr(s.value.args[1])})")
        elif isinstance(s, kir.Store):
            line = f"{s.buf}[{_index(s.index)}] = {render_expr(s.value)}"
            if guard_stores:
                w.line("if _tid == 0:")
                w.line("    " + line)
            else:
                w.line(line)
        elif isinstance(s, kir.Accum):
            v = _combine(s.combine, s.var.dtype, s.var.name, render_expr(s.value))
            w.line(f"{s.var.name} = {v}")
        elif isinstance(s, kir.Prefetch):
            continue  # a hint (changes no value)
        else:
            raise UnsupportedError(f"CUDA: a {type(s).__name__} here is not rendered")


def _accums(body: list[kir.Stmt]) -> list[kir.Accum]:
    seen: dict[str, kir.Accum] = {}
    for s in kir.ir.stmts(tuple(body)):
        if isinstance(s, kir.Accum) and s.var.name not in seen:
            seen[s.var.name] = s
    return list(seen.values())


@dataclass
class Rendered:
    """One CUDA kernel: its source (a function named KERNEL), signature parts and launch."""

    name: str
    source: str
    kind: str  # "elementwise" or "rows"
    params: tuple[kir.Param, ...]
    rank: int
    threads: int
    outer: int  # row dims (rows kernels)
    warp: bool
    ir: kir.Kernel
    sim: bool = False  # rendered for the simulator (its header)
    span: int = 0  # an elementwise kernel runs over the domain's dims from this one on

    def grid(self, domain: tuple[int, ...]) -> int:
        if self.kind == "rows":
            rows = math.prod(domain[:self.outer])
            return max(1, min(rows, MAX_BLOCKS))
        n = math.prod(domain[self.span:])
        return max(1, min(-(-n // self.threads), MAX_BLOCKS))


def header(sim: bool) -> str:
    """The generated module's imports: libdevice's float functions on a GPU (and for PTX);
    NumPy's under the simulator, whose libdevice functions are stubs that return None."""
    lib = "from tracejit.codegen.cuda import SimLibdevice as _ld" if sim else \
        "from numba.cuda import libdevice as _ld"
    return f"import numpy as np\nfrom numba import cuda\n{lib}\n"


class SimLibdevice:
    """libdevice's float functions for the simulator (plain Python on NumPy scalars)."""

    @staticmethod
    def _def(name: str, f: Any) -> None:
        setattr(SimLibdevice, name + "f", staticmethod(lambda *a: np.float32(f(*a))))
        setattr(SimLibdevice, name, staticmethod(lambda *a: np.float64(f(*a))))


for _name, _f in [("exp", np.exp), ("log", np.log), ("log1p", np.log1p), ("expm1", np.expm1),
                  ("sqrt", np.sqrt), ("rsqrt", lambda x: type(x)(1) / np.sqrt(x)),
                  ("sin", np.sin), ("cos", np.cos), ("tanh", np.tanh),
                  ("erf", lambda x: math.erf(x)), ("floor", np.floor), ("ceil", np.ceil),
                  ("rint", np.rint), ("fabs", np.abs), ("pow", np.power),
                  ("copysign", np.copysign)]:
    SimLibdevice._def(_name, _f)


def render_kernels(k: kir.Kernel, warp: bool | None = None, threads: int | None = None
                   ) -> list[Rendered]:
    """The CUDA kernels of a kernel IR Kernel, launched in this order. One, unless the kernel
    has column totals (a reduction over the leading dims fused with row work: layernorm's
    weight gradient): blocks run rows at once, so the totals' accumulators are filled with
    their identity by a first kernel, added to atomically by the rows kernel, and stored by a
    third (no grid-wide barrier exists inside one launch). Only sums are rendered so."""
    if not k.meta.get("cols"):
        return [render_kernel(k, warp, threads)]
    m = int(k.meta["outer"])
    fills: list[kir.Stmt] = []
    main: list[kir.Stmt] = []
    tails: list[kir.Stmt] = []
    for st in k.body:
        is_rows = isinstance(st, kir.Loop) and isinstance(st.extent, kir.Dim) and \
            st.extent.k == 0 and not st.var.name.startswith("cacc")
        if is_rows or (isinstance(st, kir.Let) and not tails):
            main.append(st)
        elif not main:
            fills.append(st)
        else:
            tails.append(st)
    if m == 0 or not main or not fills or not tails:
        raise UnsupportedError(f"CUDA: {k.note or k.hint}: column totals of an unexpected "
                               "shape are not rendered")
    span = {"outer": m, "rdims": 0, "cols": 0, "span": m}
    parts = [kir.Kernel(k.hint + "_fill", k.params, tuple(fills), "fill: " + k.note, k.rank,
                        span),
             kir.Kernel(k.hint, k.params, tuple(main), k.note, k.rank,
                        {**k.meta, "cols": 0, "atomic": True}),
             kir.Kernel(k.hint + "_store", k.params, tuple(tails), "store: " + k.note, k.rank,
                        span)]
    return [render_kernel(p, warp, threads) for p in parts]


def render_kernel(k: kir.Kernel, warp: bool | None = None, threads: int | None = None
                  ) -> Rendered:
    """The Numba CUDA source of a kernel IR Kernel lowered with the GPU schedule (meta's
    outer/rdims). warp: shuffles (default: unless the simulator is on); threads: per block."""
    sim = simulator()
    warp = (not sim) if warp is None else warp
    meta = k.meta
    if "outer" not in meta:
        raise UnsupportedError("CUDA: the kernel was not lowered with the GPU schedule "
                               "(lower_fused(..., gpu=True) or lower_reduce_rows)")
    if meta.get("cols"):
        raise UnsupportedError(f"CUDA: {k.note or k.hint}: a kernel with column totals renders "
                               "as three kernels: use render_kernels")
    for s in kir.ir.stmts(k.body):
        if isinstance(s, kir.Alloc):
            raise UnsupportedError("CUDA: a kernel allocating scratch is not rendered")
    r, m = k.rank, int(meta["outer"])
    rows = meta["rdims"] > 0
    nt = threads or (ELEM_THREADS if not rows else ROW_THREADS if warp else SIM_THREADS)
    if rows and (nt & (nt - 1) or (warp and (nt % 32 or nt > 1024))):
        raise ValueError(f"threads per row must be a power of two (a multiple of 32 with "
                         f"shuffles, at most 1024), got {nt}")
    w = Writer()
    w.line(f"def KERNEL({', '.join([f'd{j}' for j in range(r)] + [p.name for p in k.params])}):")
    with w.indent():
        if k.note:
            w.line(f"# {k.note}")
        if not rows:  # over the domain, or (column totals' parts) its dims from `span` on
            dims = list(range(int(meta.get("span", 0)), r))
            first, body, vs = _peel(k.body, range(dims[0] if dims else r, r))
            _plain(w, list(first), guard_stores=False)  # loop-invariant (a learning rate)
            w.line("_start = cuda.grid(1)")
            w.line("_stride = cuda.gridsize(1)")
            w.line(f"for _g in range(_start, {_extent(dims)}, _stride):")
            with w.indent():
                if vs:
                    _decompose(w, "_g", vs, dims)
                _plain(w, body, guard_stores=False)
        else:
            _rows(w, k, m, r, warp, nt)
    src = w.text()
    name = f"cu{cache.content_hash(header(sim) + src + repr((warp, nt)))[:10]}_{k.hint[:30]}"
    return Rendered(name, src, "rows" if rows else "elementwise", k.params, r, nt, m, warp, k,
                    sim, int(meta.get("span", 0)))


def _rows(w: Writer, k: kir.Kernel, m: int, r: int, warp: bool, nt: int) -> None:
    first, body, rvs = _peel(k.body, range(m))
    body = [*first, *body] if not m else body
    accs = _accums(body)
    w.line("_tid = cuda.threadIdx.x")
    if warp:
        w.line("_lane = _tid & 31")
        w.line("_warp = _tid >> 5")
    for j, a in enumerate(accs):
        sd = _shared_dtype(a.var.dtype)
        w.line(f"_sm{j} = cuda.shared.array({nt // 32 if warp else nt}, {np_name(sd)})")
    number = {a.var.name: j for j, a in enumerate(accs)}
    if m:
        _plain(w, list(first), guard_stores=False)  # loop-invariant
    w.line(f"for _row in range(cuda.blockIdx.x, {_extent(list(range(m)))}, cuda.gridDim.x):")
    with w.indent():
        if rvs:
            _decompose(w, "_row", rvs, list(range(m)))
        for s in body:
            if isinstance(s, kir.Loop):  # one pass over the row
                pre, inner, ivs = _peel((s,), range(m, r))
                inner = [*pre, *inner]
                w.line(f"for _f in range(_tid, {_extent(list(range(m, r)))}, {nt}):")
                with w.indent():
                    _decompose(w, "_f", ivs, list(range(m, r)))
                    _plain(w, inner, guard_stores=False)
                for a in _accums(inner):
                    _block_reduce(w, a.var, a.combine, number[a.var.name], warp, nt)
            else:
                _plain(w, [s], guard_stores=True)


# ---- numba types, files, compiling ---------------------------------------------------------------


def _nb_array(p: kir.Param) -> Any:
    import numba

    return numba.types.Array(numba.from_dtype(p.dtype.np), max(p.ndim, 1), "C")


def signature(rk: Rendered) -> Any:
    import numba

    return numba.types.void(*([numba.types.int64] * rk.rank), *[_nb_array(p) for p in rk.params])


def _source_dir() -> str:
    d = cache.cache_dir()
    base = os.path.join(d, "cuda") if d else os.path.join(tempfile.gettempdir(),
                                                          f"tracejit-cuda-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    return base


_MODULES: dict[str, Any] = {}


def load_source(name: str, source: str) -> Any:
    """The module of generated source, written to a real file (Numba's cache=True and its
    error messages need one; exec'd functions cannot be cached)."""
    if name in _MODULES:
        return _MODULES[name]
    path = os.path.join(_source_dir(), f"{name}.py")
    data = source.encode()
    try:
        with open(path, "rb") as f:
            same = f.read() == data
    except OSError:
        same = False
    if not same:
        cache.write_atomic(path, data)
    spec = importlib.util.spec_from_file_location(f"tracejit_cuda_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    _MODULES[name] = mod
    return mod


def python_function(rk: Rendered) -> Any:
    """The kernel as a plain Python function (what compile_ptx takes)."""
    return load_source(rk.name, header(rk.sim) + "\n\n" + rk.source).KERNEL


_COMPILED: dict[str, Any] = {}


def compile_kernel(rk: Rendered) -> Any:
    """The kernel compiled for its one signature (eagerly, once per process and source)."""
    if rk.name not in _COMPILED:
        from numba import cuda

        fn = python_function(rk)
        opts: dict[str, Any] = {} if simulator() else {"cache": True}
        _COMPILED[rk.name] = cuda.jit(signature(rk), **opts)(fn)
    return _COMPILED[rk.name]


def ptx(rk: Rendered, cc: tuple[int, int] = (9, 0)) -> str:
    """The kernel's PTX for compute capability `cc` (needs real numba-cuda, no GPU)."""
    from numba import cuda

    text, _ = cuda.compile_ptx(python_function(rk), signature(rk), cc=cc)
    return str(text)


def f64_lines(ptx_text: str) -> list[str]:
    """PTX instructions that compute or convert in float64 (a float32 kernel should have none)."""
    out = []
    for line in ptx_text.splitlines():
        s = line.strip()
        if not s or s.startswith(("//", ".", "{", "}")) or s.endswith(":"):
            continue
        if ".f64" in s.split()[0] or ".f64." in s or "%fd" in s:
            out.append(s)
    return out


def float32_only(rk: Rendered) -> bool:
    return all(p.dtype is not dt.float64 for p in rk.params) and not any(
        isinstance(x, (kir.Var, kir.Lit, kir.Load, kir.Op)) and x.dtype is dt.float64
        for x in _exprs(rk.ir.body))


def _exprs(body: tuple[kir.Stmt, ...]) -> Iterator[kir.Expr]:
    for s in kir.ir.stmts(body):
        if isinstance(s, (kir.Let, kir.Accum)):
            yield s.var
            yield from kir.ir.sub_exprs(s.value)
        elif isinstance(s, kir.Store):
            yield from kir.ir.sub_exprs(s.value)


# ---- kernels of graph nodes ----------------------------------------------------------------------


def node_kernel(n: Node, alias: dict[int, int] | None = None, warp: bool | None = None,
                threads: int | None = None) -> tuple[list[Rendered], tuple[int, ...]]:
    """The CUDA kernels of a fused node, lone elementwise node or lone reduction (launched in
    order, see render_kernels), and the domain they are launched over."""
    if n.op is FUSED:
        k = lower_fused(n, alias, gpu=True)
        domain = tuple(n.attrs.get("domain", n.outs[0].type.shape))
    elif n.op.kind is Kind.ELEMENTWISE and n.op.scalar is not None:
        from ..passes.fuse import _make_fused
        from .cpu import _Single

        return node_kernel(_make_fused(_Single(n), set(n.outs), 0), alias, warp, threads)
    elif n.op.kind is Kind.REDUCE and n.op.reduce is not None:
        if n.op.reduce.index:
            raise UnsupportedError(f"CUDA: {n.name} (an index reduction) is not rendered; "
                                   "compute it on the CPU (.cpu()) or eagerly")
        k = lower_reduce_rows(n)
        domain = tuple(k.meta["domain"])
    else:
        raise UnsupportedError(f"CUDA: {n.name} has no CUDA kernel rendering")
    return render_kernels(k, warp, threads), domain


def graph_kernels(g: Graph, warp: bool | None = None) -> list[Rendered]:
    """Every CUDA kernel a graph's nodes render to (with its buffer plan)."""
    plan = make_plan(g)
    out = []
    for i, n in enumerate(g.nodes):
        if n.op is FUSED or (n.op.kind in (Kind.ELEMENTWISE, Kind.REDUCE) and
                             (n.op.scalar is not None or n.op.reduce is not None)):
            out += node_kernel(n, plan.for_node(i), warp)[0]
    return out


# ---- a graph as a program of launches ------------------------------------------------------------

_RESHAPES = ("reshape", "view", "flatten", "squeeze", "unsqueeze", "_unsafe_view")


@dataclass
class _Step:
    kind: str  # kernel, gemm, reshape, copy (an effect)
    text: str  # for explain()
    run: Any = None  # callable(env) performing it


@dataclass
class CudaProgram:
    """A graph compiled for CUDA: call it with device arrays (graph params in order, 0-d ones
    as 1-element arrays); it returns the outputs as device arrays (0-d ones as 1-element
    arrays), having written the effects into their target arrays."""

    graph: Graph
    steps: list[_Step] = field(default_factory=list)
    kernels: list[Rendered] = field(default_factory=list)
    matmul: str = "none"
    stream: Any = None

    def __call__(self, params: list[Any]) -> list[Any]:
        g = self.graph
        if len(params) != len(g.params):
            raise TypeError(f"{g.name} takes {len(g.params)} arrays, got {len(params)}")
        env: dict[Value, Any] = {}
        for v, a in zip(g.params, params):
            want = tuple(v.type.shape) or (1,)
            if tuple(a.shape) != want or np.dtype(a.dtype) != v.type.dtype.np:
                raise TypeError(f"{g.name}: parameter {v} wants a {v.type.dtype.name} device "
                                f"array of shape {want}, got {a.dtype}{tuple(a.shape)}")
            env[v] = a
        for s in self.steps:
            s.run(env)
        return [env[o] if isinstance(o, Value) else o for o in g.outputs]

    def explain(self) -> str:
        lines = [f"CUDA program {self.graph.name}: {len(self.steps)} steps, "
                 f"{len(self.kernels)} kernels, on one stream, no host copies"]
        lines += [f"  {s.text}" for s in self.steps]
        lines.append(f"matmul: {self.matmul}")
        return "\n".join(lines)


def _gemm_backend() -> tuple[Any, str]:
    from ..kernels.cuda import cublas  # type: ignore[import-not-found, unused-ignore]

    if not simulator():
        lib, why = cublas.load()
        if lib is not None:
            return lib, f"cuBLAS ({why})"
    else:
        why = "the simulator runs on host memory"
    return None, f"the tiled shared-memory kernel (kernels/cuda/gemm.py): cuBLAS not used, {why}"


def compile_cuda(g: Graph, warp: bool | None = None, threads: int | None = None,
                 stream: Any = None) -> CudaProgram:
    """Build a CudaProgram for g: every kernel rendered and compiled, every buffer that does
    not leave a call allocated once. Raises UnsupportedError for what it cannot run."""
    why = missing()
    if why is not None:
        raise UnsupportedError(f"CUDA: {why}")
    from numba import cuda

    if g.checks:
        raise UnsupportedError("CUDA: a graph checking a traced branch needs its predicate on "
                               "the host (a round trip inside the step); not rendered")
    for n in g.nodes:
        if n.op.control:
            raise UnsupportedError(f"CUDA: control flow ({n.name}) is not rendered")
    plan = make_plan(g)
    verify_plan(g, plan)
    from .cpu import fresh_buffers

    fresh = fresh_buffers(g, plan)
    prog = CudaProgram(g, stream=stream if stream is not None else cuda.default_stream())
    st = prog.stream
    uses: dict[Value, list[Node]] = {}
    for n in g.nodes:
        for v in n.values_in():
            uses.setdefault(v, []).append(n)
    outputs = {o for o in g.outputs if isinstance(o, Value)}
    effect_src = {e.source for e in g.effects}
    transposed: dict[Value, Value] = {}  # permute(1, 0) only a matmul reads: folded into it
    gemm_lib: Any = None
    ws: dict[Value, Any] = {}  # buffers planned once

    def buffer(v: Value) -> Any:
        """v's buffer: made once (a value not leaving the call) or a maker per call."""
        shape = tuple(v.type.shape) or (1,)
        if v in fresh:
            return None
        if v not in ws:
            ws[v] = cuda.device_array(shape, v.type.dtype.np, stream=st)
        return ws[v]

    def out_array(env: dict[Value, Any], v: Value) -> Any:
        b = ws.get(v)
        if b is not None:
            return b
        return cuda.device_array(tuple(v.type.shape) or (1,), v.type.dtype.np, stream=st)

    for i, n in enumerate(g.nodes):
        where = f"%{i} {n.name}"
        if n.op is CONSTANT:
            value = np.ascontiguousarray(np.asarray(n.attrs["value"], n.out.type.dtype.np))
            dev = cuda.to_device(value.reshape(value.shape or (1,)), stream=st)
            prog.steps.append(_Step("const", f"{where}: constant {value.shape} on the device",
                                    lambda env, v=n.out, d=dev: env.__setitem__(v, d)))
            continue
        if n.op.name == "permute" and len(n.out.type.shape) == 2 and \
                tuple(n.attrs["dims"]) == (1, 0) and n.out not in outputs and \
                n.out not in effect_src and \
                all(u.op.name == "matmul" for u in uses.get(n.out, [])):
            x = n.inputs[0]
            assert isinstance(x, Value)
            transposed[n.out] = x
            prog.steps.append(_Step("view", f"{where}: folded into the matmuls reading it",
                                    lambda env: None))
            continue
        if n.op.name in _RESHAPES or (is_view(n) and n.op.name not in ("permute", "expand")):
            x = n.inputs[0]
            if n.op.name not in _RESHAPES or not isinstance(x, Value):
                raise UnsupportedError(f"CUDA: the view {n.name} is not rendered (reshapes of "
                                       "contiguous values only)")
            shape = tuple(n.out.type.shape) or (1,)

            def reshape(env: dict[Value, Any], v: Value = n.out, x: Value = x,
                        shape: tuple[int, ...] = shape) -> None:
                env[v] = env[x].reshape(shape)
            prog.steps.append(_Step("view", f"{where}: a reshape of the same buffer", reshape))
            continue
        if n.op.name == "matmul":
            a, b = n.inputs
            if not (isinstance(a, Value) and isinstance(b, Value)) or \
                    len(a.type.shape) != 2 or len(b.type.shape) != 2 or \
                    n.out.type.dtype not in (dt.float32, dt.float64):
                raise UnsupportedError(f"CUDA: {where}: only 2-d float32/float64 matmuls are "
                                       "rendered (batched and integer ones are not)")
            if gemm_lib is None:
                gemm_lib, prog.matmul = _gemm_backend()
                if gemm_lib is None:
                    gemm_lib = False
            ta, tb = a in transposed, b in transposed
            sa, sb = transposed.get(a, a), transposed.get(b, b)
            lib = gemm_lib or None
            buffer(n.out)

            def gemm(env: dict[Value, Any], v: Value = n.out, sa: Value = sa, sb: Value = sb,
                     ta: bool = ta, tb: bool = tb, lib: Any = lib) -> None:
                from ..kernels.cuda import gemm as tiled  # type: ignore[import-not-found, unused-ignore]

                o = out_array(env, v)
                if lib is not None:
                    lib.gemm(env[sa], env[sb], o, ta, tb, st)
                else:
                    tiled.matmul(env[sa], env[sb], o, ta, tb, st)
                env[v] = o
            prog.steps.append(_Step("gemm", f"{where}: {'cuBLAS' if lib else 'tiled'} gemm "
                                    f"{'A^T' if ta else 'A'} @ {'B^T' if tb else 'B'}", gemm))
            continue
        if n.op is FUSED or (n.op.kind is Kind.ELEMENTWISE and n.op.scalar is not None) or \
                (n.op.kind is Kind.REDUCE and n.op.reduce is not None):
            if any(isinstance(x, Value) and x in transposed for x in n.inputs):
                raise AssertionError("a folded transpose read by a kernel")
            reuse = plan.for_node(i)
            rks, domain = node_kernel(n, reuse, warp, threads)
            launches = []
            for rk in rks:
                prog.kernels.append(rk)
                launches.append(compile_kernel(rk)[rk.grid(domain), rk.threads, st])
            for x in n.inputs:
                if isinstance(x, Const):
                    raise UnsupportedError(f"CUDA: {where}: a constant operand outside the "
                                           "group is not rendered")
            ins = list(n.inputs)
            outs = list(n.outs)
            written = [o for j, o in enumerate(outs) if j not in reuse]
            scratch = []  # (the kernels of one node share their parameters, scratch included)
            for p in rks[0].params:
                if p.scratch is not None:
                    dims = tuple(_scratch_extent(e, domain) for e in p.scratch)
                    scratch.append(cuda.device_array(dims or (1,), p.dtype.np, stream=st))
            for o in outs:
                buffer(o)
            empty = False  # (an empty domain still launches: column totals of no rows are 0)

            def run(env: dict[Value, Any], ins: list[Any] = ins, outs: list[Value] = outs,
                    written: list[Value] = written, reuse: dict[int, int] = reuse,
                    launches: list[Any] = launches, domain: tuple[int, ...] = domain,
                    scratch: list[Any] = scratch, empty: bool = empty) -> None:
                args = [env[x] for x in ins]
                made = {o: out_array(env, o) for o in written}
                for j, o in enumerate(outs):
                    env[o] = made[o] if o in made else args[reuse[j]]
                if not empty:
                    for launch in launches:
                        launch(*domain, *args, *[made[o] for o in written], *scratch)
            shown = "x".join(map(str, domain)) or "()"
            for rk in rks:
                prog.steps.append(_Step(
                    "kernel", f"{where}: {rk.kind} kernel {rk.name} over {shown} "
                    f"({rk.grid(domain)} blocks x {rk.threads} threads"
                    f"{', warp shuffles' if rk.kind == 'rows' and rk.warp else ''})",
                    run if rk is rks[-1] else (lambda env: None)))
            continue
        raise UnsupportedError(f"CUDA: {where} has no CUDA rendering (supported: fused groups, "
                               "elementwise ops, reductions, 2-d matmul, constants, reshapes "
                               "and transposes read by a matmul)")
    done = plan.in_place_effects(g)
    for e in g.effects:
        if e.target in done:
            continue

        def commit(env: dict[Value, Any], t: Value = e.target, s: Value = e.source) -> None:
            env[t].copy_to_device(env[s], stream=st)
        prog.steps.append(_Step("copy", f"effect: {e.target} <- {e.source} (device to device)",
                                commit))
    return prog


def _scratch_extent(e: kir.Expr, domain: tuple[int, ...]) -> int:
    if isinstance(e, kir.Dim):
        return domain[e.k]
    if isinstance(e, kir.Lit):
        return int(e.value)
    raise UnsupportedError(f"CUDA: a scratch extent {kir.ir.format_expr(e)} is not rendered")


_PROGRAMS: dict[tuple[int, str], tuple[Graph, CudaProgram]] = {}


def device_name() -> str:
    """The device a program is built for, as a cache key: 'cuda:N' (the current device), or
    'cuda:sim' under the simulator."""
    if simulator():
        return "cuda:sim"
    from numba import cuda

    return f"cuda:{cuda.get_current_device().id}"


def program_for(g: Graph) -> CudaProgram:
    """The hook for `@jit` (a jit entry whose inputs are CUDA arrays, see cache_key_device):
    the CudaProgram of graph g on the current device, built on first use and kept while the
    graph is (keyed by the graph object and the device). Raises UnsupportedError for a graph
    it cannot run, which the jit treats as it treats the CPU compiler's (run eagerly)."""
    key = (id(g), device_name())
    hit = _PROGRAMS.get(key)
    if hit is not None and hit[0] is g:
        return hit[1]
    prog = compile_cuda(g)
    _PROGRAMS[key] = (g, prog)
    return prog


def cache_key_device(arrays: list[Any]) -> str | None:
    """'cuda' when every array is a CUDA device array (`__cuda_array_interface__`), None when
    none is; mixing them is a clear error. What `@jit` keys its cache by to pick this
    renderer (see compile_cuda)."""
    on = [hasattr(a, "__cuda_array_interface__") for a in arrays]
    if all(on) and on:
        return "cuda"
    if not any(on):
        return None
    raise ValueError("the inputs mix CUDA device arrays and host arrays; move them to one "
                     "device (.cuda() or .cpu()) first")


__all__ = ["CudaProgram", "Rendered", "cache_key_device", "compile_cuda", "compile_kernel",
           "device_name", "f64_lines", "float32_only", "graph_kernels", "missing", "node_kernel",
           "program_for", "ptx", "render_kernel", "render_kernels", "signature", "simulator"]
