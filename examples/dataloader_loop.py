"""Mini-batch training with a DataLoader: TensorDataset(x, y) shuffled each epoch with a
seeded generator, batches of 8, a small classifier on the Iris data with SGD + momentum and a
StepLR schedule; the trained weights are saved with tracejit.save and loaded back.

    python examples/dataloader_loop.py --steps 30   # epochs
"""

from __future__ import annotations

import os
import tempfile

from _common import parse_args, progress
from iris import Clf, load_iris

import tracejit as torch
from tracejit.utils.data import DataLoader, TensorDataset


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], steps=30, batch_size=8)
    torch.manual_seed(args.seed)
    features, target, _ = load_iris()
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(target)
    # standardise the features: SGD needs it more than Adam does
    x = (x - x.mean(0)) / x.std(0)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    model = Clf()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    loss_fn = torch.nn.CrossEntropyLoss()
    bar = progress(args.steps)
    for epoch in bar:
        total, correct, seen = 0.0, 0, 0
        for xb, yb in loader:
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum().item())
            seen += len(yb)
        scheduler.step()
        bar.write(f"epoch {epoch:3d}  loss {total / seen:.4f}  accuracy {correct / seen:.3f}  "
              f"lr {scheduler.get_last_lr()[0]:.4f}")
        bar.set_note(f"loss {total / seen:.4f}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "iris.safetensors")
        torch.save(model.state_dict(), path)
        restored = Clf()
        print("load_state_dict:", restored.load_state_dict(torch.load(path)))
    with torch.no_grad():
        accuracy = (restored(x).argmax(1) == y).float().mean().item()
    print(f"restored model accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
