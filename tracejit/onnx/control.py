"""Control flow in ONNX: `cond` -> If, `while` -> Loop (max_iterations as the trip-count bound),
`scan` (so an int-bounded fori_loop too) -> Loop with the ys as its scan outputs. Entries of
the same kind as table.py's, kept apart because they build subgraphs.

A region's params read the enclosing graph's names (the operands) directly; a Loop body's
carry params are the body's own inputs. ONNX's Loop tests its condition before each trip, so
the cond region runs once before the Loop and again at the end of each trip on the new carry."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .. import dtypes as dt
from ..ops.registry import TensorType
from .builder import INT64_MIN, Builder
from .table import Emit

CONTROL: dict[str, Callable[[Emit], list[str]]] = {}


def _infos(b: Builder, names: Sequence[str], types: Sequence[TensorType]) -> list:
    return [b.value_info(n, t.shape, t.dtype) for n, t in zip(names, types)]


def _cond(e: Emit) -> list[str]:
    b = e.b
    pred = b.cast(e.xs[0], e.ts[0].dtype, dt.bool_)  # true when nonzero (NaN is true)
    graphs = {}
    for key in ("then", "else"):
        sub, outs = e.region(b, e.attrs[key], e.xs[1:])
        graphs[key] = sub.graph(b.fresh(key), [], _infos(sub, outs, e.outs))
    outs = [b.fresh("cond") for _ in e.outs]
    b.op_into("If", [pred], outs, then_branch=graphs["then"], else_branch=graphs["else"])
    return outs


def _loop_body(b: Builder, carry: Sequence[TensorType]) -> tuple[Builder, str, str, list[str]]:
    """A Loop body's builder and its inputs: trip number, condition, carry."""
    body = b.sub()
    return body, body.fresh("trip"), body.fresh("cond_in"), [body.fresh("carry") for _ in carry]


def _body_inputs(body: Builder, trip: str, cin: str, carry_in: Sequence[str],
                 carry: Sequence[TensorType]) -> list:
    return [body.value_info(trip, (), dt.int64), body.value_info(cin, (), dt.bool_),
            *_infos(body, carry_in, carry)]


def _while(e: Emit) -> list[str]:
    b, nc = e.b, e.attrs["n_consts"]
    consts, carry = e.xs[:nc], e.xs[nc:]
    (go,) = e.inline(b, e.attrs["cond"], e.xs)  # tested before the first trip, as tracejit
    body, trip, cin, carry_in = _loop_body(b, e.outs)
    nxt = e.inline(body, e.attrs["body"], [*consts, *carry_in])
    (again,) = e.inline(body, e.attrs["cond"], [*consts, *nxt])
    outs_in = [body.op("Identity", [again])] + [body.op("Identity", [x]) for x in nxt]
    graph = body.graph(b.fresh("while_body"), _body_inputs(body, trip, cin, carry_in, e.outs),
                       [body.value_info(outs_in[0], (), dt.bool_),
                        *_infos(body, outs_in[1:], e.outs)])
    limit = e.attrs["max_iterations"]
    trips = "" if limit is None else b.const(np.array(limit, np.int64))
    outs = [b.fresh("while") for _ in e.outs]
    b.op_into("Loop", [trips, go, *carry], outs, body=graph)
    return outs


def _scan(e: Emit) -> list[str]:
    b, at = e.b, e.attrs
    nc, nk, length, reverse = at["n_consts"], at["n_carry"], at["length"], at["reverse"]
    consts, carry, xs = e.xs[:nc], e.xs[nc:nc + nk], e.xs[nc + nk:]
    carry_t, ys_t = e.outs[:nk], e.outs[nk:]
    if length == 0:  # no trip: the carry as it came, empty ys (a 0-trip Loop has no ys shape)
        return [b.op("Identity", [c]) for c in carry] + \
            [b.const(np.zeros(t.shape, t.dtype.np)) for t in ys_t]
    body, trip, cin, carry_in = _loop_body(b, carry_t)
    t = body.op("Sub", [body.const(np.array(length - 1, np.int64)), trip]) if reverse else trip
    slices = [body.op("Gather", [x, t], axis=0) for x in xs]
    res = e.inline(body, at["body"], [*consts, *carry_in, *slices])
    outs_in = [body.op("Identity", [cin])] + [body.op("Identity", [x]) for x in res]
    y_slices = [TensorType(y.shape[1:], y.dtype, y.device) for y in ys_t]
    graph = body.graph(b.fresh("scan_body"), _body_inputs(body, trip, cin, carry_in, carry_t),
                       [body.value_info(outs_in[0], (), dt.bool_),
                        *_infos(body, outs_in[1:1 + nk], carry_t),
                        *_infos(body, outs_in[1 + nk:], y_slices)])
    outs = [b.fresh("scan") for _ in e.outs]
    go = b.const(np.array(True))
    b.op_into("Loop", [b.const(np.array(length, np.int64)), go, *carry], outs, body=graph)
    if reverse:  # the ys were stacked in trip order, i.e. from the last slice down
        ys = [b.op("Slice", [y, b.ints([-1]), b.ints([INT64_MIN]), b.ints([0]), b.ints([-1])])
              for y in outs[nk:]]
        outs = outs[:nk] + ys
    return outs


CONTROL.update({"cond": _cond, "while": _while, "scan": _scan})
