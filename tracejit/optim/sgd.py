"""SGD with momentum, dampening, Nesterov, weight decay and maximize (PyTorch's update)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..autograd import no_grad
from ..dispatch import read_static, read_value
from .optimizer import Optimizer, required


class SGD(Optimizer):
    """p -= lr * g, where g is the gradient plus weight_decay * p, optionally replaced by a
    momentum buffer b = momentum * b + (1 - dampening) * g (b = g on the first step), or by
    g + momentum * b with nesterov=True."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr = read_value(group, "lr")
            momentum = read_static(group, "momentum")
            dampening = read_static(group, "dampening")
            weight_decay = read_static(group, "weight_decay")
            nesterov = read_static(group, "nesterov")
            maximize = read_static(group, "maximize")
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if maximize:
                    grad = -grad
                if weight_decay != 0:
                    grad = grad + p * weight_decay
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = grad.detach().clone()
                        state["momentum_buffer"] = buf
                    else:
                        buf.mul_(momentum).add_(grad * (1 - dampening) if dampening else grad)
                    grad = grad + buf * momentum if nesterov else buf
                p.sub_(grad * lr)
        return loss
