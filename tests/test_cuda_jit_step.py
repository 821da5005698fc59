"""@jit on CUDA tensors (tracejit/cuda/program.py): a function or training step whose tensors
are CUDA tensors is traced as usual, compiled once with the CUDA renderer
(codegen/cuda.py) and run on the tensors' own device storage; parameters, optimizer state
and .grad stay on the device and are updated there. Compared with the same step run eagerly
on CUDA, on the CPU and (for elementwise math) NumPy float64; what the renderer refuses runs
eagerly with the reason in explain() and cache_info().fallbacks.

Runs under NUMBA_ENABLE_CUDASIM=1 (Numba's simulator: tiny sizes) or on a GPU; skipped
otherwise, with that reason (.ci/run runs it under the simulator)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed "
                           "(pip install 'tracejit[cuda]')")
if not hasattr(cuda, "jit"):
    pytest.skip("numba.cuda has no jit: numba-cuda is not installed", allow_module_level=True)

import numba  # noqa: E402

SIM = bool(numba.config.ENABLE_CUDASIM)
try:
    GPU = not SIM and cuda.is_available()
except Exception:  # noqa: BLE001
    GPU = False
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not (SIM or GPU), reason="no CUDA GPU: run with "
                                 "NUMBA_ENABLE_CUDASIM=1 to test on Numba's simulator")]


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _gelu64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2)))


# ---- functions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (0, 4)])
def test_gelu_on_cuda_compiles_once_and_follows_new_values(shape: tuple[int, ...]) -> None:
    f = tj.jit(lambda x: F.gelu(x) * 2 + 1)
    for seed in range(3):  # the values change between calls; the program is reused
        x = _rng(seed).standard_normal(shape).astype(np.float32)
        got = f(tj.tensor(x, device="cuda"))
        assert got.device.type == "cuda" and got.shape == shape
        want_cpu = F.gelu(tj.tensor(x)) * 2 + 1
        np.testing.assert_allclose(_np(got), _np(want_cpu), rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(_np(got), _gelu64(x) * 2 + 1, rtol=1e-5, atol=1e-6)
    info = f.cache_info()
    assert (info.traces, info.compiles, info.fallbacks) == (1, 1, 0), info
    text = str(f.explain(tj.tensor(x, device="cuda")))
    assert "CUDA program" in text and "compiled" in text


def test_special_values_and_a_softmax_row_kernel() -> None:
    x = np.array([[0.0, -0.0, np.inf, -np.inf], [np.nan, 1.0, -3.0, 88.0]], np.float32)
    f = tj.jit(lambda x: (tj.relu(x), tj.where(x > 0, x, -x), tj.softmax(x * 0.5, 1)))
    for _ in range(2):
        got = f(tj.tensor(x, device="cuda"))
    want = (tj.relu(tj.tensor(x)), tj.where(tj.tensor(x) > 0, tj.tensor(x), -tj.tensor(x)),
            tj.softmax(tj.tensor(x) * 0.5, 1))
    for g, w in zip(got, want):
        assert g.device.type == "cuda"
        np.testing.assert_allclose(_np(g), _np(w), rtol=2e-6, atol=1e-7, equal_nan=True)
    assert np.signbit(_np(got[0])[0, 1])  # relu keeps -0.0, as eager does
    assert f.cache_info().compiles == 1 and f.cache_info().fallbacks == 0


def test_a_refused_op_runs_eagerly_with_the_reason() -> None:
    x = _rng(1).standard_normal((3, 5)).astype(np.float32)
    f = tj.jit(lambda x: (x * 2).argmax(1))  # an index reduction: not rendered for CUDA
    with pytest.warns(UserWarning, match="CUDA"):
        for _ in range(3):
            got = f(tj.tensor(x, device="cuda"))
    np.testing.assert_array_equal(_np(got), x.argmax(1))
    info = f.cache_info()
    assert info.compiles == 0 and info.fallbacks == 2, info
    text = str(f.explain(tj.tensor(x, device="cuda")))
    assert "eager: no compilation rule: CUDA:" in text and "index reduction" in text


def test_a_graph_break_on_cuda_runs_eagerly_on_the_device() -> None:
    f = tj.jit(lambda x: x * x.sum().item() + 1)  # .item(): a host read, a graph break
    with pytest.warns(UserWarning, match="on CUDA it runs eagerly"):
        for seed in range(3):
            x = _rng(seed).standard_normal((2, 3)).astype(np.float32)
            got = f(tj.tensor(x, device="cuda"))
            assert got.device.type == "cuda"
            np.testing.assert_allclose(_np(got), x * np.float32(x.sum()) + 1, rtol=1e-5)
    info = f.cache_info()
    assert info.compiles == 0 and info.fallbacks == 2 and info.replays == 0, info
    assert "graph break" in str(f.explain(tj.tensor(x, device="cuda")))


def test_mixed_device_arguments_are_a_clear_error() -> None:
    f = tj.jit(lambda x, y: x + y)
    with pytest.raises(Exception, match=r"same device.*cuda.*cpu|same device.*cpu.*cuda"):
        f(tj.ones(3, 2, device="cuda"), tj.ones(3, 2))


def test_a_cpu_number_joins_and_a_python_number_changes_between_calls() -> None:
    f = tj.jit(lambda x, a: x * a + tj.tensor(1.5))
    x = _rng(2).standard_normal((4,)).astype(np.float32)
    for a in (2.0, 3.0, -0.5, 0.25):
        got = f(tj.tensor(x, device="cuda"), a)
        assert got.device.type == "cuda"
        np.testing.assert_allclose(_np(got), x * np.float32(a) + np.float32(1.5), rtol=1e-6)
    assert f.cache_info().fallbacks == 0, f.cache_info()


# ---- training steps ----------------------------------------------------------------------------


def _mlp(seed: int, device: str, opt: str) -> tuple[Any, Any]:
    tj.manual_seed(seed)
    model = tj.nn.Sequential(tj.nn.Linear(8, 16), tj.nn.ReLU(), tj.nn.Linear(16, 4))
    model.to(device)
    if opt == "sgd":
        return model, tj.optim.SGD(model.parameters(), lr=0.1)
    return model, tj.optim.Adam(model.parameters(), lr=0.01)


def _step_fn(model: Any, opt: Any) -> Any:
    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_mlp_step_on_cuda_matches_eager_cuda_and_cpu(opt: str) -> None:
    r = _rng(6)
    n = 4
    xs = [r.standard_normal((5, 8)).astype(np.float32) for _ in range(n)]
    ys = [r.standard_normal((5, 4)).astype(np.float32) for _ in range(n)]
    m_j, o_j = _mlp(0, "cuda", opt)
    m_e, o_e = _mlp(0, "cuda", opt)
    m_c, o_c = _mlp(0, "cpu", opt)
    jitted, eager, cpu = tj.jit(_step_fn(m_j, o_j)), _step_fn(m_e, o_e), _step_fn(m_c, o_c)
    bufs = {k: p._data.buf for k, p in m_j.named_parameters()}
    for x, y in zip(xs, ys):
        got = jitted(tj.tensor(x, device="cuda"), tj.tensor(y, device="cuda"))
        want = eager(tj.tensor(x, device="cuda"), tj.tensor(y, device="cuda"))
        ref = cpu(tj.tensor(x), tj.tensor(y))
        assert got.device.type == "cuda"
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)
        np.testing.assert_allclose(got.item(), ref.item(), rtol=1e-5)
    info = jitted.cache_info()
    assert info.compiles == 1 and info.fallbacks == 0, (info, str(jitted.explain(
        tj.tensor(xs[0], device="cuda"), tj.tensor(ys[0], device="cuda"))))
    ref_params = dict(m_c.named_parameters())
    eager_params = dict(m_e.named_parameters())
    for k, p in m_j.named_parameters():
        # updated on the device, in the tensors' own storage (no copy in or out)
        assert p.device.type == "cuda" and p._data.buf is bufs[k]
        assert p.grad is not None and p.grad.device.type == "cuda"
        np.testing.assert_allclose(_np(p), _np(eager_params[k]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_np(p), _np(ref_params[k]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_np(p.grad), _np(ref_params[k].grad), rtol=1e-4, atol=1e-6)
    if opt == "adam":
        for p in m_j.parameters():
            st = o_j.state[p]
            assert st["exp_avg"].device.type == "cuda"
