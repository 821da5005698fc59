"""tracejit.nn.parallel: DistributedDataParallel (torch.nn.parallel's name), data-parallel
training over tracejit.distributed's process group."""

from __future__ import annotations

from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
