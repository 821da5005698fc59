"""kernels/cpu/vmath.py: accuracy over float32 bit patterns against float64 NumPy rounded to
float32, special values bitwise, and that loops calling the functions vectorise.

By default the sweep takes every 4099th bit pattern plus the neighbourhood of each function's
interesting points; TRACEJIT_VMATH_FULL=1 sweeps all 2**32 patterns (a few minutes)."""

from __future__ import annotations

import os
import re

import numba
import numpy as np
import pytest
from tracejit.kernels.cpu import ufunc, vmath

FUNCS = ("exp", "log", "tanh", "sigmoid", "erf", "rsqrt")

# documented bound (max error in float32 ulps, every float32 pattern; see vmath's docstring)
ULP_BOUND = {"exp": 1, "log": 1, "tanh": 2, "sigmoid": 2, "erf": 2, "rsqrt": 1}


def _ref(name: str, x64: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if name == "exp":
            r = np.exp(x64)
        elif name == "log":
            r = np.log(x64)
        elif name == "tanh":
            r = np.tanh(x64)
        elif name == "sigmoid":
            r = 1.0 / (1.0 + np.exp(-x64))
        elif name == "erf":
            r = ufunc.erf_ufunc(x64)
        else:
            r = 1.0 / np.sqrt(x64)
        return r.astype(np.float32)


def _loop(fn):  # type: ignore[no-untyped-def]
    @numba.njit(error_model="numpy")
    def loop(x, out):  # type: ignore[no-untyped-def]
        for i in range(x.shape[0]):
            out[i] = fn(x[i])

    return loop


@pytest.fixture(scope="module")
def loops():  # type: ignore[no-untyped-def]
    return {name: _loop(getattr(vmath, name)) for name in FUNCS}


def _ordered(a: np.ndarray) -> np.ndarray:
    """float32 -> int64 monotonic in the float's value (-0 and +0 both map to 0)."""
    i = a.view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def _ulp_err(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    d = np.abs(_ordered(got) - _ordered(ref))
    gn, rn = np.isnan(got), np.isnan(ref)
    d[gn & rn] = 0
    d[gn ^ rn] = 1 << 40
    return d


_POINTS = [
    0.0,
    1.0,
    2.0,
    0.5,
    1.1754943508222875e-38,
    1e-45,
    3.4028234663852886e38,
    88.72283,
    89.0,
    103.97208,
    87.33655,
    104.0,
    0.625,
    9.010913,
    4.0,
    3.92,
    0.6931472,
    1.4142135,
    0.70710677,
    16.0,
    17.0,
    8.0,
    1e-4,
    0.0625,
]


def _special_bits() -> np.ndarray:
    pts = np.array(_POINTS + [-p for p in _POINTS] + [np.inf, -np.inf], np.float32)
    b = pts.view(np.uint32).astype(np.int64)
    near = (b[:, None] + np.arange(-2048, 2049)[None, :]).ravel()
    near = near[(near >= 0) & (near < 2**32)]
    return near.astype(np.uint32)


def _sweep(loop, name: str, bits: np.ndarray) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    x = bits.view(np.float32)
    out = np.empty_like(x)
    loop(x, out)
    with np.errstate(all="ignore"):
        d = _ulp_err(out, _ref(name, x.astype(np.float64)))
    j = int(np.argmax(d))
    return int(d[j]), float(x[j])


@pytest.mark.parametrize("name", FUNCS)
def test_ulp_sweep(loops, name: str) -> None:  # type: ignore[no-untyped-def]
    loop = loops[name]
    worst, at = _sweep(loop, name, _special_bits())
    if os.environ.get("TRACEJIT_VMATH_FULL") == "1":
        chunk = 1 << 24
        for start in range(0, 1 << 32, chunk):
            bits = np.arange(start, start + chunk, dtype=np.uint64).astype(np.uint32)
            w, a = _sweep(loop, name, bits)
            if w > worst:
                worst, at = w, a
    else:
        bits = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32)
        w, a = _sweep(loop, name, bits)
        if w > worst:
            worst, at = w, a
    print(f"vmath {name} float32: max {worst} ulp (at x={at!r})")
    assert worst <= ULP_BOUND[name], (name, worst, at)


SPECIALS = np.array(
    [
        np.nan,
        -np.nan,
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        1e-45,
        -1e-45,
        1e-40,
        -1e-40,
        1.1754943508222875e-38,
        -1.1754943508222875e-38,
        3.4028234663852886e38,
        -3.4028234663852886e38,
        1.0,
        -1.0,
        88.72283,
        88.72284,
        89.0,
        -87.33655,
        -103.97207,
        -103.97208,
        -104.0,
        -110.0,
        9.1,
        -9.1,
        20.0,
        -20.0,
        4.0,
        -4.0,
        0.625,
        -0.625,
        1e30,
        -1e30,
    ],
    np.float32,
)


@pytest.mark.parametrize("name", FUNCS)
def test_special_values_bitwise(loops, name: str) -> None:  # type: ignore[no-untyped-def]
    x = SPECIALS
    out = np.empty_like(x)
    loops[name](x, out)
    ref = _ref(name, x.astype(np.float64))
    assert _ulp_err(out, ref).max() <= ULP_BOUND[name]
    # special inputs and saturated results: exactly NumPy's, sign of zero included
    exact = ~np.isfinite(x) | (x == 0) | ~np.isfinite(ref) | (ref == 0) | (np.abs(ref) == 1)
    for xi, g, r in zip(x[exact], out[exact], ref[exact]):
        if np.isnan(r):
            assert np.isnan(g), (name, xi, g)
        else:
            assert g.view(np.uint32) == r.view(np.uint32), (name, xi, g, r)


def test_documented_special_values(loops) -> None:  # type: ignore[no-untyped-def]
    f = np.float32

    def ev(name: str, v: float) -> np.float32:
        out = np.empty(1, np.float32)
        loops[name](np.array([v], np.float32), out)
        return out[0]

    def same(a: np.float32, b: float) -> bool:
        return bool(f(a).view(np.uint32) == f(b).view(np.uint32))

    assert same(ev("exp", -np.inf), 0.0) and same(ev("exp", 100.0), np.inf)
    assert same(ev("log", 0.0), -np.inf) and same(ev("log", -0.0), -np.inf)
    assert np.isnan(ev("log", -1.0)) and np.isnan(ev("log", -np.inf))
    assert same(ev("tanh", np.inf), 1.0) and same(ev("tanh", -np.inf), -1.0)
    assert same(ev("tanh", -0.0), -0.0) and same(ev("erf", -0.0), -0.0)
    assert same(ev("sigmoid", -np.inf), 0.0) and same(ev("sigmoid", np.inf), 1.0)
    assert same(ev("erf", np.inf), 1.0) and same(ev("erf", -np.inf), -1.0)
    assert same(ev("rsqrt", 0.0), np.inf) and same(ev("rsqrt", -0.0), -np.inf)
    assert same(ev("rsqrt", np.inf), 0.0) and np.isnan(ev("rsqrt", -1.0))
    for name in FUNCS:
        assert np.isnan(ev(name, np.nan))


@pytest.mark.parametrize("name", FUNCS)
def test_types_and_float64(name: str) -> None:
    fn = getattr(vmath, name)
    x64 = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, 0.3, -2.5, 700.0, 1e300])
    got = np.array([fn(np.float32(0.3))], np.float32)  # called from Python
    assert _ulp_err(got, _ref(name, np.array([0.3], np.float32).astype(np.float64))) <= 2
    typ = numba.njit(lambda x: fn(x))
    typ(np.float32(0.5))
    assert [s.return_type for s in typ.nopython_signatures] == [numba.float32]
    with np.errstate(all="ignore"):
        for v in x64:
            g = typ(v)
            r = {
                "exp": np.exp(v),
                "log": np.log(v),
                "tanh": np.tanh(v),
                "sigmoid": 1.0 / (1.0 + np.exp(-v)) if v >= 0 else np.exp(v) / (1.0 + np.exp(v)),
                "erf": float(ufunc.erf_ufunc(v)),
                "rsqrt": 1.0 / np.sqrt(v),
            }[name]
            if np.isnan(r):
                assert np.isnan(g)
            else:
                assert np.float64(g).view(np.uint64) == np.float64(r).view(np.uint64), (v, g, r)
    assert typ(3) == typ(3.0)  # integers are computed in float64, as NumPy


_VEC = re.compile(r"<(8|16) x float>")


@pytest.mark.parametrize("name", FUNCS)
def test_loop_vectorises(loops, name: str) -> None:  # type: ignore[no-untyped-def]
    loop = loops[name]
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    loop(x, np.empty_like(x))
    ir = loop.inspect_llvm(loop.signatures[0])
    assert _VEC.search(ir), f"{name}: no float vector code in the loop"


def test_ipow() -> None:
    @numba.njit(error_model="numpy")
    def cube(x, out):  # type: ignore[no-untyped-def]
        for i in range(x.shape[0]):
            out[i] = vmath.ipow(x[i], 3)

    @numba.njit(error_model="numpy")
    def powers(x):  # type: ignore[no-untyped-def]
        return (
            vmath.ipow(x, 0),
            vmath.ipow(x, 1),
            vmath.ipow(x, 2),
            vmath.ipow(x, 5),
            vmath.ipow(x, 8),
            vmath.ipow(x, -2),
        )

    x = np.linspace(-3, 3, 64, dtype=np.float32)
    out = np.empty_like(x)
    cube(x, out)
    assert np.array_equal(out, x * x * x)
    ir = cube.inspect_llvm(cube.signatures[0])
    assert _VEC.search(ir) and "@llvm.pow" not in ir and "powf" not in ir
    v = np.float32(1.7)
    got = powers(v)
    assert all(isinstance(g, float) for g in got)
    want = (1.0, v, v * v, (v * v) * (v * v) * v, ((v * v) * (v * v)) ** 2, 1 / (v * v))
    assert np.allclose(np.array(got, np.float32), np.array(want, np.float32), rtol=0, atol=0)
    assert np.isnan(powers(np.float32(np.nan))[3])
