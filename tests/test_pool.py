"""tracejit.runtime.pool: large buffers reuse the blocks of dead arrays, and never a block that
any array, view or buffer object still sees.

Every test starts and ends with an empty pool, and runs with the threshold lowered to 1 MiB so
that arrays of a few MiB are pooled (the real one, 32 MiB, would make these tests write tens of
GiB). No timing here: the speed-up is measured by hand (see pool.py)."""

from __future__ import annotations

import gc
import pickle
import random
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import tracejit
from tracejit.flags import get as get_flag
from tracejit.flags import reload as reload_flags
from tracejit.runtime import pool

THRESHOLD = 1 << 20  # the threshold these tests run with
N = THRESHOLD // 4 * 2  # float32 elements of a 2 MiB array
M = THRESHOLD  # elements: at least the threshold in bytes for every dtype
SHAPE = (N // 256, 256)
BLOCK = -(-N * 4 // pool.PAGE) * pool.PAGE


@pytest.fixture(autouse=True)
def _fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    gc.collect()
    pool.clear()
    monkeypatch.setattr(pool, "THRESHOLD_BYTES", THRESHOLD)
    yield
    gc.collect()
    pool.clear()


def test_the_real_threshold_is_glibcs_largest_mmap_threshold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    assert pool.THRESHOLD_BYTES == 32 << 20
    a = pool.empty((pool.THRESHOLD_BYTES // 4,), np.float32)  # never written: cheap
    b = pool.empty((pool.THRESHOLD_BYTES // 4 - 1,), np.float32)
    assert isinstance(a.base, pool.ctypes.Array) and b.base is None


def ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def fresh(shape: Any = SHAPE, dtype: Any = np.float32) -> np.ndarray:
    """A pooled array whose element i holds i (so a view's values are recognisable)."""
    a = pool.empty(shape, dtype)
    a.reshape(-1)[:] = np.arange(a.size).astype(a.dtype)
    return a


# --- what empty() returns -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint16, np.complex128,
                                   np.bool_, np.dtype([("a", np.int32), ("b", np.float64)])])
@pytest.mark.parametrize("shape", [(M // 256, 256), (3, 5, M // 7), M, (M + 1,),
                                   (1, M + 4093)])
def test_like_np_empty(dtype: Any, shape: Any) -> None:
    a = pool.empty(shape, dtype)
    ref = np.empty(shape, dtype)
    assert a.shape == ref.shape and a.dtype == ref.dtype
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert ptr(a) % pool.ALIGN == 0
    assert type(a) is np.ndarray
    assert isinstance(a.base, pool.ctypes.Array)  # pooled, not plain
    raw = a.reshape(-1).view(np.uint8)
    raw[:] = 7  # every byte is ours to write
    raw[-1] = 9
    assert raw[0] == 7 and raw[-1] == 9
    assert pool.stats().used_blocks == 1


def test_subarray_dtype_expands_like_np_empty() -> None:
    dt = np.dtype((np.float32, (4,)))
    a = pool.empty((N // 4,), dt)
    assert a.shape == np.empty((N // 4,), dt).shape == (N // 4, 4)
    assert a.dtype == np.float32 and isinstance(a.base, pool.ctypes.Array)


def test_small_object_and_empty_arrays_are_plain() -> None:
    before = pool.stats()
    small = pool.empty((THRESHOLD // 8 - 1,), np.float64)
    assert small.base is None and small.flags.owndata
    zero = pool.empty((0, N), np.float32)
    assert zero.shape == (0, N) and zero.base is None
    objs = pool.empty((N,), object)  # raw pooled memory would be garbage pointers
    assert objs.base is None and objs[0] is None
    scalar = pool.empty((), np.float32)
    assert scalar.shape == () and scalar.base is None
    assert pool.stats() == before
    with pytest.raises(ValueError):
        pool.empty((-1, N), np.float32)
    with pytest.raises(ValueError):
        pool.empty((-N, -N), np.float32)  # positive product, negative dimensions


def test_exactly_the_threshold_is_pooled() -> None:
    a = pool.empty((THRESHOLD,), np.uint8)
    b = pool.empty((THRESHOLD - 1,), np.uint8)
    assert isinstance(a.base, pool.ctypes.Array) and b.base is None


# --- reuse --------------------------------------------------------------------------------


def test_block_is_reused_after_the_array_dies() -> None:
    a = fresh()
    p = ptr(a)
    s = pool.stats()
    assert (s.hits, s.misses, s.used_blocks, s.used_bytes) == (0, 1, 1, BLOCK)
    del a
    s = pool.stats()
    assert (s.used_blocks, s.free_blocks, s.free_bytes) == (0, 1, BLOCK)
    b = pool.empty(SHAPE, np.float32)
    assert ptr(b) == p
    s = pool.stats()
    assert (s.hits, s.misses, s.free_blocks, s.used_blocks) == (1, 1, 0, 1)


def test_reuse_is_by_rounded_byte_size_not_shape_or_dtype() -> None:
    a = pool.empty(SHAPE, np.float32)
    p = ptr(a)
    del a
    b = pool.empty((N * 4 - 100,), np.uint8)  # fewer bytes, same page-rounded size
    assert ptr(b) == p
    del b
    c = pool.empty((N // 2,), np.float64)
    assert ptr(c) == p
    d = pool.empty((N + pool.PAGE,), np.float32)  # another size: a block of its own
    assert ptr(d) != p
    assert pool.stats().hits == 2 and pool.stats().misses == 2


def test_the_most_recently_freed_block_of_a_size_is_reused_first() -> None:
    a, b = fresh(), fresh()
    pb = ptr(b)
    del a
    del b
    assert ptr(pool.empty(SHAPE, np.float32)) == pb


# --- never reused while something sees the memory -----------------------------------------


def _as_array(v: Any) -> np.ndarray:
    if isinstance(v, list):
        return np.asarray(v[0])
    return np.asarray(v)


VIEWS: dict[str, Callable[[np.ndarray], Any]] = {
    "slice": lambda a: a[1:],
    "row": lambda a: a[3],
    "element view": lambda a: a[3, 4:5],
    "strided": lambda a: a[::2, ::3],
    "reshape": lambda a: a.reshape(-1),
    "reshape 3d": lambda a: a.reshape(4, -1, 4),
    "transpose": lambda a: a.transpose(),
    ".T": lambda a: a.T,
    "swapaxes": lambda a: np.swapaxes(a, 0, 1),
    "ravel": lambda a: a.ravel(),
    "np.asarray": lambda a: np.asarray(a),
    "np.asarray of a view": lambda a: np.asarray(a[2:]),
    "np.array copy=False": lambda a: np.array(a[1:], copy=False),
    "dtype view": lambda a: a.view(np.int32),
    "uint8 view": lambda a: a.view(np.uint8)[8:],
    "view of a view": lambda a: a.reshape(-1)[10:].reshape(-1, 2)[5:][::3],
    "view of a view of a view": lambda a: a.T[1:].T[2:][:, 1:],
    "memoryview": lambda a: memoryview(a),
    "memoryview of a slice": lambda a: memoryview(a[5:]),
    "cast memoryview": lambda a: memoryview(a).cast("B").cast("f"),
    "frombuffer": lambda a: np.frombuffer(a, np.float32),
    "ndarray(buffer=)": lambda a: np.ndarray((100,), np.float32, buffer=a, offset=8),
    "as_strided": lambda a: np.lib.stride_tricks.as_strided(a, (10, 10), (8, 4)),
    "broadcast_to": lambda a: np.broadcast_to(a[0], (3, SHAPE[1])),
    "sliding_window_view": lambda a: np.lib.stride_tricks.sliding_window_view(a[0], 3),
    "view in a list": lambda a: [a[2:]],
    "real part": lambda a: a.view(np.complex64).real,
    "subclass view": lambda a: a.view(np.matrix),
    "np.ctypeslib.as_ctypes": lambda a: np.ctypeslib.as_ctypes(a[0]),
    "flat view via np.ndarray": lambda a: np.ndarray(a.shape, a.dtype, buffer=memoryview(a)),
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_block_is_not_reused_while_a_view_lives(name: str) -> None:
    a = fresh()
    p = ptr(a)
    v = VIEWS[name](a)
    expected = np.array(_as_array(v), copy=True)
    del a
    gc.collect()
    assert pool.stats().used_blocks == 1 and pool.stats().free_blocks == 0
    b = pool.empty(SHAPE, np.float32)
    assert ptr(b) != p
    assert pool.stats().misses == 2 and pool.stats().hits == 0
    b.fill(-7.0)
    np.testing.assert_array_equal(_as_array(v), expected)
    # once the view dies too, its block is reused
    del v, expected
    gc.collect()
    c = pool.empty(SHAPE, np.float32)
    assert ptr(c) == p
    assert pool.stats().hits == 1


def test_base_is_a_per_handout_exporter_that_views_keep_alive() -> None:
    import weakref

    a = fresh()
    exporter = a.base
    assert isinstance(exporter, pool.ctypes.Array)
    assert not a.flags.owndata
    alive = weakref.ref(exporter)
    del exporter
    v = a.reshape(-1)[7:]
    # NumPy collapses a view's base only through ndarrays whose base is an ndarray: a view of a
    # pooled array names the array (or the exporter); either way the exporter stays reachable
    assert v.base is a or v.base is alive()
    del a
    gc.collect()
    assert alive() is not None
    assert v[0] == 7
    del v
    assert alive() is None  # no cycles: freed at once, without a collection
    assert pool.stats().free_blocks == 1
    b = pool.empty(SHAPE, np.float32)
    c = pool.empty(SHAPE, np.float32)
    assert b.base is not c.base  # one exporter per handout, even for a reused block


def test_exporter_release_does_not_free_memory() -> None:
    """Whatever a user does with `.base`, the block is returned only when it is collected."""
    a = fresh()
    p = ptr(a)
    v = a[1:]
    mv = memoryview(a.base)
    mv.release()
    del a, mv
    assert pool.stats().used_blocks == 1
    assert ptr(pool.empty(SHAPE, np.float32)) != p
    assert v[0, 0] == SHAPE[1]


def test_pickle_round_trip_copies_and_frees() -> None:
    a = fresh()
    p = ptr(a)
    copies = [pickle.loads(pickle.dumps(a[1:], protocol=proto)) for proto in (2, 4, 5)]
    expected = np.arange(N, dtype=np.float32).reshape(SHAPE)[1:]
    del a
    b = pool.empty(SHAPE, np.float32)  # nothing holds the block: the copies own their data
    assert ptr(b) == p
    b.fill(-1.0)
    for c in copies:
        np.testing.assert_array_equal(c, expected)


def test_pickled_view_keeps_its_own_memory() -> None:
    """Pickle protocol 5 with out-of-band buffers keeps a PickleBuffer over the original: the
    unpickled array must keep the block alive."""
    a = fresh()
    p = ptr(a)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(a, protocol=5, buffer_callback=buffers.append)
    c = pickle.loads(data, buffers=buffers)
    del a, buffers
    gc.collect()
    b = pool.empty(SHAPE, np.float32)
    if ptr(c) == p:  # zero-copy: c sees the block, which must not have been handed out again
        assert ptr(b) != p
    b.fill(-1.0)
    np.testing.assert_array_equal(c.reshape(-1), np.arange(N, dtype=np.float32))


def test_views_returned_by_numba_keep_the_block() -> None:
    import numba

    @numba.njit(cache=False)
    def tail(x: np.ndarray) -> np.ndarray:
        return x[1:]

    @numba.njit(cache=False)
    def keep(xs: Any) -> Any:
        return xs[0].reshape(-1)[3:]

    a = fresh()
    p = ptr(a)
    t = tail(a)
    r = keep((a,))
    del a
    gc.collect()
    b = pool.empty(SHAPE, np.float32)
    assert ptr(b) != p
    b.fill(-3.0)
    assert t[0, 0] == SHAPE[1] and r[0] == 3
    del t, b
    gc.collect()
    assert pool.stats().used_blocks == 1  # r still holds it
    del r
    gc.collect()
    assert ptr(pool.empty(SHAPE, np.float32)) == p


def test_a_cycle_frees_its_block_at_collection() -> None:
    gc.disable()
    try:
        a = fresh()
        p = ptr(a)
        holder: list[Any] = [a[1:]]
        holder.append(holder)
        del a, holder
        assert pool.stats().used_blocks == 1  # unreachable, not yet collected
        assert ptr(pool.empty(SHAPE, np.float32)) != p
        gc.collect()
        assert pool.stats().free_blocks >= 1
        assert ptr(pool.empty(SHAPE, np.float32)) == p
    finally:
        gc.enable()


def test_objects_dying_and_reborn_at_the_same_addresses() -> None:
    """Random allocations, views kept and dropped: every live view keeps the values it was
    made with, while blocks (and exporter objects, at the same addresses) are recycled."""
    rng = random.Random(1234)
    live: list[tuple[Any, np.ndarray]] = []  # (view, its values when made)
    exporter_ids: list[int] = []
    pointers: list[int] = []
    shapes = [SHAPE, (N,), (N // 2, 4), (N + 2048,)]
    for step in range(300):
        a = pool.empty(rng.choice(shapes), np.float32)
        exporter_ids.append(id(a.base))
        pointers.append(ptr(a))
        a.fill(float(step))
        if rng.random() < 0.3:
            v = rng.choice(list(VIEWS.values()))(a.reshape(-1)[:N].reshape(SHAPE))
            live.append((v, np.array(_as_array(v), copy=True)))
        del a
        if live and rng.random() < 0.35:
            live.pop(rng.randrange(len(live)))
        if len(live) > 8:
            live.pop(0)
        for v, expected in live:
            np.testing.assert_array_equal(_as_array(v), expected)
    s = pool.stats()
    assert s.hits + s.misses == 300
    assert s.hits > 150  # most allocations reused a block
    assert len(set(pointers)) < 40
    assert len(set(exporter_ids)) < 300  # exporters were reborn at earlier addresses
    live.clear()
    v = expected = None  # the loop variables held the last view
    gc.collect()
    assert pool.stats().used_blocks == 0


# --- the bound, the flags ---------------------------------------------------------------


def test_free_blocks_are_bounded_dropping_the_least_recently_freed() -> None:
    with tracejit.flags(pool_max_bytes=3 * BLOCK):
        arrays = [fresh() for _ in range(5)]
        pointers = [ptr(a) for a in arrays]
        for i in range(5):
            arrays[i] = None  # freed in order 0..4
            assert pool.stats().free_bytes <= 3 * BLOCK
        s = pool.stats()
        assert (s.free_blocks, s.free_bytes, s.evictions, s.used_blocks) == (3, 3 * BLOCK, 2, 0)
        again = [pool.empty(SHAPE, np.float32) for _ in range(3)]
        assert sorted(ptr(a) for a in again) == sorted(pointers[2:])
        assert pool.stats().hits == 3


def test_bound_as_text_and_zero() -> None:
    with tracejit.flags(pool_max_bytes=f"{BLOCK // 1024}K"):
        a, b = fresh(), fresh()
        del a, b
        assert pool.stats().free_blocks == 1
    pool.clear()
    with tracejit.flags(pool_max_bytes="0"):
        a = fresh()
        del a
        s = pool.stats()
        assert (s.free_blocks, s.evictions, s.used_blocks) == (0, 1, 0)


def test_a_lower_bound_trims_at_the_next_return() -> None:
    a, b, c = fresh(), fresh(), fresh()
    del a, b
    assert pool.stats().free_blocks == 2
    with tracejit.flags(pool_max_bytes=BLOCK):
        del c
        assert pool.stats().free_blocks == 1


def test_parse_bytes() -> None:
    assert pool.parse_bytes(5) == 5
    assert pool.parse_bytes("1073741824") == 1 << 30
    assert pool.parse_bytes("512M") == 512 << 20
    assert pool.parse_bytes(" 1g ") == 1 << 30
    assert pool.parse_bytes("2GiB") == 2 << 30
    assert pool.parse_bytes("64KB") == 64 << 10
    assert pool.parse_bytes("1.5G") == 3 << 29
    assert pool.parse_bytes("") == pool.MAX_FREE_BYTES
    for bad in ("lots", "-1", "1X", True, -5):
        with pytest.raises(ValueError, match="TRACEJIT_POOL_MAX_BYTES"):
            pool.parse_bytes(bad)


def test_malformed_bound_raises_at_allocation() -> None:
    with tracejit.flags(pool_max_bytes="a gigabyte"):
        with pytest.raises(ValueError, match="TRACEJIT_POOL_MAX_BYTES"):
            pool.empty(SHAPE, np.float32)
        assert pool.empty((10,), np.float32).shape == (10,)  # below the threshold: no pool
    assert pool.stats().used_blocks == 0


def test_off_flag() -> None:
    with tracejit.flags(pool=False):
        a = pool.empty(SHAPE, np.float32)
        assert a.base is None and a.flags.owndata and a.shape == SHAPE
        assert ptr(a) % 16 == 0
    assert pool.stats() == pool.PoolStats(0, 0, 0, 0, 0, 0, 0)
    b = pool.empty(SHAPE, np.float32)  # on again: pooled
    with tracejit.flags(pool=False):
        del b  # returned while off: dropped, not kept
        s = pool.stats()
        assert (s.free_blocks, s.used_blocks, s.evictions) == (0, 0, 1)


def test_off_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEJIT_POOL", "0")
    monkeypatch.setenv("TRACEJIT_POOL_MAX_BYTES", "3M")
    reload_flags()
    try:
        assert get_flag("pool") is False
        assert pool.empty(SHAPE, np.float32).base is None
        monkeypatch.setenv("TRACEJIT_POOL", "1")
        reload_flags()
        a, b = fresh(), fresh()
        del a, b
        assert pool.stats().free_bytes == BLOCK  # 3M holds one 2 MiB block, not two
    finally:
        monkeypatch.delenv("TRACEJIT_POOL")
        monkeypatch.delenv("TRACEJIT_POOL_MAX_BYTES")
        reload_flags()


# --- threads ------------------------------------------------------------------------------


def _run_with_timeout(targets: list[Callable[[], None]], timeout: float) -> None:
    errors: list[BaseException] = []

    def guard(f: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                f()
            except BaseException as e:  # reported to the test below
                errors.append(e)
        return run

    threads = [threading.Thread(target=guard(f), daemon=True) for f in targets]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, mid-operation
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
            assert not t.is_alive(), "a pool operation deadlocked"
    finally:
        sys.setswitchinterval(interval)
    if errors:
        raise errors[0]


def test_threads_smoke() -> None:
    shared: list[tuple[Any, float]] = []  # views made on one thread, dropped on another
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[tuple[Any, float]] = []
        for i in range(150):
            a = pool.empty(rng.choice([SHAPE, (N + 2048,)]), np.float32)
            value = float(seed * 1000 + i)
            a.fill(value)
            if rng.random() < 0.3:
                mine.append((a.reshape(-1)[rng.randrange(10):], value))
            if rng.random() < 0.1:
                with lock:
                    shared.append((a[1:], value))
            del a
            if rng.random() < 0.2:
                with lock:
                    if shared:
                        shared.pop(rng.randrange(len(shared)))
            if len(mine) > 4:
                mine.pop(rng.randrange(len(mine)))
            for v, expected in mine:
                assert v[0] == expected and v[-1] == expected
            if rng.random() < 0.05:
                pool.stats()
        mine.clear()

    _run_with_timeout([lambda s=s: worker(s) for s in range(4)], timeout=120)
    with lock:
        for v, expected in shared:
            assert (np.asarray(v) == expected).all()
        shared.clear()
    v = None
    gc.collect()
    s = pool.stats()
    assert s.hits + s.misses == 600 and s.hits > 0
    assert s.used_blocks == 0 and s.used_bytes == 0
    assert BLOCK * s.free_blocks <= s.free_bytes <= pool.MAX_FREE_BYTES


def test_collections_inside_the_pool_do_not_deadlock_or_corrupt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Finalizers that a collection runs while the pool is mid-operation, on the same thread,
    are queued and applied when the operation ends."""

    class Counted(list):  # type: ignore[type-arg]
        queued = 0

        def append(self, item: Any) -> None:
            Counted.queued += 1
            super().append(item)

    monkeypatch.setattr(pool, "_pending", Counted())

    def churn() -> None:
        for _ in range(200):
            a = pool.empty(SHAPE, np.float32)
            a[0, 0] = 1.0
            cyc: list[Any] = [a]
            cyc.append(cyc)  # freed only by a collection, which allocations keep triggering
            del a, cyc
            pool.stats()

    old = gc.get_threshold()
    gc.set_threshold(1, 5, 1_000_000)  # a young collection at nearly every allocation
    try:
        _run_with_timeout([churn, churn], timeout=120)
    finally:
        gc.set_threshold(*old)
    gc.collect()
    s = pool.stats()
    assert s.used_blocks == 0 and s.hits + s.misses == 400
    assert s.free_bytes == s.free_blocks * BLOCK
    assert Counted.queued > 0  # the nested path did run


def test_clear_keeps_blocks_in_use() -> None:
    a = fresh()
    b = fresh()
    del b
    pool.clear()
    s = pool.stats()
    assert (s.free_blocks, s.free_bytes, s.hits, s.misses, s.used_blocks) == (0, 0, 0, 0, 1)
    assert a[0, 1] == 1.0
    p = ptr(a)
    del a
    assert pool.stats().free_blocks == 1
    assert ptr(pool.empty(SHAPE, np.float32)) == p
