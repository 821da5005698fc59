"""Memory planning (first step): a fused kernel writes its output into an input buffer that
dies at that node (same type, a fresh buffer owned by the program: not a parameter, constant
or view), or into the parameter an effect would copy its result to, when neither the
parameter nor any view of it is read later. Recorded as attrs["inplace"] = ((result, input),
...); codegen then skips that effect's write-back."""

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
    # an effect `p <- %v` whose %v is computed by a fused kernel that reads p at the same index,
    # with p read by nothing later: the kernel writes %v straight into p's buffer (an SGD step
    # updates the weights in place instead of allocating and copying them back)
    # views share their base's buffer: a parameter is dead only once all its views are
    root: dict[Value, Value] = {}
    for n in g.nodes:
        if isinstance(n.op, OpDef) and (n.op.view or n.name == "expand") and n.inputs and \
                isinstance(n.inputs[0], Value):
            root[n.out] = root.get(n.inputs[0], n.inputs[0])
    last_of_root: dict[Value, float] = {}
    for v, t in last.items():
        base = root.get(v, v)
        last_of_root[base] = max(last_of_root.get(base, -1), t)
    into_target: dict[Value, Value] = {}
    for e in g.effects:
        if last.get(e.source) == _INF and sum(1 for f in g.effects if f.source is e.source) == 1:
            into_target[e.source] = e.target
    for o in g.outputs:
        if isinstance(o, Value):
            into_target.pop(o, None)  # also returned: it must not alias a parameter
    nodes = []
    changed = False
    for i, n in enumerate(g.nodes):
        if n.name == "fused":
            pairs = []
            used: set[int] = set()
            for r, out in enumerate(n.outs):
                target = into_target.get(out)
                if target is None:
                    continue
                for j, w in enumerate(n.inputs):
                    if w is target and j not in used and w.type == out.type and \
                            last_of_root.get(w) == i:
                        pairs.append((r, j))
                        used.add(j)
                        break
            for r, out in enumerate(n.outs):
                if any(p[0] == r for p in pairs):
                    continue
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
