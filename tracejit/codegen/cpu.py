"""Stage 4, CPU: a graph becomes one `numba.njit` driver that calls small kernels (fused
elementwise loops, reductions), each its own njit function in its own cached module, named by
a hash of its source: identical layers share one compiled kernel, so compile time grows with
the number of distinct kernels, not with the size of the graph. Never imports tensor/trace."""

from __future__ import annotations

import ast
import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from .. import kir
from ..dtypes import DType, int64
from ..errors import PathNotTakenError
from ..flags import get as get_flag
from ..ir.graph import Const, Graph, Node, Operand, Region, Value, walk
from ..ir.plan import BufferPlan, _last_raise, is_view, make_plan, roots, verify_plan
from ..ir.printer import print_graph, value_numbers, values_printed
from ..kir.lower import lower_fused, lower_reduce
from ..ops.control import COND, SCAN, WHILE
from ..ops.registry import Kind, OpDef, lit, np_name
from ..ops.structural import CONSTANT, FUSED
from ..runtime import cache, pool
from .lower import UnsupportedError
from .writer import Writer

PRELUDE = """import numpy as np
import numba
from tracejit.kernels.cpu.scalar import *  # noqa: F403
from tracejit.kernels.cpu.contract import matmul2d, matmul_batched, as_blas  # noqa: F401
from tracejit.kernels.cpu.index import gather_last, scatter_add_last, take_first, put_first  # noqa
from tracejit.kernels.cpu.index import check_range, check_target  # noqa: F401
from tracejit.kernels.cpu.scan import cumsum_rows, argsort_rows  # noqa: F401
from tracejit.kernels.cpu.attention import attention_fwd, attention_bwd_flat  # noqa: F401
from tracejit.kernels.cpu.conv import conv_im2col, conv_col2im, conv_to_gcl, conv_bias_act  # noqa
from tracejit.kernels.cpu.pool import maxpool2d_argmax, window_avg, window_avg_bwd  # noqa: F401
from tracejit.kernels.cpu.pool import maxpool_relu_bwd  # noqa: F401
from tracejit.kernels.cpu.vmath import exp as vexp, log as vlog, tanh as vtanh  # noqa: F401
from tracejit.kernels.cpu.vmath import sigmoid as vsigmoid, erf as verf, rsqrt as vrsqrt  # noqa
from tracejit.kernels.cpu.vmath import ipow  # noqa: F401
from tracejit.kernels.cpu.accum import radd, rmul, rmax, rmin  # noqa: F401
from tracejit.kernels.cpu.accum import rmaxnum, rminnum, is_pos_zero, is_neg_zero  # noqa: F401
from tracejit.kernels.cpu.prefetch import prefetch, prefetchw  # noqa: F401
from tracejit.runtime.philox import draw as philox_draw  # noqa: F401
"""
JIT = cache.JIT_DECORATOR  # cache=True; runtime/cache.py drops it when compiling in memory
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def prelude_for(text: str) -> str:
    """PRELUDE without the `from ... import` lines none of whose names `text` (the rest of the
    module) mentions: a process that loads a program from the disk cache then imports only the
    kernel-library modules it calls (each defines dozens of njit functions, and an unused one
    costs its import and its dispatchers' set-up on every warm start). `import` lines and the
    star import of scalar.py (the `expr` templates' functions) always stay."""
    used = set(_IDENT.findall(text))
    out = []
    for line in PRELUDE.splitlines(True):
        code = line.split("#", 1)[0]
        if code.startswith("from ") and " import " in code and "*" not in code:
            names = [n.strip().split(" as ")[-1].strip()
                     for n in code.split(" import ", 1)[1].split(",")]
            if not used.intersection(names):
                continue
        out.append(line)
    return "".join(out)


@dataclass
class Kernel:
    name: str
    source: str


NATIVE_DRIVER_MAX_NODES = 64
# a string literal argument in a driver-level rule's text: str('...')
_STR_ARG = re.compile(r"""str\(('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\)""")
# an int64 literal argument: np.int64(3). A Python driver passes the int itself, which Numba
# types as int64 too: the same compiled kernel, without a NumPy scalar made on every call (and
# a 0-d array Numba makes from it to type and unbox it)
_I64_ARG = re.compile(r"np\.int64\((-?\d+)\)")


@dataclass
class Program:
    """A compiled graph: call it with the parameter arrays (inputs then lifted)."""

    name: str
    source: str
    fn: Callable[..., Any]
    from_disk: bool
    effects_done: bool = True
    kernels: list[str] = field(default_factory=list)
    kernel_ir: dict[str, kir.Kernel] = field(default_factory=dict)  # name -> its kernel IR
    native: bool = True
    plan: BufferPlan = field(default_factory=BufferPlan)

    def __call__(self, params: list[np.ndarray]) -> tuple[list[Any], None]:
        out = self.fn(*params)
        return list(out), None


# ---- the renderer: kernel IR -> Numba source ----------------------------------------------------

# how Numba spells each kernel IR scalar op; {0}.. are operands, {name} attributes
SCALAR = {
    "neg": "-{0}", "exp": "vexp({0})", "log": "vlog({0})", "log1p": "log1p({0})",
    "expm1": "expm1({0})", "sqrt": "sqrt({0})", "rsqrt": "vrsqrt({0})", "abs": "abs({0})",
    "sin": "sin({0})", "cos": "cos({0})", "tanh": "vtanh({0})", "sigmoid": "vsigmoid({0})",
    "erf": "verf({0})", "relu": "relu({0})", "sign": "sign({0})", "floor": "floor({0})",
    "ceil": "ceil({0})", "round": "rint({0})", "logical_not": "not {0}", "cast": "{dtype}({0})",
    "clamp": "clamp({0}, {min}, {max})", "ipow": "ipow({0}, {n})",
    "is_pos_zero": "is_pos_zero({0})", "is_neg_zero": "is_neg_zero({0})",
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
    "pow": "pow({0}, {1})", "maximum": "maximum({0}, {1})", "minimum": "minimum({0}, {1})",
    "eq": "({0} == {1})", "ne": "({0} != {1})", "lt": "({0} < {1})", "le": "({0} <= {1})",
    "gt": "({0} > {1})", "ge": "({0} >= {1})", "logical_and": "({0} and {1})",
    "logical_or": "({0} or {1})", "where": "({1} if {0} else {2})",
    "philox": "philox_draw({0}, {1}, {2}, {wide}, {normal})",
}
# accumulator updates, reorderable (kernels/cpu/accum.py)
ACCUM = {"add": "radd", "mul": "rmul", "max": "rmax", "min": "rmin", "fmax": "rmaxnum",
         "fmin": "rminnum"}


def _r_lit(e: kir.Lit) -> str:
    return lit(e.value, e.dtype)


def render_expr(e: kir.Expr) -> str:
    if isinstance(e, kir.Var):
        return e.name
    if isinstance(e, kir.Lit):
        return _r_lit(e) if e.dtype is not int64 or not isinstance(e.value, int) else str(e.value)
    if isinstance(e, kir.Dim):
        return f"shape[{e.k}]"
    if isinstance(e, kir.Load):
        return f"{e.buf}[{_r_index(e.index)}]"
    fmt: dict[str, str] = {}
    for k, v in e.attrs:
        if isinstance(v, DType):
            fmt[k] = np_name(v)
        elif isinstance(v, kir.Lit):
            fmt[k] = _r_lit(v)
        else:
            fmt[k] = repr(v)
    text = SCALAR[e.op].format(*(render_expr(a) for a in e.args), **fmt)
    if e.op == "cast":
        return text
    return f"{np_name(e.dtype)}({text})"


def _r_index(index: tuple[kir.Expr, ...]) -> str:
    return ", ".join(render_expr(i) for i in index) if index else "()"


def _r_body(body: tuple[kir.Stmt, ...], w: Writer) -> None:
    for s in body:
        if isinstance(s, kir.Let):
            note = f"  # {s.note}" if s.note else ""
            w.line(f"{s.var.name} = {render_expr(s.value)}{note}")
        elif isinstance(s, kir.Store):
            w.line(f"{s.buf}[{_r_index(s.index)}] = {render_expr(s.value)}")
        elif isinstance(s, kir.Accum):
            v = render_expr(s.value)
            if s.combine in ACCUM:
                w.line(f"{s.var.name} = {ACCUM[s.combine]}({s.var.name}, {v})")
            else:  # and / or over bools
                w.line(f"{s.var.name} = {s.var.name} {'&' if s.combine == 'and' else '|'} {v}")
        elif isinstance(s, kir.Prefetch):
            idx = "(" + "".join(f"np.int64({render_expr(i)}), " for i in s.index) + ")"
            w.line(f"if {render_expr(s.guard)}:")
            with w.indent():
                w.line(f"prefetch{'w' if s.write else ''}({s.buf}, {idx})")
        elif isinstance(s, kir.Alloc):
            shape = "(" + "".join(f"{render_expr(d)}, " for d in s.shape) + ")"
            if s.fill is None:
                w.line(f"{s.buf} = np.empty({shape}, {np_name(s.dtype)})")
            else:
                w.line(f"{s.buf} = np.full({shape}, {_r_lit(s.fill)}, {np_name(s.dtype)})")
        else:
            stop, step = render_expr(s.extent), f", {s.step}" if s.step != 1 else ""
            if s.start is None:
                span = f"0, {stop}{step}" if step else stop
                w.line(f"for {s.var.name} in range({span}):")
            else:  # LLVM cannot tell the index is not negative: Numba's wraparound check per
                # element then keeps the loop scalar; an unsigned index has none
                w.line(f"for {s.var.name}_ in range({render_expr(s.start)}, {stop}{step}):")
            with w.indent():
                if s.start is not None:
                    w.line(f"{s.var.name} = np.uint64({s.var.name}_)")
                _r_body(s.body, w)
                if not s.body:
                    w.line("pass")


def render_kernel(k: kir.Kernel) -> str:
    """The Numba source of a kernel, a function named KERNEL (renamed by its content hash)."""
    w = Writer()
    w.line(f"def KERNEL(shape, {', '.join(p.name for p in k.params)}):")
    with w.indent():
        if k.note:
            w.line(f"# {k.note}")
        _r_body(k.body, w)
    return w.text()


def _named(prefix: str, body: str, hint: str) -> Kernel:
    prelude = prelude_for(body)
    digest = cache.content_hash(prelude + body)[:10]  # (salted with kernels/cpu's source)
    name = f"{prefix}{digest}_{hint}"[:60]
    return Kernel(name, prelude + "\n\n" + JIT + "\n" + body.replace("KERNEL", name))


def fused_kernel(n: Node, alias: dict[int, int] | None = None) -> tuple[Kernel, kir.Kernel]:
    """The kernel of a fused node: its kernel IR and its source (`alias`: lower_fused's)."""
    k = lower_fused(n, alias)
    return _named("k", render_kernel(k), k.hint[:30]), k


def reduce_kernel(n: Node) -> tuple[Kernel, kir.Kernel]:
    k = lower_reduce(n)
    return _named("r", render_kernel(k), k.hint[:30]), k


# ---- the driver ---------------------------------------------------------------------------------


def _const_name(i: int) -> str:
    return f"C{i}"


def _rule(op: OpDef) -> Any:
    rule = op.kernels.get("cpu")
    if rule is None:
        raise UnsupportedError(f"{op.name} has no CPU compilation rule")
    return rule


class _Gen:
    def __init__(self, g: Graph, plan: BufferPlan, snapshot: bool = False,
                 profile: bool = False) -> None:
        self.g = g
        self.plan = plan
        self.snapshot = snapshot  # check mode: keep a copy of every value as it is computed
        self.profile = profile  # step.profile(): add each node's time to _prof[node]
        self.w = Writer()
        self.names: dict[Value, str] = {}
        self.kernels: dict[str, Kernel] = {}
        self.consts: list[np.ndarray] = []
        self.const_of: dict[Value, str] = {}
        self.kir: dict[str, kir.Kernel] = {}  # kernel name -> its kernel IR
        self.native = True
        self.numbers = value_numbers(g)
        self.texts: list[str] = []  # strings a Python driver passes as ids (_T)
        # the workspace: buffers a Python driver takes from `_w` (made once per program, see
        # planned_buffers) instead of allocating them on every call; (shape, dtype) each
        self.ws: list[tuple[tuple[int, ...], str]] = []
        self.fresh: set[Value] | None = None  # buffers that must be new each call (or None)
        self.prefix = ""  # a region's nodes are named apart from the graph's: r3b_v0
        # value -> the parameter its effect writes, for results computed straight into that
        # parameter's buffer (`_effect_targets`: a .grad nothing reads, zero_grad'ed)
        self.direct: dict[Value, str] = {}

    def child(self, r: Region, prefix: str, base: int, branch: bool = False) -> _Gen:
        """A generator for region `r`, writing into this one's text, kernels and constants:
        the region as a graph of its own (params as inputs) with its own buffer plan. `base`
        is the number the printer gives the region's first param. A `branch` (of a cond)
        runs once and its results are copied out at once: all its buffers may be the
        workspace's."""
        sub = _Gen.__new__(_Gen)
        sub.__dict__.update(self.__dict__)
        sub.g = Graph(prefix, r.params, (), r.nodes, r.results)
        sub.plan = make_plan(sub.g)
        verify_plan(sub.g, sub.plan)
        sub.snapshot = False
        sub.direct = {}
        sub.numbers = [base + len(r.params) + k for k in value_numbers(sub.g)]
        sub.prefix = prefix
        # the workspace (shared list: one per program) holds the region's temporaries; what
        # the region returns (a loop's carry, its ys, a branch's results) is allocated anew,
        # so an iteration never overwrites a buffer the next one reads
        sub.fresh = None if self.fresh is None else set() if branch else \
            fresh_buffers(sub.g, sub.plan)
        return sub

    def text(self, t: str) -> str:
        if t not in self.texts:
            self.texts.append(t)
        return f"_T[{self.texts.index(t)}]"

    def ref(self, o: Operand, dtype: DType | None = None) -> str:
        if isinstance(o, Const):
            return lit(o.value, dtype or o.dtype)
        return self.names[o]

    def kernel(self, k: Kernel, ir: kir.Kernel) -> str:
        self.kernels[k.name] = k
        self.kir[k.name] = ir
        return k.name

    def planned(self, v: Value) -> str | None:
        """The workspace buffer `v` is computed into, when it may live in one (or the buffer
        of the parameter its effect writes, when that one is C-contiguous: `direct`)."""
        if self.fresh is None or v in self.fresh:
            return None
        self.ws.append((tuple(v.type.shape), np_name(v.type.dtype)))
        ws = f"_w[{len(self.ws) - 1}]"
        t = self.direct.get(v)
        return ws if t is None else f"({t} if {t}.flags.c_contiguous else {ws})"

    def scratch(self, name: str, shape: tuple[int, ...]) -> list[str]:
        """The scratch arrays kernel `name` takes (`kir.Param.scratch`), for this domain:
        workspace buffers, or (no workspace) new arrays."""
        out = []
        for p in self.kir[name].params:
            if p.scratch is None:
                continue
            dims = tuple(_extent(e, shape) for e in p.scratch)
            if self.fresh is None:
                out.append(f"np.empty({dims!r}, {np_name(p.dtype)})")
            else:
                self.ws.append((dims, np_name(p.dtype)))
                out.append(f"_w[{len(self.ws) - 1}]")
        return out

    def alloc(self, outs: list[Value], reuse: dict[int, int], args: list[str]) -> None:
        """The buffers a kernel writes: the workspace's, fresh, or (the buffer plan) an
        operand's."""
        for k, v in enumerate(outs):
            o, t = self.names[v], v.type
            shape, dtype = tuple(t.shape), np_name(t.dtype)
            if k in reuse:
                self.w.line(f"{o} = {args[reuse[k]]}")
            elif (buf := self.planned(v)) is not None:
                self.w.line(f"{o} = {buf}")
            elif not self.native and math.prod(shape) * t.dtype.np.itemsize >= \
                    pool.THRESHOLD_BYTES:
                # a large buffer: from the pool of blocks dead arrays released (glibc maps
                # each fresh one anew, and its first touch faults every page)
                self.w.line(f"{o} = _pool_empty({shape!r}, {dtype})")
            else:
                self.w.line(f"{o} = np.empty({shape!r}, {dtype})")

    def node(self, i: int, n: Node) -> None:
        out = f"{self.prefix}v{i}"
        num = self.numbers[i]  # as ir() numbers this node's (first) result
        origin = f"%{num} {n.loc}"
        for j, o in enumerate(n.outs):
            self.names[o] = out if len(n.outs) == 1 else f"{out}_{j}"

        args = [self.ref(v) for v in n.inputs]
        comment = f"  # %{num} {n.name} {n.loc}"
        if n.op.control:
            self.control(i, n, args, comment, origin)
            return
        if n.op is CONSTANT:  # baked into the module, shared by every call
            c = _const_name(len(self.consts))
            value = np.asarray(n.attrs["value"])  # (ascontiguousarray would make 0-d 1-d)
            self.const_of[n.out] = c
            if value.ndim == 0:  # Numba freezes a 0-d global array as 1-d: store it so
                self.consts.append(value.reshape(1))
                self.w.line(f"{out} = {c}.reshape(()){comment}", origin)
            else:
                self.consts.append(np.ascontiguousarray(value))
                self.w.line(f"{out} = {c}{comment}", origin)
            return
        if n.op is FUSED:
            reuse = self.plan.for_node(i)
            k = self.kernel(*fused_kernel(n, reuse))
            shape = repr(tuple(n.attrs.get("domain", n.outs[0].type.shape)))
            onames = [self.names[o] for o in n.outs]
            self.alloc(list(n.outs), reuse, args)
            written = [o for j, o in enumerate(onames) if j not in reuse]  # (the rest: operands)
            written += self.scratch(k, tuple(n.attrs.get("domain", n.outs[0].type.shape)))
            self.w.line(f"{k}({shape}, {', '.join(args + written)})"
                        f"{comment}: {' ; '.join(m.name for m in n.attrs['body'].nodes)}", origin)
            return
        if n.op.dynamic_shape:
            raise UnsupportedError(f"{n.name} has a data-dependent output shape")
        if n.op.kind is Kind.ELEMENTWISE and n.op.scalar is not None:
            from ..passes.fuse import _make_fused

            self.node(i, _make_fused(_Single(n), set(n.outs), 0))  # a group of one
            return
        if n.op.kind is Kind.REDUCE and n.op.reduce is not None:
            k = self.kernel(*reduce_kernel(n))
            self.alloc([n.out], {}, args)
            x = n.inputs[0]
            scratch = "".join(f", {b}" for b in self.scratch(
                k, tuple(x.type.shape) if isinstance(x, Value) else ()))
            self.w.line(f"{k}({args[0]}.shape, {args[0]}, {out}{scratch}){comment}", origin)
            return
        ins = [v.type if isinstance(v, Value) else v.value for v in n.inputs]
        text = _rule(n.op)(args, n.attrs, n.out.type, ins)
        if text is None:
            shown = ", ".join(map(str, ins))
            raise UnsupportedError(f"{n.name} with these operands ({shown}) has no CPU "
                                   "compilation rule")
        text = text.replace("{loc}", repr(n.loc))  # the user's line, for a kernel's errors
        if "{into}" in text:  # the rule can write its result into a buffer it is given
            buf = self.planned(n.out)
            text = text.replace("{into}", "" if buf is None else f", {buf}")
        if not self.native:  # str('...') arguments as ids (ops/index.py's text_ids)
            text = _STR_ARG.sub(lambda m: self.text(ast.literal_eval(m.group(1))), text)
            text = _I64_ARG.sub(lambda m: m.group(1), text)
        if "{out}" in text:
            self.w.line(text.replace("{out}", out).rstrip() + comment, origin)
        else:
            self.w.line(f"{out} = {text}{comment}", origin)

    # ---- control flow: the regions as Python statements under a real `if` or loop ----------

    def region(self, n: Node, key: str, prefix: str, bind: list[str]) -> list[str]:
        """Emit region `key` of `n` with its params bound to the expressions `bind`; returns
        the names of its results."""
        base = self.numbers[self.numbers_index(n)] + len(n.outs)
        for k in n.op.regions:
            if k == key:
                break
            r = n.attrs[k]
            base += len(r.params) + sum(values_printed(m) for m in r.nodes)
        r = n.attrs[key]
        sub = self.child(r, prefix, base, branch=n.op is COND)
        for p, b in zip(r.params, bind):
            self.names[p] = b
        for j, m in enumerate(r.nodes):
            sub.node(j, m)
        return [self.ref(v) for v in r.results]

    def numbers_index(self, n: Node) -> int:
        return next(i for i, m in enumerate(self.g.nodes) if m is n)

    def assign(self, names: list[str], values: list[str]) -> None:
        if names:
            self.w.line(f"{', '.join(names)}, = {', '.join(values)},")

    def control(self, i: int, n: Node, args: list[str], comment: str, origin: str) -> None:
        w, pre = self.w, f"{self.prefix}r{i}"
        outs = [self.names[o] for o in n.outs]
        if n.op is COND:
            # a result the call does not return lives in the workspace: the branch taken
            # copies its result into it (so alternating calls allocate nothing); one it
            # returns (or that views or is written into by the plan) is a new copy
            bufs = [self.planned(o) for o in n.outs]
            for o, b in zip(outs, bufs):
                if b is not None:
                    w.line(f"{o} = {b}")
            w.line(f"if {args[0]}:{comment}", origin)
            for key, head in (("then", None), ("else", "else:")):
                if head:
                    w.line(head)
                with w.indent():
                    res = self.region(n, key, f"{pre}{key[0]}_", args[1:])
                    self.assign([o for o, b in zip(outs, bufs) if b is None],
                                [f"np.copy({r})" for r, b in zip(res, bufs) if b is None])
                    for o, r, b in zip(outs, res, bufs):
                        if b is not None:
                            w.line(f"np.copyto({o}, {r})")
            return
        nc = n.attrs["n_consts"]
        if n.op is WHILE:
            carry = [f"{pre}c{j}" for j in range(len(n.outs))]
            self.assign(carry, args[nc:])
            cap = n.attrs["max_iterations"]
            w.line((f"for _ in range({cap}):" if cap is not None else "while True:") + comment,
                   origin)
            with w.indent():
                (go,) = self.region(n, "cond", f"{pre}c_", args[:nc] + carry)
                w.line(f"if not {go}:")
                with w.indent():
                    w.line("break")
                self.assign(carry, self.region(n, "body", f"{pre}b_", args[:nc] + carry))
                w.line("if _probe:  # (compiling: one trip runs every kernel)")
                with w.indent():
                    w.line("break")
            self.assign(outs, [f"np.copy({c})" for c in carry])
            return
        assert n.op is SCAN
        nk, length = n.attrs["n_carry"], n.attrs["length"]
        carry = [f"{pre}c{j}" for j in range(nk)]
        self.assign(carry, args[nc:nc + nk])
        xs = args[nc + nk:]
        for o, t in zip(outs[nk:], [o.type for o in n.outs[nk:]]):
            w.line(f"{o} = np.empty({tuple(t.shape)!r}, {np_name(t.dtype)})")
        order = f"range({length} - 1, -1, -1)" if n.attrs["reverse"] else f"range({length})"
        w.line(f"for {pre}t in {order}:{comment}", origin)
        with w.indent():
            sl = [f"{pre}x{k}" for k in range(len(xs))]
            self.assign(sl, [f"{x}[{pre}t, ...]" for x in xs])  # (a 0-d array, not a scalar)
            res = self.region(n, "body", f"{pre}b_", args[:nc] + carry + sl)
            for o, y in zip(outs[nk:], res[nk:]):  # before the carry is rebound: a y may
                w.line(f"{o}[{pre}t] = {y}")  # be the carry this step began with
            self.assign(carry, res[:nk])
            w.line("if _probe:  # (compiling: one trip runs every kernel)")
            with w.indent():
                w.line("break")
        self.assign(outs[:nk], [f"np.copy({c})" for c in carry])

    def generate(self, fname: str, native: bool = True) -> str:
        self.native = native
        g = self.g
        for k, v in enumerate(g.params):
            self.names[v] = f"p{k}"
        if native:
            self.w.line(JIT)
        extra = ["_snap"] if self.snapshot else ["_prof"] if self.profile else []
        if has_loops(g):
            extra.append("_probe=False")
        self.w.line(f"def {fname}({', '.join([self.names[v] for v in g.params] + extra)}):")
        fills = self._effect_fills()
        checks = self._checks_after()
        if not native and not self.snapshot:
            self.fresh = fresh_buffers(g, self.plan)
            self.direct = {v: self.names[t] for v, t in _effect_targets(g, self.plan).items()}
        with self.w.indent():
            self._check(checks.get(-1, ()))  # (before the workspace is taken)
            self.w.line("_w = _take_ws()")
            at = len(self.w.lines)
            for i, n in enumerate(g.nodes):
                if n.out in fills:  # written by its effect straight into the target
                    continue
                if self.profile:
                    self.w.line("_t = _clock()")
                self.node(i, n)
                if self.profile:
                    self.w.line(f"_prof[{i}] += _clock() - _t")
                if self.snapshot:
                    self.w.line("_snap.append((" + "".join(
                        f"np.copy({self.names[o]}), " for o in n.outs) + "))")
                self._check(checks.get(i, ()))
            if self.profile:  # the effects' copies: one more slot
                self.w.line("_t = _clock()")
            view_made = {o for n in g.nodes if n.op.view for o in n.outs}
            aliasable = set(g.params) | view_made
            in_place = self.plan.in_place_effects(g)
            root = roots(g)
            for e in g.effects:
                if e.target in in_place:
                    self.w.line(f"# effect: {self.names[e.target]} was updated in place")
                    continue
                if e.source in fills:
                    self.w.line(f"{self.names[e.target]}[...] = {fills[e.source]}  # effect")
                    continue
                src = self.names[e.source]
                if e.source in self.direct:  # computed into the target unless not contiguous
                    self.w.line(f"if {src} is not {self.names[e.target]}:")
                    with self.w.indent():
                        self.w.line(f"{self.names[e.target]}[...] = {src}  # effect")
                    continue
                if e.source in aliasable and len(g.effects) > 1:
                    src += ".copy()"  # the source may alias another target written first
                self.w.line(f"{self.names[e.target]}[...] = {src}  # effect")
            if self.profile:
                self.w.line(f"_prof[{len(g.nodes)}] += _clock() - _t")
            outs = []
            for o in g.outputs:
                if isinstance(o, Value) and root.get(o, o) in self.const_of:
                    # constants (and views of them) are shared by every call: never returned
                    outs.append(f"np.copy({self.names[o]})")
                elif isinstance(o, Value) and o in self.names:
                    outs.append(self.names[o])
                else:
                    outs.append(f"np.array({self.ref(o)})")
            if self.ws:
                self.w.line("_WS.append(_w)")
            else:  # (no workspace after all)
                self.w.drop(at - 1)
            self.w.line("return (" + "".join(f"{o}, " for o in outs) + ")")
        return self.w.text()


    def _checks_after(self) -> dict[int, list[int]]:
        """Node index (-1: a parameter) -> the checks on a predicate it computes. Each is
        tested right after its node, so a call down a path not traced stops as early as it can,
        and always before the effects (the buffer plan writes none in place before it)."""
        made = {o: i for i, n in enumerate(self.g.nodes) for o in n.outs}
        params = set(self.g.params)
        out: dict[int, list[int]] = {}
        for k, c in enumerate(self.g.checks):
            v = self.g.outputs[c.output]
            if isinstance(v, Value) and (v in made or v in params):
                out.setdefault(made.get(v, -1), []).append(k)
            # (a constant predicate, folded, is the same on every call: nothing to test)
        return out

    def _check(self, ks: Any) -> None:
        for k in ks:
            c = self.g.checks[k]
            v = self.names[self.g.outputs[c.output]]  # type: ignore[index]
            self.w.line(f"if {v}.item() != {c.taken}:  # check: the branch at {c.loc}")
            with self.w.indent():
                self.w.line(f"raise PathNotTakenError({k})")

    def _effect_fills(self) -> dict[Value, str]:
        """Values made by `full` that are read only by one effect writing them into a target
        of their shape (`w.grad.zero_()`): the effect fills the target with the scalar, instead
        of allocating and filling an array and then copying it (two passes over the target's
        size and an allocation saved)."""
        if self.snapshot:  # check mode snapshots every value, the full included
            return {}
        uses = self.g.uses()
        made = {n.out: n for n in self.g.nodes if n.op.name == "full"}
        out: dict[Value, str] = {}
        for e in self.g.effects:
            n = made.get(e.source)
            if n is not None and uses[e.source] == 1 and \
                    e.target.type.shape == n.out.type.shape and \
                    e.target.type.dtype is n.out.type.dtype:
                out[n.out] = lit(n.attrs["value"], n.out.type.dtype)
        return out


def _effect_targets(g: Graph, plan: BufferPlan) -> dict[Value, Value]:
    """Results a Python driver may compute straight into the buffer of the parameter their
    effect writes, saving the copy at the end: a gradient written into a `.grad` that
    `zero_grad(set_to_none=False)` zeroed (simplify drops the accumulation into the zeros).
    The parameter must be read by no node at all (its old value is dead), of the result's
    type, written by this effect only; the result is not returned, not a view, not a constant,
    the source of no other effect, and computed after every node that may raise (the write
    commits the effect early). The driver still checks that the parameter is C-contiguous."""
    root = roots(g)
    read = {root.get(v, v) for n in g.nodes for v in n.values_in()}
    returned = {root.get(o, o) for o in g.outputs if isinstance(o, Value)}
    sources: dict[Value, int] = {}
    for e in g.effects:
        sources[e.source] = sources.get(e.source, 0) + 1
    made = {o: (i, n) for i, n in enumerate(g.nodes) for o in n.outs}
    raise_at = _last_raise(g)
    in_place = plan.in_place_effects(g)
    out: dict[Value, Value] = {}
    for e in g.effects:
        v, t = e.source, e.target
        if v not in made or t in read or t in returned or t in in_place or sources[v] != 1 or \
                v in returned:
            continue
        i, n = made[v]
        if i <= raise_at or n.op.control or is_view(n) or n.op.shared_result or \
                v.type != t.type or v in root:
            continue
        out[v] = t
    return out


def _extent(e: kir.Expr, shape: tuple[int, ...]) -> int:
    """The value of a scratch array's extent for a kernel called on domain `shape`."""
    if isinstance(e, kir.Dim):
        return shape[e.k]
    if isinstance(e, kir.Lit):
        return int(e.value)
    if isinstance(e, kir.Op) and e.op in ("add", "mul"):
        a, b = (_extent(x, shape) for x in e.args)
        return a + b if e.op == "add" else a * b
    raise AssertionError(f"a scratch extent the driver cannot compute: {e}")


def fresh_buffers(g: Graph, plan: BufferPlan) -> set[Value]:
    """The values whose buffers a Python driver must allocate anew on every call: those an
    output is, views or (by the buffer plan) is written into. Every other buffer a node
    computes is dead when the call returns (effects copy theirs into the targets), so it can
    live in the program's workspace, made once and reused by every call."""
    owner: dict[Value, Value] = {}  # value -> the value whose buffer it is

    def of(v: Value) -> Value:
        return owner.get(v, v)

    for i, n in enumerate(g.nodes):
        if is_view(n) and n.inputs and isinstance(n.inputs[0], Value):
            owner[n.out] = of(n.inputs[0])
        for k, j in plan.for_node(i).items():
            operand = n.inputs[j]
            if isinstance(operand, Value):
                owner[n.outs[k]] = of(operand)
    escaping = {of(o) for o in g.outputs if isinstance(o, Value)}
    return {v for n in g.nodes for v in n.outs if of(v) in escaping}


class _Single:
    """Adapter: one elementwise node seen as a one-member fusion group."""

    def __init__(self, n: Node) -> None:
        self.members = [n]
        self.defined = set(n.outs)
        self.shape = n.out.type.shape


def has_control(g: Graph) -> bool:
    return any(n.op.control for n in walk(g.nodes))


def has_loops(g: Graph) -> bool:
    return any(n.op is WHILE or n.op is SCAN for n in walk(g.nodes))


def host_imports(g: Graph) -> list[str]:
    """The import lines of the nodes whose compiled form calls Python (`OpDef.host`)."""
    return list(dict.fromkeys(n.op.host for n in walk(g.nodes) if n.op.host))


def use_native_driver(g: Graph) -> bool:
    """A graph with control flow always gets a Python driver (its `if` and loops over the njit
    kernels): Numba would compile each region into the one native function, inlining every
    kernel again, which is what makes native drivers slow to compile. So does a graph with a
    node that calls Python (a collective), which a native driver cannot call."""
    mode = get_flag("driver")
    if mode not in ("auto", "native", "python"):
        raise ValueError(f"TRACEJIT_DRIVER must be native, python or auto, got {mode!r}")
    if has_control(g) or host_imports(g):
        return False
    return mode == "native" or (mode == "auto" and len(g.nodes) <= NATIVE_DRIVER_MAX_NODES)


def generate(g: Graph, native: bool = True, plan: BufferPlan | None = None,
             snapshot: bool = False, profile: bool = False
             ) -> tuple[str, list[Kernel], list[np.ndarray], str, dict[str, kir.Kernel]]:
    """Source of the driver module (without kernels), its kernels, constants, and name.
    A native driver is one njit function; a Python one runs the same statements in the
    interpreter, calling the njit kernels (LLVM then never re-optimises every kernel inlined at
    every call site of a long unrolled driver, which is what makes big graphs slow to compile)."""
    gen = _Gen(g, make_plan(g) if plan is None else plan, snapshot, profile)
    body = gen.generate("DRIVER", native)
    digest = cache.content_hash(print_graph(g) + body + "".join(k.source for k in
                                                                 gen.kernels.values()))
    cdigest = hashlib.sha1(b"".join(c.tobytes() + str(c.dtype).encode() + str(c.shape).encode()
                                    for c in gen.consts)).hexdigest()
    fname = f"{g.name}_{hashlib.sha1((digest + cdigest).encode()).hexdigest()[:10]}" + \
        ("_check" if snapshot else "_profile" if profile else "")
    fname = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in fname)
    kind = "native driver" if native else "Python driver over njit kernels"
    header = (f"# tracejit program {fname}: graph {g.name}, {kind}, tracejit {cache.VERSION}, "
              f"numba {numba.__version__}\n# content hash {digest}\n")
    imports = ("from tracejit.runtime.cache import kernel as _k\n" if gen.kernels else "") + \
        "".join(f"{k} = _k({k!r})\n" for k in gen.kernels)
    consts = "".join(f"{_const_name(i)} = _consts[{i}]\n" for i in range(len(gen.consts)))
    if gen.consts:
        consts = ("from tracejit.runtime.cache import constants as _c\n"
                  f"_consts = _c({fname!r})\n" + consts)
    blas = "" if native else (
        "# 2-d matmuls run through the BLAS measured fastest for their shape (runtime/blas.py:\n"
        "# NumPy's OpenBLAS, as eager mode, or MKL), never the second OpenBLAS that Numba's\n"
        "# np.dot reaches through SciPy\n"
        "from tracejit.runtime.blas import matmul2d  # noqa: F811\nmatmul_batched = np.matmul\n"
        "from tracejit.runtime.pool import empty as _pool_empty  # noqa: F401\n" +
        ("from time import perf_counter as _clock\n" if profile else ""))
    if gen.ws:  # the workspace: one set of buffers per call in flight (a list of free sets, so
        # a call made while another runs, from a thread or a hook, takes a set of its own)
        consts += ("_WS_SPEC = (" + "".join(f"({shape!r}, {dt}), " for shape, dt in gen.ws) +
                   ")\n_WS = []\n\n\ndef _take_ws():\n"
                   "    try:  # (never 'if _WS: pop': another thread may take the last between)\n"
                   "        return _WS.pop()\n"
                   "    except IndexError:\n"
                   "        return tuple([np.empty(s, d) for s, d in _WS_SPEC])\n")
    if g.checks:
        consts += "from tracejit.errors import PathNotTakenError\n"
    consts += "".join(line + "\n" for line in host_imports(g))
    if gen.texts:
        consts += ("from tracejit.ops.index import text_ids as _text_ids\n"
                   f"_T = _text_ids({tuple(gen.texts)!r})\n")
    rest = blas + imports + consts + "\n\n" + body.replace("DRIVER", fname)
    src = header + prelude_for(rest) + rest
    return src, list(gen.kernels.values()), gen.consts, fname, gen.kir


def _report_and_clear(fname: str, kernels: list[Kernel], e: Exception) -> None:
    cache._warn(f"tracejit: the compiled cache of {fname} could not be loaded "
                f"({type(e).__name__}: {str(e)[:200]}); rebuilding it")
    for name in [fname] + [k.name for k in kernels]:
        cache.discard(name)


def _raised_in(e: BaseException, where: str) -> bool:
    """Did `e` (or an exception it was raised from) pass through a file under `where`?"""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        tb = x.__traceback__
        while tb is not None:
            if os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(where):
                return True
            tb = tb.tb_next
        x = x.__cause__ or x.__context__
    return False


_NUMBA_DIR = os.path.dirname(os.path.abspath(numba.__file__)) + os.sep
_NUMBA_CACHING = os.path.join(_NUMBA_DIR, "core", "caching.py")


def _failed(e: Exception, attempt: int, fname: str, kernels: list[Kernel]) -> None:
    """What a failure to load or compile a program means. A corrupted Numba cache file, on the
    first attempt: reported once and dropped, and this returns so the caller rebuilds. An
    error Numba raised: UnsupportedError, the reason the graph runs eagerly, in one short line,
    never Numba's traceback. Anything else (tracejit's own bug) propagates."""
    if not attempt and _raised_in(e, _NUMBA_CACHING):
        _report_and_clear(fname, kernels, e)
        return
    if not (isinstance(e, numba.core.errors.NumbaError) or _raised_in(e, _NUMBA_DIR)):
        raise e
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise UnsupportedError(f"Numba could not compile {fname}: {type(e).__name__}: "
                           f"{first}") from None


def _check_dtypes(g: Graph) -> None:
    """Numba has no float16 on CPU (not even as an array element type): such graphs run
    eagerly (NumPy's float16) rather than failing inside Numba."""
    def values(nodes: Any) -> Any:
        for n in nodes:
            yield from n.outs
            for body in n.regions():
                yield from body.params
                yield from values(body.nodes)

    for v in [*g.params, *values(g.nodes)]:
        if v.type.dtype.np == np.float16:
            raise UnsupportedError("float16 is not compiled on CPU (Numba has no float16 "
                                   "type); compute in float32 (x.float()) to compile")


def compile_graph(g: Graph, snapshot: bool = False, profile: bool = False) -> Program:
    """Compile `g` with its buffer plan (made here, and verified). With `snapshot` (check
    mode), a Python driver that takes one more argument, a list, and appends to it a copy of
    every node's results as they are computed. With `profile` (step.profile()), a Python
    driver that takes a list of len(g.nodes) + 1 floats and adds to item i the seconds node i
    took (its allocations and its call), to the last one the effects' copies."""
    native = use_native_driver(g) and not snapshot and not profile
    _check_dtypes(g)
    plan = make_plan(g)
    verify_plan(g, plan)
    src, kernels, consts, fname, kernel_ir = generate(g, native, plan, snapshot, profile)
    for k in kernels:
        cache.register_kernel(k.name, k.source)
    if consts:
        cache.register_constants(fname, consts)
    if not native:
        prog = _python_program(g, src, fname, kernels, plan, snapshot, profile)
        prog.kernel_ir = kernel_ir
        return prog
    sig = tuple(numba.typeof(np.empty(v.type.shape, v.type.dtype.np)) for v in g.params)
    misses = 0
    for attempt in (0, 1):
        mod = cache.load_module(fname, src)
        fn = getattr(mod, fname)
        misses = sum(fn.stats.cache_misses.values())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
                fn.compile(sig)
            break
        except (numba.TypingError, numba.errors.UnsupportedError) as e:
            raise UnsupportedError(f"Numba could not compile {fname}: "
                              f"{str(e).splitlines()[0]}") from None
        except Exception as e:
            _failed(e, attempt, fname, kernels)  # returns only to try again
    cache.seal([fname] + [k.name for k in kernels])
    # no new miss: the machine code came from Numba's disk cache (or this process had it)
    from_disk = sum(fn.stats.cache_misses.values()) == misses
    return Program(fname, src, fn, from_disk, kernels=[k.name for k in kernels], plan=plan,
                   kernel_ir=kernel_ir)


def _python_program(g: Graph, src: str, fname: str, kernels: list[Kernel], plan: BufferPlan,
                    snapshot: bool = False, profile: bool = False) -> Program:
    """Load a Python driver and run it once on copies of typical inputs, so its kernels are
    compiled (or loaded from Numba's cache) now rather than inside the first real call."""
    # ones for floats; zeros for integers, the one index valid for any non-empty dimension
    probe = [(np.ones if v.type.dtype.is_floating_point else np.zeros)(v.type.shape,
                                                                       v.type.dtype.np)
             for v in g.params]
    for attempt in (0, 1):
        mod = cache.load_module(fname, src)
        fn = getattr(mod, fname)
        dispatchers = [getattr(mod, k.name) for k in kernels]
        before = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
                extra = [[]] if snapshot else [[0.0] * (len(g.nodes) + 1)] if profile else []
                fn(*[p.copy() for p in probe], *extra,
                   **({"_probe": True} if has_loops(g) else {}))
            break
        except (IndexError, PathNotTakenError):  # a bounds check fired on the probe's made-up
            break  # values, or a branch went elsewhere: kernels not reached compile when called
        except (numba.TypingError, numba.errors.UnsupportedError) as e:
            raise UnsupportedError(f"Numba could not compile a kernel of {fname}: "
                                   f"{str(e).splitlines()[0]}") from None
        except Exception as e:
            _failed(e, attempt, fname, kernels)  # returns only to try again
    cache.seal([k.name for k in kernels])
    after = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
    return Program(fname, src, fn, from_disk=after == before,
                   kernels=[k.name for k in kernels], native=False, plan=plan)
