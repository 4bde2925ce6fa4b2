"""Face detection interface: a detector turns an RGB image into boxes, scores and five landmarks.

Detectors are pluggable by name through :data:`DETECTORS`. Every detector returns
:class:`Face` records in the coordinates of the image it was given; each names its
landmark scheme, because the two built-in ones differ (dlib's five points are four
eye corners and the base of the nose; MTCNN's are the two eye centres, the nose tip
and the two mouth corners) and alignment needs the template of the same scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Registry
from .align import template

DETECTORS: Registry["Detector"] = Registry("face detector")


@dataclass
class Face:
    """One detected face.

    ``box``: ``(x1, y1, x2, y2)`` in pixels; ``score``: detector confidence (higher is
    surer; its scale depends on the detector); ``landmarks``: ``(K, 2)`` pixel
    coordinates in the detector's ``scheme`` order (five for the built-in schemes);
    ``scheme``: a landmark scheme with an alignment template (``dlib5``, ``mtcnn5``, or one
    added with :func:`facemtl.faces.register_template`).
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    scheme: str

    def scaled(self, factor: float) -> "Face":
        """The same face in an image ``factor`` times larger."""
        return Face(self.box * factor, self.score, self.landmarks * factor, self.scheme)


def largest_first(faces: list[Face]) -> list[Face]:
    """Faces sorted by box area, largest first (the order every detector returns)."""
    return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


class Detector:
    """Base class: ``detect(rgb uint8 (H, W, 3), min_face=None) -> list[Face]``, largest faces first.

    ``min_face``: the side, in pixels of ``rgb``, of the smallest face box to look for
    (``None``: the detector's own default, :attr:`min_face`). Smaller values find smaller
    faces and cost more: the search runs over an image pyramid that starts larger.
    """

    scheme: str = ""
    min_face: float = 40.0
    #: Score from which a detection is *sure*, on this detector's own scale. The video tracker
    #: matches sure detections first and weaker ones second (ByteTrack's two rounds), and shows
    #: a track a weak detection starts only once another confirms it; quality weights count a
    #: sure score as full.
    sure_score: float = 0.5

    def detect(self, rgb: np.ndarray, min_face: float | None = None) -> list[Face]:
        raise NotImplementedError


class BrokenDetector(RuntimeError):
    """A face detector that cannot serve as one: its factory built no detector, it answered with
    something other than a list of :class:`Face` records, or it failed before it had searched a
    single image. Not the photo's fault (a user test: a plugin's broken detector marked every
    photo "face detection failed", then said none could be read as an image), so the run stops
    with this sentence."""


def build_detector(name: str, **kwargs) -> Detector:
    """The detector registered as ``name``; :class:`BrokenDetector` if its factory builds something
    without a ``detect`` method."""
    det = DETECTORS.build(name, **kwargs)
    if not callable(getattr(det, "detect", None)):
        raise BrokenDetector(f"the face detector {name!r} was built as an object of type {type(det).__qualname__}, "
                             "which has no detect(rgb, min_face) method (a detector of your own: register a subclass "
                             "of facemtl.faces.Detector, or a function that returns one)")
    return det


def checked_faces(faces: object, name: str) -> list[Face]:
    """``faces`` as :meth:`Detector.detect` must give them: a list of :class:`Face` records with a
    finite box ``(4,)``, a finite score and finite ``(K, 2)`` landmarks, K that of their scheme's
    alignment template. :class:`BrokenDetector` naming the detector ``name`` otherwise (a detector
    of one's own that returned one Face, or three landmarks for a five-point scheme, failed later
    with NumPy's words about arrays)."""
    what = f"the face detector {name!r} answered"
    if not isinstance(faces, (list, tuple)):
        raise BrokenDetector(f"{what} a {type(faces).__qualname__}, not a list of facemtl.faces.Face records (an "
                             "empty list where it finds no face)")
    for face in faces:
        if not isinstance(face, Face):
            raise BrokenDetector(f"{what} a list holding a {type(face).__qualname__}, not facemtl.faces.Face records")
        try:
            box, points, score = (np.asarray(face.box, float), np.asarray(face.landmarks, float),
                                  float(face.score))
        except (TypeError, ValueError) as exc:
            raise BrokenDetector(f"{what} a face whose box, landmarks or score are not numbers ({exc})") from None
        if box.shape != (4,) or points.ndim != 2 or points.shape[1:] != (2,):
            raise BrokenDetector(f"{what} a face with a box of shape {box.shape} and landmarks of shape "
                                 f"{points.shape}; a Face holds a box (x1, y1, x2, y2) and (K, 2) landmarks")
        if not (np.isfinite(box).all() and np.isfinite(points).all() and np.isfinite(score)):
            raise BrokenDetector(f"{what} a face with a box, landmarks or score that are not finite numbers (NaN "
                                 "or infinite)")
        try:
            expected = len(template(face.scheme))
        except KeyError as exc:
            raise BrokenDetector(f"{what} a face in landmark scheme {face.scheme!r}: {exc.args[0]}") from None
        if len(points) != expected:
            raise BrokenDetector(f"{what} {len(points)} landmarks in scheme {face.scheme!r}, whose alignment "
                                 f"template has {expected}")
    return list(faces)
