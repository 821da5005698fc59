"""Capture for ONNX export: run the function (or a Module's forward, in eval mode) once on the
example arguments under the jit's tracer, without gradients, and return the unfused IR graph
(dead code removed) with what its lifted tensors are. Sees both sides (tensors and the IR), as
trace/ does; self-contained, so that the ONNX writer needs no compiled program."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dispatch import STATE
from ..ir.graph import Graph, Value
from ..ir.verify import verify
from ..passes.dce import dce
from ..passes.regions import in_regions
from ..tensor import Tensor
from ..trace.sources import ArgSource
from ..trace.tracer import Tracer
from .errors import ExportError


@dataclass
class Captured:
    graph: Graph
    input_names: list[str]  # one per graph input
    lifted: list[tuple[Value, str, np.ndarray]]  # each lifted value, its name and its data
    outputs: list[Value]  # the function's tensor results, flattened in order
    effects: int  # how many tensors the function wrote in place (refused after conversion)


def _arg_names(fn: Any, n: int) -> list[str]:
    target = fn.forward if hasattr(fn, "forward") and hasattr(fn, "_parameters") else fn
    try:
        params = [p.name for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input_{i}" for i in range(n)]


def _lifted_names(fn: Any, args: Sequence[Any]) -> dict[int, str]:
    """id(tensor) -> its initializer's name: a Module's parameters and buffers as
    `named_parameters()` names them (`fc1.weight`); for a function, the names jit gives the
    tensors it lifts (modules and tensors among its globals and closure: `model_fc1_weight`)."""
    from ..jit import _tensor_names

    names = _tensor_names(fn, tuple(args))
    if hasattr(fn, "named_parameters") and hasattr(fn, "named_buffers"):
        names.update({id(t): n for n, t in fn.named_parameters()})
        names.update({id(t): n for n, t in fn.named_buffers()})
    return names


def _leaves(spec: Any, path: str, out: list[tuple[Any, str]]) -> None:
    kind, body = spec
    if kind in ("t", "p", "c"):
        out.append((spec, path))
    elif kind in ("tuple", "list"):
        for i, s in enumerate(body):
            _leaves(s, f"{path}[{i}]", out)
    elif kind == "dict":
        for k, s in body:
            _leaves(s, f"{path}[{k!r}]", out)
    elif kind == "namedtuple":
        for i, s in enumerate(body[1]):
            _leaves(s, f"{path}[{i}]", out)


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


def capture(fn: Callable, args: Sequence[Any]) -> Captured:
    from ..jit import JitFunction

    if isinstance(fn, JitFunction):  # a jitted function or module: export what it wraps
        fn = fn.fn
    if STATE.tracer is not None:
        raise ExportError("tracejit.onnx.export: called while a trace is recording (inside a "
                          "@jit function or a lazy replay); export from ordinary Python code")
    name = getattr(fn, "__name__", type(fn).__name__)
    tracer = Tracer(name)
    names = _arg_names(fn, len(args))
    tracer.add_inputs(list(args), names)
    out = _run(fn, args, tracer)
    result = tracer.finish(out)
    if result.breaks:
        raise ExportError("tracejit.onnx.export: the function cannot be captured as one graph: "
                          + "; ".join(map(str, result.breaks)))
    g = result.graph
    if g.checks:
        c = g.checks[0]
        raise ExportError(
            f"tracejit.onnx.export: the function branches on a tensor's value at {c.loc} "
            "(a Python `if`, `while` or bool() of a tensor), so the graph would hold only the "
            "path these example inputs took; write the branch with tracejit.cond (or the loop "
            "with tracejit.while_loop), which export as ONNX If and Loop")
    leaves: list[tuple[Any, str]] = []
    _leaves(result.out_spec, "result", leaves)
    by_source = {id(p.source): p.value for p in result.params}
    outputs: list[Value] = []
    for (kind, x), path in leaves:
        if kind == "t":
            v = g.outputs[x]
        elif kind == "p":
            v = by_source[id(x)]
        else:
            raise ExportError(f"tracejit.onnx.export: {path} of the function's result is "
                              f"{type(x).__name__}, not a tensor; ONNX outputs are tensors "
                              "(return only tensors)")
        assert isinstance(v, Value)
        outputs.append(v)
    if not outputs:
        raise ExportError("tracejit.onnx.export: the function returns no tensor")
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
    return Captured(g, input_names, lifted, outputs, effects)
