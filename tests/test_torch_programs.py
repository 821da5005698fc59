"""Each USER-PROGRAMS program, written once and run under PyTorch and under tracejit (the only
difference is the module passed as `torch`), from the same initial weights and data: losses
and final parameters must agree. Also optimizers, schedulers and losses against torch."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import tracejit

torch_mod = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

N, D_IN, H, D_OUT = 8, 20, 12, 4
STEPS = 25
rng = np.random.default_rng(0)
X = rng.standard_normal((N, D_IN)).astype(np.float32)
Y = rng.standard_normal((N, D_OUT)).astype(np.float32)
W1 = rng.standard_normal((D_IN, H)).astype(np.float32)
W2 = rng.standard_normal((H, D_OUT)).astype(np.float32)
W2B = rng.standard_normal((H, D_OUT)).astype(np.float32)


def params_of(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def load_weights(torch, model, weights):
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})


# ---- the programs, written against whichever `torch` is passed --------------------------------


def tensors_by_hand(torch, _):
    x, y = torch.tensor(X), torch.tensor(Y)
    w1, w2 = torch.tensor(W1), torch.tensor(W2)
    learning_rate = 1e-4
    losses = []
    for _t in range(STEPS):
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return losses, {"w1": w1.numpy(), "w2": w2.numpy()}


def autograd_program(torch, _):
    x, y = torch.tensor(X), torch.tensor(Y)
    w1 = torch.tensor(W1, requires_grad=True)
    w2 = torch.tensor(W2, requires_grad=True)
    learning_rate = 1e-4
    losses = []
    for _t in range(STEPS):
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            w1 -= learning_rate * w1.grad
            w2 -= learning_rate * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses, {"w1": w1.detach().numpy(), "w2": w2.detach().numpy()}


def custom_function(torch, _):
    class MyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_y):
            (x,) = ctx.saved_tensors
            grad_input = grad_y.clone()
            grad_input[x < 0] = 0
            return grad_input

    x, y = torch.tensor(X), torch.tensor(Y)
    w1 = torch.tensor(W1, requires_grad=True)
    w2 = torch.tensor(W2, requires_grad=True)
    losses = []
    for _t in range(STEPS):
        y_pred = MyReLU.apply(x.mm(w1)).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            w1 -= 1e-4 * w1.grad
            w2 -= 1e-4 * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses, {"w1": w1.detach().numpy(), "w2": w2.detach().numpy()}


def sequential_model(torch):
    return torch.nn.Sequential(torch.nn.Linear(D_IN, H), torch.nn.ReLU(),
                               torch.nn.Linear(H, D_OUT))


def sequential_manual(torch, init):
    model = sequential_model(torch)
    load_weights(torch, model, init)
    x, y = torch.tensor(X), torch.tensor(Y)
    loss_fn = torch.nn.MSELoss(reduction="sum")
    losses = []
    for _t in range(STEPS):
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 1e-3 * param.grad
    return losses, params_of(model)


def sequential_adam(torch, init):
    model = sequential_model(torch)
    load_weights(torch, model, init)
    x, y = torch.tensor(X), torch.tensor(Y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _t in range(STEPS):
        loss = torch.nn.functional.mse_loss(model(x), y)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses, params_of(model)


def two_layer_net(torch, init):
    class TwoLayerNet(torch.nn.Module):
        def __init__(self, d_in, h, d_out):
            super().__init__()
            self.linear1 = torch.nn.Linear(d_in, h)
            self.linear2 = torch.nn.Linear(h, d_out)

        def forward(self, x):
            return self.linear2(self.linear1(x).clamp(min=0))

    model = TwoLayerNet(D_IN, H, D_OUT)
    load_weights(torch, model, init)
    x, y = torch.tensor(X), torch.tensor(Y)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    losses = []
    for _t in range(STEPS):
        loss = torch.nn.functional.mse_loss(model(x), y, reduction="sum")
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses, params_of(model)


def parallel_block(torch, init):
    class ParallelBlock(torch.nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.linear1 = torch.nn.Linear(d_in, d_out)
            self.linear2 = torch.nn.Linear(d_in, d_out)

        def forward(self, x):
            return (self.linear1(x) * self.linear2(x)).clamp(min=0)

    model = torch.nn.Sequential(ParallelBlock(D_IN, H), ParallelBlock(H, H),
                                torch.nn.Linear(H, D_OUT))
    load_weights(torch, model, init)
    x, y = torch.tensor(X), torch.tensor(Y)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _t in range(STEPS):
        loss = torch.nn.functional.mse_loss(model(x), y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses, params_of(model)


def dynamic_branch(torch, _):
    x, y = torch.tensor(X), torch.tensor(Y)
    w1 = torch.tensor(W1, requires_grad=True)
    w2a = torch.tensor(W2, requires_grad=True)
    w2b = torch.tensor(W2B, requires_grad=True)
    prev_loss, threshold = math.inf, 300.0
    losses, path = [], []
    for _t in range(STEPS):
        w2 = w2a if prev_loss < threshold else w2b
        path.append(w2 is w2a)
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        prev_loss = loss.item()
        losses.append(prev_loss)
        with torch.no_grad():
            for w in (w1, w2a, w2b):
                if w.grad is not None:
                    w -= 1e-4 * w.grad
                    w.grad = None
    assert any(path) and not all(path), "both branches must be taken"
    return losses, {"w1": w1.detach().numpy(), "w2a": w2a.detach().numpy(),
                    "w2b": w2b.detach().numpy()}


def dynamic_branch_step(torch, _):
    """The same program with the branch inside one step, jitted under tracejit: each branch
    traced once, guarded by its predicate on the previous loss (a Python float), then both
    one entry with a cond."""
    x, y = torch.tensor(X), torch.tensor(Y)
    w1 = torch.tensor(W1, requires_grad=True)
    w2a = torch.tensor(W2, requires_grad=True)
    w2b = torch.tensor(W2B, requires_grad=True)
    threshold = 300.0

    def step(x, y, prev_loss):
        w2 = w2a if prev_loss < threshold else w2b
        loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            for w in (w1, w2):
                w -= 1e-4 * w.grad
                w.grad = None
        return loss

    if torch is tracejit:
        step = tracejit.jit(step)
    prev_loss = math.inf
    losses, path = [], []
    for _t in range(STEPS):
        path.append(prev_loss < threshold)
        prev_loss = step(x, y, prev_loss).item()
        losses.append(prev_loss)
    assert any(path) and not all(path), "both branches must be taken"
    if torch is tracejit:
        info = step.cache_info()
        assert info.traces == 3 and info.fallbacks == 0 and info.hits == STEPS - 3, info
        assert "note: merged paths" in str(step.explain())
    return losses, {"w1": w1.detach().numpy(), "w2a": w2a.detach().numpy(),
                    "w2b": w2b.detach().numpy()}


IRIS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                    "data", "iris.csv")


def iris_model(torch):
    class Clf(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(4, 10)
            self.fc2 = torch.nn.Linear(10, 3)

        def forward(self, x):
            return self.fc2(torch.nn.functional.relu(self.fc1(x)))

    return Clf()


def iris(torch, init):
    table = np.loadtxt(IRIS, delimiter=",", skiprows=1)
    X_ = torch.tensor(table[:, :4], dtype=torch.float32)
    y = torch.tensor(table[:, 4].astype(np.int64))
    clf = iris_model(torch)
    load_weights(torch, clf, init)
    optimizer = torch.optim.Adam(clf.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    for _ in range(60):
        y_pred = clf(X_)
        loss = loss_fn(y_pred, y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses, params_of(clf)


def dataloader_loop(torch, init):
    import importlib

    data = importlib.import_module(torch.__name__ + ".utils.data")
    x, y = torch.tensor(X), torch.tensor(np.arange(N) % D_OUT)
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=3)  # no shuffle: same order
    model = sequential_model(torch)
    load_weights(torch, model, init)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    losses = []
    for _epoch in range(5):
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    return losses, params_of(model)


PROGRAMS = [
    (tensors_by_hand, None), (autograd_program, None), (custom_function, None),
    (sequential_manual, sequential_model), (sequential_adam, sequential_model),
    (two_layer_net, "two_layer"), (parallel_block, "parallel"), (dynamic_branch, None),
    (dynamic_branch_step, None),
    (iris, iris_model), (dataloader_loop, sequential_model),
]


def initial_weights(kind):
    """Weights drawn once by torch and given to both frameworks."""
    torch = torch_mod
    torch.manual_seed(0)
    if kind is None:
        return None
    if kind == "two_layer":
        m = torch.nn.ModuleDict({"linear1": torch.nn.Linear(D_IN, H),
                                 "linear2": torch.nn.Linear(H, D_OUT)})
    elif kind == "parallel":
        m = torch.nn.Sequential(
            torch.nn.ModuleDict({"linear1": torch.nn.Linear(D_IN, H),
                                 "linear2": torch.nn.Linear(D_IN, H)}),
            torch.nn.ModuleDict({"linear1": torch.nn.Linear(H, H),
                                 "linear2": torch.nn.Linear(H, H)}),
            torch.nn.Linear(H, D_OUT))
    else:
        m = kind(torch)
    return params_of(m)


@pytest.mark.parametrize("program,kind", PROGRAMS, ids=[p.__name__ for p, _ in PROGRAMS])
def test_program_matches_torch(program, kind):
    init = initial_weights(kind)
    t_losses, t_params = program(torch_mod, init)
    j_losses, j_params = program(tracejit, init)
    assert t_losses[-1] < t_losses[0]
    np.testing.assert_allclose(j_losses, t_losses, rtol=2e-4, atol=1e-5)
    assert set(j_params) == set(t_params)
    for k in t_params:
        np.testing.assert_allclose(j_params[k], t_params[k], rtol=2e-4, atol=2e-5, err_msg=k)


# ---- optimizers, schedulers and losses against torch ------------------------------------------

OPTIMIZERS = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.05, betas=(0.8, 0.95))),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
]


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=[f"{n}{i}" for i, (n, _) in
                                                    enumerate(OPTIMIZERS)])
def test_optimizer_trajectory_and_state_dict_match_torch(name, kw):
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    out = {}
    for lib in (torch_mod, tracejit):
        p = lib.nn.Parameter(lib.tensor(p0))
        opt = getattr(lib.optim, name)([p], **kw)
        for g in grads:
            p.grad = lib.tensor(g)
            opt.step()
        out[lib.__name__] = (p.detach().numpy().copy(), opt.state_dict())
    (tp, tsd), (jp, jsd) = out["torch"], out["tracejit"]
    np.testing.assert_allclose(jp, tp, rtol=1e-10, atol=1e-12)
    assert jsd["param_groups"] == tsd["param_groups"]
    assert set(jsd["state"][0]) == set(tsd["state"][0])
    for k, v in tsd["state"][0].items():
        np.testing.assert_allclose(jsd["state"][0][k].numpy(), v.numpy(), rtol=1e-10)
        assert str(jsd["state"][0][k].dtype).split(".")[-1] == str(v.dtype).split(".")[-1]


SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.8)),
    ("CosineAnnealingLR", dict(T_max=4, eta_min=0.01)),
    ("LambdaLR", dict(lr_lambda=lambda e: 1.0 / (1 + e) ** 0.5)),
]


@pytest.mark.parametrize("name,kw", SCHEDULERS, ids=[n for n, _ in SCHEDULERS])
def test_scheduler_matches_torch(name, kw):
    seqs = []
    for lib in (torch_mod, tracejit):
        p = lib.nn.Parameter(lib.zeros(1))
        opt = lib.optim.SGD([p], lr=0.5)
        sched = getattr(lib.optim.lr_scheduler, name)(opt, **kw)
        seq = []
        for _ in range(12):
            opt.step()
            sched.step()
            seq.append(sched.get_last_lr()[0])
        seqs.append(seq)
    np.testing.assert_allclose(seqs[1], seqs[0], rtol=1e-12)


LOSSES = [
    ("cross_entropy", dict(label_smoothing=0.15, ignore_index=1), "idx", True),
    ("cross_entropy", dict(reduction="sum"), "prob", True),
    ("cross_entropy", dict(reduction="none", label_smoothing=0.2), "idx", True),
    ("nll_loss", dict(), "idx", False),
    ("binary_cross_entropy_with_logits", dict(), "unit", False),
    ("smooth_l1_loss", dict(beta=0.3), "real", False),
]


@pytest.mark.parametrize("name,kw,target,weighted", LOSSES,
                         ids=[f"{n}-{t}-{i}" for i, (n, _, t, _) in enumerate(LOSSES)])
def test_losses_and_gradients_match_torch(name, kw, target, weighted):
    x = rng.standard_normal((5, 4))
    t = {"idx": np.array([0, 1, 3, 1, 2]), "prob": rng.dirichlet(np.ones(4), 5),
         "unit": rng.uniform(size=(5, 4)), "real": rng.standard_normal((5, 4))}[target]
    w = np.abs(rng.standard_normal(4)) + 0.2
    res = []
    for lib in (torch_mod, tracejit):
        xi = lib.tensor(x, requires_grad=True)
        extra = {"weight": lib.tensor(w)} if weighted else {}
        out = getattr(lib.nn.functional, name)(xi, lib.tensor(t), **extra, **kw)
        out.sum().backward()
        res.append((out.detach().numpy(), xi.grad.numpy()))
    np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-10, atol=1e-12)


def test_layers_match_torch_with_copied_weights():
    torch = torch_mod
    torch.manual_seed(0)
    pairs = [(torch.nn.Bilinear(3, 2, 4), tracejit.nn.Bilinear(3, 2, 4), 2),
             (torch.nn.LSTMCell(3, 5), tracejit.nn.LSTMCell(3, 5), 1),
             (torch.nn.GRUCell(3, 5), tracejit.nn.GRUCell(3, 5), 1),
             (torch.nn.LayerNorm(3), tracejit.nn.LayerNorm(3), 1),
             (torch.nn.Embedding(6, 3, padding_idx=0), tracejit.nn.Embedding(6, 3, padding_idx=0),
              0)]
    for tm, jm, n_in in pairs:
        assert repr(tm) == repr(jm)
        jm.load_state_dict({k: tracejit.tensor(v.detach().numpy())
                            for k, v in tm.state_dict().items()})
        if n_in == 0:
            ins = [np.array([[0, 3], [5, 0]])]
        else:
            ins = [rng.standard_normal((2, 3)).astype(np.float32),
                   rng.standard_normal((2, 2)).astype(np.float32)][:n_in]
        t_out = tm(*[torch.tensor(a) for a in ins])
        j_out = jm(*[tracejit.tensor(a) for a in ins])
        t_out = t_out[0] if isinstance(t_out, tuple) else t_out
        j_out = j_out[0] if isinstance(j_out, tuple) else j_out
        t_out.pow(2).sum().backward()
        j_out.pow(2).sum().backward()
        np.testing.assert_allclose(j_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
        for (k, tp), jp in zip(tm.named_parameters(), jm.parameters()):
            np.testing.assert_allclose(jp.grad.numpy(), tp.grad.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{type(tm).__name__}.{k}")
