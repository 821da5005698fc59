"""Dead-code elimination: drop nodes none of whose outputs reach an output or an effect.
Nodes have no side effects of their own (effects are the graph's), so this is always safe."""

from __future__ import annotations

from ..ir.graph import Graph, Value


def dce(g: Graph) -> Graph:
    live: set[Value] = {o for o in g.outputs if isinstance(o, Value)}
    live.update(e.source for e in g.effects)
    kept = []
    for n in reversed(g.nodes):
        if any(o in live for o in n.outs):
            kept.append(n)
            live.update(n.values_in())
    kept.reverse()
    return g if len(kept) == len(g.nodes) else g.replace(nodes=tuple(kept))
