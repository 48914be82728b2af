"""The live feed: tailing segment files as the recorder writes them.

Two kinds of tests: a real recorder pulling real footage from a real RTSP server (latency,
roll-over, decoding), and a segment file grown by the test byte range by byte range from a
real recorded segment (cut-short fragments, rename, deletion by retention, offline), so each
state is reached deterministically.
"""

from __future__ import annotations

import io
import itertools
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from homewarden.config import CameraSettings, Settings
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.permissions import Access, CameraAccess
from homewarden.errors import FootageUnavailableError, NotFoundError
from homewarden.media import fmp4
from homewarden.services.audit import AuditLog
from homewarden.services.live import SNAPSHOT_AUDIT_SECONDS, LiveChunk, LiveService
from homewarden.services.recorder import CameraRecorder, segment_relpath
from homewarden.store.index import Index
from tests.fixtures_media import RtspServerFactory
from tests.media.recorded import cut_segments

#: Camera to stream on loopback, in fragment durations (GOPs) measured in the same run
#: (issue 3: "under 3 s" with a 2 s GOP); relative, not an absolute time.
LATENCY_LIMIT_GOPS = 1.5
OWNER = Access(CameraAccess.OWNER)


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    settings: Settings
    index: Index
    audit: AuditLog
    live: LiveService
    clock: Clock

    @property
    def media(self) -> Path:
        return self.settings.media_dir


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    url = f"sqlite:///{tmp_path / 'hw.db'}"
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        cameras={
            "front": {"url": "rtsp://127.0.0.1:9/none"},
            "shed": {"url": "rtsp://127.0.0.1:9/none", "enabled": False},
        },
        # plaintext storage: these tests are about following the segment file being written
        # (sealed: tests/web/test_live_sealed.py, tests/services/test_sealed_live_dir.py)
        storage={"sealed": False},
    )
    index = Index(url)
    index.migrate()
    clock = Clock(time.time())
    with AuditLog.open(url, settings.keys_dir) as audit:
        live = LiveService(
            settings, index, clock, audit=audit, wait_seconds=1.0, offline_seconds=1.5
        )
        yield Env(settings, index, audit, live, clock)
    index.close()


@pytest.fixture(scope="module")
def recorded(vtest_h264: Path, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Two ~10 s segments of real footage (GOP 2 s: five fragments each), as written."""
    parts = cut_segments(vtest_h264, tmp_path_factory.mktemp("segs"), 10.0, 1_700_000_000.0)
    return [parts[0][0].read_bytes(), parts[1][0].read_bytes()]


def _fragments(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each moof+mdat pair."""
    boxes, _ = fmp4.complete_boxes(data)
    return [
        (a.offset, b.end)
        for a, b in itertools.pairwise(boxes)
        if a.type == "moof" and b.type == "mdat"
    ]


def _part_path(media: Path, camera: str, start: float) -> Path:
    path = media / (segment_relpath(camera, start) + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _decode(chunks: list[LiveChunk]) -> list[av.VideoFrame]:
    data = b"".join(c.data for c in chunks)
    with av.open(io.BytesIO(data), mode="r") as c:
        return list(c.decode(video=0))


def _poll_until(feed: object, timeout: float = 3.0) -> list[LiveChunk]:
    poll = feed.poll  # type: ignore[attr-defined]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got: list[LiveChunk] = poll()
        if got:
            return got
        time.sleep(0.02)
    return []


# -- a file grown by the test ---------------------------------------------------------------


def test_feed_starts_at_newest_fragment_waits_for_cut_short_ones_and_follows_rollover(
    env: Env, recorded: list[bytes]
) -> None:
    first, second = recorded
    frags = _fragments(first)
    init_end = frags[0][0]
    start = time.time() - 6.0
    part = _part_path(env.media, "front", start)
    # three complete fragments, and the next one cut short in its mdat
    part.write_bytes(first[: frags[3][0] + 100])
    feed = env.live.feed("front")
    chunks = _poll_until(feed)
    assert [c.kind for c in chunks] == ["init", "fragment"]
    assert chunks[0].data == first[:init_end]
    assert chunks[0].codec == "avc1.64001f"
    assert chunks[1].data == first[frags[2][0] : frags[2][1]]  # the newest, not the first
    assert chunks[1].media_start == pytest.approx(start + 4.0, abs=0.01)
    assert chunks[1].duration == pytest.approx(2.0, abs=0.01)
    assert _decode(chunks)[0].key_frame
    time.sleep(0.1)
    assert feed.poll() == []  # the fourth fragment is not complete yet
    with part.open("ab") as fh:
        fh.write(first[frags[3][0] + 100 : frags[3][1]])
    (frag4,) = _poll_until(feed)
    assert frag4.data == first[frags[3][0] : frags[3][1]]
    # the segment closes: last fragment and mfra written, renamed to .mp4
    with part.open("ab") as fh:
        fh.write(first[frags[3][1] :])
    final = part.with_name(part.name.removesuffix(".part"))
    part.rename(final)
    (frag5,) = _poll_until(feed)
    assert frag5.data == first[frags[4][0] : frags[4][1]]
    # the next segment: its init segment again, then every fragment from its first
    nxt = _part_path(env.media, "front", start + 10.0)
    nxt.write_bytes(second)
    got = _poll_until(feed)
    assert [c.kind for c in got] == ["init"] + ["fragment"] * 5
    assert got[1].media_start == pytest.approx(start + 10.0, abs=0.01)
    frames = _decode(got)
    assert len(frames) == 100
    feed.close()


def test_file_deleted_by_retention_mid_read_and_then_offline(
    env: Env, recorded: list[bytes]
) -> None:
    first = recorded[0]
    frags = _fragments(first)
    start = time.time() - 4.0
    part = _part_path(env.media, "front", start)
    part.write_bytes(first[: frags[1][1]])
    feed = env.live.feed("front")
    assert [c.kind for c in _poll_until(feed)] == ["init", "fragment"]
    part.unlink()  # retention, or an operator, removed it
    assert _poll_until(feed, 0.5) == []
    with pytest.raises(FootageUnavailableError, match="front has no footage yet"):
        _poll_until(feed, 5.0)


def test_no_live_file_means_offline_with_the_reason(env: Env, recorded: list[bytes]) -> None:
    with pytest.raises(NotFoundError):
        next(env.live.stream("nope"))
    gap_start = time.time() - 120
    env.index.open_gap("front", gap_start, "unreachable", "connection refused")
    # a leftover .part, not written to for a long time, is no live footage
    stale = _part_path(env.media, "front", gap_start - 10)
    stale.write_bytes(recorded[0])
    os.utime(stale, (gap_start, gap_start))
    began = time.monotonic()
    with pytest.raises(FootageUnavailableError) as err:
        next(env.live.stream("front"))
    assert 0.9 <= time.monotonic() - began < 3.0
    assert str(err.value).startswith("camera front is offline since ")
    assert "(unreachable: connection refused)" in str(err.value)
    with pytest.raises(FootageUnavailableError, match="disabled"):
        next(env.live.stream("shed"))


def test_latest_jpeg_and_audit_entries(env: Env, recorded: list[bytes]) -> None:
    first = recorded[0]
    frags = _fragments(first)
    start = time.time() - 6.0
    _part_path(env.media, "front", start).write_bytes(first[: frags[2][1] + 50])
    image, at = env.live.latest_jpeg("front")
    assert at == pytest.approx(start + 4.0, abs=0.01)  # the third GOP's keyframe
    decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    gop3 = first[: frags[0][0]] + first[frags[2][0] : frags[2][1]]
    with av.open(io.BytesIO(gop3), mode="r") as c:
        ref = next(iter(c.decode(video=0))).to_ndarray(format="bgr24")
    assert np.abs(decoded.astype(np.int16) - ref.astype(np.int16)).mean() < 4.0

    alice = Actor(ActorKind.USER, "7")
    bob = Actor(ActorKind.USER, "8")
    env.live.open_view("front", actor=alice, access=OWNER)
    for _ in range(3):
        env.live.snapshot("front", actor=alice, access=OWNER, reason="live fallback")
    env.live.snapshot("front", actor=bob, access=OWNER, reason="live fallback")
    env.clock.now += SNAPSHOT_AUDIT_SECONDS + 1
    env.live.snapshot("front", actor=alice, access=OWNER, reason="live fallback")
    entries = [env.audit.entry(i) for i in range(env.audit.size())]
    assert [(e.action, e.actor.id) for e in entries] == [
        (AuditTag.FOOTAGE_LIVE_VIEW, "7"),
        (AuditTag.FOOTAGE_SNAPSHOT_VIEW, "7"),
        (AuditTag.FOOTAGE_SNAPSHOT_VIEW, "8"),
        (AuditTag.FOOTAGE_SNAPSHOT_VIEW, "7"),
    ]
    assert all(e.subject.camera == "front" for e in entries)
    assert all(e.subject.household == env.settings.household for e in entries)
    assert entries[0].reason == "live view; owner"
    assert entries[1].reason == "live fallback; owner"
    assert entries[1].subject.start_ms == int(at * 1000)

    with pytest.raises(FootageUnavailableError, match="shed is disabled"):
        env.live.latest_jpeg("shed")  # configured, never recorded
    with pytest.raises(NotFoundError):
        env.live.latest_jpeg("nope")


# -- a real recorder ------------------------------------------------------------------------


def test_live_feed_of_a_recording_camera(
    env: Env, rtsp_server: RtspServerFactory, vtest_h264: Path
) -> None:
    server = rtsp_server(vtest_h264)
    cam = CameraSettings(url=server.url, segment_seconds=6, motion={"enabled": False})
    rec = CameraRecorder("front", cam, env.media, env.settings.snapshot_dir, env.index)
    # GOP 2 s: a file does not grow for 2 s at a time, so the test env's 1.5 s is too short
    live = LiveService(env.settings, env.index, audit=env.audit, wait_seconds=1, offline_seconds=5)
    rec.start()
    try:
        # Start watching once the segment in progress has two fragments: the feed must
        # begin with the newer one.
        def fragments_in_part() -> int:
            found = live.newest_part("front")
            return 0 if found is None else len(_fragments(found[0].read_bytes()))

        deadline = time.monotonic() + 30
        while fragments_in_part() < 2:
            assert time.monotonic() < deadline, rec.status()
            time.sleep(0.05)
        got: list[tuple[LiveChunk, float]] = []
        inits = 0
        for chunk in live.stream("front"):
            got.append((chunk, time.time()))
            inits += chunk.kind == "init"
            if inits == 3:
                break
            assert time.monotonic() < deadline + 30
        image, _ = live.latest_jpeg("front")
    finally:
        rec.stop(10)

    first_init, first_frag = got[0][0], got[1][0]
    assert first_init.kind == "init"
    assert first_frag.media_start - first_init.media_start == pytest.approx(2.0, abs=0.15)
    gop = statistics.median(c.duration for c, _ in got if c.kind == "fragment")
    latencies = []
    for chunk, arrived in got:
        if chunk.kind != "fragment":
            continue
        # the oldest frame of a fragment waited longest: it was received a GOP before the
        # fragment could be complete
        latency = arrived - chunk.media_start
        latencies.append(latency)
        assert latency < LATENCY_LIMIT_GOPS * gop, (chunk.segment, latency, gop)
        assert arrived - (chunk.media_start + chunk.duration) > -0.5  # not from the future
    print(f"live latency (oldest frame of each fragment): max {max(latencies):.3f} s")

    # each file's chunks (init first) decode, with every frame
    files: list[list[LiveChunk]] = []
    for chunk, _ in got[:-1]:  # the last init opens a file not followed
        if chunk.kind == "init":
            files.append([])
        files[-1].append(chunk)
    assert len(files) == 2
    for chunks in files:
        frames = _decode(chunks)
        seconds = sum(c.duration for c in chunks)
        assert len(frames) == round(seconds * 10)  # vtest is 10 fps
        assert frames[0].key_frame
        assert (frames[0].width, frames[0].height) == (768, 576)
    # the second file was followed from its first fragment on
    assert files[1][1].media_start == pytest.approx(files[1][0].media_start, abs=0.01)
    picture = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    assert picture.shape == (576, 768, 3)

    # the recorder stopped: the feed says so
    with pytest.raises(FootageUnavailableError, match="front is not recording"):
        for _ in live.stream("front"):
            pass
