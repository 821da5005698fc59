"""Adam (with amsgrad and L2 weight decay) and AdamW (decoupled weight decay): PyTorch's
single-tensor update, with the step counter a 0-d float32 tensor updated in place and the
bias corrections computed with tensor ops (no .item(), so a traced step stays one graph)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import dtypes as dt
from ..autograd import no_grad
from ..creation import zeros, zeros_like
from ..dispatch import read_static, read_value
from ..tensor import Tensor
from .optimizer import Optimizer


class Adam(Optimizer):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr / (1 - b1^t) * m /
    (sqrt(v) / sqrt(1 - b2^t) + eps), with v replaced by its running max under amsgrad."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, amsgrad: bool) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            # lazily on the first step, as torch (so the state dict has no entry before it)
            state["step"] = zeros((), dtype=dt.float32)
            state["exp_avg"] = zeros_like(p)
            state["exp_avg_sq"] = zeros_like(p)
            if amsgrad:
                state["max_exp_avg_sq"] = zeros_like(p)
        return state

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr = read_value(group, "lr")
            beta1, beta2 = read_static(group, "betas")
            eps = read_static(group, "eps")
            weight_decay = read_static(group, "weight_decay")
            amsgrad = read_static(group, "amsgrad")
            maximize = read_static(group, "maximize")
            decoupled = read_static(group, "decoupled_weight_decay")
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self._init_state(p, amsgrad)
                _adam_update(p, grad, state, lr, beta1, beta2, eps, weight_decay, amsgrad,
                             maximize, decoupled)
        return loss


def _adam_update(p: Tensor, grad: Tensor, state: dict[str, Any], lr: Any, beta1: float,
                 beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
                 decoupled: bool) -> None:
    if maximize:
        grad = -grad
    step_t: Tensor = state["step"]
    step_t.add_(1)
    if weight_decay != 0:
        if decoupled:
            p.mul_(1 - lr * weight_decay)
        else:
            grad = grad + p * weight_decay
    exp_avg: Tensor = state["exp_avg"]
    exp_avg_sq: Tensor = state["exp_avg_sq"]
    exp_avg.add_((grad - exp_avg) * (1 - beta1))  # lerp, torch's form for weights < 0.5
    exp_avg_sq.mul_(beta2).add_(grad * grad * (1 - beta2))
    # bias corrections in float64, where torch computes them as Python floats: in float32,
    # 1 - 0.999**1 is off by 1e-5 relative
    step = step_t.to(dt.float64)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = (1 - beta2 ** step).sqrt()
    step_size = lr / bias_correction1
    if amsgrad:
        max_sq: Tensor = state["max_exp_avg_sq"]
        max_sq.copy_(max_sq.maximum(exp_avg_sq))
        denom = max_sq.sqrt() / bias_correction2_sqrt + eps
    else:
        denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
    p.sub_(exp_avg / denom * step_size)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam update
    (weight_decay defaults to 1e-2)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
