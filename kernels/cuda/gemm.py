"""A tiled shared-memory matmul for CUDA (Numba), the fallback where cuBLAS is absent:
`c = op(a) @ op(b)` for 2-d C-contiguous float32 or float64 device arrays, op a transpose
when asked (the graph's permute(1, 0) read only by the matmul is folded into it, so it never
materialises). Each block computes a TILE x TILE tile of c: the tiles of op(a) and op(b)
along k are staged through shared memory, one element per thread, and each thread
accumulates its element of c in the arrays' own dtype (no float64 in a float32 kernel).
Imports numba.cuda: only the CUDA renderer (tracejit/codegen/cuda.py) imports this."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

TILE = 16


def _make(dtype: Any) -> Any:
    zero = dtype(0)

    def gemm_tiled(a, b, c, ta, tb):  # type: ignore[no-untyped-def]
        sa = cuda.shared.array((TILE, TILE), dtype)
        sb = cuda.shared.array((TILE, TILE), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        m = c.shape[0]
        n = c.shape[1]
        k = a.shape[0] if ta else a.shape[1]
        acc = zero
        for t in range((k + TILE - 1) // TILE):
            ka = t * TILE + tx  # op(a)[row, ka]
            if row < m and ka < k:
                sa[ty, tx] = a[ka, row] if ta else a[row, ka]
            else:
                sa[ty, tx] = zero
            kb = t * TILE + ty  # op(b)[kb, col]
            if kb < k and col < n:
                sb[ty, tx] = b[col, kb] if tb else b[kb, col]
            else:
                sb[ty, tx] = zero
            cuda.syncthreads()
            for j in range(TILE):
                acc += sa[ty, j] * sb[j, tx]
            cuda.syncthreads()
        if row < m and col < n:
            c[row, col] = acc

    return gemm_tiled


# the plain Python functions (compile_ptx takes these) and their one signature each
FUNCTIONS = {np.dtype(np.float32): _make(np.float32), np.dtype(np.float64): _make(np.float64)}
SIGNATURES = {np.dtype(np.float32): "void(float32[:, ::1], float32[:, ::1], float32[:, ::1], "
                                    "boolean, boolean)",
              np.dtype(np.float64): "void(float64[:, ::1], float64[:, ::1], float64[:, ::1], "
                                    "boolean, boolean)"}
_KERNELS: dict[Any, Any] = {}


def kernel(dtype: Any) -> Any:
    d = np.dtype(dtype)
    if d not in FUNCTIONS:
        raise TypeError(f"the tiled CUDA matmul takes float32 or float64 arrays, not {d}")
    if d not in _KERNELS:
        _KERNELS[d] = cuda.jit(SIGNATURES[d])(FUNCTIONS[d])
    return _KERNELS[d]


def matmul(a: Any, b: Any, c: Any, ta: bool = False, tb: bool = False, stream: Any = 0) -> None:
    """c[m, n] = op(a) @ op(b) on `stream` (op: transposed when ta / tb)."""
    m, n = c.shape
    ka = a.shape[0] if ta else a.shape[1]
    kb = b.shape[1] if tb else b.shape[0]
    if ka != kb or (a.shape[1] if ta else a.shape[0]) != m or \
            (b.shape[0] if tb else b.shape[1]) != n:
        raise ValueError(f"matmul shapes do not agree: op(a) of {tuple(a.shape)} (ta={ta}), "
                         f"op(b) of {tuple(b.shape)} (tb={tb}), c of {tuple(c.shape)}")
    if m == 0 or n == 0:
        return
    grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)
    kernel(c.dtype)[grid, (TILE, TILE), stream](a, b, c, bool(ta), bool(tb))
