"""Face detection (pluggable by name) and five-landmark alignment."""

from .align import align_face, register_template, similarity_transform, template
from .base import DETECTORS, BrokenDetector, Detector, Face, build_detector, checked_faces
from . import dlib_detector, mtcnn  # noqa: F401  (register the built-in detectors; heavy imports happen on use)

__all__ = ["DETECTORS", "BrokenDetector", "Detector", "Face", "build_detector", "checked_faces", "align_face",
           "register_template", "similarity_transform", "template"]
