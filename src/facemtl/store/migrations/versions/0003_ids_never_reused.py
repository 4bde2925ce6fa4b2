"""Ids never given out twice on SQLite: ``sessions``, ``tracks`` and ``faces`` become
``AUTOINCREMENT`` tables.

SQLite's plain ``INTEGER PRIMARY KEY`` takes the largest id in the table plus one, so once
retention had deleted every face (or the newest session, or track) new rows took the old
ids again, and an API client following ``/v1/faces?after=<id>`` silently missed the new
faces below its last id. ``AUTOINCREMENT`` keeps the largest id ever given out in
``sqlite_sequence`` (filled from the copied rows here). PostgreSQL's sequences never go
back: nothing changes there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: The tables whose ids readers keep (API paths, ``after=``, filters), parents first.
TABLES = ("sessions", "tracks", "faces")


def _recreate(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:  # foreign keys are off while a migration copies tables (facemtl.store.migrate)
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
