"""The export format's graph codec: `ir.Graph` <-> JSON-shaped data (docs/export.md).

Generic over the op registry: a node is its op's name, its operands, its attributes and its
result types, so an op declared with `defop` exports and loads with no change here; only a
new *kind of attribute value* would need an encoding below. Arrays held in attributes (a
constant's value) go to the file's tensor section, named here. Decoding trusts nothing: every
field is checked, and each problem is an ExportError naming where in the graph it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..capture import ExportError
from ..device import device as Device
from ..ir.graph import Check, Const, Effect, Graph, Node, Operand, Region, Value
from ..ops.registry import REGISTRY, TensorType

CONSTANT_PREFIX = "__constant__."  # the tensor-section names of arrays inside the graph
_DTYPES = {d.name: d for d in dt.ALL}
_SPECIAL = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_MAX_DEPTH = 200  # nesting of attribute values and regions a file may use
_MAX_TEXT = 1000  # a name's or location's length
# Attribute strings (a check's op name, attention's mask kind) may reach generated source,
# where an op's rule is trusted to quote them; a file is not trusted, so its strings are kept
# to characters that cannot end a literal, open a call or start a new statement.
SAFE_TEXT_CHARS = "letters, digits, spaces and _ . + -"
_SAFE_TEXT = re.compile(r"[A-Za-z0-9_.+\- ]{0,200}")


def safe_text(s: str) -> bool:
    return _SAFE_TEXT.fullmatch(s) is not None


def _float(v: float) -> Any:
    # JSON has no NaN or infinities; -0.0 and every finite float round-trip through repr
    if math.isfinite(v):
        return v
    return {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


class Encoder:
    """One file's worth of graph: value ids (one per Value object, in order of appearance)
    and the arrays its attributes hold."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.ids: dict[Value, int] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._array_names: dict[int, str] = {}  # id(ndarray) -> its name

    def graph(self, g: Graph) -> dict[str, Any]:
        return {
            "name": g.name,
            "inputs": [self.define(v) for v in g.inputs],
            "lifted": [self.define(v) for v in g.lifted],
            "nodes": [self.node(n) for n in g.nodes],
            "outputs": [self.operand(o) for o in g.outputs],
            "effects": [[self.ids[e.target], self.ids[e.source]] for e in g.effects],
            "checks": [[c.output, c.taken, c.loc] for c in g.checks],
        }

    def define(self, v: Value) -> dict[str, Any]:
        """A value where it is defined (a param or a result). A fused node's results are its
        members' results, the same Value objects: a second definition repeats the id."""
        k = self.ids.setdefault(v, len(self.ids))
        d: dict[str, Any] = {"id": k, "dtype": v.type.dtype.name, "shape": list(v.type.shape)}
        if str(v.type.device) != self.device:
            d["device"] = str(v.type.device)
        if v.name:
            d["name"] = v.name
        return d

    def operand(self, o: Operand) -> Any:
        if isinstance(o, Const):
            return {"const": self.attr(o.value, "a literal operand"), "dtype": o.dtype.name}
        return self.ids[o]

    def node(self, n: Node) -> dict[str, Any]:
        d: dict[str, Any] = {"op": n.op.name, "inputs": [self.operand(o) for o in n.inputs]}
        # attributes first: a fused node's region defines the values its outputs repeat
        d["attrs"] = {k: self.attr(v, f"attribute {k!r} of a {n.op.name} node at {n.loc}")
                      for k, v in n.attrs.items()}
        d["outputs"] = [self.define(v) for v in n.outs]
        if n.loc:
            d["loc"] = n.loc
        return d

    def region(self, r: Region) -> dict[str, Any]:
        return {"params": [self.define(v) for v in r.params],
                "nodes": [self.node(n) for n in r.nodes],
                "results": [self.ids[v] for v in r.results]}

    def attr(self, v: Any, where: str) -> Any:
        if isinstance(v, str):
            if not safe_text(v):
                raise ExportError(f"export: the {where} is the string {v[:40]!r}, which holds "
                                  f"characters other than {SAFE_TEXT_CHARS}; the export format "
                                  "keeps attribute strings to those (see safe_text)")
            return v
        if v is None or isinstance(v, bool):
            return v
        if type(v) is int:
            return v
        if type(v) is float:
            return _float(v)
        if isinstance(v, tuple) and not hasattr(v, "_fields"):
            return [self.attr(x, where) for x in v]
        if isinstance(v, list):
            return {"list": [self.attr(x, where) for x in v]}
        if isinstance(v, dict):
            return {"dict": [[self.attr(k, where), self.attr(x, where)] for k, x in v.items()]}
        if isinstance(v, dt.DType):
            return {"dtype": v.name}
        if isinstance(v, Device):
            return {"device": str(v)}
        if isinstance(v, Region):
            return {"region": self.region(v)}
        if isinstance(v, np.ndarray):
            name = self._array_names.get(id(v))
            if name is None:
                name = self._array_names[id(v)] = f"{CONSTANT_PREFIX}{len(self.arrays)}"
                self.arrays[name] = v
            return {"array": name}
        if isinstance(v, np.generic) and v.dtype in _NP_SCALARS:
            x = v.item()
            return {"scalar": _float(x) if isinstance(x, float) else x,
                    "dtype": dt.from_numpy_dtype(v.dtype).name}
        raise ExportError(f"export: the {where} holds a {type(v).__name__} ({v!r:.60}), which "
                          "the export format has no encoding for; add one to "
                          "tracejit/exporting/graph_json.py (Encoder.attr and Decoder.attr)")


_NP_SCALARS = {d.np for d in dt.ALL}


class Decoder:
    """Rebuilds a graph from what Encoder wrote. `arrays` are the file's constant arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], device: str, src: str,
                 strict: bool = True) -> None:
        self.arrays = arrays
        # unknown fields are errors, except in a file of a newer minor version, which may add
        # fields an older reader ignores
        self.strict = strict
        self.used: set[str] = set()
        self.device = device
        self.src = src
        self.values: dict[int, Value] = {}

    def fail(self, where: str, msg: str) -> ExportError:
        return ExportError(f"{self.src}: corrupted graph JSON at {where}: {msg}")

    def graph(self, d: Any) -> Graph:
        d = self.as_obj(d, "the graph", ("name", "inputs", "lifted", "nodes", "outputs", "effects",
                                      "checks"))
        name = self.as_str(d["name"], "the graph's name")
        inputs = tuple(self.define(v, f"input {k}") for k, v in
                       enumerate(self.as_list(d["inputs"], "the graph's inputs")))
        lifted = tuple(self.define(v, f"lifted value {k}") for k, v in
                       enumerate(self.as_list(d["lifted"], "the graph's lifted values")))
        nodes = self.nodes(d["nodes"], "node", 0)
        outputs = tuple(self.operand(o, f"output {k}") for k, o in
                        enumerate(self.as_list(d["outputs"], "the graph's outputs")))
        effects = []
        for k, e in enumerate(self.as_list(d["effects"], "the graph's effects")):
            pair = self.as_list(e, f"effect {k}")
            if len(pair) != 2:
                raise self.fail(f"effect {k}", "must be [target id, source id]")
            effects.append(Effect(self.ref(pair[0], f"effect {k}"),
                                  self.ref(pair[1], f"effect {k}")))
        checks = []
        for k, c in enumerate(self.as_list(d["checks"], "the graph's checks")):
            c = self.as_list(c, f"check {k}")
            if len(c) != 3 or type(c[0]) is not int or type(c[1]) is not bool or \
                    not isinstance(c[2], str):
                raise self.fail(f"check {k}", "must be [output index, taken, location]")
            checks.append(Check(c[0], c[1], self.as_str(c[2], f"check {k}")))
        return Graph(name, inputs, lifted, nodes, outputs, tuple(effects), tuple(checks))

    # ---- checked JSON shapes ----------------------------------------------------------------
    def as_obj(self, d: Any, where: str, keys: tuple[str, ...],
            optional: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(where, f"expected an object, got {_kind(d)}")
        missing = [k for k in keys if k not in d]
        extra = [k for k in d if k not in keys and k not in optional] if self.strict else []
        if missing or extra:
            raise self.fail(where, f"expected the fields {', '.join(keys)}"
                            + (f" (missing {', '.join(missing)})" if missing else "")
                            + (f" (unknown {', '.join(map(str, extra))})" if extra else ""))
        return d

    def as_list(self, d: Any, where: str) -> list[Any]:
        if not isinstance(d, list):
            raise self.fail(where, f"expected a list, got {_kind(d)}")
        return d

    def as_str(self, d: Any, where: str) -> str:
        """A name or a location: one printable line (they reach generated source only in
        comments, which a line break would end)."""
        if not isinstance(d, str):
            raise self.fail(where, f"expected a string, got {_kind(d)}")
        if len(d) > _MAX_TEXT or not d.isprintable():
            raise self.fail(where, f"{d[:40]!r}... is not one printable line of at most "
                            f"{_MAX_TEXT} characters")
        return d

    def dtype(self, d: Any, where: str) -> dt.DType:
        if not isinstance(d, str) or d not in _DTYPES:
            raise self.fail(where, f"unknown dtype {d!r:.40} (expected one of "
                            f"{', '.join(_DTYPES)})")
        return _DTYPES[d]

    # ---- values, operands, nodes ------------------------------------------------------------
    def define(self, d: Any, where: str) -> Value:
        d = self.as_obj(d, where, ("id", "dtype", "shape"), ("name", "device"))
        k = d["id"]
        if type(k) is not int or k < 0:
            raise self.fail(where, f"a value id must be a non-negative integer, got {k!r:.40}")
        shape = self.as_list(d["shape"], where)
        if len(shape) > 64 or not all(type(s) is int and 0 <= s < 2**63 for s in shape):
            raise self.fail(where, f"invalid shape {shape!r:.60}")
        dev = d.get("device", self.device)
        try:
            device = Device(self.as_str(dev, where))
        except RuntimeError as e:
            raise self.fail(where, str(e)) from None
        t = TensorType(tuple(shape), self.dtype(d["dtype"], where), device)
        name = self.as_str(d.get("name", ""), where)
        v = self.values.get(k)
        if v is not None:  # a fused node's results: its members' values again
            if v.type != t:
                raise self.fail(where, f"value {k} is defined again as {t}, first as {v.type}")
            return v
        v = self.values[k] = Value(t, name)
        return v

    def ref(self, d: Any, where: str) -> Value:
        if type(d) is not int or d not in self.values:
            raise self.fail(where, f"refers to value {d!r:.40}, which is not defined before it")
        return self.values[d]

    def operand(self, d: Any, where: str) -> Operand:
        if isinstance(d, dict):
            d = self.as_obj(d, where, ("const", "dtype"))
            v = self.attr(d["const"], where, 0)
            if type(v) not in (bool, int, float) and not isinstance(v, np.generic):
                raise self.fail(where, f"a literal operand must be a number, got {_kind(v)}")
            return Const(v, self.dtype(d["dtype"], where))
        return self.ref(d, where)

    def nodes(self, d: Any, where: str, depth: int) -> tuple[Node, ...]:
        return tuple(self.node(n, f"{where} {k}", depth) for k, n in
                     enumerate(self.as_list(d, where + "s")))

    def node(self, d: Any, where: str, depth: int) -> Node:
        d = self.as_obj(d, where, ("op", "inputs", "attrs", "outputs"), ("loc",))
        name = self.as_str(d["op"], where)
        op = REGISTRY.get(name)
        if op is None:
            raise ExportError(
                f"{self.src}: {where} uses the op {name!r}, which this tracejit does not have "
                "(the file was written by a tracejit with more ops): load it with a tracejit "
                "that declares that op")
        where = f"{where} ({name})"
        inputs = tuple(self.operand(o, f"{where} input {k}") for k, o in
                       enumerate(self.as_list(d["inputs"], where)))
        attrs_in = d["attrs"]
        if not isinstance(attrs_in, dict):
            raise self.fail(where, f"attrs must be an object, got {_kind(attrs_in)}")
        attrs = {k: self.attr(v, f"{where} attribute {k!r}", depth + 1)
                 for k, v in attrs_in.items()}
        for key in op.regions:
            if not isinstance(attrs.get(key), Region):
                raise self.fail(where, f"a {name} node's {key!r} attribute must be a region")
        outs = tuple(self.define(v, f"{where} output {k}") for k, v in
                     enumerate(self.as_list(d["outputs"], where)))
        return Node(op, inputs, outs, attrs, self.as_str(d.get("loc", ""), where))

    def region(self, d: Any, where: str, depth: int) -> Region:
        d = self.as_obj(d, where, ("params", "nodes", "results"))
        params = tuple(self.define(v, f"{where} param {k}") for k, v in
                       enumerate(self.as_list(d["params"], where)))
        nodes = self.nodes(d["nodes"], f"{where} node", depth)
        results = tuple(self.ref(r, f"{where} result {k}") for k, r in
                        enumerate(self.as_list(d["results"], where)))
        return Region(params, nodes, results)

    def attr(self, d: Any, where: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail(where, "nested too deeply")
        if isinstance(d, str):
            if not safe_text(d):
                raise self.fail(where, f"the string {d[:40]!r} holds characters other than "
                                f"{SAFE_TEXT_CHARS}")
            return d
        if d is None or isinstance(d, (bool, int, float)):
            return d
        if isinstance(d, list):
            return tuple(self.attr(x, where, depth + 1) for x in d)
        if not isinstance(d, dict) or len(d) not in (1, 2):
            raise self.fail(where, f"unexpected attribute value {d!r:.60}")
        rule = _TAGS.get(tuple(sorted(d)))
        if rule is None:
            raise self.fail(where, f"unknown attribute encoding {sorted(d)!r:.60}")
        return rule(self, d, where, depth)


def _kind(d: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(d), f"a {type(d).__name__}")


def _dec_float(self: Decoder, d: dict[str, Any], where: str, depth: int) -> float:
    if d["float"] not in _SPECIAL:
        raise self.fail(where, f"a float tag must be nan, inf or -inf, got {d['float']!r:.40}")
    return _SPECIAL[d["float"]]


def _dec_list(self: Decoder, d: dict[str, Any], where: str, depth: int) -> list[Any]:
    return [self.attr(x, where, depth + 1) for x in self.as_list(d["list"], where)]


def _dec_dict(self: Decoder, d: dict[str, Any], where: str, depth: int) -> dict[Any, Any]:
    out = {}
    for kv in self.as_list(d["dict"], where):
        if not isinstance(kv, list) or len(kv) != 2:
            raise self.fail(where, "a dict item must be [key, value]")
        k = self.attr(kv[0], where, depth + 1)
        try:
            out[k] = self.attr(kv[1], where, depth + 1)
        except TypeError:  # an unhashable key
            raise self.fail(where, f"a dict key must be hashable, got {_kind(k)}") from None
    return out


def _dec_dtype(self: Decoder, d: dict[str, Any], where: str, depth: int) -> dt.DType:
    return self.dtype(d["dtype"], where)


def _dec_device(self: Decoder, d: dict[str, Any], where: str, depth: int) -> Device:
    try:
        return Device(self.as_str(d["device"], where))
    except RuntimeError as e:
        raise self.fail(where, str(e)) from None


def _dec_region(self: Decoder, d: dict[str, Any], where: str, depth: int) -> Region:
    return self.region(d["region"], where, depth + 1)


def _dec_array(self: Decoder, d: dict[str, Any], where: str, depth: int) -> np.ndarray:
    name = d["array"]
    if not isinstance(name, str) or name not in self.arrays:
        raise self.fail(where, f"refers to the array {name!r:.60}, which the file's tensors "
                        "lack")
    self.used.add(name)
    return self.arrays[name]


def _dec_scalar(self: Decoder, d: dict[str, Any], where: str, depth: int) -> np.generic:
    v = self.attr(d["scalar"], where, depth + 1)
    if type(v) not in (bool, int, float):
        raise self.fail(where, f"a scalar must hold a number, got {_kind(v)}")
    try:
        return self.dtype(d["dtype"], where).np.type(v)
    except (OverflowError, ValueError):
        raise self.fail(where, f"{v!r:.40} does not fit {d['dtype']}") from None


_TAGS: dict[tuple[str, ...], Callable[[Decoder, dict[str, Any], str, int], Any]] = {
    ("float",): _dec_float, ("list",): _dec_list, ("dict",): _dec_dict,
    ("dtype",): _dec_dtype, ("device",): _dec_device, ("region",): _dec_region,
    ("array",): _dec_array, ("dtype", "scalar"): _dec_scalar,
}
