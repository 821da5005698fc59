"""Implementations of a pure function of arrays (gelu, softmax, layernorm, dispatch): each
library's version of the function, wrapped into Cases the same way for every workload."""

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

    return Case(run, lambda: [to_numpy(last[0])])


def impls(names: tuple[str, ...], tracejit: Callable[[Any], Fn], numpy: Fn,
          torch: Callable[[Any], Fn], jax: Callable[[Any], Fn]) -> dict[str, Factory]:
    """Factories for each implementation. `names` are the input keys passed, in order, to the
    function; `tracejit`, `torch`, `jax` take the library module and return the function."""

    def arrays(inp: Inputs) -> list[np.ndarray]:
        return [inp[n] for n in names]

    def tj_eager(inp: Inputs) -> Case:
        tj = peers.tracejit()
        return _case([peers.tj_tensor(tj, a) for a in arrays(inp)], tracejit(tj),
                     lambda t: t.numpy())

    def tj_jit(inp: Inputs) -> Case:
        tj = peers.tracejit_jit()
        jf = tj.jit(tracejit(tj))
        case = _case([peers.tj_tensor(tj, a) for a in arrays(inp)], jf, lambda t: t.numpy())
        # trace, then compile (a pure function: warming does not change what the check sees),
        # so that the checked result is the compiled code's
        case.jit = JitProbe(jf)
        warm(case.jit, case.run)
        return case

    def np_impl(inp: Inputs) -> Case:
        return _case(arrays(inp), numpy, np.asarray)

    def th_eager(inp: Inputs) -> Case:
        th = peers.torch()
        return _case([peers.torch_tensor(th, a) for a in arrays(inp)], torch(th),
                     lambda t: t.numpy())

    def th_compile(inp: Inputs) -> Case:
        th = peers.torch_compile()
        return _case([peers.torch_tensor(th, a) for a in arrays(inp)], th.compile(torch(th)),
                     lambda t: t.numpy())

    def jax_impl(inp: Inputs) -> Case:
        jx = peers.jax()
        return _case([jx.numpy.asarray(a) for a in arrays(inp)], jx.jit(jax(jx)), np.asarray,
                     sync=lambda r: r.block_until_ready())

    return {"tracejit-jit": tj_jit, "tracejit-eager": tj_eager, "numpy": np_impl,
            "torch": th_eager, "torch-compile": th_compile, "jax": jax_impl}
