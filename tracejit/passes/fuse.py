"""Elementwise fusion: chains of elementwise nodes with the same output shape become one
`fused` node whose region lists its members; codegen emits one loop nest for it. A group stays
open while only its own members read its values; the first outside reader closes it, so every
fused node can sit where its last member was."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node, Region, Value
from ..ops.registry import Kind, OpDef


@dataclass(eq=False)
class _Group:
    shape: tuple[int, ...]
    members: list[Node] = field(default_factory=list)
    defined: set[Value] = field(default_factory=set)
    open: bool = True


def fusible(n: Node) -> bool:
    return isinstance(n.op, OpDef) and n.op.kind is Kind.ELEMENTWISE and n.op.expr is not None


def fuse(g: Graph) -> Graph:
    groups: list[_Group] = []
    group_of: dict[Value, _Group] = {}
    order: list[object] = []  # nodes and groups, in program order (a group where it closes)
    for n in g.nodes:
        # an ordered list, not a set: the grouping (and so the program's hash, which keys the
        # disk cache) must not depend on object ids
        readers = list(dict.fromkeys(group_of[v] for v in n.values_in() if v in group_of))
        target = None
        if fusible(n):
            cands = [gr for gr in readers if gr.open and gr.shape == n.out.type.shape]
            target = cands[-1] if cands else None
        for gr in readers:
            if gr is not target and gr.open:
                gr.open = False  # an outside reader: the group's values must exist now
        if target is None and fusible(n):
            target = _Group(n.out.type.shape)
            groups.append(target)
            order.append(target)
        if target is not None:
            target.members.append(n)
            target.defined.update(n.outs)
            for o in n.outs:
                group_of[o] = target
            # keep the group's place in order at its newest member
            order.remove(target)
            order.append(target)
        else:
            order.append(n)
    if not groups:
        return g
    live_out = _outside_reads(g, group_of)
    nodes: list[Node] = []
    index = 0
    for item in order:
        if isinstance(item, Node):
            nodes.append(item)
            continue
        assert isinstance(item, _Group)
        nodes.append(_make_fused(item, live_out, index))
        index += 1
    return g.replace(nodes=tuple(nodes))


def _outside_reads(g: Graph, group_of: dict[Value, _Group]) -> set[Value]:
    out: set[Value] = set()
    for n in g.nodes:
        for v in n.values_in():
            gr = group_of.get(v)
            if gr is not None and n not in gr.members:
                out.add(v)
    out.update(o for o in g.outputs if isinstance(o, Value))
    out.update(e.source for e in g.effects)
    return out


def _make_fused(gr: Any, live_out: set[Value], index: int) -> Node:
    params: list[Value] = []
    inputs: list[Value] = []
    env: dict[Value, Value] = {}
    members = []
    for m in gr.members:
        ins: list[Any] = []
        for i in m.inputs:
            if isinstance(i, Value) and i not in gr.defined:
                if i not in env:
                    p = Value(i.type, f"a{len(params)}")
                    env[i] = p
                    params.append(p)
                    inputs.append(i)
                ins.append(env[i])
            else:
                ins.append(i)
        members.append(Node(m.op, tuple(ins), m.outs, m.attrs, m.loc))
    results = tuple(o for m in gr.members for o in m.outs if o in live_out)
    # the fused node defines the same Values its members did (so readers need no rewrite);
    # inside the region they are the members' outputs
    body = Region(tuple(params), tuple(members), results)
    return Node("fused", tuple(inputs), results, {"body": body, "index": index},
                gr.members[-1].loc)
