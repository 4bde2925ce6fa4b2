"""The multi-task network, its backbones and heads, and loading it from a checkpoint."""

from .backbones import BACKBONES
from .load import load_model
from .net import MultiTaskNet

__all__ = ["BACKBONES", "MultiTaskNet", "load_model"]
