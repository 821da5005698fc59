"""Collectives: `all_reduce` (attrs: op, one of SUM AVG PRODUCT MIN MAX BAND BOR BXOR), a
tensor reduced over every process of the default group (tracejit.distributed).

Its result has its operand's type. It is an op of the graph so that a jitted data-parallel
step is one program: the compiled driver calls the transport between kernels (`host`: always
a Python driver), in the order the trace met the collectives, which is the same order on every
rank. It is never folded, merged with an equal node, or differentiated, and the buffer plan
treats it as a node that may raise (a timeout), so no effect is written before it completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .registry import DTypeError, Kind, Operand, TensorType, defop

REDUCE_OPS = ("SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR")


def _infer(ops: Sequence[Operand], *, op: str) -> TensorType:
    (x,) = ops
    assert isinstance(x, TensorType)
    if op not in REDUCE_OPS:
        raise DTypeError(f"all_reduce: unknown reduce op {op!r}; use one of "
                         + ", ".join(f"ReduceOp.{o}" for o in REDUCE_OPS))
    if op in ("BAND", "BOR", "BXOR") and x.dtype.is_floating_point:
        raise DTypeError(f"all_reduce: ReduceOp.{op} needs an integer or bool tensor, got "
                         f"{x.dtype.name}")
    return x


def _eager(x: np.ndarray, *, op: str) -> np.ndarray:
    from ..distributed import _backend  # (no Tensor there: ops may import it)

    return _backend.all_reduce_array(x, op)


def _rule(a: list[str], at: dict[str, Any], out: TensorType, ins: list[Any]) -> str:
    return f"_all_reduce({a[0]}, {at['op']!r})"


ALL_REDUCE = defop(
    "all_reduce", Kind.COLLECTIVE, infer=_infer, eager=_eager, attrs=("op",),
    differentiable=False, cse=False, foldable=False,
    host="from tracejit.distributed._backend import all_reduce_array as _all_reduce",
    kernels={"cpu": _rule},
    doc="the operand reduced over every rank of the default process group (attrs: op)",
)
