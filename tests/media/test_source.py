"""Opening cameras: error translation, stall guard, pacing and looping of file: sources."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from homewarden.errors import (
    SourceError,
    SourceStalledError,
    SourceUnreachableError,
    UnsupportedStreamError,
)
from homewarden.media.source import file_path, open_source


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP listener on loopback that accepts connections and never sends a byte."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            held.append(conn)

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


def first_gop_file(src: Path, dst: Path) -> Path:
    """Remux the first GOP of ``src`` (no re-encode) into ``dst``: a short real clip."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        keys = 0
        for pkt in inp.demux(vin):
            if pkt.dts is None:
                continue
            keys += pkt.is_keyframe
            if keys > 1:
                break
            pkt.stream = vout
            out.mux(pkt)
    return dst


def test_file_url_forms() -> None:
    assert file_path("file:/abs/x.mp4") == Path("/abs/x.mp4")
    assert file_path("file:///abs/x.mp4") == Path("/abs/x.mp4")
    assert file_path("file:rel/x.mp4") == Path("rel/x.mp4")


def test_missing_file_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreachableError, match="does not exist"):
        open_source(f"file:{tmp_path / 'nope.mp4'}", stall_timeout=2)


def test_msmpeg4_file_is_unsupported_and_says_transcode(vtest_avi: Path) -> None:
    with pytest.raises(UnsupportedStreamError, match="transcode") as info:
        open_source(f"file:{vtest_avi}", stall_timeout=2)
    assert "msmpeg4" in str(info.value)
    assert info.value.reason == "unsupported"


def test_garbage_file_is_unreadable(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 500)
    with pytest.raises(SourceError, match="not a readable media file") as info:
        open_source(f"file:{junk}", stall_timeout=2)
    assert info.value.reason == "unreadable"


def test_truncated_file_fails_where_it_ends(vtest_h264: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = vtest_h264.read_bytes()
    cut.write_bytes(data[: len(data) // 40])  # moov is at the front: ~2 s of footage remain
    src = open_source(f"file:{cut}", stall_timeout=2)
    try:
        with pytest.raises(SourceError, match="truncated") as info:
            for _ in src.packets():
                pass
        assert info.value.reason == "unreadable"
    finally:
        src.close()


def test_silent_server_stalls_within_timeout(silent_server: str) -> None:
    began = time.monotonic()
    with pytest.raises(SourceStalledError):
        open_source(silent_server, stall_timeout=1.5)
    assert time.monotonic() - began < 1.5 + 1.5


def test_unknown_host_is_unreachable() -> None:
    began = time.monotonic()
    with pytest.raises(SourceUnreachableError):
        open_source("rtsp://nonexistent.invalid/stream", stall_timeout=3)
    assert time.monotonic() - began < 5


def test_refused_port_is_unreachable() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(SourceUnreachableError, match="refused"):
        open_source(f"rtsp://127.0.0.1:{port}/cam", stall_timeout=3)


def test_file_is_paced_at_real_time(bikes_mp4: Path) -> None:
    src = open_source(f"file:{bikes_mp4}", stall_timeout=2)
    try:
        assert src.codec_context.name == "h264"
        assert (src.width, src.height) == (640, 272)
        began = time.monotonic()
        first = None
        for pkt in src.packets():
            assert pkt.pts is not None
            assert pkt.dts is not None
            seconds = float(pkt.dts * pkt.time_base)
            first = seconds if first is None else first
            if seconds - first >= 1.0:
                break
        elapsed = time.monotonic() - began
    finally:
        src.close()
    assert 0.85 <= elapsed <= 1.5, elapsed


def test_looped_file_keeps_timestamps_increasing(bikes_mp4: Path, tmp_path: Path) -> None:
    short = first_gop_file(bikes_mp4, tmp_path / "gop.mp4")  # 1.2 s of real footage
    src = open_source(f"file:{short}", stall_timeout=2, loop=True)
    keys: list[float] = []
    dts_seen: list[int] = []
    try:
        for pkt in src.packets():
            dts_seen.append(pkt.dts)
            if pkt.is_keyframe:
                keys.append(float(pkt.pts * pkt.time_base))
            if len(keys) == 3:
                break
    finally:
        src.close()
    assert all(b > a for a, b in itertools.pairwise(dts_seen))
    # Each pass is 1.2 s (30 frames at 25 fps): the keyframes of passes 2 and 3 follow on.
    assert keys[1] - keys[0] == pytest.approx(1.2, abs=0.001)
    assert keys[2] - keys[1] == pytest.approx(1.2, abs=0.001)


def test_interrupt_ends_a_paced_file_at_once(vtest_h264: Path) -> None:
    src = open_source(f"file:{vtest_h264}", stall_timeout=2)
    got = 0
    timer = threading.Timer(0.5, src.interrupt)
    timer.start()
    began = time.monotonic()
    try:
        for _ in src.packets():
            got += 1
    finally:
        src.close()
        timer.cancel()
    assert time.monotonic() - began < 1.5
    assert 0 < got < 20


@pytest.mark.slow
def test_rtsp_camera_packets_then_server_gone(rtsp_server, vtest_h264: Path) -> None:
    server = rtsp_server(vtest_h264)
    src = open_source(server.url, stall_timeout=3)
    try:
        assert src.codec_context.name == "h264"
        assert src.audio is None
        pkts = []
        for pkt in src.packets():
            pkts.append((pkt.pts, pkt.dts, pkt.is_keyframe))
            if len(pkts) == 25:
                server.kill()
                break
        # 10 fps camera: timestamps 0.1 s apart, a keyframe every 2 s, one whole picture each.
        steps = {
            round(float((b[0] - a[0]) * src.video_time_base), 3)
            for a, b in itertools.pairwise(pkts)
        }
        assert steps == {0.1}
        assert sum(k for _, _, k in pkts) in (1, 2)
        began = time.monotonic()
        with pytest.raises(SourceError):
            for _ in src.packets():
                pass
        assert time.monotonic() - began < 3 + 1.5
    finally:
        src.close()
