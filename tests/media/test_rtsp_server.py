"""The test camera: real GStreamer RTSP server processes pulled by PyAV over TCP."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from homewarden.errors import MediaError
from homewarden.media.rtsp_server import RtspTestServer
from tests.fixtures_media import RtspServerFactory

RTSP_OPTIONS = {"rtsp_transport": "tcp", "stimeout": "5000000", "timeout": "5000000"}


@dataclass
class Pulled:
    """What a client saw: per stream type, (pts seconds, keyframe) in arrival order."""

    opened_after: float = 0.0
    packets: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    first_keyframe: av.Packet | None = None
    size: tuple[int, int] = (0, 0)
    codec: str = ""


def pull(url: str, stream_seconds: float, wall_limit: float = 30.0) -> Pulled:
    """Read ``url`` until the video has advanced ``stream_seconds`` (or ``wall_limit`` s)."""
    out = Pulled()
    start = time.monotonic()
    with av.open(url, options=RTSP_OPTIONS, timeout=10) as c:
        out.opened_after = time.monotonic() - start
        video = c.streams.video[0]
        out.codec = video.codec_context.name
        out.size = (video.codec_context.width, video.codec_context.height)
        first: float | None = None
        for p in c.demux():
            if p.pts is None:  # FFmpeg leaves the very first RTP packet untimed
                continue
            t = float(p.pts * p.time_base)
            out.packets.setdefault(p.stream.type, []).append((t, p.is_keyframe))
            if p.stream.type != "video":
                continue
            if p.is_keyframe and out.first_keyframe is None:
                out.first_keyframe = p
            first = t if first is None else first
            if t - first >= stream_seconds or time.monotonic() - start > wall_limit:
                break
    return out


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_stream_is_live_paced_and_continuous_across_loops(
    rtsp_server: RtspServerFactory, vtest_h264_4s: Path
) -> None:
    server = rtsp_server(vtest_h264_4s)
    assert server.url == f"rtsp://127.0.0.1:{server.port}/cam"
    began = time.monotonic()
    seen = pull(server.url, stream_seconds=9.0)
    elapsed = time.monotonic() - began
    assert (seen.codec, seen.size) == ("h264", (768, 576))
    video = seen.packets["video"]
    times = [t for t, _ in video]
    # 9 s of stream from a 4 s file: the loop was crossed twice, and time never went back.
    assert times[-1] - times[0] >= 9.0
    assert all(b > a for a, b in itertools.pairwise(times)), "pts not increasing"
    steps = np.diff(times)
    assert np.allclose(steps, 0.1, atol=0.002), "a frame is missing or doubled at a loop"
    # Keyframes every 2 s, as in the file, also over the loop boundary.
    keys = [t for t, key in video if key]
    assert len(keys) >= 4
    assert np.allclose(np.diff(keys), 2.0, atol=0.002)
    # Live pacing: the server cannot have sent more stream time than wall time.
    assert times[-1] - times[0] <= elapsed + 0.3
    # The first keyframe decodes to a full picture.
    assert seen.first_keyframe is not None
    # A fresh decoder with no extradata: SPS/PPS must travel in-band before each keyframe.
    codec = av.CodecContext.create("h264", "r")
    frames = codec.decode(seen.first_keyframe) + codec.decode(None)
    assert frames
    assert (frames[0].width, frames[0].height) == (768, 576)


def test_a_second_client_joins_the_running_stream(
    rtsp_server: RtspServerFactory, vtest_h264_4s: Path
) -> None:
    server = rtsp_server(vtest_h264_4s)
    first: list[Pulled] = []
    reader = threading.Thread(target=lambda: first.append(pull(server.url, 8.0)))
    reader.start()
    time.sleep(2.0)
    second = pull(server.url, 2.5)
    reader.join(timeout=30)
    assert first, "first client failed"
    times = [t for t, _ in first[0].packets["video"]]
    # The shared stream was not rewound for the newcomer: the first client's time runs on.
    assert all(b > a for a, b in itertools.pairwise(times))
    assert np.allclose(np.diff(times), 0.1, atol=0.002)
    assert second.size == (768, 576)
    assert len(second.packets["video"]) >= 20


def test_stop_really_stops_and_restart_serves_the_same_url(
    rtsp_server: RtspServerFactory, vtest_h264_4s: Path
) -> None:
    server = rtsp_server(vtest_h264_4s)
    url, port, pid = server.url, server.port, server.pid
    assert pid is not None
    assert not refused(port)
    server.stop()
    assert server.returncode == 0  # SIGTERM is handled: a clean exit
    assert not server.running
    assert refused(port)
    server.restart()
    assert server.url == url
    assert server.pid != pid
    assert pull(server.url, 1.0).size == (768, 576)
    # Power loss: killed outright, then back on the same port.
    server.kill()
    assert server.returncode == -9
    assert refused(port)
    server.restart()
    assert server.url == url
    assert len(pull(server.url, 1.0).packets["video"]) >= 10
    server.stop()


def test_audio_track_is_served_beside_video(
    rtsp_server: RtspServerFactory, vtest_h264_4s: Path, tmp_path: Path
) -> None:
    # The footage has no sound; a 440 Hz tone stands in for a camera microphone.
    clip = tmp_path / "with-audio.mp4"
    with av.open(str(vtest_h264_4s)) as src, av.open(str(clip), "w") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("aac", rate=48000)
        aout.layout = "mono"
        for p in src.demux(vin):
            if p.dts is not None:
                p.stream = vout
                out.mux(p)
        for i in range(4 * 48000 // 1024):
            n = np.arange(i * 1024, (i + 1) * 1024)
            tone = (0.2 * np.sin(2 * np.pi * 440 * n / 48000)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 1024
            out.mux(aout.encode(frame))
        out.mux(aout.encode(None))
    server = rtsp_server(clip)
    seen = pull(server.url, 5.0)
    audio = [t for t, _ in seen.packets.get("audio", [])]
    assert len(audio) > 150  # ~47 AAC frames per second
    assert all(b > a for a, b in itertools.pairwise(audio))
    assert audio[-1] - audio[0] > 4.0  # past the loop boundary at 4 s


def test_a_file_it_cannot_serve_gives_the_servers_reason(
    rtsp_server: RtspServerFactory, vtest_avi: Path
) -> None:
    # vtest.avi is MS-MPEG4: no RTP payloader without re-encoding.
    with pytest.raises(MediaError, match=r"(?s)exited with status 2.*transcode it first"):
        rtsp_server(vtest_avi)
    with pytest.raises(MediaError, match="no such file"):
        RtspTestServer(vtest_avi.with_name("missing.mp4")).start()
    with pytest.raises(MediaError, match="not started"):
        _ = RtspTestServer(vtest_avi).url


def test_server_exits_when_its_owner_dies(
    rtsp_server: RtspServerFactory, vtest_h264_4s: Path
) -> None:
    # (rtsp_server only gates the test on GStreamer; the owner here is another process.)
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from homewarden.media.rtsp_server import RtspTestServer\n"
            "s = RtspTestServer(Path(sys.argv[1])).start()\n"
            "print(s.pid, s.port, flush=True)\n"
            "time.sleep(120)\n",
            str(vtest_h264_4s),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        pid, port = (int(x) for x in owner.stdout.readline().split())
        assert not refused(port)
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not refused(port):
        time.sleep(0.1)
    assert refused(port), f"server {pid} outlived its owner"
