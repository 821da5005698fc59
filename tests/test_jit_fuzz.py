"""Differential fuzzing: random chains of registered ops (elementwise, broadcasting, reductions,
movement and views, matmul, indexing), with and without backward, on inputs that may hold
special values (NaN, infinities, -0, denormals, the largest floats), run eagerly and under @jit
(the trace, then compiled code on fresh inputs). The jitted function also returns views of
its intermediate values, and every output is checked after the later calls too, so a buffer
that a later call (or the same call's backward) overwrites is caught. A bounded number of
examples runs in CI; set TRACEJIT_FUZZ_EXAMPLES for a longer hunt."""

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
    # views: a non-contiguous transpose read by later ops, a slice, a broadcast row
    "transpose_view": lambda h, a: (h.t() * 2).t(),
    "slice_view": lambda h, a: h[:, : h.shape[1]] - h[:1],
    "expand_row": lambda h, a: h[:1].expand(h.shape) + h,
    "col_broadcast": lambda h, a: h * h.sum(1, keepdim=True).tanh(),
    "amin_keep": lambda h, a: h - h.amin(0, keepdim=True),
    "clamp_relu": lambda h, a: h.clamp(-1, 1).relu() + h.clamp(min=0),
}
NAMES = sorted(STEPS)
EXAMPLES = int(os.environ.get("TRACEJIT_FUZZ_EXAMPLES", "12"))


def _program(chain: list[str], backward: bool) -> Callable[..., Any]:
    def run(x: T, a: T) -> Any:
        h = x
        for name in chain:
            h = STEPS[name](h, a)
        if not backward:
            return h, h.reshape(-1)
        loss = (h * h).sum()
        gx, ga = tj.autograd.grad(loss, [x, a], allow_unused=True, materialize_grads=True)
        return h, h.reshape(-1), gx, ga

    return run


# the largest finite floats are left to test_special_values.py (op by op): in a chain, their
# sums overflow float32 in eager mode (inf + -inf = nan) but not in compiled reductions, which
# accumulate float32 in float64 by design; 1e30 still overflows when squared, in both modes
SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 1e30, -1e30],
                   np.float32)


def _inputs(rng: np.random.Generator, rows: int, cols: int, aux_rows: int,
            grad: bool, special: bool) -> tuple[T, T]:
    xs = rng.uniform(-1.5, 1.5, (rows, cols)).astype(np.float32)
    if special:  # a few entries replaced by special values
        hit = rng.random(xs.shape) < 0.3
        xs[hit] = rng.choice(SPECIAL, int(hit.sum()))
    x = tj.tensor(xs, requires_grad=grad)
    a = tj.tensor(rng.uniform(-1.5, 1.5, (aux_rows, cols)).astype(np.float32), requires_grad=grad)
    return x, a


def _flat(o: Any) -> list[T]:
    return list(o) if isinstance(o, tuple) else [o]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(chain=st.lists(st.sampled_from(NAMES), min_size=1, max_size=5),
       rows=st.integers(1, 5), cols=st.integers(2, 6), broadcast_aux=st.booleans(),
       backward=st.booleans(), special=st.booleans(), seed=st.integers(0, 2**16))
def test_random_chains_jit_matches_eager(chain: list[str], rows: int, cols: int,
                                         broadcast_aux: bool, backward: bool, special: bool,
                                         seed: int) -> None:
    rng = np.random.default_rng(seed)
    aux_rows = 1 if broadcast_aux else rows
    fn = _program(chain, backward)
    jf = tj.jit(fn)
    kept: list[tuple[list[T], list[np.ndarray]]] = []
    for call in range(3):
        x, a = _inputs(rng, rows, cols, aux_rows, backward, special)
        got = _flat(jf(x, a))
        want = _flat(fn(x, a))
        for g, w in zip(got, want):
            wn = w.detach().numpy()
            # huge inputs make float32 cancellation noise scale with the output: then the
            # tolerance does too (NaN and infinity positions still have to match exactly)
            finite = np.abs(wn[np.isfinite(wn)])
            scale = max(1.0, float(finite.max())) if special and finite.size else 1.0
            np.testing.assert_allclose(g.detach().numpy(), wn, rtol=2e-4, atol=2e-5 * scale,
                                       err_msg=f"chain={chain} call={call + 1}")
        # outputs never share memory unless eager's do (h and h.reshape(-1) may: reshape is a
        # view or a copy depending on the layout, in torch too)
        for i, g in enumerate(got):
            for j, o in enumerate(got[:i]):
                if (j, i) != (0, 1) and np.shares_memory(g.detach().numpy(), o.detach().numpy()):
                    assert np.shares_memory(want[i].detach().numpy(), want[j].detach().numpy()), \
                        f"chain={chain} call={call + 1}: outputs {j} and {i} share memory"
        kept.append((got, [g.detach().numpy().copy() for g in got]))
    for call, (got, values) in enumerate(kept):  # nothing a call returned changed later
        for g, v in zip(got, values):
            np.testing.assert_array_equal(g.detach().numpy(), v,
                                          err_msg=f"chain={chain}: output of call {call + 1} "
                                          "was overwritten by a later call")
    info = jf.cache_info()
    assert info.traces == 1 and info.fallbacks == 0, (chain, info, str(jf.explain()))
