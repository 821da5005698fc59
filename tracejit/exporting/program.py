"""`tracejit.export` and `tracejit.load_exported`: an optimised graph with its weights, saved
to one file and run again without the Python that defined it (docs/export.md).

An `Exported` is the graph @jit compiles for the example arguments (tracejit/capture.py), its
weights, and the specs of its inputs and outputs. Calling one compiles the graph with the
normal pipeline (buffer plan, codegen, the compile cache) and runs it, so its results are the
jitted function's bit for bit. Saving writes fileformat.py's file; loading decodes and checks
it (graph_json.py), verifies the graph with the IR verifier and compiles it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from .. import __version__
from ..capture import Captured, ExportError, OutSpec, TensorSpec, capture
from ..dtypes import DType
from ..ir.graph import Const, Value
from ..ir.printer import print_graph
from ..ir.verify import verify
from ..ops.registry import DTypeError, ShapeError
from ..serialization import _json
from ..tensor import Tensor
from . import fileformat
from .graph_json import CONSTANT_PREFIX, Decoder, Encoder

FORMAT = "tracejit.export"
_TOP = ("format", "version", "tracejit", "name", "device", "inputs", "input_args", "lifted",
        "output", "graph")


class Exported:
    """A function's optimised graph and weights: call it like the function (same positional
    tensor arguments, shapes and dtypes as exported; the same output structure), inspect it
    (`ir()`, `inputs`, `outputs`, `weights`), `save(path)` it.

    >>> import tracejit as tj
    >>> ex = tj.export(lambda x: (x * 2).sum(), tj.ones(3))
    >>> ex(tj.tensor([1.0, 2.0, 3.0]))
    tensor(12.)
    """

    def __init__(self, c: Captured, device: str = "cpu") -> None:
        self.name = c.name
        self.graph = c.graph
        self.inputs: tuple[TensorSpec, ...] = c.inputs
        self.device = device
        self._input_args = c.input_args
        self._lifted = c.lifted
        self._weights = c.weights
        self._output = c.output
        self._program: Any = None
        self._interpret = False  # no compiled form for some op: the interpreter runs it

    # ---- inspection --------------------------------------------------------------------------
    def ir(self) -> str:
        """The optimised graph as text (what `jit(fn).ir(*example_args)` begins with)."""
        return print_graph(self.graph)

    @property
    def weights(self) -> dict[str, Tensor]:
        """The weights by name (a module's state-dict names), as the program reads them."""
        return {k: Tensor._make(a, _dtype(a)) for k, a in self._weights.items()}

    @property
    def outputs(self) -> Any:
        """The output structure with a TensorSpec at each tensor."""
        g = self.graph

        def build(s: OutSpec) -> Any:
            kind, x = s
            if kind == "t":
                o = g.outputs[x]
                if isinstance(o, Const):  # a literal returned: a 0-d tensor
                    return TensorSpec(f"output{x}", (), o.dtype)
                return TensorSpec(f"output{x}", o.type.shape, o.type.dtype)
            if kind == "input":
                return self.inputs[x]
            if kind == "weight":
                a = self._weights[x]
                return TensorSpec(x, tuple(a.shape), _dtype(a))
            return _rebuild_container(s, build)

        return build(self._output)

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        n = sum(a.size for a in self._weights.values())
        return (f"Exported({self.name}({ins}), {len(self.graph.nodes)} nodes, "
                f"{len(self._weights)} weights ({n} elements), device={self.device!r})")

    # ---- running -----------------------------------------------------------------------------
    def __call__(self, *args: Any) -> Any:
        self._check_args(args)
        if self._program is None and not self._interpret:
            self.compile()
        params = [args[i]._data for i in self._input_args] + \
            [self._weights[n] for n in self._lifted]
        if self._interpret:
            from ..ir.interpret import interpret

            outs, _ = interpret(self.graph, params)
        else:
            outs, _ = self._program(params)
        tensors = [_tensor(o, v) for o, v in zip(outs, self.graph.outputs)]

        def build(s: OutSpec) -> Any:
            kind, x = s
            if kind == "t":
                return tensors[x]
            if kind == "input":
                return args[x]
            if kind == "weight":
                a = self._weights[x]
                return Tensor._make(a, _dtype(a))
            return _rebuild_container(s, build)

        return build(self._output)

    def compile(self) -> None:
        """Compile the graph now (a call compiles it on first use otherwise)."""
        from ..codegen.cpu import compile_graph
        from ..codegen.lower import UnsupportedError

        try:
            self._program = compile_graph(self.graph)
        except UnsupportedError as e:
            # as @jit runs such a function eagerly, the reference interpreter runs the graph
            warnings.warn(f"tracejit: exported {self.name} has no compiled form ({e}); it runs "
                          "in the interpreter", RuntimeWarning, stacklevel=2)
            self._interpret = True

    def _check_args(self, args: tuple[Any, ...]) -> None:
        want = self.inputs
        if len(args) != len(want):
            raise TypeError(f"exported {self.name} takes {len(want)} positional tensor "
                            f"argument(s) ({', '.join(s.name for s in want)}), got {len(args)}")
        for k, (a, s) in enumerate(zip(args, want)):
            what = f"exported {self.name}: argument {k} ({s.name})"
            if not isinstance(a, Tensor):
                raise TypeError(f"{what} must be a tensor, got a {type(a).__name__}")
            if a._dtype is not s.dtype:
                raise DTypeError(f"{what} must be {s.dtype.name}, got {a._dtype.name}; convert "
                                 f"it with .to({s.dtype!r})")
            if tuple(a._data.shape) != s.shape:
                raise ShapeError(f"{what} must have shape {list(s.shape)} as exported, got "
                                 f"{list(a._data.shape)}; an exported program runs the shapes "
                                 "it was exported with: export again with an example of this "
                                 "shape")
            if a.device.type != "cpu":
                raise ShapeError(f"{what} is on {a.device}; this program runs on cpu")

    # ---- saving ------------------------------------------------------------------------------
    def _encode(self) -> tuple[str, list[tuple[str, np.ndarray]]]:
        enc = Encoder(self.device)
        graph = enc.graph(self.graph)
        top = {
            "format": FORMAT,
            "version": fileformat.version_text(),
            "tracejit": __version__,
            "name": self.name,
            "device": self.device,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype.name}
                       for s in self.inputs],
            "input_args": list(self._input_args),
            "lifted": list(self._lifted),
            "output": self._output,
            "graph": graph,
        }
        try:
            text = json.dumps(top, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ExportError(f"export: {self.name}'s graph cannot be written as JSON ({e})") \
                from None
        return text, list(self._weights.items()) + list(enc.arrays.items())

    def save(self, f: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the export file (one safetensors file; docs/export.md). A path is written
        atomically: a reader never sees half a file."""
        text, tensors = self._encode()
        data = fileformat.pack(text, tensors)
        if hasattr(f, "write"):
            f.write(data)  # type: ignore[union-attr]
            return
        path = os.fspath(f)  # type: ignore[arg-type]
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                   prefix=os.path.basename(path) + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _dtype(a: np.ndarray) -> DType:
    from ..dtypes import from_numpy_dtype

    return from_numpy_dtype(a.dtype)


def _tensor(o: Any, v: Any) -> Tensor:
    d = v.type.dtype if isinstance(v, Value) else v.dtype
    arr = o if isinstance(o, np.ndarray) else np.asarray(o)
    if arr.dtype != d.np:
        arr = arr.astype(d.np)
    return Tensor._make(arr, d)


def _rebuild_container(s: OutSpec, build: Callable[[OutSpec], Any]) -> Any:
    kind, x = s
    if kind == "value":
        return x
    if kind == "tuple":
        return tuple(build(c) for c in x)
    if kind == "list":
        return [build(c) for c in x]
    if kind == "dict":
        return {k: build(c) for k, c in x}
    if kind == "namedtuple":
        name, fields, items = x
        return _namedtuple(name, tuple(fields))(*[build(c) for c in items])
    raise AssertionError(kind)


_NAMEDTUPLES: dict[tuple[str, tuple[str, ...]], type] = {}


def _namedtuple(name: str, fields: tuple[str, ...]) -> type:
    """A named tuple type with these fields (the defining class is not imported: its name
    and fields are what a caller reads)."""
    tp = _NAMEDTUPLES.get((name, fields))
    if tp is None:
        tp = _NAMEDTUPLES[(name, fields)] = collections.namedtuple(name, fields)  # type: ignore
    return tp


# ---- export and load -------------------------------------------------------------------------


def export(fn: Callable[..., Any], *example_args: Any) -> Exported:
    """Trace `fn` (a function or an nn.Module: its forward) on the example tensors into the
    optimised graph @jit compiles for them; returns an Exported to call, inspect or `save`.
    Raises ExportError for what a saved graph could not reproduce (graph breaks, Python
    branches on tensor values, in-place writes, random draws; see docs/export.md).

    >>> import tracejit as tj
    >>> lin = tj.nn.Linear(3, 2)
    >>> ex = tj.export(lin.eval(), tj.ones(4, 3))
    >>> ex.inputs, sorted(ex.weights)
    ((TensorSpec(name='input', shape=(4, 3), dtype=tracejit.float32),), ['bias', 'weight'])
    """
    ex = Exported(capture(fn, example_args))
    text, tensors = ex._encode()
    back = _decode(text, dict(tensors), "<export round trip>", None, fileformat.VERSION)
    if print_graph(back.graph) != ex.ir():  # an attribute the codec did not keep exactly
        raise ExportError(f"export: {ex.name}'s graph does not survive the JSON encoding "
                          "unchanged (a tracejit bug: please report it with the function)")
    return ex


def load_exported(f: str | os.PathLike[str] | IO[bytes], device: str | None = None) -> Exported:
    """Read a file `Exported.save` wrote and compile its graph; returns the Exported, a
    callable that runs it. Needs nothing of the Python that defined the function. Raises
    ExportError naming the problem for a truncated, tampered, foreign or newer-versioned
    file, an op this tracejit lacks, or a graph that does not verify."""
    if hasattr(f, "read"):
        data = f.read()  # type: ignore[union-attr]
        src = str(getattr(f, "name", "<stream>"))
    else:
        src = os.fspath(f)  # type: ignore[arg-type]
        with open(src, "rb") as fh:
            data = fh.read()
    text, tensors, version = fileformat.unpack(data, src)
    ex = _decode(text, tensors, src, device, version)
    ex.compile()
    return ex


def _decode(text: str, tensors: dict[str, np.ndarray], src: str, device: str | None,
            version: tuple[int, int]) -> Exported:
    try:
        top = _json(text)
    except (ValueError, TypeError, RecursionError) as e:
        raise ExportError(f"{src}: corrupted graph JSON: not valid JSON ({type(e).__name__}: "
                          f"{str(e)[:200]})") from None

    def fail(msg: str) -> ExportError:
        return ExportError(f"{src}: corrupted graph JSON: {msg}")

    if not isinstance(top, dict) or top.get("format") != FORMAT:
        raise fail(f"the top level must be an object with \"format\": \"{FORMAT}\"")
    missing = [k for k in _TOP if k not in top]
    if missing:
        raise fail(f"the top level lacks {', '.join(missing)}")
    file_dev = top["device"]
    if not isinstance(file_dev, str):
        raise fail("device must be a string")
    target = file_dev if device is None else str(device)
    if target.partition(":")[0] == "cuda":
        raise ExportError(f"{src}: loading for {target!r} needs tracejit's CUDA backend, which "
                          "this build does not have (tracejit.cuda.is_available() is False); "
                          "load it with device='cpu'")
    if target != file_dev:
        raise ExportError(f"{src}: the program was exported for {file_dev!r} and cannot be "
                          f"loaded for {target!r}; export it again on {target!r}")
    if target != "cpu":
        raise ExportError(f"{src}: unknown device {target!r}; this tracejit runs on 'cpu'")
    arrays = {k: a for k, a in tensors.items() if k.startswith(CONSTANT_PREFIX)}
    weights = {k: a for k, a in tensors.items() if not k.startswith(CONSTANT_PREFIX)}
    dec = Decoder(arrays, file_dev, src, strict=version <= fileformat.VERSION)
    g = dec.graph(top["graph"])
    unused = sorted(set(arrays) - dec.used)
    if unused:
        raise fail(f"the tensors {unused[:3]} are not read by the graph")
    try:
        verify(g)
    except Exception as e:  # VerifyError, or a crafted attribute that breaks a rule itself
        raise ExportError(f"{src}: the graph does not verify: {e}") from None
    c = Captured(
        name=_str(top["name"], "name", fail),
        graph=g,
        inputs=_input_specs(top["inputs"], fail),
        input_args=tuple(_ints(top["input_args"], "input_args", fail)),
        lifted=tuple(_strs(top["lifted"], "lifted", fail)),
        weights=weights,
        output=top["output"],
    )
    _check_bindings(c, fail)
    return Exported(c, file_dev)


def _str(x: Any, what: str, fail: Callable[[str], ExportError]) -> str:
    if not isinstance(x, str):
        raise fail(f"{what} must be a string")
    return x


def _strs(x: Any, what: str, fail: Callable[[str], ExportError]) -> list[str]:
    if not isinstance(x, list) or not all(isinstance(s, str) for s in x):
        raise fail(f"{what} must be a list of strings")
    return x


def _ints(x: Any, what: str, fail: Callable[[str], ExportError]) -> list[int]:
    if not isinstance(x, list) or not all(type(s) is int for s in x):
        raise fail(f"{what} must be a list of integers")
    return x


def _input_specs(x: Any, fail: Callable[[str], ExportError]) -> tuple[TensorSpec, ...]:
    from .graph_json import _DTYPES

    out = []
    for k, s in enumerate(x if isinstance(x, list) else [None]):
        if not (isinstance(s, dict) and set(s) == {"name", "shape", "dtype"}
                and isinstance(s["name"], str) and s["dtype"] in _DTYPES
                and isinstance(s["shape"], list)
                and all(type(n) is int and n >= 0 for n in s["shape"])):
            raise fail(f"input {k} must be {{\"name\", \"shape\", \"dtype\"}}")
        out.append(TensorSpec(s["name"], tuple(s["shape"]), _DTYPES[s["dtype"]]))
    return tuple(out)


def _check_bindings(c: Captured, fail: Callable[[str], ExportError]) -> None:
    """The file's specs agree with its graph: each graph input with the argument it binds,
    each lifted value with its weight, the output structure with the graph's outputs."""
    g = c.graph
    if len(c.input_args) != len(g.inputs) or len(c.lifted) != len(g.lifted):
        raise fail("input_args and lifted must name one argument per graph input and one "
                   "weight per lifted value")
    for v, i in zip(g.inputs, c.input_args):
        if not 0 <= i < len(c.inputs):
            raise fail(f"input_args names argument {i}, of {len(c.inputs)}")
        s = c.inputs[i]
        if (s.shape, s.dtype) != (v.type.shape, v.type.dtype):
            raise fail(f"argument {i} ({s}) does not match the graph input it binds, {v.type}")
    used = set(c.lifted)
    for v, n in zip(g.lifted, c.lifted):
        a = c.weights.get(n)
        if a is None:
            raise fail(f"the graph reads the weight {n!r}, which the file's tensors lack")
        if tuple(a.shape) != v.type.shape or a.dtype != v.type.dtype.np:
            raise fail(f"the weight {n!r} is {a.dtype}{list(a.shape)} but the graph reads "
                       f"{v.type}")

    def walk(s: Any, depth: int = 0) -> None:
        if depth > 100 or not isinstance(s, list) or len(s) != 2 or not isinstance(s[0], str):
            raise fail(f"unexpected output structure {str(s)[:60]!r}")
        kind, x = s
        if kind == "t":
            if type(x) is not int or not 0 <= x < len(g.outputs) or \
                    not isinstance(g.outputs[x], (Value, Const)):
                raise fail(f"the output structure names graph output {x!r:.20}")
        elif kind == "input":
            if type(x) is not int or not 0 <= x < len(c.inputs):
                raise fail(f"the output structure names argument {x!r:.20}")
        elif kind == "weight":
            if x not in c.weights:
                raise fail(f"the output structure names the weight {x!r:.60}, which the file "
                           "lacks")
            used.add(x)
        elif kind == "value":
            if not (x is None or type(x) in (bool, int, float, str)):
                raise fail(f"an output value must be None, a number or a string: {x!r:.40}")
        elif kind in ("tuple", "list") and isinstance(x, list):
            for y in x:
                walk(y, depth + 1)
        elif kind == "dict" and isinstance(x, list) and all(
                isinstance(kv, list) and len(kv) == 2 and type(kv[0]) in (str, int) for kv in x):
            for _, y in x:
                walk(y, depth + 1)
        elif kind == "namedtuple" and isinstance(x, list) and len(x) == 3 and \
                isinstance(x[0], str) and x[0].isidentifier() and \
                isinstance(x[1], list) and all(isinstance(f, str) and f.isidentifier()
                                               for f in x[1]) and \
                isinstance(x[2], list) and len(x[1]) == len(x[2]):
            try:
                _namedtuple(x[0], tuple(x[1]))
            except ValueError as e:  # a keyword, a duplicate or a leading underscore
                raise fail(f"output named tuple {x[0]}: {e}") from None
            for y in x[2]:
                walk(y, depth + 1)
        else:
            raise fail(f"unexpected output structure {str(s)[:60]!r}")

    walk(c.output)
    extra = sorted(set(c.weights) - used)
    if extra:
        raise fail(f"the tensors {extra[:3]} are neither weights the graph reads nor "
                   "constants")
