"""memory: peak and retained allocation of one mlp-seed training step in steady state (after
warm-up), measured with tracemalloc, which sees NumPy's allocations (and so tracejit's eager
tensors). Allocations made by torch's and XLA's own allocators, and by Numba-compiled code (NRT),
are invisible to it: torch and jax are skipped, and the jit column also reports NRT's count of
allocations per step.
"""

from __future__ import annotations

import gc
import tracemalloc

from . import mlp_seed
from .core import Case, Factory, Inputs, UnavailableError, Workload, register_workload

METRICS = ("peak_bytes", "retained_bytes", "nrt_allocs")


def _nrt_allocs() -> int:
    try:
        from numba.core.runtime import rtsys

        return int(rtsys.get_allocation_stats().alloc)
    except Exception:
        return 0


def measure(impl: str, case: Case, inp: Inputs, quick: bool) -> dict[str, float]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        case.run()  # a step with tracing on, so lazily created state exists before measuring
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        nrt = _nrt_allocs()
        case.run()
        current, peak = tracemalloc.get_traced_memory()
        nrt = _nrt_allocs() - nrt
    finally:
        if started:
            tracemalloc.stop()
    return {"peak_bytes": float(peak - base), "retained_bytes": float(current - base),
            "nrt_allocs": float(nrt)}


def _invisible(lib: str) -> Factory:
    def factory(inp: Inputs) -> Case:
        raise UnavailableError(f"{lib}'s allocator does not report to tracemalloc")

    return factory


WORKLOAD = register_workload(Workload(
    name="memory",
    description="allocation during one mlp-seed train step in steady state (tracemalloc)",
    sizes={"full": dict(mlp_seed.SIZES["full"]), "quick": dict(mlp_seed.SIZES["quick"])},
    make_inputs=mlp_seed.make_inputs,
    reference=mlp_seed.reference,
    impls={"tracejit-jit": mlp_seed.tracejit_jit, "tracejit-eager": mlp_seed.tracejit_eager,
           "numpy": mlp_seed.numpy_impl, "torch": _invisible("torch"),
           "jax": _invisible("XLA")},
    tolerance=mlp_seed.WORKLOAD.tolerance,
    repeat=5,
    check_runs=mlp_seed.CHECK_STEPS,
    kind="metrics",
    metrics=METRICS,
    metric_units=("bytes", "bytes", "count"),
    measure=measure,
))
