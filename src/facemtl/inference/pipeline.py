"""The pipeline: images in, faces found and aligned, answers from a predictor, results out.

Decoding, detection and alignment run in worker threads (dlib and ONNX Runtime release
the GIL), each with its own detector, ahead of the consumer; the aligned crops of several
images share one network batch. For live sources a latency bound flushes a partial batch
once its oldest image has waited long enough.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from ..faces import DETECTORS, BrokenDetector, Face, align_face, build_detector, checked_faces
from ..images import describe_error, is_open_file, read_image, read_square
from ..system import out_of_memory, usable_cores
from .predictor import Predictor
from .results import ERROR, NO_FACE, OK, FaceResult, ImageResult


@dataclass
class Prepared:
    """An image's result so far, its faces (``None`` for an aligned crop) and their aligned crops."""

    result: ImageResult
    faces: list[Face | None]
    crops: list[np.ndarray] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    #: Per face, what the predictor asked the workers to compute beside the crop (see
    #: ``describe_face`` in :mod:`facemtl.inference.fusion`), else None.
    features: list[np.ndarray] | None = None
    #: Whether the detector searched the image and answered (``False`` for an aligned crop).
    searched: bool = False
    #: What the detector raised on the image, if it failed; whether that is the image's fault or
    #: the detector's is settled in input order (:meth:`Pipeline.settled`).
    search_failure: Exception | None = None


class DetectorUnavailable(RuntimeError):
    """The face detector's library could not load here: the run stops with this sentence (exit
    status 1, the machine's refusal) rather than marking every photo unreadable."""

    exit_status = 1


class Pipeline:
    """Decode, detect and align images; batch their crops through a :class:`Predictor`.

    ``detector``: a registered detector name (``dlib`` or ``mtcnn``).
    ``min_face``: side in pixels of the smallest face box to look for, in the photo as
    the detector sees it (after the shrink below); a face whose box's longer side is under
    it is left out. ``None``: the detector's default search (40 for both), nothing left out.
    Halving it costs about four times the search. With MTCNN it also sets the scales every face
    is searched at, so answers can move a little with it (:class:`~facemtl.faces.mtcnn.MTCNNDetector`):
    compare runs made at one ``min_face``. The default detector is MTCNN: on photos composed of 1-5 test-split faces it found more faces than dlib and ran
    faster (``facemtl benchmark``; README "Speed").
    ``detect_max_side``: photos are shrunk to at most this many pixels on their long
    side for detection. Faces are cut from the photo as decoded: photo files over twice
    :attr:`decode_side` (2 x ``detect_max_side``) are decoded reduced to at least that
    (JPEG at 1/2, 1/4 or 1/8 scale straight from the file; see
    :func:`~facemtl.images.read_image`), which bounds memory (a 12,000 x 12,000 photo is
    never held whole as RGB) and keeps at least twice the pixels detection used. Boxes,
    landmarks, ``width`` and ``height`` are always in the photo's own pixels.
    ``workers``: threads that decode, detect and align images side by side; default: one
    per CPU core. Each thread has its own detector.
    ``max_latency``: seconds an image may wait for its batch to fill before the batch runs
    part-full (``0``: every image on its own; ``None``: wait for a full batch, the fastest
    for folders of photos). With a bound, the images are read from the caller's iterable in a
    thread of the pipeline's own (``facemtl-source``), so that the bound holds while the source
    waits for its next image: the iterable is read from that thread (a capture object it wraps
    must not be used from another meanwhile), and a caller that stops early leaves the thread
    waiting in it until it yields or ends (a daemon thread: it never holds the process open).
    ``keep_images``: keep each decoded image on its result (``ImageResult.image``), for
    drawing on it.
    """

    def __init__(self, predictor: Predictor, detector: str = "mtcnn", min_face: float | None = None,
                 workers: int | None = None, detect_max_side: int = 1024, max_latency: float | None = None,
                 keep_images: bool = False) -> None:
        try:
            DETECTORS.get(detector)  # (a plugin's detector loads here)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        if min_face is not None and min_face <= 0:
            raise ValueError(f"min_face must be a positive number of pixels, not {min_face}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.predictor = predictor
        #: What the predictor computes from each face beside its crop (see ``describe_face`` in
        #: :mod:`facemtl.inference.fusion`), or None for a predictor that needs crops only.
        self.describe = getattr(predictor, "describe_face", None)
        self.size = predictor.size
        self.detector_name = detector
        self.min_face = min_face
        self.workers = workers if workers is not None else usable_cores()
        self.detect_max_side = detect_max_side
        #: Photo files are decoded with at least this many pixels on their long side.
        self.decode_side = 2 * detect_max_side
        self.max_latency = max_latency
        self.keep_images = keep_images
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        #: Whether the detector has searched an image without failing, in input order; until it
        #: has, a failure is the detector's, not the image's (:meth:`settled`).
        self._searched = False

    @property
    def detector(self):
        """This thread's detector (built on first use: dlib's and onnxruntime's objects stay per thread)."""
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = build_detector(self.detector_name)
        return det

    def _unavailable(self, exc: ImportError) -> "DetectorUnavailable":
        return DetectorUnavailable(f"the face detector {self.detector_name!r} could not run: {describe_error(exc)} "
                                   "(its library did not load: a missing system library, or too little memory under "
                                   "a limit); nothing was searched")

    def _broken(self, exc: Exception, what: str) -> BrokenDetector:
        why = describe_error(exc)
        if isinstance(exc, NotImplementedError) and not str(exc):
            why = f"{type(self.detector).__qualname__}.detect is not implemented"
        elif why != type(exc).__name__:
            why = f"{type(exc).__name__}: {why}"
        return BrokenDetector(f"the face detector {self.detector_name!r} failed on {what}: {why} (a detector that "
                              "fails before it has searched one image is broken, not the image)")

    def settled(self, prepared: Prepared) -> Prepared:
        """``prepared`` once its detector failure, if any, is judged: consumed in input order, a
        failure before any image was searched is the detector's (:class:`BrokenDetector`), a later
        one the image's (its result says ``face detection failed``). Judged here rather than in
        the worker threads, which finish out of order: there, whether a photo's own failure
        stopped the run depended on which thread finished first (a review)."""
        if prepared.searched:
            self._searched = True
        elif prepared.search_failure is not None and not self._searched:
            exc = prepared.search_failure
            raise self._broken(exc, "the first image it searched") from exc
        return prepared

    def warm_up(self, pool: ThreadPoolExecutor, threads: int, batch: int = 1) -> None:
        """Build the detector in each of ``pool``'s ``threads`` threads and search a blank image
        with it, and run the network once on ``batch`` blank crops: what their first use costs
        (ONNX Runtime's and dlib's models loaded, memory laid out: about 0.7 s on this project's
        2-core machine) is then paid before a live source's first frame, not while its frames
        arrive (a user test: two cameras lost about 20 frames each just after the start).
        ``threads``: the pool's ``max_workers`` (a fresh pool starts a thread per task while it
        has fewer, so each takes one). :class:`DetectorUnavailable` where the detector's library
        does not load, as :meth:`prepare` says it."""
        barrier = threading.Barrier(threads)
        blank = np.zeros((64, 64, 3), np.uint8)

        def build() -> None:
            try:
                checked_faces(self.detector.detect(blank, self.min_face), self.detector_name)
            except ImportError as exc:
                raise self._unavailable(exc) from exc
            except BrokenDetector:
                raise
            except Exception as exc:
                raise self._broken(exc, "a blank 64 x 64 test image") from exc
            finally:
                try:  # (each thread takes one: the pool starts a thread per task while it has fewer)
                    barrier.wait(60)
                except threading.BrokenBarrierError:
                    pass

        futures = [pool.submit(build) for _ in range(threads)]
        size = self.predictor.size
        self.predictor.predict(np.zeros((max(1, batch), size, size, 3), np.uint8))
        for f in futures:
            f.result()

    # -- the whole path -------------------------------------------------------------
    def run(self, jobs: Iterable[tuple[ImageResult, Any]], aligned: bool = False,
            stop: Callable[[], bool] | None = None) -> Iterator[ImageResult]:
        """``(result skeleton, image)`` pairs in, finished results out, in order.

        ``image``: a path, a PIL image or an RGB array. ``aligned``: each image is one
        aligned face crop (no detection). ``stop``: once it returns true (a stop signal), no
        more jobs are read and the jobs read ahead that no worker has started are dropped;
        those started or prepared are answered and yielded, as a part-full batch
        (:meth:`prepared`). The results yielded are then the first jobs', in order.
        """
        queue: list[Prepared] = []
        n_crops = 0
        if self.max_latency is None:
            prepared: Iterator[Prepared | None] = self.prepared(jobs, aligned, stop)
        else:  # a pause in the source must not hold a part-full batch
            prepared = self.prepared_on_time(jobs, aligned,
                                             lambda: queue[0].since + self.max_latency if queue else None, stop)
        for p in prepared:
            if p is not None:
                queue.append(self.settled(p))
                n_crops += len(p.crops)
            full = n_crops >= self.predictor.batch_size
            late = self.max_latency is not None and bool(queue) and time.monotonic() - queue[0].since >= self.max_latency
            if full or late:
                yield from self.finish(queue)
                queue, n_crops = [], 0
        if queue:
            yield from self.finish(queue)

    def prepared(self, jobs: Iterable[tuple[ImageResult, Any]], aligned: bool,
                 stop: Callable[[], bool] | None = None) -> Iterator[Prepared]:
        """Decode, detect and align each job, in order; with several workers, ahead of the consumer.

        ``stop``: asked before each job is read and each image awaited; once it returns true, no
        more jobs are read and those read ahead that no worker has started are cancelled
        (:class:`_Cutoff`): only the ones done or started (at most ``workers`` at a time), up to
        the first not started, are yielded. Without it every job of the look-ahead (64 with the default batch) was
        awaited: a SIGTERM 10 s into a folder of 250 photos went on for 82 more images and 13 s,
        past ``docker stop``'s 10 s grace (a user test)."""
        stopped = stop if stop is not None else lambda: False
        if self.workers == 1:
            for result, image in _until(jobs, stopped):
                yield self.prepare(result, image, aligned)
            return
        pool = self._workers()
        ahead = max(4 * self.workers, self.predictor.batch_size)  # jobs in flight: enough to keep workers busy
        if self.max_latency is not None:
            ahead = 2 * self.workers  # a live source: do not read far ahead of what is answered
        window: deque[tuple[int, Future[Prepared | None]]] = deque()
        cutoff = _Cutoff()
        try:
            for seq, (result, image) in enumerate(_until(jobs, stopped)):
                window.append((seq, pool.submit(cutoff.run, seq, self.prepare, result, image, aligned)))
                if len(window) >= ahead:
                    yield cutoff.take(window)
            while window:
                if stopped():  # (also when the stop comes while the last jobs are awaited)
                    cutoff.cut(window)
                    if not window:
                        break
                yield cutoff.take(window)
        finally:  # the caller stopped early: drop the jobs not started yet, and none begins from here
            cutoff.cut(window, everything=True)

    def _workers(self) -> ThreadPoolExecutor:
        """The detection threads, kept for the pipeline's life so that each builds its detector once."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="facemtl-detect")
        return self._pool

    def prepared_on_time(self, jobs: Iterable[tuple[ImageResult, Any]], aligned: bool,
                         deadline: Callable[[], float | None],
                         stop: Callable[[], bool] | None = None) -> Iterator[Prepared | None]:
        """:meth:`prepared` for a live source under a latency bound: also ``None`` whenever
        ``deadline()`` (a ``time.monotonic`` time, or ``None``: none) passes before the next
        image is prepared, so a batch is flushed while the source pauses, not when its next
        image comes. The jobs are read in a thread of their own and prepared in the pool (also
        with one worker: its thread keeps its detector), at most ``2 x workers`` ahead of the
        consumer. An error raised by ``jobs`` is raised here. ``stop``: once it returns true, no
        more jobs are read (the at most ``2 x workers`` read are prepared and yielded). (Own
        code: a generator cannot be waited on with a timeout; the standard library's queue and
        futures do the work.)"""
        import queue as queues
        from concurrent.futures import TimeoutError as NotYet

        pool = self._workers()
        asked = stop if stop is not None else lambda: False  # (``stop`` is the feeder's own below)
        handoff: queues.Queue[Any] = queues.Queue(maxsize=2 * self.workers)
        stop, end = threading.Event(), object()

        def hand(item: Any) -> bool:  # False once the consumer has gone
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    return True
                except queues.Full:
                    continue
            return False

        def feed() -> None:
            try:
                for result, image in _until(jobs, asked):
                    future = pool.submit(self.prepare, result, image, aligned)
                    if not hand(future):
                        future.cancel()
                        return
                hand(end)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer and raised there
                hand(exc)

        threading.Thread(target=feed, name="facemtl-source", daemon=True).start()
        pending: Any = None
        try:
            while True:
                due = deadline()
                left = None if due is None else max(0.0, due - time.monotonic())
                try:
                    if pending is None:
                        pending = handoff.get(timeout=left)
                        if pending is end:
                            return
                        if isinstance(pending, BaseException):
                            raise pending
                    prepared = pending.result(timeout=left)
                except (queues.Empty, NotYet):
                    yield None  # the oldest waiting image is due
                    continue
                pending = None
                yield prepared
        finally:  # the end, or the caller stopped early: the feeder stops, queued jobs are dropped
            stop.set()
            while True:
                try:
                    item = handoff.get_nowait()
                except queues.Empty:
                    break
                if isinstance(item, Future):
                    item.cancel()

    def prepare(self, result: ImageResult, image: Any, aligned: bool) -> Prepared:
        """Decode, detect and align one image. An image that cannot be read or searched becomes
        an ``error`` result; raises :class:`DetectorUnavailable` only when the detector's library
        cannot load (a user test: every photo of a folder was marked unreadable for it)."""
        try:
            if aligned and is_open_file(image):  # an open file: its bytes, read once
                image = image.read()
            if aligned and isinstance(image, (str, Path, bytes, bytearray, memoryview)):
                # A crop file straight to the network's size, as training decodes it (JPEG's reduced
                # decoding included), whatever else is asked: --annotate or --accurate must not
                # change the answers. They get the full-size pixels from a second decode.
                image = bytes(image) if isinstance(image, (bytearray, memoryview)) else image
                source = io.BytesIO(image) if isinstance(image, bytes) else image
                crop, (result.width, result.height) = read_square(source, self.size)
                if not self.keep_images and self.describe is None:
                    return Prepared(result, [None], [crop])
                rgb, _ = read_image(image, None)
                if self.keep_images:
                    result.image = rgb
                return Prepared(result, [None], [crop], features=[self.describe(rgb, None)] if self.describe else None)
            rgb, (width, height) = read_image(image, None if aligned else self.decode_side)
        except Exception as exc:  # any unreadable file: report, never stop the batch
            return Prepared(result.fail(describe_error(exc)), [])
        result.width, result.height = width, height
        if self.keep_images:
            result.image = rgb
        try:
            return self._find(result, rgb, aligned)
        except ImportError as exc:  # the detector's library could not load: no photo's fault, stop the run
            raise self._unavailable(exc) from exc
        except BrokenDetector:
            raise
        except Exception as exc:
            # (the built-in detectors search a 1 x 1 image, or a 3000 x 1 one, alike; a huge photo
            # that runs out of memory is that photo's trouble, first or not)
            return Prepared(result.fail(f"face detection failed: {describe_error(exc)}"), [],
                            search_failure=None if out_of_memory(exc) else exc)

    def _find(self, result: ImageResult, rgb: np.ndarray, aligned: bool) -> Prepared:
        describe = self.describe
        if aligned:
            # the filter read_square uses for crop files (and training); a JPEG file's crop also
            # decodes reduced (libjpeg's draft mode), which an array cannot, so a crop of twice the
            # network's side or more answers slightly differently as a file and as its pixels
            crop = rgb if rgb.shape[:2] == (self.size, self.size) else \
                np.asarray(Image.fromarray(rgb).resize((self.size, self.size), Image.BILINEAR, reducing_gap=2.0))
            return Prepared(result, [None], [crop], features=[describe(rgb, None)] if describe else None)
        h, w = rgb.shape[:2]
        f = min(1.0, self.detect_max_side / max(h, w))
        if f == 1.0:
            faces = self.detector.detect(rgb, self.min_face)
        else:
            # Searching the photo as if shrunk by f: the detectors shrink it themselves (MTCNN's
            # pyramid, dlib's scaling), so the smallest face is scaled instead of the photo; a
            # separate shrink first cost a seventh of the time on 1280x960 photos.
            faces = self.detector.detect(rgb, (self.min_face or self.detector.min_face) / f)
        faces = checked_faces(faces, self.detector_name)
        try:
            return self._cut(result, rgb, faces, f)
        except ImportError:
            raise
        except Exception as exc:  # the detector has answered: what fails after it is this image's
            return Prepared(result.fail(f"face detection failed: {describe_error(exc)}"), [], searched=True)

    def _cut(self, result: ImageResult, rgb: np.ndarray, faces: list[Face], f: float) -> Prepared:
        """The aligned crops (and features) of the ``faces`` found on ``rgb``, searched shrunk by ``f``."""
        describe = self.describe
        h, w = rgb.shape[:2]
        if self.min_face is not None:
            # A search scale alone still returns larger-than-asked boxes of smaller faces (MTCNN
            # finds faces a little under its smallest scale): a face asked to be skipped is dropped.
            side = self.min_face / f
            faces = [face for face in faces if max(face.box[2] - face.box[0], face.box[3] - face.box[1]) >= side]
        crops = [align_face(rgb, face.landmarks, face.scheme, self.size) for face in faces]
        features = [describe(rgb, face) for face in faces] if describe else None  # on the pixels searched
        decoded = result.width / w  # > 1 when the file was decoded reduced
        return Prepared(result, [face.scaled(decoded) for face in faces] if decoded != 1 else faces, crops,
                        features=features, searched=True)

    def finish(self, queue: list[Prepared]) -> list[ImageResult]:
        """Run the queued crops through the predictor in one go and attach the answers."""
        crops = [c for q in queue for c in q.crops]
        if any(q.features is not None for q in queue):
            answers = iter(self.predictor.predict(crops, [f for q in queue for f in (q.features or [])]))
        else:
            answers = iter(self.predictor.predict(crops))
        for q in queue:
            r = q.result
            if r.status == ERROR:
                continue
            r.faces = [_face_result(face, r, next(answers)) for face in q.faces]
            r.status = OK if r.faces else NO_FACE
        return [q.result for q in queue]

    def close(self) -> None:
        """Stop the worker threads (they also end with the process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _until(jobs: Iterable[Any], stopped: Callable[[], bool]) -> Iterator[Any]:
    """``jobs`` until ``stopped()`` returns true, asked before each is read (``itertools.takewhile``
    would read one more and drop it)."""
    it = iter(jobs)
    while not stopped():
        try:
            yield next(it)
        except StopIteration:
            return


class _Cutoff:
    """Which jobs of :meth:`Pipeline.prepared` run once a stop is asked: those a worker began
    before it, up to the first not begun; the rest are dropped. A job checks in (:meth:`run`)
    under a lock as it begins, so none begins after the cut, and a job that a worker began
    after an earlier one was left waiting (the pool takes jobs in order, but a worker may be
    pre-empted between taking one and beginning it) is dropped too, never answered with a gap
    before it (a review: cancelling the futures from the last left such a gap). A job dropped
    once begun runs on in its worker, its answer unused: nothing of it is written, so
    ``--skip-stored`` takes it up. (Own code: ``Future.cancel`` cannot tell which began first.)"""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.begun: set[int] = set()
        self.at: int | None = None

    def run(self, seq: int, prepare: Callable[..., Prepared], *args: Any) -> Prepared | None:
        """``prepare(*args)`` for job ``seq``, or ``None`` where a cut came before it began."""
        with self.lock:
            if self.at is not None and seq >= self.at:
                return None
            self.begun.add(seq)
        return prepare(*args)

    def cut(self, window: deque[tuple[int, Future[Prepared | None]]], everything: bool = False) -> None:
        """Cut at the first job of ``window`` not begun (``everything``: at its first job): it and
        every later one leave the window (cancelled where not begun); the ones before it, all
        begun, stay. A cut once made only moves earlier: a second one, with every job left begun,
        lifted it, and a job a worker had taken before the first then ran for nothing (a review)."""
        with self.lock:
            first = window[0][0] if window and everything else \
                next((seq for seq, _ in window if seq not in self.begun), None)
            if first is not None:
                self.at = first if self.at is None else min(self.at, first)
            if self.at is None:
                return
            at = self.at
        kept = [(seq, f) for seq, f in window if seq < at]
        for seq, f in window:
            if seq >= at:
                f.cancel()
        window.clear()
        window.extend(kept)

    def take(self, window: deque[tuple[int, Future[Prepared | None]]]) -> Prepared:
        """The first job's answer, awaited, and the job forgotten (:attr:`begun` stays as small as
        the window, for an endless iterator too)."""
        seq, future = window.popleft()
        result = future.result()
        with self.lock:
            self.begun.discard(seq)
        assert result is not None  # (a job before the cut: begun, so prepared)
        return result


def _face_result(face: Face | None, image: ImageResult, answers: dict) -> FaceResult:
    if face is None:  # an aligned crop: the whole image is the face
        return FaceResult([0, 0, image.width, image.height] if image.width else None, None, None, answers)
    return FaceResult(
        [round(float(v), 1) for v in face.box],
        round(float(face.score), 4),
        [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks],
        answers,
    )
