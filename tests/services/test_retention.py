"""Retention passes over real segment files and a real index (both databases).

Acceptance 5 of issue 2: retention with a tiny cap deletes the oldest non-event footage first
and never held footage.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections import namedtuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from homewarden.config import Settings
from homewarden.domain.retention import DAY, MAX_FLOOR_FRACTION, DeletionReason
from homewarden.media.probe import probe_segment
from homewarden.services.retention import run_retention_pass
from homewarden.store.index import Index
from homewarden.store.records import NewSegment, SegmentRecord
from tests.segment_files import make_segment

LOGGER = "homewarden.services.retention"
NOW = 1764403200.0 + 12 * 3600  # 2025-11-29T20:00:00Z
GIB = 1024**3
Usage = namedtuple("Usage", "total used free")


def plenty(_path: Path) -> Usage:
    """A disk with room to spare, so only the rules under test act."""
    return Usage(10**15, 0, 10**15)


def settings(**camera_retention: Any) -> Settings:
    return Settings(
        cameras={"front": {"url": "file:/footage.mp4", "retention": camera_retention}},
        storage={"min_free_bytes": 0},
    )


def record(
    index: Index, media: Path, start: float, gop: int, camera: str = "front"
) -> SegmentRecord:
    """A real segment file (one GOP of bikes.mp4) at the recorder's path, indexed."""
    when = datetime.fromtimestamp(start, UTC)
    rel = f"{camera}/{when:%Y-%m-%d}/{when:%H}/{start:.3f}.mp4"
    p = probe_segment(make_segment(media / rel, first_gop=gop))
    return index.add_segment(
        NewSegment(camera, start, start + p.duration, p.bytes, p.keyframes, 0.0, rel)
    )


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return tmp_path / "media"


def test_tiny_cap_deletes_oldest_non_event_first_never_held(index: Index, media: Path) -> None:
    """Acceptance 5."""
    segs = [record(index, media, NOW - 600 + 10 * i, gop=i % 5) for i in range(6)]
    held, event, *_ = segs
    index.add_hold("front", held.start + 1, held.start + 2, "preservation", None)
    eid = index.open_event("front", event.start + 0.2, "motion", 0.8, [])
    index.update_event(eid, end=event.start + 0.6)
    # cap: room for the held and the event footage plus the newest segment
    cap = held.bytes + event.bytes + segs[-1].bytes
    report = run_retention_pass(index, settings(max_bytes=cap), media, NOW, disk_usage=plenty)

    left = {s.id for s in index.segments()}
    assert held.id in left
    assert (media / held.path).is_file()
    # the oldest non-event footage went first, in order, until under the cap; event
    # footage only after all of it
    gone = [s for s in segs if s.id not in left]
    non_event = [s for s in segs if s.id not in (held.id, event.id)]
    assert event.id in left
    assert gone == non_event[:-1]
    assert index.total_bytes("front") <= cap
    for s in gone:
        assert not (media / s.path).exists()
    assert report.deleted == len(gone)
    assert report.by_reason == {"camera_cap": len(gone)}
    assert report.bytes_freed == sum(s.bytes for s in gone)
    assert report.failed == report.missing_files == 0


def test_tinier_cap_takes_event_footage_but_still_not_held(index: Index, media: Path) -> None:
    segs = [record(index, media, NOW - 600 + 10 * i, gop=i) for i in range(3)]
    index.add_hold(None, segs[2].start, segs[2].end, "owner keeps", None)  # every camera
    eid = index.open_event("front", segs[0].start, "person", 0.9, [])
    index.update_event(eid, end=segs[0].end)
    report = run_retention_pass(index, settings(max_bytes=1), media, NOW, disk_usage=plenty)
    assert [s.id for s in index.segments()] == [segs[2].id]
    assert report.by_reason == {"camera_cap": 2}
    [short] = report.shortfalls
    assert (short.reason, short.camera) == (DeletionReason.CAMERA_CAP, "front")
    assert short.bytes == segs[2].bytes - 1


def test_age_and_directory_pruning(index: Index, media: Path) -> None:
    old = record(index, media, NOW - 4 * DAY, gop=0)
    recent = record(index, media, NOW - 60, gop=1)
    report = run_retention_pass(index, settings(), media, NOW, disk_usage=plenty)
    assert report.by_reason == {"age": 1}
    assert [s.id for s in index.segments()] == [recent.id]
    old_hour_dir = (media / old.path).parent
    assert not old_hour_dir.exists()  # hour and day directories pruned once empty
    assert not old_hour_dir.parent.exists()
    assert (media / "front").is_dir()
    assert (media / recent.path).is_file()


def test_total_cap_from_storage_settings(index: Index, media: Path) -> None:
    a = record(index, media, NOW - 300, gop=0, camera="front")
    b = record(index, media, NOW - 200, gop=1, camera="back")
    c = record(index, media, NOW - 100, gop=2, camera="front")
    s = Settings(
        cameras={"front": {"url": "file:/x.mp4"}},  # "back" unconfigured: default policy
        storage={"max_total_bytes": b.bytes + c.bytes, "min_free_bytes": 0},
    )
    report = run_retention_pass(index, s, media, NOW, disk_usage=plenty)
    assert report.by_reason == {"total_cap": 1}
    assert {x.id for x in index.segments()} == {b.id, c.id}
    assert not (media / a.path).exists()


def test_disk_guard_uses_free_disk_and_recording_rate(index: Index, media: Path) -> None:
    segs = [record(index, media, NOW - 40 + 10 * i, gop=i) for i in range(3)]
    seen: list[Path] = []

    def nearly_full(path: Path) -> Usage:
        seen.append(path)
        return Usage(10 * GIB, 10 * GIB - 1000, 1000)

    s = Settings(
        cameras={"front": {"url": "file:/x.mp4"}}, storage={"min_free_bytes": 1000 + segs[0].bytes}
    )
    report = run_retention_pass(index, s, media, NOW, disk_usage=nearly_full)
    # the floor is max(min_free_bytes, one hour of recording): the recent rate of ~1 MB/s
    # makes the hour the larger one, so everything unheld goes, oldest first
    assert report.bytes_per_hour > s.storage.min_free_bytes
    assert report.by_reason == {"disk_guard": 3}
    assert report.free_bytes == 1000
    assert seen == [media]
    assert index.segments() == []


def test_disk_guard_stops_at_the_floor(index: Index, media: Path) -> None:
    segs = [record(index, media, NOW - 3 * DAY + 10 * i, gop=i) for i in range(3)]
    # nothing recorded in the last hour: the floor is min_free_bytes alone
    s = Settings(
        cameras={"front": {"url": "file:/x.mp4"}},
        storage={"min_free_bytes": 1000 + segs[0].bytes},
    )
    disk = Usage(10 * GIB, 10 * GIB - 1000, 1000)
    report = run_retention_pass(index, s, media, NOW, disk_usage=lambda _p: disk)
    assert report.bytes_per_hour == 0
    assert report.by_reason == {"disk_guard": 1}
    assert [x.id for x in index.segments()] == [segs[1].id, segs[2].id]


def test_unreadable_disk_skips_only_the_guard(index: Index, media: Path) -> None:
    record(index, media, NOW - 60, gop=0)

    def broken(_path: Path) -> Usage:
        raise OSError("stat failed")

    report = run_retention_pass(index, settings(), media, NOW, disk_usage=broken)
    assert report.free_bytes is None
    assert report.deleted == 0


def test_bad_files_never_stop_the_pass(index: Index, media: Path) -> None:
    missing = record(index, media, NOW - 5 * DAY, gop=0)
    (media / missing.path).unlink()
    stuck = record(index, media, NOW - 5 * DAY + 10, gop=1)
    (media / stuck.path).unlink()
    (media / stuck.path).mkdir()  # unlink() of a directory fails even for root
    outside = index.add_segment(
        NewSegment("front", NOW - 5 * DAY + 20, NOW - 5 * DAY + 30, 5, 1, 0.0, "../../etc/passwd")
    )
    fine = record(index, media, NOW - 5 * DAY + 30, gop=2)
    report = run_retention_pass(index, settings(), media, NOW, disk_usage=plenty)
    assert report.missing_files == 1
    assert report.failed == 2
    assert report.deleted == 2  # the missing one's row and the fine one
    left = {s.id for s in index.segments()}
    assert left == {stuck.id, outside.id}  # rows kept for a retry
    assert not (media / fine.path).exists()


MIB = 1024**2


@pytest.mark.parametrize("min_free_bytes", [5 * GIB, 0])
def test_disk_guard_on_a_small_disk_deletes_only_what_is_needed(
    index: Index, media: Path, min_free_bytes: int
) -> None:
    # Regression: on a 3 MiB tmpfs the floor max(min_free_bytes, one hour of recording) was
    # larger than the disk, so every pass deleted every segment, even with min_free_bytes=0.
    segs = [record(index, media, NOW - 60 + 10 * i, gop=i) for i in range(4)]
    total = 3 * MIB
    floor = int(total * MAX_FLOOR_FRACTION)
    free = floor - segs[0].bytes // 2  # the oldest segment alone lifts it over the floor
    s = Settings(
        cameras={"front": {"url": "file:/x.mp4"}}, storage={"min_free_bytes": min_free_bytes}
    )
    report = run_retention_pass(
        index, s, media, NOW, disk_usage=lambda _p: Usage(total, total - free, free)
    )
    assert report.bytes_per_hour > total  # one hour of recording would not fit on the disk
    assert report.total_bytes == total
    assert report.floor_bytes == floor
    assert report.by_reason == {"disk_guard": 1}
    assert [x.id for x in index.segments()] == [x.id for x in segs[1:]]
    assert report.shortfalls == ()


def test_disk_guard_on_a_real_small_tmpfs(index: Index, tmp_path: Path) -> None:
    # The tester's set-up: the media dir on a 3 MiB tmpfs, read with shutil.disk_usage.
    media = tmp_path / "small"
    media.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(media)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        segs = [record(index, media, NOW - 60 + 10 * i, gop=i) for i in range(5)]
        s = Settings(cameras={"front": {"url": "file:/x.mp4"}})  # the 5 GiB default
        report = run_retention_pass(index, s, media, NOW)
        usage = shutil.disk_usage(media)
    finally:
        subprocess.run(["umount", str(media)], check=True)
    left = index.segments()
    assert left, "footage must be able to exist on a small disk"
    assert usage.free >= int(usage.total * MAX_FLOOR_FRACTION)
    gone = [x for x in segs if x.id not in {y.id for y in left}]
    assert gone == segs[: len(gone)]  # the oldest went, and only as many as needed
    assert report.deleted == len(gone)


def test_no_shortfall_warning_without_footage(
    index: Index, media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: "still N bytes short; only held footage is left" with no footage at all.
    caplog.set_level(logging.INFO, logger=LOGGER)
    full = Usage(100 * GIB, 100 * GIB, 0)
    report = run_retention_pass(index, settings(), media, NOW, disk_usage=lambda _p: full)
    assert report.shortfalls == ()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_shortfall_warning_says_what_to_do(
    index: Index, media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    held = record(index, media, NOW - 60, gop=0)
    index.add_hold("front", held.start, held.end, "preservation", None)
    full = Usage(100 * GIB, 100 * GIB, 0)
    s = Settings(cameras={"front": {"url": "file:/x.mp4"}})
    report = run_retention_pass(index, s, media, NOW, disk_usage=lambda _p: full)
    assert [x.reason for x in report.shortfalls] == [DeletionReason.DISK_GUARD]
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "only held footage" in warning
    assert "release holds" in warning
    assert "storage.min_free_bytes" in warning


def test_retention_report_reads_as_one_line(index: Index, media: Path) -> None:
    # Regression: the runtime logged the raw RetentionReport(...) repr.
    record(index, media, NOW - 4 * DAY, gop=0)
    disk = Usage(100 * GIB, 50 * GIB, 50 * GIB)
    report = run_retention_pass(index, settings(), media, NOW, disk_usage=lambda _p: disk)
    text = str(report)
    assert "RetentionReport" not in text
    assert "\n" not in text
    assert text.startswith("deleted 1 segment (")
    assert "age 1" in text
    assert "50.0 GiB free of 100.0 GiB" in text
