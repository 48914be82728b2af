"""Media fixtures: real footage, H.264 transcodes, a real RTSP server.

Footage is ``<repo>/../shared/footage`` (``vtest.avi``, ``bikes.mp4``; see its README), or
``$HOMEWARDEN_FOOTAGE_DIR``. Transcodes are made once and cached across sessions in pytest's
cache dir (``.pytest_cache/d/homewarden-media``), or ``$HOMEWARDEN_MEDIA_CACHE``, or a temp dir
under pytest's base temp when the cache plugin is off; each is guarded by a file lock, so
pytest-xdist workers make it once and share it. Missing footage or a missing GStreamer RTSP
server skips the test with the reason, and fails it when ``CI=true``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

from homewarden.media.rtsp_server import RtspTestServer, gst_rtsp_available
from homewarden.media.transcode import make_still_motion_still_clip, transcode_to_h264
from tests.fixtures_db import in_ci

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Layout of :func:`still_motion_still_clip`: still, real motion, still (seconds).
STILL_SECONDS = 20.0
MOTION_SECONDS = 20.0
#: Keyframe interval of every transcoded fixture (seconds), like a typical IP camera.
GOP_SECONDS = 2.0

RtspServerFactory = Callable[..., RtspTestServer]


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason`` — or fail it under CI, where everything must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def footage_dir() -> Path:
    """Directory of the real footage (``vtest.avi``, ``bikes.mp4``)."""
    configured = os.environ.get("HOMEWARDEN_FOOTAGE_DIR")
    directory = Path(configured) if configured else REPO_ROOT.parent / "shared" / "footage"
    if not directory.is_dir():
        unavailable(f"real footage not found at {directory} (set HOMEWARDEN_FOOTAGE_DIR)")
    return directory


def _footage_file(footage_dir: Path, name: str) -> Path:
    path = footage_dir / name
    if not path.is_file():
        unavailable(f"real footage file missing: {path}")
    return path


@pytest.fixture(scope="session")
def vtest_avi(footage_dir: Path) -> Path:
    """``vtest.avi`` as shipped: 768x576, 10 fps, MS-MPEG4 v3, 79.5 s, a walkway CCTV view."""
    return _footage_file(footage_dir, "vtest.avi")


@pytest.fixture(scope="session")
def bikes_mp4(footage_dir: Path) -> Path:
    """``bikes.mp4`` as shipped: 640x272, 25 fps, H.264 with B-frames, 10 s, street scene."""
    return _footage_file(footage_dir, "bikes.mp4")


@pytest.fixture(scope="session")
def media_cache_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Directory shared by all workers (and, with the cache plugin, all sessions)."""
    configured = os.environ.get("HOMEWARDEN_MEDIA_CACHE")
    if configured:
        directory = Path(configured)
    elif getattr(request.config, "cache", None) is not None:
        directory = Path(request.config.cache.mkdir("homewarden-media"))
    else:
        # Under xdist each worker's base temp is a child of one shared per-run directory.
        directory = tmp_path_factory.getbasetemp().parent / "homewarden-media"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _cached(cache: Path, name: str, make: Callable[[Path], Path]) -> Path:
    with _file_lock(cache / f"{name}.lock"):
        return make(cache / name)


@pytest.fixture(scope="session")
def vtest_h264(vtest_avi: Path, media_cache_dir: Path) -> Path:
    """vtest.avi as a camera-like H.264 MP4: 768x576, 10 fps, 795 frames (79.5 s), an IDR
    keyframe every 2 s exactly, no B-frames, yuv420p, one slice per frame."""
    return _cached(
        media_cache_dir,
        "vtest-h264.mp4",
        lambda dst: transcode_to_h264(vtest_avi, dst, gop_seconds=GOP_SECONDS),
    )


@pytest.fixture(scope="session")
def vtest_h264_4s(vtest_avi: Path, media_cache_dir: Path) -> Path:
    """The first 4 s of vtest.avi as :func:`vtest_h264` (40 frames, keyframes at 0 and 2 s):
    a short clip, so an RTSP server loops it quickly."""
    return _cached(
        media_cache_dir,
        "vtest-h264-4s.mp4",
        lambda dst: transcode_to_h264(vtest_avi, dst, gop_seconds=GOP_SECONDS, duration=4.0),
    )


@pytest.fixture(scope="session")
def still_motion_still_clip(vtest_avi: Path, media_cache_dir: Path) -> Path:
    """60 s H.264 MP4 from vtest.avi (768x576, 10 fps, GOP 2 s): the first frame held for
    ``STILL_SECONDS`` (20 s), then the first ``MOTION_SECONDS`` (20 s) of the real footage
    (pedestrians walking), then its last frame held for 20 s. Motion spans [20 s, 40 s)."""
    return _cached(
        media_cache_dir,
        "still-motion-still.mp4",
        lambda dst: make_still_motion_still_clip(
            vtest_avi, dst, STILL_SECONDS, MOTION_SECONDS, gop_seconds=GOP_SECONDS
        ),
    )


@pytest.fixture
def rtsp_server() -> Iterator[RtspServerFactory]:
    """Factory ``rtsp_server(path, *, mount="cam", port=0) -> RtspTestServer`` (started).

    Each server is a real GStreamer RTSP server process serving ``path`` live, in a loop, at
    ``server.url``; every one is stopped when the test ends, whatever happened.
    """
    ok, reason = gst_rtsp_available()
    if not ok:
        unavailable(f"GStreamer RTSP server unavailable: {reason}")
    servers: list[RtspTestServer] = []

    def start(path: Path, *, mount: str = "cam", port: int = 0) -> RtspTestServer:
        server = RtspTestServer(path, mount=mount, port=port)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.close()
