"""Capture for export: trace a function or nn.Module once on example arguments into the
optimised graph @jit would compile for them, and refuse what a saved graph cannot hold.

The graph is exactly the one a `jit(fn)` call with these arguments compiles under `no_grad`
(same tracer, same passes: an exported program has no backward), traced without changing the
caller's state (as `jit(fn).ir(...)` traces). A function that needs autograd to run (it calls
backward() or returns gradients) is traced with autograd, leaving out what @jit keeps for the
outputs' own backward. A graph is a snapshot of one call:
its lifted tensors become weights (copied now, so training the model later does not change
the export), and the Python values the trace read (module attributes, `training`, globals)
are baked in as they were. What would make the snapshot wrong is an ExportError naming it:
graph breaks, branches recorded by `bool()` of a tensor (the graph would hold one path),
in-place writes (effects: a training step, BatchNorm's running statistics in training mode),
random draws (the generator's offset is an effect), `.grad` reads and writes, tensors stored
into Python state, and non-tensor or repeated arguments.

The ONNX export's capture is here as well (`capture_unfused`, at the end): the graph before
fusion, traced in eval mode without gradients, with its lifted tensors named.

Sits beside jit.py (it drives a JitFunction's tracer) and above ir/ and trace/; codegen and
the file formats (tracejit/exporting/, tracejit/onnx/) are not its business.
"""

from __future__ import annotations

import gc
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .autograd import is_grad_enabled, no_grad
from .dispatch import STATE
from .dtypes import DType
from .ir.graph import Graph, Value
from .ir.verify import verify
from .passes import run_pipeline
from .passes.dce import dce
from .passes.regions import in_regions
from .tensor import Tensor
from .trace.sources import ArgSource, GradSource, RefSource, ScalarArgSource, ScalarSource
from .trace.tracer import Tracer


class ExportError(ValueError):
    """A function that cannot be exported as it is, or an export file that cannot be read
    (truncated, tampered with, from a newer tracejit, naming an unknown op). The message
    names what was wrong and how to fix it."""


class TensorSpec(NamedTuple):
    """What an exported program takes or returns at one position."""

    name: str
    shape: tuple[int, ...]
    dtype: DType

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype.short}[{','.join(map(str, self.shape))}]"


# The output structure, JSON-shaped (the file stores it as is):
#   ["t", k]  graph output k          ["input", i]  argument i itself    ["weight", name]
#   ["value", v]  a Python constant (None, bool, int, float, str)
#   ["tuple", [...]]  ["list", [...]]  ["dict", [[key, spec], ...]]
#   ["namedtuple", [type name, [field, ...], [spec, ...]]]
OutSpec = list[Any]


@dataclass
class Captured:
    name: str
    graph: Graph  # optimised and verified, no effects, no checks
    inputs: tuple[TensorSpec, ...]  # one per positional argument
    input_args: tuple[int, ...]  # graph.inputs[k] binds to argument input_args[k]
    lifted: tuple[str, ...]  # the weight each graph.lifted value reads, by name
    weights: dict[str, np.ndarray]  # copies taken at capture
    output: OutSpec


def capture(fn: Callable[..., Any], args: tuple[Any, ...], what: str = "export") -> Captured:
    """Trace `fn(*args)` (a Module: its forward) into its optimised graph; ExportError for
    what the graph could not reproduce. `what` names the caller in messages."""
    from .jit import JitFunction

    if isinstance(fn, JitFunction):
        fn = fn.fn
    if not callable(fn):
        raise ExportError(f"{what}: expected a function or an nn.Module, got a "
                          f"{type(fn).__name__}")
    name = getattr(fn, "__name__", None) or type(fn).__name__.lower()
    names = _arg_names(fn, len(args))
    _check_args(what, name, args, names)
    jf, entry = _trace(fn, tuple(args))
    head = f"{what}: cannot export {name}"
    store = _Weights(_weight_names(fn, args))
    _refuse(head, jf, entry, store.names)
    tr = entry.trace
    g = entry.graph if entry.backward is None else _without_backward(tr)
    lifted: list[str] = []
    input_args: list[int] = []
    for v, p in zip(g.params, tr.params):
        src = p.source
        if type(src) is ArgSource:
            input_args.append(src.index)
        elif isinstance(src, ScalarArgSource):  # (never: arguments are checked tensors)
            raise ExportError(f"{head}: argument {src.name} is a Python number")
        elif isinstance(src, GradSource):
            raise ExportError(f"{head}: it reads {src.describe()}; an exported program has "
                              "no gradients (export the forward)")
        elif isinstance(src, ScalarSource):  # a number read on every call: its value now
            lifted.append(store.add(v.name or "scalar", np.array(src.get([]), src.dtype.np)))
        elif isinstance(src, RefSource):
            lifted.append(store.tensor(src.obj, v.name))
        else:
            raise ExportError(f"{head}: it reads {src.describe()}, which an exported program "
                              "cannot find")
    output = _out_spec(tr.out_spec, head, store)
    inputs = tuple(TensorSpec(n, tuple(a.shape), a.dtype) for n, a in zip(names, args))
    return Captured(name, g, inputs, tuple(input_args), tuple(lifted), store.weights, output)


def _refuse(head: str, jf: Any, entry: Any, names: dict[int, str]) -> None:
    """ExportError for what the trace holds that a saved graph could not reproduce."""
    if entry.breaks:
        shown = "; ".join(f"{b.loc}: {b.reason}" for b in entry.breaks)
        raise ExportError(f"{head}: the trace met graph breaks ({shown}); an exported program "
                          "cannot run Python between its ops, so move that code out of the "
                          "function (or write data-dependent control flow with tracejit.cond, "
                          "while_loop, fori_loop or scan)")
    if not any(e is entry for es in jf._entries.values() for e in es):
        # (the notes say why jit keeps no entry: tensors stored into Python state)
        why = "; ".join(n.removeprefix("not cached: ").split(", so a call")[0]
                        for n in entry.notes) or "its trace cannot be reused"
        raise ExportError(f"{head}: {why}; an exported program cannot recreate Python state "
                          "(a cache, an optimizer's new state), so keep the function free of it")
    g, tr = entry.graph, entry.trace
    if g.checks:
        where = ", ".join(c.loc for c in g.checks)
        raise ExportError(f"{head}: it branches on a tensor's value in Python (bool() of a "
                          f"tensor at {where}), so its graph holds only the path these example "
                          "inputs took; write the branch as tracejit.cond(pred, true_fn, "
                          "false_fn, *operands) so that both paths are exported")
    if g.effects:
        raise ExportError(_effects_message(head, g, tr, names))
    if tr.grad_writes:
        raise ExportError(f"{head}: it assigns .grad ({tr.grad_writes[0][0].describe()}.grad: "
                          "backward() or zero_grad() inside, as a training step does); an "
                          "exported program computes outputs only (export the forward)")


def _trace(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, Any]:
    """A JitFunction of `fn` and its entry for `args`, traced under no_grad: an exported
    program has no backward. A function that needs autograd to run (a training step calling
    backward(), or one returning gradients) is traced with it instead, so that the checks
    after this say what is wrong with it, or export it."""
    from .jit import JitFunction, JitWarning

    with warnings.catch_warnings():
        # (a graph break warns as well: the ExportError made of it says the same, and more)
        warnings.simplefilter("ignore", JitWarning)
        jf = JitFunction(fn)
        if not is_grad_enabled():
            return jf, jf._entry_for(args, {})
        try:
            with no_grad():
                return jf, jf._entry_for(args, {})
        except Exception as e:
            first = e
        jf = JitFunction(fn)
        try:
            return jf, jf._entry_for(args, {})
        except Exception:
            raise first from None


def _without_backward(tr: Any) -> Graph:
    """The graph without what @jit adds for a backward (outputs that require grad get one):
    the values it saves are extra outputs after the function's own, which an exported
    program never returns. So the graph is the one a call under no_grad compiles."""
    from .jit import _spec_leaves

    used = [x for kind, x in _spec_leaves(tr.out_spec) if kind == "t"]
    g = tr.graph  # before the passes, with those outputs
    return verify(run_pipeline(g.replace(outputs=g.outputs[:max(used, default=-1) + 1])))


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _arg_names(fn: Any, n: int, other: str = "arg", varargs: bool = True) -> list[str]:
    """The names of n positional arguments of fn (a Module: its forward): its parameters',
    `*args` as args0, args1... (with `varargs`), then `other` numbered by position (tracejit's
    export says arg3, the ONNX one input_3)."""
    target = getattr(fn, "forward", fn) if hasattr(fn, "_parameters") else fn
    out: list[str] = []
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        params = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            out.append(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            if not varargs:
                break
            out += [f"{p.name}{k}" for k in range(n - len(out))]
    out += [f"{other}{k}" for k in range(len(out), n)]
    return out[:n]


def _check_args(what: str, name: str, args: tuple[Any, ...], names: list[str]) -> None:
    seen: dict[int, int] = {}
    for k, a in enumerate(args):
        if not isinstance(a, Tensor):
            raise ExportError(
                f"{what}: example argument {k} ({names[k]}) of {name} is {_a(type(a).__name__)}; "
                "an exported program takes tensors as its positional arguments (bake other "
                "values in, e.g. functools.partial(fn, option=...), or pass them as tensors)")
        j = seen.setdefault(id(a._data), k)
        if j != k:
            raise ExportError(
                f"{what}: example arguments {j} ({names[j]}) and {k} ({names[k]}) of {name} are "
                "the same tensor, so the trace reads one value for both; pass distinct tensors "
                "(x.clone()) or one argument")


def _effects_message(head: str, g: Graph, tr: Any, names: dict[int, str]) -> str:
    from .creation import Generator

    index = {v: k for k, v in enumerate(g.params)}
    # (on this error path only: every generator's state tensors; `type(o) is`, not
    # isinstance, which would ask weak proxies among the objects for their class)
    gens = {id(t) for o in gc.get_objects() if type(o) is Generator
            for t in (o._key, o._offset)}
    made = {o: n.loc for n in g.nodes for o in n.outs}
    for e in g.effects:
        src = tr.params[index[e.target]].source
        loc = made.get(e.source, "")
        at = f" at {loc}" if loc else ""
        if isinstance(src, RefSource) and id(src.obj) in gens:
            return (f"{head}: it draws random numbers{at} (dropout in training mode, rand, "
                    "randn, ...), which advances a generator's state on every call; exported "
                    "programs are deterministic: export the model in eval mode (model.eval()) "
                    "or draw the random tensors outside and pass them as arguments")
    e = g.effects[0]
    src = tr.params[index[e.target]].source
    loc = made.get(e.source, "")
    what = src.describe()
    if isinstance(src, RefSource) and id(src.obj) in names:
        what = f"the tensor {names[id(src.obj)]}"
    return (f"{head}: it writes in place into {what}"
            + (f" at {loc}" if loc else "") + " (an optimizer step, an in-place op on an "
            "argument, or a layer updating its running statistics in training mode); an "
            "exported program computes outputs from its inputs and weights and changes "
            "nothing: export an inference forward (model.eval(), no in-place writes to "
            "arguments or weights)")


def _weight_names(fn: Any, args: tuple[Any, ...]) -> dict[int, str]:
    """Dotted names for the tensors a function may lift: a module's state-dict names (its
    own, or of the module it is bound to), then modules and tensors among its globals and
    closure, prefixed by the variable's name."""
    names: dict[int, str] = {}

    def add(obj: Any, prefix: str) -> None:
        if isinstance(obj, Tensor):
            names.setdefault(id(obj), prefix)
        elif hasattr(obj, "named_parameters") and hasattr(obj, "named_buffers"):
            for n, t in list(obj.named_parameters()) + list(obj.named_buffers()):
                if t is not None:
                    names.setdefault(id(t), f"{prefix}.{n}" if prefix else n)

    add(getattr(fn, "__self__", fn), "")
    code_fn = getattr(fn, "__func__", fn)
    code = getattr(code_fn, "__code__", None)
    if code is not None:
        glb = getattr(code_fn, "__globals__", {})
        for n in code.co_names:
            if n in glb:
                add(glb[n], n)
        for n, cell in zip(code.co_freevars, getattr(code_fn, "__closure__", None) or ()):
            try:
                add(cell.cell_contents, n)
            except ValueError:  # an empty cell
                pass
    return names


_RESERVED = "__"  # names the file keeps for itself (__metadata__, __constant__.k)


class _Weights:
    """The weights being collected: copies of the lifted tensors (one per tensor object) and
    numbers, under unique names (`names`: the preferred name of each tensor, by id)."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.weights: dict[str, np.ndarray] = {}
        self._of: dict[int, str] = {}

    def add(self, name: str, arr: np.ndarray) -> str:
        base = (name.lstrip("_") if name.startswith(_RESERVED) else name) or "weight"
        name, k = base, 1
        while name in self.weights:
            name, k = f"{base}.{k}", k + 1
        self.weights[name] = arr
        return name

    def tensor(self, t: Tensor, hint: str) -> str:
        found = self._of.get(id(t))
        if found is None:
            arr = np.array(t._data, copy=True, order="C")  # a snapshot, contiguous
            found = self._of[id(t)] = self.add(self.names.get(id(t)) or hint, arr)
        return found


def _out_spec(spec: Any, head: str, store: _Weights) -> OutSpec:
    kind, x = spec

    def sub(s: Any) -> OutSpec:
        return _out_spec(s, head, store)

    if kind == "t":
        return ["t", x]
    if kind == "p":
        if type(x) is ArgSource:
            return ["input", x.index]
        if isinstance(x, RefSource):
            return ["weight", store.tensor(x.obj, x.name)]
        raise ExportError(f"{head}: it returns {x.describe()}, which an exported program "
                          "cannot find")
    if kind == "c":
        if x is None or type(x) in (bool, int, float, str):
            return ["value", x]
        raise ExportError(f"{head}: it returns {_a(type(x).__name__)} ({x!r:.60}); an exported "
                          "program returns tensors, and None, numbers and strings in tuples, "
                          "lists, dicts and named tuples")
    if kind in ("tuple", "list"):
        return [kind, [sub(s) for s in x]]
    if kind == "dict":
        for k, _ in x:
            if type(k) not in (str, int):
                raise ExportError(f"{head}: it returns a dict with a {type(k).__name__} key "
                                  f"({k!r:.60}); an exported program's dict keys are str or int")
        return ["dict", [[k, sub(s)] for k, s in x]]
    if kind == "namedtuple":
        tp, items = x
        return ["namedtuple", [tp.__name__, list(tp._fields), [sub(s) for s in items]]]
    raise AssertionError(kind)


# ---- the unfused graph, for the ONNX export -------------------------------------------------


@dataclass
class Unfused:
    graph: Graph
    input_names: list[str]  # one per graph input
    lifted: list[tuple[Value, str, np.ndarray]]  # each lifted value, its name and its data
    outputs: list[Value]  # the function's tensor results, flattened in order
    effects: int  # how many tensors the function wrote in place (refused after conversion)


def _lifted_names(fn: Any, args: Sequence[Any]) -> dict[int, str]:
    """id(tensor) -> its initializer's name: a Module's parameters and buffers as
    `named_parameters()` names them (`fc1.weight`); for a function, the names jit gives the
    tensors it lifts (modules and tensors among its globals and closure: `model_fc1_weight`)."""
    from .jit import _tensor_names

    names = _tensor_names(fn, tuple(args))
    if hasattr(fn, "named_parameters") and hasattr(fn, "named_buffers"):
        names.update({id(t): n for n, t in fn.named_parameters()})
        names.update({id(t): n for n, t in fn.named_buffers()})
    return names


def _run(fn: Callable, args: Sequence[Any], tracer: Tracer) -> Any:
    modes = [(m, m.training) for m in fn.modules()] if hasattr(fn, "modules") else []
    for m, _ in modes:
        m.training = False  # exported in eval mode, as torch.onnx.export does
    grad, STATE.grad_enabled = STATE.grad_enabled, False
    STATE.tracer = tracer
    try:
        return fn(*args)
    finally:
        STATE.tracer = None
        STATE.grad_enabled = grad
        for m, mode in modes:
            m.training = mode


def capture_unfused(fn: Callable, args: Sequence[Any], error: type[Exception]) -> Unfused:
    """For the ONNX export (tracejit/onnx/, which raises its own `error` class): run the
    function (a Module's forward, in eval mode) once on the example arguments under the jit's
    tracer without gradients, and return the unfused IR graph (dead code removed) with its
    lifted tensors, so the ONNX writer needs no compiled program."""
    from .jit import JitFunction, spec_paths

    if isinstance(fn, JitFunction):  # a jitted function or module: export what it wraps
        fn = fn.fn
    if STATE.tracer is not None:
        raise error("tracejit.onnx.export: called while a trace is recording (inside a "
                          "@jit function or a lazy replay); export from ordinary Python code")
    name = getattr(fn, "__name__", type(fn).__name__)
    tracer = Tracer(name)
    names = _arg_names(fn, len(args), "input_", varargs=False)
    tracer.add_inputs(list(args), names)
    out = _run(fn, args, tracer)
    result = tracer.finish(out)
    if result.breaks:
        raise error("tracejit.onnx.export: the function cannot be captured as one graph: "
                          + "; ".join(map(str, result.breaks)))
    g = result.graph
    if g.checks:
        c = g.checks[0]
        raise error(
            f"tracejit.onnx.export: the function branches on a tensor's value at {c.loc} "
            "(a Python `if`, `while` or bool() of a tensor), so the graph would hold only the "
            "path these example inputs took; write the branch with tracejit.cond (or the loop "
            "with tracejit.while_loop), which export as ONNX If and Loop")
    leaves = [(s, path) for s, path in spec_paths(result.out_spec) if s[0] in ("t", "p", "c")]
    by_source = {id(p.source): p.value for p in result.params}
    outputs: list[Value] = []
    for (kind, x), path in leaves:
        if kind == "t":
            v = g.outputs[x]
        elif kind == "p":
            v = by_source[id(x)]
        else:
            raise error(f"tracejit.onnx.export: {path} of the function's result is "
                              f"{type(x).__name__}, not a tensor; ONNX outputs are tensors "
                              "(return only tensors)")
        assert isinstance(v, Value)
        outputs.append(v)
    if not outputs:
        raise error("tracejit.onnx.export: the function returns no tensor")
    effects = len(g.effects)
    g = g.replace(outputs=tuple(outputs), checks=(), effects=())
    g = in_regions(dce, dce(g))
    verify(g)
    known = _lifted_names(fn, args)
    lifted, used = [], set(names)
    for k, p in enumerate(q for q in result.params if not isinstance(q.source, ArgSource)):
        t = p.tensor
        data = t._data if isinstance(t, Tensor) else np.asarray(t)
        n = known.get(id(t), f"const_{k}")
        while n in used:  # (two tensors of one readable name, or a name an input has)
            n = f"{n}_{k}"
        used.add(n)
        lifted.append((p.value, n, np.asarray(data)))
    input_names = [names[p.source.index] for p in result.params
                   if isinstance(p.source, ArgSource)]
    return Unfused(g, input_names, lifted, outputs, effects)
