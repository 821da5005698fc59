"""Every TRACEJIT_* switch in one place: name, default, help. Read once at import; tests and
users can override with ``with tracejit.flags(check=True): ...``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flag:
    name: str
    default: Any
    help: str


FLAGS: dict[str, Flag] = {
    f.name: f
    for f in (
        Flag("disable", False, "TRACEJIT_DISABLE=1: run every @jit function eagerly; nothing is "
             "traced or compiled (like jax.disable_jit)."),
        Flag("log", "", "TRACEJIT_LOG=recompiles,graph_breaks,ir,code,cache (or all): one "
             "logging line per event, naming the user's file:line."),
        Flag("check", False, "TRACEJIT_CHECK=1: run eager beside compiled code and raise on the "
             "first diverging IR node."),
        Flag("cache_dir", "", "TRACEJIT_CACHE_DIR: where compiled programs are cached on disk "
             "(default: the platform's user cache directory, ~/.cache/tracejit). Used only when "
             "it is owned by you and not writable by group or others (created 0700); otherwise "
             "one warning and compiled code stays in memory."),
        Flag("disk_cache", True, "TRACEJIT_DISK_CACHE=0: never read or write the disk cache; "
             "compiled code stays in memory (every new process compiles again)."),
        Flag("driver", "python", "TRACEJIT_DRIVER=python|native|auto: how a compiled graph "
             "calls its kernels. python (default): a Python driver over shared njit kernels, so "
             "compile time depends only on the distinct kernels; native: one njit driver (Numba "
             "re-optimises every kernel inlined at every call site: 6x slower to compile the "
             "seed step, no faster per call in our measurements); auto: native up to 64 nodes."),
        Flag("vector_width", "auto", "TRACEJIT_VECTOR_WIDTH=auto|512|256: on a CPU with "
             "AVX-512, let LLVM vectorise with 512-bit registers (auto, 512; it otherwise "
             "prefers 256 on Intel servers); read once, before Numba is imported, by setting "
             "NUMBA_CPU_FEATURES (not when you set that yourself or imported numba first)."),
        Flag("print_after", "", "TRACEJIT_PRINT_AFTER=fuse,dce (or all): print the IR after "
             "those passes; plan_memory: the final graph with its buffer plan; kir: the "
             "kernel IR of each fused group and reduction."),
        Flag("blas", "auto", "TRACEJIT_BLAS=auto|numpy|mkl: the BLAS a compiled program's 2-d "
             "matmuls call. auto (default): the faster of NumPy's np.dot and MKL (when the mkl "
             "wheel is installed), timed once per GEMM shape and remembered in the disk cache; "
             "numpy or mkl forces one (mkl without MKL installed is an error)."),
        Flag("split", "auto", "TRACEJIT_SPLIT=auto|replay|eager: how a function with graph "
             "breaks runs after its trace. auto (default): as a lazy replay compiled in "
             "segments around the breaks, unless a few timed calls find plain eager mode "
             "clearly faster (a small matmul-bound step); replay or eager forces one."),
        Flag("pool", True, "TRACEJIT_POOL=0: large output buffers (tracejit.runtime.pool.empty, "
             "32 MiB and more) come from plain np.empty instead of a pool of blocks that dead "
             "arrays released."),
        Flag("pool_max_bytes", 1 << 30, "TRACEJIT_POOL_MAX_BYTES=512M: the most bytes of free "
             "blocks the buffer pool keeps (a byte count, or K/M/G/T suffixed; default 1 GiB); "
             "beyond it the least recently freed are dropped."),
    )
}

_values: dict[str, Any] = {}


def _parse(flag: Flag, raw: str) -> Any:
    if isinstance(flag.default, bool):
        return raw.strip().lower() not in ("", "0", "false", "no", "off")
    return raw


_from_env: dict[str, Any] = {}  # read once: flags are on the per-call path of every @jit


def get(name: str) -> Any:
    if name in _values:
        return _values[name]
    v = _from_env.get(name, _UNREAD)
    if v is _UNREAD:
        flag = FLAGS[name]
        raw = os.environ.get("TRACEJIT_" + name.upper())
        v = _from_env[name] = flag.default if raw is None else _parse(flag, raw)
    return v


def reload() -> None:
    """Re-read TRACEJIT_* from the environment (they are read once, on first use)."""
    _from_env.clear()


_UNREAD = object()


@contextlib.contextmanager
def flags(**overrides: Any) -> Iterator[None]:
    """Temporarily set switches: ``with tracejit.flags(disable=True): ...``."""
    for k in overrides:
        if k not in FLAGS:
            raise KeyError(f"unknown tracejit flag {k!r}; known: {', '.join(FLAGS)}")
    saved = dict(_values)
    _values.update(overrides)
    try:
        yield
    finally:
        _values.clear()
        _values.update(saved)


def describe() -> str:
    return "\n".join(f"TRACEJIT_{f.name.upper()} (default {f.default!r}): {f.help}"
                     for f in FLAGS.values())
