"""Constant folding: a node whose inputs are all constants is evaluated now with the op's
eager implementation (the interpreter's semantics) and becomes a `constant` node. Results
larger than FOLD_LIMIT elements are left alone, to keep generated modules small."""

from __future__ import annotations

from typing import Any

from ..ir.graph import Const, Graph, Node, Value
from ..ir.interpret import run_node
from ..ops.structural import CONSTANT

FOLD_LIMIT = 4096


def fold(g: Graph) -> Graph:
    consts: dict[Value, Any] = {}
    nodes: list[Node] = []
    changed = False
    for n in g.nodes:
        if n.op is CONSTANT:
            consts[n.out] = n.attrs["value"]
            nodes.append(n)
            continue
        if n.op.foldable and all(isinstance(i, Const) or i in consts for i in n.inputs) \
                and _size(n.out) <= FOLD_LIMIT and not n.op.dynamic_shape:
            vals = [i.value if isinstance(i, Const) else consts[i] for i in n.inputs]
            (value,) = run_node(n, vals)
            consts[n.out] = value
            nodes.append(Node(CONSTANT, (), n.outs, {"value": value}, n.loc))
            changed = True
            continue
        nodes.append(n)
    return g.replace(nodes=tuple(nodes)) if changed else g


def _size(v: Value) -> int:
    s = 1
    for d in v.type.shape:
        s *= d
    return s
