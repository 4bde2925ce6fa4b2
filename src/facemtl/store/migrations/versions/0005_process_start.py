"""When each session's writer process started (``sessions.process_start``), so that a
process number used again is told from the writer that held it: a container restarted
after ``kill -9`` runs as process 1 under the same host name again, and its killed
session was never ended (its tracks open and its sources ``running`` for good), nor could
``facemtl db end`` end it ("alive: process 1 runs on this machine"). Sessions written
before this schema have none and are judged by their process number alone, as before.

Recorded as :func:`facemtl.system.process_start` gives it (on Linux the boot id and the
clock ticks from the boot: no clock step changes it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as b:
        b.add_column(sa.Column("process_start", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as b:
        b.drop_column("process_start")
