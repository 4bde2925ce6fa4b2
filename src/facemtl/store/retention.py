"""Retention: delete what is older than N days (``facemtl db purge``, ``serve --retention-days``).

A face in a track goes with its track (once the track's last face is older than the
cutoff, and the track is not one a live writer still follows), so a track's face count
always matches its faces; other faces go by their own time. Deletes run in slices of :data:`SLICE` rows, each its own transaction, so a
large purge never holds a long lock over writers.
"""

from __future__ import annotations

import math
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .models import Face, NoFaceFile, Session, Snapshot, Source, Thumbnail, Track
from .sessions import MISSED_BEATS

SLICE = 5000
#: Seconds a writer may go without beating while it retries a database that went away (DbSink's back-off).
BACKOFF_MAX = 30.0


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


def _live_sessions() -> sa.Select:
    """The sessions whose writer still beats (see ``Store.sources``), with the longest retry
    back-off of a writer waiting out a database outage (30 s) on top: such a writer is alive,
    not killed."""
    return sa.select(Source.session_id).where(
        Source.session_id.is_not(None), Source.state == "running",
        Source.last_seen + MISSED_BEATS * sa.func.coalesce(Source.heartbeat, 2.0) + BACKOFF_MAX >= time.time())


def purge(engine: Engine, older_than_days: float, now: float | None = None) -> dict[str, int]:
    """Delete faces, tracks, snapshots, the records of files without a face, and then finished
    sessions and idle sources left with nothing, older than ``older_than_days``; returns how
    many of each went."""
    if not (older_than_days >= 0 and math.isfinite(older_than_days)):
        raise ValueError(f"older-than must be a number of days, zero or more, not {older_than_days:g}")
    cutoff = (now if now is not None else time.time()) - older_than_days * 86400
    out: dict[str, int] = {}
    untracked = sa.and_(Face.time < cutoff, Face.track_id.is_(None))
    _delete_in_slices(engine, Face.__table__, Face.id, untracked, out, "faces")
    # a track a live writer still follows is left, whatever its last face's time: deleted under
    # it, every later face of the track was refused (a user test: 509 of 1641 faces lost to a
    # purge run during a stream); it goes at a later purge, once closed
    followed = sa.and_(Track.closed.is_(False), Track.session_id.in_(_live_sessions()))
    _delete_in_slices(engine, Track.__table__, Track.id, sa.and_(Track.ended < cutoff, ~followed), out, "tracks")
    with engine.begin() as conn:
        out["snapshots"] = conn.execute(sa.delete(Snapshot).where(Snapshot.time < cutoff)).rowcount
    _delete_in_slices(engine, NoFaceFile.__table__, NoFaceFile.id, NoFaceFile.time < cutoff, out, "no_face_files")
    with engine.begin() as conn:
        # Only ended sessions and sources not running: a writer waiting days on its camera beats
        # nothing, and deleting its rows would make it drop every later result (a writer killed
        # without closing is ended by the next writer on its machine: SessionWriter)
        empty = sa.and_(Session.ended.is_not(None), Session.ended < cutoff,
                        ~sa.exists().where(Face.session_id == Session.id),
                        ~sa.exists().where(Track.session_id == Session.id),
                        ~sa.exists().where(NoFaceFile.session_id == Session.id))
        out["sessions"] = conn.execute(sa.delete(Session).where(empty)).rowcount
        idle = sa.and_(Source.state != "running", sa.func.coalesce(Source.last_seen, Source.created) < cutoff,
                       ~sa.exists().where(Face.source_id == Source.id),
                       ~sa.exists().where(Track.source_id == Source.id))
        out["sources"] = conn.execute(sa.delete(Source).where(idle)).rowcount
    return out



def erase(engine: Engine, source_id: int | None = None, session: int | None = None, track: int | None = None,
          face: int | None = None, since: float | None = None, until: float | None = None,
          dry_run: bool = False) -> dict[str, int]:
    """Delete the faces matching every filter given (``facemtl db delete``: one person's
    track, a session, a source, a time span), as a request to erase someone's data needs.

    A face in a track takes its whole track with it (every face of it, its aggregated
    answers), so a track's face count always matches its faces; a source's live frame goes
    too when its time lies in the span of the faces deleted (it may show them). The faces of
    a track still open in a session whose writer is alive (one of its sources beat within
    three heartbeats) are left (``running``: how many): the writer would add to the track
    deleted under it; stop it first. A killed writer's session, its tracks open for good, is
    no such session. An id that names nothing is a ``ValueError`` (an erasure must not pass
    for done). At least one filter is needed (``ValueError``: :func:`purge` deletes
    everything older). ``dry_run``: count, delete nothing. Returns how many faces, tracks,
    thumbnails and live frames went (or would go).
    """
    given = [x is not None for x in (source_id, session, track, face, since, until)]
    if not any(given):
        raise ValueError("say what to delete: --source, --session, --track, --face, --since or --until "
                         "(everything older than some days: facemtl db purge)")
    if since is not None and until is not None and since > until:  # matched nothing and read "done" (a user test)
        raise ValueError("--since is after --until: that span holds no time, so nothing would be deleted")
    where = []
    if source_id is not None:
        where.append(Face.source_id == source_id)
    if session is not None:
        where.append(Face.session_id == session)
    if track is not None:
        where.append(Face.track_id == track)
    if face is not None:
        where.append(Face.id == face)
    if since is not None:
        where.append(Face.time >= since)
    if until is not None:
        where.append(Face.time <= until)
    matching = sa.and_(*where)
    held = sa.select(Track.id).where(Track.closed.is_(False), Track.session_id.in_(_live_sessions()))
    done = sa.and_(matching, sa.or_(Face.track_id.is_(None), Face.track_id.not_in(held)))
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for what, model, ident in (("track", Track, track), ("face", Face, face), ("session", Session, session)):
            if ident is not None and conn.execute(sa.select(model.id).where(model.id == ident)).first() is None:
                raise ValueError(f"there is no {what} {ident} (never stored, or deleted already)")
        out["running"] = conn.execute(sa.select(sa.func.count()).select_from(Face)
                                      .where(matching, Face.track_id.in_(held))).scalar_one()
        tracks = sa.select(Face.track_id).where(done, Face.track_id.is_not(None)).distinct()
        gone = sa.or_(sa.and_(done, Face.track_id.is_(None)), Face.track_id.in_(tracks))  # with their whole tracks
        span = conn.execute(sa.select(Face.source_id, sa.func.min(Face.time), sa.func.max(Face.time))
                            .where(gone).group_by(Face.source_id)).all()
        # the faces' crops go with them (a cascade): counted first, so that the answer says so
        out["thumbnails"] = conn.execute(sa.select(sa.func.count()).select_from(Thumbnail).where(
            Thumbnail.face_id.in_(sa.select(Face.id).where(gone)))).scalar_one()
        if dry_run:
            out["tracks"] = conn.execute(sa.select(sa.func.count()).select_from(tracks.subquery())).scalar_one()
            out["faces"] = conn.execute(sa.select(sa.func.count()).select_from(Face).where(gone)).scalar_one()
    snapshots = sa.or_(*[sa.and_(Snapshot.source_id == sid, Snapshot.time >= lo, Snapshot.time <= hi + 1.0)
                         for sid, lo, hi in span]) if span else sa.false()
    if dry_run:
        with engine.connect() as conn:
            out["snapshots"] = conn.execute(sa.select(sa.func.count()).select_from(Snapshot)
                                            .where(snapshots)).scalar_one()
        return out
    out["faces"] = 0
    _delete_in_slices(engine, Track.__table__, Track.id, Track.id.in_(tracks), out, "tracks")
    _delete_in_slices(engine, Face.__table__, Face.id, sa.and_(done, Face.track_id.is_(None)), out, "faces")
    with engine.begin() as conn:
        out["snapshots"] = conn.execute(sa.delete(Snapshot).where(snapshots)).rowcount
    return out
