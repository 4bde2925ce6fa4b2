"""``facemtl stream``: its command and flags (the video extra is imported inside)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .cli_args import accurate_flags, db_flags, detector_flag, output_flag, positive, runtime_flag


def stream(
    sources: Sequence[str],
    as_json: bool = False,
    as_csv: bool = False,
    annotate: str | None = None,
    blur: bool = False,
    detect_every: int = 5,
    max_frames: int | None = None,
    fps_cap: float | None = None,
    checkpoint: str | None = None,
    runtime: str | None = None,
    device: str = "auto",
    detector: str = "mtcnn",
    min_face: float | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    timeout: float = 10.0,
    reconnect: int = 5,
    fps: float = 30.0,
    options: Sequence[str] = (),
    stats: bool = False,
    db: str | None = None,
    thumbnails: bool = False,
    preset: str = "veryfast",
    loop: bool = False,
    start: float = 0.0,
    live_frame: bool = True,
    realtime: bool = False,
    fusion: str | bool | None = None,
    outputs: Sequence[str] = (),
) -> int:
    """Analyse video SOURCEs (files, cameras, URLs, folders of frames) with tracking; returns the exit status.
    ``loop``: play video files again from the start when they end, until stopped. ``start``:
    seconds into video files to begin at (a stopped stream goes on from its last ``media_time``).
    ``realtime``: video files and folders of frames read at their own rate, as a camera sends
    (frames the analysis cannot keep up with dropped; clock times stored).

    ``db``: also store every face and track in the results database (URL or SQLite file), with a
    live frame of each source every second for the operator page (``thumbnails``: a crop per face;
    ``live_frame``: off, no frame is stored, only the faces' answers). ``fusion``: the accurate
    variant (``True``: the shipped fusion file, or a fusion file's path)."""
    from .video.command import run_stream
    from .video.sources import SourceSettings
    from .video.stream import StreamSettings

    opts = {}
    for o in options:
        key, sep, value = o.partition("=")
        if not sep or not key:
            raise ValueError(f"--input-option takes KEY=VALUE (an FFmpeg option), not {o!r}")
        opts[key] = value
    if opts:
        from .video.ffmpeg import check_input_options

        check_input_options(opts)
    settings = StreamSettings(detect_every=detect_every, max_frames=max_frames, fps_cap=fps_cap,
                              sources=SourceSettings(timeout=timeout, reconnect=reconnect, fps=fps, options=opts,
                                                     loop=loop, start=start, realtime=realtime))
    if thumbnails and db is None:
        raise ValueError("--thumbnails stores face crops in the results database: add --db URL")
    if not live_frame and db is None:
        raise ValueError("--no-live-frame is about the frame the results database keeps: add --db URL")
    return run_stream(sources, as_json, as_csv, annotate, blur, settings, checkpoint, runtime, device, detector,
                      min_face, workers, progress=progress, stats=stats, db=db, thumbnails=thumbnails, preset=preset,
                      live_frame=live_frame, fusion=fusion, outputs=outputs)


def reconnections(text: str) -> int:
    """``--reconnect``: a count, 0 or more, or ``forever`` (``SourceSettings.reconnect`` -1)."""
    if text.strip().lower() in ("forever", "-1"):
        return -1
    try:
        n = int(text)
    except ValueError:
        n = -2
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a number of attempts, 0 or more, or 'forever', not {text!r}")
    return n


def stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a video file, a camera index (0), an rtsp:// or http(s):// URL, a folder of frames, or a "
                        ".txt file listing sources (one per line, optionally name=SOURCE)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help='JSON lines: one {"type": "face", ...} per face and frame, one {"type": "track", ...} per '
                          "track when it ends (default output: one line per track)")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per face and frame")
    p.add_argument("--annotate", metavar="OUT.mp4", help="write the video with boxes, track ids and answers (H.264)")
    p.add_argument("--blur", action="store_true", help="pixelate the faces in the annotated video")
    from .video import PRESETS  # the package alone: light

    p.add_argument("--preset", choices=PRESETS, default="veryfast",
                   help="x264's speed preset for --annotate: a faster one takes less CPU a frame and writes a "
                        "larger file at the same quality")
    p.add_argument("--detect-every", type=positive(int), default=5, metavar="N",
                   help="run the face detector on every N-th analysed frame and track faces in between (frames skipped "
                        "by --fps-cap do not count: with --fps-cap 10, 5 means twice a second)")
    p.add_argument("--max-frames", type=positive(int), metavar="N",
                   help="stop each source after N analysed frames (frames skipped by --fps-cap do not count)")
    p.add_argument("--fps-cap", type=float, metavar="F",
                   help="analyse at most F frames per second of the source (the rest are skipped)")
    p.add_argument("--model", "--checkpoint", dest="checkpoint", metavar="FILE",
                   help="a model file instead of the default one")
    runtime_flag(p)
    accurate_flags(p, "about 100 ms a face on a 2-core CPU, in the detection threads: for recorded video "
                      "or sparse scenes, not a busy live camera")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    detector_flag(p, "face detector (on a 20 s test video, both from 40 px, mtcnn found 98.7%% of the faces at "
                     "79 FPS, dlib 80%% at 31 FPS: docs/results/stream_weak_births_*_20s.json)")
    p.add_argument("--min-face", type=positive(float), metavar="PX",
                   help="smallest face to look for, in pixels; a face whose box is smaller is left out (a track's "
                        "face that shrinks below it is not shown on those frames). Default: a search from 40 px, "
                        "nothing left out. Each doubling cuts the search about 4x (the benchmark's video uses 60)")
    p.add_argument("--workers", type=positive(int), metavar="N", help="detection threads (default: one per core)")
    p.add_argument("--fps", type=float, default=30.0,
                   help="frame rate of a folder of frames (video files and URLs keep their own)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for a URL to answer")
    p.add_argument("--loop", action="store_true",
                   help="play video files again from the start when they end, until stopped (--max-frames, Ctrl-C), "
                        "each pass a new scene (tracks end at the seam); "
                        "frame numbers and times go on")
    p.add_argument("--realtime", action="store_true",
                   help="read video files and folders of frames at their own rate, as a camera sends them: frames "
                        "the analysis cannot keep up with are dropped (counted), and each face gets the clock time "
                        "of its frame; with --loop, a file stands in for a camera (cameras and live URLs are "
                        "real-time already)")
    p.add_argument("--start", type=float, default=0.0, metavar="SECONDS",
                   help="video files: begin this many seconds in (to go on after a stop: the last media_time the "
                        "database holds, or the last time in the --json lines); frame numbers and times stay the "
                        "file's own")
    p.add_argument("--reconnect", type=reconnections, default=5, metavar="N",
                   help="times in a row to reopen a live URL that drops, with backoff from 1 s doubling to 30 s ("
                        "the count starts again after 10 s of frames), or 'forever' (a camera watched for days); "
                        "with several sources, also the times to retry one that does not answer at start-up (a "
                        "single source that does not answer ends at once)")
    p.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE", dest="options",
                   help="an FFmpeg option for files and URLs, e.g. rtsp_transport=tcp (repeatable; a name no "
                        "FFmpeg input format or protocol takes is refused, as FFmpeg would ignore it)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.add_argument("--stats", action="store_true",
                   help="end with the stream's counts and seconds per stage as one JSON line on stderr")
    output_flag(p)
    db_flags(p)
    p.add_argument("--no-live-frame", action="store_true",
                   help="with --db: store no live frame (the operator page's live view; a whole frame, every face "
                        "in it unblurred, replaced every second): the faces' answers only")


def stream_run(a: argparse.Namespace) -> int:
    try:
        return stream(a.sources, a.json, a.csv, a.annotate, a.blur, a.detect_every, a.max_frames, a.fps_cap,
                      a.checkpoint, a.runtime, a.device, a.detector, a.min_face, a.workers,
                      False if a.no_progress else None, a.timeout, a.reconnect, a.fps, a.options, a.stats,
                      db=a.db, thumbnails=a.thumbnails, preset=a.preset, loop=a.loop, start=a.start,
                      live_frame=not a.no_live_frame, realtime=a.realtime, fusion=a.fusion or a.accurate,
                      outputs=a.output)
    except KeyboardInterrupt as exc:  # a second signal while the first one was being honoured
        print("facemtl: aborted", file=sys.stderr)
        return getattr(exc, "status", 130)  # SignalAbort: 143 for SIGTERM
