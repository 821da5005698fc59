"""The Iris classifier of a user coming from Keras: a 4-10-3 network with ReLU, trained
full-batch with Adam and CrossEntropyLoss on Fisher's 150 flowers (examples/data/iris.csv),
one `@tracejit.jit` step per iteration. Prints the falling loss, the training accuracy (at
least 97% after the default steps), then the compiled step's time against the same step run
eagerly on a copy of the model, both measured in this run, and what the compiled program holds.

    python examples/iris.py --steps 1000
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np
from _common import parse_args, progress, report_every

import tracejit as torch
import tracejit.nn.functional as F  # noqa: N812 - the users' idiom

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "iris.csv")


def load_iris(path: str = DATA) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (float64, 150 x 4), labels (int64) and class names from the CSV whose header
    is `rows,features,name0,name1,...`."""
    with open(path) as f:
        header = f.readline().strip().split(",")
    rows, n_features, names = int(header[0]), int(header[1]), header[2:]
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    if table.shape != (rows, n_features + 1):
        raise ValueError(f"{path}: expected {rows} rows of {n_features + 1} columns, got "
                         f"{table.shape}")
    return table[:, :n_features], table[:, n_features].astype(np.int64), names


class Clf(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 10)
        self.fc2 = torch.nn.Linear(10, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def make_step(model, optimizer, loss_fn):
    """One training step, written as for PyTorch."""

    def train_step(X, y):  # noqa: N803 - the users' idiom
        y_pred = model(X)
        loss = loss_fn(y_pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss, y_pred

    return train_step


def compare_with_eager(step, clf, X, y, steps, jit_seconds):  # noqa: N803
    """The same step run eagerly on a copy of the trained model, against the compiled one."""
    model = copy.deepcopy(clf)
    eager = make_step(model, torch.optim.Adam(model.parameters(), lr=0.01),
                      torch.nn.CrossEntropyLoss())
    eager(X, y)  # warm
    t0 = time.perf_counter()
    for _ in range(steps):
        eager(X, y)
    eager_us = (time.perf_counter() - t0) / steps * 1e6
    jit_us = jit_seconds * 1e6
    print(f"compiled step {jit_us:.0f} us, eager step {eager_us:.0f} us: "
          f"{eager_us / jit_us:.1f}x faster compiled (this run; {steps} eager steps)")
    why = step.explain()  # print(why) lists guards, kernels, matmuls and events in full
    lines = str(why).splitlines()
    matmuls = sum(1 for ln in lines if ln.strip().startswith("entry ") and " @ " in ln)
    print(f"{lines[0]}\n  {lines[1]}: {len(why.fused)} fused kernels and {matmuls} matmuls, "
          f"{len(why.graph_breaks)} graph breaks")


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], steps=1000)
    torch.manual_seed(args.seed)
    iris_data, iris_target, names = load_iris()
    X = torch.tensor(iris_data, dtype=torch.float32)  # float64 in the file
    y = torch.tensor(iris_target)  # int64 classes
    clf = Clf()
    optimizer = torch.optim.Adam(clf.parameters(), lr=0.01)
    step = torch.jit(make_step(clf, optimizer, torch.nn.CrossEntropyLoss()))
    bar = progress(args.steps)
    timed, timed_steps = 0.0, 0
    for t in bar:
        t0 = time.perf_counter()
        loss, y_pred = step(X, y)
        if t >= 3:  # traced twice (the gradients and Adam's state appear), compiled on the third
            timed += time.perf_counter() - t0
            timed_steps += 1
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            acc = (y_pred.argmax(1) == y).float().mean().item()
            bar.write(f"step {t:4d}  loss {loss.item():.4f}  accuracy {acc:.3f}")
        bar.set_note(f"loss {loss.item():.6g}")
    with torch.no_grad():
        pred = np.argmax(clf(X).detach().numpy(), 1)
    accuracy = float((pred == iris_target).mean())
    print(pred)
    print(f"training accuracy {accuracy:.1%} on {len(pred)} flowers ({', '.join(names)})")
    if timed_steps:
        compare_with_eager(step, clf, X, y, min(200, max(timed_steps, 10)), timed / timed_steps)
    return accuracy


if __name__ == "__main__":
    main()
