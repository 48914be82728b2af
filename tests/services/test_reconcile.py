"""Start-up reconciliation on real segment files and a real index (both databases)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from homewarden.media.probe import probe_segment
from homewarden.services.reconcile import ReconcileReport, reconcile
from homewarden.store.index import Index
from homewarden.store.records import NewSegment
from tests.segment_files import make_segment

T0 = 1764403200.125  # 2025-11-29T08:00:00.125Z


def rel(start: float, camera: str = "front") -> str:
    return f"{camera}/2025-11-29/08/{start:.3f}.mp4"


def indexed_files_agree(index: Index, media: Path) -> None:
    on_disk = {
        p.relative_to(media).as_posix()
        for p in media.rglob("*.mp4")
        if p.relative_to(media).parts[0] != ".corrupt"
    }
    assert {s.path for s in index.segments()} == on_disk
    assert not list(media.rglob("*.part"))


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture
def media(tmp_path: Path) -> Path:
    d = tmp_path / "media"
    d.mkdir()
    return d


def test_playable_part_is_renamed_and_indexed(index: Index, media: Path) -> None:
    part = make_segment(media / (rel(T0) + ".part"), first_gop=0, gops=2)
    expected = probe_segment(part)
    report = reconcile(index, media)
    assert report == ReconcileReport(parts_recovered=1)
    final = media / rel(T0)
    assert final.is_file()
    assert not part.exists()
    [seg] = index.segments()
    assert (seg.camera, seg.path, seg.start) == ("front", rel(T0), T0)
    assert seg.end == pytest.approx(T0 + expected.duration)
    assert seg.duration == pytest.approx(76 / 25)  # GOPs 0-1 of bikes.mp4: 76 frames
    assert (seg.bytes, seg.keyframes) == (final.stat().st_size, 2)
    indexed_files_agree(index, media)


def test_part_cut_mid_packet_keeps_its_whole_packets(index: Index, media: Path) -> None:
    whole = make_segment(media / "whole.tmp", first_gop=0, gops=3)
    data = whole.read_bytes()
    whole.unlink()
    part = media / (rel(T0) + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: len(data) * 2 // 3])  # what kill -9 mid-write leaves
    cut = probe_segment(part)
    assert cut.truncated
    report = reconcile(index, media)
    assert report.parts_recovered == 1
    [seg] = index.segments()
    final = media / rel(T0)
    assert seg.end - seg.start == pytest.approx(cut.duration)
    assert decoded_frames(final) == cut.packets  # decodes to its end
    indexed_files_agree(index, media)


def test_unplayable_parts_are_removed(index: Index, media: Path) -> None:
    seg = make_segment(media / "whole.tmp")
    data = seg.read_bytes()
    seg.unlink()
    header_only = media / (rel(T0) + ".part")
    header_only.parent.mkdir(parents=True)
    header_only.write_bytes(data[:900])  # moov, no whole packet
    empty = media / (rel(T0 + 10) + ".part")
    empty.write_bytes(b"")
    stale_salvage = media / (rel(T0 + 20) + ".salvage")
    stale_salvage.write_bytes(data)
    report = reconcile(index, media)
    assert report == ReconcileReport(parts_removed=3)
    assert not header_only.exists()
    assert not empty.exists()
    assert not stale_salvage.exists()
    assert index.segments() == []


def test_rows_without_files_are_removed(index: Index, media: Path) -> None:
    kept = make_segment(media / rel(T0))
    p = probe_segment(kept)
    index.add_segment(NewSegment("front", T0, T0 + p.duration, p.bytes, p.keyframes, 0.5, rel(T0)))
    index.add_segment(NewSegment("front", T0 + 10, T0 + 20, 999, 1, 0.5, rel(T0 + 10)))
    index.add_segment(NewSegment("front", T0 + 20, T0 + 30, 999, 1, 0.5, "../escape.mp4"))
    report = reconcile(index, media)
    assert report == ReconcileReport(rows_removed=2)
    assert [s.path for s in index.segments()] == [rel(T0)]
    assert index.segments()[0].motion_score == 0.5  # an agreeing row is left untouched


def test_files_without_rows_are_indexed(index: Index, media: Path) -> None:
    make_segment(media / rel(T0), first_gop=0)
    make_segment(media / rel(T0 + 3600, camera="back").replace("/08/", "/09/"), first_gop=1)
    report = reconcile(index, media)
    assert report == ReconcileReport(files_indexed=2)
    segs = {s.camera: s for s in index.segments()}
    assert segs["front"].start == T0
    assert segs["front"].duration == pytest.approx(30 / 25)
    assert segs["back"].start == T0 + 3600
    assert segs["back"].path == "back/2025-11-29/09/1764406800.125.mp4"
    indexed_files_agree(index, media)


def test_unplayable_complete_file_is_moved_aside(index: Index, media: Path) -> None:
    bad = media / rel(T0)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00garbage\xff" * 500)
    report = reconcile(index, media)
    assert report == ReconcileReport(files_quarantined=1)
    moved = media / ".corrupt" / rel(T0)
    assert moved.read_bytes() == b"\x00garbage\xff" * 500  # kept, not deleted
    assert not bad.exists()
    assert index.segments() == []
    # a second file of the same name later does not overwrite the first
    bad.write_bytes(b"other garbage")
    assert reconcile(index, media).files_quarantined == 1
    assert (moved.parent / (moved.name + ".1")).read_bytes() == b"other garbage"


def test_files_outside_the_layout_are_left_alone(index: Index, media: Path) -> None:
    stray = media / "front" / "notes.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("mine")
    flat = make_segment(media / "front" / f"{T0:.3f}.mp4")
    report = reconcile(index, media)
    assert report == ReconcileReport(skipped=2)
    assert stray.exists()
    assert flat.exists()
    assert index.segments() == []


def test_open_gaps_and_events_are_closed(index: Index, media: Path) -> None:
    make_segment(media / rel(T0), first_gop=0)  # 1.2 s, indexed by this reconcile
    gap_before = index.open_gap("front", T0 - 50, "stalled")
    gap_after = index.open_gap("front", T0 + 100, "unreachable")
    no_footage = index.open_gap("back", T0, "unreachable")
    ev = index.open_event("front", T0 + 0.5, "motion", 0.3, [])
    report = reconcile(index, media)
    assert (report.files_indexed, report.gaps_closed, report.events_closed) == (1, 3, 1)
    last_end = index.segments()[0].end
    ends = {g.id: g.end for g in index.gaps()}
    assert ends[gap_before] == pytest.approx(last_end)
    assert ends[gap_after] == T0 + 100  # the camera recorded nothing after it opened
    assert ends[no_footage] == T0
    assert index.event(ev).end == pytest.approx(last_end)
    assert index.open_gaps() == []
    assert index.open_events() == []


def test_after_crash_everything_agrees_and_second_run_is_noop(index: Index, media: Path) -> None:
    # a recorder's state after kill -9: two complete indexed segments, a third renamed but
    # not yet indexed, a fourth in progress, a row whose file was lost, an open event
    starts = [T0, T0 + 1.2, T0 + 2.4]
    for i, start in enumerate(starts):
        f = make_segment(media / rel(start), first_gop=i)
        if i < 2:
            p = probe_segment(f)
            index.add_segment(
                NewSegment(
                    "front", start, start + p.duration, p.bytes, p.keyframes, 0.1, rel(start)
                )
            )
    make_segment(media / (rel(T0 + 5.48) + ".part"), first_gop=3)
    index.add_segment(NewSegment("front", T0 - 10, T0, 5, 1, 0.1, rel(T0 - 10)))
    index.open_event("front", T0 + 1, "motion", 0.2, [])
    first = reconcile(index, media)
    assert first == ReconcileReport(
        rows_removed=1, parts_recovered=1, files_indexed=1, events_closed=1
    )
    indexed_files_agree(index, media)
    assert len(index.segments()) == 4
    assert reconcile(index, media) == ReconcileReport()


def test_missing_media_dir_is_fine(index: Index, tmp_path: Path) -> None:
    index.add_segment(NewSegment("front", T0, T0 + 1, 5, 1, 0.1, rel(T0)))
    assert reconcile(index, tmp_path / "nowhere") == ReconcileReport(rows_removed=1)


def test_reconciling_some_cameras_leaves_the_others_alone(index: Index, media: Path) -> None:
    # Camera "front"'s recorder died (its .part, a stale row, an open gap and event); "back" is
    # still recording: its .part in progress, its open gap and event must not be touched.
    front_part = make_segment(media / (rel(T0) + ".part"), first_gop=0, gops=2)
    index.add_segment(NewSegment("front", T0 - 10, T0, 999, 1, 0.5, rel(T0 - 10)))
    front_gap = index.open_gap("front", T0 - 30, "stalled")
    front_event = index.open_event("front", T0 + 0.5, "motion", 0.3, [])
    back_part = make_segment(media / (rel(T0, camera="back") + ".part"), first_gop=0)
    back_missing = NewSegment("back", T0 - 10, T0, 999, 1, 0.5, rel(T0 - 10, camera="back"))
    index.add_segment(back_missing)
    back_gap = index.open_gap("back", T0 - 30, "stalled")
    back_event = index.open_event("back", T0 + 0.5, "motion", 0.3, [])
    report = reconcile(index, media, cameras=["front"])
    assert report == ReconcileReport(
        rows_removed=1, parts_recovered=1, gaps_closed=1, events_closed=1
    )
    assert not front_part.exists()
    assert (media / rel(T0)).is_file()
    assert back_part.exists()  # another recorder's segment in progress
    assert [s.path for s in index.segments("back")] == [back_missing.path]
    assert [g.id for g in index.open_gaps()] == [back_gap]
    assert [e.id for e in index.open_events()] == [back_event]
    assert front_gap not in {g.id for g in index.open_gaps()}
    assert index.event(front_event).end is not None
