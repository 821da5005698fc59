"""A small character-level GPT trained on the Declaration of Independence
(examples/data/declaration.txt, public domain) with one `@tracejit.jit` step per iteration:
random windows of the text in, next characters out, AdamW with nanoGPT's weight-decay groups.
Prints the falling loss with a progress bar, the held-out loss, then a sample drawn with top-k.
The model is the one the `gpt` benchmark times (tracejit/benchmarks/gpt_model.py, written once
for torch and tracejit).

    python examples/gpt.py --steps 400
"""

from __future__ import annotations

import os
import time

import numpy as np
from _common import parse_args, progress, report_every
from tracejit.benchmarks.gpt_model import GPTConfig, build

import tracejit as torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "declaration.txt")


class Chars:
    """The text as int64 character ids, 90% for training and the rest held out."""

    def __init__(self, path: str = DATA) -> None:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.alphabet = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.alphabet)}
        ids = np.array([self.index[c] for c in text], dtype=np.int64)
        cut = int(0.9 * len(ids))
        self.train, self.val = ids[:cut], ids[cut:]

    def encode(self, s: str) -> list[int]:
        return [self.index[c] for c in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i] for i in ids)

    def batch(self, rng: np.random.Generator, split: np.ndarray, batch_size: int,
              block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_size random windows and the same windows shifted by one character."""
        starts = rng.integers(0, len(split) - block_size - 1, batch_size)
        x = np.stack([split[s:s + block_size] for s in starts])
        y = np.stack([split[s + 1:s + 1 + block_size] for s in starts])
        return torch.from_numpy(x), torch.from_numpy(y)


def make_step(model, optimizer):
    """One training step, written as for PyTorch."""

    def train_step(x, y):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return train_step


def main() -> list[float]:
    args = parse_args(__doc__.splitlines()[0], steps=400, batch_size=16, block_size=32,
                      n_layer=2, n_embd=64, sample=200)
    rng = np.random.default_rng(args.seed)
    data = Chars()
    cfg = GPTConfig(vocab_size=len(data.alphabet), block_size=args.block_size,
                    n_layer=args.n_layer, n_head=4, n_embd=args.n_embd, dropout=0.1)
    model = build(torch, cfg, seed=args.seed)
    print(f"{len(data.train) + len(data.val)} characters, {len(data.alphabet)} distinct; "
          f"model of {model.num_params() / 1e3:.0f} K parameters")
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3)
    step = torch.jit(make_step(model, optimizer))
    losses = []
    bar = progress(args.steps)
    t_start = time.perf_counter()
    for t in bar:
        x, y = data.batch(rng, data.train, args.batch_size, args.block_size)
        loss = step(x, y).item()
        losses.append(loss)
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            bar.write(f"step {t:4d}  loss {loss:.4f}")
        bar.set_note(f"loss {loss:.4f}")
    seconds = time.perf_counter() - t_start
    info = step.cache_info()
    print(f"{args.steps} steps in {seconds:.1f} s (compiling included); "
          f"traces={info.traces} compiles={info.compiles} compiled calls={info.hits} "
          f"fallbacks={info.fallbacks}")
    model.eval()
    with torch.no_grad():
        x, y = data.batch(rng, data.val, 4 * args.batch_size, args.block_size)
        print(f"held-out loss {model(x, y)[1].item():.4f}")
    torch.manual_seed(args.seed)
    prompt = torch.tensor([data.encode("We hold ")])
    out = model.generate(prompt, args.sample, temperature=0.8, top_k=10)
    print("sample:\n" + data.decode(out[0].tolist()))
    return losses


if __name__ == "__main__":
    main()
