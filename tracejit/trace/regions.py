"""Tracing control flow: a `cond`, `while_loop` or `scan` met inside @jit becomes one node
whose regions are recorded from its Python functions by nested tracers (`SubTracer`).

A region's tracer runs the body on real values, as the outer tracer runs the function, so
Python in the body sees tensors. Its params are the carry (fresh tensor objects, so a carry
leaf is never confused with a tensor of the same storage outside) and every outer tensor the
body reads (a parameter, optimizer state: captured by identity, as the outer tracer lifts);
an in-place write to a captured tensor (`opt.step()` in the body) becomes loop-carried state,
and the node's result for it the tensor's new value in the outer trace (an effect when it is
a parameter). `.grad` left None -> None is nothing; tensor -> tensor is carried state.

Only the first iteration is recorded. The others run the Python body eagerly (each under a
throwaway tracer that keeps the inspection undo log and graph breaks), so the traced call's
values are eager's whatever the region holds; a body the region cannot represent (a branch
on `.item()`, a `.grad` that changes between None and a tensor, differentiating through the
loop) is a graph break, reported at the user's line, and the call still completes eagerly.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..control import (
    _NoBackward,
    check_carry,
    check_pred,
    flatten_leaves,
    run_while,
    split_step,
    truth,
    x_slice,
)
from ..creation import tensor
from ..dispatch import STATE, user_location
from ..ir.graph import Node, Region, Value
from ..ops.control import COND, SCAN, WHILE
from ..ops.registry import TensorType
from ..pytree import TreeDef, tree_flatten, tree_unflatten
from ..tensor import Tensor
from .region_grads import CondGrad, CondSpec, ScanGrad, ScanSpec
from .sources import RefSource
from .tracer import GradWrite, Tracer, UndoLog


class RegionError(Exception):
    """A body the region cannot represent: the reason becomes a graph break."""


class SubTracer(Tracer):
    """Records one region. Guards, graph breaks and lifting go to the outer tracer; the
    region's params are its carry and `captured` (outer tensors read, by storage identity)."""

    def __init__(self, outer: Tracer, scratch: bool = False) -> None:
        super().__init__(outer.name, outer.hints)
        self.outer = outer
        self.scratch = scratch  # a throwaway (iterations after the first): touches no outer state
        self.captured: dict[int, tuple[Tensor, Value, Value]] = {}  # (tensor, outer, inner)
        self.grad_before: dict[int, tuple[Tensor, Tensor | None]] = {}
        self.branch_undo: UndoLog | None = None  # a speculative trace puts back what it wrote

    def add_carry(self, t: Tensor, k: int) -> tuple[Tensor, Value]:
        fresh = Tensor._make(t._data.view(), t._dtype)
        return fresh, self.add_param(fresh, RefSource(fresh, f"c{k}"), f"c{k}")

    def value_of(self, t: Tensor) -> Value:
        k = id(t._data)
        if k in self.env or k in self.stale:
            return super().value_of(t)
        if self.scratch:
            return self.add_param(t, RefSource(t, "s"), "s")
        ov = self.outer.value_of(t)
        v = self.add_param(t, RefSource(t, ov.name), ov.name)
        self.captured[k] = (t, ov, v)
        return v

    def graph_break(self, reason: str, loc: str | None = None) -> None:
        loc = loc or user_location()
        super().graph_break(reason, loc)
        self.outer.graph_break(reason, loc)

    def guard_value(self, container: Any, key: Any, v: Any) -> None:
        if not self.scratch:
            self.outer.guard_value(container, key, v)

    def guard_attr(self, obj: Any, attr: str, v: Any) -> None:
        if not self.scratch:
            self.outer.guard_attr(obj, attr, v)

    def use_module(self, m: Any) -> None:
        if not self.scratch:
            self.outer.use_module(m)

    def guard_python(self, key: Any, guard: Any) -> None:
        if not self.scratch:
            self.outer.guard_python(key, guard)

    def lift_scalar(self, container: Any, key: Any, v: Any) -> Tensor:
        return self.outer.lift_scalar(container, key, v)

    def before_write(self, t: Tensor) -> None:
        self.outer.before_write(t)
        if self.branch_undo is not None:
            self.branch_undo.before_write(t, self)

    def read_grad(self, t: Tensor) -> None:
        if self.scratch or id(t) in self.grad_writes:
            return
        self.grad_before.setdefault(id(t), (t, t._grad))
        self.outer.read_grad(t)
        if t._grad is not None:
            self.value_of(t._grad)

    def write_grad(self, t: Tensor, value: Tensor | None) -> None:
        if self.scratch:
            return
        self.grad_before.setdefault(id(t), (t, t._grad))
        if self.outer.undo is not None:
            self.outer.undo.before_grad_write(t)
        if self.branch_undo is not None:
            self.branch_undo.before_grad_write(t)
        if value is not None:
            self.value_of(value)
        self.grad_writes[id(t)] = GradWrite(RefSource(t, "g"), value)

    def state_changes(self) -> list[tuple[int, Tensor, Value, Value, Value]]:
        """Captured tensors the region wrote in place: (key, tensor, outer value, inner
        param, inner value at the end)."""
        return [(k, t, ov, iv, self.env[k]) for k, (t, ov, iv) in self.captured.items()
                if self.env.get(k, iv) is not iv]


@contextlib.contextmanager
def _installed(t: Tracer) -> Iterator[Tracer]:
    prev = STATE.tracer
    STATE.tracer = t
    try:
        yield t
    finally:
        STATE.tracer = prev


def _outer() -> Tracer:
    t = STATE.tracer
    assert isinstance(t, Tracer)
    return t


def _needs_grad(leaves: list[Tensor]) -> bool:
    return STATE.grad_enabled and any(x.requires_grad for x in leaves)


_GRAD_BREAK = ("differentiating through tracejit.{fn} under @jit is not compiled yet: the call "
               "runs eagerly (its gradient is right); detach the carry, or differentiate "
               "outside the loop")


_UNBOUNDED_GRAD = ("differentiating through an unbounded tracejit.while_loop: its trip count "
                   "is known only when it has run, so the call runs eagerly and its backward "
                   "raises JAX's error; bound it with while_loop(..., max_iterations=N), which "
                   "compiles its gradient")


def _eagerly(fn: Callable[[], Any]) -> Any:
    """Run `fn` (the whole control flow) eagerly, under a throwaway tracer."""
    with _installed(SubTracer(_outer(), scratch=True)):
        return fn()


# ---- the parts of a node ----------------------------------------------------------------------


class _Layout:
    """The operand slots of a control node: consts (captured, unchanged), the carry, then the
    state (captured tensors written in place, and .grad slots). Each region gets one param per
    slot: its own value where it read the slot, a fresh unused one where it did not."""

    def __init__(self, subs: list[SubTracer], writer: SubTracer | None) -> None:
        outer = subs[0].outer
        keys: dict[int, tuple[Tensor, Value]] = {}
        for s in subs:
            for k, (t, ov, _) in s.captured.items():
                keys.setdefault(k, (t, ov))
        changed = {k for s in subs for k, *_ in s.state_changes()}
        for s in subs:
            if writer is not None and s is not writer and s.state_changes():
                raise RegionError("a loop's cond_fun writes a tensor in place; compute the "
                                  "condition without side effects")
        self.consts = [(k, t, ov) for k, (t, ov) in keys.items() if k not in changed]
        self.state = [(k, t, ov) for k, (t, ov) in keys.items() if k in changed]
        self.grads: list[tuple[Tensor, Tensor, Tensor, Value]] = []  # (param, before, after, ov)
        if writer is not None:
            for s in subs:
                if s is not writer and s.grad_writes:
                    raise RegionError("a loop's cond_fun assigns .grad; compute the condition "
                                      "without side effects")
            for pid, gw in writer.grad_writes.items():
                p, before = writer.grad_before[pid]
                after = gw.tensor
                if before is None and after is None:
                    continue  # None -> None: nothing carried
                if before is None or after is None or before.shape != after.shape or \
                        before.dtype is not after.dtype:
                    raise RegionError(
                        "the loop body changes a parameter's .grad from "
                        f"{'None' if before is None else 'a tensor'} to "
                        f"{'None' if after is None else 'a tensor'} (of another type); a loop's "
                        "state must keep its structure (JAX's rule for carries): call "
                        "zero_grad() at the end of the body, or give .grad a value before the "
                        "loop")
                outer.read_grad(p)
                self.grads.append((p, before, after, outer.value_of(before)))
        self.outer = outer

    def operands(self, carry_in: list[Value]) -> list[Value]:
        return [ov for _, _, ov in self.consts] + carry_in + \
            [ov for _, _, ov in self.state] + [g[3] for g in self.grads]

    def params(self, s: SubTracer, carry: list[Value], extra: list[Value] = ()) -> tuple:  # type: ignore[assignment]
        def own(k: int, t: Tensor) -> Value:
            hit = s.captured.get(k)
            return hit[2] if hit is not None else Value(t._type())

        out = [own(k, t) for k, t, _ in self.consts] + carry
        out += [own(k, t) for k, t, _ in self.state]
        out += [own(id(before._data), before) for _, before, _, _ in self.grads]
        return tuple(out + list(extra))

    def state_results(self, s: SubTracer) -> list[Value]:
        """What the writing region yields for the state: the new value of each."""
        out = []
        for k, t, _ in self.state:
            hit = s.captured.get(k)
            out.append(s.env[k] if hit is not None else Value(t._type()))
        out += [s.value_of(after) for _, _, after, _ in self.grads]
        return out

    def bind_state(self, outs: list[Value]) -> None:
        """The outer trace after the node: each state tensor holds its result."""
        outer = self.outer
        for (k, _, _), v in zip(self.state, outs):
            outer.env[k] = v
            outer._invalidate_views(k, keep=-1)
        for (p, _, _, _), v in zip(self.grads, outs[len(self.state):]):
            g = p._grad
            assert g is not None
            outer._bind(g._data, v)
            outer.write_grad(p, g)


def _bind_results(outer: Tracer, leaves: list[Tensor], outs: list[Value]) -> list[Tensor]:
    """The real result tensors, bound to the node's results. A tensor the outer trace already
    knows (a carry that went round zero times) is copied: its own value stays its own."""
    out = []
    for t, v in zip(leaves, outs):
        if id(t._data) in outer.env:
            t = Tensor._make(t._data.copy(), t._dtype)
        outer._bind(t._data, v)
        outer.produced.append(weakref.ref(t))
        out.append(t)
    return out


def _absorb(outer: Tracer, subs: list[SubTracer]) -> None:
    """What the region tracers made stays visible to the outer escape check (a tensor the
    body stored into Python state makes the trace unreusable, as in the function itself)."""
    for s in subs:
        outer.keep.extend(s.keep)
        outer.produced.extend(s.produced)
        outer.inner_ids.update(s.env)


def _region(s: SubTracer, params: tuple, results: list[Value]) -> Region:
    return Region(tuple(params), tuple(s.nodes), tuple(results))


def _check_region_breaks(subs: list[SubTracer],
                         carries: list[list[tuple[Tensor, Value]]] = ()) -> None:  # type: ignore[assignment]
    for s in subs:
        if s.breaks:
            raise RegionError(s.breaks[0].reason)
    for s, carry in zip(subs, carries):
        last = {id(t._data): v for t, v in carry}  # (a leaf passed twice: its last param)
        if any(s.env.get(k) is not v for k, v in last.items()):
            raise RegionError("the body writes its carry in place (x.add_(...)); return the new "
                              "value instead (JAX's carries are values)")


def _speculative(s: SubTracer, fn: Callable[[], Any]) -> Any:
    """Trace `fn` for its region only (a branch not taken, a body that runs zero times): what
    it writes into existing tensors is put back afterwards."""
    s.branch_undo = UndoLog()
    try:  # (its values are thrown away: a 1/0 there, past a loop's last trip, is no news)
        with _installed(s), np.errstate(all="ignore"):
            return fn()
    finally:
        s.branch_undo.restore()
        s.branch_undo = None


# ---- while ----------------------------------------------------------------------------------


def trace_while(cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any],
                leaves: list[Tensor], tree: TreeDef, cap: int | None) -> list[Tensor]:
    outer = _outer()
    loc = user_location()
    if cap is not None and STATE.grad_enabled and \
            (_needs_grad(leaves) or _body_needs_grad(outer, body_fun, leaves, tree)):
        return _bounded_while_as_scan(cond_fun, body_fun, leaves, tree, cap)
    if _needs_grad(leaves):
        outer.graph_break(_UNBOUNDED_GRAD, loc)
        return _eagerly(lambda: run_while(cond_fun, body_fun, leaves, tree, cap))
    cs, bs = SubTracer(outer), SubTracer(outer)
    c_carry = [cs.add_carry(t, k) for k, t in enumerate(leaves)]
    with _installed(cs):
        pred = check_pred("while_loop", cond_fun(tree_unflatten(tree, [t for t, _ in c_carry])),
                          "cond_fun")
        pv = cs.value_of(pred if isinstance(pred, Tensor) else tensor(pred))
    go = truth(pred) and (cap is None or cap > 0)
    b_carry = [bs.add_carry(t, k) for k, t in enumerate(leaves)]

    def body() -> list[Tensor]:
        out = body_fun(tree_unflatten(tree, [t for t, _ in b_carry]))
        return check_carry("while_loop", "init_val", tree, leaves, out, "body_fun's result")

    if go:
        with _installed(bs):
            new = body()
        trips = 1
        real = new
        while cap is None or trips < cap:  # the other iterations, eagerly
            with _installed(SubTracer(outer, scratch=True)):
                p = check_pred("while_loop", cond_fun(tree_unflatten(tree, real)), "cond_fun")
                if not truth(p):
                    break
                real = check_carry("while_loop", "init_val", tree, leaves,
                                   body_fun(tree_unflatten(tree, real)), "body_fun's result")
            trips += 1
    else:
        new = _speculative(bs, body)
        real = leaves
    try:
        _check_region_breaks([cs, bs], [c_carry, b_carry])
        with _installed(bs):
            b_results = [bs.value_of(t) for t in new]
        lay = _Layout([cs, bs], bs)
        types = [t._type() for t in leaves]
        ins = lay.operands([outer.value_of(t) for t in leaves])
        cond_r = _region(cs, lay.params(cs, [v for _, v in c_carry]), [pv])
        body_r = _region(bs, lay.params(bs, [v for _, v in b_carry]),
                         b_results + lay.state_results(bs))
    except RegionError as e:
        outer.graph_break(f"a while_loop body the compiled loop cannot hold: {e}", loc)
        _absorb(outer, [cs, bs])
        return real
    outs = [Value(t) for t in types] + [Value(v.type) for v in body_r.results[len(types):]]
    outer.nodes.append(Node(WHILE, tuple(ins), tuple(outs),
                            {"cond": cond_r, "body": body_r, "n_consts": len(lay.consts),
                             "max_iterations": cap}, loc))
    _absorb(outer, [cs, bs])
    lay.bind_state(outs[len(types):])
    result = _bind_results(outer, real, outs[:len(types)])
    if _needs_grad(result):  # (a bounded loop took _bounded_while_as_scan)
        outer.graph_break(_UNBOUNDED_GRAD, loc)
        result = list(_NoBackward.apply(*result))
    return result


class _Probe(SubTracer):
    """A scratch tracer whose graph breaks are its own (a probe, not the trace)."""

    def graph_break(self, reason: str, loc: str | None = None) -> None:
        Tracer.graph_break(self, reason, loc or user_location())


def _body_needs_grad(outer: Tracer, body_fun: Callable[[Any], Any], leaves: list[Tensor],
                     tree: TreeDef) -> bool:
    """Whether one trip of the body gives a result that needs a gradient (it reads a captured
    tensor that requires grad): the body is run once speculatively, and what it writes into
    existing tensors is put back (its Python side effects happen once more, as a branch not
    taken does)."""
    probe = _Probe(outer, scratch=True)
    carry = [probe.add_carry(t, k)[0] for k, t in enumerate(leaves)]

    def run() -> list[Tensor]:
        return check_carry("while_loop", "init_val", tree, leaves,
                           body_fun(tree_unflatten(tree, carry)), "body_fun's result")

    return _needs_grad(_speculative(probe, run))


def _bounded_while_as_scan(cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any],
                           leaves: list[Tensor], tree: TreeDef, cap: int) -> list[Tensor]:
    """A differentiable bounded while_loop, traced as a `scan` of `max_iterations` steps whose
    carry is (still running, the loop's carry) and whose step is a `cond`: the body runs in a
    trip only while the loop would still be running, else the carry passes through. The scan
    saves the carry each trip began with, stacked, so its backward (ScanGrad, a reverse scan)
    recomputes each trip from it; the recomputed `cond` takes the same side, so a trip not
    taken passes the cotangent through and the body's VJP is never computed for it (a body
    that is inf or NaN past the last trip cannot poison the gradient, as a masked `where`
    would: 0 * inf)."""
    from ..control import cond, scan

    # the carry's types, in stand-ins: the functions live as long as the backward does, and
    # must not hold the trace's tensors (the escape check would see them as Python state)
    like = [Tensor._make(np.broadcast_to(np.empty((), t.dtype.np), t.shape), t._dtype)
            for t in leaves]

    def body(*carry: Tensor) -> tuple[Tensor, ...]:
        out = body_fun(tree_unflatten(tree, list(carry)))
        return tuple(check_carry("while_loop", "init_val", tree, like, out,
                                 "body_fun's result"))

    def step(c: tuple[Tensor, ...], _: Any) -> tuple[tuple[Tensor, ...], None]:
        running, carry = c[0], c[1:]
        p = check_pred("while_loop", cond_fun(tree_unflatten(tree, list(carry))), "cond_fun")
        go = running & p
        return (go, *cond(go, body, lambda *a: a, *carry)), None

    final, _ = scan(step, (tensor(True), *leaves), None, length=cap)
    return list(final[1:])


# ---- scan -----------------------------------------------------------------------------------


def trace_scan(f: Callable[[Any, Any], Any], leaves: list[Tensor], tree: TreeDef,
               x_leaves: list[Tensor], x_tree: TreeDef, n: int,
               reverse: bool) -> tuple[Any, Any]:
    outer = _outer()
    loc = user_location()
    bs = SubTracer(outer)
    carry = [bs.add_carry(t, k) for k, t in enumerate(leaves)]
    first = n - 1 if reverse else 0
    with _installed(None):  # type: ignore[arg-type]  # (the slices are the region's params)
        if n:
            slices = [Tensor._make(x._data[first], x._dtype) for x in x_leaves]
        else:
            slices = [Tensor._make(np.zeros(x.shape[1:], x.dtype.np), x.dtype) for x in x_leaves]
    x_params = [bs.add_param(s, RefSource(s, f"x{k}"), f"x{k}") for k, s in enumerate(slices)]

    def step() -> tuple[list[Tensor], Any]:
        c, y = split_step(f(tree_unflatten(tree, [t for t, _ in carry]),
                            tree_unflatten(x_tree, slices)))
        return check_carry("scan", "init", tree, leaves, c, "f's carry"), y

    if n:
        with _installed(bs):
            new, y = step()
    else:
        new, y = _speculative(bs, step)
    with _installed(bs):
        y_leaves, y_tree = flatten_leaves(y, "f's y", "scan")
        b_results = [bs.value_of(t) for t in new] + [bs.value_of(t) for t in y_leaves]
    real, stacked, starts = _scan_values(f, leaves, tree, x_leaves, x_tree, n, reverse, new,
                                         y_leaves, y_tree)
    n_carry = len(leaves)
    try:
        _check_region_breaks([bs], [carry])
        lay = _Layout([bs], bs)
        # a gradient flows when the carry or xs need one, or the first step's results do
        # (through a captured parameter): then, and only then, the results are differentiable
        wants = STATE.grad_enabled and any(t.requires_grad for t in leaves + x_leaves + new
                                           + y_leaves)
        if wants and (lay.state or lay.grads):
            raise RegionError("a scan that writes tensors in place cannot be differentiated "
                              "under @jit yet")
        ins = lay.operands([outer.value_of(t) for t in leaves]) + \
            [outer.value_of(x) for x in x_leaves]
        # body results: carry, then state, then ys (the node: carry + state, then stacked ys),
        # then, for a gradient, the carry each step began with (saved for the backward)
        state_res = lay.state_results(bs)
        saved = [v for _, v in carry] if wants else []
        body_r = _region(bs, lay.params(bs, [v for _, v in carry], x_params),
                         b_results[:n_carry] + state_res + b_results[n_carry:] + saved)
    except RegionError as e:
        outer.graph_break(f"a scan body the compiled loop cannot hold: {e}", loc)
        _absorb(outer, [bs])
        return tree_unflatten(tree, real), tree_unflatten(y_tree, stacked)
    n_state = len(state_res)
    outs = [Value(t._type()) for t in leaves] + [Value(v.type) for v in state_res] + \
        [Value(TensorType((n, *v.type.shape), v.type.dtype, v.type.device))
         for v in body_r.results[n_carry + n_state:]]
    outer.nodes.append(Node(SCAN, tuple(ins), tuple(outs),
                            {"body": body_r, "n_consts": len(lay.consts),
                             "n_carry": n_carry + n_state, "length": n, "reverse": reverse},
                            loc))
    _absorb(outer, [bs])
    lay.bind_state(outs[n_carry:n_carry + n_state])
    n_y = len(y_leaves)
    res_c = _bind_results(outer, _plain(real), outs[:n_carry])
    res_y = _bind_results(outer, _plain(stacked), outs[n_carry + n_state:][:n_y])
    if wants:
        res_s = _bind_results(outer, starts, outs[n_carry + n_state + n_y:])
        params = [t for _, t, _ in lay.consts if t.requires_grad]
        spec = ScanSpec(f, tree, x_tree, n_carry, len(x_leaves), n, reverse, res_s, x_leaves)
        spec.n_params = len(params)
        out = ScanGrad.apply(spec, *leaves, *x_leaves, *params, *res_c, *res_y)
        res_c, res_y = list(out[:n_carry]), list(out[n_carry:])
    elif _needs_grad(res_c + res_y):
        outer.graph_break(_GRAD_BREAK.format(fn="scan"), loc)
    return tree_unflatten(tree, res_c), tree_unflatten(y_tree, res_y)


def _plain(ts: list[Tensor]) -> list[Tensor]:
    """The same arrays in tensors without autograd history (a traced differentiable scan's
    results get the scan's own backward instead of the eager iterations')."""
    return [Tensor._make(t._data, t._dtype) for t in ts]


def _scan_values(f: Callable[[Any, Any], Any], leaves: list[Tensor], tree: TreeDef,
                 x_leaves: list[Tensor], x_tree: TreeDef, n: int, reverse: bool,
                 new: list[Tensor], y_leaves: list[Tensor],
                 y_tree: TreeDef) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """The traced call's values: the first iteration's, then the rest run eagerly; the ys
    stacked, and the carry each step began with stacked in step order (a backward's input)."""
    from ..functional import stack

    with _installed(SubTracer(_outer(), scratch=True)):
        if not n:
            empty = [Tensor._make(np.zeros((0, *t.shape), t.dtype.np), t.dtype)
                     for t in y_leaves]
            return leaves, empty, [Tensor._make(np.zeros((0, *t.shape), t.dtype.np), t.dtype)
                                   for t in leaves]
        order = list(range(n - 1, -1, -1) if reverse else range(n))
        real, ys, begun = new, [y_leaves], [leaves]
        for t in order[1:]:
            begun.append(real)
            c, yt = split_step(f(tree_unflatten(tree, real), x_slice(x_leaves, x_tree, t)))
            real = check_carry("scan", "init", tree, leaves, c, "f's carry")
            yl, yt_tree = flatten_leaves(yt, "f's y", "scan")
            if yt_tree != y_tree:
                raise TypeError("tracejit.scan: f must return ys of the same structure on "
                                "every iteration")
            ys.append(yl)
        if reverse:
            ys.reverse()
            begun.reverse()
        stacked = [stack([s[k] for s in ys]) for k in range(len(y_leaves))]
        starts = [Tensor._make(np.stack([b[k]._data for b in begun]), leaves[k]._dtype)
                  for k in range(len(leaves))]
        return real, stacked, starts


# ---- cond -----------------------------------------------------------------------------------


def trace_cond(pred: Tensor, true_fun: Callable[..., Any], false_fun: Callable[..., Any],
               operands: tuple[Any, ...]) -> Any:
    outer = _outer()
    loc = user_location()
    _, op_tree = tree_flatten(operands)
    leaves, _ = flatten_leaves(operands, "operands", "cond")
    taken = bool(pred._data)
    pv = outer.value_of(pred)
    subs: dict[bool, SubTracer] = {}
    outs_of: dict[bool, Any] = {}
    carry_of: dict[bool, list[tuple[Tensor, Value]]] = {}
    for branch in (not taken, taken):  # the one not taken first: what it writes is put back
        s = SubTracer(outer)
        # the operands themselves (a branch runs once): the taken one's results keep their
        # autograd history, which a graph break then returns as eager would
        carry = [(t, s.add_param(t, RefSource(t, f"c{k}"), f"c{k}")) for k, t in enumerate(leaves)]
        args = tree_unflatten(op_tree, leaves)
        fn = true_fun if branch else false_fun
        if branch == taken:
            with _installed(s):
                out = fn(*args)
        else:
            out = _speculative(s, lambda fn=fn, args=args: fn(*args))  # type: ignore[misc]
        subs[branch], outs_of[branch], carry_of[branch] = s, out, carry
    t_leaves, t_tree = flatten_leaves(outs_of[True], "true_fun's result", "cond")
    f_leaves, f_tree = flatten_leaves(outs_of[False], "false_fun's result", "cond")
    if t_tree != f_tree or any(a.shape != b.shape or a.dtype is not b.dtype
                               for a, b in zip(t_leaves, f_leaves)):
        shown = ", ".join(f"{a.dtype.short}{list(a.shape)}" for a in t_leaves)
        other = ", ".join(f"{b.dtype.short}{list(b.shape)}" for b in f_leaves)
        raise TypeError(f"tracejit.cond: true_fun and false_fun must return the same structure "
                        f"and types: {t_tree} ({shown}) against {f_tree} ({other}) (at {loc})")
    real = t_leaves if taken else f_leaves
    try:
        _check_region_breaks([subs[True], subs[False]], [carry_of[True], carry_of[False]])
        for s in subs.values():
            if s.grad_writes:
                raise RegionError("a cond branch assigns .grad")
        lay = _Layout([subs[True], subs[False]], None)
        params_req = [t for _, t, _ in lay.consts if t.requires_grad]
        # either branch's results needing a gradient (each ran on the operands themselves)
        wants = STATE.grad_enabled and any(t.requires_grad for t in t_leaves + f_leaves)
        if wants and lay.state:
            raise RegionError("a cond that writes tensors in place cannot be differentiated "
                              "under @jit yet")
        regions = {}
        for branch, lv in ((True, t_leaves), (False, f_leaves)):
            s = subs[branch]
            with _installed(s):
                res = [s.value_of(t) for t in lv]
            params = lay.params(s, [v for _, v in carry_of[branch]])
            state_res = []
            for (k, _t, _), p in zip(lay.state, params[len(lay.consts) + len(leaves):]):
                state_res.append(s.env[k] if k in s.captured else p)
            regions["then" if branch else "else"] = _region(s, params, res + state_res)
        ins = [pv] + lay.operands([outer.value_of(t) for t in leaves])
    except RegionError as e:
        outer.graph_break(f"a cond branch the compiled program cannot hold: {e}", loc)
        _absorb(outer, list(subs.values()))
        return tree_unflatten(t_tree, real)
    n_out = len(real)
    outs = [Value(r.type) for r in regions["then"].results]
    outer.nodes.append(Node(COND, tuple(ins), tuple(outs), regions, loc))
    _absorb(outer, list(subs.values()))
    lay.bind_state(outs[n_out:])
    result = _bind_results(outer, _plain(real) if wants else real, outs[:n_out])
    if wants:
        spec = CondSpec(true_fun, false_fun, op_tree, len(leaves), len(params_req),
                         [t._type() for t in result])
        result = list(CondGrad.apply(spec, pred, *leaves, *params_req, *result))
    elif _needs_grad(result):
        outer.graph_break(_GRAD_BREAK.format(fn="cond"), loc)
    return tree_unflatten(t_tree, result)
