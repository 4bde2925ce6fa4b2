"""``facemtl stream``: the command's body (:mod:`facemtl.cli` only parses its flags).

Results go through a list of sinks (:class:`~facemtl.sinks.Sink`): JSON lines, CSV or the
track table on stdout, the annotated video, and whatever else :func:`build_sinks` is given
(the results database plugs in there). SIGINT (Ctrl-C) and SIGTERM stop the stream
cleanly: every frame taken is finished, every open track closed and written, every sink
closed; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from ..inference.results import ImageResult, TrackResult
from ..sinks import JsonLinesSink, Sink, TableSink, VideoCsvSink
from ..system import SIGNAL_STATUS, quiet_stdout, stop_on_signals
from .analyzer import VideoAnalyzer
from .settings import StreamSettings, StreamStats
from .sources import Source, open_sources
from .stream import Stream

#: Why a stream stops when its standard output's reader has gone (``stream ... | head``).
CLOSED_OUTPUT = "a closed output"


def build_sinks(tasks, as_json: bool = False, as_csv: bool = False, annotate: str | None = None, blur: bool = False,
                several: bool = False, out: TextIO | None = None, fps: float = 30.0,
                preset: str = "veryfast") -> list[Sink]:
    """The sinks the flags ask for: one of JSON lines / CSV / the track table on ``out``, and the annotated
    video (``preset``: x264's speed preset, see :data:`~facemtl.video.PRESETS`)."""
    out = out or sys.stdout
    sinks: list[Sink] = [JsonLinesSink(out, faces=True) if as_json else VideoCsvSink(tasks, out, several)
                         if as_csv else TableSink(out, frames=False)]
    if annotate:
        from .writer import VideoWriterSink

        units = {t.name: t.unit for t in tasks}  # (an age's number is labelled alone)
        sinks.append(VideoWriterSink(annotate, blur=blur, fps=fps, preset=preset, units=units))
    return sinks


class ProgressLine:
    """``frames 1234 (3 dropped), faces 5012, tracks 12 (3 open), 31.2 FPS`` on a terminal, twice a second."""

    def __init__(self, stats: StreamStats, out: TextIO | None = None, every: float = 0.5) -> None:
        self.stats, self.out, self.every = stats, out or sys.stderr, every
        self._last = 0.0
        self.shown = False

    def text(self) -> str:
        s = self.stats
        dropped = f" ({s.dropped} dropped)" if s.dropped else ""
        return (f"frames {s.frames}{dropped}, faces {s.faces}, tracks {s.tracks} ({s.open_tracks} open), "
                f"{s.fps:.1f} FPS")

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            self.out.write("\r" + self.text() + "\033[K")
            self.out.flush()
            self.shown = True

    def end(self) -> None:
        if self.shown:
            self.update(force=True)
            self.out.write("\n")
            self.out.flush()


def _say(message: str) -> None:
    print(f"facemtl: {message}", file=sys.stderr, flush=True)


def run_stream(sources: Sequence[str], as_json: bool = False, as_csv: bool = False, annotate: str | None = None,
               blur: bool = False, settings: StreamSettings | None = None, checkpoint: str | None = None,
               runtime: str | None = None, device: str = "auto", detector: str = "mtcnn",
               min_face: float | None = None, workers: int | None = None, threads: int | None = None,
               progress: bool | None = None, sinks: Sequence[Sink] = (), stats: bool = False, db: str | None = None,
               thumbnails: bool = False, preset: str = "veryfast", live_frame: bool = True,
               fusion: str | bool | None = None, outputs: Sequence[str] = ()) -> int:
    """Analyse ``sources`` until they end or a signal stops them; returns the exit status:
    0 when every source was read to its end (or ``max_frames``), 1 when a source or an output
    failed (its sentence is on stderr; everything analysed before is written to the outputs
    left; the stream stops when none is left), 130 / 143 when SIGINT /
    SIGTERM stopped it (everything analysed is written, every open track closed).
    ``sinks``: more sinks beside those of the flags (e.g. the results database).
    ``stats``: end with :meth:`StreamStats.to_dict` as ``facemtl: stats {...}`` on stderr.
    ``db``: also write every face and track to the results database at this URL or SQLite file
    (:class:`~facemtl.sinks.db.DbSink`: batched transactions, a live frame per source every
    second for the operator page; ``thumbnails``: a crop of each face). ``preset``: x264's speed
    preset for the annotated video. ``fusion``: the accurate variant (see :class:`VideoAnalyzer`).
    ``outputs``: more outputs by name, ``NAME:TARGET`` (``--output``; :data:`facemtl.sinks.SINKS`)."""
    settings = settings or StreamSettings()
    missing = [m for m in ("av", "scipy") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"facemtl stream needs {' and '.join(missing)}: pip install 'facemtl[video]'")
    if blur and not annotate:
        raise ValueError("--blur blurs the faces of the annotated video: give --annotate OUT.mp4 too")
    if annotate:
        from .writer import check_output

        check_output(annotate, preset)  # a folder, a suffix with no H.264 container, a bad preset: before the model
    from ..sinks import build_output
    from ..sinks.base import check_outputs, passed_sinks

    sinks = passed_sinks(sinks)
    opened = open_sources(list(sources), settings.sources)  # a missing file or bad URL fails here, before the model
    # before the model too; never over a video or frames folder being read, or the database
    check_outputs(outputs, [str(s.spec) for s in opened], db, annotate)
    if annotate and len(opened) > 1:
        raise ValueError("--annotate writes one video: give it one source")
    if annotate:
        _refuse_overwriting_a_source(annotate, opened)
    settings.keep_images = bool(annotate) or db is not None  # the database keeps live frames (and thumbnails)
    with VideoAnalyzer(checkpoint, detector, device, runtime, min_face, workers, threads=threads,
                       fusion=fusion) as analyzer:
        fps = next((s.fps for s in opened if s.fps), 30.0)
        stored = []
        if db is not None:  # first: a refused source name leaves no other output begun (a CSV header, a video)
            from ..sinks.db import open_db_sink

            single = opened[0].name if len(opened) == 1 else None  # several sources label their own results
            # a name of the server's uploads or of an analyze run is refused here, before a frame is read
            stored.append(open_db_sink(db, analyzer.predictor.info, thumbnails, kind="stream", source=single,
                                       live_frames=live_frame,
                                       sources=[s.name for s in opened]))
        named: list[Sink] = []
        try:
            for spec in outputs:
                named.append(build_output(spec, analyzer.tasks))
            outputs = build_sinks(analyzer.tasks, as_json, as_csv, annotate, blur, len(opened) > 1, fps=fps,
                                  preset=preset) + list(sinks) + named + stored
        except BaseException:  # the outputs opened so far are closed (a database's session ended)
            for sink in named + stored:
                with contextlib.suppress(OSError, RuntimeError):
                    sink.abandon()
            raise
        stream = analyzer.stream(opened, settings, log=_say)
        failed: list[Sink] = []
        beating = [s for s in outputs if callable(getattr(s, "heartbeat", None))]  # (--db's, or one passed in)
        if beating:  # a camera reconnecting for minutes stays "running", not "silent", in the database
            stream.on_idle = lambda: [s.heartbeat() for s in beating if s not in failed]
        bar = ProgressLine(stream.stats) if (progress if progress is not None else sys.stderr.isatty()) else None
        with stop_on_signals(lambda signum: stream.stop(signal.Signals(signum).name)) as received:
            ended = False
            try:
                _pump(stream, outputs, bar, failed)
                ended = not received
            finally:
                # stopped (or failed) before a first frame: an --output file of an earlier run is left as it
                # was, not emptied (a user test of analyze, whose outputs these are too)
                early = stream.stats.frames == 0 and (not ended or bool(stream.errors))  # (a camera never read)
                for sink in outputs:
                    try:
                        if early and sink in named:
                            sink.abandon()
                        else:
                            sink.close()
                    except (OSError, RuntimeError) as exc:  # RuntimeError: the database would not take the last batch
                        if sink not in failed:  # a failed output was reported once, when it failed
                            failed.append(sink)
                            _say(f"error: {_reason(exc, sink)}")
                    if sink.incomplete and sink not in failed:  # results lost without an error (said when lost)
                        failed.append(sink)
                if bar is not None:
                    bar.end()
    st = stream.stats
    how = f"stopped by {stream.stop_reason}" if stream.stop_reason else "done"
    if st.frames == 0 and stream.errors and not received:
        return 1  # the error said it all
    # (the rate over the seconds from the first frame, which the line gives: start-up is in the total only)
    _say(f"{how}: {_count(st.frames, 'frame')} in {st.since_first:.1f} s from the first ({st.fps:.1f} FPS; "
         f"{st.elapsed:.1f} s in all), {_count(st.faces, 'face')}, {_count(st.tracks, 'track')}"
         + (f", {_count(st.dropped, 'frame')} dropped (analysis slower than the source)"
            if st.dropped else "")
         + (f", {st.skipped} skipped by the FPS cap" if st.skipped else ""))
    if stats:
        _say("stats " + json.dumps(st.to_dict()))
    if received:  # a stop that lost results (the database did not take them) is no clean stop
        return 1 if failed else SIGNAL_STATUS.get(received[0], 1)
    if stream.stop_reason == CLOSED_OUTPUT and not failed:
        return 141  # the shell's 128 + SIGPIPE, as analyze answers its output's reader going away
    return 1 if stream.errors or failed else 0


def _refuse_overwriting_a_source(annotate: str, opened: Sequence[Source]) -> None:
    """A ``ValueError`` when the annotated video would be written over the video being read
    (the same file, by any name or link): the writer would truncate it while it is decoded."""
    out = Path(annotate)
    if not out.exists():
        return
    for source in opened:
        spec = Path(str(source.spec))
        if spec.exists() and os.path.samefile(spec, out):
            raise ValueError(f"--annotate {annotate} is the video being read ({source.name}): the annotated copy "
                             "would overwrite it; give another file name")


def _reason(exc: BaseException, sink: Sink) -> str:
    """``cannot write WHERE: why`` in one sentence, whatever the sink's own message says."""
    text = str(exc)
    if text.startswith("cannot write") or isinstance(exc, RuntimeError):
        return text
    where = getattr(sink, "path", None) or ("the standard output" if getattr(sink, "out", None) is sys.stdout
                                            else "the output")
    why = getattr(exc, "strerror", None) or text  # (its first letter lowered: the rest may name a class, a file)
    return f"cannot write {where}: {why[:1].lower() + why[1:]}"


def _pump(stream: Stream, outputs: list[Sink], bar: ProgressLine | None, failed: list[Sink]) -> None:
    """Hand every event to every sink; a sink that fails is reported once, left out and added to
    ``failed``; when no sink is left, the stream stops (nothing more could be written)."""
    live = list(outputs)
    for event in stream:
        for sink in list(live):
            try:
                if isinstance(event, TrackResult):
                    sink.write_track(event)
                else:
                    sink.write(event)
            except BrokenPipeError:  # stdout closed (e.g. piped into head): nothing more can be written
                stream.stop(CLOSED_OUTPUT)
                live.remove(sink)
                quiet_stdout()
            except OSError as exc:
                failed.append(sink)
                live.remove(sink)
                _say(f"error: {_reason(exc, sink)}; " + ("that output stops, the others go on" if live
                                                          else "no output is left, the stream stops"))
                if getattr(sink, "out", None) is sys.stdout:
                    quiet_stdout()
                if not live:
                    stream.stop("a failed output")
        if isinstance(event, ImageResult) and bar is not None:
            bar.update()


def _count(n: int, noun: str) -> str:
    """``1 frame``, ``2 frames``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"
