"""Algebraic simplification: x*1, x-0, x/1 -> x; zeros + g -> g (a gradient accumulated into
a zero-filled .grad); identity reshape/expand/cast/permute;
reshape of reshape and permute of permute composed; (a @ b).T as b.T @ a.T; a clone of a
buffer nothing else reads dropped; an elementwise op reads the operand of an
`expand` directly when its own broadcasting gives the same result shape (so a row value
broadcast back over its row, as VJPs of reductions do, fuses with the work reading it). Only
rewrites that keep the exact type."""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..ir.graph import Const, Graph, Node, Operand, Value, substitute
from ..ops import REGISTRY as R
from ..ops.registry import ShapeError, TensorType, broadcast_shapes
from ..ops.structural import CONSTANT
from .cse import rewrite
from .fold import FOLD_LIMIT

# x + 0 is not here: -0.0 + 0 is +0.0, so it is not an identity bit for bit (but see
# _added_to_zeros: a gradient accumulated into a zero-filled .grad)
_IDENTITY_RIGHT = {"mul": 1, "div": 1, "sub": 0}
_IDENTITY_LEFT = {"mul": 1}


def _identity_input(n: Node) -> Operand | None:
    ins = n.inputs
    name = n.name
    if name in _IDENTITY_RIGHT and len(ins) == 2:
        a, b = ins
        # x - (-0.0) is not x: for x = -0.0 it is +0.0
        if isinstance(b, Const) and b.value == _IDENTITY_RIGHT[name] and isinstance(a, Value) \
                and a.type == n.out.type and math.copysign(1, b.value) > 0:
            return a
        if name in _IDENTITY_LEFT and isinstance(a, Const) and a.value == _IDENTITY_LEFT[name] \
                and isinstance(b, Value) and b.type == n.out.type:
            return b
    if name in ("reshape", "expand", "cast", "contiguous") and isinstance(ins[0], Value) \
            and ins[0].type == n.out.type:
        return ins[0]
    if name == "permute" and tuple(n.attrs["dims"]) == tuple(range(n.out.type.ndim)):
        return ins[0]
    return None


def _is_zero_fill(v: Operand, producer: dict[Value, Node]) -> bool:
    """Is v a tensor of +0.0 everywhere made by the program (a `full` of 0, or a constant
    array of zeros: what `zero_()` on a `.grad` traces to)?"""
    src = producer.get(v) if isinstance(v, Value) else None
    if src is None or not v.type.dtype.is_floating_point:  # type: ignore[union-attr]
        return False
    if src.name == "full":
        x = src.attrs.get("value")
    elif src.op is CONSTANT:
        x = src.attrs.get("value")
        if not isinstance(x, np.ndarray) or x.size > FOLD_LIMIT:
            return False
    else:
        return False
    try:
        a = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        return False
    return bool(a.size) and not np.any(a) and not np.any(np.signbit(a))


def _added_to_zeros(n: Node, producer: dict[Value, Node]) -> Operand | None:
    """zeros + g (or g + zeros) -> g, when g already has the result's type: a gradient
    written, not accumulated into the zeros `zero_grad(set_to_none=False)` left (the one
    exception to bit-exact rewrites here: a -0.0 element of g stays -0.0 where +0.0 + -0.0
    gives +0.0; the two compare equal)."""
    if n.name != "add" or len(n.inputs) != 2:
        return None
    a, b = n.inputs
    for zero, g in ((a, b), (b, a)):
        if isinstance(g, Value) and g.type == n.out.type and _is_zero_fill(zero, producer):
            return g
    return None


def _skip_expands(n: Node, producer: dict[Value, Node]) -> Node:
    op = n.op
    if op.scalar is None:
        return n
    ins = list(n.inputs)
    for k, v in enumerate(ins):
        src = producer.get(v) if isinstance(v, Value) else None
        if src is None or src.name != "expand" or not isinstance(src.inputs[0], Value):
            continue
        trial = ins[:k] + [src.inputs[0]] + ins[k + 1:]
        shapes = [t.type.shape for t in trial if isinstance(t, Value)]
        try:
            same = broadcast_shapes(n.name, *shapes) == n.out.type.shape
        except ShapeError:
            same = False
        if same:
            ins = trial
    if ins == list(n.inputs):
        return n
    return Node(n.op, tuple(ins), n.outs, n.attrs, n.loc)


def _one_hot(n: Node, producer: dict[Value, Node]) -> list[Node] | None:
    """scatter_add(zeros, idx, src, dim=d) with one index per slice along d (a loss VJP's
    one-hot): `where(arange == idx, src, 0) + 0` instead, elementwise, so it fuses with what
    reads it instead of writing a dense zero tensor and scattering into it. The indices are
    checked as scatter_add checks them; `+ 0` makes a -0.0 source +0.0, as 0 + src does."""
    if n.name != "scatter_add" or not all(isinstance(v, Value) for v in n.inputs):
        return None
    base, idx, src = n.inputs
    assert isinstance(base, Value) and isinstance(idx, Value) and isinstance(src, Value)
    z = producer.get(base)
    out = n.out.type
    d = n.attrs["dim"] % max(out.ndim, 1)
    if z is None or out.ndim == 0 or idx.type.shape[d] != 1 or \
            src.type.shape != idx.type.shape or \
            any(a != b for k, (a, b) in enumerate(zip(idx.type.shape, out.shape)) if k != d):
        return None
    if z.name == "full":
        v = z.attrs["value"]
        if v != 0 or (isinstance(v, float) and math.copysign(1, v) < 0):
            return None
    elif z.op is CONSTANT:  # a small `full` that fold evaluated
        v = np.asarray(z.attrs["value"])
        if v.shape != out.shape or np.any(v != 0) or np.any(np.signbit(v)):
            return None
    else:
        return None
    i64 = idx.type.dtype
    size = out.shape[d]
    check = Value(idx.type)
    ar = Value(TensorType((size,), i64, out.device))
    nodes = [Node(R["check_index"], (idx,), (check,),
                  {"size": size, "negative": False, "ignore": None, "op": "scatter_add",
                   "style": "index", "dim": d}, n.loc),
             # (as fold would make it, which has run: a constant the program reads, not an
             # arange it allocates and fills on every call)
             Node(CONSTANT, (), (ar,), {"value": np.arange(size, dtype=i64.np)}, n.loc)
             if size <= FOLD_LIMIT else
             Node(R["arange"], (), (ar,), {"start": 0, "end": size, "step": 1, "dtype": i64},
                  n.loc)]
    pos: Value = ar
    if d != out.ndim - 1:
        pos = Value(TensorType(tuple(size if k == d else 1 for k in range(out.ndim)), i64,
                               out.device))
        nodes.append(Node(R["reshape"], (ar,), (pos,), {"shape": pos.type.shape}, n.loc))
    hit = Value(TensorType(out.shape, dt.bool_, out.device))
    nodes.append(Node(R["eq"], (pos, check), (hit,), {}, n.loc))
    zero = Const(0.0 if out.dtype.is_floating_point else 0, out.dtype)
    if out.dtype.is_floating_point:
        picked = Value(out)
        nodes.append(Node(R["where"], (hit, src, zero), (picked,), {}, n.loc))
        nodes.append(Node(R["add"], (picked, zero), n.outs, {}, n.loc))
    else:
        nodes.append(Node(R["where"], (hit, src, zero), n.outs, {}, n.loc))
    return nodes


def _transposed(v: Operand, producer: dict[Value, Node], nodes: list[Node], loc: str) -> Value:
    """`v.T` for a 2-d value: the operand of a transposing permute, or a new permute node."""
    assert isinstance(v, Value)
    src = producer.get(v)
    if src is not None and src.name == "permute" and tuple(src.attrs["dims"]) == (1, 0) and \
            isinstance(src.inputs[0], Value):
        return src.inputs[0]
    t = Value(TensorType(v.type.shape[::-1], v.type.dtype, v.type.device))
    m = Node(R["permute"], (v,), (t,), {"dims": (1, 0)}, loc)
    producer[t] = m
    nodes.append(m)
    return t


def simplify(g: Graph) -> Graph:
    env: dict[Value, Operand] = {}
    producer: dict[Value, Node] = {}
    nodes: list[Node] = []
    uses = g.uses()
    for n in g.nodes:
        if env:
            n = Node(n.op, substitute(n.inputs, env), n.outs, n.attrs, n.loc)
        same = _identity_input(n)
        if same is None:
            same = _added_to_zeros(n, producer)
        if same is not None:
            env[n.out] = same
            continue
        n = _skip_expands(n, producer)
        hot = _one_hot(n, producer)
        if hot is not None:
            for m in hot:
                producer[m.outs[0]] = m
            nodes += hot
            continue
        src = producer.get(n.inputs[0]) if n.inputs and isinstance(n.inputs[0], Value) else None
        if src is not None and n.name == "reshape" and src.name == "reshape":
            n = Node(R["reshape"], src.inputs, n.outs, {"shape": n.out.type.shape}, n.loc)
        elif src is not None and n.name == "reshape" and src.op.reduce is not None and \
                not src.op.reduce.index and src.attrs.get("keepdim") and \
                uses.get(src.out, 0) == 1 and \
                n.out.type.shape == tuple(d for k, d in enumerate(src.out.type.shape)
                                          if k not in src.attrs["dims"]):
            # reshape(sum(x, dims, keepdim=True)) dropping the kept dims: sum(.., keepdim=False)
            # (a VJP's sum_to; its reshape would otherwise close a fused group)
            n = Node(src.op, src.inputs, n.outs, {**src.attrs, "keepdim": False}, n.loc)
        elif src is not None and n.name == "permute" and src.name == "matmul" and \
                n.out.type.ndim == 2 and uses.get(src.out, 0) == 1:
            # (a @ b).T = b.T @ a.T: the product made in the layout that is read (a weight's
            # gradient, x.T @ g transposed back), not a transposed view a clone then copies
            # with a strided pass (BLAS reads transposed operands at no cost)
            a, b = (_transposed(v, producer, nodes, n.loc) for v in src.inputs)
            n = Node(R["matmul"], (b, a), n.outs, {}, n.loc)
        elif src is not None and n.name == "clone" and src.op is not CONSTANT and \
                not src.op.view and src.name != "expand" and not src.op.multiple_results and \
                uses.get(src.out, 0) == 1:
            # a clone of a buffer nothing else reads (AccumulateGrad's of a new gradient): the
            # buffer itself
            env[n.out] = src.out
            continue
        elif src is not None and n.name == "permute" and src.name == "permute":
            inner, outer = src.attrs["dims"], n.attrs["dims"]
            n = Node(R["permute"], src.inputs, n.outs,
                     {"dims": tuple(inner[d] for d in outer)}, n.loc)
            same = _identity_input(n)
            if same is not None:
                env[n.out] = same
                continue
        producer[n.out] = n
        nodes.append(n)
    if not env and len(nodes) == len(g.nodes) and all(a is b for a, b in zip(nodes, g.nodes)):
        return g
    return rewrite(g, env, nodes)
