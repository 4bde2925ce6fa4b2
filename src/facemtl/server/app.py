"""``create_app``: the FastAPI application behind ``facemtl serve``.

``/v1/...``: the API (:mod:`facemtl.server.routes`); ``/``: the operator page (plain
HTML, one script, one style sheet, shipped in ``static/``: no CDN); ``/openapi.json``:
the API's documentation. FastAPI's interactive ``/docs`` and ``/redoc`` are switched off:
they load Swagger UI and ReDoc from a CDN, and nothing here fetches from elsewhere.
Errors are one sentence in ``{"detail": ...}``; an unexpected one is logged here and
reaches the client as "internal server error", never as a traceback.
"""

from __future__ import annotations

import logging
import mimetypes
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .. import __version__
from .auth import token_dependency
from .cutoff import CutOff
from .filters import task_filters
from .guards import HEADERS, LocalOnly, SecurityHeaders
from .limits import UploadLimit
from .replays import Replays
from .routes import build_router
from .schemas import Schemas
from .service import UPLOAD_HEARTBEAT, Service, ServiceError

log = logging.getLogger("facemtl.server")

#: Default upload limit (bytes).
MAX_UPLOAD = 20 * 2**20
STATIC = resources.files("facemtl.server") / "static"
# The page's files by their suffix, whatever the machine's MIME table says (some map .js to
# text/plain, which a browser refuses to run under X-Content-Type-Options: nosniff).
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/css", ".css")

#: Seconds between looks for tasks a writer recorded since the server started (:class:`NewTasks`).
TASKS_LOOK_EVERY = 5.0

#: Where a request's invalid value was, as a sentence names it.
_PLACES = {"query": "query parameter", "body": "form field", "path": "path part", "header": "header"}


def validation_sentence(errors: list[dict]) -> str:
    """FastAPI's validation errors as one sentence: ``query parameter 'limit': input should be
    less than or equal to 500; ...``."""
    parts = []
    for e in errors:
        loc = list(e.get("loc", ()))
        place = _PLACES.get(str(loc[0]), str(loc[0])) if loc else "request"
        # the parameter's name, not the index of a repeated one (loc ('query', 'gender', 0))
        name = str(loc[1]) if len(loc) > 1 else ""
        items = [f"item {x + 1}" if isinstance(x, int) else str(x) for x in loc[2:]]
        msg = str(e.get("msg", "is not valid"))
        if "Expected UploadFile" in msg:  # a form field of text where a file belongs: FastAPI names a Python class
            msg = "must be a file, not text (curl -F file=@photo.jpg)"
        msg = msg[:1].lower() + msg[1:]
        where = f"{place} {name!r}" + (f" ({', '.join(items)})" if items else "") if name else place
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "the request is not valid"


def _retention_loop(service: Service, days: float, stop: threading.Event, every: float = 3600.0) -> None:
    while True:
        try:
            gone = service.store.purge(days)
            if any(gone.values()):
                log.info("retention (%g days): deleted %s", days, gone)
        except Exception as exc:  # the next round tries again
            log.warning("retention purge failed: %s", exc)
        if stop.wait(every):
            return


def _beat_loop(service: Service, stop: threading.Event) -> None:
    while True:  # (the first beat at once: it takes up an earlier run's source of uploads)
        try:
            service.beat()
        except Exception as exc:  # the next beat tries again
            log.warning("upload heartbeat failed: %s", exc)
        if stop.wait(UPLOAD_HEARTBEAT):
            return


def create_app(store: Any = None, predictor: Any = None, token: str | None = None, max_upload: int = MAX_UPLOAD,
               detector: str = "mtcnn", min_face: float | None = None, thumbnails: bool = False,
               retention_days: float | None = None, local_names: Sequence[str] | None = None) -> FastAPI:
    """The application over a :class:`~facemtl.store.Store` (``None``: nothing stored or
    read) and a :class:`~facemtl.inference.predictor.Predictor` (``None``: no analysis).

    ``token``: the API token every ``/v1`` route but health wants (``None``: open; the
    CLI refuses that on a non-loopback address). ``max_upload``: bytes an upload may hold
    (413 past it). ``thumbnails``: store a crop of each uploaded face. ``retention_days``:
    delete what is older, at start and hourly. ``local_names``: for a server without a token,
    the host names besides loopback ones it answers to (``facemtl serve`` passes the one it
    binds); a request naming another ``Host``, or a POST from a page of another origin, is
    refused (:class:`~facemtl.server.guards.LocalOnly`). ``None``: no such check (a test
    client's ``testserver``, or a server behind a proxy that checks it).
    """
    service = Service(store, predictor, detector, min_face, thumbnails)
    for w in service.warnings:
        log.warning(w)
    auth = token_dependency(token) if token else None
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if retention_days is not None and store is not None and store.read_only:
            log.warning("retention is off: the database is read-only")
        elif retention_days is not None and store is not None:
            threading.Thread(target=_retention_loop, args=(service, retention_days, stop), daemon=True,
                             name="facemtl-retention").start()
        if store is not None and predictor is not None and not store.read_only:
            threading.Thread(target=_beat_loop, args=(service, stop), daemon=True, name="facemtl-uploads").start()
        yield
        stop.set()
        service.close()

    app = FastAPI(title="facemtl", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,  # served below, behind the token: it names every task and class
                  description="Face attributes from facemtl's multi-task model: analyse photos, and read the faces, "
                              "tracks, counts and live sources stored in the results database.")
    app.state.service = service
    #: The answers remembered per Idempotency-Key (made once: the routes are mounted again with new tasks).
    app.state.replays = replays = Replays()

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with ``detail`` one sentence as every other error's (its list of
        errors kept under ``errors`` for programs)."""
        detail = validation_sentence(exc.errors())
        if any(list(e.get("loc", ()))[:1] == ["body"] for e in exc.errors()) and "curl -F" not in detail and \
                not request.headers.get("content-type", "").startswith("multipart/form-data"):
            detail += "; send the photo as multipart/form-data in the field 'file' (curl -F file=@photo.jpg)"
        return JSONResponse({"detail": detail, "errors": jsonable_encoder(exc.errors())}, status_code=422)

    generated = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema with the 422 body as :func:`invalid` sends it."""
        schema = generated()  # cached by FastAPI on the app: patched once
        body = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
        if body is not None:
            body["properties"] = {"detail": {"type": "string", "title": "Detail"},
                                  "errors": {"type": "array", "title": "Errors",
                                             "items": {"$ref": "#/components/schemas/ValidationError"}}}
            body["required"] = ["detail"]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(auth)] if auth else [])
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        # (answered by the outermost layer, outside SecurityHeaders: the headers are given here)
        return JSONResponse({"detail": "internal server error (the server log says more)"}, status_code=500,
                            headers={**HEADERS, "Cache-Control": "no-store"})

    api_routes: list[Any] = []

    def mount_api() -> None:
        """The ``/v1`` routes for the service's tasks (their filters, their fields), in place of
        any mounted before; the API's documentation is generated again."""
        schemas = Schemas(service.tasks, service.kinds)
        router = build_router(service, schemas, task_filters(service.tasks, service.classes), auth, replays)
        old = {id(r) for r in api_routes}
        before = len(app.router.routes)
        app.include_router(router)  # (so that app.dependency_overrides reach them, as any router's)
        api_routes[:] = app.router.routes[before:]
        app.router.routes = [r for r in app.router.routes if id(r) not in old]
        app.openapi_schema = None

    mount_api()
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    def mount_new_tasks(said: str) -> None:
        mount_api()
        log.info("%s (the page shows them within about 15 s)", said)

    # (the last added runs first: headers on every answer, then the stop's cut-off (a JSON 503 for a
    # request cut off, with the headers), then the host check, then the token and size of an upload,
    # before any byte of its body is read)
    app.add_middleware(UploadLimit, max_bytes=max_upload, paths=("/v1/analyze",), token=token)
    if store is not None:
        app.add_middleware(NewTasks, look=service.new_tasks, mount=mount_new_tasks)
    if local_names is not None and not token:
        app.add_middleware(LocalOnly, names=local_names)
    app.add_middleware(CutOff, cut=service.cut, uploads=("/v1/analyze",))
    app.add_middleware(SecurityHeaders)
    return app


class NewTasks:
    """ASGI middleware: before a request, at most every ``every`` seconds, ``look()`` (in a
    worker thread) for tasks a writer recorded since the server started, and ``mount(added)``
    them (on the event loop), so that a server
    started on an empty database serves the answers, filters and counts of the streams that
    write to it later, without a restart. A request that comes while another looks does not wait."""

    def __init__(self, app: Any, look: Any, mount: Any, every: float | None = None) -> None:
        self.app, self.look, self.mount = app, look, mount
        self.every = every if every is not None else TASKS_LOOK_EVERY
        self._next = 0.0
        self._looking = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._looking and time.monotonic() >= self._next:
            self._looking = True
            try:
                said = await run_in_threadpool(self.look)  # the database, in a worker thread
                if said:  # the routes, here on the event loop: /openapi.json is built here too, never mid-swap
                    self.mount(said)
            finally:
                self._looking = False
                self._next = time.monotonic() + self.every
        await self.app(scope, receive, send)
