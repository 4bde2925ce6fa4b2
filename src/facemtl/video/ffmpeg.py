"""Video files and URLs read with PyAV, which bundles FFmpeg: the :class:`VideoFile` and
:class:`Url` sources of :mod:`facemtl.video.sources`, and what they share (opening a container
with one sentence per failure, decoding that skips a corrupt packet, the times of a live
stream's frames).

Kept apart from :mod:`facemtl.video.sources`, which holds the base classes, cameras, folders
and the choice of a source from its SOURCE string (and re-exports these names).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .sources import FOREVER, URL_SCHEMES, Frame, Log, Source, SourceError, SourceSettings


def _av():
    try:
        import av
    except ImportError:
        raise RuntimeError("reading video needs PyAV: pip install 'facemtl[video]'") from None
    return av


def check_input_options(options: Mapping[str, str]) -> None:
    """``ValueError`` in one sentence for an option name no input format or protocol of PyAV's
    FFmpeg takes (``rtsp_transportt``, or ``stimeout``, which FFmpeg 5 removed): FFmpeg leaves
    such an option unused without a word, so a camera would run on, over UDP say, as if it had
    not been given. Nothing is checked where FFmpeg's libraries cannot be found."""
    known = known_input_options() if options else None
    unknown = sorted(k for k in options if known is not None and k not in known)
    if unknown:
        from ..typecheck import did_you_mean

        version = getattr(_av(), "ffmpeg_version_info", "") or "this"
        raise ValueError(f"--input-option {unknown[0]}: FFmpeg {version} (PyAV's) has no input option of that name"
                         f"{did_you_mean(unknown[0], sorted(known or ()))}, and would ignore it without a word")


@functools.lru_cache(maxsize=1)
def known_input_options() -> frozenset[str] | None:
    """Every option name FFmpeg's input side takes: the format context's, and the private ones of
    every format and protocol (its child classes, walked as ``av_opt_find`` with
    ``AV_OPT_SEARCH_CHILDREN`` walks them), from the FFmpeg PyAV loaded; ``None`` where its
    libraries cannot be found.

    Our own code (ctypes into FFmpeg's ``av_opt_next`` and ``av_opt_child_class_iterate``)
    because PyAV 18 lists no options any more and drops the options ``avformat_open_input``
    leaves unused, the only place FFmpeg says which it did not know."""
    libs = _ffmpeg_libraries()
    if libs is None:
        return None
    fmt, util = libs
    fmt.avformat_get_class.restype = ctypes.c_void_p
    util.av_opt_next.restype = ctypes.c_void_p
    util.av_opt_next.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    util.av_opt_child_class_iterate.restype = ctypes.c_void_p
    util.av_opt_child_class_iterate.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    names: set[str] = set()
    seen: set[int] = set()
    todo = [fmt.avformat_get_class()]
    while todo:
        cls = todo.pop()
        if not cls or cls in seen:
            continue
        seen.add(cls)
        holder, opt = ctypes.c_void_p(cls), None  # a "fake object": a pointer to the class pointer
        while opt := util.av_opt_next(ctypes.byref(holder), opt):
            names.add(ctypes.cast(opt, ctypes.POINTER(ctypes.c_char_p))[0].decode())  # AVOption.name comes first
        it = ctypes.c_void_p(None)
        while child := util.av_opt_child_class_iterate(cls, ctypes.byref(it)):
            todo.append(child)
    return frozenset(names) if names else None


def _ffmpeg_libraries() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    """libavformat and libavutil as PyAV loaded them (its wheel's own copies, in ``av.libs`` or
    ``av/.dylibs``), else the system's; ``None`` if either cannot be loaded."""
    import ctypes.util
    import glob

    here = os.path.dirname(_av().__file__)
    out = []
    for lib in ("avformat", "avutil"):
        found = sorted(glob.glob(os.path.join(here, "..", "av.libs", f"lib{lib}*")) +
                       glob.glob(os.path.join(here, ".dylibs", f"lib{lib}*")) +
                       glob.glob(os.path.join(here, "..", "av.libs", f"{lib}*.dll")))
        path = found[0] if found else ctypes.util.find_library(lib)
        if not path:
            return None
        try:
            out.append(ctypes.CDLL(path))
        except OSError:
            return None
    return out[0], out[1]


def _why(exc: BaseException) -> str:
    """FFmpeg's reason without PyAV's ``[Errno N] ...: 'path'`` decoration."""
    text = getattr(exc, "strerror", None) or str(exc)
    return re.sub(r"^\[Errno -?\d+\]\s*", "", str(text)).split(": '")[0].strip().rstrip(".").lower()


def _start_seconds(stream: Any) -> float:
    """The PyAV stream's first timestamp in seconds (0 when it declares none): frame times are
    counted from it."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _open_container(spec: str, name: str, options: dict[str, str], timeout: float | None, url: bool):
    av = _av()
    options = dict(options)
    if "listen" in options.get("rtsp_flags", "") and timeout:
        # FFmpeg's RTSP listener needs its own wait in seconds (without it, PyAV's timeout overflows)
        options.setdefault("listen_timeout", str(max(1, round(timeout))))
    started = time.monotonic()
    try:
        container = av.open(spec, options=options, timeout=(timeout, timeout) if timeout else None)
    except av.error.FileNotFoundError:
        raise SourceError(f"{name}: no such file") from None
    except (av.error.TimeoutError, av.error.ExitError):  # ExitError: PyAV's own timeout interrupted FFmpeg
        raise SourceError(f"{name}: no answer after {timeout:g} s") from None
    except av.error.ConnectionRefusedError:
        raise SourceError(f"{name}: the connection was refused (nothing serves that address)") from None
    except av.error.InvalidDataError:
        if url and timeout and time.monotonic() - started >= 0.9 * timeout:
            # FFmpeg's RTSP says "invalid data" for a server that took the connection and never
            # answered (a user test: the operator was sent to look at codecs, not the network)
            raise SourceError(f"{name}: no answer after {timeout:g} s (the server took the connection but "
                              "sent nothing)") from None
        what = "the stream is not video FFmpeg can read" if url else "not a video (or a format FFmpeg cannot read)"
        raise SourceError(f"{name}: {what}") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"{name}: cannot open: {_why(exc)}") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{name}: holds no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        codec = getattr(stream.codec_context, "name", None) or "its codec"
        container.close()
        raise SourceError(f"{name}: the video codec {codec} has no decoder in this FFmpeg")
    stream.thread_type = "AUTO"  # FFmpeg's frame/slice threads
    return container, stream


def _http_live(container) -> bool:
    """Whether an opened HTTP(S) stream is live: its server declares no length for the body
    (a camera's endless MJPEG, FLV or MPEG-TS: FFmpeg's size is unknown), or it is an HLS/DASH
    playlist with no duration (a live one). A file on a web server has a ``Content-Length``."""
    if container.format.name in ("hls", "dash"):
        return container.duration is None
    try:
        return (container.size or 0) <= 0
    except Exception:  # the size cannot be asked for: nothing says the body ends
        return True


#: Demuxers whose timestamps FFmpeg makes up rather than reads: multipart JPEG over HTTP (a
#: camera's MJPEG) and piped JPEGs are stamped as if at 25 fps whatever the camera sends, so a
#: 10 fps camera's times ran at 0.4x the clock and a 30 fps one's ran ahead. A live source of
#: these formats is timed by arrival instead.
INVENTED_TIMESTAMPS = frozenset({"mpjpeg", "mjpeg", "jpeg_pipe", "image2pipe"})


def _timestamps_kept(container) -> bool:
    """Whether the frames' timestamps come from the stream itself (see :data:`INVENTED_TIMESTAMPS`)."""
    return not set(str(container.format.name).split(",")) & INVENTED_TIMESTAMPS


def _upright(frame) -> np.ndarray:
    """A PyAV frame as ``(H, W, 3) uint8`` RGB, turned as its display matrix says (a phone's
    portrait video is stored sideways; ``frame.rotation`` is in degrees, counterclockwise)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


#: Seconds of frames arriving steadily over which a live source's timestamps must advance at
#: least half as far as the clock, or the clock goes by arrival instead (a user test: a camera
#: whose timestamps stopped advancing had 129 frames over 9.7 s stored 1 ms apart, all at the
#: stream's start). Judged by pace over steady arrivals, not by how far the times lag: after a
#: stall, a camera's buffered frames come in a burst with true timestamps far behind the clock,
#: and those are right (a review: a 7 s stall had its burst stamped by arrival, bunched).
LIVE_BEHIND = 5.0
#: A gap between two arrivals (s) over which frames are not "steady" (a stall): the pace is
#: judged afresh from the next frame.
STEADY_GAP = 2.0


class _LiveClock:
    """Times of a live URL's frames: ``time`` from each frame's timestamp relative to the first
    frame's (arrival times would bunch the frames FFmpeg delivers together); after a reopening
    (timestamps start over) the new first frame sits at the seconds elapsed since the first
    frame; ``wall`` is the first frame's arrival (seconds since the epoch) plus ``time``.

    Timestamps that advance less than half as far as the clock over :data:`LIVE_BEHIND` seconds
    of frames arriving steadily (they stopped advancing, or run slow) are left for arrival times,
    said once to ``log``, until they keep pace with the clock for :data:`LIVE_BEHIND` seconds
    again. Times always increase."""

    def __init__(self, name: str = "the stream", log: Log | None = None) -> None:
        self.name, self.log = name, log
        self.start: float | None = None  # clock time of the first frame (time.time())
        self.base: float | None = None  # timestamp (s) of this connection's first frame
        self.offset = 0.0
        self.last = -1.0
        self.prev: float | None = None  # the previous frame's timestamp (s)
        #: by arrival: (timestamp, seconds elapsed) where the timestamps were last seen behind;
        #: ``(None, None)`` just after a reopening; ``None`` while the timestamps are kept
        self.arrival: tuple[float | None, float | None] | None = None
        self.said = False
        #: (timestamp, seconds elapsed) where the current run of steady arrivals began; the last arrival
        self.steady: tuple[float, float] | None = None
        self.arrived: float | None = None

    def reopened(self) -> None:
        self.base = self.prev = self.steady = None
        if self.arrival is not None:  # the new connection's timestamps start over: watched afresh
            self.arrival = (None, None)

    def time(self, pts: float | None, now: float) -> float:
        """Seconds since the first frame of the frame with timestamp ``pts`` (s) arriving at ``now``."""
        if self.start is None:
            self.start = now
        elapsed, t = now - self.start, None
        if self.arrival is not None and pts is not None:
            t = self._arrival(pts, elapsed)
        elif pts is not None and self.base is not None:
            t = self.offset + pts - self.base
            if t < self.last - 1 or t > elapsed + 10:  # the timestamps jumped (back, or far ahead): start over
                t = None
            elif self._slow(pts, elapsed):  # frames keep coming, their timestamps do not: by arrival from here
                self._behind(pts, elapsed)
                t = elapsed
        if t is None and pts is not None:
            self.base, self.offset = pts, (0.0 if self.last < 0 else max(elapsed, self.last + 1e-3))
            self.steady = None
            t = self.offset
        t = elapsed if t is None else t
        t = max(t, self.last + 1e-3) if self.last >= 0 else t
        self.last, self.prev, self.arrived = t, pts, elapsed
        return t

    def _slow(self, pts: float, elapsed: float) -> bool:
        """Whether, over the last :data:`LIVE_BEHIND` seconds of steady arrivals (no gap over
        :data:`STEADY_GAP`), the timestamps advanced less than half as far as the clock; the
        window starts afresh after a gap and at each judgement."""
        if self.steady is None or self.arrived is None or elapsed - self.arrived > STEADY_GAP:
            self.steady = (pts, elapsed)
            return False
        seen, since = self.steady
        if elapsed - since < LIVE_BEHIND:
            return False
        self.steady = (pts, elapsed)
        return pts - seen < 0.5 * (elapsed - since)

    def _behind(self, pts: float, elapsed: float) -> None:
        self.arrival = (pts, elapsed)
        if not self.said and self.log is not None:
            what = "stopped advancing" if pts == self.prev else "advanced at less than half the clock's pace"
            self.log(f"{self.name}: its frames' timestamps {what} for {LIVE_BEHIND:g} s while its frames kept "
                     "coming; its frames are stamped with their arrival time until the timestamps keep pace")
        self.said = True

    def _arrival(self, pts: float, elapsed: float) -> float:
        """Seconds since the first frame of a frame while the timestamps are left: its arrival
        (``elapsed``); once they have kept pace with the clock for :data:`LIVE_BEHIND` seconds
        (within 1 s), its timestamp is the new base, and the times go on from there."""
        seen, since = self.arrival
        if seen is None or since is None or pts - seen < elapsed - since - 1:  # behind (again): watched from here
            self.arrival = (pts, elapsed)
        elif elapsed - since >= LIVE_BEHIND:
            self.arrival = self.steady = None  # (the pace judged afresh: the frozen seconds tripped it again)
            self.base, self.offset = pts, max(elapsed, self.last + 1e-3)
            return self.offset
        return elapsed

    def wall(self, t: float) -> float:
        return (self.start or 0.0) + t


def _decoded(container, stream, name: str, log: Log, stop: threading.Event) -> Iterator:
    """Decoded PyAV frames; a packet FFmpeg cannot decode is skipped and counted."""
    av = _av()
    bad, first_bad = 0, None
    try:
        for packet in container.demux(stream):
            if stop.is_set():
                return
            try:
                yield from packet.decode()
            except av.error.FFmpegError as exc:
                if isinstance(exc, (av.error.TimeoutError, av.error.EOFError, av.error.ExitError)):
                    raise
                bad += 1
                if first_bad is None:
                    first_bad = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    at = f" near {first_bad:.2f} s" if first_bad is not None else ""
                    log(f"{name}: corrupt frame{at} ({_why(exc)}); skipped, the stream goes on")
    finally:
        if bad > 1:
            log(f"{name}: {bad} corrupt packets skipped in all")


class VideoFile(Source):
    """A video file, every frame in order (never dropped). ``loop``: play it again from the
    start each time it ends, until stopped, frame numbers and times going on (a soak test, a
    demonstration screen); FFmpeg's own ``stream_loop`` option does not apply to a file read
    frame by frame."""

    def __init__(self, spec: str, name: str | None = None, options: dict[str, str] | None = None,
                 loop: bool = False, start: float = 0.0) -> None:
        super().__init__(spec, name)
        self.options = options or {}
        self.loop = loop
        self.start = start

    def frames(self, stop: threading.Event, log: Log) -> Iterator[Frame]:
        index, t = -1, 0.0
        begin = self.start  # the first pass only: --loop plays the whole file again
        while True:
            last, again = None, index >= 0
            for f in self._once(stop, log, begin):
                last = Frame(index + 1 + f.index, round(t + f.time, 4), f.rgb, restarted=again and last is None)
                yield last
            if not self.loop or stop.is_set() or last is None:
                return
            index, t, begin = last.index, last.time + 1 / (self.fps or 30.0), 0.0

    def _once(self, stop: threading.Event, log: Log, begin: float = 0.0, seek: bool = True) -> Iterator[Frame]:
        """One pass over the file, from ``begin`` seconds (a seek to the key frame before it, then
        the frames before it decoded and dropped, so the first one given is the first at or after it;
        where the seek finds no key frame to start from, an MPEG-TS say, the file is read from its
        start and the frames before ``begin`` dropped)."""
        if not Path(self.spec).exists():
            raise SourceError(f"{self.name}: no such file")
        if Path(self.spec).is_dir():
            raise SourceError(f"{self.name}: is a folder")
        container, stream = _open_container(self.spec, self.name, self.options, None, url=False)
        self.fps = float(stream.average_rate) if stream.average_rate else None
        start = _start_seconds(stream)
        # constant rate (the average is the rate every timestamp fits): number frames by timestamp
        rate = self.fps if self.fps and stream.base_rate and abs(self.fps - float(stream.base_rate)) < 1e-3 else None
        # frames the video stream itself declares (its sample count, or its own duration at its
        # rate; the container's only where the video is all it holds, as in Matroska, whose video
        # declares no duration: a truncated .mkv went unsaid, a user test; an audio track may make
        # the container longer)
        declared = stream.frames or (round(float(stream.duration * stream.time_base) * rate)
                                     if stream.duration and rate else 0)
        if not declared and rate and container.duration and len(container.streams) == 1:
            declared = round(container.duration / 1_000_000 * rate)  # (AV_TIME_BASE: microseconds)
        index, decoded, damaged = -1, 0, 0
        held: list[str] = []  # warnings before the first frame: said once a frame decodes, else the error says it
        skipped = 0  # frames before ``begin`` (numbered, not given, not counted as missing)
        last_before: float | None = None  # the time of the last frame before ``begin``

        def warn(message: str) -> None:
            (log if decoded else held.append)(message)

        if begin > 0 and seek:
            try:
                container.seek(int((begin + start) / stream.time_base), stream=stream, backward=True, any_frame=False)
            except _av().error.FFmpegError:  # the file cannot seek: read from its start, as when the seek misses
                container.close()
                yield from self._once(stop, log, begin, seek=False)
                return
        overshot = False  # the seek landed after ``begin``: frames would be missed, so read from the start
        try:
            for f in _decoded(container, stream, self.name, warn, stop):
                t = float(f.time) - start if f.time is not None else (index + 1) / (self.fps or 30.0)
                if begin > 0 and seek and decoded == 0 and t > begin + 1.5 / (self.fps or 30.0):
                    overshot = True
                    break
                # a frame at begin itself is given; times are written to 4 decimals, so the last
                # stored media_time, typed as --start, names its own frame (a user test: 2.1667 left
                # out the frame at 2.16667 that 2.1666 gave)
                if begin > 0 and t < begin - 5.01e-5:
                    last_before = t
                    continue
                if begin > 0 and decoded == 0 and index < 0:  # numbered from its time, as a whole pass would
                    skipped = round(t * rate) if rate and f.time is not None else 0
                    index = skipped - 1
                index = max(index + 1, round(t * rate)) if rate and f.time is not None else index + 1
                decoded += 1
                damaged += bool(getattr(f, "is_corrupt", False))
                if decoded == 1:
                    for message in held:
                        log(message)
                    held.clear()
                yield Frame(index, round(t, 4), _upright(f))
        except _av().error.FFmpegError as exc:
            warn(f"{self.name}: the file ends early ({_why(exc)})")
        finally:
            container.close()
        if overshot or (decoded == 0 and begin > 0 and seek and not stop.is_set()):  # nothing found to decode from
            # (what the sought pass warned of, frames that need the ones before them, the read from the start says
            # again if it is so)
            yield from self._once(stop, log, begin, seek=False)
            return
        if decoded == 0 and last_before is not None and not stop.is_set():  # (a user test: "not a video")
            raise SourceError(f"{self.name}: no frame at or after --start {begin:g} s: its last frame is at "
                              f"{last_before:.4f} s")
        if decoded == 0 and not stop.is_set():  # FFmpeg opened it (an image suffix, say) but no frame decoded
            raise SourceError(f"{self.name}: no frame could be decoded: not a video (or a format FFmpeg cannot read)")
        for message in held:  # stopped before its first frame
            log(message)
        gaps = index + 1 - skipped - decoded  # frames missing inside (timestamps skip them)
        short = declared - (index + 1)  # frames missing at the end, beyond what edit lists and rounding explain
        lost = gaps + (short if short > max(2, declared // 100) else 0)
        if (lost > 0 or damaged) and not stop.is_set():  # stopped (max_frames, a signal): it did not end
            log(f"{self.name}: {decoded} of {decoded + max(lost, 0)} frames decoded"
                + (f", {damaged} of them damaged (FFmpeg concealed the errors)" if damaged else "")
                + "; the file is truncated or corrupt, the results cover the frames read")


class Url(Source):
    """A network stream (RTSP, HTTP, ...): opened with a timeout, reopened with backoff when it drops."""

    def __init__(self, spec: str, name: str | None = None, settings: SourceSettings | None = None) -> None:
        super().__init__(spec, name)
        self.settings = settings or SourceSettings()
        self.live = URL_SCHEMES.get(spec.split("://", 1)[0].lower(), True)
        #: Retry the first opening too, with backoff (a camera of several that is down at start-up);
        #: a single source that never answers ends at once, with one sentence.
        self.retry_open = False

    def frames(self, stop: threading.Event, log: Log) -> Iterator[Frame]:
        s = self.settings
        index, failures, opened_once, clock = 0, 0, False, _LiveClock(self.name, log)
        while not stop.is_set():
            try:
                container, stream = _open_container(self.spec, self.name, s.options, s.timeout, url=True)
            except SourceError as exc:
                if not (opened_once or self.retry_open) or (opened_once and not self.live):
                    raise
                failures += 1
                if s.reconnect != FOREVER and failures > s.reconnect:
                    raise SourceError(self._gave_up() if opened_once else f"{exc} ({self._attempts()})") from None
                self._wait(failures, stop, log, None if opened_once else str(exc))
                continue
            if not opened_once:
                opened_once = True
                self.live = self.live or _http_live(container)
            self.fps = self.fps or (float(stream.average_rate) if stream.average_rate else None)
            start = _start_seconds(stream)
            kept = _timestamps_kept(container)
            if not kept:
                self.fps = None  # (FFmpeg's 25 is made up too)
            opened, ended = time.monotonic(), False
            clock.reopened()
            first, back = True, failures > 0  # back: reopened after a drop, said at its first frame
            try:
                for f in _decoded(container, stream, self.name, log, stop):
                    if back:  # (an operations test: the log said the drop, never the return)
                        log(f"{self.name}: the stream is back (after {failures} reconnection "
                            f"attempt{'s' * (failures != 1)})")
                        back = False
                    if failures and time.monotonic() - opened >= s.steady:
                        failures = 0  # delivering steadily again: a later drop starts a new count
                    pts = float(f.time) if f.time is not None and (kept or not self.live) else None
                    if self.live:
                        t = clock.time(pts, time.time())
                        frame = Frame(index, round(t, 4), _upright(f), round(clock.wall(t), 4), opened=first)
                        first = False
                    else:
                        frame = Frame(index, round(pts - start if pts is not None else index / (self.fps or 30), 4),
                                      _upright(f))
                    yield frame
                    index += 1
                ended = True
            except _av().error.FFmpegError as exc:
                if not self.live:
                    raise SourceError(f"{self.name}: the stream broke off ({_why(exc)})") from None
            finally:
                container.close()
            if (ended and not self.live) or stop.is_set():
                return  # a finite body that ended: the end of the stream
            failures += 1
            if s.reconnect != FOREVER and failures > s.reconnect:
                raise SourceError(self._gave_up())
            self._wait(failures, stop, log)

    def _attempts(self) -> str:
        n = self.settings.reconnect
        return f"{n} reconnection attempt{'s' * (n != 1)}"

    def _gave_up(self) -> str:
        return f"{self.name}: the stream dropped and did not come back ({self._attempts()})"

    def _wait(self, attempt: int, stop: threading.Event, log: Log, why: str | None = None) -> None:
        s = self.settings
        delay = min(s.max_backoff, s.backoff * 2 ** (attempt - 1))
        what = f"{why}; retrying" if why else f"{self.name}: stream dropped; reconnecting"
        of = "no limit" if s.reconnect == FOREVER else s.reconnect
        log(f"{what} in {delay:g} s (attempt {attempt} of {of})")
        stop.wait(delay)
