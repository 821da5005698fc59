"""The Iris classifier of examples/iris.py, with the whole training run as one compiled call:
`tracejit.fori_loop` over the Adam steps, the body doing forward, backward, `opt.step()`
and `zero_grad()` (the parameters and Adam's state are the loop's carried state, written
back when the call returns). Prints the loss and accuracy, the compiled call's time against
the same steps run eagerly, and the program's loop.

    python examples/iris_fori_loop.py --steps 1000
"""

from __future__ import annotations

import copy
import time

import numpy as np
from _common import parse_args
from iris import Clf, load_iris

import tracejit as torch


def make_train(model, X, y):  # noqa: N803 - the users' idiom
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def body(i, last_loss):
        loss = loss_fn(model(X), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    def train(steps):  # steps: a 0-d int tensor, so every count runs the same program
        return torch.fori_loop(0, steps, body, torch.tensor(0.0))

    return train


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], steps=1000)
    torch.manual_seed(args.seed)
    iris_data, iris_target, names = load_iris()
    X = torch.tensor(iris_data, dtype=torch.float32)
    y = torch.tensor(iris_target)
    clf = Clf()
    eager_clf = copy.deepcopy(clf)
    train = torch.jit(make_train(clf, X, y))
    # The first two steps are traced (Adam's state appears on the first, so it traces again);
    # every other step runs in one compiled call.
    warm = min(2, args.steps)
    for _ in range(warm):
        loss = train(torch.tensor(1))
        print(f"traced step: loss {float(loss):.4f}")
    train(torch.tensor(0))  # compiles the program (zero trips: the model is unchanged)
    t0 = time.perf_counter()
    loss = train(torch.tensor(args.steps - warm))
    seconds = time.perf_counter() - t0
    print(f"step {args.steps - 1:4d}  loss {float(loss):.4f}  ({args.steps - warm} Adam steps in "
          f"one compiled call, {seconds * 1e3:.1f} ms)")
    with torch.no_grad():
        pred = np.argmax(clf(X).numpy(), 1)
    accuracy = float((pred == iris_target).mean())
    print(f"training accuracy {accuracy:.1%} on {len(pred)} flowers ({', '.join(names)})")
    eager = make_train(eager_clf, X, y)
    t0 = time.perf_counter()
    eager_loss = eager(torch.tensor(args.steps))
    eager_seconds = time.perf_counter() - t0
    info = train.cache_info()
    print(f"eagerly: loss {float(eager_loss):.4f} after {args.steps} steps in "
          f"{eager_seconds * 1e3:.1f} ms; compiled {info.traces} traces, {info.hits} compiled "
          f"calls, {len(train.explain().graph_breaks)} graph breaks")
    loop = [ln for ln in train.ir(torch.tensor(3)).splitlines() if "= while" in ln]
    print("the program's loop:", loop[0].strip()[:90] + " ...")
    return accuracy


if __name__ == "__main__":
    main()
