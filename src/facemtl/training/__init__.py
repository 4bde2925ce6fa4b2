"""Training: the loop, its callbacks, the optimiser and schedule, and evaluation over a split."""

from .callbacks import Callback, EarlyFreeze, EarlyStopping, JsonlLogger, ProgressBar
from .optim import build_optimizer, build_scheduler
from .trainer import Trainer

__all__ = ["Trainer", "Callback", "EarlyFreeze", "EarlyStopping", "JsonlLogger", "ProgressBar", "build_optimizer",
           "build_scheduler"]
