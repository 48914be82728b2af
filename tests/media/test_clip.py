"""Clips remuxed from segments: exact span through an edit list, seekable, gaps reported."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from homewarden.errors import InvalidRequestError, NotFoundError
from homewarden.media.clip import compose_clip
from tests.media.recorded import cut_segments, with_aac_tone

BASE = 1_700_000_000.0


@pytest.fixture
def segments(vtest_h264: Path, tmp_path: Path) -> list[tuple[Path, float]]:
    return cut_segments(vtest_h264, tmp_path / "segs", 10.0, BASE)


def decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def test_acceptance_7_thirty_seconds_over_four_segments(segments, tmp_path: Path) -> None:
    start, end = BASE + 5.05, BASE + 35.05  # inside segments 0, 1, 2 and 3
    assert sum(1 for _, s in segments if s < end and s + 10 > start) == 4
    out = tmp_path / "clip.mp4"
    info = compose_clip(segments, start, end, out)
    assert info.duration == pytest.approx(30.0, abs=0.2)
    assert info.gaps == ()
    assert info.skipped == ()
    with av.open(str(out)) as c:
        assert c.duration / 1e6 == pytest.approx(30.0, abs=0.2)
    times = decoded_times(out)
    # Start to end: every 10 fps frame of the span decodes, none of the pre-roll is shown.
    assert len(times) == pytest.approx(300, abs=2)
    assert times[0] == pytest.approx(0.0, abs=0.1)
    assert times[-1] == pytest.approx(29.9, abs=0.15)
    head = out.read_bytes()[: 64 * 1024]
    assert 0 <= head.find(b"moov") < head.find(b"mdat")  # faststart: seekable while loading


def test_clip_cut_at_keyframe_needs_no_preroll(segments, tmp_path: Path) -> None:
    info = compose_clip(segments, BASE + 10.0, BASE + 12.0, tmp_path / "c.mp4")
    assert info.duration == pytest.approx(2.0, abs=0.01)
    assert len(decoded_times(tmp_path / "c.mp4")) == 20


def test_span_past_the_footage_is_clamped(segments, tmp_path: Path) -> None:
    info = compose_clip(segments, BASE + 75.0, BASE + 90.0, tmp_path / "c.mp4")
    assert info.end == pytest.approx(BASE + 79.5, abs=0.01)
    assert info.duration == pytest.approx(4.5, abs=0.01)


def test_no_footage_in_span(segments, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no footage"):
        compose_clip(segments, BASE + 100, BASE + 110, tmp_path / "c.mp4")
    assert not (tmp_path / "c.mp4").exists()
    assert not (tmp_path / "c.mp4.part").exists()


def test_backwards_span_is_refused(segments, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError):
        compose_clip(segments, BASE + 20, BASE + 10, tmp_path / "c.mp4")


def test_corrupt_segment_is_skipped_and_reported(segments, tmp_path: Path) -> None:
    broken, broken_start = segments[1]
    broken.write_bytes(b"\x00" * 1000)
    info = compose_clip(segments, BASE + 5.0, BASE + 25.0, tmp_path / "c.mp4")
    assert info.skipped == (broken,)
    assert info.gaps[0] == pytest.approx((broken_start, segments[2][1]))
    # The footage of segments 0 and 2 is there; the hole is held on the last frame before it.
    assert info.duration == pytest.approx(20.0, abs=0.2)
    assert len(decoded_times(tmp_path / "c.mp4")) == pytest.approx(100, abs=3)


def test_outage_between_segments_is_a_gap(segments, tmp_path: Path) -> None:
    shifted = segments[:2] + [(p, s + 15.0) for p, s in segments[2:]]  # 15 s outage at 20 s
    info = compose_clip(shifted, BASE + 15.0, BASE + 45.0, tmp_path / "c.mp4")
    assert len(info.gaps) == 1
    gap_start, gap_end = info.gaps[0]
    assert gap_start == pytest.approx(BASE + 20.0, abs=0.11)
    assert gap_end == pytest.approx(BASE + 35.0, abs=0.01)
    assert info.duration == pytest.approx(30.0, abs=0.2)


def test_clip_keeps_audio(bikes_mp4: Path, tmp_path: Path) -> None:
    src = with_aac_tone(bikes_mp4, tmp_path / "tone.mp4")
    parts = cut_segments(src, tmp_path / "segs", 2.0, BASE)
    info = compose_clip(parts, BASE + 1.5, BASE + 8.5, tmp_path / "c.mp4")
    assert info.duration == pytest.approx(7.0, abs=0.05)
    with av.open(str(tmp_path / "c.mp4")) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples / 48000 == pytest.approx(7.0, abs=0.1)
