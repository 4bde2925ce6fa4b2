"""Alembic's entry point for facemtl's results database (run by :mod:`facemtl.store.migrate`).

The caller hands over an open connection (``config.attributes["connection"]``), so the
migrations run on the engine facemtl configured (SQLite pragmas, psycopg driver).
"""

from __future__ import annotations

from alembic import context

from facemtl.store.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - the alembic command line, pointed at a URL in its ini
    from facemtl.store.engine import create_db_engine

    connection = create_db_engine(config.get_main_option("sqlalchemy.url"), write=True).connect()

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying them
with context.begin_transaction():
    context.run_migrations()
