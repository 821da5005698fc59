"""The op registry (see registry.py); importing this package declares every op."""

from . import (  # noqa: F401  (declares the ops)
    attention,
    collective,
    contract,
    control,
    conv,
    elementwise,
    index,
    movement,
    pool,
    random,
    reduce,
    scan,
    structural,
)
from .registry import REGISTRY, Kind, OpDef, OpError, TensorType, VjpContext

__all__ = ["REGISTRY", "Kind", "OpDef", "OpError", "TensorType", "VjpContext"]
