"""An Elman RNN written with `tracejit.scan`, trained to predict the next value of noisy sine
waves: the recurrence is one scan (no Python loop over time steps), differentiated by
autograd like any other code. Checks the scan's loss and gradients against the same RNN
unrolled by hand, then trains with a jitted step: forward, backward and Adam in one program,
where the scan is one loop and its backward a second loop running the steps in reverse.

    python examples/rnn_scan.py --steps 300
"""

from __future__ import annotations

import numpy as np
from _common import parse_args, progress, report_every

import tracejit as torch


class RNN(torch.nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.w_x = torch.nn.Parameter(torch.randn(1, hidden) * 0.5)
        self.w_h = torch.nn.Parameter(torch.randn(hidden, hidden) * (0.5 / hidden ** 0.5))
        self.b = torch.nn.Parameter(torch.zeros(hidden))
        self.out = torch.nn.Linear(hidden, 1)

    def cell(self, h, x):
        h = torch.tanh(x @ self.w_x + h @ self.w_h + self.b)
        return h, self.out(h)

    def forward(self, xs):  # xs: (time, batch, 1) -> predictions (time, batch, 1)
        h0 = torch.zeros(xs.shape[1], self.w_h.shape[0])
        _, ys = torch.scan(self.cell, h0, xs)
        return ys

    def unrolled(self, xs):
        h, ys = torch.zeros(xs.shape[1], self.w_h.shape[0]), []
        for t in range(xs.shape[0]):
            h, y = self.cell(h, xs[t])
            ys.append(y)
        return torch.stack(ys)


def waves(rng: np.random.Generator, batch: int, length: int) -> tuple:
    phase = rng.uniform(0, 2 * np.pi, size=(1, batch, 1))
    t = np.arange(length + 1).reshape(-1, 1, 1) * 0.3
    s = np.sin(t + phase) + rng.normal(scale=0.05, size=(length + 1, batch, 1))
    s = s.astype(np.float32)
    return torch.tensor(s[:-1]), torch.tensor(s[1:])


def check_against_unrolled(model: RNN, xs, ys) -> float:
    """Largest difference between the scan's and the unrolled loop's loss and gradients."""
    grads = []
    for run in (model.forward, model.unrolled):
        model.zero_grad()
        loss = ((run(xs) - ys) ** 2).mean()
        loss.backward()
        grads.append([loss.detach().numpy()] + [p.grad.numpy().copy() for p in model.parameters()])
    model.zero_grad()
    return max(float(np.abs(a - b).max()) for a, b in zip(*grads))


def main() -> list[float]:
    args = parse_args(__doc__.splitlines()[0], steps=300, length=20, batch=32)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = RNN()
    xs, ys = waves(rng, args.batch, args.length)
    print(f"scan vs unrolled RNN: loss and gradients differ by at most "
          f"{check_against_unrolled(model, xs, ys):.2e}")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)

    @torch.jit
    def train_step(xs, ys):
        loss = ((model(xs) - ys) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    losses = []
    bar = progress(args.steps)
    for t in bar:
        xs, ys = waves(rng, args.batch, args.length)
        losses.append(train_step(xs, ys).item())
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {losses[-1]:.5f}")
        bar.set_note(f"loss {losses[-1]:.5f}")
    predict = torch.jit(model)  # the forward compiled: the scan is one loop in the program
    with torch.no_grad():
        for _ in range(2):  # the first call traces, the second compiles
            xs, ys = waves(rng, args.batch, args.length)
            compiled, eager = predict(xs), model(xs)
    why = train_step.explain()
    loops = sum(" = scan[" in ln for ln in train_step.ir(xs, ys).splitlines())
    info = train_step.cache_info()
    print(f"training step: {info.traces} traces, {info.hits} compiled calls, {loops} loops in "
          f"its program, {len(why.graph_breaks)} graph breaks")
    diff = float((compiled - eager).abs().max())
    info = predict.cache_info()
    print(f"compiled forward vs eager: max difference {diff:.2e} ({info.traces} trace, "
          f"{info.misses} program, {len(predict.explain().graph_breaks)} graph breaks); "
          f"test loss {float(((compiled - ys) ** 2).mean()):.5f}")
    return losses


if __name__ == "__main__":
    main()
