"""Synthetic results shaped like what ``analyze`` and ``stream`` produce, for the store's
and the server's tests (and the load test): answers come from the real tasks decoding
random raw outputs, so every field is one a model would give."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from facemtl.inference.model_info import ModelInfo
from facemtl.inference.results import FaceResult, ImageResult, TrackResult

#: The shipped model's tasks (src/facemtl/weights/utkface_lite0.pt).
TASK_SPECS = [
    {"type": "ordinal", "name": "age", "label": "age", "min_value": 1, "max_value": 116,
     "group_edges": [0, 3, 10, 20, 30, 40, 50, 60, 70], "method": "binary", "decoding": "threshold",
     "reduction": "sum"},
    {"type": "nominal", "name": "gender", "label": "gender", "num_classes": 2, "classes": ["male", "female"]},
    {"type": "nominal", "name": "race", "label": "race", "num_classes": 5,
     "classes": ["white", "black", "asian", "indian", "others"]},
]


def model_info(specs: list[dict] | None = None, name: str = "fake", version: str = "v1") -> ModelInfo:
    return ModelInfo(name=name, version=version, tasks=specs or TASK_SPECS, image_size=112)


def answers(info: ModelInfo, n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` faces' answers ``{task: TaskAnswer}`` from random raw outputs."""
    per_task = {}
    for t in info.build_tasks():
        raw = rng.normal(0, 3, (n, t.output_size)).astype(np.float32)
        if t.class_names() is None:  # spread ordinal thresholds so ages cover the range
            raw = raw + np.linspace(4, -4, t.output_size)[None, :] + rng.normal(0, 3, (n, 1))
        per_task[t.name] = t.answers(raw)
    return [{k: v[j] for k, v in per_task.items()} for j in range(n)]


def face(answers: dict, track: int | None = None, raw: dict | None = None, x: float = 10.0) -> FaceResult:
    return FaceResult([x, 20.0, x + 80.0, 120.0], 0.98, [[x + 20, 50.0], [x + 60, 50.0], [x + 40, 70.0],
                                                        [x + 25, 95.0], [x + 55, 95.0]], answers, track, raw)


def photos(info: ModelInfo, n: int, seed: int = 0, faces_per_photo: int = 2) -> Iterator[ImageResult]:
    """What ``analyze`` gives for files: no tracks, no raw answers; every 5th photo has no face."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = 0 if i % 5 == 4 else faces_per_photo
        res = ImageResult(file=f"photos/p{i:05d}.jpg", width=640, height=480)
        res.faces = [face(a, x=10.0 + 100 * j) for j, a in enumerate(answers(info, k, rng))]
        res.status = "ok" if k else "no_face"
        yield res


def store_photos(url: str, info: ModelInfo, n: int, seed: int = 0) -> None:
    """``n`` of :func:`photos` of ``info``'s model written to the results database ``url`` as one
    ``analyze`` session."""
    from facemtl.sinks.db import DbSink

    sink = DbSink(url, kind="analyze", model_info=info)
    for r in photos(info, n, seed=seed):
        sink.write(r)
    sink.close()


def stream(info: ModelInfo, frames: int, seed: int = 0, source: str | None = "cam1", t0: float = 1.7e9,
           fps: float = 10.0, people: int = 2, track_len: int = 8,
           image: bool = False) -> Iterator[ImageResult | TrackResult]:
    """What ``stream`` gives: frames whose faces carry a track id, smoothed answers and the
    frame's own (``raw``), and a :class:`TrackResult` when a track ends (every
    ``track_len`` frames each person is replaced by a new track). ``image``: attach a
    small RGB frame (for thumbnails and live snapshots)."""
    rng = np.random.default_rng(seed)
    next_track = 1
    tracks = {p: (next_track + p, 0) for p in range(people)}
    next_track += people
    for fr in range(frames):
        res = ImageResult(frame=fr, time=fr / fps, wall_time=t0 + fr / fps, source=source, width=320, height=240)
        if image:
            res.image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        raw = answers(info, people, rng)
        smooth = answers(info, people, rng)
        for p in range(people):
            tid, _ = tracks[p]
            res.faces.append(face(smooth[p], tid, raw[p], x=10.0 + 100 * p))
        yield res
        for p in range(people):
            tid, start = tracks[p]
            if fr - start + 1 >= track_len:
                yield TrackResult(tid, start, fr, fr - start + 1, answers(info, 1, rng)[0], start / fps, fr / fps,
                                  0.9, source)
                tracks[p] = (next_track, fr + 1)
                next_track += 1


def sigterm_once(proc, path, timeout: float = 240) -> str:
    """Send SIGTERM to the process ``proc`` (a ``subprocess.Popen`` with text pipes) as soon as
    ``path`` exists (e.g. a run's first ``last.pt``); returns its stderr once it has ended
    (killed if it would not). Fails if ``path`` never appeared."""
    import signal
    import time
    from pathlib import Path

    try:
        deadline = time.monotonic() + timeout
        while not Path(path).is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Path(path).is_file(), f"{path} never appeared"
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
