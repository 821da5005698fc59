"""A small MLP with nn.Dropout trained by one compiled step: the dropout masks are drawn inside
the compiled program (Philox, the same numbers eager mode would draw from the seed).

    python examples/dropout_mlp.py --steps 300
"""

from __future__ import annotations

from _common import parse_args, progress, report_every

import tracejit as torch


def main() -> list[float]:
    args = parse_args(__doc__.splitlines()[0], steps=300)
    torch.manual_seed(args.seed)
    N, D_in, H = 128, 8, 64
    x = torch.randn(N, D_in)
    y = (x[:, :1] * 2 - x[:, 1:2] + 0.5 * x[:, 2:3] * x[:, 3:4]).detach()  # a target to fit
    model = torch.nn.Sequential(torch.nn.Linear(D_in, H), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(H, H), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(H, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.MSELoss()

    @torch.jit
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    model.train()
    losses = []
    bar = progress(args.steps)
    for t in bar:
        loss = step(x, y).item()
        losses.append(loss)
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {loss:.6g}")
        bar.set_note(f"loss {loss:.6g}")
    info = step.cache_info()
    compiled = sum(e.program is not None for e in step.explain().entries)
    print(f"compiled: {compiled} program(s), traces={info.traces} fallbacks={info.fallbacks}")
    model.eval()
    with torch.no_grad():
        print(f"eval loss (no dropout) {loss_fn(model(x), y).item():.6g}")
    return losses


if __name__ == "__main__":
    main()
