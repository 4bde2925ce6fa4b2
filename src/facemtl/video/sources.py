"""Video sources: what ``facemtl stream SOURCE`` reads, chosen by the form of SOURCE.

========================  ==========================================================
SOURCE                    source
========================  ==========================================================
``0``, ``1`` ...          a camera (OpenCV's capture, the device's index)
``SCHEME://...``          a source registered in :data:`SOURCES` under ``SCHEME`` (a plugin's)
``rtsp://`` ``http://``   a URL (see :data:`URL_SCHEMES`), read with PyAV's FFmpeg
... a folder              its images in natural order (``frame_2.png`` before ``frame_10.png``)
... ``.txt`` file         a *sources file*: one SOURCE per line, optionally ``name=SOURCE``
... any other file        a video file, read with PyAV's FFmpeg
========================  ==========================================================

Files and URLs are read with PyAV (which bundles FFmpeg; :mod:`facemtl.video.ffmpeg` holds
:class:`VideoFile` and :class:`Url`, found here too), so a missing file, a file that
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

from ..registry import Registry, UnknownName

#: Suffixes of a sources file.
SOURCES_FILE_SUFFIXES = {".txt"}
#: URL schemes read as a stream, and whether a stream of that scheme is always live (else
#: see :func:`_http_live`: live when the server declares no length, as a camera's stream).
URL_SCHEMES = {"rtsp": True, "rtsps": True, "rtmp": True, "rtmps": True, "udp": True, "srt": True, "tcp": True,
               "http": False, "https": False}

Log = Callable[[str], None]

#: Sources of one's own, by URL scheme: ``@SOURCES.register("myscheme")`` on
#: ``factory(spec: str, name: str | None, settings: SourceSettings) -> Source`` (a :class:`Source`
#: subclass whose ``frames(stop, log)`` yields :class:`Frame` records; ``live = True`` for one that
#: delivers in real time). ``stream myscheme://...`` then reads it; a registered scheme is asked
#: before the built-in ones, so a plugin may also read e.g. ``http://`` its own way.
SOURCES: Registry[Any] = Registry("video source")


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
        if not 0 < self.timeout < float("inf"):  # (NaN too: a user test's --timeout nan waited for ever)
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout}")
        if self.reconnect < FOREVER:
            raise ValueError(f"reconnect must be 0 or more attempts, or -1 for no limit, not {self.reconnect}")
        if not 0 < self.fps < float("inf"):
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


def _registered_source(spec: str, scheme: str) -> Callable[..., Source] | None:
    """The factory registered for ``scheme``, a plugin's looked for when none is
    (:meth:`Registry.find`), built-in schemes too: a plugin's ``http`` source was never used from
    the command line (a user test). ``None`` when none is; :class:`SourceError` for a plugin
    declared for it that fails to load."""
    from ..plugins import PluginError

    try:
        return SOURCES.find(scheme)
    except PluginError as exc:
        raise SourceError(f"{redact_url(spec)}: {exc}") from None


def _registered(factory: Callable[..., Source], spec: str, scheme: str, s: SourceSettings,
                name: str | None) -> Source:
    """The source ``factory``, registered for ``scheme``, builds for ``spec``; :class:`SourceError`
    in one sentence naming it when it fails or builds no :class:`Source`."""
    try:
        source = factory(spec, name, s)
    except (SourceError, UnknownName):
        raise
    except Exception as exc:  # a plugin's refusal, or its mistake: named, not a traceback
        raise SourceError(f"{redact_url(spec)}: the video source registered for {scheme}:// refused it: "
                          f"{type(exc).__name__}: {exc}") from None
    if not callable(getattr(source, "frames", None)):
        raise SourceError(f"{redact_url(spec)}: the video source registered for {scheme}:// built an object of "
                          f"type {type(source).__qualname__}, which has no frames(stop, log) (a facemtl Source)")
    return source


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
    from .ffmpeg import VideoFile

    s = settings or SourceSettings()
    source = _source(spec, s, name)
    if s.realtime and isinstance(source, (VideoFile, Folder)):  # (a URL is retried by the stream as a Url)
        from .pacing import Paced

        return Paced(source)
    return source


def _source(spec: str, s: SourceSettings, name: str | None) -> Source:
    from .ffmpeg import Url, VideoFile

    spec = str(spec).strip()
    if s.start and (spec.isdigit() or ("://" in spec and not spec.lower().startswith("file://"))
                    or Path(spec).is_dir()):
        raise SourceError(f"{redact_url(spec)}: --start applies to video files only (a live source has no position "
                          "to go to, a folder of frames none but its files)")
    if spec.isdigit():
        return Camera(spec, name)
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        factory = _registered_source(spec, scheme)
        if factory is not None:  # asked before the built-in schemes
            return _registered(factory, spec, scheme, s, name)
        if scheme != "file" and scheme not in URL_SCHEMES:
            from ..plugins import failure_suffix

            known = [*URL_SCHEMES, "file", *SOURCES.names()]
            raise SourceError(f"{redact_url(spec)}: unknown kind of URL; facemtl reads {', '.join(known)} (a "
                              "scheme of your own: register a video source for it in facemtl.video.SOURCES)"
                              + failure_suffix())
        if scheme == "file":
            return VideoFile(spec[len("file://"):], name, s.options, s.loop, s.start)
        return Url(spec, name, s)
    path = Path(spec)
    if path.is_dir():
        return Folder(spec, name, s.fps)
    if not path.exists():
        hint = " (name=SOURCE: a name may not hold '/', '\\', ':' or '=')" if "=" in spec and name is None else ""
        raise SourceError(f"{spec}: no such file{hint}")
    return VideoFile(spec, name, s.options, s.loop, s.start)


#: Names that moved to :mod:`facemtl.video.ffmpeg` (the PyAV sources), still found here.
_IN_FFMPEG = frozenset({"VideoFile", "Url", "INVENTED_TIMESTAMPS", "_LiveClock", "_timestamps_kept", "_open_container",
                        "_http_live", "_upright", "_decoded", "_why", "_av", "_start_seconds"})


def __getattr__(name: str) -> Any:
    """``facemtl.video.sources.FrameReader``, as before it moved to :mod:`facemtl.video.reader`,
    and the PyAV sources (``VideoFile``, ``Url``, ...), as before they moved to
    :mod:`facemtl.video.ffmpeg` (imported when first asked for: it imports this module)."""
    if name == "FrameReader":
        from .reader import FrameReader

        return FrameReader
    if name in _IN_FFMPEG:
        from . import ffmpeg

        return getattr(ffmpeg, name)
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
