"""The BLAS a compiled program's 2-d matmuls call, chosen by measurement.

`matmul2d(a, b)` computes ``a @ b`` for float32/float64 matrices with one of these candidates:

- ``numpy``: NumPy's own ``np.dot`` (its bundled OpenBLAS; the library eager mode uses);
- ``mkl``: MKL's ``cblas_sgemm``/``cblas_dgemm`` from ``libmkl_rt`` when the optional ``mkl``
  wheel is installed (``pip install tracejit[mkl]``), called from a small njit function (so an
  array's pointer costs nothing, unlike ``a.ctypes.data`` in the interpreter). A transposed
  operand (an F-contiguous view) is passed with BLAS's transpose flag, never copied.

Which one runs for a (dtype, M, N, K, transA, transB) is decided the first time that GEMM is
met, by timing each candidate on the real operands (warm-up, then a few interleaved samples,
medians), and remembered in a JSON file in the disk cache directory (``cache.cache_dir()``:
its trust checks and ``TRACEJIT_DISK_CACHE=0`` apply) named by a hash of the CPU model, the
library versions and the thread count, so a new process does not time again. A file that
cannot be read or parsed is ignored (and rewritten). ``TRACEJIT_BLAS=numpy|mkl`` forces a
candidate; ``auto`` (default) measures.

MKL is pinned to the thread count NumPy's OpenBLAS runs with (sequential MKL for one thread),
so that the two libraries' pools do not fight over the cores, and threaded MKL uses GNU OpenMP
when libgomp is already loaded (torch loads it): Intel OpenMP next to it doubled results. Before
a candidate may be chosen its result on random operands of the GEMM's shape and layout is
checked against float64 ``np.dot``; a wrong one is never chosen, and ``explain()`` says why.
Operands that are neither C- nor F-contiguous, mixed or other dtypes, and GEMMs with a zero
dimension go to ``np.dot``."""

from __future__ import annotations

import ctypes
import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from ..flags import get as get_flag
from . import cache

CANDIDATES = ("numpy", "mkl")
FILE_VERSION = 1
WARMUP = 2  # calls of each candidate before timing
SAMPLES = 5  # timed samples of each candidate (interleaved); the median is kept
SAMPLE_SECONDS = 2e-4  # a sample repeats the call until it lasts about this long

# cblas enums
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


# ---- the libraries -------------------------------------------------------------------------------


def _mkl_candidates() -> list[str]:
    """Paths where the mkl wheel puts libmkl_rt: sys.prefix/lib, or its distribution's files."""
    paths = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    try:
        dist = importlib.metadata.distribution("mkl")
        for f in dist.files or ():
            if os.path.basename(str(f)).startswith("libmkl_rt.so"):
                paths.append(os.path.abspath(str(dist.locate_file(f))))
    except importlib.metadata.PackageNotFoundError:
        pass
    return list(dict.fromkeys(p for p in paths if os.path.isfile(p)))


# tests set this to a path that does not exist to simulate a machine without MKL
MKL_PATH_OVERRIDE: str | None = None


@dataclass
class _Mkl:
    path: str
    lib: Any
    version: str
    threads: int = 1
    layer: str = ""  # the threading layer MKL_Set_Threading_Layer reported (_LAYERS)
    njit: dict[str, Any] = field(default_factory=dict)  # dtype char -> njit gemm


_mkl: _Mkl | None = None
_mkl_error = ""  # why MKL is unavailable ("" before the first attempt or when loaded)
_mkl_tried = False


def numpy_blas_threads() -> int:
    """The thread count NumPy's OpenBLAS runs with now (its get_num_threads, else the
    environment, else the CPU count)."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for p in sorted(glob.glob(os.path.join(libs, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                     "openblas_get_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return max(1, int(fn()))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "")
        if v.strip().isdigit() and int(v) > 0:
            return int(v)
    return os.cpu_count() or 1


# MKL_Set_Threading_Layer's codes, in order (mkl_service.h's MKL_THREADING_*)
_LAYERS = ("intel", "sequential", "pgi", "gnu", "tbb")


def gomp_loaded() -> bool:
    """Whether GNU OpenMP (libgomp: torch's, or any other library's) is mapped into this
    process."""
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in os.path.basename(line.rstrip()) for line in f)
    except OSError:  # pragma: no cover - not Linux
        return False


def _threading_layer(threads: int) -> str:
    """The MKL threading layer to ask for ("" leaves the user's MKL_THREADING_LAYER alone):
    sequential for one thread; with more, GNU OpenMP when libgomp is already loaded (torch
    loads it), else Intel OpenMP. MKL's Intel layer loads libiomp5 next to a loaded libgomp,
    and the two OpenMP runtimes both run each thread's share of a GEMM: a 64x1000 @ 1000x100
    sgemm on 2 threads returned exactly twice the product (tests/test_blas.py)."""
    if os.environ.get("MKL_THREADING_LAYER", "").strip():
        return ""
    if threads == 1:
        return "sequential"
    return "gnu" if gomp_loaded() else "intel"


def mkl() -> _Mkl | None:
    """MKL loaded and pinned to NumPy's BLAS thread count, or None (see `mkl_error()`)."""
    global _mkl, _mkl_error, _mkl_tried
    if _mkl_tried:
        if _mkl is not None:
            _pin(_mkl)
        return _mkl
    _mkl_tried = True
    paths = [MKL_PATH_OVERRIDE] if MKL_PATH_OVERRIDE is not None else _mkl_candidates()
    if not paths:
        _mkl_error = "the mkl package is not installed (pip install mkl, or tracejit[mkl])"
        return None
    errors = []
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
        except OSError as e:
            errors.append(f"{p}: {e}")
            continue
        # the interface and threading layers must be chosen before any other MKL call
        if hasattr(lib, "MKL_Set_Interface_Layer"):
            lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
            lib.MKL_Set_Interface_Layer(0)  # LP64: 32-bit integers
        want = _threading_layer(numpy_blas_threads())
        if not want:
            layer = f"MKL_THREADING_LAYER={os.environ['MKL_THREADING_LAYER'].strip()}"
        elif hasattr(lib, "MKL_Set_Threading_Layer"):
            lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
            lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
            got = lib.MKL_Set_Threading_Layer(_LAYERS.index(want))
            layer = _LAYERS[got] if 0 <= got < len(_LAYERS) else f"layer {got}"
        else:
            layer = "MKL's default (this libmkl_rt has no MKL_Set_Threading_Layer)"
        buf = ctypes.create_string_buffer(256)
        try:
            lib.MKL_Get_Version_String(buf, len(buf))
            version = buf.value.decode(errors="replace").strip()
        except AttributeError:
            version = "unknown"
        m = _Mkl(p, lib, version, threads=0, layer=layer)
        _pin(m)
        _mkl = m
        _mkl_error = ""
        return m
    _mkl_error = "libmkl_rt could not be loaded (" + "; ".join(errors) + ")"
    return None


def mkl_error() -> str:
    mkl()
    return _mkl_error


def _pin(m: _Mkl) -> None:
    n = numpy_blas_threads()
    if n != m.threads:
        m.lib.MKL_Set_Num_Threads.argtypes = [ctypes.c_int]
        m.lib.MKL_Set_Num_Threads(n)
        m.threads = n


def mkl_threads() -> int:
    m = mkl()
    if m is None:
        return 0
    m.lib.MKL_Get_Max_Threads.restype = ctypes.c_int
    return int(m.lib.MKL_Get_Max_Threads())


# MKL's cblas_?gemm, called from njit code by a symbol name that `_mkl_gemm` binds to the
# loaded library's address (llvmlite's add_symbol) before the first call: the machine code refers
# to the name, not to an address, so Numba can cache it on disk like any kernel
_SYMBOLS = {"f": "tracejit_mkl_cblas_sgemm", "d": "tracejit_mkl_cblas_dgemm"}


def _declare() -> tuple[Any, Any]:
    from numba import types

    i32, ptr = types.int32, types.intp  # pointers travel as 64-bit integers (the same ABI)
    out = []
    for char, real in (("f", types.float32), ("d", types.float64)):
        out.append(types.ExternalFunction(_SYMBOLS[char], types.void(
            i32, i32, i32, i32, i32, i32, real, ptr, i32, ptr, i32, real, ptr, i32)))
    return out[0], out[1]


_ext_sgemm, _ext_dgemm = _declare()


@numba.njit(cache=True)
def _mkl_sgemm(ta, tb, mm, nn, kk, a, lda, b, ldb, c):  # type: ignore[no-untyped-def]
    _ext_sgemm(_ROW_MAJOR, ta, tb, mm, nn, kk, np.float32(1), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float32(0), c.ctypes.data, nn)


@numba.njit(cache=True)
def _mkl_dgemm(ta, tb, mm, nn, kk, a, lda, b, ldb, c):  # type: ignore[no-untyped-def]
    _ext_dgemm(_ROW_MAJOR, ta, tb, mm, nn, kk, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
               0.0, c.ctypes.data, nn)


cache.load_without_refresh(_mkl_sgemm, _mkl_dgemm)  # warm start: no typing registries


def _mkl_gemm(m: _Mkl, char: str) -> Any:
    """The njit gemm(transa, transb, M, N, K, a, lda, b, ldb, c) over MKL's cblas, for
    dtype char "f" or "d" (its symbol bound to this process's libmkl_rt first)."""
    fn = m.njit.get(char)
    if fn is None:
        import llvmlite.binding as llvm

        routine = "cblas_sgemm" if char == "f" else "cblas_dgemm"
        llvm.add_symbol(_SYMBOLS[char], ctypes.cast(getattr(m.lib, routine),
                                                    ctypes.c_void_p).value)
        fn = m.njit[char] = _mkl_sgemm if char == "f" else _mkl_dgemm
    return fn


# ---- a GEMM's layout -----------------------------------------------------------------------------


def _layout(x: np.ndarray) -> tuple[bool, np.ndarray] | None:
    """(transposed?, a C-contiguous array BLAS reads) for a C- or F-contiguous matrix."""
    if x.flags.c_contiguous:
        return False, x
    if x.flags.f_contiguous:
        return True, x.T
    return None


def key_of(dtype: np.dtype, m: int, n: int, k: int, ta: bool, tb: bool) -> str:
    return f"{np.dtype(dtype).name},{m},{n},{k},{'T' if ta else 'N'},{'T' if tb else 'N'}"


@dataclass
class Choice:
    key: str
    lib: str  # the candidate that runs
    times_us: dict[str, float]  # measured median per call (empty when forced or trivial)
    how: str  # "measured", "cached" (read from the file), "forced" (TRACEJIT_BLAS), "fallback"
    rejected: dict[str, str] = field(default_factory=dict)  # candidate -> why it may not run

    def describe(self) -> str:
        dtype, m, n, k, ta, tb = self.key.split(",")
        a = f"{m}x{k}" + (" (transposed)" if ta == "T" else "")
        b = f"{k}x{n}" + (" (transposed)" if tb == "T" else "")
        times = ", ".join(f"{c} {t:.1f} us" for c, t in sorted(self.times_us.items(),
                                                              key=lambda x: x[1]))
        rejected = "".join(f"; {c} rejected: {why}" for c, why in sorted(self.rejected.items()))
        return (f"{dtype} {a} @ {b}: {self.lib} ({self.how}{'; ' + times if times else ''}"
                f"{rejected})")


_choices: dict[str, Choice] = {}  # key_of(...) -> the choice, for this process
_plans: dict[tuple, Any] = {}  # (mode, dtypes, shapes, strides) -> a callable (a, b) -> c


def choices() -> list[Choice]:
    """Every GEMM choice this process made or read, in the order they were made."""
    return list(_choices.values())


def choices_for(dtype: Any, m: int, n: int, k: int) -> list[Choice]:
    """The choices made for this GEMM's dims, any transposition."""
    prefix = f"{np.dtype(dtype).name},{m},{n},{k},"
    return [c for c in _choices.values() if c.key.startswith(prefix)]


def reset() -> None:
    """Forget every choice and compiled plan of this process (the file stays); for tests."""
    global _mkl, _mkl_tried, _mkl_error
    _choices.clear()
    _plans.clear()
    _mkl, _mkl_tried, _mkl_error = None, False, ""


def mode() -> str:
    v = str(get_flag("blas") or "auto").strip().lower()
    if v not in ("auto", "numpy", "mkl"):
        raise ValueError(f"TRACEJIT_BLAS must be auto, numpy or mkl, got {v!r}")
    return v


# ---- the file of measurements --------------------------------------------------------------------


def machine_id() -> dict[str, str]:
    """What a measurement depends on: CPU, library versions, thread count."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    m = mkl()
    cfg = ""
    try:
        cfg = json.dumps(np.show_config(mode="dicts").get("Build Dependencies", {})  # type: ignore
                         .get("blas", {}), sort_keys=True)
    except Exception:  # pragma: no cover - old NumPy without mode="dicts"
        cfg = ""
    return {"cpu": model, "cpu_llvm": cache._CPU, "numpy": np.__version__, "blas": cfg,
            "mkl": m.version if m else "", "mkl_layer": m.layer if m else "",
            "threads": str(numpy_blas_threads()),
            "file_version": str(FILE_VERSION)}


def choices_path() -> str | None:
    d = cache.cache_dir()
    if d is None:
        return None
    digest = hashlib.sha256(json.dumps(machine_id(), sort_keys=True).encode()).hexdigest()
    return os.path.join(d, f"blas-{digest[:16]}.json")


def _read(path: str) -> dict[str, Any]:
    """The file's choices, or {} when absent, untrusted or corrupt."""
    try:
        st = os.lstat(path)
    except OSError:
        return {}
    if not stat.S_ISREG(st.st_mode) or cache._owned_privately(st, path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        out = data["choices"]
        if not isinstance(out, dict):
            return {}
        return {k: v for k, v in out.items() if isinstance(v, dict) and
                v.get("lib") in CANDIDATES and isinstance(v.get("times_us"), dict)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write(path: str, key: str, c: Choice) -> None:
    found = _read(path)
    found[key] = {"lib": c.lib, "times_us": c.times_us}
    data = {"machine": machine_id(), "choices": found}
    try:
        cache.write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError:
        pass  # a read-only cache directory: this process measured, the next one measures


# ---- timing --------------------------------------------------------------------------------------


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2]


def measure(fns: dict[str, Any], a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Median microseconds per call of each fn(a, b): warm-up, then interleaved samples."""
    reps = {}
    for name, fn in fns.items():
        for _ in range(WARMUP):
            fn(a, b)
        t0 = time.perf_counter()
        fn(a, b)
        one = time.perf_counter() - t0
        reps[name] = max(1, min(1000, int(SAMPLE_SECONDS / max(one, 1e-7))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(SAMPLES):
        for name, fn in fns.items():
            r = reps[name]
            t0 = time.perf_counter()
            for _ in range(r):
                fn(a, b)
            samples[name].append((time.perf_counter() - t0) / r * 1e6)
    return {name: round(_median(s), 3) for name, s in samples.items()}


# ---- checking a candidate's result ---------------------------------------------------------------


def _probe_like(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random values of x's shape, dtype and layout (C-contiguous, or transposed)."""
    p = rng.standard_normal(x.shape).astype(x.dtype)
    return p if x.flags.c_contiguous else np.asfortranarray(p)


def verify(fns: dict[str, Any], a: np.ndarray, b: np.ndarray) -> dict[str, str]:
    """candidate -> why its result is wrong, for each fn(a, b) whose product C of random probe
    operands A, B (a's and b's shapes, dtype and layouts) is not A @ B to within a dot
    product's rounding (|C - AB| <= 4 K eps |A| |B|), checked against float64 ``np.dot``
    through two random vectors r (Freivalds: |(C - AB) r| <= 4 K eps |A| (|B| |r|)), so the
    check costs one call of each candidate and matrix-vector products. A library that loads
    but computes wrong results (two OpenMP runtimes in one process doubled MKL's sgemm) is
    never chosen."""
    rng = np.random.default_rng(12345)
    pa, pb = _probe_like(a, rng), _probe_like(b, rng)
    a64, b64 = pa.astype(np.float64), pb.astype(np.float64)
    r = rng.standard_normal((b.shape[1], 2))
    ref = np.dot(a64, np.dot(b64, r))
    gamma = 4 * max(a.shape[1], 1) * float(np.finfo(a.dtype).eps)
    bound = gamma * np.dot(np.abs(a64), np.dot(np.abs(b64), np.abs(r))) * (1 + 1e-6) + 1e-30
    wrong = {}
    for name, fn in fns.items():
        try:
            c = fn(pa, pb)
        except Exception as e:  # a library that cannot run this GEMM
            wrong[name] = f"raised {type(e).__name__}: {e}"
            continue
        if c.shape != (a.shape[0], b.shape[1]):
            wrong[name] = f"wrong result shape {c.shape}"
            continue
        got = np.dot(c.astype(np.float64), r)
        err = np.abs(got - ref)
        if not (np.all(np.isfinite(c)) and np.all(err <= bound)):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.median(got / ref)
            wrong[name] = (f"wrong result on random operands: error {np.max(err):.3g} against "
                           f"float64 np.dot, bound {np.max(bound):.3g} (median ratio "
                           f"{ratio:.4g})")
    return wrong


# ---- the entry point -----------------------------------------------------------------------------


def _mkl_callable(m: _Mkl, a: np.ndarray, b: np.ndarray) -> Any:
    la, lb = _layout(a), _layout(b)
    assert la is not None and lb is not None
    ta, ca = la
    tb, cb = lb
    mm, kk = a.shape
    nn = b.shape[1]
    gemm = _mkl_gemm(m, a.dtype.char)
    fa, fb = _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS
    lda, ldb = ca.shape[1], cb.shape[1]
    dtype, shape = a.dtype, (mm, nn)
    empty = np.empty

    if ta and tb:
        def run(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            c = empty(shape, dtype) if out is None else out
            gemm(fa, fb, mm, nn, kk, a.T, lda, b.T, ldb, c)
            return c
    elif ta:
        def run(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            c = empty(shape, dtype) if out is None else out
            gemm(fa, fb, mm, nn, kk, a.T, lda, b, ldb, c)
            return c
    elif tb:
        def run(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            c = empty(shape, dtype) if out is None else out
            gemm(fa, fb, mm, nn, kk, a, lda, b.T, ldb, c)
            return c
    else:
        def run(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            c = empty(shape, dtype) if out is None else out
            gemm(fa, fb, mm, nn, kk, a, lda, b, ldb, c)
            return c
    return run


def _numpy(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.dot(a, b) if out is None else np.dot(a, b, out=out)


def _resolve(md: str, a: np.ndarray, b: np.ndarray) -> Any:
    """The callable for this GEMM's dtypes, shapes and layouts, choosing (and timing) once."""
    if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or \
            a.dtype.char not in "fd" or a.shape[1] != b.shape[0]:
        return _numpy  # NumPy's own error or result
    mm, kk = a.shape
    nn = b.shape[1]
    la, lb = _layout(a), _layout(b)
    if la is None or lb is None or 0 in (mm, nn, kk):
        return _numpy
    # MKL's 32-bit integers
    if max(mm, nn, kk, mm * kk, kk * nn, mm * nn) >= 2 ** 31:
        return _numpy
    key = key_of(a.dtype, mm, nn, kk, la[0], lb[0])
    m = mkl() if md != "numpy" else None
    if md == "mkl" and m is None:
        raise RuntimeError(f"TRACEJIT_BLAS=mkl, but MKL cannot be used: {_mkl_error}; "
                           "install it (pip install mkl) or set TRACEJIT_BLAS=auto")
    if md == "numpy" or m is None:
        _choices[key] = Choice(key, "numpy", {}, "forced" if md != "auto" else
                               "fallback: " + _mkl_error)
        return _numpy
    c = _choices.get(key)
    if c is not None and not c.how.startswith(("forced", "fallback")):
        # chosen (and checked) in this process already; MKL's gemm (its njit function from
        # Numba's cache) is loaded only when it runs
        return _numpy if c.lib == "numpy" else _mkl_callable(m, a, b)
    path = choices_path()
    found = _read(path).get(key) if path else None
    if md != "mkl" and found is not None and found["lib"] == "numpy":
        # np.dot is NumPy's own reference: a cached numpy choice needs no check, and MKL
        # need not be loaded at all (a warm start)
        _choices[key] = Choice(key, "numpy",
                               {k: float(v) for k, v in found["times_us"].items()}, "cached")
        return _numpy
    fns = {"numpy": _numpy, "mkl": _mkl_callable(m, a, b)}
    # (only MKL is checked against np.dot, in every process that would run it)
    wrong = verify({"mkl": fns["mkl"]}, a, b)
    if md == "mkl":
        if wrong:
            raise RuntimeError(
                f"TRACEJIT_BLAS=mkl, but MKL ({m.path}, threading layer {m.layer}, "
                f"{m.threads} threads) computes {key_of(a.dtype, mm, nn, kk, la[0], lb[0])} "
                f"wrong: {wrong['mkl']}; set TRACEJIT_BLAS=auto (or numpy), or "
                "OPENBLAS_NUM_THREADS=1 for sequential MKL")
        _choices[key] = Choice(key, "mkl", {}, "forced")
        return fns["mkl"]
    ok = {name: fn for name, fn in fns.items() if name not in wrong}
    if found is not None and found["lib"] in ok:
        c = Choice(key, found["lib"], {k: float(v) for k, v in found["times_us"].items()},
                   "cached", wrong)
    elif len(ok) == 1:
        (lib,) = ok
        c = Choice(key, lib, {}, "the only correct candidate", wrong)
    else:
        times = measure(ok, a, b)
        c = Choice(key, min(times, key=lambda x: times[x]), times, "measured", wrong)
        if path:
            _write(path, key, c)
    _choices[key] = c
    return fns[c.lib]


def matmul2d(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` for 2-d operands, through the BLAS chosen for their dtype, shape and layout;
    into `out` when given (C-contiguous, of the result's shape and dtype, overlapping neither
    operand: a driver's planned buffer)."""
    md = get_flag("blas")
    k = (md, a.dtype, b.dtype, a.shape, b.shape, a.strides, b.strides)
    fn = _plans.get(k)
    if fn is None:
        fn = _plans[k] = _resolve(mode(), a, b)
    return fn(a, b) if out is None else fn(a, b, out)
