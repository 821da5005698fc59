"""The disk cache runs nothing planted in it. Numba's cache files are pickles (loading one runs
what it holds), so tracejit uses a cache directory only when it, its __pycache__ and the files a
module would load are the current user's and not writable by group or others; otherwise it
warns once and compiles in memory. A cache path it cannot use (a file, read-only, no
permission) warns and compiles in memory too, never crashes.

Each case runs a fresh process (a process that already compiled a kernel shares it by name and
would never look at the directory). As root (this suite's CI), a directory "owned by another
user" is made with os.chown to uid 65534; those parts are skipped otherwise."""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to chown a directory to another "
                                                 "user (uid 65534)")
NOBODY = 65534

PROGRAM = """\
import json, os, warnings
import numpy as np
import tracejit as tj

f = tj.jit(lambda x: (x * 2 + 1).sum(0))
x = tj.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    f(x)
    r = f(x)  # the compiling call
print(json.dumps({"result": r.tolist(), "compiles": f.cache_info()[3],
                  "warnings": [[w.category.__name__, str(w.message),
                                os.path.basename(w.filename), w.lineno] for w in caught]}))
"""
CALL_LINE = 10  # of the compiling call in PROGRAM
EXPECTED = [8.0, 12.0, 16.0]


def run(tmp_path: Path, cache: Path | str, **env: str) -> dict[str, Any]:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    full = {**os.environ, "TRACEJIT_CACHE_DIR": str(cache), **env}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=full, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def cache_warnings(res: dict[str, Any]) -> list[list[Any]]:
    return [w for w in res["warnings"] if "cache" in w[1]]


def assert_refused_once(res: dict[str, Any], reason: str) -> None:
    """A correct result, and exactly one warning, naming `reason`, at the user's line."""
    assert res["result"] == EXPECTED
    ws = cache_warnings(res)
    assert len(ws) == 1, ws
    category, message, filename, lineno = ws[0]
    assert category == "RuntimeWarning" and reason in message, ws
    assert "memory" in message, message
    assert (filename, lineno) == ("prog.py", CALL_LINE), ws


class _Payload:
    """Unpickling this writes the marker file: what a planted Numba cache file could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


def plant(cache: Path, marker: Path) -> list[Path]:
    """Replace every Numba index/data file of the cached modules with a booby-trapped pickle,
    and put a .pyc (with the header Python would accept for the module's source) beside each
    module. Returns the planted files."""
    pyc_dir = cache / "__pycache__"
    planted = []
    trap = pickle.dumps(_Payload(str(marker)))
    for f in sorted(pyc_dir.iterdir()):
        if f.suffix in (".nbi", ".nbc"):
            f.write_bytes(trap)
            planted.append(f)
    assert any(f.suffix == ".nbi" for f in planted), sorted(os.listdir(pyc_dir))
    code = compile(f"open({str(marker)!r}, 'w').close()", "<planted>", "exec")
    for src in sorted(cache.glob("*.py")):
        st = src.stat()
        header = (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
                  + int(st.st_mtime).to_bytes(4, "little")
                  + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
        pyc = pyc_dir / f"{src.stem}.{sys.implementation.cache_tag}.pyc"
        pyc.write_bytes(header + marshal.dumps(code))
        planted.append(pyc)
    return planted


def chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, uid)
    os.lchown(path, uid, uid)


def populated(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    first = run(tmp_path, cache)
    assert first["result"] == EXPECTED and first["compiles"] == 1
    assert not cache_warnings(first), first
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache / "__pycache__").stat().st_mode) == 0o700
    return cache


def test_a_new_cache_directory_and_its_parents_are_private(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "b" / "cache"
    res = run(tmp_path, cache)
    assert res["result"] == EXPECTED and not cache_warnings(res), res
    for d in (tmp_path / "a", tmp_path / "a" / "b", cache, cache / "__pycache__"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    again = run(tmp_path, cache)  # and it is used: the second process compiles nothing
    assert again["compiles"] == 0 and not cache_warnings(again), again


def test_the_planted_files_would_run_from_a_trusted_directory(tmp_path: Path) -> None:
    """The control for the test below: the booby trap is well formed. Numba unpickles its
    index from a directory it trusts, so a file planted by the directory's owner runs (the
    .pyc does not: tracejit compiles generated modules from their text)."""
    cache = populated(tmp_path)
    marker = tmp_path / "payload-ran"
    plant(cache, marker)
    run_ok = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                            env={**os.environ, "TRACEJIT_CACHE_DIR": str(cache)}, timeout=300)
    assert marker.exists(), run_ok.stderr[-2000:]


@needs_root
def test_planted_pickles_in_a_directory_owned_by_another_user_never_run(
        tmp_path: Path) -> None:
    cache = populated(tmp_path)
    marker = tmp_path / "payload-ran"
    planted = plant(cache, marker)
    chown_tree(cache, NOBODY)
    res = run(tmp_path, cache)
    assert_refused_once(res, f"owned by uid {NOBODY}")
    assert res["compiles"] == 1  # compiled in memory
    assert not marker.exists()
    for f in planted:  # nothing was rewritten in the other user's directory either
        assert f.stat().st_uid == NOBODY


@needs_root
def test_a_planted_file_owned_by_another_user_in_our_directory_is_not_loaded(
        tmp_path: Path) -> None:
    cache = populated(tmp_path)
    marker = tmp_path / "payload-ran"
    planted = plant(cache, marker)
    for f in planted:
        os.chown(f, NOBODY, NOBODY)
    res = run(tmp_path, cache)
    assert_refused_once(res, f"owned by uid {NOBODY}")
    assert not marker.exists()


def test_a_group_writable_planted_file_is_not_loaded(tmp_path: Path) -> None:
    cache = populated(tmp_path)
    marker = tmp_path / "payload-ran"
    for f in plant(cache, marker):
        f.chmod(0o664)
    res = run(tmp_path, cache)
    assert_refused_once(res, "writable by group")
    assert not marker.exists()


@pytest.mark.parametrize("mode,who", [(0o777, "group"), (0o702, "others")])
def test_a_directory_writable_by_others_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(mode)
    res = run(tmp_path, cache)
    assert_refused_once(res, f"writable by {who}")
    assert os.listdir(cache) == []  # nothing written there


def test_a_writable_pycache_is_refused(tmp_path: Path) -> None:
    cache = populated(tmp_path)
    marker = tmp_path / "payload-ran"
    plant(cache, marker)
    (cache / "__pycache__").chmod(0o777)
    res = run(tmp_path, cache)
    assert_refused_once(res, "__pycache__ is writable by group")
    assert not marker.exists()


def test_a_cache_path_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    assert_refused_once(run(tmp_path, path), "is not a directory")
    assert path.read_text() == "x"


def test_a_cache_path_under_a_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    assert_refused_once(run(tmp_path, path / "cache"), "cannot be used")


def test_a_read_only_directory(tmp_path: Path) -> None:
    cache = tmp_path / "ro"
    cache.mkdir(mode=0o500)
    if ROOT:  # root writes through modes: a read-only directory of another user refuses it
        os.chown(cache, NOBODY, NOBODY)
        reason = f"owned by uid {NOBODY}"
    else:
        reason = "cannot be used"
    assert_refused_once(run(tmp_path, cache), reason)
    assert os.listdir(cache) == []


@needs_root
def test_a_symbolic_link_made_by_another_user_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "ours"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    assert_refused_once(run(tmp_path, link), "symbolic link owned by uid")
    assert os.listdir(target) == []


def test_a_symbolic_link_of_our_own_is_followed(tmp_path: Path) -> None:
    target = tmp_path / "ours"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    res = run(tmp_path, link)
    assert res["result"] == EXPECTED and not cache_warnings(res), res
    assert any(n.endswith(".py") for n in os.listdir(target))


def test_the_disk_cache_can_be_switched_off(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = run(tmp_path, cache, TRACEJIT_DISK_CACHE="0")
    assert res["result"] == EXPECTED and res["compiles"] == 1 and not res["warnings"], res
    assert not cache.exists()


IN_MEMORY = """\
import numpy as np
import tracejit as tj
from tracejit.runtime import cache

x = tj.tensor(np.ones((2, 3), np.float32))
f = tj.jit(lambda x: x * 2 + 1)
g = tj.jit(lambda y: y * 2 + 1)  # another function, the same kernel
f(x); f(x); g(x); r = g(x)
kernels = sorted(k for k in cache._MODULES if k.startswith("k"))
print(len(kernels), cache._MODULES[kernels[0]].__file__, float(r.sum()), sep="|")
"""


def test_in_memory_kernels_are_shared_by_name(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", IN_MEMORY], capture_output=True, text=True,
                         env={**os.environ, "TRACEJIT_DISK_CACHE": "0"}, timeout=300,
                         check=True)
    n, filename, total = out.stdout.strip().split("|")
    assert n == "1" and filename.startswith("<tracejit k") and float(total) == 18.0, out.stdout


def test_the_session_cache_directory_is_private() -> None:
    d = os.environ["TRACEJIT_CACHE_DIR"]
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
    assert st.st_mode & 0o022 == 0, oct(st.st_mode)


# ---- Numba's own errors are not cache errors ----------------------------------------------------


def _f16_cases() -> list[tuple[str, Any]]:
    return [("elementwise", lambda x: x * 2 + 1), ("reduction", lambda x: x.sum(0)),
            ("mixed", lambda x: (x.float() * 0.5).tanh())]


@pytest.mark.parametrize("name,fn", _f16_cases(), ids=[c[0] for c in _f16_cases()])
def test_float16_runs_eagerly_with_one_warning(name: str, fn: Any) -> None:
    """Numba has no float16 on CPU (not even as an array element type): a graph with float16
    values falls back to eager (NumPy's float16) with one warning naming the reason, instead of
    a Numba traceback after a wrong "cache could not be loaded" warning."""
    import warnings

    import numpy as np

    import tracejit as tj

    x = tj.tensor(np.linspace(-3, 3, 12, dtype=np.float16).reshape(4, 3))
    f = tj.jit(fn)
    want = fn(x).numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [f(x).numpy() for _ in range(3)]
    for g in got:
        assert g.dtype == want.dtype
        np.testing.assert_allclose(g.astype(np.float64), want.astype(np.float64),
                                   rtol=1e-3, atol=1e-3)
    msgs = [str(w.message) for w in caught]
    assert not [m for m in msgs if "cache" in m], msgs
    f16 = [w for w in caught if "float16" in str(w.message)]
    assert len(f16) == 1 and os.path.basename(f16[0].filename) != "cpu.py", msgs


def test_an_error_inside_numba_falls_back_without_blaming_the_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any error Numba raises while compiling (here: float16 let through to it) becomes a
    short fallback reason, not a cache-rebuild warning and not a traceback."""
    import warnings

    import numpy as np

    import tracejit as tj
    from tracejit.codegen import cpu

    monkeypatch.setattr(cpu, "_check_dtypes", lambda g: None)
    x = tj.tensor(np.arange(6, dtype=np.float16).reshape(2, 3))
    f = tj.jit(lambda x: x * 3 - 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f(x)
        r = f(x)
    np.testing.assert_array_equal(r.numpy(), (np.arange(6, dtype=np.float16) * 3 - 1)
                                  .reshape(2, 3))
    msgs = [str(w.message) for w in caught]
    assert not [m for m in msgs if "cache" in m], msgs
    numba_msgs = [m for m in msgs if "Numba could not compile" in m]
    assert len(numba_msgs) == 1 and "float16" in numba_msgs[0], msgs
    assert len(numba_msgs[0]) < 400 and "Traceback" not in numba_msgs[0]


def test_kernel_names_change_with_the_kernel_library(monkeypatch: pytest.MonkeyPatch) -> None:
    # Numba's cache does not follow a kernel's calls into kernels/cpu/scalar.py: a changed
    # helper there must give every kernel a new name, or the old machine code would run
    from tracejit.codegen.cpu import _named
    from tracejit.runtime import cache

    cache.content_hash("")  # computes the library digest
    before = _named("k", "def KERNEL(x):\n    return x\n", "id").name
    monkeypatch.setattr(cache, "_LIBRARY", "a different kernels/cpu")
    after = _named("k", "def KERNEL(x):\n    return x\n", "id").name
    assert before != after
