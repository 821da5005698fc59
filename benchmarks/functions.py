"""Implementations of a pure function of arrays (gelu, softmax, layernorm, dispatch, and the
backward workloads softmax-xent-bwd and layernorm-bwd, whose functions return gradients): each
library's version of the function, wrapped into Cases the same way for every workload. A
function returns one array or a tuple of them (the outputs the check compares, in the
reference's order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import peers
from .core import Case, Factory, Inputs
from .jitprobe import JitProbe, warm

Fn = Callable[..., Any]


def _case(args: list[Any], fn: Fn, to_numpy: Callable[[Any], np.ndarray],
          sync: Callable[[Any], Any] = lambda r: r) -> Case:
    last: list[Any] = [None]

    def run() -> Any:
        last[0] = sync(fn(*args))
        return last[0]

    def output() -> list[np.ndarray]:
        r = last[0]
        return [to_numpy(a) for a in r] if isinstance(r, (tuple, list)) else [to_numpy(r)]

    return Case(run, output)


def impls(names: tuple[str, ...], tracejit: Callable[[Any], Fn], numpy: Fn,
          torch: Callable[[Any], Fn], jax: Callable[[Any], Fn], grad: tuple[str, ...] = (),
          torch_compile: Callable[[Any], Fn] | None = None) -> dict[str, Factory]:
    """Factories for each implementation. `names` are the input keys passed, in order, to the
    function; `tracejit`, `torch`, `jax` take the library module and return the function.
    `grad`: the inputs that are tracejit and torch tensors requiring grad (leaves the function
    differentiates with autograd). `torch_compile` takes torch and returns the function the
    torch-compile column calls (default `torch.compile` of `torch`'s; the backward workloads
    compile the forward and leave `torch.autograd.grad` outside, where it runs the backward
    graph AOTAutograd compiled, instead of a graph break inside)."""

    def arrays(inp: Inputs) -> list[np.ndarray]:
        return [inp[n] for n in names]

    def tj_args(tj: Any, inp: Inputs) -> list[Any]:
        return [peers.tj_tensor(tj, inp[n], n in grad) for n in names]

    def th_args(th: Any, inp: Inputs) -> list[Any]:
        return [peers.torch_tensor(th, inp[n], n in grad) for n in names]

    def tj_eager(inp: Inputs) -> Case:
        tj = peers.tracejit()
        return _case(tj_args(tj, inp), tracejit(tj), lambda t: t.numpy())

    def tj_jit(inp: Inputs) -> Case:
        tj = peers.tracejit_jit()
        jf = tj.jit(tracejit(tj))
        case = _case(tj_args(tj, inp), jf, lambda t: t.numpy())
        # trace, then compile (a pure function: warming does not change what the check sees),
        # so that the checked result is the compiled code's
        case.jit = JitProbe(jf)
        warm(case.jit, case.run)
        return case

    def np_impl(inp: Inputs) -> Case:
        return _case(arrays(inp), numpy, np.asarray)

    def th_eager(inp: Inputs) -> Case:
        th = peers.torch()
        return _case(th_args(th, inp), torch(th), lambda t: t.numpy())

    def th_compile(inp: Inputs) -> Case:
        th = peers.torch_compile()
        fn = torch_compile(th) if torch_compile is not None else th.compile(torch(th))
        return _case(th_args(th, inp), fn, lambda t: t.numpy())

    def jax_impl(inp: Inputs) -> Case:
        jx = peers.jax()
        return _case([jx.numpy.asarray(a) for a in arrays(inp)], jx.jit(jax(jx)), np.asarray,
                     sync=jx.block_until_ready)  # an array or a tuple of them

    return {"tracejit-jit": tj_jit, "tracejit-eager": tj_eager, "numpy": np_impl,
            "torch": th_eager, "torch-compile": th_compile, "jax": jax_impl}
