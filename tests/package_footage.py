"""Real footage recorded into a deployment for the evidence-package tests: bikes.mp4 cut at
each keyframe into segments (packets copied, as the recorder writes them), indexed in SQLite,
with the deployment's settings (one camera with a privacy mask)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import av

from homewarden.config import Settings
from homewarden.media.segment_writer import SegmentWriter
from homewarden.store.index import Index
from homewarden.store.records import NewSegment
from tests.segment_files import require_bikes

#: 2023-11-14T23:00:00Z minus 5 s.
T0 = 1_700_002_795.0
CAMERA = "porch"
#: A privacy mask over the top-left corner of the frame (normalised polygon).
MASK = [(0.0, 0.0), (0.25, 0.0), (0.25, 0.3), (0.0, 0.3)]


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    segments: list[NewSegment]
    start: float
    end: float


def record_bikes(data_dir: Path, camera: str = CAMERA, t0: float = T0) -> list[NewSegment]:
    """bikes.mp4 (10 s, 640x272, 25 fps) written as segments from ``t0``, one per GOP."""
    src = require_bikes()
    media = data_dir / "media"
    segments: list[NewSegment] = []
    writer: SegmentWriter | None = None
    seg_start = 0.0

    def finish(end: float) -> None:
        assert writer is not None
        size = writer.close()
        segments.append(
            NewSegment(
                camera=camera,
                start=t0 + seg_start,
                end=t0 + end,
                bytes=size,
                keyframes=writer.keyframes,
                motion_score=0.0,
                path=str(writer.final_path.relative_to(media)),
            )
        )

    with av.open(str(src)) as inp:
        video = inp.streams.video[0]
        duration = float((video.duration or 0) * (video.time_base or 0))
        for packet in inp.demux(video):
            if packet.dts is None or packet.pts is None or packet.time_base is None:
                continue
            t = float(packet.pts * packet.time_base)
            if packet.is_keyframe:
                if writer is not None:
                    finish(t)
                seg_start = t
                d = datetime.fromtimestamp(t0 + t, UTC)
                rel = f"{camera}/{d:%Y-%m-%d}/{d:%H}/{t0 + t:.3f}.mp4"
                writer = SegmentWriter(media / rel, video)
            assert writer is not None
            writer.write(packet)
        finish(duration)
    return segments


def deploy(data_dir: Path, index: Index, cameras: tuple[str, ...] = (CAMERA,)) -> Deployment:
    """Record bikes.mp4 for each of ``cameras`` into ``index``; settings with a mask on each."""
    segments: list[NewSegment] = []
    for cam in cameras:
        for seg in record_bikes(data_dir, cam):
            index.add_segment(seg)
            segments.append(seg)
    settings = Settings(
        data_dir=data_dir,
        database_url=None,
        cameras={
            c: {"url": "file:/dev/null", "motion": {"masks": [[list(p) for p in MASK]]}}
            for c in cameras
        },
    )
    return Deployment(settings, segments, T0, max(s.end for s in segments))
