"""tracejit.save / tracejit.load in the safetensors format: an 8-byte little-endian header
length, a JSON header (dtype, shape, data_offsets per tensor; `__metadata__` holding a JSON
description of the non-tensor structure), then the raw little-endian bytes. Nothing is ever
unpickled, and every field of a file is validated before any tensor is built."""

from __future__ import annotations

import json
import math
import os
import struct
from collections import OrderedDict
from typing import IO, Any, cast

import numpy as np

from . import dtypes as dt
from .tensor import Tensor

__all__ = ["save", "load", "SerializationError"]

_FORMAT = "tracejit.v1"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_MAX_RANK = 64  # NumPy's limit on dimensions
_MAX_DIM = 2**63 - 1  # a dimension must fit an int64, as in torch
# safetensors dtype names <-> tracejit dtypes (little-endian byte order on disk)
_TO_ST = {dt.float16: "F16", dt.float32: "F32", dt.float64: "F64", dt.int32: "I32",
          dt.int64: "I64", dt.bool_: "BOOL"}
_FROM_ST = {v: k for k, v in _TO_ST.items()}
_OTHER_ST = {"BF16", "F8_E4M3", "F8_E5M2", "I8", "I16", "U8", "U16", "U32", "U64", "C64"}


class SerializationError(ValueError):
    """A file that is not a valid tracejit/safetensors file (truncated, corrupted, crafted)."""


# ---- save ----------------------------------------------------------------------------------------


def save(obj: Any, f: str | os.PathLike | IO[bytes]) -> None:
    """Write a tensor, a (nested) state dict or an optimizer state dict to `f`.

    A flat dict of tensors keeps its keys as the tensor names, so the file is an ordinary
    safetensors checkpoint (`safetensors.numpy.load_file` reads it). Allowed leaves: tensors,
    None, bools, ints, floats, strings; containers: dicts (str or int keys), lists, tuples.
    """
    tensors: list[tuple[str, Tensor]] = []
    taken: set[str] = set()
    structure = _encode(obj, "", tensors, taken)
    header: dict[str, Any] = {}
    offset = 0
    chunks: list[bytes] = []
    for name, t in tensors:
        host = cast(Any, t._data).host() if t.is_cuda else t._data  # (saved from the host)
        raw = np.ascontiguousarray(host).astype(host.dtype.newbyteorder("<"), copy=False)
        b = raw.tobytes()
        header[name] = {"dtype": _TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    header["__metadata__"] = {"format": "pt", _FORMAT: json.dumps(structure, allow_nan=False)}
    hb = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    hb += b" " * (-len(hb) % 8)  # pad so the data starts 8-byte aligned, as safetensors does
    data = struct.pack("<Q", len(hb)) + hb + b"".join(chunks)
    if hasattr(f, "write"):
        f.write(data)  # type: ignore[union-attr]
    else:
        with open(f, "wb") as fh:  # type: ignore[arg-type]
            fh.write(data)


def _name(path: str, taken: set[str]) -> str:
    name = path or "tensor"
    if name in taken or name == "__metadata__":
        i = 1
        while f"{name}.{i}" in taken:
            i += 1
        name = f"{name}.{i}"
    taken.add(name)
    return name


def _encode(obj: Any, path: str, tensors: list[tuple[str, Tensor]], taken: set[str]) -> Any:
    """The JSON description of `obj`: tagged lists, tensors replaced by their names."""
    where = path or "<root>"
    if isinstance(obj, Tensor):
        if obj.dtype not in _TO_ST:
            raise TypeError(f"save: tensor at {where} has unsupported dtype {obj.dtype}")
        name = _name(path, taken)
        tensors.append((name, obj))
        return ["tensor", name, bool(obj.requires_grad)]
    if obj is None or isinstance(obj, (bool, str)):
        return ["value", obj]
    if isinstance(obj, (int, np.integer)):
        return ["value", int(obj)]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return ["value", v] if math.isfinite(v) else ["float", repr(v)]
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"save: dict keys must be str or int, got {type(k).__name__} "
                                f"at {where}")
            child = f"{path}.{k}" if path else str(k)
            items.append([["value", k], _encode(v, child, tensors, taken)])
        kind = "odict" if isinstance(obj, OrderedDict) else "dict"
        return [kind, items]
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return [kind, [_encode(v, f"{path}.{i}" if path else str(i), tensors, taken)
                       for i, v in enumerate(obj)]]
    raise TypeError(f"save: cannot store a {type(obj).__name__} at {where}; tracejit.save "
                    "writes tensors, numbers, strings, None and dicts/lists/tuples of them")


# ---- load ----------------------------------------------------------------------------------------


def load(f: str | os.PathLike | IO[bytes], map_location: Any = None, *,
         weights_only: bool = True, **kwargs: Any) -> Any:
    """Read what `save` wrote, or any safetensors file (as a dict of tensors in file order).

    Raises SerializationError naming the problem for a truncated, corrupted or inconsistent
    file; never executes anything from the file.
    """
    if hasattr(f, "read"):
        data = f.read()  # type: ignore[union-attr]
        src = getattr(f, "name", "<stream>")
    else:
        src = os.fspath(f)  # type: ignore[arg-type]
        with open(src, "rb") as fh:
            data = fh.read()
    header, start = _read_header(data, src)
    meta = header.pop("__metadata__", None)
    tensors = _read_tensors(header, data, start, src)
    if meta is None or _FORMAT not in meta:
        order = sorted(tensors, key=lambda k: header[k]["data_offsets"][0])
        return OrderedDict((k, tensors[k]) for k in order)
    try:
        structure = _json(meta[_FORMAT])
    except (ValueError, TypeError, RecursionError) as e:
        raise SerializationError(f"{src}: corrupted structure metadata "
                                 f"({type(e).__name__}: {str(e)[:200]})") from None
    used: set[str] = set()
    out = _decode(structure, tensors, used, src, 0)
    if used != set(tensors):
        extra = sorted(set(tensors) - used)
        raise SerializationError(f"{src}: tensors {extra[:5]} are not referenced by the "
                                 "structure metadata (the file was altered)")
    return out


def _fail(src: str, msg: str) -> SerializationError:
    return SerializationError(f"{src}: {msg}")


def _short(x: Any) -> str:
    """repr(x) cut to a readable length (a crafted header can hold huge values)."""
    try:
        r = repr(x)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return f"<{type(x).__name__} too large to show>"
    return r if len(r) <= 80 else r[:77] + "..."


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicated key {_short(k)}")
        out[k] = v
    return out


def _header_int(text: str) -> int:
    # a header's integers are dimensions and byte offsets: 20 digits hold any uint64. Stopping
    # at the first longer one keeps a crafted header from costing minutes of int parsing
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"integer {text[:30]}... has {len(text)} digits (more than a 64-bit "
                         "dimension or offset)")
    return int(text)


def _json(text: str, header: bool = False) -> Any:
    """JSON that rejects duplicated keys (which one would win is unspecified elsewhere)."""
    return json.loads(text, object_pairs_hook=_no_duplicates,
                      parse_int=_header_int if header else None)


def _numel(shape: list[int], limit: int) -> int | None:
    """The element count of `shape`, or None once it exceeds `limit` (without building a
    huge integer)."""
    if 0 in shape:
        return 0
    n = 1
    for s in shape:
        n *= s
        if n > limit:
            return None
    return n


def _read_header(data: bytes, src: str) -> tuple[dict[str, Any], int]:
    if len(data) < 8:
        raise _fail(src, f"truncated file: {len(data)} bytes, too short for the 8-byte header "
                         "length of a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        raise _fail(src, f"corrupted header: declared header length {n} bytes exceeds the "
                         f"{_MAX_HEADER}-byte limit (not a safetensors file?)")
    if 8 + n > len(data):
        raise _fail(src, f"truncated file: header declares {n} bytes but only {len(data) - 8} "
                         "follow the length field")
    try:
        header = _json(data[8:8 + n].decode("utf-8"), header=True)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _fail(src, f"corrupted header: not valid UTF-8 JSON ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise _fail(src, "corrupted header: the JSON header must be an object")
    meta = header.get("__metadata__")
    if meta is not None and (not isinstance(meta, dict) or
                             not all(isinstance(v, str) for v in meta.values())):
        raise _fail(src, "corrupted header: __metadata__ must map strings to strings")
    return header, 8 + n


def _read_tensors(header: dict[str, Any], data: bytes, start: int, src: str) -> dict[str, Tensor]:
    buf_len = len(data) - start
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _fail(src, f"corrupted header: entry {name!r} must have exactly dtype, shape "
                             "and data_offsets")
        code, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or code not in _FROM_ST:
            hint = " (a dtype tracejit does not support)" if isinstance(code, str) and \
                code in _OTHER_ST else ""
            raise _fail(src, f"tensor {name!r} has unknown dtype {_short(code)}{hint}")
        if not (isinstance(shape, list) and len(shape) <= _MAX_RANK and all(
                type(s) is int and 0 <= s <= _MAX_DIM for s in shape)):
            raise _fail(src, f"tensor {name!r} has an invalid shape {_short(shape)} (at most "
                             f"{_MAX_RANK} non-negative integer dimensions below 2**63)")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise _fail(src, f"tensor {name!r} has invalid data_offsets {_short(offs)}")
        if offs[1] > buf_len:
            raise _fail(src, f"truncated file: tensor {name!r} ends at byte {_short(offs[1])} "
                             f"of the data section, which has only {buf_len} bytes")
        size = _FROM_ST[code].itemsize
        numel = _numel(shape, buf_len // size)
        if numel is None or numel * size != offs[1] - offs[0]:
            need = "more than the whole file" if numel is None else f"{numel * size} bytes"
            raise _fail(src, f"tensor {name!r}: shape {_short(shape)} of {code} needs {need} but "
                             f"data_offsets span {offs[1] - offs[0]} (wrong shape or corrupted)")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    at = 0
    for b, e, name in spans:
        if b != at:
            raise _fail(src, f"corrupted header: tensor {name!r} starts at byte {b} but the "
                             f"previous tensor ends at {at} (overlapping or gapped data)")
        at = e
    if at != buf_len:
        raise _fail(src, f"corrupted file: {buf_len - at} bytes after the last tensor are not "
                         "described by the header")
    out: dict[str, Tensor] = {}
    for b, e, name in spans:
        info = header[name]
        d = _FROM_ST[info["dtype"]]
        raw = np.frombuffer(data, dtype=np.dtype(d.np).newbyteorder("<"), count=(e - b) //
                            d.itemsize, offset=start + b)
        if d is dt.bool_ and raw.size and raw.view(np.uint8).max() > 1:
            raise _fail(src, f"tensor {name!r}: BOOL data holds bytes other than 0 and 1")
        arr = raw.astype(d.np).reshape(info["shape"])  # astype copies: a writable native array
        out[name] = Tensor._make(arr, d)
    return out


def _decode(node: Any, tensors: dict[str, Tensor], used: set[str], src: str, depth: int) -> Any:
    if depth > 100:
        raise _fail(src, "corrupted structure metadata: nested too deeply")
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise _fail(src, f"corrupted structure metadata: unexpected node {str(node)[:60]!r}")
    tag = node[0]
    if tag == "tensor" and len(node) == 3 and isinstance(node[1], str):
        if node[1] not in tensors:
            raise _fail(src, f"structure refers to tensor {node[1]!r}, which the file lacks")
        used.add(node[1])
        t = tensors[node[1]]
        if node[2] is True and t.is_floating_point():
            t.requires_grad_(True)
        return t
    if tag == "value" and len(node) == 2 and (node[1] is None or
                                              isinstance(node[1], (bool, int, float, str))):
        return node[1]
    if tag == "float" and len(node) == 2 and node[1] in ("inf", "-inf", "nan"):
        return float(node[1])
    if tag in ("list", "tuple") and len(node) == 2 and isinstance(node[1], list):
        items = [_decode(x, tensors, used, src, depth + 1) for x in node[1]]
        return items if tag == "list" else tuple(items)
    if tag in ("dict", "odict") and len(node) == 2 and isinstance(node[1], list):
        out: dict[Any, Any] = OrderedDict() if tag == "odict" else {}
        for kv in node[1]:
            if not (isinstance(kv, list) and len(kv) == 2):
                raise _fail(src, "corrupted structure metadata: a dict item is not a pair")
            k = _decode(kv[0], tensors, used, src, depth + 1)
            if not isinstance(k, (str, int)):
                raise _fail(src, f"corrupted structure metadata: dict key {k!r}")
            out[k] = _decode(kv[1], tensors, used, src, depth + 1)
        return out
    raise _fail(src, f"corrupted structure metadata: unknown node {str(node)[:60]!r}")
