"""The BLAS compiled matmuls call (tracejit/runtime/blas.py): every candidate against float64
NumPy, the timed choice and its file, TRACEJIT_BLAS, a machine without MKL, and the jitted
seed step against eager."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tracejit
from tracejit.runtime import blas

HAS_MKL = bool(blas._mkl_candidates())
needs_mkl = pytest.mark.skipif(not HAS_MKL, reason="the mkl wheel is not installed "
                               "(pip install tracejit[mkl])")


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """Each test: its own cache directory, no remembered choices, short timing samples."""
    monkeypatch.setattr(blas, "SAMPLE_SECONDS", 2e-5)
    blas.reset()
    with tracejit.flags(cache_dir=str(tmp_path / "cache")):
        yield
    blas.MKL_PATH_OVERRIDE = None
    blas.reset()


MODES = ["numpy", "auto", pytest.param("mkl", marks=needs_mkl)]
SHAPES = [(1, 1, 1), (1, 13, 1), (7, 1, 9), (1, 9, 17), (17, 9, 1), (64, 1000, 100),
          (33, 0, 5), (0, 4, 5), (4, 5, 0), (0, 0, 0)]


def operand(rng, rows, cols, dtype, transposed):
    """A rows x cols matrix, C-contiguous or (transposed) a transposed C-contiguous array."""
    if transposed:
        return rng.standard_normal((cols, rows)).astype(dtype).T
    return rng.standard_normal((rows, cols)).astype(dtype)


def check(c, a, b):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = a64 @ b64
    assert c.shape == ref.shape and c.dtype == a.dtype
    scale = np.abs(a64) @ np.abs(b64)  # the error bound of a dot product grows with it
    eps = np.finfo(a.dtype).eps
    k = a.shape[1]
    assert np.all(np.abs(c - ref) <= 4 * max(k, 1) * eps * scale + 1e-30), \
        np.abs(c - ref).max()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matches_float64_numpy(mode, dtype, ta, tb, m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a, b = operand(rng, m, k, dtype, ta), operand(rng, k, n, dtype, tb)
    with tracejit.flags(blas=mode):
        c = blas.matmul2d(a, b)
        check(c, a, b)
        if 0 in (m, n, k):
            assert not blas.choices()  # np.dot, never timed
            if k == 0:
                assert np.all(c == 0)
        else:
            (ch,) = blas.choices()
            # (a matrix with a dimension of 1 is C- and F-contiguous: read without a flag)
            flags = ("T" if ta and m > 1 and k > 1 else "N") + "," + \
                ("T" if tb and k > 1 and n > 1 else "N")
            assert ch.key == f"{np.dtype(dtype).name},{m},{n},{k},{flags}"
            assert ch.lib in ((mode,) if mode != "auto" else ("numpy", "mkl"))
            c2 = blas.matmul2d(a, b)  # the remembered plan
            np.testing.assert_array_equal(c2, c)


def test_transposed_view_is_passed_as_a_flag():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((30, 20)).astype(np.float32).T  # 20 x 30, F-contiguous
    b = rng.standard_normal((30, 10)).astype(np.float32)
    check(blas.matmul2d(a, b), a, b)
    (ch,) = blas.choices()
    assert ch.key == "float32,20,10,30,T,N"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_operands_fall_back_to_np_dot(mode, dtype):
    rng = np.random.default_rng(2)
    big = rng.standard_normal((40, 30)).astype(dtype)
    cases = [(big[::2, :], rng.standard_normal((30, 7)).astype(dtype)),  # strided rows
             (big[:, 3:13], rng.standard_normal((10, 4)).astype(dtype)),  # a column block
             (rng.standard_normal((5, 40)).astype(dtype), big[:, ::3])]
    with tracejit.flags(blas=mode):
        for a, b in cases:
            assert not (a.flags.c_contiguous or a.flags.f_contiguous) or \
                not (b.flags.c_contiguous or b.flags.f_contiguous)
            check(blas.matmul2d(a, b), a, b)
    assert not blas.choices()


def test_mixed_dtypes_and_bad_shapes_behave_like_np_dot():
    a = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(blas.matmul2d(a, np.ones((4, 2))), np.full((3, 2), 4.0))
    with pytest.raises(ValueError):
        blas.matmul2d(a, np.ones((3, 2), np.float32))


# ---- the timed choice and its file ---------------------------------------------------------------


def choice_files():
    d = tracejit.runtime.cache.cache_dir()
    return [os.path.join(d, f) for f in os.listdir(d) if f.startswith("blas-")]


@needs_mkl
def test_choice_is_timed_once_written_and_reused(monkeypatch):
    calls = []
    real = blas.measure

    def counting(fns, a, b):
        calls.append(sorted(fns))
        return real(fns, a, b)

    monkeypatch.setattr(blas, "measure", counting)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((64, 200)).astype(np.float32), \
        rng.standard_normal((200, 50)).astype(np.float32)
    check(blas.matmul2d(a, b), a, b)
    check(blas.matmul2d(a, b), a, b)
    assert calls == [["mkl", "numpy"]]
    (ch,) = blas.choices()
    assert ch.how == "measured" and set(ch.times_us) == {"mkl", "numpy"}
    assert ch.lib == min(ch.times_us, key=ch.times_us.get)
    (path,) = choice_files()
    assert os.stat(path).st_mode & 0o077 == 0
    with open(path) as f:
        data = json.load(f)
    assert data["choices"]["float32,64,50,200,N,N"]["lib"] == ch.lib
    assert data["machine"]["cpu"] and data["machine"]["mkl"]

    blas.reset()  # a new process: reads the file, does not time again
    check(blas.matmul2d(a, b), a, b)
    assert len(calls) == 1
    (again,) = blas.choices()
    assert again.how == "cached" and again.lib == ch.lib and again.times_us == ch.times_us


@needs_mkl
@pytest.mark.parametrize("garbage", [b"{not json", b"[1, 2]", b'{"choices": {"x": 3}}',
                                     b'{"choices": {"float32,8,8,8,N,N": {"lib": "evil", '
                                     b'"times_us": {}}}}'])
def test_corrupt_file_is_ignored_and_rewritten(garbage):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((8, 8)).astype(np.float32), \
        rng.standard_normal((8, 8)).astype(np.float32)
    blas.matmul2d(a, b)
    (path,) = choice_files()
    with open(path, "wb") as f:
        f.write(garbage)
    blas.reset()
    check(blas.matmul2d(a, b), a, b)
    (ch,) = blas.choices()
    assert ch.how == "measured" and ch.lib in ("numpy", "mkl")
    with open(path) as f:
        assert json.load(f)["choices"]["float32,8,8,8,N,N"]["lib"] == ch.lib


@needs_mkl
def test_file_writable_by_others_is_not_trusted():
    a = np.ones((8, 8), np.float32)
    blas.matmul2d(a, a)
    (path,) = choice_files()
    with open(path) as f:
        data = json.load(f)
    other = "numpy" if data["choices"]["float32,8,8,8,N,N"]["lib"] == "mkl" else "mkl"
    data["choices"]["float32,8,8,8,N,N"] = {"lib": other, "times_us": {other: 0.001}}
    with open(path, "w") as f:
        json.dump(data, f)
    os.chmod(path, 0o666)
    blas.reset()
    blas.matmul2d(a, a)
    assert blas.choices()[0].how == "measured"


@needs_mkl
def test_disk_cache_off_writes_nothing(tmp_path):
    with tracejit.flags(disk_cache=False):
        a = np.ones((9, 9), np.float32)
        check(blas.matmul2d(a, a), a, a)
        assert blas.choices()[0].how == "measured"
        assert blas.choices_path() is None
    assert not choice_files()


# ---- TRACEJIT_BLAS and a machine without MKL ----------------------------------------------------


@pytest.mark.parametrize("lib, dtype", [("numpy", np.float32),
                                        pytest.param("mkl", np.float64, marks=needs_mkl)])
def test_flag_forces_the_library(monkeypatch, lib, dtype):
    monkeypatch.setattr(blas, "measure", lambda *a: pytest.fail("timed while forced"))
    a = np.ones((5, 6), dtype)
    with tracejit.flags(blas=lib):
        check(blas.matmul2d(a, a.T), a, a.T)
    (ch,) = blas.choices()
    assert ch.lib == lib and ch.how == "forced"


def test_bad_flag_value_is_rejected():
    a = np.ones((2, 2), np.float32)
    with tracejit.flags(blas="openblas"), pytest.raises(ValueError, match="auto, numpy or mkl"):
        blas.matmul2d(a, a)


@needs_mkl
def test_mkl_runs_with_numpys_thread_count():
    assert blas.mkl() is not None
    assert blas.mkl_threads() == blas.numpy_blas_threads()


def test_without_mkl(tmp_path, monkeypatch):
    blas.MKL_PATH_OVERRIDE = str(tmp_path / "missing" / "libmkl_rt.so")
    monkeypatch.setattr(blas, "measure", lambda *a: pytest.fail("timed without a choice"))
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 7)).astype(np.float32), \
        rng.standard_normal((7, 3)).astype(np.float32)
    check(blas.matmul2d(a, b), a, b)
    (ch,) = blas.choices()
    assert ch.lib == "numpy" and ch.how.startswith("fallback")
    assert blas.mkl() is None and "libmkl_rt" in blas.mkl_error()
    with tracejit.flags(blas="mkl"), pytest.raises(RuntimeError, match="pip install mkl"):
        blas.matmul2d(a, b)


# ---- the jitted seed step ------------------------------------------------------------------------


def seed_inputs():
    from benchmarks import mlp_seed

    inp = mlp_seed.make_inputs(mlp_seed.SIZES["full"])
    return mlp_seed, inp


def run_seed(step, mlp_seed, inp, steps=3):
    x, y = tracejit.tensor(inp["x"]), tracejit.tensor(inp["y"])
    w1 = tracejit.tensor(inp["w1"].copy(), requires_grad=True)
    w2 = tracejit.tensor(inp["w2"].copy(), requires_grad=True)
    losses = [float(step(x, y, w1, w2)) for _ in range(steps)]
    return losses, w1.detach().numpy().copy(), w2.detach().numpy().copy()


@pytest.mark.parametrize("mode", MODES)
def test_jitted_seed_step_matches_eager(mode):
    mlp_seed, inp = seed_inputs()

    def body(x, y, w1, w2):
        return mlp_seed.autograd_step(tracejit, x, y, w1, w2, inp["lr"])

    steps = mlp_seed.CHECK_STEPS
    eager = run_seed(body, mlp_seed, inp, steps=steps)
    with tracejit.flags(blas=mode):
        jitted = tracejit.jit(body)
        got = run_seed(jitted, mlp_seed, inp, steps=steps)  # traced twice, compiled on the 3rd
        text = str(jitted.explain())
    assert "nodes, compiled" in text  # (compiles may be 0: the program loaded from memory)
    ref_loss, ref_d1, ref_d2 = mlp_seed.reference(inp)  # float64 NumPy
    np.testing.assert_allclose(got[0][-1], ref_loss, rtol=1e-5)
    np.testing.assert_allclose(got[0], eager[0], rtol=1e-5)
    for g, e, w0, ref in zip(got[1:], eager[1:], (inp["w1"], inp["w2"]), (ref_d1, ref_d2)):
        ulp = np.finfo(np.float32).eps * np.abs(w0).max()  # float32 rounding of the weights
        np.testing.assert_allclose(g, e, rtol=0, atol=8 * ulp)
        np.testing.assert_allclose(g - w0, ref, rtol=0, atol=8 * ulp)
    assert "matmuls (BLAS chosen by timing" in text
    assert "float32 64x1000 @ 1000x100: " in text
    libs = {c.lib for c in blas.choices()}
    assert len(blas.choices()) == 5  # the step's five GEMMs
    assert libs <= ({mode} if mode != "auto" else {"numpy", "mkl"})


# ---- two OpenMP runtimes in one process ---------------------------------------------------------

needs_torch_and_mkl = pytest.mark.skipif(
    not HAS_MKL or __import__("importlib").util.find_spec("torch") is None,
    reason="needs torch (it loads libgomp) and the mkl wheel")

_TWO_OPENMP = r"""
import ctypes, json, sys
import torch  # loads GNU OpenMP (libgomp) before MKL
if sys.argv[1] == "intel-first":  # another library loaded MKL with Intel OpenMP before us
    from tracejit.runtime import blas as _b
    lib = ctypes.CDLL(_b._mkl_candidates()[0])
    lib.MKL_Set_Threading_Layer(0)
import numpy as np
import tracejit
from tracejit.runtime import blas

rng = np.random.default_rng(0)
a = rng.standard_normal((64, 1000)).astype(np.float32)
b = rng.standard_normal((1000, 100)).astype(np.float32)
ref = a.astype(np.float64) @ b.astype(np.float64)
out = {"threads": blas.numpy_blas_threads()}
for mode in ("mkl", "auto"):
    blas.reset()
    with tracejit.flags(blas=mode):
        f = tracejit.jit(lambda x, y: x @ y)
        try:
            got = [f(tracejit.tensor(a), tracejit.tensor(b)).numpy() for _ in range(3)]
            out[mode] = {"err": max(float(np.abs(g - ref).max()) for g in got),
                         "explain": str(f.explain())}
        except RuntimeError as e:
            out[mode] = {"error": str(e)}
out["layer"] = blas.mkl().layer
print("RESULT" + json.dumps(out))
"""


def run_two_openmp(tmp_path, order):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MKL_")}
    env.update(OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2", TRACEJIT_BLAS="auto",
               TRACEJIT_CACHE_DIR=str(tmp_path / "sub-cache"),
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(tracejit.__file__))))
    p = subprocess.run([sys.executable, "-c", _TWO_OPENMP, order], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("RESULT")]
    return json.loads(line[len("RESULT"):])


@needs_torch_and_mkl
def test_mkl_after_torch_on_two_threads_uses_gnu_openmp(tmp_path):
    # MKL's Intel OpenMP layer next to torch's libgomp returned exactly 2x this product
    out = run_two_openmp(tmp_path, "torch-first")
    assert out["threads"] == 2 and out["layer"] == "gnu"
    tol = 4 * 1000 * np.finfo(np.float32).eps * 1000  # |a| @ |b| is below ~1000 here
    for mode in ("mkl", "auto"):
        assert "error" not in out[mode], out[mode]
        assert out[mode]["err"] < tol, out[mode]
    assert "float32 64x1000 @ 1000x100: mkl (forced" in out["mkl"]["explain"]
    assert "rejected" not in out["auto"]["explain"]


@needs_torch_and_mkl
def test_wrong_mkl_is_never_chosen_and_explain_says_why(tmp_path):
    # MKL already set to Intel OpenMP before tracejit loads it: it computes 2x; the chooser's
    # check against np.dot rejects it, and forcing it is an error naming the layer
    out = run_two_openmp(tmp_path, "intel-first")
    assert out["layer"] == "intel"
    assert "threading layer intel" in out["mkl"]["error"]
    assert "median ratio 2" in out["mkl"]["error"] and "TRACEJIT_BLAS=auto" in out["mkl"]["error"]
    assert out["auto"]["err"] < 4 * 1000 * np.finfo(np.float32).eps * 1000
    text = out["auto"]["explain"]
    assert "float32 64x1000 @ 1000x100: numpy" in text and "mkl rejected: wrong result" in text


def one_element_off(x, y):
    c = np.dot(x, y)
    c[3, 2] += 0.01 * max(1.0, abs(float(c[3, 2])))
    return c


def test_verify_accepts_correct_candidates_and_rejects_a_wrong_product():
    rng = np.random.default_rng(7)
    for ta in (False, True):
        a = operand(rng, 9, 13, np.float32, ta)
        b = operand(rng, 13, 5, np.float32, False)
        assert blas.verify({"numpy": blas._numpy}, a, b) == {}
        wrong = blas.verify({"twice": lambda x, y: 2 * np.dot(x, y),
                             "transposed-a": lambda x, y: np.dot(x.T.reshape(x.shape), y),
                             "nan": lambda x, y: np.full((9, 5), np.nan, np.float32),
                             "one-element": one_element_off}, a, b)
        assert set(wrong) == {"twice", "transposed-a", "nan", "one-element"}
        assert "median ratio 2" in wrong["twice"]
