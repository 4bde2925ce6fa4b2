"""Video sources: what ``facemtl stream SOURCE`` reads, chosen by the form of SOURCE.

========================  ==========================================================
SOURCE                    source
========================  ==========================================================
``0``, ``1`` ...          a camera (OpenCV's capture, the device's index)
``rtsp://`` ``http://``   a URL (see :data:`URL_SCHEMES`), read with PyAV's FFmpeg
... a folder              its images in natural order (``frame_2.png`` before ``frame_10.png``)
... ``.txt`` file         a *sources file*: one SOURCE per line, optionally ``name=SOURCE``
... any other file        a video file, read with PyAV's FFmpeg
========================  ==========================================================

Files and URLs are read with PyAV (which bundles FFmpeg), so a missing file, a file that
is not a video, a codec without a decoder, a refused connection and a timeout each get
one sentence, and a corrupt packet is skipped (counted, reported) while the stream goes
on. FFmpeg's own options reach the demuxer through ``options`` (e.g. ``rtsp_transport=tcp``,
or ``rtsp_flags=listen`` to receive an RTSP push with no media server).

*Live* sources deliver frames in real time: cameras, RTSP/RTMP/UDP/SRT, and an HTTP(S)
stream whose server declares no length for its body (a camera's endless MJPEG, FLV or
MPEG-TS) or an HLS/DASH playlist with no duration. A file on a web server has a length
(``Content-Length``): it is read like a local file, every frame, and the end of its body
is the end of the stream. :class:`FrameReader` keeps only the newest few frames of a live
source when analysis falls behind, counting what it drops (but keeps the burst FFmpeg
delivers while it opens the stream); a live URL that drops is reopened with exponential
backoff up to ``reconnect`` times in a row (the count starts again after ``steady``
seconds of frames). Files and folders are never dropped from: their reader waits.

A frame's ``time`` is its position in the media in seconds (from its timestamp, relative
to the first frame; after a reconnection, from the seconds elapsed since the first frame),
and for live sources ``wall_time`` is the clock time: the first frame's arrival plus
``time``. Frames are turned upright as their display matrix says (phone videos). A
constant-rate file's frames are numbered from their timestamps, so a frame lost to
corruption leaves a gap rather than shifting the numbers of those after it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

#: Suffixes of a sources file.
SOURCES_FILE_SUFFIXES = {".txt"}
#: URL schemes read as a stream, and whether a stream of that scheme is always live (else
#: see :func:`_http_live`: live when the server declares no length, as a camera's stream).
URL_SCHEMES = {"rtsp": True, "rtsps": True, "rtmp": True, "rtmps": True, "udp": True, "srt": True, "tcp": True,
               "http": False, "https": False}

Log = Callable[[str], None]


class SourceError(ValueError):
    """A source that cannot be read at all (one sentence: what and why)."""


@dataclass
class Frame:
    """One decoded frame: ``rgb (H, W, 3) uint8``, its ``index`` in the source (counting frames
    dropped by a live reader), ``time`` in seconds and, for live sources, ``wall_time``;
    ``opened``: the first frame after a live source (re)connected, when FFmpeg may hand over a
    burst of what it buffered (see :class:`FrameReader`)."""

    index: int
    time: float
    rgb: np.ndarray
    wall_time: float | None = None
    opened: bool = False
    #: The first frame of a file played again (``--loop``): a scene cut, where no track goes on.
    restarted: bool = False


#: ``SourceSettings.reconnect`` for no limit (``--reconnect forever``).
FOREVER = -1


@dataclass
class SourceSettings:
    """How sources are opened and kept open."""

    #: Seconds to wait for a URL to answer (opening, and each read).
    timeout: float = 10.0
    #: Times a dropped live URL is reopened in a row before it ends (several sources: also its
    #: first opening); :data:`FOREVER` (-1): no limit, for a camera watched for days.
    reconnect: int = 5
    #: Seconds of frames after a (re)opening that count as recovered: the reconnection count starts again.
    steady: float = 10.0
    #: Seconds before the first reconnection; doubled each time, at most ``max_backoff``.
    backoff: float = 1.0
    max_backoff: float = 30.0
    #: Frame rate of a folder of frames (a video's own rate is read from the file).
    fps: float = 30.0
    #: FFmpeg demuxer options for files and URLs, e.g. ``{"rtsp_transport": "tcp"}``.
    options: dict[str, str] = field(default_factory=dict)
    #: Play video files again from the start when they end, until stopped (``--loop``).
    loop: bool = False
    #: Seconds into a video file to begin at (``--start``; files only): a stream stopped part way
    #: goes on from the last ``media_time`` stored. Frame numbers and times stay the file's own.
    start: float = 0.0
    #: Hand video files' and folders' frames over at their own times, as a camera would send them
    #: (``--realtime``; see :mod:`facemtl.video.pacing`). Cameras and live URLs are real-time
    #: already; a file on a web server is read as it comes.
    realtime: bool = False

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout}")
        if self.reconnect < FOREVER:
            raise ValueError(f"reconnect must be 0 or more attempts, or -1 for no limit, not {self.reconnect}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, not {self.fps}")
        if not (self.start >= 0 and self.start != float("inf")):
            raise ValueError(f"start must be a position in seconds, 0 or more, not {self.start}")


#: Query parameters whose values are secrets (cameras often take credentials in the query).
SECRET_PARAMS = re.compile(r"^(pass(word|wd)?|pwd|token|(api_?)?key|secret|auth\w*|sig(nature)?|credentials?)$",
                           re.IGNORECASE)


def redact_url(spec: str) -> str:
    """``spec`` without the secrets a camera URL may carry, for names, logs and messages: the
    user and password before the host (``rtsp://admin:pw@cam/live`` -> ``rtsp://cam/live``, a
    password holding ``/`` or ``@`` included) and the values of secret-looking query parameters
    (``?user=admin&password=pw`` -> ``?user=admin&password=***``). Anything that is not a URL
    comes back as it is."""
    scheme, sep, rest = spec.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return spec
    # Written here rather than with urllib: urlsplit takes an unencoded '/' in a password for the
    # start of the path and would leave the password in place.
    head, qmark, query = rest.partition("?")
    if "@" in head:
        head = head.rpartition("@")[2]
    if qmark:
        query = "&".join(
            f"{k}=***" if eq and SECRET_PARAMS.match(k) else k + eq + v
            for k, eq, v in (item.partition("=") for item in query.split("&")))
    return f"{scheme}://{head}{qmark}{query}"


class Source:
    """Base class: ``frames(stop, log)`` yields :class:`Frame` objects in order until the source
    ends or ``stop`` is set; raises :class:`SourceError` when it cannot be read at all and
    reports lesser trouble (a corrupt frame, a reconnection) through ``log``."""

    #: Whether frames arrive in real time (then a slow reader drops, never queues).
    live: bool = False

    def __init__(self, spec: str, name: str | None = None) -> None:
        self.spec = spec
        public = redact_url(spec)  # the default name is stored, shown and logged: no password in it
        self.name = name or public
        #: Frame rate, when known (after the first frame).
        self.fps: float | None = None

    def frames(self, stop: threading.Event, log: Log) -> Iterator[Frame]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.spec)!r})"


# -- PyAV (files and URLs) ---------------------------------------------------------------


def _av():
    try:
        import av
    except ImportError:
        raise RuntimeError("reading video needs PyAV: pip install 'facemtl[video]'") from None
    return av


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
    try:
        container = av.open(spec, options=options, timeout=(timeout, timeout) if timeout else None)
    except av.error.FileNotFoundError:
        raise SourceError(f"{name}: no such file") from None
    except (av.error.TimeoutError, av.error.ExitError):  # ExitError: PyAV's own timeout interrupted FFmpeg
        raise SourceError(f"{name}: no answer after {timeout:g} s") from None
    except av.error.ConnectionRefusedError:
        raise SourceError(f"{name}: the connection was refused (nothing serves that address)") from None
    except av.error.InvalidDataError:
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


class _LiveClock:
    """Times of a live URL's frames: ``time`` from each frame's timestamp relative to the first
    frame's (arrival times would bunch the frames FFmpeg delivers together); after a reopening
    (timestamps start over) the new first frame sits at the seconds elapsed since the first
    frame; ``wall`` is the first frame's arrival (seconds since the epoch) plus ``time``."""

    def __init__(self) -> None:
        self.start: float | None = None  # clock time of the first frame (time.time())
        self.base: float | None = None  # timestamp (s) of this connection's first frame
        self.offset = 0.0
        self.last = -1.0

    def reopened(self) -> None:
        self.base = None

    def time(self, pts: float | None, now: float) -> float:
        """Seconds since the first frame of the frame with timestamp ``pts`` (s) arriving at ``now``."""
        if self.start is None:
            self.start = now
        elapsed, t = now - self.start, None
        if pts is not None and self.base is not None:
            t = self.offset + pts - self.base
            if t < self.last - 1 or t > elapsed + 10:  # the timestamps jumped (back, or far ahead): start over
                t = None
        if t is None and pts is not None:
            self.base, self.offset = pts, (0.0 if self.last < 0 else max(elapsed, self.last + 1e-3))
            t = self.offset
        t = elapsed if t is None else t
        t = max(t, self.last + 1e-3) if self.last >= 0 else t
        self.last = t
        return t

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
        # rate; never the container's, which an audio track may make longer)
        declared = stream.frames or (round(float(stream.duration * stream.time_base) * rate)
                                     if stream.duration and rate else 0)
        index, decoded, damaged = -1, 0, 0
        held: list[str] = []  # warnings before the first frame: said once a frame decodes, else the error says it
        skipped = 0  # frames before ``begin`` (numbered, not given, not counted as missing)

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
                if begin > 0 and t < begin - 1e-6:  # (a frame at begin itself is given)
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
        index, failures, opened_once, clock = 0, 0, False, _LiveClock()
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


class Camera(Source):
    """A camera by index, read with OpenCV's capture (V4L2 on Linux)."""

    live = True

    def __init__(self, spec: str, name: str | None = None) -> None:
        super().__init__(spec, name or f"camera {spec}")

    def frames(self, stop: threading.Event, log: Log) -> Iterator[Frame]:
        import cv2

        if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):  # its [ WARN ] lines would repeat our sentence
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        cap = cv2.VideoCapture(int(self.spec))
        try:
            if not cap.isOpened():
                raise SourceError(f"{self.name}: cannot be opened (no such camera, or it is busy)")
            self.fps = cap.get(cv2.CAP_PROP_FPS) or None
            index, t0 = 0, None
            while not stop.is_set():
                ok, bgr = cap.read()
                if not ok:
                    if index == 0:
                        raise SourceError(f"{self.name}: delivers no frames")
                    log(f"{self.name}: stopped delivering frames")
                    return
                now = time.time()
                t0 = now if t0 is None else t0
                yield Frame(index, round(now - t0, 4), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), now)
                index += 1
        finally:
            cap.release()


def _natural_key(path: Path) -> list:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


class Folder(Source):
    """A folder of frames (image files, natural order) at ``fps`` frames per second."""

    def __init__(self, spec: str, name: str | None = None, fps: float = 30.0) -> None:
        super().__init__(spec, name)
        self.fps = fps

    def frames(self, stop: threading.Event, log: Log) -> Iterator[Frame]:
        from ..images import describe_error, load_rgb
        from ..inference.inputs import image_suffixes

        suffixes = image_suffixes()  # the photo formats analyze's folder search reads
        files = sorted((p for p in Path(self.spec).iterdir() if p.suffix.lower() in suffixes), key=_natural_key)
        if not files:
            raise SourceError(f"{self.name}: the folder holds no images")
        for i, p in enumerate(files):
            if stop.is_set():
                return
            try:
                rgb = load_rgb(str(p))
            except Exception as exc:  # one unreadable frame: say so and go on
                log(f"{self.name}: {p.name} cannot be read ({describe_error(exc)}); skipped")
                continue
            yield Frame(i, round(i / self.fps, 4), rgb)


# -- choosing a source --------------------------------------------------------------------


#: ``name=SOURCE``: a name is anything without ``=``, a slash, a backslash or ``:`` (so that a
#: path or a URL holding ``=`` is never cut at it), up to 200 characters (the database's limit):
#: ``Lobby North=rtsp://...`` names a camera as the uploads' ``?source=`` may.
_NAMED = re.compile(r"^([^=/\\:]{1,200})=(.+)$")


def named_source(text: str) -> tuple[str | None, str]:
    """``(name, SOURCE)`` of ``name=SOURCE`` (``(None, text)`` for a SOURCE alone: a file that
    exists under the whole text keeps it)."""
    m = _NAMED.match(text)
    if not m or not m.group(1).strip() or Path(text).exists():
        return None, text
    return m.group(1).strip(), m.group(2).strip()


def read_sources_file(path: str | Path) -> list[tuple[str | None, str]]:
    """``(name, SOURCE)`` per line of a sources file: ``SOURCE`` or ``name=SOURCE``; ``#`` starts a comment."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        out.append(named_source(line))
    if not out:
        raise SourceError(f"{path}: the sources file lists no source")
    return out


def open_source(spec: str, settings: SourceSettings | None = None, name: str | None = None) -> Source:
    """The :class:`Source` for one SOURCE string (see the module's table); with ``realtime``, a
    video file or folder paced as a camera (:class:`~facemtl.video.pacing.Paced`)."""
    s = settings or SourceSettings()
    source = _source(spec, s, name)
    if s.realtime and isinstance(source, (VideoFile, Folder)):  # (a URL is retried by the stream as a Url)
        from .pacing import Paced

        return Paced(source)
    return source


def _source(spec: str, s: SourceSettings, name: str | None) -> Source:
    spec = str(spec).strip()
    if s.start and (spec.isdigit() or ("://" in spec and not spec.lower().startswith("file://"))
                    or Path(spec).is_dir()):
        raise SourceError(f"{redact_url(spec)}: --start applies to video files only (a live source has no position "
                          "to go to, a folder of frames none but its files)")
    if spec.isdigit():
        return Camera(spec, name)
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme == "file":
            return VideoFile(spec[len("file://"):], name, s.options, s.loop, s.start)
        if scheme not in URL_SCHEMES:
            raise SourceError(f"{redact_url(spec)}: unknown kind of URL; facemtl reads {', '.join(URL_SCHEMES)}")
        return Url(spec, name, s)
    path = Path(spec)
    if path.is_dir():
        return Folder(spec, name, s.fps)
    if not path.exists():
        hint = " (name=SOURCE: a name may not hold '/', '\\', ':' or '=')" if "=" in spec and name is None else ""
        raise SourceError(f"{spec}: no such file{hint}")
    return VideoFile(spec, name, s.options, s.loop, s.start)


def __getattr__(name: str) -> Any:
    """``facemtl.video.sources.FrameReader``, as before it moved to :mod:`facemtl.video.reader`."""
    if name == "FrameReader":
        from .reader import FrameReader

        return FrameReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_sources(specs: str | list[str], settings: SourceSettings | None = None) -> list[Source]:
    """The sources of SOURCE strings; a sources file (``*.txt``) stands for the sources it lists."""
    out: list[Source] = []
    for spec in [specs] if isinstance(specs, str) else specs:
        path = Path(str(spec))
        if path.suffix.lower() in SOURCES_FILE_SUFFIXES:
            if not path.is_file():
                raise SourceError(f"{spec}: no such sources file")
            out += [open_source(s, settings, name) for name, s in read_sources_file(path)]
        else:  # name=SOURCE works on the command line as in a sources file
            name, spec = named_source(str(spec))
            out.append(open_source(spec, settings, name))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SourceError("two sources share a name; give each its own with name=SOURCE")
    return out
