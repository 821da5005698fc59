"""The workload registry: what a workload and an implementation are, and the hook to add one.

A workload declares its sizes, how to build its inputs, a float64 NumPy reference and a table of
implementations. Imports only NumPy: peers (torch, jax, tracejit.jit) are imported lazily by the
implementation factories, so a missing peer costs a skip, never an import error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Inputs = dict[str, Any]
Outputs = Sequence[np.ndarray]

# The order of the columns everywhere (tables, JSON, the chart); tracejit-jit is the baseline.
IMPL_ORDER = ("tracejit-jit", "tracejit-eager", "numpy", "torch", "torch-compile", "jax")

# One module per workload, in the order the CLI runs them.
WORKLOAD_MODULES = (
    "mlp_seed", "mlp_adam", "mlp_large", "iris", "gelu", "softmax", "layernorm", "xent_bwd",
    "layernorm_bwd", "dropout_step", "control_flow", "gpt", "cnn", "dispatch", "eager", "compile",
    "jit_compile", "memory", "ddp",
)


class UnavailableError(Exception):
    """Raised by an implementation factory when it cannot run here; the message is the reason
    shown in the table (one line)."""


@dataclass
class Case:
    """One implementation set up on one workload's inputs.

    `run()` does one timed unit of work and returns only when the work is done (jax results are
    blocked on); `output()` returns the arrays the check compares with the float64 reference,
    in the order the workload's reference returns them.
    """

    run: Callable[[], object]
    output: Callable[[], Outputs]
    # tracejit-jit: the jitted functions the case calls, so that the runner can verify that
    # the checked and the timed calls ran compiled code (jitprobe.JitProbe)
    jit: Any = None


Factory = Callable[[Inputs], Case]
Measure = Callable[[str, Case, Inputs, bool], dict[str, float]]


@dataclass
class Workload:
    """A benchmark: sizes, inputs, reference and implementations.

    kind "time": the runner times `Case.run()`; kind "metrics": `measure(impl, case, inputs,
    quick)` returns named figures (seconds or bytes) per repeat, the first listed is primary.
    `roofline_bytes(size)`: for bandwidth-bound workloads, the size of the array a same-size copy
    moves, so the run can time that copy as the workload's floor.
    """

    name: str
    description: str
    sizes: dict[str, dict[str, Any]]
    make_inputs: Callable[[dict[str, Any]], Inputs]
    reference: Callable[[Inputs], Outputs]
    impls: dict[str, Factory]
    tolerance: float = 1e-4
    repeat: int = 15
    # how many times the check calls run() before comparing (training steps: several)
    check_runs: int = 1
    kind: str = "time"
    metrics: tuple[str, ...] = ()
    metric_units: tuple[str, ...] = ()
    measure: Measure | None = None
    roofline_bytes: Callable[[dict[str, Any]], int] | None = None
    # how a result is compared with the reference: max_error, or norm_error where a few
    # ill-conditioned elements are expected (Adam turns gradients near 0 into +-lr steps)
    error: Callable[[Outputs, Outputs], float] | None = None
    # implementations that are not worth their time in --quick mode, with the reason
    quick_skip: dict[str, str] = field(default_factory=dict)
    # metrics workloads measured in child processes (compile): the children verify their jit
    # themselves, the in-process case is only checked, never called while measuring
    in_subprocess: bool = False
    # metrics workloads whose metric names depend on the size (jit-compile: one per layer
    # count): size -> (metrics, metric_units); overrides `metrics` and `metric_units`
    size_metrics: Callable[[dict[str, Any]], tuple[tuple[str, ...], tuple[str, ...]]] | None = None
    # run when no --workload is named (ddp: False, it spawns processes through mpiexec)
    default: bool = True


_REGISTRY: dict[str, Workload] = {}


def register_workload(w: Workload) -> Workload:
    """Add (or replace) a workload; each module in WORKLOAD_MODULES calls this on import."""
    _REGISTRY[w.name] = w
    return w


def register_impl(workload: str, impl: str, factory: Factory) -> Callable[[], None]:
    """Add an implementation to a registered workload (used by tests to plant a wrong one).

    Returns a function that removes it again.
    """
    w = workloads()[workload]
    previous = w.impls.get(impl)
    w.impls[impl] = factory

    def undo() -> None:
        if previous is None:
            w.impls.pop(impl, None)
        else:
            w.impls[impl] = previous

    return undo


def workloads() -> dict[str, Workload]:
    """Every workload, importing the workload modules on first use."""
    if not _REGISTRY:
        for mod in WORKLOAD_MODULES:
            importlib.import_module(f"{__package__}.{mod}")
    return _REGISTRY


def impl_names(w: Workload) -> list[str]:
    """The workload's implementations, known ones in IMPL_ORDER, extra (registered) ones after."""
    known = [i for i in IMPL_ORDER if i in w.impls]
    return known + [i for i in w.impls if i not in IMPL_ORDER]


def max_error(got: Outputs, want: Outputs) -> float:
    """Largest error over all outputs, each relative to its reference's largest magnitude.

    One scale per array (not per element) so that entries near zero do not dominate; NaN, a
    shape mismatch or a missing output is an infinite error.
    """
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        g64 = np.asarray(g, dtype=np.float64)
        w64 = np.asarray(w, dtype=np.float64)
        if g64.shape != w64.shape:
            return float("inf")
        if g64.size == 0:
            continue
        scale = max(float(np.max(np.abs(w64))), 1e-30)
        err = float(np.max(np.abs(g64 - w64))) / scale
        if not np.isfinite(err):
            return float("inf")
        worst = max(worst, err)
    return worst


def norm_error(got: Outputs, want: Outputs) -> float:
    """Largest relative L2 error over all outputs: ||got - want|| / ||want|| per array."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        g64 = np.asarray(g, dtype=np.float64)
        w64 = np.asarray(w, dtype=np.float64)
        if g64.shape != w64.shape:
            return float("inf")
        err = float(np.linalg.norm(g64 - w64)) / max(float(np.linalg.norm(w64)), 1e-30)
        if not np.isfinite(err):
            return float("inf")
        worst = max(worst, err)
    return worst
