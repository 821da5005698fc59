"""Custom modules mixed with Sequential: two ParallelBlocks (the product of two linear maps,
then ReLU) and a Linear, trained with Adam.

    python examples/parallel_block.py --steps 500
"""

from __future__ import annotations

from _common import parse_args, progress, report_every

import tracejit as torch


class ParallelBlock(torch.nn.Module):
    def __init__(self, D_in, D_out):  # noqa: N803 - the lecture's names
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, D_out)
        self.linear2 = torch.nn.Linear(D_in, D_out)

    def forward(self, x):
        return (self.linear1(x) * self.linear2(x)).clamp(min=0)


def main() -> list[float]:
    args = parse_args(__doc__.splitlines()[0], steps=500)
    torch.manual_seed(args.seed)
    N, D_in, H, D_out = 64, 1000, 100, 10
    x = torch.randn(N, D_in)
    y = torch.randn(N, D_out)
    model = torch.nn.Sequential(ParallelBlock(D_in, H), ParallelBlock(H, H),
                                torch.nn.Linear(H, D_out))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    bar = progress(args.steps)
    for t in bar:
        loss = torch.nn.functional.mse_loss(model(x), y)
        losses.append(loss.item())
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {loss.item():.6g}")
        bar.set_note(f"loss {loss.item():.6g}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses


if __name__ == "__main__":
    main()
