"""``facemtl db export {faces,tracks} --format {csv,jsonl}``: every stored row, in pages.

JSON lines carry the records the API returns (``GET /v1/faces``); CSV flattens them
like ``analyze --csv``: one column per task, ``<task>_interval`` as ``lo-hi`` (``[lo, hi]``
with a negative end: :func:`~facemtl.inference.results.interval_text`), ``<task>_p_<class>``
per class, and the frame's own answers as ``raw_<column>``. The columns come from the tasks
the database knows; the columns of a stored task this process cannot build (a plugin's task
type whose package is not imported) come from the records and go last, with a warning, so
no stored answer is left out. The store keeps
faces, not images, so there are no ``status``, ``error`` or ``face`` columns: an image
without a face, or one that could not be read, has no row.

A text cell that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return: a file or source name is anyone's text) gets a
leading ``'`` in CSV, as OWASP advises against CSV injection; JSON lines keep the text as it is.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from typing import Any, Iterable, Iterator, Sequence, TextIO

from ..csvcells import safe_cell
from ..inference.results import csv_cells, csv_columns
from ..tasks import Task

log = logging.getLogger("facemtl.store")

#: Fields of the records that CSV leaves out (JSON lines keep them).
NOT_IN_CSV = {"landmarks", "thumbnail", "type"}
FACE_COLUMNS = ["id", "time", "source", "session", "track_id", "track", "frame", "media_time", "file",
                "x1", "y1", "x2", "y2", "score", "model_name", "model_version"]
TRACK_COLUMNS = ["id", "source", "session", "track", "first_frame", "last_frame", "frames", "faces", "first_time",
                 "last_time", "started", "ended", "confidence", "closed"]


def task_columns(tasks: Sequence[Task]) -> list[str]:
    """The per-task CSV columns ``analyze --csv`` writes for ``tasks``."""
    fixed = set(csv_columns([]))
    return [c for c in csv_columns(tasks) if c not in fixed]


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A face or track record as one CSV row (see the module doc)."""
    row: dict[str, Any] = {}
    for key, v in record.items():
        if key == "box":
            row.update(zip(("x1", "y1", "x2", "y2"), v or [None] * 4))
        elif key == "raw":
            row.update({f"raw_{k}": x for k, x in flatten(v).items()})
        elif key in NOT_IN_CSV:
            continue
        elif isinstance(v, bool):  # as JSON writes it (Python's str() says True)
            row[key] = "true" if v else "false"
        else:  # an answer's fields as analyze --csv writes them (an interval [lo, hi] as lo-hi)
            row.update({c: x if isinstance(v, list) else safe_cell(x) for c, x in csv_cells(key, v).items()})
    return row


def write_records(records: Iterator[dict[str, Any]], out: TextIO, fmt: str, kind: str, tasks: Sequence[Task],
                  raw: bool = True, complete: bool = False) -> int:
    """Write ``records`` (faces or tracks) to ``out`` as ``csv`` or ``jsonl``; returns how many.

    ``complete``: ``tasks`` are every task the records answer, so CSV rows are written as they
    are read; otherwise they are held in a temporary file until the columns no task names are
    known (the header comes first)."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown export format {fmt!r}; choose csv or jsonl")
    n = 0
    if fmt == "jsonl":
        for r in records:
            out.write(json.dumps(r) + "\n")
            n += 1
        return n
    per_task = task_columns(tasks)
    cols = (FACE_COLUMNS if kind == "faces" else TRACK_COLUMNS) + per_task
    if kind == "faces" and raw:
        cols += [f"raw_{c}" for c in per_task]
    if complete:  # every stored task is known here: its columns are the header, rows stream out as read
        return _write_csv(out, cols, map(flatten, records))
    known, extra = set(cols), {}  # dict: the columns no known task names, in the order first met
    with tempfile.TemporaryFile("w+", encoding="utf-8") as held:  # the header needs them all first
        for r in records:
            row = flatten(r)
            extra.update((k, None) for k in row if k not in known and (raw or not k.startswith("raw_")))
            held.write(json.dumps(row) + "\n")
        if extra:
            log.warning("the columns %s hold stored answers of no task this process knows (a task type it cannot "
                        "build: see above); they are exported as stored, after the others", ", ".join(extra))
        held.seek(0)
        return _write_csv(out, cols + list(extra), map(json.loads, held))


def _write_csv(out: TextIO, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    """The header ``columns`` and ``rows`` (fields no column names are left out); how many rows."""
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n
