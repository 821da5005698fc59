"""zero_grad(set_to_none=False) costs nothing in a compiled step: the accumulation into the
zeros is dropped (passes/simplify.py) and the gradient is computed straight into the .grad
buffer (codegen/cpu.py `_effect_targets`), with no copy at the end. Checked against eager
tracejit and torch (when installed) over several steps with changing inputs, for SGD with
momentum, Adam, AdamW and RMSprop, and against a .grad that is not contiguous."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit

OPTIMIZERS = {
    "sgd-momentum": lambda lib, p: lib.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda lib, p: lib.optim.Adam(p, lr=1e-2),
    "adamw": lambda lib, p: lib.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda lib, p: lib.optim.RMSprop(p, lr=1e-2),
}


def weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) * 0.3
            for s in ((16, 20), (16,), (3, 16), (3,))]


def batches(n, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((8, 20)).astype(np.float32),
             rng.standard_normal((8, 3)).astype(np.float32)) for _ in range(n)]


def build(lib, which, ws):
    lin1, lin2 = lib.nn.Linear(20, 16), lib.nn.Linear(16, 3)
    with lib.no_grad():
        for t, w in zip((lin1.weight, lin1.bias, lin2.weight, lin2.bias), ws):
            t.copy_(lib.from_numpy(w.copy()))
    model = lib.nn.Sequential(lin1, lib.nn.ReLU(), lin2)
    params = [lin1.weight, lin1.bias, lin2.weight, lin2.bias]
    opt = OPTIMIZERS[which](lib, model.parameters())
    loss_fn = lib.nn.MSELoss()

    def step(x, y):
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return params, step


def run(lib, step, params, data, prime=None):
    losses = []
    if prime is not None:  # .grad exists before the first step (as after a warm-up step)
        prime(params)
    for x, y in data:
        losses.append(float(step(lib.from_numpy(x.copy()), lib.from_numpy(y.copy())).detach()))
    return losses, [p.detach().numpy().copy() for p in params], \
        [p.grad.numpy().copy() for p in params]


def prime_zero(params):
    for p in params:
        p.grad = tracejit.zeros(p.shape) if isinstance(p, tracejit.Tensor) else \
            __import__("torch").zeros(p.shape)


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_compiled_step_matches_eager_and_torch(which):
    ws, data = weights(), batches(7)
    ref = run(tracejit, *build(tracejit, which, ws)[::-1], data, prime_zero)
    params, step = build(tracejit, which, ws)
    jf = tracejit.jit(step)
    got = run(tracejit, jf, params, data, prime_zero)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    for a, b in zip(got[1] + got[2], ref[1] + ref[2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    src = jf.source(tracejit.from_numpy(data[0][0]), tracejit.from_numpy(data[0][1]))
    driver = src.split("# ---- kernel")[0]
    # the gradients are computed into the .grad buffers: no unconditional copy at the end
    assert driver.count("if v") >= 4 and "flags.c_contiguous" in driver
    torch = pytest.importorskip("torch")
    t = run(torch, *build(torch, which, ws)[::-1], data, prime_zero)
    np.testing.assert_allclose(got[0], t[0], rtol=1e-4)
    for a, b in zip(got[1] + got[2], t[1] + t[2]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_zeros_accumulation_is_dropped_from_the_graph():
    params, step = build(tracejit, "sgd-momentum", weights())
    prime_zero(params)
    jf = tracejit.jit(step)
    x, y = (tracejit.from_numpy(a) for a in batches(1)[0])
    for _ in range(3):
        jf(x, y)
    text = str(jf.ir(x, y))
    assert "value=0" not in text and "full[" not in text
    # nothing of the .grad's shape is read from a constant of zeros
    assert "constant <float32[16, 20]>" not in text


def test_non_contiguous_grad_is_still_written():
    ws, data = weights(), batches(4)
    ref = run(tracejit, *build(tracejit, "adam", ws)[::-1], data, prime_zero)
    params, step = build(tracejit, "adam", ws)
    jf = tracejit.jit(step)

    def prime_strided(ps):
        prime_zero(ps)
        ps[0].grad = tracejit.zeros(20, 16).t()  # an F-contiguous view as .grad
    got = run(tracejit, jf, params, data, prime_strided)
    for a, b in zip(got[1] + got[2], ref[1] + ref[2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_read_after_the_step_keeps_its_value():
    # the .grad is returned and read by the caller: still the gradient of this step
    params, step = build(tracejit, "sgd-momentum", weights())
    prime_zero(params)
    jf = tracejit.jit(step)
    ref_params, ref_step = build(tracejit, "sgd-momentum", weights())
    prime_zero(ref_params)
    for x, y in batches(5):
        jf(tracejit.from_numpy(x.copy()), tracejit.from_numpy(y.copy()))
        ref_step(tracejit.from_numpy(x.copy()), tracejit.from_numpy(y.copy()))
        for p, r in zip(params, ref_params):
            np.testing.assert_allclose(p.grad.numpy(), r.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_optimizer_update_is_one_loop_per_parameter(which):
    # each parameter's update (and its state's) is one fused in-place kernel over the
    # parameter, which reads the gradient once; per-parameter scalars (step counts, bias
    # corrections) are 0-d kernels
    params, step = build(tracejit, which, weights())
    prime_zero(params)
    jf = tracejit.jit(step)
    x, y = (tracejit.from_numpy(a) for a in batches(1)[0])
    for _ in range(3):
        jf(x, y)
    driver = jf.source(x, y).split("# ---- kernel")[0]
    opt_line = [ln for ln in driver.splitlines() if "fused" in ln and
                "test_grad_written.py:48" in ln]  # opt.step()'s line in build()
    loops = [ln for ln in opt_line if "((), " not in ln]
    domains = sorted(ln.split("(", 1)[1].split(")", 1)[0] + ")" for ln in loops)
    assert domains == sorted(repr(tuple(p.shape)) for p in params), loops
