"""A new process with a warm disk cache runs its first compiled step without re-typing: the
cached machine code is loaded (no compile), without Numba's typing registries (which import
SciPy's linalg) and without MKL's njit gemm when NumPy's BLAS was chosen; its results are the
float64 NumPy reference's; and a function it has never seen still compiles in that process.
A cache written by another tracejit, Numba, Python or CPU is never looked up: each is part of
every program's and kernel's name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# the seed net's step (N=8 here), two SGD steps compiled; then, in the same process, a function
# the cache has never seen, and eager erf (its Numba ufunc lives in kernels/cpu/ufunc.py)
PROGRAM = """\
import json, sys
import numpy as np
import tracejit as tj

rng = np.random.default_rng(0)
xn = rng.standard_normal((8, 30)).astype(np.float32)
yn = rng.standard_normal((8, 4)).astype(np.float32)
w1n = rng.standard_normal((30, 6)).astype(np.float32)
w2n = rng.standard_normal((6, 4)).astype(np.float32)
x, y = tj.tensor(xn), tj.tensor(yn)
w1 = tj.tensor(w1n, requires_grad=True)
w2 = tj.tensor(w2n, requires_grad=True)


@tj.jit
def step(x, y, w1, w2):
    loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
    loss.backward()
    with tj.no_grad():
        w1 -= 1e-3 * w1.grad
        w2 -= 1e-3 * w2.grad
        w1.grad.zero_()
        w2.grad.zero_()
    return loss


losses = [float(step(x, y, w1, w2).item()) for _ in range(4)]
info = step.cache_info()
loaded = {m: m in sys.modules for m in ("numba.np.arraymath", "scipy.linalg", "torch")}
if sys.argv[1] == "new":
    g = tj.jit(lambda a: (a * 3 - 1).exp().sum(0))
    a = tj.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    g(a)
    new = [g(a).tolist(), g.cache_info()[3]]
    erf = tj.erf(tj.tensor([-1.0, 0.0, 0.5])).tolist()
else:
    new, erf = None, None
print(json.dumps({"losses": losses, "w1": tj.Tensor.numpy(w1.detach()).tolist(),
                  "hits": info[0], "compiles": info[3], "fallbacks": info[4],
                  "loaded": loaded, "new": new, "erf": erf}))
"""


def reference() -> tuple[list[float], np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 30)).astype(np.float32).astype(np.float64)
    y = rng.standard_normal((8, 4)).astype(np.float32).astype(np.float64)
    w1 = rng.standard_normal((30, 6)).astype(np.float32).astype(np.float64)
    w2 = rng.standard_normal((6, 4)).astype(np.float32).astype(np.float64)
    losses = []
    for _ in range(4):
        h = x @ w1
        r = np.maximum(h, 0)
        d = r @ w2 - y
        losses.append(float((d * d).sum()))
        gp = 2 * d
        gw2 = r.T @ gp
        gh = gp @ w2.T
        gh[h < 0] = 0
        gw1 = x.T @ gh
        w1 -= 1e-3 * gw1
        w2 -= 1e-3 * gw2
    return losses, w1


def run(tmp_path: Path, mode: str, **env: str) -> dict[str, Any]:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    full = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    full.update({"TRACEJIT_CACHE_DIR": str(tmp_path / "cache"), **env})
    out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                         env=full, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def check(res: dict[str, Any]) -> None:
    losses, w1 = reference()
    np.testing.assert_allclose(res["losses"], losses, rtol=1e-4)
    np.testing.assert_allclose(np.array(res["w1"]), w1, rtol=1e-4, atol=1e-5)
    assert res["hits"] >= 1 and res["fallbacks"] == 0, res


@pytest.mark.parametrize("blas", ["auto", "numpy"])
def test_a_warm_process_loads_without_retyping(tmp_path: Path, blas: str) -> None:
    cold = run(tmp_path, "same", TRACEJIT_BLAS=blas)
    check(cold)
    assert cold["compiles"] == 1
    warm = run(tmp_path, "same", TRACEJIT_BLAS=blas)
    check(warm)
    assert warm["compiles"] == 0  # machine code from the disk cache
    # the load did not install Numba's lowering registries (arraymath imports scipy.linalg)
    assert warm["loaded"] == {"numba.np.arraymath": False, "scipy.linalg": False,
                              "torch": False}, warm["loaded"]


def test_a_warm_process_still_compiles_what_is_new(tmp_path: Path) -> None:
    run(tmp_path, "same")
    warm = run(tmp_path, "new")
    check(warm)
    assert warm["compiles"] == 0
    a = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3).astype(np.float64)
    got, compiles = warm["new"]
    assert compiles == 1  # compiled here, after loads that skipped Numba's refresh
    np.testing.assert_allclose(got, np.exp(a * 3 - 1).sum(0), rtol=1e-5)
    import math

    np.testing.assert_allclose(warm["erf"], [math.erf(-1.0), 0.0, math.erf(0.5)], rtol=1e-6)


def test_a_changed_numba_version_or_cpu_never_finds_the_old_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name generated code is cached under hashes tracejit's and Numba's versions, the
    CPU (name and features) and Python's version: a cache written under any other is a
    different file, never loaded (Numba's own index also checks its version and the CPU)."""
    import numba

    from tracejit.runtime import cache

    text = "def f(x):\n    return x\n"
    base = cache.content_hash(text)
    for attr, obj, value in (("VERSION", cache, "0.0.0-other"),
                             ("_CPU", cache, "othercpu;+avx2"),
                             ("__version__", numba, "0.1.0")):
        with monkeypatch.context() as m:
            m.setattr(obj, attr, value)
            assert cache.content_hash(text) != base, attr
    with monkeypatch.context() as m:
        m.setattr(sys, "version", sys.version + " other")
        assert cache.content_hash(text) != base
    assert cache.content_hash(text) == base


def test_generated_modules_import_only_the_kernel_library_they_call() -> None:
    from tracejit.codegen.cpu import PRELUDE, prelude_for

    body = "def k(shape, a0, o0):\n    o0[0] = vexp(a0[0]) + radd(1.0, 2.0)\n"
    got = prelude_for(body)
    lines = got.splitlines()
    assert "from tracejit.kernels.cpu.scalar import *  # noqa: F403" in lines  # always
    assert "import numba" in lines and "import numpy as np" in lines
    assert any("vmath import exp as vexp" in ln for ln in lines)  # by its alias
    assert any("accum import radd" in ln for ln in lines)
    assert not any("attention" in ln or "conv" in ln or "philox" in ln for ln in lines), got
    # a line stays when any one of its names is used; nothing outside PRELUDE is added
    assert set(lines) <= set(PRELUDE.splitlines())
    assert prelude_for("gather_last(a, b)").count("index import gather_last") == 1
    # every name PRELUDE imports, used, gives PRELUDE back
    every = " ".join(__import__("re").findall(r"[A-Za-z_]\w*", PRELUDE))
    assert prelude_for(every) == PRELUDE
