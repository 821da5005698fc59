"""Two-layer ReLU network trained with hand-written forward and backward passes on raw
tensors (the first program of "Learning PyTorch with Examples"), with tracejit as torch.

    python examples/tensors_by_hand.py --steps 500
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
    w1 = torch.randn(D_in, H)
    w2 = torch.randn(H, D_out)
    learning_rate = 1e-6
    losses = []
    bar = progress(args.steps)
    for t in bar:
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {loss.item():.6g}")
        bar.set_note(f"loss {loss.item():.6g}")
        # backward by hand
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return losses


if __name__ == "__main__":
    main()
