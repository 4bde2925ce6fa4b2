"""Training loop, callbacks and checkpoints."""

from .callbacks import Callback, EarlyFreeze, EarlyStopping, JsonlLogger, ProgressBar
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .trainer import Trainer, build_model, resolve_device

__all__ = ["Trainer", "Callback", "EarlyFreeze", "EarlyStopping", "JsonlLogger", "ProgressBar",
           "build_model", "resolve_device", "load_checkpoint", "load_model", "save_checkpoint"]
