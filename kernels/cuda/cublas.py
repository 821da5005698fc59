"""cuBLAS through ctypes, loaded at run time when its library is present (the nvidia-cublas
wheel, found by `cuda.pathfinder.load_nvidia_dynamic_lib("cublas")`, or the system's
libcublas.so). Row-major c = op(a) @ op(b) is column-major c^T = op(b)^T op(a)^T: one
sgemm/dgemm call with a and b swapped, on the caller's stream (cublasSetStream_v2), pointers
from `__cuda_array_interface__`. Nothing here needs a GPU to import; `load()` says why it
could not load. Not exercised without a GPU (the simulator runs on host memory)."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

OP_N, OP_T = 0, 1
_LOADED: tuple[Any, str] | None = None


def _find() -> tuple[Any, str]:
    errors = []
    try:
        from cuda import pathfinder  # type: ignore[import-not-found, unused-ignore]

        lib = pathfinder.load_nvidia_dynamic_lib("cublas")
        path = getattr(lib, "abs_path", None) or str(lib)
        handle = getattr(lib, "_handle_uint", None)
        return (ctypes.CDLL(path) if handle is None else ctypes.CDLL(path, handle=handle)), path
    except Exception as e:  # noqa: BLE001 (each failure is a reason to report)
        errors.append(f"cuda.pathfinder: {type(e).__name__}: {str(e)[:100]}")
    for name in ("libcublas.so.13", "libcublas.so.12", ctypes.util.find_library("cublas")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            errors.append(f"{name}: {str(e)[:80]}")
    return None, "; ".join(errors) or "no libcublas found"


class Cublas:
    def __init__(self, lib: Any, where: str) -> None:
        self.lib = lib
        self.where = where
        self.handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate_v2")
        for f in (lib.cublasSgemm_v2, lib.cublasDgemm_v2):
            f.restype = ctypes.c_int

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with cuBLAS status {status}")

    def gemm(self, a: Any, b: Any, c: Any, ta: bool, tb: bool, stream: Any) -> None:
        """c[m, n] = op(a) @ op(b) for C-contiguous 2-d device arrays of one float dtype."""
        m, n = c.shape
        k = a.shape[0] if ta else a.shape[1]
        if m == 0 or n == 0:
            return
        handle = getattr(stream, "handle", stream)
        ptr = getattr(handle, "value", handle)
        self._check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(int(ptr or 0))),
                    "cublasSetStream_v2")

        def p(x: Any) -> ctypes.c_void_p:
            return ctypes.c_void_p(x.__cuda_array_interface__["data"][0])

        double = str(c.dtype) == "float64"
        scalar = ctypes.c_double if double else ctypes.c_float
        alpha, beta = scalar(1.0), scalar(0.0)
        fn = self.lib.cublasDgemm_v2 if double else self.lib.cublasSgemm_v2
        # column-major: c^T (n x m) = op(b)^T (n x k) @ op(a)^T (k x m); a stored row-major is
        # its own transpose column-major, leading dimension its row length
        self._check(fn(self.handle, OP_T if tb else OP_N, OP_T if ta else OP_N, n, m, k,
                       ctypes.byref(alpha), p(b), b.shape[1], p(a), a.shape[1],
                       ctypes.byref(beta), p(c), n), "cublas gemm")


def load() -> tuple[Cublas | None, str]:
    """(cuBLAS, where it was found), or (None, why not)."""
    global _LOADED
    if _LOADED is None:
        lib, where = _find()
        if lib is None:
            _LOADED = (None, where)
        else:
            try:
                _LOADED = (Cublas(lib, where), where)
            except Exception as e:  # noqa: BLE001
                _LOADED = (None, f"{where}: {type(e).__name__}: {str(e)[:100]}")
    return _LOADED
