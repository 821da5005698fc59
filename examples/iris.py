"""The Iris classifier of a user coming from Keras: a 4-10-3 network with ReLU, trained
full-batch with Adam and CrossEntropyLoss on Fisher's 150 flowers (examples/data/iris.csv).
Prints the falling loss and the training accuracy (at least 97% after the default steps).

    python examples/iris.py --steps 1000
"""

from __future__ import annotations

import os

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


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], steps=1000)
    torch.manual_seed(args.seed)
    iris_data, iris_target, names = load_iris()
    X = torch.tensor(iris_data, dtype=torch.float32)  # float64 in the file
    y = torch.tensor(iris_target)  # int64 classes
    clf = Clf()
    optimizer = torch.optim.Adam(clf.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    bar = progress(args.steps)
    for t in bar:
        y_pred = clf(X)
        loss = loss_fn(y_pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if t % report_every(args.steps) == 0 or t == args.steps - 1:
            acc = (y_pred.argmax(1) == y).float().mean().item()
            bar.write(f"step {t:4d}  loss {loss.item():.4f}  accuracy {acc:.3f}")
        bar.set_note(f"loss {loss.item():.6g}")
    with torch.no_grad():
        pred = np.argmax(clf(X).detach().numpy(), 1)
    accuracy = float((pred == iris_target).mean())
    print(pred)
    print(f"training accuracy {accuracy:.1%} on {len(pred)} flowers ({', '.join(names)})")
    return accuracy


if __name__ == "__main__":
    main()
