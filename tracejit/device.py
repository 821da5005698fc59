"""Devices: ``device('cpu')``, ``device('cuda:0')``. CUDA tensors need numba-cuda and a GPU (or
Numba's simulator, NUMBA_ENABLE_CUDASIM=1): tracejit/cuda/backend.py checks, and asking for CUDA
where it cannot work is a one-line error saying what is missing, never a silent CPU tensor.
Also the default device (``set_default_device``) that factories use when given none."""

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
CUDA0 = device("cuda", 0)
_default: device = CPU


class CudaNotAvailableError(RuntimeError, AssertionError):
    """A CUDA device was asked for in a build without a CUDA backend. torch raises
    AssertionError ("Torch not compiled with CUDA enabled") here and RuntimeError for other
    device errors; this is both, so either `except` catches it."""


def cuda_not_available(dev: Any) -> CudaNotAvailableError:
    from .cuda.backend import reason

    why = reason() or "no CUDA backend"
    return CudaNotAvailableError(
        f"tracejit: device {str(dev)!r} was requested, but CUDA is not available: {why}; or "
        "keep tensors on device='cpu'"
    )


def as_device(d: Any) -> device:
    """The device a factory or `.to()` was asked for (None: the default device); raises
    CudaNotAvailableError for CUDA where it cannot work, and for a device index past the last."""
    dev = _default if d is None else d if isinstance(d, device) else device(d)
    if dev.type == "cuda":
        from .cuda import backend

        if not backend.available():
            raise cuda_not_available(dev)
        n = backend.device_count()
        if (dev.index or 0) >= n:
            raise RuntimeError(f"tracejit: device {str(dev)!r} was requested, but there "
                               f"{'is' if n == 1 else 'are'} only {n} CUDA device(s) "
                               f"(cuda:0 to cuda:{n - 1})")
        if dev.index is None:
            dev = CUDA0
    return dev


def set_default_device(device: Any) -> None:
    """torch.set_default_device: the device factories use when given none (None: the CPU).
    Setting 'cuda' is allowed, as in torch; creating a tensor then raises."""
    global _default
    _default = CPU if device is None else globals()["device"](device)


def get_default_device() -> device:
    return _default
