"""Bounds checks of every index op, eager and compiled: in-range results equal eager, NumPy and
torch; an index out of range (just past the end, huge, negative where torch rejects negatives)
raises IndexError naming the op, the value, the size and this file's line, from compiled code as
from eager code, without touching memory; negative indices follow torch (x[idx] and index_put
count them from the end; gather, scatter_add, index_select, embedding and loss targets reject
them). A jitted training step given a bad index leaves the model untouched.

Each op's jitted function is built once per module (Numba compiles are the slow part) and
compiled on in-range values before the bad ones are tried with the same shapes."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.nn import functional as F

HUGE = 10**8
FILE = os.path.basename(__file__)

tj.manual_seed(0)
EMB = nn.Embedding(10, 4)  # shared by the embedding cases (a lifted parameter when jitted)
XS = (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 3  # 3 rows, 4 columns
LOGP = np.log(np.full((3, 4), 0.25, np.float32)) + XS / 10


# ---- the ops, each on one marked line (the line the error must name) -----------------------------


def gather(x: Any, i: Any) -> Any:
    return x.gather(1, i)  # op


def scatter_add(x: Any, i: Any, s: Any) -> Any:
    return x.scatter_add(0, i, s)  # op


def take(x: Any, i: Any) -> Any:
    return x[i]  # op


def take_dim1(x: Any, i: Any) -> Any:
    return x[:, i]  # op


def index_select(x: Any, i: Any) -> Any:
    return x.index_select(0, i)  # op


def put(x: Any, i: Any, v: Any) -> Any:
    y = x.clone()
    y[i] = v  # op
    return y


def put_acc(x: Any, i: Any, v: Any) -> Any:
    if isinstance(x, tj.Tensor):
        return x._index_put(v, i, dims=(0,), accumulate=True)  # op
    return x.index_put((i,), v, accumulate=True)


def embedding(i: Any) -> Any:
    return EMB(i)  # op


def nll(x: Any, t: Any) -> Any:
    return (F if isinstance(x, tj.Tensor) else _tF()).nll_loss(x, t)  # op


def nll_ignore(x: Any, t: Any) -> Any:
    return (F if isinstance(x, tj.Tensor) else _tF()).nll_loss(x, t, ignore_index=-1)  # op


def ce(x: Any, t: Any) -> Any:
    return (F if isinstance(x, tj.Tensor) else _tF()).cross_entropy(x, t)  # op


def ce_weighted_smooth(x: Any, t: Any, w: Any) -> Any:
    f = F if isinstance(x, tj.Tensor) else _tF()
    return f.cross_entropy(x, t, weight=w, ignore_index=2, label_smoothing=0.1)  # op


def _tF() -> Any:  # noqa: N802
    import torch.nn.functional as tF  # noqa: N812

    return tF


def op_line(fn: Callable[..., Any]) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(k for k, s in enumerate(lines) if s.rstrip().endswith("# op"))


@dataclass
class Case:
    name: str
    fn: Callable[..., Any]
    args: tuple[np.ndarray, ...]  # in range (negative entries only where they are allowed)
    at: int  # which argument is the index tensor
    size: int  # the size of the indexed dimension
    negative_ok: bool  # torch counts negative indices from the end
    op: str  # the op the message names
    ignore: int | None = None  # an allowed out-of-range value (ignore_index)
    torch_fn: Callable[..., Any] | None = None  # default: fn itself on torch tensors
    empty: tuple[np.ndarray, ...] | None = None  # arguments with an empty index tensor


def _i(*v: Any) -> np.ndarray:
    return np.array(v, np.int64)


ONES24 = np.ones((2, 4), np.float32)
CASES = [
    Case("gather", gather, (XS, _i([0, 3], [2, 2], [1, 0])), 1, 4, False, "gather",
         empty=(XS, np.zeros((3, 0), np.int64))),
    Case("scatter_add", scatter_add, (XS, _i([0, 2, 1, 0], [2, 2, 0, 1]), ONES24 * 0.5), 1, 3,
         False, "scatter_add", empty=(XS, np.zeros((0, 4), np.int64), ONES24)),
    Case("index", take, (XS, _i(2, -1, 0, -3, 2)), 1, 3, True, "index",
         empty=(XS, np.zeros((0,), np.int64))),
    Case("index_dim1", take_dim1, (XS, _i([3, -4], [0, 1])), 1, 4, True, "index"),
    Case("index_select", index_select, (XS, _i(2, 0, 2)), 1, 3, False, "index_select",
         empty=(XS, np.zeros((0,), np.int64))),
    Case("index_put", put, (XS, _i(2, -1, 0), np.float32(7.0)), 1, 3, True, "index_put",
         empty=(XS, np.zeros((0,), np.int64), np.float32(7.0))),
    Case("index_put_accumulate", put_acc, (XS, _i(2, -1, 0, 2), np.ones((4, 4), np.float32)),
         1, 3, True, "index_put",
         empty=(XS, np.zeros((0,), np.int64), np.ones((0, 4), np.float32))),
    Case("embedding", embedding, (_i([1, 9, 9], [0, 3, 1]),), 0, 10, False, "embedding",
         torch_fn=lambda i: _torch_embedding()(i), empty=(np.zeros((0, 2), np.int64),)),
    Case("nll_loss", nll, (LOGP, _i(3, -100, 0)), 1, 4, False, "nll_loss", ignore=-100),
    Case("nll_loss_ignore_index", nll_ignore, (LOGP, _i(3, -1, 0)), 1, 4, False, "nll_loss",
         ignore=-1),
    Case("cross_entropy", ce, (XS, _i(3, 1, -100)), 1, 4, False, "cross_entropy", ignore=-100),
    Case("cross_entropy_weight_smooth", ce_weighted_smooth,
         (XS, _i(3, 2, 0), np.array([1.0, 2.0, 0.5, 1.5], np.float32)), 1, 4, False,
         "cross_entropy", ignore=2),
]


def bad_values(c: Case) -> list[tuple[str, int]]:
    out = [("high", c.size), ("huge", HUGE), ("below", -c.size - 1)]
    if not c.negative_ok:
        out.append(("negative", -1))
    if c.ignore is not None and c.ignore != -100:
        out.append(("default_ignore_index", -100))  # only the given ignore_index is allowed
    return [(k, v) for k, v in out if v != c.ignore]


def _torch_embedding() -> Any:
    import torch

    e = torch.nn.Embedding(10, 4)
    with torch.no_grad():
        e.weight.copy_(torch.from_numpy(EMB.weight.detach().numpy().copy()))
    return e


_JITTED: dict[str, Any] = {}


def jitted(c: Case) -> Any:
    """The case's jitted function, compiled on its in-range arguments (traced, then compiled)."""
    f = _JITTED.get(c.name)
    if f is None:
        f = _JITTED[c.name] = tj.jit(c.fn)
        for _ in range(2):
            f(*tensors(c.args))
        info = f.cache_info()
        assert info.traces == 1 and info.hits >= 1 and info.fallbacks == 0, info
        assert all(e.program is not None for e in f.explain().entries)
    return f


def tensors(args: tuple[Any, ...]) -> list[Any]:
    return [tj.tensor(a) if isinstance(a, np.ndarray) else float(a) for a in args]


def with_bad(c: Case, value: int) -> tuple[Any, ...]:
    """The in-range arguments with one index entry (the middle one) replaced by `value`."""
    idx = c.args[c.at].copy()
    idx.reshape(-1)[idx.size // 2] = value
    return c.args[:c.at] + (idx,) + c.args[c.at + 1:]


def _np(t: Any) -> np.ndarray:
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)


def same(compiled: Any, eager: Any) -> None:
    """Index results are exact; a loss may differ in its last bit (compiled sums accumulate in
    float64)."""
    np.testing.assert_allclose(_np(compiled), _np(eager), rtol=3e-7, atol=0)


def check_message(e: BaseException, c: Case, value: int) -> None:
    msg = str(e)
    assert msg.startswith(c.op + ":"), msg
    assert re.search(rf"(?<![\d-]){value}(?!\d)", msg), msg
    assert str(c.size) in msg, msg
    assert msg.endswith(f"(at {FILE}:{op_line(c.fn)})"), msg
    assert "numba" not in msg.lower(), msg


# ---- in range: jit == eager == torch ------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_in_range_jit_equals_eager_and_torch(c: Case) -> None:
    import torch

    f = jitted(c)
    eager = c.fn(*tensors(c.args))
    compiled = f(*tensors(c.args))
    assert f.cache_info().traces == 1
    same(compiled, eager)
    ref = (c.torch_fn or c.fn)(*[torch.from_numpy(a.copy()) if isinstance(a, np.ndarray)
                                 else float(a) for a in c.args])
    np.testing.assert_allclose(_np(eager), _np(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("c", [c for c in CASES if c.empty is not None], ids=lambda c: c.name)
def test_empty_index_tensor(c: Case) -> None:
    import torch

    assert c.empty is not None
    f = jitted(c)
    eager = c.fn(*tensors(c.empty))
    for _ in range(2):  # a new shape: traced, then compiled
        compiled = f(*tensors(c.empty))
    assert f.cache_info().fallbacks == 0
    same(compiled, eager)
    ref = (c.torch_fn or c.fn)(*[torch.from_numpy(a.copy()) if isinstance(a, np.ndarray)
                                 else float(a) for a in c.empty])
    assert _np(eager).shape == tuple(ref.shape)
    np.testing.assert_allclose(_np(eager), _np(ref), rtol=1e-5, atol=1e-6)


# ---- out of range: IndexError, eager and compiled ---------------------------------------------


@pytest.mark.parametrize("c,kind,value", [(c, k, v) for c in CASES for k, v in bad_values(c)],
                         ids=lambda p: p.name if isinstance(p, Case) else str(p))
def test_out_of_range_raises_index_error(c: Case, kind: str, value: int) -> None:
    args = with_bad(c, value)
    with pytest.raises(IndexError) as eager:
        c.fn(*tensors(args))
    check_message(eager.value, c, value)
    f = jitted(c)
    before = f.cache_info()
    with pytest.raises(IndexError) as compiled:
        f(*tensors(args))
    check_message(compiled.value, c, value)
    after = f.cache_info()
    assert after.traces == before.traces and after.hits == before.hits + 1, (before, after)
    if c.op in ("gather", "scatter_add"):  # torch raises RuntimeError for these
        assert isinstance(compiled.value, RuntimeError)
    assert str(compiled.value) == str(eager.value)


@pytest.mark.torch
@pytest.mark.parametrize("c,kind,value", [(c, k, v) for c in CASES for k, v in bad_values(c)],
                         ids=lambda p: p.name if isinstance(p, Case) else str(p))
def test_torch_rejects_the_same_indices(c: Case, kind: str, value: int) -> None:
    import torch

    args = with_bad(c, value)
    with pytest.raises((IndexError, RuntimeError)):
        (c.torch_fn or c.fn)(*[torch.from_numpy(a.copy()) if isinstance(a, np.ndarray)
                               else float(a) for a in args])


@pytest.mark.torch
@pytest.mark.parametrize("c", [c for c in CASES if c.negative_ok], ids=lambda c: c.name)
def test_negative_indices_count_from_the_end_like_torch(c: Case) -> None:
    import torch

    args = with_bad(c, -c.size)  # the lowest valid negative index
    eager = c.fn(*tensors(args))
    compiled = jitted(c)(*tensors(args))
    same(compiled, eager)
    ref = c.fn(*[torch.from_numpy(a.copy()) if isinstance(a, np.ndarray) else float(a)
                 for a in args])
    np.testing.assert_allclose(_np(eager), _np(ref), rtol=1e-5, atol=1e-6)


def test_ignore_index_is_allowed_only_as_given() -> None:
    x = tj.tensor(LOGP)
    assert F.nll_loss(x, tj.tensor([5, 1, 0]), ignore_index=5).item() == pytest.approx(
        -(LOGP[1, 1] + LOGP[2, 0]) / 2, rel=1e-6)
    with pytest.raises(IndexError, match=r"Target -100 is out of bounds"):
        F.nll_loss(x, tj.tensor([5, -100, 0]), ignore_index=5)


# ---- embedding backward through compiled code ---------------------------------------------------


def emb_backward(i: Any) -> None:
    out = EMB(i)  # op
    (out * out).sum().backward()  # backward (index_put with accumulate) compiled in the step


@pytest.mark.torch
def test_embedding_backward_compiled_matches_torch_and_bad_index_leaves_grad() -> None:
    import torch

    f = tj.jit(emb_backward)
    idx = _i([1, 9, 9], [0, 3, 1])  # repeated rows: their gradients add up
    for _ in range(3):
        EMB.weight.grad = None
        f(tj.tensor(idx))
    assert f.cache_info().hits >= 2 and f.cache_info().fallbacks == 0, f.cache_info()
    got = EMB.weight.grad.numpy().copy()
    te = _torch_embedding()
    (te(torch.from_numpy(idx)) ** 2).sum().backward()
    np.testing.assert_allclose(got, te.weight.grad.numpy(), rtol=1e-6)
    for _ in range(2):  # .grad now exists: a second entry (accumulating into it), compiled
        f(tj.tensor(idx))
    np.testing.assert_allclose(EMB.weight.grad.numpy(), 3 * got, rtol=1e-6)
    traces = f.cache_info().traces
    for grad in (None, EMB.weight.grad):
        EMB.weight.grad = grad
        before = None if grad is None else grad.numpy().copy()
        for value in (10, HUGE, -1):
            bad = idx.copy()
            bad[1, 1] = value
            with pytest.raises(IndexError, match=rf"^embedding: index {value} .*\(at {FILE}:"
                                                 rf"{op_line(emb_backward)}\)$"):
                f(tj.tensor(bad))
            if before is None:
                assert EMB.weight.grad is None
            else:
                np.testing.assert_array_equal(EMB.weight.grad.numpy(), before)
    assert f.cache_info().traces == traces  # every bad call ran compiled code
    EMB.weight.grad = None


# ---- the native driver ------------------------------------------------------------------------


def native_fn(i: Any, t: Any) -> Any:
    logits = EMB(i)  # op
    return F.cross_entropy(logits, t)  # target


def test_native_driver_raises_the_same_index_errors() -> None:
    # (no_grad: a jitted forward whose outputs need grad re-traces on every call while the
    # autograd graph saves a view of a tensor made in the trace, gather's index here)
    with tj.flags(driver="native"), tj.no_grad():
        f = tj.jit(native_fn)
        i, t = _i(1, 9, 0), _i(3, 0, -100)
        for _ in range(2):
            f(tj.tensor(i), tj.tensor(t))
        assert "native driver" in f.source(tj.tensor(i), tj.tensor(t))
        np.testing.assert_allclose(f(tj.tensor(i), tj.tensor(t)).item(),
                                   native_fn(tj.tensor(i), tj.tensor(t)).item(), rtol=1e-6)
        n = f.cache_info().traces
        line = op_line(native_fn)
        for value in (10, HUGE, -1):
            with pytest.raises(IndexError, match=rf"^embedding: index {value} is out of range "
                                                 rf".*\(at {FILE}:{line}\)$"):
                f(tj.tensor(_i(1, value, 0)), tj.tensor(t))
        for value in (4, HUGE, -1):
            with pytest.raises(IndexError, match=rf"^cross_entropy: Target {value} is out of "
                                                 rf"bounds.*\(at {FILE}:{line + 1}\)$"):
                f(tj.tensor(i), tj.tensor(_i(3, value, 0)))
        assert f.cache_info().traces == n


# ---- a bad index leaves the model untouched -------------------------------------------------


def test_training_step_with_a_bad_index_leaves_the_model_untouched() -> None:
    tj.manual_seed(3)
    emb, lin = nn.Embedding(10, 3), nn.Linear(3, 4)
    params = list(emb.parameters()) + list(lin.parameters())
    opt = tj.optim.SGD(params, lr=0.1)

    @tj.jit
    def step(i: Any, t: Any) -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(lin(emb(i)), t)
        loss.backward()
        opt.step()
        return loss

    i, t = tj.tensor(_i(1, 2, 9, 2)), tj.tensor(_i(0, 3, 1, 1))
    losses = [step(i, t).item() for _ in range(4)]
    assert losses[-1] < losses[0]
    info = step.cache_info()
    assert info.hits >= 2 and info.fallbacks == 0, info
    snap = [(p.detach().numpy().copy(), p.grad.numpy().copy()) for p in params]
    for bad_i, bad_t in ((_i(1, 10, 9, 2), _i(0, 3, 1, 1)), (_i(1, 2, HUGE, 2), _i(0, 3, 1, 1)),
                         (_i(1, -1, 9, 2), _i(0, 3, 1, 1)), (_i(1, 2, 9, 2), _i(0, 4, 1, 1)),
                         (_i(1, 2, 9, 2), _i(0, -1, 1, 1))):
        with pytest.raises(IndexError):
            step(tj.tensor(bad_i), tj.tensor(bad_t))
        for p, (w, g) in zip(params, snap):
            np.testing.assert_array_equal(p.detach().numpy(), w)
            np.testing.assert_array_equal(p.grad.numpy(), g)
    assert step.cache_info().traces == info.traces
    step(i, t)  # and training goes on
    assert not np.array_equal(params[0].detach().numpy(), snap[0][0])


def test_zero_dim_gather_and_scatter_add_index_the_one_element() -> None:
    x = tj.tensor(5.0)
    assert x.gather(0, tj.tensor(0)).item() == 5.0
    assert x.scatter_add(0, tj.tensor(0), tj.tensor(2.0)).item() == 7.0
    for value in (1, -1):
        with pytest.raises(IndexError, match=rf"^gather: index {value} is out of bounds for "
                                             r"dimension 0 with size 1"):
            x.gather(0, tj.tensor(value))
