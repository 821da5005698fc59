"""IR graph -> ONNX graph: walks the traced (unfused) graph node by node, casts each node's
operands to its op's compute dtype as dispatch does, and appends what the op's entry in
table.py (or control.py, for cond/while/scan) emits. A control node's regions become ONNX
subgraphs whose params are bound to the enclosing graph's names (ONNX subgraphs read outer
names directly)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir.graph import Const, Node, Operand, Region, Value
from ..ops.registry import TensorType
from .builder import Builder
from .control import CONTROL
from .errors import ExportError, UnsupportedOpError
from .table import RULES, Emit


def rule_for(n: Node) -> Any:
    r = RULES.get(n.op.name) or CONTROL.get(n.op.name)
    if r is None:
        raise UnsupportedOpError(n.op.name, n.loc)
    return r


def _operands(b: Builder, n: Node, env: dict[Value, str]) -> tuple[list[str], list[TensorType]]:
    """The node's operands as ONNX names in its compute dtype(s), with their types."""
    op = n.op
    cd: Any = None
    if op.compute_dtype is not None:
        cd = op.compute_dtype([o.type if isinstance(o, Value) else o.value for o in n.inputs])
    names, types = [], []
    for i, o in enumerate(n.inputs):
        d = cd[i] if isinstance(cd, tuple) else cd
        if isinstance(o, Value):
            name, t = env[o], o.type
            if d is not None and d is not t.dtype:
                name, t = b.cast(name, t.dtype, d), TensorType(t.shape, d, t.device)
        else:  # a literal: a 0-d constant of the dtype it is computed in
            assert isinstance(o, Const)
            dd = d if d is not None else o.dtype
            name, t = b.const(np.array(o.value, dd.np)), TensorType((), dd)
        names.append(name)
        types.append(t)
    return names, types


def emit_nodes(b: Builder, nodes: Sequence[Node], env: dict[Value, str]) -> None:
    for n in nodes:
        rule = rule_for(n)
        xs, ts = _operands(b, n, env)
        e = Emit(b, n, xs, ts, [v.type for v in n.outs], dict(n.attrs),
                 region=emit_region, inline=emit_inline)
        try:
            outs = rule(e)
        except NotImplementedError as exc:
            raise ExportError(f"tracejit.onnx.export: cannot export op '{n.op.name}' "
                              f"(at {n.loc or 'an unknown line'}): {exc}") from None
        assert len(outs) == len(n.outs), f"{n.op.name}: {len(outs)} results for {len(n.outs)}"
        for v, name in zip(n.outs, outs):
            env[v] = name


def operand_name(b: Builder, o: Operand, env: dict[Value, str]) -> str:
    if isinstance(o, Value):
        return env[o]
    return b.const(np.array(o.value, o.dtype.np))


def emit_inline(b: Builder, r: Region, names: Sequence[str]) -> list[str]:
    """A region's nodes appended to `b` itself, its params reading `names`; returns the names
    of its results (a loop body computes its next condition with the cond region so)."""
    env: dict[Value, str] = dict(zip(r.params, names))
    emit_nodes(b, r.nodes, env)
    return [env[v] for v in r.results]


def emit_region(parent: Builder, r: Region, names: Sequence[str]) -> tuple[Builder, list[str]]:
    """A region as a subgraph of `parent`'s graph: its params read `names` (outer names, or
    the subgraph's own inputs), and each result is copied into a fresh name (an ONNX subgraph
    output must be produced inside it). Returns the subgraph's builder and result names."""
    sub = parent.sub()
    env: dict[Value, str] = dict(zip(r.params, names))
    emit_nodes(sub, r.nodes, env)
    outs = [sub.op("Identity", [env[v]]) for v in r.results]
    return sub, outs
