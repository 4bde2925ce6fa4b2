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


def build_detector(name: str, **kwargs) -> Detector:
    return DETECTORS.build(name, **kwargs)
