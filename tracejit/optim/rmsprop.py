"""RMSprop with momentum, centering and weight decay (PyTorch's update)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import dtypes as dt
from ..autograd import no_grad
from ..creation import zeros, zeros_like
from ..dispatch import read_static, read_value
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """v = alpha v + (1-alpha) g^2;  avg = sqrt(v - mean(g)^2 if centered else v) + eps;
    p -= lr * g / avg (or through a momentum buffer b = momentum b + g / avg)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr = read_value(group, "lr")
            alpha = read_static(group, "alpha")
            eps = read_static(group, "eps")
            weight_decay = read_static(group, "weight_decay")
            momentum = read_static(group, "momentum")
            centered = read_static(group, "centered")
            maximize = read_static(group, "maximize")
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = zeros((), dtype=dt.float32)
                    state["square_avg"] = zeros_like(p)
                    if momentum > 0:
                        state["momentum_buffer"] = zeros_like(p)
                    if centered:
                        state["grad_avg"] = zeros_like(p)
                if maximize:
                    grad = -grad
                state["step"].add_(1)
                if weight_decay != 0:
                    grad = grad + p * weight_decay
                square_avg = state["square_avg"]
                square_avg.mul_(alpha).add_(grad * grad * (1 - alpha))
                if centered:
                    grad_avg = state["grad_avg"]
                    grad_avg.add_((grad - grad_avg) * (1 - alpha))
                    avg = (square_avg - grad_avg * grad_avg).sqrt() + eps
                else:
                    avg = square_avg.sqrt() + eps
                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(grad / avg)
                    p.sub_(buf * lr)
                else:
                    p.sub_(grad / avg * lr)
        return loss
