"""The kernel IR and the fusion it lowers: what the graph fuses into (few kernels for the
workloads of issue 10), that the printed kernel IR says so, and that every lowering path
(multi-pass rows, column totals, one-hot VJPs, chunked partial sums, software prefetch on
large arrays, empty and size-1 dimensions) computes what eager mode computes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.kir.lower import PF_MIN_STREAM, PF_MIN_TOTAL


def _np(t: Any) -> np.ndarray:
    return t.detach().numpy()


def _compiled(fn: Any, *args: Any) -> tuple[Any, Any]:
    jf = tj.jit(fn)
    jf(*args)
    got = jf(*args)
    info = jf.cache_info()
    assert info.fallbacks == 0 and info.hits >= 1, info
    return jf, got


def _close(got: Any, want: Any, rtol: float = 2e-6, atol: float = 1e-6) -> None:
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    for g, w in zip(got, want):
        np.testing.assert_allclose(_np(g), _np(w), rtol=rtol, atol=atol)


def _fused(jf: Any, *args: Any) -> list[str]:
    g = next(e for es in jf._entries.values() for e in es).graph
    return [" ; ".join(m.name for m in n.attrs["body"].nodes) for n in g.nodes
            if n.name == "fused"]


def _xent_grad(x: Any, t: Any) -> Any:
    loss = F.cross_entropy(x, t)
    (gx,) = tj.autograd.grad(loss, x)
    return loss, gx


def _ln_grad(x: Any, w: Any, b: Any, g: Any) -> Any:
    y = F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)
    return tj.autograd.grad(y, (x, w, b), g)


SHAPES = [(4, 8), (1, 5), (3, 1), (37, 300), (2, 1030), (300, 1030)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_row_kernels_match_eager(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    r, c = shape
    x = tj.tensor((4 * rng.standard_normal(shape)).astype(np.float32), requires_grad=True)
    t = tj.tensor(rng.integers(0, c, r))
    w = tj.tensor(rng.standard_normal(c).astype(np.float32), requires_grad=True)
    b = tj.tensor(rng.standard_normal(c).astype(np.float32), requires_grad=True)
    g = tj.tensor(rng.standard_normal(shape).astype(np.float32))
    for fn, args in [(lambda x: tj.softmax(x, 1), (x.detach(),)),
                     (lambda x: F.log_softmax(x, 1), (x.detach(),)),
                     (_xent_grad, (x, t)), (_ln_grad, (x, w, b, g))]:
        _, got = _compiled(fn, *args)
        _close(got, fn(*args), rtol=2e-5, atol=2e-6)


def test_softmax_and_layernorm_backward_fuse() -> None:
    x = tj.randn(16, 32, requires_grad=True)
    t = tj.tensor(np.arange(16) % 32)
    jf, _ = _compiled(lambda x: tj.softmax(x, 1), x.detach())
    assert _fused(jf, x.detach()) == ["amax ; sub ; exp ; sum ; div ; mul"]
    jf, _ = _compiled(_xent_grad, x, t)
    kernels = _fused(jf, x, t)
    # the forward row kernel, the loss, the backward row kernel with the one-hot inline
    assert any(k.startswith("eq ; where ; add") for k in kernels), kernels
    g = next(e for es in jf._entries.values() for e in es).graph
    assert not any(n.name in ("scatter_add", "full") for n in g.nodes)
    w, b = tj.randn(32, requires_grad=True), tj.randn(32, requires_grad=True)
    gy = tj.randn(16, 32)
    jf, _ = _compiled(_ln_grad, x, w, b, gy)
    assert len(_fused(jf, x, w, b, gy)) == 1  # forward and backward: one kernel
    text = jf.ir(x, w, b, gy)
    assert "kernels:" in text and "cacc" in text  # the weight gradient: a column total


def test_out_of_range_target_still_raises_through_the_one_hot() -> None:
    x = tj.randn(4, 6, requires_grad=True)
    jf = tj.jit(_xent_grad)
    jf(x, tj.tensor(np.array([0, 1, 2, 3])))
    jf(x, tj.tensor(np.array([0, 1, 2, 3])))
    with pytest.raises(IndexError, match="out of bounds"):
        jf(x, tj.tensor(np.array([0, 6, 2, 3])))


def test_large_stream_is_prefetched_and_right() -> None:
    n = PF_MIN_STREAM + 7  # not a multiple of the step
    x = tj.tensor(np.random.default_rng(1).standard_normal(n).astype(np.float32) * 3)
    fn = lambda x: tj.gelu(x, approximate="tanh")  # noqa: E731
    jf, got = _compiled(fn, x)
    assert "prefetch" in jf.ir(x) and "prefetch(" in jf.source(x)
    _close(got, fn(x), rtol=1e-5, atol=1e-6)


def test_gelu_tanh_keeps_its_relative_accuracy_for_negative_inputs() -> None:
    """GELU's tanh form computed as 0.5 x (1 + tanh u) cancels for x below -2 (float32: 100%
    relative error below -5); tracejit computes the same function as x / (1 + exp(-2u))."""
    x = np.linspace(-10, 10, 20001).astype(np.float32)
    x64 = x.astype(np.float64)
    u = np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)
    ref = x64 / (1 + np.exp(-2 * u))  # accurate in float64 (the tanh form is not, below -6)
    fn = lambda t: tj.gelu(t, approximate="tanh")  # noqa: E731
    t = tj.tensor(x)
    for got in (fn(t).numpy(), _compiled(fn, t)[1].numpy()):
        rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)
        assert rel.max() < 3e-5, (rel.max(), x[rel.argmax()])
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 3e38, -3e38], np.float32)
    got = _compiled(fn, tj.tensor(specials))[1].numpy()
    assert got[0] == np.inf and np.isnan(got[1]) and np.isnan(got[2])  # -inf: nan, as torch
    assert got[3] == 0 and np.signbit(got[4]) and got[5] == np.float32(3e38) and got[6] == 0


def test_row_max_and_min_keep_nan_and_signed_zeros() -> None:
    """Row max/min accumulate with fmax/fmin (no NaN or zero-sign promise) beside two flags:
    the results are IEEE 754-2019 maximum/minimum's: NaN wins, max(-0, +0) = +0,
    min(-0, +0) = -0, wherever in the row the special values sit."""
    n = 1037  # a vector loop and a remainder
    rows = []
    for pos in (0, 5, 16, 517, n - 1):
        for vals in ([-0.0, 0.0], [0.0, -0.0], [-0.0, -0.0], [0.0, 0.0], [np.nan, 1.0],
                     [1.0, np.nan], [-np.inf, -np.inf], [np.inf, -np.inf]):
            r = np.full(n, vals[1], np.float32)
            r[pos] = vals[0]
            rows.append(r)
    x = tj.tensor(np.stack(rows))
    fn = lambda x: (x.amax(1), x.amin(1), x - x.amax(1, keepdim=True))  # noqa: E731
    jf = tj.jit(fn)
    jf(x)  # traced (eager: NumPy's max returns whichever zero it met first)
    got = [t.numpy() for t in jf(x)]
    assert jf.cache_info().hits == 1 and jf.cache_info().fallbacks == 0
    assert "<fmax=" in jf.ir(x)
    a = x.numpy().astype(np.float64)
    nan = np.isnan(a).any(1)
    for out, is_max in ((got[0], True), (got[1], False)):
        want = np.where(nan, np.nan, a.max(1) if is_max else a.min(1))
        assert np.array_equal(out, want.astype(np.float32), equal_nan=True)
        zero = want == 0
        has = (a == 0) & (np.signbit(a) != is_max)  # +0 for max, -0 for min
        assert np.array_equal(np.signbit(out[zero]), ~has[zero].any(1) if is_max
                              else has[zero].any(1))


def test_large_rows_prefetch_the_next_row() -> None:
    r = PF_MIN_TOTAL // 512 + 3
    x = tj.tensor(np.random.default_rng(2).standard_normal((r, 512)).astype(np.float32))
    jf, got = _compiled(lambda x: tj.softmax(x, 1), x)
    assert "prefetch a0[add(i0, 1)" in jf.ir(x)
    _close(got, tj.softmax(x, 1), rtol=1e-5, atol=1e-7)


def test_chunked_sums_are_accurate_on_long_rows() -> None:
    # float32 partials of 256 into float64: a sum of 100003 values near 1e4 stays close to
    # the float64 sum (a float32 running sum would be off by about 1e-4 relative)
    x = np.full((2, 100003), 1e4, np.float32) + np.random.default_rng(3).random((2, 100003),
                                                                             np.float32)
    t = tj.tensor(x)
    _, got = _compiled(lambda v: (v * 1.0).sum(1), t)
    want = x.astype(np.float64).sum(1)
    np.testing.assert_allclose(_np(got), want, rtol=1e-7)


@pytest.mark.parametrize("shape", [(0, 8), (4, 0), (1, 1)])
def test_empty_and_size_one_dims(shape: tuple[int, int]) -> None:
    x = tj.tensor(np.random.default_rng(4).standard_normal(shape).astype(np.float32))
    fn = lambda x: ((x * 2).sum(1, keepdim=True) + x, (x - 1).sum(0))  # noqa: E731
    _, got = _compiled(fn, x)
    _close(got, fn(x))


def test_column_totals_keep_nan_and_inf() -> None:
    x = np.random.default_rng(5).standard_normal((6, 5)).astype(np.float32)
    x[2, 1], x[4, 3] = np.nan, np.inf
    xt = tj.tensor(x)
    fn = lambda x: ((x - x.sum(1, keepdim=True)) * 2, (x * 3).sum(0))  # noqa: E731
    _, got = _compiled(fn, xt)
    want = fn(xt)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(_np(g)), np.isnan(_np(w)))
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-6, atol=1e-6)


def test_hoist_moves_row_invariant_loads_out_of_the_inner_loop() -> None:
    x, s = tj.randn(4, 8), tj.randn(4, 1)
    fn = lambda x, s: (x * s + 1).exp() * s  # noqa: E731
    jf, got = _compiled(fn, x, s)
    kir = jf.ir(x, s).split("kernels:")[1]
    lines = [ln.strip() for ln in kir.splitlines()]
    # the per-row scalar is read once per row, before the loop over the row
    assert lines.index("x1: f32 = a1[i0, 0]") < lines.index("for i1 in D1:")
    _close(got, fn(x, s), rtol=1e-6)


def test_hoist_keeps_loads_of_buffers_the_loop_writes() -> None:
    from tracejit.dtypes import float32, int64
    from tracejit.kir import Dim, Kernel, Let, Lit, Load, Loop, Param, Store, Var
    from tracejit.kir.passes import hoist

    i, j = Var("i0", int64), Var("i1", int64)
    zero = Lit(0, int64)
    inner = Loop(j, Dim(1), (Let(Var("v", float32), Load("o0", (i, zero), float32)),
                             Store("o0", (i, j), Var("v", float32))))
    k = Kernel("t", (Param("o0", float32, 2, out=True),), (Loop(i, Dim(0), (inner,)),), "", 2)
    assert hoist(k) == k  # o0[i, 0] is written by the loop: it stays inside


def test_vector_width_leaves_a_users_numba_settings_alone() -> None:
    import os
    import subprocess
    import sys

    code = ("import os, tracejit; print(os.environ.get('NUMBA_CPU_FEATURES', '<unset>')[-16:])")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    for extra, want in [({"NUMBA_CPU_FEATURES": ""}, ""), ({"TRACEJIT_VECTOR_WIDTH": "256"},
                                                           "<unset>")]:
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == want, (extra, out)
    bad = subprocess.run([sys.executable, "-c", "import tracejit"], capture_output=True,
                         text=True, env={**env, "TRACEJIT_VECTOR_WIDTH": "wide"})
    assert bad.returncode != 0 and "TRACEJIT_VECTOR_WIDTH must be" in bad.stderr


def test_open_groups_a_node_reads_both_of_merge_into_one_kernel() -> None:
    """Adam's pattern: `v * beta2` starts a group, the first moment's update another, and the
    gradient's square joins that one as a sibling; the node adding them reads both open groups,
    which merge: one kernel for the whole update, matching eager mode."""
    rng = np.random.default_rng(3)
    m, v, g = (tj.tensor(rng.standard_normal((6, 5)).astype(np.float32)) for _ in range(3))

    def step(m: Any, v: Any, g: Any) -> Any:
        v1 = v * 0.99
        m1 = m + (g - m) * 0.1
        v2 = v1 + g * g * 0.01
        return m1, v2, m1 / (v2.abs().sqrt() + 1e-8)

    jf, got = _compiled(step, m, v, g)
    assert jf.ir(m, v, g).count("= fused.") == 1
    for a, b in zip(got, step(m, v, g)):
        _close(a, b, rtol=1e-6, atol=1e-7)
