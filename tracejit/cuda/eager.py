"""Eager CUDA: how dispatch runs an op whose operands live on a CUDA device. Table-driven by
the op's kind, never by its name except for the data-movement ops:

- elementwise: a generated grid-stride kernel (kernels/cuda/eager_elementwise.py) from the op's
  kernel IR `scalar`; operands broadcast by stride 0, dims merged where every operand allows;
- reduce: a generated row reduction (kernels/cuda/eager_reduce.py) from its ReduceSpec;
- matmul: the tiled shared-memory kernel (kernels/cuda/matmul_tiled.py);
- movement: views are metadata (DeviceArray); clone, cat, slice_scatter and non-view reshapes
  are strided copies;
- everything else (index, scan, window, conv, attention, philox): the op's NumPy `eager` on a
  host copy of the operands, and the result copied back. That is a host round trip, counted per
  op in `HOST_FALLBACKS` (tracejit.cuda.host_fallbacks()) so it is never silent.

Kernels are compiled once per specification and kept in `_KERNELS`; `generated_specs()` lists
what the tests compile to PTX."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..kernels.cuda import eager_elementwise as ew
from ..kernels.cuda import eager_reduce as red
from ..kernels.cuda import matmul_tiled as mm
from ..ops.registry import DTypeError, Kind, OpDef, ReduceSpec
from . import backend
from .array import DeviceArray, c_strides

HOST_FALLBACKS: Counter[str] = Counter()
_KERNELS: dict[Any, Any] = {}
_SPECS: list[Any] = []  # every kernel specification compiled in this process (for PTX checks)
MOVEMENT = ("reshape", "permute", "expand", "slice", "slice_scatter", "cat", "clone")


def _nb(d: np.dtype | str) -> str:
    name = np.dtype(d).name if not isinstance(d, str) else d
    if name not in ew.NB:
        raise DTypeError(
            f"{name} tensors are not supported on CUDA by tracejit (supported: bool, int32, "
            "int64, float32, float64); convert with .float() before moving to the device"
        )
    return name


def _kernel(key: Any, name: str, make: Any) -> Any:
    k = _KERNELS.get(key)
    if k is None:
        text, sig = make()
        src = ew.PRELUDE + f"\n\n@cuda.jit({sig!r})\n" + text
        k = getattr(backend.compile_source(name, src), name)
        _KERNELS[key] = k
        _SPECS.append(key)
    return k


def _run(k: Any, n: int, args: list[Any]) -> None:
    if backend.simulated():
        with np.errstate(all="ignore"):
            k[backend.blocks_for(n), backend.threads()](*args)
    else:
        k[backend.blocks_for(n), backend.threads()](*args)


# ---- elementwise -----------------------------------------------------------------------------


def collapse(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> tuple[
        tuple[int, ...], list[tuple[int, ...]]]:
    """Drop size-1 dims and merge neighbours that every operand walks contiguously, so most
    kernels see one dim: fewer divisions per element and fewer distinct kernels."""
    keep = [i for i, n in enumerate(shape) if n != 1]
    sh = [shape[i] for i in keep]
    sts = [[s[i] for i in keep] for s in strides]
    i = len(sh) - 2
    while i >= 0:
        if all(st[i] == st[i + 1] * sh[i + 1] for st in sts):
            sh[i] *= sh[i + 1]
            del sh[i + 1]
            for st in sts:
                st[i] = st[i + 1]
                del st[i + 1]
        i -= 1
    return tuple(sh), [tuple(st) for st in sts]


def _compute(cd: Any, i: int) -> Any:
    if cd is None:
        return None
    return cd[i] if isinstance(cd, tuple) else cd


def elementwise(scalar: str, args: Sequence[Any], out_shape: tuple[int, ...],
                out_dtype: np.dtype, cd: Any = None, into: DeviceArray | None = None,
                bounds: tuple[Any, Any] = (None, None)) -> DeviceArray:
    """Run scalar op `scalar` over `args` (DeviceArrays or Python numbers) into a new
    contiguous array, or written into the view `into`."""
    out_name = _nb(out_dtype)
    out = into if into is not None else DeviceArray.empty(out_shape, out_dtype)
    n = out.size
    if n == 0:
        return out
    tensors = [a.broadcast_to(out_shape) for a in args if isinstance(a, DeviceArray)]
    strided = into is not None
    st0 = [out.estrides] if strided else [c_strides(out_shape)]
    shape, sts = collapse(out_shape, st0 + [t.estrides for t in tensors])
    ndim = max(len(shape), 1)
    if not shape:
        shape = (1,)
        sts = [(0,) for _ in sts]
    operands: list[tuple[str, str]] = []
    compute: list[str] = []
    call: list[Any] = [n, *shape]
    if strided:
        call += [out.buf, out.offset, *sts[0]]
    else:
        call.append(out.buf)
    ti = 0
    lo, hi = bounds
    values = list(args) + [b for b in (lo, hi) if b is not None]
    for i, a in enumerate(values):
        c = _compute(cd, i)
        if isinstance(a, DeviceArray):
            src = _nb(a.dtype)
            cn = src if c is None else _nb(c.np)
            operands.append(("t", src))
            compute.append(cn)
            call += [a.buf, a.offset, *sts[1 + ti]]
            ti += 1
        else:
            cn = out_name if c is None else _nb(c.np)
            operands.append(("s", cn))
            compute.append(cn)
            call.append(np.dtype(cn).type(a))
    spec = ew.Spec(scalar, tuple(operands), tuple(compute), out_name, ndim, strided,
                   (lo is not None, hi is not None))
    sim = backend.simulated()
    k = _kernel(("ew", spec, sim), spec.name, lambda: ew.source(spec, sim))
    _run(k, n, call)
    return out


def copy_into(dst: DeviceArray, src: DeviceArray | Any) -> None:
    """dst[...] = src (broadcast, cast to dst's dtype), through strides."""
    elementwise("copy", [src], dst.shape, dst.dtype, into=dst)


def contiguous(a: DeviceArray) -> DeviceArray:
    if a.is_contiguous():
        return a
    return elementwise("copy", [a], a.shape, a.dtype)


def full(shape: tuple[int, ...], value: Any, dtype: np.dtype) -> DeviceArray:
    return elementwise("fill", [value], tuple(shape), dtype)


# ---- reductions ------------------------------------------------------------------------------

_INIT = {"add": "0", "mul": "1", "and": "True", "or": "False"}


def _init_text(spec: ReduceSpec, acc: str) -> str:
    if spec.combine in _INIT:
        return _INIT[spec.combine]
    big = spec.init > 0  # +inf: min/argmin start high
    if acc.startswith("float"):
        return "np.inf" if big else "-np.inf"
    if acc == "bool":
        return "True" if big else "False"
    info = np.iinfo(np.dtype(acc))
    return str(info.max if big else info.min)


def reduce(spec: ReduceSpec, x: DeviceArray, dims: tuple[int, ...],
           out_shape: tuple[int, ...], out_dtype: np.dtype) -> DeviceArray:
    kept = [i for i in range(x.ndim) if i not in dims]
    v = x.permute(tuple(kept) + tuple(dims))
    m = int(np.prod([x.shape[i] for i in kept], dtype=np.int64))
    n = int(np.prod([x.shape[i] for i in dims], dtype=np.int64))
    out = DeviceArray.empty(out_shape, out_dtype)
    if m == 0:
        return out
    k_sh, (k_st,) = collapse(v.shape[:len(kept)], [v.estrides[:len(kept)]])
    r_sh, (r_st,) = collapse(v.shape[len(kept):], [v.estrides[len(kept):]])
    if len(k_sh) > 1 or len(r_sh) > 1:
        v = contiguous(v)
        sm, sn = n, 1
    else:
        sm = k_st[0] if k_st else 0
        sn = r_st[0] if r_st else 0
    acc = "int64" if spec.index else _nb(out_dtype)
    src = _nb(x.dtype)
    if acc == "bool" and src != "bool":  # all/any of numbers: test != 0 first
        v = elementwise("ne", [v, 0], v.shape, np.dtype(np.bool_), cd=dt.as_dtype(src))
        src, sm, sn = "bool", (n if v.size else 0), 1
    combine = spec.combine if spec.index else spec.combine
    threads = backend.threads() if backend.simulated() else 128
    s = red.Spec(combine, _init_text(spec, src if spec.index else acc), src, acc, threads)
    k = _kernel(("red", s), s.name, lambda: red.source(s))
    blocks = min(m, 2 if backend.simulated() else 65535)
    if backend.simulated():
        with np.errstate(all="ignore"):
            k[blocks, threads](m, n, out.buf, v.buf, v.offset, sm, sn)
    else:
        k[blocks, threads](m, n, out.buf, v.buf, v.offset, sm, sn)
    return out


# ---- matmul ----------------------------------------------------------------------------------


def matmul(a: DeviceArray, b: DeviceArray, out_shape: tuple[int, ...],
           out_dtype: np.dtype) -> DeviceArray:
    name = _nb(out_dtype)
    va = a.view_as((1,) + a.shape, (0,) + a.estrides) if a.ndim == 1 else a
    vb = b.view_as(b.shape + (1,), b.estrides + (0,)) if b.ndim == 1 else b
    batch = np.broadcast_shapes(va.shape[:-2], vb.shape[:-2])
    va = va.broadcast_to(tuple(batch) + va.shape[-2:])
    vb = vb.broadcast_to(tuple(batch) + vb.shape[-2:])
    m, kk = va.shape[-2:]
    n = vb.shape[-1]
    nb = int(np.prod(batch, dtype=np.int64))
    out = DeviceArray.empty(out_shape, out_dtype)
    if m == 0 or n == 0 or nb == 0:
        return out
    tile = 4 if backend.simulated() else mm.TILE
    k = _kernel(("mm", name, tile), mm.name(name, tile), lambda: mm.source(name, tile))
    b_sh, (sa, sb) = collapse(tuple(batch), [va.estrides[:-2], vb.estrides[:-2]])
    grid_xy = ((n + tile - 1) // tile, (m + tile - 1) // tile)
    launches: list[tuple[int, int, int, int, int]] = []  # (a off, b off, c off, count, ...)
    if len(b_sh) <= 1:
        launches.append((va.offset, vb.offset, 0, nb, 0))
        a_sb = sa[0] if sa else 0
        b_sb = sb[0] if sb else 0
    else:  # batch dims that do not merge: one launch per leading index
        a_sb, b_sb = sa[-1], sb[-1]
        inner = b_sh[-1]
        for idx in np.ndindex(*b_sh[:-1]):
            ao = va.offset + sum(i * s for i, s in zip(idx, sa[:-1]))
            bo = vb.offset + sum(i * s for i, s in zip(idx, sb[:-1]))
            co = int(np.ravel_multi_index(idx, b_sh[:-1])) * inner * m * n
            launches.append((ao, bo, co, inner, 0))
    for ao, bo, co, cnt, _ in launches:
        c = out.buf[co:co + cnt * m * n] if co else out.buf
        args = (m, n, kk, c, va.buf, ao, a_sb, va.estrides[-2], va.estrides[-1],
                vb.buf, bo, b_sb, vb.estrides[-2], vb.estrides[-1])
        if backend.simulated():
            with np.errstate(all="ignore"):
                k[(grid_xy[0], grid_xy[1], cnt), (tile, tile)](*args)
        else:
            k[(grid_xy[0], grid_xy[1], cnt), (tile, tile)](*args)
    return out


# ---- movement --------------------------------------------------------------------------------


def movement(op: OpDef, args: Sequence[Any], attrs: dict[str, Any],
             out_shape: tuple[int, ...], out_dtype: np.dtype) -> DeviceArray:
    x = args[0]
    name = op.name
    if name == "reshape":
        v = x.reshape_view(out_shape)
        if v is None:  # strides cannot express it (a permuted tensor): copy first
            v = contiguous(x).reshape_view(out_shape)
        assert v is not None
        return v
    if name == "permute":
        return x.permute(tuple(attrs["dims"]))
    if name == "expand":
        return x.broadcast_to(out_shape)
    if name == "slice":
        return x.slice(attrs["starts"], attrs["stops"], attrs["steps"])
    if name == "clone":
        return elementwise("copy", [x], x.shape, x.dtype)
    if name == "slice_scatter":
        out = elementwise("copy", [x], x.shape, out_dtype)
        copy_into(out.slice(attrs["starts"], attrs["stops"], attrs["steps"]), args[1])
        return out
    if name == "cat":
        out = DeviceArray.empty(out_shape, out_dtype)
        dim = attrs["dim"]
        at = 0
        for a in args:
            if a.shape == (0,) and len(out_shape) != 1:
                continue  # torch's legacy: a 1-d empty tensor joins anything
            w = a.shape[dim]
            starts = tuple(at if i == dim else 0 for i in range(len(out_shape)))
            stops = tuple(at + w if i == dim else n for i, n in enumerate(out_shape))
            copy_into(out.slice(starts, stops, (1,) * len(out_shape)), a)
            at += w
        return out
    raise AssertionError(name)


# ---- the entry dispatch calls ----------------------------------------------------------------


def _host_fallback(op: OpDef, args: Sequence[Any], attrs: dict[str, Any], cd: Any,
                   out_dtype: np.dtype) -> DeviceArray:
    HOST_FALLBACKS[op.name] += 1
    arrays = []
    for i, a in enumerate(args):
        c = _compute(cd, i)
        if isinstance(a, DeviceArray):
            h = a.host()
            arrays.append(h if c is None or h.dtype == c.np else h.astype(c.np))
        else:
            arrays.append(a if c is None else c.np.type(a))
    data = np.asarray(op.eager(*arrays, **attrs))
    if data.dtype != out_dtype:
        data = data.astype(out_dtype)
    return DeviceArray.from_host(data)


def run(op: OpDef, args: Sequence[Any], attrs: dict[str, Any], out_shape: tuple[int, ...],
        out_dtype: dt.DType, cd: Any) -> DeviceArray:
    """The result of `op` on CUDA operands (DeviceArrays and Python numbers), as a
    DeviceArray of `out_shape` and `out_dtype`."""
    od = out_dtype.np if isinstance(out_dtype.np, np.dtype) else np.dtype(out_dtype.np)
    _nb(od)
    kind = op.kind
    if kind is Kind.ELEMENTWISE and op.scalar is not None and op.scalar in ew.SPELL:
        if op.name == "clamp":
            return elementwise("clamp", args, out_shape, od, bounds=(attrs["min"], attrs["max"]))
        return elementwise(op.scalar, args, out_shape, od, cd)
    if kind is Kind.REDUCE and op.reduce is not None:
        x = args[0]
        c = _compute(cd, 0)
        if c is not None and x.dtype != c.np:
            x = elementwise("copy", [x], x.shape, c.np)
        if op.reduce.index:
            d = attrs["dim"]
            dims = tuple(range(x.ndim)) if d is None or x.ndim == 0 else (d % x.ndim,)
        else:
            dims = tuple(attrs["dims"])
        return reduce(op.reduce, x, dims, out_shape, od)
    if op.name == "matmul":
        return matmul(args[0], args[1], out_shape, od)
    if kind is Kind.MOVEMENT and op.name in MOVEMENT:
        return movement(op, args, attrs, out_shape, od)
    if op.name == "full":
        return full(out_shape, attrs["value"], od)
    return _host_fallback(op, args, attrs, cd, od)


def generated_specs() -> list[Any]:
    return list(_SPECS)
