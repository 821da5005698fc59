"""Export to ONNX: `tracejit.onnx.export(fn_or_module, example_args, path)` traces the function
(or a Module's forward, in eval mode) once on the example arguments and writes an ONNX model
(opset 18) that onnxruntime runs with tracejit's results, tracejit.cond as If and while_loop,
fori_loop and scan as Loop. Needs the optional `onnx` package (`pip install 'tracejit[onnx]'`),
imported only when an export runs. See docs/onnx.md.

>>> import os, tempfile, pytest
>>> _ = pytest.importorskip("onnx")
>>> import tracejit as torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
>>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
>>> proto = torch.onnx.export(model, (torch.randn(2, 4),), path)
>>> [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
(['input'], ['output'])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ExportError, UnsupportedOpError

OPSET = 18  # ReduceMax/Min/Prod take axes as an input from 18; onnxruntime >= 1.14 runs it
IR_VERSION = 8  # the IR version of opset 18 (onnx 1.13), which every onnxruntime since reads

__all__ = ["export", "ExportError", "UnsupportedOpError", "OPSET", "supported_ops"]


def _need_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("tracejit.onnx needs the onnx package, which is an optional extra of "
                          "tracejit: pip install 'tracejit[onnx]' (and onnxruntime to run the "
                          "model)") from None
    return onnx


def supported_ops() -> list[str]:
    """The tracejit ops that have an ONNX mapping (table.py and control.py), sorted."""
    from .control import CONTROL
    from .table import RULES

    return sorted({*RULES, *CONTROL})


def export(fn: Callable, example_args: Any, path: str | os.PathLike | None = None, *,
           input_names: Sequence[str] | None = None,
           output_names: Sequence[str] | None = None) -> Any:
    """Trace `fn` (a function or an nn.Module) on `example_args` (a tuple of arguments, or one
    tensor) and write the ONNX model to `path` (when given); returns the onnx.ModelProto.

    Tensor arguments become the model's inputs (named after the function's parameters unless
    `input_names` says otherwise), with the example's shapes and dtypes fixed; other arguments
    are baked in as the trace saw them. A Module's parameters and buffers, and any other
    tensor the function reads, become initializers (named as in `named_parameters()`). The
    results, flattened, are the outputs (`output`, or `output_0`, `output_1`...)."""
    onnx = _need_onnx()
    from ..capture import capture_unfused
    from .builder import Builder, onnx_type
    from .convert import emit_nodes

    args = tuple(example_args) if isinstance(example_args, (tuple, list)) else (example_args,)
    cap = capture_unfused(fn, args, ExportError)
    names = list(input_names) if input_names is not None else cap.input_names
    if len(names) != len(cap.input_names):
        raise ExportError(f"tracejit.onnx.export: input_names has {len(names)} names for "
                          f"{len(cap.input_names)} tensor inputs ({', '.join(cap.input_names)})")
    k = len(cap.outputs)
    outs = list(output_names) if output_names is not None else \
        (["output"] if k == 1 else [f"output_{i}" for i in range(k)])
    if len(outs) != k:
        raise ExportError(f"tracejit.onnx.export: output_names has {len(outs)} names for the "
                          f"function's {k} tensor results")
    user = names + [n for _, n, _ in cap.lifted] + outs
    if len(set(user)) != len(user):
        dup = sorted({n for n in user if user.count(n) > 1})
        raise ExportError(f"tracejit.onnx.export: the names {dup} are used twice among the "
                          "inputs, initializers and outputs; pass distinct input_names and "
                          "output_names")
    b = Builder(taken=set(user))
    env: dict[Any, str] = {}
    inputs = []
    for v, n in zip(cap.graph.inputs, names):
        env[v] = n
        inputs.append(b.value_info(n, v.type.shape, v.type.dtype))
    inits = []
    for v, n, data in cap.lifted:
        env[v] = n
        inits.append(onnx.numpy_helper.from_array(data.astype(v.type.dtype.np, copy=False), n))
    emit_nodes(b, cap.graph.nodes, env)  # (an op without a mapping raises here, at its line)
    if cap.effects:
        raise ExportError(
            f"tracejit.onnx.export: the function writes {cap.effects} tensor(s) it did not "
            "create in place (an optimizer step, a random generator's state, a running "
            "statistic, x.add_(...) on an argument); an ONNX model has no state: export a "
            "function that only computes its results, with its modules in eval mode")
    infos = []
    for v, n in zip(cap.outputs, outs):
        b.op_into("Identity", [env[v]], [n])
        infos.append(onnx.helper.make_tensor_value_info(n, onnx_type(v.type.dtype),
                                                        list(v.type.shape)))
    graph = b.graph(cap.graph.name, inputs, infos, inits)
    from .. import __version__

    model = onnx.helper.make_model(graph, producer_name="tracejit", producer_version=__version__,
                                   ir_version=IR_VERSION,
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model
