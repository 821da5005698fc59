"""The machine header: CPU, cores, BLAS libraries and the kernel they picked, thread counts,
the environment variables that change them, and library versions. Also pins thread counts.

Thread pools of different libraries in one process fight (PERF-NOTES.md), so the CLI pins
NumPy's BLAS, torch and Numba to one count it reports; OpenBLAS is reached through ctypes
(no threadpoolctl dependency) in the library NumPy actually loaded.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import re
import sys
from typing import Any

import numpy as np

ENV_VARS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "XLA_FLAGS",
    "TRACEJIT_CACHE_DIR", "TRACEJIT_DISABLE",
)
VERSIONED = ("tracejit", "numpy", "numba", "llvmlite", "torch", "jax", "jaxlib", "matplotlib")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_family() -> str:
    """Vendor, family and model numbers: /proc/cpuinfo's model name on a VM can be generic."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, val = line.partition(":")
                fields[key.strip()] = val.strip()
    except OSError:
        return ""
    return (f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} "
            f"model {fields.get('model', '?')}")


def _openblas() -> tuple[Any, str] | None:
    """NumPy's OpenBLAS as a ctypes library and its symbol suffix, found in /proc/self/maps."""
    np.dot(np.ones((2, 2)), np.ones((2, 2)))  # make sure the BLAS is loaded
    try:
        with open("/proc/self/maps") as f:
            paths = {m.group(1) for line in f
                     if (m := re.search(r"(/\S*openblas\S*\.so\S*)", line))}
    except OSError:
        return None
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"),
                               ("scipy_openblas", ""), ("openblas", "")):
            if hasattr(lib, f"{prefix}_get_corename{suffix}"):
                return lib, f"{prefix}_%s{suffix}"
    return None


def numpy_blas() -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]  # type: ignore[index]
        cfg = {"name": deps.get("name"), "version": deps.get("version"),
               "config": deps.get("openblas configuration", "")}
    except Exception:
        pass
    found = _openblas()
    if found is not None:
        lib, pattern = found
        core = getattr(lib, pattern % "get_corename")
        core.restype = ctypes.c_char_p
        threads = getattr(lib, pattern % "get_num_threads")
        cfg["core"] = core().decode()
        cfg["threads"] = int(threads())
    return cfg


def set_numpy_blas_threads(n: int) -> bool:
    found = _openblas()
    if found is None:
        return False
    lib, pattern = found
    setter = getattr(lib, pattern % "set_num_threads")
    setter.argtypes = [ctypes.c_int]
    setter(n)
    return True


def pin_cores(n: int) -> set[int] | None:
    """Restrict this thread (and every thread it starts later: XLA's, torch's pools) to the
    first n cores it may use; returns the previous set to restore, or None when n already
    covers them (or the platform has no affinity). XLA has no thread-count setting: it sizes
    its pool by these cores."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    if n >= len(before):
        return None
    os.sched_setaffinity(0, sorted(before)[:n])
    return before


def pin_threads(n: int) -> None:
    """One thread count for every pool: OpenBLAS, torch (intra-op), Numba and XLA (at import;
    by the cores `pin_cores` allows it)."""
    os.environ["TRACEJIT_BENCH_THREADS"] = str(n)
    set_numpy_blas_threads(n)
    if "torch" in sys.modules:  # otherwise benchmarks.peers.torch() pins it on import
        import torch

        torch.set_num_threads(n)
    try:
        import numba

        numba.set_num_threads(min(n, getattr(numba.config, "NUMBA_NUM_THREADS", n)))
    except Exception:
        pass


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def threads() -> dict[str, Any]:
    out: dict[str, Any] = {"numpy_blas": numpy_blas().get("threads")}
    if "torch" in sys.modules:
        import torch

        out["torch"] = torch.get_num_threads()
        out["torch_interop"] = torch.get_num_interop_threads()
    try:
        import numba

        out["numba"] = numba.get_num_threads()
        out["numba_threading_layer"] = getattr(numba.config, "THREADING_LAYER", None)
    except Exception:
        pass
    out["pinned"] = os.environ.get("TRACEJIT_BENCH_THREADS")
    if hasattr(os, "sched_getaffinity"):
        out["cores_allowed"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    return out


def torch_blas() -> dict[str, Any]:
    if "torch" not in sys.modules:
        return {}
    import torch

    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=(\w+)", cfg)
    return {"name": m.group(1) if m else None,
            "mkl": bool(torch.backends.mkl.is_available()),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def info() -> dict[str, Any]:
    """Everything the header prints; call it after the workloads ran (so peers are loaded)."""
    return {
        "cpu_model": cpu_model(),
        "cpu_family": cpu_family(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        # other processes on a 2-core VM distort every figure: say how busy it was
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "blas": {"numpy": numpy_blas(), "torch": torch_blas()},
        "threads": threads(),
        "env": {k: os.environ.get(k) for k in ENV_VARS},
        # variables tracejit-bench removed by re-running itself (NAME=value; see bench.main)
        "unset": os.environ.get("TRACEJIT_BENCH_UNSET") or None,
        "versions": versions(),
    }
