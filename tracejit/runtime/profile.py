"""`step.profile(*args)`: run a compiled entry through an instrumented copy of its Python driver
(the same kernels, the same buffer plan; `codegen/cpu.py`'s `profile=True`) and report, per IR
node, the kernel or BLAS call it makes, its time, its share of the whole call and the bytes it
moves, beside the runtime's own parts of a call (key and guards, gather, finish)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..ir.graph import Graph, Node, Value
from ..ir.printer import value_numbers
from ..ops.structural import CONSTANT, FUSED
from .entry import Entry


@dataclass(frozen=True)
class ProfileRow:
    """One line of the table: `seconds` is the median per call."""

    node: str  # "%6" (the IR number, as ir() and the driver's comments print it), or ""
    kind: str  # "kernel", "BLAS", "driver op", "view", "effects", "driver", "runtime"
    name: str  # the kernel's name, or what the line does
    seconds: float
    bytes: int  # read and written per call (operands' and results' buffers; views: 0)
    loc: str = ""  # the user's file:line

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Profile:
    """Per-call times of one compiled program over `calls` calls (`str()`: the table): each
    row's median over the calls; `total`, their sum, is a typical call's wall time."""

    name: str
    program: str
    calls: int
    total: float
    rows: tuple[ProfileRow, ...]

    def share(self, row: ProfileRow) -> float:
        return row.seconds / self.total if self.total > 0 else 0.0

    def kernels(self) -> list[str]:
        return [r.name for r in self.rows if r.kind == "kernel"]

    def table(self) -> str:
        head = (f"profile of {self.name} ({self.program}): {_us(self.total)} per call (medians "
                f"of {self.calls} calls)")
        cols = f"{'node':>5}  {'kind':<9}  {'name':<44} {'time':>10} {'share':>6} " \
               f"{'bytes':>9} {'GB/s':>6}  line"
        lines = [head, cols, "-" * len(cols)]
        for r in self.rows:
            gb = f"{r.gbps:6.1f}" if r.bytes else " " * 6
            lines.append(f"{r.node:>5}  {r.kind:<9}  {r.name[:44]:<44} {_us(r.seconds):>10} "
                         f"{100 * self.share(r):5.1f}% {_bytes(r.bytes):>9} {gb}  {r.loc}")
        lines.append("-" * len(cols))
        lines.append(f"{'':>5}  {'total':<9}  {'':<44} {_us(self.total):>10} "
                     f"{100 * sum(self.share(r) for r in self.rows):5.1f}%")
        return "\n".join(lines)

    __str__ = table

    def __repr__(self) -> str:  # (the table is str(); printing it twice in a REPL helps no one)
        return f"<Profile {self.name}: {len(self.rows)} rows, {_us(self.total)} per call>"


def _us(s: float) -> str:
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.3f} ms"


def _bytes(n: int) -> str:
    if not n:
        return ""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _nbytes(v: Value) -> int:
    return math.prod(v.type.shape) * v.type.dtype.np.itemsize


def _describe(n: Node, program_kernels: list[str], made: dict[int, str]) -> tuple[str, str, int]:
    """(kind, name, bytes) of node `n`."""
    if n.op.view or n.op is CONSTANT:
        return "view", n.name, 0
    moved = sum(_nbytes(v) for v in {v for v in n.inputs if isinstance(v, Value)})
    moved += sum(_nbytes(o) for o in n.outs)
    if n.op.name == "matmul":
        a, b = (v.type for v in n.inputs)  # type: ignore[union-attr]
        dims = [f"{t.dtype.short}[{','.join(map(str, t.shape))}]" for t in (a, b)]
        return "BLAS", f"matmul {dims[0]} @ {dims[1]}", moved
    if id(n) in made:
        return "kernel", made[id(n)], moved
    return "driver op", n.name, moved


def _kernel_of(g: Graph, kernels: list[str], source: str) -> dict[int, str]:
    """Which kernel each node calls, read from the driver's lines (`NAME(...)  # %k ...`)."""
    numbers = value_numbers(g)
    by_number = {num: n for n, num in zip(g.nodes, numbers)}
    out: dict[int, str] = {}
    for line in source.splitlines():
        head = line.strip()
        name = head.split("(", 1)[0]
        if name in kernels and "  # %" in head:
            num = int(head.split("  # %", 1)[1].split()[0])
            n = by_number.get(num)
            if n is not None:
                out[id(n)] = name
    return out


def profile_entry(e: Entry, flat_of: Callable[[], list[Any]], calls: int) -> Profile:
    """Call `e` `calls` times (after one warm-up call) through its instrumented driver.
    `flat_of()` is the part of a call before the entry (flattening the arguments into the key),
    returning the flat arguments; it is timed as the call's key and guard check, with the
    entry's guards. Every call really runs: a training step trains."""
    from ..codegen.cpu import compile_graph

    g = e.graph
    if e.profiled is None:
        e.profiled = compile_graph(g, profile=True)
    prog = e.profiled
    n_slots = len(g.nodes) + 1
    samples: list[list[float]] = []  # per call: guards, gather, each node, effects, rest, finish
    clock = time.perf_counter
    for k in range(calls + 1):
        slots = [0.0] * n_slots
        t0 = clock()
        flat = flat_of()
        e.guards_hold(flat)
        t1 = clock()
        params = e.gather(flat)
        t2 = clock()
        outs = prog.fn(*params, slots)
        t3 = clock()
        e.finish(flat, params, list(outs), None)
        t4 = clock()
        if k:  # the warm-up call is not counted
            samples.append([t1 - t0, t2 - t1, *slots, max(0.0, t3 - t2 - sum(slots)), t4 - t3])
    # the median of each part over the calls: a call preempted by another process on a busy
    # machine (tens of us lost in one place) does not move it, as it would a mean
    med = [statistics.median(col) for col in zip(*samples)]
    made = _kernel_of(g, prog.kernels, prog.source)
    numbers = value_numbers(g)
    rows = [ProfileRow("", "runtime", "key and guards", med[0], 0),
            ProfileRow("", "runtime", "gather parameters", med[1], 0)]
    for i, n in enumerate(g.nodes):
        kind, name, moved = _describe(n, prog.kernels, made)
        if n.op is FUSED or kind == "kernel":
            kind = "kernel" if id(n) in made else kind
        rows.append(ProfileRow(f"%{numbers[i]}", kind, name, med[2 + i], moved, n.loc))
    written = sum(_nbytes(e_.target) for e_ in g.effects
                  if e_.target not in prog.plan.in_place_effects(g))
    rows.append(ProfileRow("", "effects", "copies into parameters", med[-3], 2 * written))
    rows.append(ProfileRow("", "driver", "Python between the calls (and the timers)", med[-2],
                           0))
    rows.append(ProfileRow("", "runtime", "finish (outputs, .grad, versions)", med[-1], 0))
    total = sum(r.seconds for r in rows)
    kind = "native driver profiled as its Python twin" if e.program.native else "Python driver"
    return Profile(g.name, f"{prog.name.removesuffix('_profile')}, {kind}", calls, total,
                   tuple(rows))
