"""A custom nn.Module (TwoLayerNet) trained with SGD.

    python examples/two_layer_net.py --steps 500
"""

from __future__ import annotations

from _common import parse_args, progress, report_every

import tracejit as torch


class TwoLayerNet(torch.nn.Module):
    def __init__(self, D_in, H, D_out):  # noqa: N803 - the lecture's names
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, D_out)

    def forward(self, x):
        return self.linear2(self.linear1(x).clamp(min=0))


def main() -> list[float]:
    args = parse_args(__doc__.splitlines()[0], steps=500)
    torch.manual_seed(args.seed)
    N, D_in, H, D_out = 64, 1000, 100, 10
    x = torch.randn(N, D_in)
    y = torch.randn(N, D_out)
    model = TwoLayerNet(D_in, H, D_out)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    losses = []
    bar = progress(args.steps)
    for t in bar:
        loss = torch.nn.functional.mse_loss(model(x), y, reduction="sum")
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
