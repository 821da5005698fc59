"""Random numbers as an elementwise op, so that a draw is a node of the compiled graph that
fuses with the work around it (dropout's mask with its multiply). `philox` maps each element's
linear index, the generator's key and its block offset (both 0-d int64 tensors, inputs of a
compiled program read at call time) to a uniform in [0, 1) or a standard normal: the counter
scheme and transforms are in runtime/philox.py, the one definition eager mode and kernels
share. Creation functions (creation.py) build the index and advance the generator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import dtypes as dt
from .registry import DTypeError, Kind, Operand, ShapeError, TensorType, defop, same_device


def _philox_infer(ops: Sequence[Operand], *, dtype: dt.DType, wide: bool,
                  normal: bool) -> TensorType:
    idx, key, off = ops
    for name, o in (("index", idx), ("key", key), ("offset", off)):
        if not isinstance(o, TensorType) or o.dtype is not dt.int64:
            raise DTypeError(f"philox: expected the {name} to be an int64 tensor, got {o}")
    if key.shape != () or off.shape != ():  # type: ignore[union-attr]
        raise ShapeError("philox: the key and the offset must be 0-d tensors")
    if dtype not in (dt.float32, dt.float64) or wide != (dtype is dt.float64):
        raise DTypeError(f"philox: draws float32 (wide=False) or float64 (wide=True), got "
                         f"{dtype} with wide={wide}")
    return TensorType(idx.shape, dtype, same_device("philox", ops))  # type: ignore[union-attr]


def _philox_eager(idx: np.ndarray, key: np.ndarray, off: np.ndarray, *, dtype: dt.DType,
                  wide: bool, normal: bool) -> np.ndarray:
    from ..runtime.philox import fill  # compiled on first use

    flat = np.ascontiguousarray(idx).reshape(-1)
    out = np.empty(flat.size, np.float64)
    fill(flat, np.int64(key), np.int64(off), float(wide), float(normal), out)
    return out.astype(dtype.np).reshape(idx.shape)


philox_op = defop(
    "philox", Kind.ELEMENTWISE, infer=_philox_infer, eager=_philox_eager,
    attrs=("dtype", "wide", "normal"), scalar="philox", differentiable=False,
    # two draws are never the same value, and a draw is never computed at compile time
    cse=False, foldable=False,
)
