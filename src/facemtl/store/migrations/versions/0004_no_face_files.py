"""The files an ``analyze`` session found no face in (``no_face_files``), so that
``analyze --skip-stored`` leaves them out as it leaves out the files whose faces are
stored: a run continued after a stop read every photo without a face again (a whole
folder of empty frames, each a detector pass).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "no_face_files",
        sa.Column("id", BigId, nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("file", sa.String(1000), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_no_face_files"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_no_face_files_session_id_sessions",
                                ondelete="CASCADE"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_no_face_files_session_id", "no_face_files", ["session_id"])
    op.create_index("ix_no_face_files_file", "no_face_files", ["file"])
    op.create_index("ix_no_face_files_time", "no_face_files", ["time"])


def downgrade() -> None:
    op.drop_table("no_face_files")
