"""tracejit.cuda: what torch.cuda reports on a machine without CUDA. This build has no CUDA
backend, so nothing is available; seeding is accepted and ignored, as torch.cuda.manual_seed
documents for machines without CUDA."""

from __future__ import annotations

from ..device import cuda_not_available


def is_available() -> bool:
    return False


def device_count() -> int:
    return 0


def is_initialized() -> bool:
    return False


def current_device() -> int:
    raise cuda_not_available("cuda")


def synchronize(device: object = None) -> None:
    raise cuda_not_available("cuda" if device is None else device)


def manual_seed(seed: int) -> None:
    """Ignored without CUDA, as in torch."""


def manual_seed_all(seed: int) -> None:
    """Ignored without CUDA, as in torch."""
