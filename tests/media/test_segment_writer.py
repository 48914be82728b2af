"""Segment files: copied packets, keyframe first, rebased to 0, whole, renamed when complete."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import pytest

from homewarden.errors import StorageError
from homewarden.media.segment_writer import SegmentWriter
from tests.media.recorded import cut_segments, with_aac_tone

BASE = 1_700_000_000.0


def packets_of(path: Path) -> list[tuple[int, int, bool]]:
    with av.open(str(path)) as c:
        return [
            (p.pts, p.dts, p.is_keyframe)
            for p in c.demux(c.streams.video[0])
            if p.dts is not None and p.pts is not None
        ]


def frames_of(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_segments_start_on_keyframe_at_zero_and_decode_whole(
    vtest_h264: Path, tmp_path: Path
) -> None:
    parts = cut_segments(vtest_h264, tmp_path, 10.0, BASE)
    assert len(parts) == 8  # 79.5 s cut at the first 2-s keyframe after each 10 s
    total_frames = 0
    for path, _ in parts:
        pkts = packets_of(path)
        assert pkts[0][2], f"{path.name} does not start on a keyframe"
        assert pkts[0][0] == 0
        assert pkts[0][1] == 0
        dts = [d for _, d, _ in pkts]
        assert dts == sorted(set(dts))
        assert frames_of(path) == len(pkts)
        total_frames += len(pkts)
        assert not path.with_name(path.name + ".part").exists()
    assert total_frames == 795
    starts = [utc for _, utc in parts]
    assert [round(b - a, 3) for a, b in itertools.pairwise(starts)] == [10.0] * 7


def test_fragmented_mp4_layout(vtest_h264: Path, tmp_path: Path) -> None:
    path, _ = cut_segments(vtest_h264, tmp_path, 10.0, BASE)[0]
    head = path.read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"moof")  # moov first, then fragments


def test_b_frames_and_rebase_keep_order(bikes_mp4: Path, tmp_path: Path) -> None:
    parts = cut_segments(bikes_mp4, tmp_path, 2.0, BASE)
    assert len(parts) >= 4
    total = 0
    for path, _ in parts:
        pkts = packets_of(path)
        assert pkts[0][2]
        assert pkts[0][1] == 0  # dts rebased to 0; pts ahead of it (B-frames)
        assert all(p >= d for p, d, _ in pkts)
        assert frames_of(path) == len(pkts)
        total += len(pkts)
    assert total == 250


def test_first_packet_must_be_a_keyframe(vtest_h264: Path, tmp_path: Path) -> None:
    with av.open(str(vtest_h264)) as inp:
        vs = inp.streams.video[0]
        writer = SegmentWriter(tmp_path / "x.mp4", vs)
        pkts = inp.demux(vs)
        next(pkts)
        with pytest.raises(ValueError, match="keyframe"):
            writer.write(next(pkts))
        writer.abort()
    assert not (tmp_path / "x.mp4.part").exists()


def test_unwritable_directory_is_storage_error_and_keeps_earlier(
    vtest_h264: Path, tmp_path: Path
) -> None:
    parts = cut_segments(vtest_h264, tmp_path / "ok", 10.0, BASE)
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a directory should be")
    with av.open(str(vtest_h264)) as inp, pytest.raises(StorageError, match="cannot create"):
        SegmentWriter(blocker / "seg.mp4", inp.streams.video[0])
    assert all(path.is_file() for path, _ in parts)


def test_empty_segment_is_not_kept(vtest_h264: Path, tmp_path: Path) -> None:
    with av.open(str(vtest_h264)) as inp:
        writer = SegmentWriter(tmp_path / "empty.mp4", inp.streams.video[0])
        with pytest.raises(StorageError, match="no video"):
            writer.close()
    assert list(tmp_path.iterdir()) == []


def test_audio_is_kept_and_stays_in_step(bikes_mp4: Path, tmp_path: Path) -> None:
    src = with_aac_tone(bikes_mp4, tmp_path / "bikes_tone.mp4")
    parts = cut_segments(src, tmp_path / "segs", 2.0, BASE)
    audio_seconds = 0.0
    for path, _ in parts:
        with av.open(str(path)) as c:
            assert len(c.streams.audio) == 1
            assert c.streams.audio[0].codec_context.name == "aac"
            a = [p for p in c.demux(c.streams.audio[0]) if p.dts is not None]
        first = float(a[0].pts * a[0].time_base)
        assert 0.0 <= first < 0.03  # audio starts with the video (one AAC frame is 21 ms)
        audio_seconds += sum(float(p.duration * p.time_base) for p in a)
        with av.open(str(path)) as c:
            assert sum(f.samples for f in c.decode(audio=0)) > 0
    assert audio_seconds == pytest.approx(10.0, abs=0.25)
