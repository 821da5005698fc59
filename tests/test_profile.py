"""step.profile(): the table lists every kernel and BLAS call of the compiled program with
shares that sum to the whole call, and the profiled calls run as real calls would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn


def _setup() -> tuple[Any, Any, Any]:
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = tj.optim.Adam(model.parameters(), lr=0.01)

    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


def test_profile_lists_every_kernel_and_blas_call_and_shares_sum_to_the_call(
        capsys: pytest.CaptureFixture[str]) -> None:
    _, _, step = _setup()
    jf = tj.jit(step)
    x, y = tj.randn(5, 3), tj.randn(5, 2)
    for _ in range(3):
        jf(x, y)
    prof = jf.profile(x, y, calls=3)
    out = capsys.readouterr().out
    entry = jf._entry_for((x, y), {})
    kernels = entry.program.kernels
    assert kernels and set(prof.kernels()) == set(kernels)
    for name in kernels:
        assert name in out
    matmuls = [n for n in entry.graph.nodes if n.op.name == "matmul"]
    assert len([r for r in prof.rows if r.kind == "BLAS"]) == len(matmuls)
    assert sum(prof.share(r) for r in prof.rows) == pytest.approx(1.0)
    assert all(r.seconds >= 0 for r in prof.rows)
    assert prof.calls == 3 and prof.total > 0
    assert "total" in out and "100.0%" in out
    kernel_rows = [r for r in prof.rows if r.kind == "kernel"]
    assert all(r.bytes > 0 for r in kernel_rows)
    assert jf.cache_info().traces == 2  # (Adam's state: traced twice, as any first calls)


def test_profiled_calls_train_as_calls_do() -> None:
    model, _, step = _setup()
    ref_model, _, ref_step = _setup()
    jf, ref = tj.jit(step), tj.jit(ref_step)
    x, y = tj.randn(5, 3), tj.randn(5, 2)
    for _ in range(3):
        jf(x, y)
        ref(x, y)
    jf.profile(x, y, calls=4, show=False)
    for _ in range(5):  # the warm-up call and the four profiled ones
        ref(x, y)
    np.testing.assert_allclose(jf(x, y).item(), ref(x, y).item(), rtol=1e-6)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6)


def test_profile_of_unseen_inputs_traces_and_compiles_them() -> None:
    jf = tj.jit(lambda a: (a * 2 + 1).sum())
    prof = jf.profile(tj.ones(4), calls=2, show=False)
    assert prof.kernels() and "total" in str(prof)
    assert repr(prof).startswith("<Profile")
