"""Data-parallel training on MPI: the Iris classifier (examples/iris.py's 4-10-3 network)
trained with DistributedDataParallel, each rank taking its shard of every epoch through a
DistributedSampler, one compiled `@tracejit.jit` step per mini-batch whose gradient
all-reduce is an op of the compiled program. Rank 0 draws the progress bar, saves the model;
every rank loads it back and checks it holds the same weights.

    mpiexec -n 2 python examples/ddp_train.py --steps 300
    (as root, e.g. in a container: mpiexec --allow-run-as-root --oversubscribe -n 2 ...)

Without mpiexec it runs as a group of one. `--steps` counts epochs of mini-batches of
`--batch-size` rows per rank.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from _common import parse_args, progress, report_every
from iris import Clf, load_iris

import tracejit as torch
import tracejit.distributed as dist
from tracejit.nn.parallel import DistributedDataParallel as DDP  # noqa: N817 - the idiom
from tracejit.utils.data import DataLoader, DistributedSampler, TensorDataset


def main() -> float:
    args = parse_args(__doc__.splitlines()[0], steps=300, batch_size=25)
    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed + rank)  # different on each rank: DDP broadcasts rank 0's
    features, target, names = load_iris()
    X = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(target)
    data = TensorDataset(X, y)
    # every rank: the same number of rows per epoch (drop_last), so the steps and the
    # batches' shapes agree across ranks and one compiled program serves every step
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    model = DDP(Clf())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    @torch.jit
    def train_step(xb, yb):
        loss = loss_fn(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()  # DDP averages the gradients over the ranks here, in buckets
        optimizer.step()
        return loss

    if rank == 0:
        print(f"{world} rank(s), {len(sampler)} rows each per epoch, batches of "
              f"{args.batch_size}")
    epochs = progress(args.steps) if rank == 0 else range(args.steps)
    loss = None
    for epoch in epochs:
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        for xb, yb in loader:
            loss = train_step(xb, yb)
        if rank == 0 and loss is not None and isinstance(epochs, progress):
            epochs.set_note(f"loss {loss.item():.4f}")
            if epoch % report_every(args.steps) == 0 or epoch == args.steps - 1:
                epochs.write(f"epoch {epoch:4d}  loss {loss.item():.4f} (rank 0's last batch)")
    with torch.no_grad():
        pred = np.argmax(model(X).numpy(), 1)
    accuracy = float((pred == target).mean())
    # save from rank 0 only, then load on every rank: one file, identical replicas (on
    # several machines the directory must be one they share: TMPDIR=/shared/dir)
    path = os.path.join(tempfile.gettempdir(), "ddp_train_iris.safetensors")
    if rank == 0:
        torch.save(model.module.state_dict(), path)
        print(f"training accuracy {accuracy:.1%} on {len(pred)} flowers ({', '.join(names)}); "
              f"the step: {train_step.cache_info()}")
    dist.barrier()  # (the file is complete before anyone reads it)
    restored = Clf()
    restored.load_state_dict(torch.load(path))
    same = all(torch.equal(a, b) for a, b in zip(restored.parameters(),
                                                  model.module.parameters()))
    print(f"rank {rank}: loaded {path}: {'same' if same else 'DIFFERENT'} weights", flush=True)
    dist.barrier()
    if rank == 0:
        os.remove(path)
    dist.destroy_process_group()
    return accuracy


if __name__ == "__main__":
    main()
