"""Memory planning (first step): a fused kernel writes its output into an input buffer that
dies at that node (same type, a fresh buffer owned by the program: not a parameter, constant
or view), instead of allocating. Recorded as attrs["inplace"] = ((result, input), ...)."""

from __future__ import annotations

import math

from ..ir.graph import Graph, Node, Value
from ..ops.registry import OpDef

_INF = math.inf


def _owned(n: Node) -> bool:
    """Does this node's output live in a fresh buffer nobody else can see?"""
    if n.name == "fused":
        return True
    return isinstance(n.op, OpDef) and not n.op.view and n.name != "expand"


def plan_memory(g: Graph) -> Graph:
    last: dict[Value, float] = {}
    for i, n in enumerate(g.nodes):
        for v in n.values_in():
            last[v] = i
    for o in g.outputs:
        if isinstance(o, Value):
            last[o] = _INF
    for e in g.effects:
        last[e.source] = _INF
    owned = {o for n in g.nodes if _owned(n) for o in n.outs}
    nodes = []
    changed = False
    for i, n in enumerate(g.nodes):
        if n.name == "fused":
            pairs = []
            used: set[int] = set()
            for r, out in enumerate(n.outs):
                for j, w in enumerate(n.inputs):
                    if isinstance(w, Value) and j not in used and w in owned and \
                            last.get(w) == i and w.type == out.type:
                        pairs.append((r, j))
                        used.add(j)
                        break
            if pairs:
                n = Node(n.op, n.inputs, n.outs, {**n.attrs, "inplace": tuple(pairs)}, n.loc)
                changed = True
        nodes.append(n)
    return g.replace(nodes=tuple(nodes)) if changed else g
