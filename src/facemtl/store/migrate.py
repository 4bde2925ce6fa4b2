"""Schema migrations (Alembic), shipped inside the package: ``facemtl db upgrade``.

A new database is created by running every migration from the first, so a fresh file
and one upgraded from an older facemtl end in the same schema (a test checks that
it matches :mod:`facemtl.store.models`).
"""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .engine import StoreError, broken, cannot_open, create_db_engine, reason, redacted, unreachable

#: PostgreSQL advisory lock held while migrating (any constant; "facemtl" in digits).
LOCK_KEY = 36223685


def _config(connection: sa.Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("facemtl.store") / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration this facemtl ships."""
    from alembic.script import ScriptDirectory

    cfg = _config(None)  # type: ignore[arg-type]
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def newer_schema(revision: str | None) -> str | None:
    """The sentence to say when ``revision`` is none this facemtl ships (a newer facemtl wrote
    the database), else ``None``."""
    from alembic.script import ScriptDirectory

    if revision is None:
        return None
    script = ScriptDirectory.from_config(_config(None))  # type: ignore[arg-type]
    if revision in {r.revision for r in script.walk_revisions()}:
        return None
    return (f"was written by a newer facemtl (schema {revision}; this one knows up to {script.get_current_head()}): "
            "upgrade facemtl")


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (``None`` for an empty database)."""
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> str:
    """Bring the database up to ``revision`` (default: the newest); returns the revision it is at.
    :class:`~facemtl.store.engine.StoreError` (one sentence) for a database a newer facemtl wrote,
    one that cannot be opened (not a database, no server, read-only, locked: nothing was changed),
    or one that stopped answering while it was migrated (everything rolled back). Any other error
    of a migration is a fault in facemtl and is raised as it is, with its traceback."""
    from alembic import command
    from alembic.migration import MigrationContext

    url = url_or_engine
    if isinstance(url_or_engine, Engine):
        url = url_or_engine.url.render_as_string(hide_password=False)
    # SQLite: foreign keys off while tables are copied (see create_db_engine), checked afterwards
    engine = create_db_engine(url, write=True, foreign_keys=False)
    opened = False  # connected, holding the write lock, and the schema's version read
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # writers starting together: one migrates, the others find it done
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            newer = newer_schema(MigrationContext.configure(conn).get_current_revision())
            opened = True
            if newer:
                raise StoreError(f"the database {redacted(url)} {newer}")
            command.upgrade(_config(conn), revision)
            if conn.dialect.name == "sqlite":
                dangling = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if dangling:
                    raise StoreError(f"the migration left {len(dangling)} rows pointing at missing rows; rolled back")
        return str(current_revision(engine))
    except sa.exc.SQLAlchemyError as exc:
        if not opened:
            raise cannot_open(url, exc) from None
        refused = broken(exc)
        if refused and any(w in refused.lower() for w in ("full", "no space", "read-only file system", "could not write")):
            # (a user test: a full disk was said as a database that "stopped answering", exit 2)
            error = StoreError(f"the machine refused a write to the database {redacted(url)} while it was made ready "
                               f"(everything rolled back; free space, then run again): {refused}")
            error.exit_status = 1
            raise error from None
        if unreachable(exc):
            raise StoreError(f"the database {redacted(url)} stopped answering while it was migrated (everything "
                             f"rolled back; run 'facemtl db upgrade' again): {reason(exc)}") from None
        raise
    finally:
        engine.dispose()
