"""A stream's settings (what the command line's flags set) and its counters.

Kept apart from :mod:`facemtl.video.stream`, the loop that reads them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .smoothing import QualitySettings
from .sources import SourceSettings
from .tracker import TrackerSettings


@dataclass
class StreamSettings:
    """How a stream is analysed (the CLI's flags map onto these)."""

    #: Run the detector on every N-th frame of a source; track in between (1: every frame).
    detect_every: int = 5
    #: Stop each source after this many frames (``None``: when it ends).
    max_frames: int | None = None
    #: Analyse at most this many frames per second of a source's time (others skipped).
    fps_cap: float | None = None
    #: Crops per network call; crops of several frames wait to fill a batch ...
    batch_size: int = 32
    #: ... but no longer than this many seconds when the frame came from a live source.
    max_latency: float = 0.25
    #: Frames a reader holds ahead of analysis (a live reader drops the oldest beyond this).
    buffer: int = 4
    #: Samples (analysed faces) each track keeps for its answers: the best ones by quality.
    #: Once a track has them, a face of it is analysed only when it is better than the worst kept.
    history: int = 16
    #: Analyse every detected face, even those that cannot change their track's answers.
    always_analyse: bool = False
    #: ``median`` or ``mean``: how numeric answers (age) are aggregated over a track.
    numeric: str = "median"
    #: Keep each frame's pixels on its result (``ImageResult.image``), for drawing.
    keep_images: bool = False
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    sources: SourceSettings = field(default_factory=SourceSettings)

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {self.detect_every}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {self.max_frames}")
        if self.fps_cap is not None and self.fps_cap <= 0:
            raise ValueError(f"the FPS cap must be positive, not {self.fps_cap}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")


STAGES = ("read", "detect", "track", "network", "finish", "consumer")


@dataclass
class StreamStats:
    """What a stream did so far. ``seconds``: time spent per stage, summed over threads:
    ``read`` (decoding, in reader threads), ``detect`` (detection and alignment, in worker
    threads), ``track`` (tracking and face quality), ``network`` (the predictor),
    ``finish`` (smoothing and building results) and ``consumer`` (what the caller did with
    the events, e.g. writing JSON or video); ``cpu_seconds`` the same in CPU time of the
    thread doing it (FFmpeg's own decoding threads are not counted)."""

    frames: int = 0
    faces: int = 0
    analysed: int = 0
    tracks: int = 0
    open_tracks: int = 0
    dropped: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_frame: float | None = None
    #: When the last frame was finished (``perf_counter``): the rate is frozen when the stream ends.
    last_frame: float | None = None
    elapsed: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    #: CPU seconds per stage (the working thread's own time: what the stage costs, whatever the machine's load).
    cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def since_first(self) -> float:
        """Seconds from the first frame's arrival to the last frame finished (outages included)."""
        if self.first_frame is None:
            return 0.0
        return (self.last_frame or time.perf_counter()) - self.first_frame

    @property
    def fps(self) -> float:
        """Frames finished per second from the first frame's arrival to the last frame finished
        (start-up, before the first frame, is not counted: :attr:`elapsed` is)."""
        if self.first_frame is None or self.frames == 0:
            return 0.0
        return self.frames / max(self.since_first, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "faces": self.faces, "analysed_faces": self.analysed, "tracks": self.tracks,
                "dropped": self.dropped, "skipped": self.skipped, "seconds": round(self.elapsed, 3),
                "fps": round(self.fps, 2), "stage_seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "stage_cpu_seconds": {k: round(v, 3) for k, v in self.cpu_seconds.items()}}
