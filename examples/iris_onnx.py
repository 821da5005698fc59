"""The static graph, saved and run without the Python that built it: train the Iris classifier
(examples/iris.py's 4-10-3 network, a `@tracejit.jit` Adam step), export its inference to ONNX
with `tracejit.onnx.export`, then run the file in onnxruntime in a fresh Python process that
never imports tracejit, and compare its predictions with tracejit's.

Needs `pip install 'tracejit[onnx]' onnxruntime`.

    python examples/iris_onnx.py --steps 500
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
from _common import parse_args, progress
from iris import Clf, load_iris

import tracejit as torch
import tracejit.nn.functional as F  # noqa: N812 - the users' idiom

# what the other process runs: numpy and onnxruntime only (any ONNX runtime, in any language,
# could take its place)
RUNNER = """
import sys
import numpy as np
import onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
probs, labels = sess.run(None, {"x": np.load(sys.argv[2])})
np.save(sys.argv[3], labels)
assert "tracejit" not in sys.modules
print(f"onnxruntime {ort.__version__}: inputs {[i.name for i in sess.get_inputs()]}, "
      f"outputs {[o.name for o in sess.get_outputs()]}")
"""


class Predictor(torch.nn.Module):
    """What is shipped: class probabilities and the predicted class."""

    def __init__(self, clf: Clf) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.clf(x)
        return F.softmax(logits, dim=1), logits.argmax(dim=1)


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], steps=500)
    torch.manual_seed(args.seed)
    features, targets, names = load_iris()
    X, y = torch.tensor(features, dtype=torch.float32), torch.tensor(targets)
    clf = Clf()
    optimizer = torch.optim.Adam(clf.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    @torch.jit
    def step(x, y):
        optimizer.zero_grad()
        loss = loss_fn(clf(x), y)
        loss.backward()
        optimizer.step()
        return loss

    bar = progress(args.steps)
    for _ in bar:
        loss = step(X, y)
    print(f"trained {args.steps} steps, loss {loss.item():.4f}")

    predictor = Predictor(clf)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "iris.onnx")
        model = torch.onnx.export(predictor, (X,), path, output_names=["probs", "label"])
        print(f"exported {path.rsplit(os.sep, 1)[-1]}: {len(model.graph.node)} ONNX nodes, "
              f"initializers {[i.name for i in model.graph.initializer]}, "
              f"{os.path.getsize(path)} bytes")
        np.save(os.path.join(tmp, "x.npy"), features.astype(np.float32))
        out = os.path.join(tmp, "labels.npy")
        run = subprocess.run([sys.executable, "-c", RUNNER, path, os.path.join(tmp, "x.npy"),
                              out], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"onnxruntime failed:\n{run.stderr}")
        print(run.stdout.strip())
        theirs = np.load(out)
    with torch.no_grad():
        ours = predictor(X)[1].numpy()
    agree = int((theirs == ours).sum())
    accuracy = float((theirs == targets).mean())
    print(f"onnxruntime agrees with tracejit on {agree}/{len(ours)} flowers; accuracy "
          f"{accuracy:.1%} ({', '.join(names)})")
    return accuracy


if __name__ == "__main__":
    main()
