"""Control-flow ops: `cond`, `while` and `scan`, structural nodes whose regions are whole
sub-programs (the frontend is tracejit/control.py: cond, while_loop, fori_loop, scan).

Every region is closed: it reads only its params, which bind to the node's operands, so
passes can treat a region as a graph of its own. Operands come in this order:
- `cond` (regions then, else): the predicate (a 0-d tensor, true when nonzero), then the
  operands both branches take; each branch yields the node's results, of the same types.
- `while` (regions cond, body; attrs n_consts, max_iterations): `n_consts` values every
  iteration reads unchanged, then the carry. Both regions take consts + carry; `cond` yields
  one 0-d bool, `body` the next carry. With `max_iterations` the loop also stops after that
  many trips (a bounded loop, which is what makes it differentiable).
- `scan` (region body; attrs n_consts, n_carry, length, reverse): consts, the initial carry,
  then the stacked xs (leading dimension `length`). The body takes consts + carry + one slice
  of each x and yields the next carry and one slice of each y; the node's results are the
  final carry and the ys stacked along a new leading dimension.
The `eager` implementations run the regions with the interpreter (ir/interpret.py), which is
what defines their meaning; no Tensor method dispatches these ops, so they have no VJP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from .registry import Kind, Operand, ShapeError, TensorType, defop

S = Kind.STRUCTURAL


def _types(name: str, what: str, params: Sequence[Any], ops: Sequence[Operand]) -> None:
    if len(params) != len(ops):
        raise ShapeError(f"{name}: its {what} region has {len(params)} params for {len(ops)} "
                         "operands")
    for k, (p, o) in enumerate(zip(params, ops)):
        if isinstance(o, TensorType) and p.type != o:
            raise ShapeError(f"{name}: {what} param {k} is {p.type} but operand {k} is {o}")


def _results(name: str, what: str, results: Sequence[Any], want: Sequence[TensorType]) -> None:
    got = [r.type for r in results]
    if got != list(want):
        shown = ", ".join(map(str, got))
        raise ShapeError(f"{name}: its {what} region yields ({shown}) but must yield "
                         f"({', '.join(map(str, want))})")


def _scalar_pred(name: str, t: Any) -> None:
    if isinstance(t, TensorType) and t.shape != ():
        raise ShapeError(f"{name}: the predicate must be a 0-d tensor, got {t}")


def _run(region: Any, args: Sequence[Any]) -> list[Any]:
    # imported here: ir imports ops, so a module-level import would be a cycle
    from ..ir.interpret import run_region

    return run_region(region, args)


# ---- cond -----------------------------------------------------------------------------------


def _cond_infer(ops: Sequence[Operand], **attrs: Any) -> tuple[TensorType, ...]:
    if not ops:
        raise ShapeError("cond: takes a predicate operand")
    _scalar_pred("cond", ops[0])
    then, other = attrs["then"], attrs["else"]
    _types("cond", "then", then.params, ops[1:])
    _types("cond", "else", other.params, ops[1:])
    _results("cond", "else", other.results, [r.type for r in then.results])
    return tuple(r.type for r in then.results)


def _cond_eager(pred: Any, *args: Any, **attrs: Any) -> list[Any]:
    return _run(attrs["then"] if bool(np.asarray(pred)) else attrs["else"], args)


COND = defop(
    "cond", S, infer=_cond_infer, eager=_cond_eager, attrs=("then", "else"),
    differentiable=False, multiple_results=True, regions=("then", "else"), control=True,
    cse=False, foldable=False,
    doc="an if/else over two regions (operands: predicate, then what the branches take)",
)


# ---- while ----------------------------------------------------------------------------------


def _while_infer(ops: Sequence[Operand], *, cond: Any, body: Any, n_consts: int,
                 max_iterations: int | None = None) -> tuple[TensorType, ...]:
    _types("while", "cond", cond.params, ops)
    _types("while", "body", body.params, ops)
    if len(cond.results) != 1 or cond.results[0].type.shape != () or \
            cond.results[0].type.dtype is not dt.bool_:
        raise ShapeError("while: its cond region must yield one 0-d bool")
    carry = [o for o in ops[n_consts:]]
    if not all(isinstance(c, TensorType) for c in carry):
        raise ShapeError("while: the carry must be tensors, not literals")
    _results("while", "body", body.results, carry)  # type: ignore[arg-type]
    if max_iterations is not None and max_iterations < 0:
        raise ShapeError(f"while: max_iterations must be >= 0, got {max_iterations}")
    return tuple(carry)  # type: ignore[arg-type]


def _while_eager(*args: Any, cond: Any, body: Any, n_consts: int,
                 max_iterations: int | None = None) -> list[Any]:
    consts, carry = list(args[:n_consts]), list(args[n_consts:])
    trips = 0
    while max_iterations is None or trips < max_iterations:
        (go,) = _run(cond, consts + carry)
        if not bool(go):
            break
        carry = _run(body, consts + carry)
        trips += 1
    return [np.array(c, copy=True) for c in carry]  # results own their buffers


WHILE = defop(
    "while", S, infer=_while_infer, eager=_while_eager,
    attrs=("cond", "body", "n_consts", "max_iterations"), differentiable=False,
    multiple_results=True, regions=("cond", "body"), control=True, cse=False, foldable=False,
    doc="a loop while its cond region yields true (operands: consts, then the carry)",
)


# ---- scan -----------------------------------------------------------------------------------


def _scan_infer(ops: Sequence[Operand], *, body: Any, n_consts: int, n_carry: int,
                length: int, reverse: bool = False) -> tuple[TensorType, ...]:
    if not all(isinstance(o, TensorType) for o in ops):
        raise ShapeError("scan: operands must be tensors, not literals")
    types: list[TensorType] = list(ops)  # type: ignore[arg-type]
    xs = types[n_consts + n_carry:]
    for k, x in enumerate(xs):
        if not x.shape or x.shape[0] != length:
            raise ShapeError(f"scan: xs[{k}] is {x} but the scan has length {length}")
    slices = [TensorType(x.shape[1:], x.dtype, x.device) for x in xs]
    _types("scan", "body", body.params, types[:n_consts + n_carry] + slices)
    carry = types[n_consts:n_consts + n_carry]
    if len(body.results) < n_carry:
        raise ShapeError(f"scan: its body yields {len(body.results)} values for a carry of "
                         f"{n_carry}")
    _results("scan", "body's carry", body.results[:n_carry], carry)
    ys = [TensorType((length, *r.type.shape), r.type.dtype, r.type.device)
          for r in body.results[n_carry:]]
    return tuple(carry + ys)


def _scan_eager(*args: Any, body: Any, n_consts: int, n_carry: int, length: int,
                reverse: bool = False) -> list[Any]:
    consts = list(args[:n_consts])
    carry = list(args[n_consts:n_consts + n_carry])
    xs = args[n_consts + n_carry:]
    ys: list[Any] = [np.empty((length, *r.type.shape), r.type.dtype.np)
                     for r in body.results[n_carry:]]
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        out = _run(body, consts + carry + [x[t] for x in xs])
        carry = out[:n_carry]
        for y, v in zip(ys, out[n_carry:]):
            y[t] = v
    return [np.array(c, copy=True) for c in carry] + ys


SCAN = defop(
    "scan", S, infer=_scan_infer, eager=_scan_eager,
    attrs=("body", "n_consts", "n_carry", "length", "reverse"), differentiable=False,
    multiple_results=True, regions=("body",), control=True, cse=False, foldable=False,
    doc="a loop over the leading dimension of xs (operands: consts, carry, xs)",
)
