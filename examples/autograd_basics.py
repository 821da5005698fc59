"""The same two-layer network with autograd: requires_grad marks the weights,
loss.backward() fills .grad, and the update runs under no_grad().

    python examples/autograd_basics.py --steps 500
"""

from __future__ import annotations

from _common import parse_args, progress, report_every

import tracejit as torch


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
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
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
    # every tensor carries its history back to the leaves
    print("grad_fn chain:", loss.grad_fn, "->", [n for n, _ in loss.grad_fn.next_functions])
    return losses


if __name__ == "__main__":
    main()
