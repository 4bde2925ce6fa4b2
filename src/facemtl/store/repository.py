"""The store: one object over the results database for writers, the server and the CLI.

``Store(url)`` opens (and, when empty, creates) the database; ``writer(...)`` starts a
session that writes batches (:class:`~facemtl.store.writer.SessionWriter`); ``faces``,
``tracks``, ``stats``, ``sources`` read it (:mod:`facemtl.store.queries`); ``purge`` and
``export`` maintain it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Iterator, Sequence, TextIO

import sqlalchemy as sa

from ..inference.model_info import ModelInfo
from ..tasks import Task
from . import queries
from .engine import StoreError, cannot_open, create_db_engine, database_url, read_only, redacted
from .export import write_records
from .migrate import current_revision, head_revision, newer_schema, upgrade
from .models import Face, NoFaceFile, Session, Snapshot, Source, Thumbnail, Track
from .retention import erase, purge
from .rows import tasks_from_specs
from .sessions import beats_on_time, last_heard
from .stats import count_groups
from .writer import SessionWriter

#: Seconds without a beat, a face or a start after which ``db end`` takes a session's writer for
#: gone (:meth:`Store.end_session`): well past a writer's retries while its database is away
#: (32 s at most), a clock a little behind, a camera reconnecting (it beats meanwhile).
GONE_AFTER = 300.0


class SchemaError(StoreError):
    """The database's schema is not the one this facemtl reads."""


class Store:
    """The results database at ``url`` (see :func:`~facemtl.store.engine.database_url`).

    ``create``: create the tables in an empty database (every migration, in order). A
    database at an older schema is refused with the command that upgrades it. A SQLite
    file opened read-only (``mode=ro``, or one this process cannot write) is read and
    never written (:attr:`read_only`).
    """

    def __init__(self, url: str | None = None, create: bool = True) -> None:
        self.url = database_url(url)
        #: Nothing may be written (a read-only SQLite file).
        self.read_only = read_only(self.url)
        self.engine = create_db_engine(self.url)
        self._write_engine: sa.Engine | None = None
        self._engine_lock = threading.Lock()
        self.revision = self._check_schema(create)

    def __repr__(self) -> str:
        return f"Store({redacted(self.url)!r})"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _check_schema(self, create: bool) -> str:
        try:
            rev = current_revision(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise cannot_open(self.url, exc) from None
        head = head_revision()
        if rev == head:
            return rev
        newer = newer_schema(rev)
        if newer:
            raise SchemaError(f"the database {redacted(self.url)} {newer}")
        if rev is None and create and not self.read_only:
            return upgrade(self.write_engine)
        if rev is None:
            raise SchemaError(f"the database {redacted(self.url)} has no facemtl tables: "
                              f"run 'facemtl db upgrade --db {redacted(self.url)}'")
        raise SchemaError(f"the database {redacted(self.url)} is at schema {rev} and this facemtl reads {head}: "
                          f"run 'facemtl db upgrade --db {redacted(self.url)}' (or use the facemtl that wrote it)")

    @property
    def write_engine(self) -> sa.Engine:
        """The engine writers use (on SQLite its transactions take the write lock up front)."""
        with self._engine_lock:  # serve's retention thread and its first upload may ask at once
            if self._write_engine is None:
                self._write_engine = create_db_engine(self.url, write=True)
            return self._write_engine

    def close(self) -> None:
        self.engine.dispose()
        if self._write_engine is not None:
            self._write_engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------
    def writer(self, kind: str, source: str, model_info: ModelInfo | None = None,
               settings: dict[str, Any] | None = None, heartbeat: float = 2.0, announce: bool = True,
               sources: Sequence[str] = ()) -> SessionWriter:
        """A new session of ``kind`` (``stream``, ``analyze``, ``upload``) writing as ``source``
        (and ``sources``; see :class:`SessionWriter`); :class:`StoreError` for a read-only
        database, :class:`~facemtl.store.writer.SourceKindError` (a ``StoreError``) for a source
        name that belongs to another kind of writer."""
        if self.read_only:
            from .engine import folder_writable, sqlite_path

            path = sqlite_path(self.url)
            folder_refuses = path and os.access(path, os.W_OK) and not folder_writable(path)
            why = (f" (its folder {os.path.dirname(os.path.abspath(path))} cannot be written, and SQLite keeps its "
                   "journal beside the file)" if folder_refuses else "")
            raise StoreError(f"the database {redacted(self.url)} is read-only{why}: nothing can be stored in it")
        return SessionWriter(self.write_engine, kind, source, model_info, settings, heartbeat, announce, sources)

    # -- reading ------------------------------------------------------------------------------
    def ping(self) -> None:
        """Raises if the database cannot answer."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def newest_session(self) -> int:
        """The largest session id (0 for none): a reader knows a writer started since it looked."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(Session.id), 0))).scalar_one())

    def tasks(self, extra: Sequence[Task] = ()) -> list[Task]:
        """``extra`` and then every other task a session recorded (by name, first one wins)."""
        with self.engine.connect() as conn:
            stored = tasks_from_specs(queries.session_tasks(conn))
        names = {t.name for t in extra}
        return list(extra) + [t for t in stored if t.name not in names]

    def stored_files(self, files: Sequence[str]) -> set[str]:
        """Those of ``files`` (absolute, normalised paths, as ``analyze --db`` stores them) whose
        faces an ``analyze`` session already stored, or in which one found no face (schema 0004:
        ``no_face_files``); ``analyze --skip-stored`` leaves them out. A file that could not be
        read is not among them (it is tried again). Names are compared
        as stored (:func:`~facemtl.store.writer.clean_text`: undecodable bytes read as U+FFFD, so
        two names that differ only there count as one). One pass over the analyze sessions'
        faces (through their session index), whatever the number of files asked about."""
        from .writer import FILE_LENGTH, clean_text

        wanted: dict[str | None, list[str]] = {}
        for f in files:
            wanted.setdefault(clean_text(f, FILE_LENGTH), []).append(f)
        found: set[str] = set()
        sessions = sa.select(Session.id).where(Session.kind == "analyze")
        with self.engine.connect() as conn:
            for name in conn.execute(sa.union(
                    sa.select(Face.file).where(Face.session_id.in_(sessions), Face.file.is_not(None)),
                    sa.select(NoFaceFile.file))).scalars():
                found.update(wanted.get(name, ()))
        return found

    def task_kinds(self) -> dict[str, set[str]]:
        """Per task name, what its recorded models answered (:func:`queries.stored_task_kinds`)."""
        with self.engine.connect() as conn:
            return queries.stored_task_kinds(conn)

    def class_names(self) -> dict[str, list[str]]:
        """Per task, every class name its recorded sessions had (see :func:`queries.stored_class_names`)."""
        with self.engine.connect() as conn:
            return queries.stored_class_names(conn)

    def faces(self, q: queries.Query) -> tuple[list[dict[str, Any]], str | None]:
        with self.engine.connect() as conn:
            return queries.find_faces(conn, q)

    def one(self, kind: str, ident: int) -> dict[str, Any] | None:
        """One face or track (``kind``: ``faces`` or ``tracks``) as the lists give it, or ``None``."""
        with self.engine.connect() as conn:
            return queries.one_record(conn, kind, ident)

    def tracks(self, q: queries.Query) -> tuple[list[dict[str, Any]], str | None]:
        with self.engine.connect() as conn:
            return queries.find_tracks(conn, q)

    def stats(self, since: float, until: float, bucket: float, **kw: Any) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return count_groups(conn, since, until, bucket, **kw)

    def sources(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every source with its state: ``running`` (heartbeat on time), ``silent`` (its writer
        missed :data:`~facemtl.store.sessions.MISSED_BEATS` heartbeats: stopped without saying so, or cut off) or
        ``stopped``; and when its latest live frame was stored."""
        now = now if now is not None else time.time()
        stmt = sa.select(Source, Snapshot.time.label("snapshot_time")).outerjoin(
            Snapshot, Snapshot.source_id == Source.id).order_by(Source.name)
        out = []
        with self.engine.connect() as conn:
            for s in conn.execute(stmt).all():
                state = s.state
                if state == "running" and not beats_on_time(s.last_seen, s.heartbeat or 2.0, now):
                    state = "silent"
                out.append({"id": s.id, "name": s.name, "kind": s.kind, "host": s.host, "state": state,
                            "last_seen": s.last_seen, "seconds_since_seen": None if s.last_seen is None else
                            round(now - s.last_seen, 3), "session": s.session_id,
                            # a silent writer's last rate is not its rate now
                            "fps": None if s.fps is None or state != "running" else round(s.fps, 2),
                            "heartbeat": s.heartbeat,
                            "snapshot_time": s.snapshot_time})
        return out

    def snapshot(self, source_id: int) -> tuple[float, bytes] | None:
        """The latest annotated frame of a source: ``(time, JPEG bytes)``, or ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(Snapshot.time, Snapshot.jpeg).where(Snapshot.source_id == source_id)).first()
        return (row[0], bytes(row[1])) if row else None

    def source_running(self, source_id: int, now: float | None = None) -> bool:
        """Whether the source is ``running`` as :meth:`sources` says it: its writer says so and
        has not missed :data:`~facemtl.store.sessions.MISSED_BEATS` heartbeats (a killed writer's source is silent)."""
        now = now if now is not None else time.time()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(Source.state, Source.last_seen, Source.heartbeat)
                               .where(Source.id == source_id)).first()
        return bool(row and row.state == "running" and beats_on_time(row.last_seen, row.heartbeat or 2.0, now))

    def source_kind(self, name: str) -> str | None:
        """The kind (``stream``, ``analyze``, ``upload``) of the source called ``name``, or ``None``."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(Source.kind).where(Source.name == name)).scalar()

    def thumbnail(self, face_id: int) -> bytes | None:
        with self.engine.connect() as conn:
            jpeg = conn.execute(sa.select(Thumbnail.jpeg).where(Thumbnail.face_id == face_id)).scalar()
        return bytes(jpeg) if jpeg is not None else None

    def counts(self) -> dict[str, int]:
        """Rows per main table."""
        with self.engine.connect() as conn:
            return {name: int(conn.execute(sa.select(sa.func.count()).select_from(m)).scalar_one())
                    for name, m in (("faces", Face), ("tracks", Track), ("sources", Source))}

    # -- upkeep -------------------------------------------------------------------------------
    def purge(self, older_than_days: float) -> dict[str, int]:
        """Delete what is older than ``older_than_days`` (see :mod:`facemtl.store.retention`)."""
        return purge(self.write_engine, older_than_days)

    def erase(self, source: str | None = None, dry_run: bool = False, **filters: Any) -> dict[str, int]:
        """Delete the faces matching ``source`` (a name) and ``filters`` (``session``, ``track``,
        ``face``, ``since``, ``until``) with their tracks (:func:`~facemtl.store.retention.erase`);
        an unknown source name is a ``ValueError`` naming those there are."""
        source_id = self.source_id(source) if source is not None else None
        return erase(self.write_engine, source_id, dry_run=dry_run, **filters)

    def sessions(self, open_only: bool = False, limit: int = 20, now: float | None = None) -> list[dict[str, Any]]:
        """The ``limit`` newest sessions (``open_only``: not ended), newest first: ``id``, ``kind``,
        ``host``, ``pid``, ``started``, ``ended``, ``model``, ``faces`` (stored), ``sources`` (those it
        writes now or stored results from), ``last_heard`` (its latest start, beat or face while it
        held its sources) and ``state``: ``ended``,
        ``running`` (a source of it beats on time), ``silent`` (none does) or ``gone`` (silent
        :data:`GONE_AFTER` seconds: ``facemtl db end`` takes it)."""
        now = now if now is not None else time.time()
        with self.engine.connect() as conn:
            stmt = sa.select(Session).order_by(Session.id.desc()).limit(max(1, int(limit)))
            rows = conn.execute(stmt.where(Session.ended.is_(None)) if open_only else stmt).all()
            ids = [r.id for r in rows]
            counted = conn.execute(sa.select(Face.session_id, sa.func.count(), sa.func.max(Face.time))
                                   .where(Face.session_id.in_(ids)).group_by(Face.session_id)).all() if ids else []
            faces = {sid: n for sid, n, _ in counted}
            last_face = {sid: t for sid, _, t in counted}
            sources: dict[int, list[Any]] = {}
            for src in conn.execute(sa.select(Source.session_id, Source.name, Source.state, Source.last_seen,
                                              Source.heartbeat).where(Source.session_id.in_(ids))).all():
                sources.setdefault(src.session_id, []).append(src)
            # the sources it stored from, also those another session has taken over since (a user test): by its
            # tracks (the unique index), by its faces where it has none (analyze's)
            named: dict[int, set[str]] = {i: {s.name for s in sources.get(i, [])} for i in ids}
            by_track = sa.select(Track.session_id, Source.name).join(Source, Source.id == Track.source_id)
            for sid, name in conn.execute(by_track.where(Track.session_id.in_(ids)).distinct()).all():
                named[sid].add(name)
            trackless = [i for i in ids if faces.get(i) and not named[i]]
            by_face = sa.select(Face.session_id, Source.name).join(Source, Source.id == Face.source_id)
            for sid, name in conn.execute(by_face.where(Face.session_id.in_(trackless)).distinct()).all() \
                    if trackless else []:
                named[sid].add(name)
        out = []
        for r in rows:
            own = sources.get(r.id, [])
            heard = last_heard(r.started, last_face.get(r.id), *(s.last_seen for s in own))
            beating = any(s.state == "running" and beats_on_time(s.last_seen, s.heartbeat or 2.0, now) for s in own)
            state = "ended" if r.ended is not None else "running" if beating else \
                "gone" if now - heard >= GONE_AFTER else "silent"
            out.append({"id": r.id, "kind": r.kind, "host": r.host, "pid": r.pid, "started": r.started,
                        "ended": r.ended, "model": r.model_name, "faces": int(faces.get(r.id, 0)),
                        "sources": sorted(named[r.id]), "last_heard": heard, "state": state})
        return out

    def end_session(self, session: int | None = None, source: str | None = None,
                    now: float | None = None) -> dict[str, Any]:
        """End ``session`` (or the session that holds ``source``) whose writer is gone for good: a
        machine that never runs facemtl again, whose sources read ``silent`` for ever (a writer
        killed on a machine that runs facemtl again is ended by its next writer:
        :func:`~facemtl.store.sessions.end_dead_sessions`). Its open tracks are answered and
        closed and its sources ``stopped``. ``ValueError`` where nothing names a session, or its
        writer may still run: it started, beat or stored a face within :data:`GONE_AFTER` seconds,
        or its process runs on this machine (stop the writer, which ends its session). A session
        ended already is said so (``already_ended``), changing nothing. Should its writer come
        back all the same, it goes on in a new session (:meth:`SessionWriter._own_session`)."""
        from .sessions import _alive, end_session, last_face_time

        if (session is None) == (source is None):
            raise ValueError("say which session to end: --session ID or --source NAME")
        now = now if now is not None else time.time()
        if source is not None:
            source_id = self.source_id(source)
            with self.engine.connect() as conn:
                session = conn.execute(sa.select(Source.session_id).where(Source.id == source_id)).scalar()
            if session is None:
                raise ValueError(f"source {source!r} belongs to no stored session (deleted)")
        with self.write_engine.begin() as conn:
            row = conn.execute(sa.select(Session.started, Session.ended, Session.host, Session.pid,
                                         Session.process_start)
                               .where(Session.id == session)).first()
            if row is None:
                raise ValueError(f"there is no session {session} (never stored, or deleted)")
            if row.ended is not None:
                return {"session": session, "already_ended": row.ended}
            beats = sa.select(sa.func.max(Source.last_seen)).where(Source.session_id == session)
            if conn.dialect.name == "postgresql":  # (a beat landing meanwhile waits for this transaction)
                conn.execute(sa.select(Source.id).where(Source.session_id == session).with_for_update())
            last_face = last_face_time(conn, session)
            latest = last_heard(row.started, conn.execute(beats).scalar(), last_face)
            if row.host == socket.gethostname() and _alive(row.pid, row.process_start):
                raise ValueError(f"session {session} is alive: its writer, process {row.pid}, runs on this machine; "
                                 "stop it, which ends its session")
            if now - latest < GONE_AFTER:
                raise ValueError(f"session {session} may be alive: its writer was last heard of {now - latest:.0f} s "
                                 f"ago; this ends a session whose writer is gone, silent {GONE_AFTER:.0f} s or more "
                                 "(a running writer: stop it, which ends its session)")
            return {"session": session, **end_session(conn, session, row.started, last_face)}

    def source_id(self, source: str) -> int:
        """The id of the source named ``source``; a ``ValueError`` naming those there are if none is."""
        ids = {s["name"]: s["id"] for s in self.sources()}
        if source not in ids:
            raise ValueError(f"no source is named {source!r}; the sources are: {', '.join(map(repr, ids)) or 'none'}")
        return ids[source]

    def check_session(self, session: int) -> None:
        """``ValueError`` unless a session ``session`` is stored."""
        with self.engine.connect() as conn:
            if conn.execute(sa.select(Session.id).where(Session.id == session)).first() is None:
                newest = conn.execute(sa.select(sa.func.max(Session.id))).scalar_one()
                raise ValueError(f"there is no session {session} (never stored, or deleted); "
                                 + (f"the newest is {newest}" if newest is not None else "none is stored"))

    def records(self, kind: str, q: queries.Query | None = None) -> Iterator[dict[str, Any]]:
        """Every face or track record matching ``q``, newest first, read a page at a time."""
        find = {"faces": self.faces, "tracks": self.tracks}.get(kind)
        if find is None:
            raise ValueError(f"cannot export {kind!r}; choose faces or tracks")
        q = q or queries.Query()
        q.limit = queries.MAX_LIMIT
        while True:
            page, nxt = find(q)
            yield from page
            if nxt is None:
                return
            q.cursor = nxt

    def export(self, kind: str, out: TextIO, fmt: str = "jsonl", q: queries.Query | None = None) -> int:
        """Write every face or track (matching ``q``) to ``out`` as CSV or JSON lines; returns how many."""
        left_out: list[str] = []  # stored tasks this process cannot build: their columns come from the records
        with self.engine.connect() as conn:  # one session's: its model's columns only
            specs = (q is not None and q.session is not None and queries.session_tasks(conn, q.session)) or \
                queries.session_tasks(conn)
            tasks = tasks_from_specs(specs, left_out)
        return write_records(self.records(kind, q), out, fmt, kind, tasks, complete=not left_out)
