"""Live video, what the audit found, without the model: HTTP files read once (every frame)
while HTTP streams with no length are live, bounded reconnection, a camera down at start-up
retried with several sources, rotated (phone) videos turned upright, live times from the
frames' timestamps, the annotated video's checks before any work, blurring every face seen,
scaling a frame whose size changed, fragmented MP4 that survives SIGKILL, track clock times."""

from __future__ import annotations

import contextlib
import functools
import http.server
import inspect
import io
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("scipy")

from facemtl.inference.results import FaceResult, ImageResult, TrackResult
from facemtl.video.sources import SourceError, SourceSettings, Url, VideoFile, open_source


def _pattern(h: int, w: int) -> np.ndarray:
    """A smooth picture that says which way is up: dark left, bright right, a white top band."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2:] = 160
    img[: h // 4] = 255
    return img


def _clip(path: Path, frames: list[np.ndarray], fmt: str | None = None, rotate: int | None = None,
          first_pts: int = 0) -> Path:
    """H.264 at 30 fps (time base 1/90000 in MPEG-TS, as cameras and muxers use)."""
    out = av.open(str(path), "w", format=fmt)
    s = out.add_stream("libx264", rate=30)
    s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    s.codec_context.time_base = Fraction(1, 90000)
    if rotate is not None:
        s.set_display_rotation(rotate)
    for i, rgb in enumerate(frames):
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        f.pts, f.time_base = first_pts + 3000 * i, Fraction(1, 90000)
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
    out.close()
    return path


@pytest.fixture(scope="module")
def www(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("www")
    rng = np.random.default_rng(0)
    frames = [np.clip(_pattern(48, 64).astype(int) + rng.integers(-20, 20, (48, 64, 3)), 0, 255).astype(np.uint8)
              for _ in range(60)]
    _clip(folder / "clip.ts", frames, "mpegts", first_pts=900000)  # starts at 10 s, as a TS from a camera may
    upright = _pattern(64, 48)  # portrait, 48 wide
    _clip(folder / "phone.mp4", [np.rot90(upright, -1)] * 5, rotate=90)  # stored sideways, shown upright
    return folder


class _Serve:
    """An HTTP server on loopback in a thread: ``mode`` "file" (Content-Length, the whole file),
    "half" (declares the whole file, sends half, closes), "endless" (no length: a camera's stream,
    here the file once per connection)."""

    def __init__(self, folder: Path, mode: str = "file", port: int = 0) -> None:
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                if mode == "file":
                    return super().do_GET()
                data = (folder / self.path.lstrip("/")).read_bytes()
                outer.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                if mode == "half":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if mode == "half" else data)

            def log_message(self, *args):
                pass

        self.connections = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                                      functools.partial(Handler, directory=str(folder)))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _read(source, seconds: float = 20.0) -> tuple[list, list[str], str | None]:
    """(frames, warnings, error sentence) of a source, stopped after ``seconds`` at most (no test hangs)."""
    stop, frames, log = threading.Event(), [], []
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        for f in source.frames(stop, log.append):
            frames.append(f)
    except SourceError as exc:
        return frames, log, str(exc)
    finally:
        timer.cancel()
    assert not stop.is_set(), "the source did not end"
    return frames, log, None


# -- item 1: HTTP files are not live ----------------------------------------------------------


def test_a_file_on_a_web_server_is_read_once_with_every_frame(www):
    server = _Serve(www)
    try:
        src = open_source(server.url("clip.ts"))
        frames, log, error = _read(src)
    finally:
        server.close()
    assert error is None and log == [] and not src.live  # the end of the body is the end of the stream
    assert [f.index for f in frames] == list(range(60))
    assert [f.time for f in frames] == [round(i / 30, 4) for i in range(60)]  # from 0, not the TS's 10 s
    assert all(f.wall_time is None for f in frames)


def test_a_body_that_breaks_off_ends_with_one_sentence(www):
    server = _Serve(www, "half")
    try:
        frames, log, error = _read(open_source(server.url("clip.ts")))
    finally:
        server.close()
    assert 10 < len(frames) < 60 and server.connections == 1  # once, not replayed
    assert error == f"{server.url('clip.ts')}: the stream broke off (input/output error)"


def test_a_stream_without_length_is_live_and_reconnection_is_bounded(www):
    """Each connection delivers frames, then drops: the count of reconnections in a row is not
    reset by a few frames, only by ``steady`` seconds of them, so a flapping camera ends."""
    server = _Serve(www, "endless")
    try:
        src = open_source(server.url("clip.ts"), SourceSettings(reconnect=2, backoff=0.05))
        frames, log, error = _read(src)
    finally:
        server.close()
    assert src.live and server.connections == 3 and len(frames) >= 150
    assert error == f"{server.url('clip.ts')}: the stream dropped and did not come back (2 reconnection attempts)"
    # each return said too (an operations test: the log said the drops only)
    assert [m.split(": ", 1)[1] for m in log] == ["stream dropped; reconnecting in 0.05 s (attempt 1 of 2)",
                                                  "the stream is back (after 1 reconnection attempt)",
                                                  "stream dropped; reconnecting in 0.1 s (attempt 2 of 2)",
                                                  "the stream is back (after 2 reconnection attempts)"]
    assert [f.index for f in frames] == list(range(len(frames)))
    times = [f.time for f in frames]
    assert times == sorted(times) and all(f.wall_time is not None for f in frames)


# -- item 10: a live source down at start-up, with several sources -----------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_source_down_at_start_up_is_retried_when_several_run(www):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/clip.ts"
    _, _, error = _read(Url(url, settings=SourceSettings(backoff=0.2)))
    assert "the connection was refused" in error  # alone: one sentence at once
    src = Url(url, settings=SourceSettings(backoff=0.3))
    src.retry_open = True
    server = None

    def later():
        nonlocal server
        time.sleep(0.5)
        server = _Serve(www, port=port)

    threading.Thread(target=later).start()
    try:
        frames, log, error = _read(src)
    finally:
        time.sleep(0.6)
        if server is not None:
            server.close()
    assert error is None and len(frames) == 60
    assert log[0].endswith("the connection was refused (nothing serves that address); retrying in 0.3 s "
                           "(attempt 1 of 5)")
    # one that never answers ends, with its reason and the attempts made
    src = Url(f"http://127.0.0.1:{_free_port()}/x.ts", settings=SourceSettings(reconnect=1, backoff=0.05))
    src.retry_open = True
    _, log, error = _read(src)
    assert len(log) == 1 and error.endswith("the connection was refused (nothing serves that address) "
                                            "(1 reconnection attempt)")


def test_the_stream_retries_first_openings_only_with_several_sources(tmp_path):
    from facemtl.video.stream import Stream

    pipeline = SimpleNamespace(predictor=None, detector_name="mtcnn", workers=1)
    one, two = Url("rtsp://10.0.0.5/a"), Url("rtsp://10.0.0.6/b")
    Stream([one], pipeline)
    assert not one.retry_open
    Stream([one, two], pipeline)
    assert one.retry_open and two.retry_open


# -- item 2: rotated videos ---------------------------------------------------------------------


def test_a_rotated_phone_video_comes_upright(www):
    upright = _pattern(64, 48).astype(int)
    frames, log, _ = _read(VideoFile(str(www / "phone.mp4")))
    assert len(frames) == 5 and log == []
    assert frames[0].rgb.shape == (64, 48, 3) and np.abs(frames[0].rgb - upright).mean() < 4
    server = _Serve(www)
    try:
        frames, _, _ = _read(open_source(server.url("phone.mp4")))
    finally:
        server.close()
    assert frames[0].rgb.shape == (64, 48, 3) and np.abs(frames[0].rgb - upright).mean() < 4


# -- item 5: live times from timestamps -----------------------------------------------------------


def test_live_times_come_from_timestamps_with_an_offset_after_a_reconnection():
    from facemtl.video.sources import _LiveClock

    c = _LiveClock()
    # FFmpeg hands over a burst: three frames (33 ms apart in the stream) arrive at once
    assert [round(c.time(pts, 1000.0), 4) for pts in (10.0, 10.0333, 10.0667)] == [0.0, 0.0333, 0.0667]
    assert round(c.time(11.0, 1001.3), 4) == 1.0 and c.wall(1.0) == 1001.0  # clock time: first arrival + time
    c.reopened()  # a new connection: its timestamps start over, at 0
    assert round(c.time(0.0, 1005.0), 4) == 5.0 and round(c.time(0.5, 1005.5), 4) == 5.5
    assert round(c.time(None, 1006.0), 4) == 6.0  # no timestamp: the seconds since the first frame
    assert round(c.time(9000.0, 1006.1), 4) == 6.1  # a jump far ahead of the clock: starts over, at the clock


def test_live_timestamps_that_stop_advancing_give_way_to_arrival_times_with_one_warning():
    """A user test: a camera whose timestamps stayed at 0 had 129 frames over 9.7 s stored 1 ms
    apart, at the stream's start, without a word."""
    from facemtl.video.ffmpeg import LIVE_BEHIND, _LiveClock

    log: list[str] = []
    c = _LiveClock("cam1", log.append)
    arrivals = [1000.0 + i / 10 for i in range(100)]  # 10 fps for 10 s, every timestamp 0
    times = [c.time(0.0, now) for now in arrivals]
    assert all(b > a for a, b in zip(times, times[1:]))
    late = [(t, now - 1000.0) for t, now in zip(times, arrivals) if now - 1000.0 > LIVE_BEHIND + 0.1]
    assert len(late) > 40 and all(abs(t - elapsed) < 0.01 for t, elapsed in late)
    assert log == [f"cam1: its frames' timestamps stopped advancing for {LIVE_BEHIND:g} s while its frames kept "
                   "coming; its frames are stamped with their arrival time until the timestamps keep pace"]
    c.reopened()  # the camera again, still stuck: by arrival at once, not said again
    assert [round(c.time(0.0, 1012.0 + i / 10), 4) for i in range(3)] == [12.0, 12.1, 12.2] and len(log) == 1


def _jittery(stall: tuple[float, float]) -> tuple[list[float], list[float]]:
    """(timestamps, arrivals) of a 25 fps camera for 20 s, arriving up to 0.3 s late (jitter),
    nothing arriving in the ``stall`` (from, to) seconds and its frames in a burst at its end."""
    pts = [90.0 + i * 0.04 for i in range(500)]
    arrivals = [1000.0 + i * 0.04 + 0.1 * (i * 7 % 4) for i in range(500)]
    return pts, [max(now, 1000.0 + stall[1]) if stall[0] <= now - 1000.0 < stall[1] else now for now in arrivals]


def test_live_times_of_a_normal_stream_still_come_from_its_timestamps():
    from facemtl.video.ffmpeg import _LiveClock

    c = _LiveClock()
    pts, arrivals = _jittery((8.0, 11.0))  # a 3 s stall: under the bound, nothing changes
    assert [round(c.time(p, now), 4) for p, now in zip(pts, arrivals)] == [round(i * 0.04, 4) for i in range(500)]


def test_live_times_after_a_long_stall_still_come_from_its_timestamps():
    """A review: a 7 s stall had the frames of the burst after it, whose timestamps are right,
    stamped by arrival, 1 ms apart; a burst is no sign of timestamps that stopped."""
    from facemtl.video.ffmpeg import _LiveClock

    for stall in ((8.0, 11.0), (3.0, 10.0), (2.0, 14.0)):
        log: list[str] = []
        c = _LiveClock("cam1", log.append)
        pts, arrivals = _jittery(stall)
        assert [round(c.time(p, now), 4) for p, now in zip(pts, arrivals)] == [round(i * 0.04, 4) for i in range(500)]
        assert log == []


def test_live_timestamps_that_run_slow_give_way_to_arrival_and_are_taken_back_once_they_keep_pace():
    from facemtl.video.ffmpeg import _LiveClock

    log: list[str] = []
    c = _LiveClock("cam1", log.append)
    # 25 fps arriving steadily for 10 s with timestamps at a third of the pace, then at the right pace for 10 s
    arrivals = [1000.0 + i * 0.04 for i in range(500)]
    pts = [i * 0.04 / 3 for i in range(250)] + [250 * 0.04 / 3 + i * 0.04 for i in range(250)]
    times = [c.time(p, now) for p, now in zip(pts, arrivals)]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert len(log) == 1 and "advanced at less than half the clock's pace" in log[0]
    assert abs(times[240] - 240 * 0.04) < 0.01  # (by arrival once judged slow)
    steps = [round(b - a, 4) for a, b in zip(times[-100:], times[-99:])]
    assert steps == [0.04] * 99 and abs(times[-1] - 499 * 0.04) < 0.05  # (the timestamps again, at the clock)


# -- item 4: the annotated video is checked before any work ----------------------------------------


def test_an_annotated_video_that_cannot_be_written_is_refused_before_the_model(www, tmp_path, monkeypatch):
    from facemtl.cli import main
    from facemtl.video import command

    def no_model(*args, **kw):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(command, "VideoAnalyzer", no_model)

    cases = [(tmp_path, "is a folder"), (tmp_path / "out", "give a name ending in one of them"),
             (tmp_path / "out.webm", "the annotated video is H.264 in .mp4, .m4v, .mov, .mkv"),
             (tmp_path / "missing" / "out.mp4", "does not exist")]
    for out, sentence in cases:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["stream", str(www / "phone.mp4"), "--annotate", str(out), "--no-progress"])
        assert rc == 2 and err.getvalue().count("\n") == 1 and sentence in err.getvalue(), err.getvalue()
        assert err.getvalue().startswith(f"facemtl: error: --annotate {out}: ")


def test_an_output_the_machine_refuses_says_its_reason_and_names_the_file(www, tmp_path, monkeypatch):
    """A user test, into a read-only folder: ``stream --annotate ro/a.mp4`` said a fixed "cannot
    write there (permission denied)" with exit 2, and ``--output jsonl:ro/a.jsonl`` named the
    folder ``ro``, not the file. Now the OS's reason, the file, and exit 1 (as ``analyze --annotate``)."""
    import errno
    import os

    import cv2

    import facemtl.system as system
    from facemtl.cli import main
    from facemtl.video import command

    def read_only(folder):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def no_model(*args, **kw):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(system, "probe_writable", read_only)
    monkeypatch.setattr(command, "VideoAnalyzer", no_model)
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    video = str(www / "phone.mp4")
    for args, said in ((["stream", video, "--annotate", str(tmp_path / "a.mp4")],
                        f"facemtl stream could not go on: --annotate cannot be written (Read-only file system): "
                        f"{tmp_path / 'a.mp4'}"),
                       (["stream", video, "--output", f"jsonl:{tmp_path / 'a.jsonl'}"],
                        f"facemtl stream could not go on: the jsonl output cannot be written (Read-only file system): "
                        f"{tmp_path / 'a.jsonl'}"),
                       (["analyze", str(photo), "--output", f"csv:{tmp_path / 'a.csv'}"],
                        f"facemtl analyze could not go on: the csv output cannot be written (Read-only file system): "
                        f"{tmp_path / 'a.csv'}")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main([*args, "--no-progress"] if args[0] == "stream" else args)
        assert rc == 1 and err.getvalue() == f"facemtl: error: {said}\n", (args, err.getvalue())
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.png"]  # nothing written


def test_the_annotated_video_is_never_written_over_the_video_being_read(www, tmp_path, monkeypatch):
    """The same file by its own name, another spelling of it, or a link: refused before the
    model loads, the video left as it was."""
    from facemtl.cli import main
    from facemtl.video import command

    monkeypatch.setattr(command, "VideoAnalyzer", lambda *a, **kw: pytest.fail("the model was loaded"))
    video = tmp_path / "v.mp4"
    shutil.copy(www / "phone.mp4", video)
    (tmp_path / "link.mp4").symlink_to(video)
    before = video.read_bytes()
    monkeypatch.chdir(tmp_path)
    for source, out in (("v.mp4", "v.mp4"), ("v.mp4", "./v.mp4"), ("link.mp4", str(video))):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["stream", source, "--annotate", out, "--no-progress"])
        assert rc == 2 and f"--annotate {out} is the video being read ({source})" in err.getvalue(), err.getvalue()
    assert video.read_bytes() == before


def test_a_file_ffmpeg_opens_but_cannot_decode_is_not_a_video(tmp_path):
    """Text named ``.jpg``: FFmpeg's image reader opens it and decodes nothing. One error, exit 1,
    not a run of 0 frames that exits 0."""
    from facemtl.cli import main

    (tmp_path / "notimage.jpg").write_text("not an image\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["stream", str(tmp_path / "notimage.jpg"), "--no-progress"])
    assert rc == 1, err.getvalue()
    assert "no frame could be decoded: not a video" in err.getvalue()


# -- item 3 and 8: the video writer ------------------------------------------------------------------


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_blur_covers_faces_the_frame_does_not_show(tmp_path):
    from facemtl.video.stream import FrameResult
    from facemtl.video.writer import VideoWriterSink

    noise = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    shown = FaceResult([80.0, 10.0, 110.0, 40.0], 0.9, None, {}, track=1)
    sink = VideoWriterSink(tmp_path / "blur.mp4", blur=True, crf=0)
    for i in range(3):  # a tentative or lost face (``unshown``) is pixelated as a shown one is
        sink.write(FrameResult(frame=i, time=i / 30, faces=[shown], image=noise.copy(), unshown=[[20.0, 50.0, 50.0, 80.0]]))
    sink.close()
    out = _decoded(tmp_path / "blur.mp4")[-1].astype(int)

    def detail(y1, y2, x1, x2):  # mean difference between horizontal neighbours: low once pixelated
        return np.abs(np.diff(out[y1:y2, x1:x2], axis=1)).mean()

    assert detail(55, 75, 25, 45) < 0.2 * detail(55, 75, 60, 75)  # the unshown face, against plain noise
    # (the shown face's lower part: its label, with no room above the box, is drawn inside its top)
    assert detail(30, 38, 85, 105) < 0.2 * detail(55, 75, 60, 75)


def test_a_frame_whose_size_changed_is_scaled_not_cropped(tmp_path):
    from facemtl.video.writer import VideoWriterSink

    small = np.full((48, 64, 3), 40, np.uint8)
    large = np.full((96, 128, 3), 40, np.uint8)
    large[:, 64:] = 220  # its right half: outside the first size, cut off if cropped
    sink = VideoWriterSink(tmp_path / "res.mp4")
    for i, img in enumerate([small] * 3 + [large] * 3):
        sink.write(ImageResult(frame=i, time=i / 30, image=img.copy()))
    sink.close()
    frames = _decoded(tmp_path / "res.mp4")
    assert len(frames) == 6 and all(f.shape == (48, 64, 3) for f in frames)
    assert abs(frames[-1][:, 40:].mean() - 220) < 10 and abs(frames[-1][:, :24].mean() - 40) < 10


def test_odd_sides_lose_one_row_and_column_not_sharpness(tmp_path):
    """A 97 x 129 frame becomes a 96 x 128 video by leaving out the last row and column: the
    pixels kept are the source's (a fine checkerboard survives; scaling by 128/129 would grey it)."""
    from facemtl.video.writer import VideoWriterSink

    yy, xx = np.mgrid[:97, :129]
    board = np.repeat((((yy // 4 + xx // 4) % 2) * 200 + 20).astype(np.uint8)[:, :, None], 3, axis=2)
    sink = VideoWriterSink(tmp_path / "odd.mp4", crf=0)
    for i in range(3):
        sink.write(ImageResult(frame=i, time=i / 30, image=board.copy()))
    sink.close()
    frames = _decoded(tmp_path / "odd.mp4")
    assert len(frames) == 3 and frames[-1].shape == (96, 128, 3)
    assert np.abs(frames[-1].astype(int) - board[:96, :128]).mean() < 6  # lossless but for 4:2:0 chroma


def test_the_annotated_video_takes_any_x264_preset_and_refuses_others(tmp_path):
    """--preset: a faster x264 preset writes the same frames (a larger file); an unknown one is one sentence."""
    from facemtl.video import PRESETS
    from facemtl.video.command import build_sinks
    from facemtl.video.writer import VideoWriterSink

    frame = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    sizes = {}
    for preset in ("ultrafast", "veryfast"):
        sink = build_sinks([], annotate=str(tmp_path / f"{preset}.mp4"), preset=preset, out=io.StringIO())[-1]
        assert isinstance(sink, VideoWriterSink) and sink.preset == preset
        for i in range(3):
            sink.write(ImageResult(frame=i, time=i / 30, image=frame.copy()))
        sink.close()
        assert len(_decoded(tmp_path / f"{preset}.mp4")) == 3
        sizes[preset] = (tmp_path / f"{preset}.mp4").stat().st_size
    assert sizes["ultrafast"] > sizes["veryfast"]
    assert PRESETS[0] == "ultrafast" and "veryfast" in PRESETS
    with pytest.raises(ValueError, match="unknown x264 preset 'quick'; choose from ultrafast"):
        VideoWriterSink(tmp_path / "x.mp4", preset="quick")


# -- item 11: fragmented MP4 ---------------------------------------------------------------------------

KILLED = r'''
import os, signal, sys, time
import numpy as np
from facemtl.inference.results import ImageResult
from facemtl.video.writer import VideoWriterSink
sink = VideoWriterSink(sys.argv[1])
rng = np.random.default_rng(0)
for i in range(150):
    sink.write(ImageResult(frame=i, time=i / 30, image=rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)))
while not sink._queue.empty():
    time.sleep(0.05)
time.sleep(0.5)
os.kill(os.getpid(), signal.SIGKILL)
'''


def test_an_annotated_mp4_survives_sigkill_and_plays_while_written(tmp_path):
    out = tmp_path / "killed.mp4"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(out)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    frames = _decoded(out)  # every fragment written is there: seconds of video, not an unreadable 48 bytes
    assert 60 <= len(frames) <= 150 and frames[0].shape == (96, 128, 3)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"moof")  # the header first, then the fragments


# -- item 7 and 9 ------------------------------------------------------------------------------------


def test_stream_defaults_to_mtcnn():
    from facemtl import cli
    from facemtl.video import command, stream

    for fn in (cli.stream, command.run_stream, stream.VideoAnalyzer, stream.stream_events):
        assert inspect.signature(fn).parameters["detector"].default == "mtcnn", fn
    action = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["stream"]._actions
                  if a.dest == "detector")
    assert action.default == "mtcnn" and "dlib is the faster" not in action.help


def test_track_lines_of_live_sources_carry_clock_times():
    t = TrackResult(7, 3, 40, 38, {}, 0.1, 1.3, 0.93, None, 1700000000.1, 1700000001.3)
    assert t.to_dict() == {"type": "track", "track": 7, "first_frame": 3, "last_frame": 40, "frames": 38,
                           "first_time": 0.1, "last_time": 1.3, "first_wall_time": 1700000000.1,
                           "last_wall_time": 1700000001.3, "confidence": 0.93}
    assert "first_wall_time" not in TrackResult(7, 3, 40, 38).to_dict()  # files: unchanged


def test_secrets_in_camera_urls_never_name_a_source():
    """The user and password before the host (a '/' or '@' in the password too) and the values of
    secret query parameters are left out of a source's name and its messages."""
    from facemtl.video.sources import Source, redact_url

    assert redact_url("rtsp://admin:s3cret@cam/live") == "rtsp://cam/live"
    assert redact_url("rtsp://admin:p/w@cam/live") == "rtsp://cam/live"
    assert redact_url("rtsp://admin:p@ss@cam:554/live") == "rtsp://cam:554/live"
    assert redact_url("http://cam/video.mjpg?user=admin&password=pw&channel=1") == \
        "http://cam/video.mjpg?user=admin&password=***&channel=1"
    assert redact_url("rtsp://cam/live?token=abc") == "rtsp://cam/live?token=***"
    assert redact_url("/videos/street.mp4") == "/videos/street.mp4" and redact_url("0") == "0"
    src = Source("rtsp://admin:s3cr3t@cam/live?pwd=xyzzy")
    assert "s3cr3t" not in src.name + repr(src) and "xyzzy" not in src.name + repr(src)
    assert src.name == "rtsp://cam/live?pwd=***"
    with pytest.raises(SourceError) as e:
        open_source("rstp://admin:s3cret@cam/live")
    assert "s3cret" not in str(e.value) and "unknown kind of URL" in str(e.value)


def test_a_cameras_mjpeg_is_timed_by_arrival_not_by_ffmpegs_made_up_25_fps():
    """FFmpeg's multipart-JPEG demuxer stamps frames as if at 25 fps: a 10 fps camera's faces
    were 18 s behind after 30 s (and a 30 fps one's up to 10 s in the future), which moved the
    database times, the stats buckets and retention."""
    from types import SimpleNamespace

    from facemtl.video.sources import _timestamps_kept

    def container(name):
        return SimpleNamespace(format=SimpleNamespace(name=name))

    assert not _timestamps_kept(container("mpjpeg")) and not _timestamps_kept(container("jpeg_pipe"))
    assert _timestamps_kept(container("rtsp")) and _timestamps_kept(container("mov,mp4,m4a,3gp,3g2,mj2"))
    assert _timestamps_kept(container("flv")) and _timestamps_kept(container("mpegts"))


def test_a_10_fps_mjpeg_camera_s_frames_are_stamped_when_they_arrive(tmp_path):
    """End to end: an HTTP multipart-JPEG camera sending 16 frames at 10 fps. FFmpeg stamps them
    at 25 fps (the last at 0.6 s); their times must follow arrival (the last near 1.5 s)."""
    import io

    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(jpeg, "JPEG")
    part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg.getvalue())

    class Camera(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for _ in range(16):
                self.wfile.write(part + jpeg.getvalue() + b"\r\n")
                self.wfile.flush()
                time.sleep(0.1)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = Url(f"http://127.0.0.1:{server.server_address[1]}/cam", settings=SourceSettings(reconnect=0))
        frames, _, _ = _read(src)
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) >= 14
    spacing = (frames[-1].time - frames[0].time) / (len(frames) - 1)
    assert 0.07 < spacing < 0.2, [f.time for f in frames]  # about 0.1 s apart, not FFmpeg's 0.04
    assert abs(frames[-1].wall_time - (frames[0].wall_time + frames[-1].time - frames[0].time)) < 1e-3


def test_sources_are_named_on_the_command_line_and_reconnect_can_go_on_forever(tmp_path):
    """'stream cam1=http://...' said 'unknown kind of URL' (names worked only in a sources file);
    --reconnect took no 'forever', and a box watching cameras for days gave up after 80 s."""
    import argparse

    from facemtl.cli import _reconnections
    from facemtl.video.sources import FOREVER, open_sources

    (gate,) = open_sources(["gate=http://127.0.0.1:9/live"])
    assert gate.name == "gate" and gate.spec == "http://127.0.0.1:9/live"
    odd = tmp_path / "a=b.mp4"
    odd.write_bytes(b"")  # a file whose name holds '=' stays a file
    assert open_sources([str(odd)])[0].spec == str(odd)
    assert _reconnections("forever") == FOREVER and _reconnections("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="or 'forever'"):
        _reconnections("-5")
    src = Url("http://127.0.0.1:9/live", settings=SourceSettings(reconnect=FOREVER, backoff=0.01, max_backoff=0.01))
    said: list[str] = []
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    frames = []
    try:
        for f in src.frames(stop, said.append):
            frames.append(f)
    except SourceError as exc:  # the first opening: a single source that never answered ends at once
        assert "refused" in str(exc)
    src.retry_open = True
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    for f in src.frames(stop, said.append):
        frames.append(f)
    assert not frames and len(said) > 5 and said[-1].endswith("of no limit)")  # still retrying when stopped


def test_the_summary_rate_is_frames_over_the_seconds_it_names():
    """'334 frames in 18.9 s (23.5 FPS)': the seconds counted start-up and the rate did not, and
    the rate kept falling after the last frame while the stream closed."""
    from facemtl.video.stream import StreamStats

    st = StreamStats(frames=60, started=90.0, first_frame=100.0, last_frame=102.0, elapsed=14.0)
    assert st.since_first == 2.0 and st.fps == 30.0  # frozen at the last frame, whenever it is read


def test_a_looped_file_plays_again_with_frame_numbers_and_times_going_on(www):
    """--input-option stream_loop=-1 was ignored; --loop plays a file again until stopped."""
    from facemtl.video.sources import VideoFile

    once, _, _ = _read(VideoFile(str(www / "clip.ts")))
    assert len(once) == 60
    stop, frames = threading.Event(), []
    for f in VideoFile(str(www / "clip.ts"), loop=True).frames(stop, lambda m: None):
        frames.append(f)
        if len(frames) == 150:
            stop.set()
    assert [f.index for f in frames] == list(range(150))
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))  # on through each restart
    assert times[60] == pytest.approx(times[59] + 1 / 30, abs=1e-3) and times[149] == pytest.approx(149 / 30, abs=1e-3)
    assert np.array_equal(frames[61].rgb, once[1].rgb)
    # each pass after the first begins with a scene cut: no track goes on across it (a user test: the last
    # pass's people were shown at their predicted boxes on the next pass's first frames, answers and all)
    assert [f.index for f in frames if f.restarted] == [60, 120]


@pytest.mark.parametrize("name", ["clip.ts", "clip.mp4"])
def test_a_video_file_begins_where_start_says(www, tmp_path, name):
    """A stream stopped part way through a file analysed it again from frame 0 when restarted:
    --start goes on from a position, frames numbered and timed as in the whole file, and nothing
    said missing for the frames before it. A TS that starts at 10 s (the clip) and an MP4."""
    path = www / "clip.ts"
    if name == "clip.mp4":
        rng = np.random.default_rng(1)
        path = _clip(tmp_path / name, [np.clip(_pattern(48, 64).astype(int) + rng.integers(-20, 20, (48, 64, 3)),
                                               0, 255).astype(np.uint8) for _ in range(60)])
    whole, _, _ = _read(VideoFile(str(path)))
    later, log, error = _read(VideoFile(str(path), start=1.2))
    assert error is None and log == []  # no "truncated": the frames before 1.2 s are not missing
    assert [(f.index, f.time) for f in later] == [(f.index, f.time) for f in whole if f.time >= 1.2 - 1e-6]
    assert later[0].index == 36 and np.array_equal(later[0].rgb, whole[36].rgb)
    stop, frames = threading.Event(), []  # --loop: the next pass plays the whole file
    for f in VideoFile(str(path), loop=True, start=1.2).frames(stop, lambda m: None):
        frames.append(f)
        if len(frames) == 24 + 60:
            stop.set()
    assert [f.index for f in frames] == list(range(36, 60 + 60))
    # the last media_time stored (4 decimals), typed as --start, gives its own frame (a user test: 2.1667
    # left out the frame at 2.16667), and a start after the last frame says so (it said "not a video")
    again, _, _ = _read(VideoFile(str(path), start=round(whole[37].time, 4)))
    assert again[0].index == 37
    _, _, error = _read(VideoFile(str(path), start=100))
    assert error == f"{path}: no frame at or after --start 100 s: its last frame is at {whole[-1].time:.4f} s"
    with pytest.raises(SourceError, match="--start applies to video files only"):
        open_source("0", SourceSettings(start=5))
    with pytest.raises(ValueError, match="start must be a position in seconds"):
        SourceSettings(start=-1)
    for bad in (float("nan"), float("inf")):  # (a user test: --timeout nan waited on a silent camera for ever)
        with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
            SourceSettings(timeout=bad)


def test_a_file_that_cannot_seek_begins_where_start_says_all_the_same(www, monkeypatch):
    """A seek FFmpeg refuses reads the file from its start and drops the frames before --start."""
    import facemtl.video.ffmpeg as sources  # (where VideoFile looks it up)

    opened = sources._open_container

    class NoSeek:
        def __init__(self, container):
            self._container = container

        def seek(self, *args, **kwargs):
            raise av.error.FFmpegError(0, "cannot seek")

        def __getattr__(self, name):
            return getattr(self._container, name)

    def without_seek(*args, **kwargs):
        container, stream = opened(*args, **kwargs)
        return NoSeek(container), stream

    whole, _, _ = _read(VideoFile(str(www / "clip.ts")))
    monkeypatch.setattr(sources, "_open_container", without_seek)
    later, log, error = _read(VideoFile(str(www / "clip.ts"), start=1.2))
    assert error is None and log == []
    assert [(f.index, f.time) for f in later] == [(f.index, f.time) for f in whole if f.time >= 1.2 - 1e-6]


def test_an_ffmpeg_option_ffmpeg_does_not_have_is_refused(www, capsys):
    """FFmpeg leaves an input option it does not know unused without a word: a misspelt
    rtsp_transport=tcp ran the camera over UDP, and stimeout (removed in FFmpeg 5, still in many
    guides) set no timeout. A name no input format or protocol of PyAV's FFmpeg takes is refused."""
    from facemtl.cli import main
    from facemtl.video.ffmpeg import check_input_options, known_input_options

    known = known_input_options()
    assert known is not None and {"rtsp_transport", "rtsp_flags", "listen_timeout", "reconnect", "user_agent",
                                  "probesize", "fflags", "timeout"} <= known  # format, demuxer, protocol options
    assert not {"stimeout", "rtsp_transportt", "threads"} & known  # (threads is a decoder's, never an input's)
    check_input_options({"rtsp_transport": "tcp", "probesize": "32000"})
    assert main(["stream", str(www / "clip.ts"), "--json", "--input-option", "rtsp_transportt=tcp"]) == 2
    err = capsys.readouterr().err
    assert "--input-option rtsp_transportt: FFmpeg " in err and "has no input option of that name (did you mean " \
        "'rtsp_transport'?), and would ignore it without a word" in err


def test_a_truncated_matroska_file_says_how_many_frames_it_lost(tmp_path):
    """A user test: a truncated .mkv (its video declares no duration, its container does) ended
    without a word, where a truncated .mp4 said how many of its frames it decoded."""
    rng = np.random.default_rng(2)
    path = _clip(tmp_path / "whole.mkv", [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(90)])
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.5)])
    frames, log, error = _read(VideoFile(str(cut)))
    assert error is None and 20 < len(frames) < 80
    assert log[-1].startswith(f"{cut}: {len(frames)} of 90 frames decoded") and "truncated" in log[-1]
    _, log, _ = _read(VideoFile(str(path)))
    assert log == []  # the whole file: nothing said


def test_live_timestamps_taken_back_after_a_freeze_stay_taken():
    """A review: leaving arrival times did not judge the pace afresh, so the frozen seconds
    tripped the switch again at once, and the clock went back and forth."""
    from facemtl.video.ffmpeg import _LiveClock

    c = _LiveClock()
    modes = []
    for i in range(750):  # 25 fps: timestamps frozen for 10 s, then at the right pace for 20 s
        c.time(0.0 if i < 250 else (i - 250) * 0.04, 1000.0 + i * 0.04)
        modes.append(c.arrival is None)
    back = modes.index(True, 250)
    assert 250 < back < 450 and all(modes[back:]), [k for k in range(back, 750) if not modes[k]][:3]
