"""facemtl: estimate several face attributes at once with one multi-task network.

Public API (each part imported on first use, so ``import facemtl`` stays light)::

    from facemtl import analyze, FaceAnalyzer, load_predictor      # faces in photos
    from facemtl import stream_events, VideoAnalyzer                # faces in video (the video extra)
    from facemtl import load_config, Trainer, MultiTaskNet, load_model, build_task, build_weighting
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "analyze": "facemtl.inference.analyzer", "FaceAnalyzer": "facemtl.inference.analyzer",
    "load_predictor": "facemtl.inference.predictor", "Predictor": "facemtl.inference.predictor",
    "ImageResult": "facemtl.inference.results", "FaceResult": "facemtl.inference.results",
    "TaskAnswer": "facemtl.inference.results", "TrackResult": "facemtl.inference.results",
    "stream_events": "facemtl.video.stream", "VideoAnalyzer": "facemtl.video.stream",
    "Config": "facemtl.config", "ConfigError": "facemtl.config", "load_config": "facemtl.config",
    "TASK_TYPES": "facemtl.tasks", "build_task": "facemtl.tasks",
    "MultiTaskNet": "facemtl.model", "BACKBONES": "facemtl.model", "load_model": "facemtl.model",
    "WEIGHTINGS": "facemtl.weighting", "build_weighting": "facemtl.weighting",
    "Trainer": "facemtl.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
