"""Reading faces and tracks: filters, keyset paging, and the records the API returns.

Every value a client sends is a bound parameter (SQLAlchemy Core expressions), never
text in the SQL. Filters on answers are ``EXISTS`` lookups on the ``answers`` indexes.

The one place SQLite needs help: it keeps no value histograms, so it cannot tell
whether "age 80-100" matches 1 % of faces or 60 %. PostgreSQL plans that well by
itself. On SQLite the query counts each answer filter's matches on its index, capped
at :data:`COUNT_CAP` (a few milliseconds), and when one filter is rare enough it drives
the query (``id IN`` that filter's faces, then sort); otherwise faces are read newest
first through the time index and checked against the filters until a page is full
(measured figures: the README's load test, ``scripts/load_test_server.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from .models import Answer, Face, Session, Source, Thumbnail, Track, TrackAnswer
from .rows import answer_fields, stored_decimals


def parse_time(text: str) -> float:
    """A time as the API's ``since`` / ``until`` and ``db export --since/--until`` take it, in
    seconds since the epoch: a number is taken as it is (a datetime would round it to
    microseconds, and a face stored at exactly ``since`` would be left out), anything else is
    read as ISO 8601 (UTC unless it says). ``ValueError`` with what was expected (``"a time in
    ISO 8601 or ..."``), for the caller to prefix with the parameter's name."""
    from datetime import datetime, timezone

    try:
        t = float(text)
    except ValueError:
        try:
            d = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"a time in ISO 8601 or seconds since the epoch, not {text[:40]!r}") from None
        return (d if d.tzinfo is not None else d.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t):
        raise ValueError("a finite number of seconds since the epoch")
    if abs(t) >= 1e11:  # past the year 5000 in seconds: milliseconds (JavaScript's Date.now()), read as none
        raise ValueError(f"seconds since the epoch; {text[:40]} looks like milliseconds (divide by 1000)")
    return t

#: How far SQLite counts a filter's matches before calling it common (see the module doc).
COUNT_CAP = 4000
#: Faces a page may hold.
MAX_LIMIT = 500
#: The largest id a row can have (64-bit signed integers on SQLite and PostgreSQL).
MAX_ID = 2**63 - 1

_CURSOR = re.compile(r"^(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)_(\d+)$")


@dataclass
class AnswerFilter:
    """One task's filter: its class is one of ``classes``, or its value lies in ``[lo, hi]``."""

    task: str
    classes: list[str] | None = None
    lo: float | None = None
    hi: float | None = None

    def condition(self, table: Any) -> sa.ColumnElement[bool]:
        cond = [table.task == self.task]
        if self.classes is not None:
            cond.append(table.value_text.in_(self.classes))
        if self.lo is not None or self.hi is not None:  # numbers only: a class answer's value_num is its index
            cond.append(table.probability.is_(None))
        if self.lo is not None:
            cond.append(table.value_num >= self.lo)
        if self.hi is not None:
            cond.append(table.value_num <= self.hi)
        return sa.and_(*cond)


def filter_classes(task: Any, stored: dict[str, list[str]] | None = None) -> list[str] | None:
    """The class names a filter on ``task`` takes: its own, then any other that ``stored`` (see
    :func:`stored_class_names`: an earlier model's) gives for its name; ``None`` for a numeric task."""
    names = task.class_names()
    if names is None:
        return None
    return names + [n for n in (stored or {}).get(task.name, []) if n not in names]


def bound_value(task: Any, text: str) -> float | None:
    """A range bound as typed (``?severity_min=mild``, ``--where severity_min=1``): a finite
    number in the task's units, or on a named scale (:meth:`Task.level_names`, which name the
    ranks 0..K-1) a level's name, case aside, read as its rank; ``None`` if it is neither."""
    levels = task.level_names()
    if levels:
        folded = [x.casefold() for x in levels]
        if text.strip().casefold() in folded:
            return float(folded.index(text.strip().casefold()))
    try:
        number = float(text)
    except ValueError:
        return None
    return number if abs(number) != float("inf") and number == number else None


def parse_answer_filters(terms: Sequence[str], tasks: Sequence[Any],
                         stored: dict[str, list[str]] | None = None) -> list[AnswerFilter]:
    """``TASK=CLASS`` (repeat for several classes: any matches), ``TASK_min=X``, ``TASK_max=X``
    (a number, or a named scale's level: :func:`bound_value`): the API's filter parameters as
    ``db export --where`` takes them. ``ValueError`` in one sentence for an unknown task, a
    class it does not have, or a bound that is neither.
    ``stored``: more class names per task (:func:`stored_class_names`: an earlier model's)."""
    by_name = {t.name: t for t in tasks}
    classes: dict[str, list[str]] = {}
    bounds: dict[str, dict[str, float]] = {}
    for term in terms:
        key, sep, value = term.partition("=")
        key, value = key.strip(), value.strip()
        name, _, end = key.rpartition("_") if key.endswith(("_min", "_max")) and key not in by_name else (key, "", "")
        task = by_name.get(name)
        if not sep or task is None:
            raise ValueError(f"--where {term!r}: write TASK=CLASS, TASK_min=X or TASK_max=X with a stored task "
                             f"({', '.join(by_name) or 'none stored'})")
        names = filter_classes(task, stored)
        if not end:
            if names is None:
                levels = task.level_names()
                example = f"{name}_min={levels[1]} / {name}_max={levels[1]}" if levels else f"{name}_min / {name}_max"
                raise ValueError(f"--where {term!r}: task {name!r} has values, not classes: use {example}")
            if value not in names:
                raise ValueError(f"--where {term!r}: task {name!r} has the classes {', '.join(names)}")
            classes.setdefault(name, []).append(value)
        else:
            number = bound_value(task, value) if names is None else None
            if number is None:
                levels = task.level_names()
                raise ValueError(f"--where {term!r}: task {name!r} has classes: use {name}=CLASS" if names is not None
                                 else f"--where {term!r}: {key} takes a level ({', '.join(levels)}) or its rank"
                                 if levels else f"--where {term!r}: {key} takes a number in {name}'s units")
            if end in bounds.get(name, {}):  # (the last one was kept without a word: a user test)
                raise ValueError(f"--where {term!r}: {key} is given twice; give each bound once")
            bounds.setdefault(name, {})[end] = number
    return ([AnswerFilter(n, classes=c) for n, c in classes.items()]
            + [AnswerFilter(n, lo=b.get("min"), hi=b.get("max")) for n, b in bounds.items()])


@dataclass
class Query:
    """What a client asks for: a time range (seconds since the epoch), a source name, a
    session, a track (faces only), answer filters, a page size and the cursor of the page
    before."""

    since: float | None = None
    until: float | None = None
    source: str | None = None
    session: int | None = None
    track: int | None = None
    closed: bool | None = None  # tracks only
    answers: list[AnswerFilter] = field(default_factory=list)
    limit: int = 50
    cursor: str | None = None
    #: Faces only: those stored after the face of this id, in the order they were stored (a
    #: client following new results; ``since`` selects by capture time, and a writer's batch
    #: can commit after faces captured later than it were read).
    after: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.after is not None and self.cursor is not None:
            raise ValueError("after and cursor cannot be combined: after pages by itself (the last id seen)")
        if self.after is not None and not 0 <= self.after <= MAX_ID:
            raise ValueError("after must be a face id, 0 or more")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since is after until")
        for f in self.answers:
            if f.lo is not None and f.hi is not None and f.lo > f.hi:
                raise ValueError(f"{f.task}: the lower bound {f.lo:g} is above the upper bound {f.hi:g}")

    def position(self) -> tuple[float, int] | None:
        """The cursor as ``(time, id)``; ``ValueError`` if it is not one this API gave out."""
        if self.cursor is None:
            return None
        m = _CURSOR.match(self.cursor)
        t, ident = (float(m.group(1)), int(m.group(2))) if m else (math.nan, -1)
        if not (math.isfinite(t) and 0 <= ident <= MAX_ID):  # ids are 64-bit integers, times finite
            raise ValueError("cursor is not one this API returned (use the 'next' of the page before)")
        return t, ident


class PastNewest(ValueError):
    """``after`` names an id past the newest face: a follower must start again (HTTP 409)."""


def make_cursor(t: float, ident: int) -> str:
    return f"{t!r}_{ident}"


def _rare_filter(conn: sa.Connection, filters: Sequence[AnswerFilter]) -> int | None:
    """On SQLite, the index of the answer filter to drive the query from, or ``None`` to
    read faces newest first (see the module doc)."""
    total = conn.execute(sa.select(sa.select(sa.func.max(Face.id)).scalar_subquery()
                                   - sa.select(sa.func.min(Face.id)).scalar_subquery() + 1)).scalar() or 1
    counts = []
    for f in filters:
        hits = sa.select(sa.literal(1)).where(Answer.raw.is_(False), f.condition(Answer)).limit(COUNT_CAP).subquery()
        counts.append(conn.execute(sa.select(sa.func.count()).select_from(hits)).scalar_one())
    joint = 1.0
    for n in counts:
        joint *= max(n, 1) / total
    scan_cost = 3 * 50 / joint  # faces read newest first until a page of 50 is full (3x per face: index probes)
    k = min(range(len(counts)), key=counts.__getitem__)
    return k if counts[k] < COUNT_CAP and counts[k] < scan_cost else None


def _common_where(q: Query, model: Any, start: Any, end: Any) -> list[sa.ColumnElement[bool]]:
    """The filters faces and tracks share: times overlapping ``[since, until]`` (``start`` and
    ``end``: the row's first and last time), source, session, and the cursor on ``(end, id)``."""
    where: list[sa.ColumnElement[bool]] = []
    if q.since is not None:
        where.append(end >= q.since)
    if q.until is not None:
        where.append(start <= q.until)
    if q.source is not None:
        where.append(model.source_id == sa.select(Source.id).where(Source.name == q.source).scalar_subquery())
    if q.session is not None:
        where.append(model.session_id == q.session)
    pos = q.position()
    if pos is not None:
        # tracks' ids are 32-bit on PostgreSQL: every id is below a larger cursor id
        below = model.id < pos[1] if model is not Track or pos[1] <= 2**31 - 1 else sa.true()
        where.append(sa.or_(end < pos[0], sa.and_(end == pos[0], below)))
    return where


def _face_where(conn: sa.Connection, q: Query) -> list[sa.ColumnElement[bool]]:
    where = _common_where(q, Face, Face.time, Face.time)
    if q.track is not None:
        where.append(Face.track_id == q.track)
    drive = _rare_filter(conn, q.answers) if q.answers and conn.dialect.name == "sqlite" else None
    for k, f in enumerate(q.answers):
        a = aliased(Answer, name=f"a{k}")
        if k == drive:
            where.append(Face.id.in_(sa.select(a.face_id).where(a.raw.is_(False), f.condition(a))))
        else:
            where.append(sa.exists().where(a.face_id == Face.id, a.raw.is_(False), f.condition(a)))
    return where


def _source_names(conn: sa.Connection, ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(ids))
    if not ids:
        return {}
    return dict(conn.execute(sa.select(Source.id, Source.name).where(Source.id.in_(ids))).all())


def face_records(conn: sa.Connection, rows: Sequence[Any], thumbnails: bool = True) -> list[dict[str, Any]]:
    """API records of ``faces`` rows: where and when, the box, every task's fields as
    ``analyze --json`` prints them and, for faces with a frame's own answers beside
    smoothed ones, those under ``raw`` (all from the face's ``fields`` document)."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    with_thumb = set(conn.execute(sa.select(Thumbnail.face_id).where(Thumbnail.face_id.in_(ids))).scalars()) \
        if thumbnails else set()
    sources = _source_names(conn, (r.source_id for r in rows))
    track_ids = {r.track_id for r in rows if r.track_id is not None}
    tracks = {}
    if track_ids:
        tracks = dict(conn.execute(sa.select(Track.id, Track.track).where(Track.id.in_(track_ids))).all())
    out = []
    for r in rows:
        rec: dict[str, Any] = {
            "id": r.id, "time": r.time, "source": sources.get(r.source_id), "session": r.session_id,
            "track_id": r.track_id, "track": tracks.get(r.track_id), "frame": r.frame, "media_time": r.media_time,
            "file": r.file, "box": None if r.x1 is None else [r.x1, r.y1, r.x2, r.y2], "score": r.score,
            "landmarks": r.landmarks, "model_name": r.model_name, "model_version": r.model_version,
            "thumbnail": r.id in with_thumb,
        }
        rec.update({k: v for k, v in (r.fields or {}).items() if k not in rec})  # a task never hides a face's own field
        out.append(rec)
    return out


def find_faces(conn: sa.Connection, q: Query) -> tuple[list[dict[str, Any]], str | None]:
    """A page of faces, newest first, and the cursor of the next page (``None`` at the end);
    with ``q.after``, the faces stored after that id, in the order stored (no cursor: the
    next call passes the last id). Ids follow commit order: SQLite writers queue, and
    PostgreSQL writers take one lock per transaction (:class:`~facemtl.store.writer.SessionWriter`),
    and no id is given out twice (SQLite's tables are ``AUTOINCREMENT``). An ``after`` past the
    newest id (another database, or one emptied before schema 0003) is :class:`PastNewest`."""
    if q.after is not None:
        stmt = sa.select(Face).where(Face.id > q.after, *_face_where(conn, q)).order_by(Face.id).limit(q.limit)
        rows = conn.execute(stmt).all()
        if not rows and q.after > 0:
            newest = conn.execute(sa.select(sa.func.max(Face.id))).scalar()
            if newest is None or q.after > newest:
                raise PastNewest(f"after={q.after} is past the newest face (id {newest or 0}): the faces after it were "
                                 "deleted (retention) or this is another database; start again from after=0")
        return face_records(conn, rows), None
    stmt = sa.select(Face).where(*_face_where(conn, q)).order_by(Face.time.desc(), Face.id.desc()).limit(q.limit + 1)
    rows = conn.execute(stmt).all()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    nxt = make_cursor(rows[-1].time, rows[-1].id) if more else None
    return face_records(conn, rows), nxt


def _track_where(q: Query) -> list[sa.ColumnElement[bool]]:
    where = _common_where(q, Track, Track.started, Track.ended)
    if q.closed is not None:
        where.append(Track.closed.is_(q.closed))
    for k, f in enumerate(q.answers):
        a = aliased(TrackAnswer, name=f"t{k}")
        closed = sa.exists().where(a.track_id == Track.id, f.condition(a))
        # a track with no aggregate yet (still followed, or its writer died) is filtered on what
        # track_records shows for it, its latest face's answers (a user test: every open track was
        # left out of ?closed=false&gender=female, and of db export --where)
        agg, face, fa = (aliased(TrackAnswer, name=f"n{k}"), aliased(Face, name=f"l{k}"),
                         aliased(Answer, name=f"a{k}"))
        latest = sa.select(sa.func.max(face.id)).where(face.track_id == Track.id).correlate(Track).scalar_subquery()
        still_open = sa.and_(~sa.exists().where(agg.track_id == Track.id),
                             sa.exists().where(fa.face_id == latest, fa.raw.is_(False), f.condition(fa)))
        where.append(sa.or_(closed, still_open))
    return where


def track_records(conn: sa.Connection, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """API records of ``tracks`` rows. A closed track carries its aggregated answers; an
    open one (still followed, or its writer died) the smoothed answers of its latest face."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    answers: dict[int, list[Any]] = {}
    for a in conn.execute(sa.select(TrackAnswer).where(TrackAnswer.track_id.in_(ids)).order_by(TrackAnswer.task)):
        answers.setdefault(a.track_id, []).append(a)
    latest: dict[int, dict[str, Any]] = {}
    open_ids = [r.id for r in rows if r.id not in answers]
    if open_ids:
        last_face = sa.select(sa.func.max(Face.id)).where(Face.track_id.in_(open_ids)).group_by(Face.track_id)
        for tid, fields in conn.execute(sa.select(Face.track_id, Face.fields).where(Face.id.in_(last_face))).all():
            latest[tid] = {k: v for k, v in (fields or {}).items() if k != "raw"}
    sources = _source_names(conn, (r.source_id for r in rows))
    decimals = stored_decimals(session_tasks(conn)) if answers else {}
    out = []
    for r in rows:
        rec: dict[str, Any] = {
            "id": r.id, "source": sources.get(r.source_id), "session": r.session_id, "track": r.track,
            "first_frame": r.first_frame, "last_frame": r.last_frame, "frames": r.frames, "faces": r.faces,
            "first_time": r.first_time, "last_time": r.last_time, "started": r.started, "ended": r.ended,
            "confidence": None if r.confidence is None else round(float(r.confidence), 4), "closed": r.closed,
        }
        fields = answer_fields(answers[r.id], decimals) if r.id in answers else latest.get(r.id, {})
        rec.update({k: v for k, v in fields.items() if k not in rec})
        out.append(rec)
    return out


def one_record(conn: sa.Connection, kind: str, ident: int) -> dict[str, Any] | None:
    """The face (``kind="faces"``) or track (``"tracks"``) of id ``ident`` as the lists give it, or ``None``."""
    model, records = (Face, face_records) if kind == "faces" else (Track, track_records)
    rows = conn.execute(sa.select(model).where(model.id == ident)).all()
    found = records(conn, rows)
    return found[0] if found else None


def find_tracks(conn: sa.Connection, q: Query) -> tuple[list[dict[str, Any]], str | None]:
    """A page of tracks, latest ended first, and the cursor of the next page."""
    stmt = sa.select(Track).where(*_track_where(q)).order_by(Track.ended.desc(), Track.id.desc()).limit(q.limit + 1)
    rows = conn.execute(stmt).all()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    nxt = make_cursor(rows[-1].ended, rows[-1].id) if more else None
    return track_records(conn, rows), nxt


def session_tasks(conn: sa.Connection, session: int | None = None) -> list[dict[str, Any]]:
    """Every task spec the sessions recorded (``session``: that one's only), each as the newest
    session gave it, in the order the tasks first appeared: a newer model's tasks come after the
    older ones', so an export's columns keep their places when another model writes."""
    stmt = sa.select(Session.tasks).where(Session.tasks.is_not(None))
    if session is not None:
        stmt = stmt.where(Session.id == session)
    rows = [[s for s in specs or [] if isinstance(s, dict) and "name" in s]  # newest session first
            for specs in conn.execute(stmt.order_by(Session.id.desc()).limit(1000)).scalars()]
    newest: dict[str, dict[str, Any]] = {}
    for specs in rows:
        for s in specs:
            newest.setdefault(s["name"], s)
    first_seen = dict.fromkeys(s["name"] for specs in reversed(rows) for s in specs)
    return [newest[name] for name in first_seen]


def stored_class_names(conn: sa.Connection) -> dict[str, list[str]]:
    """Per task name, every class name a recorded session's task of that name had, newest
    session's first: after a model was trained again with other classes (``others`` for
    ``other``), the faces stored under the old names can still be asked for (a user test:
    ``?ethnicity=other`` answered 422, the current model's classes only)."""
    import json

    from .rows import tasks_from_specs

    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    # every distinct list of specs (a few: one per model that wrote), not the newest sessions only
    # (analyze makes a session per run, so an old model's would fall out of any window)
    texts = conn.execute(sa.select(sa.cast(Session.tasks, sa.Text), sa.func.max(Session.id))
                         .where(Session.tasks.is_not(None)).group_by(sa.cast(Session.tasks, sa.Text))
                         .order_by(sa.func.max(Session.id).desc())).all()
    for text, _ in texts:
        try:
            specs = json.loads(text)
        except (TypeError, ValueError):
            continue
        for spec in specs if isinstance(specs, list) else []:
            key = json.dumps(spec, sort_keys=True, default=str)
            if not isinstance(spec, dict) or key in seen:
                continue
            seen.add(key)
            for t in tasks_from_specs([spec], warn=False):
                names = out.setdefault(t.name, [])
                names += [n for n in t.class_names() or [] if n not in names]
    return {k: v for k, v in out.items() if v}


def stored_task_kinds(conn: sa.Connection) -> dict[str, set[str]]:
    """Per task name, what the recorded sessions' models of that name answered: ``classes``,
    ``numbers``, and ``levels`` (numbers with a level's name), whichever model answers now (the
    API's records then take each form; a review: a number where a class was wanted answered 500)."""
    import json

    from .rows import tasks_from_specs

    out: dict[str, set[str]] = {}
    for (text,) in conn.execute(sa.select(sa.cast(Session.tasks, sa.Text)).where(Session.tasks.is_not(None))
                                .group_by(sa.cast(Session.tasks, sa.Text))):
        try:
            specs = json.loads(text)
        except (TypeError, ValueError):
            continue
        for t in tasks_from_specs([s for s in specs if isinstance(s, dict)] if isinstance(specs, list) else [],
                                  warn=False):
            kinds = out.setdefault(t.name, set())
            kinds.add("numbers" if t.class_names() is None else "classes")
            if t.level_names() is not None:
                kinds.add("levels")
    return out
