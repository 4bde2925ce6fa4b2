"""The stream loop: frames in, tracked faces with steady answers out, as events.

Per source, a reader thread decodes frames into a small buffer (:class:`FrameReader`:
a live source drops its oldest frames when analysis falls behind, a file waits). The
consumer (the thread iterating the :class:`Stream`) takes frames from every source in
turn and, on every ``detect_every``-th frame of a source, hands it to the pipeline's
worker threads, which detect and align its faces; the other frames only move the tracks
along their Kalman prediction. In frame order, each source's :class:`Tracker` assigns the
detections to tracks; every detected face of a track becomes a crop for the network, and
the crops of several frames (and sources) share one network batch, which runs when it is
full, when its oldest live frame has waited ``max_latency`` seconds, or at the end. Then
each frame is finished in order: its tracks' samples join their smoothers, and every face
gets the track's smoothed answers, with the frame's own under ``raw`` where it was analysed.

Decoding (reader threads), detection (worker threads) and the network (consumer thread)
overlap; dlib, ONNX Runtime, FFmpeg and torch release the GIL while they work.

Events, in order: an :class:`ImageResult` per frame (``frame``, ``time``, ``wall_time``
for live sources, ``source`` when there are several, ``faces`` each with ``track``), and
a :class:`TrackResult` when a track ends (lost too long, its source ended, or the stream
was stopped): nothing is lost when :meth:`Stream.stop` is called, since every frame taken
is finished and every open track closed before the iteration ends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..faces import DETECTORS
from ..inference.pipeline import Pipeline, Prepared
from ..inference.predictor import Predictor
from ..inference.results import ERROR, NO_FACE, OK, FaceResult, ImageResult, TaskAnswer, TrackResult
from .ffmpeg import Url
from .reader import FrameReader
from .settings import STAGES, StreamSettings, StreamStats  # noqa: F401  (facemtl.video.stream.StreamSettings, as before)
from .smoothing import TrackSmoother, face_quality
from .sources import Frame, Source, SourceError
from .tracker import Track, Tracker

Event = ImageResult | TrackResult


@dataclass
class FrameResult(ImageResult):
    """A video frame's :class:`ImageResult`, plus ``unshown``: the boxes ``(x1, y1, x2, y2)``, in
    pixels, of faces on the frame that ``faces`` does not show (every detection of the frame,
    tentative tracks, lost tracks' predicted boxes), filled when the frame keeps its pixels, so
    that ``--blur`` pixelates them too (privacy: blurring too much is fine, too little is not).
    Never serialised."""

    unshown: list[list[float]] = field(default_factory=list, repr=False, compare=False)


@dataclass
class _Record:
    """A track as the output knows it: its smoother and the frames it was shown on."""

    smoother: TrackSmoother
    first_frame: int | None = None
    last_frame: int | None = None
    first_time: float | None = None
    last_time: float | None = None
    first_wall_time: float | None = None
    last_wall_time: float | None = None
    frames: int = 0
    queued: int = 0  # samples on their way through the network


class _Feed:
    """One source with its reader, tracker and track records."""

    def __init__(self, source: Source, reader: FrameReader, tracker: Tracker, label: str | None) -> None:
        self.source = source
        self.reader = reader
        self.tracker = tracker
        self.label = label
        self.records: dict[int, _Record] = {}
        self.taken = 0
        self.in_window = 0
        self.cut = False  # no more frames wanted (max_frames, or stopped)
        self.detect_next = False  # detect on the next frame taken, whatever the schedule
        self.closed = False
        self.last_index: int | None = None  # the last tracked frame's index in the source


@dataclass
class _Job:
    feed: _Feed
    frame: Frame
    result: ImageResult
    future: Future | None

    def ready(self) -> bool:
        return self.future is None or self.future.done()


@dataclass
class _Pending:
    """A tracked frame waiting for its network batch (``result`` ``None``: its source closing)."""

    feed: _Feed
    result: ImageResult | None
    #: (track id, box, score, landmarks, index of its crop in ``crops`` or None)
    faces: list[tuple[int, list[float], float | None, list | None, int | None]] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    #: (track id, quality) per crop
    samples: list[tuple[int, float]] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    live: bool = False


class Stream:
    """An iterable of events (:class:`ImageResult` per frame, :class:`TrackResult` per ended
    track) from ``sources``; see the module's description. Iterate it once.

    ``log``: receives the sources' warnings (``warning: ...``: a corrupt frame, a
    reconnection) and errors (``error: ...``: a source that cannot be read), one sentence each. :attr:`errors` keeps the errors,
    :attr:`stats` the counts and timings. :meth:`stop` (safe from a signal handler or
    another thread) ends the stream after finishing what was taken.

    ``strict`` (with one source only): when that source yields no frame at all (not a video, a
    camera that does not open, a URL that never answers), iterating raises :class:`SourceError`
    with its sentence instead of ending with no events (the sentence is then not logged, but
    still kept in :attr:`errors`). Otherwise a source's error is logged and kept, and the
    others go on; so is an error after frames came (the frames read are results).
    :meth:`VideoAnalyzer.stream` sets it for a single source.
    """

    def __init__(self, sources: Sequence[Source], pipeline: Pipeline, settings: StreamSettings | None = None,
                 log: Callable[[str], None] | None = None, strict: bool = False) -> None:
        if not sources:
            raise ValueError("a stream needs at least one source")
        self.settings = settings or StreamSettings()
        self.pipeline = pipeline
        self.predictor: Predictor = pipeline.predictor
        #: What names a track's aggregate rank, per task whose ranks have names.
        self._levels = {t.name: t.describe_prediction for t in getattr(self.predictor, "tasks", ())
                        if t.level_names() is not None}
        self.log = log or (lambda s: None)
        #: Called about once a second while no frame arrives (a camera reconnecting), from the
        #: thread iterating the stream: the results database's sink says its sources are alive.
        self.on_idle: Callable[[], None] | None = None
        self._idle_at = time.monotonic()
        self.errors: list[str] = []
        self.stats = StreamStats()
        self.sure_score = float(getattr(DETECTORS.get(pipeline.detector_name), "sure_score", 0.5))
        self._ready = threading.Condition()
        self._stopping = False  # a plain flag: set from signal handlers, which must take no lock
        self._lock = threading.Lock()
        self.stop_reason: str | None = None
        several = len(sources) > 1
        self.strict = strict and not several
        for src in sources:  # with several sources, a camera down at start-up is retried (one alone ends at once)
            if isinstance(src, Url):
                src.retry_open = several
        s = self.settings
        self.feeds = [
            _Feed(src, FrameReader(src, self._ready, self._warn, s.buffer, s.fps_cap),
                  Tracker(s.tracker, self.sure_score), src.name if several else None)
            for src in sources
        ]
        self._ahead = 2 * max(1, pipeline.workers)  # detection jobs in flight
        self._window = min(64, self._ahead * self.settings.detect_every + 1)  # frames taken, not yet tracked
        self._pool: ThreadPoolExecutor | None = None
        self._iterated = False
        self._jobs: deque[_Job] = deque()  # frames taken, in order, not yet tracked

    def _warn(self, message: str) -> None:
        self.log(f"warning: {message}")

    # -- control --------------------------------------------------------------------
    def stop(self, reason: str | None = None) -> None:
        """End the stream soon: no new frames are taken; those taken are finished, open tracks closed."""
        self.stop_reason = self.stop_reason or reason
        self._stopping = True  # the loop tells the readers (it wakes every 10 ms at most)

    @property
    def stopped(self) -> bool:
        return self._stopping

    # -- the loop -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Event]:
        if self._iterated:
            raise RuntimeError("a Stream can be iterated only once")
        self._iterated = True
        self._pool = ThreadPoolExecutor(max(1, self.pipeline.workers), thread_name_prefix="facemtl-detect")
        window = self._jobs = deque()
        pending: list[_Pending] = []
        try:
            if any(f.source.live for f in self.feeds):  # loaded before the first frame arrives, not while frames do
                from scipy.optimize import linear_sum_assignment  # noqa: F401  (the tracker's: 0.46 s to import)

                self.pipeline.warm_up(self._pool, max(1, self.pipeline.workers), self.settings.batch_size)
            for f in self.feeds:
                f.reader.start()
            while True:
                if self._stopping:
                    for f in self.feeds:
                        f.reader.stop_event.set()
                progressed = self._fill(window)
                while window and (window[0].ready() or self._detections(window) >= self._ahead
                                  or self._starved()) and not self._due(pending):
                    pending.append(self._track(window.popleft()))
                    progressed = True
                for feed in self.feeds:
                    if not feed.closed and feed.in_window == 0 and self._feed_done(feed):
                        pending.append(self._closing(feed))
                        progressed = True
                finished = all(f.closed for f in self.feeds) and not window
                if pending and (finished or self._due(pending)):
                    yield from self._flush(pending)
                    pending = []
                    continue
                if finished:
                    break
                if progressed:
                    self._idle_at = time.monotonic()
                else:
                    if self.on_idle is not None and time.monotonic() - self._idle_at >= 1.0:
                        self._idle_at = time.monotonic()
                        self.on_idle()
                    self._wait(window)
        finally:
            for f in self.feeds:
                f.reader.stop()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.stats.elapsed = time.perf_counter() - self.stats.started
            self._sync_stats()

    def _detections(self, window: deque[_Job]) -> int:
        return sum(j.future is not None for j in window)

    def _starved(self) -> bool:
        """No frame is coming soon: every source is stopped, cut or ended with its buffer taken."""
        return all(f.cut or f.reader.done or self._stopping for f in self.feeds)

    def _feed_done(self, feed: _Feed) -> bool:
        """No more frames will be taken from ``feed``: its source ended (and its buffer is
        taken), it reached ``max_frames``, or the stream is stopping."""
        return feed.reader.done or feed.cut or self._stopping

    def _wait(self, window: deque[_Job]) -> None:
        if window and window[0].future is not None:
            from concurrent.futures import wait

            wait([window[0].future], timeout=0.01)
        else:
            with self._ready:
                self._ready.wait(0.01)

    def _fill(self, window: deque[_Job]) -> bool:
        """Take frames from the sources, in turn, while the window has room; submit detections."""
        if self._stopping:
            return False
        s = self.settings
        took = False
        with self._ready:
            more = True
            while more and len(window) < self._window:
                more = False
                for feed in self.feeds:
                    if feed.cut or feed.closed:
                        continue
                    detect = feed.taken % s.detect_every == 0 or feed.detect_next
                    if detect and self._detections(window) >= self._ahead:
                        continue
                    frame = feed.reader.take()
                    if frame is None:
                        continue
                    detect = detect or frame.restarted  # a file played again: its faces found at once
                    if self.stats.first_frame is None:
                        self.stats.first_frame = time.perf_counter()
                    feed.taken += 1
                    feed.detect_next = False
                    if s.max_frames is not None and feed.taken >= s.max_frames:
                        feed.cut = True
                        feed.reader.stop_event.set()
                    window.append(self._job(feed, frame, detect))
                    took = more = True
        return took

    def _job(self, feed: _Feed, frame: Frame, detect: bool) -> _Job:
        h, w = frame.rgb.shape[:2]
        result = FrameResult(frame=frame.index, time=frame.time, wall_time=frame.wall_time, source=feed.label,
                             width=int(w), height=int(h))
        if self.settings.keep_images:
            result.image = frame.rgb
        feed.in_window += 1
        future = self._pool.submit(self._detect, result, frame.rgb) if detect else None
        return _Job(feed, frame, result, future)

    def _detect(self, result: ImageResult, rgb: np.ndarray) -> Prepared:
        with self._clock("detect"):
            return self.pipeline.prepare(result, rgb, False)

    @contextmanager
    def _clock(self, stage: str) -> Iterator[None]:
        """Add the wall and CPU seconds of the block to ``stage``."""
        t, c = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - t, time.thread_time() - c
            with self._lock:
                self.stats.seconds[stage] += wall
                self.stats.cpu_seconds[stage] += cpu

    # -- tracking (in frame order, per source) ------------------------------------------
    def _track(self, job: _Job) -> _Pending:
        feed = job.feed
        feed.in_window -= 1
        prepared = self.pipeline.settled(job.future.result()) if job.future is not None else None
        with self._clock("track"):
            return self._tracked(job, prepared)

    def _tracked(self, job: _Job, prepared: Prepared | None) -> _Pending:
        feed = job.feed
        pend = _Pending(feed, job.result, live=feed.source.live)
        if prepared is not None and prepared.result.status == ERROR:
            self._warn(f"{feed.source.name}: frame {job.frame.index}: {prepared.result.error}; tracked without it")
            job.result.status, job.result.error = OK, None
            prepared = None
        # source frames since the last one tracked: frames a live reader dropped (analysis behind) or
        # the FPS cap skipped still pass for the faces (a user test: with --realtime dropping, boxes
        # moved one frame's worth over gaps of eight and people were split into several tracks)
        steps = 1 if feed.last_index is None else job.frame.index - feed.last_index
        feed.last_index = job.frame.index
        # a scene cut, where no track goes on: a file played again (--loop); a source silent for
        # longer than a lost track is kept is one too, which the tracker finds in the frames' times
        if job.frame.restarted:
            cut = feed.tracker.cut()
            pend.ended, pend.dropped = [t.id for t in cut.ended], [t.id for t in cut.dropped]
            steps = 1
        if prepared is None:
            step = feed.tracker.predict(job.frame.time, steps)
            faces = []
        else:
            faces = prepared.faces
            step = feed.tracker.update(np.array([f.box for f in faces]).reshape(-1, 4), [f.score for f in faces],
                                       job.frame.time, steps)
        for track, d in step.started + step.unshown:  # tentative: analysed now, shown once confirmed
            self._sample(pend, feed, track, faces, prepared, d)
        for track, d in step.tracked:
            crop_index = self._sample(pend, feed, track, faces, prepared, d)
            if d is not None:
                face = faces[d]
                pend.faces.append((track.id, [round(float(v), 1) for v in face.box], round(float(face.score), 4),
                                   [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks], crop_index))
            else:
                box = _clip(track.box, job.result)
                if box is not None:  # else: leaving the frame
                    pend.faces.append((track.id, box, None, None, None))
        # (a face a weak detection started waits for the usual detections: one early detection for each
        # weak false hit moving about had the stream detect on every frame; a review)
        if prepared is not None and (any(not t_.weak for t_, _ in step.started)
                                     or any(t_.lost_for == 1 for t_ in feed.tracker.tracks)
                                     or any(t_.hits == 1 for t_, _ in step.tracked)):
            # confirm new faces a sure detection started, learn the velocity of those seen once, find
            # lost ones again: one frame later, not detect_every
            self._detect_soon(feed)
        pend.ended += [t_.id for t_ in step.ended]  # (after a cut's: overwritten, the tracks on screen when
        pend.dropped += [t_.id for t_ in step.dropped]  # a looped file restarted were never closed, a user test)
        if self.settings.keep_images:  # every face seen, shown or not, for --blur
            shown = {f[0] for f in pend.faces}
            others = [t_ for t_ in feed.tracker.tracks + step.ended + step.dropped if t_.id not in shown]
            job.result.unshown = [[float(v) for v in b] for b in [f.box for f in faces] + [t_.box for t_ in others]]
        return pend

    def _detect_soon(self, feed: _Feed) -> None:
        """Detect on ``feed``'s next frame: the first of its frames in the window, or the next one taken."""
        for job in self._jobs:
            if job.feed is feed:
                if job.future is None:
                    job.future = self._pool.submit(self._detect, job.result, job.frame.rgb)
                return
        feed.detect_next = True

    def _sample(self, pend: _Pending, feed: _Feed, track: Track, faces: list, prepared: Prepared | None,
                d: int | None) -> int | None:
        """Queue the crop of ``track``'s detection ``d`` for the network; returns its index in ``pend.crops``."""
        if track.id not in feed.records:
            feed.records[track.id] = _Record(TrackSmoother(self.settings.history, self.settings.numeric, self._levels))
        if d is None:
            return None
        face, crop, rec = faces[d], prepared.crops[d], feed.records[track.id]
        quality = face_quality(face.box, face.score, crop, self.sure_score, self.settings.quality)
        if not (self.settings.always_analyse or rec.smoother.wants(quality, rec.queued)):
            return None  # it could not change the track's answers: spare the network
        rec.queued += 1
        pend.crops.append(crop)
        pend.samples.append((track.id, quality))
        return len(pend.crops) - 1

    def _closing(self, feed: _Feed) -> _Pending:
        feed.closed = True
        if feed.reader.error:
            self.errors.append(feed.reader.error)
            if self.strict and feed.reader.read == 0:  # one source, and not one frame from it
                raise SourceError(feed.reader.error)
            self.log(f"error: {feed.reader.error}")
        step = feed.tracker.close()
        return _Pending(feed, None, ended=[t.id for t in step.ended], dropped=[t.id for t in step.dropped])

    def _due(self, pending: list[_Pending]) -> bool:
        """Time to run the network: a full batch (checked after each frame, so batches are
        the same whatever the timing), 64 frames waiting, or a live frame waiting too long
        (at the end, or when stopped, the loop runs what is left)."""
        if not pending:
            return False
        s = self.settings
        if sum(len(p.crops) for p in pending) >= s.batch_size or len(pending) >= 64:
            return True
        live = next((p for p in pending if p.live), None)
        return live is not None and time.monotonic() - live.since >= s.max_latency

    # -- finishing (network, smoothing, events) ------------------------------------------
    def _flush(self, pending: list[_Pending]) -> Iterator[Event]:
        crops = [c for p in pending for c in p.crops]
        with self._clock("network"):
            answers = self.predictor.predict(crops) if crops else []
        self.stats.analysed += len(crops)
        base = 0
        for p in pending:
            with self._clock("finish"):
                events = self._finish(p, answers[base : base + len(p.crops)])
            base += len(p.crops)
            for e in events:
                with self._clock("consumer"):
                    yield e

    def _finish(self, p: _Pending, answers: list[dict[str, TaskAnswer]]) -> list[Event]:
        feed, out = p.feed, []
        for (tid, quality), a in zip(p.samples, answers):
            feed.records[tid].smoother.add(a, quality)
            feed.records[tid].queued -= 1
        if p.result is not None:
            r = p.result
            faces = []
            for tid, box, score, landmarks, crop_index in p.faces:
                rec = feed.records[tid]
                raw = answers[crop_index] if crop_index is not None else None
                faces.append(FaceResult(box, score, landmarks, dict(rec.smoother.answers()), track=tid, raw=raw))
                if rec.first_frame is None:
                    rec.first_frame, rec.first_time, rec.first_wall_time = r.frame, r.time, r.wall_time
                    self.stats.tracks += 1
                rec.last_frame, rec.last_time, rec.last_wall_time = r.frame, r.time, r.wall_time
                rec.frames += 1
            faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            r.faces, r.status = faces, OK if faces else NO_FACE
            self.stats.frames += 1
            self.stats.last_frame = time.perf_counter()
            self.stats.faces += len(faces)
            out.append(r)
        for tid in p.ended:
            rec = feed.records.pop(tid, None)
            if rec is not None and rec.frames:
                out.append(TrackResult(tid, rec.first_frame, rec.last_frame, rec.frames, dict(rec.smoother.answers()),
                                       rec.first_time, rec.last_time, rec.smoother.confidence, feed.label,
                                       rec.first_wall_time, rec.last_wall_time))
        for tid in p.dropped:
            feed.records.pop(tid, None)
        self._sync_stats()
        return out

    def _sync_stats(self) -> None:
        st, readers = self.stats, [f.reader for f in self.feeds]
        st.open_tracks = sum(sum(r.frames > 0 for r in f.records.values()) for f in self.feeds)
        st.dropped = sum(r.dropped for r in readers)
        st.skipped = sum(r.skipped for r in readers)
        st.seconds["read"] = sum(r.seconds for r in readers)
        st.cpu_seconds["read"] = sum(r.cpu_seconds for r in readers)


def _clip(box: np.ndarray, image: ImageResult) -> list[float] | None:
    """A predicted box cut to the frame, rounded; ``None`` when less than half of it is inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = image.width or 1e9, image.height or 1e9
    c = [min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)]
    if (c[2] - c[0]) * (c[3] - c[1]) < 0.5 * max(x2 - x1, 0) * max(y2 - y1, 0):
        return None
    return [round(v, 1) for v in c]


def __getattr__(name: str) -> Any:
    """``VideoAnalyzer`` and ``stream_events`` from here, as before they moved to :mod:`facemtl.video.analyzer`."""
    if name in ("VideoAnalyzer", "stream_events"):
        from . import analyzer

        return getattr(analyzer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
