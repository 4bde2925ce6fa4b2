"""The library's entry to live video: :class:`VideoAnalyzer` (a model, a detector and its
threads, ready for streams) and :func:`stream_events` (one call, events out).

Kept apart from :mod:`facemtl.video.stream`, the loop they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..inference.pipeline import Pipeline
from ..inference.predictor import Predictor, load_predictor
from ..system import usable_cores
from .settings import StreamSettings
from .sources import SOURCES_FILE_SUFFIXES, Source, open_sources
from .stream import Event, Stream


class VideoAnalyzer:
    """A model, a detector and its worker threads, ready to analyse streams.

    ``checkpoint`` (default: the shipped model), ``runtime``, ``device``, ``batch_size``,
    ``interval`` and ``threads`` load the :class:`Predictor` (see :func:`load_predictor`;
    ``threads`` defaults to half the cores, as the detection threads run beside it: on this
    project's 2-core machine two network threads beside two detection threads ran three
    times slower per face than one);
    ``detector``, ``min_face`` and ``workers`` set up the detection threads (see
    :class:`Pipeline`). ``predictor``: share an already loaded one. ``fusion``: the accurate
    variant (``True``: the shipped fusion file, or a fusion file's path; see
    :func:`~facemtl.inference.fusion.load_accurate`): dlib's descriptor of each detected face,
    computed in the detection threads, mixed into the classification answers (about 100 ms a
    face on a 2-core CPU: for recorded video and sparse scenes rather than a busy live camera).
    """

    def __init__(self, checkpoint: str | Path | None = None, detector: str = "mtcnn", device: str = "auto",
                 runtime: str | None = None, min_face: float | None = None, workers: int | None = None,
                 batch_size: int = 32, interval: float = 0.8, threads: int | None = None,
                 predictor: Predictor | None = None, fusion: str | Path | bool | None = None) -> None:
        if threads is None:  # the detection threads run beside the network: leave them cores
            threads = max(1, usable_cores() // 2)
        if fusion:  # (a predictor passed in is wrapped too: a review found it answered the fast path)
            from ..inference.fusion import load_accurate

            predictor = load_accurate(fusion, checkpoint, runtime, device, batch_size, interval, threads, predictor)
        self.predictor = predictor or load_predictor(checkpoint, runtime, device, batch_size, interval, threads)
        self.pipeline = Pipeline(self.predictor, detector, min_face, workers)
        self.tasks = self.predictor.tasks

    def stream(self, source: str | Source | Sequence[str | Source], settings: StreamSettings | None = None,
               log: Callable[[str], None] | None = None) -> Stream:
        """A :class:`Stream` of ``source``: a SOURCE string (file, folder, camera index, URL,
        sources file), a :class:`Source`, or several (a list).

        Errors: a missing file or a malformed URL raises :class:`SourceError` here. One source
        (``source`` a string, path or :class:`Source` that names one) that yields no frame at
        all raises :class:`SourceError` with its sentence as the stream is iterated (e.g. a
        text file named ``.jpg``: ``no frame could be decoded: not a video ...``). Several
        sources (a list, even of one, or a sources file) collect instead: a source's error is
        passed to ``log`` and kept in :attr:`Stream.errors`, and the other sources go on.
        An error after frames came is collected in either case (the frames read are results)."""
        settings = settings or StreamSettings()
        single = isinstance(source, (str, Source, Path))
        if single and not isinstance(source, Source) and Path(str(source)).suffix.lower() in SOURCES_FILE_SUFFIXES:
            single = False  # a sources file, even of one line, collects as several sources do
        items = [source] if isinstance(source, (str, Source, Path)) else list(source)
        sources: list[Source] = []
        for item in items:
            sources += [item] if isinstance(item, Source) else open_sources(str(item), settings.sources)
        return Stream(sources, self.pipeline, settings, log, strict=single and len(sources) == 1)

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> "VideoAnalyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_events(source: str | Source | Sequence[str | Source], checkpoint: str | Path | None = None,
           detector: str = "mtcnn", device: str = "auto", min_face: float | None = None,
           log: Callable[[str], None] | None = None, **settings: Any) -> Iterator[Event]:
    """Analyse a video, camera, URL or folder of frames; yields its events in order.

    Each :class:`ImageResult` is one frame: ``frame``, ``time`` (seconds), ``faces``, each
    face with its ``track`` id, box, the track's smoothed answers (``answers``) and the
    frame's own (``raw``, on frames where the face was analysed). Each :class:`TrackResult`
    is a track that ended: its frames and its aggregated answers with ``confidence``.
    ``settings``: any field of :class:`StreamSettings` (e.g. ``detect_every=3``,
    ``max_frames=300``).

    Errors (see :meth:`VideoAnalyzer.stream`): one source that cannot be read raises
    :class:`SourceError` with its sentence, a missing file as a file from which no frame
    decodes; with a list of sources, a source's error goes to ``log`` (``error: ...``) and the
    others go on::

        for event in stream_events("street.mp4", max_frames=300):
            if isinstance(event, TrackResult):
                print(event.track, event.answers["age"].value, event.answers["gender"].value)
    """
    with VideoAnalyzer(checkpoint, detector, device, min_face=min_face) as analyzer:
        yield from analyzer.stream(source, StreamSettings(**settings), log)
