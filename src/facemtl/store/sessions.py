"""Sessions whose writer was killed before it closed them (``kill -9``, a power cut): found and
ended by the next writer on the same machine (:class:`~facemtl.store.writer.SessionWriter`)."""

from __future__ import annotations

import logging
import os
import socket

import sqlalchemy as sa

from ..system import process_start
from .models import Answer, Face, Session, Source, Track, TrackAnswer

log = logging.getLogger("facemtl.store")

#: A running source is called ``silent`` after this many missed heartbeats.
MISSED_BEATS = 3


def beats_on_time(last_seen: float | None, heartbeat: float, now: float) -> bool:
    """Whether a source last seen at ``last_seen`` (seconds since the epoch) has missed fewer than
    :data:`MISSED_BEATS` of its ``heartbeat`` (seconds) by ``now``: its writer is alive."""
    return last_seen is not None and now - last_seen <= MISSED_BEATS * heartbeat


def last_heard(started: float, *times: float | None) -> float:
    """When a session's writer was last heard of (seconds since the epoch): the latest of its
    start and ``times`` (its sources' beats, its last face), those unknown left out. ``facemtl db
    sessions`` shows it and ``db end`` judges a writer gone by it (:data:`GONE_AFTER`)."""
    return max(t for t in (started, *times) if t is not None)


def end_dead_sessions(conn: sa.Connection, names: list[str], now: float, heartbeat: float) -> None:
    """End the sessions of writers on this machine that were killed (``kill -9``, a power
    cut) before :meth:`SessionWriter.close`. Each gets ``ended`` (its last face's time, or its
    start), its open tracks are closed and its sources ``stopped``; before, they stayed open for
    good (``/v1/tracks?closed=false`` listed the killed run's tracks forever, and retention
    never took the session). A track closed so answers what its last stored face answered
    (a face's answers are its track's so far); its ``confidence``, which the stream works out
    when a track ends, stays unknown.

    A session is taken for dead when its process no longer runs here (:func:`_alive`: a process
    that holds its number now but started at another time is another process, as a container
    restarted after a kill is process 1 again) and either this writer takes over one of its
    sources (``names``: a stream restarted under the same name) or none of its sources has
    beaten for three heartbeats: machines that share a host name (containers with a fixed one)
    record process numbers this machine cannot see, and a live writer there keeps beating. A
    session of this very process's number, started at another time, is ended only once silent:
    an earlier life of this process, or a sibling container of the same host name and number
    that writes on (a review: taking over a shared name such as ``analyze@host`` ended it)."""
    host, me = socket.gethostname(), os.getpid()
    open_here = conn.execute(sa.select(Session.id, Session.pid, Session.process_start, Session.started).where(
        Session.ended.is_(None), Session.host == host)).all()
    for sid, pid, start, started in open_here:
        if _alive(pid, start):  # (this process's own sessions among them)
            continue
        beats = conn.execute(sa.select(Source.name, Source.last_seen, Source.heartbeat)
                             .where(Source.session_id == sid)).all()
        taken = pid != me and any(name in names for name, _, _ in beats)
        if not taken and any(beats_on_time(seen, beat or heartbeat, now) for _, seen, beat in beats):
            continue
        end_session(conn, sid, started)
        log.warning("session %d (process %s on this machine) ended without closing: it is closed now", sid, pid)


def last_face_time(conn: sa.Connection, sid: int) -> float | None:
    """The time of session ``sid``'s last stored face, ``None`` when it stored none."""
    return conn.execute(sa.select(sa.func.max(Face.time)).where(Face.session_id == sid)).scalar()


def end_session(conn: sa.Connection, sid: int, started: float, last: float | None = None) -> dict[str, int]:
    """End session ``sid`` whose writer is gone: ``ended`` its last face's time (``last``, read
    when not given) or its start, its open tracks answered (:func:`_answer_open_tracks`) and
    closed, its running sources ``stopped``. Returns how many tracks and sources it closed."""
    last = last if last is not None else last_face_time(conn, sid)
    conn.execute(sa.update(Session).where(Session.id == sid).values(ended=max(last or started, started)))
    _answer_open_tracks(conn, sid)
    tracks = conn.execute(sa.update(Track).where(Track.session_id == sid, Track.closed.is_(False))
                          .values(closed=True)).rowcount
    sources = conn.execute(sa.update(Source).where(Source.session_id == sid, Source.state == "running")
                           .values(state="stopped", fps=None)).rowcount
    return {"tracks_closed": tracks, "sources_stopped": sources}


def _answer_open_tracks(conn: sa.Connection, sid: int) -> None:
    """Give each open track of session ``sid`` that has no answers of its own the (smoothed)
    answers of its last stored face: a killed writer never wrote its track lines."""
    answered = sa.exists().where(TrackAnswer.track_id == Face.track_id)  # (an anti-join: indexed)
    last = conn.execute(sa.select(Face.track_id, sa.func.max(Face.id)).where(
        Face.track_id.in_(sa.select(Track.id).where(Track.session_id == sid, Track.closed.is_(False))),
        ~answered).group_by(Face.track_id)).all()
    columns = ["value_text", "value_num", "probability", "lo", "hi", "probabilities", "grp"]
    for tid, fid in last:
        rows = sa.select(sa.literal(tid), Answer.task, *(getattr(Answer, c) for c in columns)).where(
            Answer.face_id == fid, Answer.raw.is_(False))
        conn.execute(sa.insert(TrackAnswer).from_select(["track_id", "task", *columns], rows))


def _alive(pid: int | None, start: str | None = None) -> bool:
    """Whether process ``pid`` runs on this machine (``None``: unknown, taken as alive) and is
    the one that started at ``start`` (:func:`~facemtl.system.process_start`; ``None``, as
    sessions written before schema 0005 have it: any process of that number). A number held by
    a process that started at another time belongs to another process: a container restarted
    after a kill runs as process 1 again, and its killed session read alive for good (a
    review). Without ``start`` (or where it cannot be read), by the number alone; POSIX only:
    on Windows ``os.kill`` would end the process, so there every process counts as alive."""
    if pid is None:
        return True
    if start is not None:
        now = process_start(pid)
        if now is not None:
            return now == start
    if os.name != "posix":
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
