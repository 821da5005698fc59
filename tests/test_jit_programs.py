"""Each USER-PROGRAMS training loop, jitted as a whole step (forward, backward, update), matches
the same loop run eagerly after 25 steps, losses and final parameters, with one compiled
program. Small sizes; same initial weights for both runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as torch
from tracejit import nn
from tracejit.nn import functional as F

N, D_IN, H, D_OUT = 16, 20, 10, 5
STEPS = 25


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randn(N, D_IN), torch.randn(N, D_OUT)


class MyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        grad_input = grad_y.clone()
        grad_input[x < 0] = 0
        return grad_input


def tensors_by_hand() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    x, y = _data()
    w1, w2 = torch.randn(D_IN, H), torch.randn(H, D_OUT)
    lr = 1e-3

    def step() -> torch.Tensor:
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1.sub_(lr * grad_w1)
        w2.sub_(lr * grad_w2)
        return loss

    return step, [w1, w2]


def autograd_program(relu: Callable[[torch.Tensor], torch.Tensor] = lambda t: t.clamp(min=0)
                     ) -> tuple[Callable[[], Any], list[torch.Tensor]]:
    x, y = _data()
    w1 = torch.randn(D_IN, H, requires_grad=True)
    w2 = torch.randn(H, D_OUT, requires_grad=True)
    lr = 1e-3

    def step() -> torch.Tensor:
        nonlocal w1, w2  # the lecture's code runs at module level; `w1 -= ...` rebinds
        y_pred = relu(x.mm(w1)).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            w1 -= lr * w1.grad
            w2 -= lr * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
        return loss

    return step, [w1, w2]


def custom_function() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    return autograd_program(MyReLU.apply)


def sequential_manual() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    x, y = _data()
    model = nn.Sequential(nn.Linear(D_IN, H), nn.ReLU(), nn.Linear(H, D_OUT))
    loss_fn = nn.MSELoss(reduction="sum")

    def step() -> torch.Tensor:
        loss = loss_fn(model(x), y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= 1e-3 * param.grad
        return loss

    return step, list(model.parameters())


class TwoLayerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear1 = nn.Linear(D_IN, H)
        self.linear2 = nn.Linear(H, D_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x).clamp(min=0))


class ParallelBlock(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out)
        self.linear2 = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.linear1(x) * self.linear2(x)).clamp(min=0)


def _optimised(model: nn.Module, make_opt: Callable[[Any], Any]
               ) -> tuple[Callable[[], Any], list[torch.Tensor]]:
    x, y = _data()
    opt = make_opt(model.parameters())

    def step() -> torch.Tensor:
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return step, list(model.parameters())


def adam_sequential() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    _data()
    model = nn.Sequential(nn.Linear(D_IN, H), nn.ReLU(), nn.Linear(H, D_OUT))
    return _optimised(model, lambda p: torch.optim.Adam(p, lr=1e-2))


def two_layer_sgd() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    _data()
    return _optimised(TwoLayerNet(), lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9))


def parallel_blocks() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    _data()
    model = nn.Sequential(ParallelBlock(D_IN, H), ParallelBlock(H, H), nn.Linear(H, D_OUT))
    return _optimised(model, lambda p: torch.optim.AdamW(p, lr=1e-2))


def iris() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "iris.csv")
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    X = torch.tensor(data[:, :4], dtype=torch.float32)
    y = torch.tensor(data[:, 4].astype(np.int64))
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))
    opt = torch.optim.Adam(clf.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> torch.Tensor:
        loss = loss_fn(clf(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step, list(clf.parameters())


def dynamic_graph() -> tuple[Callable[[], Any], list[torch.Tensor]]:
    """The branch is decided in Python outside the step; the chosen weight is an argument, so
    both branches run the same compiled program."""
    x, y = _data()
    w1 = torch.randn(D_IN, H, requires_grad=True)
    w2a = torch.randn(H, D_OUT, requires_grad=True)
    w2b = torch.randn(H, D_OUT, requires_grad=True)
    state = {"prev": 1e9, "t": 0}

    def inner(w2: torch.Tensor) -> torch.Tensor:
        loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            for w in (w1, w2):
                w -= 1e-4 * w.grad
                w.grad = None
        return loss

    def step(run: Callable[[torch.Tensor], torch.Tensor] = inner) -> torch.Tensor:
        state["t"] += 1
        loss = run(w2a if state["t"] % 2 else w2b)
        return loss

    step.inner = inner  # type: ignore[attr-defined]
    return step, [w1, w2a, w2b]


PROGRAMS = {f.__name__: f for f in (tensors_by_hand, autograd_program, custom_function,
                                    sequential_manual, adam_sequential, two_layer_sgd,
                                    parallel_blocks, iris, dynamic_graph)}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_program_jitted_as_a_whole_step_matches_eager(name: str) -> None:
    make = PROGRAMS[name]
    eager_step, eager_params = make()
    jit_step, jit_params = make()
    for a, b in zip(eager_params, jit_params):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    if hasattr(jit_step, "inner"):
        fast = torch.jit(jit_step.inner)
        run = lambda: jit_step(fast)  # noqa: E731
    else:
        fast = torch.jit(jit_step)
        run = fast
    eager_losses = [float(eager_step()) for _ in range(STEPS)]
    jit_losses = [float(run()) for _ in range(STEPS)]
    np.testing.assert_allclose(jit_losses, eager_losses, rtol=2e-4, atol=1e-5)
    for a, b in zip(jit_params, eager_params):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=2e-4, atol=1e-5)
    report = fast.explain()
    compiled = [e for e in report.entries if e.program is not None]
    assert len(compiled) == 1 and fast.cache_info().fallbacks == 0, str(report)
    assert fast.cache_info().hits >= STEPS - 3, str(report)

