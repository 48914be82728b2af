"""probe_segment / salvage_segment on real footage (bikes.mp4, vtest.avi)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from homewarden.errors import CorruptSegmentError, StorageError
from homewarden.media.probe import probe_segment, salvage_segment
from tests.segment_files import make_segment, require_bikes


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_probe_whole_clip() -> None:
    bikes = require_bikes()
    p = probe_segment(bikes)
    # 250 frames at 25 fps, six keyframes (demuxed independently above in the fixture notes)
    assert p.duration == pytest.approx(10.0, abs=1e-6)
    assert p.keyframes == 6
    assert p.packets == 250
    assert p.bytes == bikes.stat().st_size
    assert p.starts_with_keyframe
    assert p.playable
    assert not p.truncated


def test_probe_avi_footage(vtest_avi: Path) -> None:
    # The fixture skips when the footage is absent, and fails under CI=true.
    p = probe_segment(vtest_avi)
    assert p.duration == pytest.approx(79.5, abs=0.01)
    assert p.playable


def test_probe_remuxed_segment_matches_its_frames(tmp_path: Path) -> None:
    # GOPs 1..2 of bikes: keyframes at 1.2 s and 3.04 s, next at 5.48 s -> 4.28 s, 107 frames
    seg = make_segment(tmp_path / "s.mp4", first_gop=1, gops=2)
    p = probe_segment(seg)
    assert p.keyframes == 2
    assert p.packets == 107
    assert p.duration == pytest.approx(107 / 25, abs=1e-6)
    assert p.playable
    assert _decoded_frames(seg) == 107


def test_truncated_segment_counts_only_whole_packets(tmp_path: Path) -> None:
    seg = make_segment(tmp_path / "s.mp4", first_gop=0, gops=3)
    whole = probe_segment(seg)
    data = seg.read_bytes()
    cut = tmp_path / "cut.mp4.part"
    cut.write_bytes(data[: len(data) // 2])
    p = probe_segment(cut)
    assert p.truncated
    assert p.playable
    assert 0 < p.packets < whole.packets
    assert 0 < p.duration < whole.duration
    assert p.bytes == len(data) // 2


def test_salvage_rewrites_whole_packets_only(tmp_path: Path) -> None:
    seg = make_segment(tmp_path / "s.mp4", first_gop=0, gops=3)
    data = seg.read_bytes()
    cut = tmp_path / "cut.mp4.part"
    cut.write_bytes(data[: len(data) // 2])
    before = probe_segment(cut)
    with pytest.raises(av.error.InvalidDataError):
        _decoded_frames(cut)  # the packet the cut went through does not decode
    out = tmp_path / "fixed.mp4"
    p = salvage_segment(cut, out)
    assert p == probe_segment(out)
    assert not p.truncated
    assert p.packets == before.packets
    assert p.duration == pytest.approx(before.duration)
    assert _decoded_frames(out) == before.packets  # decodes to its end
    assert cut.exists()
    assert not (tmp_path / "fixed.mp4.salvage").exists()


@pytest.mark.parametrize("keep", [0, 100, 900])
def test_header_only_files(tmp_path: Path, keep: int) -> None:
    seg = make_segment(tmp_path / "s.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(seg.read_bytes()[:keep])
    try:
        p = probe_segment(bad)
    except CorruptSegmentError:
        pass  # nothing parses: fine
    else:
        assert not p.playable  # the header parses but no whole packet follows
        assert p.duration == 0.0
    with pytest.raises(CorruptSegmentError):
        salvage_segment(bad, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_garbage_is_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00not a video\xff" * 200)
    with pytest.raises(CorruptSegmentError, match="does not parse"):
        probe_segment(bad)


def test_missing_file_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no segment file"):
        probe_segment(tmp_path / "nope.mp4")


def test_segment_not_starting_on_keyframe_is_not_playable(tmp_path: Path) -> None:
    bikes = require_bikes()
    dst = tmp_path / "nokey.mp4"
    with av.open(str(bikes)) as inp, av.open(str(dst), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for i, packet in enumerate(inp.demux(vin)):
            if packet.dts is None or i < 3:  # drop the opening keyframe and two more
                continue
            if i > 25:
                break
            packet.stream = vout
            out.mux(packet)
    p = probe_segment(dst)
    assert not p.starts_with_keyframe
    assert not p.playable
    assert p.duration > 0
