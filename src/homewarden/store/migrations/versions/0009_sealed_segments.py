"""Sealed segments: whether a segment file is sealed to a household key, and to which.

``segments.sealed`` is true for a file in the sealed format (``homewarden.crypto.sealing``),
``segments.key_id`` the 16-byte id of the household key version it is sealed to (NULL for a
plaintext segment), so a reader asks the session's key ring for that version without opening
the file first (``homewarden.services.sealed_footage``).

Revision ID: 0009_sealed_segments
Revises: 0008_household_keys
Create Date: 2026-11-29 17:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_sealed_segments"
down_revision: str | Sequence[str] | None = "0008_household_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch: SQLite's batch mode copies the table and would drop
    # its AUTOINCREMENT (segment ids must never be reused, see store/models.py).
    op.add_column(
        "segments", sa.Column("sealed", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("segments", sa.Column("key_id", sa.LargeBinary(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segments", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("key_id")
        batch.drop_column("sealed")
