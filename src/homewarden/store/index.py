"""The recording index: SQLAlchemy 2 over SQLite (WAL) or PostgreSQL (psycopg 3).

INTERFACE FILE — bodies are being implemented (helper: store). Signatures are fixed; helpers
may add methods but not change these. Every method is thread-safe (one short session per call).
Times are float UTC epoch seconds. Errors: DatabaseError for connection/migration failures,
NotFoundError for a missing id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from homewarden.store.records import (
    EventRecord,
    GapRecord,
    HoldRecord,
    HourSummary,
    NewSegment,
    SegmentRecord,
)


class Index:
    """Index of segments, gaps, events and holds."""

    def __init__(self, url: str) -> None:
        """Open (not yet migrate) the database at SQLAlchemy ``url``."""
        raise NotImplementedError

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # segments
    def add_segment(self, seg: NewSegment) -> SegmentRecord:
        raise NotImplementedError

    def segments(
        self, camera: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[SegmentRecord]:
        """Segments overlapping ``[since, until)``, ordered by camera then start."""
        raise NotImplementedError

    def segment_by_path(self, path: str) -> SegmentRecord | None:
        raise NotImplementedError

    def delete_segments(self, ids: Iterable[int]) -> int:
        raise NotImplementedError

    def total_bytes(self, camera: str | None = None) -> int:
        raise NotImplementedError

    def hour_summary(self, camera: str, since: float, until: float) -> list[HourSummary]:
        raise NotImplementedError

    # gaps
    def open_gap(self, camera: str, start: float, reason: str, detail: str = "") -> int:
        raise NotImplementedError

    def close_gap(self, gap_id: int, end: float) -> None:
        raise NotImplementedError

    def gaps(
        self, camera: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[GapRecord]:
        raise NotImplementedError

    # events
    def open_event(
        self, camera: str, start: float, label: str, peak_score: float, zones: Sequence[str]
    ) -> int:
        raise NotImplementedError

    def update_event(
        self,
        event_id: int,
        *,
        end: float | None = None,
        peak_score: float | None = None,
        zones: Sequence[str] | None = None,
        label: str | None = None,
        snapshot_path: str | None = None,
    ) -> None:
        raise NotImplementedError

    def event(self, event_id: int) -> EventRecord:
        raise NotImplementedError

    def events(
        self,
        camera: str | None = None,
        label: str | None = None,
        zone: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[EventRecord], str | None]:
        """Newest first; returns (page, next_cursor or None). Raises InvalidRequestError on a bad cursor."""
        raise NotImplementedError

    # holds
    def add_hold(
        self, camera: str | None, start: float, end: float, reason: str, expires_at: float | None
    ) -> int:
        raise NotImplementedError

    def holds(self, active_at: float | None = None) -> list[HoldRecord]:
        raise NotImplementedError
