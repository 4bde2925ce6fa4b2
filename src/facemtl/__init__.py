"""facemtl: estimate several face attributes at once with one multi-task network.

Public API::

    from facemtl import load_config, Trainer, MultiTaskNet, build_task, build_weighting
    from facemtl import analyze, FaceAnalyzer      # faces in photos -> list[dict]
"""

from .config import Config, ConfigError, load_config
from .model import MultiTaskNet
from .tasks import TASK_TYPES, build_task
from .weighting import WEIGHTINGS, build_weighting
from .backbones import BACKBONES

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "load_config", "MultiTaskNet", "TASK_TYPES", "build_task", "WEIGHTINGS",
           "build_weighting", "BACKBONES", "Trainer", "load_model", "analyze", "FaceAnalyzer"]


def __getattr__(name: str):
    # The trainer pulls in data loading; import it only when asked for.
    if name == "Trainer":
        from .training import Trainer

        return Trainer
    if name in ("analyze", "FaceAnalyzer"):
        from . import analysis

        return getattr(analysis, name)
    if name == "load_model":
        from .training import load_model

        return load_model
    raise AttributeError(name)
