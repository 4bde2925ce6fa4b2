"""The results database: sources, sessions, tracks, faces and their answers.

Tables (times are seconds since the epoch, UTC, as ``double precision``):

* ``sources``: a camera, a stream URL, a folder run by ``analyze``, the server's uploads.
  Its heartbeat (``state``, ``last_seen``, ``fps``) says whether a writer is alive.
* ``sessions``: one run of ``stream``, ``analyze`` or the server, with the model it ran
  (name, version and task specs, so a reader knows every task without the model file).
* ``tracks``: one person followed through a video by a session; ``faces`` counts its
  stored faces (kept equal to them in every transaction), ``closed`` is set when the
  stream reported the track's end with its aggregated answers (``track_answers``).
* ``faces``: one detected face: when (wall clock), where in the media (frame, file,
  position), its box, detector score, landmarks, the model's name and version.
* ``answers``: one row per face, task and kind (the index of the face's ``fields``):
  ``raw`` false for the face's answers (a track's smoothed answers in a video, the only
  answers in a photo), true for the frame's own answers beside smoothed ones. ``value_text`` holds a class name,
  ``value_num`` a number in label units (the class index for classification tasks),
  ``grp`` the group the task puts the value in (its class, or e.g. ``20-39`` years)
  for counts over time. ``time`` repeats the face's time so counts over time read one
  index.
* ``thumbnails`` (off by default: faces are personal data) and ``snapshots`` (the
  latest annotated frame of each live source, for the operator's live view).
* ``no_face_files``: the files an ``analyze`` session read and found no face in (the
  faces' rows name the others), so that ``analyze --skip-stored`` does not read them again.

Why answers are stored twice, as rows and as a document: tasks come from the model (a
user trains their own), so there can be no column per task. Rows with indexes on
``(task, raw, value_text)`` and ``(task, raw, value_num)`` make a filter on any task's
class or range an index lookup on SQLite and PostgreSQL alike, with no DDL per model,
and counts by group read one covering index; the document on the face row (``fields``)
makes reading a page of 50 faces one query and 50 small JSON documents rather than
hundreds of rows (three times faster, measured). Both are written in one transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Face ids: 64-bit on PostgreSQL (a camera at 30 frames per second runs past 2**31 faces in
#: a couple of years); SQLite's INTEGER PRIMARY KEY is 64-bit already. Sessions, tracks and
#: faces are ``AUTOINCREMENT`` tables on SQLite so that an id is never given out twice, even
#: after retention deleted the newest rows (API clients follow faces by id); PostgreSQL's
#: sequences never go back.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


#: Constraint names fixed by rule, so migrations can name what they change on every database.
NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s"}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {float: sa.Double, dict[str, Any]: sa.JSON, list[Any]: sa.JSON}


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    #: ``stream``, ``analyze`` or ``upload``: the kind of writer that created it, the only one
    #: that files results under it (a later writer of that kind takes it over).
    kind: Mapped[str] = mapped_column(sa.String(20))
    host: Mapped[str | None] = mapped_column(sa.String(200))
    created: Mapped[float]
    #: ``running`` while a writer holds it (alive while ``last_seen`` is recent), ``stopped``
    #: once it closed cleanly.
    state: Mapped[str] = mapped_column(sa.String(20), default="stopped")
    last_seen: Mapped[float | None]
    session_id: Mapped[int | None] = mapped_column(sa.ForeignKey("sessions.id", ondelete="SET NULL"))
    #: A running stream's frames per second from this source (results, with faces or without)
    #: over the last 10 s, or since its first frame (see :mod:`facemtl.store.writer`): for a
    #: stream of one source, the FPS its summary prints. ``None`` for other kinds and once stopped.
    fps: Mapped[float | None]
    #: Seconds between heartbeats the writer promised (a reader calls it silent after 3 of them).
    heartbeat: Mapped[float | None]


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``stream``, ``analyze`` or ``upload`` (the server).
    kind: Mapped[str] = mapped_column(sa.String(20))
    host: Mapped[str | None] = mapped_column(sa.String(200))
    pid: Mapped[int | None]
    #: When the writer's process started (:func:`facemtl.system.process_start`; schema 0005): with
    #: ``host`` and ``pid`` it names the process, whose number a later one may hold (a restarted
    #: container's 1).
    process_start: Mapped[str | None] = mapped_column(sa.String(100))
    started: Mapped[float] = mapped_column(index=True)
    ended: Mapped[float | None]
    model_name: Mapped[str | None] = mapped_column(sa.String(200))
    model_version: Mapped[str | None] = mapped_column(sa.String(100))
    #: The model's task specs (:meth:`Task.to_dict`): a reader builds the tasks from them.
    tasks: Mapped[list[Any] | None]
    settings: Mapped[dict[str, Any] | None]


class Track(Base):
    __tablename__ = "tracks"
    __table_args__ = (sa.UniqueConstraint("session_id", "source_id", "track"),
                      sa.Index("ix_tracks_ended", "ended", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    #: The stream's own track number (unique within a session and source).
    track: Mapped[int]
    first_frame: Mapped[int | None]
    last_frame: Mapped[int | None]
    #: Frames the stream saw the track in (its TrackResult), else the stored faces so far.
    frames: Mapped[int] = mapped_column(default=0)
    #: Faces stored for the track (equal to its rows in ``faces`` after every transaction).
    faces: Mapped[int] = mapped_column(default=0)
    first_time: Mapped[float | None]  # position in the media, seconds
    last_time: Mapped[float | None]
    started: Mapped[float]  # wall clock of its first face
    ended: Mapped[float]  # wall clock of its last face (or of its end)
    confidence: Mapped[float | None]
    closed: Mapped[bool] = mapped_column(default=False)


class Face(Base):
    __tablename__ = "faces"
    __table_args__ = (sa.Index("ix_faces_time", "time", "id"), sa.Index("ix_faces_source_time", "source_id", "time"),
                      sa.Index("ix_faces_session_time", "session_id", "time"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    source_id: Mapped[int] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"))
    track_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    #: Wall clock: when the frame was captured (live sources) or the face stored (files).
    time: Mapped[float]
    frame: Mapped[int | None]
    media_time: Mapped[float | None]  # position in the video, seconds
    file: Mapped[str | None] = mapped_column(sa.String(1000))
    x1: Mapped[float | None]
    y1: Mapped[float | None]
    x2: Mapped[float | None]
    y2: Mapped[float | None]
    score: Mapped[float | None]
    landmarks: Mapped[list[Any] | None]
    model_name: Mapped[str | None] = mapped_column(sa.String(200))
    model_version: Mapped[str | None] = mapped_column(sa.String(100))
    #: Every answer as ``analyze --json`` prints it (``{"age": 31.0, "age_interval": [26, 37],
    #: "gender": "female", ...}``), the frame's own under ``"raw"``: what a reader returns, in
    #: one document per face (the ``answers`` rows are the index that filters and counts).
    fields: Mapped[dict[str, Any] | None]


class _AnswerColumns:
    """What faces' and tracks' answer rows hold (see the module doc)."""

    value_text: Mapped[str | None] = mapped_column(sa.String(200))
    value_num: Mapped[float | None]
    probability: Mapped[float | None]
    lo: Mapped[float | None]
    hi: Mapped[float | None]
    probabilities: Mapped[dict[str, Any] | None]
    grp: Mapped[str | None] = mapped_column(sa.String(64))


class Answer(_AnswerColumns, Base):
    __tablename__ = "answers"
    __table_args__ = (sa.Index("ix_answers_text", "task", "raw", "value_text"),
                      sa.Index("ix_answers_num", "task", "raw", "value_num"),
                      sa.Index("ix_answers_time", "raw", "time", "task", "grp"))

    face_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    raw: Mapped[bool] = mapped_column(primary_key=True)
    time: Mapped[float]


class TrackAnswer(_AnswerColumns, Base):
    __tablename__ = "track_answers"
    __table_args__ = (sa.Index("ix_track_answers_text", "task", "value_text"),
                      sa.Index("ix_track_answers_num", "task", "value_num"))

    track_id: Mapped[int] = mapped_column(sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True)
    task: Mapped[str] = mapped_column(sa.String(64), primary_key=True)


class Thumbnail(Base):
    __tablename__ = "thumbnails"

    face_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(sa.LargeBinary)


class Snapshot(Base):
    __tablename__ = "snapshots"

    source_id: Mapped[int] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    time: Mapped[float]
    width: Mapped[int]
    height: Mapped[int]
    jpeg: Mapped[bytes] = mapped_column(sa.LargeBinary)


class NoFaceFile(Base):
    """A file an ``analyze`` session read and found no face in: with the files its faces
    name, what ``analyze --skip-stored`` leaves out (schema 0004). A path and a time, no
    personal data; retention deletes it by its time, a session's deletion with the session."""

    __tablename__ = "no_face_files"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    #: The absolute, normalised path, as ``analyze --db`` stores a face's file.
    file: Mapped[str] = mapped_column(sa.String(1000), index=True)
    #: When it was read (wall clock).
    time: Mapped[float] = mapped_column(index=True)


#: Every table, for migrations and tests.
TABLES = Base.metadata.tables
