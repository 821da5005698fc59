"""The caching allocator: device memory is kept when a tensor dies and handed to the next
allocation of the same size class, so a training loop's steps stop calling cudaMalloc/cudaFree
after the first (as PyTorch's caching allocator). One stream: a block freed after a launch that
still reads it is reused only by work queued after that launch on the same stream, so reuse is
safe without events.

A block is a raw byte buffer from the backend; an allocation is a typed 1-d view of it, and
`weakref.finalize` on that view returns the block when the last tensor (every tensor view
holds the view as its `DeviceArray.buf`) is gone. Size classes: multiples of 512 bytes up to
1 MiB, then multiples of 2 MiB, so near sizes share blocks. `empty_cache()` drops the free blocks;
`stats()` says what was reused."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SMALL = 1 << 20
SMALL_ROUND = 512
LARGE_ROUND = 2 << 20


def size_class(nbytes: int) -> int:
    n = max(int(nbytes), 1)
    r = SMALL_ROUND if n <= SMALL else LARGE_ROUND
    return (n + r - 1) // r * r


@dataclass
class Stats:
    allocations: int = 0  # typed allocations handed out
    reused: int = 0  # of them, served from a cached block
    device_mallocs: int = 0  # raw blocks asked of the device
    bytes_in_use: int = 0
    bytes_cached: int = 0  # free blocks kept for reuse


class CachingAllocator:
    def __init__(self, raw_alloc: Callable[[int], Any]) -> None:
        self._raw_alloc = raw_alloc  # nbytes -> a 1-d uint8 device buffer of that size
        self._free: dict[int, list[Any]] = {}
        self.stats = Stats()
        self.enabled = True

    def alloc(self, n: int, dtype: np.dtype) -> Any:
        """A 1-d device buffer of n elements of dtype."""
        d = np.dtype(dtype)
        cls = size_class(max(n, 1) * d.itemsize)
        st = self.stats
        st.allocations += 1
        free = self._free.get(cls)
        if free:
            raw = free.pop()
            st.reused += 1
            st.bytes_cached -= cls
        else:
            raw = self._raw_alloc(cls)
            st.device_mallocs += 1
        st.bytes_in_use += cls
        view = raw.view(d)[: max(n, 1)]
        weakref.finalize(view, self._release, raw, cls)
        return view

    def _release(self, raw: Any, cls: int) -> None:
        st = self.stats
        st.bytes_in_use -= cls
        if self.enabled:
            self._free.setdefault(cls, []).append(raw)
            st.bytes_cached += cls

    def empty_cache(self) -> None:
        """Free every cached block (tensors alive keep theirs)."""
        self._free.clear()
        self.stats.bytes_cached = 0
