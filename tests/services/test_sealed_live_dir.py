"""The segment being recorded under ``storage.sealed`` lives on the memory file system only.

Issue 6's attacker holds the whole data dir: before this change the segment in progress was a
plaintext ``<start>.mp4.part`` in the media dir for its ~10 s (and after a crash until the
next start), so a scan *during* recording found ``ftyp``/``moof`` boxes. Now the recorder
writes it to ``/dev/shm/homewarden-<uid>-<hash>/live/<camera>/`` (0700) and seals it into the
media dir when it closes. Real footage (``bikes.mp4`` as a paced ``file:`` camera), real
recorders (threads, and worker processes under a real :class:`Runtime`), a real ``tmpfs``
mounted small for the full-memory fault (needs root; skipped without), on SQLite and
PostgreSQL where the index is touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from homewarden.config import CameraSettings, Settings
from homewarden.crypto.household_keys import (
    HouseholdKeyPair,
    HouseholdPublicKey,
    KeyId,
    generate_household_key,
)
from homewarden.errors import StorageError
from homewarden.services.audit import AuditLog
from homewarden.services.live import LiveService
from homewarden.services.queries import Queries
from homewarden.services.reconcile import reconcile
from homewarden.services.recorder import (
    LIVE_DIR,
    CameraRecorder,
    live_parts_dir,
    segment_relpath,
)
from homewarden.services.runtime import Runtime
from homewarden.services.sealed_footage import SEALED_SUFFIX, SegmentSealing
from homewarden.store import memory_dir
from homewarden.store.index import Index
from homewarden.store.memory_dir import deployment_dir, memory_root, private_dir
from tests.services.test_sealed_footage import FOOTAGE, plaintext_markers, scan

pytestmark = pytest.mark.skipif(memory_root() is None, reason="no /dev/shm on tmpfs here")


class _Keys:
    """A household public key made for the test (the recorder holds no secret)."""

    def __init__(self) -> None:
        self.pair: HouseholdKeyPair = generate_household_key()

    def recording_key(self, household: str) -> tuple[KeyId, HouseholdPublicKey]:
        return self.pair.key_id, self.pair.public


def _camera(**over: object) -> CameraSettings:
    return CameraSettings.model_validate(
        {"url": f"file:{FOOTAGE}", "loop": True, "segment_seconds": 2, **over}
    )


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _parts(directory: Path | None) -> list[Path]:
    if directory is None or not directory.is_dir():
        return []
    return sorted(directory.glob("*.mp4.part"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir; its deployment directory on the memory file system is removed after."""
    data = tmp_path / "data"
    (data / "media").mkdir(parents=True)
    yield data
    root = memory_root()
    if root is not None:
        shutil.rmtree(deployment_dir(root, data / "media"), ignore_errors=True)


def _recorder(
    name: str, data: Path, index: Index, keys: _Keys | None = None, **kw: object
) -> CameraRecorder:
    return CameraRecorder(
        name,
        _camera(),
        data / "media",
        data / "snapshots",
        index,
        sealing=SegmentSealing("home", keys or _Keys()),
        **kw,  # type: ignore[arg-type]
    )


# -- the attacker's scan, while recording ----------------------------------------------------


def test_no_plaintext_frame_in_the_data_dir_while_a_sealed_recorder_records(
    data_dir: Path, index: Index
) -> None:
    rec = _recorder("bikes", data_dir, index)
    root = memory_root()
    assert root is not None
    assert rec.memory_dir == root
    rec.start()
    scans = parts_seen = 0
    try:
        deadline = time.monotonic() + 7.0
        while time.monotonic() < deadline:
            # the scan sees the data dir as an attacker with the disk would, mid-segment
            assert scan(data_dir) == {}
            assert not list(data_dir.rglob("*.mp4*"))
            scans += 1
            parts = _parts(live_parts_dir(root, data_dir / "media", "bikes", create=False))
            for part in parts:
                try:
                    head = part.read_bytes()
                except FileNotFoundError:
                    continue  # sealed and deleted between listing and reading
                if "ftyp" in plaintext_markers(head):
                    parts_seen += 1  # the plaintext in progress is there, in memory only
            time.sleep(0.2)
    finally:
        assert rec.stop(timeout=20)
    # the scans ran while a plaintext segment was being written (they could have failed)
    assert scans >= 10
    assert parts_seen >= 5
    segs = index.segments("bikes")
    assert len(segs) >= 2
    assert all(s.sealed and s.path.endswith(SEALED_SUFFIX) for s in segs)
    assert scan(data_dir) == {}
    # stopped: nothing left on the memory file system, not even the deployment's directory
    assert not deployment_dir(root, data_dir / "media").exists()


def test_the_memory_directories_are_private(data_dir: Path, index: Index) -> None:
    rec = _recorder("bikes", data_dir, index)
    rec.start()
    try:
        root = memory_root()
        assert root is not None
        _wait(
            lambda: _parts(live_parts_dir(root, data_dir / "media", "bikes", create=False)),
            15,
            "a segment in progress",
        )
        top = deployment_dir(root, data_dir / "media")
        for level in (top, top / LIVE_DIR, top / LIVE_DIR / "bikes"):
            st = level.lstat()
            assert st.st_uid == os.getuid()
            assert st.st_mode & 0o777 == 0o700, (level, oct(st.st_mode))
    finally:
        assert rec.stop(timeout=20)


# -- the live view follows the segment in progress on the memory file system ---------------------


def test_the_live_view_streams_the_sealed_segment_in_progress_from_memory(
    data_dir: Path, index: Index, database_url: str
) -> None:
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        storage={"sealed": True},
        cameras={"bikes": _camera().model_dump()},
    )
    keys = _Keys()  # the viewer's session holds the household's current key
    rec = _recorder("bikes", data_dir, index, keys)
    rec.start()
    try:
        with AuditLog.open(database_url, settings.keys_dir) as audit:
            live = LiveService(settings, index, audit=audit, current_keys=keys)
            inits: list[str] = []
            fragments = 0
            feed = live.feed("bikes")  # what live.stream() and the WebSocket follow
            deadline = time.monotonic() + 20.0
            try:
                while len(inits) < 3 and time.monotonic() < deadline:
                    for chunk in feed.poll():
                        if chunk.kind == "init":
                            inits.append(chunk.segment)
                        else:
                            fragments += 1
                    time.sleep(0.05)
            finally:
                feed.close()
            # it followed one segment in progress into the next ones (each sealed as it closed)
            assert len(inits) >= 3, inits
            assert fragments >= 2
            _wait(lambda: live.newest_part("bikes"), 5, "a segment in progress")  # not sealing
            found = live.newest_part("bikes")
            assert found is not None
            root = memory_root()
            assert root is not None
            assert found[0].parent == live_parts_dir(
                root, data_dir / "media", "bikes", create=False
            )
            image, at = live.latest_jpeg("bikes", lambda household, key_id: keys.pair)
            assert image.startswith(b"\xff\xd8\xff")
            assert at > time.time() - 30
    finally:
        assert rec.stop(timeout=20)
    assert scan(data_dir) == {}


def test_the_live_view_reads_only_a_private_memory_directory(
    data_dir: Path, index: Index, database_url: str, recorded_part: bytes
) -> None:
    # Another user took the deployment's name first: the live view shows nothing from it.
    root = memory_root()
    assert root is not None
    settings = Settings(
        data_dir=data_dir, database_url=database_url, storage={"sealed": True},
        cameras={"bikes": _camera().model_dump()},
    )  # fmt: skip
    media = data_dir / "media"
    parts = live_parts_dir(root, media, "bikes", create=True)
    assert parts is not None
    (parts / f"{time.time() - 1:.3f}.mp4.part").write_bytes(recorded_part)
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        live = LiveService(settings, index, audit=audit)
        assert live.newest_part("bikes") is not None
        os.chmod(deployment_dir(root, media), 0o755)  # tightened again: still ours
        assert live.newest_part("bikes") is not None
        assert deployment_dir(root, media).stat().st_mode & 0o777 == 0o700
        if os.getuid() != 0:
            return  # a foreign owner needs root to arrange
        os.chown(deployment_dir(root, media), 65534, 65534)
        assert live.newest_part("bikes") is None


@pytest.fixture(scope="module")
def recorded_part(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real fragmented-MP4 segment of ``bikes.mp4`` as the recorder writes it."""
    from tests.media.recorded import cut_segments

    parts = cut_segments(FOOTAGE, tmp_path_factory.mktemp("seg"), 4.0, 1_700_000_000.0)
    return parts[0][0].read_bytes()


# -- a full memory file system is a gap, not a crash --------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real ``tmpfs`` of 16 KiB (smaller than one keyframe of ``bikes.mp4``, ~25 KB)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k,mode=1777", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_memory_file_system_is_a_gap_and_the_recorder_goes_on(
    data_dir: Path, index: Index, small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = _recorder("bikes", data_dir, index, memory_dir=small_tmpfs)
    with caplog.at_level(logging.WARNING, logger="homewarden.services.recorder"):
        rec.start()
        try:
            _wait(lambda: index.open_gaps("bikes"), 15, "a gap for the full memory")
            gap = index.open_gaps("bikes")[0]
            assert gap.reason == "storage"
            assert "memory file system full" in (gap.detail or ""), gap.detail
            status = rec.status()
            assert status.state == "reconnecting"
            assert "memory file system full" in (status.last_error or "")
            assert index.segments("bikes") == []
            assert scan(data_dir) == {}  # nothing went to the disk instead
            # room again: the recorder records on, and the gap closes where footage resumes
            subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
            _wait(lambda: len(index.segments("bikes")) >= 1, 40, "a segment after the fault")
            assert rec.status().state == "connected"
        finally:
            assert rec.stop(timeout=20)
    assert index.open_gaps("bikes") == []
    assert all(s.sealed for s in index.segments("bikes"))
    assert any("memory file system full" in r.getMessage() for r in caplog.records)
    assert scan(data_dir) == {}


# -- without a usable memory file system: the media dir, said once -------------------------------


def test_without_a_memory_file_system_the_part_falls_back_to_the_media_dir(
    data_dir: Path,
    index: Index,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_disk = data_dir / "not-shm"
    on_disk.mkdir()
    if memory_dir.is_memory_fs(on_disk):
        pytest.skip("the test's tmp dir is itself on tmpfs")
    monkeypatch.setattr(memory_dir, "SHM_DIR", on_disk)  # /dev/shm "is" a plain directory
    monkeypatch.delenv(memory_dir.RUNTIME_DIR_ENV, raising=False)
    assert memory_root() is None
    with caplog.at_level(logging.WARNING, logger="homewarden.services.recorder"):
        rec = _recorder("bikes", data_dir, index)
        _recorder("other", data_dir, index)  # a second camera: no second warning
    warned = [r for r in caplog.records if "no memory file system" in r.getMessage()]
    assert len(warned) == 1
    assert "media dir" in warned[0].getMessage()
    assert rec.memory_dir is None
    rec.start()
    try:
        _wait(lambda: list((data_dir / "media").rglob("*.mp4.part")), 15, "a .part on disk")
        _wait(lambda: len(index.segments("bikes")) >= 1, 20, "a sealed segment")
    finally:
        assert rec.stop(timeout=20)
    assert all(s.sealed for s in index.segments("bikes"))
    assert not list((data_dir / "media").rglob("*.mp4*"))  # sealed and gone once closed
    assert not list(on_disk.iterdir())


def test_health_says_when_the_segment_in_progress_would_be_on_disk(
    data_dir: Path, index: Index, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        data_dir=data_dir, database_url=database_url, storage={"sealed": True},
        cameras={"bikes": _camera().model_dump()},
    )  # fmt: skip
    said = "the segment being recorded is plaintext in the media dir"
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        queries = Queries(index, settings, audit=audit)
        assert not [r for r in queries.health().reasons if said in r]
        on_disk = data_dir / "not-shm"
        on_disk.mkdir()
        if memory_dir.is_memory_fs(on_disk):
            pytest.skip("the test's tmp dir is itself on tmpfs")
        monkeypatch.setattr(memory_dir, "SHM_DIR", on_disk)
        monkeypatch.delenv(memory_dir.RUNTIME_DIR_ENV, raising=False)
        health = queries.health()
        assert health.status == "degraded"
        assert [r for r in health.reasons if said in r]
        plain = Queries(
            index,
            settings.model_copy(
                update={"storage": settings.storage.model_copy(update={"sealed": False})}
            ),
            audit=audit,
        )
        assert not [r for r in plain.health().reasons if said in r]


def test_a_squatted_memory_directory_makes_the_recorder_fall_back(
    data_dir: Path, index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    root = memory_root()
    assert root is not None
    target = data_dir / "elsewhere"
    target.mkdir()
    squat = deployment_dir(root, data_dir / "media")
    squat.symlink_to(target)  # someone else's link where the deployment's directory goes
    try:
        with caplog.at_level(logging.WARNING, logger="homewarden.services.recorder"):
            rec = _recorder("bikes", data_dir, index)
        assert rec.memory_dir is None
        assert any("symlink" in r.getMessage() for r in caplog.records)
        assert not list(target.iterdir())  # nothing was made through the link
    finally:
        squat.unlink()


def test_private_dir_refuses_what_it_does_not_own(tmp_path: Path) -> None:
    made = private_dir(tmp_path, "a", "b", create=True)
    assert made == tmp_path / "a" / "b"
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert private_dir(tmp_path, "a", "c", create=False) is None
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match="not a directory"):
        private_dir(tmp_path, "file", create=True)
    if os.getuid() == 0:
        os.chown(tmp_path / "a", 65534, 65534)
        with pytest.raises(StorageError, match="belongs to user 65534"):
            private_dir(tmp_path, "a", "b", create=False)


# -- start-up reconciliation ---------------------------------------------------------------------


def test_reconcile_deletes_a_segment_in_progress_left_in_memory(
    data_dir: Path, index: Index, recorded_part: bytes
) -> None:
    root = memory_root()
    assert root is not None
    media = data_dir / "media"
    left = {}
    for camera in ("east", "west"):
        parts = live_parts_dir(root, media, camera, create=True)
        assert parts is not None
        left[camera] = parts / (
            segment_relpath(camera, 1_764_435_600.0).rpartition("/")[2] + ".part"
        )
        left[camera].write_bytes(recorded_part)  # playable: it would be adopted from the disk
    # a worker restarted for "east" only: "west" may be recording in another process
    report = reconcile(index, media, cameras=["east"], sealed=True)
    assert not left["east"].exists()
    assert left["west"].exists()
    assert report.parts_removed == 1
    assert report.parts_recovered == 0
    assert index.segments("east") == []
    # the whole deployment (role all, at start): the rest goes, sealing on or off
    report = reconcile(index, media, sealed=False)
    assert not left["west"].exists()
    assert report.parts_removed == 1
    assert index.segments() == []


def test_sealing_off_keeps_the_part_in_the_media_dir(data_dir: Path, index: Index) -> None:
    rec = CameraRecorder("bikes", _camera(), data_dir / "media", data_dir / "snapshots", index)
    assert rec.memory_dir is None
    rec.start()
    try:
        _wait(lambda: list((data_dir / "media").rglob("*.mp4.part")), 15, "a .part on disk")
    finally:
        assert rec.stop(timeout=20)
    root = memory_root()
    assert root is not None
    assert not deployment_dir(root, data_dir / "media").exists()
    assert index.segments("bikes")
    assert not any(s.sealed for s in index.segments("bikes"))


# -- worker processes: the web process finds their segments in progress ---------------------


def test_worker_processes_write_in_memory_where_the_live_view_finds_it(
    tmp_path: Path, database_url: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage={"sealed": True},
        recorder={"processes": 2},
        cameras={name: _camera().model_dump() for name in ("east", "west")},
    )
    rt = Runtime(settings)
    rt.start()
    root = memory_root()
    assert root is not None
    media = settings.media_dir
    try:
        index = rt.index
        with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
            live = LiveService(settings, index, audit=audit)
            for camera in ("east", "west"):

                def in_progress(camera: str = camera) -> object:
                    return live.newest_part(camera, fresh=True)

                _wait(in_progress, 30, f"{camera} live")
                found = live.newest_part(camera)
                assert found is not None
                assert found[0].parent == live_parts_dir(root, media, camera, create=False)
                assert scan(settings.data_dir) == {}
        _wait(
            lambda: all(len(index.segments(c)) >= 2 for c in ("east", "west")),
            40,
            "sealed segments of both cameras",
        )
        assert scan(settings.data_dir) == {}
    finally:
        rt.stop()
    shutil.rmtree(deployment_dir(root, media), ignore_errors=True)
    assert scan(settings.data_dir) == {}
