"""Counting the array allocations a piece of code makes (`tracejit.testing.count_allocations`):
NumPy's data allocations through a counting NumPy memory handler (NEP 49: NumPy allocates every
array's data through the handler current in the context where the array is made, and frees it
through the handler it was made with), and Numba's (arrays made inside njit code) through its
runtime's own allocation statistics. Used by the test that a steady-state compiled training step
allocates only the outputs it returns."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass

_VOIDP = ctypes.c_void_p
_MALLOC = ctypes.CFUNCTYPE(_VOIDP, _VOIDP, ctypes.c_size_t)
_CALLOC = ctypes.CFUNCTYPE(_VOIDP, _VOIDP, ctypes.c_size_t, ctypes.c_size_t)
_REALLOC = ctypes.CFUNCTYPE(_VOIDP, _VOIDP, _VOIDP, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, _VOIDP, _VOIDP, ctypes.c_size_t)


class _Allocator(ctypes.Structure):  # PyDataMemAllocator
    _fields_ = [("ctx", _VOIDP), ("malloc", _MALLOC), ("calloc", _CALLOC),
                ("realloc", _REALLOC), ("free", _FREE)]


class _Handler(ctypes.Structure):  # PyDataMem_Handler, version 1
    _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8),
                ("allocator", _Allocator)]


_KEEP: list[object] = []  # every handler installed: arrays made under one free through it
_SET_HANDLER = 304  # PyDataMem_SetHandler's slot in NumPy's C API table (NumPy >= 1.22)
_DEFAULT_HANDLER = 306  # PyDataMem_DefaultHandler's (a PyObject **)


@dataclass
class AllocationCount:
    """Arrays allocated while the `with` block ran: by NumPy (`numpy`) and inside Numba-compiled
    code (`numba`), with NumPy's bytes; `total` is both counts."""

    numpy: int = 0
    numpy_bytes: int = 0
    numba: int = 0

    @property
    def total(self) -> int:
        return self.numpy + self.numba


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None)
    lib.malloc.restype = lib.calloc.restype = lib.realloc.restype = _VOIDP
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    lib.realloc.argtypes = [_VOIDP, ctypes.c_size_t]
    lib.free.argtypes = [_VOIDP]
    return lib


def _api() -> ctypes._Pointer:
    """NumPy's C API table."""
    from numpy._core import _multiarray_umath as mu  # type: ignore[attr-defined]

    return ctypes.cast(_capsule_pointer(mu._ARRAY_API, None), ctypes.POINTER(_VOIDP))


def _capsule_pointer(capsule: object, name: bytes | None) -> int:
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = _VOIDP, [ctypes.py_object, ctypes.c_char_p]
    return get(capsule, name)


def _set_handler(capsule: object) -> object:
    """NumPy's PyDataMem_SetHandler(capsule); returns the handler it replaces."""
    fn = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(_api()[_SET_HANDLER])
    return fn(capsule)


def _default_handler() -> object:
    """NumPy's PyDataMem_DefaultHandler (a capsule)."""
    slot = _api()[_DEFAULT_HANDLER]
    return ctypes.cast(slot, ctypes.POINTER(ctypes.py_object))[0]


def _handler_of(capsule: object) -> _Handler:
    return _Handler.from_address(_capsule_pointer(capsule, b"mem_handler"))


@contextlib.contextmanager
def count_allocations() -> Iterator[AllocationCount]:
    """Count the arrays allocated inside the block (NumPy's and Numba's), for this thread's
    context. Slower allocations while it runs (each goes through a Python callback). Numba's
    count includes the record Numba allocates to unbox each array argument of an njit call.

    >>> import numpy as np
    >>> with count_allocations() as n:
    ...     a, b = np.empty(1000), np.zeros((2, 3))
    >>> n.numpy, n.numpy_bytes
    (2, 8048)
    """
    from numba.core.runtime import _nrt_python as nrt  # type: ignore[attr-defined]

    libc = _libc()
    count = AllocationCount()
    # NumPy's default handler, whose free (and realloc) this one keeps: an array made inside
    # the block may be freed at any later time, even while the interpreter shuts down, so
    # freeing must never call back into Python
    default = _handler_of(_default_handler())
    base = default.allocator

    def malloc(ctx: int, size: int) -> int:
        count.numpy += 1
        count.numpy_bytes += size
        return base.malloc(ctx, size)

    def calloc(ctx: int, n: int, size: int) -> int:
        count.numpy += 1
        count.numpy_bytes += n * size
        return base.calloc(ctx, n, size)

    hooks = (_MALLOC(malloc), _CALLOC(calloc))
    _KEEP.append(hooks)  # (called only inside the block, but kept: the pointers stay valid)
    # the handler and its capsule's name in memory never freed: arrays made inside the block
    # point at them for as long as they live
    mem = libc.malloc(ctypes.sizeof(_Handler) + 16)
    handler = _Handler.from_address(mem)
    handler.name = b"tracejit_count_allocations"
    handler.version = 1
    handler.allocator = _Allocator(base.ctx, hooks[0], hooks[1], base.realloc, base.free)
    name = mem + ctypes.sizeof(_Handler)
    ctypes.memmove(name, b"mem_handler\0", 12)
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [_VOIDP, _VOIDP, _VOIDP]
    capsule = new(mem, name, None)
    enabled = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    nb0 = nrt.memsys_get_stats_alloc()
    old = _set_handler(capsule)
    try:
        yield count
    finally:
        _set_handler(old)
        count.numba = nrt.memsys_get_stats_alloc() - nb0
        if not enabled:
            nrt.memsys_disable_stats()

