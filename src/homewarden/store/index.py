"""The recording index: SQLAlchemy 2 over SQLite (WAL) or PostgreSQL (psycopg 3).

Signatures of the original interface are fixed; methods after the fixed ones are additions.
Every method is thread-safe: it opens one short session from a connection pool sized for many
recorder threads and commits before returning. Times are float UTC epoch seconds; sizes bytes.

Errors: :class:`~homewarden.errors.DatabaseError` when the database cannot be opened, migrated,
read or written (the message names the database and the driver's reason);
:class:`~homewarden.errors.NotFoundError` for a missing id;
:class:`~homewarden.errors.InvalidRequestError` for malformed input (a bad cursor, an end
before a start, a path indexed twice).

Backends (DESIGN.md "Chosen parts"): ``sqlite:///PATH`` (parent directory created, WAL journal,
foreign keys on, a busy timeout so writers from many threads wait instead of failing) and
``postgresql+psycopg://...`` (plain ``postgresql://`` and ``postgres://`` are rewritten to the
psycopg 3 driver).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.util.exc import CommandError
from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    or_,
    select,
    union,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from homewarden.errors import DatabaseError, InvalidRequestError, NotFoundError
from homewarden.store.models import EventRow, GapRow, HoldRow, SegmentRow
from homewarden.store.records import (
    EventRecord,
    GapRecord,
    HoldRecord,
    HourSummary,
    NewSegment,
    SegmentRecord,
)

log = logging.getLogger(__name__)

#: Folder of the Alembic environment and revisions (shipped as package data).
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: SQLite writers wait this long for the write lock before failing (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Pool sizes: recorder threads (one per camera) plus API and job workers share the pool;
#: sessions are short, so a bounded overflow is enough for 64 cameras.
POOL_SIZE = 8
POOL_MAX_OVERFLOW = 56
#: Largest page :meth:`Index.events` returns.
MAX_PAGE = 1000
#: Key of the PostgreSQL advisory lock held while migrating: recorder nodes starting at once
#: on one database would otherwise both create the same tables, and one would fail.
MIGRATE_LOCK_KEY = 0x486F6D6557617264  # "HomeWard"
#: A check run in the transaction that indexes a segment, before the insert; it raises to
#: refuse the segment (a recorder node's lease fence, :mod:`homewarden.store.lease_store`).
SegmentGuard = Callable[[Session], None]
#: Ids per DELETE statement (SQLite's default bound-parameter limit is 999 on old builds).
_DELETE_CHUNK = 500
_HOUR = 3600.0


def normalise_url(url: str) -> URL:
    """Parse a SQLAlchemy URL and pin the driver HomeWarden uses.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; ``sqlite://`` stays.

    Raises:
        DatabaseError: the URL does not parse, or names a backend other than SQLite/PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(
            f"invalid database URL {url!r}: expected sqlite:///PATH or postgresql://HOST/DB"
        ) from exc
    driver = parsed.drivername
    if driver in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if driver in ("sqlite", "sqlite+pysqlite"):
        return parsed
    raise DatabaseError(
        f"unsupported database {parsed.render_as_string(hide_password=True)!r}: "
        "HomeWarden runs on SQLite or PostgreSQL"
    )


def rowcount(result: object) -> int:
    """Rows a DML statement touched (``CursorResult.rowcount``, which SQLAlchemy's types do
    not expose on ``Session.execute``'s result); 0 when the driver does not say."""
    return int(getattr(result, "rowcount", 0) or 0)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed while one writer appends; NORMAL sync is durable across a
    # process crash (kill -9) in WAL mode, which is what crash safety asks for.
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _encode_cursor(start: float, row_id: int) -> str:
    raw = json.dumps([start, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Largest row id any backend stores: ids are 32-bit INTEGER on PostgreSQL (SERIAL). A forged
#: cursor with a larger id would overflow the driver instead of reading as "not issued here".
MAX_ROW_ID = 2**31 - 1


def _decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"bad cursor {cursor!r}: not one this server issued") from exc
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int | float)
        and not isinstance(value[0], bool)
        and math.isfinite(value[0])
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and 0 <= value[1] <= MAX_ROW_ID
    ):
        return float(value[0]), value[1]
    raise InvalidRequestError(f"bad cursor {cursor!r}: not one this server issued")


def _check_time(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a finite UTC epoch time, got {value!r}")


def _check_span(start: float, end: float | None) -> None:
    _check_time("start", start)
    if end is not None:
        _check_time("end", end)
        if end < start:
            raise InvalidRequestError(f"end {end} is before start {start}")


def _segment(row: SegmentRow) -> SegmentRecord:
    return SegmentRecord(
        id=row.id,
        camera=row.camera,
        start=row.start,
        end=row.end,
        duration=row.duration,
        bytes=row.bytes,
        keyframes=row.keyframes,
        motion_score=row.motion_score,
        path=row.path,
        sealed=bool(row.sealed),
        key_id=None if row.key_id is None else bytes(row.key_id),
    )


def _gap(row: GapRow) -> GapRecord:
    return GapRecord(
        id=row.id,
        camera=row.camera,
        start=row.start,
        end=row.end,
        reason=row.reason,
        detail=row.detail,
    )


def _event(row: EventRow) -> EventRecord:
    return EventRecord(
        id=row.id,
        camera=row.camera,
        start=row.start,
        end=row.end,
        label=row.label,
        peak_score=row.peak_score,
        zones=tuple(str(z) for z in row.zones),
        snapshot_path=row.snapshot_path,
    )


def _hold(row: HoldRow) -> HoldRecord:
    return HoldRecord(
        id=row.id,
        camera=row.camera,
        start=row.start,
        end=row.end,
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


@dataclass(frozen=True, slots=True)
class CameraTotals:
    """What the index holds for one camera (:meth:`Index.camera_totals`): ``segments``
    indexed, their ``recorded_seconds`` (sum of durations) and ``bytes``; ``gaps`` recorded
    (open or closed); ``events`` per label (``motion``, ``person``)."""

    camera: str
    segments: int
    recorded_seconds: float
    bytes: int
    gaps: int
    events: dict[str, int] = field(default_factory=dict)


class Index:
    """Index of segments, gaps, events and holds.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:////var/lib/homewarden/homewarden.db`` or
            ``postgresql://homewarden@db/homewarden``.

    Raises:
        DatabaseError: bad or unsupported URL, or the database cannot be reached/opened
            (message ``cannot open database at <where>: <reason>``).
    """

    def __init__(self, url: str) -> None:
        """Open (not yet migrate) the database at SQLAlchemy ``url``."""
        parsed = normalise_url(url)
        self._dialect = parsed.get_backend_name()
        if self._dialect == "sqlite":
            self._where = parsed.database or ":memory:"
            self._engine = self._sqlite_engine(parsed)
        else:
            self._where = parsed.render_as_string(hide_password=True)
            self._engine = self._postgres_engine(parsed)
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise DatabaseError(f"cannot open database at {self._where}: {_reason(exc)}") from exc
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def _sqlite_engine(self, url: URL) -> Engine:
        database = url.database
        if not database or database == ":memory:":
            # One shared connection, or every pooled connection would see its own empty DB.
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            path = Path(database).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot open database at {path}: cannot create {path.parent}: {exc}"
                ) from exc
            engine = create_engine(
                url,
                pool_size=POOL_SIZE,
                max_overflow=POOL_MAX_OVERFLOW,
                connect_args={"check_same_thread": False},
            )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine

    def _postgres_engine(self, url: URL) -> Engine:
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10
        try:
            return create_engine(
                url,
                pool_size=POOL_SIZE,
                max_overflow=POOL_MAX_OVERFLOW,
                pool_pre_ping=True,
                connect_args=connect_args,
            )
        except (NoSuchModuleError, ArgumentError) as exc:
            raise DatabaseError(f"cannot open database at {self._where}: {exc}") from exc

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (``alembic upgrade head``).

        Idempotent: an up-to-date database is left as it is.

        Raises:
            DatabaseError: the upgrade failed; the message names the database.
        """
        cfg = Config()
        # ConfigParser interpolates '%'; a path may contain one.
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        # Alembic's own INFO lines ("Context impl ...") are noise on every start; say once
        # here what changed instead.
        alembic_log = logging.getLogger("alembic.runtime.migration")
        previous_level = alembic_log.level
        alembic_log.setLevel(logging.WARNING)
        try:
            with self._engine.begin() as conn:
                if self._dialect == "postgresql":  # released at commit; DDL is transactional
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK_KEY})")
                before = MigrationContext.configure(conn).get_current_revision()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                after = MigrationContext.configure(conn).get_current_revision()
        except (SQLAlchemyError, CommandError) as exc:
            raise DatabaseError(
                f"cannot migrate database at {self._where}: {_reason(exc)}"
            ) from exc
        finally:
            alembic_log.setLevel(previous_level)
        if before != after:
            log.info("database %s migrated from %s to %s", self._where, before or "empty", after)

    def close(self) -> None:
        """Close every pooled connection. The index must not be used afterwards."""
        self._engine.dispose()

    def transaction(self, action: str) -> AbstractContextManager[Session]:
        """One short transaction for another store over this index's engine (commits on
        success). ``action`` names what it does, for error messages.

        Raises:
            InvalidRequestError: a constraint was violated (a duplicate, a missing parent).
            DatabaseError: the database failed.
        """
        return self._session(action)

    @contextmanager
    def _session(self, action: str) -> Iterator[Session]:
        """One short transaction; commits on success. Translates SQLAlchemy errors."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as exc:
            raise InvalidRequestError(f"cannot {action}: {_reason(exc)}") from exc
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"database at {self._where} failed to {action}: {_reason(exc)}"
            ) from exc

    # segments
    def add_segment(self, seg: NewSegment, *, guard: SegmentGuard | None = None) -> SegmentRecord:
        """Index a finished segment file.

        ``guard``: run in the same transaction before the insert; whatever it raises refuses
        the segment (nothing is written) and is raised here.

        Raises:
            InvalidRequestError: end before start, negative bytes, ``sealed`` without a
                ``key_id`` (or the reverse), or ``path`` (or the camera's ``start``) already
                indexed.
            DatabaseError: the write failed.
        """
        _check_span(seg.start, seg.end)
        if seg.bytes < 0 or seg.keyframes < 0:
            raise InvalidRequestError("segment bytes and keyframes must not be negative")
        if seg.sealed != (seg.key_id is not None):
            raise InvalidRequestError("a sealed segment needs its key id, a plaintext one none")
        row = SegmentRow(
            camera=seg.camera,
            start=seg.start,
            end=seg.end,
            duration=seg.end - seg.start,
            bytes=seg.bytes,
            keyframes=seg.keyframes,
            motion_score=seg.motion_score,
            path=seg.path,
            sealed=seg.sealed,
            key_id=seg.key_id,
        )
        with self._session(f"index segment {seg.path}") as s:
            if guard is not None:
                guard(s)
            s.add(row)
            s.flush()
            return _segment(row)

    def segments(
        self, camera: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[SegmentRecord]:
        """Segments overlapping ``[since, until)``, ordered by camera then start."""
        q = select(SegmentRow)
        if camera is not None:
            q = q.where(SegmentRow.camera == camera)
        if since is not None:
            q = q.where(SegmentRow.end > since)
        if until is not None:
            q = q.where(SegmentRow.start < until)
        q = q.order_by(SegmentRow.camera, SegmentRow.start, SegmentRow.id)
        with self._session("list segments") as s:
            return [_segment(r) for r in s.scalars(q)]

    def segment_by_path(self, path: str) -> SegmentRecord | None:
        """The segment indexed at ``path`` (relative to the media dir), or None."""
        with self._session("look up segment") as s:
            row = s.scalars(select(SegmentRow).where(SegmentRow.path == path)).one_or_none()
            return _segment(row) if row is not None else None

    def unsealed_segments(self, after_id: int = 0, limit: int = 500) -> list[SegmentRecord]:
        """Up to ``limit`` plaintext (not sealed) segments with id > ``after_id``, by id; for
        sealing footage recorded before ``storage.sealed`` (``services.seal_existing``)."""
        q = select(SegmentRow).where(SegmentRow.sealed.is_(False), SegmentRow.id > after_id)
        with self._session("list plaintext segments") as s:
            return [_segment(r) for r in s.scalars(q.order_by(SegmentRow.id).limit(limit))]

    def unsealed_totals(self) -> dict[str, tuple[int, int]]:
        """Per camera with plaintext (not sealed) segments: (segments, bytes) of them."""
        q = (
            select(SegmentRow.camera, func.count(), func.coalesce(func.sum(SegmentRow.bytes), 0))
            .where(SegmentRow.sealed.is_(False))
            .group_by(SegmentRow.camera)
        )
        with self._session("count plaintext segments") as s:
            return {str(cam): (int(n), int(size)) for cam, n, size in s.execute(q)}

    def mark_segment_sealed(
        self, segment_id: int, plain_path: str, sealed_path: str, size: int, key_id: bytes
    ) -> bool:
        """Point plaintext segment ``segment_id`` at its sealed file ``sealed_path`` (``size``
        bytes, sealed to household key ``key_id``), only while the row is still the plaintext
        one at ``plain_path``; False when it is not (deleted or changed meanwhile)."""
        q = (
            update(SegmentRow)
            .where(
                SegmentRow.id == segment_id,
                SegmentRow.path == plain_path,
                SegmentRow.sealed.is_(False),
            )
            .values(path=sealed_path, bytes=size, sealed=True, key_id=key_id)
        )
        with self._session(f"mark segment {plain_path} sealed") as s:
            return rowcount(s.execute(q)) == 1

    def delete_segments(self, ids: Iterable[int]) -> int:
        """Delete segment rows by id (not their files); returns how many rows went."""
        wanted = sorted(set(ids))
        deleted = 0
        with self._session("delete segments") as s:
            for i in range(0, len(wanted), _DELETE_CHUNK):
                chunk = wanted[i : i + _DELETE_CHUNK]
                result = s.execute(delete(SegmentRow).where(SegmentRow.id.in_(chunk)))
                deleted += rowcount(result)
        return deleted

    def total_bytes(self, camera: str | None = None) -> int:
        """Sum of indexed segment bytes, of one camera or of all."""
        q = select(func.coalesce(func.sum(SegmentRow.bytes), 0))
        if camera is not None:
            q = q.where(SegmentRow.camera == camera)
        with self._session("sum segment bytes") as s:
            return int(s.scalar(q) or 0)

    def hour_summary(self, camera: str, since: float, until: float) -> list[HourSummary]:
        """Per-UTC-hour summary of ``camera`` for the whole hours meeting ``[since, until)``.

        Only hours holding footage or an event are returned, oldest first. For each hour:
        ``recorded_seconds`` is the segments' overlap with the hour (a segment crossing the
        hour boundary is split), ``segments`` counts segments overlapping the hour, ``bytes``
        is their bytes prorated by that overlap (rounded to whole bytes), ``events`` counts
        events that start in the hour.

        Raises:
            InvalidRequestError: ``until`` before ``since`` or a non-finite time.
        """
        _check_span(since, until)
        h0 = math.floor(since / _HOUR) * _HOUR
        h1 = math.ceil(until / _HOUR) * _HOUR
        if h1 == h0:
            h1 = h0 + _HOUR
        seg_q = select(SegmentRow.start, SegmentRow.end, SegmentRow.bytes).where(
            SegmentRow.camera == camera, SegmentRow.end > h0, SegmentRow.start < h1
        )
        ev_q = select(EventRow.start).where(
            EventRow.camera == camera, EventRow.start >= h0, EventRow.start < h1
        )
        with self._session("summarise hours") as s:
            seg_rows = [(r[0], r[1], r[2]) for r in s.execute(seg_q)]
            event_starts = list(s.scalars(ev_q))
        buckets: dict[int, list[float]] = {}  # hour -> [seconds, bytes, segments, events]
        for start, end, size in seg_rows:
            duration = end - start
            hour = math.floor(max(start, h0) / _HOUR)
            while hour * _HOUR < min(max(end, start + 1e-9), h1):
                hs, he = hour * _HOUR, (hour + 1) * _HOUR
                overlap = max(0.0, min(end, he) - max(start, hs))
                b = buckets.setdefault(hour, [0.0, 0.0, 0, 0])
                b[0] += overlap
                b[1] += size * (overlap / duration) if duration > 0 else size
                b[2] += 1
                hour += 1
        for start in event_starts:
            buckets.setdefault(math.floor(start / _HOUR), [0.0, 0.0, 0, 0])[3] += 1
        return [
            HourSummary(
                camera=camera,
                hour_start=hour * _HOUR,
                recorded_seconds=b[0],
                bytes=round(b[1]),
                segments=int(b[2]),
                events=int(b[3]),
            )
            for hour, b in sorted(buckets.items())
        ]

    # gaps
    def open_gap(self, camera: str, start: float, reason: str, detail: str = "") -> int:
        """Record the start of an outage; returns the gap id (close it with :meth:`close_gap`)."""
        _check_time("start", start)
        row = GapRow(camera=camera, start=start, end=None, reason=reason, detail=detail)
        with self._session(f"open gap of {camera}") as s:
            s.add(row)
            s.flush()
            return row.id

    def add_gap(self, camera: str, start: float, end: float, reason: str, detail: str = "") -> int:
        """Record an outage already over, ``[start, end]``, in one write; returns its id.

        Raises:
            InvalidRequestError: a time is not finite, or ``end`` is before ``start``.
        """
        _check_span(start, end)
        row = GapRow(camera=camera, start=start, end=end, reason=reason, detail=detail)
        with self._session(f"add gap of {camera}") as s:
            s.add(row)
            s.flush()
            return row.id

    def close_gap(self, gap_id: int, end: float) -> None:
        """Set the end of gap ``gap_id``.

        Raises:
            NotFoundError: no such gap. InvalidRequestError: ``end`` before the gap's start.
        """
        with self._session(f"close gap {gap_id}") as s:
            row = s.get(GapRow, gap_id)
            if row is None:
                raise NotFoundError(f"no gap {gap_id}")
            _check_span(row.start, end)
            row.end = end

    def gaps(
        self, camera: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[GapRecord]:
        """Gaps overlapping ``[since, until)`` (an open gap lasts until now).

        Ordered by camera then start.
        """
        q = select(GapRow)
        if camera is not None:
            q = q.where(GapRow.camera == camera)
        if since is not None:
            q = q.where(or_(GapRow.end.is_(None), GapRow.end > since, GapRow.start >= since))
        if until is not None:
            q = q.where(GapRow.start < until)
        q = q.order_by(GapRow.camera, GapRow.start, GapRow.id)
        with self._session("list gaps") as s:
            return [_gap(r) for r in s.scalars(q)]

    # events
    def open_event(
        self, camera: str, start: float, label: str, peak_score: float, zones: Sequence[str]
    ) -> int:
        """Record a new (open) event; returns its id."""
        _check_time("start", start)
        row = EventRow(
            camera=camera,
            start=start,
            end=None,
            label=label,
            peak_score=peak_score,
            zones=[str(z) for z in zones],
            snapshot_path=None,
        )
        with self._session(f"open event of {camera}") as s:
            s.add(row)
            s.flush()
            return row.id

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
        """Change the given fields of an event (None leaves a field as it is).

        Raises:
            NotFoundError: no such event. InvalidRequestError: ``end`` before the start.
        """
        with self._session(f"update event {event_id}") as s:
            row = s.get(EventRow, event_id)
            if row is None:
                raise NotFoundError(f"no event {event_id}")
            if end is not None:
                _check_span(row.start, end)
                row.end = end
            if peak_score is not None:
                row.peak_score = peak_score
            if zones is not None:
                row.zones = [str(z) for z in zones]
            if label is not None:
                row.label = label
            if snapshot_path is not None:
                row.snapshot_path = snapshot_path

    def mark_snapshot_sealed(self, event_id: int, plain_path: str, sealed_path: str) -> bool:
        """Point event ``event_id``'s snapshot at ``sealed_path``, only while it is still
        ``plain_path``; False when it is not (the event deleted or its snapshot changed)."""
        q = (
            update(EventRow)
            .where(EventRow.id == event_id, EventRow.snapshot_path == plain_path)
            .values(snapshot_path=sealed_path)
        )
        with self._session(f"mark snapshot of event {event_id} sealed") as s:
            return rowcount(s.execute(q)) == 1

    def event(self, event_id: int) -> EventRecord:
        """One event. Raises NotFoundError when there is none with that id."""
        with self._session(f"read event {event_id}") as s:
            row = s.get(EventRow, event_id)
            if row is None:
                raise NotFoundError(f"no event {event_id}")
            return _event(row)

    def events(
        self,
        camera: str | None = None,
        label: str | None = None,
        zone: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
        *,
        cameras: Collection[str] | None = None,
    ) -> tuple[list[EventRecord], str | None]:
        """Newest first; returns (page, next_cursor or None).

        Raises InvalidRequestError on a bad cursor or a limit out of range.

        ``zone`` keeps events whose zone list holds that name; ``since``/``until`` keep events
        overlapping ``[since, until)`` (an open event lasts until now). ``cursor`` is the opaque
        string a previous page returned; ``limit`` is 1..:data:`MAX_PAGE`. ``cameras``, when
        given, keeps only events of those cameras (a viewer's visible cameras).
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be 1..{MAX_PAGE}, got {limit}")
        q = select(EventRow)
        if camera is not None:
            q = q.where(EventRow.camera == camera)
        if cameras is not None:
            q = q.where(EventRow.camera.in_(sorted(cameras)))
        if label is not None:
            q = q.where(EventRow.label == label)
        if zone is not None:
            q = q.where(self._has_zone(zone))
        if since is not None:
            q = q.where(or_(EventRow.end.is_(None), EventRow.end > since, EventRow.start >= since))
        if until is not None:
            q = q.where(EventRow.start < until)
        if cursor is not None:
            c_start, c_id = _decode_cursor(cursor)
            q = q.where(
                or_(EventRow.start < c_start, and_(EventRow.start == c_start, EventRow.id < c_id))
            )
        q = q.order_by(EventRow.start.desc(), EventRow.id.desc()).limit(limit + 1)
        with self._session("list events") as s:
            rows = [_event(r) for r in s.scalars(q)]
        page = rows[:limit]
        more = len(rows) > limit
        return page, (_encode_cursor(page[-1].start, page[-1].id) if more else None)

    def events_after(self, after_id: int, limit: int = 100) -> list[EventRecord]:
        """Up to ``limit`` (1..:data:`MAX_PAGE`) events with id > ``after_id``, by id (the
        order they were opened in); for followers such as the push notifier.

        Raises InvalidRequestError on a limit out of range.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be 1..{MAX_PAGE}, got {limit}")
        q = select(EventRow).where(EventRow.id > after_id).order_by(EventRow.id).limit(limit)
        with self._session("list new events") as s:
            return [_event(r) for r in s.scalars(q)]

    def _has_zone(self, zone: str) -> ColumnElement[bool]:
        # Expand the JSON array as a table and look for an equal element: exact on both
        # backends (a LIKE on the JSON text could match inside an escaped name).
        expand = func.jsonb_array_elements_text if self._dialect == "postgresql" else func.json_each
        elems = expand(EventRow.zones).table_valued("value").alias("zone_elems")
        return exists(select(1).select_from(elems).where(elems.c.value == zone))

    # holds
    def add_hold(
        self, camera: str | None, start: float, end: float, reason: str, expires_at: float | None
    ) -> int:
        """Keep footage of ``camera`` (None: every camera) in ``[start, end]``; returns the id.

        ``expires_at`` None means until removed. Raises InvalidRequestError when end < start.
        """
        _check_span(start, end)
        row = HoldRow(
            camera=camera,
            start=start,
            end=end,
            reason=reason,
            created_at=time.time(),
            expires_at=expires_at,
        )
        with self._session("add hold") as s:
            s.add(row)
            s.flush()
            return row.id

    def set_hold_expiry(self, hold_id: int, expires_at: float | None) -> None:
        """Move hold ``hold_id``'s expiry (UTC epoch s; None: until removed). A time in the
        past ends the hold at once (retention then treats its footage as any other).

        Raises:
            NotFoundError: no hold with that id.
        """
        with self._session(f"change hold {hold_id}") as s:
            row = s.get(HoldRow, hold_id)
            if row is None:
                raise NotFoundError(f"no hold {hold_id}")
            row.expires_at = expires_at

    def holds(self, active_at: float | None = None) -> list[HoldRecord]:
        """Holds ordered by start; with ``active_at``, only those not expired at that time."""
        q = select(HoldRow)
        if active_at is not None:
            q = q.where(or_(HoldRow.expires_at.is_(None), HoldRow.expires_at > active_at))
        q = q.order_by(HoldRow.start, HoldRow.id)
        with self._session("list holds") as s:
            return [_hold(r) for r in s.scalars(q)]

    # additions beyond the original interface
    def segment(self, segment_id: int) -> SegmentRecord:
        """One segment. Raises NotFoundError when there is none with that id."""
        with self._session(f"read segment {segment_id}") as s:
            row = s.get(SegmentRow, segment_id)
            if row is None:
                raise NotFoundError(f"no segment {segment_id}")
            return _segment(row)

    def camera_names(self) -> list[str]:
        """Sorted names of every camera with a segment, gap or event in the index."""
        q = union(select(SegmentRow.camera), select(GapRow.camera), select(EventRow.camera))
        with self._session("list cameras") as s:
            return sorted(str(c) for c in s.scalars(q))

    def last_segment_end(self, camera: str) -> float | None:
        """End of the latest-ending segment of ``camera``, or None when it has none."""
        with self._session(f"read last segment of {camera}") as s:
            value = s.scalar(select(func.max(SegmentRow.end)).where(SegmentRow.camera == camera))
            return float(value) if value is not None else None

    def open_gaps(self, camera: str | None = None) -> list[GapRecord]:
        """Gaps without an end (ongoing, or left open by a crash), by camera then start."""
        q = select(GapRow).where(GapRow.end.is_(None))
        if camera is not None:
            q = q.where(GapRow.camera == camera)
        with self._session("list open gaps") as s:
            return [_gap(r) for r in s.scalars(q.order_by(GapRow.camera, GapRow.start))]

    def open_events(self, camera: str | None = None) -> list[EventRecord]:
        """Events without an end (ongoing, or left open by a crash), by camera then start."""
        q = select(EventRow).where(EventRow.end.is_(None))
        if camera is not None:
            q = q.where(EventRow.camera == camera)
        with self._session("list open events") as s:
            return [_event(r) for r in s.scalars(q.order_by(EventRow.camera, EventRow.start))]

    def event_spans(self, camera: str | None = None) -> list[EventRecord]:
        """Every event (of ``camera``, or all), oldest first; for retention planning."""
        q = select(EventRow)
        if camera is not None:
            q = q.where(EventRow.camera == camera)
        with self._session("list event spans") as s:
            return [_event(r) for r in s.scalars(q.order_by(EventRow.start, EventRow.id))]

    def camera_totals(self, cameras: Collection[str] | None = None) -> dict[str, CameraTotals]:
        """What the index holds per camera, counted by the database (three grouped queries in
        one transaction, no rows loaded): segments, their summed ``duration`` (seconds) and
        ``bytes``, gaps (open or closed) and events per label. Only cameras with at least one
        segment, gap or event appear; ``cameras`` restricts the answer to those names (an
        empty collection answers ``{}`` without a query)."""
        if cameras is not None and not cameras:
            return {}
        wanted = None if cameras is None else sorted(set(cameras))
        seg_q = select(
            SegmentRow.camera,
            func.count(),
            func.coalesce(func.sum(SegmentRow.duration), 0.0),
            func.coalesce(func.sum(SegmentRow.bytes), 0),
        ).group_by(SegmentRow.camera)
        gap_q = select(GapRow.camera, func.count()).group_by(GapRow.camera)
        ev_q = select(EventRow.camera, EventRow.label, func.count()).group_by(
            EventRow.camera, EventRow.label
        )
        if wanted is not None:
            seg_q = seg_q.where(SegmentRow.camera.in_(wanted))
            gap_q = gap_q.where(GapRow.camera.in_(wanted))
            ev_q = ev_q.where(EventRow.camera.in_(wanted))
        with self._session("count per camera") as s:
            segs = {str(r[0]): (int(r[1]), float(r[2]), int(r[3])) for r in s.execute(seg_q)}
            gaps = {str(r[0]): int(r[1]) for r in s.execute(gap_q)}
            events: dict[str, dict[str, int]] = {}
            for cam, label, n in s.execute(ev_q):
                events.setdefault(str(cam), {})[str(label)] = int(n)
        out: dict[str, CameraTotals] = {}
        for cam in sorted(set(segs) | set(gaps) | set(events)):
            count, seconds, size = segs.get(cam, (0, 0.0, 0))
            out[cam] = CameraTotals(
                camera=cam,
                segments=count,
                recorded_seconds=seconds,
                bytes=size,
                gaps=gaps.get(cam, 0),
                events=events.get(cam, {}),
            )
        return out

    def delete_hold(self, hold_id: int) -> None:
        """Remove a hold. Raises NotFoundError when there is none with that id."""
        with self._session(f"delete hold {hold_id}") as s:
            row = s.get(HoldRow, hold_id)
            if row is None:
                raise NotFoundError(f"no hold {hold_id}")
            s.delete(row)


def _reason(exc: BaseException) -> str:
    """The driver's own message (without SQLAlchemy's SQL echo and help link)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
