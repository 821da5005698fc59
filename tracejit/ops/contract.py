"""Contractions: matmul over >= 2-d operands with broadcast batch dims (1-d cases are composed
in the Tensor method by unsqueeze/squeeze, as PyTorch specifies them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .registry import (
    DTypeError,
    Kind,
    Operand,
    ShapeError,
    TensorType,
    VjpContext,
    broadcast_shapes,
    defop,
    same_device,
)


def _matmul_infer(ops: Sequence[Operand]) -> TensorType:
    a, b = ops
    assert isinstance(a, TensorType) and isinstance(b, TensorType)
    if a.dtype is not b.dtype:
        raise DTypeError(
            f"matmul: expected both operands to have the same dtype, but got {a.dtype.name} "
            f"{list(a.shape)} and {b.dtype.name} {list(b.shape)}; convert one of them, for "
            f"example x.float() for float32 (NumPy data is float64) or .double() for float64"
        )
    if not a.dtype.is_floating_point and a.dtype.name != "int64" and a.dtype.name != "int32":
        raise DTypeError(f"matmul: not implemented for {a.dtype.name} tensors; use .float()")
    if a.shape[-1] != b.shape[-2]:
        sa = "x".join(map(str, a.shape))
        sb = "x".join(map(str, b.shape))
        raise ShapeError(
            f"matmul: mat1 and mat2 shapes cannot be multiplied ({sa} and {sb}): the last "
            f"dimension of the first ({a.shape[-1]}) must equal the second-to-last of the "
            f"second ({b.shape[-2]})"
        )
    batch = broadcast_shapes("matmul", a.shape[:-2], b.shape[:-2])
    return TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype, same_device("matmul", ops))


def _matmul_vjp(c: VjpContext, g: Any) -> tuple[Any, ...]:
    a, b = c.inputs
    ga = g.matmul(b.mT) if c.needs[0] else None
    if not c.needs[1]:
        gb = None
    elif b.ndim == 2 and a.ndim > 2:
        # a weight shared by every batch (x @ W.T in Linear): its gradient is one GEMM over the
        # rows of all batches, (k, rows) @ (rows, n), instead of a batch of GEMMs that the
        # engine then sums (8 GEMMs and a sum for a (8, 64, 64) input: 2-3x the time)
        k, n = a.shape[-1], g.shape[-1]
        gb = a.reshape(-1, k).mT.matmul(g.reshape(-1, n))
    else:
        gb = a.mT.matmul(g)
    return ga, gb  # batch dims that were broadcast are summed by the engine


# A GEMM of at least this many multiply-adds runs through runtime.blas in eager mode (the BLAS
# measured fastest for its shape, as compiled code's matmuls: MKL when installed and quicker,
# 2-3x OpenBLAS's one-thread speed on some of a GPT's shapes); smaller ones stay np.dot's, so
# that a stream of small distinct shapes is not each timed and recorded once.
EAGER_BLAS_MIN_WORK = 1 << 18
_blas: Any = None  # tracejit.runtime.blas.matmul2d, bound on first use (no import per call)


def _gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    global _blas
    if a.shape[0] * a.shape[1] * b.shape[1] < EAGER_BLAS_MIN_WORK or a.dtype != b.dtype:
        return np.dot(a, b)
    if _blas is None:
        from ..runtime.blas import matmul2d

        _blas = matmul2d
    return _blas(a, b)


def _matmul_eager(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul, except that 2-d GEMMs run through the measured BLAS (`_gemm`) and a batch of
    matrices times one matrix is one GEMM over the rows of all batches (np.matmul makes one
    GEMM per batch: 8 for a (8, 64, 64) @ (64, 192), 1.7x the time). Each output element is the
    same length-k dot product either way."""
    if b.ndim == 2:
        if a.ndim == 2:
            return _gemm(a, b)
        if a.ndim > 2 and a.shape[-1] == b.shape[0]:
            lead = a.shape[:-1]
            return _gemm(a.reshape(-1, a.shape[-1]), b).reshape(lead + (b.shape[1],))
    return np.matmul(a, b)


def _matmul_rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str | None:
    if out.dtype.name not in ("float32", "float64"):
        return None  # BLAS has no integer or half matmul: those run eagerly
    if len(out.shape) == 2:
        return f"matmul2d({a[0]}, {a[1]}{{into}})"  # (into: a planned buffer, see registry)
    # batched: broadcast the batch dims, flatten them to one, loop over BLAS calls
    batch, (m, n) = out.shape[:-2], out.shape[-2:]
    k = ins[0].shape[-1]
    fa = (f"np.ascontiguousarray(np.broadcast_to({a[0]}, {batch + (m, k)!r}))"
          f".reshape((-1, {m}, {k}))")
    fb = (f"np.ascontiguousarray(np.broadcast_to({a[1]}, {batch + (k, n)!r}))"
          f".reshape((-1, {k}, {n}))")
    return f"matmul_batched({fa}, {fb}).reshape({out.shape!r})"


matmul_op = defop(
    "matmul", Kind.CONTRACT, infer=_matmul_infer, saves=(0, 1), vjp=_matmul_vjp,
    eager=_matmul_eager, kernels={"cpu": _matmul_rule},
)
