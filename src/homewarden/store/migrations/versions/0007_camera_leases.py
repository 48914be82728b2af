"""Camera leases for many recorder nodes on one database: who records which camera, until when.

``recorder_nodes`` holds one row per running ``homewarden run --role recorder`` process (an
incarnation: a restarted node gets a new id) and its last heartbeat; ``camera_leases`` one row
per camera: the node holding it, until when, and the fencing token, raised by one at each
acquisition so a segment of an earlier holder can be told from the current one's (see
``homewarden.services.leases``). A segment's ``(camera, start)`` becomes unique: its path
already named both, now the database says so too.

Revision ID: 0007_camera_leases
Revises: 0006_webhooks
Create Date: 2026-11-29 16:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_camera_leases"
down_revision: str | Sequence[str] | None = "0006_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recorder_nodes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "camera_leases",
        sa.Column("camera", sa.String(64), primary_key=True),
        sa.Column(
            "node_id",
            sa.Integer(),
            sa.ForeignKey("recorder_nodes.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.Double(), nullable=True),
        sa.Column("expires_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_camera_leases_node", "camera_leases", ["node_id"])
    op.drop_index("ix_segments_camera_start", table_name="segments")
    op.create_index("ix_segments_camera_start", "segments", ["camera", "start"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_segments_camera_start", table_name="segments")
    op.create_index("ix_segments_camera_start", "segments", ["camera", "start"])
    op.drop_index("ix_camera_leases_node", table_name="camera_leases")
    op.drop_table("camera_leases")
    op.drop_table("recorder_nodes")
