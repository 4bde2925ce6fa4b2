"""Writing results: one session, batched transactions.

:class:`SessionWriter` buffers images, faces, track ends and snapshots, and writes each
buffer in **one** transaction (:meth:`SessionWriter.flush`): a writer killed at any
moment leaves every earlier batch complete and nothing of the one it was writing — no
face without its answers or its track, no track whose face count disagrees with its
faces. A batch that fails because the database went away stays buffered and is written by
the next flush; a batch the database refuses for its data (a value it cannot hold) is
written again image by image, so only the image at fault is dropped (and logged).

Text is cleaned before it is buffered (:func:`clean_text`): file and source names from
the file system or a client may hold undecodable bytes (surrogate escapes), NUL or more
characters than their column takes, which one database or the other refuses.

Several writers (processes, machines) share one database: sources are created with an
insert that ignores a name another writer created first, tracks belong to one session
(one writer), and on SQLite every write transaction takes the lock up front.

A source belongs to one kind of writer (``stream``, ``analyze``, ``upload``): a writer never
files results under a source of another kind (:class:`SourceKindError`). The names it is
given are checked when it starts, before its session is written (``stream --db`` with a name
the server's uploads or an ``analyze`` run use is refused before a frame is read); a name
first seen on a result and taken by another kind meanwhile has its results dropped, with a
warning. A source of the writer's own kind is taken over: a later ``stream`` run of the same
camera name is a new session of that source (its state, ``fps`` and session become the new
run's; the earlier sessions' faces and tracks stay filed under it).

A stream's source's ``fps`` is the frames (results, with faces or without) of that source
this writer received per second of its clock over the last :data:`FPS_WINDOW` seconds, or
since the source's first frame in its first seconds: for a stream of one source, the FPS its
summary line prints. Results come in batches (the network's), so the figure moves by at most
a batch's frames over the window.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..inference.model_info import ModelInfo
from ..inference.results import NO_FACE, FaceResult, ImageResult, TrackResult
from ..system import process_start
from .engine import StoreError, data_error
from .models import Answer, Face, NoFaceFile, Session, Snapshot, Source, Thumbnail, Track, TrackAnswer
from .rows import AnswerCodec, codecs_for
from .sessions import MISSED_BEATS, beats_on_time, end_dead_sessions

log = logging.getLogger("facemtl.store")

#: Longest text of the columns cleaned here, from the table definitions.
FILE_LENGTH = Face.__table__.c.file.type.length
SOURCE_LENGTH = Source.__table__.c.name.type.length
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Seconds of the writer's clock over which a stream's source's ``fps`` is counted.
FPS_WINDOW = 10.0
#: PostgreSQL advisory lock key that orders writers' face inserts (ids in commit order).
FACE_IDS_LOCK = 0x66616365

#: Who writes each kind of source, for the sentence that refuses a name (:class:`SourceKindError`).
_OWNERS = {"stream": "a stream run", "analyze": "an analyze run", "upload": "the server's uploads"}
#: How a writer of each kind picks another source name.
_RENAME = {"stream": "give the stream another name (NAME=SOURCE in a sources file)",
           "analyze": "analyze files its results under this name: store them in another database",
           "upload": "give uploads a name of their own (?source=...)"}


class SourceKindError(StoreError):
    """A writer was to file results under a source of another kind (see the module doc)."""

    def __init__(self, name: str, kind: str, writer_kind: str) -> None:
        self.name, self.kind, self.writer_kind = name, kind, writer_kind
        owner = _OWNERS.get(kind, f"a {kind} run")
        super().__init__(f"the source {name!r} belongs to {owner} (kind {kind}), not to "
                         f"{_OWNERS.get(writer_kind, f'a {writer_kind} run')}; "
                         f"{_RENAME.get(writer_kind, 'give it another name')}")


class SourceBusyError(StoreError):
    """A stream was to write a source that another live stream writes now (see :class:`SessionWriter`)."""


def clean_text(value: str | None, length: int | None) -> str | None:
    """``value`` as text every database stores: undecodable bytes (surrogate escapes, as
    ``os.listdir`` gives them) become U+FFFD, NUL is removed (PostgreSQL refuses it) and
    the text is cut to ``length`` characters (PostgreSQL refuses longer ones)."""
    if value is None:
        return None
    value = _SURROGATE.sub("\ufffd", str(value)).replace("\x00", "")
    return value[:length] if length is not None else value


def _forget_before(times: deque[float], cutoff: float) -> None:
    """Drop the times at or before ``cutoff`` from the front of ``times`` (oldest first)."""
    while times and times[0] <= cutoff:
        times.popleft()


def _refused(exc: BaseException) -> bool:
    """Whether the database refused what was written (its data, or a source of another kind)
    rather than went away."""
    return isinstance(exc, SourceKindError) or data_error(exc)


def _dialect_insert(engine: Engine, table: Any):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


@dataclass
class _Image:
    """What a flush needs of an image (never its pixels)."""

    source: str | None
    file: str | None
    frame: int | None
    time: float | None
    at: float  # wall clock
    faces: list[FaceResult]
    thumbnails: list[bytes | None] | None
    #: A file an ``analyze`` session read and found no face in (recorded in ``no_face_files``).
    no_face: bool = False


@dataclass
class _Pending:
    """What the next flush writes."""

    images: list[_Image] = field(default_factory=list)
    tracks: list[TrackResult] = field(default_factory=list)
    snapshots: dict[str, tuple[float, int, int, bytes]] = field(default_factory=dict)
    faces: int = 0
    since: float | None = None

    def __len__(self) -> int:
        return len(self.images) + len(self.tracks) + len(self.snapshots)

    def then(self, later: "_Pending") -> "_Pending":
        """This buffer followed by ``later`` (a newer live frame of a source replaces its older one)."""
        return _Pending(self.images + later.images, self.tracks + later.tracks, {**self.snapshots, **later.snapshots},
                        self.faces + later.faces, self.since or later.since)


class SessionWriter:
    """Writes one session's results (``kind``: ``stream``, ``analyze`` or ``upload``).

    ``source``: the source name of results that carry none (``ImageResult.source``
    names it per result when one process reads several). ``model_info``: the model
    that answered (name, version and tasks are recorded on the session). ``heartbeat``:
    seconds between the writer's promises that it is alive (see :meth:`due`).
    ``announce``: register ``source`` as running now, before its first result (a camera
    still connecting shows up); otherwise a source appears with its first result.
    ``sources``: the other source names its results will carry (a stream's several cameras).
    ``source`` and ``sources`` are checked before anything is written: :class:`SourceKindError`
    when one belongs to another kind of writer. ``clock``: the wall clock (seconds since the
    epoch; ``time.time``), which the heartbeat, ``fps`` and stored times read.

    Thread-safe in one way: results may be added from one thread while another flushes (a
    stream's database sink writes on a thread of its own, so that a database that is slow,
    locked or gone never holds up the camera; a user test). A flush takes what is buffered when
    it starts; what is added meanwhile waits for the next one.
    """

    def __init__(self, engine: Engine, kind: str, source: str, model_info: ModelInfo | None = None,
                 settings: dict[str, Any] | None = None, heartbeat: float = 2.0, announce: bool = True,
                 sources: Iterable[str] = (), clock: Callable[[], float] | None = None) -> None:
        self.engine = engine
        self.kind = kind
        self.source = clean_text(source, SOURCE_LENGTH) or kind
        self.heartbeat = heartbeat
        self.clock = clock or time.time
        self.model_name = model_info.name if model_info else None
        self.model_version = model_info.version if model_info else None
        tasks = model_info.build_tasks() if model_info else []
        self.codecs: dict[str, AnswerCodec] = codecs_for(tasks)
        self.pending = _Pending()
        self._lock = threading.Lock()  # guards pending, _first and _arrivals (see the class docstring)
        #: Faces a flush has taken and not yet written (counted with ``pending`` as not stored).
        self.in_flight = 0
        self._sources: dict[str, int] = {}
        self._foreign: dict[str, str] = {}  # names of sources of another kind: their kind
        self._created: set[str] = set()  # names of the sources this writer made (not taken over)
        self._tracks: dict[tuple[int, int], int] = {}
        #: Tracks of a session ended under this writer (:meth:`_own_session`): a track end with no face
        #: stored since goes to its row there, not to an empty new track (a user test)
        self._carried: dict[tuple[int, int], int] = {}
        self._started = self.clock()
        self._first: dict[str, float] = {}  # per source: when its frames started (its first frame's wall time)
        self._arrivals: dict[str, deque[float]] = {}  # per stream source: when its frames of the last FPS_WINDOW came
        self._beat = self._started
        self.closed = False
        #: Images the database refused (their data, not its connection) and that were dropped.
        self.dropped = 0
        #: Faces dropped from a backlog past its limit (:meth:`limit_backlog`) while the database was away.
        self.lost = 0
        names = dict.fromkeys([self.source] + [clean_text(n, SOURCE_LENGTH) or self.source for n in sources])
        #: What each session of this writer records about it (a new one is opened from it: :meth:`_own_session`).
        self._session_row = dict(kind=kind, host=socket.gethostname(), pid=os.getpid(),
                                 process_start=process_start(os.getpid()), model_name=self.model_name,
                                 model_version=self.model_version,
                                 tasks=[t.to_dict() for t in tasks] if model_info else None, settings=settings or {})
        with engine.begin() as conn:
            self._check_kinds(conn, list(names))
            end_dead_sessions(conn, list(names), self.clock(), self.heartbeat)
            if kind == "stream":
                self._check_free(conn, list(names), self.clock())
            self.session_id = self._new_session(conn, self._started)
            if announce:
                self._source_id(conn, self.source)
                self._beat_sources(conn, self._started)

    def _new_session(self, conn: sa.Connection, started: float) -> int:
        return int(conn.execute(sa.insert(Session).returning(Session.id),
                                dict(self._session_row, started=started)).scalar_one())

    def _own_session(self, conn: sa.Connection, now: float) -> None:
        """Go on in a new session where this writer's was ended under it (``facemtl db end``, by an
        operator who took the writer for gone: cut off past the silence it allows); its tracks go on
        as new ones there. Before, its faces went on into the ended session, whose sources then
        read running, then silent for good, and which no command could end again (a review)."""
        if conn.execute(sa.select(Session.ended).where(Session.id == self.session_id)).scalar() is None:
            return
        old = self.session_id
        self.session_id = self._new_session(conn, now)
        self._carried = {**self._carried, **self._tracks}
        self._tracks = {}
        log.warning("session %d was ended (facemtl db end) while its writer still ran: its results go on in "
                    "session %d", old, self.session_id)

    def _check_free(self, conn: sa.Connection, names: list[str], now: float) -> None:
        """:class:`SourceBusyError` for the first of ``names`` that another stream writes now (its
        session open, its beat on time). Two streams under one name (a sources file copied, a
        camera started twice) took the source from each other without a word: it read stopped
        while its first stream still wrote, and a purge deleted that stream's open tracks under
        it, whose later faces the database then refused (a user test). A stream stopped, or killed
        (:func:`end_dead_sessions`, or silent for three heartbeats elsewhere), is taken over as
        before. (Analyze runs share their ``analyze@host`` source and are not refused; two streams
        started in the same instant may both pass.)"""
        rows = conn.execute(sa.select(Source.name, Source.last_seen, Source.heartbeat, Session.id, Session.pid,
                                      Session.host).join(Session, Session.id == Source.session_id).where(
            Source.name.in_(names), Source.state == "running", Session.ended.is_(None))).all()
        here, me = socket.gethostname(), os.getpid()
        for r in rows:
            if r.host == here and r.pid == me:  # another writer of this process, or an earlier life of its number
                continue  # written before schema 0005 (later ones are ended above: end_dead_sessions)
            if beats_on_time(r.last_seen, r.heartbeat or self.heartbeat, now):
                wait = MISSED_BEATS * (r.heartbeat or self.heartbeat)
                raise SourceBusyError(
                    f"the source {r.name!r} is being written by another stream now (session {r.id}, process {r.pid} "
                    f"on {r.host}, heard {max(now - r.last_seen, 0):.0f} s ago): give this one another name "
                    f"(NAME=SOURCE), or stop that stream first (one killed just now is taken over {wait:.0f} s after "
                    "its last beat)")

    def _check_kinds(self, conn: sa.Connection, names: list[str]) -> None:
        """:class:`SourceKindError` for the first of ``names`` that a writer of another kind created."""
        kinds = dict(conn.execute(sa.select(Source.name, Source.kind).where(Source.name.in_(names))).all())
        for name in names:
            if kinds.get(name, self.kind) != self.kind:
                raise SourceKindError(name, kinds[name], self.kind)

    # -- buffering ---------------------------------------------------------------------
    def add(self, result: ImageResult, thumbnails: Sequence[bytes | None] | None = None) -> None:
        """Buffer one image's faces (``thumbnails``: one JPEG or ``None`` per face)."""
        with self._lock:
            self._add(result, thumbnails, self.clock())

    @property
    def unstored_faces(self) -> int:
        """Faces buffered or being written: what is not stored yet."""
        return self.pending.faces + self.in_flight

    def _add(self, result: ImageResult, thumbnails: Sequence[bytes | None] | None, now: float) -> None:
        self.pending.images.append(_Image(clean_text(result.source, SOURCE_LENGTH),
                                          clean_text(result.file, FILE_LENGTH), result.frame, result.time,
                                          result.wall_time if result.wall_time is not None else now, list(result.faces),
                                          list(thumbnails) if thumbnails is not None else None,
                                          self.kind == "analyze" and result.status == NO_FACE
                                          and bool(result.file)))
        self.pending.faces += len(result.faces)
        self.pending.since = self.pending.since or now
        if self.kind == "stream":  # one result is one frame of its source, with faces or without
            name = self.pending.images[-1].source or self.source
            if name not in self._first:  # a live frame's wall time is when it was read (never before the writer)
                wall = result.wall_time
                self._first[name] = min(now, max(self._started, wall)) if wall is not None else self._started
            arrivals = self._arrivals.setdefault(name, deque())
            arrivals.append(now)
            _forget_before(arrivals, now - FPS_WINDOW)  # memory stays one window's frames

    def add_track(self, track: TrackResult) -> None:
        """Buffer a track's end (its aggregated answers)."""
        with self._lock:
            self.pending.tracks.append(track)
            self.pending.since = self.pending.since or self.clock()

    def add_snapshot(self, source: str | None, jpeg: bytes, width: int, height: int, at: float | None = None) -> None:
        """Buffer the latest annotated frame of ``source`` (only the newest per source is kept)."""
        with self._lock:
            self.pending.snapshots[clean_text(source, SOURCE_LENGTH) or self.source] = (at or self.clock(), width,
                                                                                        height, jpeg)

    def due(self, batch_faces: int, max_wait: float) -> bool:
        """Whether a flush is due: ``batch_faces`` faces buffered, the oldest buffered item
        ``max_wait`` seconds old, or a heartbeat owed."""
        now = self.clock()
        waited = self.pending.since is not None and now - self.pending.since >= max_wait
        return self.pending.faces >= batch_faces or waited or now - self._beat >= self.heartbeat

    # -- writing -----------------------------------------------------------------------
    def flush(self, max_faces: int | None = None) -> int:
        """Write everything buffered in one transaction (``max_faces``: only the oldest images
        holding about that many faces, the rest kept for the next call); returns the faces written.

        A backlog (the database was away) is so written in slices between frames: in one
        transaction, 90 s of a 30 fps camera's faces stalled the stream for about 10 s.

        When the database is unreachable the transaction is rolled back, the buffer kept, and
        the error raised. When it refuses the batch's data (:func:`data_error`), or a result is
        filed under a source of another kind (:class:`SourceKindError`), the batch is written
        again one image (track end, live frame) per transaction and only what it still refuses
        is dropped, with one warning; later results of that source are dropped without one.
        """
        with self._lock:  # what is buffered now; results added meanwhile wait for the next flush
            taken, self.pending = self._without_foreign(self.pending), _Pending()
            self.in_flight = taken.faces
        pending, rest = taken, _Pending()
        if max_faces is not None and pending.faces > max_faces:  # the oldest images now, the rest later
            k, faces = 0, 0
            while k < len(pending.images) and (k == 0 or faces + len(pending.images[k].faces) <= max_faces):
                faces += len(pending.images[k].faces)
                k += 1
            rest = _Pending(pending.images[k:], pending.tracks, pending.snapshots, pending.faces - faces,
                            pending.since)
            pending = _Pending(pending.images[:k], [], {}, faces, pending.since)
        # what goes back in front of the buffer, in order, if the database goes away: the slice's
        # unwritten part (all of it, or what _write_one_by_one left), then the rest (before, a
        # failed slice of a backlog put the rest back twice)
        unwritten = [taken]
        now = self.clock()
        try:
            try:
                n = self._write(pending, now)
            except Exception as exc:
                if not _refused(exc):
                    raise
                n = self._write_one_by_one(pending, now, exc, unwritten, rest)
            unwritten[0] = rest
        finally:
            with self._lock:
                self.pending = unwritten[0].then(self.pending)
                self.in_flight = 0
        self._beat = now
        return n

    def limit_backlog(self, max_faces: int) -> int:
        """Drop the oldest buffered images past ``max_faces`` faces, or past ``max_faces`` images
        (a stream's frames without faces), when the database has been away long enough that
        memory would run out; returns the faces dropped (also added to :attr:`lost`)."""
        with self._lock:
            return self._limit_backlog(max_faces)

    def _limit_backlog(self, max_faces: int) -> int:
        images = self.pending.images
        if self.pending.faces <= max_faces and len(images) <= max_faces:
            return 0
        faces, k = self.pending.faces, 0  # (frames without faces count too: an empty scene for days)
        while k < len(images) - 1 and (faces > max_faces or len(images) - k > max_faces):
            faces -= len(images[k].faces)
            k += 1
        gone = self.pending.faces - faces
        self.pending.images, self.pending.faces = images[k:], faces
        self.lost += gone
        return gone

    def _without_foreign(self, pending: _Pending) -> _Pending:
        """``pending`` less what is filed under a source of another kind (counted in :attr:`dropped`)."""
        if not self._foreign:
            return pending
        mine = lambda name: (name or self.source) not in self._foreign  # noqa: E731
        images = [im for im in pending.images if mine(im.source)]
        self.dropped += len(pending.images) - len(images)
        return _Pending(images, [tr for tr in pending.tracks if mine(clean_text(tr.source, SOURCE_LENGTH))],
                        {k: v for k, v in pending.snapshots.items() if mine(k)}, sum(len(im.faces) for im in images),
                        pending.since)

    def fps(self, name: str, now: float | None = None) -> float | None:
        """Frames of the stream source ``name`` received per second (``None`` unless this writer
        is a stream's): the frames of the last :data:`FPS_WINDOW` seconds over that window, or
        over the seconds since the source's first frame (at least half a second) when that is shorter."""
        if self.kind != "stream":
            return None
        now = self.clock() if now is None else now
        with self._lock:
            arrivals = self._arrivals.get(name)
            if arrivals:
                _forget_before(arrivals, now - FPS_WINDOW)  # a source gone quiet: its rate falls to 0
            if not arrivals:
                return 0.0
            return len(arrivals) / max(min(FPS_WINDOW, now - self._first.get(name, self._started)), 0.5)

    def _write(self, pending: _Pending, now: float | None) -> int:
        """``pending`` in one transaction (with a heartbeat unless ``now`` is ``None``)."""
        new_tracks: dict[tuple[int, int], int] = {}
        sources, session, tracks, carried = dict(self._sources), self.session_id, self._tracks, self._carried
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql" and pending.faces:
                    # one writer's faces at a time, so face ids follow commit order and a client
                    # following ?after=<last id> misses none (SQLite writers queue anyway); a writer
                    # that waits over 10 s (another one stalled) keeps its batch and retries later
                    conn.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FACE_IDS_LOCK})
                self._own_session(conn, now if now is not None else self.clock())
                n = self._write_images(conn, pending, new_tracks)
                for tr in pending.tracks:
                    self._write_track(conn, tr, new_tracks)
                for name, (at, w, h, jpeg) in pending.snapshots.items():
                    self._write_snapshot(conn, self._source_id(conn, name), at, w, h, jpeg)
                if now is not None:
                    self._beat_sources(conn, now)
        except Exception:
            # ids of sources (and a session) created in the rolled-back transaction are void
            self._sources, self.session_id, self._tracks, self._carried = sources, session, tracks, carried
            raise
        self._tracks.update(new_tracks)
        return n

    def _write_one_by_one(self, pending: _Pending, now: float, first: BaseException, unwritten: list[_Pending],
                          rest: _Pending) -> int:
        """After the database refused a batch's data: each part in its own transaction, the
        parts it still refuses dropped (see :meth:`flush`); if the database goes away meanwhile,
        ``unwritten[0]`` becomes what is not written, then ``rest``."""
        parts = [_Pending(images=[im], faces=len(im.faces)) for im in pending.images]
        parts += [_Pending(tracks=[tr]) for tr in pending.tracks]
        parts += [_Pending(snapshots={k: v}) for k, v in pending.snapshots.items()]
        n, refused, why = 0, [], first
        for k, part in enumerate(parts):
            try:
                n += self._write(part, None)
            except Exception as exc:
                if not _refused(exc):  # the database went away meanwhile: what is not written stays buffered
                    left = _Pending(since=pending.since)
                    for p in parts[k:]:
                        left.images += p.images
                        left.tracks += p.tracks
                        left.snapshots.update(p.snapshots)
                        left.faces += p.faces
                    unwritten[0] = left.then(rest)
                    raise
                refused.append(part)
                why = exc
        unwritten[0] = rest  # all written or dropped
        if refused:
            self.dropped += sum(len(p.images) for p in refused)
            names = [p.images[0].file or p.images[0].source or self.source for p in refused if p.images]
            reason = str(getattr(why, "orig", None) or why).strip().splitlines()
            log.warning("the results database refused %d of %d images (%s) and %d track ends or live frames: %s; "
                        "the rest of the batch is stored", sum(len(p.images) for p in refused), len(pending.images),
                        ", ".join(repr(x) for x in names[:3]) + (" ..." if len(names) > 3 else ""),
                        sum(1 for p in refused if not p.images), reason[0] if reason else type(why).__name__)
        self._write(_Pending(), now)  # the heartbeat
        return n

    def close(self, state: str = "stopped") -> None:
        """Flush, end the session and mark its sources ``state``."""
        if self.closed:
            return
        self.flush()
        with self.engine.begin() as conn:
            conn.execute(sa.update(Session).where(Session.id == self.session_id).values(ended=self.clock()))
            conn.execute(sa.update(Source).where(Source.session_id == self.session_id).values(state=state, fps=None))
            self._drop_unused_sources(conn)
        self.closed = True

    def _drop_unused_sources(self, conn: sa.Connection) -> None:
        """Remove the stream sources this writer created that never sent a frame and hold nothing
        (no face, track or live frame): a camera that refused, a run stopped while its model
        loaded. They stayed on the operator's page and in its source filter for good, ``stopped``
        with no data, until a purge (a user test). A source that sent frames (an empty corridor)
        stays."""
        unused = [self._sources[n] for n in self._created if n in self._sources and n not in self._first]
        if self.kind != "stream" or not unused:
            return
        held = [sa.select(m.source_id).where(m.source_id.in_(unused)) for m in (Face, Track, Snapshot)]
        conn.execute(sa.delete(Source).where(Source.id.in_(unused), Source.session_id == self.session_id,
                                             Source.id.not_in(sa.union(*held))))

    # -- the parts of a transaction ----------------------------------------------------------
    def _source_id(self, conn: sa.Connection, name: str) -> int:
        """The id of the source ``name``, created if new; :class:`SourceKindError` if it is of another kind."""
        if name in self._sources:
            return self._sources[name]
        if name in self._foreign:
            raise SourceKindError(name, self._foreign[name], self.kind)
        made = conn.execute(_dialect_insert(self.engine, Source).values(
            name=name, kind=self.kind, host=socket.gethostname(), created=self.clock(), state="running",
            heartbeat=self.heartbeat).on_conflict_do_nothing(index_elements=["name"])).rowcount
        if made:
            self._created.add(name)
        sid, kind = conn.execute(sa.select(Source.id, Source.kind).where(Source.name == name)).one()
        if kind != self.kind:
            self._foreign[name] = kind
            raise SourceKindError(name, kind, self.kind)
        self._sources[name] = int(sid)
        return int(sid)

    def _beat_sources(self, conn: sa.Connection, now: float) -> None:
        """Heartbeat: every source this writer feeds is ``running``, seen now, at its :meth:`fps`.

        Only sources of the writer's own kind (:meth:`_source_id` refuses the others): a writer
        never claims (and at :meth:`close` never stops) a camera's or a folder's source.
        """
        for name, sid in self._sources.items():
            mine = sa.and_(Source.id == sid, Source.kind == self.kind)
            conn.execute(sa.update(Source).where(mine).values(
                state="running", last_seen=now, session_id=self.session_id, fps=self.fps(name, now),
                heartbeat=self.heartbeat))

    def _track_id(self, conn: sa.Connection, source_id: int, number: int, new: dict, **first: Any) -> int:
        key = (source_id, number)
        tid = self._tracks.get(key) or new.get(key)
        if tid is None:
            tid = conn.execute(sa.select(Track.id).where(
                Track.session_id == self.session_id, Track.source_id == source_id, Track.track == number)).scalar()
        if tid is None:
            tid = int(conn.execute(sa.insert(Track).returning(Track.id), dict(
                session_id=self.session_id, source_id=source_id, track=number, frames=0, faces=0, closed=False,
                **first)).scalar_one())
        new[key] = tid
        return tid

    def _answer_rows(self, answers: dict, **keys: Any) -> list[dict[str, Any]]:
        rows = []
        for name, a in answers.items():
            codec = self.codecs.get(name)
            if codec is None:
                codec = self.codecs[name] = AnswerCodec(None)
            rows.append(dict(keys, task=name, **codec.row(a)))
        return rows

    def _write_images(self, conn: sa.Connection, pending: _Pending, new_tracks: dict) -> int:
        faces: list[dict[str, Any]] = []
        extras: list[tuple[Any, float, bytes | None]] = []  # (face, time, thumbnail) in the order of `faces`
        growth: dict[int, dict[str, Any]] = {}  # per track: faces added, last frame and times
        for result in pending.images:
            at, thumbs = result.at, result.thumbnails
            sid = self._source_id(conn, result.source or self.source)
            for k, f in enumerate(result.faces):
                tid = None
                if f.track is not None:
                    tid = self._track_id(conn, sid, int(f.track), new_tracks, first_frame=result.frame,
                                         last_frame=result.frame, first_time=result.time, last_time=result.time,
                                         started=at, ended=at)
                    g = growth.setdefault(tid, {"n": 0, "last_frame": None, "last_time": None, "ended": at})
                    g["n"] += 1
                    g["ended"] = max(g["ended"], at)
                    if result.frame is not None:
                        g["last_frame"] = max(result.frame, g["last_frame"] or result.frame)
                    if result.time is not None:
                        g["last_time"] = max(result.time, g["last_time"] or result.time)
                box = f.box or [None] * 4
                faces.append(dict(session_id=self.session_id, source_id=sid, track_id=tid, time=at, frame=result.frame,
                                  media_time=result.time, file=result.file, x1=box[0], y1=box[1], x2=box[2], y2=box[3],
                                  score=f.score, landmarks=f.landmarks, model_name=self.model_name,
                                  model_version=self.model_version, fields=f.answer_fields()))
                extras.append((f, at, thumbs[k] if thumbs is not None and k < len(thumbs) else None))
        empty = [dict(session_id=self.session_id, file=r.file, time=r.at) for r in pending.images if r.no_face]
        if empty:  # (what --skip-stored leaves out besides the files whose faces are stored)
            conn.execute(sa.insert(NoFaceFile), empty)
        if not faces:
            return 0
        ids = conn.execute(sa.insert(Face).returning(Face.id, sort_by_parameter_order=True), faces).scalars().all()
        answers, thumbnails = [], []
        for fid, (f, at, thumb) in zip(ids, extras):
            answers += self._answer_rows(f.answers, face_id=fid, raw=False, time=at)
            if f.raw is not None:
                answers += self._answer_rows(f.raw, face_id=fid, raw=True, time=at)
            if thumb is not None:
                thumbnails.append(dict(face_id=fid, jpeg=thumb))
        if answers:
            conn.execute(sa.insert(Answer), answers)
        if thumbnails:
            conn.execute(sa.insert(Thumbnail), thumbnails)
        # an open track's frames and last frame follow its faces; a closed one's are final
        for tid, g in growth.items():
            values: dict[str, Any] = {"faces": Track.faces + g["n"], "ended": g["ended"],
                                      "frames": sa.case((Track.closed, Track.frames), else_=Track.frames + g["n"])}
            for col in ("last_frame", "last_time"):
                if g[col] is not None:
                    values[col] = sa.case((Track.closed, getattr(Track, col)), else_=g[col])
            conn.execute(sa.update(Track).where(Track.id == tid).values(**values))
        return len(ids)

    def _write_track(self, conn: sa.Connection, tr: TrackResult, new_tracks: dict) -> None:
        sid = self._source_id(conn, clean_text(tr.source, SOURCE_LENGTH) or self.source)
        now = self.clock()
        key = (sid, int(tr.track))
        if key in self._carried and not (self._tracks.get(key) or new_tracks.get(key)):
            tid = self._carried[key]  # every face of it is in the ended session: its end goes there
        else:
            tid = self._track_id(conn, sid, int(tr.track), new_tracks, started=now, ended=now)
        conn.execute(sa.update(Track).where(Track.id == tid).values(
            first_frame=tr.first_frame, last_frame=tr.last_frame, frames=tr.frames, first_time=tr.first_time,
            last_time=tr.last_time, confidence=tr.confidence, closed=True))
        conn.execute(sa.delete(TrackAnswer).where(TrackAnswer.track_id == tid))
        rows = self._answer_rows(tr.answers, track_id=tid)
        if rows:
            conn.execute(sa.insert(TrackAnswer), rows)

    def _write_snapshot(self, conn: sa.Connection, source_id: int, at: float, w: int, h: int, jpeg: bytes) -> None:
        ins = _dialect_insert(self.engine, Snapshot).values(source_id=source_id, time=at, width=w, height=h, jpeg=jpeg)
        conn.execute(ins.on_conflict_do_update(index_elements=["source_id"],
                                               set_=dict(time=at, width=w, height=h, jpeg=jpeg)))
