"""Passes inside control flow: `in_regions(p, g)` runs pass `p` over every region of g's
control nodes (cond branches, loop bodies), nested ones included, each seen as a graph of its
own (params as inputs, results as outputs). Regions are closed (they read only their params),
so a pass that is correct on a graph is correct on a region; fused bodies are left alone."""

from __future__ import annotations

from collections.abc import Callable

from ..ir.graph import Graph, Node, Region, Value


def in_regions(p: Callable[[Graph], Graph], g: Graph) -> Graph:
    nodes, changed = [], False
    for n in g.nodes:
        if n.op.control:
            attrs = dict(n.attrs)
            for key in n.op.regions:
                r = attrs[key]
                sub = Graph(f"{g.name}.{key}", r.params, (), r.nodes, r.results)
                new = in_regions(p, p(sub))
                # a result folded to a literal would need a node to hold it: keep the region
                if new is not sub and all(isinstance(o, Value) for o in new.outputs):
                    attrs[key] = Region(r.params, new.nodes,
                                        tuple(o for o in new.outputs if isinstance(o, Value)))
                    changed = True
            n = Node(n.op, n.inputs, n.outs, attrs, n.loc)
        nodes.append(n)
    return g.replace(nodes=tuple(nodes)) if changed else g
