"""Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC'11), written from the paper: a counter-based generator, so element i of a draw is a pure
function of (key, counter) and eager mode and compiled kernels compute the same numbers.

One Philox block maps a 128-bit counter (four 32-bit words) and a 64-bit key (two words) to four
32-bit words through ten rounds. A round multiplies counter words 0 and 2 by the constants
M0 = 0xD2511F53 and M1 = 0xCD9E8D57 (64-bit products split into high and low halves) and
returns (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0); between rounds the key is bumped by the Weyl
constants W0 = 0x9E3779B9 and W1 = 0xBB67AE85.

How tracejit uses it (`draw`): a generator is (key, offset), the offset counting blocks. The
element with linear index i of a draw of a 32-bit float (or narrower) dtype reads word i % 4 of
block offset + i // 4; a float64 draw uses two words per element, i % 2 picking words (0, 1)
or (2, 3) of block offset + i // 2. The block number is counter words 0 (low half) and 1 (high
half); words 2 and 3 are zero. Uniforms: 24 bits (float32) or 53 bits (float64) times 2**-24 or
2**-53, in [0, 1), exact in either dtype. Normals: Box-Muller on the uniform pairs, computed in
float64: u1 in (0, 1] (the uniform plus one unit), u2 in [0, 1), r = sqrt(-2 log u1),
z = r cos(2 pi u2) for an even i and r sin(2 pi u2) for an odd one, so a block gives four
float32 normals or two float64 ones, and each draw consumes the same number of blocks as a
uniform draw of its size. Kernels call `draw` per element (`codegen/cpu.py`'s `philox` scalar
op); eager mode calls `fill`, a loop over the same function."""

from __future__ import annotations

import math

import numba
import numpy as np

_MASK = np.uint64(0xFFFFFFFF)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_S32 = np.uint64(32)
_TWO_PI = 2.0 * math.pi


@numba.njit(cache=True)
def block(c0: np.uint64, c1: np.uint64, c2: np.uint64, c3: np.uint64, k0: np.uint64,
          k1: np.uint64) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """philox4x32-10 of the counter (c0, c1, c2, c3) under the key (k0, k1), each word a
    uint64 holding 32 bits."""
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0  # < 2**64: both factors are below 2**32
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _S32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _S32) ^ c3 ^ k1,
                          p0 & _MASK)
    return c0, c1, c2, c3


@numba.njit(cache=True)
def _bits53(a: np.uint64, b: np.uint64) -> float:
    return float(((a >> np.uint64(5)) << np.uint64(26)) | (b >> np.uint64(6)))


@numba.njit(cache=True)
def draw(idx: np.int64, key: np.int64, offset: np.int64, wide: float, normal: float) -> float:
    """Element `idx` of a draw from the generator state (key, offset): a uniform in [0, 1)
    or, when `normal` is nonzero, a standard normal; `wide` nonzero for float64 (53 bits)."""
    per = np.uint64(2) if wide != 0 else np.uint64(4)
    i = np.uint64(idx)
    b = np.uint64(offset) + i // per
    j = i % per
    k = np.uint64(key)
    x0, x1, x2, x3 = block(b & _MASK, b >> _S32, np.uint64(0), np.uint64(0), k & _MASK,
                           k >> _S32)
    if wide != 0:
        if normal == 0:
            return _bits53(x0, x1) * 2.0 ** -53 if j == 0 else _bits53(x2, x3) * 2.0 ** -53
        u1 = (_bits53(x0, x1) + 1.0) * 2.0 ** -53
        u2 = _bits53(x2, x3) * 2.0 ** -53
    else:
        if normal == 0:
            w = x0 if j == 0 else x1 if j == 1 else x2 if j == 2 else x3
            return float(w >> np.uint64(8)) * 2.0 ** -24
        lo = j < 2
        a = x0 if lo else x2
        c = x1 if lo else x3
        u1 = (float(a >> np.uint64(8)) + 1.0) * 2.0 ** -24
        u2 = float(c >> np.uint64(8)) * 2.0 ** -24
    r = math.sqrt(-2.0 * math.log(u1))
    t = _TWO_PI * u2
    return r * math.cos(t) if j % np.uint64(2) == 0 else r * math.sin(t)


@numba.njit(cache=True)
def fill(idx: np.ndarray, key: np.int64, offset: np.int64, wide: float, normal: float,
         out: np.ndarray) -> None:
    """out[n] = draw(idx[n], ...) over flat arrays: the eager form of the kernels' op."""
    for n in range(idx.size):
        out[n] = draw(idx[n], key, offset, wide, normal)


@numba.njit(cache=True)
def words(key: np.int64, offset: np.int64, nblocks: np.int64) -> np.ndarray:
    """The raw 32-bit words of `nblocks` blocks from (key, offset), block-major (randint's
    source)."""
    out = np.empty(nblocks * 4, np.uint64)
    k = np.uint64(key)
    for n in range(nblocks):
        b = np.uint64(offset) + np.uint64(n)
        x0, x1, x2, x3 = block(b & _MASK, b >> _S32, np.uint64(0), np.uint64(0), k & _MASK,
                               k >> _S32)
        out[4 * n], out[4 * n + 1], out[4 * n + 2], out[4 * n + 3] = x0, x1, x2, x3
    return out


def per_block(wide: bool) -> int:
    """Elements one block gives a draw: 4 of a 32-bit (or narrower) float, 2 of a float64."""
    return 2 if wide else 4


def blocks(numel: int, wide: bool) -> int:
    """How many blocks (counter values) a draw of `numel` elements consumes."""
    p = per_block(wide)
    return (numel + p - 1) // p
