"""tril/triu, cumsum, sort/argsort/topk and einsum beyond their rows in tests/test_ops.py (which
check values against NumPy, gradients against finite differences, eager against @jit and
against torch on ordinary inputs): the inputs that break sorts and compilers (NaN, ties, empty
and 0-d tensors, integer dtypes, k=0, diagonals beyond the matrix), the named tuples, the
errors, einsum's equation table in float64 against numpy.einsum and torch, and each op
compiled (no fallback, in both driver modes) equal to eager on values that change between
calls."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as tj

nan, inf = math.nan, math.inf


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


def _np(t: Any) -> np.ndarray:
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def _same(mine: Any, theirs: Any) -> None:
    """Values (NaN where NaN), shape and dtype name equal."""
    a, b = _np(mine), _np(theirs)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert str(mine.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
    np.testing.assert_array_equal(a, b)


# ---- sort / argsort / topk: NaN, ties, dtypes ------------------------------------------------

NAN_ROWS = [
    [3.0, nan, 1.0, -inf, nan, inf, 0.0, -0.0, 1.0],
    [nan, nan, nan],
    [2.0, 2.0, 2.0, 2.0],
    [],
]


@pytest.mark.torch
@pytest.mark.parametrize("row", NAN_ROWS, ids=["mixed", "all_nan", "all_tied", "empty"])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_nan_and_ties_match_torch(torch: Any, row: list[float], descending: bool) -> None:
    # torch puts NaN last ascending and first descending; stable keeps ties in index order
    mine = tj.sort(tj.tensor(row), descending=descending, stable=True)
    theirs = torch.sort(torch.tensor(row), descending=descending, stable=True)
    _same(mine.values, theirs.values)
    _same(mine.indices, theirs.indices)
    _same(tj.argsort(tj.tensor(row), descending=descending, stable=True),
          torch.argsort(torch.tensor(row), descending=descending, stable=True))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "float64"])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_ties_stable_match_torch(torch: Any, dtype: str, dim: int, descending: bool) -> None:
    a = np.random.default_rng(3).integers(0, 3, (5, 7)).astype(dtype)
    mine = tj.tensor(a).sort(dim=dim, descending=descending, stable=True)
    theirs = torch.tensor(a).sort(dim=dim, descending=descending, stable=True)
    _same(mine.values, theirs.values)
    _same(mine.indices, theirs.indices)


@pytest.mark.torch
@pytest.mark.parametrize("largest", [True, False])
def test_topk_nan_counts_as_largest(torch: Any, largest: bool) -> None:
    row = [1.0, nan, 5.0, -inf, 3.0]
    mine = tj.topk(tj.tensor(row), 3, largest=largest)
    theirs = torch.topk(torch.tensor(row), 3, largest=largest)
    _same(mine.values, theirs.values)
    _same(mine.indices, theirs.indices)


def test_topk_ties_take_the_lower_index_first() -> None:
    v, i = tj.tensor([1, 3, 3, 0, 3]).topk(2)
    assert v.tolist() == [3, 3] and i.tolist() == [1, 2]
    v, i = tj.tensor([2.0, 0.0, 0.0, 1.0]).topk(2, largest=False)
    assert v.tolist() == [0.0, 0.0] and i.tolist() == [1, 2]


@pytest.mark.torch
@pytest.mark.parametrize("shape,k,dim", [((0,), 0, 0), ((3, 0), 0, 1), ((0, 4), 2, 1),
                                         ((4,), 0, -1), ((1, 1), 1, 0), ((), 1, 0),
                                         ((), 0, -1)])
def test_topk_edge_shapes_match_torch(torch: Any, shape: tuple[int, ...], k: int,
                                      dim: int) -> None:
    a = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    mine = tj.tensor(a).topk(k, dim)
    theirs = torch.tensor(a).topk(k, dim)
    _same(mine.values, theirs.values)
    _same(mine.indices, theirs.indices)


@pytest.mark.parametrize("k", [5, -1])
def test_topk_k_out_of_range_is_a_clear_error(k: int) -> None:
    with pytest.raises(RuntimeError, match=r"topk: selected index k out of range: k=-?\d, but "
                       r"dimension -1 has size 4 \(k must be in \[0, 4\]\).*test_api_ops"):
        tj.arange(4.0).topk(k)


def test_sort_and_topk_return_named_tuples() -> None:
    x = tj.tensor([[3.0, 1.0, 2.0]])
    for res, kind in ((x.sort(), tj.return_types.sort), (tj.topk(x, 2), tj.return_types.topk)):
        assert isinstance(res, kind) and isinstance(res, tuple)
        values, indices = res
        assert values is res.values and indices is res.indices and res[1] is indices
        assert indices.dtype is tj.int64 and values.dtype is tj.float32
        assert repr(res).startswith(f"tracejit.return_types.{kind.__name__}(\nvalues=tensor(")


@pytest.mark.torch
def test_sort_0d_and_empty_match_torch(torch: Any) -> None:
    for a in (np.array(2.5, np.float32), np.zeros((0,), np.float32),
              np.zeros((2, 0), np.float32)):
        for dim in (0, -1):
            mine, theirs = tj.tensor(a).sort(dim), torch.tensor(a).sort(dim)
            _same(mine.values, theirs.values)
            _same(mine.indices, theirs.indices)


def test_sort_dim_out_of_range() -> None:
    with pytest.raises(IndexError, match="dimension out of range"):
        tj.ones(2, 3).sort(2)
    with pytest.raises(IndexError, match="dimension out of range"):
        tj.ones(2, 3).cumsum(-3)


# ---- torch's parameter names and out= --------------------------------------------------------

# torch's documented signatures (the first line of torch.X.__doc__), names in order
SIGNATURES = {
    "tril": "input diagonal out", "triu": "input diagonal out",
    "cumsum": "input dim dtype out", "sort": "input dim descending stable out",
    "argsort": "input dim descending stable out", "topk": "input k dim largest sorted out",
    "einsum": "equation operands",
}


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_parameter_names_match_torchs(name: str) -> None:
    assert list(inspect.signature(getattr(tj, name)).parameters) == SIGNATURES[name].split()


@pytest.mark.torch
@pytest.mark.parametrize("name", list(SIGNATURES))
def test_signature_table_is_torchs(torch: Any, name: str) -> None:
    first = getattr(torch, name).__doc__.strip().splitlines()[0]
    # out= is often left out of the first doc line (argsort: only its stable= form takes it)
    assert [p for p in SIGNATURES[name].split() if p not in first and p != "out"] == []


def test_out_writes_into_the_given_tensors() -> None:
    x = tj.tensor([[3.0, 1.0, 2.0], [0.0, -1.0, 5.0]])
    o = tj.zeros(2, 3)
    assert tj.tril(x, out=o) is o and o.tolist() == [[3.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    assert tj.triu(x, 1, out=o) is o and o.tolist() == [[0.0, 1.0, 2.0], [0.0, 0.0, 5.0]]
    assert tj.cumsum(x, 1, out=o) is o and o.tolist() == [[3.0, 4.0, 6.0], [0.0, -1.0, 4.0]]
    v, i = tj.zeros(2, 3), tj.zeros(2, 3, dtype=tj.int64)
    r = tj.sort(x, out=(v, i))
    assert isinstance(r, tj.return_types.sort) and r.values is v and r.indices is i
    assert i.tolist() == [[1, 2, 0], [1, 0, 2]]
    v, i = tj.empty(0), tj.empty(0, dtype=tj.int64)  # empty outs are resized, as torch
    r = tj.topk(x, 2, out=(v, i))
    assert isinstance(r, tj.return_types.topk) and v.tolist() == [[3.0, 2.0], [5.0, 0.0]]
    assert i.tolist() == [[0, 2], [2, 0]]
    with pytest.raises(RuntimeError, match="out= has shape"):
        tj.cumsum(x, 0, out=tj.zeros(4))


def test_topk_dim_defaults_to_the_last() -> None:
    x = tj.tensor([[1.0, 4.0, 2.0], [6.0, 5.0, 0.0]])
    assert tj.topk(x, 1).indices.tolist() == [[1], [0]]
    assert x.topk(1, dim=None).indices.tolist() == [[1], [0]]


# ---- gradients through the indices, against torch ---------------------------------------------


def _grad_pair(torch: Any, fn: Callable[[Any, Any], Any], a: np.ndarray) -> None:
    """fn(m, x) for tracejit and torch in float64: equal values and gradients of sum(w * out)."""
    outs = []
    for m in (tj, torch):
        x = m.tensor(a, dtype=m.float64, requires_grad=True)
        y = fn(m, x)
        w = m.tensor(np.arange(y.numel(), dtype=np.float64).reshape(tuple(y.shape)) % 5 - 2)
        (g,) = m.autograd.grad((y * w).sum(), x)
        outs.append((y.detach().numpy(), g.numpy()))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-12)


GRADS = {
    "sort_values": lambda m, x: x.sort(dim=0, descending=True).values,
    "sort_ties": lambda m, x: m.sort(x.round(), dim=-1, stable=True).values,
    "topk_values": lambda m, x: x.topk(2, dim=1).values,
    "topk_smallest": lambda m, x: m.topk(x, 3, dim=0, largest=False)[0],
    "cumsum": lambda m, x: x.cumsum(1),
    "cumsum_neg": lambda m, x: m.cumsum(x * x, -2),
    "tril": lambda m, x: x.tril(-1),
    "triu": lambda m, x: m.triu(x, 2),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(GRADS))
def test_gradients_match_torch(torch: Any, name: str) -> None:
    a = np.random.default_rng(1).uniform(-3, 3, (4, 5))
    _grad_pair(torch, GRADS[name], a)


def test_cumsum_gradient_is_the_reversed_cumsum() -> None:
    x = tj.randn(3, 6, dtype=tj.float64, requires_grad=True)
    g = tj.randn(3, 6, dtype=tj.float64)
    (gx,) = tj.autograd.grad(x.cumsum(1), x, g)
    want = np.flip(np.cumsum(np.flip(g.numpy(), 1), 1), 1)
    np.testing.assert_allclose(gx.numpy(), want, rtol=1e-14)


def test_sort_gradient_scatters_back_through_the_indices() -> None:
    x = tj.tensor([3.0, 1.0, 2.0], requires_grad=True)
    x.sort().values.backward(tj.tensor([10.0, 20.0, 30.0]))
    assert x.grad.tolist() == [30.0, 10.0, 20.0]
    x.grad = None
    x.topk(1).values.sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0]


# ---- cumsum and tril/triu: dtypes and edge shapes -----------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["bool", "int32", "int64", "float16", "float32", "float64"])
def test_cumsum_dtypes_match_torch(torch: Any, dtype: str) -> None:
    # integers and bools sum in int64, as torch; float16 accumulates in float32 as torch's CPU
    # kernel does (a float16 accumulator would lose the 0.1s after a few thousand)
    a = (np.random.default_rng(0).uniform(0, 3, (2, 3000)) + 0.1).astype(dtype)
    mine, theirs = tj.tensor(a).cumsum(1), torch.tensor(a).cumsum(1)
    assert str(mine.dtype) == str(theirs.dtype).replace("torch", "tracejit")
    np.testing.assert_allclose(mine.numpy().astype(np.float64),
                               theirs.numpy().astype(np.float64), rtol=1e-3 if dtype ==
                               "float16" else 1e-6)
    _same(tj.cumsum(tj.tensor(a), 0, dtype=tj.float64), torch.cumsum(torch.tensor(a), 0,
                                                                     dtype=torch.float64))


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (1,), ()])
def test_cumsum_empty_and_0d_match_torch(torch: Any, shape: tuple[int, ...]) -> None:
    a = np.ones(shape, np.float32)
    for dim in range(-max(len(shape), 1), max(len(shape), 1)):
        _same(tj.tensor(a).cumsum(dim), torch.tensor(a).cumsum(dim))


@pytest.mark.torch
@pytest.mark.parametrize("diagonal", [-6, -2, -1, 0, 1, 3, 6])
@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (2, 3, 3), (0, 3), (3, 0), (1, 1)])
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_tril_triu_match_torch(torch: Any, diagonal: int, shape: tuple[int, ...],
                               dtype: str) -> None:
    a = np.random.default_rng(2).uniform(-2, 2, shape).round().astype(dtype)
    for name in ("tril", "triu"):
        _same(getattr(tj, name)(tj.tensor(a), diagonal),
              getattr(torch, name)(torch.tensor(a), diagonal))
        _same(getattr(tj.tensor(a), name)(diagonal=diagonal),
              getattr(torch.tensor(a), name)(diagonal=diagonal))


def test_tril_zeroes_nan_and_inf_outside_the_triangle() -> None:
    x = tj.tensor([[nan, inf], [-inf, nan]])
    np.testing.assert_array_equal(x.tril().numpy(), [[nan, 0.0], [-inf, nan]])
    np.testing.assert_array_equal(x.triu(1).numpy(), [[0.0, inf], [0.0, 0.0]])


def test_tril_in_place() -> None:
    x = tj.ones(3, 3)
    v = x._version_value
    assert x.tril_(-1) is x and x._version_value > v
    np.testing.assert_array_equal(x.numpy(), np.tril(np.ones((3, 3)), -1))
    y = tj.ones(2, 3)
    y.triu_()
    np.testing.assert_array_equal(y.numpy(), np.triu(np.ones((2, 3))))


def test_tril_errors() -> None:
    with pytest.raises(RuntimeError, match="tril: input tensor must have at least 2 dim"):
        tj.ones(3).tril()
    with pytest.raises(TypeError, match="argument 'diagonal' must be int"):
        tj.ones(3, 3).triu(0.5)


# ---- einsum: the equation table in float64 against numpy.einsum and torch --------------------

EINSUM = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),              # matmul
    ("ij,jk", [(3, 4), (4, 5)]),                  # implicit output
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),     # batched matmul
    ("i,j->ij", [(3,), (4,)]),                    # outer
    ("i,i->", [(5,), (5,)]),                      # dot
    ("ii", [(4, 4)]),                             # trace
    ("ii->i", [(4, 4)]),                          # diagonal
    ("iij->ji", [(3, 3, 2)]),                     # diagonal with a kept index
    ("ij->ji", [(3, 4)]),                         # transpose
    ("ijk->j", [(2, 3, 4)]),                      # sum over indices
    ("ij->", [(3, 4)]),                           # sum of all
    ("ij,ij->ij", [(3, 4), (3, 4)]),              # Hadamard
    ("bi,bi->b", [(3, 4), (3, 4)]),               # batched dot
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),  # bilinear
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),  # attention scores
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),  # attention values
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),  # ellipsis, broadcast
    ("...ij->...ji", [(2, 1, 3, 4)]),             # ellipsis transpose
    ("i...->...", [(3, 2, 4)]),                   # ellipsis, implicit
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),   # chain
    ("ij,kl->", [(2, 3), (4, 5)]),                # two unrelated sums
    ("Ab,bA", [(2, 3), (3, 2)]),                  # upper case letters
    (" i j , j k -> i k ", [(2, 3), (3, 4)]),     # spaces
    ("ij,jk->ik", [(0, 4), (4, 2)]),              # empty rows
    ("ij,jk->ik", [(3, 0), (0, 2)]),              # empty contraction: zeros
    ("i,i->", [(0,), (0,)]),
    ("ii", [(0, 0)]),
]


def _operands(shapes: list[tuple[int, ...]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


@pytest.mark.parametrize("eq,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum_matches_numpy_in_float64(eq: str, shapes: list[tuple[int, ...]]) -> None:
    arrays = _operands(shapes)
    got = tj.einsum(eq, *[tj.tensor(a) for a in arrays])
    want = np.einsum(eq.replace(" ", ""), *arrays)
    assert got.dtype is tj.float64 and tuple(got.shape) == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("eq,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum_values_and_gradients_match_torch(torch: Any, eq: str,
                                                  shapes: list[tuple[int, ...]]) -> None:
    arrays = _operands(shapes)
    res = []
    for m in (tj, torch):
        xs = [m.tensor(a, requires_grad=True) for a in arrays]
        y = m.einsum(eq, *xs)
        w = m.tensor(_operands([tuple(y.shape)], 1)[0])
        grads = m.autograd.grad((y * w).sum(), xs, allow_unused=True)
        res.append([y.detach().numpy()] + [g.numpy() for g in grads])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.torch
def test_einsum_size_one_broadcasts_like_torch(torch: Any) -> None:
    for eq, shapes in (("ij,jk->ik", [(2, 1), (3, 4)]), ("ij,ij->ij", [(2, 1), (2, 4)]),
                       ("bij,bjk->bik", [(1, 2, 3), (4, 3, 5)]),
                       ("...i,...i->...", [(2, 1, 3), (4, 3)])):
        arrays = _operands(shapes)
        got = tj.einsum(eq, *[tj.tensor(a) for a in arrays])
        want = torch.einsum(eq, *[torch.tensor(a) for a in arrays])
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["int64", "int32", "float32"])
def test_einsum_dtypes_match_torch(torch: Any, dtype: str) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(-3, 4, (3, 4)).astype(dtype), rng.integers(-3, 4, (4, 2)).astype(dtype)
    for eq in ("ij,jk->ik", "ij,jk->", "ii->i", "ij,kj->ikj"):
        args = (a, b) if "," in eq else (a[:3, :3],)
        if eq == "ij,kj->ikj":
            args = (a, a)
        _same(tj.einsum(eq, *[tj.tensor(x) for x in args]),
              torch.einsum(eq, *[torch.tensor(x) for x in args]))


def test_einsum_accepts_a_list_of_operands() -> None:
    a, b = tj.randn(2, 3), tj.randn(3, 4)
    np.testing.assert_allclose(tj.einsum("ij,jk->ik", [a, b]).numpy(), (a @ b).numpy(),
                               rtol=1e-6)


@pytest.mark.parametrize("eq,shapes,error,match", [
    ("ij,jk->ik", [(2, 3)], RuntimeError, "more operands were provided|fewer operands"),
    ("ij", [(2, 3), (3, 2)], RuntimeError, "more operands were provided"),
    ("i1", [(2, 2)], RuntimeError, "invalid subscript '1'.*must be in \\[a-zA-Z\\]"),
    ("i..j", [(2, 3)], RuntimeError, "found '.' for operand 0 that is not part of any ellipsis"),
    ("ij", [(2, 3, 4)], RuntimeError, "number of subscripts in the equation \\(2\\) does not "
     "match the number of dimensions \\(3\\) for operand 0 and no ellipsis was given"),
    ("ij->k", [(2, 3)], RuntimeError, "output subscript k does not appear"),
    ("ij->ii", [(2, 3)], RuntimeError, "output subscript i appears more than once"),
    ("ii->i", [(2, 3)], RuntimeError, "subscript i is repeated for operand 0 but the sizes "
     "don't match, 3 != 2"),
    ("ij,jk->ik", [(2, 3), (4, 4)], RuntimeError, "subscript j has size 4 for operand 1 which "
     "does not broadcast with previously seen size 3"),
])
def test_einsum_errors(eq: str, shapes: list[tuple[int, ...]], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        tj.einsum(eq, *[tj.ones(*s) for s in shapes])


def test_einsum_dtype_errors() -> None:
    with pytest.raises(RuntimeError, match="expected scalar type float32 but found float64"):
        tj.einsum("i,i->", tj.ones(3), tj.ones(3, dtype=tj.float64))
    with pytest.raises(RuntimeError, match="not implemented for bool"):
        tj.einsum("i,i->", tj.ones(3).bool(), tj.ones(3).bool())


# ---- under @jit: compiled, no fallback, equal to eager on new values ---------------------------

JIT = {
    "tril_triu": (lambda x: x.tril(-1) + tj.triu(x, 2) * 2, [(4, 5)]),
    "tril_batched": (lambda x: tj.tril(x, 1), [(2, 3, 4)]),
    "cumsum": (lambda x: (x.cumsum(0), tj.cumsum(x, -1), x.long().cumsum(1),
                          (x > 0).cumsum(0), x.int().cumsum(-1)), [(4, 5)]),
    "cumsum_3d": (lambda x: x.cumsum(1), [(2, 3, 4)]),
    "sort": (lambda x: (tj.sort(x, 0, descending=True), x.sort(stable=True),
                        x.argsort(dim=0)), [(4, 5)]),
    "sort_ints": (lambda x: (x.round().long().sort(dim=1, stable=True),
                             x.round().long().sort(0, descending=True, stable=True),
                             (x > 0).sort(1, stable=True)), [(4, 6)]),
    "topk": (lambda x: (x.topk(2, 0), tj.topk(x, 3, largest=False), x.topk(0)), [(4, 5)]),
    "einsum": (lambda a, b: (tj.einsum("ij,kj->ik", a, b), tj.einsum("ii->i", a[:, :4]),
                             tj.einsum("ij,ij->i", a, a), tj.einsum("ij->", b),
                             tj.einsum("ij,kj", a.long(), b.long())), [(4, 5), (3, 5)]),
    "einsum_attention": (lambda q, k: tj.einsum("bhqd,bhkd->bhqk", q, k).softmax(-1),
                         [(2, 2, 3, 4), (2, 2, 5, 4)]),
    "einsum_bilinear": (lambda x, w, y: tj.einsum("bn,anm,bm->ba", x, w, y),
                        [(2, 3), (4, 3, 5), (2, 5)]),
}


def _values(shapes: list[tuple[int, ...]], call: int) -> list[Any]:
    """Inputs for one call: new values each call, with NaN, ties and infinities mixed in."""
    rng = np.random.default_rng(call)
    out = []
    for s in shapes:
        a = rng.uniform(-3, 3, s).astype(np.float32)
        flat = a.reshape(-1)
        flat[:: 7] = np.round(flat[:: 7])  # ties
        if call == 2 and flat.size > 4:
            flat[1], flat[3] = np.nan, -np.inf  # NaN sorts last, -inf first
        out.append(tj.tensor(a))
    return out


def _flat(o: Any) -> list[Any]:
    if isinstance(o, (tuple, list)):
        return [y for x in o for y in _flat(x)]
    return [o]


def _check_jit(fn: Callable[..., Any], shapes: list[tuple[int, ...]]) -> Any:
    jf = tj.jit(fn)
    for call in range(4):
        xs = _values(shapes, call)
        got, want = jf(*xs), fn(*xs)
        assert type(got) is type(want)
        for g, w in zip(_flat(got), _flat(want), strict=True):
            assert g.dtype is w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-5,
                                       equal_nan=True, err_msg=f"call {call}")
    info = jf.cache_info()
    assert info.fallbacks == 0 and info.traces == 1 and info.hits == 3, info
    report = jf.explain()
    assert all(e.program is not None for e in report.entries), report
    return jf


# (NaN inputs: casting them to int64 and multiplying them warn in NumPy, eagerly and compiled)
NAN_WARNINGS = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@NAN_WARNINGS
@pytest.mark.parametrize("driver", ["python", "native"])
@pytest.mark.parametrize("name", list(JIT))
def test_compiled_equals_eager(name: str, driver: str) -> None:
    fn, shapes = JIT[name]
    with tj.flags(driver=driver):
        _check_jit(fn, shapes)


def test_compiled_program_calls_the_scan_kernels() -> None:
    fn, shapes = JIT["sort"]
    jf = tj.jit(fn)
    xs = _values(shapes, 0)
    jf(*xs)
    src = jf.source(*xs)
    assert "argsort_rows(" in src and "gather_last(" in src


@NAN_WARNINGS
def test_compiled_gradients_equal_eager() -> None:
    def step(x: Any, w: Any) -> Any:
        y = tj.einsum("ij,jk->ik", x, w)
        loss = (y.sort(dim=1).values * tj.arange(3.0)).sum() + y.topk(2, 0).values.sum() + \
            y.cumsum(1).pow(2).sum() + y.tril(-1).pow(2).sum()
        return tj.autograd.grad(loss, (x, w))

    jf = tj.jit(step)
    for call in range(3):
        x, w = _values([(4, 5), (5, 3)], call)
        x.requires_grad_(True)
        w.requires_grad_(True)
        got, want = jf(x, w), step(x, w)
        for g, e in zip(got, want):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-4,
                                       equal_nan=True)
    assert jf.cache_info().fallbacks == 0


def test_jit_returns_named_tuples() -> None:
    jf = tj.jit(lambda x: (x.sort(), x.max(0)))
    x = tj.randn(3, 4)
    for _ in range(3):  # trace, then compiled calls rebuild the named tuples
        (s, m) = jf(x)
        assert isinstance(s, tj.return_types.sort) and s.indices.dtype is tj.int64
        assert m.values.shape == (4,)
    assert jf.cache_info().fallbacks == 0
