"""Analyse faces in photos: detect, align, run the multi-task model in batches, describe.

``FaceAnalyzer`` holds one model and one detector; ``facemtl.analyze(image)`` is the
one-call API built on it.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..data.images import load_rgb, to_rgb
from ..evaluation import to_input
from ..faces import Face, align_face, build_detector
from ..system import usable_cores

#: The model that ships inside the package (see MODEL_CARD.md).
DEFAULT_MODEL = "utkface_lite0.pt"


def default_model_path() -> Path:
    path = Path(str(resources.files("facemtl") / "weights" / DEFAULT_MODEL))
    if not path.is_file():
        raise FileNotFoundError(f"the default model {path} is missing from this installation")
    return path


def open_image(image: Any) -> np.ndarray:
    """A path, a PIL image or an array -> ``(H, W, 3) uint8`` RGB.

    Arrays are taken as RGB (or grayscale ``(H, W)``, or RGBA); float arrays in [0, 1]
    are scaled to 0..255.
    """
    if isinstance(image, (str, Path)):
        return load_rgb(str(image))
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * 255 if arr.max() <= 1.0 else arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, 2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), not {arr.shape}")
    if arr.shape[2] == 4:
        return np.asarray(to_rgb(Image.fromarray(arr, "RGBA")))
    return np.ascontiguousarray(arr)


@dataclass
class _Pending:
    record: dict[str, Any]
    faces: list[Face | None]
    crops: list[np.ndarray] = field(default_factory=list)


class FaceAnalyzer:
    """Detector + aligner + multi-task model.

    ``checkpoint``: a ``best.pt`` from ``facemtl train`` (default: the shipped model).
    ``detector``: a registered detector name (``dlib`` or ``mtcnn``).
    ``min_face``: side in pixels of the smallest face box to look for, in the photo as
    the detector sees it (after the shrink below); ``None``: the detector's default
    (dlib 40, MTCNN 20). Raising dlib's to 80 quarters its search (photos ran about
    three times faster) and misses faces under 80 pixels.
    ``detect_max_side``: photos are shrunk to at most this many pixels on their long
    side for detection; faces are still cut from the full-resolution photo.
    ``workers``: threads that decode, detect and align photos side by side (dlib and
    onnxruntime release the GIL) while the network runs batches of their faces; default:
    one per CPU core. Each thread has its own detector.
    ``interval``: central probability mass of the reported age interval.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        detector: str = "dlib",
        device: str = "cpu",
        batch_size: int = 64,
        detect_max_side: int = 1024,
        interval: float = 0.8,
        min_face: float | None = None,
        workers: int | None = None,
    ) -> None:
        from ..faces import DETECTORS
        from ..training import load_model, resolve_device

        if detector not in DETECTORS.names():
            raise ValueError(f"unknown face detector {detector!r}; choose from {', '.join(DETECTORS.names())}")
        if min_face is not None and min_face <= 0:
            raise ValueError(f"min_face must be a positive number of pixels, not {min_face}")
        self.device = resolve_device(device)
        self.model, self.tasks, self.cfg, _ = load_model(checkpoint or default_model_path(), self.device)
        self.model.float()
        if self.cfg.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.size = self.cfg.data.image_size
        self.detector_name = detector
        self.min_face = min_face
        self._local = threading.local()
        self.batch_size = batch_size
        self.detect_max_side = detect_max_side
        self.interval = interval
        self.workers = max(1, workers if workers is not None else usable_cores())
        self._pool: ThreadPoolExecutor | None = None

    @property
    def detector(self):
        """This thread's detector (built on first use: dlib's and onnxruntime's objects stay per thread)."""
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = build_detector(self.detector_name)
        return det

    # -- one image ---------------------------------------------------------------
    def analyze(self, image: Any, aligned: bool = False) -> list[dict[str, Any]]:
        """Every face in ``image`` (path, PIL image or RGB array) as a JSON-ready dict."""
        rgb = open_image(image)
        pending = self._prepare({"width": int(rgb.shape[1]), "height": int(rgb.shape[0])}, rgb, aligned)
        return self._finish([pending])[0].record.get("faces", [])

    # -- many images -------------------------------------------------------------
    def analyze_files(self, paths: Iterable[str], aligned: bool = False) -> Iterator[dict[str, Any]]:
        """One record per file, in order: ``{"file", "status", "faces", ...}``.

        ``status`` is ``ok``, ``no_face`` or ``error`` (with ``error`` saying why);
        files are decoded and searched by ``workers`` threads, and faces from several
        files share one network batch.
        """
        return self._records((({"file": str(p)}, p) for p in paths), aligned)

    def analyze_images(self, images: Iterable[Any], aligned: bool = False) -> Iterator[dict[str, Any]]:
        """Like :meth:`analyze_files` for images in memory (paths, PIL images or arrays, such as
        video frames): one record per image, in order, with ``index`` in place of ``file``."""
        return self._records((({"index": i}, im) for i, im in enumerate(images)), aligned)

    # -- internals ---------------------------------------------------------------
    def _records(self, jobs: Iterable[tuple[dict[str, Any], Any]], aligned: bool) -> Iterator[dict[str, Any]]:
        queue: list[_Pending] = []
        n_crops = 0
        for p in self._prepared(jobs, aligned):
            queue.append(p)
            n_crops += len(p.crops)
            if n_crops >= self.batch_size:
                yield from (q.record for q in self._finish(queue))
                queue, n_crops = [], 0
        if queue:
            yield from (q.record for q in self._finish(queue))

    def _prepared(self, jobs: Iterable[tuple[dict[str, Any], Any]], aligned: bool) -> Iterator[_Pending]:
        """Decode, detect and align each job, in order; with several workers, ahead of the consumer."""
        if self.workers == 1:
            for record, image in jobs:
                yield self._open_and_prepare(record, image, aligned)
            return
        if self._pool is None:  # kept for the analyzer's life, so each thread builds its detector once
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="facemtl-detect")
        ahead = max(4 * self.workers, self.batch_size)  # jobs in flight: enough to keep workers busy
        window: deque[Future[_Pending]] = deque()
        try:
            for record, image in jobs:
                window.append(self._pool.submit(self._open_and_prepare, record, image, aligned))
                if len(window) >= ahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:  # the caller stopped early: drop the jobs not started yet
            for f in window:
                f.cancel()

    def close(self) -> None:
        """Stop the worker threads (they also end with the process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_and_prepare(self, record: dict[str, Any], image: Any, aligned: bool) -> _Pending:
        """Never raises: an image that cannot be read or searched becomes an ``error`` record."""
        try:
            rgb = open_image(image)
        except Exception as exc:  # any unreadable file: report, never stop the batch
            record.update(status="error", error=_describe_error(exc), faces=[])
            return _Pending(record, [])
        record.update(width=int(rgb.shape[1]), height=int(rgb.shape[0]))
        try:
            return self._prepare(record, rgb, aligned)
        except Exception as exc:
            record.update(status="error", error=f"face detection failed: {_describe_error(exc)}", faces=[])
            return _Pending(record, [])

    def _prepare(self, record: dict[str, Any], rgb: np.ndarray, aligned: bool) -> _Pending:
        if aligned:
            crop = np.asarray(Image.fromarray(rgb).resize((self.size, self.size), Image.BILINEAR))
            return _Pending(record, [None], [crop])
        h, w = rgb.shape[:2]
        f = min(1.0, self.detect_max_side / max(h, w))
        small = rgb if f == 1.0 else np.asarray(Image.fromarray(rgb).resize((round(w * f), round(h * f)), Image.BILINEAR))
        faces = [face.scaled(1 / f) for face in self.detector.detect(small, self.min_face)]
        crops = [align_face(rgb, face.landmarks, face.scheme, self.size) for face in faces]
        return _Pending(record, faces, crops)

    @torch.no_grad()
    def predict_crops(self, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Attributes of aligned ``(size, size, 3) uint8`` crops, in batches."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.stack(crops[i : i + self.batch_size])).permute(0, 3, 1, 2)
            x = to_input(batch, self.device, self.cfg.model.channels_last)
            res = self.model(x)
            per_task = {t.name: self._decode(t, res[t.name].float()) for t in self.tasks}
            for j in range(len(x)):
                d: dict[str, Any] = {}
                for t in self.tasks:
                    d.update(per_task[t.name][j])
                out.append(d)
        return out

    def _decode(self, task, out: torch.Tensor) -> list[dict[str, Any]]:
        name = task.name
        pred = task.predict(out).cpu().numpy()
        prob = task.probabilities(out)
        rows: list[dict[str, Any]] = []
        if hasattr(task, "class_names"):
            names = task.class_names()
            p = prob.cpu().numpy()
            for j in range(len(pred)):
                k = int(pred[j])
                rows.append({name: names[k], f"{name}_probability": round(float(p[j, k]), 4),
                             f"{name}_probabilities": {c: round(float(v), 4) for c, v in zip(names, p[j])}})
            return rows
        lo_q, hi_q = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
        if prob is not None:
            cdf = prob.cumsum(1).cpu().numpy()
            for j in range(len(pred)):
                lo = task.min_value + int(np.searchsorted(cdf[j], lo_q))
                hi = task.min_value + int(np.searchsorted(cdf[j], hi_q))
                rows.append({name: round(float(pred[j]), 1), f"{name}_interval": [lo, hi]})
            return rows
        return [{name: round(float(v), 1)} for v in pred]

    def _finish(self, queue: list[_Pending]) -> list[_Pending]:
        crops = [c for q in queue for c in q.crops]
        preds = iter(self.predict_crops(crops)) if crops else iter(())
        for q in queue:
            if q.record.get("status") == "error":
                continue
            faces = []
            for face in q.faces:
                d: dict[str, Any]
                if face is None:  # --aligned: the whole image is the face
                    w, h = q.record.get("width"), q.record.get("height")
                    d = {"box": [0, 0, w, h] if w else None, "score": None, "landmarks": None}
                else:
                    d = {
                        "box": [round(float(v), 1) for v in face.box],
                        "score": round(float(face.score), 4),
                        "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks],
                    }
                d.update(next(preds))
                faces.append(d)
            q.record["faces"] = faces
            q.record["status"] = "ok" if faces else "no_face"
        return queue


def _describe_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "cannot identify image file" in text:
        return "not an image (or a format Pillow cannot read)"
    return text


def analyze(image: Any, checkpoint: str | Path | None = None, detector: str = "dlib", aligned: bool = False,
            device: str = "cpu", min_face: float | None = None) -> list[dict[str, Any]]:
    """Estimate age, gender and race (or the attributes of ``checkpoint``) of every face in ``image``.

    ``image``: a file path, a PIL image, or an ``(H, W, 3)`` RGB array (uint8, or float
    in [0, 1]); EXIF orientation is applied, alpha composited on white, CMYK and
    grayscale converted. Returns one dict per face, largest first::

        {"box": [x1, y1, x2, y2], "score": 1.7, "landmarks": [[x, y] * 5],
         "age": 31.0, "age_interval": [26, 37],
         "gender": "male", "gender_probability": 0.98, "gender_probabilities": {...},
         "race": "white", "race_probability": 0.91, "race_probabilities": {...}}

    ``box`` and ``landmarks`` are in pixels of the (orientation-corrected) image;
    ``score`` is the detector's confidence (``min_face``: see :class:`FaceAnalyzer`); ``age`` is in years (the model's decoding,
    paper eq. 6) and ``age_interval`` the central 80 % of its predicted distribution.
    With ``aligned=True`` the image is taken as one face crop aligned like UTKFace's:
    no detection, ``box`` is the whole image. The default model ships with facemtl
    (MODEL_CARD.md); it runs offline. For many images build one :class:`FaceAnalyzer`
    and reuse it: this function loads the model on every call.
    """
    return FaceAnalyzer(checkpoint, detector, device, min_face=min_face, workers=1).analyze(image, aligned)
