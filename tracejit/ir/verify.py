"""The IR verifier: SSA well-formedness and types. It re-runs each op's shape/dtype rule, so
a pass that builds an ill-typed node is caught at the pass that did it."""

from __future__ import annotations

from ..ops.registry import OpDef, OpError
from .graph import Const, Graph, Node, Region, Value


class VerifyError(AssertionError):
    pass


def _check_node(n: Node, defined: set[Value], where: str) -> None:
    for v in n.values_in():
        if v not in defined:
            raise VerifyError(f"{where}: {n.name} reads {v!r} before it is defined")
    if isinstance(n.op, OpDef):
        if len(n.outs) != 1:
            raise VerifyError(f"{where}: {n.name} must have exactly one output")
        ops = [v.type if isinstance(v, Value) else v.value for v in n.inputs]
        try:
            t = n.op.infer(ops, **n.attrs)
        except OpError as e:
            raise VerifyError(f"{where}: {n.name} is ill-typed: {e}") from None
        if not n.op.dynamic_shape and (t.shape != n.out.type.shape or t.dtype is not
                                       n.out.type.dtype):
            raise VerifyError(f"{where}: {n.name} claims {n.out.type} but its rule gives "
                              f"{t.dtype.short}{list(t.shape)}")
    elif n.name == "fused":
        body = n.attrs["body"]
        if not isinstance(body, Region) or len(body.params) != len(n.inputs):
            raise VerifyError(f"{where}: fused node's region does not match its inputs")
        for p, w in zip(body.params, n.inputs):
            if isinstance(w, Value) and p.type != w.type:
                raise VerifyError(f"{where}: fused param {p!r} does not match input {w!r}")
        inner = set(body.params)
        for m in body.nodes:
            _check_node(m, inner, where + "/fused")
            inner.update(m.outs)
        if len(body.results) != len(n.outs):
            raise VerifyError(f"{where}: fused node has {len(n.outs)} outputs but its region "
                              f"yields {len(body.results)}")
        for r, o in zip(body.results, n.outs):
            if r not in inner or r.type != o.type:
                raise VerifyError(f"{where}: fused result {r!r} does not match output {o!r}")
    elif n.name != "constant":
        raise VerifyError(f"{where}: unknown structural op {n.name!r}")
    for o in n.outs:
        if o in defined:
            raise VerifyError(f"{where}: {o!r} is defined twice (not SSA)")


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
    params = set(g.params)
    for e in g.effects:
        if e.target not in params:
            raise VerifyError(f"{g.name}: effect target {e.target!r} is not a parameter")
        if e.source not in defined:
            raise VerifyError(f"{g.name}: effect source {e.source!r} is not defined")
        if e.source.type.shape != e.target.type.shape:
            raise VerifyError(f"{g.name}: effect {e.target!r} <- {e.source!r} changes the shape")
    return g
