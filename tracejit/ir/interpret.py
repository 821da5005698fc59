"""The reference executor: runs any graph node by node with the ops' eager (NumPy)
implementations. Check mode and constant folding use it; it defines what a graph means."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..ops.registry import OpDef
from .graph import Const, Graph, Node, Operand, Region, Value


def _cast_args(op: OpDef, node: Node, vals: list[Any]) -> list[Any]:
    if op.compute_dtype is None:
        return vals
    types = [v.type if isinstance(v, Value) else v.value for v in node.inputs]
    cd = op.compute_dtype(types)
    out = []
    for i, x in enumerate(vals):
        d = cd[i] if isinstance(cd, tuple) else cd
        if d is None:
            out.append(x)
        elif isinstance(x, np.ndarray):
            out.append(x if x.dtype == d.np else x.astype(d.np))
        else:
            out.append(d.np.type(x))
    return out


def run_node(n: Node, vals: list[Any]) -> list[np.ndarray]:
    """One array per output of `n`, each in its output's dtype. (A constant's eager returns a
    copy of its value; a fused node's runs its region with run_region below.)"""
    res = n.op.eager(*_cast_args(n.op, n, vals), **n.attrs)
    outs = list(res) if n.op.multiple_results else [res]
    if len(outs) != len(n.outs):
        raise AssertionError(f"{n.name}: eager gave {len(outs)} results for {len(n.outs)} outputs")
    arrays = []
    for x, v in zip(outs, n.outs):
        x = np.asarray(x)
        want = v.type.dtype.np
        arrays.append(x if x.dtype == want else x.astype(want))
    return arrays


def run_region(r: Region, args: Sequence[Any]) -> list[Any]:
    env: dict[Value, Any] = dict(zip(r.params, args))
    for n in r.nodes:
        for v, x in zip(n.outs, run_node(n, [_get(env, i) for i in n.inputs])):
            env[v] = x
    return [env[v] for v in r.results]


def _get(env: dict[Value, Any], o: Operand) -> Any:
    return o.value if isinstance(o, Const) else env[o]


def interpret(g: Graph, params: Sequence[np.ndarray],
              on_node: Callable[[Node, list[Any]], None] | None = None) -> tuple[list[Any],
                                                                                  list[Any]]:
    """Run `g` on arrays for its params (inputs then lifted). Returns (outputs, effect
    sources); nothing is written back: the caller applies effects."""
    env: dict[Value, Any] = dict(zip(g.params, params))
    for n in g.nodes:
        outs = run_node(n, [_get(env, i) for i in n.inputs])
        for v, x in zip(n.outs, outs):
            env[v] = x
        if on_node is not None:
            on_node(n, outs)
    return [_get(env, o) for o in g.outputs], [env[e.source] for e in g.effects]
