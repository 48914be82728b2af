"""Owner-held keys: household key pairs, per-user key pairs and wraps, recovery and escrow wraps.

``household_keys`` holds each version of a household's key (public key and key id only),
``key_holders`` the holders of household keys (a person's key pair wrapped under their
password, a household's recovery key wrapped under its recovery code, a first-run
placeholder), ``household_key_seals`` each version sealed to a holder or to the escrow key,
``escrow_keys`` the deployment's escrow public key and ``household_escrow`` the owner's
emergency-access switch (see ``homewarden.services.household_keys``).

Revision ID: 0008_household_keys
Revises: 0007_camera_leases
Create Date: 2026-11-29 16:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_household_keys"
down_revision: str | Sequence[str] | None = "0007_camera_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AUTOINC = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.create_table(
        "household_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("household_id", sa.String(64), sa.ForeignKey("households.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.LargeBinary(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("retired_at", sa.Double(), nullable=True),
        sa.UniqueConstraint("household_id", "version", name="uq_household_keys_version"),
        sa.UniqueConstraint("key_id", name="uq_household_keys_key_id"),
        **_AUTOINC,
    )
    op.create_table(
        "key_holders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("household_id", sa.String(64), sa.ForeignKey("households.id"), nullable=False),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("key_id", sa.LargeBinary(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("wrap", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("key_id", name="uq_key_holders_key_id"),
        sa.UniqueConstraint("user_id", name="uq_key_holders_user"),
        **_AUTOINC,
    )
    op.create_index("ix_key_holders_household", "key_holders", ["household_id"])
    op.create_table(
        "escrow_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key_id", sa.LargeBinary(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("threshold", sa.SmallInteger(), nullable=False),
        sa.Column("shares", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("key_id", name="uq_escrow_keys_key_id"),
        **_AUTOINC,
    )
    op.create_table(
        "household_key_seals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "household_key_id",
            sa.Integer(),
            sa.ForeignKey("household_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "holder_id",
            sa.Integer(),
            sa.ForeignKey("key_holders.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column(
            "escrow_key_id",
            sa.Integer(),
            sa.ForeignKey("escrow_keys.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("household_key_id", "holder_id", name="uq_household_key_seals_holder"),
        sa.UniqueConstraint(
            "household_key_id", "escrow_key_id", name="uq_household_key_seals_escrow"
        ),
        sa.CheckConstraint(
            "(holder_id IS NULL) <> (escrow_key_id IS NULL)", name="ck_household_key_seals_one"
        ),
        **_AUTOINC,
    )
    op.create_index("ix_household_key_seals_holder", "household_key_seals", ["holder_id"])
    op.create_table(
        "household_escrow",
        sa.Column("household_id", sa.String(64), sa.ForeignKey("households.id"), primary_key=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("household_escrow")
    op.drop_index("ix_household_key_seals_holder", table_name="household_key_seals")
    op.drop_table("household_key_seals")
    op.drop_table("escrow_keys")
    op.drop_index("ix_key_holders_household", table_name="key_holders")
    op.drop_table("key_holders")
    op.drop_table("household_keys")
