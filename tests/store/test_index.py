"""The recording index on real SQLite and real PostgreSQL (every test runs on both)."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from homewarden.errors import DatabaseError, InvalidRequestError, NotFoundError
from homewarden.store.index import MIGRATIONS_DIR, Index, normalise_url
from homewarden.store.models import Base
from homewarden.store.records import NewSegment

T0 = 1764403200.125  # 2025-11-29T08:00:00.125Z, a millisecond-precise start


def seg(
    camera: str, start: float, end: float, size: int = 1000, name: str | None = None
) -> NewSegment:
    return NewSegment(
        camera=camera,
        start=start,
        end=end,
        bytes=size,
        keyframes=1,
        motion_score=0.0,
        path=name or f"{camera}/{start:.3f}.mp4",
    )


# -- opening and migrating -------------------------------------------------------------------


def test_migrate_is_idempotent_and_matches_models(database_url: str) -> None:
    idx = Index(database_url)
    try:
        idx.migrate()
        idx.add_segment(seg("a", T0, T0 + 10))
        idx.migrate()  # second run: no-op, data kept
        assert len(idx.segments()) == 1
    finally:
        idx.close()
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as conn:
            head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            assert set(inspect(conn).get_table_names()) >= {"segments", "gaps", "events", "holds"}
            # The hand-written revision creates exactly what the ORM models declare.
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
            assert diff == []
    finally:
        engine.dispose()


def test_revision_downgrades_and_upgrades_from_the_command_line_env(database_url: str) -> None:
    # The env.py path without a caller's connection: alembic opens sqlalchemy.url itself.
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = normalise_url(database_url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    idx = Index(database_url)
    try:
        idx.migrate()  # back up through Index
        assert idx.segments() == []
    finally:
        idx.close()


def test_sqlite_uses_wal_and_creates_parent_dir(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "hw.db"
    idx = Index(f"sqlite:///{db}")
    try:
        idx.migrate()
        assert db.parent.is_dir()
        engine = idx._engine
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        idx.close()


def test_plain_postgresql_url_is_rewritten_to_psycopg() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("not a url", "invalid database URL"),
        ("mysql://root@localhost/hw", "unsupported database"),
        ("postgresql://postgres@127.0.0.1:1/nope", "cannot open database at"),
        ("postgresql://postgres@127.0.0.1:5432/hw_no_such_db", "cannot open database at"),
    ],
)
def test_bad_url_gives_database_error(url: str, needle: str) -> None:
    with pytest.raises(DatabaseError, match=needle):
        Index(url)


def test_sqlite_under_a_file_gives_database_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DatabaseError, match="cannot open database at"):
        Index(f"sqlite:///{blocker / 'sub' / 'hw.db'}")


def test_unmigrated_database_read_gives_database_error(database_url: str) -> None:
    idx = Index(database_url)
    try:
        with pytest.raises(DatabaseError, match="failed to list segments"):
            idx.segments()
    finally:
        idx.close()


# -- segments --------------------------------------------------------------------------------


def test_add_segment_round_trips_exact_times(index: Index) -> None:
    rec = index.add_segment(seg("front", T0, T0 + 9.96, size=123_456_789_012))
    assert rec.id > 0
    assert (rec.start, rec.end, rec.bytes) == (T0, T0 + 9.96, 123_456_789_012)
    assert rec.duration == pytest.approx(9.96)
    got = index.segment_by_path(f"front/{T0:.3f}.mp4")
    assert got == rec
    assert index.segment(rec.id) == rec
    assert index.segment_by_path("front/none.mp4") is None
    with pytest.raises(NotFoundError):
        index.segment(rec.id + 1000)


def test_add_segment_rejects_duplicates_and_bad_spans(index: Index) -> None:
    index.add_segment(seg("front", T0, T0 + 10))
    with pytest.raises(InvalidRequestError, match="index segment"):
        index.add_segment(seg("front", T0, T0 + 10))
    with pytest.raises(InvalidRequestError, match="before start"):
        index.add_segment(seg("front", T0 + 10, T0, name="x.mp4"))
    with pytest.raises(InvalidRequestError):
        index.add_segment(seg("front", float("nan"), T0, name="y.mp4"))
    assert len(index.segments()) == 1  # a failed insert leaves nothing behind


def test_segments_filter_by_overlap_and_order(index: Index) -> None:
    for cam in ("b", "a"):
        for i in range(3):
            index.add_segment(seg(cam, T0 + 10 * i, T0 + 10 * (i + 1)))
    all_ = index.segments()
    assert [(s.camera, s.start) for s in all_] == [
        (c, T0 + 10 * i) for c in ("a", "b") for i in range(3)
    ]
    a = index.segments(camera="a", since=T0 + 10, until=T0 + 20.5)
    # [since, until) overlap: the segment ending exactly at `since` is out, the one
    # starting before `until` is in.
    assert [s.start for s in a] == [T0 + 10, T0 + 20]
    assert index.segments(camera="a", since=T0 + 30) == []
    assert index.segments(until=T0) == []


def test_delete_segments_counts_and_chunks(index: Index) -> None:
    ids = [index.add_segment(seg("c", T0 + i, T0 + i + 1)).id for i in range(1200)]
    assert index.total_bytes() == 1200 * 1000
    assert index.delete_segments([*ids[:1100], 10**9]) == 1100
    assert len(index.segments()) == 100
    assert index.delete_segments([]) == 0


def test_ids_are_never_reused_after_every_row_is_deleted(database_url: str) -> None:
    # Regression: without AUTOINCREMENT SQLite hands out max(rowid) + 1, so once retention had
    # deleted every segment the next one was id 1 again, and an old /api/events/N link could
    # later name another event. PostgreSQL identities never go back; SQLite now keeps the
    # high-water mark in sqlite_sequence.
    idx = Index(database_url)
    idx.migrate()
    try:

        def add_each() -> dict[str, int]:
            return {
                "segments": idx.add_segment(seg("a", T0, T0 + 10)).id,
                "events": idx.open_event("a", T0, "motion", 0.5, []),
                "gaps": idx.open_gap("a", T0, "unreachable"),
                "holds": idx.add_hold("a", T0, T0 + 10, "kept", None),
            }

        first = add_each()
        engine = create_engine(normalise_url(database_url))
        try:
            with engine.begin() as conn:
                for table in first:
                    conn.execute(text(f"DELETE FROM {table}"))
        finally:
            engine.dispose()
        again = add_each()
    finally:
        idx.close()
    for table, old_id in first.items():
        assert again[table] > old_id, table


def test_total_bytes_per_camera(index: Index) -> None:
    assert index.total_bytes() == 0
    index.add_segment(seg("a", T0, T0 + 10, size=5))
    index.add_segment(seg("a", T0 + 10, T0 + 20, size=7))
    index.add_segment(seg("b", T0, T0 + 10, size=100))
    assert index.total_bytes("a") == 12
    assert index.total_bytes("b") == 100
    assert index.total_bytes("nobody") == 0
    assert index.total_bytes() == 112


def test_hour_summary_splits_segments_at_hour_boundaries(index: Index) -> None:
    h = 1764403200.0  # 08:00 UTC
    index.add_segment(seg("a", h + 10, h + 20, size=100))
    index.add_segment(seg("a", h + 3590, h + 3610, size=200))  # 10 s before 09:00, 10 s after
    index.add_segment(seg("a", h + 7300, h + 7310, size=50))  # 10:01:40
    index.add_segment(seg("b", h + 10, h + 20, size=999))  # other camera
    index.open_event("a", h + 15, "motion", 0.5, [])
    index.open_event("a", h + 3605, "person", 0.9, [])
    summary = index.hour_summary("a", h, h + 3 * 3600)
    assert [
        (x.hour_start, round(x.recorded_seconds, 6), x.bytes, x.segments, x.events) for x in summary
    ] == [
        (h, 20.0, 200, 2, 1),
        (h + 3600, 10.0, 100, 1, 1),
        (h + 7200, 10.0, 50, 1, 0),
    ]
    assert all(x.camera == "a" for x in summary)
    # whole hours: a mid-hour `since` still reports the full 09:00 hour
    later = index.hour_summary("a", h + 3600 + 1800, h + 3600 + 1801)
    assert [(x.hour_start, round(x.recorded_seconds, 6)) for x in later] == [(h + 3600, 10.0)]
    assert index.hour_summary("a", h - 7200, h) == []
    with pytest.raises(InvalidRequestError):
        index.hour_summary("a", h + 10, h)


# -- gaps ------------------------------------------------------------------------------------


def test_gaps_open_close_and_filter(index: Index) -> None:
    g1 = index.open_gap("a", T0, "unreachable", "connection refused")
    g2 = index.open_gap("b", T0 + 100, "stalled")
    assert [g.id for g in index.open_gaps()] == [g1, g2]
    index.close_gap(g1, T0 + 15)
    assert [g.id for g in index.open_gaps()] == [g2]
    assert [g.id for g in index.open_gaps("a")] == []
    gaps = index.gaps()
    assert [(g.camera, g.start, g.end, g.reason, g.detail) for g in gaps] == [
        ("a", T0, T0 + 15, "unreachable", "connection refused"),
        ("b", T0 + 100, None, "stalled", ""),
    ]
    assert [g.id for g in index.gaps(since=T0 + 20)] == [g2]  # open gap lasts until now
    assert [g.id for g in index.gaps(until=T0 + 50)] == [g1]
    assert [g.id for g in index.gaps(camera="b", since=T0 + 10**6)] == [g2]
    with pytest.raises(NotFoundError):
        index.close_gap(10**6, T0)
    with pytest.raises(InvalidRequestError):
        index.close_gap(g2, T0)  # before its start


# -- events ----------------------------------------------------------------------------------


def test_add_gap_records_a_closed_gap_in_one_write(index: Index) -> None:
    gid = index.add_gap("a", T0, T0 + 2.5, "not_recording", "no recorder was running")
    (gap,) = index.gaps(camera="a")
    assert (gap.id, gap.start, gap.end, gap.reason, gap.detail) == (
        gid,
        T0,
        T0 + 2.5,
        "not_recording",
        "no recorder was running",
    )
    assert index.open_gaps() == []
    with pytest.raises(InvalidRequestError):
        index.add_gap("a", T0, T0 - 1, "not_recording")


def test_event_open_update_read(index: Index) -> None:
    eid = index.open_event("front", T0, "motion", 0.2, ["porch"])
    ev = index.event(eid)
    assert (ev.camera, ev.start, ev.end, ev.label, ev.peak_score, ev.zones) == (
        "front",
        T0,
        None,
        "motion",
        0.2,
        ("porch",),
    )
    assert [e.id for e in index.open_events()] == [eid]
    index.update_event(
        eid,
        end=T0 + 12,
        peak_score=0.7,
        zones=["porch", "drive"],
        label="person",
        snapshot_path="snapshots/1.jpg",
    )
    ev = index.event(eid)
    assert (ev.end, ev.peak_score, ev.zones, ev.label, ev.snapshot_path) == (
        T0 + 12,
        0.7,
        ("porch", "drive"),
        "person",
        "snapshots/1.jpg",
    )
    index.update_event(eid, peak_score=0.8)  # other fields untouched
    assert index.event(eid).end == T0 + 12
    assert index.open_events() == []
    with pytest.raises(NotFoundError):
        index.event(eid + 99)
    with pytest.raises(NotFoundError):
        index.update_event(eid + 99, end=T0)
    with pytest.raises(InvalidRequestError):
        index.update_event(eid, end=T0 - 1)


def test_events_filters(index: Index) -> None:
    e1 = index.open_event("a", T0, "motion", 0.1, ["porch"])
    index.update_event(e1, end=T0 + 10)
    e2 = index.open_event("a", T0 + 100, "person", 0.9, ['a"porch', "drive_way"])
    index.update_event(e2, end=T0 + 110)
    e3 = index.open_event("b", T0 + 200, "motion", 0.5, ["porch"])  # still open

    def ids(**kw: object) -> list[int]:
        page, _ = index.events(**kw)  # type: ignore[arg-type]
        return [e.id for e in page]

    assert ids() == [e3, e2, e1]
    assert ids(camera="a") == [e2, e1]
    assert ids(label="motion") == [e3, e1]
    # exact membership: neither a substring of an escaped name nor a LIKE wildcard matches
    assert ids(zone="porch") == [e3, e1]
    assert ids(zone='a"porch') == [e2]
    assert ids(zone="drive_way") == [e2]
    assert ids(zone="drive%") == []
    assert ids(zone="drive") == []
    assert ids(since=T0 + 10) == [e3, e2]  # e1 ends exactly at `since`
    assert ids(since=T0 + 5, until=T0 + 100) == [e1]
    assert ids(since=T0 + 10**6) == [e3]  # open event lasts until now
    assert ids(camera="a", zone="porch", label="motion") == [e1]


def test_events_cursor_pages_through_ties(index: Index) -> None:
    # Seven events, two pairs sharing a start: paging must neither skip nor repeat.
    starts = [T0, T0 + 1, T0 + 1, T0 + 2, T0 + 3, T0 + 3, T0 + 4]
    ids = [index.open_event("a", s, "motion", 0.1, []) for s in starts]
    expected = [i for _, i in sorted(zip(starts, ids, strict=True), reverse=True)]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = index.events(cursor=cursor, limit=3)
        seen += [e.id for e in page]
        pages += 1
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3
    page, cursor = index.events(limit=7)
    assert len(page) == 7
    assert cursor is None


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!not base64!!!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b"[1.0]").decode(),
        base64.urlsafe_b64encode(b'["x", 1]').decode(),
        base64.urlsafe_b64encode(b"[1.0, 2.5]").decode(),
        base64.urlsafe_b64encode(b"[true, 1]").decode(),
        "",
    ],
)
def test_bad_cursor_is_invalid_request(index: Index, cursor: str) -> None:
    with pytest.raises(InvalidRequestError, match="cursor"):
        index.events(cursor=cursor)


def test_events_limit_bounds(index: Index) -> None:
    with pytest.raises(InvalidRequestError):
        index.events(limit=0)
    with pytest.raises(InvalidRequestError):
        index.events(limit=100_000)


def test_event_spans_oldest_first(index: Index) -> None:
    late = index.open_event("a", T0 + 50, "motion", 0.1, [])
    early = index.open_event("b", T0, "motion", 0.1, [])
    assert [e.id for e in index.event_spans()] == [early, late]
    assert [e.id for e in index.event_spans("a")] == [late]


# -- holds and helpers -----------------------------------------------------------------------


def test_holds_active_filter_and_delete(index: Index) -> None:
    forever = index.add_hold(None, T0, T0 + 60, "preservation request 7", None)
    short = index.add_hold("a", T0 - 10, T0 + 5, "owner keeps", expires_at=T0 + 1000)
    holds = index.holds()
    assert [h.id for h in holds] == [short, forever]
    h = holds[1]
    assert (h.camera, h.start, h.end, h.reason, h.expires_at) == (
        None,
        T0,
        T0 + 60,
        "preservation request 7",
        None,
    )
    assert h.created_at > 1.7e9
    assert [x.id for x in index.holds(active_at=T0 + 999)] == [short, forever]
    assert [x.id for x in index.holds(active_at=T0 + 1000)] == [forever]
    index.delete_hold(short)
    assert [x.id for x in index.holds()] == [forever]
    with pytest.raises(NotFoundError):
        index.delete_hold(short)
    with pytest.raises(InvalidRequestError):
        index.add_hold("a", T0, T0 - 1, "backwards", None)


def test_camera_names_and_last_segment_end(index: Index) -> None:
    assert index.camera_names() == []
    index.add_segment(seg("front", T0, T0 + 10))
    index.add_segment(seg("front", T0 + 10, T0 + 19.5))
    index.open_gap("back", T0, "unreachable")
    index.open_event("yard", T0, "motion", 0.1, [])
    assert index.camera_names() == ["back", "front", "yard"]
    assert index.last_segment_end("front") == T0 + 19.5
    assert index.last_segment_end("back") is None


def test_concurrent_writers(index: Index) -> None:
    """Many recorder threads writing at once: every write lands, none fails."""
    errors: list[BaseException] = []

    def record(cam: int) -> None:
        try:
            for i in range(15):
                index.add_segment(seg(f"cam{cam}", T0 + i * 10, T0 + i * 10 + 10))
                if i % 5 == 0:
                    gid = index.open_gap(f"cam{cam}", T0 + i, "stalled")
                    index.close_gap(gid, T0 + i + 1)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(c,)) for c in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(index.segments()) == 16 * 15
    assert len(index.gaps()) == 16 * 3


def test_forged_cursor_with_an_id_too_large_for_the_database_is_a_bad_cursor(index):
    # Regression: a cursor carrying id 2**64 overflowed SQLite's INTEGER (a 500 / traceback).
    forged = base64.urlsafe_b64encode(json.dumps([1.0, 2**64]).encode()).decode().rstrip("=")
    with pytest.raises(InvalidRequestError, match="bad cursor"):
        index.events(cursor=forged)
