"""Cameras changed in the app take effect while the runtime runs: a ``file:`` camera of real
footage added through CameraAdmin records within seconds, disabling it stops it, and the
others go on untouched - with recorder threads and with recorder worker processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from homewarden.config import Settings
from homewarden.domain.audit import Actor
from homewarden.domain.permissions import Principal
from homewarden.services.recorder_group import RecorderGroup, enabled_cameras
from homewarden.services.runtime import Runtime
from homewarden.store.index import Index
from homewarden.store.lockfile import DataDirLock
from homewarden.workers.camera_worker import RecorderProcessPool

#: Seconds within which a change must show: a recorder opens a file at once and cuts a
#: 2 s segment at the second keyframe (GOP 2 s); a worker process takes ~2 s to start.
WITHIN = 20.0


def _wait(check: Callable[[], bool], what: str, timeout: float = WITHIN) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def _owner(runtime: Runtime) -> Principal:
    (user,) = runtime.accounts.users()
    return runtime.accounts.principal_of(user)


def _pool(
    settings: Settings,
    index: Index,
    clock: Callable[[], float],
    *,
    lock: DataDirLock | None,
    fence_node: int | None = None,
) -> RecorderGroup:
    assert fence_node is None  # these tests run role "all": no leases
    return RecorderProcessPool(
        enabled_cameras(settings),
        processes=2,
        db_url=settings.db_url,
        media_dir=settings.media_dir,
        snapshot_dir=settings.snapshot_dir,
        models_dir=settings.cache_dir / "models",
        index=index,
        lock=lock,
        status_interval=0.2,
    )


@pytest.mark.parametrize("group", ["threads", "processes"])
def test_added_camera_records_within_seconds_and_disabling_stops_it(
    group: str, tmp_path: Path, vtest_h264: Path, vtest_h264_4s: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        cameras={"front": {"url": f"file:{vtest_h264_4s}", "loop": True, "segment_seconds": 2}},
    )
    runtime = Runtime(settings, recorder_pool_factory=_pool if group == "processes" else None)
    runtime.start()
    try:
        owner = _owner(runtime)
        actor = Actor.of_principal(owner)
        index = runtime.index
        _wait(lambda: runtime.statuses()["front"].state == "connected", "front connected")
        pids = (
            runtime._recorders.pids() if isinstance(runtime._recorders, RecorderProcessPool) else {}
        )
        url = f"file:{vtest_h264}"
        runtime.cameras.put(owner, "yard", {"url": url, "loop": True, "segment_seconds": 2}, actor)
        assert "yard" in runtime.settings.cameras  # every reader sees it at once
        assert runtime.queries().camera("yard", viewer=owner).configured
        took = _wait(lambda: len(index.segments("yard")) >= 1, "a segment of the added camera")
        assert runtime.statuses()["yard"].state == "connected"
        assert took < WITHIN
        if pids:  # the worker of "front" was not touched; "yard" went to a second one
            assert isinstance(runtime._recorders, RecorderProcessPool)
            assert runtime._recorders.pids()[1] == pids[1]
            assert runtime._recorders.cameras_of(2) == ["yard"]
        # An edit restarts only that camera's recorder, with the new settings.
        front_segments = len(index.segments("front"))
        runtime.cameras.put(owner, "yard", {"motion": {"detect_fps": 2}}, actor)
        _wait(
            lambda: (
                runtime.statuses().get("yard") is not None
                and runtime.statuses()["yard"].state == "connected"
            ),
            "yard back",
        )
        # Disabling stops it: no segment after the status says so.
        runtime.cameras.set_enabled(owner, "yard", False, actor)
        _wait(lambda: "yard" not in runtime.statuses(), "yard stopped")
        if pids:
            assert isinstance(runtime._recorders, RecorderProcessPool)
            _wait(lambda: runtime._recorders.pids()[2] is None, "the empty worker ended")  # type: ignore[union-attr]
        stopped = len(index.segments("yard"))
        time.sleep(3.0)
        assert len(index.segments("yard")) == stopped
        assert runtime.queries().camera("yard", viewer=owner).state == "disabled"
        # "front" kept recording all along.
        assert len(index.segments("front")) > front_segments
        assert runtime.statuses()["front"].state == "connected"
    finally:
        runtime.stop()


def test_stored_cameras_are_recorded_from_the_start(tmp_path: Path, vtest_h264: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with Runtime(settings) as runtime:
        owner = _owner(runtime)
        runtime.cameras.put(
            owner, "yard", {"url": f"file:{vtest_h264}", "loop": True}, Actor.of_principal(owner)
        )
    with Runtime(settings) as again:
        assert "yard" in again.settings.cameras
        _wait(lambda: "yard" in again.statuses(), "yard recorded at start")
