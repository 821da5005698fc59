"""tracejit.optim: optimizer steps against NumPy float64 re-statements of PyTorch's update
formulas, param groups and state dicts, the JIT-friendliness contract of step(), and the
learning-rate schedulers against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, optim
from tracejit.optim import lr_scheduler

GRADS = [np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([[-0.3, 0.2], [1.0, -2.0]]),
         np.array([[0.0, 0.4], [-1.5, 0.7]])]
P0 = np.array([[1.0, -2.0], [0.5, 3.0]])


def run(opt_cls, steps=3, **kw):
    """Parameters after `steps` updates with the fixed gradients GRADS (float64)."""
    p = nn.Parameter(tj.tensor(P0))
    opt = opt_cls([p], **kw)
    for i in range(steps):
        p.grad = tj.tensor(GRADS[i % len(GRADS)])
        opt.step()
    return p.detach().numpy(), opt, p


def ref_sgd(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    p, buf = P0.copy(), None
    for g in GRADS:
        g = -g if maximize else g.copy()
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def ref_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False, maximize=False):
    p, m, v, vmax = P0.copy(), np.zeros_like(P0), np.zeros_like(P0), np.zeros_like(P0)
    for t, g in enumerate(GRADS, 1):
        g = -g if maximize else g
        if weight_decay and decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        vmax = np.maximum(vmax, v)
        denom = np.sqrt(vmax if amsgrad else v) / math.sqrt(1 - betas[1] ** t) + eps
        p = p - lr / (1 - betas[0] ** t) * m / denom
    return p


def ref_rmsprop(lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p, sq, ga, buf = P0.copy(), np.zeros_like(P0), np.zeros_like(P0), np.zeros_like(P0)
    for g in GRADS:
        g = g + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        if centered:
            ga = alpha * ga + (1 - alpha) * g
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


CASES = [
    (optim.SGD, dict(lr=0.1), ref_sgd),
    (optim.SGD, dict(lr=0.1, momentum=0.9), ref_sgd),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.01), ref_sgd),
    (optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True), ref_sgd),
    (optim.SGD, dict(lr=0.1, maximize=True, weight_decay=0.1), ref_sgd),
    (optim.Adam, dict(lr=0.01), ref_adam),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1), ref_adam),
    (optim.Adam, dict(lr=0.01, amsgrad=True), ref_adam),
    (optim.Adam, dict(lr=0.01, maximize=True), ref_adam),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.1), lambda **k: ref_adam(decoupled=True, **k)),
    (optim.AdamW, dict(lr=0.01, amsgrad=True), lambda **k: ref_adam(decoupled=True,
                                                                     weight_decay=1e-2, **k)),
    (optim.RMSprop, dict(lr=0.01), ref_rmsprop),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.1), ref_rmsprop),
    (optim.RMSprop, dict(lr=0.01, centered=True, alpha=0.9), ref_rmsprop),
]


@pytest.mark.parametrize("cls,kw,ref", CASES,
                         ids=[f"{c.__name__}-{'-'.join(k)}" for c, k, _ in CASES])
def test_updates_match_reference_formulas(cls, kw, ref):
    got, _, _ = run(cls, **kw)
    np.testing.assert_allclose(got, ref(**kw), rtol=1e-10, atol=1e-12)


def test_hand_computed_first_steps():
    # SGD: p - lr g
    got, _, _ = run(optim.SGD, steps=1, lr=0.5)
    np.testing.assert_allclose(got, P0 - 0.5 * GRADS[0])
    # Adam's first step moves each weight by lr * g / (|g| + eps) = lr * sign(g)
    got, opt, p = run(optim.Adam, steps=1, lr=0.1, eps=0.0)
    np.testing.assert_allclose(got, P0 - 0.1 * np.sign(GRADS[0]))
    st = opt.state[p]
    assert st["step"].dtype == tj.float32 and st["step"].shape == () and st["step"].item() == 1
    np.testing.assert_allclose(st["exp_avg"].numpy(), 0.1 * GRADS[0])
    np.testing.assert_allclose(st["exp_avg_sq"].numpy(), 0.001 * GRADS[0] ** 2)


def test_state_updated_in_place_and_created_lazily():
    p = nn.Parameter(tj.ones(3))
    opt = optim.Adam([p], amsgrad=True)
    assert len(opt.state) == 0
    p.grad = tj.ones(3)
    opt.step()
    st = opt.state[p]
    held = {k: v for k, v in st.items()}
    assert set(held) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    opt.step()
    assert all(opt.state[p][k] is v for k, v in held.items())
    assert st["step"].item() == 2


def test_step_skips_params_without_grad_and_closure():
    a, b = nn.Parameter(tj.ones(2)), nn.Parameter(tj.ones(2))
    opt = optim.SGD([a, b], lr=1.0, momentum=0.9)
    a.grad = tj.ones(2)

    def closure():
        return tj.tensor(7.0)

    assert opt.step(closure).item() == 7.0
    assert a.tolist() == [0.0, 0.0] and b.tolist() == [1.0, 1.0]
    assert b not in opt.state


def test_zero_grad_and_param_groups():
    a, b = nn.Parameter(tj.ones(2)), nn.Parameter(tj.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    a.grad, b.grad = tj.ones(2), tj.ones(2)
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), 0.9)
    np.testing.assert_allclose(b.detach().numpy(), 0.5)
    opt.zero_grad(set_to_none=False)
    assert a.grad.tolist() == [0.0, 0.0]
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    c = nn.Parameter(tj.ones(1))
    opt.add_param_group({"params": c, "momentum": 0.9})
    assert opt.param_groups[2]["lr"] == 0.1 and opt.param_groups[2]["momentum"] == 0.9
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.Adam([c], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([c], lr=0.1, nesterov=True)


def test_state_dict_format_and_resume_is_identical():
    model = nn.Linear(3, 2)
    opt = optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    x = tj.randn(4, 3)

    def step(m, o):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()

    step(model, opt)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == [0, 1]
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    # a fresh model/optimizer pair loaded from the state dicts continues identically
    model2 = nn.Linear(3, 2)
    model2.load_state_dict(model.state_dict())
    opt2 = optim.Adam(model2.parameters(), lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.01
    assert opt2.state[model2.weight]["exp_avg"] is not opt.state[model.weight]["exp_avg"]
    step(model, opt)
    step(model2, opt2)
    np.testing.assert_array_equal(model.weight.detach().numpy(), model2.weight.detach().numpy())
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt2.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.Adam([model2.weight]).load_state_dict(sd)


def test_step_reads_lr_as_value_and_options_as_static(monkeypatch):
    """The JIT contract: lr through read_value, everything steering control flow through
    read_static, no .item() inside step()."""
    import tracejit.optim.adam as adam_mod
    import tracejit.optim.rmsprop as rms_mod
    import tracejit.optim.sgd as sgd_mod

    for mod, cls, kw in ((sgd_mod, optim.SGD, dict(lr=0.1, momentum=0.9)),
                         (adam_mod, optim.Adam, {}), (rms_mod, optim.RMSprop, {})):
        values, statics = [], []
        monkeypatch.setattr(mod, "read_value", lambda g, k, v=values: v.append(k) or g[k])
        monkeypatch.setattr(mod, "read_static", lambda g, k, s=statics: s.append(k) or g[k])

        def no_item(self):
            raise AssertionError("step() called .item()")

        monkeypatch.setattr(tj.Tensor, "item", no_item)
        p = nn.Parameter(tj.ones(2))
        opt = cls([p], **kw)
        for _ in range(2):
            p.grad = tj.ones(2)
            opt.step()
        monkeypatch.undo()
        assert values == ["lr", "lr"], (cls, values)
        assert "lr" not in statics and len(statics) >= 4


def test_lr_change_takes_effect_without_rebuilding():
    p = nn.Parameter(tj.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    p.grad = tj.ones(1)
    opt.step()
    opt.param_groups[0]["lr"] = 0.25
    opt.step()
    assert p.item() == -1.25


# ---- schedulers ----------------------------------------------------------------------------------


def lrs(sched_fn, n=12, lr=1.0):
    p = nn.Parameter(tj.zeros(1))
    opt = optim.SGD([p], lr=lr)
    s = sched_fn(opt)
    out = [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()
        s.step()
        out.append(opt.param_groups[0]["lr"])
    assert s.get_last_lr() == [out[-1]]
    return out


def test_step_lr():
    got = lrs(lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5))
    np.testing.assert_allclose(got, [0.5 ** (e // 3) for e in range(13)])


def test_exponential_lr():
    np.testing.assert_allclose(lrs(lambda o: lr_scheduler.ExponentialLR(o, 0.9)),
                               [0.9**e for e in range(13)])


def test_cosine_annealing_lr_follows_closed_form_including_restart_region():
    got = lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=0.1), n=14)
    want = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(15)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_lambda_lr_and_state_dict():
    got = lrs(lambda o: lr_scheduler.LambdaLR(o, lambda e: 1 / (e + 1)), lr=0.5)
    np.testing.assert_allclose(got, [0.5 / (e + 1) for e in range(13)])
    p = nn.Parameter(tj.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    s = lr_scheduler.LambdaLR(opt, lambda e: 0.5**e)
    s.step()
    sd = s.state_dict()
    assert sd["last_epoch"] == 1 and sd["lr_lambdas"] == [None] and "optimizer" not in sd
    s2 = lr_scheduler.LambdaLR(optim.SGD([p], lr=1.0), lambda e: 0.5**e)
    s2.load_state_dict(sd)
    assert s2.last_epoch == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls,kw", [
    (optim.Adam, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, maximize=True)),
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.01, amsgrad=True, eps=1e-6)),
])
def test_adam_array_update_is_the_ops_bit_for_bit(monkeypatch, dtype, cls, kw):
    """Eager Adam updates the arrays directly (adam._adam_update_arrays); it must equal the
    update written in tensor ops exactly, state and version counters included."""
    import tracejit.optim.adam as adam_mod

    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((5, 7)).astype(dtype)
    grads = [rng.standard_normal((5, 7)).astype(dtype) for _ in range(4)]

    def train(direct: bool):
        monkeypatch.setattr(adam_mod, "_direct", adam_mod._direct if direct else
                            lambda *a: False)
        p = nn.Parameter(tj.tensor(p0))
        opt = cls([p], **kw)
        for g in grads:
            p.grad = tj.tensor(g)
            opt.step()
        monkeypatch.undo()
        st = opt.state[p]
        return [p] + [st[k] for k in sorted(st)]

    ops, direct = train(False), train(True)
    for a, b in zip(ops, direct):
        assert a.dtype is b.dtype
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
        assert a._version.v == b._version.v
