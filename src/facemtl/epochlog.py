"""``metrics.jsonl``, a run's log: one JSON record per finished epoch.

Epochs are numbered from 1, as the training log prints them (``epoch`` and
``best_epoch`` in each record; ``best_epoch`` in the run's summary and checkpoints is the
same number). Logs written by facemtl 0.1 numbered them from 0; :func:`read_epochs`
renumbers those.

A record is appended when an epoch ends, a moment before the epoch's checkpoints are
saved, so a run killed in between has logged an epoch its ``last.pt`` does not hold.
``--resume`` therefore cuts the log back to the checkpoint (:func:`truncate_epochs`), and
readers keep one record per epoch (the last written) and skip a line cut off mid-write.
No torch here: reports read logs without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .jsonutil import dumps


def read_epochs(path: str | Path) -> list[dict[str, Any]]:
    """The records of the log at ``path``, one per epoch in epoch order, numbered from 1
    (``[]`` when there is no log)."""
    path = Path(path)
    if not path.is_file():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # blank, or cut off by a kill mid-write
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            by_epoch[rec["epoch"]] = rec
    records = [by_epoch[e] for e in sorted(by_epoch)]
    if records and records[0]["epoch"] == 0:  # a facemtl 0.1 log, numbered from 0
        for rec in records:
            rec["epoch"] += 1
            if isinstance(rec.get("best_epoch"), int):
                rec["best_epoch"] += 1
    return records


def append_epoch(path: str | Path, record: dict[str, Any]) -> None:
    """Append one epoch's record."""
    with Path(path).open("a") as f:
        f.write(dumps(record) + "\n")


def truncate_epochs(path: str | Path, epochs: int) -> list[dict[str, Any]]:
    """Rewrite the log at ``path`` with epochs ``1..epochs`` only (one record each, numbered
    from 1); returns what it kept. The file is replaced atomically."""
    path = Path(path)
    kept = [r for r in read_epochs(path) if r["epoch"] <= epochs]
    if path.is_file() or kept:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)
    return kept
