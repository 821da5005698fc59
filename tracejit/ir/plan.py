"""The buffer plan: which results of the final schedule are written into the buffer of one of
their node's operands instead of a new one. It is its own structure over one graph's node
order (never a node attribute, so a derived graph does not inherit a plan made for another
schedule), made by `make_plan`, checked by `verify_plan` and printed with the IR.

Two kinds of reuse, both only by fused elementwise kernels (each iteration loads every operand
at an index before storing results at that same index, so writing over an operand of the same
type is safe):
- a dying buffer: an operand computed by the program into a fresh buffer (not a parameter, a
  constant or a view) that nothing reads after this node, directly or through a view;
- an effect written in place: the result is the new value of parameter p (`effects: p <- %v`)
  and the node reads p, which nothing reads after this node. Such a write commits the effect
  early, so it is only planned after the last node that may raise (an index out of range):
  a call that raises leaves every parameter as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..ops.registry import Kind
from ..ops.structural import FUSED
from .graph import Graph, Node, Value

_INF = math.inf


class PlanError(AssertionError):
    """A buffer plan that would let a write clobber a value still needed."""


@dataclass(frozen=True)
class Reuse:
    node: int  # index into graph.nodes
    result: int  # which of the node's outputs
    operand: int  # whose buffer (an index into the node's inputs) it is written into
    effect: bool  # the buffer is a parameter's: the effect on it is committed by this write


@dataclass(frozen=True)
class BufferPlan:
    reuses: tuple[Reuse, ...] = ()

    def for_node(self, i: int) -> dict[int, int]:
        """result index -> operand index whose buffer it is written into, for node i."""
        return {r.result: r.operand for r in self.reuses if r.node == i}

    def in_place_effects(self, g: Graph) -> set[Value]:
        """Parameters whose effect is already written by a kernel (no copy at the end)."""
        out = set()
        for r in self.reuses:
            if r.effect:
                w = g.nodes[r.node].inputs[r.operand]
                assert isinstance(w, Value)
                out.add(w)
        return out

    def lines(self, g: Graph, name: dict[Value, str]) -> list[str]:
        """One line per reuse, naming values as the printer does."""
        text = []
        for r in self.reuses:
            n = g.nodes[r.node]
            w = n.inputs[r.operand]
            assert isinstance(w, Value)
            how = "effect written in place" if r.effect else "its last use"
            text.append(f"%{name[n.outs[r.result]]} into the buffer of %{name[w]} ({how})")
        return text


# ---- buffer roots and liveness -------------------------------------------------------------------


def is_view(n: Node) -> bool:
    """Does this node's output share its first input's buffer?"""
    return n.op.view or n.name == "expand"


def may_raise(n: Node) -> bool:
    """Can this node raise at run time (an index out of range, a collective's timeout)?"""
    return n.op.kind is Kind.INDEX or n.op.kind is Kind.COLLECTIVE


def roots(g: Graph) -> dict[Value, Value]:
    """Each value that shares another's buffer -> the value owning that buffer."""
    root: dict[Value, Value] = {}
    for n in g.nodes:
        if is_view(n) and n.inputs and isinstance(n.inputs[0], Value):
            root[n.out] = root.get(n.inputs[0], n.inputs[0])
    return root


def last_reads(g: Graph, root: dict[Value, Value]) -> dict[Value, float]:
    """Buffer (root value) -> index of the last node reading it or a view of it; infinity for
    buffers that outlive the program (outputs and effect sources, or views of them)."""
    last: dict[Value, float] = {}

    def note(v: Value, t: float) -> None:
        b = root.get(v, v)
        last[b] = max(last.get(b, -1), t)

    for i, n in enumerate(g.nodes):
        for v in n.values_in():
            note(v, i)
    for o in g.outputs:
        if isinstance(o, Value):
            note(o, _INF)
    for e in g.effects:
        note(e.source, _INF)
    return last


def _owned(n: Node) -> bool:
    """Does this node's output live in a fresh buffer nobody else can see? (Not a view's, nor
    a constant's, which every call shares.)"""
    return not is_view(n) and not n.op.shared_result


def _last_raise(g: Graph) -> float:
    """The last node that may stop the program: an index check, or the node computing a
    branch's predicate (the driver checks it right after that node)."""
    checked = {g.outputs[c.output] for c in g.checks}
    return max((i for i, n in enumerate(g.nodes)
                if may_raise(n) or any(o in checked for o in n.outs)), default=-1)


def _shares(n: Node, j: int, root: dict[Value, Value]) -> bool:
    """Does another operand of n (a different value) live in operand j's buffer?"""
    w = n.inputs[j]
    assert isinstance(w, Value)
    b = root.get(w, w)
    return any(isinstance(u, Value) and u is not w and root.get(u, u) is b
               for k, u in enumerate(n.inputs) if k != j)


# ---- planning ------------------------------------------------------------------------------------


def make_plan(g: Graph) -> BufferPlan:
    root = roots(g)
    last = last_reads(g, root)
    owned = {o for n in g.nodes if _owned(n) for o in n.outs}
    params = set(g.params)
    raise_at = _last_raise(g)
    output_roots = {root.get(o, o) for o in g.outputs if isinstance(o, Value)}
    # result -> the parameter its effect writes (one effect per source, never also returned)
    into: dict[Value, Value] = {}
    counts: dict[Value, int] = {}
    for e in g.effects:
        counts[e.source] = counts.get(e.source, 0) + 1
    for e in g.effects:
        if counts[e.source] == 1 and e.source not in output_roots:
            into[e.source] = e.target
    reuses: list[Reuse] = []
    for i, n in enumerate(g.nodes):
        if n.op is not FUSED:  # only fused kernels write into an operand's buffer
            continue
        used: set[int] = set()
        for r, out in enumerate(n.outs):
            target = into.get(out)
            j = None
            if target is not None and raise_at < i:
                j = _pick(n, out, used, root, lambda w: w is target and last.get(w) == i)
            if j is not None:
                reuses.append(Reuse(i, r, j, True))
                used.add(j)
                continue
            j = _pick(n, out, used, root, lambda w: w in owned and w not in params and
                      w not in root and last.get(w) == i)
            if j is not None:
                reuses.append(Reuse(i, r, j, False))
                used.add(j)
    return BufferPlan(tuple(reuses))


def _pick(n: Node, out: Value, used: set[int], root: dict[Value, Value],
          ok: Callable[[Value], bool]) -> int | None:
    """The first operand of n, not yet used, of out's type, that `ok` accepts, no other
    operand reads through a view, and the kernel does not read after writing the result (a
    kernel of several passes over rows lists those pairs in `unsafe_reuse`)."""
    r = n.outs.index(out)
    unsafe = n.attrs.get("unsafe_reuse", ())
    for j, w in enumerate(n.inputs):
        if isinstance(w, Value) and j not in used and w.type == out.type and ok(w) and \
                not _shares(n, j, root) and (r, j) not in unsafe:
            return j
    return None


# ---- checking ------------------------------------------------------------------------------------


def verify_plan(g: Graph, plan: BufferPlan) -> None:
    """Check, independently of how the plan was made, that no planned write clobbers a value
    that is still needed: raises PlanError naming the node."""
    root = roots(g)
    last = last_reads(g, root)
    params = set(g.params)
    consts = {o for n in g.nodes if n.op.shared_result for o in n.outs}
    effect_of = {e.target: e.source for e in g.effects}
    raise_at = _last_raise(g)
    seen: set[tuple[int, int]] = set()
    written: set[tuple[int, int]] = set()
    for r in plan.reuses:
        where = f"buffer plan: node {r.node}"
        if not 0 <= r.node < len(g.nodes):
            raise PlanError(f"{where} does not exist")
        n = g.nodes[r.node]
        if n.op is not FUSED or not 0 <= r.result < len(n.outs) or \
                not 0 <= r.operand < len(n.inputs):
            raise PlanError(f"{where} ({n.name}) has no result {r.result} / operand {r.operand}"
                            " to reuse")
        w, out = n.inputs[r.operand], n.outs[r.result]
        if not isinstance(w, Value) or w.type != out.type:
            raise PlanError(f"{where}: operand {r.operand} is not a value of the result's type")
        if (r.node, r.operand) in seen or (r.node, r.result) in written:
            raise PlanError(f"{where}: a buffer or a result is planned twice")
        seen.add((r.node, r.operand))
        written.add((r.node, r.result))
        b = root.get(w, w)
        if b is not w:
            raise PlanError(f"{where}: operand {r.operand} is a view; its base is still visible")
        if b in consts:
            raise PlanError(f"{where}: writes into a constant shared by every call")
        if _shares(n, r.operand, root):
            raise PlanError(f"{where}: another operand reads the same buffer through a view")
        if (r.result, r.operand) in n.attrs.get("unsafe_reuse", ()):
            raise PlanError(f"{where}: the kernel reads operand {r.operand} again after it "
                            f"stores result {r.result}")
        if r.effect:
            if w not in params or effect_of.get(w) is not out:
                raise PlanError(f"{where}: an in-place effect must write a parameter's own new "
                                "value")
            if raise_at > r.node:
                raise PlanError(f"{where}: commits an effect before node {int(raise_at)}, which "
                                "may raise")
            if last.get(w, -1) > r.node:
                raise PlanError(f"{where}: the parameter is read again at node "
                                f"{_reader_after(g, root, w, r.node)}")
            if any(isinstance(o, Value) and root.get(o, o) is out for o in g.outputs):
                raise PlanError(f"{where}: a returned value would alias the parameter")
        else:
            if w in params:
                raise PlanError(f"{where}: writes into a parameter without an effect")
            if last.get(w, -1) > r.node:
                raise PlanError(f"{where}: the buffer of operand {r.operand} is still needed "
                                f"(read at node {_reader_after(g, root, w, r.node)})")


def _reader_after(g: Graph, root: dict[Value, Value], w: Value, i: int) -> str:
    for k in range(i + 1, len(g.nodes)):
        if any(root.get(v, v) is w for v in g.nodes[k].values_in()):
            return str(k)
    return "the end (an output or an effect)"
