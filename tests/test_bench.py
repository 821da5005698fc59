"""tracejit-bench: the CLI's JSON follows its documented schema, every implementation that ran
was checked against the float64 reference, and a planted wrong implementation is reported as
wrong and never timed. Correctness and schema only: no timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tracejit.benchmarks import core

from tracejit import bench

STATUSES = {"ok", "skipped", "wrong"}
RESULT_KEYS: dict[str, Any] = {
    "impl": str, "status": str, "reason": str, "correct": (bool, type(None)),
    "max_error": (float, type(None)), "tolerance": (float, type(None)),
    "median_s": (float, type(None)), "min_s": (float, type(None)),
    "max_s": (float, type(None)), "samples_s": list, "calls_per_sample": int,
    "metrics": dict, "ratio": (float, type(None)), "roofline_fraction": (float, type(None)),
}
WORKLOAD_KEYS: dict[str, Any] = {
    "name": str, "description": str, "size": dict, "kind": str, "metrics": list,
    "metric_units": list, "repeat": int, "baseline": (str, type(None)), "baseline_note": str,
    "roofline": (dict, type(None)), "results": list,
}
# fast in CI: no torch.compile (seconds to compile), no jax (not installed there), and the
# subprocess-heavy compile workload gets its own smaller test
FAST_IMPLS = ["tracejit-eager", "numpy", "torch"]


def check_schema(doc: dict[str, Any]) -> None:
    assert doc["schema_version"] == bench.SCHEMA_VERSION
    for key in ("created", "command", "quick", "device", "machine", "workloads"):
        assert key in doc, key
    m = doc["machine"]
    for key in ("cpu_model", "cores", "blas", "threads", "env", "versions"):
        assert key in m, key
    assert "OPENBLAS_CORETYPE" in m["env"] and "numpy" in m["versions"]
    for wl in doc["workloads"]:
        for key, typ in WORKLOAD_KEYS.items():
            assert isinstance(wl[key], typ), (wl["name"], key, wl[key])
        assert wl["kind"] in ("time", "metrics")
        for res in wl["results"]:
            for key, typ in RESULT_KEYS.items():
                assert isinstance(res[key], typ), (wl["name"], res["impl"], key, res[key])
            assert res["status"] in STATUSES
            if res["status"] == "ok":
                # every implementation that ran was checked correct first
                assert res["correct"] is True and res["max_error"] <= res["tolerance"]
                if wl["kind"] == "time":
                    assert res["samples_s"] and res["median_s"] > 0
                    assert res["min_s"] <= res["median_s"] <= res["max_s"]
                else:
                    assert set(res["metrics"]) == set(wl["metrics"])
                assert res["ratio"] is not None
            else:
                assert res["reason"], (wl["name"], res["impl"])
                assert res["median_s"] is None and not res["samples_s"] and not res["metrics"]
            if res["status"] == "wrong":
                assert res["correct"] is False


def run_main(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--no-progress", "--json", str(out), *args])
    return rc, json.loads(out.read_text())


def test_quick_json_schema_and_every_ran_impl_checked(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    # (ddp: mpiexec-launched processes, no numpy implementation; outside the default run)
    names = [n for n in core.workloads() if n not in ("compile", "jit-compile", "ddp")]
    args = [a for n in names for a in ("--workload", n)]
    args += [a for i in FAST_IMPLS for a in ("--impl", i)]
    rc, doc = run_main(tmp_path, *args, "--repeat", "2")
    assert rc == 0
    check_schema(doc)
    assert [wl["name"] for wl in doc["workloads"]] == names
    for wl in doc["workloads"]:
        by_impl = {r["impl"]: r for r in wl["results"]}
        assert by_impl["numpy"]["status"] == "ok", (wl["name"], by_impl["numpy"]["reason"])
        if wl["name"] in ("gelu", "softmax", "layernorm", "softmax-xent-bwd", "layernorm-bwd"):
            assert wl["roofline"]["bandwidth_gbs"] > 0
            assert by_impl["numpy"]["roofline_fraction"] > 0
    # the table went to stdout with every workload in it
    text = capsys.readouterr().out
    assert "machine:" in text and all(f"== {n}:" in text for n in names)


def test_compile_workload_in_subprocesses(tmp_path: Path) -> None:
    rc, doc = run_main(tmp_path, "--workload", "compile", "--impl", "numpy", "--repeat", "1")
    assert rc == 0
    check_schema(doc)
    res = doc["workloads"][0]["results"][0]
    assert res["status"] == "ok", res["reason"]
    assert res["metrics"]["cold_s"]["median"] > res["metrics"]["cold_first_call_s"]["median"]


def test_jit_compile_workload_metrics_per_layer_count(tmp_path: Path) -> None:
    """Quick size: L = 1 and 2, each in a fresh child with an empty cache; tracejit-eager
    (no compile, seconds) checks the schema, the per-L metric names and the children's check."""
    rc, doc = run_main(tmp_path, "--workload", "jit-compile", "--impl", "tracejit-eager",
                       "--repeat", "1")
    assert rc == 0
    check_schema(doc)
    wl = doc["workloads"][0]
    assert wl["metrics"][0] == "L2_first_s" and "L1_compile_s" in wl["metrics"]
    assert wl["metric_units"][-2:] == ["x", "x"]
    res = wl["results"][0]
    assert res["status"] == "ok", res["reason"]
    first = res["metrics"]["L2_first_s"]["median"]
    assert first > res["metrics"]["L2_compile_s"]["median"] >= 0


def test_jit_probe_reports_fallbacks_and_retraces() -> None:
    """The contract the runner enforces: a jit case is timed only when its calls were
    compiled hits; a graph break (fallback) is a skip whose reason comes from explain()."""
    tj = pytest.importorskip("tracejit")
    from tracejit.benchmarks.jitprobe import JitProbe, warm

    x = tj.from_numpy(np.arange(4, dtype=np.float32))
    jf = tj.jit(lambda t: t * 2 + 1)
    probe = JitProbe(jf)
    warm(probe, lambda: jf(x))
    assert probe.compiled() and probe.problem("check") is None
    probe.mark()
    jf(x)
    assert probe.problem("timed") is None
    jf(tj.from_numpy(np.arange(5, dtype=np.float32)))  # a new shape: a retrace, not a hit
    assert "not all compiled hits" in (probe.problem("timed") or "")

    def breaks(t: object) -> object:
        print(t.tolist())  # type: ignore[attr-defined]  # a graph break: a lazy replay
        return t * 2

    jb = tj.jit(breaks)
    pb = JitProbe(jb)
    with pytest.warns(Warning):
        warm(pb, lambda: jb(x))
    reason = pb.problem("check") or ""
    assert "lazy replay" in reason and "graph break" in reason


BACKWARD_WORKLOADS = ("softmax-xent-bwd", "layernorm-bwd")


def test_backward_workloads_every_available_impl_checked(tmp_path: Path) -> None:
    """Quick size, every implementation but torch.compile (seconds to compile): each one that
    can run here passes its check against the float64 reference, and the jit's result and
    timed calls were compiled code's (else the runner reports it skipped)."""
    impls = ["tracejit-jit", "tracejit-eager", "numpy", "torch", "jax"]
    args = [a for n in BACKWARD_WORKLOADS for a in ("--workload", n)]
    rc, doc = run_main(tmp_path, *args, *[a for i in impls for a in ("--impl", i)],
                       "--repeat", "1")
    assert rc == 0
    check_schema(doc)
    assert [wl["name"] for wl in doc["workloads"]] == list(BACKWARD_WORKLOADS)
    for wl in doc["workloads"]:
        by_impl = {r["impl"]: r for r in wl["results"]}
        assert list(by_impl) == impls
        for impl, res in by_impl.items():
            if res["status"] == "skipped" and impl in ("torch", "jax"):
                assert "not installed" in res["reason"], (wl["name"], impl, res["reason"])
                continue
            assert res["status"] == "ok", (wl["name"], impl, res["reason"])
            assert res["max_error"] <= res["tolerance"]
        assert wl["roofline"]["bandwidth_gbs"] > 0


def _central_differences(f: Any, arrays: list[np.ndarray], h: float = 1e-6) -> list[np.ndarray]:
    """d f / d a for each array a, by central differences of the scalar f(*arrays)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + h
            up = f(*arrays)
            a[i] = old - h
            down = f(*arrays)
            a[i] = old
            g[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def test_xent_bwd_reference_matches_finite_differences() -> None:
    from tracejit.benchmarks import xent_bwd

    inp = xent_bwd.make_inputs({"rows": 5, "cols": 7})
    loss, grad = xent_bwd.reference(inp)
    x, t = inp["x"].astype(np.float64), inp["t"]
    assert x.dtype == np.float64 and grad.shape == x.shape and loss.shape == ()

    def xent(x: np.ndarray) -> float:  # -log softmax(x)[t], written independently
        p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
        return float(-np.log(p[np.arange(len(t)), t]).mean())

    assert float(loss) == pytest.approx(xent(x), rel=1e-12)
    (fd,) = _central_differences(xent, [x.copy()])
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-8)
    assert np.abs(grad).max() > 1e-2  # not a vacuous comparison
    # the float32 hand implementation is the same formula
    loss32, grad32 = xent_bwd.numpy_xent_grad(inp["x"], t)
    assert grad32.dtype == np.float32
    np.testing.assert_allclose(grad32, grad, atol=1e-6)


def test_layernorm_bwd_reference_matches_finite_differences() -> None:
    from tracejit.benchmarks import layernorm_bwd

    inp = layernorm_bwd.make_inputs({"rows": 4, "cols": 6})
    x, w, b, g = (inp[k].astype(np.float64) for k in ("x", "w", "b", "g"))
    dx, dw, db = layernorm_bwd.reference(inp)
    assert dx.shape == x.shape and dw.shape == db.shape == w.shape

    def loss(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:  # sum(layer_norm * g)
        c = x - x.mean(axis=1, keepdims=True)
        y = c / np.sqrt((c * c).mean(axis=1, keepdims=True) + layernorm_bwd.EPS) * w + b
        return float((y * g).sum())

    fd = _central_differences(loss, [x.copy(), w.copy(), b.copy()])
    for got, want in zip((dx, dw, db), fd):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7 * max(1.0, np.abs(want).max()))
        assert np.abs(want).max() > 1e-2
    dx32, dw32, db32 = layernorm_bwd.numpy_layernorm_bwd(*(inp[k] for k in ("x", "w", "b", "g")))
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, dx, atol=1e-5)


def test_cnn_reference_matches_finite_differences() -> None:
    """The digits CNN's hand-written float64 gradients (im2col convolutions, max pooling to the
    first maximum) against central differences of a direct-loop forward written here."""
    from tracejit.benchmarks import cnn

    inp = cnn.make_inputs({"batch": 3, "c1": 2, "c2": 3})
    x, y = inp["x"].astype(np.float64), inp["y"]
    # a tie-free input: the real digits have flat zero areas whose pooled windows tie
    x = x + np.random.default_rng(1).uniform(0, 1e-2, x.shape)
    params = [p.astype(np.float64) for p in inp["params"]]

    def conv(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        n, c, hh, ww = h.shape
        hp = np.zeros((n, c, hh + 2, ww + 2))
        hp[:, :, 1:-1, 1:-1] = h
        out = np.zeros((n, w.shape[0], hh, ww))
        for i in range(hh):
            for j in range(ww):
                out[:, :, i, j] = np.einsum("ncij,ocij->no", hp[:, :, i:i + 3, j:j + 3], w) + b
        return out

    def pool(h: np.ndarray) -> np.ndarray:
        return np.maximum(np.maximum(h[:, :, 0::2, 0::2], h[:, :, 0::2, 1::2]),
                          np.maximum(h[:, :, 1::2, 0::2], h[:, :, 1::2, 1::2]))

    def loss(*ps: np.ndarray) -> float:
        h = pool(np.maximum(conv(x, ps[0], ps[1]), 0))
        h = pool(np.maximum(conv(h, ps[2], ps[3]), 0)).reshape(len(x), -1)
        z = h @ ps[4].T + ps[5]
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))[np.arange(len(y)),
                                                                          y].mean())

    value, grads = cnn.numpy_loss_grads(x, y, params)
    assert value == pytest.approx(loss(*params), rel=1e-12)
    fd = _central_differences(loss, [p.copy() for p in params])
    for got, want in zip(grads, fd):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert max(np.abs(g).max() for g in fd) > 1e-2


def _planted(offset: float, fail: bool = False) -> core.Factory:
    def factory(inp: core.Inputs) -> core.Case:
        if fail:
            raise ValueError("planted failure")
        x = inp["x"].copy()
        return core.Case(lambda: None, lambda: [x * 2 + 1 + offset])

    return factory


def test_wrong_implementation_reported_wrong_not_timed(tmp_path: Path) -> None:
    undo = [core.register_impl("dispatch", "planted-wrong", _planted(1e-2)),
            core.register_impl("dispatch", "planted-raises", _planted(0.0, fail=True)),
            core.register_impl("dispatch", "planted-right", _planted(0.0))]
    try:
        rc, doc = run_main(tmp_path, "--workload", "dispatch", "--impl", "planted-wrong",
                           "--impl", "planted-raises", "--impl", "planted-right",
                           "--impl", "numpy", "--repeat", "2")
    finally:
        for u in undo:
            u()
    assert rc == 0
    check_schema(doc)
    res = {r["impl"]: r for r in doc["workloads"][0]["results"]}
    wrong = res["planted-wrong"]
    assert wrong["status"] == "wrong" and wrong["correct"] is False
    assert wrong["max_error"] > wrong["tolerance"] and "max error" in wrong["reason"]
    assert wrong["samples_s"] == [] and wrong["median_s"] is None and wrong["ratio"] is None
    assert res["planted-raises"]["status"] == "wrong"
    assert "planted failure" in res["planted-raises"]["reason"]
    assert res["planted-right"]["status"] == "ok" and res["planted-right"]["samples_s"]
    assert "planted-wrong" not in core.workloads()["dispatch"].impls


def test_max_error_scales_per_array() -> None:
    ref = [np.array([1000.0, 0.0]), np.float64(2.0)]
    assert core.max_error([np.array([1000.0, 1e-3]), np.float64(2.0)], ref) == pytest.approx(1e-6)
    assert core.max_error([np.array([np.nan, 0.0]), np.float64(2.0)], ref) == float("inf")
    assert core.max_error([np.zeros(3), np.float64(2.0)], ref) == float("inf")


def test_cli_entry_points() -> None:
    listed = subprocess.run([sys.executable, "-m", "tracejit.bench", "--list"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "mlp-seed" in listed.stdout and "iris" in listed.stdout
    cuda = subprocess.run([sys.executable, "-m", "tracejit.bench", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    # no GPU on this machine (or the simulator, which cannot be timed): one clear line
    assert cuda.returncode == 2 and "--device cuda needs a CUDA GPU" in cuda.stderr
    assert len(cuda.stderr.strip().splitlines()) == 1, cuda.stderr
    assert bench.main(["--workload", "no-such-workload"]) == 2


def test_markdown_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "ratios.png"
    rc, _ = run_main(tmp_path, "--workload", "dispatch", "--impl", "numpy",
                     "--impl", "tracejit-eager", "--repeat", "1", "--markdown",
                     "--plot", str(png))
    assert rc == 0 and png.stat().st_size > 0
    out = capsys.readouterr().out
    assert "Regenerate with" in out and "| impl | median |" in out


# ---- every peer on the pinned thread count, OpenBLAS unforced ----------------------------------


def test_cli_reruns_itself_without_openblas_coretype(tmp_path: Path) -> None:
    import os

    out = tmp_path / "r.json"
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_L2_SIZE="524288")
    env.pop("TRACEJIT_BENCH_UNSET", None)
    p = subprocess.run([sys.executable, "-m", "tracejit.bench", "--workload", "mlp-seed",
                        "--impl", "numpy", "--quick", "--repeat", "1", "--no-progress",
                        "--json", str(out)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "re-ran itself without OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=524288" \
        in p.stdout
    doc = json.loads(out.read_text())
    assert doc["machine"]["env"]["OPENBLAS_CORETYPE"] is None
    assert doc["machine"]["env"]["OPENBLAS_L2_SIZE"] is None
    assert doc["machine"]["unset"] == "OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=524288"
    assert doc["workloads"][0]["results"][0]["status"] == "ok"


def test_library_leaves_openblas_coretype_alone() -> None:
    import os

    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    p = subprocess.run([sys.executable, "-c", "import os, tracejit; "
                        "tracejit.jit(lambda x: x * 2)(tracejit.ones(3)); "
                        "print(os.environ.get('OPENBLAS_CORETYPE'))"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-1] == "Haswell"


_JAX_ONE_CORE = r"""
import os, resource, time
from tracejit.benchmarks import machine, peers
machine.pin_threads(1)
machine.pin_cores(1)
jax = peers.jax()
import numpy as np
a = jax.numpy.asarray(np.random.default_rng(0).random((1024, 1024), np.float32))
f = jax.jit(lambda x: x @ x @ x)
f(a).block_until_ready()
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
w0, c0 = time.perf_counter(), cpu()
for _ in range(10):
    f(a).block_until_ready()
print("RESULT", cpu() - c0, time.perf_counter() - w0, os.environ.get("XLA_FLAGS"),
      len(os.sched_getaffinity(0)))
"""


def test_jax_runs_on_one_core_under_threads_1() -> None:
    import os

    pytest.importorskip("jax")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: nothing to pin")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    p = subprocess.run([sys.executable, "-c", _JAX_ONE_CORE], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]  # the XLA flags set are valid: XLA parses them
    (line,) = [x.split() for x in p.stdout.splitlines() if x.startswith("RESULT")]
    cpu_s, wall_s, flags, cores = float(line[1]), float(line[2]), line[3], int(line[4])
    assert cores == 1 and flags == "--xla_cpu_multi_thread_eigen=false"
    # the matmuls' CPU time can't exceed their wall time on one core (two threads: ~2x)
    assert cpu_s <= 1.15 * wall_s, (cpu_s, wall_s)


def test_main_gives_the_callers_cores_back(tmp_path: Path) -> None:
    import os

    before = os.sched_getaffinity(0)
    rc, doc = run_main(tmp_path, "--workload", "mlp-seed", "--impl", "numpy", "--repeat", "1")
    assert rc == 0 and os.sched_getaffinity(0) == before
    assert doc["machine"]["threads"]["cores_allowed"] == str(min(before))
