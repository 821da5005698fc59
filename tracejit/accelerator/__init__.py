"""tracejit.accelerator: torch.accelerator's queries. The one accelerator tracejit knows is CUDA
(tracejit.cuda): where it is unavailable there is no current accelerator (torch returns None
then too)."""

from __future__ import annotations

from ..device import device


def is_available() -> bool:
    from .. import cuda

    return cuda.is_available()


def device_count() -> int:
    from .. import cuda

    return cuda.device_count()


def current_accelerator(check_available: bool = False) -> device | None:
    return device("cuda", 0) if is_available() else None
