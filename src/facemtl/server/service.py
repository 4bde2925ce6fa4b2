"""The service layer: what the routes ask for, done with the pipeline and the store.

Routes only parse requests and call these methods; errors a client caused come back as
:class:`ServiceError` (a status and one sentence), never as a traceback.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import threading
import time
from typing import Any

from ..inference.results import ERROR, ImageResult
from ..tasks import Task
from .schemas import usable_tasks

log = logging.getLogger("facemtl.server")


class ServiceError(Exception):
    """A request the service cannot answer: an HTTP status and one sentence saying why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Service:
    """Analysis of uploads (``predictor``; ``None``: a server that only reads) and reads of
    the results database (``store``; ``None``: a server that stores nothing).

    ``detector``, ``min_face``: see :class:`~facemtl.inference.pipeline.Pipeline`.
    ``thumbnails``: store a small crop of each uploaded face (off by default).
    """

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
        tasks = store.tasks(base) if store is not None else base
        self.tasks: list[Task]
        self.tasks, self.warnings = usable_tasks(tasks)
        self._writer = None
        self._lock = threading.Lock()
        # Analyses at once: one per core (the framework's thread pool would run dozens side by side,
        # each holding a decoded photo, all slower than one after the other on a small CPU).
        from ..system import usable_cores

        self._analysing = threading.BoundedSemaphore(max(1, usable_cores()))

    # -- analysis ----------------------------------------------------------------------------
    def decode(self, data: bytes) -> Any:
        """The uploaded bytes as an RGB array; :class:`ServiceError` 415 if they are no image."""
        from ..images import describe_error, load_rgb

        if not data:
            raise ServiceError(415, "the uploaded file is empty; send a photo (JPEG, PNG, WebP, ...) in the field "
                                    "'file'")
        try:
            return load_rgb(io.BytesIO(data))
        except Exception as exc:
            reason = describe_error(exc)
            raise ServiceError(415, f"the uploaded file is not an image facemtl can read: {reason}") from None

    def analyze(self, data: bytes, filename: str | None = None, annotate: bool = False,
                source: str | None = None) -> tuple[dict[str, Any], bool]:
        """Every face in the uploaded photo: the JSON of one line of ``analyze --json`` (plus
        ``annotated`` when asked) and whether it was stored."""
        if self.pipeline is None:
            raise ServiceError(503, "this server was started without a model (--no-model): it cannot analyse photos")
        name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:200] or "upload"
        with self._analysing:
            rgb = self.decode(data)
            result = next(self.pipeline.run([(ImageResult(file=name), rgb)]))
        if result.status == ERROR:
            log.error("analysis of an upload failed: %s", result.error)
            raise ServiceError(500, "the photo could not be analysed (the server log says why)")
        out = result.to_dict()
        if annotate:
            from ..sinks.annotate import draw_faces
            from ..sinks.db import jpeg_bytes

            jpeg = jpeg_bytes(draw_faces(rgb, result.faces), 1600, quality=85)
            out["annotated"] = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        stored = self._store(result, rgb, source)
        return out, stored

    def _store(self, result: ImageResult, rgb: Any, source: str | None) -> bool:
        if self.store is None:
            return False
        thumbs = None
        if self.thumbnails and result.faces:
            from ..sinks.db import face_thumbnail

            thumbs = [face_thumbnail(rgb, f.box) for f in result.faces]
        result.image = None
        result.source = source
        with self._lock:
            try:
                if self._writer is None:
                    self._writer = self.store.writer("upload", f"upload@{socket.gethostname()}", self.predictor.info,
                                                     {"thumbnails": self.thumbnails}, heartbeat=3600.0, announce=False)
                self._writer.add(result, thumbs)
                self._writer.flush()
                return True
            except Exception as exc:  # kept in the writer's buffer and written with the next upload
                log.warning("could not store an upload (kept for the next try): %s", exc)
                return False

    # -- reads ---------------------------------------------------------------------------------
    def _need_store(self) -> Any:
        if self.store is None:
            raise ServiceError(503, "this server has no results database")
        return self.store

    def faces(self, q: Any) -> dict[str, Any]:
        items, nxt = self._need_store().faces(q)
        return {"items": items, "next": nxt}

    def tracks(self, q: Any) -> dict[str, Any]:
        items, nxt = self._need_store().tracks(q)
        return {"items": items, "next": nxt}

    def stats(self, since: float | None, until: float | None, bucket: float | None, **kw: Any) -> dict[str, Any]:
        until = until if until is not None else time.time()
        since = since if since is not None else until - 86400
        if bucket is None:  # a round size giving at most 100 buckets
            span = max(until - since, 1.0)
            bucket = next((b for b in (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400) if span / b <= 100),
                          float(int(span / 100) + 1))
        order = {t.name: t.class_names() for t in self.tasks if t.class_names() is not None}
        return self._need_store().stats(since, until, float(bucket), order=order, **kw)

    def sources(self) -> list[dict[str, Any]]:
        return self._need_store().sources()

    def snapshot(self, source_id: int) -> tuple[float, bytes]:
        snap = self._need_store().snapshot(source_id)
        if snap is None:
            raise ServiceError(404, f"source {source_id} has no live frame (it is not a stream, or writes none)")
        return snap

    def thumbnail(self, face_id: int) -> bytes:
        jpeg = self._need_store().thumbnail(face_id)
        if jpeg is None:
            raise ServiceError(404, f"face {face_id} has no thumbnail (thumbnails are off unless switched on)")
        return jpeg

    def health(self) -> dict[str, str]:
        if self.store is None:
            return {"status": "ok", "database": "none"}
        try:
            self.store.ping()
        except Exception:
            return {"status": "error", "database": "unreachable"}
        return {"status": "ok", "database": "ok"}

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                try:
                    self._writer.close()
                except Exception as exc:
                    log.warning("could not close the upload session: %s", exc)
        if self.pipeline is not None:
            self.pipeline.close()
