"""Stage 3: optimisation passes, each `def name(g: Graph) -> Graph`, run in order by
`run_pipeline`, which times them, verifies after each (in tests) and prints after those named
in TRACEJIT_PRINT_AFTER. Memory planning is not a graph pass: the buffer plan
(`ir/plan.py`) is a structure over the final schedule, made when the graph is compiled;
`TRACEJIT_PRINT_AFTER=plan_memory` prints the final graph with it, and `kir` the kernel IR
each fused group and reduction lowers to. Every pass also runs inside the regions of control
nodes (cond branches, loop bodies: passes/regions.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..flags import get as get_flag
from ..ir.graph import Graph
from ..ir.plan import make_plan
from ..ir.printer import print_graph
from ..ir.verify import verify
from .aliasing import keep_aliasing
from .conv import conv_fuse
from .cse import cse
from .dce import dce
from .fold import fold
from .fuse import fuse
from .regions import in_regions
from .simplify import simplify

Pass = Callable[[Graph], Graph]
PIPELINE: list[tuple[str, Pass]] = [
    ("dce", dce), ("cse", cse), ("fold", fold), ("simplify", simplify), ("conv_fuse", conv_fuse),
    ("dce", dce), ("fuse", fuse),
]

VERIFY = True  # every pass's result is checked; cheap next to compiling


@dataclass
class PassRecord:
    name: str
    before: int
    after: int
    ms: float


HISTORY: list[PassRecord] = []


def run_pipeline(g: Graph, passes: list[tuple[str, Pass]] | None = None) -> Graph:
    wanted = {p.strip() for p in get_flag("print_after").split(",") if p.strip()}
    if VERIFY:
        verify(g)
    traced = g
    for name, p in passes or PIPELINE:
        t0 = time.perf_counter()
        before = len(g.nodes)
        g = in_regions(p, p(g))  # and inside cond branches and loop bodies
        ms = (time.perf_counter() - t0) * 1e3
        HISTORY.append(PassRecord(name, before, len(g.nodes), ms))
        del HISTORY[:-200]
        if VERIFY:
            verify(g)
        if name in wanted or "all" in wanted:
            print(print_graph(g, f"# after {name}: {before} -> {len(g.nodes)} nodes ({ms:.1f} ms)"))
    if passes is None:
        g = keep_aliasing(traced, g)  # outputs share no buffer the trace's did not
        if VERIFY:
            verify(g)
        if wanted & {"plan_memory", "all"}:
            print(print_graph(g, "# buffer plan of the final graph", make_plan(g)))
        if wanted & {"kir", "all"}:
            from ..kir.lower import format_graph_kernels

            print("# kernel IR of the final graph\n" + format_graph_kernels(g, make_plan(g)))
    return g


__all__ = ["PIPELINE", "run_pipeline", "dce", "cse", "fold", "simplify", "conv_fuse", "fuse",
           "keep_aliasing"]
