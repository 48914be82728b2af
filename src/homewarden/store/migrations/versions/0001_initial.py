"""Initial recording index: segments, gaps, events, holds.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-29 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSON on SQLite, JSONB on PostgreSQL, as in homewarden.store.models.JsonList.
# Every table is ``sqlite_autoincrement`` (models._NEVER_REUSE_IDS): an id once used is never
# handed out again, even after every row is deleted.
_json_list = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera", sa.String(64), nullable=False),
        sa.Column("start", sa.Double(), nullable=False),
        sa.Column("end", sa.Double(), nullable=False),
        sa.Column("duration", sa.Double(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("keyframes", sa.Integer(), nullable=False),
        sa.Column("motion_score", sa.Double(), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.UniqueConstraint("path", name="uq_segments_path"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_segments_camera_start", "segments", ["camera", "start"])

    op.create_table(
        "gaps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera", sa.String(64), nullable=False),
        sa.Column("start", sa.Double(), nullable=False),
        sa.Column("end", sa.Double(), nullable=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_gaps_camera_start", "gaps", ["camera", "start"])

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera", sa.String(64), nullable=False),
        sa.Column("start", sa.Double(), nullable=False),
        sa.Column("end", sa.Double(), nullable=True),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("peak_score", sa.Double(), nullable=False),
        sa.Column("zones", _json_list, nullable=False),
        sa.Column("snapshot_path", sa.String(512), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_camera_start", "events", ["camera", "start"])
    op.create_index("ix_events_start", "events", ["start"])

    op.create_table(
        "holds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera", sa.String(64), nullable=True),
        sa.Column("start", sa.Double(), nullable=False),
        sa.Column("end", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("holds")
    op.drop_index("ix_events_start", table_name="events")
    op.drop_index("ix_events_camera_start", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_gaps_camera_start", table_name="gaps")
    op.drop_table("gaps")
    op.drop_index("ix_segments_camera_start", table_name="segments")
    op.drop_table("segments")
