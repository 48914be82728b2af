"""Disclosure requests: agencies, requesters, requests and their transitions, documents,
household policies, notices and package download links.

Revision ID: 0005_disclosure
Revises: 0004_camera_settings
Create Date: 2026-11-29 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_disclosure"
down_revision: str | Sequence[str] | None = "0004_camera_settings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AUTOINC = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.create_table(
        "agencies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("jurisdiction", sa.Text(), nullable=False),
        sa.Column("mail_domains", sa.JSON(), nullable=False),
        sa.Column("callback_phone", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        **_AUTOINC,
    )
    op.create_table(
        "requesters",
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_requesters_agency", "requesters", ["agency_id"])
    op.create_table(
        "disclosure_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("household_id", sa.String(64), sa.ForeignKey("households.id"), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("requester_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("agency_id", sa.Integer(), sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("filed_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("next_due", sa.Double(), nullable=True),
        sa.Column("package", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_disclosure_requests_household", "disclosure_requests", ["household_id"])
    op.create_index("ix_disclosure_requests_requester", "disclosure_requests", ["requester_id"])
    op.create_index("ix_disclosure_requests_next_due", "disclosure_requests", ["next_due"])
    op.create_table(
        "request_transitions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "request_id", sa.String(64), sa.ForeignKey("disclosure_requests.id"), nullable=False
        ),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("actor_role", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(200), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        **_AUTOINC,
    )
    op.create_index("ix_request_transitions_request", "request_transitions", ["request_id", "id"])
    op.create_table(
        "request_documents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "request_id", sa.String(64), sa.ForeignKey("disclosure_requests.id"), nullable=False
        ),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("uploaded_at", sa.Double(), nullable=False),
        **_AUTOINC,
    )
    op.create_index("ix_request_documents_request", "request_documents", ["request_id"])
    op.create_table(
        "household_policies",
        sa.Column("household_id", sa.String(64), sa.ForeignKey("households.id"), primary_key=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("notice_email", sa.String(254), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("audience", sa.String(16), nullable=False),
        sa.Column("household_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("read_at", sa.Double(), nullable=True),
        sa.Column("delivery", sa.Text(), nullable=False),
        **_AUTOINC,
    )
    op.create_index("ix_notices_household", "notices", ["household_id"])
    op.create_index("ix_notices_audience", "notices", ["audience"])
    op.create_table(
        "package_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "request_id", sa.String(64), sa.ForeignKey("disclosure_requests.id"), nullable=False
        ),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("downloads", sa.Integer(), nullable=False),
        sa.UniqueConstraint("token_hash", name="uq_package_links_hash"),
        **_AUTOINC,
    )


def downgrade() -> None:
    op.drop_table("package_links")
    op.drop_index("ix_notices_audience", table_name="notices")
    op.drop_index("ix_notices_household", table_name="notices")
    op.drop_table("notices")
    op.drop_table("household_policies")
    op.drop_index("ix_request_documents_request", table_name="request_documents")
    op.drop_table("request_documents")
    op.drop_index("ix_request_transitions_request", table_name="request_transitions")
    op.drop_table("request_transitions")
    op.drop_index("ix_disclosure_requests_next_due", table_name="disclosure_requests")
    op.drop_index("ix_disclosure_requests_requester", table_name="disclosure_requests")
    op.drop_index("ix_disclosure_requests_household", table_name="disclosure_requests")
    op.drop_table("disclosure_requests")
    op.drop_index("ix_requesters_agency", table_name="requesters")
    op.drop_table("requesters")
    op.drop_table("agencies")
