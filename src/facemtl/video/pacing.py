"""Real-time pacing: a video file or a folder of frames played as a camera would send it.

``facemtl stream --realtime FILE`` hands each frame over at its own time (the first frame at
once, a frame ``t`` seconds into the media ``t`` seconds later), so that a file stands in for
a camera: the reader drops frames the analysis cannot keep up with (counted, as for a live
source), batches wait at most the stream's latency, and each frame carries the clock time it
was sent at (``wall_time``), as a camera's does. FFmpeg's ``-re`` does this for its own
output; PyAV reads frame by frame and has no such option, hence this small wrapper.

With ``--loop`` the file plays on at its rate; with ``--start`` the pace counts from the
first frame given. Frame numbers and media times stay the file's own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Iterator

from .sources import Frame, Log, Source


class Paced(Source):
    """``source`` (a video file or a folder of frames) delivered in real time; ``live``.

    A frame whose time has come is handed over at once: when decoding itself is slower than
    the media's rate, frames come as fast as they decode (late, never skipped here)."""

    live = True

    def __init__(self, source: Source) -> None:  # (not Source.__init__: ``fps`` is the inner source's)
        self.spec, self.name, self.source = source.spec, source.name, source
        #: Seconds spent waiting for frames' times (the reader leaves them out of its read time).
        self.waited = 0.0

    @property
    def fps(self) -> float | None:
        return getattr(self.source, "fps", None)

    def frames(self, stop: threading.Event, log: Log) -> Iterator[Frame]:
        inner = self.source.frames(stop, log)
        first: tuple[float, float, float] | None = None  # (media time, monotonic clock, wall clock) of the first frame
        try:
            for frame in inner:
                now = time.monotonic()
                if first is None:
                    first = (frame.time, now, time.time())
                due = first[1] + (frame.time - first[0])  # seconds on the monotonic clock
                if due > now:
                    stopped = stop.wait(due - now)
                    self.waited += time.monotonic() - now
                    if stopped:
                        return
                yield replace(frame, wall_time=round(first[2] + (frame.time - first[0]), 4))
        finally:
            inner.close()
