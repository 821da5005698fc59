"""Common-subexpression elimination: two nodes with the same op, inputs and attributes compute
the same value (ops are pure), so the later one is replaced. Ops whose `cse` is False
(constants, fused nodes) are left alone."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Effect, Graph, Node, Operand, Value, substitute


def _attr_key(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return (v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, (tuple, list)):
        return tuple(_attr_key(x) for x in v)
    return (type(v).__name__, repr(v))


def node_key(n: Node) -> tuple:
    ins = tuple(("v", id(i)) if isinstance(i, Value) else ("c", repr(i.value), i.dtype.short)
                for i in n.inputs)
    return (n.name, ins, tuple(sorted((k, _attr_key(v)) for k, v in n.attrs.items())))


def rewrite(g: Graph, env: dict[Value, Operand], nodes: list[Node]) -> Graph:
    """Rebuild `g` with `nodes`, replacing values per `env` everywhere they are read."""
    outputs = substitute(g.outputs, env)
    effects = []
    for e in g.effects:
        src = env.get(e.source, e.source)
        assert isinstance(src, Value), "effect sources must stay values"
        effects.append(Effect(e.target, src))
    return g.replace(nodes=tuple(nodes), outputs=outputs, effects=tuple(effects))


def cse(g: Graph) -> Graph:
    seen: dict[tuple, Node] = {}
    env: dict[Value, Operand] = {}
    nodes: list[Node] = []
    for n in g.nodes:
        if env:
            n = Node(n.op, substitute(n.inputs, env), n.outs, n.attrs, n.loc)
        if not n.op.cse:
            nodes.append(n)
            continue
        k = node_key(n)
        prev = seen.get(k)
        if prev is not None and prev.out.type == n.out.type:
            env[n.out] = prev.out
            continue
        seen[k] = n
        nodes.append(n)
    return g if not env else rewrite(g, env, nodes)


__all__ = ["cse", "node_key", "rewrite"]
