"""Seal footage recorded before ``storage.sealed`` was turned on (issue 6: "A one-off command
encrypts footage recorded before this change, with a progress bar, resumable";
``homewarden footage seal``).

What it seals. Every plaintext segment in the index (``sealed`` false: finished ``<start>.mp4``
files; the segment being recorded is a ``.part`` with no row yet, so it is never touched) is
sealed to its household's *current* recording key (:class:`~homewarden.services.
sealed_footage.StoredRecordingKeys`: the public key only, no passphrase) into
``<start>.hwseal``, bound to that path, its camera and start exactly as the recorder seals a
segment on close (:mod:`homewarden.services.sealed_footage`), so every reader opens it
unchanged. Every event snapshot still stored as a plaintext JPEG (``<camera>/<event>.jpg``;
it is also the event's thumbnail, there is no other image file) is sealed as
:func:`~homewarden.services.sealed_footage.seal_snapshot` seals a new one
(``<event>.jpg.hwseal``). Sealing does not parse: a corrupt or truncated segment is sealed
as the bytes it holds. Plaintext clips left in the clip cache (``cache/clips/*.mp4``, composed
for playback before sealing was on) are deleted: they are a cache.

Order of each item, so a crash at any point loses nothing and leaves nothing twice:

1. a leftover ``<sealed>.part`` of this item (a run killed while writing) is removed;
2. the sealed file is written atomically (``.part``, fsync, rename, directory fsync:
   :func:`~homewarden.store.sealed_files.write_sealed_file`);
3. the index row is pointed at it (path, bytes, ``sealed``, key id) in one transaction,
   only while the row is still the plaintext one (:meth:`Index.mark_segment_sealed`,
   :meth:`Index.mark_snapshot_sealed`);
4. only then is the plaintext deleted.

Killed before 3, the row still names the plaintext, which is still there, so the next run
seals it again: a sealed file already at the target is *re-sealed over*, never adopted.
Adopting it would be safe only if it were known to hold this plaintext, and that cannot be
checked without the household's private key, which this command never has; re-sealing costs
one segment's cipher pass (milliseconds) and leaves exactly one sealed file, the one the row
names. Killed between 3 and 4, the row names the sealed file and the plaintext is an orphan:
each run starts by deleting a plaintext file whose sealed sibling is what the index names for
it. A file the index does not know is never deleted (it may be one a recorder has just
renamed and not yet indexed); the run counts what is left in ``plaintext_left``.

Beside a running ``homewarden run``. Retention and the disk guard may delete a segment (file,
then row) while it is being sealed: a plaintext file gone before it is opened, or a row gone
or changed before step 3, is counted in ``skipped`` and its sealed copy removed; that is not
an error. One narrow race remains: retention reads a row, this run then commits it sealed,
and retention deletes the row after finding the plaintext gone; the sealed file is then left
without a row (ciphertext only: start-up reconciliation logs it as skipped). Two runs at once
are refused (an exclusive ``flock`` on ``<data_dir>/seal-existing.lock``).

Refusals, before anything is touched: ``storage.sealed`` off (new footage would still be
recorded in the clear: turn it on and restart the recorder first), and a household with
footage to seal but no recording key yet (the recorder makes it at start). A full disk
(``ENOSPC``/``EDQUOT``) stops the run at once with a :class:`DiskFullError` naming the file,
the plaintext of that item left in place; another failure of one file is logged, counted in
``failed`` and the run goes on. A run appends ``footage:existing:seal`` audit entries twice:
when it starts, before it seals anything, one per household with footage to seal (what it is
about to seal: segments, their plaintext bytes as indexed, snapshots; reason
``... sealing starts ...``), so that a run killed with ``SIGKILL`` midway is still on record;
and at the end one per household whose footage it sealed (or one for the deployment's
household if none), also when it stops early on an exception.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from homewarden.config import Settings
from homewarden.crypto.sealing import SegmentIdentity, SegmentSealer
from homewarden.domain.audit import Actor, AuditTag
from homewarden.errors import (
    ConfigError,
    HomeWardenError,
    NotFoundError,
    StorageError,
)
from homewarden.services.audit import AuditLog
from homewarden.services.retention import segment_file
from homewarden.services.sealed_footage import (
    SEALED_SUFFIX,
    RecordingKeySource,
    SegmentSealing,
    StoredRecordingKeys,
    seal_snapshot,
    sealed_relpath,
)
from homewarden.store.index import Index
from homewarden.store.records import EventRecord, SegmentRecord
from homewarden.store.sealed_files import write_sealed_file

log = logging.getLogger(__name__)

#: The lock file (in the data dir) that keeps two runs apart.
LOCK_NAME = "seal-existing.lock"
#: Segments read from the index at a time.
PAGE = 500
#: ``errno`` values that mean the disk (or the user's quota) is full: the run stops.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Called at each durable step of an item with (step, path relative to the media or
#: snapshot dir): ``"sealed"`` (sealed file in place, row not yet updated), ``"committed"``
#: (row updated, plaintext not yet deleted), ``"done"``. For tests that stop a run there.
Checkpoint = Callable[[str, str], None]


class DiskFullError(StorageError):
    """The disk filled while sealing; the item's plaintext is left in place."""


@dataclass(frozen=True, slots=True)
class SealProgress:
    """Where a run is: ``kind`` ``"segments"`` or ``"snapshots"``; items ``done`` of
    ``total`` (sealed, skipped or failed); ``bytes_done`` of ``bytes_total`` (plaintext bytes
    as indexed; snapshots: 0). ``total`` grows if a recorder indexes plaintext segments
    meanwhile."""

    kind: str
    done: int
    total: int
    bytes_done: int
    bytes_total: int


@dataclass(slots=True)
class SealReport:
    """What a run did: ``segments`` sealed (``bytes`` of plaintext), ``snapshots`` sealed,
    ``skipped`` (deleted meanwhile by retention or the recorder), ``failed`` (an error, logged;
    their plaintext left for the next run), ``leftovers_removed`` (plaintext of items an earlier
    run sealed and was killed before deleting), ``clips_removed`` (plaintext clip cache
    files), ``plaintext_left`` (``.mp4``/``.jpg`` files still under the media and snapshot
    dirs at the end: unindexed, quarantined, or recorded meanwhile by a recorder that still
    runs without ``storage.sealed``), and each household's share (:class:`HouseholdTally`)."""

    segments: int = 0
    bytes: int = 0
    snapshots: int = 0
    skipped: int = 0
    failed: int = 0
    leftovers_removed: int = 0
    clips_removed: int = 0
    plaintext_left: int = 0
    households: dict[str, HouseholdTally] = field(default_factory=dict)

    def summary(self) -> str:
        """The one-line summary printed at the end."""
        line = (
            f"sealed {self.segments} segments, {self.bytes} bytes, {self.snapshots} snapshots, "
            f"skipped {self.skipped}"
        )
        extra = [
            f"{n} {what}"
            for n, what in (
                (self.failed, "failed"),
                (self.leftovers_removed, "leftover plaintext removed"),
                (self.clips_removed, "cached clips removed"),
                (self.plaintext_left, "plaintext files left"),
            )
            if n
        ]
        return line + (f" ({', '.join(extra)})" if extra else "")

    def _sealed(
        self, household: str, key_id: builtins.bytes, span: tuple[float, float], size: int | None
    ) -> None:
        """Count one item sealed: a segment of ``size`` plaintext bytes, or (None) a
        snapshot."""
        tally = self.households.setdefault(household, HouseholdTally(span[0], span[1]))
        tally.start, tally.end = min(tally.start, span[0]), max(tally.end, span[1])
        tally.key_id = key_id.hex()
        if size is None:
            self.snapshots += 1
            tally.snapshots += 1
        else:
            self.segments += 1
            self.bytes += size
            tally.segments += 1
            tally.bytes += size


@dataclass(slots=True)
class HouseholdTally:
    """One household's share of a run: footage span ``start``..``end`` (UTC epoch s),
    ``segments`` and their plaintext ``bytes``, ``snapshots``, and the last key id (hex)
    sealed to."""

    start: float
    end: float
    segments: int = 0
    bytes: int = 0
    snapshots: int = 0
    key_id: str | None = None


def _disk_full(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _run_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<data_dir>/seal-existing.lock``.

    Raises:
        StorageError: another run holds it, or the file cannot be opened.
    """
    path = data_dir / LOCK_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open lock {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(
                    f"another `homewarden footage seal` is running on {data_dir} (it holds "
                    f"{path}); wait for it to finish"
                ) from exc
            raise StorageError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        yield
    finally:
        os.close(fd)  # closing drops the lock


class SealExisting:
    """Seals the plaintext footage of one deployment (see the module docstring).

    Args:
        index: the migrated index.
        settings: paths, ``storage.sealed`` and each camera's household.
        audit: where the run's entries go.
        keys: the recording keys (default: :class:`StoredRecordingKeys` over ``index``).
        checkpoint: see :data:`Checkpoint` (tests).
    """

    def __init__(
        self,
        index: Index,
        settings: Settings,
        audit: AuditLog,
        *,
        keys: RecordingKeySource | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self._index = index
        self._settings = settings
        self._audit = audit
        self._keys = keys or StoredRecordingKeys(index)
        self._checkpoint = checkpoint or (lambda step, path: None)

    # -- the run ---------------------------------------------------------------------------

    def run(
        self, actor: Actor, progress: Callable[[SealProgress], None] | None = None
    ) -> SealReport:
        """Seal everything, reporting to ``progress`` after each item; returns the counts.

        Raises:
            ConfigError: ``storage.sealed`` is off.
            NotFoundError: a household with footage to seal has no recording key yet.
            StorageError: another run holds the lock.
            DiskFullError: the disk filled (the run stops; that item's plaintext is kept).
            DatabaseError: the index failed.
        """
        settings = self._settings
        if not settings.storage.sealed:
            raise ConfigError(
                "storage.sealed is off: footage recorded from now on would still be stored in "
                "the clear; set `[storage] sealed = true`, restart `homewarden run`, then seal "
                "the older footage"
            )
        report = SealReport()
        with _run_lock(settings.data_dir):
            by_camera = self._index.unsealed_totals()
            snaps = [
                e
                for e in self._index.event_spans()
                if e.snapshot_path is not None and not e.snapshot_path.endswith(SEALED_SUFFIX)
            ]
            self._check_keys(set(by_camera) | {e.camera for e in snaps})
            self._audit_start(actor, by_camera, snaps)  # before anything is sealed
            try:
                report.leftovers_removed = self._remove_leftovers()
                self._seal_segments(by_camera, report, progress)
                self._seal_snapshots(snaps, report, progress)
                report.clips_removed = self._purge_clip_cache()
                report.plaintext_left = self._count_plaintext()
            except BaseException:
                with contextlib.suppress(HomeWardenError):  # the cause is what matters
                    self._audit_run(actor, report, stopped=True)
                raise
            self._audit_run(actor, report, stopped=False)
        if report.plaintext_left:
            log.warning(
                "%d plaintext .mp4/.jpg files are still under %s or %s: files the index does "
                "not know, quarantined ones, or footage from a recorder still running without "
                "storage.sealed (restart it)",
                report.plaintext_left,
                settings.media_dir,
                settings.snapshot_dir,
            )
        return report

    def _check_keys(self, cameras: set[str]) -> None:
        missing = set()
        for household in sorted({self._settings.camera_household(c) for c in cameras}):
            try:
                self._keys.recording_key(household)
            except NotFoundError:
                missing.add(household)
        if missing:
            names = ", ".join(repr(h) for h in sorted(missing))
            raise NotFoundError(
                f"household {names} has no key to seal to yet: start `homewarden run` with "
                "storage.sealed on once (it makes each household's key), then run this again"
            )

    # -- segments --------------------------------------------------------------------------

    def _seal_segments(
        self,
        by_camera: dict[str, tuple[int, int]],
        report: SealReport,
        progress: Callable[[SealProgress], None] | None,
    ) -> None:
        total = sum(n for n, _ in by_camera.values())
        bytes_total = sum(b for _, b in by_camera.values())
        done = bytes_done = 0
        after = 0
        while page := self._index.unsealed_segments(after, PAGE):
            for seg in page:
                after = seg.id
                try:
                    self._seal_segment(seg, report)
                except OSError as exc:
                    self._os_failed(exc, f"segment {seg.path}", report)
                done += 1
                bytes_done += seg.bytes  # as indexed, like the total (the file may differ)
                total, bytes_total = max(total, done), max(bytes_total, bytes_done)
                if progress is not None:
                    progress(SealProgress("segments", done, total, bytes_done, bytes_total))

    def _seal_segment(self, seg: SegmentRecord, report: SealReport) -> None:
        """Seal one plaintext segment (or count it skipped or failed)."""
        media = self._settings.media_dir
        plain = segment_file(media, seg.path)
        rel = sealed_relpath(seg.path)
        target = segment_file(media, rel)
        if plain is None or target is None:
            log.error("segment %d has a path outside the media dir: %r", seg.id, seg.path)
            report.failed += 1
            return
        household = self._settings.camera_household(seg.camera)
        key_id, public = self._keys.recording_key(household)
        target.with_name(target.name + ".part").unlink(missing_ok=True)  # a killed run's
        try:
            source = plain.open("rb")
        except FileNotFoundError:
            log.info("segment %s was deleted meanwhile; skipped", seg.path)
            report.skipped += 1
            return
        except OSError as exc:
            log.error("cannot read segment %s: %s; left as it is", seg.path, exc)
            report.failed += 1
            return
        with source:
            size = os.fstat(source.fileno()).st_size
            sealer = SegmentSealer(public, SegmentIdentity(rel, seg.camera, seg.start))
            try:
                sealed_size = write_sealed_file(target, sealer, source)
            except StorageError as exc:
                self._failed(exc, f"segment {seg.path}", report)
                return
        self._checkpoint("sealed", rel)
        if not self._index.mark_segment_sealed(seg.id, seg.path, rel, sealed_size, key_id):
            log.info("segment %s was deleted or changed meanwhile; skipped", seg.path)
            target.unlink(missing_ok=True)
            report.skipped += 1
            return
        self._checkpoint("committed", rel)
        plain.unlink(missing_ok=True)
        self._checkpoint("done", rel)
        report._sealed(household, key_id, (seg.start, seg.end), size)

    def _os_failed(self, exc: OSError, what: str, report: SealReport) -> None:
        """An OS error around one item (removing a ``.part`` or the plaintext)."""
        self._failed(StorageError(f"{exc.strerror or exc}"), what, report, cause=exc)

    def _failed(
        self, exc: StorageError, what: str, report: SealReport, cause: OSError | None = None
    ) -> None:
        if _disk_full(cause or exc):
            raise DiskFullError(
                f"disk full while sealing {what}: its plaintext is left in place; free some "
                "space and run `homewarden footage seal` again (it resumes)"
            ) from exc
        log.error("cannot seal %s: %s; its plaintext is left for the next run", what, exc)
        report.failed += 1

    # -- snapshots -------------------------------------------------------------------------

    def _seal_snapshots(
        self,
        events: list[EventRecord],
        report: SealReport,
        progress: Callable[[SealProgress], None] | None,
    ) -> None:
        for done, ev in enumerate(events, start=1):
            try:
                self._seal_snapshot(ev, report)
            except OSError as exc:
                self._os_failed(exc, f"event {ev.id}'s snapshot", report)
            if progress is not None:
                progress(SealProgress("snapshots", done, len(events), 0, 0))

    def _seal_snapshot(self, ev: EventRecord, report: SealReport) -> None:
        assert ev.snapshot_path is not None
        root = self._settings.snapshot_dir
        rel = self._snapshot_rel(ev.snapshot_path)
        if rel is None:
            log.error("event %d's snapshot is outside %s: %r", ev.id, root, ev.snapshot_path)
            report.failed += 1
            return
        plain = root / rel
        sealed_rel = rel + SEALED_SUFFIX
        (root / (sealed_rel + ".part")).unlink(missing_ok=True)  # a killed run's
        try:
            jpeg = plain.read_bytes()
        except FileNotFoundError:
            log.info("event %d's snapshot %s was deleted meanwhile; skipped", ev.id, rel)
            report.skipped += 1
            return
        except OSError as exc:
            log.error("cannot read event %d's snapshot %s: %s", ev.id, rel, exc)
            report.failed += 1
            return
        household = self._settings.camera_household(ev.camera)
        key_id, _public = self._keys.recording_key(household)
        try:
            seal_snapshot(jpeg, root, rel, ev.camera, SegmentSealing(household, self._keys))
        except StorageError as exc:
            self._failed(exc, f"event {ev.id}'s snapshot {rel}", report)
            return
        self._checkpoint("sealed", sealed_rel)
        if not self._index.mark_snapshot_sealed(ev.id, ev.snapshot_path, sealed_rel):
            log.info("event %d or its snapshot changed meanwhile; skipped", ev.id)
            (root / sealed_rel).unlink(missing_ok=True)
            report.skipped += 1
            return
        self._checkpoint("committed", sealed_rel)
        plain.unlink(missing_ok=True)
        self._checkpoint("done", sealed_rel)
        report._sealed(household, key_id, (ev.start, max(ev.start, ev.end or ev.start)), None)

    def _snapshot_rel(self, stored: str) -> str | None:
        """``stored`` (as the index keeps it) relative to the snapshot dir, or None."""
        path = PurePosixPath(stored)
        if path.is_absolute():
            try:
                path = PurePosixPath(Path(stored).relative_to(self._settings.snapshot_dir))
            except ValueError:
                return None
        if ".." in path.parts or not path.parts:
            return None
        return path.as_posix()

    # -- leftovers, cache, what is left ----------------------------------------------------

    def _remove_leftovers(self) -> int:
        """Delete plaintext whose sealed sibling the index already names (a run killed
        between its commit and the deletion); returns how many."""
        removed = 0
        media, snaps = self._settings.media_dir, self._settings.snapshot_dir
        for folder, names in _walk(media):
            for name in names:
                sibling = name.removesuffix(".mp4") + SEALED_SUFFIX
                if not name.endswith(".mp4") or sibling not in names:
                    continue
                rel = (folder / name).relative_to(media).as_posix()
                row = self._index.segment_by_path(sealed_relpath(rel))
                if row is not None and row.sealed and self._index.segment_by_path(rel) is None:
                    log.info("removing %s: sealed by an earlier run", rel)
                    (folder / name).unlink(missing_ok=True)
                    removed += 1
        for folder, names in _walk(snaps):
            for name in names:
                stem = name.removesuffix(".jpg")
                if not name.endswith(".jpg") or name + SEALED_SUFFIX not in names:
                    continue
                if not stem.isdigit():
                    continue
                rel = (folder / name).relative_to(snaps).as_posix()
                try:
                    ev = self._index.event(int(stem))
                except NotFoundError:
                    continue
                if ev.snapshot_path == rel + SEALED_SUFFIX:
                    log.info("removing snapshot %s: sealed by an earlier run", rel)
                    (folder / name).unlink(missing_ok=True)
                    removed += 1
        return removed

    def _purge_clip_cache(self) -> int:
        """Delete composed plaintext clips from ``cache/clips`` (not a clip being composed,
        whose name starts with a dot); returns how many."""
        clips = self._settings.cache_dir / "clips"
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for f in clips.iterdir():
                if f.name.endswith(".mp4") and not f.name.startswith(".") and f.is_file():
                    f.unlink(missing_ok=True)  # one being served keeps streaming (POSIX)
                    removed += 1
        return removed

    def _count_plaintext(self) -> int:
        settings = self._settings
        left = sum(
            1
            for _folder, names in _walk(settings.media_dir, hidden=True)
            for n in names
            if n.endswith(".mp4")
        )
        return left + sum(
            1
            for _folder, names in _walk(settings.snapshot_dir)
            for n in names
            if n.endswith(".jpg")
        )

    # -- audit -----------------------------------------------------------------------------

    def _audit_start(
        self, actor: Actor, by_camera: dict[str, tuple[int, int]], snaps: list[EventRecord]
    ) -> None:
        """One entry per household with footage to seal: what this run is about to seal
        (a run killed midway leaves no summary; this entry stays)."""
        plan: dict[str, list[int]] = {}  # household -> [segments, bytes, snapshots]
        for camera, (count, size) in by_camera.items():
            counts = plan.setdefault(self._settings.camera_household(camera), [0, 0, 0])
            counts[0] += count
            counts[1] += size
        for ev in snaps:
            plan.setdefault(self._settings.camera_household(ev.camera), [0, 0, 0])[2] += 1
        for household, (count, size, snapshots) in sorted(plan.items()):
            self._audit.append(
                AuditTag.FOOTAGE_EXISTING_SEAL,
                actor,
                f"footage recorded before storage.sealed: sealing starts, {count} segments, "
                f"{size} bytes, {snapshots} snapshots to seal",
                household=household,
            )

    def _audit_run(self, actor: Actor, report: SealReport, *, stopped: bool) -> None:
        how = " (the run stopped early)" if stopped else ""
        if not report.households:
            what = "the run stopped before sealing any" if stopped else "nothing left to seal"
            self._audit.append(
                AuditTag.FOOTAGE_EXISTING_SEAL,
                actor,
                f"footage recorded before storage.sealed: {what}",
            )
            return
        for household, t in sorted(report.households.items()):
            self._audit.append(
                AuditTag.FOOTAGE_EXISTING_SEAL,
                actor,
                f"footage recorded before storage.sealed sealed at rest: {t.segments} "
                f"segments, {t.bytes} bytes, {t.snapshots} snapshots{how}",
                start=t.start,
                end=t.end,
                key=t.key_id,
                household=household,
            )


def _walk(root: Path, *, hidden: bool = False) -> Iterator[tuple[Path, set[str]]]:
    """(folder, file names) under ``root``; folders starting with a dot (the quarantine
    ``.corrupt``) only when ``hidden``."""
    for folder, dirs, files in os.walk(root):
        if not hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield Path(folder), set(files)
