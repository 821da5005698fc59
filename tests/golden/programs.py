"""The fixed programs whose artefacts tests/test_golden.py compares with the files beside this
one. Each builder returns a fresh jitted function and the arguments it is inspected with; the
builders are kept apart from the test so that editing the test does not move the `# file:line`
comments the artefacts carry (they name lines of this file)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tracejit as tj

Program = Callable[[], tuple[Any, tuple[Any, ...]]]


def seed() -> tuple[Any, tuple[Any, ...]]:
    """The seed's two-layer net training step (benchmarks/mlp_seed.py's autograd_step): N=64,
    1000-100-10, ReLU, sum-of-squares loss, backward, SGD update and grads zeroed in place.
    One eager step first, so `.grad` holds a tensor as on every step of the loop after the
    first: the program that runs in the loop."""
    tj.manual_seed(0)
    n, d_in, h, d_out = 64, 1000, 100, 10
    x, y = tj.randn(n, d_in), tj.randn(n, d_out)
    w1 = tj.randn(d_in, h, requires_grad=True)
    w2 = tj.randn(h, d_out, requires_grad=True)
    lr = 1e-6

    def step(x: Any, y: Any, w1: Any, w2: Any) -> Any:
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        with tj.no_grad():
            w1 -= lr * w1.grad
            w2 -= lr * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
        return loss

    step(x, y, w1, w2)
    return tj.jit(step), (x, y, w1, w2)


def softmax() -> tuple[Any, tuple[Any, ...]]:
    """Softmax over the rows of a (4, 8) float32 matrix."""
    tj.manual_seed(0)

    def softmax_rows(x: Any) -> Any:
        return tj.softmax(x, 1)

    return tj.jit(softmax_rows), (tj.randn(4, 8),)


def layernorm() -> tuple[Any, tuple[Any, ...]]:
    """Layer normalisation over the last dimension of a (4, 8) float32 matrix, with weight and
    bias, eps=1e-5."""
    tj.manual_seed(0)

    def layer_norm(x: Any, w: Any, b: Any) -> Any:
        return tj.nn.functional.layer_norm(x, (8,), w, b, 1e-5)

    return tj.jit(layer_norm), (tj.randn(4, 8), tj.randn(8), tj.randn(8))


def cond() -> tuple[Any, tuple[Any, ...]]:
    """`tracejit.cond` on a data-dependent predicate: halve a (4,) vector whose sum is
    positive, else add one."""
    tj.manual_seed(0)

    def halve_or_shift(x: Any) -> Any:
        return tj.cond(x.sum() > 0, lambda v: v * 0.5, lambda v: v + 1, x)

    return tj.jit(halve_or_shift), (tj.randn(4),)


def while_loop() -> tuple[Any, tuple[Any, ...]]:
    """`tracejit.while_loop`: Newton's iteration for the square roots of a (4,) vector, until
    every residual is below a tolerance given as a 0-d tensor, counting the trips."""
    tj.manual_seed(0)

    def newton_sqrt(a: Any, tol: Any) -> Any:
        def far(c: Any) -> Any:
            return (c[0] * c[0] - a).abs().max() > tol

        def step(c: Any) -> Any:
            return (c[0] + a / c[0]) * 0.5, c[1] + 1

        return tj.while_loop(far, step, (tj.ones_like(a), 0))

    return tj.jit(newton_sqrt), (tj.rand(4) * 10 + 1, tj.tensor(1e-4))


PROGRAMS: dict[str, Program] = {"seed": seed, "softmax": softmax, "layernorm": layernorm,
                                "cond": cond, "while_loop": while_loop}
