"""``facemtl serve`` and ``facemtl db``: the results database and the server on the command line.

Kept apart from :mod:`facemtl.cli`, which lists them in its table; everything heavy
(FastAPI, uvicorn, SQLAlchemy: the ``serve`` extra) is imported inside the functions.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .clilog import log_to_stderr

#: Seconds ``serve`` waits, once stopped, for requests still running before it cuts them off.
STOP_WAIT = 20
#: Fewer characters than this in the API token are warned about.
MIN_TOKEN = 16


def serve(host: str = "127.0.0.1", port: int = 8000, db: str | None = None, model: str | None = None,
          no_model: bool = False, runtime: str | None = None, device: str = "auto", detector: str = "mtcnn",
          min_face: float | None = None, token_file: str | None = None, max_upload_mb: float = 20.0,
          thumbnails: bool = False, retention_days: float | None = None, log_level: str = "info",
          fusion: str | bool | None = None) -> int:
    """Serve the HTTP API and the operator page on ``host:port`` until SIGINT (Ctrl-C) or SIGTERM.

    The address is bound first, so a port in use is one sentence before the database is opened
    (a new file is not created for a server that never ran) or the model loaded. Either signal
    stops the server gracefully (requests in flight are answered, the database is closed) and the
    exit status says which signal it was, as for every command: 130 or 143. ``fusion``: uploads
    analysed by the accurate variant (``True``: the shipped fusion file, or a fusion file's path)."""
    try:
        import uvicorn  # noqa: F401  (the serve extra, checked before anything is opened)

        from .server import create_app
        from .server.auth import is_loopback, load_token
        from .store import Store
        from .store.engine import redacted
    except ImportError as exc:
        raise RuntimeError(f"facemtl serve needs the serve extra (pip install 'facemtl[serve]'): {exc}") from None
    from .system import SIGNAL_STATUS

    token = load_token(token_file)
    weak = None if token is None or len(token) >= MIN_TOKEN else (
        f"facemtl: warning: the API token is {len(token)} characters long: one that can be guessed opens the API "
        f"to anyone who reaches the server; use {MIN_TOKEN} or more random characters (python -c "
        "'import secrets; print(secrets.token_urlsafe(24))')")
    if token is None and not is_loopback(host):
        raise ValueError(f"binding {host} serves other machines: set FACEMTL_API_TOKEN or --token-file "
                         "(and put TLS in front: README, 'Behind a reverse proxy')")
    if max_upload_mb <= 0:
        raise ValueError("--max-upload-mb must be positive")
    if retention_days is not None:
        _days(retention_days, "--retention-days")
    elif os.environ.get("FACEMTL_RETENTION_DAYS"):  # (an operations test: a unit file setting it never purged)
        retention_days = _env_days()
    if fusion and no_model:
        raise ValueError("--accurate and --fusion are about the model that analyses uploads: leave out --no-model")
    with contextlib.closing(listen(host, port)) as sock:
        predictor = None
        if fusion:  # before the database, as a model: a bad fusion file creates no database
            from .inference.fusion import load_accurate

            predictor = load_accurate(fusion, model, runtime, device)
        elif not no_model:  # before the database: a bad model file creates no database
            from .inference import load_predictor

            predictor = load_predictor(model, runtime, device)
        store = Store(db)
        try:
            app = create_app(store, predictor, token, int(max_upload_mb * 2**20), detector, min_face, thumbnails,
                             retention_days, local_names=[host, socket.gethostname()])
            shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL is bracketed
            kept = "kept until purged: no retention" if retention_days is None else \
                "retention off: the database is read-only" if store.read_only else \
                f"retention {retention_days:g} days, purged hourly"
            print(f"facemtl: serving on http://{shown}:{sock.getsockname()[1]}/ (results in {redacted(store.url)}; "
                  f"token {'on' if token else 'off'}; {kept})", file=sys.stderr)
            if weak:  # after the line that names the port (scripts read the first line for it)
                print(weak, file=sys.stderr)
            with log_to_stderr(log_level):  # (retention deletions, uploads kept for a database that is down)
                stopped_by = _run(app, sock, log_level)
        finally:
            store.close()
    if stopped_by is None:
        print("facemtl: server stopped", file=sys.stderr)
        return 0
    print(f"facemtl: server stopped ({signal.Signals(stopped_by).name})", file=sys.stderr)
    _leave_stuck_requests(SIGNAL_STATUS[stopped_by])
    return SIGNAL_STATUS[stopped_by]


def _leave_stuck_requests(status: int) -> None:
    """Exit with ``status`` now if a request is still stuck in the database, past uvicorn's cut-off:
    its worker thread waits in the database driver (a frozen server, a network that drops
    packets: a user test's serve stopped answering and never exited after SIGTERM, until
    SIGKILL), and Python would wait for it at exit. The database is closed and everything said."""
    workers = [t for t in threading.enumerate() if t.name == "AnyIO worker thread" and not t.daemon]
    deadline = time.monotonic() + 2.0  # (idle workers end at once when the server stops)
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in workers if t.is_alive()]
    if stuck and threading.current_thread() is threading.main_thread():
        print(f"facemtl: {len(stuck)} request(s) still waiting for the database left behind", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port`` 0: any free one), which uvicorn then serves on.
    ``SO_REUSEADDR`` as uvicorn sets it, so a restart need not wait out the last run's closed
    connections, while a port another server listens on is still refused: ``ValueError``, one
    sentence saying what to change."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0 to 65535, not {port}")
    # uvicorn's own rule (Config.bind_socket): IPv6 when the host has a colon, else IPv4, so
    # "localhost" is 127.0.0.1 whatever order the resolver gives ::1 and 127.0.0.1 in
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        _, kind, proto, _, address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM,
                                                        flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ValueError(f"--host {host} is not an address this machine can bind ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use (another server?); choose another with --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ValueError(f"{host} is not an address of this machine; choose another with --host") from None
        raise ValueError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def _time(text: str) -> float:
    """``--since`` / ``--until``: a time as the API reads its ``since`` / ``until``
    (:func:`~facemtl.store.queries.parse_time`), in seconds since the epoch."""
    from .store.queries import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {exc}") from None


def _run(app: Any, sock: socket.socket, log_level: str) -> int | None:
    """Serve ``app`` on ``sock`` with uvicorn until SIGINT or SIGTERM; returns the first signal
    (``None`` if none stopped it).

    uvicorn (0.29 on) shuts down on either signal and then raises it again so that the default
    action follows: SIGINT becomes a KeyboardInterrupt, but SIGTERM kills the process before the
    database is closed or anything said. Our handler stands in for the defaults while uvicorn
    runs, so that raise only records the signal (and one arriving before uvicorn installs its
    own still stops the server)."""
    import uvicorn

    from .system import SIGNAL_STATUS

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            received.append(sig)
            service = getattr(app.state, "service", None)
            if service is not None:  # open live views end now rather than when their viewers leave
                service.stopping.set()
            super().handle_exit(sig, frame)

    received: list[int] = []
    # A request still running STOP_WAIT seconds after the signal is cut off, so that the database
    # is closed (and uploads kept while it was away are written) within a service manager's
    # stop timeout (systemd's 90 s); an upload is analysed in well under it.
    server = Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=STOP_WAIT))
    previous = {}
    if threading.current_thread() is threading.main_thread():  # (Python sets handlers on the main thread only)
        previous = {sig: signal.signal(sig, server.handle_exit) for sig in SIGNAL_STATUS}
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's own start-up failure (the app's lifespan), already in its log
        raise RuntimeError("the server could not start (its log above says why)") from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0] if received else None


def _serve_extra() -> None:
    """A one-sentence ``RuntimeError`` when the ``serve`` extra (the store's packages) is missing."""
    try:
        from . import store  # noqa: F401  (its packages: SQLAlchemy, Alembic)
    except ImportError as exc:
        raise RuntimeError(f"facemtl db needs the serve extra (pip install 'facemtl[serve]'): {exc}") from None


def _existing_database(db: str | None, action: str) -> str | None:
    """The SQLite file ``db`` names (``None`` for a server), refused in one sentence when it does
    not exist: SQLite would create an empty one for a ``db`` action that has nothing to act on."""
    _serve_extra()
    from .store import database_url
    from .store.engine import sqlite_path

    path = sqlite_path(database_url(db))
    if path is not None and not os.path.exists(path):
        raise FileNotFoundError(f"the database file {path} does not exist (nothing to {action})")
    return path


def db_delete(db: str | None, source: str | None = None, session: int | None = None, track: int | None = None,
              face: int | None = None, since: float | None = None, until: float | None = None,
              dry_run: bool = False) -> dict[str, Any]:
    """``facemtl db delete``: the faces matching every filter given, each with its whole track
    (see :func:`facemtl.store.retention.erase`); returns how many went (or would, ``dry_run``)."""
    _existing_database(db, "delete")
    from .store import Store

    with Store(db, create=False) as store:
        counts = store.erase(source, dry_run=dry_run, session=session, track=track, face=face, since=since,
                             until=until)
    if counts["running"]:
        print(f"facemtl: warning: {counts['running']} matching faces are in tracks a running stream still "
              "follows, and were left: delete again once those tracks end (about a second after the person "
              "leaves the view), or stop that stream", file=sys.stderr)
    return {"dry_run": dry_run, "deleted" if not dry_run else "would_delete":
            {k: v for k, v in counts.items() if k != "running"}, "left_running": counts["running"]}


def db_command(action: str, db: str | None = None, older_than: float | None = None, kind: str = "faces",
               fmt: str = "jsonl", out: str | None = None, since: float | None = None, until: float | None = None,
               source: str | None = None, session: int | None = None,
               where: list[str] | None = None) -> dict[str, Any]:
    """``facemtl db upgrade | purge | export``; returns what was done. ``where``: answer filters
    as the API's parameters (``gender=female``, ``age_min=20``; see ``parse_answer_filters``)."""
    _serve_extra()
    from .store import Query, Store, database_url, upgrade
    from .store.engine import redacted

    if action == "upgrade":
        return {"database": redacted(database_url(db)), "schema": upgrade(database_url(db))}
    if action == "purge":
        older_than = retention_days(older_than, "--older-than")
    path = _existing_database(db, action)
    if action == "export" and out is not None:
        _check_export_file(out, path)
    with Store(db, create=False) as store:
        if action == "purge":
            return {"older_than_days": older_than, "deleted": store.purge(older_than)}
        from .store.queries import parse_answer_filters

        answers = parse_answer_filters(where, store.tasks(), store.class_names()) if where else []
        q = Query(since=since, until=until, source=source, session=session, answers=answers)
        # a misspelt source or session is refused, as db delete refuses it (a user test: it replaced
        # an earlier --out file with an empty export, exit 0)
        if source is not None:
            store.source_id(source)
        if session is not None:
            store.check_session(session)
        if out is None:
            try:
                n = store.export(kind, sys.stdout, fmt, q)
            except OSError as exc:  # (named, as analyze names its output: a user test)
                exc.filename = exc.filename or "standard output"
                raise
        elif os.path.exists(out) and not os.path.isfile(out):  # a device or a pipe (/dev/stdout): written to
            with open(out, "w", newline="") as f:
                n = store.export(kind, f, fmt, q)
        else:  # written beside it, then renamed: a failed export leaves an earlier file as it was
            tmp = f"{out}.part"
            try:
                with open(tmp, "w", newline="") as f:
                    n = store.export(kind, f, fmt, q)
                os.replace(tmp, out)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
        return {"exported": n, "kind": kind, "format": fmt, "out": out or "-"}


#: ``db export``'s formats by the suffixes that name them.
EXPORT_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def export_format(fmt: str | None, out: str | None) -> str:
    """``db export``'s format: ``fmt`` as given, else the one ``out``'s suffix names, else
    JSON lines. A ``fmt`` that another suffix of ``out`` contradicts is refused (a user test:
    ``--out mild.csv`` without ``--format`` wrote JSON lines into a file named .csv)."""
    named = EXPORT_SUFFIXES.get(Path(out).suffix.lower()) if out else None
    if fmt is None:
        return named or "jsonl"
    if named is not None and named != fmt:
        raise ValueError(f"--out {out} names a {'CSV' if named == 'csv' else 'JSON lines'} file, but --format {fmt} "
                         "writes the other: leave --format out, or name the file for it")
    return fmt


def _check_export_file(out: str, database: str | None) -> None:
    """Refuse an export file that is the SQLite database itself (opening it for writing emptied
    the database), a folder, or in a folder that does not exist, before anything is opened."""
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a folder; give a file name, e.g. {os.path.join(out, 'faces.csv')}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out {out}: the folder {parent} does not exist")
    if database is not None and os.path.exists(out) and os.path.samefile(out, database):
        raise ValueError(f"--out {out} is the database being exported; give another file name")
    from .system import check_new_file

    check_new_file(out, f"--out {out}")  # (a folder that takes no file, /proc, said the OS's bare "[Errno 2]")


def retention_days(days: float | None, flag: str) -> float:
    """``days`` (from ``flag``), else ``$FACEMTL_RETENTION_DAYS``: a finite number of days, zero or
    more; ``ValueError`` naming the flag or the variable otherwise."""
    if days is None:
        if not os.environ.get("FACEMTL_RETENTION_DAYS"):
            raise ValueError(f"say how old: {flag} DAYS (or set FACEMTL_RETENTION_DAYS)")
        return _env_days()
    return _days(days, flag)


def _env_days() -> float:
    """``$FACEMTL_RETENTION_DAYS`` as a number of days (``ValueError`` naming the variable)."""
    env = os.environ["FACEMTL_RETENTION_DAYS"]
    try:
        days = float(env)
    except ValueError:
        raise ValueError(f"FACEMTL_RETENTION_DAYS must be a number of days, not {env!r}") from None
    return _days(days, "FACEMTL_RETENTION_DAYS")


def _days(days: float, where: str) -> float:
    """``days`` if it is a finite number of days, zero or more; ``ValueError`` naming ``where``."""
    if not (math.isfinite(days) and days >= 0):
        raise ValueError(f"{where} must be a number of days, zero or more, not {days:g}")
    return days


# -- flags ------------------------------------------------------------------------------


def db_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", help="results database: a SQLite file or a URL (default: $FACEMTL_DB_URL, "
                                               "else facemtl-results.db here)")


def serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind; any other than 127.0.0.1 needs a token")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    db_flag(p)
    # (--checkpoint too: analyze, evaluate and stream take either name; a user test typed analyze's)
    p.add_argument("--model", "--checkpoint", dest="model", metavar="MODEL_FILE",
                   help="model file for POST /v1/analyze (default: the shipped model)")
    p.add_argument("--no-model", action="store_true", help="load no model: read the database only")
    from .cli_args import detector_flag

    # (a plugin's detector too, as analyze and stream take: the fixed choices refused one)
    detector_flag(p, "face detector for uploads (the default is analyze's, so an upload answers as analyze --json)")
    p.add_argument("--min-face", type=float, metavar="PX",
                   help="smallest face to look for in uploads; smaller faces are left out (as analyze)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    from .cli_args import runtime_flag  # (the runtimes' names: no heavy import)

    runtime_flag(p)
    from .cli_args import accurate_flags

    accurate_flags(p, "about 100 ms more per uploaded face on a 2-core CPU")
    p.add_argument("--token-file", metavar="FILE", help="API token in this file's first line (else $FACEMTL_API_TOKEN)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB", help="largest upload (413 past it)")
    p.add_argument("--thumbnails", action="store_true", help="store a crop of each uploaded face (off by default)")
    p.add_argument("--retention-days", type=float, metavar="DAYS", help="delete results older than this, hourly")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="how much uvicorn logs")


def serve_run(a: argparse.Namespace) -> int:
    return serve(a.host, a.port, a.db, a.model, a.no_model, a.runtime, a.device, a.detector, a.min_face, a.token_file,
                 a.max_upload_mb, a.thumbnails, a.retention_days, a.log_level, fusion=a.fusion or a.accurate)


def db_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="upgrade, purge, delete, sessions, end or export")
    sub_kw = {"formatter_class": p.formatter_class}
    db_flag(sub.add_parser("upgrade", **sub_kw, help="create the tables, or bring an older database up to this facemtl's schema"))
    purge = sub.add_parser("purge", **sub_kw, help="delete results older than some days")
    db_flag(purge)
    purge.add_argument("--older-than", type=float, metavar="DAYS", help="default: $FACEMTL_RETENTION_DAYS")
    delete = sub.add_parser("delete", **sub_kw, help="delete the faces of a track, a session, a source or a time "
                                                      "span (a request to erase someone's data)")
    db_flag(delete)
    delete.add_argument("--source", help="the faces of this source")
    delete.add_argument("--session", type=int, help="the faces of this session")
    delete.add_argument("--track", type=int, help="the faces of this track (its id, as the API gives it)")
    delete.add_argument("--face", type=int, help="this face (and the track it is in)")
    delete.add_argument("--since", type=_time, metavar="TIME", help="faces from this time (as export's --since)")
    delete.add_argument("--until", type=_time, metavar="TIME", help="faces until this time")
    delete.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    sessions = sub.add_parser("sessions", **sub_kw, help="list the newest sessions (one JSON line each): their "
                                                          "writer, sources, faces and state (running, silent, gone, "
                                                          "ended)")
    db_flag(sessions)
    sessions.add_argument("--open", action="store_true", help="only sessions not ended")
    sessions.add_argument("--limit", type=int, default=20, help="at most this many, newest first")
    end = sub.add_parser("end", **sub_kw, help="end a session whose writer is gone for good (a machine that never "
                                                "runs facemtl again): its tracks closed, its silent sources stopped")
    db_flag(end)
    end.add_argument("--session", type=int, help="the session to end")
    end.add_argument("--source", help="end the session that holds this source")
    export = sub.add_parser("export", **sub_kw, help="write stored faces or tracks as CSV or JSON lines")
    export.add_argument("kind", choices=["faces", "tracks"], help="what to write: one row per face or per track")
    export.add_argument("--format", choices=["csv", "jsonl"],
                        help="CSV or JSON lines (default: as --out's suffix says, .csv or .jsonl; else JSON lines)")
    export.add_argument("--out", metavar="FILE", help="default: standard output")
    db_flag(export)
    export.add_argument("--since", type=_time, metavar="TIME",
                        help="only from this time: ISO 8601 (UTC unless it says, e.g. 2026-11-27T08:00) or seconds "
                             "since the epoch, as the API's since")
    export.add_argument("--until", type=_time, metavar="TIME", help="only until this time (the same forms)")
    export.add_argument("--source", help="only this source")
    export.add_argument("--session", type=int, help="only this session")
    export.add_argument("--where", action="append", metavar="FILTER",
                        help="only faces (tracks) whose answers match, as the API's filters: TASK=CLASS (repeat for "
                             "several classes), TASK_min=X, TASK_max=X, e.g. --where gender=female --where age_min=20")


def db_end(db: str | None, session: int | None = None, source: str | None = None) -> dict[str, Any]:
    """``facemtl db end``: end a session whose writer is gone for good (see :meth:`Store.end_session`)."""
    _existing_database(db, "end")
    from .store import Store

    with Store(db, create=False) as store:
        return store.end_session(session, source)


def db_sessions(db: str | None, open_only: bool = False, limit: int = 20) -> list[dict[str, Any]]:
    """``facemtl db sessions``: the newest sessions and their state (see :meth:`Store.sessions`)."""
    _existing_database(db, "list")
    if limit < 1:
        raise ValueError(f"--limit takes a number of sessions, 1 or more, not {limit}")
    from .store import Store

    with Store(db, create=False) as store:
        return store.sessions(open_only, limit)


def db_run(a: argparse.Namespace) -> int:
    if a.action == "sessions":
        for row in db_sessions(a.db, a.open, a.limit):
            print(json.dumps(row))
        return 0
    if a.action == "end":
        print(json.dumps(db_end(a.db, a.session, a.source)))
        return 0
    if a.action == "delete":  # exit 1 while faces are left: an erasure script must not record it done
        done = db_delete(a.db, a.source, a.session, a.track, a.face, a.since, a.until, a.dry_run)
        print(json.dumps(done))
        return 1 if done["left_running"] and not a.dry_run else 0
    done = db_command(a.action, a.db, getattr(a, "older_than", None), getattr(a, "kind", "faces"),
                      export_format(getattr(a, "format", None), getattr(a, "out", None)),
                      getattr(a, "out", None), getattr(a, "since", None),
                      getattr(a, "until", None), getattr(a, "source", None), getattr(a, "session", None),
                      getattr(a, "where", None))
    print(json.dumps(done), file=sys.stderr if a.action == "export" else sys.stdout)
    return 0
