"""Retention: delete what is older than N days (``facemtl db purge``, ``serve --retention-days``).

A face in a track goes with its track (once the track's last face is older than the
cutoff), so a track's face count always matches its faces; other faces go by their
own time. Deletes run in slices of :data:`SLICE` rows, each its own transaction, so a
large purge never holds a long lock over writers.
"""

from __future__ import annotations

import math
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .models import Face, Session, Snapshot, Source, Track

SLICE = 5000


def _delete_in_slices(engine: Engine, table: sa.Table, key: sa.Column, where: sa.ColumnElement[bool],
                      counts: dict[str, int], name: str) -> None:
    """Delete the rows matching ``where``, :data:`SLICE` at a time; tracks count the faces going with them."""
    counts.setdefault(name, 0)
    while True:
        with engine.begin() as conn:
            ids = conn.execute(sa.select(key).where(where).limit(SLICE)).scalars().all()
            if not ids:
                return
            if table is Track.__table__:
                counts["faces"] += conn.execute(sa.select(sa.func.count()).where(Face.track_id.in_(ids))).scalar_one()
            counts[name] += conn.execute(sa.delete(table).where(key.in_(ids))).rowcount


def purge(engine: Engine, older_than_days: float, now: float | None = None) -> dict[str, int]:
    """Delete faces, tracks, snapshots, and then finished sessions and idle sources left
    with nothing, older than ``older_than_days``; returns how many of each went."""
    if not (older_than_days >= 0 and math.isfinite(older_than_days)):
        raise ValueError(f"older-than must be a number of days, zero or more, not {older_than_days:g}")
    cutoff = (now if now is not None else time.time()) - older_than_days * 86400
    out: dict[str, int] = {}
    untracked = sa.and_(Face.time < cutoff, Face.track_id.is_(None))
    _delete_in_slices(engine, Face.__table__, Face.id, untracked, out, "faces")
    _delete_in_slices(engine, Track.__table__, Track.id, Track.ended < cutoff, out, "tracks")
    with engine.begin() as conn:
        out["snapshots"] = conn.execute(sa.delete(Snapshot).where(Snapshot.time < cutoff)).rowcount
        # Only ended sessions and sources not running: a writer waiting days on its camera beats
        # nothing, and deleting its rows would make it drop every later result (a writer killed
        # without closing is ended by the next writer on its machine: SessionWriter)
        empty = sa.and_(Session.ended.is_not(None), Session.ended < cutoff,
                        ~sa.exists().where(Face.session_id == Session.id),
                        ~sa.exists().where(Track.session_id == Session.id))
        out["sessions"] = conn.execute(sa.delete(Session).where(empty)).rowcount
        idle = sa.and_(Source.state != "running", sa.func.coalesce(Source.last_seen, Source.created) < cutoff,
                       ~sa.exists().where(Face.source_id == Source.id),
                       ~sa.exists().where(Track.source_id == Source.id))
        out["sources"] = conn.execute(sa.delete(Source).where(idle)).rowcount
    return out

