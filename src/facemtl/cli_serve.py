"""``facemtl serve`` and ``facemtl db``: the results database and the server on the command line.

Kept apart from :mod:`facemtl.cli`, which lists them in its table; everything heavy
(FastAPI, uvicorn, SQLAlchemy: the ``serve`` extra) is imported inside the functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any


def serve(host: str = "127.0.0.1", port: int = 8000, db: str | None = None, model: str | None = None,
          no_model: bool = False, runtime: str | None = None, device: str = "auto", detector: str = "mtcnn",
          min_face: float | None = None, token_file: str | None = None, max_upload_mb: float = 20.0,
          thumbnails: bool = False, retention_days: float | None = None, log_level: str = "info") -> int:
    """Serve the HTTP API and the operator page on ``host:port`` until interrupted."""
    try:
        import uvicorn

        from .server import create_app
        from .server.auth import is_loopback, load_token
        from .store import Store
    except ImportError as exc:
        raise RuntimeError(f"facemtl serve needs the serve extra (pip install 'facemtl[serve]'): {exc}") from None
    token = load_token(token_file)
    if token is None and not is_loopback(host):
        raise ValueError(f"binding {host} serves other machines: set FACEMTL_API_TOKEN or --token-file "
                         "(and put TLS in front: README, 'Behind a reverse proxy')")
    if max_upload_mb <= 0:
        raise ValueError("--max-upload-mb must be positive")
    if retention_days is not None:
        _days(retention_days, "--retention-days")
    store = Store(db)
    predictor = None
    if not no_model:
        from .inference import load_predictor

        predictor = load_predictor(model, runtime, device)
    app = create_app(store, predictor, token, int(max_upload_mb * 2**20), detector, min_face, thumbnails,
                     retention_days)
    print(f"facemtl: serving on http://{host}:{port}/ (results in {store!r}; token {'on' if token else 'off'})",
          file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn has shut down cleanly and passes the signal on
        pass
    finally:
        store.close()
    print("facemtl: server stopped", file=sys.stderr)
    return 0


def db_command(action: str, db: str | None = None, older_than: float | None = None, kind: str = "faces",
               fmt: str = "jsonl", out: str | None = None, since: float | None = None, until: float | None = None,
               source: str | None = None, session: int | None = None) -> dict[str, Any]:
    """``facemtl db upgrade | purge | export``; returns what was done."""
    try:
        from .store import Query, Store, database_url, upgrade
    except ImportError as exc:
        raise RuntimeError(f"facemtl db needs the serve extra (pip install 'facemtl[serve]'): {exc}") from None
    from .store.engine import redacted, sqlite_path

    if action == "upgrade":
        return {"database": redacted(database_url(db)), "schema": upgrade(database_url(db))}
    if action == "purge":
        older_than = retention_days(older_than, "--older-than")
    path = sqlite_path(database_url(db))
    if path is not None and not os.path.exists(path):  # (SQLite would create an empty file)
        raise FileNotFoundError(f"the database file {path} does not exist (nothing to {action})")
    with Store(db, create=False) as store:
        if action == "purge":
            return {"older_than_days": older_than, "deleted": store.purge(older_than)}
        q = Query(since=since, until=until, source=source, session=session)
        if out is None:
            n = store.export(kind, sys.stdout, fmt, q)
        else:
            with open(out, "w", newline="") as f:
                n = store.export(kind, f, fmt, q)
        return {"exported": n, "kind": kind, "format": fmt, "out": out or "-"}


def retention_days(days: float | None, flag: str) -> float:
    """``days`` (from ``flag``), else ``$FACEMTL_RETENTION_DAYS``: a finite number of days, zero or
    more; ``ValueError`` naming the flag or the variable otherwise."""
    where = flag
    if days is None:
        env = os.environ.get("FACEMTL_RETENTION_DAYS")
        if not env:
            raise ValueError(f"say how old: {flag} DAYS (or set FACEMTL_RETENTION_DAYS)")
        where = "FACEMTL_RETENTION_DAYS"
        try:
            days = float(env)
        except ValueError:
            raise ValueError(f"FACEMTL_RETENTION_DAYS must be a number of days, not {env!r}") from None
    return _days(days, where)


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
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    db_flag(p)
    p.add_argument("--model", help="model file for POST /v1/analyze (default: the shipped model)")
    p.add_argument("--no-model", action="store_true", help="load no model: read the database only")
    p.add_argument("--detector", default="mtcnn", choices=["mtcnn", "dlib"],
                   help="face detector for uploads (the default is analyze's, so an upload answers as analyze --json)")
    p.add_argument("--min-face", type=float, metavar="PX", help="smallest face to look for in uploads (see analyze)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--token-file", metavar="FILE", help="API token in this file's first line (else $FACEMTL_API_TOKEN)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB", help="largest upload (413 past it)")
    p.add_argument("--thumbnails", action="store_true", help="store a crop of each uploaded face (off by default)")
    p.add_argument("--retention-days", type=float, metavar="DAYS", help="delete results older than this, hourly")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="how much uvicorn logs")


def serve_run(a: argparse.Namespace) -> int:
    return serve(a.host, a.port, a.db, a.model, a.no_model, None, a.device, a.detector, a.min_face, a.token_file,
                 a.max_upload_mb, a.thumbnails, a.retention_days, a.log_level)


def db_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", help="upgrade, purge or export")
    sub_kw = {"formatter_class": p.formatter_class}
    db_flag(sub.add_parser("upgrade", **sub_kw, help="create the tables, or bring an older database up to this facemtl's schema"))
    purge = sub.add_parser("purge", **sub_kw, help="delete results older than some days")
    db_flag(purge)
    purge.add_argument("--older-than", type=float, metavar="DAYS", help="default: $FACEMTL_RETENTION_DAYS")
    export = sub.add_parser("export", **sub_kw, help="write stored faces or tracks as CSV or JSON lines")
    export.add_argument("kind", choices=["faces", "tracks"], help="what to write: one row per face or per track")
    export.add_argument("--format", default="jsonl", choices=["csv", "jsonl"], help="CSV or JSON lines")
    export.add_argument("--out", metavar="FILE", help="default: standard output")
    db_flag(export)
    export.add_argument("--since", type=float, metavar="EPOCH_S", help="only from this time (seconds since the epoch)")
    export.add_argument("--until", type=float, metavar="EPOCH_S", help="only until this time (seconds since the epoch)")
    export.add_argument("--source", help="only this source")
    export.add_argument("--session", type=int, help="only this session")


def db_run(a: argparse.Namespace) -> int:
    done = db_command(a.action, a.db, getattr(a, "older_than", None), getattr(a, "kind", "faces"),
                      getattr(a, "format", "jsonl"), getattr(a, "out", None), getattr(a, "since", None),
                      getattr(a, "until", None), getattr(a, "source", None), getattr(a, "session", None))
    print(json.dumps(done), file=sys.stderr if a.action == "export" else sys.stdout)
    return 0
