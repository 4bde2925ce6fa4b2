"""The one-call API: ``facemtl.analyze(image)`` and the reusable :class:`FaceAnalyzer`.

``FaceAnalyzer`` is a :class:`~facemtl.inference.pipeline.Pipeline` (decode, detect,
align, worker threads) over a :class:`~facemtl.inference.predictor.Predictor` (the network
in one runtime), with the settings most users touch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .pipeline import Pipeline
from .predictor import Predictor, load_predictor
from .results import ImageResult, answer_fields


class FaceAnalyzer:
    """Detector + aligner + multi-task model.

    ``checkpoint``: a model file: a ``best.pt`` from ``facemtl train`` (default: the shipped
    model), or a list of model files, run as an ensemble (the mean of their raw outputs).
    ``runtime``: how to run it (default: by the file's suffix). ``device``: ``auto``
    (a CUDA GPU when there is one), ``cpu`` or ``cuda``. ``detector``, ``min_face``,
    ``detect_max_side``, ``workers``, ``max_latency``: see :class:`Pipeline`. ``interval``:
    central probability mass of the reported age interval. ``fusion``: ``True`` (the shipped
    fusion file) or a fusion file: the accurate variant, which mixes a classifier on dlib's
    face descriptor into the classification answers (:mod:`facemtl.inference.fusion`; tens of
    milliseconds more per face); with no ``checkpoint``, it runs the networks its fusion file
    names (the shipped one: an ensemble of seven, five of them 160 px), else the default
    model. ``predictor``: an already
    loaded :class:`Predictor` to share (then ``checkpoint``, ``runtime``, ``device``,
    ``batch_size`` and ``interval`` are its own). ``threads``: the runtime's intra-op
    threads (default: one per core; see :mod:`facemtl.inference.runtimes`).
    """

    def __init__(
        self,
        checkpoint: str | Path | Sequence[str | Path] | None = None,
        detector: str = "mtcnn",
        device: str = "auto",
        batch_size: int = 64,
        detect_max_side: int = 1024,
        interval: float = 0.8,
        min_face: float | None = None,
        workers: int | None = None,
        runtime: str | None = None,
        max_latency: float | None = None,
        keep_images: bool = False,
        predictor: Predictor | None = None,
        threads: int | None = None,
        fusion: str | Path | bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if detect_max_side < 32:
            raise ValueError(f"detect_max_side must be at least 32 pixels, not {detect_max_side}")
        if fusion:  # the accurate variant: dlib's descriptor beside the network
            from .fusion import load_accurate

            predictor = load_accurate(fusion, checkpoint, runtime, device, batch_size, interval, threads, predictor)
        self.predictor = predictor or load_predictor(checkpoint, runtime, device, batch_size, interval, threads)
        self.pipeline = Pipeline(self.predictor, detector, min_face, workers, detect_max_side, max_latency, keep_images)
        self.tasks = self.predictor.tasks
        self.size = self.predictor.size

    # -- one image ---------------------------------------------------------------
    def analyze(self, image: Any, aligned: bool = False) -> list[dict[str, Any]]:
        """Every face in ``image`` (path, image file bytes or open file, PIL image or RGB array) as a
        JSON-ready dict (as :func:`analyze` describes). An array is taken as RGB: OpenCV's
        ``cv2.imread`` gives BGR, which answers otherwise without a word (the sample photo: age 18
        for 33); pass ``img[..., ::-1]``. ``aligned``: ``image`` is one aligned face crop, resized to
        the network's square input as it is (a crop that is not square is stretched)."""
        if isinstance(image, (str, Path)) and not Path(image).exists():
            raise FileNotFoundError(f"{image}: no such file")
        if isinstance(image, (str, Path)) and Path(image).is_dir():
            raise IsADirectoryError(f"{image} is a folder; analyze_files({str(image)!r}) analyses the images in it")
        result = next(self.pipeline.run([(ImageResult(index=0), image)], aligned))
        if result.status == "error":
            raise ValueError(f"cannot analyse this image: {result.error}")
        return [f.to_dict() for f in result.faces]

    # -- many images -------------------------------------------------------------
    def analyze_files(self, paths: str | os.PathLike | Iterable[str | os.PathLike],
                      aligned: bool = False, stop: Callable[[], bool] | None = None) -> Iterator[ImageResult]:
        """One :class:`ImageResult` per file, in order (``status``: ``ok``, ``no_face`` or
        ``error`` with ``error`` saying why); files are decoded and searched by the worker
        threads, and faces from several files share one network batch.

        ``paths``: files, or one path alone; a folder stands for its image files (searched as
        ``facemtl analyze`` searches one: recursively, sorted). The paths are read lazily, so
        a generator may feed files as they arrive. A path given as ``bytes`` is a file name
        (:func:`os.fsdecode`), not image data. What a folder's search leaves out (files whose
        suffix is no photo format's, folders it cannot read or reaches twice) is said with
        :func:`warnings.warn`, as ``facemtl analyze`` says it on stderr.

        ``stop``: once it returns true (a stop signal, say), no more paths are read and the files
        read ahead that no worker has begun are dropped; the ones begun are answered and yielded,
        so the results are those of the first files, in order (:meth:`Pipeline.run
        <facemtl.inference.pipeline.Pipeline.run>`)."""
        if isinstance(paths, (str, bytes, os.PathLike)):  # one path, not a string of one-letter paths
            paths = [paths]
        return self.pipeline.run(((ImageResult(file=str(p)), p) for p in _files(paths)), aligned, stop)

    def analyze_images(self, images: Iterable[Any], aligned: bool = False,
                       stop: Callable[[], bool] | None = None) -> Iterator[ImageResult]:
        """Like :meth:`analyze_files` for images in memory (paths, PIL images or arrays, such as
        video frames): one result per image, in order, with ``index`` in place of ``file``."""
        return self.pipeline.run(((ImageResult(index=i), im) for i, im in enumerate(images)), aligned, stop)

    def predict_crops(self, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Every task's answer for aligned ``(size, size, 3) uint8`` RGB crops, as flat JSON fields (the
        accurate variant describes each crop with dlib too: :meth:`FusedPredictor.predict
        <facemtl.inference.fusion.FusedPredictor.predict>`)."""
        return [answer_fields(answers) for answers in self.predictor.predict(crops)]

    def close(self) -> None:
        """Stop the worker threads (they also end with the process)."""
        self.pipeline.close()

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def analyze(image: Any, checkpoint: str | Path | None = None, detector: str = "mtcnn", aligned: bool = False,
            device: str = "auto", min_face: float | None = None) -> list[dict[str, Any]]:
    """Estimate age, gender and race (or the attributes of ``checkpoint``) of every face in ``image``.

    ``image``: a file path, the bytes of an image file or an open binary file, a PIL image, or
    an ``(H, W, 3)`` RGB array (uint8; uint16 as
    16-bit; float in [0, 1] or [0, 255]; see :func:`facemtl.images.to_uint8`); EXIF
    orientation is applied, alpha composited on white, CMYK, grayscale and 16-bit images
    converted (scaled, never clipped). Returns one dict per face, largest first::

        {"box": [x1, y1, x2, y2], "score": 1.7, "landmarks": [[x, y] * 5],
         "age": 31.0, "age_interval": [26, 37],
         "gender": "male", "gender_probability": 0.98, "gender_probabilities": {...},
         "race": "white", "race_probability": 0.91, "race_probabilities": {...}}

    ``box`` and ``landmarks`` are in pixels of the (orientation-corrected) image;
    ``score`` is the detector's confidence on its own scale (dlib: SVM margin, about 0.25 to
    3; mtcnn: a probability; ``min_face``: see :class:`FaceAnalyzer`); ``age`` is in years (the model's decoding,
    paper eq. 6) and ``age_interval`` the central 80 % of its predicted distribution.
    An array is read as RGB: OpenCV's ``cv2.imread`` gives BGR, which answers otherwise without
    a word (age 18 for 33 on the sample photo); convert it (``img[..., ::-1]``) first.
    With ``aligned=True`` the image is taken as one face crop aligned like UTKFace's:
    no detection, ``box`` is the whole image, and the crop is resized to the network's square
    input as it is (one that is not square is stretched). The default model ships with facemtl
    (MODEL_CARD.md); it runs offline. For many images build one :class:`FaceAnalyzer`
    and reuse it: this function loads the model on every call.
    An image that cannot be read raises ``ValueError`` (or ``OSError``) saying why.
    """
    with FaceAnalyzer(checkpoint, detector, device, min_face=min_face, workers=1) as analyzer:
        return analyzer.analyze(image, aligned)


def _files(paths: Iterable[str | os.PathLike]) -> Iterator[str | os.PathLike]:
    """``paths`` with each folder replaced by its image files (:func:`~.inputs.walk_images`)."""
    from .inputs import walk_images

    def skipped(path: str, reason: str) -> None:
        warnings.warn(f"{path}: {reason}", stacklevel=4)

    for p in paths:
        if isinstance(p, bytes):  # a file name in the file system's encoding, not image data
            p = os.fsdecode(p)
        if not isinstance(p, (str, os.PathLike)):  # (None, 3.5: its own error record; os.path.isdir raised,
            yield p                                 # stopping the whole batch before its first file: a user test)
        elif os.path.isdir(p):
            yield from walk_images(Path(p), skipped)
        else:
            yield p
