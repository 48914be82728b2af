"""Fixtures of the web tests: real footage cut into indexed segments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from homewarden.media.segment_writer import SegmentWriter
from homewarden.store.records import NewSegment

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"
#: Five seconds before a UTC hour boundary (1700002800 = 2023-11-14T23:00:00Z), so the
#: footage spans two hours of the per-hour summary.
T0 = 1_700_002_795.0


@dataclass(frozen=True)
class Footage:
    data_dir: Path
    segments: list[NewSegment]
    snapshot_rel: str


def _relpath(camera: str, start: float) -> str:
    from datetime import UTC, datetime

    d = datetime.fromtimestamp(start, UTC)
    return f"{camera}/{d:%Y-%m-%d}/{d:%H}/{start:.3f}.mp4"


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Footage:
    """bikes.mp4 cut at each keyframe into segments starting at T0, plus one JPEG snapshot."""
    if not FOOTAGE.is_file():
        pytest.fail(f"real footage missing at {FOOTAGE}")
    data_dir = tmp_path_factory.mktemp("data")
    media = data_dir / "media"
    segments: list[NewSegment] = []
    writer: SegmentWriter | None = None
    seg_start = 0.0
    snapshot: np.ndarray | None = None

    def finish(end: float) -> None:
        assert writer is not None
        size = writer.close()
        segments.append(
            NewSegment(
                camera="front",
                start=T0 + seg_start,
                end=T0 + end,
                bytes=size,
                keyframes=writer.keyframes,
                motion_score=0.01 * len(segments),
                path=str(writer.final_path.relative_to(media)),
            )
        )

    with av.open(str(FOOTAGE)) as src:
        video = src.streams.video[0]
        duration = float(video.duration * video.time_base)
        for packet in src.demux(video):
            if packet.dts is None:
                continue
            t = float(packet.pts * packet.time_base)
            if packet.is_keyframe:
                if writer is not None:
                    finish(t)
                seg_start = t
                writer = SegmentWriter(media / _relpath("front", T0 + t), video)
            assert writer is not None
            writer.write(packet)
        finish(duration)
    with av.open(str(FOOTAGE)) as src:
        for frame in src.decode(video=0):
            if frame.time is not None and frame.time >= 4.0:
                snapshot = frame.to_ndarray(format="bgr24")
                break
    assert snapshot is not None
    ok, jpeg = cv2.imencode(".jpg", snapshot)
    assert ok
    rel = "front/1.jpg"
    (data_dir / "snapshots" / "front").mkdir(parents=True)
    (data_dir / "snapshots" / rel).write_bytes(jpeg.tobytes())
    assert len(segments) >= 5
    return Footage(data_dir, segments, rel)
