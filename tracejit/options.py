"""torch's call options that do not change what a CPU tensor is: `layout` (only strided
exists), `pin_memory` (page-locked memory needs an accelerator), `memory_format` (tensors are
row-major: contiguous_format and preserve_format) and `out=` on the functions whose own code
does not take it. `with_options` adds them to a public function's signature, checks their
values and strips them before the function runs, so signatures match torch's
(tests/test_signatures.py) without touching the functions library code calls."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .errors import located


class layout:  # noqa: N801 - torch's name
    """torch.layout: how a tensor's elements are stored. tracejit has one, `strided`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"tracejit.{self.name}"


class memory_format:  # noqa: N801 - torch's name
    """torch.memory_format: the order of a tensor's elements in memory."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"tracejit.{self.name}"


strided = layout("strided")
contiguous_format = memory_format("contiguous_format")
preserve_format = memory_format("preserve_format")
channels_last = memory_format("channels_last")
channels_last_3d = memory_format("channels_last_3d")

OPTIONS = ("layout", "pin_memory", "memory_format", "out")
_DEFAULTS = {"layout": None, "pin_memory": False, "memory_format": None, "out": None}


def check_options(name: str, layout: Any = None, pin_memory: bool = False,
                  memory_format: Any = None) -> None:
    """Raise for the values tracejit cannot honour, naming the argument and what works."""
    if layout is not None and layout is not strided:
        raise RuntimeError(located(f"{name}: layout={layout!r} is not supported: tracejit "
                                   "tensors are dense (tracejit.strided); drop layout= or pass "
                                   "tracejit.strided"))
    if pin_memory:
        raise RuntimeError(located(f"{name}: pin_memory=True needs an accelerator (pinned host "
                                   "memory is for copies to a GPU), and tracejit runs on the "
                                   "CPU; drop pin_memory= (torch raises too without one)"))
    if memory_format is not None and memory_format not in (contiguous_format, preserve_format):
        raise RuntimeError(located(
            f"{name}: memory_format={memory_format!r} is not supported: tracejit tensors are "
            "row-major; pass tracejit.contiguous_format or tracejit.preserve_format, or drop "
            "memory_format="))


def with_options(fn: Callable, name: str, *options: str, positional: tuple[str, ...] = (),
                 method: bool = False) -> Callable:
    """fn with torch's keyword options added (each one of OPTIONS), checked, then stripped;
    `out` writes the result into the given tensor. `positional`: the options torch takes by
    position after fn's own parameters (F.normalize's out, Tensor.float's memory_format)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    var_kw = [p for p in params if p.kind is p.VAR_KEYWORD]
    params = [p for p in params if p.kind is not p.VAR_KEYWORD]
    for opt in options:
        if opt in sig.parameters:
            raise AssertionError(f"{name} already takes {opt}")
        kind = (inspect.Parameter.POSITIONAL_OR_KEYWORD if opt in positional
                else inspect.Parameter.KEYWORD_ONLY)
        if kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            at = 1 + max((i for i, p in enumerate(params) if p.kind is p.POSITIONAL_OR_KEYWORD),
                         default=-1)
            params.insert(at, inspect.Parameter(opt, kind, default=_DEFAULTS[opt]))
        else:
            params.append(inspect.Parameter(opt, kind, default=_DEFAULTS[opt]))
    n_positional = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in sig.parameters.values())
    where = f"Tensor.{name}" if method else name

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given: dict[str, Any] = {}
        if positional and len(args) > n_positional:
            extra, args = args[n_positional:], args[:n_positional]
            if len(extra) > len(positional):
                raise TypeError(located(f"{where}() takes at most "
                                        f"{n_positional + len(positional)} positional "
                                        f"arguments, got {len(args) + len(extra)}"))
            given.update(zip(positional, extra))
        if kwargs:
            given.update({k: kwargs.pop(k) for k in options if k in kwargs})
        out = given.pop("out", None)
        if given:
            check_options(where, **given)
        result = fn(*args, **kwargs)
        if out is None:
            return result
        from .functional import _write_out

        return _write_out(name, out, result)

    wrapper.__signature__ = sig.replace(parameters=params + var_kw)  # type: ignore[attr-defined]
    return wrapper


# what each public function takes beyond its own code's parameters (torch's signatures)
_FACTORY = ("layout", "pin_memory", "out")
_LIKE = ("layout", "pin_memory", "memory_format", "out")
FUNCTIONS: dict[str, tuple[str, ...]] = {
    **{n: _FACTORY for n in ("zeros", "ones", "full", "arange", "eye", "linspace", "rand",
                             "randn", "randint", "randperm")},
    "empty": _FACTORY + ("memory_format",),
    **{n: _LIKE for n in ("zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
                          "randn_like")},
    "tensor": ("pin_memory",),
    "clone": ("memory_format", "out"),
    **{n: ("out",) for n in ("mean", "logsumexp", "softmax", "log_softmax", "std", "var",
                             "isnan", "isinf", "nonzero", "argsort", "scatter_add", "bernoulli",
                             "multinomial", "addmm")},
}
NN_FUNCTIONS: dict[str, tuple[str, ...]] = {n: ("out",) for n in ("gelu", "linear", "softplus",
                                                                  "avg_pool2d")}
METHODS: dict[str, tuple[str, ...]] = {
    **{n: ("memory_format",) for n in ("clone", "contiguous", "float", "double", "half", "int",
                                       "long", "bool", "is_contiguous", "to")},
    "new_full": ("layout", "pin_memory"),
}


def install(namespace: dict[str, Any], nn_functional: Any, tensor_cls: Any) -> None:
    """Replace the public functions and methods above by their with_options forms (once, at
    import: library code keeps calling the plain ones)."""
    for name, opts in FUNCTIONS.items():
        namespace[name] = with_options(namespace[name], name, *opts)
    for name, opts in NN_FUNCTIONS.items():
        setattr(nn_functional, name, with_options(getattr(nn_functional, name), name, *opts))
    nn_functional.normalize = with_options(nn_functional.normalize, "normalize", "out",
                                           positional=("out",))
    for name, opts in METHODS.items():
        setattr(tensor_cls, name, with_options(getattr(tensor_cls, name), name, *opts,
                                               method=True))
