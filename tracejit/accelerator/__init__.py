"""tracejit.accelerator: torch.accelerator's queries. This build runs on the CPU only, so there
is no current accelerator (torch returns None then too)."""

from __future__ import annotations

from ..device import device


def is_available() -> bool:
    return False


def device_count() -> int:
    return 0


def current_accelerator(check_available: bool = False) -> device | None:
    return None
