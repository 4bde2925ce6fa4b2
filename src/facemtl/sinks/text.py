"""Text sinks: a readable table, JSON lines, CSV (one row per face; text cells a spreadsheet
would run as a formula get a leading ``'``: :mod:`facemtl.csvcells`).

Each record is flushed as it is written, so a process killed at any moment leaves whole
records behind (a flush per image: a few microseconds against a millisecond of network), and
a file the disk stops taking part-way through a record is cut back to the record before
(:func:`write_whole`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import stat
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
from .base import SINKS, Sink

log = logging.getLogger("facemtl.sinks")


def write_whole(out: TextIO, text: str) -> None:
    """Write ``text`` (whole records) to ``out`` and flush it. Where ``out`` is a file the disk
    stops taking part-way through (full, a quota), the file is cut back to where ``text`` began,
    so it ends in a whole record, and the ``OSError`` is raised (a user test: a full disk left a
    JSON line cut off mid-object, which every reader of the file then failed on).

    The bytes go to the file descriptor in one ``os.write`` loop (the text layer's buffer would
    keep the refused part and write it again at close, after the cut); an ``out`` without one (a
    ``StringIO``, a test's capture) is written as usual."""
    try:
        out.flush()
        fd = out.fileno()
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        out.write(text)
        out.flush()
        return
    encoding = getattr(out, "encoding", None) or "utf-8"
    encoded = text.encode(encoding, getattr(out, "errors", None) or "strict")
    bom = "".encode(encoding)  # (utf-8-sig, utf-16, utf-32 put one before every text they encode)
    if bom and encoded.startswith(bom) and not (regular and st.st_size == 0):
        encoded = encoded[len(bom):]  # the byte-order mark once, at the start of a file, as Python writes it
    data = memoryview(encoded)
    written = 0
    try:
        while written < len(data):
            written += os.write(fd, data[written:])
    except BaseException:  # a full disk, or a signal between two writes of one record
        # Cut back only the bytes of this text, and only while they end the file: the offset after
        # our last write is where they end (a file opened for appending, ``>>``, reads offset 0
        # before its first write, and another process may have appended since: a review found a
        # cut at the offset read before writing would empty such a file). Not handled: another
        # process appending between two partial writes of one record on a disk that is filling.
        if regular and written:
            with contextlib.suppress(OSError):
                end = os.lseek(fd, 0, os.SEEK_CUR)
                if os.fstat(fd).st_size == end:
                    os.ftruncate(fd, end - written)
                    os.lseek(fd, end - written, os.SEEK_SET)
        raise


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
        write_whole(self.out, f"{where}track {track.track}: {span}: {answers}{conf}\n")

    def write(self, result: ImageResult) -> None:
        if not self.frames:
            return
        write_whole(self.out, self._text(result))  # one write: the image's lines stay together

    @staticmethod
    def _text(result: ImageResult) -> str:
        # a newline in a file name split its record over two lines (a user test): control characters escaped
        def printable(text: str) -> str:
            return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

        name = printable(result.name)
        if result.status == ERROR:
            return f"{name}: error: {result.error}\n"
        # which copy is this photo's (x.bmp's may be x.bmp_1.png: AnnotateSink.plan)
        copy = f" (annotated copy: {printable(result.annotated)})" if result.annotated is not None else ""
        if result.status == NO_FACE:
            return f"{name}: no face found{copy}\n"
        n = len(result.faces)
        lines = [f"{name}: {n} face{'s' if n != 1 else ''}{copy}\n"]
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
            write_whole(self.out, "".join(json.dumps(d) + "\n" for d in result.face_lines()))
        else:
            write_whole(self.out, json.dumps(result.to_dict()) + "\n")

    def write_track(self, track: TrackResult) -> None:
        write_whole(self.out, json.dumps(track.to_dict()) + "\n")


class _OutputFile:
    """A file ``--output NAME:FILE`` names: its target checked before the model loads
    (:meth:`check_target`), opened (an earlier file of that name replaced) at the first result or
    at close, so a run abandoned before it began (another --output refused, a stop before the
    first result) leaves that file as it was (a review, a user test). After :meth:`continue_file`
    it is added to instead (``analyze --skip-stored``). ``kind``: the sink's name, for its messages.

    A file name that is no valid UTF-8 (Python's ``\\udcXX`` for each undecodable byte) is written
    as ``--csv`` writes it on standard output, ``\\udcff``: the strict encoder stopped the whole
    output at the first such name, losing every later file's rows (a user test)."""

    kind = ""
    newline: str | None = None

    def __init__(self, target: str) -> None:
        self.check_target(target)
        self.path = target
        self.file: TextIO | None = None
        self.append = False

    def continue_file(self) -> None:
        """Add to the file, where it is there, instead of replacing it: a run going on after a
        stopped one (``analyze --skip-stored``) replaced the stopped run's results with its own,
        and only the database kept them all (a user test). A file that could not be read, which
        such a run tries again, and a path that is missing again, are not recorded a second time
        (:meth:`recorded_before`; a review: each rerun added their records again)."""
        self.append = True

    def _continues(self) -> bool:
        return self.append and os.path.isfile(self.path) and os.path.getsize(self.path) > 0

    def _open(self) -> TextIO:
        if self.file is None:
            go_on = self._continues()
            self.file = open(self.path, "a" if go_on else "w", encoding="utf-8", errors="backslashreplace",
                             newline=self.newline)
            if go_on:
                self._went_on()
        return self.file

    def _went_on(self) -> None:
        """Opened to add to an earlier file: a record cut off mid-line (a kill) is ended first,
        with the file's own line end."""
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) not in (b"\n", b"")
        if cut and self.file is not None:
            write_whole(self.file, "\r\n" if self.newline == "" else "\n")

    def _earlier_files(self) -> Iterable[str]:
        """The ``file`` of each record of the file this run continues."""
        return ()

    def recorded_before(self, result: ImageResult) -> bool:
        """Whether ``result`` is a failure (an unreadable or missing file) that the file this run
        continues records already: said once, not again at each run going on."""
        if result.status != ERROR or not result.file or not self.append:
            return False
        if not hasattr(self, "_before"):
            self._before = set(self._earlier_files()) if self._continues() else set()
        return result.file in self._before

    @classmethod
    def check_target(cls, target: str) -> None:
        """``ValueError`` unless ``target`` names a file (not a folder) that can be written; asked
        before the model loads (:func:`~facemtl.sinks.base.check_outputs`)."""
        from ..system import check_new_file

        if not target:
            raise ValueError(f"the {cls.kind} sink writes a file: --output {cls.kind}:FILE")
        if os.path.isdir(target):
            raise ValueError(f"{target} is a folder; the {cls.kind} sink writes a file")
        if os.path.isfile(target) and os.path.splitext(target)[1].lower() in _media_suffixes():
            raise ValueError(f"{target} is a photo or video, which the {cls.kind} output would replace with text; "
                             f"name a .{cls.kind} file")  # (a user test: it was replaced without a word)
        parent = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(parent):  # (the file is opened where it is named; its folder is not made)
            raise ValueError(f"the folder {parent} does not exist")
        # (the machine's refusal: an OSError, exit 1, naming the file, not its folder)
        check_new_file(target, f"the {cls.kind} output", filename=target)

    def close(self) -> None:
        self._open().close()

    def abandon(self) -> None:
        if self.file is not None:
            self.file.close()


def _media_suffixes() -> set[str]:
    """Suffixes (with the dot) of files that an output file must not replace: photos as facemtl
    reads them, and the usual videos."""
    from ..inference.inputs import image_suffixes

    return image_suffixes() | {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv"}


@SINKS.register("jsonl")
class JsonLinesFile(_OutputFile, JsonLinesSink):
    """``--output jsonl:FILE``: what ``--json`` writes, in ``FILE`` (replaced), beside what the
    command writes on standard output: one line per image (``analyze``), or per face and per
    track (``stream``)."""

    kind = "jsonl"

    def __init__(self, target: str, tasks: Sequence[Task] = ()) -> None:
        _OutputFile.__init__(self, target)

    def write(self, result: ImageResult) -> None:
        if self.recorded_before(result):
            return
        self.faces = getattr(result, "frame", None) is not None  # a video frame: its faces' lines, as stream's
        self.out = self._open()
        super().write(result)

    def _earlier_files(self) -> Iterable[str]:
        with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                with contextlib.suppress(ValueError, AttributeError):
                    yield json.loads(line).get("file")

    def write_track(self, track: TrackResult) -> None:
        self.out = self._open()
        super().write_track(track)


class _CsvRows:
    """Rows under a header fixed before the first row (from the tasks). A field the header lacks
    (a task whose answers carry more than its columns say) is left out of the file, never a
    failure half-way through it, with one warning naming it. ``unwritten``: fields of the rows
    deliberately not written (no warning)."""

    def __init__(self, out: TextIO, columns: list[str], unwritten: Iterable[str] = (), header: bool = True) -> None:
        self.out = out
        self.text = io.StringIO()  # an image's rows are written whole (write_whole)
        self.writer = csv.DictWriter(self.text, fieldnames=columns, extrasaction="ignore")
        if header:  # (not under the rows of a file this continues: CsvFile)
            self.writer.writeheader()
            self._send()
        self.known = set(columns) | set(unwritten)

    def header(self) -> str:
        """The header line these rows go under, as the csv module writes it."""
        self.writer.writeheader()
        return self._take()

    def _take(self) -> str:
        """The text written since the last take (the buffer emptied)."""
        text = self.text.getvalue()
        self.text.seek(0)
        self.text.truncate()
        return text

    def _send(self) -> None:
        write_whole(self.out, self._take())

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            extra = [k for k in row if k not in self.known]
            if extra:
                log.warning("CSV output has no column for %s (the header comes from the tasks, whose answers carry "
                            "more than their columns say); left out of the file", ", ".join(extra))
                self.known.update(extra)
            self.writer.writerow(safe_row(row))
        self._send()


class CsvSink(Sink):
    """One row per face (one row per image without faces); the header comes from the tasks.
    ``annotated``: a last column with the path of each image's annotated copy (``--annotate``)."""

    def __init__(self, tasks: Sequence[Task], out: TextIO | None = None, ref: str = "file",
                 annotated: bool = False) -> None:
        self.out = out or sys.stdout
        self.ref = ref
        self.rows = _CsvRows(self.out, csv_columns(tasks, ref, annotated), unwritten=["annotated"])

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


@SINKS.register("csv")
class CsvFile(_OutputFile, Sink):
    """``--output csv:FILE``: what ``--csv`` writes, in ``FILE`` (replaced): one row per face of
    each image (``analyze``), or per face and frame (``stream``; a first column names the source
    when several are read). Tracks have no rows (their summaries go to ``jsonl``). The header is
    written at the first result, whose kind (a photo, a video frame, of a named source) it
    follows; a run with no result leaves an empty file. After :meth:`record_annotated` (``analyze
    --annotate``) the photos' rows have a last column with the path of each one's annotated copy."""

    kind = "csv"
    newline = ""  # (the csv module writes its own line ends)

    def _earlier_header(self) -> str | None:
        """The header line of the file this run adds to (:meth:`continue_file`), ``None`` when it
        starts a file."""
        if not self._continues():
            return None
        with open(self.path, encoding="utf-8", errors="backslashreplace", newline="") as f:
            return f.readline()

    def _earlier_files(self) -> Iterable[str]:
        with open(self.path, encoding="utf-8", errors="backslashreplace", newline="") as f:
            for row in csv.DictReader(f):
                name = row.get("file") or ""
                yield name[1:] if name.startswith("'") else name  # (safe_row's guard against formulas)

    def __init__(self, target: str, tasks: Sequence[Task] = ()) -> None:
        super().__init__(target)
        self.tasks = list(tasks)
        self.rows: _CsvRows | None = None
        self.video = False
        self.annotated = False

    def record_annotated(self) -> None:
        """Give the photos' rows the ``annotated`` column, as ``--csv`` has with ``--annotate``."""
        self.annotated = True

    def write(self, result: ImageResult) -> None:
        if self.rows is None:
            self.video = getattr(result, "frame", None) is not None
            several = getattr(result, "source", None) is not None  # (a stream labels frames when it reads several)
            columns = video_csv_columns(self.tasks, several) if self.video else \
                csv_columns(self.tasks, annotated=self.annotated)
            earlier = self._earlier_header()
            ours = _CsvRows(io.StringIO(), columns, header=False).header()
            if earlier is not None and earlier != ours:  # (checked before the file is opened: left as it was)
                raise OSError(errno.EINVAL, f"{self.path} holds rows under other columns than this run's (another "
                                            "model, kind of input, --annotate given to one run only, or an older "
                                            "facemtl), so they cannot be continued; name another file")
            # (one source: no column, as --csv)
            self.rows = _CsvRows(self._open(), columns, unwritten=["source", "annotated"], header=earlier is None)
        if self.recorded_before(result):
            return
        self.rows.write(video_csv_rows(result) if self.video else csv_rows(result))
