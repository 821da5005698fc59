"""DistributedDataParallel: one model replica per process, gradients averaged over the ranks.

Construction broadcasts rank 0's parameters and buffers to every rank (after checking that
every rank holds the same parameter shapes), so the replicas start identical; the same
averaged gradients then keep them identical under any deterministic optimizer.

Gradients are averaged in buckets, as torch's reducer does: parameters in reverse
registration order (roughly the order backward produces their gradients), at most
`bucket_cap_mb` per bucket (the first at most 1 MiB, so communication starts early), one
dtype each.
A hook after each parameter's gradient accumulation counts the bucket's ready gradients; when
a bucket is complete its gradients are copied into one flat buffer and all-reduced with
ReduceOp.AVG, while backward goes on computing the earlier layers' gradients:

- eagerly, the flat buffer's nonblocking MPI all-reduce is started at once and polled by later
  hooks; the last bucket's hook waits for all of them and copies the averages into `.grad`;
- inside `@tracejit.jit` (or a lazy replay), the flatten, the `all_reduce` op and the copies
  back are ordinary tensor ops, so the compiled step holds one `all_reduce` node per bucket,
  placed right after the kernels that compute that bucket's last gradient and before the
  kernels of the earlier layers' gradients (the driver calls it between kernels; it does not
  yet run concurrently with the kernels after it).

`no_sync()` skips the averaging (gradients accumulate locally in `.grad`); the first backward
after it averages the accumulated sums, as torch's does.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ... import distributed as dist
from ...autograd import _edge, no_grad
from ...dispatch import STATE
from ...distributed import _backend
from ...functional import cat
from ...tensor import Tensor
from ..module import Module

FIRST_BUCKET_BYTES = 1024 * 1024  # torch's dist._DEFAULT_FIRST_BUCKET_BYTES


class _Reducer:
    """The per-backward bookkeeping (a plain object, not a Module attribute that changes: a
    Module attribute assigned every step would make @jit entries retrace)."""

    def __init__(self, buckets: list[list[Tensor]]) -> None:
        self.buckets = buckets
        self.index = {id(p): b for b, ps in enumerate(buckets) for p in ps}
        self.ready: list[set[int]] = [set() for _ in buckets]
        self.launched: list[bool] = [False] * len(buckets)
        self.inflight: list[tuple[Any, int, np.ndarray]] = []  # eager: (request, bucket, flat)

    def reset(self) -> None:
        self.ready = [set() for _ in self.buckets]
        self.launched = [False] * len(self.buckets)
        self.inflight = []

    @property
    def started(self) -> bool:
        return any(self.ready)


def _tracing() -> bool:
    return STATE.tracer is not None


def _bucketize(params: list[Tensor], cap_bytes: int) -> list[list[Tensor]]:
    buckets: list[list[Tensor]] = []
    sizes: list[int] = []
    open_by_dtype: dict[Any, int] = {}
    for p in reversed(params):
        nbytes = p.numel() * p.dtype.itemsize
        b = open_by_dtype.get(p.dtype)
        limit = min(FIRST_BUCKET_BYTES, cap_bytes) if b == 0 else cap_bytes
        if b is None or sizes[b] + nbytes > max(limit, 1) and buckets[b]:
            b = open_by_dtype[p.dtype] = len(buckets)
            buckets.append([])
            sizes.append(0)
        buckets[b].append(p)
        sizes[b] += nbytes
    return buckets


class DistributedDataParallel(Module):
    """torch.nn.parallel.DistributedDataParallel over tracejit.distributed's default group.

    >>> # under mpiexec -n 2, after dist.init_process_group("mpi"):
    >>> # ddp = DistributedDataParallel(model); loss_fn(ddp(x), y).backward()
    """

    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None,
                 dim: int = 0, broadcast_buffers: bool = True, process_group: Any = None,
                 bucket_cap_mb: float | None = None, find_unused_parameters: bool = False,
                 check_reduction: bool = False, gradient_as_bucket_view: bool = False,
                 static_graph: bool = False, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected a tracejit.nn.Module, got "
                            f"{type(module).__name__}")
        if not dist.is_initialized():
            raise RuntimeError("DistributedDataParallel: the default process group has not "
                               "been initialized; call tracejit.distributed.init_process_group("
                               "backend='mpi') first (under mpiexec)")
        if process_group is not None and process_group is not _backend.WORLD:
            raise ValueError("DistributedDataParallel: only the default process group is "
                             "supported (process_group=None)")
        if device_ids not in (None, []) or output_device is not None:
            raise ValueError("DistributedDataParallel: device_ids and output_device are for "
                             "CUDA modules; tracejit's CPU modules take neither (leave them out)")
        if find_unused_parameters:
            raise NotImplementedError(
                "DistributedDataParallel(find_unused_parameters=True) is not supported yet: "
                "every parameter that requires grad must get a gradient in each backward "
                "(freeze the unused ones with p.requires_grad_(False) before wrapping)")
        if gradient_as_bucket_view:
            raise NotImplementedError("DistributedDataParallel(gradient_as_bucket_view=True) is "
                                      "not supported yet; leave it False")
        if bucket_cap_mb is None:
            bucket_cap_mb = 25.0
        if not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive "
                             f"number, got {bucket_cap_mb!r}")
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.bucket_cap_mb = bucket_cap_mb
        self.dim = dim
        self.require_backward_grad_sync = True
        self.static_graph = static_graph
        params: list[Tensor] = [p for p in module.parameters() if p.requires_grad]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("DistributedDataParallel: a parameter appears twice in the module")
        self._check_same_params(params)
        self._sync_module_states()
        buckets = _bucketize(params, int(bucket_cap_mb * 1024 * 1024))
        object.__setattr__(self, "_reducer", _Reducer(buckets))
        object.__setattr__(self, "_hook_handles", [])
        for p in params:
            node, _ = _edge(p)
            assert node is not None
            self._hook_handles.append(node.register_hook(self._make_hook(p)))

    # ---- construction ------------------------------------------------------------------------

    def _check_same_params(self, params: list[Tensor]) -> None:
        desc = ";".join(f"{tuple(p.shape)}{p.dtype.name}" for p in params).encode()
        mine = np.array([len(params), sum(p.numel() for p in params), zlib.crc32(desc)],
                        np.int64)
        every = _backend.all_gather_array(mine)
        for r, row in enumerate(every):
            if not np.array_equal(row, every[0]):
                raise RuntimeError(
                    f"DistributedDataParallel: rank {r} holds a different model than rank 0 "
                    f"({row[0]} parameters, {row[1]} elements, against {every[0][0]} and "
                    f"{every[0][1]}): every rank must build the same module")

    def _sync_module_states(self) -> None:
        """Rank 0's parameters and buffers on every rank."""
        with no_grad():
            for t in list(self.module.parameters()) + list(self.module.buffers()):
                a = t._data
                if a.flags.c_contiguous and a.flags.writeable:
                    _backend.broadcast_array(a, 0)
                else:
                    b = np.ascontiguousarray(a)
                    _backend.broadcast_array(b, 0)
                    a[...] = b
                t._version.v += 1

    # ---- forward -----------------------------------------------------------------------------

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        red = self._reducer
        if red.started and self.require_backward_grad_sync:
            names = {id(p): n for n, p in self.module.named_parameters()}
            shown = [names.get(id(p), "?") for b, ps in enumerate(red.buckets) for p in ps
                     if id(p) not in red.ready[b]]
            red.reset()
            raise RuntimeError(
                "DistributedDataParallel: expected to have finished reduction in the prior "
                "iteration before starting a new one: these parameters received no gradient "
                f"in the last backward: {', '.join(shown)}. Every parameter that "
                "requires grad must take part in the loss (freeze the others with "
                "requires_grad_(False) before wrapping the module)")
        red.reset()
        if self.broadcast_buffers:
            self._broadcast_buffers()
        return self.module(*inputs, **kwargs)

    def _broadcast_buffers(self) -> None:
        bufs = [b for b in self.module.buffers() if b is not None]
        if not bufs or _backend.current().size == 1:
            return
        if not _tracing():
            with no_grad():
                for b in bufs:
                    if b._data.flags.c_contiguous:
                        _backend.broadcast_array(b._data, 0)
                        b._version.v += 1
            return
        # traced: rank 0's value by a SUM all-reduce that the other ranks feed zeros (exact:
        # x + 0 is x), so the broadcast stays in the compiled program
        with no_grad():
            rank0 = _backend.current().rank == 0
            for b in bufs:
                dist.all_reduce(b if rank0 else b.mul_(0), op=dist.ReduceOp.SUM)

    # ---- the gradient hooks ------------------------------------------------------------------

    def _make_hook(self, p: Tensor) -> Any:
        def hook(outs: Any, grads_in: Any) -> None:
            if not self.require_backward_grad_sync or p.grad is None:
                return
            red = self._reducer
            b = red.index[id(p)]
            red.ready[b].add(id(p))
            if not _tracing():
                for req, _, _ in red.inflight:  # let MPI progress the buckets in flight
                    req.Test()
            if len(red.ready[b]) == len(red.buckets[b]) and not red.launched[b]:
                red.launched[b] = True
                self._reduce_bucket(b)
                if all(red.launched):
                    self._finish()

        return hook

    def _reduce_bucket(self, b: int) -> None:
        red = self._reducer
        ps = red.buckets[b]
        if _tracing():  # tensor ops: recorded into the trace, one all_reduce node per bucket
            with no_grad():
                flat = cat([p.grad.reshape(-1) for p in ps])
                dist.all_reduce(flat, op=dist.ReduceOp.AVG)
                off = 0
                for p in ps:
                    n = p.numel()
                    p.grad.copy_(flat[off:off + n].view(p.shape))
                    off += n
            return
        buf = np.concatenate([p.grad._data.reshape(-1) for p in ps])
        g = _backend.current()
        red.inflight.append((_backend.start_all_reduce(g, buf, "SUM"), b, buf))

    def _finish(self) -> None:
        red = self._reducer
        g = _backend.current()
        for req, b, flat in red.inflight:
            _backend.wait(g, req, f"DistributedDataParallel's gradient all_reduce (bucket {b}, "
                                  f"{flat.size} x {flat.dtype.name})")
            _backend.finish_all_reduce(g, flat, "AVG")
            off = 0
            for p in red.buckets[b]:
                n = p.numel()
                grad = p.grad
                np.copyto(grad._data, flat[off:off + n].reshape(grad._data.shape))
                grad._version.v += 1
                off += n
        red.reset()

    # ---- torch's API -------------------------------------------------------------------------

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside only accumulate gradients locally; the first backward after
        the block averages the accumulated gradients."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    def bucket_sizes(self) -> list[int]:
        """The number of parameters in each gradient bucket, in reduction order."""
        return [len(b) for b in self._reducer.buckets]
