"""The export file: one safetensors file (docs/export.md). The tensors are the weights and the
graph's constant arrays; the header's `__metadata__` holds the format version, the graph as
JSON and a SHA-256 over the version, the graph JSON, the tensor table and the tensor bytes.

Written here with NumPy; read with the validating reader of serialization.py (which never
unpickles), then checked: a foreign or truncated file, a newer major version and a checksum
mismatch are ExportErrors, found in that order, before any of the graph is trusted.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..capture import ExportError
from ..serialization import SerializationError, _read_header, _read_tensors

VERSION = (1, 0)  # major: readers refuse newer majors; minor: additions older readers ignore
META_VERSION = "tracejit.export.version"
META_GRAPH = "tracejit.export.graph"
META_SHA = "tracejit.export.sha256"
_TO_ST = {dt.float16: "F16", dt.float32: "F32", dt.float64: "F64", dt.int32: "I32",
          dt.int64: "I64", dt.bool_: "BOOL"}


def version_text(v: tuple[int, int] = VERSION) -> str:
    return f"{v[0]}.{v[1]}"


def digest(version: str, graph_text: str, header: dict[str, Any], data: Any) -> str:
    """SHA-256 over everything a loader acts on: the version, the graph JSON, every tensor's
    name, dtype, shape and byte range (so swapping two same-sized tensors is caught too), and
    the data section's bytes."""
    table = sorted([k, v["dtype"], v["shape"], v["data_offsets"]] for k, v in header.items()
                   if k != "__metadata__")
    h = hashlib.sha256()
    for part in (b"tracejit.export", version.encode(), graph_text.encode("utf-8"),
                 json.dumps(table, separators=(",", ":")).encode()):
        h.update(struct.pack("<Q", len(part)))
        h.update(part)
    h.update(data)
    return h.hexdigest()


def pack(graph_text: str, tensors: list[tuple[str, np.ndarray]],
         version: str = version_text()) -> bytes:
    """The bytes of an export file holding `graph_text` and `tensors` (name, array)."""
    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, arr in tensors:
        d = dt.from_numpy_dtype(arr.dtype)
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)
        b = raw.tobytes()
        header[name] = {"dtype": _TO_ST[d], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    data = b"".join(chunks)
    header["__metadata__"] = {META_VERSION: version, META_GRAPH: graph_text,
                              META_SHA: digest(version, graph_text, header, data)}
    hb = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    hb += b" " * (-len(hb) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(hb)) + hb + data


_VERSION_RE = re.compile(r"(\d{1,6})\.(\d{1,6})")


def unpack(data: bytes, src: str) -> tuple[str, dict[str, np.ndarray], tuple[int, int]]:
    """(graph JSON text, tensors by name, format version) of an export file's bytes."""
    try:
        header, start = _read_header(data, src)
    except SerializationError as e:
        raise ExportError(f"{e}; expected a tracejit export file, as Exported.save writes") \
            from None
    meta = header.get("__metadata__") or {}
    if META_VERSION not in meta:
        hint = ("; it is a tracejit.save checkpoint: read it with tracejit.load"
                if "tracejit.v1" in meta else "")
        raise ExportError(f"{src}: not a tracejit export file (a safetensors file without "
                          f"the {META_VERSION!r} metadata that tracejit.export writes){hint}")
    m = _VERSION_RE.fullmatch(meta[META_VERSION])
    if m is None:
        raise ExportError(f"{src}: corrupted header: export format version "
                          f"{meta[META_VERSION]!r:.40} is not MAJOR.MINOR")
    version = (int(m[1]), int(m[2]))
    if version[0] > VERSION[0]:
        raise ExportError(f"{src}: written by a newer tracejit (export format "
                          f"{version_text(version)}; this tracejit reads format "
                          f"{VERSION[0]}.x): upgrade tracejit to load it")
    if version[0] < VERSION[0]:
        raise ExportError(f"{src}: export format {version_text(version)} is older than any "
                          "this tracejit reads; export the model again")
    for key in (META_GRAPH, META_SHA):
        if key not in meta:
            raise ExportError(f"{src}: corrupted header: the metadata lacks {key!r}")
    body = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        tensors = _read_tensors(body, data, start, src)
    except SerializationError as e:
        raise ExportError(str(e)) from None
    want = meta[META_SHA]
    got = digest(meta[META_VERSION], meta[META_GRAPH], body, memoryview(data)[start:])
    if got != want:
        raise ExportError(f"{src}: checksum mismatch: the file records SHA-256 {want[:16]}... "
                          f"but its graph and tensors hash to {got[:16]}...; the file was "
                          "modified or corrupted after it was saved (export it again)")
    return meta[META_GRAPH], {k: t._data for k, t in tensors.items()}, version
