"""Every op row of tests/test_ops.py, eager vs @jit: the first call (a trace, run eagerly)
equals eager, the second call on fresh same-shaped inputs runs compiled code and equals eager,
with one trace and one compile; gradients (autograd.grad inside the jitted function) too.
Inputs are contiguous, or transposed views (non-contiguous)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_ops import RANDOM_ROWS, ROWS, Row

import tracejit

# rows whose graph has no compiled form yet: they must fall back to eager, correctly
EAGER_ONLY = {  # (or split around the op: see the assertion in the test)
    "getitem_mask": "boolean-mask indexing has a data-dependent shape",
    "getitem_row_mask": "boolean-mask indexing has a data-dependent shape",
    "getitem_two_arrays": "indexing with several index tensors has no CPU rule yet",
    "nonzero": "nonzero has a data-dependent shape",
}


def _tensors(xs: list[Any], layout: str, grad: bool) -> list[Any]:
    out = []
    for a in xs:
        if not isinstance(a, np.ndarray):
            out.append(a)
            continue
        arr = a.astype(np.float32) if a.dtype.kind == "f" else a
        if layout == "transposed" and arr.ndim >= 2:
            arr = np.ascontiguousarray(np.swapaxes(arr, -1, -2)).swapaxes(-1, -2)
        t = tracejit.from_numpy(arr)
        if grad and t.dtype.is_floating_point:
            t.requires_grad_(True)
        out.append(t)
    return out


def _flat(o: Any) -> list[Any]:
    if isinstance(o, (tuple, list)):
        return [y for x in o for y in _flat(x)]
    return [o]


def _program(row: Row) -> Any:
    def run(*ts: Any) -> Any:
        outs = [o for o in _flat(row.fn(tracejit, *ts)) if isinstance(o, tracejit.Tensor)]
        if not row.grad:
            return outs
        wrt = [t for t in ts if isinstance(t, tracejit.Tensor) and t.requires_grad]
        diff = [o for o in outs if o.requires_grad]
        if not wrt or not diff:
            return outs
        # a fixed weighting makes the gradient check sensitive to every output element
        weights = [tracejit.tensor((np.arange(o.numel()) % 3 + 1).reshape(o.shape), dtype=o.dtype)
                   for o in diff]
        total = sum(((o * w).sum() for o, w in zip(diff, weights)), tracejit.zeros(()))
        grads = tracejit.autograd.grad(total, wrt, allow_unused=True, materialize_grads=True)
        return outs + list(grads)

    return run


def _cases() -> list[Any]:
    """Every argument set of every row (broadcasting, size-1, size-0 and 0-d shapes), the first
    one also as transposed, non-contiguous views."""
    out = []
    for r in ROWS:
        if r.xfail or r.name in RANDOM_ROWS:
            continue
        for k in range(len(r.args)):
            layouts = ["contiguous"]
            if k == 0 and any(getattr(a, "shape", ()) and len(a.shape) >= 2 for a in r.args[0]):
                layouts.append("transposed")
            for lay in layouts:
                out.append(pytest.param(r, k, lay, id=f"{r.name}-{k}-{lay[0]}"))
    return out


def _close(got: Any, want: Any, row: Row, what: str) -> None:
    g, w = np.asarray(got._data), np.asarray(want._data)
    assert g.shape == w.shape and got.dtype is want.dtype, \
        f"{what}: {got.dtype}{list(g.shape)} vs eager {want.dtype}{list(w.shape)}"
    if g.dtype.kind == "f":
        np.testing.assert_allclose(g, w, rtol=max(row.rtol, 1e-4), atol=max(row.atol, 1e-5),
                                   err_msg=what)
    else:
        np.testing.assert_array_equal(g, w, err_msg=what)


@pytest.mark.parametrize("row,k,layout", _cases())
def test_op_eager_vs_jit(row: Row, k: int, layout: str, request: pytest.FixtureRequest) -> None:
    xs_a = row.inputs(k)
    rng = np.random.default_rng(7)
    # fresh values of the same shapes and dtypes for the compiled call (ints stay in range)
    xs_b = [np.asarray(a + rng.uniform(-0.25, 0.25, a.shape)) if isinstance(a, np.ndarray)
            and a.dtype.kind == "f" and not getattr(row.args[k][i], "ints", False) else a
            for i, a in enumerate(xs_a)]
    fn = _program(row)
    jf = tracejit.jit(fn)
    for call, xs in enumerate((xs_a, xs_b, xs_b)):
        ins = _tensors(xs, layout, row.grad)
        before = [t._data.copy() if isinstance(t, tracejit.Tensor) else None for t in ins]
        got = jf(*ins)
        want = fn(*_tensors(xs, layout, row.grad))
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, row, f"call {call + 1}, result {i} (repeat: pytest "
                              f"'{request.node.nodeid}')")
        for t, b in zip(ins, before):
            if b is not None:
                np.testing.assert_array_equal(t._data, b, err_msg="jit mutated an input")
    info = jf.cache_info()
    assert info.traces == 1, f"retraced: {info}"
    if row.name in EAGER_ONLY:
        # a data-dependent shape splits the function (a lazy replay that runs the op eagerly
        # between compiled segments); an op without a CPU rule leaves the entry eager
        assert (info.replays >= 1 and info.fallbacks == 0) or \
            (info.compiles == 0 and info.fallbacks >= 1), info
    else:
        report = jf.explain()
        assert info.compiles <= 1 and info.fallbacks == 0 and \
            all(e.program is not None for e in report.entries), f"{info}\n{report}"
