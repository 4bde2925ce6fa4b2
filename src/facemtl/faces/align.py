"""Five-landmark alignment onto the geometry of the training crops.

The model learns from UTKFace's aligned 200x200 crops, so a face cut from a photo
must look like one of them. ``templates.json`` holds, for each landmark scheme,
where a detector finds the five landmarks on those crops (the median over a sample
of UTKFace faces, in the 200x200 crop frame), measured by
``python scripts/measure_templates.py``. Alignment fits the similarity transform
(rotation, uniform scale, shift; Umeyama 1991) that maps the detected landmarks onto
the template and warps the photo with it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..registry import NameNotFound

TEMPLATE_FRAME = 200  # side of the UTKFace crops the templates are measured on


@lru_cache(maxsize=None)
def _templates() -> dict[str, np.ndarray]:
    raw = json.loads((Path(__file__).with_name("templates.json")).read_text())
    return {k: np.array(v["points"], dtype=np.float64) for k, v in raw.items() if not k.startswith("_")}


def register_template(scheme: str, points: np.ndarray | list[list[float]]) -> None:
    """Add the template of a detector's own landmark scheme (a detector plugin's ``Face.scheme``).

    ``points``: ``(K, 2)`` pixels, K >= 2, where that detector finds its landmarks on the
    200 x 200 UTKFace crops the network learnt from (:data:`TEMPLATE_FRAME`; measure them as
    ``scripts/measure_templates.py`` does: the median over a sample of crops). A built-in
    scheme (``dlib5``, ``mtcnn5``) cannot be replaced.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2 or not np.isfinite(pts).all():
        raise ValueError(f"a template is (K, 2) finite pixel positions with K >= 2, not an array of shape {pts.shape}")
    templates = _templates()
    if scheme in templates and not np.array_equal(templates[scheme], pts):
        raise ValueError(f"landmark scheme {scheme!r} already has a template")
    templates[scheme] = pts


def template(scheme: str, size: int = TEMPLATE_FRAME) -> np.ndarray:
    """The ``(K, 2)`` template of ``scheme`` (five points for the built-in ones) in a ``size x size`` crop."""
    try:
        return _templates()[scheme] * (size / TEMPLATE_FRAME)
    except KeyError:
        known = ", ".join(sorted(_templates()))
        raise NameNotFound(f"no alignment template for landmark scheme {scheme!r} (known: {known}; a detector of your "
                       "own registers its scheme's with facemtl.faces.register_template)") from None


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``(2, 3)`` matrix M with ``dst ~ M @ [src, 1]`` (Umeyama 1991).

    ``src``, ``dst``: ``(K, 2)`` point sets, K >= 2. No reflection is allowed.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1
    R = U @ D @ Vt
    var_s = (s**2).sum() / len(src)
    scale = np.trace(np.diag(S) @ D) / var_s
    t = mu_d - scale * R @ mu_s
    return np.hstack([scale * R, t[:, None]])


def align_face(rgb: np.ndarray, landmarks: np.ndarray, scheme: str, size: int) -> np.ndarray:
    """Warp ``rgb`` so that ``landmarks`` land on the template; returns ``(size, size, 3) uint8``.

    When the face is much larger than ``size``, the part of the image the crop reads is
    first shrunk with area averaging, so a 4000-pixel photo does not alias into the small
    crop. Only that part is shrunk (the crop's square mapped back into the photo, plus a
    margin), not the whole photo: shrinking whole 1280x960 photos once per face took a
    seventh of ``facemtl analyze``'s time on them.
    """
    import cv2

    M = similarity_transform(landmarks, template(scheme, size))
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    if scale < 0.5:
        h, w = rgb.shape[:2]
        inv = cv2.invertAffineTransform(M)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        pad = 2 / scale
        x0, y0 = (max(0, int(np.floor(v - pad))) for v in corners.min(0))
        x1, y1 = min(w, int(np.ceil(corners[:, 0].max() + pad))), min(h, int(np.ceil(corners[:, 1].max() + pad)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:  # the face lies (partly) inside the photo
            M = M.copy()
            M[:, 2] += M[:, :2] @ np.array([x0, y0], np.float64)  # coordinates relative to the cut
            rgb = rgb[y0:y1, x0:x1]
        f = 2 * scale
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (max(1, int(round(w * f))), max(1, int(round(h * f)))), interpolation=cv2.INTER_AREA)
        M[:, :2] /= f
        rgb = small
    return cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
