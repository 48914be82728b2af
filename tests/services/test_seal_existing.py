"""Sealing footage recorded before ``storage.sealed`` (issue 6: "a one-off command encrypts
footage recorded before this change, ... resumable"), on SQLite and PostgreSQL.

Real footage: bikes.mp4 cut at its keyframes into segments as the recorder writes them
(``tests.package_footage.record_bikes``), indexed as plaintext, for two cameras of two
households, and event snapshots that are real JPEG frames of it. After a run the attacker's
scan of the whole data dir (MP4 boxes, JPEG markers) finds nothing, and the owner, signed in
with the password, opens every sealed segment and snapshot back to the original bytes.
Runs are killed at each durable step and finished by the next run; segments deleted
meanwhile (as retention does) are skipped; a real full disk (a small tmpfs) stops the run
and keeps the plaintext.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.errors import ConfigError, NotFoundError, StorageError
from homewarden.media.frames import to_jpeg
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.seal_existing import (
    DiskFullError,
    SealExisting,
    SealProgress,
    SealReport,
    _run_lock,
)
from homewarden.services.sealed_footage import (
    SEALED_SUFFIX,
    SessionKeys,
    open_sealed_segment,
    open_sealed_snapshot,
)
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord
from tests.package_footage import T0, record_bikes
from tests.segment_files import require_bikes
from tests.services.test_sealed_footage import scan
from tests.web.helpers import PASSWORD

OPERATOR = Actor(ActorKind.LOCAL_OPERATOR, "cli:test")
HOST = "192.0.2.10"
CAMERAS = {"porch": "home", "barn": "farm"}


class _Killed(BaseException):
    """Stands for a ``kill -9`` at a checkpoint (not an Exception: nothing may catch it)."""


@dataclass
class Home:
    settings: Settings
    index: Index
    audit: AuditLog
    ring: KeyRing
    session: str
    plain: dict[str, bytes]  # plaintext path -> original bytes
    snapshots: dict[int, bytes]  # event id -> original JPEG
    index_bytes: int = 0

    def service(self, **kw: object) -> SealExisting:
        return SealExisting(self.index, self.settings, self.audit, **kw)  # type: ignore[arg-type]

    def run(self, **kw: object) -> SealReport:
        return self.service(**kw).run(OPERATOR)

    def segments(self) -> list[SegmentRecord]:
        return self.index.segments()

    def assert_all_sealed_and_playable(self) -> None:
        """No plaintext anywhere; every row sealed, one sealed file each, opening (as the
        signed-in owner of ``home``) to the original bytes; every snapshot likewise."""
        data = self.settings.data_dir
        media = self.settings.media_dir
        assert scan(data) == {}
        assert not list(data.rglob("*.part"))
        segs = self.segments()
        assert segs
        assert all(s.sealed and s.path.endswith(SEALED_SUFFIX) for s in segs)
        assert sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file()) == (
            sorted(s.path for s in segs)
        )  # one sealed file per segment, nothing else
        keys = SessionKeys(self.ring, self.session)
        for seg in segs:
            assert seg.key_id == self.ring.recording_key(CAMERAS[seg.camera])[0]
            assert seg.bytes == (media / seg.path).stat().st_size
            if CAMERAS[seg.camera] == "home":
                original = self.plain[seg.path.removesuffix(SEALED_SUFFIX) + ".mp4"]
                assert open_sealed_segment(media, seg, "home", keys) == original
        for event_id, jpeg in self.snapshots.items():
            ev = self.index.event(event_id)
            assert ev.snapshot_path == f"porch/{event_id}.jpg{SEALED_SUFFIX}"
            got = open_sealed_snapshot(
                self.settings.snapshot_dir, ev.snapshot_path, "porch", "home", keys
            )
            assert got == jpeg


def _jpegs(count: int) -> list[bytes]:
    with av.open(str(require_bikes())) as src:
        frames = [to_jpeg(f) for _, f in zip(range(count), src.decode(video=0), strict=False)]
    assert all(j.startswith(b"\xff\xd8\xff") for j in frames)
    return frames


@pytest.fixture
def home(index: Index, database_url: str, tmp_path: Path) -> Iterator[Home]:
    yield from _home(index, database_url, tmp_path / "data")


def _home(index: Index, database_url: str, data: Path) -> Iterator[Home]:
    """Plaintext footage of ``porch`` (household ``home``, whose owner has signed in) and
    ``barn`` (``farm``), two plaintext snapshots of ``porch``, ``storage.sealed`` on."""
    settings = Settings(
        data_dir=data,
        database_url=database_url,
        storage={"sealed": True},
        cameras={
            name: {"url": "file:/dev/null", "household": household}
            for name, household in CAMERAS.items()
        },
    )
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        accounts = AccountService(index, audit, settings)
        ring = attach(accounts, index, audit, settings.keys_dir, params=ARGON2ID_FLOOR)
        accounts.ensure_households()
        secret = accounts.bootstrap_owner()
        assert secret is not None
        accounts.complete_setup(secret, PASSWORD)
        session = accounts.login("owner", PASSWORD, HOST).session.id
        plain: dict[str, bytes] = {}
        for camera in CAMERAS:
            for seg in record_bikes(data, camera, T0):
                index.add_segment(seg)
                plain[seg.path] = (settings.media_dir / seg.path).read_bytes()
        snapshots: dict[int, bytes] = {}
        for i, jpeg in enumerate(_jpegs(2)):
            event_id = index.open_event("porch", T0 + 2 * i, "motion", 0.5, [])
            rel = f"porch/{event_id}.jpg"
            (settings.snapshot_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings.snapshot_dir / rel).write_bytes(jpeg)
            index.update_event(event_id, end=T0 + 2 * i + 1, snapshot_path=rel)
            snapshots[event_id] = jpeg
        # the attacker sees the footage before the run
        assert set(scan(data)) >= {f"media/{p}" for p in plain} | {
            f"snapshots/porch/{e}.jpg" for e in snapshots
        }
        yield Home(settings, index, audit, ring, session, plain, snapshots)


def _seal_entries(audit: AuditLog, *, starts: bool = False) -> list[tuple[str, str]]:
    """(household, reason) of the runs' summary entries, or (``starts``) of their start
    entries."""
    return [
        (e.subject.household, e.reason)
        for e in (audit.entry(i) for i in range(audit.size()))
        if e.action is AuditTag.FOOTAGE_EXISTING_SEAL and ("sealing starts" in e.reason) == starts
    ]


def test_old_footage_and_snapshots_are_sealed_and_the_owner_still_plays_them(home: Home) -> None:
    media = home.settings.media_dir
    home.index_bytes = sum(s.bytes for s in home.segments())
    # a truncated segment is sealed as the bytes it holds (sealing does not parse)
    cut = next(p for p in sorted(home.plain) if p.startswith("barn/"))
    home.plain[cut] = home.plain[cut][: len(home.plain[cut]) // 2]
    (media / cut).write_bytes(home.plain[cut])
    # a clip composed for playback before sealing was on, in the clip cache
    clips = home.settings.cache_dir / "clips"
    clips.mkdir(parents=True)
    (clips / "porch-0123.mp4").write_bytes(next(iter(home.plain.values())))
    seen: list[SealProgress] = []

    report = home.service().run(OPERATOR, seen.append)

    total = sum(len(b) for b in home.plain.values())
    assert (report.segments, report.bytes, report.snapshots) == (len(home.plain), total, 2)
    assert (report.skipped, report.failed, report.plaintext_left) == (0, 0, 0)
    assert report.clips_removed == 1
    assert report.summary().startswith(
        f"sealed {len(home.plain)} segments, {total} bytes, 2 snapshots, skipped 0"
    )
    segs = [p for p in seen if p.kind == "segments"]
    assert [p.done for p in segs] == list(range(1, len(home.plain) + 1))
    assert segs[-1].bytes_done == segs[-1].bytes_total == home.index_bytes
    assert [p.done for p in seen if p.kind == "snapshots"] == [1, 2]
    home.assert_all_sealed_and_playable()
    entries = _seal_entries(home.audit)
    assert [h for h, _ in entries] == ["farm", "home"]  # one per household, its own counts
    assert "6 segments" in entries[1][1]
    assert "2 snapshots" in entries[1][1]

    again = home.run()  # nothing left: a no-op, still audited
    assert (again.segments, again.snapshots, again.skipped) == (0, 0, 0)
    assert "nothing left" in _seal_entries(home.audit)[-1][1]
    home.assert_all_sealed_and_playable()


def test_a_run_killed_midway_left_its_start_audit_entry(home: Home) -> None:
    # The fault: the only entry came at the end, so a run killed with SIGKILL midway had
    # sealed segments no audit entry mentioned. What was durable at the kill is what counts
    # (in-process the hook's BaseException still lets the run write its "stopped" summary).
    order = [s.path for s in sorted(home.segments(), key=lambda s: s.id)]
    victim = order[1].removesuffix(".mp4") + SEALED_SUFFIX
    at_kill: list[tuple[str, str]] = []

    def kill(at: str, path: str) -> None:
        if at == "done" and path == victim:  # one segment sealed and committed already
            at_kill.extend(_seal_entries(home.audit, starts=True) + _seal_entries(home.audit))
            raise _Killed

    with pytest.raises(_Killed):
        home.run(checkpoint=kill)
    households = {h for h, _ in at_kill}
    assert households == {"home", "farm"}  # a start entry each, no summary yet
    assert all("sealing starts" in reason for _, reason in at_kill)
    per_household = {
        h: sum(1 for s in home.segments() if CAMERAS[s.camera] == h) for h in households
    }
    for household, reason in at_kill:
        assert f"{per_household[household]} segments" in reason
    assert dict(at_kill)["home"].endswith("2 snapshots to seal")
    assert dict(at_kill)["farm"].endswith("0 snapshots to seal")


@pytest.mark.parametrize("step", ["sealed", "committed", "done"])
def test_a_run_killed_at_any_step_is_finished_by_the_next(home: Home, step: str) -> None:
    media = home.settings.media_dir
    order = [s.path for s in sorted(home.segments(), key=lambda s: s.id)]
    victim = order[2].removesuffix(".mp4") + SEALED_SUFFIX
    # a run killed while writing left a sealed .part of a later segment
    part = media / (order[4].removesuffix(".mp4") + SEALED_SUFFIX + ".part")
    part.write_bytes(b"HWSEAL" + bytes(100))

    def kill(at: str, path: str) -> None:
        if at == step and path == victim:
            raise _Killed

    with pytest.raises(_Killed):
        home.run(checkpoint=kill)
    row = home.index.segment_by_path(victim if step != "sealed" else order[2])
    assert row is not None  # the row names the plaintext (before commit) or the sealed file
    assert (media / victim).exists()
    if step == "committed":
        assert (media / order[2]).exists()  # sealed and committed, plaintext not yet deleted

    report = home.run()

    # two were done; the third too once its row was committed, else it is sealed again,
    # over the sealed file the killed run left
    assert report.segments == len(order) - (2 if step == "sealed" else 3)
    assert report.leftovers_removed == (1 if step == "committed" else 0)
    assert report.snapshots == 2
    assert len(home.segments()) == len(order)  # no segment lost or indexed twice
    home.assert_all_sealed_and_playable()


@pytest.mark.parametrize("step", ["sealed", "committed", "done"])
def test_a_run_killed_sealing_a_snapshot_is_finished_by_the_next(home: Home, step: str) -> None:
    first = min(home.snapshots)
    victim = f"porch/{first}.jpg{SEALED_SUFFIX}"

    def kill(at: str, path: str) -> None:
        if at == step and path == victim:
            raise _Killed

    with pytest.raises(_Killed):
        home.run(checkpoint=kill)
    assert (home.settings.snapshot_dir / victim).exists()

    report = home.run()

    assert report.segments == 0  # all sealed by the first run
    assert report.snapshots == (2 if step == "sealed" else 1)
    assert report.leftovers_removed == (1 if step == "committed" else 0)
    home.assert_all_sealed_and_playable()


def test_a_segment_deleted_meanwhile_is_skipped(home: Home) -> None:
    media = home.settings.media_dir
    order = sorted(home.segments(), key=lambda s: s.id)
    gone_early, gone_late = order[3], order[5]

    def retention(seg: SegmentRecord) -> None:  # as run_retention_pass: file, then row
        (media / seg.path).unlink()
        home.index.delete_segments([seg.id])

    def progress(p: SealProgress) -> None:
        if p.kind == "segments" and p.done == 1:
            retention(gone_early)  # gone before it is opened

    def checkpoint(at: str, path: str) -> None:
        if at == "sealed" and path == gone_late.path.removesuffix(".mp4") + SEALED_SUFFIX:
            retention(gone_late)  # gone while its sealed copy was being written

    report = home.service(checkpoint=checkpoint).run(OPERATOR, progress)

    assert report.skipped == 2
    assert report.failed == 0
    assert report.segments == len(order) - 2
    for seg in (gone_early, gone_late):
        del home.plain[seg.path]
        assert not (media / (seg.path.removesuffix(".mp4") + SEALED_SUFFIX)).exists()
    home.assert_all_sealed_and_playable()


def test_plaintext_the_index_does_not_know_is_left_alone_and_counted(home: Home) -> None:
    # e.g. a file a recorder has just renamed and not yet indexed: never deleted unseen
    stray = home.settings.media_dir / "porch/2023-11-14/22/1700000000.000.mp4"
    stray.write_bytes(next(iter(home.plain.values())))
    report = home.run()
    assert report.segments == len(home.plain)
    assert report.plaintext_left == 1
    assert report.summary().endswith("(1 plaintext files left)")
    assert stray.exists()
    assert list(scan(home.settings.data_dir)) == ["media/porch/2023-11-14/22/1700000000.000.mp4"]


def test_refused_when_sealing_is_off(home: Home) -> None:
    dump = home.settings.model_dump()
    home.settings = Settings.model_validate({**dump, "storage": {**dump["storage"], "sealed": 0}})
    assert not home.settings.storage.sealed
    before = scan(home.settings.data_dir)
    with pytest.raises(ConfigError, match=r"storage\.sealed is off"):
        home.run()
    assert scan(home.settings.data_dir) == before
    assert not any(s.sealed for s in home.segments())


def test_refused_when_a_household_has_no_key(home: Home) -> None:
    for seg in record_bikes(home.settings.data_dir, "shed", T0 + 3600):
        home.index.add_segment(seg)
    cams = {n: c.model_dump() for n, c in home.settings.cameras.items()}
    cams["shed"] = {"url": "file:/dev/null", "household": "cabin"}  # never started: no key
    home.settings = Settings.model_validate({**home.settings.model_dump(), "cameras": cams})
    with pytest.raises(NotFoundError, match="household 'cabin' has no key"):
        home.run()
    assert not any(s.sealed for s in home.segments())  # nothing touched


def test_two_runs_at_once_are_refused(home: Home) -> None:
    with _run_lock(home.settings.data_dir), pytest.raises(StorageError, match="another"):
        home.run()


@contextlib.contextmanager
def _tmpfs(where: Path, size: int) -> Iterator[bool]:
    """A ``size``-byte tmpfs mounted at ``where`` (root only); yields whether it is."""
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    try:
        yield done.returncode == 0
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _full_after(calls: int, writev: Callable[[int, list[bytes]], int]) -> Callable[..., int]:
    """``writev`` that fails with ``ENOSPC`` from its ``calls + 1``-th call on."""
    count = [0]

    def full(fd: int, parts: list[bytes]) -> int:
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return writev(fd, parts)

    return full


def test_a_full_disk_stops_the_run_and_keeps_the_plaintext(
    index: Index, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _tmpfs(tmp_path / "disk", 4 * 1024 * 1024) as real:
        data = tmp_path / "disk" / "data"
        for home in _home(index, database_url, data):
            media = home.settings.media_dir
            if real:  # fill the disk but for ~one segment's room: a real ENOSPC comes
                filler = tmp_path / "disk" / "filler"
                free = os.statvfs(media).f_bavail * os.statvfs(media).f_frsize
                # porch's first two segments (38 and 99 KB) fit, its third (130 KB) does not
                filler.write_bytes(bytes(max(0, free - 110 * 1024)))
            else:  # no tmpfs here (not root): the write fails as a full disk's does
                monkeypatch.setattr(os, "writev", _full_after(2, os.writev))
            with pytest.raises(DiskFullError, match="disk full while sealing segment") as exc:
                home.run()
            assert "plaintext is left in place" in str(exc.value)
            left = [s for s in home.segments() if not s.sealed]
            assert left
            assert all((media / s.path).read_bytes() == home.plain[s.path] for s in left)
            assert not list(media.rglob("*.part"))
            assert [h for h, _ in _seal_entries(home.audit)] == ["home"]  # what it did
            # room again: the next run finishes
            if real:
                filler.unlink()
            else:
                monkeypatch.undo()
            report = home.run()
            assert report.segments == len(left)
            home.assert_all_sealed_and_playable()


def test_sealing_beside_a_running_sealed_recorder(tmp_path: Path, database_url: str) -> None:
    # an hour of plaintext history of camera "bikes" (kept by retention), then `homewarden
    # run` with storage.sealed on records the same camera while the old footage is sealed
    from homewarden.services.runtime import Runtime
    from homewarden.web.app import create_app

    bikes = require_bikes()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        api={"host": "127.0.0.1", "port": 0},
        storage={"sealed": True},
        cameras={"bikes": {"url": f"file:{bikes}", "loop": True, "segment_seconds": 2}},
    )
    past = time.time() - 3600
    old = record_bikes(settings.data_dir, "bikes", past)
    plain = {s.path: (settings.media_dir / s.path).read_bytes() for s in old}
    index = Index(database_url)
    index.migrate()
    for seg in old:
        index.add_segment(seg)
    index.close()
    rt = Runtime(settings, app_factory=create_app)
    rt.start()
    try:
        link = rt.setup_link
        assert link is not None
        rt.accounts.complete_setup(link.rpartition("token=")[2], PASSWORD)
        session = rt.accounts.login("owner", PASSWORD, HOST).session.id
        ring = rt.app_context().keys
        assert isinstance(ring, KeyRing)
        live = lambda: [s for s in rt.index.segments("bikes") if s.start > past + 600]  # noqa: E731
        deadline = time.monotonic() + 30
        while len(live()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = {s.id: s.path for s in live()}
        assert len(before) >= 2
        assert all(s.sealed for s in live())

        report = SealExisting(rt.index, settings, rt.audit).run(OPERATOR)

        assert (report.segments, report.skipped, report.failed) == (len(old), 0, 0)
        after = {s.id: s.path for s in live()}
        assert {i: after[i] for i in before} == before  # the recorder's own: untouched
    finally:
        rt.stop()
    index = Index(database_url)
    try:
        segs = index.segments("bikes")
        assert all(s.sealed for s in segs)
        assert scan(settings.data_dir) == {}
        media = settings.media_dir
        files = sorted(p.relative_to(media).as_posix() for p in media.rglob("*") if p.is_file())
        assert files == sorted(s.path for s in segs)
        keys = SessionKeys(ring, session)
        for seg in (s for s in segs if s.start < past + 600):
            original = plain[seg.path.removesuffix(SEALED_SUFFIX) + ".mp4"]
            assert open_sealed_segment(media, seg, "home", keys) == original
    finally:
        index.close()
