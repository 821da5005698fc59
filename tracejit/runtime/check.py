"""Check mode: run the reference interpreter (the ops' eager implementations) beside the
compiled program on copies of the inputs; on a mismatch, find the first diverging IR node and
raise naming it and the user's line."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PathNotTakenError
from ..ir.graph import Graph, Value
from ..ir.interpret import interpret
from ..ir.printer import print_graph
from .entry import MISSED, Entry


class CheckError(AssertionError):
    """Compiled code disagreed with the reference executor."""


def _close(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "biu" or b.dtype.kind in "biu":
        return bool(np.array_equal(a, b))
    scale = max(1.0, float(np.nanmax(np.abs(b))) if b.size and np.isfinite(b).any() else 1.0)
    tol = 1e-3 if b.dtype == np.float16 else (1e-4 if b.dtype == np.float32 else 1e-9)
    return bool(np.allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True))


def run_checked(e: Entry, flat: list[Any]) -> Any:
    assert e.program is not None
    params = e.gather(flat)
    copies = [p.copy() for p in params]
    ref_outs, ref_effects = interpret(e.graph, [c.copy() for c in copies])
    try:
        outs, _ = e.program(params)  # applies effects to the real tensors
    except PathNotTakenError as exc:  # (before any effect): the reference must agree
        k = e.failed_check(ref_outs)
        if k != exc.args[0]:
            c = e.graph.checks[exc.args[0]]
            raise CheckError(f"check mode: the compiled program took the other branch at "
                             f"{c.loc}; the reference took the traced one") from None
        e.missed = k
        return MISSED
    index = {v: i for i, v in enumerate(e.graph.params)}
    bad: list[Any] = [k for k, (a, b) in enumerate(zip(outs, ref_outs)) if not _close(a, b)]
    bad += [f"effect on {e.graph.effects[k].target.name or k}" for k, src in enumerate(ref_effects)
            if not _close(params[index[e.graph.effects[k].target]], src)]
    if bad:
        raise CheckError(_locate(e.graph, copies, bad))
    return e.finish(flat, params, outs, None)


def _locate(g: Graph, params: list[np.ndarray], bad: list[Any]) -> str:
    """Run the graph again as compiled, with the same buffer plan, keeping a copy of every
    node's results as they are computed, beside the reference: the first node whose results
    differ is the one to blame. When every node was right when it ran, a later write
    clobbered an output (a wrong buffer plan): say which."""
    from ..codegen.cpu import compile_graph

    ref: dict[Value, Any] = {}

    def keep(n: Any, outs: list[Any]) -> None:
        for v, x in zip(n.outs, outs):
            ref[v] = x

    interpret(g, [p.copy() for p in params], on_node=keep)
    prog = compile_graph(g, snapshot=True)
    snaps: list[tuple[Any, ...]] = []
    prog.fn(*[p.copy() for p in params], snaps)
    lines = print_graph(g, plan=prog.plan).splitlines()
    for k, (node, got) in enumerate(zip(g.nodes, snaps)):
        for v, x in zip(node.outs, got):
            if not _close(x, ref[v]):
                head = f"%{_printed(g, v)}:"
                text = next((ln.strip() for ln in lines if ln.strip().startswith(head)),
                            node.name)
                err = float(np.nanmax(np.abs(np.asarray(x, np.float64) - ref[v]))) \
                    if np.asarray(x).shape == np.asarray(ref[v]).shape else float("nan")
                return (f"check mode: compiled code differs from the reference at IR node {k} "
                        f"({node.name}, user code {node.loc}); max abs error {err:.3g}\n"
                        f"  {text}")
    clobbered = [b for b in bad if isinstance(b, int)]
    if clobbered:
        where = "; ".join(prog.plan.lines(g, _names(g))) or "no buffer is reused"
        return (f"check mode: every node computed the right values, but output(s) "
                f"{clobbered} were overwritten after they were computed; the buffer plan: "
                f"{where}")
    return f"check mode: compiled outputs {bad} differ from the reference"


def _names(g: Graph) -> dict[Value, str]:
    names = {v: v.name or f"in{i}" for i, v in enumerate(g.params)}
    for n in g.nodes:
        for o in n.outs:
            names[o] = _printed(g, o)
    return names


def _printed(g: Graph, v: Value) -> str:
    """The number the printer gives `v`."""
    k = 0
    for n in g.nodes:
        for o in n.outs:
            if o is v:
                return str(k)
            k += 1
    return "?"
