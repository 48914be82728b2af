"""Tamper-evident audit log: entries, cached tree nodes, signed tree heads, the size row.

Revision ID: 0002_audit_log
Revises: 0001_initial
Create Date: 2025-12-06 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_audit_log"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As homewarden.store.models.AuditIndex: BIGINT, but INTEGER PRIMARY KEY (the rowid) on SQLite.
_audit_index = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("idx", _audit_index, primary_key=True, autoincrement=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sqlite_with_rowid=False,  # clustered on (level, idx): no rowid, no second index
    )
    op.create_table(
        "audit_tree_heads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
    )
    op.create_index("ix_audit_tree_heads_tree_size", "audit_tree_heads", ["tree_size"])
    state = op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_state_single_row"),
    )
    op.bulk_insert(state, [{"id": 1, "size": 0}])


def downgrade() -> None:
    op.drop_table("audit_state")
    op.drop_index("ix_audit_tree_heads_tree_size", table_name="audit_tree_heads")
    op.drop_table("audit_tree_heads")
    op.drop_table("audit_nodes")
    op.drop_table("audit_entries")
