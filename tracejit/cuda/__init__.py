"""tracejit.cuda: torch.cuda's queries and controls, backed by numba-cuda (tracejit/cuda/
backend.py). Install with `pip install 'tracejit[cuda]'` (numba-cuda 0.30.x with NumPy < 2.5);
without numba-cuda or a GPU, `is_available()` is False and asking for a CUDA tensor raises a
one-line error saying what is missing. Under NUMBA_ENABLE_CUDASIM=1 Numba's simulator stands in
for the GPU (slow: tiny sizes only)."""

from __future__ import annotations

from typing import Any

from ..device import cuda_not_available
from . import backend


def is_available() -> bool:
    return backend.available()


def device_count() -> int:
    return backend.device_count()


def is_initialized() -> bool:
    return backend._cuda is not None


def current_device() -> int:
    if not backend.available():
        raise cuda_not_available("cuda")
    return 0


def synchronize(device: Any = None) -> None:
    """Wait for every kernel queued on the device."""
    if not backend.available():
        raise cuda_not_available("cuda" if device is None else device)
    backend.synchronize()


def manual_seed(seed: int) -> None:
    """Seed the generator that CUDA tensors' random draws use (ignored without CUDA, as in
    torch). The draws are Philox, as the CPU's, computed on the host and copied once."""
    from ..creation import cuda_generator

    cuda_generator.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)


def host_fallbacks() -> dict[str, int]:
    """How many times each op ran on the host for CUDA operands (a copy out and back) in this
    process: the ops without a CUDA kernel yet (index, scan, pooling, conv, attention)."""
    from .eager import HOST_FALLBACKS

    return dict(HOST_FALLBACKS)


def reset_host_fallbacks() -> None:
    from .eager import HOST_FALLBACKS

    HOST_FALLBACKS.clear()


def memory_stats() -> dict[str, int]:
    """The caching allocator's counters: allocations, reused, device_mallocs, bytes_in_use,
    bytes_cached."""
    return dict(vars(backend.allocator().stats))


def empty_cache() -> None:
    """Give the allocator's free blocks back to the device."""
    if backend.available():
        backend.allocator().empty_cache()
