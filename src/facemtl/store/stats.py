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
from typing import Any, Callable, Sequence

import numpy as np
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
                 answers: Sequence[AnswerFilter] = (),
                 regroup: dict[str, Callable[[np.ndarray], np.ndarray | None]] | None = None) -> dict[str, Any]:
    """``{"bucket", "since", "until", "of", "tasks": {task: {"groups": [...], "buckets":
    [{"start": t, "counts": {group: n}}]}}}`` for faces (or tracks) in ``[since, until)``.

    Buckets without a face are left out; ``start`` is a multiple of ``bucket`` seconds.
    ``order``: per task, the order of its groups (e.g. its class names); otherwise groups
    that start with a number come in numeric order. ``answers``: count only the faces (or
    tracks) whose answers match every filter, as ``GET /v1/faces`` (``/v1/tracks``) selects them.
    ``regroup``: per numeric task, the groups of values (:meth:`Task.subgroups`) of the model
    the counts are for: where the stored groups are not all its ``order`` (faces an earlier
    model of the task's name stored in other bands: 20-39 and 40+ beside 0-19 ... 60+), that
    task is counted again by value and every number put in these groups (one covering index
    serves the usual case, one model's bands); a class answer or a named level keeps its name.
    """
    if bucket <= 0:
        raise ValueError("bucket must be a positive number of seconds")
    if until <= since:
        raise ValueError("until must be after since (until is now where it is not given)")  # (a user test)
    if (until - since) / bucket > MAX_BUCKETS:
        raise ValueError(f"that is over {MAX_BUCKETS} buckets: use a larger bucket or a shorter range")
    if of not in ("faces", "tracks"):
        raise ValueError("of must be 'faces' or 'tracks'")
    where = dict(since=since, until=until, bucket=bucket, of=of, source=source, session=session, answers=answers)
    per_task: dict[str, dict[float, dict[str, int]]] = {}
    for k, task, grp, n in conn.execute(_counts(conn, "grp", tasks=tasks, **where)):
        counts = per_task.setdefault(task, {}).setdefault(float(k) * bucket, {})
        g = grp if grp is not None else "?"
        counts[g] = counts.get(g, 0) + int(n)
    for task, by_value in (regroup or {}).items():
        seen = {g for c in per_task.get(task, {}).values() for g in c}
        if task not in per_task or seen <= set((order or {}).get(task) or ()):
            continue
        rows = conn.execute(_counts(conn, "value_num", tasks=[task], **where)).all()
        groups = by_value(np.array([np.nan if v is None else float(v) for _, _, v, _, _, _ in rows], float))
        if groups is None:
            continue
        regrouped: dict[float, dict[str, int]] = {}
        for (k, _, _, grp, named, n), g in zip(rows, groups):
            # an earlier model's class answers of the task's name keep their class (a value there is its
            # index), and its named levels their name (a rank of [low, high] is not one of this model's:
            # `high` was counted as `mild`)
            g = (grp if grp is not None else "?") if named else str(g)
            counts = regrouped.setdefault(float(k) * bucket, {})
            counts[g] = counts.get(g, 0) + int(n)
        per_task[task] = regrouped
    out: dict[str, Any] = {}
    for task, buckets in sorted(per_task.items()):
        seen = {g for c in buckets.values() for g in c}
        known = [g for g in (order or {}).get(task, []) if g in seen]
        groups = known + sorted(seen - set(known), key=_natural)
        out[task] = {"groups": groups, "buckets": [{"start": s, "counts": c} for s, c in sorted(buckets.items())]}
    return {"bucket": bucket, "since": since, "until": until, "of": of, "tasks": out}


def _counts(conn: sa.Connection, column: str, since: float, until: float, bucket: float, of: str,
            tasks: Sequence[str] | None, source: str | None, session: int | None,
            answers: Sequence[AnswerFilter]) -> Any:
    """``(bucket, task, <column>, count)`` rows: the faces' (or tracks') answers counted by their
    stored group (``column`` ``grp``); or by value (``value_num``), as ``(bucket, task, value,
    grp, whether a named answer, count)``."""
    d = conn.dialect.name
    source_id = sa.select(Source.id).where(Source.name == source).scalar_subquery() if source is not None else None
    if of == "faces":
        b = _bucket(Answer.time, bucket, d).label("b")
        cols = _columns(Answer, column)
        stmt = sa.select(b, Answer.task, *cols, sa.func.count()).where(
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
        return stmt.group_by(b, Answer.task, *cols)
    b = _bucket(Track.ended, bucket, d).label("b")
    cols = _columns(TrackAnswer, column)
    stmt = sa.select(b, TrackAnswer.task, *cols, sa.func.count()).join(
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
    return stmt.group_by(b, TrackAnswer.task, *cols)


def _columns(table: Any, column: str) -> list[Any]:
    """What :func:`_counts` groups by: the stored group, or the value with the group and whether the
    answer is named beside it: a class (it carries the chosen class's probability) or a number with
    a level's name (``value_text``), whose group is that name."""
    if column == "grp":
        return [table.grp]
    named = sa.case((sa.and_(table.probability.is_(None), table.value_text.is_(None)), 0), else_=1).label("named")
    return [table.value_num, table.grp, named]
