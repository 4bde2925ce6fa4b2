"""Text sinks: a readable table, JSON lines, CSV (one row per face; text cells a spreadsheet
would run as a formula get a leading ``'``: :mod:`facemtl.csvcells`).

Each record is flushed as it is written, so a process killed at any moment leaves whole
records behind (a flush per image: a few microseconds against a millisecond of network).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from typing import Any, Iterable, Sequence, TextIO

from ..csvcells import safe_row
from ..inference.results import (
    ERROR,
    NO_FACE,
    ImageResult,
    TrackResult,
    csv_columns,
    csv_rows,
    video_csv_columns,
    video_csv_rows,
)
from ..tasks import Task
from .base import Sink

log = logging.getLogger("facemtl.sinks")


class TableSink(Sink):
    """A few readable lines per image, and one per video track that ends.

    ``frames=False``: tracks only (``facemtl stream``'s default output: one line per person).
    """

    def __init__(self, out: TextIO | None = None, frames: bool = True) -> None:
        self.out = out or sys.stdout
        self.frames = frames

    def write_track(self, track: TrackResult) -> None:
        span = f"frames {track.first_frame}-{track.last_frame}"
        if track.first_time is not None:
            span += f" ({track.first_time:.1f}-{track.last_time:.1f} s)"
        if track.first_wall_time is not None:  # a live source: when the person was there, local time
            span += " at " + "-".join(time.strftime("%H:%M:%S", time.localtime(t))
                                      for t in (track.first_wall_time, track.last_wall_time))
        where = f"{track.source}: " if track.source else ""
        answers = ", ".join(a.short(n) for n, a in track.answers.items())
        conf = f" (confidence {track.confidence:.2f})" if track.confidence is not None else ""
        self.out.write(f"{where}track {track.track}: {span}: {answers}{conf}\n")
        self.out.flush()

    def write(self, result: ImageResult) -> None:
        if not self.frames:
            return
        self.out.write(self._text(result))  # one write and a flush: the image's lines stay together
        self.out.flush()

    @staticmethod
    def _text(result: ImageResult) -> str:
        name = result.name
        if result.status == ERROR:
            return f"{name}: error: {result.error}\n"
        if result.status == NO_FACE:
            return f"{name}: no face found\n"
        n = len(result.faces)
        lines = [f"{name}: {n} face{'s' if n != 1 else ''}\n"]
        for i, f in enumerate(result.faces):
            box = f.box
            where = f"[{box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}]" if box else "whole image"
            score = f" score {f.score:.2f}" if f.score is not None else ""
            lines.append(f"  #{i + 1} {where}{score}: {f.describe()}\n")
        return "".join(lines)


class JsonLinesSink(Sink):
    """One JSON object per image and line (:meth:`ImageResult.to_dict`); tracks as their own lines.

    ``faces=True``: one line per face instead (:meth:`ImageResult.face_lines`), as video
    output writes them, with ``"type": "face"`` beside the tracks' ``"type": "track"``.
    """

    def __init__(self, out: TextIO | None = None, faces: bool = False) -> None:
        self.out = out or sys.stdout
        self.faces = faces

    def write(self, result: ImageResult) -> None:
        if self.faces:
            self.out.writelines(json.dumps(d) + "\n" for d in result.face_lines())
        else:
            self.out.write(json.dumps(result.to_dict()) + "\n")
        self.out.flush()

    def write_track(self, track: TrackResult) -> None:
        self.out.write(json.dumps(track.to_dict()) + "\n")
        self.out.flush()


class _CsvRows:
    """Rows under a header fixed before the first row (from the tasks). A field the header lacks
    (a task whose answers carry more than its columns say) is left out of the file, never a
    failure half-way through it, with one warning naming it. ``unwritten``: fields of the rows
    deliberately not written (no warning)."""

    def __init__(self, out: TextIO, columns: list[str], unwritten: Iterable[str] = ()) -> None:
        self.out = out
        self.writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        self.writer.writeheader()
        self.known = set(columns) | set(unwritten)

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            extra = [k for k in row if k not in self.known]
            if extra:
                log.warning("CSV output has no column for %s (the header comes from the tasks, whose answers carry "
                            "more than their columns say); left out of the file", ", ".join(extra))
                self.known.update(extra)
            self.writer.writerow(safe_row(row))
        self.out.flush()


class CsvSink(Sink):
    """One row per face (one row per image without faces); the header comes from the tasks."""

    def __init__(self, tasks: Sequence[Task], out: TextIO | None = None, ref: str = "file") -> None:
        self.out = out or sys.stdout
        self.ref = ref
        self.rows = _CsvRows(self.out, csv_columns(tasks, ref))

    def write(self, result: ImageResult) -> None:
        self.rows.write(csv_rows(result, self.ref))


class VideoCsvSink(Sink):
    """Video output as CSV: one row per face and frame (:func:`video_csv_columns`); track
    summaries have no place in it (they go to JSON lines or the table)."""

    def __init__(self, tasks: Sequence[Task], out: TextIO | None = None, source: bool = False) -> None:
        self.out = out or sys.stdout
        self.rows = _CsvRows(self.out, video_csv_columns(tasks, source), unwritten=["source"])

    def write(self, result: ImageResult) -> None:
        self.rows.write(video_csv_rows(result))
