"""Compile every kernel the eager CUDA backend can generate to PTX for a Hopper GPU
(cc 9.0) without one, and fail when a float32 kernel holds a float64 instruction. The
simulator neither type-checks nor compiles, so this is what catches a kernel that would fail,
or silently compute in float64, on a real GPU (GPU.md). Needs numba-cuda with the NVRTC/NVVM
wheels (nvidia-cuda-nvrtc-cu12, nvidia-cuda-nvcc-cu12) and must run with NUMBA_ENABLE_CUDASIM
unset: `python -m tracejit.cuda.ptxcheck` (tests/test_cuda.py runs it in a subprocess).

The kernel space: every elementwise op of the registry (and the copy and fill kernels) for
each compute dtype its shape rule accepts, with tensor operands and, for float32, a scalar
last operand too; every reduction for each dtype; the tiled matmul for each dtype. Index
arithmetic is int64 whatever the rank, so ranks 1 and 3 are compiled for one op each and rank 2
for the rest."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

from .. import dtypes as dt
from ..kernels.cuda import eager_elementwise as ew
from ..kernels.cuda import eager_reduce as red
from ..kernels.cuda import matmul_tiled as mm
from ..ops import REGISTRY
from ..ops.registry import Kind, OpError, TensorType

F64 = re.compile(r"\.f64\b")
# libdevice's sinf/cosf reduce huge arguments (|x| > ~1e5) with one float64 multiply by
# pi/2 * 2^-64 (Payne-Hanek): accurate float32 sin/cos, not an accidental promotion. Only
# these lines are allowed, and only in sin/cos kernels
LIBDEVICE_F64 = re.compile(r"\.reg \.f64|cvt\.rn\.f64\.s64|cvt\.rn\.f32\.f64|"
                           r"mul\.f64 .*0d3BF921FB54442D19")
LIBDEVICE_F64_OPS = ("ew_sin_", "ew_cos_")
DTYPES = (dt.float32, dt.float64, dt.int32, dt.int64, dt.bool_)
# the default run: float32 (the f64 check) and float64 for every op, bool where an op takes
# nothing else; --all adds the integer variants


def _accepts(op: Any, d: dt.DType, arity: int) -> TensorType | None:
    t = TensorType((2, 2), d)
    try:
        ops: list[Any] = [t] * arity
        if op.name == "where":
            ops = [TensorType((2, 2), dt.bool_), t, t]
        attrs: dict[str, Any] = {}
        if op.name == "cast":
            attrs = {"dtype": dt.float32 if d is not dt.float32 else dt.int64}
        if op.name == "clamp":
            attrs = {"min": 0.0, "max": 1.0}
        out = op.infer(ops, **attrs)
        return out if isinstance(out, TensorType) else None
    except (OpError, TypeError):
        return None


def _compute(op: Any, d: dt.DType, arity: int) -> list[str]:
    if op.compute_dtype is None:
        return [d.name] * arity if op.name != "where" else ["bool", d.name, d.name]
    ops: list[Any] = [TensorType((2, 2), d)] * arity
    if op.name == "where":
        ops = [TensorType((2, 2), dt.bool_), TensorType((2, 2), d), TensorType((2, 2), d)]
    c = op.compute_dtype(ops)
    if isinstance(c, tuple):
        return [(x.name if x is not None else o.dtype.name) for x, o in zip(c, ops)]
    return [c.name] * arity


def _dtypes(accepts: Any, everything: bool) -> list[dt.DType]:
    if everything:
        return [d for d in DTYPES if accepts(d)]
    floats = [d for d in (dt.float32, dt.float64) if accepts(d)]
    return floats or [d for d in (dt.bool_, dt.int64) if accepts(d)]


def elementwise_specs(everything: bool = False) -> Iterator[ew.Spec]:
    for op in REGISTRY.values():
        if op.kind is not Kind.ELEMENTWISE or op.scalar not in ew.SPELL:
            continue
        from ..kir.ir import SCALAR_OPS

        assert op.scalar is not None
        arity = SCALAR_OPS[op.scalar]
        for d in _dtypes(lambda d: _accepts(op, d, arity) is not None, everything):
            out = _accepts(op, d, arity)
            assert out is not None
            comp = _compute(op, d, arity)
            srcs = ["bool" if op.name == "where" and i == 0 else d.name for i in range(arity)]
            if op.name == "clamp":
                yield ew.Spec("clamp", (("t", d.name), ("s", d.name), ("s", d.name)),
                              (d.name,) * 3, out.dtype.name, 2, False, (True, True))
                continue
            operands = tuple(("t", s) for s in srcs)
            yield ew.Spec(op.scalar, operands, tuple(comp), out.dtype.name, 2)
            if d is dt.float32 and arity > 1:  # a Python number as the last operand
                operands = operands[:-1] + (("s", comp[-1]),)
                yield ew.Spec(op.scalar, operands, tuple(comp), out.dtype.name, 2)
    for d in DTYPES:
        yield ew.Spec("copy", (("t", d.name),), (d.name,), d.name, 2, True)
        yield ew.Spec("fill", (("s", d.name),), (d.name,), d.name, 2)
    yield ew.Spec("copy", (("t", "float32"),), ("float32",), "float64", 1)
    yield ew.Spec("add", (("t", "float32"), ("t", "float32")), ("float32",) * 2, "float32", 1)
    yield ew.Spec("add", (("t", "float32"), ("t", "float32")), ("float32",) * 2, "float32", 3,
                  True)


def reduce_specs(threads: int = 128, everything: bool = False) -> Iterator[red.Spec]:
    from .eager import _init_text

    for op in REGISTRY.values():
        spec = op.reduce
        if op.kind is not Kind.REDUCE or spec is None:
            continue
        for d in (DTYPES if everything else (dt.float32, dt.float64, dt.int64, dt.bool_)):
            t = TensorType((2, 2), d)
            try:
                attrs: dict[str, Any] = {"dim": 1, "keepdim": False} if spec.index else \
                    {"dims": (1,), "keepdim": False}
                out = op.infer([t], **attrs)
            except OpError:
                continue
            assert isinstance(out, TensorType)
            src = d.name
            acc = "int64" if spec.index else out.dtype.name
            if acc == "bool":
                src = "bool"
            yield red.Spec(spec.combine, _init_text(spec, src if spec.index else acc), src, acc,
                           threads)


def is_float32_kernel(dtypes: list[str]) -> bool:
    return "float32" in dtypes and "float64" not in dtypes


def _done_dir() -> str | None:
    """Where kernels that passed are remembered (by a hash of their source, signature and the
    numba-cuda version), so a rerun compiles only what changed: in the compile cache."""
    from ..runtime.cache import cache_dir

    d = cache_dir()
    if d is None:
        return None
    p = os.path.join(d, "ptxcheck")
    os.makedirs(p, mode=0o700, exist_ok=True)
    return p


def _key(text: str, sig: str) -> str:
    from importlib import metadata

    h = hashlib.sha256(f"{metadata.version('numba-cuda')}\n{sig}\n{text}".encode())
    return h.hexdigest()[:32]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    everything = "--all" in argv
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("ptxcheck: unset NUMBA_ENABLE_CUDASIM (the simulator cannot compile PTX)")
        return 2
    from numba import cuda

    jobs: list[tuple[str, str, str, list[str]]] = []
    for s in elementwise_specs(everything):
        text, sig = ew.source(s, sim=False)
        jobs.append((s.name, text, sig, [d for _, d in s.operands] + list(s.compute) + [s.out]))
    for r in reduce_specs(everything=everything):
        text, sig = red.source(r)
        jobs.append((r.name, text, sig, [r.src, r.acc]))
    for d in ("float32", "float64", "int32", "int64"):
        text, sig = mm.source(d, mm.TILE)
        jobs.append((mm.name(d, mm.TILE), text, sig, [d]))
    jobs = list({j[0]: j for j in jobs}.values())  # one per kernel name
    bad = []
    t0 = time.time()
    done = _done_dir()
    cached = 0
    for name, text, sig, dts in jobs:
        mark = os.path.join(done, _key(text, sig)) if done else None
        if mark and os.path.exists(mark):
            cached += 1
            continue
        ns: dict[str, Any] = {}
        exec(compile(ew.PRELUDE + "\n" + text, f"<ptxcheck {name}>", "exec"), ns)
        try:
            ptx, _ = cuda.compile_ptx(ns[name], sig, cc=(9, 0))
        except Exception as e:  # noqa: BLE001 - reported per kernel
            bad.append(f"{name}: does not compile: {type(e).__name__}: {str(e)[:300]}")
            continue
        if is_float32_kernel(dts):
            hits = sorted({ln.strip() for ln in ptx.splitlines() if F64.search(ln)})
            if name.startswith(LIBDEVICE_F64_OPS):
                hits = [h for h in hits if not LIBDEVICE_F64.search(h)]
            if hits:
                bad.append(f"{name}: float32 kernel with float64 instructions: {hits[:3]}")
                continue
        if mark:
            with open(mark, "w"):
                pass
    print(f"ptxcheck: {len(jobs)} kernels for cc 9.0 ({cached} passed before, unchanged) in "
          f"{time.time() - t0:.1f} s, {len(bad)} bad")
    for b in bad:
        print("  " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
