"""The runtime: loopback-only API bind, real recorder on real footage, clean shutdown."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homewarden.config import Settings
from homewarden.errors import ConfigError, StorageError
from homewarden.services.runtime import ApiAddress, Runtime, bind_api_socket
from homewarden.store.index import Index
from homewarden.web.app import create_app

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"


#: Environment variables that Settings reads (others, like HOMEWARDEN_GST_PYTHON, stay).
_SETTINGS_ENV = tuple(
    f"HOMEWARDEN_{k}" for k in ("DATA_DIR", "DATABASE_URL", "API", "STORAGE", "CAMERAS")
)


@pytest.fixture(autouse=True, scope="module")
def _no_homewarden_env() -> Iterator[None]:
    """Settings come from the test's arguments only, not from the developer's environment."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(_SETTINGS_ENV)]:
            mp.delenv(key)
        yield


def _get(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.load(resp)


def test_bind_accepts_a_non_loopback_address_now_that_accounts_exist() -> None:
    sock = bind_api_socket("0.0.0.0", 0)
    try:
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_bind_an_address_that_is_not_ours_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        bind_api_socket("192.0.2.1", 0)  # TEST-NET-1: not an address of this machine


def test_bind_port_zero_reports_the_real_port() -> None:
    for host in ("127.0.0.1", "localhost"):
        sock = bind_api_socket(host, 0)
        try:
            addr, port = sock.getsockname()[:2]
            assert port > 0
            assert addr in ("127.0.0.1", "::1")
        finally:
            sock.close()


def test_bind_port_in_use_is_a_config_error() -> None:
    first = bind_api_socket("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            bind_api_socket("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


def test_plain_http_on_a_non_loopback_address_warns_how_to_add_tls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data", api={"host": "0.0.0.0", "port": 0})
    with caplog.at_level("WARNING"), Runtime(settings, app_factory=create_app) as runtime:
        assert runtime.address is not None
    text = caplog.text
    assert "plain HTTP" in text
    assert "TLS reverse proxy" in text
    assert "public_url" in text
    caplog.clear()
    behind = Settings(
        data_dir=tmp_path / "data",
        api={"host": "0.0.0.0", "port": 0, "public_url": "https://cams.example"},
    )
    with caplog.at_level("WARNING"), Runtime(behind, app_factory=create_app) as runtime:
        assert runtime.setup_link is not None
        assert runtime.setup_link.startswith("https://cams.example/setup?token=")
    assert "plain HTTP" not in caplog.text


def test_api_address_url() -> None:
    assert ApiAddress("127.0.0.1", 8765).url == "http://127.0.0.1:8765"
    assert ApiAddress("::1", 80).url == "http://[::1]:80"


def test_runtime_records_and_serves_live_status(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        api={"host": "127.0.0.1", "port": 0},
        cameras={"bikes": {"url": f"file:{FOOTAGE}", "loop": True, "segment_seconds": 2}},
        storage={"sealed": False},  # plaintext storage: this test reads the segment files
    )
    runtime = Runtime(settings, app_factory=create_app)
    address = runtime.start()
    try:
        assert address is not None
        assert address.port != 0
        # first run: an owner waiting for the setup link printed for them
        assert runtime.setup_link is not None
        assert runtime.setup_link.startswith(f"{address.url}/setup?token=")
        (owner,) = runtime.accounts.users()
        assert (owner.username, owner.role, owner.password_hash) == ("owner", "owner", None)
        token, _ = runtime.accounts.create_token(owner.id, "test")
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            _get(f"{address.url}/api/cameras/bikes")
        assert anonymous.value.code == 401
        deadline = time.monotonic() + 20
        cam: dict[str, Any] = {}
        while time.monotonic() < deadline:
            cam = _get(f"{address.url}/api/cameras/bikes", token)
            # The first rate window holds the burst read while the stream is probed.
            if cam["connected"] and cam["segments_written"] >= 2:
                break
            time.sleep(0.25)
        assert cam["connected"] is True, cam
        assert cam["state"] == "connected"
        assert cam["fps"] == pytest.approx(25, rel=0.3)
        assert cam["bitrate"] > 0
        assert cam["last_packet_at"] == pytest.approx(time.time(), abs=3)
        assert cam["decode_mode"] in ("keyframes", "full")
        health = _get(f"{address.url}/api/health", token)
        assert health["cameras_connected"] == 1
    finally:
        runtime.stop()
    assert runtime.address == address
    index_path = tmp_path / "data" / "homewarden.db"
    assert index_path.is_file()
    segments = sorted((tmp_path / "data" / "media" / "bikes").rglob("*.mp4"))
    assert segments
    assert not list((tmp_path / "data" / "media").rglob("*.part"))
    with pytest.raises(OSError):  # the API is gone
        _get(f"{address.url}/api/health")


def test_run_stops_on_sigterm_and_restores_handlers(tmp_path: Path) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    settings = Settings(data_dir=tmp_path / "data", api={"host": "127.0.0.1", "port": 0})
    runtime = Runtime(settings, app_factory=create_app)
    seen: list[ApiAddress | None] = []
    before = signal.getsignal(signal.SIGTERM)

    def ready(addr: ApiAddress | None) -> None:
        seen.append(addr)
        # Only send the signal once our handler is in place (else it would end the test run).
        assert signal.getsignal(signal.SIGTERM) is not before
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()

    started = time.monotonic()
    runtime.run(duration=30, on_ready=ready)
    assert time.monotonic() - started < 10
    assert seen
    assert seen[0] is not None
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_stops_after_duration(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", api={"host": "127.0.0.1", "port": 0})
    started = time.monotonic()
    Runtime(settings, app_factory=create_app).run(duration=1.0)
    assert 1.0 <= time.monotonic() - started < 10


def test_second_runtime_on_same_data_dir_is_refused_and_first_loses_nothing(
    tmp_path: Path, database_url: str
) -> None:
    """Regression: a second ``homewarden run`` on the same data dir once reconciled the first
    one's segment in progress as a crash leftover; the first then lost its footage."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        cameras={"bikes": {"url": f"file:{FOOTAGE}", "loop": True, "segment_seconds": 2}},
        # plaintext storage: this test is about the data-dir lock guarding the segment in
        # progress in the media dir
        storage={"sealed": False},
    )
    media = settings.media_dir
    first = Runtime(settings)
    first.start()
    try:
        deadline = time.monotonic() + 30
        while not (first.statuses()["bikes"].segments_written >= 1 and list(media.rglob("*.part"))):
            assert time.monotonic() < deadline, "no segment in progress within 30 s"
            time.sleep(0.05)
        in_progress = list(media.rglob("*.part"))
        second = Runtime(settings)
        with pytest.raises(StorageError, match=rf"in use .*process {os.getpid()} holds"):
            second.start()
        # The refusal came before the second one's reconciliation: the segment in progress is
        # still the first recorder's, being written or finished by it.
        for part in in_progress:
            assert part.exists() or part.with_name(part.name.removesuffix(".part")).exists()
        time.sleep(2.5)  # the first one records on, through at least one more cut
        assert first.statuses()["bikes"].state == "connected"
        assert first.statuses()["bikes"].last_error is None
    finally:
        first.stop()
    index = Index(database_url)
    try:
        segments = index.segments("bikes")
        on_disk = {p.relative_to(media).as_posix() for p in media.rglob("*.mp4")}
        assert on_disk == {s.path for s in segments}
        assert not list(media.rglob("*.part"))
        assert len(segments) >= 3
        assert all(abs(b.start - a.end) <= 1e-6 for a, b in itertools.pairwise(segments))
        assert not index.gaps(camera="bikes")
    finally:
        index.close()
    # Stopped, the first released the data dir: a new runtime may take it.
    with Runtime(settings.model_copy(update={"cameras": {}})):
        pass
