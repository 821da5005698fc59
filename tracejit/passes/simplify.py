"""Algebraic simplification: x*1, x-0, x/1 -> x; identity reshape/expand/cast/permute;
reshape of reshape and permute of permute composed; an elementwise op reads the operand of an
`expand` directly when its own broadcasting gives the same result shape (so a row value
broadcast back over its row, as VJPs of reductions do, fuses with the work reading it). Only
rewrites that keep the exact type."""

from __future__ import annotations

import math

from ..ir.graph import Const, Graph, Node, Operand, Value, substitute
from ..ops import REGISTRY as R
from ..ops.registry import OpDef, ShapeError, broadcast_shapes
from .cse import rewrite

# x + 0 is not here: -0.0 + 0 is +0.0, so it is not an identity bit for bit
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


def _skip_expands(n: Node, producer: dict[Value, Node]) -> Node:
    op = n.op
    if not isinstance(op, OpDef) or op.scalar is None:
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


def simplify(g: Graph) -> Graph:
    env: dict[Value, Operand] = {}
    producer: dict[Value, Node] = {}
    nodes: list[Node] = []
    for n in g.nodes:
        if env:
            n = Node(n.op, substitute(n.inputs, env), n.outs, n.attrs, n.loc)
        same = _identity_input(n)
        if same is not None:
            env[n.out] = same
            continue
        n = _skip_expands(n, producer)
        src = producer.get(n.inputs[0]) if n.inputs and isinstance(n.inputs[0], Value) else None
        if src is not None and n.name == "reshape" and src.name == "reshape":
            n = Node(R["reshape"], src.inputs, n.outs, {"shape": n.out.type.shape}, n.loc)
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
