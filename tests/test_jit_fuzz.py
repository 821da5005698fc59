"""Differential fuzzing: random chains of registered ops (elementwise, broadcasting, reductions,
movement, matmul, indexing), with and without backward, run eagerly and under @jit (the
trace, then compiled code on fresh inputs). A bounded number of examples runs in CI; set
TRACEJIT_FUZZ_EXAMPLES for a longer hunt."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracejit as tj

T = tj.Tensor
# each step maps the running value `h` (2-d, shape (R, C)) and an aux input `a` ((1, C) or
# (R, C)) to a new 2-d value; all are total on any real input
STEPS: dict[str, Callable[[T, T], T]] = {
    "tanh": lambda h, a: h.tanh(),
    "sigmoid": lambda h, a: h.sigmoid(),
    "relu": lambda h, a: h.relu(),
    "exp_clamped": lambda h, a: h.clamp(-3, 3).exp(),
    "log_softplus": lambda h, a: (h.exp() + 1).log(),
    "abs_sqrt": lambda h, a: (h.abs() + 0.5).sqrt(),
    "neg_sin": lambda h, a: -h.sin(),
    "add_aux": lambda h, a: h + a,
    "mul_aux": lambda h, a: h * a,
    "div_pos": lambda h, a: h / (a * a + 1),
    "maximum": lambda h, a: h.maximum(a),
    "where": lambda h, a: tj.where(h > a, h, a * 0.5),
    "scalar_affine": lambda h, a: h * 1.5 - 0.25,
    "pow2": lambda h, a: h.pow(2),
    "softmax": lambda h, a: h.softmax(-1),
    "sub_mean": lambda h, a: h - h.mean(1, keepdim=True),
    "sum_keep": lambda h, a: h.sum(0, keepdim=True) + h,
    "amax_keep": lambda h, a: h.amax(1, keepdim=True) * h,
    "transpose2": lambda h, a: h.t().contiguous().t(),
    "reshape_round": lambda h, a: h.reshape(-1).reshape(h.shape),
    "slice_pad": lambda h, a: tj.cat([h[:, :1], h[:, 1:]], 1),
    "matmul_sq": lambda h, a: h @ (a.t() @ a)[: h.shape[1], : h.shape[1]] * 0.1,
    "gather_row": lambda h, a: h.gather(1, tj.zeros(h.shape, dtype=tj.int64)) + h,
    "layernormish": lambda h, a: (h - h.mean(-1, keepdim=True)) * (h.var(-1, keepdim=True)
                                                                   + 1e-3).rsqrt(),
}
NAMES = sorted(STEPS)
EXAMPLES = int(os.environ.get("TRACEJIT_FUZZ_EXAMPLES", "12"))


def _program(chain: list[str], backward: bool) -> Callable[..., Any]:
    def run(x: T, a: T) -> Any:
        h = x
        for name in chain:
            h = STEPS[name](h, a)
        if not backward:
            return h
        loss = (h * h).sum()
        gx, ga = tj.autograd.grad(loss, [x, a], allow_unused=True, materialize_grads=True)
        return h, gx, ga

    return run


def _inputs(rng: np.random.Generator, rows: int, cols: int, aux_rows: int,
            grad: bool) -> tuple[T, T]:
    x = tj.tensor(rng.uniform(-1.5, 1.5, (rows, cols)).astype(np.float32), requires_grad=grad)
    a = tj.tensor(rng.uniform(-1.5, 1.5, (aux_rows, cols)).astype(np.float32), requires_grad=grad)
    return x, a


def _flat(o: Any) -> list[T]:
    return list(o) if isinstance(o, tuple) else [o]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(chain=st.lists(st.sampled_from(NAMES), min_size=1, max_size=5),
       rows=st.integers(1, 5), cols=st.integers(2, 6), broadcast_aux=st.booleans(),
       backward=st.booleans(), seed=st.integers(0, 2**16))
def test_random_chains_jit_matches_eager(chain: list[str], rows: int, cols: int,
                                         broadcast_aux: bool, backward: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    aux_rows = 1 if broadcast_aux else rows
    fn = _program(chain, backward)
    jf = tj.jit(fn)
    for call in range(3):
        x, a = _inputs(rng, rows, cols, aux_rows, backward)
        got = _flat(jf(x, a))
        want = _flat(fn(x, a))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=2e-4,
                                       atol=2e-5, err_msg=f"chain={chain} call={call + 1}")
    info = jf.cache_info()
    assert info.traces == 1 and info.fallbacks == 0, (chain, info, str(jf.explain()))
