"""nn.Sequential with a hand-written update: `param -= learning_rate * param.grad` under
no_grad(), then model.zero_grad().

    python examples/nn_sequential.py --steps 500
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
    loss_fn = torch.nn.MSELoss(reduction="sum")
    learning_rate = 1e-4
    losses = []
    bar = progress(args.steps)
    for t in bar:
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {loss.item():.6g}")
        bar.set_note(f"loss {loss.item():.6g}")
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= learning_rate * param.grad
    print(model)
    return losses


if __name__ == "__main__":
    main()
