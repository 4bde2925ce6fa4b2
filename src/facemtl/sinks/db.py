"""The database sink: ``analyze --db URL`` and ``stream --db URL`` write results through it.

Results are buffered and written in batches, each in one transaction
(:class:`~facemtl.store.writer.SessionWriter`): a batch goes out once it holds
``batch_faces`` faces, once its oldest result has waited ``max_wait`` seconds, or when
a heartbeat is owed, and at ``close()``. A writer killed with SIGKILL loses at most the
batch it had not committed.

``background``: the batches are written on a thread of the sink's own (``stream --db``), so
that a database that is slow, locked by another program or gone without a word (a network
cut, a frozen server) never holds up the camera: a user test's stream stopped analysing for
45 s when PostgreSQL's network went quiet, and for 30 s while another program held a SQLite
file's lock, and ignored SIGTERM meanwhile. ``close`` then waits for that thread at most its
``wait``, and says how many faces were not stored.

With the pixels on the results (the pipeline's ``keep_images``) it can also store:

* ``thumbnails``: a small JPEG of each face (off by default: faces are personal data);
* ``snapshot_every``: every so many seconds, the latest frame of each source with its
  faces drawn, as one row per source that the operator page's live view reads (so a
  camera on one machine is watched through a server on another). On by default for
  ``kind="stream"``.

Needs the ``serve`` extra (SQLAlchemy, Alembic; psycopg for PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import socket
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np

from ..inference.model_info import ModelInfo
from ..inference.results import ERROR, ImageResult, TrackResult
from .base import Sink

#: Side in pixels of stored face thumbnails.
THUMB_SIDE = 96
#: Long side in pixels of stored live frames.
SNAPSHOT_SIDE = 960


def jpeg_bytes(image: np.ndarray, max_side: int | None = None, quality: int = 80) -> bytes:
    """``(H, W, 3) uint8`` RGB as JPEG bytes, shrunk to ``max_side`` on its long side."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image))
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def face_thumbnail(image: np.ndarray, box: list[float] | None, side: int = THUMB_SIDE) -> bytes:
    """The face's box with a 20 % margin, squared, as a ``side`` x ``side`` JPEG."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box if box else (0, 0, w, h)
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 0.6
    left, top = int(max(0, cx - half)), int(max(0, cy - half))
    right, bottom = int(min(w, cx + half)), int(min(h, cy + half))
    crop = image[top:max(bottom, top + 1), left:max(right, left + 1)]
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(crop)).resize((side, side), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


#: Faces kept in memory while the database is away (about 3 KB each without thumbnails: some
#: 300 MB, 12 minutes of a 30 fps camera with 4-5 faces a frame); past it the oldest are dropped.
MAX_BACKLOG = 100_000
#: Faces written per transaction while a backlog is caught up, between frames.
CATCH_UP_FACES = 2_000
#: Seconds :meth:`DbSink.close` waits for a database that does not answer before it gives up.
CLOSE_WAIT = 10.0


class DbSink(Sink):
    """Writes results to the results database at ``url`` (a SQLAlchemy URL or a SQLite file
    path; default ``$FACEMTL_DB_URL`` or ``facemtl-results.db``).

    ``source``: the name results without ``ImageResult.source`` are filed under (default
    ``<kind>@<host>``). ``kind``: ``analyze``, ``stream`` or ``upload``. ``model_info``:
    the predictor's :class:`ModelInfo` (its name, version and tasks go on the session and
    the faces). ``store``: an open :class:`~facemtl.store.Store` to share instead of ``url``.
    ``heartbeat``: seconds between the writer's "alive" updates of its sources. ``max_backlog``:
    faces kept while the database is away (past it the oldest are dropped, with a warning; a
    backlog is caught up :data:`CATCH_UP_FACES` at a time, between results). ``sources``:
    the other names results will carry (a stream's several cameras). ``absolute_files``: store a
    relative ``ImageResult.file`` as an absolute path (``analyze --db``: the database outlives the
    folder a run started in, and is read from other machines); off, a file name is stored as
    given (a library's own names need not be paths). ``live_frames``: off, no live frame is
    stored whatever ``snapshot_every`` says (a whole frame, every face in it). A name that belongs to
    another kind of writer (``stream --db`` with the name of the server's uploads) is refused
    here, before anything is written: :class:`~facemtl.store.SourceKindError`, a ``RuntimeError``.

    One line for ``stream``: ``DbSink(url, source=name, kind="stream", model_info=predictor.info,
    background=True)``.
    """

    def __init__(self, url: str | None = None, source: str | None = None, kind: str = "analyze",
                 model_info: ModelInfo | None = None, thumbnails: bool = False, batch_faces: int = 64,
                 max_wait: float = 1.0, snapshot_every: float | None = None, heartbeat: float = 2.0,
                 settings: dict[str, Any] | None = None, store: Any = None, sources: Sequence[str] = (),
                 max_backlog: int = MAX_BACKLOG, absolute_files: bool = False, live_frames: bool = True,
                 background: bool = False) -> None:
        from ..store import Store

        self.owns_store = store is None
        self.store = store if store is not None else Store(url)
        self.source = source or f"{kind}@{socket.gethostname()}"
        self.absolute_files = absolute_files
        self.thumbnails = thumbnails
        self.batch_faces = batch_faces
        self.max_wait = max_wait
        self.snapshot_every = snapshot_every if snapshot_every is not None else (1.0 if kind == "stream" else None)
        if not live_frames:  # none at all (stream --no-live-frame)
            self.snapshot_every = None
        try:
            self.writer = self.store.writer(kind, self.source, model_info, settings, heartbeat,
                                            announce=source is not None, sources=sources)
        except BaseException:
            if self.owns_store:
                self.store.close()
            raise
        self._last_snapshot: dict[str, float] = {}
        self._failures = 0
        self._retry_at = 0.0
        self.max_backlog = max_backlog
        self._lost_said = False
        self._flushing = threading.Lock()  # one flush at a time (the thread's, or flush() called meanwhile)
        self._thread: threading.Thread | None = None
        if background:
            self._wake = threading.Event()
            self._deadline: float | None = None  # set by close(): the thread closes the session by then
            self._close_error: BaseException | None = None
            self._thread = threading.Thread(target=self._run, name="facemtl-db-writer", daemon=True)
            self._thread.start()

    @property
    def incomplete(self) -> bool:
        """Faces dropped past the backlog's limit, or refused by the database (each said when it happened)."""
        return bool(self.writer.lost or self.writer.dropped)

    @property
    def session_id(self) -> int:
        return self.writer.session_id

    def write(self, result: ImageResult) -> None:
        if self.absolute_files and result.file:  # (normalised too: photos/../photos/a.jpg, //: what --skip-stored finds)
            result = dataclasses.replace(result, file=os.path.abspath(result.file))
        thumbs = None
        if self.thumbnails and result.image is not None and result.faces:
            # in the decoded image's pixels: a large photo is decoded reduced (a review: its
            # thumbnails were crops of the wrong place, the rocket beside the astronaut)
            thumbs = [face_thumbnail(result.image, f.box) for f in result.faces_on_image()]
        self.writer.add(result, thumbs)
        if self.snapshot_every is not None and result.image is not None and result.status != ERROR:
            name = result.source or self.source
            now = time.monotonic()
            if now - self._last_snapshot.get(name, -1e9) >= self.snapshot_every:
                self._last_snapshot[name] = now
                self.writer.add_snapshot(name, self.snapshot_jpeg(result), result.width or 0, result.height or 0,
                                         result.wall_time)
        self._flush_if_due()

    def snapshot_jpeg(self, result: ImageResult) -> bytes:
        from .annotate import draw_faces

        return jpeg_bytes(draw_faces(result.image, result.faces_on_image()), SNAPSHOT_SIDE)

    def write_track(self, track: TrackResult) -> None:
        self.writer.add_track(track)
        self._flush_if_due()

    def flush(self) -> None:
        """Write what is buffered now (one transaction)."""
        with self._flushing:
            self.writer.flush()

    def _flush_if_due(self) -> None:
        if self._thread is None:
            self._maybe_flush()
            return
        # the backlog's cap holds here too: the thread may be stuck in a flush for as long as a frozen
        # server takes, and results still come (a review: 1,797 faces kept past a cap of 60)
        self._limit_backlog()
        if self.writer.due(self.batch_faces, self.max_wait):
            self._wake.set()

    def _run(self) -> None:
        """The writing thread (``background``): flushes what is due, then closes the session when
        :meth:`close` asks, by its deadline."""
        try:
            while self._deadline is None:
                if not (self.writer.due(self.batch_faces, self.max_wait) and time.monotonic() >= self._retry_at):
                    self._wake.wait(0.25)  # (a backlog is caught up slice after slice without waiting)
                    self._wake.clear()
                if self._deadline is None:
                    try:
                        self._maybe_flush()
                    except Exception as exc:  # (not the database's failure, which _maybe_flush keeps and retries:
                        self._thread_failed(exc)  # one more try later, said; a review: the thread died silently)
            self._close_waiting(max(0.0, self._deadline - time.monotonic()))
        except BaseException as exc:  # raised in close(), on the caller's thread (a review: a thread
            self._close_error = exc   # that died without a word stored nothing more, and close() passed)

    def _thread_failed(self, exc: Exception) -> None:
        print(f"facemtl: warning: the results database's writing thread failed ({type(exc).__name__}: {exc}); "
              "results are kept and retried", file=sys.stderr)
        self._back_off()

    def _back_off(self) -> None:
        """One more failure in a row: the next try in 1, 2, 4 ... 32 s (2 ** n overflowed after
        1,024 failures, some 8.5 hours away: a review)."""
        self._failures += 1
        self._retry_at = time.monotonic() + 2.0 ** min(self._failures - 1, 5)

    def heartbeat(self) -> None:
        """Say the source is alive while no frame arrives (``facemtl stream`` calls this about
        once a second while its cameras deliver nothing: ``Stream.on_idle``); writes whatever is
        due, as :meth:`write` does."""
        self._flush_if_due()

    def _limit_backlog(self) -> None:
        if self.writer.limit_backlog(self.max_backlog) and not self._lost_said:
            self._lost_said = True
            print(f"facemtl: warning: the results database has been away for {self.max_backlog:,} faces; the oldest "
                  "kept faces are dropped from now on, so that memory stays bounded (the JSON or CSV output keeps "
                  "them)", file=sys.stderr)

    def _maybe_flush(self) -> None:
        self._limit_backlog()
        if not self.writer.due(self.batch_faces, self.max_wait) or time.monotonic() < self._retry_at:
            return
        try:
            with self._flushing:
                kept = self.writer.pending.faces
                self.writer.flush(max_faces=CATCH_UP_FACES)
        except Exception as exc:  # the database went away: keep the batch, try again later (_back_off)
            if self._failures == 0:
                print(f"facemtl: warning: cannot write to the results database ({type(exc).__name__}: "
                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); results are kept and "
                      "retried", file=sys.stderr)
            self._back_off()
            return
        if self._failures:
            print(f"facemtl: the results database answers again; the {kept:,} faces kept for it are being written",
                  file=sys.stderr)
        self._failures, self._retry_at = 0, 0.0

    def close(self, wait: float | None = None) -> None:
        """Write what is left and end the session; ``RuntimeError`` if the database will not take it.
        A database that does not answer is waited for, up to ``wait`` seconds (default
        :data:`CLOSE_WAIT`; an operations test stopped a stream during a database restart, and
        what was kept for the database was dropped at once)."""
        if self.writer.lost:
            print(f"facemtl: warning: {self.writer.lost:,} faces were not stored: the results database was away "
                  f"past a backlog of {self.max_backlog:,} faces, and the oldest were dropped", file=sys.stderr)
        wait = CLOSE_WAIT if wait is None else wait
        try:
            if self._thread is None:
                self._close_waiting(wait)
            else:
                self._close_thread(wait)
            if self.writer.dropped:  # said batch by batch as refused; the count in all, once (a user test: none did)
                print(f"facemtl: warning: the results of {self.writer.dropped:,} frames or photos were refused by the "
                      "results database and are not stored (the lines above say why)", file=sys.stderr)
        except Exception as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            said = f"the results database did not take the last {self.writer.unstored_faces} faces: {why}"
            if "disk is full" in why or "No space left" in why:  # SQLite's words for a full disk: exit 1
                from ..store.engine import redacted

                raise OSError(errno.ENOSPC, said[:1].upper() + said[1:], redacted(self.store.url)) from None
            raise RuntimeError(said) from None
        finally:
            if self.owns_store:
                self.store.close()


    def _close_thread(self, wait: float) -> None:
        """Have the writing thread write what is left and end the session within ``wait`` seconds;
        past them it is left behind (a database that does not answer at all: a frozen server, a
        network that drops every packet, which no socket error ends) and a ``RuntimeError`` says so."""
        self._deadline = time.monotonic() + wait
        self._wake.set()
        self._thread.join(wait + 0.5)  # (a second signal interrupts this wait: the stream's abort)
        if self._thread.is_alive():
            raise RuntimeError(f"it did not answer within {wait:g} s")
        if self._close_error is not None:
            raise self._close_error
        if not self.writer.closed:  # (never so while the thread catches everything; said, not passed over)
            raise RuntimeError("its writing thread ended before the session did")

    def _close_waiting(self, wait: float) -> None:
        from ..store.engine import server_gone

        deadline, said = time.monotonic() + wait, False
        while True:
            try:
                self.writer.close()
                return
            except Exception as exc:
                # a database server that went away (a restart): worth waiting for; SQLite (its own
                # busy timeout covers locks) and a refusal (read-only, full) are said at once
                if not server_gone(self.store.url, exc) or time.monotonic() >= deadline:
                    raise
                if not said:
                    print("facemtl: the results database does not answer; waiting up to "
                          f"{round(wait, 1):g} s for it to take "
                          f"the last {self.writer.pending.faces} faces", file=sys.stderr)
                    said = True
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def open_db_sink(url: str, model_info: ModelInfo | None, thumbnails: bool = False, kind: str = "analyze",
                 source: str | None = None, sources: Sequence[str] = (), absolute_files: bool = False,
                 live_frames: bool = True) -> DbSink:
    """``analyze --db`` / ``stream --db``: a :class:`DbSink`, or one sentence naming the extra it needs
    or the source name that belongs to another kind of writer (see :class:`DbSink`).
    ``source``: the name of results that carry none (a stream's single source); ``sources``:
    the names the results carry (a stream's several sources)."""
    try:
        import alembic  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"--db needs the serve extra (pip install 'facemtl[serve]'): {exc}") from None
    return DbSink(url, source=source, kind=kind, model_info=model_info, thumbnails=thumbnails, sources=sources,
                  absolute_files=absolute_files, live_frames=live_frames, background=kind == "stream")

