"""Fusion: groups of elementwise nodes and the reductions between them become one `fused` node
whose region lists its members; codegen lowers each to one kernel (kir/lower.py).

A group has a *domain*, the shape of its full-size members, and may reduce the domain's last
`rdims` dimensions (softmax, layernorm, mse: reductions over rows). Its members are
- full members: elementwise nodes whose result has the domain's shape;
- reductions (sum, prod, amax, amin, all, any) over the trailing `rdims` dimensions of a full
  member or of an input of the domain's shape, with or without keepdim;
- row members: elementwise nodes over reduction results (and inputs broadcast to a row), whose
  result has a row's shape (the domain with the reduced dimensions 1, or dropped);
- column totals: sum/prod/amax/amin over the leading (row) dimensions of a full member, kept in
  an accumulator row and stored once every row is done (the bias gradient of a layernorm).
A node joins an open group it reads from, or (siblings) one that reads the same input, when it
fits the group's domain; otherwise it starts a group of its own. An elementwise node that reads
several open elementwise groups of its domain merges them into the one it joins. A group stays
open while only
its own members read its values; the first outside reader closes it, so every fused node can
sit where its last member was. Lowering orders a group into passes over each row: a reduction
ends a pass, and what reads its result runs in a later pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Node, Region, Value
from ..kir.schedule import row_shaped, row_shapes, unsafe_reuse
from ..ops.registry import Kind
from ..ops.structural import FUSED

FUSED_REDUCTIONS = ("sum", "prod", "amax", "amin", "all", "any")


@dataclass(eq=False)
class _Group:
    shape: tuple[int, ...]  # the domain
    rdims: int = 0  # trailing dimensions reduced (0: no reduction yet)
    members: list[Node] = field(default_factory=list)
    defined: set[Value] = field(default_factory=set)
    rows: set[Value] = field(default_factory=set)  # row-shaped values (reduction results, ...)
    cols: set[Value] = field(default_factory=set)  # reductions over the rows (column totals)
    inputs: set[Value] = field(default_factory=set)  # values read from outside
    open: bool = True


def fusible(n: Node) -> bool:
    return n.op.kind is Kind.ELEMENTWISE and n.op.scalar is not None


def _reduce_dims(n: Node) -> tuple[int, ...] | None:
    """The dims of a reduction a group can hold, else None."""
    if not (n.op.kind is Kind.REDUCE and n.op.name in FUSED_REDUCTIONS):
        return None
    x = n.inputs[0]
    if not isinstance(x, Value) or not x.type.shape:
        return None
    dims = tuple(n.attrs["dims"])
    r = len(x.type.shape)
    if not dims or dims != tuple(range(r - len(dims), r)):
        return None  # not a trailing block of dimensions
    return dims


def _col_dims(n: Node, gr: _Group) -> bool:
    """Is n a sum/prod/amax/amin over the leading (row) dimensions of gr's domain?"""
    if not (n.op.kind is Kind.REDUCE and n.op.name in FUSED_REDUCTIONS) or not gr.rdims:
        return False
    x = n.inputs[0]
    m = len(gr.shape) - gr.rdims
    return isinstance(x, Value) and x.type.shape == gr.shape and x not in gr.rows and \
        tuple(n.attrs["dims"]) == tuple(range(m))


def _fits(gr: _Group, n: Node) -> str | None:
    """How n would join gr: 'full', 'row', 'reduce', 'col', or None."""
    if any(v in gr.cols for v in n.values_in()):
        return None  # a column total exists only after every row
    reads_group = [v for v in n.values_in() if v in gr.defined]
    reads_rows = [v for v in reads_group if v in gr.rows]
    if _col_dims(n, gr):
        return "col"
    if fusible(n):
        out = n.out.type.shape
        if gr.rdims and len(reads_rows) == len(reads_group) and \
                out in row_shapes(gr.shape, gr.rdims) and (reads_group or out != gr.shape):
            # every input the group made is a row value: a row member, if its other inputs
            # broadcast to a row too
            return "row" if row_shaped(n, gr.shape, gr.rdims) else None
        if out == gr.shape and all(_per_row(v.type.shape, gr.shape, gr.rdims)
                                   for v in reads_rows):
            return "full"
        return None
    dims = _reduce_dims(n)
    if dims is None:
        return None
    x = n.inputs[0]
    assert isinstance(x, Value)
    if x.type.shape != gr.shape or x in gr.rows:
        return None
    if gr.rdims and len(dims) != gr.rdims:
        return None
    return "reduce"


def _per_row(s: tuple[int, ...], domain: tuple[int, ...], rdims: int) -> bool:
    """Does a value of shape s, broadcast against the domain, give each row its own value?"""
    m = len(domain) - rdims
    aligned = (1,) * (len(domain) - len(s)) + s
    return len(s) <= len(domain) and aligned[m:] == (1,) * rdims and aligned[:m] == domain[:m]


def _mergeable(gr: _Group, target: _Group) -> bool:
    """Two open elementwise groups over the same domain that a node reads both of (Adam's
    `v * beta2` in one, the gradient's square, a sibling of the first moment's update, in the
    other): one kernel. Both are open, so nothing outside them has read their values yet and
    neither reads the other's: the merged members can all run where the newer group sits."""
    return gr.open and target.open and gr.shape == target.shape and \
        gr.rdims == 0 and target.rdims == 0 and not gr.cols and not target.cols


def _merge(gr: _Group, target: _Group, group_of: dict[Value, _Group],
           position: dict[Node, int]) -> None:
    target.members = sorted(gr.members + target.members, key=position.__getitem__)
    target.defined |= gr.defined
    target.inputs = (target.inputs | gr.inputs) - target.defined
    for v in gr.defined:
        group_of[v] = target


def fuse(g: Graph) -> Graph:
    position = {n: i for i, n in enumerate(g.nodes)}
    groups: list[_Group] = []
    group_of: dict[Value, _Group] = {}
    order: list[object] = []  # nodes and groups, in program order (a group where it closes)
    for n in g.nodes:
        # an ordered list, not a set: the grouping (and so the program's hash, which keys the
        # disk cache) must not depend on object ids
        readers = list(dict.fromkeys(group_of[v] for v in n.values_in() if v in group_of))
        target, how = None, None
        if fusible(n) or _reduce_dims(n) is not None or \
                any(_col_dims(n, gr) for gr in readers if gr.open):
            cands = [gr for gr in readers if gr.open]
            if not readers:  # siblings: an open group reading the same input, or (a per-row
                # scalar of outside values) the newest open group over rows
                ins = list(n.values_in())
                cands = [gr for gr in groups if gr.open and any(v in gr.inputs for v in ins)]
                rowed = [gr for gr in groups if gr.open and gr.rdims]
                if rowed and fusible(n) and rowed[-1] not in cands:
                    cands.append(rowed[-1])
            for gr in reversed(cands):
                how = _fits(gr, n)
                if how is not None:
                    target = gr
                    break
        if target is not None and how == "full":
            for gr in readers:
                if gr is not target and _mergeable(gr, target):
                    _merge(gr, target, group_of, position)
                    groups.remove(gr)
                    order.remove(gr)
        for gr in readers:
            if gr is not target and gr.open:
                gr.open = False  # an outside reader: the group's values must exist now
        if target is None and (fusible(n) or _reduce_dims(n) is not None):
            x = n.inputs[0] if not fusible(n) else None
            dom = x.type.shape if isinstance(x, Value) else n.out.type.shape
            target = _Group(dom)
            how = "full" if fusible(n) else "reduce"
            groups.append(target)
            order.append(target)
        if target is not None:
            if how == "reduce":
                dims = _reduce_dims(n)
                assert dims is not None
                target.rdims = len(dims)
            target.members.append(n)
            target.defined.update(n.outs)
            target.inputs.update(v for v in n.values_in() if v not in target.defined)
            if how in ("reduce", "row"):
                target.rows.update(n.outs)
            if how == "col":
                target.cols.update(n.outs)
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
    attrs: dict[str, Any] = {"body": body, "index": index, "domain": tuple(gr.shape),
                             "rdims": getattr(gr, "rdims", 0)}
    if attrs["rdims"]:
        attrs["unsafe_reuse"] = unsafe_reuse(body, attrs["domain"], attrs["rdims"])
    return Node(FUSED, tuple(inputs), results, attrs, gr.members[-1].loc)
