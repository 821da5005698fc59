"""Special values, generated from the op registry: every elementwise op with a kernel IR `scalar`
and every reduction with a `ReduceSpec`, plus the composites built from them, evaluated on 0, -0,
+-inf, NaN, the smallest denormals (float32's and float64's), the smallest normal, +-the largest
finite value and a few ordinary numbers, in float32, float64 and int64 (with int64's extremes):
eager vs compiled vs torch.

The cases are built from `REGISTRY`: an op's arity comes from its template, its attributes from
`ATTRS`, so a new op is covered without a new test; an op this file cannot build a call for
fails `test_every_op_is_covered` until it is added to `ATTRS` (or to `EXCLUDED`, with a reason).

Cost: Numba compiles dominate, so each dtype gets ONE jitted function for all elementwise cases
(fusion puts them into a few kernels, one per output shape) and one for all reductions.

Comparison: NaN positions, the sign of zeros and infinities, and dtypes must agree exactly;
finite values must be equal, except for the ops in `ULPS` (transcendental functions and the
composites built from them), which may differ by a few units in the last place (see `ULPS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import tracejit
import tracejit.nn.functional as F
from tracejit import dtypes as dt
from tracejit.dispatch import dispatch
from tracejit.kir import SCALAR_OPS
from tracejit.ops import REGISTRY
from tracejit.ops.registry import Kind, OpDef, OpError, TensorType

try:
    import torch
except ImportError:  # the eager-vs-jit half still runs
    torch = None

# eager add/sub/mul are NumPy's, which warn on inf - inf or an overflow (torch is silent)
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

INF, NAN = float("inf"), float("nan")
D32 = float(np.finfo(np.float32).smallest_subnormal)  # 1.4e-45
D64 = float(np.finfo(np.float64).smallest_subnormal)  # 5e-324 (0 in float32)
I64 = np.iinfo(np.int64)
DTYPES = {"float32": dt.float32, "float64": dt.float64, "int64": dt.int64}


def vector(dtype: str) -> np.ndarray:
    if dtype == "int64":
        return np.array([0, 1, -1, 2, -3, 7, 63, I64.max, I64.min, I64.max - 1, I64.min + 1],
                        np.int64)
    fi = np.finfo(dtype)
    return np.array([0.0, -0.0, INF, -INF, NAN, D32, -D32, D64, -D64, float(fi.smallest_normal),
                     float(fi.max), -float(fi.max), 1.0, -1.0, 0.5, -2.5, 3.0, 100.0], dtype)


def matrix(dtype: str) -> np.ndarray:
    """Rows for reductions. Each row's (and column's) sum and product are exact in float32
    whether accumulated in float32 (NumPy, torch) or float64 (compiled code, documented): the
    test is about special values, not about rounding or overflow order in long sums."""
    if dtype == "int64":
        return np.array([[I64.max, 1, -1, 0], [I64.min, I64.max, 2, 3], [I64.min, I64.min, 5, -7],
                         [0, 0, 0, 0], [I64.max, I64.max, I64.min, 1]], np.int64)
    mx = float(np.finfo(dtype).max)
    return np.array([
        [-INF, NAN, 2.0, -3.0],  # the row
        [NAN, -INF, INF, 1.0],
        [INF, -INF, 0.0, 1.0],
        [0.0, -0.0, -0.0, 0.0],
        [-0.0, -0.0, -0.0, -0.0],
        [D64, D32, -D32, 1.0],
        [mx, mx, 1.0, 1.0],
        [-mx, mx, 1.0, -1.0],
        [NAN, NAN, 1.0, 2.0],
        [-0.0, 0.0, -1.0, -2.0],  # which zero is the max (and the min of the next row)
        [-0.0, 0.0, 1.0, 2.0],
        [-INF, -INF, -INF, -INF],
        [1.0, -1.0, 0.5, -2.5],
    ], dtype)


# ---- how to call each op ---------------------------------------------------------------------
# attributes: every set of values an op is called with (an op whose attributes are missing here
# fails test_every_op_is_covered)
ELEMENTWISE_ATTRS: dict[tuple[str, ...], Callable[[str], list[dict[str, Any]]]] = {
    (): lambda d: [{}],
    ("dtype",): lambda d: [{"dtype": t} for t in (dt.float32, dt.float64, dt.int64, dt.bool_)],
    ("min", "max"): lambda d: (
        [{"min": 0, "max": None}, {"min": None, "max": -1}, {"min": -3, "max": 7},
         {"min": 2, "max": -2}] if d == "int64" else
        [{"min": 0.0, "max": None}, {"min": None, "max": -0.0}, {"min": -1.0, "max": 1.0},
         {"min": 0.5, "max": -0.5}, {"min": -INF, "max": INF}, {"min": NAN, "max": None}]),
}
REDUCE_ATTRS: dict[tuple[str, ...], list[dict[str, Any]]] = {
    ("dims", "keepdim"): [{"dims": (1,), "keepdim": False}, {"dims": (0,), "keepdim": True},
                          {"dims": (0, 1), "keepdim": False}],
    ("dim", "keepdim"): [{"dim": 1, "keepdim": False}, {"dim": 0, "keepdim": True},
                         {"dim": None, "keepdim": False}],
}
# operands that are not "the tested dtype": where's condition is a bool tensor
OPERAND_KINDS: dict[str, tuple[str, ...]] = {"where": ("bool", "x", "x")}


# values an op is not called with, and why (everything else gets the full vector)
def _domain(op: str, attrs: dict[str, Any], dtype: str, k: int, v: np.ndarray) -> np.ndarray:
    keep = np.ones(v.shape, bool)
    if op == "cast" and dtype != "int64" and attrs["dtype"] is dt.int64:
        # float -> int of NaN, inf or a value out of range is undefined behaviour in C and
        # LLVM (torch documents it as undefined); only in-range values are compared
        keep = np.isfinite(v) & (np.abs(v) < 2.0**62)
    if op == "pow" and dtype == "int64" and k == 1:
        keep = v >= 0  # integers to negative integer powers raise (tested in test_ops)
    return keep


# ops left out entirely, with the reason
EXCLUDED: dict[str, str] = {
    "philox": "its operands are a generator's counter indices, key and offset, not values; "
              "tests/test_rng.py covers it (known answers, eager == compiled)",
}

# Units in the last place allowed on finite values, per op (everything else must be exact).
# Compiled code calls libm (glibc: < 1 ulp) through Numba/LLVM; eager calls NumPy, whose SIMD
# float32 exp/log/sin/cos/tanh are accurate to about 1-4 ulp; torch uses its own vectorised
# (Sleef-based) kernels. Composites chain several such results. float64 libraries are all
# within 1-2 ulp of the correctly rounded result.
TRANSCENDENTAL = {"exp", "log", "log1p", "expm1", "sin", "cos", "tanh", "sigmoid", "erf", "pow"}
ULPS = {"float32": 4, "float64": 2}
TORCH_ULPS = {"float32": 8, "float64": 4}
# Which zero a -0.0/+0.0 tie gives is not compared with torch for these: torch's scalar and
# vectorised loops disagree (torch.maximum(-0., 0.) is -0. on 2 elements, +0. on 324).
# gelu: x * Phi(x) is -0.0 for x = -0.0 and where it underflows for x < 0 (tracejit's value);
# torch's AVX2 loop (the AMD machine) returns +0.0 there, its AVX-512 loop (Intel) -0.0.
TORCH_ZERO_TIES = {"maximum", "minimum", "amax", "amin", "F.gelu"}  # (ops, or composites' labels)
# Compiled amax/amin reduce with IEEE 754-2019 maximum/minimum (LLVM's llvm.maximum, which
# vectorises), where -0.0 < +0.0; NumPy's reduction returns whichever zero its loop met first.
JIT_ZERO_TIES = {"amax", "amin"}
# Correctly rounded in NumPy (IEEE sqrt), 1 ulp off in torch's float64 loops on the Intel
# machine (sqrt(0.5) is 0.7071067811865475): compared with torch to TORCH_ULPS.
TORCH_ROUNDS = {"sqrt"}
# A composite rounds at every primitive and may cancel (gelu-tanh's 1 + tanh(u) near x = -2.5
# loses 6 bits), so its finite values are compared as allclose: (rtol, atol) per dtype.
CLOSE = {"float32": (1e-5, 1e-6), "float64": (1e-12, 1e-14)}


@dataclass
class Case:
    label: str
    op: str  # the registry op, or "composite"
    ins: list[str]  # names of the input arrays (or literal values) for the jitted function
    run: Callable[..., Any]  # run(*tensors) -> Tensor or tuple of Tensors (tracejit)
    torch_run: Callable[..., Any] | None  # the same with torch tensors; None: see skip
    torch_skip: str = ""
    ulps: dict[str, int] = field(default_factory=dict)  # output dtype -> ulps vs eager
    torch_ulps: dict[str, int] = field(default_factory=dict)  # the same, vs torch
    close: dict[str, tuple[float, float]] = field(default_factory=dict)  # (rtol, atol)
    # composites: where torch's answer is NaN, ours may be a number (the brief: agree with torch
    # where torch gives a non-NaN answer; torch's var of [-max, max, 1, -1] is NaN from
    # overflow inside Welford's update, ours the true result's rounding, inf)
    torch_nan_ok: bool = False
    torch_skip_at: tuple[float, ...] = ()  # input values whose torch result is not compared


def _arity(op: OpDef) -> int:
    assert op.scalar is not None
    return SCALAR_OPS[op.scalar]


def _accepts(op: OpDef, types: list[Any], attrs: dict[str, Any]) -> bool:
    try:
        op.infer(types, **attrs)
    except OpError:
        return False
    return True


def _torch_dtype(d: dt.DType) -> Any:
    return getattr(torch, d.name if d.name != "bool" else "bool")


# registry op -> torch function, where the names differ (an op torch lacks under its own name
# and not listed here has no torch counterpart: test_eager_matches_torch fails for it)
TORCH_NAMES: dict[str, str] = {}


def _torch_elementwise(name: str, attrs: dict[str, Any]) -> Callable[..., Any] | None:
    if name == "cast":
        return lambda x: x.to(_torch_dtype(attrs["dtype"]))
    if name == "clamp":
        return lambda x: torch.clamp(x, attrs["min"], attrs["max"])
    f = getattr(torch, TORCH_NAMES.get(name, name), None)
    return None if f is None else lambda *a: f(*a, **attrs)


def _torch_reduce(name: str, attrs: dict[str, Any]) -> Callable[..., Any] | None:
    f = getattr(torch, TORCH_NAMES.get(name, name), None)
    if f is None:
        return None
    if "dim" in attrs:
        return lambda x: f(x, dim=attrs["dim"], keepdim=attrs["keepdim"])
    dims, keep = attrs["dims"], attrs["keepdim"]
    if name == "prod":  # torch.prod takes one dim
        def prod(x: Any) -> Any:
            for d in sorted(dims, reverse=True):
                x = x.prod(d, keepdim=True)
            return x if keep else x.reshape([n for i, n in enumerate(x.shape) if i not in dims])
        return prod
    return lambda x: f(x, dim=dims, keepdim=keep)


def _op_call(op: OpDef, attrs: dict[str, Any]) -> Callable[..., Any]:
    return lambda *ts: dispatch(op, ts, dict(attrs))


def _attr_label(attrs: dict[str, Any]) -> str:
    return ",".join(f"{k}={getattr(v, 'name', v)}" for k, v in attrs.items())


class Builder:
    """Collects named input arrays and cases for one jitted function."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: list[Case] = []

    def array(self, name: str, a: np.ndarray) -> str:
        """The name of input array `a` (an equal array added before keeps its name, so cases
        on the same values share inputs and can be chained into one kernel)."""
        for n, old in self.arrays.items():
            if old.dtype == a.dtype and old.shape == a.shape and old.tobytes() == a.tobytes():
                return n
        self.arrays[name] = a
        return name


def elementwise_ops() -> list[OpDef]:
    return [op for op in REGISTRY.values() if op.kind is Kind.ELEMENTWISE and op.scalar is not None
            and op.name not in EXCLUDED]


def reduce_ops() -> list[OpDef]:
    return [op for op in REGISTRY.values() if op.kind is Kind.REDUCE and op.reduce is not None
            and op.name not in EXCLUDED]


def _inputs(arity: int, dtype: str, kinds: tuple[str, ...]) -> list[np.ndarray]:
    """The cross product of the special values over the operands (a bool condition takes
    False and True)."""
    axes = [np.array([False, True]) if k == "bool" else vector(dtype) for k in kinds[:arity]]
    grids = np.meshgrid(*axes, indexing="ij")
    return [g.reshape(-1) for g in grids]


def build_elementwise(dtype: str) -> Builder:
    b = Builder()
    d = DTYPES[dtype]
    for op in elementwise_ops():
        n = _arity(op)
        kinds = OPERAND_KINDS.get(op.name, ("x",) * n)
        if op.attrs not in ELEMENTWISE_ATTRS:
            raise AssertionError(f"op {op.name!r}: attributes {op.attrs} unknown to "
                                 "test_special_values.ELEMENTWISE_ATTRS; add how to call it")
        for attrs in ELEMENTWISE_ATTRS[op.attrs](dtype):
            types = [TensorType((1,), dt.bool_ if k == "bool" else d) for k in kinds]
            if not _accepts(op, types, attrs):
                continue  # e.g. neg of bool; ops that reject this dtype are tested elsewhere
            arrays = _inputs(n, dtype, kinds)
            keep = np.ones(arrays[0].shape, bool)
            for k, a in enumerate(arrays):
                if kinds[k] != "bool":
                    keep &= _domain(op.name, attrs, dtype, k, a)
            arrays = [a[keep] for a in arrays]
            tag = f"{op.name}[{_attr_label(attrs)}]" if attrs else op.name
            names = [b.array(f"{tag}:{k}", a) for k, a in enumerate(arrays)]
            tol = op.name in TRANSCENDENTAL
            b.cases.append(Case(f"{tag} {dtype}", op.name, names, _op_call(op, attrs),
                                _torch_elementwise(op.name, attrs) if torch else None,
                                ulps=ULPS if tol else {},
                                torch_ulps=TORCH_ULPS if tol or op.name in TORCH_ROUNDS else {}))
            if n == 2 and dtype != "int64":
                _literal_cases(b, op, dtype, tol)
    if dtype != "int64":
        _elementwise_composites(b, dtype)
    return b


LITERALS = (-0.0, NAN, INF, -INF)


def _literal_cases(b: Builder, op: OpDef, dtype: str, tol: bool) -> None:
    """A Python number as an operand becomes a typed literal in generated code: special
    values as the right operand, and -0.0/NaN as the left one."""
    x = b.array("vector", vector(dtype))
    for side, vals in (("R", LITERALS), ("L", (-0.0, NAN))):
        for v in vals:
            # (torch takes the number as a 0-d tensor)
            f = getattr(torch, TORCH_NAMES.get(op.name, op.name), None) if torch else None
            if side == "R":
                run = lambda t, v=v: dispatch(op, (t, v))
                trun = lambda t, v=v, f=f: f(t, torch.tensor(v, dtype=t.dtype))
            else:
                run = lambda t, v=v: dispatch(op, (v, t))
                trun = lambda t, v=v, f=f: f(torch.tensor(v, dtype=t.dtype), t)
            b.cases.append(Case(f"{op.name}({'x, ' if side == 'R' else ''}{v}"
                                f"{', x' if side == 'L' else ''}) {dtype}", op.name, [x], run,
                                trun if f is not None else None, ulps=ULPS if tol else {},
                                torch_ulps=TORCH_ULPS if tol else {}))


def _elementwise_composites(b: Builder, dtype: str) -> None:
    """Composites over elementwise ops (tracejit.functional, nn.functional), vs torch."""
    x = b.array("vector", vector(dtype))
    tf = torch.nn.functional if torch else None
    fmax = float(np.finfo(dtype).max)
    # label, tracejit, torch (None: not compared, with the reason), inputs where torch's
    # result is not compared (with the reason)
    table: list[tuple[str, Callable[..., Any], Callable[..., Any] | str, tuple[float, ...]]] = [
        ("trunc", lambda t: t.trunc(), lambda t: t.trunc(), ()),
        ("square", lambda t: t.square(), lambda t: t.square(), ()),
        ("isnan", lambda t: t.isnan(), lambda t: t.isnan(), ()),
        ("isinf", lambda t: t.isinf(), lambda t: t.isinf(), ()),
        ("isfinite", lambda t: t.isfinite(), lambda t: t.isfinite(), ()),
        ("clamp_min(-0.0)", lambda t: t.clamp_min(-0.0), lambda t: t.clamp_min(-0.0), ()),
        ("floordiv 2", lambda t: t // 2,
         "x // 2 is floor(x / 2) here; torch's floor division goes through fmod (nan at +-inf, "
         "-1 for -denormal // 2, where x / 2 underflows to -0)", ()),
        ("F.relu", F.relu, lambda t: tf.relu(t), ()),
        ("F.silu", F.silu, lambda t: tf.silu(t), ()),
        # torch's float32 gelu is nan at +inf and overflows to inf at the largest float
        ("F.gelu", F.gelu, lambda t: tf.gelu(t), (INF, fmax) if dtype == "float32" else ()),
        ("F.gelu tanh", lambda t: F.gelu(t, approximate="tanh"),
         lambda t: tf.gelu(t, approximate="tanh"), ()),
        ("F.softplus", F.softplus, lambda t: tf.softplus(t), ()),
        ("F.softplus beta=2 threshold=5", lambda t: F.softplus(t, 2.0, 5.0),
         lambda t: tf.softplus(t, 2.0, 5.0), ()),
        ("F.leaky_relu", F.leaky_relu, lambda t: tf.leaky_relu(t), ()),
        ("F.sigmoid", F.sigmoid, lambda t: tf.sigmoid(t), ()),
        ("F.tanh", F.tanh, lambda t: tf.tanh(t), ()),
        ("bce_with_logits y=0", lambda t: F.binary_cross_entropy_with_logits(
            t, tracejit.zeros_like(t), reduction="none"),
         lambda t: tf.binary_cross_entropy_with_logits(t, torch.zeros_like(t),
                                                        reduction="none"), ()),
    ]
    for label, run, trun, skip_at in table:
        b.cases.append(Case(f"{label} {dtype}", "composite", [x], run,
                            trun if torch and not isinstance(trun, str) else None,
                            torch_skip=trun if isinstance(trun, str) else "", close=CLOSE,
                            torch_nan_ok=True, torch_skip_at=skip_at))


def build_reductions(dtype: str) -> Builder:
    b = Builder()
    m = b.array("matrix", matrix(dtype))
    d = DTYPES[dtype]
    for op in reduce_ops():
        if op.attrs not in REDUCE_ATTRS:
            raise AssertionError(f"reduction {op.name!r}: attributes {op.attrs} unknown to "
                                 "test_special_values.REDUCE_ATTRS; add how to call it")
        for attrs in REDUCE_ATTRS[op.attrs]:
            if not _accepts(op, [TensorType((2, 2), d)], attrs):
                continue
            b.cases.append(Case(f"{op.name}[{_attr_label(attrs)}] {dtype}", op.name, [m],
                                _op_call(op, attrs),
                                _torch_reduce(op.name, attrs) if torch else None))
    if dtype != "int64":
        _row_composites(b, dtype, m)
    else:
        b.cases.append(Case("max(dim=1) int64", "composite", [m], lambda t: tuple(t.max(1)),
                            (lambda t: tuple(t.max(1))) if torch else None))
    return b


def _row_composites(b: Builder, dtype: str, m: str) -> None:
    tf = torch.nn.functional if torch else None
    table: list[tuple[str, Callable[..., Any], Callable[..., Any] | None, bool]] = [
        ("max(dim=1)", lambda t: tuple(t.max(1)), lambda t: tuple(t.max(1)), False),
        ("min(dim=0, keepdim)", lambda t: tuple(t.min(0, True)), lambda t: tuple(t.min(0, True)),
         False),
        ("max()", lambda t: t.max(), lambda t: t.max(), False),
        ("min()", lambda t: t.min(), lambda t: t.min(), False),
        ("mean(1)", lambda t: t.mean(1), lambda t: t.mean(1), True),
        ("var(1)", lambda t: t.var(1), lambda t: t.var(1), True),
        ("std(0)", lambda t: t.std(0), lambda t: t.std(0), True),
        ("norm(dim=1)", lambda t: t.norm(dim=1), lambda t: t.norm(dim=1), True),
        ("norm(1, dim=1)", lambda t: t.norm(1, dim=1), lambda t: t.norm(1, dim=1), True),
        ("norm(inf, dim=1)", lambda t: t.norm(INF, dim=1), lambda t: t.norm(INF, dim=1), False),
        ("logsumexp(1)", lambda t: t.logsumexp(1), lambda t: t.logsumexp(1), True),
        ("softmax(1)", lambda t: t.softmax(1), lambda t: t.softmax(1), True),
        ("log_softmax(1)", lambda t: t.log_softmax(1), lambda t: t.log_softmax(1), True),
        ("F.normalize", lambda t: F.normalize(t), lambda t: tf.normalize(t), True),
    ]
    for label, run, trun, tol in table:
        b.cases.append(Case(f"{label} {dtype}", "composite", [m], run, trun if torch else None,
                            close=CLOSE if tol else {}, torch_nan_ok=True))


# ---- running and comparing --------------------------------------------------------------------
def _flat(o: Any) -> list[Any]:
    return [y for x in o for y in _flat(x)] if isinstance(o, (tuple, list)) else [o]


def _program(b: Builder, chain: bool) -> tuple[Callable[..., Any], dict[str, np.ndarray],
                                              Callable[[list[Any]], list[list[Any]]],
                                              list[Case]]:
    """The one function to jit for a builder's cases, its input arrays, a function that splits
    its outputs back per case, and the cases in that order.

    With `chain`, cases are grouped by their inputs and output dtype, each group's inputs tiled
    once per case and the results merged with `where(sel == k, case_k, ...)`: one output per
    group, so fusion puts each group into ONE kernel (it fuses chains, not siblings: separate
    outputs would be one kernel, one Numba compile, per op). Every case still runs its op's
    template on every value; `where` only picks which result is returned."""
    arrays: dict[str, np.ndarray] = {}
    plan: list[tuple[list[Case], list[str], str | None, int]] = []  # cases, inputs, sel, length
    if chain:
        groups: dict[Any, list[Case]] = {}
        for c in b.cases:
            outs = _flat(c.run(*(tracejit.from_numpy(b.arrays[n].copy()) for n in c.ins)))
            assert len(outs) == 1, c.label
            groups.setdefault((tuple(c.ins), outs[0].dtype), []).append(c)
        for g, ((ins, _), cs) in enumerate(groups.items()):
            n, length = len(cs), len(b.arrays[ins[0]])
            names = []
            for k, name in enumerate(ins):
                names.append(f"g{g}:{k}")
                arrays[names[-1]] = np.tile(b.arrays[name], n)
            arrays[f"g{g}:sel"] = np.repeat(np.arange(n), length)
            plan.append((cs, names, f"g{g}:sel", length))
    else:
        arrays = dict(b.arrays)
        plan = [([c], list(c.ins), None, 0) for c in b.cases]
    pos = {n: i for i, n in enumerate(arrays)}

    def run_all(*ts: Any) -> list[Any]:
        out: list[Any] = []
        for cs, names, sel, _ in plan:
            args = [ts[pos[n]] for n in names]
            if sel is None:
                out.extend(_flat(cs[0].run(*args)))
                continue
            # fusion grows a group only through nodes that read its values, so everything is
            # routed through an identity where() on one anchor: all nodes join one group
            anchor = ts[pos[sel]].eq(0)
            args = list(map(lambda a, anchor=anchor: a.where(anchor, a), args))
            sel_t = ts[pos[sel]].where(anchor, ts[pos[sel]])
            merged = cs[-1].run(*args)
            for k in range(len(cs) - 2, -1, -1):
                merged = cs[k].run(*args).where(sel_t.eq(k), merged)
            out.append(merged)
        return out

    def split(outs: list[Any]) -> list[list[Any]]:
        per_case: list[list[Any]] = []
        i = 0
        for cs, names, sel, length in plan:
            if sel is None:
                n = len(_flat(cs[0].run(*(tracejit.from_numpy(arrays[x].copy())
                                          for x in names))))
                per_case.append(outs[i:i + n])
                i += n
            else:
                rows = outs[i].reshape(len(cs), length)
                per_case.extend([rows[k]] for k in range(len(cs)))
                i += 1
        return per_case

    return run_all, arrays, split, [c for cs, _, _, _ in plan for c in cs]


def _ordered(a: np.ndarray) -> np.ndarray:
    """Floats mapped to integers that are consecutive in value order (-0 and +0 both 0)."""
    bits = a.view(np.int32 if a.dtype == np.float32 else np.int64).astype(np.int64)
    mag = bits & (0x7FFFFFFF if a.dtype == np.float32 else 0x7FFFFFFFFFFFFFFF)
    return np.where(bits < 0, -mag, mag)


def bad_positions(got: np.ndarray, want: np.ndarray, ulps: int,
                  close: tuple[float, float] | None = None) -> np.ndarray:
    if got.dtype.kind != "f":
        return got != want
    gn, wn = np.isnan(got), np.isnan(want)
    bad = gn != wn
    both = ~gn & ~wn
    gi, wi = np.isinf(got), np.isinf(want)
    bad |= both & (gi | wi) & (got != want)  # an infinity on either side must match exactly
    zero = both & (got == 0) & (want == 0)
    bad |= zero & (np.signbit(got) != np.signbit(want))  # the sign of zero
    fin = both & ~gi & ~wi
    if close is not None:
        rtol, atol = close
        with np.errstate(over="ignore", invalid="ignore"):
            bad |= fin & ~(np.abs(got.astype(np.float64) - want) <= atol + rtol * np.abs(want))
    elif ulps == 0:
        bad |= fin & (got != want)
    else:
        with np.errstate(over="ignore"):
            dist = np.abs(_ordered(got) - _ordered(want))
        bad |= fin & (dist > ulps)
    return bad


def compare(what: str, case: Case, got: list[np.ndarray], want: list[np.ndarray],
            inputs: list[np.ndarray], tol: dict[str, int],
            ignore: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> list[str]:
    errs = []
    if len(got) != len(want):
        return [f"{case.label}: {what}: {len(got)} outputs vs {len(want)}"]
    for k, (g, w) in enumerate(zip(got, want)):
        if g.dtype != w.dtype or g.shape != w.shape:
            errs.append(f"{case.label}: {what}: output {k} is {g.dtype}{list(g.shape)}, "
                        f"expected {w.dtype}{list(w.shape)}")
            continue
        bad = bad_positions(g, w, tol.get(g.dtype.name, 0), case.close.get(g.dtype.name))
        if ignore is not None:
            bad &= ~ignore(g, w)
        if bad.any():
            idx = np.argwhere(bad)[:6]
            shown = []
            for i in map(tuple, idx):
                args = ", ".join(repr(a[i].item()) for a in inputs if a.shape == g.shape)
                shown.append(f"[{','.join(map(str, i))}]({args}) -> {g[i]!r} vs {w[i]!r}")
            errs.append(f"{case.label}: {what}: output {k}, {int(bad.sum())} of {bad.size} "
                        f"differ: " + "; ".join(shown))
    return errs


@functools.cache
def results(group: str, dtype: str) -> tuple[list[Case], Builder, list[list[np.ndarray]],
                                             list[list[np.ndarray]], Any]:
    """Eager and compiled outputs of one group ("elementwise" or "reduce") for one dtype."""
    b = build_elementwise(dtype) if group == "elementwise" else build_reductions(dtype)
    fn, arrays, split, cases = _program(b, chain=group == "elementwise")
    ts = [tracejit.from_numpy(a.copy()) for a in arrays.values()]
    eager = [t.numpy().copy() for t in fn(*ts)]
    jf = tracejit.jit(fn)
    jf(*ts)  # traced (runs eagerly)
    compiled = [t.numpy().copy() for t in jf(*ts)]  # compiled
    return cases, b, split(eager), split(compiled), jf.cache_info()


GROUPS = [pytest.param(g, d, id=f"{g}-{d}") for g in ("elementwise", "reduce")
          for d in DTYPES]


@pytest.mark.parametrize("group,dtype", GROUPS)
def test_jit_matches_eager(group: str, dtype: str) -> None:
    cases, b, eager, compiled, info = results(group, dtype)
    # one trace; the second call hit the entry and ran its program: compiled now, or loaded
    # from the disk cache (then compiles == 0); a graph break or failed compile is a fallback
    assert info.traces == 1 and info.hits >= 1 and info.fallbacks == 0, info
    errs: list[str] = []
    for c, e, j in zip(cases, eager, compiled):
        ties = (lambda g, w: (g == 0) & (w == 0)) if c.op in JIT_ZERO_TIES else None
        errs += compare("jit vs eager", c, j, e, [b.arrays[n] for n in c.ins], c.ulps, ties)
    assert not errs, f"{len(errs)} mismatches:\n" + "\n".join(errs)


@pytest.mark.torch
@pytest.mark.parametrize("group,dtype", GROUPS)
def test_eager_matches_torch(group: str, dtype: str) -> None:
    cases, b, eager, _, _ = results(group, dtype)
    errs: list[str] = []
    for c, e in zip(cases, eager):
        if c.torch_run is None:
            assert c.torch_skip, f"{c.label}: no torch counterpart and no reason given"
            continue
        arrays = [b.arrays[n] for n in c.ins]
        with torch.no_grad():
            want = [t.numpy().copy() for t in _flat(c.torch_run(*map(torch.from_numpy,
                                                                      map(np.copy, arrays))))]

        def ignore(g: np.ndarray, w: np.ndarray, c: Case = c, arrays: Any = arrays) -> Any:
            out = np.isnan(w) if c.torch_nan_ok and w.dtype.kind == "f" else \
                np.zeros(w.shape, bool)
            for v in c.torch_skip_at:
                out |= arrays[0] == v
            if c.op in TORCH_ZERO_TIES or c.label.rsplit(" ", 1)[0] in TORCH_ZERO_TIES:
                out |= (g == 0) & (w == 0)
            return out

        errs += compare("eager vs torch", c, e, want, arrays, c.torch_ulps, ignore)
    assert not errs, f"{len(errs)} mismatches:\n" + "\n".join(errs)


def test_every_op_is_covered() -> None:
    """Every elementwise op with a template and every reduction with a ReduceSpec is called by
    the cases above (in some dtype), or excluded with a reason."""
    covered: set[str] = set()
    for d in DTYPES:
        covered |= {c.op for c in build_elementwise(d).cases}
        covered |= {c.op for c in build_reductions(d).cases}
    for name, op in REGISTRY.items():
        if op.scalar is None and op.reduce is None:
            continue
        assert name in covered or name in EXCLUDED, \
            f"op {name!r} is not covered by test_special_values (and not in EXCLUDED)"
    assert not set(EXCLUDED) - set(REGISTRY), "EXCLUDED names ops that do not exist"


def test_new_op_is_picked_up() -> None:
    """A new template op is covered with no change here; one with attributes this file does
    not know fails loudly instead of being skipped."""
    from tracejit.ops.elementwise import unary

    unary("sv_probe", lambda x: -x, None, result="same", differentiable=False, scalar="neg")
    unary("sv_probe_attr", lambda x, *, alpha: x * alpha, None, result="same",
          differentiable=False, attrs=("alpha",), scalar="neg")
    try:
        with pytest.raises(AssertionError, match="sv_probe_attr"):
            build_elementwise("float64")
        del REGISTRY["sv_probe_attr"]
        assert any(c.op == "sv_probe" for c in build_elementwise("float64").cases)
    finally:
        REGISTRY.pop("sv_probe", None)
        REGISTRY.pop("sv_probe_attr", None)
