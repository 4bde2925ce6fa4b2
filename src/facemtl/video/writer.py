"""The annotated video: every frame with its faces' boxes, track ids and answers, as H.264.

OpenCV's writer here has only MPEG-4 Part 2 (``mp4v``), which browsers do not play; PyAV
bundles FFmpeg with libx264, so the video is H.264 (High profile, ``yuv420p``). An MP4 is
*fragmented* (``empty_moov``, a fragment each second, flushed as written), the layout of
DASH and of browsers' Media Source: its header comes first and a global index (``sidx``) is
put before the fragments when the file is closed, so browsers play it, even while it
downloads, and seek in it; a run that is killed (SIGKILL, power cut) keeps every fragment
written, a plain MP4 would keep nothing (its index is written last). ``.mkv`` is Matroska.
Frame times are the stream's own (millisecond time base), so a live stream that dropped
frames still plays at its real pace. The video's sides are the first frame's, made even (H.264
in 4:2:0 needs even sides): a frame one row or column larger loses its last one, never scaled;
a frame of any other size (the source changed resolution) is scaled to the video's size.
Drawing and encoding run in a thread of their own, fed through a small queue, beside the
analysis.
"""

from __future__ import annotations

import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..inference.results import ERROR, FaceResult, ImageResult
from ..sinks.annotate import draw_faces
from ..sinks.base import Sink
from ..system import REFUSED_BY_THE_MACHINE, check_new_file
from . import PRESETS

#: Container options of the annotated video, by suffix (H.264 in each). Not AVI: it cannot
#: keep the stream's own frame times (a live stream's dropped frames would change its pace).
_FRAGMENTS = {"frag_duration": "1000000", "flush_packets": "1"}  # a fragment a second, written at once
CONTAINERS = {
    ".mp4": {"movflags": "+frag_keyframe+empty_moov+default_base_moof+global_sidx", **_FRAGMENTS},
    ".m4v": {"movflags": "+frag_keyframe+empty_moov+default_base_moof+global_sidx", **_FRAGMENTS},
    ".mov": {"movflags": "+frag_keyframe+empty_moov+default_base_moof", **_FRAGMENTS},
    ".mkv": {"flush_packets": "1"},
}


def check_output(path: str | Path, preset: str = "veryfast") -> Path:
    """``path`` if the annotated video can be written there with x264's ``preset``; else a
    ``ValueError`` with one sentence (a folder, an unknown suffix, a missing or read-only folder,
    a preset x264 does not have). Checked before the model loads."""
    if preset not in PRESETS:
        raise ValueError(f"unknown x264 preset {preset!r}; choose from {', '.join(PRESETS)}")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--annotate {path}: is a folder; give a file name, e.g. {p / 'annotated.mp4'}")
    if p.suffix.lower() not in CONTAINERS:
        raise ValueError(f"--annotate {path}: the annotated video is H.264 in {', '.join(CONTAINERS)}; "
                         f"give a name ending in one of them, e.g. {p.with_suffix('.mp4').name}")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"--annotate {path}: the folder {folder} does not exist")
    if p.exists() and not os.access(p, os.W_OK):  # (the file is replaced: the OS's own reason, exit 1)
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))  # (changes nothing in it)
        except OSError as exc:
            if exc.errno in REFUSED_BY_THE_MACHINE:
                raise OSError(exc.errno, f"--annotate cannot be written ({exc.strerror})", str(path)) from None
            raise ValueError(f"--annotate {path}: cannot be written ({exc.strerror or exc})") from None
    # the folder: a file made and removed there; the machine's refusal (a read-only disk, a permission)
    # is an OSError with its own reason, exit 1 (a user test read a fixed "permission denied", exit 2)
    try:
        check_new_file(p, f"--annotate {path}")
    except OSError as exc:  # (named once: the file, as the analyze --annotate folder is)
        raise OSError(exc.errno, f"--annotate cannot be written ({os.strerror(exc.errno)})", str(path)) from None
    return p


#: Class names that do not say which task answered them: the label names their task.
_MUTE = {"yes", "no", "true", "false", "none", "other", "others", "unknown"}


def _says_itself(unit: str, text: str) -> bool:
    """Whether an answer's text alone says what it is: a number in years (an age; its task's
    :attr:`~facemtl.tasks.Task.unit`), or a class name such as ``female`` (not another number,
    nor ``yes``/``no``, which need their task's name: ``glasses yes``)."""
    if unit == "years":
        return True
    try:
        float(text)
        return False
    except ValueError:
        return text.strip().lower() not in _MUTE


def face_label(face: FaceResult, units: Mapping[str, str] | None = None) -> str:
    """A short label: ``#3 31 female white glasses yes smile 0.25`` (track id, then each
    answer's :meth:`~facemtl.inference.results.TaskAnswer.value_text`, no digits after the point
    for age; a number other than an age, or a class such as ``yes``, after its task's name).
    ``units``: each task's unit by name (``{"age": "years"}``); a number in years reads alone."""
    values = []
    for name, a in face.answers.items():
        text = a.value_text()
        values.append(text if _says_itself((units or {}).get(name, ""), text) else f"{name} {text}")
    return " ".join(([f"#{face.track}"] if face.track is not None else []) + values)


def blur_faces(image: np.ndarray, faces: Sequence[FaceResult], margin: float = 0.2, blocks: int = 8) -> np.ndarray:
    """A copy of ``image`` with each face box (grown by ``margin`` of its side) pixelated into
    about ``blocks`` x ``blocks`` cells: no identity is left, the position stays readable."""
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    for f in faces:
        if not f.box:
            continue
        x1, y1, x2, y2 = f.box
        mx, my = margin * (x2 - x1), margin * (y2 - y1)
        a, b = max(0, int(x1 - mx)), max(0, int(y1 - my))
        c, d = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
        if c - a < 2 or d - b < 2:
            continue
        region = out[b:d, a:c]
        small = cv2.resize(region, (blocks, max(1, round(blocks * (d - b) / (c - a)))), interpolation=cv2.INTER_AREA)
        out[b:d, a:c] = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_NEAREST)
    return out


class VideoWriterSink(Sink):
    """Writes the frames it receives (which must carry their pixels: ``keep_images``) with
    their faces drawn to ``path`` as H.264 MP4. ``blur``: pixelate the faces (privacy).
    ``crf``/``preset``: x264's quality (lower is better, 23 its default) and speed. ``units``:
    each task's unit by name, for the labels (:func:`face_label`).

    ``write`` raises ``OSError`` once the writer has failed (e.g. the disk is full);
    ``close`` finishes the file and raises the writer's error, if any.
    """

    def __init__(self, path: str | Path, blur: bool = False, crf: int = 23, preset: str = "veryfast",
                 fps: float = 30.0, queue_size: int = 8, units: Mapping[str, str] | None = None) -> None:
        try:
            import av  # noqa: F401
        except ImportError:
            raise RuntimeError("writing video needs PyAV: pip install 'facemtl[video]'") from None
        self.path = check_output(path, preset)
        self.blur = blur
        self.units = dict(units or {})  # each task's unit by name: an age's number is labelled alone
        self.crf, self.preset, self.fps = crf, preset, fps
        self.frames = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="facemtl-video-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def write(self, result: ImageResult) -> None:
        if self.error is not None:
            raise OSError(f"cannot write {self.path}: {self.error}")
        if result.status == ERROR or result.image is None:
            return
        # landmarks exist only on detection frames: drawn, they would blink; boxes and labels stay
        faces = [FaceResult(f.box, f.score, None, f.answers, f.track) for f in result.faces]
        # --blur: every face seen on the frame, shown or not (detections, tentative and lost tracks)
        hidden = [FaceResult(b, None, None, {}) for b in getattr(result, "unshown", ())] if self.blur else []
        # the pixels are shared with the writer's thread, which only reads them (it draws on a copy);
        # the result keeps them for the sinks after this one (the database's thumbnails and live frame:
        # a review found `--annotate --db` stored neither when this sink let go of them)
        self._queue.put((result.image, faces, hidden, result.time))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise OSError(f"cannot write {self.path}: {self.error}")

    def _open(self, width: int, height: int):
        import av

        container = av.open(str(self.path), "w", options=dict(CONTAINERS[self.path.suffix.lower()]))
        stream = container.add_stream("libx264", rate=round(self.fps) or 30)
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        return container, stream

    def _run(self) -> None:
        import av

        container = stream = None
        last_pts = -1
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                image, faces, hidden, t = item
                if container is None:
                    container, stream = self._open(image.shape[1], image.shape[0])
                if self.blur:
                    image = blur_faces(image, faces + hidden)
                drawn = draw_faces(image, faces, [face_label(f, self.units) for f in faces])
                h, w = drawn.shape[:2]
                if (h - h % 2, w - w % 2) == (stream.height, stream.width):
                    # odd sides (H.264's 4:2:0 wants even): the last row or column left out, every other
                    # pixel as it was (scaling by 639/640 would blur them all)
                    drawn = drawn[: stream.height, : stream.width]
                else:  # the source changed size
                    import cv2

                    drawn = cv2.resize(drawn, (stream.width, stream.height), interpolation=cv2.INTER_AREA)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(drawn), format="rgb24")
                pts = round(1000 * t) if t is not None else round(1000 * self.frames / self.fps)
                frame.pts, frame.time_base = max(pts, last_pts + 1), Fraction(1, 1000)
                last_pts = frame.pts
                for packet in stream.encode(frame):
                    container.mux(packet)
                self.frames += 1
        except Exception as exc:  # reported by write/close, never lost
            self.error = exc
            while self._queue.get() is not None:  # drain, so the producer never blocks on a dead writer
                pass
        finally:
            if container is not None:
                try:
                    if self.error is None:
                        for packet in stream.encode():
                            container.mux(packet)
                finally:
                    container.close()
