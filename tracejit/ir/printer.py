"""Deterministic text form of a graph (STYLE.md's format): one line per node, attributes in
brackets, typed literals, the user's file:line as a trailing comment, regions indented."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import DType
from .graph import Const, Graph, Node, Operand, Region, Value
from .plan import BufferPlan


class _Names:
    def __init__(self) -> None:
        self.names: dict[Value, str] = {}
        self.counter = 0
        self.taken: set[str] = set()

    def param(self, v: Value, hint: str) -> str:
        base = hint or f"in{len(self.names)}"
        name = base
        k = 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        self.names[v] = name
        return name

    def fresh(self, v: Value) -> str:
        name = str(self.counter)
        self.counter += 1
        self.names[v] = name
        return name

    def ref(self, o: Operand) -> str:
        if isinstance(o, Const):
            return str(o)
        return "%" + self.names.get(o, f"?{o.uid}")


def fmt_attr(v: Any) -> str:
    if isinstance(v, DType):
        return v.short
    if isinstance(v, np.ndarray):
        return f"<{v.dtype}{list(v.shape)}>"
    if isinstance(v, Region):
        return "<region>"
    if isinstance(v, tuple):
        return "(" + ", ".join(fmt_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def _node_lines(n: Node, names: _Names, indent: str) -> list[str]:
    outs = ", ".join(f"%{names.fresh(v)}: {v.type}" for v in n.outs)
    attrs = {k: fmt_attr(v) for k, v in n.attrs.items() if k not in n.op.regions}
    args = ", ".join(names.ref(i) for i in n.inputs)
    if n.op.print_form is not None:  # constant, fused.3(...)
        rhs = n.op.print_form(attrs, args)
    else:
        head = n.name + ("[" + ", ".join(f"{k}={v}" for k, v in attrs.items()) + "]"
                         if attrs else "")
        rhs = f"{head} {args}".rstrip()
    text = f"{indent}{outs} = {rhs}"
    lines = [f"{text:<56}  # {n.loc}" if n.loc else text]
    if n.op.control:  # cond, while, scan: each region in full, under a `name(params):` line
        for key in n.op.regions:
            lines += _region_lines(key, n.attrs[key], names, indent + "  ")
        return lines
    for body in n.regions():  # a fused node: its members
        lines.append(indent + "    " + " ; ".join(m.name for m in body.nodes))
    return lines


def _region_lines(key: str, r: Region, names: _Names, indent: str) -> list[str]:
    params = ", ".join(f"%{names.fresh(v)}: {v.type}" for v in r.params)
    lines = [f"{indent}{key}({params}):"]
    for m in r.nodes:
        lines += _node_lines(m, names, indent + "  ")
    lines.append(f"{indent}  yield " + ", ".join(names.ref(v) for v in r.results))
    return lines


def values_printed(n: Node) -> int:
    """How many value numbers printing `n` uses: its results, and for a control node every
    param and result inside its regions (nested ones included)."""
    k = len(n.outs)
    if n.op.control:
        for r in n.regions():
            k += len(r.params) + sum(values_printed(m) for m in r.nodes)
    return k


def value_numbers(g: Graph) -> list[int]:
    """The number print_graph gives each node's first result (`%5` is node i's when this
    list's i-th entry is 5): generated source and the kernel IR name nodes by it."""
    out, k = [], 0
    for n in g.nodes:
        out.append(k)
        k += values_printed(n)
    return out


def print_region(r: Region, names: _Names, indent: str) -> list[str]:
    lines = []
    for n in r.nodes:
        lines += _node_lines(n, names, indent)
    return lines


def print_graph(g: Graph, header: str = "", plan: BufferPlan | None = None) -> str:
    """The graph as text; with `plan`, a `buffers:` section saying which results reuse an
    operand's buffer (the plan the compiled program runs with)."""
    names = _Names()
    ins = ", ".join(f"%{names.param(v, v.name)}: {v.type}" for v in g.inputs)
    lifted = ", ".join(f"%{names.param(v, v.name or 'l')}: {v.type}" for v in g.lifted)
    lines = [header] if header else []
    lines.append(f"graph {g.name}({ins})" + (f" lifted({lifted})" if lifted else "") + ":")
    for n in g.nodes:
        lines += _node_lines(n, names, "  ")
    if g.effects:
        lines.append("  effects: " + ", ".join(
            f"{names.ref(e.target)} <- {names.ref(e.source)}" for e in g.effects))
    lines.append("  return " + ", ".join(names.ref(o) for o in g.outputs))
    for c in g.checks:  # the path this graph is: each branch as the trace took it
        lines.append(f"  check {names.ref(g.outputs[c.output])} is {c.taken}  # {c.loc}")
    if plan is not None and plan.reuses:
        lines.append("  buffers:")
        lines += ["    " + line for line in plan.lines(g, names.names)]
    return "\n".join(lines)
