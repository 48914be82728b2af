"""SQLAlchemy 2 ORM rows of the recording index.

The schema is created and changed only by the Alembic revisions in
``homewarden/store/migrations/versions``; ``tests/store/test_index.py`` checks that the newest
revision and these models agree. Times are UTC epoch seconds stored as double precision
(millisecond precision needs more than a 32-bit float); sizes are 64-bit integers.
"""

from __future__ import annotations

import builtins
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

#: JSON on SQLite, JSONB on PostgreSQL (so a zone filter can expand the array with
#: ``jsonb_array_elements_text``).
JsonList = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of every index table."""


#: Ids that name things users link to (``/api/events/<id>``, segments, gaps, holds) are never
#: handed out twice: SQLite's ``AUTOINCREMENT`` keeps the highest id ever used (in
#: ``sqlite_sequence``), where a plain ``INTEGER PRIMARY KEY`` reuses ``max(id) + 1`` once
#: the newest rows are deleted. PostgreSQL's serial/identity sequences never go back anyway.
_NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class SegmentRow(Base):
    """One recorded segment file; ``path`` is relative to the media dir."""

    __tablename__ = "segments"
    __table_args__ = (
        # unique since 0007: one segment per camera and start, whichever node records it
        Index("ix_segments_camera_start", "camera", "start", unique=True),
        UniqueConstraint("path", name="uq_segments_path"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(64))
    start: Mapped[float] = mapped_column(Double)
    end: Mapped[float] = mapped_column(Double)
    duration: Mapped[float] = mapped_column(Double)
    bytes: Mapped[int] = mapped_column(BigInteger)
    keyframes: Mapped[int] = mapped_column(Integer)
    motion_score: Mapped[float] = mapped_column(Double)
    path: Mapped[str] = mapped_column(String(512))
    # since 0009: sealed to household key ``key_id`` (homewarden.crypto.sealing); else NULL
    sealed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    key_id: Mapped[builtins.bytes | None] = mapped_column(LargeBinary(16), nullable=True)


class GapRow(Base):
    """An outage of one camera; ``end`` is NULL while it lasts."""

    __tablename__ = "gaps"
    __table_args__ = (Index("ix_gaps_camera_start", "camera", "start"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(64))
    start: Mapped[float] = mapped_column(Double)
    end: Mapped[float | None] = mapped_column(Double, nullable=True)
    reason: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


class EventRow(Base):
    """A motion or person event; ``zones`` is a JSON list of zone names."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_camera_start", "camera", "start"),
        Index("ix_events_start", "start"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(64))
    start: Mapped[float] = mapped_column(Double)
    end: Mapped[float | None] = mapped_column(Double, nullable=True)
    label: Mapped[str] = mapped_column(String(64))
    peak_score: Mapped[float] = mapped_column(Double)
    zones: Mapped[list[Any]] = mapped_column(JsonList, default=list)
    snapshot_path: Mapped[str | None] = mapped_column(String(512), nullable=True)


class HoldRow(Base):
    """Footage of ``camera`` (NULL: every camera) in ``[start, end]`` that must be kept."""

    __tablename__ = "holds"
    __table_args__ = (_NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str | None] = mapped_column(String(64), nullable=True)
    start: Mapped[float] = mapped_column(Double)
    end: Mapped[float] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)


#: 64-bit keys, but SQLite's INTEGER PRIMARY KEY (the rowid itself: clustered, no extra index).
AuditIndex = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntryRow(Base):
    """One audit log entry: ``leaf`` is its canonical JSON, ``leaf_hash`` its RFC 9162 leaf
    hash (level-0 node). Rows are only ever inserted (``homewarden.store.audit_store``)."""

    __tablename__ = "audit_entries"

    idx: Mapped[int] = mapped_column(AuditIndex, primary_key=True, autoincrement=False)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditNodeRow(Base):
    """A complete interior subtree of the audit tree: ``2**level`` leaves from
    ``idx * 2**level`` (level >= 1), cached so proofs need O(log n) reads."""

    __tablename__ = "audit_nodes"
    # Clustered on (level, idx) on SQLite: no rowid, no second index.
    __table_args__ = ({"sqlite_with_rowid": False},)

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditTreeHeadRow(Base):
    """A signed tree head: the log had ``tree_size`` entries with ``root`` at ``timestamp_ms``
    (UTC epoch ms), signed (Ed25519, 64 bytes) by the key whose SHA-256 id is ``key_id``."""

    __tablename__ = "audit_tree_heads"
    __table_args__ = (Index("ix_audit_tree_heads_tree_size", "tree_size"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))


class AuditStateRow(Base):
    """The one row (id 1) holding the log's size. Writers lock it (PostgreSQL ``FOR UPDATE``;
    SQLite ``BEGIN IMMEDIATE``) so index allocation is serial across threads and processes."""

    __tablename__ = "audit_state"
    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_state_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


# accounts (migration 0003)


class HouseholdRow(Base):
    """A household: the people and cameras one owner answers for."""

    __tablename__ = "households"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)


class UserRow(Base):
    """An account. ``household_id`` is NULL for staff. ``password_hash`` is a libsodium
    Argon2id string (NULL until the one-time setup link is used). ``totp_secret`` is base32
    (RFC 4226/6238), ``totp_last_step`` the last accepted time step (a code is never accepted
    twice). ``failed_logins``: failed logins since the last successful one."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("username", name="uq_users_username"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(Text, default="")
    role: Mapped[str] = mapped_column(String(32))
    household_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("households.id"), nullable=True
    )
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Double)


class SessionRow(Base):
    """A server-side login session. ``id`` is the SHA-256 (hex) of the cookie's secret, so a
    database reader cannot ride a session. ``stage`` is ``mfa`` between password and TOTP,
    ``full`` once signed in."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(16))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    last_seen: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    client_host: Mapped[str] = mapped_column(String(64), default="")


class ApiTokenRow(Base):
    """An API token for scripts: only its SHA-256 (hex) is kept; ``prefix`` (the first
    characters) lets a user tell tokens apart."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_tokens_hash"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    last_used_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class CameraGrantRow(Base):
    """The owner let member ``user_id`` see ``camera``."""

    __tablename__ = "camera_grants"

    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    camera: Mapped[str] = mapped_column(String(64), primary_key=True)
    granted_by: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[float] = mapped_column(Double)


class SupportGrantRow(Base):
    """The owner ``granted_by`` let staff support see ``household_id``'s footage until
    ``expires_at`` (UTC epoch seconds) or until revoked."""

    __tablename__ = "support_grants"
    __table_args__ = (Index("ix_support_grants_household", "household_id"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), ForeignKey("households.id"))
    granted_by: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class SetupLinkRow(Base):
    """A one-time link that lets ``user_id`` choose a password; SHA-256 (hex) of its secret."""

    __tablename__ = "setup_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    used_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class LoginThrottleRow(Base):
    """Failed logins per client address (``key`` = ``ip:<address>``) in the current window."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[float] = mapped_column(Double)


class PushSubscriptionRow(Base):
    """A browser's Web Push subscription (W3C Push API): the push service ``endpoint`` URL and
    the client's P-256 public key and auth secret (base64url), RFC 8291."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (UniqueConstraint("endpoint", name="uq_push_endpoint"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(2048))
    p256dh: Mapped[str] = mapped_column(String(255))
    auth: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Double)
    failures: Mapped[int] = mapped_column(Integer, default=0)


class NotifyPrefsRow(Base):
    """A user's notification settings. ``cameras``/``labels``/``zones``: NULL means all;
    quiet hours are minutes of the day in ``timezone`` (IANA name); start == end means none."""

    __tablename__ = "notify_prefs"

    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cameras: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    labels: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    zones: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    quiet_start: Mapped[int] = mapped_column(Integer, default=0)
    quiet_end: Mapped[int] = mapped_column(Integer, default=0)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")


class NotifyCursorRow(Base):
    """The one row (id 1): the newest event id the push notifier has handled."""

    __tablename__ = "notify_cursor"
    __table_args__ = (CheckConstraint("id = 1", name="ck_notify_cursor_single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_event_id: Mapped[int] = mapped_column(BigInteger)


class CameraSettingsRow(Base):
    """A camera's settings as the household's owner set them in the app (migration 0004).

    ``settings`` holds the fields of :class:`homewarden.config.CameraSettings` as JSON; a row
    for a camera of the config file replaces that camera's settings, any other row is a camera
    added in the app. ``updated_by`` is the account id of the owner who saved it last (NULL:
    no account, e.g. the local operator).
    """

    __tablename__ = "camera_settings"
    __table_args__ = (Index("ix_camera_settings_household", "household_id"),)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), ForeignKey("households.id"))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Double)
    updated_by: Mapped[int | None] = mapped_column(Integer, nullable=True)


# disclosure requests (migration 0005)


class AgencyRow(Base):
    """An agency on the deployment's allow-list, kept by staff: its official mail domains
    and the call-back phone number staff recorded (emergency requests are confirmed by
    calling this number, never one given in a request)."""

    __tablename__ = "agencies"
    __table_args__ = (_NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    jurisdiction: Mapped[str] = mapped_column(Text)
    mail_domains: Mapped[list[Any]] = mapped_column(JSON)
    callback_phone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    created_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class RequesterRow(Base):
    """A requester account (``users`` row of role requester) of one agency, with the
    official mail address its setup link was sent to."""

    __tablename__ = "requesters"
    __table_args__ = (Index("ix_requesters_agency", "agency_id"),)

    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    email: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[float] = mapped_column(Double)


class DisclosureRequestRow(Base):
    """A disclosure request. ``data`` is the whole request as the services serialise it;
    the other columns repeat what is queried (household, state, requester, when a system step
    falls due). ``version`` rises with every change (optimistic concurrency: a step decided on
    a stale copy is refused)."""

    __tablename__ = "disclosure_requests"
    __table_args__ = (
        Index("ix_disclosure_requests_household", "household_id"),
        Index("ix_disclosure_requests_requester", "requester_id"),
        Index("ix_disclosure_requests_next_due", "next_due"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), ForeignKey("households.id"))
    type: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    requester_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))
    agency_id: Mapped[int] = mapped_column(Integer, ForeignKey("agencies.id"))
    filed_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    next_due: Mapped[float | None] = mapped_column(Double, nullable=True)
    package: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)


class RequestTransitionRow(Base):
    """One recorded step of a request: action, states, actor, time, reason."""

    __tablename__ = "request_transitions"
    __table_args__ = (Index("ix_request_transitions_request", "request_id", "id"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), ForeignKey("disclosure_requests.id"))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str] = mapped_column(String(32))
    actor_role: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(Text)


class RequestDocumentRow(Base):
    """A document filed with a request (an order, a warrant); the bytes live under the data
    dir, named by their SHA-256."""

    __tablename__ = "request_documents"
    __table_args__ = (Index("ix_request_documents_request", "request_id"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), ForeignKey("disclosure_requests.id"))
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    uploaded_at: Mapped[float] = mapped_column(Double)


class HouseholdPolicyRow(Base):
    """A household's disclosure policy as its owner set it, where notices go, and the
    street address requesters locate it by (normalised; NULL: only by camera name)."""

    __tablename__ = "household_policies"

    household_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("households.id"), primary_key=True
    )
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    notice_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    address: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[float] = mapped_column(Double)
    updated_by: Mapped[int | None] = mapped_column(Integer, nullable=True)


class NoticeRow(Base):
    """A notice in the app: to a household's owner (``audience`` owner), to staff, or to one
    user. ``delivery`` says how it went out besides the app (mail sent, mail failed: why)."""

    __tablename__ = "notices"
    __table_args__ = (
        Index("ix_notices_household", "household_id"),
        Index("ix_notices_audience", "audience"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audience: Mapped[str] = mapped_column(String(16))
    household_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    read_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    delivery: Mapped[str] = mapped_column(Text, default="")


class PackageLinkRow(Base):
    """A download link for a fulfilled request's package: only the SHA-256 (hex) of its
    secret is kept; it expires at ``expires_at``."""

    __tablename__ = "package_links"
    __table_args__ = (
        UniqueConstraint("token_hash", name="uq_package_links_hash"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), ForeignKey("disclosure_requests.id"))
    requester_id: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    downloads: Mapped[int] = mapped_column(Integer, default=0)


# webhooks (migration 0006)


class WebhookRow(Base):
    """A household's webhook: where calls go (``url``), the signing secret (``whsec_...``,
    Standard Webhooks), which kinds of message it wants (JSON list: ``event``, ``request``)
    and whether it is disabled (by its owner, or after a ``410 Gone``)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_household", "household_id"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), ForeignKey("households.id"))
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(128))
    kinds: Mapped[list[Any]] = mapped_column(JSON)
    created_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class WebhookDeliveryRow(Base):
    """One message to one webhook and its attempts: ``state`` is ``pending`` (next try at
    ``next_attempt_at``), ``delivered`` or ``dead`` (a dead letter); ``body`` is the exact
    JSON text signed and sent; ``message_id`` the ``webhook-id`` header, the same on every
    try."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "message_id", name="uq_webhook_deliveries_message"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("webhooks.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class EventCursorRow(Base):
    """How far a named follower of the index's events has got (the newest event id it has
    handled), so a restart neither repeats nor skips events. One row per follower
    (``webhooks``, ...)."""

    __tablename__ = "event_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Double)


# recorder nodes and camera leases (migration 0007)


class RecorderNodeRow(Base):
    """One running recorder node (a ``homewarden run --role recorder`` process; a restart is
    a new row): its name (the lock file's, default the host name), host, pid, start and last
    heartbeat (UTC epoch s, the database's clock). A node is live while its heartbeat is
    younger than the lease TTL."""

    __tablename__ = "recorder_nodes"
    __table_args__ = (_NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Double)
    heartbeat_at: Mapped[float] = mapped_column(Double)


class CameraLeaseRow(Base):
    """Who records ``camera``: ``node_id`` (None: free) until ``expires_at`` (UTC epoch s,
    the database's clock); ``token`` is the fencing token, raised by one at each acquisition,
    so a segment of an earlier holder is refused (``homewarden.services.leases``)."""

    __tablename__ = "camera_leases"
    __table_args__ = (Index("ix_camera_leases_node", "node_id"),)

    camera: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("recorder_nodes.id", ondelete="SET NULL"), nullable=True
    )
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    acquired_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    expires_at: Mapped[float] = mapped_column(Double, default=0.0)


# owner-held keys (migration 0008)


class HouseholdKeyRow(Base):
    """One version of a household's X25519 key (``homewarden.services.household_keys``): its
    16-byte ``key_id`` and 32-byte ``public_key`` in the clear (the recorder seals footage to
    the newest version), never its private key (only sealed, in ``household_key_seals``).
    ``retired_at`` is when a newer version replaced it for new footage (None: current)."""

    __tablename__ = "household_keys"
    __table_args__ = (
        UniqueConstraint("household_id", "version", name="uq_household_keys_version"),
        UniqueConstraint("key_id", name="uq_household_keys_key_id"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), ForeignKey("households.id"))
    version: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[bytes] = mapped_column(LargeBinary(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[float] = mapped_column(Double)
    retired_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class KeyHolderRow(Base):
    """A holder of a household's keys: a person (``kind`` ``person``, ``user_id`` set; one
    per user), the household's recovery key (``recovery``) or its first-run placeholder
    (``setup``, whose private key is a 0600 file until the first owner sets a password).
    ``wrap`` is the holder's private key wrapped under the person's password or the recovery
    code (None for ``setup``)."""

    __tablename__ = "key_holders"
    __table_args__ = (
        UniqueConstraint("key_id", name="uq_key_holders_key_id"),
        UniqueConstraint("user_id", name="uq_key_holders_user"),
        Index("ix_key_holders_household", "household_id"),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    household_id: Mapped[str] = mapped_column(String(64), ForeignKey("households.id"))
    user_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    key_id: Mapped[bytes] = mapped_column(LargeBinary(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    wrap: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class EscrowKeyRow(Base):
    """The deployment's escrow public key (``homewarden escrow init``); its private key
    exists only as custodians' shares (``threshold``-of-``shares``)."""

    __tablename__ = "escrow_keys"
    __table_args__ = (UniqueConstraint("key_id", name="uq_escrow_keys_key_id"), _NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[bytes] = mapped_column(LargeBinary(16))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    threshold: Mapped[int] = mapped_column(SmallInteger)
    shares: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[float] = mapped_column(Double)


class HouseholdKeySealRow(Base):
    """A household key version sealed to one holder (``holder_id``) or to the escrow key
    (``escrow_key_id``): exactly one of the two is set."""

    __tablename__ = "household_key_seals"
    __table_args__ = (
        UniqueConstraint("household_key_id", "holder_id", name="uq_household_key_seals_holder"),
        UniqueConstraint(
            "household_key_id", "escrow_key_id", name="uq_household_key_seals_escrow"
        ),
        Index("ix_household_key_seals_holder", "holder_id"),
        CheckConstraint(
            "(holder_id IS NULL) <> (escrow_key_id IS NULL)", name="ck_household_key_seals_one"
        ),
        _NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_key_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("household_keys.id", ondelete="CASCADE")
    )
    holder_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("key_holders.id", ondelete="CASCADE"), nullable=True
    )
    escrow_key_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("escrow_keys.id", ondelete="CASCADE"), nullable=True
    )
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Double)


class HouseholdEscrowRow(Base):
    """The owner's emergency-access switch: while ``enabled``, the household's keys are
    sealed to the escrow key too. ``updated_by`` is the user id who last changed it."""

    __tablename__ = "household_escrow"

    household_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("households.id"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[float] = mapped_column(Double)
    updated_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
