"""A new autograd operation: MyReLU as one graph node with its own forward and backward
(a torch.autograd.Function), used inside the two-layer network.

    python examples/custom_function.py --steps 500
"""

from __future__ import annotations

from _common import parse_args, progress, report_every

import tracejit as torch


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


def main() -> list[float]:
    args = parse_args(__doc__.splitlines()[0], steps=500)
    torch.manual_seed(args.seed)
    N, D_in, H, D_out = 64, 1000, 100, 10
    x = torch.randn(N, D_in)
    y = torch.randn(N, D_out)
    w1 = torch.randn(D_in, H, requires_grad=True)
    w2 = torch.randn(H, D_out, requires_grad=True)
    learning_rate = 1e-6
    losses = []
    bar = progress(args.steps)
    for t in bar:
        y_pred = MyReLU.apply(x.mm(w1)).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {loss.item():.6g}")
        bar.set_note(f"loss {loss.item():.6g}")
        loss.backward()
        with torch.no_grad():
            w1 -= learning_rate * w1.grad
            w2 -= learning_rate * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses


if __name__ == "__main__":
    main()
