"""tracejit.distributed: process groups and collectives with torch.distributed's names.

    import tracejit.distributed as dist
    dist.init_process_group(backend="mpi")     # under `mpiexec -n 2 python train.py`
    dist.all_reduce(t, op=dist.ReduceOp.SUM)   # in place, as torch's

The "mpi" backend runs on mpi4py (`pip install 'tracejit[mpi]'`); rank and world size are the
MPI launcher's (its environment says them: OMPI_COMM_WORLD_RANK, PMI_RANK, ...). "nccl" is
designed, not built: it needs tracejit's CUDA backend, which does not exist yet, so it raises
an error saying so. Every collective polls a nonblocking MPI request with the group's
`timeout`: a rank that fails or never arrives makes the others raise `DistBackendError`, and an
uncaught exception on any rank calls MPI_Abort, so the whole job exits with an error rather
than hangs.

`all_reduce` is an op of the graph (`all_reduce` in ops/collective.py), so it compiles inside
`@tracejit.jit`; `broadcast`, `all_gather` and `barrier` inside a trace are graph breaks (they
run eagerly between compiled segments).
"""

from __future__ import annotations

import datetime
import enum
import os
from typing import Any

import numpy as np

from ..autograd import assign_inplace, no_grad
from ..dispatch import STATE as _STATE
from ..dispatch import dispatch as _dispatch_op
from ..ops.collective import ALL_REDUCE
from ..tensor import Tensor
from . import _backend
from ._backend import DistBackendError, DistError

__all__ = [
    "ReduceOp", "Work", "DistError", "DistBackendError", "GroupMember", "init_process_group",
    "destroy_process_group", "is_initialized", "is_available", "is_mpi_available",
    "is_nccl_available", "get_rank", "get_world_size", "get_backend", "barrier", "all_reduce",
    "broadcast", "all_gather", "default_pg_timeout",
]

# torch's default for the non-NCCL backends; TRACEJIT_DIST_TIMEOUT (seconds) overrides it
default_pg_timeout = datetime.timedelta(minutes=30)


class ReduceOp(enum.Enum):
    """torch.distributed.ReduceOp. AVG of integers rounds down, as torch's Gloo does."""

    SUM = "SUM"
    AVG = "AVG"
    PRODUCT = "PRODUCT"
    MIN = "MIN"
    MAX = "MAX"
    BAND = "BAND"
    BOR = "BOR"
    BXOR = "BXOR"

    def __repr__(self) -> str:
        return f"<RedOpType.{self.name}>"


class GroupMember:
    """torch.distributed.GroupMember: WORLD is the default group (the only one today)."""

    WORLD: Any = None
    NON_GROUP_MEMBER = -100


class Work:
    """What an `async_op=True` collective returns: `wait()` blocks (with the timeout) until it
    completes, `is_completed()` tests."""

    def __init__(self, req: Any = None, finish: Any = None, what: str = "collective") -> None:
        self._req, self._finish, self._what = req, finish, what
        self._done = req is None
        if self._done and finish is not None:
            finish()

    def is_completed(self) -> bool:
        if not self._done and self._req.Test():
            self._complete()
        return self._done

    def _complete(self) -> None:
        self._done = True
        if self._finish is not None:
            self._finish()

    def wait(self, timeout: datetime.timedelta | None = None) -> bool:
        if not self._done:
            g = _backend.current()
            import time

            deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()
            _backend.wait(g, self._req, self._what, deadline)
            self._complete()
        return True


def is_available() -> bool:
    return True


def is_mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def is_nccl_available() -> bool:
    return False  # no CUDA backend yet (see init_process_group)


def is_initialized() -> bool:
    return _backend.WORLD is not None


def _timeout_seconds(timeout: Any) -> float:
    if timeout is None:
        env = os.environ.get("TRACEJIT_DIST_TIMEOUT")
        if env:
            try:
                return float(env)
            except ValueError:
                raise ValueError(f"TRACEJIT_DIST_TIMEOUT must be a number of seconds, got "
                                 f"{env!r}") from None
        return default_pg_timeout.total_seconds()
    if isinstance(timeout, datetime.timedelta):
        secs = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        secs = float(timeout)
    else:
        raise TypeError(f"init_process_group: timeout must be a datetime.timedelta, got "
                        f"{type(timeout).__name__}")
    if not secs > 0:
        raise ValueError(f"init_process_group: timeout must be positive, got {timeout}")
    return secs


def init_process_group(backend: str | None = None, init_method: str | None = None,
                       timeout: datetime.timedelta | None = None, world_size: int = -1,
                       rank: int = -1, store: Any = None, group_name: str = "",
                       pg_options: Any = None, device_id: Any = None) -> None:
    """Join the default process group. backend "mpi" (the default): rank and world size are
    MPI's, from the launcher (`mpiexec -n N python script.py`); a `rank`/`world_size` given
    must agree with them. A script started without a launcher is a group of one."""
    if _backend.WORLD is not None:
        raise RuntimeError("trying to initialize the default process group twice! (call "
                           "destroy_process_group() first)")
    name = "mpi" if backend is None else str(backend).lower()
    if name == "nccl":
        raise DistError(
            "init_process_group(backend='nccl') needs tracejit's CUDA backend, which is not "
            "built yet (tracejit.cuda.is_available() is False), and NCCL (nvidia-nccl-cu12 "
            "through cupy.cuda.nccl); on CPUs use backend='mpi' under mpiexec"
        )
    if name == "gloo":
        raise DistError("init_process_group: tracejit has no Gloo backend; use backend='mpi' "
                        "(pip install 'tracejit[mpi]', then launch with mpiexec)")
    if name != "mpi":
        raise ValueError(f"init_process_group: unknown backend {backend!r}; use 'mpi' (CPU, "
                         "through mpi4py) or 'nccl' (GPUs, not built yet)")
    if init_method not in (None, "env://") or store is not None:
        raise ValueError("init_process_group(backend='mpi'): the MPI launcher connects the "
                         "processes; init_method and store are not used (leave them out)")
    secs = _timeout_seconds(timeout)
    env_rank, env_size = _backend.launcher_env()
    g = _backend.init(secs)
    for what, given, actual in (("world_size", world_size, g.size), ("rank", rank, g.rank)):
        if given not in (-1, None) and given != actual:
            _backend.destroy()
            raise ValueError(
                f"init_process_group: {what}={given} was given but MPI says {actual} (the "
                f"launcher decides it: mpiexec -n {world_size if what == 'world_size' else 'N'})"
            )
    if env_size is not None and env_size != g.size:
        size = g.size
        _backend.destroy()
        raise DistError(f"init_process_group: the launcher's environment says {env_size} "
                        f"processes but MPI has {size}: mpi4py was built against another MPI "
                        "than the mpiexec that started this process; use that MPI's mpiexec")
    GroupMember.WORLD = g


def destroy_process_group(group: Any = None) -> None:
    _backend.destroy()
    GroupMember.WORLD = None


def _group(group: Any) -> _backend.Group:
    g = _backend.current()
    if group is not None and group is not g:
        raise ValueError("tracejit.distributed has only the default group (group=None)")
    return g


def get_rank(group: Any = None) -> int:
    return _group(group).rank


def get_world_size(group: Any = None) -> int:
    return _group(group).size


def get_backend(group: Any = None) -> str:
    return _group(group).backend


def _tensor(t: Any, fn: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: expected a tensor, got {type(t).__name__}")
    return t


def _op_name(op: Any) -> str:
    if isinstance(op, ReduceOp):
        return op.value
    if isinstance(op, str) and op.upper() in ReduceOp.__members__:
        return op.upper()
    raise ValueError(f"all_reduce: op must be a ReduceOp (SUM, AVG, PRODUCT, MIN, MAX, BAND, "
                     f"BOR, BXOR), got {op!r}")


def _tracing() -> bool:
    return _STATE.tracer is not None


def all_reduce(tensor: Tensor, op: Any = ReduceOp.SUM, group: Any = None,
               async_op: bool = False) -> Work | None:
    """Reduce `tensor` over every rank, in place: each rank ends with the same result."""
    t, name, g = _tensor(tensor, "all_reduce"), _op_name(op), _group(group)
    _backend.check_op(name, np.dtype(t.dtype.np))
    if async_op and not _tracing() and t._data.flags.c_contiguous and \
            t._data.flags.writeable and t._data.dtype != np.bool_:
        buf = t._data  # eager and contiguous: reduce in the tensor's own memory, in flight
        req = _backend.start_all_reduce(g, buf, name)

        def finish() -> None:
            _backend.finish_all_reduce(g, buf, name)
            t._version.v += 1

        return Work(req, finish, f"all_reduce ({buf.size} x {buf.dtype.name})")
    with no_grad():  # torch's c10d collectives are not differentiable either
        assign_inplace(t, _dispatch_op(ALL_REDUCE, (t,), {"op": name}))
    return Work() if async_op else None


def _eager_write(t: Tensor, what: str) -> np.ndarray:
    """The array to write a collective's result into; inside a trace the collective is a
    graph break (it runs between compiled segments)."""
    t._graph_break(f"tracejit.distributed.{what}")
    return t._data


def broadcast(tensor: Tensor, src: int = 0, group: Any = None, async_op: bool = False,
              group_src: int | None = None) -> Work | None:
    """Overwrite `tensor` on every rank with rank `src`'s (in place)."""
    t, g = _tensor(tensor, "broadcast"), _group(group)
    src = src if group_src is None else group_src
    if not isinstance(src, (int, np.integer)) or not 0 <= int(src) < g.size:
        raise ValueError(f"broadcast: src must be a rank in [0, {g.size}), got {src!r}")
    a = _eager_write(t, "broadcast")
    if a.flags.c_contiguous:
        _backend.broadcast_array(a, int(src))
    else:
        b = np.ascontiguousarray(a)
        _backend.broadcast_array(b, int(src))
        a[...] = b
    t._version.v += 1
    return Work() if async_op else None


def all_gather(tensor_list: list[Tensor], tensor: Tensor, group: Any = None,
               async_op: bool = False) -> Work | None:
    """Fill `tensor_list` (one tensor per rank, each of `tensor`'s shape and dtype) with every
    rank's `tensor`."""
    t, g = _tensor(tensor, "all_gather"), _group(group)
    if not isinstance(tensor_list, list) or len(tensor_list) != g.size:
        raise ValueError(f"all_gather: tensor_list must be a list of {g.size} tensors (the "
                         f"world size), got {type(tensor_list).__name__} of "
                         f"{len(tensor_list) if hasattr(tensor_list, '__len__') else '?'}")
    for i, o in enumerate(tensor_list):
        _tensor(o, "all_gather")
        if tuple(o.shape) != tuple(t.shape) or o.dtype is not t.dtype:
            raise ValueError(f"all_gather: tensor_list[{i}] is {o.dtype.name} "
                             f"{list(o.shape)}, but the input is {t.dtype.name} "
                             f"{list(t.shape)}; every output must match it")
    t._graph_break("tracejit.distributed.all_gather")
    got = _backend.all_gather_array(t._data)
    for i, o in enumerate(tensor_list):
        _eager_write(o, "all_gather")[...] = got[i]
        o._version.v += 1
    return Work() if async_op else None


def barrier(group: Any = None, async_op: bool = False, device_ids: Any = None) -> Work | None:
    """Wait until every rank of the group has reached the barrier (with the timeout)."""
    _group(group)
    if _tracing():
        _STATE.tracer.graph_break("tracejit.distributed.barrier")
    _backend.barrier()
    return Work() if async_op else None
