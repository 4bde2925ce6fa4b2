"""Face analysis on photos: detection, alignment and batched multi-task prediction."""

from .analyzer import FaceAnalyzer, analyze, default_model_path, open_image

__all__ = ["FaceAnalyzer", "analyze", "default_model_path", "open_image"]
