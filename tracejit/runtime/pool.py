"""A pool of large output buffers, so that a compiled function returning a fresh 64 MiB array
does not pay first-touch page faults on every call.

glibc serves an allocation of at least its mmap threshold with a fresh `mmap` and unmaps it on
free; the threshold rises to the size of the mapped chunks freed, but never past 32 MiB, so
every new array of 32 MiB or more faults in every page on first write: that costs about as much
as the memory pass of an elementwise kernel (measured here: `x + 1` into a fresh 64 MiB float32
array 17-26 ms, into a reused one 9-11 ms). `empty` hands out memory that arrays which have died
released, so steady-state calls fault nothing.

Lifetime: each array handed out is built over a small per-handout exporter object, a ctypes
`c_char` array made with `from_buffer` over the pooled block, and a `weakref.finalize` on that
exporter returns the block to the pool. The exporter is the array's `.base`. NumPy's view
machinery keeps it alive for as long as any view of that memory exists: a view's `.base` is
either the exporter or an ndarray whose base chain reaches it (NumPy collapses a view's base
only through ndarrays whose own base is an ndarray, so with a non-ndarray base it stops at the
array handed out, which keeps the exporter alive); `memoryview`, `np.frombuffer`, `as_strided`
and Numba's boxing of returned views all hold a reference to an array of that chain. A
finalizer on the handed-out ndarray would be wrong (a block-backed ndarray base would let views
skip it), and one on the block itself would never fire (the pool holds every block). Only raw
addresses taken out of NumPy (`arr.ctypes.data`, `__array_interface__`) escape this, as they do
for any array.

Blocks are keyed by their size rounded up to a page; a block is reused only for that exact
size. Free blocks are kept up to `TRACEJIT_POOL_MAX_BYTES` in all (default `MAX_FREE_BYTES`);
beyond it the least recently freed are dropped (and unmapped). New blocks come from `np.empty`
(NumPy already asks the kernel for transparent huge pages for allocations of 4 MiB and more;
an anonymous `mmap` with `MADV_HUGEPAGE` measured no faster), aligned to `ALIGN` bytes.
Arrays below `THRESHOLD_BYTES` (32 MiB: glibc's largest mmap threshold; smaller arrays are
reused from its heap without faults), arrays of object dtype and everything while
`TRACEJIT_POOL=0` come from plain `np.empty`.

Thread safety: one reentrant lock guards the free lists. Finalizers run on whatever thread drops
the last reference, including inside the pool's own critical section (a garbage collection
triggered by an allocation there): such a nested return is queued and applied before the
section ends, so the free lists are never changed under an operation in progress."""

from __future__ import annotations

import collections
import ctypes
import math
import mmap
import operator
import os
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, SupportsIndex, cast

import numpy as np
import numpy.typing as npt

from ..flags import get as get_flag

# Arrays of at least this many bytes come from the pool. Below it glibc already reuses freed
# memory without faults (its mmap threshold rises, up to 32 MiB, to the size of the mmapped
# chunks freed), and the pool's Python bookkeeping (~20-40 us a handout with cold caches) made
# a 1 MiB output 70% slower, 16 MiB 2% slower; at 32 MiB and more np.empty faults on every
# call and the pool halves the time of an elementwise kernel.
THRESHOLD_BYTES = 32 << 20
MAX_FREE_BYTES = 1 << 30  # default bound on the bytes of free blocks kept (TRACEJIT_POOL_MAX_BYTES)
ALIGN = 64  # the data pointer of every pooled array is a multiple of this
PAGE = mmap.PAGESIZE  # block sizes are rounded up to a multiple of this


@dataclass(frozen=True)
class PoolStats:
    hits: int  # handouts served by a free block
    misses: int  # handouts that allocated a new block
    evictions: int  # freed blocks dropped instead of kept (the bound, or the pool switched off)
    free_blocks: int  # blocks held by the pool, ready for reuse
    free_bytes: int  # their total size (kept at most the bound)
    used_blocks: int  # blocks handed out whose memory some array may still view
    used_bytes: int


class _Block:
    """One allocation: `raw` (a uint8 ndarray), used from byte `offset` for `size` bytes."""

    __slots__ = ("raw", "offset", "size")

    def __init__(self, size: int) -> None:
        raw = np.empty(size + ALIGN - 1, np.uint8)
        self.raw = raw
        self.offset = -raw.ctypes.data % ALIGN
        self.size = size


_lock = threading.RLock()
_busy = False  # inside a critical section of the pool (read and written only under _lock)
_pending: list[_Block] = []  # blocks returned by finalizers that ran inside a critical section
_free: collections.OrderedDict[int, _Block] = collections.OrderedDict()  # seq -> block, by age
_by_size: dict[int, collections.deque[int]] = {}  # rounded size -> seqs of free blocks, by age
_seq = 0
_free_bytes = 0
_used_blocks = 0
_used_bytes = 0
_hits = 0
_misses = 0
_evictions = 0
_limits: dict[object, int] = {}  # the flag's value -> bytes


def _max_free_bytes() -> int:
    raw = get_flag("pool_max_bytes")
    limit = _limits.get(raw)
    if limit is None:
        limit = _limits[raw] = parse_bytes(raw)
    return limit


def parse_bytes(value: object) -> int:
    """A byte count from an int or a string such as ``"1073741824"``, ``"512M"``, ``"1G"``
    (K, M, G, T are powers of 1024; a trailing ``B``/``iB`` is allowed)."""
    if isinstance(value, bool):
        raise ValueError(f"TRACEJIT_POOL_MAX_BYTES: expected a byte count, got {value!r}")
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        if not text:  # TRACEJIT_POOL_MAX_BYTES= (set but empty): the default
            return MAX_FREE_BYTES
        scale = 1
        if text[-1:] in ("K", "M", "G", "T"):
            scale = 1024 ** ("KMGT".index(text[-1]) + 1)
            text = text[:-1]
        try:
            n = int(float(text) * scale) if "." in text else int(text) * scale
        except ValueError:
            raise ValueError(
                f"TRACEJIT_POOL_MAX_BYTES: expected a byte count such as 1073741824, 512M or "
                f"1G, got {value!r}") from None
    if n < 0:
        raise ValueError(f"TRACEJIT_POOL_MAX_BYTES: must not be negative, got {value!r}")
    return n


def _enter() -> bool:
    """Start a critical section; False (and nothing held) when this thread is already inside
    one: a `__del__` or weakref callback run by a garbage collection that an allocation in the
    section triggered. The caller then must not touch the free lists."""
    global _busy
    _lock.acquire()
    if _busy:
        _lock.release()
        return False
    _busy = True
    return True


def _exit() -> list[_Block]:
    """Apply the returns queued during the section; end it. Returns the blocks it evicted, for
    the caller to drop after the lock is released (unmapping takes time)."""
    global _busy
    dropped: list[_Block] = []
    try:
        while _pending:
            _put(_pending.pop(), dropped)
    finally:
        _busy = False
        _lock.release()
    return dropped


def _put(block: _Block, dropped: list[_Block]) -> None:
    """Return a block that no array views any more (under the lock, inside a section)."""
    global _seq, _free_bytes, _used_blocks, _used_bytes, _evictions
    _used_blocks -= 1
    _used_bytes -= block.size
    limit = _max_free_bytes() if get_flag("pool") else 0
    if block.size > limit:
        _evictions += 1
        dropped.append(block)
        return
    _seq += 1
    _free[_seq] = block
    seqs = _by_size.get(block.size)
    if seqs is None:
        seqs = _by_size[block.size] = collections.deque()
    seqs.append(_seq)
    _free_bytes += block.size
    _trim(limit, dropped)


def _trim(limit: int, dropped: list[_Block]) -> None:
    global _free_bytes, _evictions
    while _free_bytes > limit:
        seq, block = _free.popitem(last=False)  # the least recently freed
        seqs = _by_size[block.size]
        assert seqs[0] == seq  # per size, free order is the same as overall
        seqs.popleft()
        if not seqs:
            del _by_size[block.size]
        _free_bytes -= block.size
        _evictions += 1
        dropped.append(block)


def _release(block: _Block) -> None:
    """The finalizer of a handout's exporter: its block is viewed by nothing any more."""
    if not _enter():  # inside one of our own sections, on this thread: it applies this at its end
        _pending.append(block)
        return
    dropped: list[_Block] = []
    try:
        _put(block, dropped)
    finally:
        dropped += _exit()
    del dropped  # evicted blocks are freed here, outside the lock


_NESTED = _Block.__new__(_Block)  # _take's answer inside a section of this thread's


def _take(size: int) -> _Block | None:
    """A free block of `size` bytes, counted as used; None: allocate one (counted as used)."""
    global _free_bytes, _hits, _misses, _used_blocks, _used_bytes
    if not _enter():
        return _NESTED
    block = None
    try:
        seqs = _by_size.get(size)
        if seqs:
            seq = seqs.pop()  # the most recently freed: likeliest still in cache
            if not seqs:
                del _by_size[size]
            block = _free.pop(seq)
            _free_bytes -= size
            _hits += 1
        else:
            _misses += 1
        _used_blocks += 1
        _used_bytes += size
    finally:
        _exit()
    return block


def empty(shape: SupportsIndex | Iterable[SupportsIndex], dtype: npt.DTypeLike) -> np.ndarray:
    """Like ``np.empty(shape, dtype)`` (C order, writeable, uninitialised), with the memory of
    arrays of at least `THRESHOLD_BYTES` taken from the pool. The block returns to the pool when
    no array or other object views it any more."""
    dt = np.dtype(dtype)
    if isinstance(shape, Iterable):
        dims = tuple(operator.index(d) for d in shape)
    else:
        dims = (operator.index(shape),)
    nbytes = math.prod(dims) * dt.itemsize
    if (nbytes < THRESHOLD_BYTES or dt.hasobject or any(d < 0 for d in dims)
            or not get_flag("pool")):
        return np.empty(dims, dt)
    _max_free_bytes()  # a malformed TRACEJIT_POOL_MAX_BYTES raises here, not in a finalizer
    size = -(-nbytes // PAGE) * PAGE
    block = _take(size)
    if block is _NESTED:
        return np.empty(dims, dt)
    if block is None:
        try:
            block = _Block(size)
        except BaseException:
            _forget(size)
            raise
    # ctypes and NumPy both take any buffer; their stubs name only some types
    exporter: Any = (ctypes.c_char * size).from_buffer(cast(Any, block.raw), block.offset)
    f = weakref.finalize(exporter, _release, block)
    f.atexit = False
    return np.ndarray(dims, dt, buffer=exporter)


def _forget(size: int) -> None:
    """A handout failed to get its memory: it never became a used block."""
    global _used_blocks, _used_bytes
    if not _enter():  # not reached: _take already answered _NESTED there
        return
    try:
        _used_blocks -= 1
        _used_bytes -= size
    finally:
        _exit()


def stats() -> PoolStats:
    nested = not _enter()
    try:
        return PoolStats(_hits, _misses, _evictions, len(_free), _free_bytes, _used_blocks,
                         _used_bytes)
    finally:
        if not nested:
            _exit()


def clear() -> None:
    """Drop every free block and zero the hit, miss and eviction counts. Blocks in use are
    untouched (they return to the pool when their arrays die)."""
    global _free_bytes, _hits, _misses, _evictions
    if not _enter():
        raise RuntimeError("tracejit.runtime.pool.clear() called from a finalizer run inside "
                           "the pool's own critical section")
    try:
        dropped = list(_free.values())
        _free.clear()
        _by_size.clear()
        _free_bytes = 0
        _hits = _misses = _evictions = 0
    finally:
        dropped += _exit()
    del dropped


def _after_fork_in_child() -> None:
    # another thread may have held the lock at fork; the child has only this thread
    global _lock, _busy
    _lock = threading.RLock()
    _busy = False
    del _pending[:]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
