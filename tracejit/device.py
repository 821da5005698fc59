"""Devices: ``device('cpu')``, ``device('cuda:0')``. Eager CUDA arrives with the CUDA backend."""

from __future__ import annotations

from typing import Any


class device:  # noqa: N801 - PyTorch's name
    __slots__ = ("type", "index", "_hash")
    type: str
    index: int | None
    _hash: int

    def __init__(self, spec: Any, index: int | None = None) -> None:
        if isinstance(spec, device):
            self.type, self.index, self._hash = spec.type, spec.index, spec._hash
            return
        if not isinstance(spec, str):
            spec = getattr(spec, "type", None) or str(spec)  # torch.device
        kind, _, idx = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"unknown device {spec!r}: expected 'cpu' or 'cuda[:N]'")
        self.type = kind
        self.index = int(idx) if idx else index
        self._hash = hash((self.type, self.index or 0))  # hashed on every eager op (rule cache)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = device(other)
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and (self.index or 0) == (other.index or 0)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        idx = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{idx})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


CPU = device("cpu")


def as_device(d: Any) -> device:
    if d is None:
        return CPU
    dev = d if isinstance(d, device) else device(d)
    if dev.type == "cuda":
        raise RuntimeError(
            "tracejit: CUDA tensors are not available yet in this build (eager CUDA arrives with "
            "the CUDA backend); keep tensors on device='cpu'"
        )
    return dev
