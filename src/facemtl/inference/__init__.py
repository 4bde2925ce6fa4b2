"""Inference: model files, runtimes, the predictor, the photo pipeline and the result schema.

Imports nothing heavy on its own: ``from facemtl.inference import load_predictor`` brings
in only what a predictor needs, and the PyTorch runtime imports torch only when a
``.pt`` file is opened.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "FaceAnalyzer": "analyzer", "analyze": "analyzer",
    "Pipeline": "pipeline",
    "Predictor": "predictor", "load_predictor": "predictor", "default_model_path": "predictor",
    "ModelInfo": "model_info",
    "TaskAnswer": "results", "FaceResult": "results", "ImageResult": "results", "TrackResult": "results",
    "RUNTIMES": "runtimes", "open_runtime": "runtimes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
