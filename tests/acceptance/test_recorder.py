"""Issue 2 acceptance 1, 2, 3, 4 and 8: real footage, a real RTSP server, both databases.

Several cameras share one recorder run so the suite stays within a few minutes of real time:
``test_recording_sensing_and_failures`` runs seven cameras for about a minute, and
``test_rtsp_outage_is_recorded_as_a_gap`` about 40 s.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest

from homewarden.config import CameraSettings
from homewarden.services.recorder import CameraRecorder
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord
from tests.fixtures_media import GOP_SECONDS, MOTION_SECONDS, STILL_SECONDS

pytestmark = pytest.mark.slow

LOGGER = "homewarden.services.recorder"
FRAME = 0.1  # vtest footage is 10 fps
POST_CAPTURE = 5.0


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An RTSP URL on a loopback TCP listener that accepts and never sends a byte."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"rtsp://127.0.0.1:{srv.getsockname()[1]}/cam"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        srv.close()


def check_segment_file(media: Path, seg: SegmentRecord, fps: float) -> int:
    """The file starts on a keyframe, every packet decodes; returns its frame count."""
    with av.open(str(media / seg.path)) as c:
        pkts = [p for p in c.demux(c.streams.video[0]) if p.dts is not None]
    assert pkts[0].is_keyframe, f"{seg.path} does not start on a keyframe"
    with av.open(str(media / seg.path)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert decoded == len(pkts), f"{seg.path}: {decoded} of {len(pkts)} frames decode"
    assert decoded / fps == pytest.approx(seg.duration, abs=1.01 / fps)
    return decoded


def assert_contiguous(segs: list[SegmentRecord]) -> None:
    for a, b in itertools.pairwise(segs):
        assert abs(b.start - a.end) <= FRAME, f"hole or overlap between {a.path} and {b.path}"


def warning_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno >= logging.WARNING and f"camera {name}:" in r.getMessage()
    ]


def test_recording_sensing_and_failures(
    tmp_path: Path,
    index: Index,
    rtsp_server,
    vtest_h264: Path,
    vtest_avi: Path,
    bikes_mp4: Path,
    still_motion_still_clip: Path,
    silent_server: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    truncated = tmp_path / "truncated.mp4"
    data = vtest_h264.read_bytes()
    truncated.write_bytes(data[: len(data) // 10])  # moov first: ~8 s play, then it ends short
    server = rtsp_server(vtest_h264)
    media, snaps = tmp_path / "media", tmp_path / "snapshots"
    cams = {
        "main": CameraSettings(url=server.url),
        "still": CameraSettings(
            url=f"file:{still_motion_still_clip}", motion={"post_capture": POST_CAPTURE}
        ),
        "bikes": CameraSettings(url=f"file:{bikes_mp4}"),
        "truncated": CameraSettings(url=f"file:{truncated}"),
        "nohost": CameraSettings(url="rtsp://nonexistent.invalid/stream"),
        "unsupported": CameraSettings(url=f"file:{vtest_avi}"),
        "silent": CameraSettings(url=silent_server, stall_timeout=2),
    }
    recs = {n: CameraRecorder(n, c, media, snaps, index) for n, c in cams.items()}
    for rec in recs.values():
        rec.start()
    try:
        # The still-motion-still file plays 60 s and ends; the RTSP camera goes on.
        assert wait_for(lambda: recs["still"].status().state == "stopped", 80)
        assert wait_for(lambda: sum(s.duration for s in index.segments(camera="main")) >= 55, 20)
        statuses = {n: r.status() for n, r in recs.items()}
    finally:
        stopped_at = time.time()
        for rec in recs.values():
            rec.stop(5)

    # (4) each failure: a clear status and one log line, while the others record.
    expect = {
        "truncated": ("failed", "truncated"),
        "nohost": ("reconnecting", "cannot resolve or reach host"),
        "unsupported": ("failed", "transcode"),
        "silent": ("reconnecting", "no answer within 2 s"),
    }
    for name, (state, words) in expect.items():
        st = statuses[name]
        assert st.state == state, (name, st)
        assert words in (st.last_error or ""), (name, st.last_error)
        assert st.gaps_open == 1, name
        lines = warning_lines(caplog, name)
        assert len(lines) == 1, (name, lines)
        assert words in lines[0]
    assert statuses["main"].state == "connected"
    assert statuses["main"].last_error is None
    assert statuses["main"].fps_in == pytest.approx(10, abs=1)
    # The truncated file's footage up to the cut is kept, then the gap starts where it ends.
    trunc_segs = index.segments(camera="truncated")
    (trunc_gap,) = index.gaps(camera="truncated")
    assert 4 < sum(s.duration for s in trunc_segs) < 12
    assert trunc_gap.start == trunc_segs[-1].end
    assert trunc_gap.reason == "unreadable"
    for name in ("nohost", "silent", "unsupported"):
        (gap,) = index.gaps(camera=name)
        assert gap.end is not None
        assert gap.end == pytest.approx(stopped_at, abs=6)

    # (1) vtest over RTSP >= 60 s: contiguous, keyframe-first, whole, durations add up.
    segs = index.segments(camera="main")
    assert sum(s.duration for s in segs) >= 55
    assert_contiguous(segs)
    frames = sum(check_segment_file(media, s, 10.0) for s in segs)
    total = sum(s.duration for s in segs)
    assert total == pytest.approx(frames * FRAME, rel=0.005)
    assert segs[-1].end - segs[0].start == pytest.approx(total, rel=0.005)
    assert all(9.9 <= s.duration <= 12.1 for s in segs[:-1])  # ~10 s, cut on 2-s keyframes
    assert segs[-1].end == pytest.approx(stopped_at, abs=1.0)

    # (2) still / motion / still: exactly one event around the motion.
    still_segs = index.segments(camera="still")
    assert_contiguous(still_segs)
    origin = still_segs[0].start
    assert still_segs[-1].end - origin == pytest.approx(60.0, abs=FRAME)
    events, _ = index.events(camera="still")
    assert len(events) == 1, events
    (event,) = events
    motion_start, motion_end = origin + STILL_SECONDS, origin + STILL_SECONDS + MOTION_SECONDS
    assert motion_start - GOP_SECONDS <= event.start <= motion_start + GOP_SECONDS
    assert event.end is not None
    assert motion_end <= event.end <= motion_end + POST_CAPTURE + GOP_SECONDS
    assert event.label == "motion"
    assert event.peak_score > 0
    assert event.snapshot_path == f"still/{event.id}.jpg"
    assert (snaps / event.snapshot_path).read_bytes()[:2] == b"\xff\xd8"
    scores = [s.motion_score for s in still_segs]
    assert scores[0] == 0
    assert max(scores[2:4]) > 0

    # (8) bikes.mp4 as a file: camera records and produces events.
    bike_segs = index.segments(camera="bikes")
    assert sum(s.duration for s in bike_segs) == pytest.approx(10.0, abs=0.05)
    bike_events, _ = index.events(camera="bikes")
    assert bike_events
    assert all(e.end is not None for e in bike_events)


def test_rtsp_outage_is_recorded_as_a_gap(
    tmp_path: Path, index: Index, rtsp_server, vtest_h264: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    server = rtsp_server(vtest_h264)
    cam = CameraSettings(url=server.url, segment_seconds=4, stall_timeout=5)
    rec = CameraRecorder("door", cam, tmp_path / "media", tmp_path / "snaps", index)
    rec.start()
    try:
        assert wait_for(lambda: rec.status().segments_written >= 2, 20)
        killed_at = time.time()
        server.kill()  # the camera loses power
        assert wait_for(lambda: rec.status().state == "reconnecting", 5)
        assert rec.status().gaps_open == 1
        # Retries come 1, 2, 4, 8 s apart: back at 15 s, the attempt at ~15 s connects.
        time.sleep(max(0.0, killed_at + 13.0 - time.time()))
        server.restart()
        assert wait_for(lambda: rec.status().state == "connected", 10)
        reconnected = rec.status().segments_written
        assert wait_for(lambda: rec.status().segments_written >= reconnected + 2, 15)
        assert rec.status().gaps_open == 0
    finally:
        rec.stop(5)
    (gap,) = index.gaps(camera="door")
    assert gap.reason == "disconnected"
    assert gap.end is not None
    assert 13.0 <= gap.end - gap.start <= 18.0, gap
    segs = index.segments(camera="door")
    before = [s for s in segs if s.end <= gap.start]
    after = [s for s in segs if s.start >= gap.end]
    assert len(before) + len(after) == len(segs)
    # Nothing before the outage lost: footage runs up to the moment the server died.
    assert before[-1].end == gap.start
    assert killed_at - 1.0 <= gap.start <= killed_at + 0.5
    assert_contiguous(before)
    assert_contiguous(after)
    assert after[0].start == pytest.approx(gap.end, abs=0.01)
    for seg in segs:
        check_segment_file(tmp_path / "media", seg, 10.0)
    assert len(warning_lines(caplog, "door")) == 1
