"""The camera-like H.264 files made from real footage (homewarden.media.transcode)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from homewarden.errors import MediaError, UnsupportedStreamError
from homewarden.media.transcode import (
    QUIET_CLIP_FPS,
    QUIET_CLIP_SIZE,
    make_quiet_720p_clip,
    make_still_motion_still_clip,
    transcode_to_h264,
)
from tests.fixtures_media import MOTION_SECONDS, STILL_SECONDS


def _packets(
    path: Path,
) -> tuple[av.video.stream.VideoStream, list[tuple[Fraction, Fraction, bool, int]]]:
    """(stream, [(pts s, dts s, keyframe, size)]) in file order."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        out = [
            (p.pts * p.time_base, p.dts * p.time_base, p.is_keyframe, p.size)
            for p in c.demux(stream)
            if p.size
        ]
        return stream, out


def _grays(path: Path, width: int = 192, height: int | None = None) -> list[np.ndarray]:
    """Decoded frames as HxW int16 luma, scaled to ``width`` (and ``height``)."""
    with av.open(str(path)) as c:
        return [
            f.reformat(width=width, height=height or width * f.height // f.width, format="gray")
            .to_ndarray()
            .astype(np.int16)
            for f in c.decode(video=0)
        ]


def _top_level_boxes(path: Path) -> list[str]:
    names = []
    with path.open("rb") as fh:
        while header := fh.read(8):
            size, name = int.from_bytes(header[:4], "big"), header[4:].decode("latin-1")
            names.append(name)
            if size == 1:
                size = int.from_bytes(fh.read(8), "big") - 8
            fh.seek(size - 8, 1)
    return names


def _moving_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose luma changed by more than 25 levels."""
    return float((np.abs(a - b) > 25).mean())


def test_vtest_becomes_camera_like_h264(vtest_h264: Path) -> None:
    stream, packets = _packets(vtest_h264)
    cc = stream.codec_context
    assert (cc.name, cc.profile, cc.pix_fmt) == ("h264", "High", "yuv420p")
    assert (cc.width, cc.height) == (768, 576)
    assert stream.average_rate == 10
    assert len(packets) == 795  # every source frame, none added or lost
    # No B-frames: presentation order is decoding order.
    assert all(pts == dts for pts, dts, _, _ in packets)
    assert [pts for pts, *_ in packets] == [Fraction(i, 10) for i in range(795)]
    # An IDR exactly every 2 s and nowhere else (scene cuts do not add keyframes).
    keys = [pts for pts, _, key, _ in packets if key]
    assert keys == [Fraction(2 * i) for i in range(40)]
    # Plain MP4 with the index first (faststart), not fragmented.
    boxes = _top_level_boxes(vtest_h264)
    assert boxes.index("moov") < boxes.index("mdat")
    assert "moof" not in boxes
    sidecar = vtest_h264.with_name(vtest_h264.name + ".json")
    assert sidecar.is_file()


def test_resize_resample_and_trim_follow_the_source(bikes_mp4: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    dst = transcode_to_h264(
        bikes_mp4,
        tmp_path / "b.mp4",
        gop_seconds=1.0,
        width=320,
        fps=10,
        duration=4.0,
        progress=seen.append,
    )
    stream, packets = _packets(dst)
    assert (stream.codec_context.width, stream.codec_context.height) == (320, 136)  # 640x272
    assert len(packets) == 40
    assert [pts for pts, _, key, _ in packets if key] == [0, 1, 2, 3]
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    # Output frame k shows the 25 fps source frame on screen at k/10 s: frame 2.5k.
    out = _grays(dst, 160)
    src = _grays(bikes_mp4, 160)
    for k in (0, 7, 20, 33, 39):
        diffs = [np.abs(out[k] - s).mean() for s in src]
        assert int(np.argmin(diffs)) == int(k * 2.5), k


def test_cache_skips_same_parameters_and_redoes_changed_ones(
    bikes_mp4: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "c.mp4"
    transcode_to_h264(bikes_mp4, dst, duration=2.0)
    first = dst.stat().st_mtime_ns
    transcode_to_h264(bikes_mp4, dst, duration=2.0)
    assert dst.stat().st_mtime_ns == first
    transcode_to_h264(bikes_mp4, dst, duration=2.0, gop_seconds=0.4)
    _, packets = _packets(dst)
    assert len([p for p in packets if p[2]]) == 5  # 50 frames at 25 fps, GOP 10 frames
    # A file without its sidecar is not trusted.
    dst.with_name(dst.name + ".json").unlink()
    dst.write_bytes(b"not a video")
    transcode_to_h264(bikes_mp4, dst, duration=2.0)
    assert len(_packets(dst)[1]) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mp4", "c.mp4.json"]


def test_unreadable_sources_raise_media_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot read"):
        transcode_to_h264(tmp_path / "missing.avi", tmp_path / "o.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 1000)
    with pytest.raises(MediaError):
        transcode_to_h264(junk, tmp_path / "o.mp4")
    # Audio only: nothing to show a camera's picture.
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w") as out:
        s = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(s.encode(frame))
        out.mux(s.encode(None))
    with pytest.raises(UnsupportedStreamError):
        transcode_to_h264(audio, tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_failed_encode_leaves_nothing_behind(bikes_mp4: Path, tmp_path: Path) -> None:
    # bikes.mp4 has 10 s of footage: 15 s of motion cannot be made.
    with pytest.raises(MediaError, match="need 15"):
        make_still_motion_still_clip(bikes_mp4, tmp_path / "s.mp4", 1.0, 15.0)
    assert list(tmp_path.iterdir()) == []


def test_still_motion_still_clip(still_motion_still_clip: Path, vtest_avi: Path) -> None:
    _, packets = _packets(still_motion_still_clip)
    fps = 10
    assert len(packets) == (2 * STILL_SECONDS + MOTION_SECONDS) * fps == 600
    assert [pts for pts, _, key, _ in packets if key] == [Fraction(2 * i) for i in range(30)]
    g = _grays(still_motion_still_clip)
    src = _grays(vtest_avi)
    first_motion, last_motion = (
        int(STILL_SECONDS * fps),
        int((STILL_SECONDS + MOTION_SECONDS) * fps) - 1,
    )
    moving = [_moving_fraction(g[i], g[i - 1]) for i in range(1, len(g))]
    # Still parts: no pixel changes by more than 25 levels (only coding noise at IDRs).
    assert max(moving[: first_motion - 1]) == 0.0
    assert max(moving[last_motion:]) == 0.0
    # Motion part: pedestrians move in every frame.
    assert min(moving[first_motion:last_motion]) > 0.001
    # The held frames are the footage's first and last shown frames.
    for clip_index, src_index in (
        (0, 0),
        (first_motion - 1, 0),
        (first_motion, 0),
        (first_motion + 100, 100),
        (last_motion, 199),
        (599, 199),
    ):
        assert np.abs(g[clip_index] - src[src_index]).mean() < 1.0, clip_index
    assert np.abs(g[599] - src[190]).mean() > 2.0


def test_quiet_720p_clip(vtest_avi: Path, tmp_path: Path) -> None:
    dst = make_quiet_720p_clip(tmp_path / "q.mp4", 2.5, footage=vtest_avi)
    stream, packets = _packets(dst)
    assert (stream.codec_context.width, stream.codec_context.height) == QUIET_CLIP_SIZE
    assert stream.average_rate == QUIET_CLIP_FPS
    assert len(packets) == 75
    assert [pts for pts, _, key, _ in packets if key] == [0, 2]
    # Sensor noise survives coding: P-frames carry data, not just skip blocks ...
    p_sizes = [size for _, _, key, size in packets if not key]
    assert np.median(p_sizes) > 500
    # ... but nothing moves.
    g = _grays(dst, 320, 180)
    assert max(_moving_fraction(g[i], g[i - 1]) for i in range(1, len(g))) < 0.0005
    # The scene is vtest.avi's first frame.
    first = _grays(vtest_avi, 320, 180)[0]
    assert np.abs(g[10] - first).mean() < 3.0
