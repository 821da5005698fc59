"""einsum, as torch.einsum: a composite of permute, reshape, slice (diagonals), sum, mul and
matmul, so it differentiates, traces and compiles with no op of its own.

The plan, for operands contracted left to right as torch does by default: within an operand,
a repeated subscript takes the diagonal and a subscript no other operand and not the output
uses is summed out; each pair of operands is then one matmul over (shared and kept, rows,
contracted) x (shared and kept, contracted, columns), or a broadcast multiply (and sum) where
there is nothing to contract, where the matmul would be a batch of dot products, or for
integer operands (BLAS has none). Subscripts of size 1 broadcast against any size, as torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from . import dtypes as dt
from .errors import located
from .ops.registry import DTypeError
from .tensor import Tensor, _from_value

Labels = list[str]  # one label a dimension: a letter, or ".k" for the k-th ellipsis dim


def _error(msg: str) -> RuntimeError:
    return RuntimeError(located(f"einsum(): {msg}"))


def _term(term: str, where: str) -> tuple[list[str], bool]:
    """A term's letters, with "..." standing as one "..." item; and whether it had one."""
    out: list[str] = []
    i, ellipsis = 0, False
    while i < len(term):
        c = term[i]
        if c == ".":
            if term[i:i + 3] != "..." or ellipsis:
                raise _error(f"found '.' for {where} that is not part of any ellipsis")
            out.append("...")
            ellipsis, i = True, i + 3
            continue
        if not ("a" <= c <= "z" or "A" <= c <= "Z"):
            raise _error(f"invalid subscript {c!r} given in the equation string for {where}, "
                         "subscripts must be in [a-zA-Z]")
        out.append(c)
        i += 1
    return out, ellipsis


def _ellipsis(k: int, width: int) -> Labels:
    """Labels of `k` ellipsis dims, right-aligned among `width` (so they broadcast)."""
    return [f".{j}" for j in range(width - k, width)]


def parse(equation: str, ndims: Sequence[int]) -> tuple[list[Labels], Labels]:
    """Each operand's labels (one per dim) and the output's, with ellipses expanded."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        more = "fewer" if len(ndims) < len(terms) else "more"
        raise _error(f"{more} operands were provided than specified in the equation "
                     f"({len(ndims)} operands for {len(terms)} terms in {equation!r})")
    parsed = [_term(t, f"operand {i}") for i, t in enumerate(terms)]
    width = 0
    for i, ((letters, has), nd) in enumerate(zip(parsed, ndims)):
        named = len(letters) - has
        if named > nd or (not has and named != nd):
            raise _error(f"the number of subscripts in the equation ({named}) does not match "
                         f"the number of dimensions ({nd}) for operand {i}"
                         f"{'' if has else ' and no ellipsis was given'}")
        width = max(width, nd - named if has else 0)
    inputs: list[Labels] = []
    for (letters, _), nd in zip(parsed, ndims):
        k = nd - (len(letters) - ("..." in letters))
        labels: Labels = []
        for c in letters:
            labels += _ellipsis(k, width) if c == "..." else [c]
        inputs.append(labels)
    if arrow:
        out_letters, has = _term(rhs, "the output")
        output: Labels = []
        for c in out_letters:
            output += _ellipsis(width, width) if c == "..." else [c]
        seen = {c for labels in inputs for c in labels}
        for c in output:
            if c not in seen and not c.startswith("."):
                raise _error(f"output subscript {c} does not appear in the equation for any "
                             "input operand")
            if output.count(c) > 1:
                raise _error(f"output subscript {c} appears more than once in the output")
    else:  # implicit: the ellipsis dims, then the letters used once, in alphabetical order
        count: dict[str, int] = {}
        for labels in inputs:
            for c in labels:
                count[c] = count.get(c, 0) + 1
        output = _ellipsis(width, width) + sorted(c for c, n in count.items()
                                                  if n == 1 and not c.startswith("."))
    return inputs, output


def _sizes(ts: Sequence[Tensor], inputs: Sequence[Labels]) -> dict[str, int]:
    """Each label's size after broadcasting; raises when two sizes are neither equal nor 1."""
    size: dict[str, int] = {}
    for i, (t, labels) in enumerate(zip(ts, inputs)):
        first: dict[str, int] = {}
        for c, n in zip(labels, t.shape):
            if c in first and first[c] != n:
                raise _error(f"subscript {c} is repeated for operand {i} but the sizes don't "
                             f"match, {n} != {first[c]}")
            first[c] = n
            if size.get(c, 1) != 1 and n != 1 and size[c] != n:
                what = "dimension covered by ellipsis" if c.startswith(".") else f"subscript {c}"
                raise _error(f"{what} has size {n} for operand {i} which does not broadcast "
                             f"with previously seen size {size[c]}")
            if n != 1 or c not in size:
                size[c] = n
    return size


def _diagonal(x: Tensor, i: int, j: int) -> Tensor:
    """The diagonal of dims i < j (equal sizes), as a new last dim: the two moved last,
    flattened, every (n+1)-th element."""
    n = x.shape[i]
    rest = [d for d in range(x.ndim) if d not in (i, j)]
    y = x.permute(*rest, i, j)
    y = y.reshape(tuple(y.shape[:-2]) + (n * n,))
    m = y.ndim
    return y._slice(starts=(0,) * m, stops=tuple(y.shape), steps=(1,) * (m - 1) + (n + 1,))


def _prepare(x: Tensor, labels: Labels, needed: set[str]) -> tuple[Tensor, Labels]:
    """One operand with its repeated labels turned into diagonals and the labels nothing
    else needs summed out."""
    labels = list(labels)
    for c in dict.fromkeys(labels):
        while labels.count(c) > 1:
            i = labels.index(c)
            j = labels.index(c, i + 1)
            x = _diagonal(x, i, j)
            labels = [b for k, b in enumerate(labels) if k not in (i, j)] + [c]
    return _sum_out(x, labels, needed)


def _sum_out(x: Tensor, labels: Labels, needed: set[str]) -> tuple[Tensor, Labels]:
    drop = [k for k, c in enumerate(labels) if c not in needed]
    if not drop:
        return x, labels
    return x.sum(tuple(drop)), [c for c in labels if c in needed]


def _permute(x: Tensor, labels: Labels, order: Labels) -> Tensor:
    perm = [labels.index(c) for c in order]
    return x if perm == list(range(x.ndim)) else x.permute(*perm)


def _mul(a: Tensor, la: Labels, b: Tensor, lb: Labels,
         keep: set[str]) -> tuple[Tensor, Labels]:
    """Broadcast multiply over the union of labels, then sum the ones not kept. In the
    product's dtype, as torch's pairwise contraction (a bmm) keeps int32; sums outside a pair
    (`_sum_out` alone) give int64, as torch's `sum` does there."""
    order = la + [c for c in lb if c not in la]
    a = a.reshape(tuple(a.shape) + (1,) * (len(order) - len(la)))
    in_b = [c for c in order if c in lb]
    b = _permute(b, lb, in_b)
    b = b.reshape(tuple(b.shape[in_b.index(c)] if c in lb else 1 for c in order))
    prod = a * b
    out, labels = _sum_out(prod, order, keep)
    return (out if out.dtype is prod.dtype else out.to(prod.dtype)), labels


def _broadcast(x: Tensor, labels: Labels, other: Labels, size: dict[str, int]) -> Tensor:
    """x with its size-1 dims that the other operand shares expanded to their full size."""
    shape = tuple(size[c] if c in other else n for c, n in zip(labels, x.shape))
    return x if shape == tuple(x.shape) else x.expand(shape)


def _contract(a: Tensor, la: Labels, b: Tensor, lb: Labels, keep: set[str],
              size: dict[str, int]) -> tuple[Tensor, Labels]:
    """Two operands as one, with the labels in `keep`. Every label of each is in `keep` or
    in the other (`_prepare` summed out the rest), so the shared ones not kept are the
    contracted ones and all others are kept."""
    batch = [c for c in la if c in lb and c in keep]
    inner = [c for c in la if c in lb and c not in keep]
    rows = [c for c in la if c not in lb]
    cols = [c for c in lb if c not in la]
    if not inner or not a.dtype.is_floating_point or (batch and not rows and not cols):
        return _mul(a, la, b, lb, keep)
    a, b = _broadcast(a, la, lb, size), _broadcast(b, lb, la, size)
    nb, nm, nk, nn = (math.prod(size[c] for c in g) for g in (batch, rows, inner, cols))
    lead = (nb,) if batch else ()
    am = _permute(a, la, batch + rows + inner).reshape(lead + (nm, nk))
    bm = _permute(b, lb, batch + inner + cols).reshape(lead + (nk, nn))
    out = am.matmul(bm).reshape(tuple(size[c] for c in batch + rows + cols))
    return out, batch + rows + cols


def einsum(equation: str, *operands: Any) -> Tensor:
    """Einstein summation, as torch.einsum: `equation` names each operand's dims with letters
    (`...` for any number of broadcast dims), `->` the output's (implicit: the letters used
    once, sorted); repeated letters in one operand take a diagonal; every other letter is
    summed. Operands may also come as one list.

    >>> import tracejit as torch
    >>> a, b = torch.ones(2, 3), torch.ones(3, 4)
    >>> torch.einsum("ij,jk->ik", a, b).shape
    tracejit.Size([2, 4])
    >>> torch.einsum("ii", torch.eye(3))
    tensor(3.)
    """
    if not isinstance(equation, str):
        raise TypeError(located(f"einsum(): the equation must be a str, got "
                                f"{type(equation).__name__}"))
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ts = [o if isinstance(o, Tensor) else _from_value(o, None, copy=False) for o in operands]
    if not ts:
        raise _error("must provide at least one operand")
    for i, t in enumerate(ts):
        if t.dtype is not ts[0].dtype:
            raise DTypeError(f"einsum(): expected scalar type {ts[0].dtype.name} but found "
                             f"{t.dtype.name} (operand {i}); all operands must have one dtype")
    if ts[0].dtype is dt.bool_:
        raise DTypeError("einsum(): not implemented for bool tensors; use .int() or .float()")
    inputs, output = parse(equation, [t.ndim for t in ts])
    size = _sizes(ts, inputs)
    out_set = set(output)
    ops = []
    for i, (t, labels) in enumerate(zip(ts, inputs)):
        others = {c for k, ls in enumerate(inputs) if k != i for c in ls}
        ops.append(_prepare(t, labels, out_set | others))
    x, lx = ops[0]
    for k in range(1, len(ops)):
        later = {c for _, ls in ops[k + 1:] for c in ls}
        x, lx = _contract(x, lx, *ops[k], out_set | later, size)
    return _permute(x, lx, output)
