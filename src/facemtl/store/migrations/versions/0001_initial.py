"""The first schema: sources, sessions, tracks, faces, per-task answers.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _answer_columns() -> list[sa.Column]:
    """The columns faces' and tracks' answer rows share."""
    return [sa.Column("value_text", sa.String(200)), sa.Column("value_num", sa.Double()),
            sa.Column("probability", sa.Double()), sa.Column("lo", sa.Double()), sa.Column("hi", sa.Double()),
            sa.Column("probabilities", sa.JSON()), sa.Column("grp", sa.String(64))]


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("host", sa.String(200)),
        sa.Column("pid", sa.Integer()),
        sa.Column("started", sa.Double(), nullable=False),
        sa.Column("ended", sa.Double()),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_version", sa.String(100)),
        sa.Column("tasks", sa.JSON()),
        sa.Column("settings", sa.JSON()),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_started", "sessions", ["started"])
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("host", sa.String(200)),
        sa.Column("created", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sources"),
        sa.UniqueConstraint("name", name="uq_sources_name"),
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("track", sa.Integer(), nullable=False),
        sa.Column("first_frame", sa.Integer()),
        sa.Column("last_frame", sa.Integer()),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("faces", sa.Integer(), nullable=False),
        sa.Column("first_time", sa.Double()),
        sa.Column("last_time", sa.Double()),
        sa.Column("started", sa.Double(), nullable=False),
        sa.Column("ended", sa.Double(), nullable=False),
        sa.Column("confidence", sa.Double()),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tracks"),
        sa.UniqueConstraint("session_id", "source_id", "track", name="uq_tracks_session_id_source_id_track"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_tracks_session_id_sessions",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="fk_tracks_source_id_sources", ondelete="CASCADE"),
    )
    op.create_index("ix_tracks_ended", "tracks", ["ended", "id"])
    op.create_index("ix_tracks_source_id", "tracks", ["source_id"])
    op.create_table(
        "faces",
        sa.Column("id", BigId, nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("track_id", sa.Integer()),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("frame", sa.Integer()),
        sa.Column("media_time", sa.Double()),
        sa.Column("file", sa.String(1000)),
        sa.Column("x1", sa.Double()),
        sa.Column("y1", sa.Double()),
        sa.Column("x2", sa.Double()),
        sa.Column("y2", sa.Double()),
        sa.Column("score", sa.Double()),
        sa.Column("landmarks", sa.JSON()),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_version", sa.String(100)),
        sa.PrimaryKeyConstraint("id", name="pk_faces"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_faces_session_id_sessions",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="fk_faces_source_id_sources", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["track_id"], ["tracks.id"], name="fk_faces_track_id_tracks", ondelete="CASCADE"),
    )
    op.create_index("ix_faces_time", "faces", ["time", "id"])
    op.create_index("ix_faces_source_time", "faces", ["source_id", "time"])
    op.create_index("ix_faces_session_time", "faces", ["session_id", "time"])
    op.create_index("ix_faces_track_id", "faces", ["track_id"])
    op.create_table(
        "answers",
        sa.Column("face_id", BigId, nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("raw", sa.Boolean(), nullable=False),
        *_answer_columns(),
        sa.PrimaryKeyConstraint("face_id", "task", "raw", name="pk_answers"),
        sa.ForeignKeyConstraint(["face_id"], ["faces.id"], name="fk_answers_face_id_faces", ondelete="CASCADE"),
    )
    op.create_index("ix_answers_text", "answers", ["task", "raw", "value_text"])
    op.create_index("ix_answers_num", "answers", ["task", "raw", "value_num"])
    op.create_table(
        "track_answers",
        sa.Column("track_id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        *_answer_columns(),
        sa.PrimaryKeyConstraint("track_id", "task", name="pk_track_answers"),
        sa.ForeignKeyConstraint(["track_id"], ["tracks.id"], name="fk_track_answers_track_id_tracks",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_track_answers_text", "track_answers", ["task", "value_text"])
    op.create_index("ix_track_answers_num", "track_answers", ["task", "value_num"])


def downgrade() -> None:
    for table in ("track_answers", "answers", "faces", "tracks", "sources", "sessions"):
        op.drop_table(table)
