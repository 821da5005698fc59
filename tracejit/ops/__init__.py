"""The op registry (see registry.py); importing this package declares every op."""

from . import contract, elementwise, index, movement, reduce  # noqa: F401  (declares the ops)
from .registry import REGISTRY, Kind, OpDef, OpError, TensorType, VjpContext

__all__ = ["REGISTRY", "Kind", "OpDef", "OpError", "TensorType", "VjpContext"]
