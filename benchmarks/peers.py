"""Lazy access to the implementations' libraries: each returns the module or raises UnavailableError
with the one-line reason the table shows. Peers are optional extras (`pip install
tracejit[bench]`), never dependencies of tracejit.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .core import UnavailableError

_QUICK = {"on": False}


def set_quick(on: bool) -> None:
    """Remember --quick, for factories whose set-up is too slow for it (torch.compile)."""
    _QUICK["on"] = on


def tracejit() -> Any:
    import tracejit as tj

    return tj


def tracejit_jit() -> Any:
    """tracejit with its JIT; the JIT is built in its own issue and lights these columns up."""
    tj = tracejit()
    if not hasattr(tj, "jit"):
        raise UnavailableError("tracejit.jit not available")
    return tj


def tracejit_nn() -> tuple[Any, Any] | None:
    """(tracejit.nn, tracejit.optim) when both have what the workloads use, else None (the
    workloads then write Linear and Adam with raw tensor ops)."""
    try:
        import tracejit.nn as nn
        import tracejit.optim as optim
    except ImportError:
        return None
    if not (hasattr(nn, "Linear") and hasattr(optim, "Adam") and hasattr(nn, "Module")):
        return None
    return nn, optim


def torch() -> Any:
    try:
        import torch as th
    except ImportError:
        raise UnavailableError("torch not installed (pip install tracejit[bench])") from None
    threads = os.environ.get("TRACEJIT_BENCH_THREADS")
    if threads and th.get_num_threads() != int(threads):
        th.set_num_threads(int(threads))
    return th


def torch_compile() -> Any:
    th = torch()
    if _QUICK["on"]:
        raise UnavailableError("torch.compile takes seconds to compile; skipped in --quick")
    if not hasattr(th, "compile"):
        raise UnavailableError(f"torch {th.__version__} has no torch.compile")
    return th


def jax() -> Any:
    # XLA has no thread-count flag (``intra_op_parallelism_threads`` is TensorFlow's, and
    # jaxlib 0.10 ignores the bare word): its CPU client sizes its pool by the cores the process
    # may run on, which machine.pin_threads restricts to N (measured: a 2048^3 matmul kept two
    # threads busy with the old flags, one under the affinity). Eigen's own pool off for N=1.
    threads = os.environ.get("TRACEJIT_BENCH_THREADS")
    if threads == "1" and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
    try:
        import jax as jx
    except ImportError:
        raise UnavailableError("jax not installed (pip install jax jaxlib)") from None
    return jx


def torch_tensor(th: Any, a: np.ndarray, requires_grad: bool = False) -> Any:
    """A torch tensor holding its own copy of `a` (runs never share state)."""
    t = th.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad) if requires_grad else t


def tj_tensor(tj: Any, a: np.ndarray, requires_grad: bool = False) -> Any:
    t = tj.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad) if requires_grad else t
