"""tril/triu, cumsum, sort/argsort and topk: function forms with torch's names (and `out=`
where torch has it), which are also the Tensor methods. Written with primitives, so they
differentiate and trace for free: the only new ones are the scans of ops/scan.py, `cumsum`
and `argsort`; sort and topk are argsort then gather, whose gradient scatters back through the
indices; tril/triu keep a `where` of a mask built from aranges (a constant under @jit)."""

from __future__ import annotations

from typing import Any

from . import dtypes as dt
from . import return_types
from .creation import arange
from .dispatch import dispatch
from .errors import located
from .functional import _write_out
from .ops import REGISTRY as R
from .ops.registry import norm_dim
from .tensor import Tensor, _from_value


def _t(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else _from_value(x, None, copy=False)


def _int(op: str, name: str, v: Any) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) or hasattr(v, "__index__")):
        raise TypeError(located(f"{op}(): argument '{name}' must be int, not "
                                f"{type(v).__name__}"))
    return int(v.__index__())


# ---- tril / triu --------------------------------------------------------------------------------


def _triangle(op: str, x: Any, diagonal: Any, lower: bool) -> Tensor:
    x = _t(x)
    k = _int(op, "diagonal", diagonal)
    if x.ndim < 2:
        raise RuntimeError(located(f"{op}: input tensor must have at least 2 dimensions, got a "
                                   f"{x.ndim}-d tensor of shape {list(x.shape)}"))
    m, n = x.shape[-2], x.shape[-1]
    # column - row: 0 on the main diagonal
    above = arange(n, device=x.device) - arange(m, device=x.device).unsqueeze(1)
    keep = above <= k if lower else above >= k
    # where, not a multiply by the mask: NaN and inf outside the triangle become 0, as torch
    return x.where(keep, False if x.dtype is dt.bool_ else 0)


def _out(name: str, out: Any, result: Any) -> Any:
    return result if out is None else _write_out(name, out, result)


def tril(input: Any, diagonal: int = 0, *, out: Any = None) -> Tensor:
    """The lower triangle of the last two dims (`diagonal` > 0 keeps that many diagonals above
    the main one, < 0 drops those below); the rest zero.

    >>> import tracejit as torch
    >>> torch.tril(torch.ones(2, 3))
    tensor([[1., 0., 0.],
            [1., 1., 0.]])
    """
    return _out("tril", out, _triangle("tril", input, diagonal, True))


def triu(input: Any, diagonal: int = 0, *, out: Any = None) -> Tensor:
    """The upper triangle of the last two dims; `diagonal` as in tril.

    >>> import tracejit as torch
    >>> torch.triu(torch.ones(2, 3), 1)
    tensor([[0., 1., 1.],
            [0., 0., 1.]])
    """
    return _out("triu", out, _triangle("triu", input, diagonal, False))


# ---- cumsum -------------------------------------------------------------------------------------


def _cumsum(x: Tensor, dim: int, reverse: bool = False) -> Tensor:
    """The cumsum primitive along a normalised `dim` (from the end with `reverse`)."""
    if x.ndim == 0:
        return _cumsum(x.reshape(1), 0, reverse).reshape(())
    return dispatch(R["cumsum"], (x,), {"dim": dim, "reverse": reverse})


def cumsum(input: Any, dim: int, *, dtype: Any = None, out: Any = None) -> Tensor:
    """Running sums along `dim`. Integer and bool inputs give int64, as torch; `dtype` casts
    the input first.

    >>> import tracejit as torch
    >>> torch.cumsum(torch.tensor([1, 2, 3]), 0)
    tensor([1, 3, 6])
    """
    x = _t(input)
    if dtype is not None:
        x = x.to(dtype)
    d = norm_dim("cumsum", _int("cumsum", "dim", dim), x.ndim)
    return _out("cumsum", out, _cumsum(x, d))


# ---- sort / argsort / topk ----------------------------------------------------------------------


def _order(op: str, x: Tensor, dim: Any, descending: bool) -> tuple[Tensor, Tensor, int]:
    """(x as >= 1-d, its stable sort order along the normalised dim, that dim)."""
    d = norm_dim(op, _int(op, "dim", dim), x.ndim)
    y = x.reshape(1) if x.ndim == 0 else x
    return y, dispatch(R["argsort"], (y,), {"dim": d, "descending": bool(descending)}), d


def argsort(input: Any, dim: int = -1, descending: bool = False, *,
            stable: bool = False) -> Tensor:
    """The indices that sort `input` along `dim`. The sort is always stable (ties keep their
    order, which `stable=False` also allows); NaN sorts above +inf, as torch.

    >>> import tracejit as torch
    >>> torch.argsort(torch.tensor([2.0, float("nan"), 1.0]))
    tensor([2, 0, 1])
    """
    x = _t(input)
    idx = _order("argsort", x, dim, descending)[1]
    return idx.reshape(()) if x.ndim == 0 else idx


def sort(input: Any, dim: int = -1, descending: bool = False, *, stable: bool = False,
         out: Any = None) -> return_types.sort:
    """(values, indices) sorted along `dim`, as torch.sort (stable; NaN last ascending, first
    descending). The gradient of `values` goes back to the elements it came from.

    >>> import tracejit as torch
    >>> torch.sort(torch.tensor([3, 1, 2]), descending=True)
    tracejit.return_types.sort(
    values=tensor([3, 2, 1]),
    indices=tensor([0, 2, 1]))
    """
    x = _t(input)
    y, idx, d = _order("sort", x, dim, descending)
    values = y.gather(d, idx)
    if x.ndim == 0:
        values, idx = values.reshape(()), idx.reshape(())
    return _out("sort", out, return_types.sort(values, idx))


def topk(input: Any, k: int, dim: int = -1, largest: bool = True, sorted: bool = True,
         *, out: Any = None) -> return_types.topk:
    """The `k` largest (or smallest) elements along `dim` and their indices, in sorted order
    (also when `sorted=False`, which leaves the order to the implementation). Of equal
    elements the lower index comes first; NaN counts as the largest value, as torch.

    >>> import tracejit as torch
    >>> torch.topk(torch.tensor([1.0, 5.0, 3.0]), 2).indices
    tensor([1, 2])
    """
    x = _t(input)
    k = _int("topk", "k", k)
    dim = -1 if dim is None else _int("topk", "dim", dim)
    y, order, d = _order("topk", x, dim, largest)
    n = y.shape[d]
    if not 0 <= k <= n:
        raise RuntimeError(located(f"topk: selected index k out of range: k={k}, but dimension "
                                   f"{dim} has size {n} (k must be in [0, {n}])"))
    # (a 0-d input gives itself, even for k=0, as torch)
    idx = order.narrow(d, 0, 1 if x.ndim == 0 else k)
    values = y.gather(d, idx)
    if x.ndim == 0:
        values, idx = values.reshape(()), idx.reshape(())
    return _out("topk", out, return_types.topk(values, idx))


# ---- Tensor methods -----------------------------------------------------------------------------


def _tril_(self: Tensor, diagonal: int = 0) -> Tensor:
    return self._inplace(tril(self, diagonal))


def _triu_(self: Tensor, diagonal: int = 0) -> Tensor:
    return self._inplace(triu(self, diagonal))


for _n, _f in {"tril": tril, "triu": triu, "tril_": _tril_, "triu_": _triu_, "cumsum": cumsum,
               "_cumsum": _cumsum, "argsort": argsort, "sort": sort, "topk": topk}.items():
    setattr(Tensor, _n, _f)
