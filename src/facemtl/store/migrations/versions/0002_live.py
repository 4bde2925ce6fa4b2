"""Live sources and counts over time: source heartbeats, the latest annotated frame per
source, face thumbnails, and the face's time repeated on its answers (filled in from
``faces`` for rows written under 0001) with an index that counts per time bucket.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("sources") as b:
        b.add_column(sa.Column("state", sa.String(20), nullable=False, server_default="stopped"))
        b.add_column(sa.Column("last_seen", sa.Double()))
        b.add_column(sa.Column("session_id", sa.Integer()))
        b.add_column(sa.Column("fps", sa.Double()))
        b.add_column(sa.Column("heartbeat", sa.Double()))
        b.create_foreign_key("fk_sources_session_id_sessions", "sessions", ["session_id"], ["id"], ondelete="SET NULL")
    with op.batch_alter_table("sources") as b:
        b.alter_column("state", server_default=None)

    with op.batch_alter_table("answers") as b:
        b.add_column(sa.Column("time", sa.Double()))
    op.execute("UPDATE answers SET time = (SELECT faces.time FROM faces WHERE faces.id = answers.face_id)")
    with op.batch_alter_table("answers") as b:
        b.alter_column("time", existing_type=sa.Double(), nullable=False)
    op.create_index("ix_answers_time", "answers", ["raw", "time", "task", "grp"])

    op.create_table(
        "thumbnails",
        sa.Column("face_id", BigId, nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("face_id", name="pk_thumbnails"),
        sa.ForeignKeyConstraint(["face_id"], ["faces.id"], name="fk_thumbnails_face_id_faces", ondelete="CASCADE"),
    )
    op.create_table(
        "snapshots",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", name="pk_snapshots"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="fk_snapshots_source_id_sources", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("snapshots")
    op.drop_table("thumbnails")
    op.drop_index("ix_answers_time", "answers")
    with op.batch_alter_table("answers") as b:
        b.drop_column("time")
    with op.batch_alter_table("sources") as b:
        b.drop_constraint("fk_sources_session_id_sessions", type_="foreignkey")
        for col in ("heartbeat", "fps", "session_id", "last_seen", "state"):
            b.drop_column(col)
