"""The one module that talks to numba-cuda. Everything else in tracejit reaches the GPU through
these functions (allocate, copy in and out, compile generated kernel source, launch, sync), so a
successor of numba-cuda (which is in maintenance mode) replaces this file and nothing else.

Supported pair (the `tracejit[cuda]` extra): numba-cuda 0.30.x with NumPy < 2.5 (numba-cuda
0.30.4 cannot compile any kernel under NumPy 2.5: `numpy.row_stack` is gone). Anything else is
reported as one line saying what is missing and how to install it (`CudaNotAvailableError`),
never as a traceback from inside numba-cuda.

NUMBA_ENABLE_CUDASIM=1 runs everything on Numba's CUDA simulator (CPU threads; tiny sizes):
`simulated()` is then True and the launch configuration shrinks to keep it fast."""

from __future__ import annotations

import os
import sys
import types
from importlib import metadata
from typing import Any

import numpy as np

from ..device import CudaNotAvailableError

SUPPORTED = "numba-cuda 0.30.x with NumPy >= 1.24, < 2.5"
INSTALL = "pip install 'tracejit[cuda]'  (installs numba-cuda 0.30.4 and NumPy < 2.5)"

_cuda: Any = None  # numba.cuda once load() succeeded
_why: str | None = None  # why CUDA is unavailable, once known


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _unavailable_reason() -> str | None:
    """Why numba-cuda cannot be used here, or None when it can (checks versions before
    importing it, so an unsupported pair never gets as far as numba-cuda's own traceback)."""
    try:
        ncv = metadata.version("numba-cuda")
    except metadata.PackageNotFoundError:
        return f"numba-cuda is not installed; install it with {INSTALL}"
    npv = _version_tuple(np.__version__)
    if _version_tuple(ncv)[:2] != (0, 30):
        return (f"numba-cuda {ncv} is installed but tracejit supports {SUPPORTED}; install the "
                f"supported pair with {INSTALL}")
    if npv >= (2, 5):
        return (f"NumPy {np.__version__} is installed, and numba-cuda {ncv} cannot compile "
                f"kernels with NumPy >= 2.5 (supported: {SUPPORTED}); install "
                "'numpy>=2.4,<2.5' or run pip install 'tracejit[cuda]'")
    try:
        from numba import cuda
    except Exception as e:  # noqa: BLE001 - any failure to import is "not available"
        return f"numba-cuda failed to import ({type(e).__name__}: {e}); reinstall with {INSTALL}"
    try:
        ok = bool(cuda.is_available())
    except Exception as e:  # noqa: BLE001
        return f"the CUDA driver could not be initialised ({type(e).__name__}: {e})"
    if not ok:
        return ("no CUDA GPU or driver was found (numba.cuda.is_available() is False); run on a "
                "machine with an NVIDIA GPU and driver, or set NUMBA_ENABLE_CUDASIM=1 for "
                "Numba's (slow) CUDA simulator")
    global _cuda
    _cuda = cuda
    return None


def reason() -> str | None:
    """None when CUDA works here; else why not, in one line."""
    global _why
    if _cuda is None and _why is None:
        _why = _unavailable_reason()
    return _why


def available() -> bool:
    return reason() is None


def cuda() -> Any:
    """numba.cuda, or CudaNotAvailableError with the one-line reason."""
    if _cuda is None:
        why = reason()
        if why is not None:
            raise CudaNotAvailableError(f"tracejit: CUDA is not available: {why}")
    return _cuda


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def device_count() -> int:
    return len(cuda().gpus) if available() else 0


def synchronize() -> None:
    cuda().synchronize()


# ---- memory -------------------------------------------------------------------------------------


_allocator: Any = None


def allocator() -> Any:
    """The process's caching allocator (allocator.py) over raw device byte buffers."""
    global _allocator
    if _allocator is None:
        from .allocator import CachingAllocator

        c = cuda()
        _allocator = CachingAllocator(lambda nbytes: c.device_array(nbytes, dtype=np.uint8))
    return _allocator


def alloc(n: int, dtype: np.dtype) -> Any:
    """A 1-d device buffer of n elements (at least one, so views of empty tensors have a
    buffer), from the caching allocator."""
    return allocator().alloc(max(int(n), 1), np.dtype(dtype))


def to_device(a: np.ndarray) -> Any:
    """A 1-d device buffer holding a C-contiguous copy of `a`'s elements."""
    flat = np.ascontiguousarray(a).reshape(-1)
    buf = alloc(flat.size, flat.dtype)
    if flat.size:
        buf.copy_to_device(flat)
    return buf


def to_host(buf: Any) -> np.ndarray:
    """The whole 1-d buffer copied to a new host array (synchronises)."""
    return np.asarray(buf.copy_to_host())


def copy_from_host(buf: Any, a: np.ndarray) -> None:
    """Overwrite the 1-d buffer's first a.size elements with `a`'s (C order)."""
    flat = np.ascontiguousarray(a, dtype=buf.dtype).reshape(-1)
    if flat.size:
        buf[: flat.size].copy_to_device(flat)


# ---- kernels ------------------------------------------------------------------------------------

THREADS = 256  # threads per block on a GPU (grid-stride loops; reductions use one block per row)
SIM_THREADS = 4  # the simulator runs each thread as a Python thread: keep blocks tiny there
_MODULES: dict[str, types.ModuleType] = {}


def threads() -> int:
    return SIM_THREADS if simulated() else THREADS


def blocks_for(n: int) -> int:
    """Blocks for a grid-stride loop over n items."""
    if simulated():
        return 1
    return max(1, min((n + THREADS - 1) // THREADS, 65535))


def compile_source(name: str, text: str) -> types.ModuleType:
    """Module `name` from generated kernel source (once per process). Its kernels carry one
    explicit signature each, so numba-cuda compiles them here, not at the first launch."""
    mod = _MODULES.get(name)
    if mod is not None:
        return mod
    cuda()
    mod = types.ModuleType(f"tracejit_cuda.{name}")
    filename = f"<tracejit cuda {name}>"
    import linecache

    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    mod.__file__ = filename
    sys.modules[mod.__name__] = mod
    exec(compile(text, filename, "exec"), vars(mod))
    _MODULES[name] = mod
    return mod


def compile_ptx(fn: Any, sig: str, cc: tuple[int, int] = (9, 0)) -> str:
    """PTX for a Python kernel function (not the simulator's: call with NUMBA_ENABLE_CUDASIM
    unset), for checks without a GPU."""
    from numba import cuda as real

    ptx, _ = real.compile_ptx(fn, sig, cc=cc)
    return str(ptx)
