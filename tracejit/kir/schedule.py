"""How a fused group runs over its rows: which members are full-size, which are reductions and
which are per-row scalars, and in which pass over the row each is computed. A reduction ends
the pass its input is computed in; what reads its result runs in a later pass (softmax: pass 0
finds the row's max, pass 1 sums exp(x - max), pass 2 divides). A group without reductions is
one pass over the whole domain."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Node, Region, Value
from ..ops.registry import Kind


@dataclass
class Schedule:
    domain: tuple[int, ...]
    rdims: int
    # member output -> full, row, reduce (over a row) or col (a column total over the rows)
    kind: dict[Value, str] = field(default_factory=dict)
    # a full value or reduction: the pass computing it; a row value: the first pass that may
    # read it (computed between passes `ready - 1` and `ready`)
    pass_of: dict[Value, int] = field(default_factory=dict)
    ready: dict[Value, int] = field(default_factory=dict)
    npasses: int = 1

    @property
    def outer(self) -> int:
        """How many leading dimensions are not reduced (the row loops)."""
        return len(self.domain) - self.rdims


def is_reduction(n: Node) -> bool:
    return n.op.kind is Kind.REDUCE


def schedule(body: Region, domain: tuple[int, ...], rdims: int) -> Schedule:
    s = Schedule(tuple(domain), rdims)
    for m in body.nodes:
        ins = [v for v in m.values_in() if v in s.kind]
        if is_reduction(m):
            x = m.inputs[0]
            p = s.pass_of.get(x, 0) if isinstance(x, Value) else 0
            m_outer = len(domain) - rdims
            col = tuple(m.attrs["dims"]) == tuple(range(m_outer)) and m_outer > 0 and \
                tuple(m.attrs["dims"]) != tuple(range(m_outer, len(domain)))
            s.kind[m.out] = "col" if col else "reduce"
            s.pass_of[m.out] = p
            s.ready[m.out] = p + 1
        elif all(s.kind[v] in ("row", "reduce") for v in ins) and \
                row_shaped(m, domain, rdims) and (ins or m.out.type.shape != domain):
            s.kind[m.out] = "row"
            s.ready[m.out] = max((s.ready[v] for v in ins), default=0)
        else:
            s.kind[m.out] = "full"
            s.pass_of[m.out] = max((s.pass_of[v] if s.kind[v] == "full" else s.ready[v]
                                    for v in ins), default=0)
    s.npasses = 1 + max((p for v, p in s.pass_of.items()), default=0)
    return s


def row_shapes(domain: tuple[int, ...], rdims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two shapes a row value may have: keepdim, and with the reduced dims dropped."""
    k = len(domain) - rdims
    return domain[:k] + (1,) * rdims, domain[:k]


def row_shaped(m: Node, domain: tuple[int, ...], rdims: int) -> bool:
    """Is m's result a row's shape, with every operand broadcasting to it (passes/fuse.py
    joins a node as a row member on this test)?"""
    out = m.out.type.shape
    if out not in row_shapes(domain, rdims):
        return False
    return all(len(v.type.shape) <= len(out) and
               all(a == 1 or a == b for a, b in zip(v.type.shape[::-1], out[::-1]))
               for v in m.values_in())


def reads(body: Region, s: Schedule) -> dict[Value, set[int]]:
    """The passes in which each region parameter is read by a full member or a reduction
    (rows read in a row's context are not listed)."""
    out: dict[Value, set[int]] = {}
    params = set(body.params)
    for m in body.nodes:
        if s.kind[m.out] == "row":
            continue
        for v in m.values_in():
            if v in params:
                out.setdefault(v, set()).add(s.pass_of[m.out])
    return out


def unsafe_reuse(body: Region, domain: tuple[int, ...], rdims: int) -> tuple[tuple[int, int], ...]:
    """(result, operand) pairs the buffer plan must not put in one buffer: a full result
    stored in pass p over an operand read again in a later pass, and every row result (a
    row's values are stored while the row is still being read)."""
    s = schedule(body, domain, rdims)
    r = reads(body, s)
    bad = []
    for k, res in enumerate(body.results):
        for j, p in enumerate(body.params):
            if s.kind[res] != "full" or any(q > s.pass_of[res] for q in r.get(p, ())):
                bad.append((k, j))
    return tuple(bad)
