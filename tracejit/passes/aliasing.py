"""Keep the memory sharing of a graph's outputs as the trace had it. Passes may make two
outputs one value (CSE merging `x * 2` computed twice) or make an output a view of a parameter
(simplify dropping `x * 1`); eager mode returned distinct tensors there, and a user who writes
into one must not change the other, nor the argument. `keep_aliasing(traced, optimised)`
copies (a `clone` node) each output of the optimised graph that shares a buffer it did not
share in the traced graph."""

from __future__ import annotations

from ..ir.graph import Graph, Node, Value
from ..ir.plan import roots
from ..ops import REGISTRY as R


def _buffers(g: Graph) -> list[Value | None]:
    root = roots(g)
    return [root.get(o, o) if isinstance(o, Value) else None for o in g.outputs]


def keep_aliasing(traced: Graph, optimised: Graph) -> Graph:
    if len(traced.outputs) != len(optimised.outputs):
        return optimised  # (a pass changed the outputs' arity: nothing to compare)
    before, after = _buffers(traced), _buffers(optimised)
    params = set(optimised.params)
    owner: dict[Value, int] = {}  # buffer -> the first output living in it
    outputs = list(optimised.outputs)
    nodes = list(optimised.nodes)
    for i, (b, a) in enumerate(zip(before, after)):
        if a is None:
            continue
        first = owner.setdefault(a, i)
        shared = first != i and before[first] is not b  # merged with another output
        into_param = a in params and b is not a  # became (a view of) a parameter
        if shared or into_param:
            o = outputs[i]
            assert isinstance(o, Value)
            c = Value(o.type)
            nodes.append(Node(R["clone"], (o,), (c,), {}, ""))
            outputs[i] = c
    if len(nodes) == len(optimised.nodes):
        return optimised
    return optimised.replace(nodes=tuple(nodes), outputs=tuple(outputs))
