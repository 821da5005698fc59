"""The JIT contract, as the benchmarks check it: a `tracejit.jit` function traces on its first
call (or first calls, while lazily created state such as `.grad` or Adam's moments changes) and
compiles on the first call whose guards match a trace. Only calls that ran compiled code may be
timed as "tracejit-jit": the runner asks the probe after the check and after timing, and an
implementation whose calls fell back to eager code, or retraced, is reported skipped with what
`explain()` says, never timed as jit.
"""

from __future__ import annotations

from typing import Any

FIELDS = ("hits", "misses", "traces", "compiles", "fallbacks", "segments", "replays")


class JitProbe:
    """Watches the `cache_info()` of the jitted functions one case calls."""

    def __init__(self, *fns: Any) -> None:
        self.fns = fns
        self._mark: tuple[int, ...] = (0,) * len(FIELDS)

    def info(self) -> tuple[int, ...]:
        """cache_info()'s FIELDS, summed over the functions."""
        total = [0] * len(FIELDS)
        for f in self.fns:
            for i, v in enumerate(f.cache_info()):
                total[i] += int(v)
        return tuple(total)

    def compiled(self) -> bool:
        """True once a call has run compiled code (a cache hit, no fallback)."""
        d = dict(zip(FIELDS, self.info()))
        return d["hits"] >= 1 and d["fallbacks"] == 0 and d["replays"] == 0

    def mark(self) -> None:
        self._mark = self.info()

    def problem(self, phase: str) -> str | None:
        """None when the calls since the mark (phase "timed") or since the start (phase
        "check": the checked result came from compiled code) ran compiled code; else the
        one-line reason, with what explain() reports."""
        now = self.info()
        if phase == "check":
            d = dict(zip(FIELDS, now))
            if d["fallbacks"] or d["replays"] or not d["hits"]:
                what = ("fell back to eager" if d["fallbacks"] else
                        "ran as a lazy replay around graph breaks (not one compiled program)"
                        if d["replays"] else "never ran compiled code")
                return f"tracejit.jit {what} during the check: {self.describe()}"
            return None
        d = {k: a - b for k, a, b in zip(FIELDS, now, self._mark)}
        if d["fallbacks"] or d["replays"] or d["misses"] or d["traces"] or not d["hits"]:
            return (f"timed calls were not all compiled hits ({d['hits']} hits, {d['misses']} "
                    f"misses, {d['traces']} traces, {d['fallbacks']} fallbacks); "
                    f"not timed as jit: {self.describe()}")
        return None

    def describe(self) -> str:
        """cache_info and the explain() lines that say why (graph breaks, eager entries,
        events), joined into one line."""
        info = dict(zip(FIELDS, self.info()))
        parts = [" ".join(f"{k}={v}" for k, v in info.items())]
        for f in self.fns:
            section = ""
            for ln in str(f.explain()).splitlines():
                if not ln.startswith(" "):
                    section = ln
                    if ln.startswith("entry") and "compiled" not in ln:
                        parts.append(ln.strip())
                elif section in ("graph breaks:", "events:"):
                    parts.append(ln.strip())
        parts = parts[:8]
        return " | ".join(parts)


def warm(probe: JitProbe, run: Any, max_calls: int = 6) -> None:
    """Call `run` until compiled code has run (pure functions: warming does not change what
    the check sees)."""
    for _ in range(max_calls):
        run()
        if probe.compiled():
            return
