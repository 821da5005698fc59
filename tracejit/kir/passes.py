"""Passes over one kernel of the kernel IR, each `def name(k: Kernel) -> Kernel`, run in order
by `optimise` after lowering (and before any renderer sees the kernel).

- `hoist`: a `Let` whose value does not change inside a loop moves before the loop: a load of
  an input broadcast along the loop's dimension (a bias, a row's scalar read from an array),
  and the arithmetic on such loads. LLVM could do it only if it proved that no store of the
  loop writes that memory, which it cannot for arrays passed in (an output may be an input's
  buffer: the buffer plan). Loads from buffers the loop stores to are never moved. A moved
  load reads in bounds even when the loop runs zero times: it indexes only dimensions of the
  loops around it, and 0 in the array's own size-1 dimensions.
- `scratch_params`: an `Alloc` at the kernel's top level (a row kept between passes, an
  accumulator array) becomes a parameter the caller passes (`Param.scratch`: its shape in the
  domain's extents), filled by a loop nest when it has a fill value: a Python driver passes a
  buffer of its workspace, made once, so the kernel allocates nothing per call."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .. import dtypes as dt
from .ir import Accum, Alloc, Expr, Kernel, Let, Load, Loop, Param, Stmt, Store, Var, sub_exprs


def _free_vars(e: Expr) -> Iterator[str]:
    for x in sub_exprs(e):
        if isinstance(x, Var):
            yield x.name


def _loads(e: Expr) -> Iterator[str]:
    for x in sub_exprs(e):
        if isinstance(x, Load):
            yield x.buf


def _assignments(body: tuple[Stmt, ...], count: dict[str, int]) -> dict[str, int]:
    """How many statements assign each variable, nested loops included."""
    for s in body:
        if isinstance(s, (Let, Accum)):
            count[s.var.name] = count.get(s.var.name, 0) + 1
        elif isinstance(s, Loop):
            count[s.var.name] = count.get(s.var.name, 0) + 1
            _assignments(s.body, count)
    return count


def _stored(body: tuple[Stmt, ...]) -> set[str]:
    out: set[str] = set()
    for s in body:
        if isinstance(s, Store):
            out.add(s.buf)
        elif isinstance(s, Loop):
            out |= _stored(s.body)
    return out


def _hoist_body(body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in body:
        if not isinstance(s, Loop):
            out.append(s)
            continue
        inner = _hoist_body(s.body)
        # what varies inside this loop: its variable and whatever its body assigns, except
        # what is moved out; buffers it writes
        stored = _stored(inner)
        count = _assignments(inner, {s.var.name: 1})
        varying = set(count)
        moved: list[Stmt] = []
        kept: list[Stmt] = []
        for t in inner:
            if isinstance(t, Let) and count[t.var.name] == 1 and \
                    not (set(_free_vars(t.value)) & varying) and \
                    not (set(_loads(t.value)) & stored):
                moved.append(t)
                varying.discard(t.var.name)
            else:
                kept.append(t)
        out += moved
        out.append(Loop(s.var, s.extent, tuple(kept), s.parallel, s.start, s.step))
    return tuple(out)


def hoist(k: Kernel) -> Kernel:
    return Kernel(k.hint, k.params, _hoist_body(k.body), k.note, k.rank, k.meta)


def scratch_params(k: Kernel) -> Kernel:
    params = list(k.params)
    body: list[Stmt] = []
    for s in k.body:
        if not isinstance(s, Alloc):
            body.append(s)
            continue
        params.append(Param(s.buf, s.dtype, len(s.shape), out=True, scratch=s.shape))
        if s.fill is None:
            continue
        idx = tuple(Var(f"{s.buf}_{d}", dt.int64) for d in range(len(s.shape)))
        fill: Stmt = Store(s.buf, idx, s.fill)
        for d in reversed(range(len(s.shape))):
            fill = Loop(idx[d], s.shape[d], (fill,))
        body.append(fill)
    if len(params) == len(k.params):
        return k
    return Kernel(k.hint, tuple(params), tuple(body), k.note, k.rank, k.meta)


PASSES: list[tuple[str, Callable[[Kernel], Kernel]]] = [("hoist", hoist),
                                                        ("scratch_params", scratch_params)]


def optimise(k: Kernel) -> Kernel:
    for _, p in PASSES:
        k = p(k)
    return k


__all__ = ["PASSES", "hoist", "optimise", "scratch_params"]
