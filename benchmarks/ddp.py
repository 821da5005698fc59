"""ddp: the mlp-large step (3x1024 MLP, MSE, Adam) data-parallel: global batch 512 on 2 ranks
(256 rows each, gradients averaged by DistributedDataParallel) against the same global batch
on 1 rank, in processes started by `mpiexec` (tracejit: the "mpi" backend; torch: DDP with
the Gloo backend over TCP on this machine, started the same way). Not in the default run
(it spawns 2 + 1 processes per implementation and repeat); run it with

    tracejit-bench --workload ddp            (or --quick: the 3x128, batch 64 step)

Each child checks its 3 first steps against mlp-large's float64 reference on the global batch
(norm error, mlp-large's tolerance), then times `TIMED` steps, each after a barrier, and rank
0 reports the median step. Needs mpi4py and mpiexec (pip install 'tracejit[mpi]').

Run as `python -m tracejit.benchmarks.ddp IMPL SIZE` under mpiexec, it is the child.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import mlp_large, train
from .core import Case, Inputs, UnavailableError, Workload, norm_error, register_workload

METRICS = ("step_2rank_s", "step_1rank_s", "speedup")
TIMED = 20
TIMEOUT_S = 600


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise UnavailableError("needs mpiexec and mpi4py: pip install 'tracejit[mpi]'")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise UnavailableError("needs mpi4py: pip install 'tracejit[mpi]'") from None
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(impl: str, size: str, ranks: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    threads = env.get("TRACEJIT_BENCH_THREADS", "1")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    env["TJ_BENCH_PORT"] = str(_free_port())
    cmd = [_mpiexec(), "-n", str(ranks), "--oversubscribe", "--bind-to", "none",
           sys.executable, "-m", __name__, impl, size]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                          errors="replace")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"mpiexec -n {ranks} exited {proc.returncode}: {tail}")
    got = json.loads(lines[-1])
    if got.get("skip"):
        raise UnavailableError(got["skip"])
    return got


def measure(impl: str, case: Case, inp: Inputs, quick: bool) -> dict[str, float]:
    size = "quick" if quick else "full"
    two = _launch(impl, size, 2)
    one = _launch(impl, size, 1)
    return {"step_2rank_s": two["step_s"], "step_1rank_s": one["step_s"],
            "speedup": one["step_s"] / two["step_s"],
            "correct": 1.0 if two["correct"] and one["correct"] else 0.0,
            "max_error": max(two["max_error"], one["max_error"])}


# ---- the child: one rank -------------------------------------------------------------------


def _rank_world() -> tuple[int, int]:
    r = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    w = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))
    return r, w


def _tracejit_rank(inp: Inputs, jit: bool) -> tuple[Any, Any, Any, Any]:
    import tracejit as tj
    import tracejit.distributed as dist
    from tracejit import nn, optim
    from tracejit.nn.parallel import DistributedDataParallel

    dist.init_process_group("mpi")
    model, params, opt, loss_fn = train.module_model(tj, nn, optim, inp)
    ddp = DistributedDataParallel(model)

    def step(x: Any, y: Any) -> Any:
        loss = loss_fn(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def mean_loss(loss: Any) -> float:
        t = loss.detach().clone()
        dist.all_reduce(t, op=dist.ReduceOp.AVG)
        return float(t.item())

    return (tj.jit(step) if jit else step), params, dist.barrier, mean_loss


def _torch_rank(inp: Inputs, rank: int, world: int) -> tuple[Any, Any, Any, Any]:
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise UnavailableError("torch is not installed") from None
    if not dist.is_gloo_available():
        raise UnavailableError("this torch has no Gloo backend")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['TJ_BENCH_PORT']}",
                            rank=rank, world_size=world)
    model, params, opt, loss_fn = train.module_model(torch, torch.nn, torch.optim, inp)
    ddp = torch.nn.parallel.DistributedDataParallel(model)

    def step(x: Any, y: Any) -> Any:
        loss = loss_fn(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def mean_loss(loss: Any) -> float:
        t = loss.detach().clone()
        dist.all_reduce(t)
        return float(t.item()) / world

    return step, params, dist.barrier, mean_loss


def child(impl: str, size: str) -> None:
    rank, world = _rank_world()
    inp = mlp_large.make_inputs(mlp_large.SIZES[size])
    rows = np.array_split(np.arange(inp["x"].shape[0]), world)[rank]
    try:
        if impl == "torch":
            step, params, barrier, mean_loss = _torch_rank(inp, rank, world)
            import torch

            x, y = torch.from_numpy(inp["x"][rows]), torch.from_numpy(inp["y"][rows])
        elif impl in ("tracejit-jit", "tracejit-eager"):
            step, params, barrier, mean_loss = _tracejit_rank(inp, impl == "tracejit-jit")
            import tracejit as tj

            x, y = tj.from_numpy(inp["x"][rows]), tj.from_numpy(inp["y"][rows])
        else:
            raise UnavailableError(f"no data-parallel form of {impl}")
    except UnavailableError as e:
        print(json.dumps({"skip": str(e)}), flush=True)
        os._exit(0)
    loss = None
    for _ in range(mlp_large.CHECK_STEPS):  # (the jit traces twice and compiles on step 3)
        loss = step(x, y)
    got = train.outputs(inp, mean_loss(loss), [p.detach().numpy() for p in params])
    err = norm_error(got, mlp_large.reference(inp))
    times = []
    for _ in range(TIMED):
        barrier()
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        print(json.dumps({"step_s": float(np.median(times)), "max_error": err,
                          "correct": err <= mlp_large.WORKLOAD.tolerance}), flush=True)
    sys.stdout.flush()
    barrier()  # then a normal exit: mpiexec counts a process that skips MPI_Finalize as failed


WORKLOAD = register_workload(Workload(
    name="ddp",
    description="mlp-large step data-parallel: 2 ranks x 256 rows vs 1 rank x 512 (mpiexec; "
                "torch: DDP on Gloo); not in the default run",
    sizes={"full": dict(mlp_large.SIZES["full"]), "quick": dict(mlp_large.SIZES["quick"])},
    make_inputs=mlp_large.make_inputs,
    reference=mlp_large.reference,
    impls={k: v for k, v in mlp_large.WORKLOAD.impls.items()
           if k in ("tracejit-jit", "tracejit-eager", "torch")},
    tolerance=mlp_large.WORKLOAD.tolerance,
    error=norm_error,
    repeat=3,
    check_runs=mlp_large.CHECK_STEPS,
    kind="metrics",
    metrics=METRICS,
    metric_units=("s", "s", "x"),
    measure=measure,
    in_subprocess=True,
    default=False,
))

if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
