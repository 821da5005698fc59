"""nn.utils: gradient clipping. Written with tensor ops (no .item()), so clipping inside a
traced training step stays in the graph."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..autograd import no_grad
from ..creation import tensor
from ..functional import stack
from ..tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [g for g in (p.grad for p in params) if g is not None]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: bool | None = None) -> Tensor:
    """Scale all gradients together so their joint `norm_type` norm is at most max_norm;
    returns the norm before clipping (PyTorch's coefficient max_norm / (norm + 1e-6))."""
    grads = _grads(parameters)
    if not grads:
        return tensor(0.0)
    norm_type = float(norm_type)
    with no_grad():
        if norm_type == math.inf:
            norms = [g.abs().amax() for g in grads]
            total = norms[0] if len(norms) == 1 else stack(norms).amax()
        else:
            norms = [g.abs().pow(norm_type).sum() if norm_type != 2.0 else (g * g).sum()
                     for g in grads]
            total = (norms[0] if len(norms) == 1 else stack(norms).sum()).pow(1.0 / norm_type)
        if error_if_nonfinite and not bool(total.abs().lt(math.inf).item()):
            raise RuntimeError(f"The total norm of order {norm_type} for gradients from "
                               "`parameters` is non-finite, so it cannot be clipped. To disable "
                               "this error and scale the gradients by the non-finite norm "
                               "anyway, set `error_if_nonfinite=False`")
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float,
                     foreach: bool | None = None) -> None:
    """Clamp every gradient element to [-clip_value, clip_value] in place."""
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    from ..functional import cat

    return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    at = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(vec[at:at + n].reshape(p.shape))
            at += n
