"""tracejit.optim: optimizers (SGD, Adam, AdamW, RMSprop) and learning-rate schedulers, with
PyTorch's update formulas and state-dict format. Updates are in-place tensor ops, so a
traced training step captures them as effects."""

from __future__ import annotations

from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler"]
