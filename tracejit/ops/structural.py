"""Structural ops: nodes that shape the graph rather than compute arithmetic of their own.

- `constant` (attrs: value, an ndarray; no inputs): a tensor the traced function made from
  data (tracejit.tensor([...]) inside it) or that `fold` evaluated. Compiled programs bake the
  array in and share it across calls (`shared_result`).
- `fused` (attrs: body, a Region of member nodes; index, domain, rdims, unsafe_reuse): a group
  that `passes/fuse.py` made and `kir/lower.py` lowers to one kernel. Its inputs bind to the
  region's params, its outputs are the region's results (`multiple_results`).

They are OpDefs like any other, so the verifier, interpreter, printer and passes read their
fields instead of matching names (as JAX's `cond_p`/`while_p` are primitives with rules in the
same tables as `exp_p`); the `cond`/loop regions to come are declared the same way. No Tensor
method dispatches them: they exist only in graphs, so they have no VJP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..device import CPU
from .registry import DTypeError, Kind, Operand, ShapeError, TensorType, defop

S = Kind.STRUCTURAL


# ---- constant -------------------------------------------------------------------------------


def _constant_infer(ops: Sequence[Operand], *, value: np.ndarray) -> TensorType:
    if ops:
        raise ShapeError(f"constant: takes no operands, got {len(ops)}")
    try:
        d = dt.from_numpy_dtype(np.asarray(value).dtype)
    except TypeError as e:
        raise DTypeError(f"constant: {e}") from None
    return TensorType(tuple(np.shape(value)), d, CPU)  # a host array: tensors are CPU today


def _constant_eager(*, value: np.ndarray) -> np.ndarray:
    # a copy, as the interpreter always gave: whoever receives the result may write into it,
    # and the node's own array must stay as traced
    return np.array(value, copy=True)


CONSTANT = defop(
    "constant", S, infer=_constant_infer, eager=_constant_eager, attrs=("value",),
    differentiable=False, cse=False, foldable=False, shared_result=True,
    print_form=lambda attrs, args: f"constant {attrs['value']}",
    doc="a tensor baked into the graph (attrs: value, an ndarray)",
)


# ---- fused ----------------------------------------------------------------------------------


def _fused_infer(ops: Sequence[Operand], *, body: Any, **_: Any) -> tuple[TensorType, ...]:
    """The region's result types, once its params match the operands. (The verifier has
    already checked that `body` is a Region and its nodes well-formed: see ir/verify.py.)"""
    if len(body.params) != len(ops):
        raise ShapeError(f"fused: its region has {len(body.params)} params for {len(ops)} "
                         "operands")
    for k, (p, o) in enumerate(zip(body.params, ops)):
        if isinstance(o, TensorType) and p.type != o:
            raise ShapeError(f"fused: region param {k} is {p.type} but operand {k} is {o}")
    return tuple(r.type for r in body.results)


def _fused_eager(*args: Any, body: Any, **_: Any) -> list[np.ndarray]:
    # Imported here, not at the top: ir/ imports this package (ir.graph needs OpDef and
    # TensorType), so a module-level import of ir from ops would be a cycle. The interpreter
    # is what defines a region's meaning; a fused node means exactly its members run in order.
    from ..ir.interpret import run_region

    return run_region(body, args)


FUSED = defop(
    "fused", S, infer=_fused_infer, eager=_fused_eager,
    attrs=("body", "index", "domain", "rdims", "unsafe_reuse"), differentiable=False,
    multiple_results=True, regions=("body",), cse=False, foldable=False,
    print_form=lambda attrs, args: f"fused.{attrs.get('index', '0')}({args})",
    doc="a group of nodes compiled to one kernel (attrs: body, a Region of its members)",
)
