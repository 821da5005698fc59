"""Why dynamic graphs exist: the output layer is chosen by plain Python `if` on the previous
loss, so the graph differs from step to step; only the chosen weight gets a gradient.

    python examples/dynamic_graph.py --steps 500
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
    w2a = torch.randn(H, D_out, requires_grad=True)
    w2b = torch.randn(H, D_out, requires_grad=True)
    learning_rate = 1e-6
    # the untrained loss is in the hundreds of millions: switch branches well below that
    threshold = 5.0e6
    prev_loss = float("inf")
    losses, branches = [], []
    bar = progress(args.steps)
    for t in bar:
        w2 = w2a if prev_loss < threshold else w2b
        branches.append("a" if w2 is w2a else "b")
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        prev_loss = loss.item()
        losses.append(prev_loss)
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {prev_loss:.6g}  branch w2{branches[-1]}")
        bar.set_note(f"loss {prev_loss:.6g}")
        with torch.no_grad():
            for w in (w1, w2a, w2b):
                if w.grad is not None:
                    w -= learning_rate * w.grad
                    w.grad = None
    print("steps on branch a:", branches.count("a"), " on branch b:", branches.count("b"))
    return losses


if __name__ == "__main__":
    main()
