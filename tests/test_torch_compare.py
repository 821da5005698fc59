"""tracejit against PyTorch itself (skipped when torch is not installed): every op-table row's
values and gradients, the promotion and repr tables, and the seed's "tensors by hand" and
"autograd" programs (USER-PROGRAMS.md) run with `import tracejit as torch`, step by step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_ops import RANDOM_ROWS, ROWS, Row
from test_tensor import PROMOTION, REPRS

import tracejit

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _flat(out: Any) -> list[Any]:
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _to(m: Any, a: Any, dtype: str, grad: bool) -> Any:
    """A NumPy argument as a tensor of library `m` (floats in `dtype`)."""
    if not isinstance(a, np.ndarray):
        return a
    if a.dtype.kind == "f":
        t = m.tensor(a.astype(dtype), dtype=getattr(m, dtype))
        return t.requires_grad_(grad)
    return m.tensor(a)


def _run(m: Any, row: Row, xs: list[Any], dtype: str, cots: list[np.ndarray] | None) -> Any:
    """Outputs as NumPy, their dtype names, and (with cotangents) the input gradients."""
    ts = [_to(m, a, dtype, cots is not None) for a in xs]
    outs = _flat(row.fn(m, *ts))
    vals = [o.detach().numpy().copy() for o in outs]
    names = [str(o.dtype).split(".")[-1] for o in outs]
    if cots is None:
        return vals, names, None
    diff = [t for t in ts if isinstance(t, m.Tensor) and t.requires_grad]
    live = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
    grads = [None] * len(diff)
    if live and diff:
        grads = m.autograd.grad([o for o, _ in live], diff,
                                [m.tensor(c, dtype=o.dtype) for o, c in live], allow_unused=True)
    return vals, names, [None if g is None else g.numpy() for g in grads]


def _cases() -> list[Any]:
    return [pytest.param(r, k, id=f"{r.name}-{k}") for r in ROWS for k in range(len(r.args))
            if not r.xfail and r.name not in RANDOM_ROWS]


@pytest.mark.parametrize("row,k", _cases())
def test_row_matches_torch(row: Row, k: int) -> None:
    xs = row.inputs(k)
    mine, my_dtypes, _ = _run(tracejit, row, xs, "float32", None)
    theirs, their_dtypes, _ = _run(torch, row, xs, "float32", None)
    assert my_dtypes == their_dtypes
    for a, b in zip(mine, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    if not row.grad or row.torch_grad:
        return
    rng = np.random.default_rng(0)
    out64, _, _ = _run(tracejit, row, xs, "float64", None)
    cots = [rng.standard_normal(np.shape(o)) for o in out64]
    _, _, my_grads = _run(tracejit, row, xs, "float64", cots)
    _, _, their_grads = _run(torch, row, xs, "float64", cots)
    for i, (a, b) in enumerate(zip(my_grads, their_grads)):
        if a is None or b is None:  # unused inputs: None or zeros are both fine
            assert not np.any(a if a is not None else b if b is not None else 0), i
            continue
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"gradient {i}")


@pytest.mark.parametrize("desc,fn,want", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_promotion_table_is_pytorchs(desc: str, fn: Any, want: str) -> None:
    assert str(fn(torch).dtype) == f"torch.{want}"


@pytest.mark.parametrize("fn,want", REPRS, ids=[w for _, w in REPRS])
def test_repr_table_is_pytorchs(fn: Any, want: str) -> None:
    assert repr(fn(torch)) == want


@pytest.mark.parametrize("values", [
    [[0.001, 1.0, 100.0]], [[1e-5, 1.0]], [[-1.5, float("nan"), float("inf")]],
    np.arange(30.0).reshape(3, 10) / 7, np.arange(2000.0), [[1, -10, 100]],
    np.arange(24.0).reshape(2, 3, 4), [float("nan"), 2.0], np.arange(2500.0).reshape(50, 50) - 7,
    np.arange(100), np.arange(-40, 40) * 3, np.arange(1200.0).reshape(2, 600) / 3,
    np.zeros((2, 2)), [[0.0, float("-inf")]], np.arange(60) % 3 == 0,
], ids=lambda v: f"{np.shape(v)}-{np.ravel(v)[:2]}")
def test_repr_matches_torch(values: Any) -> None:
    a = np.asarray(values)
    dtype = "float32" if a.dtype.kind == "f" else "int64"
    if a.dtype.kind == "b":
        dtype = "bool"
    mine = repr(tracejit.tensor(a, dtype=dtype))
    theirs = repr(torch.tensor(a, dtype=getattr(torch, dtype)))
    assert mine == theirs


# ---- the seed programs ---------------------------------------------------------------------------

N, D_IN, H, D_OUT, STEPS = 64, 1000, 100, 10, 20


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in
            (("x", (N, D_IN)), ("y", (N, D_OUT)), ("w1", (D_IN, H)), ("w2", (H, D_OUT)))}


def tensors_by_hand(torch: Any, init: dict[str, np.ndarray]) -> list[float]:
    """USER-PROGRAMS.md "Tensors, by hand", with the random init replaced by `init`."""
    x, y = torch.tensor(init["x"]), torch.tensor(init["y"])
    w1, w2 = torch.tensor(init["w1"]), torch.tensor(init["w2"])
    learning_rate = 1e-6
    losses = []
    for _ in range(STEPS):
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return losses


def autograd_program(torch: Any, init: dict[str, np.ndarray]) -> list[float]:
    """USER-PROGRAMS.md "Autograd", with the random init replaced by `init`."""
    x, y = torch.tensor(init["x"]), torch.tensor(init["y"])
    w1 = torch.tensor(init["w1"], requires_grad=True)
    w2 = torch.tensor(init["w2"], requires_grad=True)
    learning_rate = 1e-6
    losses = []
    for _ in range(STEPS):
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            w1 -= learning_rate * w1.grad
            w2 -= learning_rate * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses


def my_relu_program(torch: Any, init: dict[str, np.ndarray]) -> list[float]:
    """USER-PROGRAMS.md "A new autograd function", in the autograd program's loop."""

    class MyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_y):
            (x,) = ctx.saved_tensors
            grad_input = grad_y.clone()
            grad_input[x < 0] = 0
            return grad_input

    x, y = torch.tensor(init["x"]), torch.tensor(init["y"])
    w1 = torch.tensor(init["w1"], requires_grad=True)
    w2 = torch.tensor(init["w2"], requires_grad=True)
    losses = []
    for _ in range(STEPS):
        y_pred = MyReLU.apply(x.mm(w1)).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            w1 -= 1e-6 * w1.grad
            w2 -= 1e-6 * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses


@pytest.mark.parametrize("program", [tensors_by_hand, autograd_program, my_relu_program],
                         ids=lambda p: p.__name__)
def test_seed_program_matches_torch_losses(program: Any) -> None:
    init = _data()
    theirs = program(torch, init)
    mine = program(tracejit, init)
    assert len(mine) == STEPS
    assert theirs[-1] < theirs[0]  # it trains
    np.testing.assert_allclose(mine, theirs, rtol=1e-4)
