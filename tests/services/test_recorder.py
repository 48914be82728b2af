"""The recorder loop on real files (paced at real time), on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest

from homewarden.config import CameraSettings
from homewarden.detect.person import HogPersonDetector
from homewarden.errors import StorageError
from homewarden.media import frames
from homewarden.media.h264 import picture_count
from homewarden.services.recorder import CameraRecorder, segment_relpath
from homewarden.store.index import Index
from homewarden.store.records import NewSegment
from tests.media.recorded import with_aac_tone

LOGGER = "homewarden.services.recorder"


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def recorder(tmp_path: Path, index: Index, name: str, **cam: object) -> CameraRecorder:
    return CameraRecorder(
        name, CameraSettings(**cam), tmp_path / "media", tmp_path / "snapshots", index
    )


def warnings_of(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno >= logging.WARNING and f"camera {name}:" in r.getMessage()
    ]


def test_segment_path_layout() -> None:
    # 2023-11-14 22:13:20.25 UTC
    assert segment_relpath("front", 1_700_000_000.25) == "front/2023-11-14/22/1700000000.250.mp4"


@pytest.mark.parametrize("start", [1e12, 1e17, float("nan")])
def test_segment_path_of_an_absurd_time_is_a_storage_error(start: float) -> None:
    # Regression: a clock gone wild crashed the camera thread with ValueError ("year 33658 is
    # out of range") or OSError [Errno 75]; it must be an error the recorder retries on.
    with pytest.raises(StorageError, match=re.escape(repr(start))):
        segment_relpath("front", start)


def test_fps_and_bitrate_are_measured_on_stream_time_not_arrival_time(
    tmp_path: Path, index: Index, bikes_mp4: Path
) -> None:
    # Regression: the rate was packets per wall-clock second, so the burst of packets held
    # while a connection settles (or a paced file catching up under load) read as ~39 fps for
    # a 25 fps camera. A clock running at twice real time makes arrivals look half as fast;
    # the camera's rate must not change.
    t0 = time.time()
    rec = CameraRecorder(
        "fast",
        CameraSettings(url=f"file:{bikes_mp4}", loop=True, motion={"enabled": False}),
        tmp_path / "media",
        tmp_path / "snapshots",
        index,
        clock=lambda: t0 + 2 * (time.time() - t0),
    )
    rec.start()
    try:
        assert wait_for(lambda: rec.status().fps_in > 0, 15)
        status = rec.status()
    finally:
        rec.stop(5)
    assert status.fps_in == pytest.approx(25, rel=0.05)
    size = bikes_mp4.stat().st_size
    assert status.bitrate == pytest.approx(size * 8 / 10.0, rel=0.5)  # ~ the file's mean rate


def test_file_camera_records_contiguous_segments_and_ends(
    tmp_path: Path, index: Index, bikes_mp4: Path
) -> None:
    rec = recorder(
        tmp_path,
        index,
        "bikes",
        url=f"file:{bikes_mp4}",
        segment_seconds=2,
        motion={"enabled": False},
    )
    began = time.time()
    rec.start()
    assert wait_for(lambda: rec.status().state == "stopped", 20)
    assert rec.stop(5)
    status = rec.status()
    assert status.decode_mode == "off"
    assert status.last_error is None
    assert status.gaps_open == 0
    segs = index.segments(camera="bikes")
    assert status.segments_written == len(segs) == 5  # keyframes at 0, 1.2, 3.04, 5.48, 7.48, 9.68
    assert abs(segs[0].start - began) < 1.5
    for a, b in itertools.pairwise(segs):
        assert b.start == a.end  # exactly contiguous
    assert sum(s.duration for s in segs) == pytest.approx(10.0, abs=0.05)  # 250 frames at 25 fps
    assert [s.keyframes for s in segs] == [2, 1, 1, 1, 1]
    for seg in segs:
        path = tmp_path / "media" / seg.path
        assert path.stat().st_size == seg.bytes
        with av.open(str(path)) as c:
            n = sum(1 for _ in c.decode(video=0))
        assert n / 25 == pytest.approx(seg.duration, abs=0.041)
    assert not list((tmp_path / "media").rglob("*.part"))


def test_missing_file_retries_logs_once_and_records_the_gap(
    tmp_path: Path, index: Index, bikes_mp4: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    later = tmp_path / "later.mp4"
    rec = recorder(tmp_path, index, "late", url=f"file:{later}", motion={"enabled": False})
    began = time.time()
    rec.start()
    try:
        # Attempts at 0, 1 and 3 s (back-off 1 s doubling): still one log line.
        assert wait_for(lambda: rec.status().next_retry_at is not None, 2)
        time.sleep(2.5)
        status = rec.status()
        assert status.state == "reconnecting"
        assert status.gaps_open == 1
        assert "does not exist" in (status.last_error or "")
        assert status.next_retry_at is not None
        assert status.next_retry_at > time.time()
        assert len(warnings_of(caplog, "late")) == 1
        shutil.copy(bikes_mp4, later)
        assert wait_for(lambda: rec.status().state == "connected", 6)
        assert rec.status().gaps_open == 0
    finally:
        rec.stop(5)
    (gap,) = index.gaps(camera="late")
    assert gap.reason == "unreachable"
    assert abs(gap.start - began) < 0.5
    assert gap.end is not None
    first = index.segments(camera="late")[0]
    assert first.start == pytest.approx(gap.end, abs=0.05)  # the gap ends where footage starts


def test_stop_finishes_the_segment_in_progress_and_closes_the_event(
    tmp_path: Path, index: Index, vtest_h264: Path
) -> None:
    rec = recorder(tmp_path, index, "busy", url=f"file:{vtest_h264}", loop=True)
    rec.start()
    assert wait_for(lambda: rec.status().decode_mode == "full", 8)  # people walking: motion
    time.sleep(1.0)
    stopped_at = time.time()
    assert rec.stop(5)
    assert rec.status().state == "stopped"
    (seg,) = index.segments(camera="busy")
    assert 2.0 < seg.duration < 8.0
    assert seg.end == pytest.approx(stopped_at, abs=0.5)
    assert seg.motion_score > 0
    assert (tmp_path / "media" / seg.path).is_file()
    assert not list((tmp_path / "media").rglob("*.part"))
    events, _ = index.events(camera="busy")
    (event,) = events
    assert event.end is not None
    assert seg.start <= event.start < event.end <= seg.end + 1e-6
    assert event.snapshot_path == f"busy/{event.id}.jpg"
    assert (tmp_path / "snapshots" / event.snapshot_path).read_bytes()[:2] == b"\xff\xd8"


def test_quiet_scene_sends_only_keyframes_to_the_decoder(
    tmp_path: Path, index: Index, still_motion_still_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed: list[bool] = []
    real = frames.Decoder.decode

    def spy(self: frames.Decoder, packet: av.Packet) -> list[av.VideoFrame]:
        fed.append(bool(packet.is_keyframe))
        return real(self, packet)

    monkeypatch.setattr(frames.Decoder, "decode", spy)
    rec = recorder(tmp_path, index, "still", url=f"file:{still_motion_still_clip}")
    rec.start()
    time.sleep(5.0)  # inside the first 20 still seconds
    status = rec.status()
    rec.stop(5)
    assert status.decode_mode == "keyframes"
    assert status.state == "connected"
    assert 2 <= len(fed) <= 4
    assert all(fed)
    assert index.events(camera="still")[0] == []


def test_audio_is_recorded_with_the_video(tmp_path: Path, index: Index, bikes_mp4: Path) -> None:
    src = with_aac_tone(bikes_mp4, tmp_path / "tone.mp4")
    rec = recorder(tmp_path, index, "tone", url=f"file:{src}", motion={"enabled": False})
    rec.start()
    assert wait_for(lambda: rec.status().state == "stopped", 20)
    rec.stop(5)
    segs = index.segments(camera="tone")
    samples = 0
    for seg in segs:
        with av.open(str(tmp_path / "media" / seg.path)) as c:
            assert c.streams.audio[0].codec_context.name == "aac"
            samples += sum(f.samples for f in c.decode(audio=0))
    assert samples / 48000 == pytest.approx(sum(s.duration for s in segs), abs=0.3)


def test_person_detector_labels_a_motion_event_person(
    tmp_path: Path, index: Index, vtest_h264: Path
) -> None:
    # vtest.avi: pedestrians on a walkway from the first frames on. HOG needs no model fetch.
    rec = CameraRecorder(
        "walkway",
        CameraSettings(url=f"file:{vtest_h264}", person_detector=True),
        tmp_path / "media",
        tmp_path / "snapshots",
        index,
        person_detector=HogPersonDetector(),
    )
    rec.start()
    try:
        assert wait_for(lambda: any(e.label == "person" for e in index.events()[0]), 30)
    finally:
        rec.stop(5)
    events, _ = index.events(camera="walkway")
    assert events
    assert {e.label for e in events} <= {"person", "motion"}


def test_without_person_detector_events_stay_motion(
    tmp_path: Path, index: Index, vtest_h264: Path
) -> None:
    rec = recorder(tmp_path, index, "walkway", url=f"file:{vtest_h264}")
    rec.start()
    try:
        assert wait_for(lambda: bool(index.events()[0]), 20)
        time.sleep(2)
    finally:
        rec.stop(5)
    assert {e.label for e in index.events(camera="walkway")[0]} == {"motion"}


def _run_until_recorded(rec: CameraRecorder, segments: int) -> None:
    rec.start()
    try:
        assert wait_for(lambda: rec.status().segments_written >= segments, 15)
    finally:
        assert rec.stop(5)


def test_downtime_between_two_runs_is_a_not_recording_gap(
    tmp_path: Path, index: Index, bikes_mp4: Path
) -> None:
    # Regression: between a clean stop (or a kill -9) and the next start the index showed no
    # gap, as if the camera had been recorded all along.
    def camera() -> CameraRecorder:
        return recorder(
            tmp_path,
            index,
            "door",
            url=f"file:{bikes_mp4}",
            loop=True,
            segment_seconds=1,
            motion={"enabled": False},
        )

    _run_until_recorded(camera(), 1)
    first_run = index.segments(camera="door")
    assert index.gaps(camera="door") == []
    time.sleep(2.0)
    _run_until_recorded(camera(), 1)
    second_run = [s for s in index.segments(camera="door") if s not in first_run]
    (gap,) = index.gaps(camera="door")
    assert gap.reason == "not_recording"
    assert gap.start == first_run[-1].end  # contiguous with the last footage of run 1 ...
    assert gap.end == pytest.approx(second_run[0].start, abs=1e-6)  # ... and the first of run 2
    # ~2 s: the pause between the runs, give or take how far a paced file reads ahead of
    # real time (the anchor is the earliest arrival estimate) and the start-up time
    assert gap.end - gap.start == pytest.approx(2.0, abs=0.5)


def test_outage_at_start_continues_the_not_recording_gap_without_overlap(
    tmp_path: Path, index: Index, bikes_mp4: Path
) -> None:
    # A restart whose first connection fails: the downtime before it is not_recording, the
    # failed attempts an outage; one ends where the other begins, neither doubles the other.
    source = tmp_path / "door.mp4"
    shutil.copy(bikes_mp4, source)

    def camera() -> CameraRecorder:
        return recorder(
            tmp_path, index, "door", url=f"file:{source}", loop=True, motion={"enabled": False}
        )

    _run_until_recorded(camera(), 1)
    last_end = index.segments(camera="door")[-1].end
    source.unlink()
    time.sleep(1.5)  # well over DOWNTIME_TOLERANCE, however far the paced file read ahead
    rec = camera()
    rec.start()
    try:
        assert wait_for(lambda: rec.status().gaps_open == 1, 5)
        shutil.copy(bikes_mp4, source)
        assert wait_for(lambda: rec.status().segments_written >= 1, 15)
    finally:
        assert rec.stop(5)
    down, outage = index.gaps(camera="door")
    assert (down.reason, outage.reason) == ("not_recording", "unreachable")
    assert down.start == last_end
    assert down.end == outage.start
    resumed = next(s for s in index.segments(camera="door") if s.start > last_end)
    assert outage.end == pytest.approx(resumed.start, abs=1e-6)


@pytest.mark.parametrize(
    ("pause", "reasons"), [(0.2, ["unreachable"]), (5.0, ["not_recording", "unreachable"])]
)
def test_failed_first_attempt_accounts_from_the_earlier_footage(
    tmp_path: Path, index: Index, pause: float, reasons: list[str]
) -> None:
    # The first thing in this life is a failure, `pause` s after the earlier footage ended:
    # a hole too short for a gap of its own is covered by the outage, a longer one is
    # not_recording up to the failure. Either way the account starts at the footage's end.
    t = time.time() - 100
    index.add_segment(NewSegment("door", t - 10, t, 1000, 1, 0.0, "door/earlier.mp4"))
    rec = CameraRecorder(
        "door",
        CameraSettings(url=f"file:{tmp_path / 'missing.mp4'}", motion={"enabled": False}),
        tmp_path / "media",
        tmp_path / "snapshots",
        index,
        clock=lambda: t + pause,
    )
    rec.start()
    try:
        assert wait_for(lambda: rec.status().gaps_open == 1, 5)
    finally:
        assert rec.stop(5)
    gaps = index.gaps(camera="door")
    assert [g.reason for g in gaps] == reasons
    assert gaps[0].start == t
    assert gaps[-1].end == t + pause
    for a, b in itertools.pairwise(gaps):
        assert a.end == b.start


def test_rtsp_first_segment_holds_one_picture_per_packet(
    tmp_path: Path, index: Index, rtsp_server: Any, vtest_h264: Path
) -> None:
    """Regression: FFmpeg's RTSP depacketiser merged the stream's first IDR picture with the
    next picture into one packet; segments starting with it did not play in Chromium
    ("Failed to send video packet"). Every packet of every segment holds one picture."""
    server = rtsp_server(vtest_h264)
    rec = recorder(
        tmp_path, index, "rtsp", url=server.url, segment_seconds=2, motion={"enabled": False}
    )
    rec.start()
    try:
        assert wait_for(lambda: len(index.segments(camera="rtsp")) >= 2, 30)
    finally:
        assert rec.stop(10)
    segs = index.segments(camera="rtsp")
    for seg in segs:
        with av.open(str(tmp_path / "media" / seg.path)) as c:
            packets = [p for p in c.demux(video=0) if p.size]
        assert packets[0].is_keyframe
        assert {picture_count(bytes(p)) for p in packets} == {1}, seg.path
