"""The seeds' dynamic graph as one `@tracejit.jit` training step: the output layer is chosen by
a plain Python `if` on the previous loss (a Python float), so only the chosen weight gets a
gradient and an update. Each path is traced once; once both are known they are one compiled
program whose graph holds a `cond` on the branch's predicate (its `if` runs one path's
update, so a step never applies the wrong path's), and steps alternating between the
paths run that one program. Prints which branch each step took, the compiled step's time against
the same step run eagerly on a copy of the weights, and what the program holds.

    python examples/branching.py --steps 200
"""

from __future__ import annotations

import time

from _common import parse_args, progress, report_every

import tracejit as torch


def make_step(w1, w2a, w2b, learning_rate, threshold):
    """One training step, written as for PyTorch (no tracejit in it)."""

    def step(x, y, prev_loss):
        w2 = w2a if prev_loss < threshold else w2b
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            for w in (w1, w2):
                w -= learning_rate * w.grad
                w.grad = None
        return loss

    return step


def weights(d_in, h, d_out):
    return [torch.randn(d_in, h, requires_grad=True), torch.randn(h, d_out, requires_grad=True),
            torch.randn(h, d_out, requires_grad=True)]


def main() -> list[float]:
    args = parse_args(__doc__.splitlines()[0], steps=200, batch=64, d_in=1000, hidden=100)
    torch.manual_seed(args.seed)
    N, D_in, H, D_out = args.batch, args.d_in, args.hidden, 10
    x, y = torch.randn(N, D_in), torch.randn(N, D_out)
    ws = weights(D_in, H, D_out)
    copies = [w.detach().clone().requires_grad_() for w in ws]  # the eager run's weights
    learning_rate = 1e-6 * (1000 * 100) / (D_in * H)  # the seeds' 1e-6 at their sizes
    # switch to w2a once the loss has fallen far below the untrained loss; w2a, untrained,
    # then gives a large loss and the next step goes back to w2b: both branches keep running
    with torch.no_grad():
        threshold = ((x.mm(ws[0]).clamp(min=0).mm(ws[2]) - y).pow(2).sum()).item() / 20
    step = torch.jit(make_step(*ws, learning_rate, threshold))
    prev_loss = float("inf")
    losses, branches = [], []
    timed, timed_steps = 0.0, 0
    ran = {"a": 0, "b": 0}  # calls of each branch that did not trace (the first compiles)
    bar = progress(args.steps)
    for t in bar:
        branches.append("a" if prev_loss < threshold else "b")
        before = step.cache_info()
        t0 = time.perf_counter()
        loss = step(x, y, prev_loss)
        took = time.perf_counter() - t0
        after = step.cache_info()
        if (after.traces, after.compiles) == (before.traces, before.compiles):
            if ran[branches[-1]]:
                timed += took  # that path's program was compiled (or loaded) already
                timed_steps += 1
            ran[branches[-1]] += 1
        prev_loss = loss.item()
        losses.append(prev_loss)
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {prev_loss:.6g}  branch w2{branches[-1]}")
        bar.set_note(f"loss {prev_loss:.6g}")
    print("branch of each step (a: w2a, b: w2b):")
    seq = "".join(branches)
    for i in range(0, len(seq), 80):
        print(f"  {i:4d}  {seq[i:i + 80]}")
    print(f"steps on branch a: {seq.count('a')}, on branch b: {seq.count('b')}")
    info = step.cache_info()
    print(f"traces={info.traces} compiles={info.compiles} hits={info.hits} "
          f"fallbacks={info.fallbacks}")
    compare_with_eager(copies, x, y, learning_rate, threshold, seq, timed, timed_steps)
    why = str(step.explain()).splitlines()
    print("\n".join(ln for ln in why if ln.startswith(("entry ", "  path:", "  note:"))))
    return losses


def compare_with_eager(ws, x, y, learning_rate, threshold, seq, timed, timed_steps):
    """The same steps run eagerly, from the same initial weights and down the same branches
    (each step is given the loss that sends it where the compiled run went)."""
    eager = make_step(*ws, learning_rate, threshold)
    t0 = time.perf_counter()
    for b in seq:
        eager(x, y, 0.0 if b == "a" else float("inf"))
    eager_us = (time.perf_counter() - t0) / max(len(seq), 1) * 1e6
    if timed_steps:
        jit_us = timed / timed_steps * 1e6
        print(f"compiled step {jit_us:.0f} us, eager step {eager_us:.0f} us: eager / compiled "
              f"= {eager_us / jit_us:.2g} (this run; {timed_steps} compiled steps, {len(seq)} "
              "eager)")


if __name__ == "__main__":
    main()
