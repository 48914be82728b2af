"""Recorder worker processes on real footage: bikes.mp4 played as paced ``file:`` cameras,
recorded by spawned worker processes into a real index (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homewarden.config import Settings, load_settings
from homewarden.errors import ConfigError, StorageError
from homewarden.services.recorder import NOT_RECORDING
from homewarden.services.recorder_group import ThreadRecorderGroup
from homewarden.services.runtime import Runtime
from homewarden.store.index import Index
from homewarden.store.lockfile import LOCK_NAME, DataDirLock
from homewarden.store.records import SegmentRecord
from homewarden.web.app import create_app
from homewarden.workers.camera_worker import (
    STATUS_INTERVAL,
    RecorderProcessPool,
    process_count,
    recorder_pool,
    split_cameras,
)
from tests.segment_files import require_bikes

#: Seconds a test waits for workers to come up (a spawned interpreter imports PyAV, NumPy,
#: SQLAlchemy...) and connect, on a loaded 2-core machine.
UP_TIMEOUT = 40.0


@pytest.fixture(autouse=True)
def _no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test only (the workers inherit this environment too)."""
    for key in list(os.environ):
        if key.upper().startswith("HOMEWARDEN_"):
            monkeypatch.delenv(key)


def _settings(data: Path, database_url: str, names: list[str], processes: int | None) -> Settings:
    bikes = require_bikes()
    cam = {"url": f"file:{bikes}", "loop": True, "segment_seconds": 2}
    return Settings(
        data_dir=data,
        database_url=database_url,
        api={"host": "127.0.0.1", "port": 0},
        cameras={name: cam for name in names},
        recorder={"processes": processes},
        # plaintext storage: these tests are about worker processes (sealed recording in
        # workers: tests/services/test_sealed_footage.py, test_sealed_live_dir.py)
        storage={"sealed": False},
    )


def _wait(what: str, ok: Callable[[], bool], timeout: float = UP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _recorder_children() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("recorder-")]


def _assert_index_and_disk_agree(index: Index, media: Path) -> None:
    on_disk = {p.relative_to(media).as_posix() for p in media.rglob("*.mp4")}
    assert on_disk == {s.path for s in index.segments()}
    assert not list(media.rglob("*.part"))


def _open_files(pid: int) -> set[Path]:
    """What process ``pid`` has open (``/proc/<pid>/fd``), skipping fds closed meanwhile."""
    fds = Path(f"/proc/{pid}/fd")
    files = set()
    for fd in os.listdir(fds):
        with contextlib.suppress(FileNotFoundError):
            files.add(Path(os.readlink(fds / fd)))
    return files


def _contiguous(segments: list[SegmentRecord]) -> bool:
    return all(abs(b.start - a.end) <= 1e-6 for a, b in itertools.pairwise(segments))


# -- pure parts ------------------------------------------------------------------------------


def test_cameras_are_dealt_round_robin_over_at_most_one_process_each() -> None:
    names = [f"c{i}" for i in range(5)]
    assert split_cameras(names, 2) == [["c0", "c2", "c4"], ["c1", "c3"]]
    assert split_cameras(names, 8) == [[n] for n in names]
    assert split_cameras(names, 1) == [names]
    assert split_cameras([], 4) == []


def test_processes_default_to_the_cpu_count_and_are_validated(tmp_path: Path) -> None:
    assert process_count(Settings(data_dir=tmp_path)) == (os.cpu_count() or 1)
    assert process_count(Settings(data_dir=tmp_path, recorder={"processes": 3})) == 3
    config = tmp_path / "bad.toml"
    config.write_text("[recorder]\nprocesses = 0\n")
    with pytest.raises(ConfigError, match=r"recorder\.processes"):
        load_settings(config)


def test_one_process_or_one_camera_records_on_threads(tmp_path: Path) -> None:
    index = Index(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        db = f"sqlite:///{tmp_path / 'db.sqlite'}"
        one_process = _settings(tmp_path, db, ["a", "b"], processes=1)
        one_camera = _settings(tmp_path, db, ["a"], processes=4)
        assert isinstance(recorder_pool(one_process, index), ThreadRecorderGroup)
        assert isinstance(recorder_pool(one_camera, index), ThreadRecorderGroup)
        pool = recorder_pool(_settings(tmp_path, db, ["a", "b", "c"], processes=8), index)
        assert isinstance(pool, RecorderProcessPool)
        assert pool.processes == 3  # never more processes than cameras
        assert sorted(itertools.chain(*(pool.cameras_of(i) for i in (1, 2, 3)))) == [
            "a",
            "b",
            "c",
        ]
    finally:
        index.close()


# -- real worker processes -------------------------------------------------------------------


def _api_cameras(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """The cameras as the running API shows them to the household's owner (API token)."""
    assert runtime.address is not None
    accounts = runtime.accounts
    owner = next(u for u in accounts.users(runtime.settings.household) if u.role == "owner")
    token, _ = accounts.create_token(owner.id, "test")
    request = urllib.request.Request(
        f"{runtime.address.url}/api/cameras", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return {c["name"]: c for c in json.load(resp)}


def test_workers_record_and_their_status_and_logs_reach_the_parent(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # before the pool reads the level its workers send at
    settings = _settings(tmp_path / "data", database_url, ["a", "b", "c"], processes=2)
    # homewarden run's composition: the API over two recorder worker processes.
    runtime = Runtime(settings, app_factory=create_app, recorder_pool_factory=recorder_pool)
    runtime.start()
    try:
        # (1) two worker processes, not this one, each holding the data dir lock with us.
        children = _recorder_children()
        assert sorted(p.name for p in children) == ["recorder-1", "recorder-2"]
        assert os.getpid() not in {p.pid for p in children}
        lock_file = (settings.data_dir / LOCK_NAME).resolve()
        for child in children:
            assert child.pid is not None
            assert lock_file in _open_files(child.pid)
        # (2) every camera's live status, sent by its worker, reaches the parent and the API.
        _wait(
            "every camera connected with a segment written",
            lambda: all(
                c["connected"] and (c["segments_written"] or 0) >= 1
                for c in _api_cameras(runtime).values()
            ),
        )
        cams = _api_cameras(runtime)
        assert sorted(cams) == ["a", "b", "c"]
        for cam in cams.values():
            assert cam["state"] == "connected"
            assert cam["fps"] == pytest.approx(25, rel=0.3)
            # Live: a status is up to STATUS_INTERVAL old, plus slack for a loaded machine.
            assert cam["last_packet_at"] == pytest.approx(time.time(), abs=STATUS_INTERVAL + 4)
        written = {name: runtime.statuses()[name].segments_written for name in cams}
    finally:
        # (3) stop: every worker finishes its segment in progress and exits.
        runtime.stop()
    assert not _recorder_children()
    DataDirLock.acquire(settings.data_dir).release()  # nobody holds the data dir any more
    # (4) the workers' log records reached the parent's log, named for their process.
    started = {
        (r.processName, r.getMessage())
        for r in caplog.records
        if "(recorder process" in r.getMessage() and r.getMessage().startswith("camera ")
    }
    assert started == {
        ("recorder-1", "camera a started (recorder process 1)"),
        ("recorder-1", "camera c started (recorder process 1)"),
        ("recorder-2", "camera b started (recorder process 2)"),
    }
    index = Index(database_url)
    try:
        _assert_index_and_disk_agree(index, settings.media_dir)
        for name in cams:
            segments = index.segments(name)
            assert len(segments) > written[name]  # the segment in progress was finished
            assert _contiguous(segments)
            assert not index.gaps(camera=name)
    finally:
        index.close()


def test_a_killed_worker_is_restarted_and_its_cameras_resume(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = _settings(tmp_path / "data", database_url, ["a", "b"], processes=2)
    settings.data_dir.mkdir(parents=True)
    index = Index(database_url)
    index.migrate()
    pool = recorder_pool(settings, index)
    assert isinstance(pool, RecorderProcessPool)
    assert pool.cameras_of(1) == ["a"]
    pool.start()
    try:
        _wait(
            "both cameras recording",
            lambda: all(
                st.state == "connected" and st.segments_written >= 1
                for st in pool.statuses().values()
            ),
        )
        victim = pool.pids()[1]
        assert victim is not None
        # (1) kill -9 worker 1 (camera a) in the middle of a segment.
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        _wait("camera a shown down", lambda: pool.statuses()["a"].state == "reconnecting", 10)
        down = pool.statuses()["a"]
        assert down.last_error == "recorder process was killed by SIGKILL"
        assert down.next_retry_at is not None
        assert pool.statuses()["b"].state == "connected"  # the other worker never noticed
        # (2) it is restarted (after 1 s of back-off) and camera a records again.
        _wait(
            "camera a recording again",
            lambda: (
                pool.statuses()["a"].state == "connected"
                and bool(index.segments("a", since=killed_at + 1.0))
            ),
        )
        restarted = pool.pids()[1]
        assert restarted is not None
        assert restarted != victim
        assert pool.restarts == 1
    finally:
        pool.stop(15.0)
    try:
        assert not _recorder_children()
        assert any(
            "recorder process 1" in r.getMessage() and "killed by SIGKILL" in r.getMessage()
            for r in caplog.records
            if r.levelno == logging.ERROR
        )
        _assert_index_and_disk_agree(index, settings.media_dir)
        # (3) camera a: what was written before the kill is kept, the outage is one gap from
        # the end of that footage to the restarted recorder's first frame.
        segments = index.segments("a")
        before = [s for s in segments if s.start < killed_at]
        after = [s for s in segments if s.start >= killed_at]
        assert before
        assert after
        gaps = index.gaps(camera="a")
        assert len(gaps) == 1
        gap = gaps[0]
        assert gap.end is not None
        assert gap.reason == NOT_RECORDING  # the restarted recorder's own account of it
        assert gap.start == pytest.approx(before[-1].end, abs=1e-3)
        assert gap.end == pytest.approx(after[0].start, abs=1e-3)
        assert gap.end - gap.start < 15.0
        assert _contiguous(before)
        assert _contiguous(after)
        # (4) camera b, in the other worker, recorded on without a hole.
        assert _contiguous(index.segments("b"))
        assert not index.gaps(camera="b")
    finally:
        index.close()


#: A recorder's main process for the orphan test: locks the data dir, starts two workers,
#: prints their pids once both cameras are connected, then waits to be killed.
_PARENT = """
import sys, time
from pathlib import Path
from homewarden.config import Settings
from homewarden.store.index import Index
from homewarden.store.lockfile import DataDirLock
from homewarden.workers.camera_worker import recorder_pool

data, db, footage = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
cam = {"url": f"file:{footage}", "loop": True, "segment_seconds": 2}
settings = Settings(  # plaintext storage: this is about a killed parent's workers
    data_dir=data,
    database_url=db,
    cameras={"a": cam, "b": cam},
    recorder={"processes": 2},
    storage={"sealed": False},
)
data.mkdir(parents=True)
lock = DataDirLock.acquire(data)
index = Index(db)
index.migrate()
pool = recorder_pool(settings, index, lock=lock)
pool.start()
while not all(st.state == "connected" for st in pool.statuses().values()):
    time.sleep(0.1)
print(*pool.pids().values(), flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_of_a_killed_parent_finish_their_segments_holding_the_lock(
    tmp_path: Path, database_url: str
) -> None:
    data = tmp_path / "data"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(data), database_url, str(require_bikes())],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2, "the parent did not start two workers"
        time.sleep(2.5)  # at least one cut, and a segment in progress
    finally:
        parent.kill()  # kill -9: no stop, no release
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()
    # (1) The orphaned workers still hold the data dir: no new recorder may start on it and
    # reconcile the segments they are finishing.
    with pytest.raises(StorageError, match="has exited, its recorder processes still hold"):
        DataDirLock.acquire(data).release()
    # (2) They notice their parent is gone, finish their segments and exit.
    _wait("the orphaned workers to exit", lambda: not any(_running(p) for p in workers), 20)
    DataDirLock.acquire(data).release()
    index = Index(database_url)
    try:
        _assert_index_and_disk_agree(index, data / "media")
        for name in ("a", "b"):
            segments = index.segments(name)
            assert len(segments) >= 2
            assert _contiguous(segments)
            assert not index.gaps(camera=name)
    finally:
        index.close()


# -- cameras changed while the workers run ---------------------------------------------------


def _one_worker_pool(settings: Settings, index: Index) -> RecorderProcessPool:
    """Every camera of ``settings`` in one worker process (``processes = 1``), which an
    update can only change in place or restart."""
    return RecorderProcessPool(
        {n: c for n, c in settings.cameras.items() if c.enabled},
        processes=1,
        db_url=settings.db_url,
        media_dir=settings.media_dir,
        snapshot_dir=settings.snapshot_dir,
        models_dir=settings.cache_dir / "models",
        index=index,
        status_interval=0.2,
    )


def _with_cameras(settings: Settings, cameras: dict[str, Any]) -> Settings:
    """``settings`` with only ``cameras`` (name -> raw camera settings) configured."""
    return Settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        cameras=cameras,
        storage=settings.storage,
    )


def test_adding_a_camera_to_a_worker_does_not_restart_its_other_cameras(
    tmp_path: Path, database_url: str
) -> None:
    settings = _settings(tmp_path / "data", database_url, ["a"], processes=1)
    settings.data_dir.mkdir(parents=True)
    index = Index(database_url)
    index.migrate()
    pool = _one_worker_pool(settings, index)
    pool.start()
    try:
        _wait(
            "camera a recording",
            lambda: (
                pool.statuses()["a"].state == "connected"
                and pool.statuses()["a"].segments_written >= 1
            ),
        )
        pid = pool.pids()[1]
        since = pool.statuses()["a"].connected_since
        assert pid is not None
        assert since is not None
        raw = settings.cameras["a"].model_dump()
        pool.update(_with_cameras(settings, {"a": raw, "b": raw}))
        assert pool.cameras_of(1) == ["a"]  # until the worker has taken b on
        _wait("camera b recording", lambda: bool(index.segments("b")))
        added_at = index.segments("b")[0].start
        _wait(
            "camera a records on past b's start",
            lambda: any(s.start > added_at + 2.0 for s in index.segments("a")),
        )
        # (1) the same process took b on: a's recorder kept its connection.
        assert pool.pids()[1] == pid
        assert pool.cameras_of(1) == ["a", "b"]
        assert pool.statuses()["a"].connected_since == since
        assert pool.statuses()["a"].state == "connected"
        assert pool.statuses()["b"].state == "connected"
        assert pool.restarts == 0
    finally:
        pool.stop(15.0)
    try:
        _assert_index_and_disk_agree(index, settings.media_dir)
        # (2) a has no hole: no gap, its segments back to back across the update.
        assert not index.gaps(camera="a")
        assert _contiguous(index.segments("a"))
        assert not index.gaps(camera="b")
        assert _contiguous(index.segments("b"))
    finally:
        index.close()


@pytest.mark.parametrize("how", ["removed", "disabled"])
def test_removing_a_camera_from_a_worker_does_not_restart_its_other_cameras(
    how: str, tmp_path: Path, database_url: str
) -> None:
    settings = _settings(tmp_path / "data", database_url, ["a", "b"], processes=1)
    settings.data_dir.mkdir(parents=True)
    index = Index(database_url)
    index.migrate()
    pool = _one_worker_pool(settings, index)
    pool.start()
    try:
        _wait(
            "both cameras recording",
            lambda: all(
                st.state == "connected" and st.segments_written >= 1
                for st in pool.statuses().values()
            ),
        )
        pid = pool.pids()[1]
        since = pool.statuses()["a"].connected_since
        assert pid is not None
        assert since is not None
        raw = settings.cameras["a"].model_dump()
        gone = {"b": {**raw, "enabled": False}} if how == "disabled" else {}
        asked_at = time.time()
        pool.update(_with_cameras(settings, {"a": raw, **gone}))
        assert "b" not in pool.statuses()  # dropped at once
        _wait("camera b stopped", lambda: pool.cameras_of(1) == ["a"])
        stopped_at = time.time()
        # (1) b's recorder finished its segment in progress: indexed, no .part left.
        b_segments = index.segments("b")
        assert b_segments[-1].end >= asked_at - 2.5  # the last one reaches the stop
        assert not list((settings.media_dir / "b").rglob("*.part"))
        _wait(
            "camera a records on",
            lambda: any(s.start > stopped_at + 2.0 for s in index.segments("a")),
        )
        assert len(index.segments("b")) == len(b_segments)  # nothing of b since
        assert "b" not in pool.statuses()
        # (2) a's worker and recorder went on untouched.
        assert pool.pids()[1] == pid
        assert pool.statuses()["a"].connected_since == since
        assert pool.statuses()["a"].state == "connected"
        assert pool.restarts == 0
    finally:
        pool.stop(15.0)
    try:
        _assert_index_and_disk_agree(index, settings.media_dir)
        assert not index.gaps(camera="a")
        assert _contiguous(index.segments("a"))
        assert _contiguous(index.segments("b"))
    finally:
        index.close()


def test_a_worker_that_does_not_apply_an_update_in_time_is_restarted_with_it(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = _settings(tmp_path / "data", database_url, ["a"], processes=1)
    settings.data_dir.mkdir(parents=True)
    index = Index(database_url)
    index.migrate()
    pool = RecorderProcessPool(
        {"a": settings.cameras["a"]},
        processes=1,
        db_url=settings.db_url,
        media_dir=settings.media_dir,
        snapshot_dir=settings.snapshot_dir,
        models_dir=settings.cache_dir / "models",
        index=index,
        status_interval=0.2,
        update_timeout=2.0,
    )
    pool.start()
    frozen: int | None = None
    try:
        _wait("camera a recording", lambda: pool.statuses()["a"].segments_written >= 1)
        frozen = pool.pids()[1]
        assert frozen is not None
        # (1) a worker that cannot answer (stopped, as if hung) is sent camera b.
        os.kill(frozen, signal.SIGSTOP)
        raw = settings.cameras["a"].model_dump()
        pool.update(_with_cameras(settings, {"a": raw, "b": raw}))
        # (2) it is given up on, killed once it does not stop either, and started again
        # with its new share: both cameras record in a new process.
        _wait(
            "both cameras recording in a new process",
            lambda: (
                pool.pids()[1] not in (None, frozen)
                and bool(index.segments("b"))
                and all(st.state == "connected" for st in pool.statuses().values())
            ),
            UP_TIMEOUT + 20.0,
        )
        assert pool.cameras_of(1) == ["a", "b"]
    finally:
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        pool.stop(15.0)
    try:
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("did not apply its new cameras in time" in m for m in messages)
        assert any("did not stop in time; killing it" in m for m in messages)
        _assert_index_and_disk_agree(index, settings.media_dir)  # a's cut segment repaired
        assert [g.reason for g in index.gaps(camera="a")] == [NOT_RECORDING]
    finally:
        index.close()
