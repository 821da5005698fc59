"""Planned memory: a steady-state compiled training step allocates only the arrays it returns
(the loss and the new gradients). Counted over 100 steps: NumPy's allocations through a counting
memory handler, Numba's through its runtime's statistics (less the one record Numba makes to
unbox each array argument of a kernel call, counted by wrapping the driver's kernels)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.testing import count_allocations

STEPS = 100


def test_count_allocations_counts_numpy_and_numba_arrays() -> None:
    @numba.njit(cache=False)
    def scratch(n: int) -> float:
        a = np.ones(n)
        return a.sum()

    scratch(4)
    with count_allocations() as n:
        a, b = np.empty(1000), np.zeros((2, 3))
        scratch(4)
    assert (n.numpy, n.numpy_bytes, n.numba) == (2, 8048, 1)
    del a, b


@contextmanager
def _unboxed(fn: Any) -> Iterator[list[int]]:
    """Counts the array arguments of every njit call the driver `fn` makes (Numba allocates a
    record for each while it unboxes it), by wrapping the dispatchers its module calls."""
    glb = fn.__globals__
    count = [0]
    saved = {k: v for k, v in glb.items() if isinstance(v, numba.core.dispatcher.Dispatcher)}

    def wrap(d: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            count[0] += sum(isinstance(a, np.ndarray) for a in args)
            return d(*args, **kwargs)
        return call

    glb.update({k: wrap(v) for k, v in saved.items()})
    try:
        yield count
    finally:
        glb.update(saved)


def _returned_arrays(out: Any, model: Any) -> int:
    """The loss, and each parameter's new .grad (zero_grad() set them to None)."""
    return 1 + sum(p.grad is not None for p in model.parameters())


def _mlp_step(loss_fn: Any, classes: bool) -> tuple[Any, Any, Any, Any]:
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 3))
    opt = tj.optim.Adam(model.parameters(), lr=0.01)

    def step(x: Any, y: Any) -> Any:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    x = tj.randn(32, 6)
    y = tj.randint(0, 3, (32,)) if classes else tj.randn(32, 3)
    return model, tj.jit(step), x, y


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_a_steady_state_training_step_allocates_only_what_it_returns(loss: str) -> None:
    loss_fn = nn.MSELoss() if loss == "mse" else nn.CrossEntropyLoss()
    model, step, x, y = _mlp_step(loss_fn, loss != "mse")
    for _ in range(4):  # traced (twice: Adam makes its state), compiled, warm
        out = step(x, y)
    entry = step._entry_for((x, y), {})
    assert entry.program is not None and not entry.program.native
    with _unboxed(entry.program.fn) as unboxed, count_allocations() as n:
        for _ in range(STEPS):
            out = step(x, y)
    assert step.cache_info().traces == 2
    assert n.numpy == STEPS * _returned_arrays(out, model), n
    assert n.numba - unboxed[0] == 0, (n, unboxed)
