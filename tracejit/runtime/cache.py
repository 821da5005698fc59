"""The on-disk cache of generated programs: source files named by a content hash, written
atomically, loaded with Numba's own cache beside them. A file that fails to load is reported
once, removed and rebuilt."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
import types
import warnings

import numba

from ..flags import get as get_flag

VERSION = "0.1.0"
_MODULES: dict[str, types.ModuleType] = {}
_reported: set[str] = set()


def cache_dir() -> str:
    d = get_flag("cache_dir") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "tracejit")
    os.makedirs(d, exist_ok=True)
    return d


def _cpu_id() -> str:
    try:
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_name() + ";" + llvm.get_host_cpu_features()
    except Exception:  # pragma: no cover - llvmlite without the binding layer
        return platform.processor()


_CPU = _cpu_id()


def content_hash(text: str) -> str:
    """Hash of generated source plus everything that changes what it compiles to."""
    h = hashlib.sha256()
    for part in (text, VERSION, numba.__version__, _CPU, sys.version):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def write_atomic(path: str, data: bytes) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: readers see the old file or the new, never half
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


class _suppress:  # noqa: N801
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def load_module(name: str, text: str) -> types.ModuleType:
    """Import generated source `text` as module `name` from the cache directory, writing it
    first when absent or different (a stale or corrupted file is rewritten)."""
    mod = _MODULES.get(name)
    if mod is not None:
        return mod
    path = module_path(name)
    data = text.encode()
    try:
        with open(path, "rb") as f:
            existing = f.read()
    except OSError:
        existing = None
    if existing != data:
        if existing is not None and name not in _reported:
            _reported.add(name)
            warnings.warn(f"tracejit: cache file {path} was stale or corrupted; rebuilt",
                          RuntimeWarning, stacklevel=2)
        write_atomic(path, data)
    spec = importlib.util.spec_from_file_location(f"tracejit_cache.{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    _MODULES[name] = mod
    return mod


# ---- kernels and constants referenced by generated modules ---------------------------------------
_KERNEL_SOURCES: dict[str, str] = {}
_CONSTANTS: dict[str, list] = {}


def module_path(name: str) -> str:
    return os.path.join(cache_dir(), name + ".py")


def register_kernel(name: str, source: str) -> None:
    _KERNEL_SOURCES[name] = source


def kernel(name: str) -> object:
    """Called by a generated driver module: the njit function of kernel `name`."""
    return getattr(load_module(name, _KERNEL_SOURCES[name]), name)


def register_constants(name: str, arrays: list) -> None:
    _CONSTANTS[name] = arrays


def constants(name: str) -> list:
    return _CONSTANTS[name]


def forget(name: str) -> None:
    """Drop a loaded module so the next load re-imports it from disk."""
    mod = _MODULES.pop(name, None)
    if mod is not None:
        sys.modules.pop(mod.__name__, None)
