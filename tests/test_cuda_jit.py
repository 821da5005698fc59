"""The CUDA renderer of the kernel IR (tracejit/codegen/cuda.py): graphs traced from real
functions (GELU, softmax, layernorm, mse and its backward, an MLP's SGD step), lowered with
the existing pipeline, rendered as numba.cuda kernels and run on device arrays, compared
with eager mode, the CPU-compiled program and NumPy float64; the PTX of every kernel a
float32 graph renders to, compiled for Hopper (cc 9.0), has no float64 instruction; what the
renderer cannot render is refused with a clear error.

Run the device tests with NUMBA_ENABLE_CUDASIM=1 (Numba's simulator; tiny sizes) where
there is no GPU: they are skipped otherwise, with that reason. The PTX check needs no GPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.codegen.lower import UnsupportedError

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed "
                           "(pip install 'numba-cuda==0.30.4' 'numpy<2.5')")
if not hasattr(cuda, "jit"):
    pytest.skip("numba.cuda has no jit: numba-cuda is not installed", allow_module_level=True)

import numba  # noqa: E402

from tracejit.codegen import cuda as C  # noqa: E402

SIM = bool(numba.config.ENABLE_CUDASIM)
try:
    GPU = not SIM and cuda.is_available()
except Exception:  # noqa: BLE001
    GPU = False
device = pytest.mark.skipif(not (SIM or GPU), reason="no CUDA GPU: run with "
                            "NUMBA_ENABLE_CUDASIM=1 to test on Numba's simulator")


def _graph(fn: Any, *args: Any) -> Any:
    jf = tj.jit(fn)
    jf(*args)
    jf(*args)
    info = jf.cache_info()
    assert info.fallbacks == 0, info
    return next(e for es in jf._entries.values() for e in es).graph


def _np(t: Any) -> np.ndarray:
    return t.detach().numpy()


def _host(a: Any, shape: tuple[int, ...]) -> np.ndarray:
    return a.copy_to_host().reshape(shape)


def _run(g: Any, arrays: list[np.ndarray], **kw: Any) -> list[np.ndarray]:
    prog = C.compile_cuda(g, **kw)
    dev = [cuda.to_device(np.ascontiguousarray(a).reshape(a.shape or (1,))) for a in arrays]
    out = prog(dev)
    return [_host(o, tuple(v.type.shape)) for o, v in zip(out, g.outputs)]


def _gelu(x: Any) -> Any:
    return F.gelu(x)


def _softmax(x: Any) -> Any:
    return tj.softmax(x, 1)


def _layernorm(x: Any, w: Any, b: Any) -> Any:
    return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)


def _mse_grad(p: Any, t: Any) -> Any:
    loss = F.mse_loss(p, t)
    return loss, tj.autograd.grad(loss, p)[0]


def _gelu64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2)))


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- elementwise, rows -------------------------------------------------------------------------


@device
@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (0, 4), (2, 3, 7)])
def test_gelu_matches_eager_cpu_and_float64(shape: tuple[int, ...]) -> None:
    x = (3 * _rng().standard_normal(shape)).astype(np.float32)
    if x.size >= 4:
        x.flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    g = _graph(_gelu, tj.tensor(x))
    (got,) = _run(g, [x])
    eager = _np(_gelu(tj.tensor(x)))
    cpu = _np(tj.jit(_gelu)(tj.tensor(x)))
    np.testing.assert_allclose(got, eager, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got, cpu, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got, _gelu64(x), rtol=1e-5, atol=1e-6)
    if x.size >= 4:  # NaN stays NaN; -inf * 0 is NaN (as eager and torch); gelu(-0.0) is -0.0
        assert np.isnan(got.flat[0]) and got.flat[1] == np.inf and np.isnan(got.flat[2])
        assert got.flat[3] == 0 and np.signbit(got.flat[3])


@device
@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (2, 37), (4, 1)])
def test_softmax_one_kernel_per_row(shape: tuple[int, int]) -> None:
    x = (4 * _rng(1).standard_normal(shape)).astype(np.float32)
    g = _graph(_softmax, tj.tensor(x))
    prog = C.compile_cuda(g)
    assert all(k.kind == "rows" for k in prog.kernels)
    if shape[1] > 1:  # (a (1, 1) softmax is simplified into other kernels)
        assert len(prog.kernels) == 1
    (got,) = _run(g, [x])
    np.testing.assert_allclose(got, _np(_softmax(tj.tensor(x))), rtol=2e-6, atol=1e-7)
    x64 = x.astype(np.float64)
    ref = np.exp(x64 - x64.max(1, keepdims=True))
    np.testing.assert_allclose(got, ref / ref.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


@device
def test_softmax_special_values_and_threads() -> None:
    """-inf entries, a row with a NaN, a row of -0.0 and +0.0; 64 threads per row (two rounds of
    the tree) over rows longer than the block."""
    x = _rng(2).standard_normal((4, 70)).astype(np.float32)
    x[0, :3] = -np.inf
    x[1, 5] = np.nan
    x[2, :] = 0.0
    x[2, ::2] = -0.0
    g = _graph(_softmax, tj.tensor(x))
    want = _np(_softmax(tj.tensor(x)))
    for threads in (None, 64):
        (got,) = _run(g, [x], threads=threads)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
        assert np.isnan(got[1]).all()


@device
@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (5, 33)])
def test_layernorm(shape: tuple[int, int]) -> None:
    r = _rng(3)
    x, w, b = (r.standard_normal(s).astype(np.float32) for s in (shape, shape[1:], shape[1:]))
    g = _graph(_layernorm, tj.tensor(x), tj.tensor(w), tj.tensor(b))
    (got,) = _run(g, [x, w, b])
    want = _np(_layernorm(tj.tensor(x), tj.tensor(w), tj.tensor(b)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(1, keepdims=True), x64.var(1, keepdims=True)
    np.testing.assert_allclose(got, (x64 - mu) / np.sqrt(var + 1e-5) * w + b, rtol=1e-4,
                               atol=1e-5)


def _ln_grad(x: Any, w: Any, b: Any, gy: Any) -> Any:
    y = F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)
    return tj.autograd.grad(y, (x, w, b), gy)


@device
@pytest.mark.parametrize("shape", [(6, 5), (1, 3), (3, 40)])
def test_layernorm_backward_column_totals(shape: tuple[int, int]) -> None:
    """Forward and backward in one fused group whose weight and bias gradients are column
    totals over the rows: a fill kernel, the rows kernel adding atomically, a store kernel."""
    r = _rng(8)
    x, w, b, gy = (r.standard_normal(s).astype(np.float32)
                   for s in (shape, shape[1:], shape[1:], shape))
    args = [tj.tensor(a, requires_grad=a is not gy) for a in (x, w, b)] + [tj.tensor(gy)]
    g = _graph(_ln_grad, *args)
    prog = C.compile_cuda(g)
    assert sum(k.ir.hint.endswith(("_fill", "_store")) for k in prog.kernels) == 2
    for k in range(2):
        xk = x * (k + 1)
        got = _run(g, [xk, w, b, gy])
        want = _ln_grad(*[tj.tensor(a, requires_grad=True) for a in (xk, w, b)], tj.tensor(gy))
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, _np(e), rtol=2e-5, atol=2e-5)
    x64 = x.astype(np.float64)
    xh = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got[2], gy.sum(0), rtol=1e-5, atol=1e-5)  # (k = 1: x scaled)
    got0 = _run(g, [x, w, b, gy])
    np.testing.assert_allclose(got0[1], (gy * xh).sum(0), rtol=1e-4, atol=1e-5)


@device
def test_mse_and_backward_values_changing_between_calls() -> None:
    r = _rng(4)
    p = r.standard_normal((3, 5)).astype(np.float32)
    t = r.standard_normal((3, 5)).astype(np.float32)
    g = _graph(_mse_grad, tj.tensor(p, requires_grad=True), tj.tensor(t))
    prog = C.compile_cuda(g)
    for k in range(3):  # one program, new values each call (the planned buffers reused)
        pk, tk = p + k, t * (k - 1)
        loss, grad = prog([cuda.to_device(pk), cuda.to_device(tk)])
        want_l, want_g = _mse_grad(tj.tensor(pk, requires_grad=True), tj.tensor(tk))
        np.testing.assert_allclose(_host(loss, ()), _np(want_l), rtol=2e-6)
        np.testing.assert_allclose(_host(grad, (3, 5)), _np(want_g), rtol=2e-6, atol=1e-7)
        d = pk.astype(np.float64) - tk
        np.testing.assert_allclose(_host(loss, ()), (d * d).mean(), rtol=1e-5)
        np.testing.assert_allclose(_host(grad, (3, 5)), 2 * d / d.size, rtol=1e-5, atol=1e-7)


@device
def test_lone_reductions_over_leading_and_trailing_dims() -> None:
    x = _rng(5).standard_normal((4, 3, 6)).astype(np.float32)
    for fn in (lambda x: x.sum(0), lambda x: x.amax((0, 2)), lambda x: x.sum(-1, keepdim=True),
               lambda x: x.mean((0, 1))):
        g = _graph(fn, tj.tensor(x))
        (got,) = _run(g, [x])
        np.testing.assert_allclose(got, _np(fn(tj.tensor(x))), rtol=2e-6, atol=1e-6)


@device
def test_grid_stride_loops_over_more_work_than_blocks(monkeypatch: Any) -> None:
    """Two blocks for everything: each block loops over several rows, each thread over
    several elements (what large inputs do on a GPU)."""
    monkeypatch.setattr(C, "MAX_BLOCKS", 2)
    monkeypatch.setattr(C, "ELEM_THREADS", 32)
    x = _rng(9).standard_normal((7, 9)).astype(np.float32)
    for fn in (_softmax, _gelu, lambda x: x.sum(1)):
        g = _graph(fn, tj.tensor(x))
        prog = C.compile_cuda(g)
        assert all(k.grid((7, 9)) <= 2 for k in prog.kernels)
        (got,) = _run(g, [x])
        np.testing.assert_allclose(got, _np(fn(tj.tensor(x))), rtol=2e-6, atol=1e-6)


@device
def test_reshape_views_and_broadcast_operands() -> None:
    x = _rng(10).standard_normal((3, 4)).astype(np.float32)
    s = _rng(11).standard_normal((3, 1)).astype(np.float32)
    fn = lambda x, s: ((x * s).reshape(2, 6) + 1).exp().sum(1)  # noqa: E731
    g = _graph(fn, tj.tensor(x), tj.tensor(s))
    (got,) = _run(g, [x, s])
    np.testing.assert_allclose(got, _np(fn(tj.tensor(x), tj.tensor(s))), rtol=2e-6)
    np.testing.assert_allclose(got, np.exp((x.astype(np.float64) * s).reshape(2, 6) + 1).sum(1),
                               rtol=1e-5)


# ---- an MLP step: matmuls, the buffer plan, effects ----------------------------------------------


def _mlp(seed: int) -> tuple[Any, Any]:
    tj.manual_seed(seed)
    model = tj.nn.Sequential(tj.nn.Linear(8, 16), tj.nn.ReLU(), tj.nn.Linear(16, 4))
    return model, tj.optim.SGD(model.parameters(), lr=0.1)


def _step_fn(model: Any, opt: Any) -> Any:
    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


@device
def test_mlp_sgd_step_matches_eager_and_cpu_jit() -> None:
    r = _rng(6)
    xs = [r.standard_normal((5, 8)).astype(np.float32) for _ in range(3)]
    ys = [r.standard_normal((5, 4)).astype(np.float32) for _ in range(3)]
    m_e, o_e = _mlp(0)
    m_c, o_c = _mlp(0)
    m_g, o_g = _mlp(0)
    eager, cpu = _step_fn(m_e, o_e), tj.jit(_step_fn(m_c, o_c))
    g = _graph(_step_fn(m_g, o_g), tj.tensor(xs[0]), tj.tensor(ys[0]))
    prog = C.compile_cuda(g)
    assert "tiled" in prog.explain() or "cuBLAS" in prog.explain()
    # the device copies of the parameters, by the names the graph lifts them under; they stay
    # on the device between steps (the program writes the SGD update into them)
    state = {"model_" + k.replace(".", "_"): _np(v).copy() for k, v in m_e.state_dict().items()}
    params = {}
    for v in g.lifted:
        if v.name == "lr":
            params[v] = cuda.to_device(np.array([0.1]))
        else:
            params[v] = cuda.to_device(state[v.name])
    for x, y in zip(xs, ys):
        want = eager(tj.tensor(x), tj.tensor(y))
        got_cpu = cpu(tj.tensor(x), tj.tensor(y))
        out = prog([cuda.to_device(x), cuda.to_device(y), *[params[v] for v in g.lifted]])
        np.testing.assert_allclose(_host(out[0], ()), _np(want), rtol=1e-5)
        np.testing.assert_allclose(_host(out[0], ()), _np(got_cpu), rtol=1e-5)
    for k, v in m_e.state_dict().items():
        dev = next(params[p] for p in g.lifted if p.name == "model_" + k.replace(".", "_"))
        np.testing.assert_allclose(dev.copy_to_host(), _np(v), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dev.copy_to_host(), _np(m_c.state_dict()[k]), rtol=1e-5,
                                   atol=1e-6)


@device
def test_tiled_matmul_with_transposes_and_odd_sizes() -> None:
    from tracejit.kernels.cuda import gemm

    r = _rng(7)
    for m, k, n in [(1, 1, 1), (17, 5, 33), (3, 0, 2), (20, 31, 16)]:
        a = r.standard_normal((m, k)).astype(np.float32)
        b = r.standard_normal((k, n)).astype(np.float32)
        for ta in (False, True):
            for tb in (False, True):
                da = cuda.to_device(np.ascontiguousarray(a.T if ta else a))
                db = cuda.to_device(np.ascontiguousarray(b.T if tb else b))
                c = cuda.device_array((m, n), np.float32)
                gemm.matmul(da, db, c, ta, tb)
                np.testing.assert_allclose(c.copy_to_host(), a.astype(np.float64) @ b,
                                           rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="shapes do not agree"):
        gemm.matmul(cuda.to_device(a), cuda.to_device(a), cuda.device_array((20, 16)))


# ---- refusals ------------------------------------------------------------------------------------


@device
def test_refuses_what_it_cannot_render() -> None:
    x = tj.randn(4, 6)
    g = _graph(lambda x: x.argmax(1), x)
    with pytest.raises(UnsupportedError, match="index reduction"):
        C.compile_cuda(g)
    g = _graph(lambda x: tj.cumsum(x, 1), x)
    with pytest.raises(UnsupportedError, match="cumsum has no CUDA rendering"):
        C.compile_cuda(g)
    from tracejit.kir.lower import lower_fused

    n = next(n for n in _graph(_softmax, x).nodes if n.name == "fused")
    with pytest.raises(UnsupportedError, match="GPU schedule"):
        C.render_kernel(lower_fused(n))  # the CPU schedule (blocked loops, no meta)
    with pytest.raises(TypeError, match="wants a float32 device array of shape"):
        C.compile_cuda(_graph(_softmax, x))([cuda.to_device(np.zeros((4, 5), np.float32))])


@device
def test_program_for_builds_once_per_graph_and_device() -> None:
    x = tj.randn(3, 5)
    g1, g2 = _graph(_softmax, x), _graph(_gelu, x)
    p1 = C.program_for(g1)
    assert C.program_for(g1) is p1 and C.program_for(g2) is not p1
    assert C.device_name() == ("cuda:sim" if SIM else "cuda:0")
    (got,) = p1([cuda.to_device(_np(x))])
    np.testing.assert_allclose(got.copy_to_host(), _np(_softmax(x)), rtol=2e-6, atol=1e-7)


@pytest.mark.skipif(SIM or GPU, reason="only without a GPU or the simulator")
def test_without_a_gpu_building_says_what_is_missing() -> None:
    g = _graph(_softmax, tj.randn(3, 5))
    with pytest.raises(UnsupportedError, match="no CUDA GPU is visible.*NUMBA_ENABLE_CUDASIM=1"):
        C.compile_cuda(g)
    assert C.graph_kernels(g, warp=True)  # rendering (and PTX) needs no GPU


def test_cache_key_device() -> None:
    assert C.cache_key_device([np.zeros(2)]) is None

    class Dev:
        __cuda_array_interface__: dict[str, Any] = {}

    assert C.cache_key_device([Dev(), Dev()]) == "cuda"
    with pytest.raises(ValueError, match="mix CUDA device arrays and host arrays"):
        C.cache_key_device([Dev(), np.zeros(2)])


# ---- PTX for Hopper: every kernel float32 graphs render to, no float64 ---------------------------

_PTX_SCRIPT = r"""
import json, numpy as np, tracejit as tj, tracejit.nn.functional as F
from tracejit.codegen import cuda as C
from tracejit.kernels.cuda import gemm
import tests.test_cuda_jit as T
from numba import cuda
def graph(fn, *a):
    jf = tj.jit(fn); jf(*a); jf(*a)
    return next(e for es in jf._entries.values() for e in es).graph
x, w = tj.randn(3, 5), tj.randn(5)
m, o = T._mlp(0)
graphs = [graph(T._gelu, x), graph(T._softmax, x), graph(T._layernorm, x, w, tj.randn(5)),
          graph(T._mse_grad, tj.randn(3, 5, requires_grad=True), x),
          graph(lambda x: x.sum(0), x), graph(lambda x: x.amax(1), x),
          graph(T._ln_grad, tj.randn(3, 5, requires_grad=True), tj.randn(5, requires_grad=True),
                tj.randn(5, requires_grad=True), tj.randn(3, 5)),
          graph(lambda x: tj.sigmoid(x).clamp(-0.5, 0.5) + x.abs().floor() ** 3, x),
          graph(T._step_fn(m, o), tj.randn(5, 8), tj.randn(5, 4))]
out = []
for g in graphs:
    for rk in C.graph_kernels(g, warp=True):
        p = C.ptx(rk)
        out.append([rk.name, rk.kind, C.float32_only(rk), C.f64_lines(p)[:3], "shfl" in p])
p, _ = cuda.compile_ptx(gemm.FUNCTIONS[np.dtype(np.float32)],
                        gemm.SIGNATURES[np.dtype(np.float32)], cc=(9, 0))
out.append(["gemm_tiled_f32", "gemm", True, C.f64_lines(p)[:3], False])
print("RESULT" + json.dumps(out))
"""


def test_every_float32_kernel_compiles_to_ptx_without_float64() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], capture_output=True, text=True,
                       env=env, cwd=root, timeout=900)
    line = next((s for s in r.stdout.splitlines() if s.startswith("RESULT")), None)
    if line is None and ("nvrtc" in r.stderr.lower() or "libnvvm" in r.stderr.lower()):
        pytest.skip("compile_ptx needs nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvcc-cu12")
    assert line is not None, r.stderr[-3000:]
    results = json.loads(line[len("RESULT"):])
    assert len(results) >= 12
    for name, kind, f32, f64, shfl in results:
        if f32:
            assert not f64, f"{name}: float64 instructions in a float32 kernel: {f64}"
        if kind == "rows":
            assert shfl, f"{name}: a row kernel without warp shuffles"
