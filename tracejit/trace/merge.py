"""Two paths of a function, one program: the raw traces of two cache entries that went
opposite ways at a guarded branch (`Tracer.branch`) become one trace whose graph holds a `cond`
on that branch's predicate (issue 12: "once both sides are known the graph holds a cond
region compiled with an if inside").

The traces are matched node for node up to the branch (the prefix: same ops, attributes and
operands, params matched by where they are found, `Source`); the rest of each (the suffix)
becomes one closed region of the `cond`, as trace/regions.py closes regions: its params are
the prefix values and params it reads, bound to the node's operands (a side that does not
read one gets a fresh unused param). The node's results are the union of what the two sides
leave behind: the function's outputs, pair by pair of its output structure; the new value of
every tensor either side writes in place (an effect; the side that does not write it passes
the old value through); the `.grad` assignments. Params and guards are the union of both
traces' (guards that contradict each other, a `.grad` None in one trace and a tensor in the
other, make the paths unmergeable). The checks of the branches before the merged one stay
checks of the merged trace, so a merged trace can merge again with another that shares its
prefix: nested branches merge from the inside out, pair by pair, whenever both sides of a
branch are merged traces (or plain ones) with no further check after it.

`merge_traces` returns the merged `TraceResult`, or a `str` saying why the two cannot be one
(different output structure or types, a branch after the merged one, a `.grad` assigned on
one side only, conflicting guards...): jit.py then keeps the guarded entries and shows the
reason in `explain()`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ir.graph import Check, Const, Effect, Graph, Node, Region, Value
from ..ops.control import COND
from .sources import (
    ArgSource,
    AttrGuard,
    CellGuard,
    GlobalGuard,
    GlobalIdentityGuard,
    GradSource,
    Guard,
    NoneGuard,
    RefSource,
    ScalarSource,
    Source,
    TensorMetaGuard,
    ValueGuard,
)
from .tracer import TraceResult


class _MergeError(Exception):
    """Why two traces cannot be one (the message is shown by explain())."""


# ---- keys: the same parameter, the same guard subject, in two traces ------------------------


def source_key(s: Source) -> tuple:
    """Where a parameter is found, as a key equal for the same place in two traces."""
    if isinstance(s, ArgSource):  # (a ScalarArgSource too: it is an argument)
        return ("arg", s.index, type(s).__name__)
    if isinstance(s, RefSource):
        return ("ref", id(s.obj))
    if isinstance(s, GradSource):
        return ("grad", source_key(s.owner))
    if isinstance(s, ScalarSource):
        return ("scalar", id(s.container), repr(s.key))
    return ("source", id(s))


def _guard_key(g: Guard) -> tuple[tuple, Any] | None:
    """(what the guard is about, what it requires of it), or None for a guard with no subject
    two traces could disagree on (module versions: both are kept)."""
    if isinstance(g, TensorMetaGuard):
        return ("tensor", source_key(g.source)), ("tensor", g.shape, g.dtype, g._cuda())
    if isinstance(g, NoneGuard):
        return ("tensor", source_key(g.source)), ("none",)
    if isinstance(g, ValueGuard):
        return ("value", id(g.container), repr(g.key)), ("value", g.value)
    if isinstance(g, AttrGuard):
        return ("attr", id(g.obj), g.attr), ("value", g.value)
    if isinstance(g, GlobalGuard):
        return ("global", id(g.namespace), g.name), ("value", g.value)
    if isinstance(g, GlobalIdentityGuard):
        return ("global", id(g.namespace), g.name), ("is", id(g.obj))
    if isinstance(g, CellGuard):
        return ("cell", id(g.cell)), ("is" if g.identity else "value",
                                      id(g.value) if g.identity else g.value)
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind
                                                               in "fc")))
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and np.isnan(a):
        return bool(np.isnan(b))
    try:
        return bool(a == b)
    except Exception:  # (an object whose == is not a bool)
        return a is b


def union_guards(a: list[Guard], b: list[Guard]) -> list[Guard]:
    out = list(a)
    want: dict[tuple, tuple[Any, Guard]] = {}
    for g in a:
        k = _guard_key(g)
        if k is not None:
            want[k[0]] = (k[1], g)
    for g in b:
        k = _guard_key(g)
        if k is None:
            out.append(g)
            continue
        hit = want.get(k[0])
        if hit is None:
            want[k[0]] = (k[1], g)
            out.append(g)
        elif not _same(hit[0], k[1]):
            raise _MergeError(f"the paths were traced under different guards ({hit[1].describe()}"
                           f" against {g.describe()})")
    return out


# ---- matching the prefixes ------------------------------------------------------------------


def _match_operand(a: Any, b: Any, m: dict[Value, Value]) -> bool:
    if isinstance(a, Value) and isinstance(b, Value):
        return m.get(b) is a
    if isinstance(a, Const) and isinstance(b, Const):
        return a.dtype is b.dtype and _same(a.value, b.value)
    return False


def _match_region(a: Region, b: Region) -> bool:
    if len(a.params) != len(b.params) or any(p.type != q.type for p, q in zip(a.params, b.params)):
        return False
    m = dict(zip(b.params, a.params))
    return _match_nodes(a.nodes, b.nodes, m) and len(a.results) == len(b.results) and \
        all(_match_operand(x, y, m) for x, y in zip(a.results, b.results))


def _match_attr(a: Any, b: Any) -> bool:
    if isinstance(a, Region) or isinstance(b, Region):
        return isinstance(a, Region) and isinstance(b, Region) and _match_region(a, b)
    return _same(a, b)


def _match_nodes(na: Sequence[Node], nb: Sequence[Node], m: dict[Value, Value]) -> bool:
    """Whether the node lists compute the same thing from values `m` maps (b -> a); `m` then
    maps b's results to a's too."""
    if len(na) != len(nb):
        return False
    for x, y in zip(na, nb):
        if x.op is not y.op or len(x.inputs) != len(y.inputs) or len(x.outs) != len(y.outs):
            return False
        if set(x.attrs) != set(y.attrs) or not all(_match_attr(x.attrs[k], y.attrs[k])
                                                   for k in x.attrs):
            return False
        if not all(_match_operand(p, q, m) for p, q in zip(x.inputs, y.inputs)):
            return False
        if any(o.type != p.type for o, p in zip(x.outs, y.outs)):
            return False
        m.update(zip(y.outs, x.outs))
    return True


# ---- the merge --------------------------------------------------------------------------------


_KINDS = {"t": "a tensor", "p": "a tensor", "c": "a Python value", "tuple": "a tuple",
          "list": "a list", "dict": "a dict", "namedtuple": "a named tuple"}


def _outputs_of(spec_a: Any, spec_b: Any, leaf: Any, pairs: list[tuple[Value, Value]]) -> Any:
    """The merged output structure; each tensor leaf a pair (a's value, b's; `leaf` finds
    them) in `pairs`. An argument returned as it is (`p`) on one side and a new tensor on the
    other is returned as a new tensor by both."""
    ka, xa = spec_a
    kb, xb = spec_b
    if ka == kb == "p" and source_key(xa) == source_key(xb):
        return spec_a
    if ka in ("t", "p") and kb in ("t", "p"):
        pairs.append((leaf("a", spec_a), leaf("b", spec_b)))
        return ("t", len(pairs) - 1)
    if ka != kb:
        raise _MergeError(f"the paths return different structures ({_KINDS.get(ka, ka)} against "
                       f"{_KINDS.get(kb, kb)})")
    if ka == "c":
        if not _same(xa, xb):
            raise _MergeError(f"the paths return different Python values ({xa!r} against {xb!r})")
        return spec_a
    if ka in ("tuple", "list"):
        if len(xa) != len(xb):
            raise _MergeError(f"the paths return {ka}s of {len(xa)} and {len(xb)} items")
        return (ka, [_outputs_of(s, t, leaf, pairs) for s, t in zip(xa, xb)])
    if ka == "namedtuple":
        if xa[0] is not xb[0] or len(xa[1]) != len(xb[1]):
            raise _MergeError("the paths return different named tuples")
        return (ka, (xa[0], [_outputs_of(s, t, leaf, pairs) for s, t in zip(xa[1], xb[1])]))
    if ka == "dict":
        if [k for k, _ in xa] != [k for k, _ in xb]:
            raise _MergeError("the paths return dicts with different keys")
        return (ka, [(k, _outputs_of(s, t, leaf, pairs)) for (k, s), (_, t) in zip(xa, xb)])
    raise _MergeError(f"an output of kind {ka}")


def _close(nodes: Sequence[Node], results: list[Value], outer: dict[Value, Value],
           operands: list[Value], slot: dict[Value, int]) -> list[Value]:
    """The values from outside `nodes` that they and `results` read (mapped by `outer` to the
    merged graph's values), added to `operands`; returns them (side values) in order."""
    made = {o for n in nodes for o in n.outs}
    free: list[Value] = []
    seen: set[Value] = set()
    for v in [i for n in nodes for i in n.values_in()] + results:
        if v not in made and v not in seen:
            seen.add(v)
            free.append(v)
            ov = outer.get(v, v)
            if ov not in slot:
                slot[ov] = len(operands)
                operands.append(ov)
    return free


def _region(nodes: Sequence[Node], results: list[Value], free: list[Value],
            outer: dict[Value, Value], operands: list[Value],
            slot: dict[Value, int]) -> Region:
    params = [Value(o.type, f"m{k}") for k, o in enumerate(operands)]
    sub = {v: params[slot[outer.get(v, v)]] for v in free}
    body = tuple(Node(n.op, tuple(sub.get(i, i) if isinstance(i, Value) else i
                                  for i in n.inputs), n.outs, n.attrs, n.loc) for n in nodes)
    return Region(tuple(params), body, tuple(sub.get(r, r) for r in results))


def part_at(a: TraceResult, b: TraceResult) -> int | None:
    """The first branch at which the two traces went different ways (None: the same path)."""
    return next((i for i, (ca, cb) in enumerate(zip(a.graph.checks, b.graph.checks))
                 if ca.taken != cb.taken or ca.loc != cb.loc), None)


def merge_traces(a: TraceResult, b: TraceResult) -> TraceResult | str:
    """One trace holding both `a`'s and `b`'s paths (a `cond` where they first part), or why
    not."""
    try:
        return _merge(a, b)
    except _MergeError as e:
        return str(e)


def _merge(a: TraceResult, b: TraceResult) -> TraceResult:
    ga, gb = a.graph, b.graph
    if a.breaks or b.breaks:
        raise _MergeError("a path met a graph break")
    k = part_at(a, b)
    if k is None or ga.checks[k].loc != gb.checks[k].loc:
        raise _MergeError("the paths do not part at one branch")
    if len(ga.checks) > k + 1 or len(gb.checks) > k + 1:
        raise _MergeError("a branch after the one the paths part at (nested: the inner paths "
                       "merge first)")
    pos = a.branch_at[k]
    if b.branch_at[k] != pos or a.branch_at[:k] != b.branch_at[:k]:
        raise _MergeError("the paths compute different things before the branch")
    # params by where they are found; b's that a lacks are appended (all lifted)
    pa = {source_key(p.source): p for p in a.params}
    m: dict[Value, Value] = {}
    params = list(a.params)
    for p in b.params:
        q = pa.get(source_key(p.source))
        if q is None:
            if isinstance(p.source, ArgSource):
                raise _MergeError("the paths read different arguments")
            params.append(p)
            pa[source_key(p.source)] = p
        elif q.value.type != p.value.type:
            raise _MergeError(f"{p.source.describe()} has different types in the two paths")
        else:
            m[p.value] = q.value
    if not _match_nodes(ga.nodes[:pos], gb.nodes[:pos], m):
        raise _MergeError("the paths compute different things before the branch")
    for ca, cb in zip(ga.checks[:k + 1], gb.checks[:k + 1]):
        va, vb = ga.outputs[ca.output], gb.outputs[cb.output]
        if not isinstance(va, Value) or not isinstance(vb, Value) or m.get(vb) is not va:
            raise _MergeError("the paths' branch predicates differ")
    guards = union_guards(a.guards, b.guards)
    for p in b.params:  # b-only params: themselves in the merged graph
        m.setdefault(p.value, p.value)
    by_key = {source_key(p.source): p for p in params}

    # what each side leaves behind, as (a's value, b's value) pairs: outputs, effects, .grad
    def leaf(side: str, spec: Any) -> Any:
        t, g = (a, ga) if side == "a" else (b, gb)
        if spec[0] == "t":
            return g.outputs[spec[1]]
        return next(p.value for p in t.params if p.source is spec[1])

    pairs: list[tuple[Value, Value]] = []
    out_spec = _outputs_of(a.out_spec, b.out_spec, leaf, pairs)
    res_a: list[Value] = []
    res_b: list[Value] = []
    for va, vb in pairs:
        if not isinstance(va, Value) or not isinstance(vb, Value) or va.type != vb.type:
            raise _MergeError(f"the paths return tensors of different types ({va} against {vb})")
        res_a.append(va)
        res_b.append(vb)
    eff_a = {source_key(pp.source): e.source for e in ga.effects
             for pp in a.params if pp.value is e.target}
    eff_b = {source_key(pp.source): e.source for e in gb.effects
             for pp in b.params if pp.value is e.target}
    targets = list(eff_a) + [t for t in eff_b if t not in eff_a]
    for t in targets:
        p = by_key[t]
        q = next((x for x in b.params if source_key(x.source) == t), None)
        res_a.append(eff_a.get(t, p.value))
        res_b.append(eff_b.get(t, q.value if q is not None else p.value))
    n_eff = len(targets)
    gw_a = {source_key(s): (s, i) for s, i in a.grad_writes}
    gw_b = {source_key(s): (s, i) for s, i in b.grad_writes}
    none_at_entry = {_guard_key(g)[0] for g in guards  # type: ignore[index]
                     if isinstance(g, NoneGuard)}
    grad_writes: list[tuple[Source, int | None]] = []
    grad_pairs: list[tuple[Source, Value, Value]] = []
    untouched = -1  # (output indices are >= 0; None is an assignment of None)
    for key in list(gw_a) + [x for x in gw_b if x not in gw_a]:
        sa, ia = gw_a.get(key, (None, untouched))
        sb, ib = gw_b.get(key, (None, untouched))
        owner: Source = sa if sa is not None else sb  # type: ignore[assignment]
        if ia in (None, untouched) and ib in (None, untouched):
            if untouched in (ia, ib) and ("tensor", ("grad", key)) not in none_at_entry:
                raise _MergeError(f"{owner.describe()}.grad is set to None on one path only")
            grad_writes.append((owner, None))  # (None on a path where it was None: no change)
            continue
        if ia is None or ib is None:
            raise _MergeError(f"{owner.describe()}.grad is None after one path and a tensor after "
                           "the other")
        old = by_key.get(("grad", key))
        if untouched in (ia, ib) and old is None:
            raise _MergeError(f"{owner.describe()}.grad is assigned on one path only")
        qa = old.value if ia == untouched else ga.outputs[ia]  # type: ignore[union-attr]
        qb = old.value if ib == untouched else gb.outputs[ib]  # type: ignore[union-attr]
        if not isinstance(qa, Value) or not isinstance(qb, Value) or qa.type != qb.type:
            raise _MergeError(f"{owner.describe()}.grad gets tensors of different types")
        grad_pairs.append((owner, qa, qb))
    res_a += [x for _, x, _ in grad_pairs]
    res_b += [y for _, _, y in grad_pairs]

    # the two suffixes, closed over what they read
    suf_a, suf_b = ga.nodes[pos:], gb.nodes[pos:]
    ident: dict[Value, Value] = {}
    operands: list[Value] = []
    slot: dict[Value, int] = {}
    free_a = _close(suf_a, res_a, ident, operands, slot)
    free_b = _close(suf_b, res_b, m, operands, slot)
    r_a = _region(suf_a, res_a, free_a, ident, operands, slot)
    r_b = _region(suf_b, res_b, free_b, m, operands, slot)
    chk = ga.checks[k]
    pred = ga.outputs[chk.output]
    assert isinstance(pred, Value)
    then, other = (r_a, r_b) if chk.taken else (r_b, r_a)
    outs = tuple(Value(v.type) for v in res_a)
    node = Node(COND, (pred, *operands), outs, {"then": then, "else": other}, chk.loc)

    n_out = len(pairs)
    outputs: list[Any] = list(outs[:n_out])
    effects = [Effect(by_key[t].value, outs[n_out + e]) for e, t in enumerate(targets)]
    for (owner, _, _), v in zip(grad_pairs, outs[n_out + n_eff:]):
        outputs.append(v)
        grad_writes.append((owner, len(outputs) - 1))
    checks = []
    for c in ga.checks[:k]:
        checks.append(Check(len(outputs), c.taken, c.loc))
        outputs.append(ga.outputs[c.output])
    inputs = tuple(p.value for p in params if isinstance(p.source, ArgSource))
    lifted = tuple(p.value for p in params if not isinstance(p.source, ArgSource))
    g = Graph(ga.name, inputs, lifted, (*ga.nodes[:pos], node), tuple(outputs), tuple(effects),
              tuple(checks))
    merged = TraceResult(g, params, guards, grad_writes, out_spec, [])
    merged.branch_at = list(a.branch_at[:k])
    merged.merged = a.merged + b.merged + [chk.loc]
    return merged
