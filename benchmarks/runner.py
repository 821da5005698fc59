"""The measurement method (benchmarks/README.md says it in words): check every implementation
against the float64 reference first, warm up, then time all of them interleaved, round-robin,
for a number of repeats, and keep every sample so that median, min and max can be reported.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .core import Case, UnavailableError, Workload, impl_names, max_error

BASELINE = "tracejit-jit"
ROOFLINE = "copy"  # the pseudo-implementation timed beside bandwidth-bound workloads

Progress = Callable[[str, str, int], None]  # (workload, impl, units done since the last call)


@dataclass
class ImplResult:
    impl: str
    status: str  # "ok", "skipped" or "wrong"
    reason: str = ""
    correct: bool | None = None
    max_error: float | None = None
    tolerance: float | None = None
    samples: list[float] = field(default_factory=list)  # seconds per call, one per repeat
    calls_per_sample: int = 0
    metrics: dict[str, list[float]] = field(default_factory=dict)
    ratio: float | None = None
    roofline_fraction: float | None = None

    def summary(self) -> dict[str, float | None]:
        return stats(self.samples)


@dataclass
class WorkloadResult:
    name: str
    description: str
    size: dict[str, Any]
    kind: str
    metrics: tuple[str, ...]
    metric_units: tuple[str, ...]
    repeat: int
    baseline: str | None = None
    baseline_note: str = ""
    roofline: dict[str, float] | None = None
    results: list[ImplResult] = field(default_factory=list)


def stats(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def units(w: Workload, impls: list[str], repeat: int) -> int:
    """Progress units of one workload: a check per implementation, a sample per repeat."""
    return len(impls) * (1 + repeat)


def select_impls(w: Workload, wanted: list[str] | None) -> list[str]:
    names = impl_names(w)
    return names if not wanted else [i for i in names if i in wanted]


def _check(w: Workload, name: str, inputs: dict[str, Any], ref: Any, quick: bool,
           explicit: bool) -> tuple[ImplResult, Case | None]:
    """Set the implementation up and compare its result with the reference; never timed."""
    res = ImplResult(name, "ok", tolerance=w.tolerance)
    if quick and name in w.quick_skip and not explicit:
        res.status, res.reason = "skipped", w.quick_skip[name]
        return res, None
    try:
        case = w.impls[name](inputs)
    except UnavailableError as e:
        res.status, res.reason = "skipped", str(e).splitlines()[0]
        return res, None
    except Exception as e:  # set-up failed: an implementation that gives no result is wrong
        res.status, res.correct = "wrong", False
        res.reason = f"set-up raised {type(e).__name__}: {_one_line(e)}"
        return res, None
    try:
        for _ in range(w.check_runs):
            case.run()
        err = (w.error or max_error)(case.output(), ref)
    except UnavailableError as e:  # found out while running (a subprocess's jit fell back)
        res.status, res.reason = "skipped", (str(e).strip().splitlines() or ["unavailable"])[0]
        return res, None
    except Exception as e:
        res.status, res.correct = "wrong", False
        res.reason = f"raised {type(e).__name__}: {_one_line(e)}"
        return res, None
    res.max_error, res.correct = err, err <= w.tolerance
    if not res.correct:
        res.status = "wrong"
        res.reason = f"max error {err:.3g} > tolerance {w.tolerance:.0e} against float64 NumPy"
        return res, None
    if case.jit is not None:
        problem = case.jit.problem("check")
        if problem is not None:  # correct, but from eager code: not a jit result to time
            res.status, res.reason = "skipped", problem
            return res, None
        case.jit.mark()
    return res, case


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def _calls_per_sample(run: Callable[[], object], quick: bool) -> int:
    """Warm up (at least two calls and 0.2 s; one call in --quick) and pick how many calls one
    sample makes so that it lasts about 20 ms (5 ms in --quick): timer resolution and Python's
    loop overhead then do not count for the microsecond workloads."""
    min_calls, min_time, target = (1, 0.0, 0.005) if quick else (2, 0.2, 0.02)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < min_time and len(times) < 200):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    per_call = max(statistics.median(times), 1e-9)
    return max(1, min(100_000, math.ceil(target / per_call)))


def _sample(run: Callable[[], object], number: int) -> float:
    """Seconds per call over `number` calls, with the garbage collector off as timeit does
    (collected between samples, outside the timed region)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            run()
        return (time.perf_counter() - t0) / number
    finally:
        gc.enable()


def _copy_case(nbytes: int) -> Case:
    """A same-size float32 copy into a preallocated array: the copy-bandwidth roofline."""
    n = max(1, nbytes // 4)
    src = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    dst = np.empty_like(src)
    dst[...] = 0  # first touch outside the timed region
    return Case(lambda: np.copyto(dst, src), lambda: [dst])


def run_workload(w: Workload, impls: list[str], *, quick: bool, repeat: int | None,
                 explicit: set[str] | None = None,
                 progress: Progress | None = None) -> WorkloadResult:
    """Check, warm up and time (or measure) the given implementations of one workload."""
    tick = progress or (lambda _w, _i, _n: None)
    size = w.sizes["quick" if quick else "full"]
    reps = repeat if repeat is not None else (max(3, w.repeat // 3) if quick else w.repeat)
    metrics, metric_units = w.size_metrics(size) if w.size_metrics else (w.metrics,
                                                                         w.metric_units)
    out = WorkloadResult(w.name, w.description, dict(size), w.kind, metrics, metric_units,
                         reps)
    inputs = w.make_inputs(size)
    ref = w.reference(inputs)
    cases: dict[str, Case] = {}
    for name in impls:
        tick(w.name, f"{name} (check)", 0)
        res, case = _check(w, name, inputs, ref, quick, name in (explicit or set()))
        out.results.append(res)
        if case is not None:
            cases[name] = case
        tick(w.name, name, 1 if case is not None else 1 + reps)
    # everything alive now (libraries, inputs, compiled code) moves out of the collector's
    # sight, so the collection before each sample costs microseconds, not 0.1 s with torch
    gc.collect()
    gc.freeze()
    try:
        if w.kind == "time":
            _time(w, out, cases, inputs, quick, reps, tick)
        else:
            _measure(w, out, cases, inputs, quick, reps, tick)
    finally:
        gc.unfreeze()
    if not w.in_subprocess:
        _verify_jit(out, cases)
    _ratios(out)
    return out


def _verify_jit(out: WorkloadResult, cases: dict[str, Case]) -> None:
    """A jitted case whose timed calls were not all compiled hits (a fallback, a retrace) is
    reported skipped with the reason, its samples dropped: eager code is never timed as jit."""
    for res in out.results:
        case = cases.get(res.impl)
        if case is None or case.jit is None or res.status != "ok":
            continue
        problem = case.jit.problem("timed")
        if problem is not None:
            res.status, res.reason = "skipped", problem
            res.samples, res.metrics, res.roofline_fraction = [], {}, None


def _time(w: Workload, out: WorkloadResult, cases: dict[str, Case], inputs: dict[str, Any],
          quick: bool, reps: int, tick: Progress) -> None:
    timed = dict(cases)
    if w.roofline_bytes is not None and cases:
        timed[ROOFLINE] = _copy_case(w.roofline_bytes(out.size))
    number = {}
    for name, case in timed.items():
        tick(w.name, f"{name} (warm-up)", 0)
        number[name] = _calls_per_sample(case.run, quick)
    samples: dict[str, list[float]] = {name: [] for name in timed}
    order = list(timed)
    for r in range(reps if order else 0):  # (nothing to time when every check failed)
        # round-robin, starting one further each repeat, so drift hits every column alike
        for name in order[r % len(order):] + order[:r % len(order)]:
            samples[name].append(_sample(timed[name].run, number[name]))
            if name != ROOFLINE:
                tick(w.name, name, 1)
    for res in out.results:
        if res.impl in samples:
            res.samples, res.calls_per_sample = samples[res.impl], number[res.impl]
    if ROOFLINE in samples and w.roofline_bytes is not None:
        copy = statistics.median(samples[ROOFLINE])
        moved = 2 * w.roofline_bytes(out.size)  # read + write
        out.roofline = {"bytes": float(w.roofline_bytes(out.size)), "copy_median_s": copy,
                        "copy_min_s": min(samples[ROOFLINE]),
                        "bandwidth_gbs": moved / copy / 1e9}
        for res in out.results:
            if res.samples:
                res.roofline_fraction = copy / statistics.median(res.samples)


def _measure(w: Workload, out: WorkloadResult, cases: dict[str, Case], inputs: dict[str, Any],
             quick: bool, reps: int, tick: Progress) -> None:
    assert w.measure is not None, f"{w.name}: a metrics workload needs measure()"
    by_name = {res.impl: res for res in out.results}
    order = list(cases)
    for r in range(reps):
        for name in order[r % len(order):] + order[:r % len(order)] if order else []:
            res = by_name[name]
            tick(w.name, name, 0)
            try:
                got = w.measure(name, cases[name], inputs, quick)
            except UnavailableError as e:  # e.g. a child whose jit fell back to eager
                res.status = "skipped"
                res.reason = (str(e).strip().splitlines() or ["unavailable"])[0]
                res.metrics = {}
                order.remove(name)
                tick(w.name, name, reps - r)
                continue
            except Exception as e:
                res.status, res.correct = "wrong", False
                res.reason = f"measurement raised {type(e).__name__}: {_one_line(e)}"
                res.metrics = {}
                order.remove(name)
                tick(w.name, name, reps - r)
                continue
            if got.get("correct", 1.0) != 1.0:  # a subprocess's own check failed
                res.status, res.correct = "wrong", False
                res.reason = f"max error {got.get('max_error', float('nan')):.3g} in subprocess"
                res.metrics = {}
                order.remove(name)
                tick(w.name, name, reps - r)
                continue
            for key in out.metrics:
                res.metrics.setdefault(key, []).append(float(got[key]))
            tick(w.name, name, 1)


def _primary(res: ImplResult, kind: str, metrics: tuple[str, ...]) -> float | None:
    if res.status != "ok":
        return None
    if kind == "time":
        return statistics.median(res.samples) if res.samples else None
    vals = res.metrics.get(metrics[0]) if metrics else None
    return statistics.median(vals) if vals else None


def _ratios(out: WorkloadResult) -> None:
    """Ratios to tracejit-jit, or, while it is absent, to the first implementation that ran."""
    prim = {res.impl: _primary(res, out.kind, out.metrics) for res in out.results}
    ok = [name for name, v in prim.items() if v is not None]
    if not ok:
        return
    if BASELINE in ok:
        base, note = BASELINE, ""
    else:
        base = ok[0]
        note = f"{BASELINE} did not run; ratios are to {base}"
    out.baseline, out.baseline_note = base, note
    b = prim[base]
    for res in out.results:
        v = prim[res.impl]
        if v is not None and b:
            res.ratio = v / b
