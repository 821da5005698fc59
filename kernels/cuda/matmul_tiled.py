"""Batched matmul C[b] = A[b] @ B[b] as a tiled shared-memory kernel (the fallback when cuBLAS
is absent; part B loads cuBLAS). Each block computes one TILE x TILE tile of C: it walks K in
TILE-wide steps, each thread loading one element of A's and one of B's tile into shared memory
(zero past the edges), then accumulating its dot product over the tile. A and B are read
through (offset, batch, row, column) element strides, so transposed operands (x @ W.T, and the
backward's a.mT @ g) need no copy. Napkin math: each loaded element is reused TILE times from
shared memory, so global traffic is 2*M*N*K/TILE elements instead of 2*M*N*K.

Launch: grid (ceil(N/TILE), ceil(M/TILE), batch), block (TILE, TILE); C is contiguous."""

from __future__ import annotations

from .eager_elementwise import NB

TILE = 16  # on a GPU; the simulator uses a smaller tile (each thread is a Python thread)


def name(dtype: str, tile: int) -> str:
    return f"matmul_tiled_{dtype}_t{tile}"


def source(dtype: str, tile: int) -> tuple[str, str]:
    T = NB[dtype]
    text = f'''def {name(dtype, tile)}(m, n, k, c, a, a_off, a_sb, a_sm, a_sk, b, b_off, b_sb, b_sk,
        b_sn):
    sa = cuda.shared.array(({tile}, {tile}), {T})
    sb = cuda.shared.array(({tile}, {tile}), {T})
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    col = cuda.blockIdx.x * {tile} + tx
    row = cuda.blockIdx.y * {tile} + ty
    bz = cuda.blockIdx.z
    acc = {T}(0)
    for t in range((k + {tile - 1}) // {tile}):
        ka = t * {tile} + tx
        kb = t * {tile} + ty
        if row < m and ka < k:
            sa[ty, tx] = a[a_off + bz * a_sb + row * a_sm + ka * a_sk]
        else:
            sa[ty, tx] = {T}(0)
        if col < n and kb < k:
            sb[ty, tx] = b[b_off + bz * b_sb + kb * b_sk + col * b_sn]
        else:
            sb[ty, tx] = {T}(0)
        cuda.syncthreads()
        for q in range({tile}):
            acc += sa[ty, q] * sb[q, tx]
        cuda.syncthreads()
    if row < m and col < n:
        c[bz * m * n + row * n + col] = acc
'''
    sig = (f"void(int64, int64, int64, {T}[::1], {T}[::1], int64, int64, int64, int64, "
           f"{T}[::1], int64, int64, int64, int64)")
    return text, sig
