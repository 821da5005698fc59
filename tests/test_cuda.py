"""CUDA tensors and eager CUDA ops (issue 14 part A), on Numba's CUDA simulator.

The simulator is chosen by NUMBA_ENABLE_CUDASIM=1 when numba.cuda is first imported, once per
process, and other test modules assume a process without CUDA. So, run as part of the whole
suite, this module starts itself again in a subprocess with NUMBA_ENABLE_CUDASIM=1 (one test
here, its failures printed in full); run directly with the variable set
(`NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda.py`) the tests run in-process.
Either way the PTX check runs in a process without the simulator, since the simulator neither
compiles nor type-checks kernels. Everything is skipped, with the reason, without numba-cuda.

References: each op's NumPy float64 reference from tests/test_ops.py's table (tiny sizes), the
CPU tensors' results and gradients (themselves checked against finite differences there), and
torch for the training loop."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from typing import Any

import numpy as np
import pytest

try:
    metadata.version("numba-cuda")
except metadata.PackageNotFoundError:
    pytest.skip("numba-cuda is not installed (pip install 'tracejit[cuda]')",
                allow_module_level=True)

# the simulator runs kernels as Python threads over NumPy scalars, which warn on 1/0 and log(0)
# (a GPU, like eager mode, returns inf/nan quietly), and NumPy's error state is per thread
pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore::RuntimeWarning")]
IN_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _env(sim: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return env


def test_every_eager_kernel_compiles_to_ptx_without_float64() -> None:
    """All kernels the eager backend generates, compiled for cc 9.0 (Hopper); float32 kernels
    must hold no float64 instruction (tracejit/cuda/ptxcheck.py)."""
    r = subprocess.run([sys.executable, "-m", "tracejit.cuda.ptxcheck"], env=_env(False),
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert " 0 bad" in r.stdout


if not IN_SIM:

    def test_cuda_suite_under_the_simulator() -> None:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            os.path.abspath(__file__), "-k", "not ptx"],
                           env=_env(True), capture_output=True, text=True, timeout=1200,
                           cwd=ROOT)
        assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-3000:]

    def test_cuda_request_without_a_gpu_is_a_one_line_error() -> None:
        import tracejit as tj

        if tj.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
        with pytest.raises(RuntimeError) as info:
            tj.zeros(2, device="cuda")
        msg = str(info.value)
        assert "\n" not in msg and "CUDA is not available" in msg and "'cuda'" in msg
        assert "NUMBA_ENABLE_CUDASIM" in msg or "pip install" in msg

else:
    import tracejit as tj
    from tracejit import nn
    from tracejit.cuda import backend
    from tracejit.cuda import eager as cuda_eager
    from tracejit.cuda.allocator import CachingAllocator, size_class
    from tracejit.ops import REGISTRY, Kind

    sys.path.insert(0, HERE)
    from test_ops import PASS_MADE, RANDOM_ROWS, ROWS, Row  # noqa: E402

    # ops with no CUDA kernel yet: they run on a host copy, counted by host_fallbacks()
    HOST_OPS = {"gather", "scatter_add", "index", "index_put", "check_index", "nonzero",
                "cumsum", "argsort", "attention", "attention_bwd", "conv", "conv_transpose",
                "conv_weight_grad", "max_pool2d_indices", "avg_pool2d", "avg_pool2d_bwd",
                "adaptive_avg_pool2d", "adaptive_avg_pool2d_bwd", "philox"}

    def _flat(o: Any) -> list[Any]:
        if isinstance(o, (tuple, list)):
            return [y for x in o for y in _flat(x)]
        return [o]

    def _on(a: Any, dev: str, grad: bool = False) -> Any:
        if not isinstance(a, np.ndarray):
            return a
        t = tj.tensor(a, dtype=tj.float32 if a.dtype.kind == "f" else None, device=dev)
        return t.requires_grad_(True) if grad and a.dtype.kind == "f" else t

    def _host(t: Any) -> Any:
        return t.detach().cpu().numpy() if isinstance(t, tj.Tensor) else t

    SEEN: set[str] = set()  # ops that reached the CUDA eager path (the spy below)
    RAN: set[tuple[str, str]] = set()  # (test, row) pairs that ran

    @pytest.fixture(autouse=True, scope="module")
    def _record_cuda_ops() -> Any:
        real = cuda_eager.run

        def spy(op: Any, *a: Any, **k: Any) -> Any:
            SEEN.add(op.name)
            return real(op, *a, **k)

        cuda_eager.run = spy  # dispatch imports `run` from the module on each CUDA op
        yield
        cuda_eager.run = real

    OP_ROWS = [r for r in ROWS if r.name not in RANDOM_ROWS
               and any(isinstance(a, np.ndarray) for a in r.inputs(0))]
    GRAD_ROWS = [r for r in OP_ROWS if r.grad]

    @pytest.mark.parametrize("row", OP_ROWS, ids=[r.name for r in OP_ROWS])
    def test_op_on_cuda_matches_the_reference(row: Row) -> None:
        RAN.add(("op", row.name))
        xs = row.inputs(0)
        got = _flat(row.fn(tj, *[_on(a, "cuda") for a in xs]))
        cpu = _flat(row.fn(tj, *[_on(a, "cpu") for a in xs]))
        want = _flat(row.ref(*[a.astype(np.float64) if isinstance(a, np.ndarray) and
                               a.dtype.kind == "f" else a for a in xs]))
        assert len(got) == len(want) == len(cpu)
        for g, c, w in zip(got, cpu, want):
            if not isinstance(g, tj.Tensor):
                assert g == c
                continue
            assert g.device == tj.device("cuda:0") and g.dtype is c.dtype, (g.device, g.dtype)
            assert tuple(g.shape) == tuple(c.shape)
            gh = _host(g)
            np.testing.assert_allclose(gh.astype(np.float64), np.asarray(w, np.float64),
                                       rtol=row.rtol, atol=max(row.atol, 1e-5), equal_nan=True)

    @pytest.mark.parametrize("row", GRAD_ROWS, ids=[r.name for r in GRAD_ROWS])
    def test_gradient_on_cuda_matches_cpu(row: Row) -> None:
        RAN.add(("grad", row.name))
        xs = row.inputs(0)

        def grads(dev: str) -> list[Any]:
            ins = [_on(a, dev, True) for a in xs]
            total = None
            for o in _flat(row.fn(tj, *ins)):
                if isinstance(o, tj.Tensor) and o.requires_grad:
                    w = np.linspace(-1, 1, o.numel()).reshape(tuple(o.shape)).astype(np.float32)
                    v = (o * tj.tensor(w, device=dev)).sum()
                    total = v if total is None else total + v
            if total is None:
                return []
            total.backward()
            return [t.grad for t in ins if isinstance(t, tj.Tensor) and t.requires_grad]

        for g, c in zip(grads("cuda"), grads("cpu")):
            if c is None:
                assert g is None
                continue
            assert g.device == tj.device("cuda")
            np.testing.assert_allclose(_host(g), _host(c), rtol=1e-4, atol=1e-5)

    def test_every_registered_op_ran_on_cuda() -> None:
        """Each non-structural op reached the CUDA eager path in the row tests above (forward
        or backward), and the ops that run on a host copy are exactly HOST_OPS. (`full` is
        filled by a kernel and `arange` made on the host and copied, both outside dispatch:
        the factories test covers them; philox draws for CUDA tensors are made on the host.)"""
        want = {("op", r.name) for r in OP_ROWS} | {("grad", r.name) for r in GRAD_ROWS}
        if not want <= RAN:
            pytest.skip("needs every row test of this module to have run first")
        # (also not here: ops only the CPU conv_fuse pass makes, and collectives, which need a
        # process group and, on CUDA, NCCL: tests/test_distributed.py)
        structural = {n for n, op in REGISTRY.items() if op.kind in
                      (Kind.STRUCTURAL, Kind.COLLECTIVE) or n in PASS_MADE}
        missing = sorted(set(REGISTRY) - structural - {"full", "arange", "philox"} - SEEN)
        assert not missing, f"ops never run on CUDA: {missing}"
        spell = set(cuda_eager.ew.SPELL)
        on_device = {n for n, op in REGISTRY.items() if
                     (op.kind is Kind.ELEMENTWISE and op.scalar in spell) or
                     op.kind is Kind.REDUCE or n == "matmul" or n in cuda_eager.MOVEMENT}
        assert set(REGISTRY) - on_device - structural - {"full", "arange"} == HOST_OPS

    # ---- devices, factories, transfers ----------------------------------------------------

    def test_device_queries_and_transfers() -> None:
        assert tj.cuda.is_available() and tj.cuda.device_count() == 1
        tj.cuda.synchronize()
        x = tj.tensor([[1.0, 2.0], [3.0, 4.0]], device="cuda")
        assert x.is_cuda and x.device == tj.device("cuda:0") and str(x.device) == "cuda:0"
        assert "device='cuda:0'" in repr(x)
        y = tj.ones(2, 2).to("cuda")
        assert y.is_cuda and tj.ones(2).cuda().is_cuda
        z = (x + y).cpu()
        assert not z.is_cuda and z.tolist() == [[2.0, 3.0], [4.0, 5.0]]
        assert x.sum().item() == 10.0 and bool(x[0, 0] == 1.0)
        assert x.to("cpu", tj.float64).dtype is tj.float64
        assert x.to(tj.float64).is_cuda

    def test_factories_make_cuda_tensors() -> None:
        for make in (lambda: tj.zeros(2, 3, device="cuda"), lambda: tj.ones(4, device="cuda"),
                     lambda: tj.full((2,), 7, device="cuda"), lambda: tj.arange(5, device="cuda"),
                     lambda: tj.linspace(0, 1, 5, device="cuda"), lambda: tj.eye(3, device="cuda"),
                     lambda: tj.randn(3, device="cuda"), lambda: tj.rand(3, device="cuda"),
                     lambda: tj.randint(0, 5, (4,), device="cuda"),
                     lambda: tj.empty(2, device="cuda"),
                     lambda: tj.zeros_like(tj.ones(2, device="cuda"))):
            assert make().is_cuda
        np.testing.assert_array_equal(_host(tj.arange(5, device="cuda")), np.arange(5))
        np.testing.assert_array_equal(_host(tj.full((2, 2), 7.5, device="cuda")),
                                      np.full((2, 2), 7.5, np.float32))
        np.testing.assert_array_equal(_host(tj.eye(3, device="cuda")), np.eye(3))

    def test_cuda_manual_seed_reproduces_draws() -> None:
        tj.cuda.manual_seed(3)
        a = _host(tj.randn(5, device="cuda"))
        tj.cuda.manual_seed(3)
        b = _host(tj.randn(5, device="cuda"))
        np.testing.assert_array_equal(a, b)
        tj.manual_seed(3)  # seeds the CUDA generator too, as torch's does
        np.testing.assert_array_equal(_host(tj.randn(5, device="cuda")), a)

    def test_transfer_is_differentiable() -> None:
        x = tj.tensor([1.0, -2.0, 3.0], requires_grad=True)
        y = (x.cuda() * 2).relu().sum()
        y.backward()
        assert x.grad is not None and not x.grad.is_cuda
        np.testing.assert_array_equal(x.grad.numpy(), [2.0, 0.0, 2.0])

    # ---- errors ----------------------------------------------------------------------------

    def test_mixing_devices_names_both() -> None:
        a, b = tj.ones(2, device="cuda"), tj.ones(2)
        for f in (lambda: a + b, lambda: b * a, lambda: tj.ones(2, 2, device="cuda") @
                  tj.ones(2, 2), lambda: tj.cat([a, b])):
            with pytest.raises(RuntimeError, match="cuda:0.*cpu|cpu.*cuda:0"):
                f()
        assert (a + tj.tensor(2.0)).is_cuda  # a 0-d CPU tensor joins in, as torch

    def test_bad_device_requests() -> None:
        with pytest.raises(RuntimeError, match="cuda:1.*only 1 CUDA device"):
            tj.ones(2, device="cuda:1")
        with pytest.raises(TypeError, match=r"Tensor\.cpu\(\)"):
            tj.ones(2, device="cuda").numpy()
        with pytest.raises(TypeError, match=r"Tensor\.cpu\(\)"):
            np.asarray(tj.ones(2, device="cuda"))
        with pytest.raises(RuntimeError, match="float16.*not supported on CUDA"):
            tj.ones(2, dtype=tj.float16).cuda()

    def test_unsupported_pairs_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
        real = metadata.version

        def fake(versions: dict[str, str | None]) -> Any:
            def version(name: str) -> str:
                if name in versions:
                    v = versions[name]
                    if v is None:
                        raise metadata.PackageNotFoundError(name)
                    return v
                return real(name)

            return version

        for versions, np_version, want in (
                ({"numba-cuda": None}, np.__version__, "numba-cuda is not installed"),
                ({"numba-cuda": "0.31.0"}, np.__version__, "numba-cuda 0.31.0 is installed"),
                ({}, "2.5.0", "NumPy 2.5.0 is installed")):
            monkeypatch.setattr(backend.metadata, "version", fake(versions))
            monkeypatch.setattr(backend.np, "__version__", np_version)
            why = backend._unavailable_reason()
            assert why is not None and want in why and "\n" not in why
            assert "pip install" in why
        monkeypatch.undo()
        assert backend._unavailable_reason() is None

    # ---- semantics at the edges ------------------------------------------------------------

    def test_special_values_match_cpu() -> None:
        v = np.array([0.0, -0.0, 1.5, -2.5, np.inf, -np.inf, np.nan, 1e-40], np.float32)
        w = v[::-1].copy()
        cpu = (tj.tensor(v), tj.tensor(w))
        gpu = (tj.tensor(v, device="cuda"), tj.tensor(w, device="cuda"))
        for f in (lambda t, o: t.relu(), lambda t, o: t.sign(), lambda t, o: t.maximum(o),
                  lambda t, o: t.minimum(o), lambda t, o: t.clamp(-1, 1),
                  lambda t, o: t.abs(), lambda t, o: t.round(), lambda t, o: t.floor(),
                  lambda t, o: t / 0, lambda t, o: -t, lambda t, o: t.sigmoid(),
                  lambda t, o: (t > 0).float(), lambda t, o: t.amax(), lambda t, o: t.argmax(),
                  lambda t, o: t.sum(), lambda t, o: t.eq(t), lambda t, o: t.where(o > 0, o),
                  lambda t, o: t.exp(), lambda t, o: t.log(), lambda t, o: t.sqrt()):
            want, got = _host(f(*cpu)), _host(f(*gpu))
            np.testing.assert_array_equal(got, want)
            if got.dtype.kind == "f":  # the sign of zeros (a NaN's sign means nothing)
                real = ~np.isnan(want)
                np.testing.assert_array_equal(np.signbit(got)[real], np.signbit(want)[real])

    def test_empty_size_one_and_views() -> None:
        e = tj.zeros(0, 3, device="cuda")
        assert tuple((e + 1).shape) == (0, 3) and _host(e.sum()) == 0
        assert tuple(e.sum(0).shape) == (3,)
        one = tj.tensor([[2.0]], device="cuda")
        assert _host(one @ one).tolist() == [[4.0]]
        a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        x = tj.tensor(a, device="cuda")
        np.testing.assert_array_equal(_host(x.permute(2, 0, 1) * 1), a.transpose(2, 0, 1))
        np.testing.assert_array_equal(_host(x[:, ::2, 1:]), a[:, ::2, 1:])
        np.testing.assert_array_equal(_host(x.transpose(1, 2).reshape(2, 12)),
                                      a.transpose(0, 2, 1).reshape(2, 12))
        np.testing.assert_array_equal(_host(x[0].expand(2, 3, 4) + x), a[0] + a)
        np.testing.assert_array_equal(_host(x.mT @ x), a.transpose(0, 2, 1) @ a)
        np.testing.assert_array_equal(_host(x.sum((0, 2))), a.sum((0, 2)))
        x[0, 1] += 100  # in place through a view writes the base
        a[0, 1] += 100
        np.testing.assert_array_equal(_host(x), a)
        with pytest.raises(RuntimeError, match="expanded"):
            x[0].expand(2, 3, 4).add_(1)

    def test_kernels_are_cached_and_scalars_change_between_calls() -> None:
        x = tj.tensor([1.0, 2.0], device="cuda")
        _host(x * 3.0)
        n = len(cuda_eager._KERNELS)
        for s in (4.0, -1.5, float("nan")):
            np.testing.assert_array_equal(_host(x * s), np.array([1, 2], np.float32) * s)
        assert len(cuda_eager._KERNELS) == n

    # ---- the caching allocator -------------------------------------------------------------

    def test_allocator_reuses_freed_blocks() -> None:
        made: list[int] = []

        def raw(nbytes: int) -> Any:
            made.append(nbytes)
            return np.zeros(nbytes, np.uint8)  # a host stand-in for a device byte buffer

        pool = CachingAllocator(raw)
        a = pool.alloc(100, np.dtype(np.float32))
        assert a.shape == (100,) and a.dtype == np.float32 and made == [512]
        del a
        b = pool.alloc(120, np.dtype(np.float32))  # the same 512-byte class: reused
        assert made == [512] and pool.stats.reused == 1
        c = pool.alloc(100, np.dtype(np.float64))  # b is alive: a new block
        assert made == [512, 1024]
        del b, c
        assert pool.stats.bytes_in_use == 0 and pool.stats.bytes_cached == 1536
        pool.empty_cache()
        assert pool.stats.bytes_cached == 0
        assert size_class(1) == 512 and size_class(3 << 20) == 4 << 20

    # ---- training ----------------------------------------------------------------------------

    @pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
    def test_mlp_training_on_cuda_matches_cpu_and_torch(opt_name: str) -> None:
        torch = pytest.importorskip("torch")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((6, 4)).astype(np.float32)
        y = rng.standard_normal((6, 3)).astype(np.float32)
        tj.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        init = [p.detach().numpy().copy() for p in model.parameters()]
        model.to("cuda")
        kw: dict[str, Any] = {"lr": 0.05, "momentum": 0.9} if opt_name == "SGD" else {"lr": 0.01}
        opt = getattr(tj.optim, opt_name)(model.parameters(), **kw)
        tm = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        with torch.no_grad():
            for p, v in zip(tm.parameters(), init):
                p.copy_(torch.from_numpy(v))
        topt = getattr(torch.optim, opt_name)(tm.parameters(), **kw)
        xc, yc = tj.tensor(x, device="cuda"), tj.tensor(y, device="cuda")
        tj.cuda.reset_host_fallbacks()
        mallocs = []
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(xc), yc)
            loss.backward()
            opt.step()
            topt.zero_grad()
            tl = torch.nn.functional.mse_loss(tm(torch.from_numpy(x)), torch.from_numpy(y))
            tl.backward()
            topt.step()
            np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-5)
            mallocs.append(tj.cuda.memory_stats()["device_mallocs"])
        for p, tp in zip(model.parameters(), tm.parameters()):
            assert p.is_cuda and p.grad is not None and p.grad.is_cuda
            np.testing.assert_allclose(_host(p), tp.detach().numpy(), rtol=1e-5, atol=1e-6)
        for state in opt.state.values():
            for k, v in state.items():
                if isinstance(v, tj.Tensor) and v.ndim:
                    assert v.is_cuda, k
        assert tj.cuda.host_fallbacks() == {}  # nothing bounced to the host
        assert mallocs[1] == mallocs[2]  # from the second step on, memory is reused
