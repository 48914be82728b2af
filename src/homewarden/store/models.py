"""SQLAlchemy 2 ORM rows of the recording index.

The schema is created and changed only by the Alembic revisions in
``homewarden/store/migrations/versions``; ``tests/store/test_index.py`` checks that the newest
revision and these models agree. Times are UTC epoch seconds stored as double precision
(millisecond precision needs more than a 32-bit float); sizes are 64-bit integers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Double,
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
        Index("ix_segments_camera_start", "camera", "start"),
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
