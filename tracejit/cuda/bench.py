"""`tracejit-bench --device cuda`: the GPU workloads of issue 14, timed on the device.

- copy: a device-to-device copy of 2^26 float32 (read + write bytes / time), the bandwidth
  the bandwidth-bound workloads are measured against;
- gelu over 2^26 float32, softmax and layernorm over (4096, 4096) float32, @jit on CUDA
  tensors: time, and bytes moved (one read, one write) as a fraction of the copy's bandwidth;
- the seed MLP step (N=64, 1000-100-10, ReLU, sum of squares, SGD on raw tensors) and the
  3x1024 MLP Adam step (batch 512, MSE): tracejit jit vs tracejit eager vs torch eager vs
  torch.compile, all on the GPU (the torch rows only where torch sees a GPU).

Every time is the median of `repeat` calls, each followed by a device synchronize. Without a
GPU (or under NUMBA_ENABLE_CUDASIM, which is far too slow to time) it prints one line saying
so and exits with status 2."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import numpy as np


def unavailable() -> str | None:
    """Why the GPU benchmark cannot run here (one line), or None."""
    from . import backend

    if backend.simulated():
        return ("NUMBA_ENABLE_CUDASIM is set: Numba's simulator runs on the CPU and cannot be "
                "timed; unset it on a machine with an NVIDIA GPU")
    why = backend.reason()
    return None if why is None else f"CUDA is not available: {why}"


def _median_time(fn: Callable[[], Any], sync: Callable[[], None], repeat: int,
                 warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def run(repeat: int | None, quick: bool, out: IO[str] = sys.stdout) -> int:
    why = unavailable()
    if why is not None:
        print(f"tracejit-bench: --device cuda needs a CUDA GPU: {why}", file=sys.stderr)
        return 2
    import tracejit as tj
    import tracejit.nn.functional as F
    from tracejit import cuda as tcuda

    from . import backend

    nc = backend.cuda()
    sync = tcuda.synchronize
    rep = repeat or (5 if quick else 20)
    n_elem = 1 << (20 if quick else 26)
    rows = 256 if quick else 4096
    dev = nc.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    out.write(f"## GPU: {name} (tracejit-bench --device cuda{' --quick' if quick else ''}, "
              f"median of {rep})\n\n")

    src = nc.device_array(n_elem, np.float32)
    dst = nc.device_array(n_elem, np.float32)
    t_copy = _median_time(lambda: dst.copy_to_device(src), sync, rep)
    bw = 2 * 4 * n_elem / t_copy
    out.write(f"device copy of {n_elem} float32: {t_copy * 1e3:.3f} ms, {bw / 1e9:.1f} GB/s\n\n")

    out.write("| workload | jit time | bytes moved / time | fraction of copy bandwidth |\n")
    out.write("|---|---|---|---|\n")

    def bound(label: str, fn: Callable[..., Any], args: list[Any], nbytes: int) -> None:
        try:
            jf = tj.jit(fn)
            t = _median_time(lambda: jf(*args), sync, rep)
            info = jf.cache_info()
            note = "" if info.fallbacks == 0 else f" (fallbacks={info.fallbacks}: not compiled)"
            out.write(f"| {label}{note} | {t * 1e3:.3f} ms | {nbytes / t / 1e9:.1f} GB/s | "
                      f"{nbytes / t / bw:.0%} |\n")
        except Exception as e:  # noqa: BLE001 (one failed row, not the whole run)
            out.write(f"| {label} | failed: {type(e).__name__}: {str(e)[:120]} | | |\n")

    x = tj.randn(n_elem, device="cuda")
    bound(f"gelu {n_elem}", F.gelu, [x], 2 * 4 * n_elem)
    m = tj.randn(rows, 4096, device="cuda")
    bound(f"softmax {rows}x4096", lambda a: tj.softmax(a, 1), [m], 2 * 4 * rows * 4096)
    w, b = tj.ones(4096, device="cuda"), tj.zeros(4096, device="cuda")
    bound(f"layernorm {rows}x4096", lambda a, w, b: F.layer_norm(a, (4096,), w, b, 1e-5),
          [m, w, b], 2 * 4 * rows * 4096)
    out.write("\n")
    _steps(out, tj, F, sync, rep, quick)
    return 0


def _steps(out: IO[str], tj: Any, fn: Any, sync: Callable[[], None], rep: int,
           quick: bool) -> None:
    torch = _torch_cuda()
    tsync = torch.cuda.synchronize if torch is not None else sync
    rng = np.random.default_rng(0)
    out.write("| step | tracejit jit | tracejit eager | torch eager | torch.compile |\n")
    out.write("|---|---|---|---|---|\n")

    def row(label: str, cells: list[str]) -> None:
        out.write(f"| {label} | " + " | ".join(cells) + " |\n")

    def timed(make: Callable[[], Callable[[], Any]], s: Callable[[], None]) -> str:
        try:
            return f"{_median_time(make(), s, rep) * 1e3:.3f} ms"
        except Exception as e:  # noqa: BLE001
            return f"failed: {type(e).__name__}: {str(e)[:80]}"

    # the seed MLP step: raw tensors, sum of squares, SGD by hand
    n, d_in, h, d_out = 64, 1000, 100, 10
    arr = {k: rng.standard_normal(s).astype(np.float32) for k, s in
           {"x": (n, d_in), "y": (n, d_out), "w1": (d_in, h), "w2": (h, d_out)}.items()}

    def seed_tj(jit: bool) -> Callable[[], Any]:
        x, y = tj.tensor(arr["x"], device="cuda"), tj.tensor(arr["y"], device="cuda")
        w1 = tj.tensor(arr["w1"], device="cuda", requires_grad=True)
        w2 = tj.tensor(arr["w2"], device="cuda", requires_grad=True)

        def step(x: Any, y: Any) -> Any:
            loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
            loss.backward()
            with tj.no_grad():
                w1.sub_(1e-6 * w1.grad)
                w2.sub_(1e-6 * w2.grad)
                w1.grad.zero_()
                w2.grad.zero_()
            return loss.detach()
        f = tj.jit(step) if jit else step
        return lambda: f(x, y)

    def seed_torch(compiled: bool) -> Callable[[], Any]:
        assert torch is not None
        x = torch.tensor(arr["x"], device="cuda")
        y = torch.tensor(arr["y"], device="cuda")
        w1 = torch.tensor(arr["w1"], device="cuda", requires_grad=True)
        w2 = torch.tensor(arr["w2"], device="cuda", requires_grad=True)

        def step(x: Any, y: Any) -> Any:
            loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
            loss.backward()
            with torch.no_grad():
                w1.sub_(1e-6 * w1.grad)
                w2.sub_(1e-6 * w2.grad)
                w1.grad.zero_()
                w2.grad.zero_()
            return loss.detach()
        f = torch.compile(step) if compiled else step
        return lambda: f(x, y)

    cells = [timed(lambda: seed_tj(True), sync), timed(lambda: seed_tj(False), sync)]
    cells += [timed(lambda: seed_torch(False), tsync), timed(lambda: seed_torch(True), tsync)] \
        if torch is not None else ["no torch GPU", "no torch GPU"]
    row("seed MLP (64, 1000-100-10, SGD)", cells)

    # the 3x1024 MLP Adam step
    b, wd = (64, 128) if quick else (512, 1024)
    xa = rng.standard_normal((b, wd)).astype(np.float32)
    ya = rng.standard_normal((b, wd)).astype(np.float32)

    def adam_tj(jit: bool) -> Callable[[], Any]:
        tj.manual_seed(0)
        model = tj.nn.Sequential(tj.nn.Linear(wd, wd), tj.nn.ReLU(), tj.nn.Linear(wd, wd),
                                 tj.nn.ReLU(), tj.nn.Linear(wd, wd)).to("cuda")
        opt = tj.optim.Adam(model.parameters(), lr=1e-3)
        x, y = tj.tensor(xa, device="cuda"), tj.tensor(ya, device="cuda")

        def step(x: Any, y: Any) -> Any:
            opt.zero_grad()
            loss = fn.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        f = tj.jit(step) if jit else step
        return lambda: f(x, y)

    def adam_torch(compiled: bool) -> Callable[[], Any]:
        assert torch is not None
        torch.manual_seed(0)
        nn = torch.nn
        model = nn.Sequential(nn.Linear(wd, wd), nn.ReLU(), nn.Linear(wd, wd), nn.ReLU(),
                              nn.Linear(wd, wd)).to("cuda")
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = torch.tensor(xa, device="cuda"), torch.tensor(ya, device="cuda")

        def step(x: Any, y: Any) -> Any:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        f = torch.compile(step) if compiled else step
        return lambda: f(x, y)

    cells = [timed(lambda: adam_tj(True), sync), timed(lambda: adam_tj(False), sync)]
    cells += [timed(lambda: adam_torch(False), tsync), timed(lambda: adam_torch(True), tsync)] \
        if torch is not None else ["no torch GPU", "no torch GPU"]
    row(f"MLP 3x{wd} Adam (batch {b}, MSE)", cells)
