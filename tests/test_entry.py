"""runtime/entry.py's generated per-entry functions (guards as one expression, the gather as
one list, the effects' version bumps and .grad writes as statements) agree with the guards'
and sources' own methods."""

from __future__ import annotations

from typing import Any

import numpy as np

import tracejit as tj
from tracejit import nn


def _adam_step() -> tuple[Any, Any, Any, Any, Any]:
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = tj.optim.Adam(model.parameters(), lr=0.01)

    def step(x: Any, y: Any) -> Any:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    jf = tj.jit(step)
    x, y = tj.randn(5, 3), tj.randn(5, 2)
    for _ in range(3):
        jf(x, y)
    return model, opt, jf, x, y


def _flat(jf: Any, *args: Any) -> list[Any]:
    flat: list[Any] = []
    jf._flatten_args(args, {}, flat, [], [True])
    return flat


def test_generated_gather_is_the_sources_gather() -> None:
    _, _, jf, x, y = _adam_step()
    e = jf._entry_for((x, y), {})
    flat = _flat(jf, x, y)
    fast = e._gather_fn(flat, {})
    slow = e._gather_slow(flat, {})
    assert len(fast) == len(slow) == len(e.trace.params)
    for a, b in zip(fast, slow):
        if a.ndim == 0:  # numbers: fresh 0-d arrays of the same value
            assert a.dtype == b.dtype and a == b
        else:
            assert a is b
    assert any(a.ndim == 0 for a in fast)  # (the learning rate)


def test_generated_guards_fail_where_a_guard_fails_and_name_it() -> None:
    model, opt, jf, x, y = _adam_step()
    e = jf._entry_for((x, y), {})
    flat = _flat(jf, x, y)
    assert e._all_hold(flat) and e.guards_hold(flat) is None
    opt.param_groups[0]["amsgrad"] = True  # a value the trace read: a guard
    failed = e.guards_hold(flat)
    assert not e._all_hold(flat) and failed is not None and "amsgrad" in failed.describe()
    opt.param_groups[0]["amsgrad"] = False
    assert e.guards_hold(flat) is None
    model[0].weight = nn.Parameter(tj.randn(4, 3))  # a module attribute: another guard
    assert not e._all_hold(flat) and e.guards_hold(flat) is not None


def test_compiled_calls_bump_versions_and_write_grads() -> None:
    model, _, jf, x, y = _adam_step()
    w = model[0].weight
    v0 = w._version.v
    g0 = w.grad
    jf(x, y)
    assert w._version.v == v0 + 1
    assert w.grad is not None and w.grad is not g0
    np.testing.assert_equal(np.isfinite(w.grad.numpy()).all(), True)


def test_threads_calling_one_program_each_get_their_own_workspace() -> None:
    import sys
    import threading

    jf = tj.jit(lambda a: ((a * 2 + 1) @ a.t()).sum(0))  # a fused temporary, a GEMM's buffer
    xs = [tj.randn(64, 48) for _ in range(4)]  # (big enough that BLAS drops the GIL)
    want = [((x * 2 + 1) @ x.t()).sum(0).numpy() for x in xs]
    jf(xs[0])
    jf(xs[0])  # compiled
    bad: list[int] = []

    def work(k: int) -> None:
        for _ in range(1500):  # (with one workspace shared, about 1% of these calls went wrong)
            got = jf(xs[k]).numpy()
            if not np.allclose(got, want[k], rtol=1e-5, atol=1e-5):
                bad.append(k)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not bad
