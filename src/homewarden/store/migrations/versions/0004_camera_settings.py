"""Camera settings managed in the app: cameras the owner added, and the owner's edits of
cameras from the config file (fields of ``CameraSettings`` as JSON).

Revision ID: 0004_camera_settings
Revises: 0003_accounts
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_camera_settings"
down_revision: str | Sequence[str] | None = "0003_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "camera_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("household_id", sa.String(64), sa.ForeignKey("households.id"), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
    )
    op.create_index("ix_camera_settings_household", "camera_settings", ["household_id"])


def downgrade() -> None:
    op.drop_index("ix_camera_settings_household", table_name="camera_settings")
    op.drop_table("camera_settings")
