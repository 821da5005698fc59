"""Scan ops: along one dimension `dim`, every output element depends on its row (the other dims
are batched): `cumsum` (a prefix sum, or a suffix sum with `reverse`) and `argsort` (the
row's stable sort order). Sort, topk, tril/triu and friends are composites on top of them
(tracejit/tensor_ops.py). Compiled through `kernels/cpu/scan.py`: the dim is moved last and the
rows flattened, so one kernel serves every rank and dim."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .registry import ArgError, Kind, Operand, TensorType, VjpContext, defop, lit, np_name

S = Kind.SCAN


def _one(op: str, ops: Sequence[Operand], dim: int) -> TensorType:
    (x,) = ops
    assert isinstance(x, TensorType)
    if not 0 <= dim < x.ndim:  # (0-d tensors are unsqueezed by the callers, as torch allows)
        raise ArgError(f"{op}: dim {dim} is not a dimension of a {x.ndim}-d tensor")
    return x


def _rows(a: list[str], x: TensorType, dim: int) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """The operand as a C-contiguous (rows, n) array with `dim` last, the shape it had after
    the move, and the permutation that moves `dim` back."""
    perm = tuple(d for d in range(x.ndim) if d != dim) + (dim,)
    inv = tuple(int(i) for i in np.argsort(perm))
    moved = tuple(x.shape[d] for d in perm)
    rows = (math.prod(moved[:-1]), moved[-1])  # explicit: -1 is ambiguous when n == 0
    return f"np.ascontiguousarray(np.transpose({a[0]}, {perm!r})).reshape({rows!r})", moved, inv


# ---- cumsum ----------------------------------------------------------------------------------
# Integers and bools sum in int64, as torch. Floats accumulate in the wider type torch's CPU
# kernel uses (float16 in float32, float32 in float64) and are rounded once per element: a
# float32 accumulator drifts by ~1e-6 relative after a few thousand terms, which torch's does
# not.


def _cumsum_dtype(d: dt.DType) -> dt.DType:
    return d if d.is_floating_point else dt.int64


def _acc_dtype(d: dt.DType) -> dt.DType:
    return {dt.float16: dt.float32, dt.float32: dt.float64}.get(d, _cumsum_dtype(d))


def _cumsum_infer(ops: Sequence[Operand], *, dim: int, reverse: bool) -> TensorType:
    x = _one("cumsum", ops, dim)
    return TensorType(x.shape, _cumsum_dtype(x.dtype), x.device)


def _cumsum_eager(x: np.ndarray, *, dim: int, reverse: bool) -> np.ndarray:
    acc = _acc_dtype(dt.from_numpy_dtype(x.dtype)).np  # (dispatch rounds to the output dtype)
    if not reverse:
        return np.cumsum(x, axis=dim, dtype=acc)
    return np.flip(np.cumsum(np.flip(x, dim), axis=dim, dtype=acc), dim)


def _cumsum_vjp(c: VjpContext, g: Any) -> tuple[Any]:
    # d out[j] / d x[i] = 1 for i <= j: the gradient is the sum of g over j >= i
    return (g._cumsum(c.attrs["dim"], not c.attrs["reverse"]),)


def _cumsum_rule(a: list[str], at: dict[str, Any], out: TensorType,
                 ins: list[Any]) -> str | None:
    # (float16 graphs are not compiled on CPU: codegen/cpu.py runs them eagerly)
    rows, moved, inv = _rows(a, ins[0], at["dim"])
    zero = lit(0, _acc_dtype(ins[0].dtype))  # the accumulator's type
    res = f"np.empty(({math.prod(moved[:-1])}, {moved[-1]}), {np_name(out.dtype)})"
    return (f"np.transpose(cumsum_rows({rows}, {at['reverse']!r}, {zero}, {res})"
            f".reshape({moved!r}), {inv!r})")


cumsum_op = defop(
    "cumsum", S, infer=_cumsum_infer, eager=_cumsum_eager, attrs=("dim", "reverse"),
    vjp=_cumsum_vjp, kernels={"cpu": _cumsum_rule},
)


# ---- argsort ---------------------------------------------------------------------------------
# Always stable: ties keep their order (torch's stable=True; stable=False may order them in
# any way, so this is one valid answer). NaN sorts above +inf, as torch and NumPy: last when
# ascending, first when descending. Descending is the ascending stable sort of the reversed row,
# reversed: equal elements then still come in increasing index order, and no negation is
# needed (which would overflow the smallest integer and leave NaN last).


def _argsort_infer(ops: Sequence[Operand], *, dim: int, descending: bool) -> TensorType:
    x = _one("argsort", ops, dim)
    return TensorType(x.shape, dt.int64, x.device)


def _argsort_eager(x: np.ndarray, *, dim: int, descending: bool) -> np.ndarray:
    if not descending:
        return np.argsort(x, axis=dim, kind="stable").astype(np.int64)
    r = np.argsort(np.flip(x, dim), axis=dim, kind="stable").astype(np.int64)
    return (x.shape[dim] - 1) - np.flip(r, dim)


def _argsort_rule(a: list[str], at: dict[str, Any], out: TensorType,
                  ins: list[Any]) -> str | None:
    rows, moved, inv = _rows(a, ins[0], at["dim"])
    return (f"np.transpose(argsort_rows({rows}, {at['descending']!r}).reshape({moved!r}), "
            f"{inv!r})")


argsort_op = defop(
    "argsort", S, infer=_argsort_infer, eager=_argsort_eager, attrs=("dim", "descending"),
    differentiable=False, kernels={"cpu": _argsort_rule},
)
