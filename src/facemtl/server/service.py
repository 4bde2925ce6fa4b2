"""The service layer: what the routes ask for, done with the pipeline and the store.

Routes only parse requests and call these methods; errors a client caused come back as
:class:`ServiceError` (a status and one sentence), never as a traceback.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from ..inference.results import ERROR, ImageResult
from ..tasks import Task
from .schemas import usable_tasks

log = logging.getLogger("facemtl.server")

#: Seconds between the upload session's heartbeats (a source of uploads is ``running`` while
#: the server runs; a reader calls it silent after three missed beats).
UPLOAD_HEARTBEAT = 10.0
#: Uploads kept in memory while the database is away (the oldest go first beyond it): about
#: 10,000 answers with their thumbnails is tens of megabytes.
MAX_UNSTORED = 10_000
#: Seconds a request waits for a read of the results database before it answers 503. A read on
#: a pooled connection waits for ever on a server that does not answer while its machine does
#: (stopped, or stuck: a user test's requests hung until PostgreSQL went on; no client-side
#: query timeout in psycopg's synchronous API, and TCP keepalives see nothing wrong).
READ_WAIT = 30.0
#: The same for ``/v1/health``'s ping (a monitor has a timeout of its own, often 10 s).
HEALTH_WAIT = 5.0
#: Seconds an upload waits for the database to store it before it is answered ``kept`` (written
#: when the database answers). A SQLite file another program held locked kept uploads waiting
#: the busy timeout, 30 s, and a client's own timeout then gave up on uploads that were stored
#: all the same, which a retry stored twice (a user test).
UPLOAD_WAIT = 5.0
#: Upload writes waiting on the database at once (:data:`UPLOAD_WAIT`); past it, an upload is
#: answered ``kept`` at once. Their own, not the reads' slots: a burst of uploads while the
#: database was locked took all 64, and reads, ``/v1/health`` and the stop's last write then
#: failed at once (a review).
MAX_WAITING_UPLOADS = 8
_uploading = threading.BoundedSemaphore(MAX_WAITING_UPLOADS)
#: Seconds the server's stop waits for the database to take the uploads kept and end the upload
#: session: a locked file held it 91 s, past a service manager's stop timeout (a user test).
CLOSE_WAIT = 10.0


class NoAnswer(Exception):
    """The database did not answer within the wait (see :func:`within`)."""


#: At most this many reads wait on the database at once (:func:`within`); past it, a read is
#: :class:`NoAnswer` at once. A frozen database otherwise left one more waiting thread behind
#: every poll of a live view and every request, for as long as it stayed frozen (a review).
MAX_WAITING_READS = 64
_waiting = threading.BoundedSemaphore(MAX_WAITING_READS)


#: ``within``'s default slots: the reads' (:data:`_waiting`, looked up at each call).
_READS: Any = object()


def within(seconds: float, fn: Callable[..., Any], *args: Any, slots: Any = _READS, **kw: Any) -> Any:
    """``fn(*args, **kw)`` on a thread of its own, waited for at most ``seconds``: its value, or
    its exception raised here; :class:`NoAnswer` past the wait, the thread left to finish (a
    daemon: it holds up neither the request nor the server's exit; its answer is dropped), and
    at once while ``slots`` (reads': :data:`MAX_WAITING_READS`) such threads have not finished
    (``None``: no limit)."""
    out: dict[str, Any] = {}
    done = threading.Event()
    if slots is _READS:
        slots = _waiting
    if slots is not None and not slots.acquire(blocking=False):
        raise NoAnswer

    def run() -> None:
        try:
            out["value"] = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc
        finally:
            if slots is not None:
                slots.release()
            done.set()

    try:
        threading.Thread(target=run, name="facemtl-db-read", daemon=True).start()
    except BaseException:  # no thread could start (a thread limit): nothing waits, nothing holds the slot
        if slots is not None:
            slots.release()
        raise
    if not done.wait(seconds):
        raise NoAnswer
    if "error" in out:
        raise out["error"]
    return out["value"]


class ServiceError(Exception):
    """A request the service cannot answer: an HTTP status and one sentence saying why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Handing:
    """Where one request stands with the store, for the server's stop (:mod:`~facemtl.server.cutoff`):
    ``handed`` once :meth:`Service._store` took its upload to be stored; ``cut`` once the stop
    answered it (503) before the route did. Both are set under the service's queue lock, so
    exactly one comes first: an upload cut before it was handed is never stored (its worker
    thread, which the stop does not end, finds ``cut`` and drops it), and one handed before the
    cut is stored as any other (by the stop's last write at the latest)."""

    def __init__(self) -> None:
        self.handed = False
        self.cut = False


def _read(method: Callable[..., Any]) -> Callable[..., Any]:
    """A read of the database: when the database cannot be reached, or does not answer within
    :attr:`Service.read_wait` seconds, :class:`ServiceError` 503 (as ``/v1/health`` says)
    instead of an internal error or a request waiting for ever."""

    @functools.wraps(method)
    def read(self: "Service", *args: Any, **kw: Any) -> Any:
        try:
            return within(self.read_wait, method, self, *args, **kw)
        except ServiceError:
            raise
        except NoAnswer:
            log.warning("the results database did not answer a read within %g s", self.read_wait)
            raise ServiceError(503, f"the results database did not answer within {self.read_wait:g} s (busy, "
                                    "locked or stopped); try again shortly") from None
        except Exception as exc:
            from ..store.engine import broken, unreachable

            if unreachable(exc):
                log.warning("the results database does not answer: %s", str(exc).strip().splitlines()[0])
                raise ServiceError(503, "the results database does not answer (down or unreachable); try again "
                                        "shortly") from None
            why = broken(exc)
            if why is None:
                raise
            log.error("the results database failed: %s", why, exc_info=exc)
            raise ServiceError(503, f"the results database failed: {why} (the server log says more)") from None

    return read


class Service:
    """Analysis of uploads (``predictor``; ``None``: a server that only reads) and reads of
    the results database (``store``; ``None``: a server that stores nothing).

    ``detector``, ``min_face``: see :class:`~facemtl.inference.pipeline.Pipeline`.
    ``thumbnails``: store a small crop of each uploaded face (off by default).
    """

    #: Seconds a read waits before it answers 503; ``/v1/health``'s ping (see :data:`READ_WAIT`).
    read_wait: float = READ_WAIT
    health_wait: float = HEALTH_WAIT

    def __init__(self, store: Any = None, predictor: Any = None, detector: str = "mtcnn", min_face: float | None = None,
                 thumbnails: bool = False) -> None:
        self.store = store
        self.predictor = predictor
        self.thumbnails = thumbnails
        self.pipeline = None
        if predictor is not None:
            from ..inference.pipeline import Pipeline

            self.pipeline = Pipeline(predictor, detector, min_face, workers=1, keep_images=True)
        base = list(predictor.tasks) if predictor is not None else []
        self._newest_session = store.newest_session() if store is not None else 0
        tasks = store.tasks(base) if store is not None else base
        #: Per task, every class name the database's sessions recorded (filters take them all).
        self.classes: dict[str, list[str]] = store.class_names() if store is not None else {}
        #: Per task name, what its stored models answered (classes, numbers, levels): the API's
        #: records declare every form (:class:`~facemtl.server.schemas.Schemas`).
        self.kinds: dict[str, set[str]] = store.task_kinds() if store is not None else {}
        self.tasks: list[Task]
        self.tasks, self.warnings = usable_tasks(tasks)
        self._writer = None
        self._unstored: deque[tuple[ImageResult, Any]] = deque()  # uploads not handed to the writer yet
        self._failing = False
        #: Why uploads cannot be stored at all (their source name belongs to another kind of run), once known.
        self._refused_source: str | None = None
        self._closed = False
        #: Whether the uploads' source of an earlier run of the server was looked for (see :meth:`beat`).
        self._resumed_source = False
        #: Set when the server starts to stop: open live views end, so that stopping waits for no viewer.
        self.stopping = threading.Event()
        self._lost = 0  # uploads dropped because MAX_UNSTORED were waiting
        self._lock = threading.Lock()  # held while the database is written
        self._queue_lock = threading.Lock()  # held while _unstored and the flags are changed, never while writing
        # Analyses at once: one per core (the framework's thread pool would run dozens side by side,
        # each holding a decoded photo, all slower than one after the other on a small CPU).
        from ..system import usable_cores

        self._analysing = threading.BoundedSemaphore(max(1, usable_cores()))

    # -- analysis ----------------------------------------------------------------------------
    def analyze(self, data: bytes, filename: str | None = None, annotate: bool = False,
                source: str | None = None, handing: Handing | None = None) -> tuple[dict[str, Any], str]:
        """Every face in the uploaded photo: the JSON of one line of ``analyze --json`` (plus
        ``annotated`` when asked) and how it was stored (see :meth:`_store`; ``handing``: the
        request's, which the server's stop may cut off first).

        The photo is read as ``analyze`` reads a file (the pipeline decodes it, large JPEGs
        reduced: see :func:`~facemtl.images.read_image`), so both answer alike and a large
        upload never holds its full-size pixels. :class:`ServiceError` 415 if it is no image.
        """
        if self.pipeline is None:
            raise ServiceError(503, "this server was started without a model (--no-model): it cannot analyse photos")
        if not data:
            raise ServiceError(400, "the uploaded file is empty; send a photo (JPEG, PNG, WebP, ...) in the field "
                                    "'file'")  # (a client's mistake, not a kind of file: 400, a user test)
        self._check_source(source)
        name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:200] or "upload"
        from ..faces import BrokenDetector

        with self._analysing:
            try:
                result = next(self.pipeline.run([(ImageResult(file=name), io.BytesIO(data))]))
            except BrokenDetector as exc:  # the server's detector (a plugin's), not the upload: say so
                log.error("analysis of an upload failed: %s", exc)
                raise ServiceError(500, f"the photo could not be analysed: {exc}") from None
        if result.status == ERROR:
            if not (result.error or "").startswith("face detection failed"):  # the pipeline could not decode it
                if "pixel limit" in result.error or "decompression bomb" in result.error:  # an image, too large
                    raise ServiceError(413, f"the uploaded image is too large to analyse: {result.error}")
                raise ServiceError(415, f"the uploaded file is not an image facemtl can read: {result.error}")
            log.error("analysis of an upload failed: %s", result.error)
            raise ServiceError(500, "the photo could not be analysed (the server log says why)")
        faces = result.faces_on_image()  # the pixels searched: smaller than the photo when decoded reduced
        rgb, result.image = result.image, None
        out = result.to_dict()
        if annotate:
            from ..sinks.annotate import draw_faces
            from ..sinks.db import jpeg_bytes

            jpeg = jpeg_bytes(draw_faces(rgb, faces), 1600, quality=85)
            out["annotated"] = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        stored = self._store(result, rgb, faces, source, handing)
        return out, stored

    def cut(self, handing: Handing) -> bool:
        """Mark a request the server's stop cut off before it was answered; whether its upload
        had been handed to the store before (it will be stored, as any other: see :class:`Handing`).
        Called on the event loop: the queue lock is never held while the database is waited for."""
        with self._queue_lock:
            handing.cut = True
            return handing.handed

    def _store(self, result: ImageResult, rgb: Any, faces: list[Any], source: str | None,
               handing: Handing | None = None) -> str:
        """Store ``result`` (``faces``: its faces in the pixels of ``rgb``, for thumbnails); says
        how, as the ``X-Facemtl-Stored`` header does: ``yes``; ``kept`` (the database does not
        answer: kept in memory and written when it does); ``refused`` (the database refused its
        data: dropped, logged); ``no`` (no database, a read-only one, or the server is stopping);
        ``none`` (the photo has no face: the store keeps faces, so there was nothing to store)."""
        if self.store is None or self.store.read_only:
            return "no"
        if not result.faces:
            return "none"
        thumbs = None
        if self.thumbnails and result.faces:
            from ..sinks.db import face_thumbnail

            thumbs = [face_thumbnail(rgb, f.box) for f in faces]
        result.source = source
        with self._queue_lock:  # (never held while the database is waited for)
            if handing is not None and handing.cut:  # the stop answered its request: "not stored", and so it is
                raise ServiceError(503, "the server stopped before answering; the upload was not stored")
            if self._closed:  # the server is stopping: answered, not stored
                return "no"
            if self._refused_source is not None:  # said once in the log when it was found
                return "refused"
            if len(self._unstored) >= MAX_UNSTORED:  # the database has been away a long time: memory is bounded
                self._unstored.popleft()
                self._lost += 1
                if self._lost in (1, 10, 100) or self._lost % 1000 == 0:
                    log.warning("%d uploads dropped, oldest first: the results database has not answered for %d "
                                "uploads", self._lost, MAX_UNSTORED)
            self._unstored.append((result, thumbs))
            if handing is not None:
                handing.handed = True
            if self._failing:  # the database is away: the heartbeat tries (each upload trying in turn under
                return "kept"  # the lock waited one connection timeout after the other, a review found)
        try:  # the write goes on after the wait (the lock held): this upload is answered "kept"
            return within(UPLOAD_WAIT, self._write_now, slots=_uploading)
        except NoAnswer:
            return "kept"

    def _write_now(self) -> str:
        """Write the uploads kept (this one among them, unless a write before took it) and say
        how (see :meth:`_store`)."""
        with self._lock:
            if self._closed or self._failing:  # (stored by the stop, or said lost there; the database away)
                return "kept"
            dropped = self._writer.dropped if self._writer is not None else 0
            if not self._write_uploads():
                return "kept"
            if self._refused_source is not None:
                return "refused"
            return "yes" if self._writer.dropped == dropped else "refused"

    def _write_uploads(self, announce: bool = False) -> bool:
        """Write the uploads not stored yet, with the upload session's heartbeat (call under the
        lock; ``announce``: a session opened now marks its source running before any upload).
        While the database is away they stay in memory and this says ``False``; they are written
        by :meth:`beat` once it answers (an upload meanwhile is kept without trying)."""
        from ..store import SourceKindError

        try:
            if self._writer is None:
                self._writer = self.store.writer("upload", self._upload_source, self.predictor.info,
                                                 {"thumbnails": self.thumbnails}, heartbeat=UPLOAD_HEARTBEAT,
                                                 announce=announce)
            while self._unstored:
                item = self._unstored.popleft()  # (an upload may append, or drop the oldest, meanwhile)
                try:
                    self._writer.add(*item)
                except BaseException:
                    self._unstored.appendleft(item)  # only gone once the writer holds it
                    raise
            self._writer.flush()
        except SourceKindError as exc:  # not an outage: waiting would never store them
            log.error("uploads are not stored: %s", exc)
            self._refused_source = str(exc)
            self._unstored.clear()
            return True
        except Exception as exc:
            if not self._failing:
                log.warning("cannot store uploads (kept in memory and written when the database answers): %s",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            self._failing = True
            return False
        if self._failing:
            log.warning("the results database answers again; the uploads kept meanwhile are stored")
        self._failing = False
        return True

    def beat(self) -> None:
        """The upload session's heartbeat (the server calls it every :data:`UPLOAD_HEARTBEAT`
        seconds): the sources of uploads stay ``running`` while the server runs, and uploads
        kept while the database was away are written once it answers."""
        if self.store is None or self.store.read_only:
            return
        with self._lock:
            if self._closed:
                return
            if self._writer is not None or self._unstored:
                self._write_uploads()
            elif not self._resumed_source and self.predictor is not None:
                self._resume_source()

    def _resume_source(self) -> None:
        """At the first beat, the uploads' source an earlier run of the server left ``stopped``
        is taken up again (a new session, ``running``), so the Sources tab says the server takes
        uploads before the first one (a user test: ``stopped`` until then). A server whose
        database has no such source makes none until an upload comes. Quietly tried again at
        the next beat while the database does not answer."""
        try:
            kind = self.store.source_kind(self._upload_source)
        except Exception as exc:  # noqa: BLE001 - the next beat looks again
            log.debug("could not look for the uploads' source: %s", exc)
            return
        if kind != "upload":
            self._resumed_source = True
        else:  # looked for again at the next beat if the database stopped answering meanwhile (a review)
            self._resumed_source = self._write_uploads(announce=True)

    @property
    def _upload_source(self) -> str:
        return f"upload@{socket.gethostname()}"

    def _check_source(self, source: str | None) -> None:
        """:class:`ServiceError` 409 if ``source`` names a camera's or a folder's source: uploads
        never write into (nor take over the state of) another writer's source."""
        if source is None or self.store is None:
            return
        try:
            kind = within(self.read_wait, self.store.source_kind, source)
        except Exception:  # the database is away: the upload is kept, and never claims a source of another kind
            return
        if kind is not None and kind != "upload":
            from ..store import SourceKindError  # (the sentence every writer refuses such a name with)

            raise ServiceError(409, str(SourceKindError(source, kind, "upload")))

    # -- reads ---------------------------------------------------------------------------------
    def _need_store(self) -> Any:
        if self.store is None:
            raise ServiceError(503, "this server has no results database")
        return self.store

    @_read
    def faces(self, q: Any) -> dict[str, Any]:
        items, nxt = self._need_store().faces(q)
        return {"items": items, "next": nxt}

    @_read
    def one(self, kind: str, ident: int) -> dict[str, Any]:
        """One stored face or track (``kind``: ``faces`` or ``tracks``); 404 when there is none."""
        rec = self._need_store().one(kind, ident)
        if rec is None:
            raise ServiceError(404, f"no {kind[:-1]} {ident}: it was never stored, or was deleted (by retention or "
                                    "facemtl db delete)")
        return rec

    @_read
    def tracks(self, q: Any) -> dict[str, Any]:
        items, nxt = self._need_store().tracks(q)
        return {"items": items, "next": nxt}

    @_read
    def stats(self, since: float | None, until: float | None, bucket: float | None, **kw: Any) -> dict[str, Any]:
        until = until if until is not None else time.time()
        since = since if since is not None else until - 86400
        if bucket is None:  # a round size giving at most 100 buckets
            span = max(until - since, 1.0)
            bucket = next((b for b in (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400) if span / b <= 100),
                          float(int(span / 100) + 1))
        order = {t.name: groups for t in self.tasks if (groups := t.group_names()) is not None}
        # numbers in this model's bands, whatever bands the model that stored them had
        regroup = {t.name: t.subgroups for t in self.tasks if t.class_names() is None and t.name in order}
        return self._need_store().stats(since, until, float(bucket), order=order, regroup=regroup, **kw)

    @_read
    def sources(self) -> list[dict[str, Any]]:
        return self._need_store().sources()

    @_read
    def snapshot(self, source_id: int) -> tuple[float, bytes]:
        store = self._need_store()
        snap = store.snapshot(source_id)
        if snap is None and not any(s["id"] == source_id for s in store.sources()):  # (a user test: "has no
            raise ServiceError(404, f"there is no source {source_id} (GET /v1/sources lists them)")  # live frame")
        if snap is None:
            raise ServiceError(404, f"source {source_id} has no live frame (it is not a stream, writes none, or "
                                    "the retention or a deletion removed its last one)")
        return snap

    @_read
    def thumbnail(self, face_id: int) -> bytes:
        jpeg = self._need_store().thumbnail(face_id)
        if jpeg is None:
            raise ServiceError(404, f"no thumbnail for face {face_id}: no such face, or it was stored without one "
                                    "(analyze, stream and serve store them only with --thumbnails)")
        return jpeg

    def new_tasks(self) -> str | None:
        """What sessions started since the last look recorded that the API does not know yet (a
        server started on an empty database before its first writer, or a writer with another
        model): tasks :attr:`tasks` lacks (added to it), class names :attr:`classes` lacks
        (a model trained again with other classes); a sentence for the log saying which, or
        ``None`` when nothing is new or the database does not answer (the next look tries
        again). One query while no session has started."""
        if self.store is None:
            return None

        def read() -> tuple[Any, ...] | None:
            newest = self.store.newest_session()
            if newest == self._newest_session:
                return None
            return newest, self.store.tasks(self.tasks), self.store.class_names(), self.store.task_kinds()

        try:  # (the request that looks waits for it: no longer than /v1/health waits for its ping)
            found = within(self.health_wait, read)
            if found is None:
                return None
            newest, stored, classes, kinds = found
            known = {t.name for t in self.tasks}
            tasks, warnings = usable_tasks(stored)
        except Exception as exc:  # noqa: BLE001 - reads say so themselves; this look is tried again later
            log.debug("could not look for new tasks: %s", exc)
            return None
        self._newest_session = newest
        added = [t for t in tasks if t.name not in known]
        for w in warnings:
            if w not in self.warnings:
                self.warnings.append(w)
                log.warning(w)
        self.tasks = self.tasks + added
        from ..store.queries import filter_classes

        own = {t.name: filter_classes(t, self.classes) or [] for t in self.tasks}
        more = {k: [n for n in v if n not in own.get(k, [])] for k, v in classes.items()}
        more = {k: v for k, v in more.items() if v and k not in {t.name for t in added}}
        self.classes = classes
        said = []
        new_kinds = sorted(k for k, v in kinds.items() if k in self.kinds and v - self.kinds[k])
        if new_kinds:
            said.append(f"other forms of answers a writer recorded since (classes, numbers, levels): "
                        f"{', '.join(new_kinds)}")
        self.kinds = kinds
        if added:
            said.append(f"tasks a writer recorded since the server started: {', '.join(t.name for t in added)}")
        if more:
            said.append("class names a writer recorded since: " + "; ".join(f"{k} {', '.join(v)}"
                                                                           for k, v in more.items()))
        return " and ".join(said) or None

    def health(self) -> dict[str, str]:
        if self.store is None:
            return {"status": "ok", "database": "none"}
        try:
            within(self.health_wait, self.store.ping)
        except NoAnswer:
            return {"status": "error", "database": "not answering"}
        except Exception:
            return {"status": "error", "database": "unreachable"}
        return {"status": "ok", "database": "ok"}

    def close(self) -> None:
        """Store what is kept, end the upload session (its sources ``stopped``), stop the workers.
        Idempotent: a heartbeat or an upload after it writes nothing (it would mark the stopped
        sources ``running`` again)."""
        with self._queue_lock:
            if self._closed:
                return
            self._closed = True  # (an upload from now on is answered "no"; a beat writes nothing)
        try:
            within(CLOSE_WAIT, self._finish, slots=None)  # (no slot to wait for: the stop's write always runs)
        except NoAnswer:  # (the write goes on, a daemon thread, until the process ends)
            held = len(self._writer.pending.images) if self._writer is not None else 0
            log.warning("the results database did not answer within %g s of the stop: %d uploads kept in memory "
                        "are not stored", CLOSE_WAIT, len(self._unstored) + held)
        if self.pipeline is not None:
            self.pipeline.close()

    def _finish(self) -> None:
        """The stop's last write: the uploads kept, then the end of the upload session."""
        from ..store.engine import reason

        with self._lock:
            if self._unstored or self._writer is not None:
                self._write_uploads()
            if self._writer is not None:
                try:
                    self._writer.close()
                except Exception as exc:  # (one sentence: the driver's first line, not its SQL and link)
                    log.warning("could not close the upload session (%d faces of uploads not stored): %s",
                                self._writer.pending.faces + sum(len(r.faces) for r, _ in self._unstored),
                                reason(exc))
            elif self._unstored:
                log.warning("%d uploads were never stored: the results database did not answer before the server "
                            "stopped", len(self._unstored))
