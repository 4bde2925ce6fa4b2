"""A source read in a thread of its own into a small buffer: what ``stream`` takes frames from.

Kept apart from :mod:`facemtl.video.sources`, which opens files, URLs, cameras and folders.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .sources import Frame, Log, Source, SourceError

#: Memory a live source's opening burst may take (64 frames at 640x480, 10 at 1080p; never fewer
#: than its usual buffer).
BURST_BYTES = 64 * 1024 * 1024


class FrameReader:
    """Reads one source in a daemon thread into a buffer of at most ``size`` frames.

    A live source never waits for the consumer: when the buffer is full the oldest frame
    is dropped and counted (:attr:`dropped`); for ``opening`` seconds after its first frame
    it may hold ``burst`` frames, within :data:`BURST_BYTES` (FFmpeg hands over what it
    buffered while probing the stream all at once), and again after each reconnection (a
    frame marked ``opened``). Past that
    window, what the buffer holds beyond ``size`` is worked through, not thrown away at once:
    the buffer may hold what it held then, less each frame taken since (so one frame in, the
    oldest out, until the consumer catches up). Any other source waits for room, so no frame
    is lost.
    ``fps_cap``: keep at most that many frames per second of the source's time
    (the rest are skipped, counted in :attr:`skipped`). ``ready`` is notified on every
    new frame and at the end; ``log`` receives the source's warnings.
    """

    def __init__(self, source: Source, ready: threading.Condition, log: Log, size: int = 4,
                 fps_cap: float | None = None, burst: int = 64, opening: float = 2.0) -> None:
        self.source = source
        self.burst, self.opening = max(size, burst), opening
        self.ready = ready
        self.log = log
        self.size = max(1, size)
        self.fps_cap = fps_cap
        self.buffer: deque[Frame] = deque()
        self._room = self.size  # frames a live buffer may hold now (more while a burst is worked through)
        self.dropped = 0
        self.skipped = 0
        self.read = 0
        #: Seconds spent getting frames: decoding, or waiting for a live source to send them.
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.finished = False
        #: The sentence that ended the source, when it could not be read (or stopped being readable).
        self.error: str | None = None
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"facemtl-read-{source.name}", daemon=True)

    def start(self) -> "FrameReader":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        with self.ready:
            self.ready.notify_all()

    @property
    def done(self) -> bool:
        """Ended (or stopped) and every buffered frame taken."""
        return self.finished and not self.buffer

    def take(self) -> Frame | None:
        """The oldest buffered frame, or ``None``; call with ``ready`` held."""
        if not self.buffer:
            return None
        frame = self.buffer.popleft()
        self.ready.notify_all()  # room for a waiting file reader
        return frame

    def _keep(self, t: float) -> bool:
        if self.fps_cap is None:
            return True
        step = 1.0 / self.fps_cap
        if t + 1e-6 < self._next:
            return False
        self._next = self._next + step if t < self._next + step else t + step  # on schedule, or restart after a gap
        return True

    def _run(self) -> None:
        self._next = 0.0
        first: float | None = None
        frames = self.source.frames(self.stop_event, self.log)
        try:
            while True:
                t, c, w = time.perf_counter(), time.thread_time(), getattr(self.source, "waited", 0.0)
                frame = next(frames, None)
                # (a file paced as a camera waits for its frames' times: not reading time)
                self.seconds += time.perf_counter() - t - (getattr(self.source, "waited", 0.0) - w)
                self.cpu_seconds += time.thread_time() - c
                if frame is None or self.stop_event.is_set():
                    break
                self.read += 1
                first = time.monotonic() if first is None or frame.opened else first  # (re)opened: a burst may come
                if not self._keep(frame.time):
                    self.skipped += 1
                    continue
                with self.ready:
                    if self.source.live:
                        if time.monotonic() - first < self.opening:  # the opening burst, within BURST_BYTES
                            self._room = max(self.size, min(self.burst, BURST_BYTES // max(1, frame.rgb.nbytes)))
                        else:  # (a user test: dropping all but ``size`` at the window's end lost 1 s of frames, and the tracks)
                            self._room = max(self.size, min(self._room, len(self.buffer)))
                        while len(self.buffer) >= self._room:
                            self.buffer.popleft()
                            self.dropped += 1
                    else:
                        while len(self.buffer) >= self.size and not self.stop_event.is_set():
                            self.ready.wait(0.1)
                    self.buffer.append(frame)
                    self.ready.notify_all()
        except SourceError as exc:
            self.error = str(exc)
        except Exception as exc:  # a reader must never die silently
            self.error = f"{self.source.name}: reading failed: {exc}"
        finally:
            frames.close()
            with self.ready:
                self.finished = True
                self.ready.notify_all()
