"""Counts by each task's groups over time buckets (``GET /v1/stats``).

The groups are the ones the task itself gives (:meth:`Task.subgroups`, stored with each
answer as ``grp``): a classification task's classes, a numeric task's coarse groups
(0-19, 20-39, ... years for age). Counted from one covering index
(``answers(raw, time, task, grp)``) for faces, from ``track_answers`` joined to
``tracks`` (by the time each track ended) for tracks.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from .models import Answer, Face, Source, Track, TrackAnswer
from .queries import AnswerFilter

#: The most buckets one request may ask for.
MAX_BUCKETS = 2000


def _bucket(t: Any, size: float, dialect: str) -> Any:
    """``floor(t / size)``: SQLite's CAST truncates (times are positive), PostgreSQL's rounds."""
    x = t / size
    return sa.cast(x, sa.BigInteger) if dialect == "sqlite" else sa.func.floor(x)


def _natural(group: str) -> tuple[float, str]:
    """Groups that start with a number in numeric order (``0-19`` before ``100+``), others by name."""
    m = re.match(r"-?\d+(\.\d+)?", group)
    return (float(m.group(0)) if m else math.inf, group)


def count_groups(conn: sa.Connection, since: float, until: float, bucket: float, of: str = "faces",
                 tasks: Sequence[str] | None = None, source: str | None = None, session: int | None = None,
                 order: dict[str, list[str]] | None = None,
                 answers: Sequence[AnswerFilter] = ()) -> dict[str, Any]:
    """``{"bucket", "since", "until", "of", "tasks": {task: {"groups": [...], "buckets":
    [{"start": t, "counts": {group: n}}]}}}`` for faces (or tracks) in ``[since, until)``.

    Buckets without a face are left out; ``start`` is a multiple of ``bucket`` seconds.
    ``order``: per task, the order of its groups (e.g. its class names); otherwise groups
    that start with a number come in numeric order. ``answers``: count only the faces (or
    tracks) whose answers match every filter, as ``GET /v1/faces`` (``/v1/tracks``) selects them.
    """
    if bucket <= 0:
        raise ValueError("bucket must be a positive number of seconds")
    if until <= since:
        raise ValueError("until must be after since")
    if (until - since) / bucket > MAX_BUCKETS:
        raise ValueError(f"that is over {MAX_BUCKETS} buckets: use a larger bucket or a shorter range")
    if of not in ("faces", "tracks"):
        raise ValueError("of must be 'faces' or 'tracks'")
    d = conn.dialect.name
    source_id = sa.select(Source.id).where(Source.name == source).scalar_subquery() if source is not None else None
    if of == "faces":
        b = _bucket(Answer.time, bucket, d).label("b")
        stmt = sa.select(b, Answer.task, Answer.grp, sa.func.count()).where(
            Answer.raw.is_(False), Answer.time >= since, Answer.time < until)
        if source_id is not None or session is not None:
            face = sa.select(Face.id).where(Face.id == Answer.face_id)
            if source_id is not None:
                face = face.where(Face.source_id == source_id)
            if session is not None:
                face = face.where(Face.session_id == session)
            stmt = stmt.where(face.exists())
        if tasks:
            stmt = stmt.where(Answer.task.in_(list(tasks)))
        for k, f in enumerate(answers):
            a = aliased(Answer, name=f"f{k}")
            stmt = stmt.where(sa.exists().where(a.face_id == Answer.face_id, a.raw.is_(False), f.condition(a)))
        stmt = stmt.group_by(b, Answer.task, Answer.grp)
    else:
        b = _bucket(Track.ended, bucket, d).label("b")
        stmt = sa.select(b, TrackAnswer.task, TrackAnswer.grp, sa.func.count()).join(
            Track, Track.id == TrackAnswer.track_id).where(Track.ended >= since, Track.ended < until)
        if source_id is not None:
            stmt = stmt.where(Track.source_id == source_id)
        if session is not None:
            stmt = stmt.where(Track.session_id == session)
        if tasks:
            stmt = stmt.where(TrackAnswer.task.in_(list(tasks)))
        for k, f in enumerate(answers):
            a = aliased(TrackAnswer, name=f"f{k}")
            stmt = stmt.where(sa.exists().where(a.track_id == TrackAnswer.track_id, f.condition(a)))
        stmt = stmt.group_by(b, TrackAnswer.task, TrackAnswer.grp)
    per_task: dict[str, dict[float, dict[str, int]]] = {}
    for k, task, grp, n in conn.execute(stmt):
        start = float(k) * bucket
        counts = per_task.setdefault(task, {}).setdefault(start, {})
        g = grp if grp is not None else "?"
        counts[g] = counts.get(g, 0) + int(n)
    out: dict[str, Any] = {}
    for task, buckets in sorted(per_task.items()):
        seen = {g for c in buckets.values() for g in c}
        known = [g for g in (order or {}).get(task, []) if g in seen]
        groups = known + sorted(seen - set(known), key=_natural)
        out[task] = {"groups": groups, "buckets": [{"start": s, "counts": c} for s, c in sorted(buckets.items())]}
    return {"bucket": bucket, "since": since, "until": until, "of": of, "tasks": out}
