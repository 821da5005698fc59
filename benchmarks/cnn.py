"""cnn: one training step of the digits CNN (examples/digits_cnn.py's model) on a batch of 64
real 8x8 digits: Conv2d(1, 16, 3, padding=1), ReLU, MaxPool2d(2), Conv2d(16, 32, 3, padding=1),
ReLU, MaxPool2d(2), Flatten, Linear(128, 10); cross entropy; Adam (lr=1e-3).

tracejit and torch run the same nn.Module program; tracejit-jit jits the whole step (forward,
backward, optimizer), torch.compile compiles the model as users apply it. The check runs three
steps and compares the last loss and every parameter's total update with a float64 NumPy step
written by hand here (im2col by sliding windows, max pooling's gradient to the first maximum of
each window, as torch's CPU kernel does), in relative L2 norm (Adam's first steps move weights
whose gradient is ~0 by a float32-rounding-chosen sign, as in mlp-large).
"""

from __future__ import annotations

import gzip
from importlib import resources
from typing import Any

import numpy as np

from . import peers
from .core import Case, Inputs, Outputs, Workload, norm_error, register_workload
from .jitprobe import JitProbe
from .train import NumpyAdam, cross_entropy_grad, outputs

CHECK_STEPS = 3
SIZES = {"full": {"batch": 64, "c1": 16, "c2": 32},
         "quick": {"batch": 16, "c1": 4, "c2": 8}}
NAMES = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (1797, 1, 8, 8) scaled to [0, 1], labels int64) from the gzip CSV of 64
    pixel values 0..16 then the label, shipped with the package (data/digits.csv.gz, a copy of
    examples/data's) so an installed tracejit-bench finds it."""
    path = resources.files(__package__).joinpath("data/digits.csv.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(f"{path}: expected rows of 65 values (64 pixels, label), got "
                         f"{table.shape}")
    images = (table[:, :64] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return images, table[:, 64].astype(np.int64)


def make_inputs(size: dict[str, Any]) -> Inputs:
    images, labels = load_digits()
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(labels))[:size["batch"]]
    c1, c2 = size["c1"], size["c2"]

    def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    params = [uniform((c1, 1, 3, 3), 9), uniform((c1,), 9),
              uniform((c2, c1, 3, 3), 9 * c1), uniform((c2,), 9 * c1),
              uniform((10, 4 * c2), 4 * c2), uniform((10,), 4 * c2)]
    return {"x": images[pick], "y": labels[pick], "params": params, "lr": 1e-3}


# ---- NumPy by hand (float32 peer, and the float64 reference) -------------------------------

def _conv_fwd(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3, stride 1, padding 1: (output, the windows for the backward)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # n c h w i j
    n, c, h, ww = x.shape
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * ww, c * 9)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(n, h, ww, -1).transpose(0, 3, 1, 2), cols


def _conv_bwd(g: np.ndarray, cols: np.ndarray, w: np.ndarray,
              shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, c, h, ww = shape
    g2 = g.transpose(0, 2, 3, 1).reshape(n * h * ww, -1)
    gw = (g2.T @ cols).reshape(w.shape)
    gb = g2.sum(axis=0)
    gcols = (g2 @ w.reshape(w.shape[0], -1)).reshape(n, h, ww, c, 3, 3)
    gxp = np.zeros((n, c, h + 2, ww + 2), dtype=g.dtype)
    for i in range(3):
        for j in range(3):
            gxp[:, :, i:i + h, j:j + ww] += gcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return gxp[:, :, 1:-1, 1:-1], gw, gb


def _pool_fwd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max pooling: (output, the index in each window of its first maximum)."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)
    return np.take_along_axis(win, arg[..., None], -1)[..., 0], arg


def _pool_bwd(g: np.ndarray, arg: np.ndarray) -> np.ndarray:
    n, c, h, w = g.shape
    win = np.zeros((n, c, h, w, 4), dtype=g.dtype)
    np.put_along_axis(win, arg[..., None], g[..., None], -1)
    return win.reshape(n, c, h, w, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


def numpy_loss_grads(x: np.ndarray, y: np.ndarray,
                     params: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    w1, b1, w2, b2, wf, bf = params
    z1, cols1 = _conv_fwd(x, w1, b1)
    p1, arg1 = _pool_fwd(np.maximum(z1, 0))
    z2, cols2 = _conv_fwd(p1, w2, b2)
    p2, arg2 = _pool_fwd(np.maximum(z2, 0))
    flat = p2.reshape(len(x), -1)
    loss, g = cross_entropy_grad(flat @ wf.T + bf, y)
    gwf, gbf = g.T @ flat, g.sum(axis=0)
    gp2 = (g @ wf).reshape(p2.shape)
    gz2 = _pool_bwd(gp2, arg2) * (z2 > 0)
    gp1, gw2, gb2 = _conv_bwd(gz2, cols2, w2, p1.shape)
    gz1 = _pool_bwd(gp1, arg1) * (z1 > 0)
    _, gw1, gb1 = _conv_bwd(gz1, cols1, w1, x.shape)
    return loss, [gw1, gb1, gw2, gb2, gwf, gbf]


def reference(inp: Inputs) -> Outputs:
    x = inp["x"].astype(np.float64)
    params = [p.astype(np.float64) for p in inp["params"]]
    opt = NumpyAdam(params, inp["lr"])
    loss = 0.0
    for _ in range(CHECK_STEPS):
        loss, grads = numpy_loss_grads(x, inp["y"], params)
        opt.step(grads)
    return outputs(inp, loss, params)


def numpy_impl(inp: Inputs) -> Case:
    """The same step by hand in float32 NumPy (im2col and BLAS)."""
    params = [p.copy() for p in inp["params"]]
    opt = NumpyAdam(params, inp["lr"])
    last = [0.0]

    def run() -> float:
        last[0], grads = numpy_loss_grads(inp["x"], inp["y"], params)
        opt.step(grads)
        return last[0]

    return Case(run, lambda: outputs(inp, last[0], params))


# ---- tracejit and torch: one nn.Module program ---------------------------------------------

def build_model(lib: Any, inp: Inputs) -> Any:
    """The digits CNN as users write it, holding the inputs' weights."""
    nn = lib.nn
    c1, c2 = inp["params"][0].shape[0], inp["params"][2].shape[0]

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * c2, 10)

        def forward(self, x: Any) -> Any:
            x = self.pool(self.conv1(x).relu())
            x = self.pool(self.conv2(x).relu())
            return self.fc(x.flatten(1))

    model = DigitsCNN()
    with lib.no_grad():
        for (name, p), a in zip(model.named_parameters(), inp["params"]):
            if tuple(p.shape) != a.shape:
                raise ValueError(f"cnn: parameter {name} is {tuple(p.shape)}, want {a.shape}")
            p.copy_(lib.from_numpy(a.copy()))
    return model


def _module_case(lib: Any, tensor: Any, inp: Inputs, jit: bool = False,
                 compile_model: bool = False) -> Case:
    model = build_model(lib, inp)
    params = [p for _, p in model.named_parameters()]
    opt = lib.optim.Adam(model.parameters(), lr=inp["lr"])
    loss_fn = lib.nn.CrossEntropyLoss()
    fwd = lib.compile(model) if compile_model else model

    def step(x: Any, y: Any) -> Any:
        loss = loss_fn(fwd(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    run_step = lib.jit(step) if jit else step
    x, y = tensor(lib, inp["x"]), tensor(lib, inp["y"])
    last: list[Any] = [None]

    def run() -> Any:
        last[0] = run_step(x, y)
        return last[0]

    def output() -> Outputs:
        return outputs(inp, float(last[0].item()), [p.detach().numpy() for p in params])

    return Case(run, output, jit=JitProbe(run_step) if jit else None)


def tracejit_jit(inp: Inputs) -> Case:
    return _module_case(peers.tracejit_jit(), peers.tj_tensor, inp, jit=True)


def tracejit_eager(inp: Inputs) -> Case:
    return _module_case(peers.tracejit(), peers.tj_tensor, inp)


def torch_eager(inp: Inputs) -> Case:
    return _module_case(peers.torch(), peers.torch_tensor, inp)


def torch_compile(inp: Inputs) -> Case:
    """torch.compile on the model (forward and, through AOTAutograd, backward), the loss and
    Adam eager, as train.torch_case does for the MLPs."""
    return _module_case(peers.torch_compile(), peers.torch_tensor, inp, compile_model=True)


WORKLOAD = register_workload(Workload(
    name="cnn",
    description="digits CNN train step (conv-relu-pool x2, linear), batch 64 of 8x8 digits, "
                "cross entropy, Adam (one step per call)",
    sizes=SIZES,
    make_inputs=make_inputs,
    reference=reference,
    impls={"tracejit-jit": tracejit_jit, "tracejit-eager": tracejit_eager, "numpy": numpy_impl,
           "torch": torch_eager, "torch-compile": torch_compile},
    tolerance=2e-2,
    error=norm_error,
    repeat=15,
    check_runs=CHECK_STEPS,
))
