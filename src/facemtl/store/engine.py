"""Database URLs and engines: a SQLite file by default, PostgreSQL by URL.

``--db`` takes a SQLAlchemy URL (``sqlite:///results.db``,
``postgresql://user@host/facemtl``) or a plain file path, which means a SQLite file.
``postgresql://`` without a driver is run on psycopg 3 (the ``serve`` extra installs it).

SQLite is opened in WAL mode with a busy timeout, so several writer processes on one
machine and a reader share one file; foreign keys are switched on (SQLite leaves them
off by default), so a face can never name a track that does not exist.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

#: The environment variable that names the database when ``--db`` is not given.
ENV_URL = "FACEMTL_DB_URL"
#: The default: a SQLite file in the current folder (no server to start).
DEFAULT_URL = "sqlite:///facemtl-results.db"


def database_url(value: str | os.PathLike | None = None) -> str:
    """``value`` (a URL or a file path), else ``$FACEMTL_DB_URL``, else :data:`DEFAULT_URL`,
    as a full SQLAlchemy URL. Raises ``ValueError`` for a URL it cannot use."""
    value = str(value) if value is not None else os.environ.get(ENV_URL) or DEFAULT_URL
    if "://" not in value:  # a file path
        return "sqlite:///" + str(Path(value).expanduser())
    try:
        url = make_url(value)
    except Exception:
        raise ValueError(f"{value!r} is not a database URL (try sqlite:///results.db or "
                         "postgresql://host/db)") from None
    if url.drivername == "postgres":  # libpq's and psql's other spelling, which SQLAlchemy dropped (a user test)
        url = url.set(drivername="postgresql")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"facemtl stores results in SQLite or PostgreSQL, not {url.get_backend_name()!r}")
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs (and without the driver
    :func:`database_url` adds: ``postgresql://``, as people write it)."""
    u = make_url(url)
    if u.drivername == "postgresql+psycopg":
        u = u.set(drivername="postgresql")
    return u.render_as_string(hide_password=True)


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (``file:`` URIs too); ``None`` for another database or memory."""
    u = make_url(database_url(url))
    path = (u.database or "").removeprefix("file:").split("?")[0] if u.get_backend_name() == "sqlite" else ""
    return path if path and path != ":memory:" else None


def read_only(url: str) -> bool:
    """Whether ``url`` is a SQLite file this process may only read: opened with ``mode=ro``
    or ``immutable=1`` (``sqlite:///file:results.db?mode=ro&uri=true``), or a file it cannot
    write. Nothing is written to it, not even at start-up (the WAL switch)."""
    u = make_url(database_url(url))
    if u.get_backend_name() != "sqlite":
        return False
    if u.query.get("mode") == "ro" or u.query.get("immutable") in ("1", "true"):
        return True
    path = sqlite_path(url)
    return path is not None and os.path.exists(path) and not (os.access(path, os.W_OK) and folder_writable(path))


def folder_writable(path: str) -> bool:
    """Whether the folder of the SQLite file ``path`` may be written: SQLite keeps its
    write-ahead log (``-wal``, ``-shm``) beside the file, so a writable file in a read-only
    folder cannot be written either, nor read without care (:func:`_readable_url`)."""
    return os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK)


def _readable_url(url: str) -> str:
    """``url`` for reading a read-only SQLite file in a folder this process may not write (a
    copy of a results file kept read-only, a user test: "attempt to write a readonly database",
    even with ``mode=ro``): SQLite cannot make the ``-shm`` file a WAL database's readers need,
    so the file is opened ``immutable`` (read as it is, with no lock) where no one may write it
    (no write permission bit: a reader opened so would not see a writer's later rows, a review)
    and no ``-wal`` file beside it holds writes not yet in the file; otherwise ``url`` as it is
    (:func:`cannot_open` then says why it fails)."""
    path = sqlite_path(url)
    if not path or folder_writable(path) or os.path.exists(path + "-wal") or not os.path.exists(path) \
            or os.stat(path).st_mode & 0o222:
        return url
    u = make_url(url)
    query = {**u.query, "mode": "ro", "immutable": "1", "uri": "true"}
    return u.set(database=f"file:{path}", query=query).render_as_string(hide_password=False)


def _sqlite_pragmas(foreign_keys: bool, wal: bool = True):
    def on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by the sqlite3 module
        cur = dbapi_conn.cursor()
        if wal:  # (switching is a write: a read-only file keeps the mode it has)
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        cur.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; a crash keeps every committed batch
        cur.execute("PRAGMA busy_timeout=30000")  # wait for another writer's lock instead of failing
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.close()

    return on_connect


def create_db_engine(url: str, write: bool = False, foreign_keys: bool = True, **kwargs) -> Engine:
    """An engine for ``url`` (see :func:`database_url`), with the SQLite settings above.

    ``write``: on SQLite, every transaction starts with ``BEGIN IMMEDIATE``, taking the
    write lock up front, so two writers queue (busy timeout) instead of both reading and
    then failing to upgrade their locks. Readers use plain ``BEGIN`` and never block.
    """
    url = database_url(url)
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path and not Path(path).parent.exists():
            raise FileNotFoundError(f"the folder of the database file {path} does not exist")
        if path and not Path(path).exists() and not read_only(url):
            _check_creatable(Path(path))
        ro = read_only(url)
        engine = sa.create_engine(_readable_url(url) if ro else url,
                                  connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas(foreign_keys, wal=not ro))
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # No server-side prepared statements: psycopg prepares a query run five times, and PostgreSQL
    # may then plan it once for any parameters, while a filter's best plan depends on how rare its
    # class or range is. Planning each query costs a millisecond or two. No parallel workers either:
    # for a page of 50 faces their start-up cost more than the work (26 ms against 16 ms for three
    # filters over 100,000 faces, measured on a busy 2-core machine).
    args = {"prepare_threshold": None, "options": "-c max_parallel_workers_per_gather=0"}
    if "connect_timeout" not in str(url):  # a server that drops packets: 10 s, not the system's 2 minutes
        args["connect_timeout"] = 10
    if "keepalives" not in str(url) and "tcp_user_timeout" not in str(url):
        # a network cut on an open connection: the system's TCP gives up after some 15 minutes of
        # retransmissions, or never while no reply is owed; a user test's serve hung on it for good
        args.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                    tcp_user_timeout=20_000)  # (milliseconds)
    kwargs.setdefault("connect_args", args)
    return sa.create_engine(url, **kwargs)


def _check_creatable(path: Path) -> None:
    """An ``OSError`` naming the folder when a new database file cannot be made there (SQLite
    says only "unable to open database file"); a read-only or full disk is the machine's
    refusal (exit 1), as for any write."""
    from ..system import probe_writable

    try:
        probe_writable(path.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"Cannot create the database file {path.name} there ({exc.strerror})",
                      str(path.parent)) from None


# -- what an error from the database means -----------------------------------------------------
class StoreError(RuntimeError):
    """The results database cannot be used (unreachable, or not facemtl's).

    ``exit_status``: what the command line exits with: 2 (the command named something that is
    no usable database), or 1 when the database server did not answer (down, still starting:
    the machine's refusal, which a service manager's restart can outlast)."""

    exit_status = 2


class StoreUnreachable(StoreError):
    exit_status = 1


def cannot_open(url: str, exc: BaseException) -> StoreError:
    """The one-sentence error for a database that could not be opened or read at all (``exc``:
    what SQLAlchemy raised), naming it without its password. Every command that opens a
    database says it this way: a file that is not a database, a server that does not answer."""
    said = f"cannot open the database {redacted(url)}: {reason(exc)}"
    path = sqlite_path(url) if url.startswith("sqlite") else None
    if path and os.path.isdir(path):  # (SQLite says only "unable to open database file": a user test)
        return StoreError(f"cannot open the database {redacted(url)}: {path} is a folder; name a database file, "
                          f"e.g. {os.path.join(path, 'results.db')}")
    if path and os.path.exists(path) and not folder_writable(path) and "readonly" in reason(exc).replace("-", ""):
        said += (f" (its folder {os.path.dirname(os.path.abspath(path))} may not be written, and SQLite's readers of a "
                 "file others may write need to: read a copy, or take the write permission off the file, which is "
                 "then read as it is)")
    return StoreUnreachable(said) if server_gone(url, exc) else StoreError(said)


def server_gone(url: str, exc: BaseException) -> bool:
    """Whether ``exc`` says a database server is down or not up yet (worth waiting for): no
    SQLSTATE (the connection itself failed), class 08 (connection exception) or 57P01-03
    (shutting down, starting up); a connection SQLAlchemy found invalidated. Never for SQLite,
    nor for a wrong password (28xxx) or database name (3D000), the command's mistake.
    (SQLSTATEs, not the driver's words, which libpq translates.)"""
    if url.startswith("sqlite"):
        return False
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(exc, sa.exc.OperationalError) and (
        state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03"))


def reason(exc: BaseException) -> str:
    """The first line of what the database driver said (SQLAlchemy's wrapper adds the statement
    and a link, which help a developer but not someone who mistyped ``--db``)."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (down, cut off, locked), not that a
    query was wrong: the server answers 503, a writer keeps everything and retries."""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated)


#: What SQLite and PostgreSQL say of a damaged or unwritable database (lower case).
DAMAGE_WORDS = ("malformed", "not a database", "corrupt", "disk i/o error", "database or disk is full",
                "no space left", "could not read block", "could not write", "read-only file system")


def broken(exc: BaseException) -> str | None:
    """The database's own sentence when ``exc`` says the database itself failed (a damaged file:
    "database disk image is malformed", a full disk), not that it went away (:func:`unreachable`)
    nor that a query or its data was wrong; ``None`` otherwise. An operator page showed
    "internal server error" for a damaged file, and the server log alone said why."""
    if not isinstance(exc, sa.exc.DatabaseError):
        return None
    text = str(exc.orig if exc.orig is not None else exc).strip()
    first = text.splitlines()[0] if text else ""
    # the database's words for damage and for a machine refusing writes; anything else may be a bug: a 500
    return first if any(w in first.lower() for w in DAMAGE_WORDS) else None


def data_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database refused the data (a retry image by image can keep
    the rest) rather than that it went away (everything is kept and retried)."""
    if isinstance(exc, sa.exc.DBAPIError):
        return not exc.connection_invalidated and isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))
    return isinstance(exc, (sa.exc.StatementError, UnicodeError))  # e.g. text the driver cannot encode
