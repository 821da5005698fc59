"""nn.Sequential trained with torch.optim.Adam: the optimizer holds the parameters, so
loss.backward() fills their .grad and optimizer.step() reads it.

    python examples/nn_adam.py --steps 500
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
    model = torch.nn.Sequential(torch.nn.Linear(D_in, H), torch.nn.ReLU(),
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
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses


if __name__ == "__main__":
    main()
