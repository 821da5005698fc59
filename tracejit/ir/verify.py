"""The IR verifier: SSA well-formedness and types. It re-runs each op's shape/dtype rule (the
structural ops' too: a constant's type is its array's, a fused node's its region's results), so
a pass that builds an ill-typed node is caught at the pass that did it."""

from __future__ import annotations

from ..ops.registry import OpError, TensorType
from .graph import Const, Graph, Node, Region, Value


class VerifyError(AssertionError):
    pass


def _check_node(n: Node, defined: set[Value], where: str) -> None:
    for v in n.values_in():
        if v not in defined:
            raise VerifyError(f"{where}: {n.name} reads {v!r} before it is defined")
    for key in n.op.regions:  # before the rule, which reads the regions' params and results
        _check_region(n, key, where)
    ops = [v.type if isinstance(v, Value) else v.value for v in n.inputs]
    try:
        t = n.op.infer(ops, **n.attrs)
    except OpError as e:
        raise VerifyError(f"{where}: {n.name} is ill-typed: {e}") from None
    types = t if n.op.multiple_results else (t,)
    if len(types) != len(n.outs):
        raise VerifyError(f"{where}: {n.name} has {len(n.outs)} outputs but its rule gives "
                          f"{len(types)}")
    if not n.op.dynamic_shape:
        for k, (r, o) in enumerate(zip(types, n.outs)):
            assert isinstance(r, TensorType)
            if r.shape != o.type.shape or r.dtype is not o.type.dtype:
                which = f" output {k}" if len(n.outs) > 1 else ""
                raise VerifyError(f"{where}: {n.name}{which} claims {o.type} but its rule gives "
                                  f"{r.dtype.short}{list(r.shape)}")
    for o in n.outs:
        if o in defined:
            raise VerifyError(f"{where}: {o!r} is defined twice (not SSA)")


def _check_region(n: Node, key: str, where: str) -> None:
    """A region is well-formed on its own: its nodes read only its params and what earlier
    members define, and its results are defined inside it. How params and results bind to the
    node's operands and outputs is the op's rule (`infer`), checked with the node's types."""
    body = n.attrs.get(key)
    if not isinstance(body, Region):
        raise VerifyError(f"{where}: {n.name}'s {key!r} attribute is not a region")
    inner = set(body.params)
    for m in body.nodes:
        _check_node(m, inner, f"{where}/{n.name}")
        inner.update(m.outs)
    for r in body.results:
        if r not in inner:
            raise VerifyError(f"{where}: {n.name}'s region yields {r!r}, which it does not "
                              "define")


def verify(g: Graph) -> Graph:
    """Check `g`; return it unchanged (so it can run as a pass)."""
    defined: set[Value] = set()
    for v in g.params:
        if v in defined:
            raise VerifyError(f"{v!r} appears twice among the graph's parameters")
        defined.add(v)
    for i, n in enumerate(g.nodes):
        _check_node(n, defined, f"{g.name} node {i}")
        defined.update(n.outs)
    for o in g.outputs:
        if isinstance(o, Value) and o not in defined:
            raise VerifyError(f"{g.name}: output {o!r} is not defined")
        if not isinstance(o, (Value, Const)):
            raise VerifyError(f"{g.name}: output {o!r} is not an operand")
    for c in g.checks:
        if not 0 <= c.output < len(g.outputs):
            raise VerifyError(f"{g.name}: check at {c.loc} names output {c.output}, which "
                              "does not exist")
        o = g.outputs[c.output]
        t = o.type if isinstance(o, Value) else None
        if t is not None and (t.shape != () or t.dtype.name != "bool"):
            raise VerifyError(f"{g.name}: check at {c.loc} reads {o!r} of type {t}, not bool[]")
    params = set(g.params)
    for e in g.effects:
        if e.target not in params:
            raise VerifyError(f"{g.name}: effect target {e.target!r} is not a parameter")
        if e.source not in defined:
            raise VerifyError(f"{g.name}: effect source {e.source!r} is not defined")
        if e.source.type.shape != e.target.type.shape:
            raise VerifyError(f"{g.name}: effect {e.target!r} <- {e.source!r} changes the shape")
    return g
