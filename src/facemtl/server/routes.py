"""The ``/v1`` routes: each parses its request and calls the service, nothing more.

No ``from __future__ import annotations`` here: FastAPI reads the annotations, and some
are built from the tasks at run time (e.g. ``Literal`` of their names)."""


import asyncio
import hashlib
import logging
import time
from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, File, Header, HTTPException, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import __version__
from ..store.queries import MAX_LIMIT, AnswerFilter, PastNewest, parse_time
from ..store.queries import Query as StoreQuery
from .cutoff import HANDING
from .filters import TaskFilter, answer_filter_dependency
from .replays import Answer, Replays, parse_key
from .schemas import ErrorOut, Health, Schemas, SourceOut, StatsOut, TaskInfo, VersionOut, task_fields
from .service import NoAnswer, Service, within

log = logging.getLogger("facemtl.server")

NAME = r"^[^\x00-\x1f\x7f]*$"  # printable: no control characters in names
INT32 = 2**31 - 1
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "a filter or parameter that cannot be used"},
    401: {"model": ErrorOut, "description": "missing or wrong API token"},
    503: {"model": ErrorOut, "description": "no database or no model on this server"},
}
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "a JPEG image"},
        404: {"model": ErrorOut, "description": "there is none"}}


def _epoch(name: str, value: str | None) -> float | None:
    """``value`` in seconds since the epoch (:func:`~facemtl.store.queries.parse_time`); 400 naming ``name``."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(400, f"{name} must be {exc}") from None


def _common(
    since: Optional[str] = Query(None, max_length=64, description="from this time on (ISO 8601, UTC unless it says; "
                                                                  "or seconds since the epoch)"),
    until: Optional[str] = Query(None, max_length=64, description="up to this time (the same forms)"),
    source: Optional[str] = Query(None, max_length=200, pattern=NAME, description="a source's name"),
    session: Optional[int] = Query(None, ge=1, le=INT32, description="a session's id"),
) -> dict[str, Any]:
    return {"since": _epoch("since", since), "until": _epoch("until", until), "source": source, "session": session}


def _page(limit: int = Query(50, ge=1, le=MAX_LIMIT, description="items per page"),
          cursor: Optional[str] = Query(None, max_length=64, pattern=r"^-?[0-9.eE+-]+_[0-9]+$",
                                        description="the 'next' of the page before")) -> dict[str, Any]:
    return {"limit": limit, "cursor": cursor}


def _query(service_call, **kw: Any) -> Any:
    try:
        q = StoreQuery(**kw)
        q.position()
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        return service_call(q)
    except PastNewest as exc:  # a follower's ?after= above every id: the database was purged, or is another
        raise HTTPException(409, str(exc)) from None


def _once(request: Request, repeatable: set[str]) -> None:
    """400 for a query parameter given twice that takes one value: ``?source=a&source=b`` read
    only ``b``, ``limit=5&limit=500`` 500, without a word, where a class filter given twice
    means either (a user test)."""
    keys = request.query_params.keys()
    twice = sorted({k for k in keys if k not in repeatable and len(request.query_params.getlist(k)) > 1})
    if twice:
        n = len(request.query_params.getlist(twice[0]))
        raise HTTPException(400, f"the query parameter {twice[0]!r} is given {n} times; it takes one value (a class "
                                 "filter, such as gender=, may be repeated)")


async def _one_file(request: Request) -> None:
    """Refuse an upload with several ``file`` fields (FastAPI would silently analyse the last)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        n = len((await request.form()).getlist("file"))  # parsed once: FastAPI reads the same cached form
        if n > 1:
            raise HTTPException(422, f"the upload holds {n} 'file' fields; send one photo per request")


def _fingerprint(data: bytes, annotate: bool, source: str | None) -> bytes:
    """What makes two uploads the same request for their Idempotency-Key: the photo's bytes
    (SHA-256), ``annotate`` and ``source`` (the file's name aside: the answer names the first's)."""
    return hashlib.sha256(data).digest() + repr((annotate, source)).encode()


ANALYZE_DOC = """Every face in one photo: the same JSON as one line of ``facemtl analyze --json``;
the faces are stored as a session of uploads when the server has a database
(``X-Facemtl-Stored`` says how).

With an ``Idempotency-Key`` header (a unique value per upload, such as a UUID; at most 255
characters), an upload sent again with the same key, photo, ``annotate`` and ``source`` gets
the first one's answer (its body and ``X-Facemtl-Stored``, with ``Idempotent-Replayed: true``)
and is neither analysed nor stored again; sent while the first is still being answered, it
waits for that answer (10 s at most, then 409: retry). The same key with another photo or
parameters is a 422. Only successful answers are remembered, for 24 hours (at most 5,000 of
them, and 64 MiB: the oldest are forgotten first), in the memory of the server process: a
restart forgets them.

A request still running when the server's stop cuts it off (20 s after the signal) is a 503
with ``Retry-After``, saying whether the upload was stored."""


def build_router(service: Service, schemas: Schemas, filters: list[TaskFilter], auth: Any = None,
                 replays: Replays | None = None) -> APIRouter:
    """The ``/v1`` routes over ``service``; ``auth``: the token dependency (``None``: open);
    ``replays``: the answers remembered per Idempotency-Key (kept across mounts by the app)."""
    replays = replays if replays is not None else Replays()
    deps = [Depends(auth)] if auth is not None else []
    answers = answer_filter_dependency(filters)
    known = {p for f in filters for p in f.params}
    router = APIRouter(prefix="/v1")

    # ?gender=male&gender=female: either; /v1/stats?task=age&task=gender: both (a review)
    repeatable = {f.params[0] for f in filters if f.by_class} | {"task"}

    def only_known(request: Request, extra: set[str]) -> None:
        unknown = sorted(set(request.query_params) - known - extra)
        if unknown:
            raise HTTPException(400, f"unknown query parameter {unknown[0]!r}; this route takes: "
                                     f"{', '.join(sorted(known | extra))}")
        _once(request, repeatable)

    @router.get("/health", response_model=Health, responses={503: {"model": Health}}, tags=["service"])
    def health() -> Any:
        """Whether the server and its database answer (no token needed)."""
        h = service.health()
        return h if h["status"] == "ok" else JSONResponse(h, status_code=503)

    # HEAD for load balancers' checks (out of the schema: one operation per route there)
    router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @router.get("/version", response_model=VersionOut, dependencies=deps, responses=ERRORS, tags=["service"])
    def version() -> Any:
        """facemtl's version, the API's, the model's (name, version, tasks) and the database's schema."""
        p = service.predictor
        model = {"name": p.info.name, "version": p.info.version, "tasks": p.info.tasks} if p is not None else None
        st = service.store
        db = {"dialect": st.dialect, "schema": st.revision, "access": "read-only" if st.read_only else "read-write"} \
            if st is not None else {"dialect": None, "schema": None, "access": None}
        return {"facemtl": __version__, "api": "v1", "model": model, "database": db}

    @router.get("/tasks", response_model=list[TaskInfo], dependencies=deps, responses=ERRORS, tags=["service"])
    def tasks() -> Any:
        """The tasks this server knows (its model's, then those stored sessions recorded), with
        their classes, their filter parameters and their fields."""
        return [{"name": f.task.name, "classes": f.classes, "levels": f.levels, "filters": f.params,
                 "fields": list(task_fields(f.task)), "groups": f.task.group_names()} for f in filters]

    @router.post("/analyze", response_model=schemas.Analysis, dependencies=[*deps, Depends(_one_file)],
                 responses={**ERRORS, 409: {"model": ErrorOut, "description": "the source belongs to a stream or a "
                                                                            "folder run, or the first request with "
                                                                            "this Idempotency-Key is still being "
                                                                            "answered"},
                            413: {"model": ErrorOut, "description": "the upload is over the size limit"},
                            415: {"model": ErrorOut, "description": "the upload is not an image"},
                            422: {"model": ErrorOut, "description": "an invalid request, or an Idempotency-Key "
                                                                    "used for another request"},
                            503: {"model": ErrorOut, "description": "no model on this server, or the server "
                                                                    "stopped before answering (Retry-After)"}},
                 tags=["analysis"], description=ANALYZE_DOC)
    def analyze(request: Request, file: UploadFile = File(..., description="a photo"),
                annotate: bool = Query(False, description="also return the photo with boxes and labels drawn"),
                source: Optional[str] = Query(None, min_length=1, max_length=200, pattern=NAME,
                                              description="store the faces under this source name"),
                idempotency_key: Optional[str] = Header(None, alias="Idempotency-Key",
                                                        description="a unique value per upload (a UUID): the "
                                                                    "upload sent again is answered, not stored "
                                                                    "again")) -> Any:
        """:data:`ANALYZE_DOC` (the route's description in the API's document)."""
        unknown = sorted(set(request.query_params) - {"annotate", "source"})
        if unknown:  # a misspelt ?sorce=cam stored the faces under the default source without a word
            raise HTTPException(400, f"unknown query parameter {unknown[0]!r}; this route takes: annotate, source")
        _once(request, set())
        key = parse_key(idempotency_key)
        data = file.file.read()
        handing = request.scope.get(HANDING)
        if key is None:
            return analysis(data, file.filename, annotate, source, handing)[0]
        claim = replays.claim(key, _fingerprint(data, annotate, source))
        if isinstance(claim, Answer):
            return Response(claim.body, media_type="application/json",
                            headers={"X-Facemtl-Stored": claim.stored, "Idempotent-Replayed": "true"})
        try:
            response, stored = analysis(data, file.filename, annotate, source, handing)
        except BaseException:  # an error is not remembered: a retry runs again
            replays.drop(claim)
            raise
        replays.keep(claim, Answer(bytes(response.body), stored))
        return response

    def analysis(data: bytes, filename: str | None, annotate: bool, source: str | None,
                 handing: Any) -> tuple[JSONResponse, str]:
        """The upload analysed (and stored): the answer and its ``X-Facemtl-Stored`` value."""
        out, stored = service.analyze(data, filename, annotate, source, handing)
        schemas.Analysis.model_validate(out)  # the documented shape, checked; sent as analyze --json writes it
        return JSONResponse(out, headers={"X-Facemtl-Stored": stored}), stored

    def faces_route(request: Request, common: dict = Depends(_common), page: dict = Depends(_page),
                    track: Optional[int] = Query(None, ge=1, le=INT32, description="a track's id (/v1/tracks)"),
                    after: Optional[int] = Query(None, ge=0, le=2**63 - 1,
                                                 description="follow new results: the faces stored after the face "
                                                             "of this id, in the order stored (call again with the "
                                                             "last id; not with cursor)"),
                    answer_filters: list[AnswerFilter] = Depends(answers)) -> Any:
        only_known(request, {"since", "until", "source", "session", "track", "limit", "cursor", "after"})
        return _query(service.faces, **common, **page, track=track, after=after, answers=answer_filters)

    faces_doc = ("Stored faces, newest first, filtered by time, source, session, track and any task's class or "
                 "value range; page with ``next``. To follow new results, pass ``after`` (the last id seen) "
                 "instead: ``since`` selects by capture time, and with several writers a batch can be stored "
                 "after faces captured later than it.")
    past = {409: {"model": ErrorOut, "description": "after is past the newest face (purged): start again from 0"}}
    router.add_api_route("/faces", faces_route, methods=["GET"], response_model=schemas.FacePage, dependencies=deps,
                         responses={**ERRORS, **past}, tags=["results"], summary="Faces", description=faces_doc,
                         operation_id="faces")
    router.add_api_route("/detections", faces_route, methods=["GET"], response_model=schemas.FacePage,
                         dependencies=deps, responses={**ERRORS, **past}, tags=["results"],
                         summary="Detections (= faces)",
                         description="The same as ``/v1/faces``.", operation_id="detections")

    missing = {404: {"model": ErrorOut, "description": "there is none (never stored, or deleted by retention)"}}

    @router.get("/faces/{face_id}", response_model=schemas.Face, dependencies=deps,
                responses={**ERRORS, **missing}, tags=["results"])
    def face(face_id: int = Path(..., ge=1, le=2**63 - 1)) -> Any:
        """One stored face, as the list gives it (404: never stored, or deleted by retention)."""
        return service.one("faces", face_id)

    @router.get("/tracks/{track_id}", response_model=schemas.Track, dependencies=deps,
                responses={**ERRORS, **missing}, tags=["results"])
    def track(track_id: int = Path(..., ge=1, le=INT32)) -> Any:
        """One stored track with its answers, as the list gives it (404: never stored, or deleted)."""
        return service.one("tracks", track_id)

    @router.get("/faces/{face_id}/thumbnail.jpg", dependencies=deps, responses={**ERRORS, **JPEG},
                response_class=Response, tags=["results"])
    def thumbnail(face_id: int = Path(..., ge=1, le=2**63 - 1)) -> Response:
        """A stored face's thumbnail (only when the writer stored thumbnails)."""
        return Response(service.thumbnail(face_id), media_type="image/jpeg")

    @router.get("/tracks", response_model=schemas.TrackPage, dependencies=deps, responses=ERRORS, tags=["results"])
    def tracks_route(request: Request, common: dict = Depends(_common), page: dict = Depends(_page),
                     closed: Optional[bool] = Query(None, description="only ended (true) or open (false) tracks"),
                     answer_filters: list[AnswerFilter] = Depends(answers)) -> Any:
        """People followed through videos, latest first; filters as for faces (answer filters
        match a closed track's aggregated answers)."""
        only_known(request, {"since", "until", "source", "session", "closed", "limit", "cursor"})
        return _query(service.tracks, **common, **page, closed=closed, answers=answer_filters)

    task_names = tuple(f.task.name for f in filters) or ("-",)

    @router.get("/stats", response_model=StatsOut, dependencies=deps, responses=ERRORS, tags=["results"])
    def stats(request: Request, common: dict = Depends(_common),
              bucket: Optional[float] = Query(None, gt=0, le=366 * 86400, allow_inf_nan=False,
                                              description="bucket size in seconds (default: a round size, at most "
                                                          "100 buckets)"),
              of: Literal["faces", "tracks"] = Query("faces", description="count faces or ended tracks"),
              task: Optional[list[Literal[task_names]]] = Query(None, description="only these tasks"),  # type: ignore
              answer_filters: list[AnswerFilter] = Depends(answers)) -> Any:
        """Counts by each task's classes or groups over time buckets (default: the last 24 hours),
        of the faces (or ended tracks) the filters select, as ``/v1/faces`` (``/v1/tracks``) does."""
        only_known(request, {"since", "until", "source", "session", "bucket", "of", "task"})
        try:
            StoreQuery(answers=answer_filters)  # the same checks as /v1/faces (a range's bounds)
            return service.stats(common["since"], common["until"], bucket, of=of, tasks=task, source=common["source"],
                                 session=common["session"], answers=answer_filters)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    @router.get("/sources", response_model=list[SourceOut], dependencies=deps, responses=ERRORS, tags=["live"])
    def sources() -> Any:
        """Every source and its state from its writer's heartbeat: running, silent or stopped."""
        return service.sources()

    @router.get("/sources/{source_id}/snapshot.jpg", dependencies=deps, responses={**ERRORS, **JPEG},
                response_class=Response, tags=["live"])
    def snapshot(source_id: int = Path(..., ge=1, le=INT32)) -> Response:
        """The latest annotated frame of a live source (its writer stores one a second)."""
        t, jpeg = service.snapshot(source_id)
        return Response(jpeg, media_type="image/jpeg", headers={"X-Frame-Time": repr(t), "Cache-Control": "no-store"})

    @router.get("/sources/{source_id}/live.mjpeg", dependencies=deps, include_in_schema=False)
    async def live(source_id: int = Path(..., ge=1, le=INT32),
                   seconds: float = Query(600, gt=0, le=3600)) -> StreamingResponse:
        """The live frames of a source as MJPEG (``multipart/x-mixed-replace``) for ``seconds``:
        each new snapshot the writer stores is pushed as it arrives; a source that is not
        running (stopped, or silent: its writer missed three heartbeats) gets its last frame and
        the stream ends, as it does when the server starts to stop."""
        await run_in_threadpool(service.snapshot, source_id)  # 404 now rather than an empty stream

        def poll() -> tuple[Any, bool]:
            # at most read_wait: a frozen database held the poll, and with it the viewer, for ever
            # (past its `seconds`, and past the server's stop)
            return within(service.read_wait, lambda: (service.store.snapshot(source_id),
                                                       service.store.source_running(source_id)))

        async def frames():
            last, end, away = None, time.monotonic() + seconds, False
            while time.monotonic() < end and not service.stopping.is_set():
                try:
                    snap, running = await run_in_threadpool(poll)
                except Exception as exc:  # the database went away: the viewer keeps its last frame, and waits
                    if not away:
                        log.warning("live view of source %d: the database does not answer (%s); waiting",
                                    source_id, f"no answer within {service.read_wait:g} s" if isinstance(
                                        exc, NoAnswer) else type(exc).__name__)
                    away = True
                    await asyncio.sleep(1.0)
                    continue
                away = False
                if snap is not None and snap[0] != last:
                    last = snap[0]
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(snap[1])).encode()
                           + b"\r\n\r\n" + snap[1] + b"\r\n")
                if not running:
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame")

    return router
