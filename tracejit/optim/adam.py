"""Adam (with amsgrad and L2 weight decay) and AdamW (decoupled weight decay): PyTorch's
single-tensor update, with the step counter a 0-d float32 tensor updated in place and the
bias corrections computed with tensor ops (no .item(), so a traced step stays one graph)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..autograd import no_grad
from ..creation import zeros, zeros_like
from ..dispatch import STATE, read_static, read_value
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
                if _direct(p, grad, state, lr, amsgrad):
                    _adam_update_arrays(p, grad, state, lr, beta1, beta2, eps, weight_decay,
                                        amsgrad, maximize, decoupled)
                    continue
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


def _direct(p: Tensor, grad: Tensor, state: dict[str, Any], lr: Any, amsgrad: bool) -> bool:
    """Whether the update may run on the arrays directly (`_adam_update_arrays`): eagerly (no
    trace to record it), a Python learning rate, and parameter, gradient and state of one float
    dtype and shape, as every step after the first has them. Anything else takes the ops."""
    if STATE.tracer is not None or type(lr) not in (float, int) or p._device.type != "cpu":
        return False  # (a CUDA parameter takes the ops, which run on its device)
    d = p._dtype
    if d is not dt.float32 and d is not dt.float64 or not p._data.flags.writeable:
        return False
    step = state["step"]
    if step._dtype is not dt.float32 or step._data.shape != () or grad._dtype is not d:
        return False
    keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")
    for k in keys:
        s = state[k]
        if s._dtype is not d or s._data.shape != p._data.shape or not s._data.flags.writeable:
            return False
    return grad._data.shape == p._data.shape


def _adam_update_arrays(p: Tensor, grad: Tensor, state: dict[str, Any], lr: float,
                        beta1: float, beta2: float, eps: float, weight_decay: float,
                        amsgrad: bool, maximize: bool, decoupled: bool) -> None:
    """`_adam_update` computed on the NumPy arrays in place: the same operations in the same
    dtypes (a Python number enters a float32 op as float32, the bias corrections are float64
    and are cast to the parameter's dtype where they meet it), so the result is bit for bit
    the ops' (tests/test_optim.py compares the two), and each tensor's version advances as
    its in-place ops would advance it. Eager mode only: 13 NumPy calls instead of ~20
    dispatched ops with their Tensor objects (AdamW on a small GPT: 11.5 -> 2 ms a step)."""
    t = p._data.dtype.type
    x, g = p._data, grad._data
    if maximize:
        g = np.negative(g)
    step_t = state["step"]
    np.add(step_t._data, np.float32(1), out=step_t._data)
    step_t._version.v += 1
    if weight_decay != 0:
        if decoupled:
            np.multiply(x, t(1 - lr * weight_decay), out=x)
            p._version.v += 1
        else:
            g = g + x * t(weight_decay)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    np.add(m._data, (g - m._data) * t(1 - beta1), out=m._data)
    m._version.v += 1
    np.multiply(v._data, t(beta2), out=v._data)
    np.add(v._data, g * g * t(1 - beta2), out=v._data)
    v._version.v += 2
    step = step_t._data.astype(np.float64)
    bias_correction1 = np.float64(1) - np.power(np.float64(beta1), step)
    bias_correction2_sqrt = np.sqrt(np.float64(1) - np.power(np.float64(beta2), step))
    step_size = np.true_divide(np.float64(lr), bias_correction1)
    sq = v._data
    if amsgrad:
        mx = state["max_exp_avg_sq"]
        np.maximum(mx._data, v._data, out=mx._data)
        mx._version.v += 1
        sq = mx._data
    denom = np.sqrt(sq) / t(bias_correction2_sqrt) + t(eps)
    np.subtract(x, m._data / denom * t(step_size), out=x)
    p._version.v += 1


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
