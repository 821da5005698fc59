"""Run by tests/test_distributed.py under `mpiexec -n 2` (one process per rank); not a test
module itself. `python tests/dist_worker.py MODE`: each mode asserts what it checks and prints
`PASS MODE rank R` at the end; a failed assertion exits non-zero on every rank (the
excepthook's MPI_Abort).

Modes: collectives (all_reduce/broadcast/all_gather/barrier against NumPy), train (DDP on 2
ranks against one process on the same global batch, eagerly, with no_sync, and under @jit;
ranks identical; a graph break in the jitted step (a lazy replay); save on rank 0, load
everywhere), fail (rank 1 raises), hang (rank 1 never
reaches the collective: rank 0 must time out).
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit import nn
from tracejit.nn.parallel import DistributedDataParallel as DDP  # noqa: N817 - the idiom
from tracejit.utils.data import DistributedSampler

TOL = dict(rtol=2e-5, atol=2e-6)  # float32: the two ranks' sums are rounded in another order


def collectives(rank: int, world: int) -> None:
    # all_reduce with every op, in place, against NumPy over each rank's values
    vals = [np.array([1.5, -2.0, np.inf, -0.0, 3.0], np.float32) * (r + 1) for r in range(world)]
    want = {"SUM": sum(vals), "AVG": sum(vals) / world, "MAX": np.maximum.reduce(vals),
            "MIN": np.minimum.reduce(vals), "PRODUCT": np.multiply.reduce(vals)}
    for name, ref in want.items():
        t = tj.tensor(vals[rank])
        assert dist.all_reduce(t, op=getattr(dist.ReduceOp, name)) is None
        np.testing.assert_allclose(t.numpy(), ref, rtol=1e-6, err_msg=name)
    ints = [np.array([6, 5, 12], np.int64) + r for r in range(world)]
    for name, fn in (("BAND", np.bitwise_and), ("BOR", np.bitwise_or), ("BXOR", np.bitwise_xor)):
        t = tj.tensor(ints[rank])
        dist.all_reduce(t, op=getattr(dist.ReduceOp, name))
        assert t.tolist() == fn.reduce(ints).tolist(), name
    t = tj.tensor(ints[rank])
    dist.all_reduce(t, op=dist.ReduceOp.AVG)  # integers: rounded down
    assert t.tolist() == (sum(ints) // world).tolist()
    # NaN propagates; empty and 0-d tensors; a strided view is written through to its base
    t = tj.tensor([np.nan if rank == 0 else 1.0, 2.0])
    dist.all_reduce(t)
    assert np.isnan(t[0].item()) and t[1].item() == 2.0 * world
    e = tj.zeros(0, 3)
    dist.all_reduce(e)
    assert tuple(e.shape) == (0, 3)
    s = tj.tensor(float(rank))
    dist.all_reduce(s, op=dist.ReduceOp.MAX)
    assert s.item() == world - 1
    base = tj.zeros(3, 4)
    col = base[:, 1]
    col.fill_(rank + 1.0)
    dist.all_reduce(col)
    assert base[:, 1].tolist() == [sum(range(1, world + 1))] * 3 and base.sum().item() == \
        3 * sum(range(1, world + 1))
    # async: the Work completes in place
    t = tj.full((1000,), float(rank))
    w = dist.all_reduce(t, async_op=True)
    assert w is not None and w.wait()
    assert t.tolist() == [float(sum(range(world)))] * 1000
    # broadcast from the last rank, all_gather, barrier
    b = tj.arange(4.0) + 10 * rank
    dist.broadcast(b, src=world - 1)
    assert b.tolist() == (np.arange(4.0) + 10 * (world - 1)).tolist()
    out = [tj.zeros(2, dtype=tj.int64) for _ in range(world)]
    dist.all_gather(out, tj.tensor([rank, rank * rank]))
    assert [o.tolist() for o in out] == [[r, r * r] for r in range(world)]
    dist.barrier()
    # bad input names what was wrong
    for bad, what in ((lambda: dist.all_reduce(tj.ones(2), op="median"), "ReduceOp"),
                      (lambda: dist.all_reduce(tj.ones(2), op=dist.ReduceOp.BAND), "integer"),
                      (lambda: dist.broadcast(tj.ones(2), src=world), "src must be a rank"),
                      (lambda: dist.all_gather([tj.ones(2)], tj.ones(2)), "list of"),
                      (lambda: dist.all_reduce([1.0]), "expected a tensor")):
        try:
            bad()
        except (ValueError, TypeError) as err:
            assert what in str(err), (what, err)
        else:
            raise AssertionError(f"no error for {what}")
    # the all_reduce op compiles into a jitted function; values change between calls
    @tj.jit
    def f(x: tj.Tensor) -> tj.Tensor:
        y = x * 2
        dist.all_reduce(y)
        return y + 1

    for k in range(4):
        got = f(tj.full((5,), float(rank + k)))
        assert got.tolist() == [2.0 * sum(r + k for r in range(world)) + 1] * 5, (k, got)
    info = f.cache_info()
    # one trace; the calls after it ran the compiled program (compiled now or loaded from the
    # disk cache), never eagerly
    assert info.traces == 1 and info.hits == 3 and info.fallbacks == 0, info
    assert "all_reduce[op='SUM']" in f.ir(tj.ones(5))
    assert "_all_reduce(" in f.source(tj.ones(5))


def make_model(seed: int) -> nn.Module:
    tj.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def flat_params(m: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in m.parameters()])


def same_on_every_rank(a: np.ndarray, world: int) -> None:
    got = [tj.zeros(a.shape, dtype=tj.float32) for _ in range(world)]
    dist.all_gather(got, tj.tensor(a))
    for r, g in enumerate(got):
        assert np.array_equal(g.numpy(), a), f"rank {r}'s parameters differ from this rank's"


def train(rank: int, world: int) -> None:
    steps, local = 6, 4
    rng = np.random.default_rng(0)  # the same data on every rank
    X = rng.standard_normal((steps, local * world, 6)).astype(np.float32)
    Y = rng.standard_normal((steps, local * world, 3)).astype(np.float32)
    # this rank's rows of each global batch, as a DistributedSampler without shuffling deals
    mine = list(DistributedSampler(range(local * world), world, rank, shuffle=False))
    assert mine == list(range(rank, local * world, world))
    loss_fn = nn.MSELoss()

    def reference(n_steps: int, micro: int = 1) -> nn.Module:
        """One process, the whole global batch (micro: micro-batches per rank, summed)."""
        model = make_model(0)
        opt = tj.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for s in range(n_steps):
            opt.zero_grad()
            for r in range(world):  # the mean of the ranks' gradients
                rows = list(range(r, local * world, world))
                for part in np.array_split(np.array(rows), micro):
                    x, y = tj.tensor(X[s][part]), tj.tensor(Y[s][part])
                    (loss_fn(model(x), y) / world).backward()
            opt.step()
        return model

    # eager DDP: each rank starts from a different init, which the wrapper replaces by rank 0's
    model = make_model(rank)
    ddp = DDP(model, bucket_cap_mb=0.0005)  # ~500 bytes: several buckets
    assert len(ddp.bucket_sizes()) > 1 and sum(ddp.bucket_sizes()) == 6
    assert ddp.module is model
    np.testing.assert_array_equal(flat_params(model), flat_params(make_model(0)))
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for s in range(steps):
        opt.zero_grad()
        loss_fn(ddp(tj.tensor(X[s][mine])), tj.tensor(Y[s][mine])).backward()
        opt.step()
    ref = reference(steps)
    np.testing.assert_allclose(flat_params(model), flat_params(ref), **TOL)
    same_on_every_rank(flat_params(model), world)

    # no_sync: two micro-batches, the first accumulated locally only
    model = make_model(rank)
    ddp = DDP(model)
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for s in range(3):
        opt.zero_grad()
        first, second = np.array_split(np.array(mine), 2)
        with ddp.no_sync():
            loss_fn(ddp(tj.tensor(X[s][first])), tj.tensor(Y[s][first])).backward()
        loss_fn(ddp(tj.tensor(X[s][second])), tj.tensor(Y[s][second])).backward()
        opt.step()
    np.testing.assert_allclose(flat_params(model), flat_params(reference(3, micro=2)), **TOL)
    same_on_every_rank(flat_params(model), world)

    # the whole step under @jit: forward, backward, one all_reduce node per bucket, SGD
    model = make_model(rank)
    ddp = DDP(model, bucket_cap_mb=0.0005)
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)

    @tj.jit
    def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        loss = loss_fn(ddp(x), y)
        loss.backward()
        opt.step()
        return loss

    for s in range(steps):
        step(tj.tensor(X[s][mine]), tj.tensor(Y[s][mine]))
    np.testing.assert_allclose(flat_params(model), flat_params(ref), **TOL)
    same_on_every_rank(flat_params(model), world)
    info = step.cache_info()
    # (two traces: momentum's buffers are made by the first step, as torch's)
    assert info.traces <= 2 and info.hits >= steps - 2 and info.fallbacks == 0 and \
        info.replays == 0, info
    ir = step.ir(tj.tensor(X[0][mine]), tj.tensor(Y[0][mine]))
    n_reduce = ir.count("all_reduce[op='AVG']")
    assert n_reduce == len(ddp.bucket_sizes()), (n_reduce, ddp.bucket_sizes(), ir)
    # each bucket's all_reduce comes before a matmul of the earlier layers' backward
    lines = ir.splitlines()
    first = next(i for i, ln in enumerate(lines) if "all_reduce" in ln)
    assert any("matmul" in ln for ln in lines[first:]), ir

    # a graph break in the step (loss.item()): a lazy replay, whose segments hold the
    # all_reduce nodes; same parameters as the eager DDP run
    import warnings

    model = make_model(rank)
    ddp = DDP(model, bucket_cap_mb=0.0005)
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    logged: list[float] = []

    @tj.jit
    def logging_step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        loss = loss_fn(ddp(x), y)
        logged.append(loss.item())
        loss.backward()
        opt.step()
        return loss

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the graph break's warning)
        for s in range(steps):
            logging_step(tj.tensor(X[s][mine]), tj.tensor(Y[s][mine]))
    np.testing.assert_allclose(flat_params(model), flat_params(ref), **TOL)
    same_on_every_rank(flat_params(model), world)
    assert logging_step.cache_info().replays >= 1 and len(logged) == steps

    # save from rank 0 only, load on every rank (the test gives both ranks one directory)
    path = os.path.join(os.environ.get("TJ_DIST_DIR", tempfile.gettempdir()), "ddp.safetensors")
    if rank == 0:
        tj.save(ddp.module.state_dict(), path)
    dist.barrier()
    fresh = make_model(100 + rank)
    fresh.load_state_dict(tj.load(path))
    np.testing.assert_array_equal(flat_params(fresh), flat_params(model))
    assert all(k.startswith("module.") for k in ddp.state_dict())


def fail(rank: int, world: int) -> None:
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    dist.all_reduce(tj.ones(3))  # never completes: rank 1 is gone
    time.sleep(60)


def hang(rank: int, world: int) -> None:
    if rank == 1:
        time.sleep(60)  # alive, but never reaches the collective
    dist.all_reduce(tj.ones(3))


def main() -> None:
    mode = sys.argv[1]
    timeout = datetime.timedelta(seconds=float(sys.argv[2])) if len(sys.argv) > 2 else None
    dist.init_process_group("mpi", timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    assert dist.is_initialized() and world >= 2, "run me with mpiexec -n 2"
    {"collectives": collectives, "train": train, "fail": fail, "hang": hang}[mode](rank, world)
    dist.barrier()
    print(f"PASS {mode} rank {rank}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
