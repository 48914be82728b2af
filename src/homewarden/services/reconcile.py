"""Crash recovery at start-up: make the index and the media dir agree (issue 2, "Crash safety").

Segments are written as ``media/<camera>/<YYYY-MM-DD>/<HH>/<start>.mp4.part`` and renamed to
``<start>.mp4`` when complete (``<start>`` is the UTC epoch start, 3 decimals). A ``kill -9``
may leave a ``.part`` file, index rows whose file never made it, files whose row never made
it, and gaps or events that were never closed. :func:`reconcile` repairs each, both ways:

1. Index rows whose file is missing are deleted.
2. Each ``.part`` file is probed: if playable (parses, starts with a keyframe, more than zero
   seconds) it becomes ``<start>.mp4`` — renamed, or, when the crash cut a packet in two,
   rewritten with only its whole packets — and is indexed with ``end = start + duration``;
   otherwise it is removed. Leftover ``.salvage`` files of an interrupted rewrite are removed.
3. Each complete ``<start>.mp4`` without a row is probed and indexed if playable, or moved to
   ``media/.corrupt/<same relative path>`` if not: a complete file is never deleted silently.
4. Gaps and events left open are closed at the camera's last segment end (or at their own
   start when that is earlier or there is no segment).

Sealed footage (``storage.sealed``, :mod:`homewarden.services.sealed_footage`): with
``sealed`` set, a leftover plaintext ``<start>.mp4.part`` is deleted, never adopted (its
footage is lost: plaintext must not stay on disk, and salvaging it would leave it readable
without the household key). A ``<start>.hwseal.part`` (sealing cut short) is deleted whether
or not sealing is on. A complete ``<start>.hwseal`` without a row cannot be probed without
the household key, so it is left in place, logged and counted in ``skipped``. Under sealing
the recorder writes the segment in progress to the memory file system, not the media dir
(:func:`homewarden.services.recorder.live_parts_dir`): a ``.part`` a crash left there (the
machine kept running) is deleted too, sealing on or off, and counted in ``parts_removed``; its
footage is lost as for any sealed ``.part``, and the recorder's next start records the hole
as a ``not_recording`` gap. A power cut leaves nothing there to delete.

Must run before any recorder starts: a recorder's ``.part`` in progress would look orphaned.
With ``cameras`` it touches only those cameras' rows and files, so it may run while other
cameras record (a recorder worker process that died is reconciled so before it restarts).
Recovered segments get motion score 0.0 (the score was never computed).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path

from homewarden.errors import CorruptSegmentError, DatabaseError, HomeWardenError
from homewarden.media.probe import SegmentProbe, probe_segment, salvage_segment
from homewarden.services.recorder import LIVE_DIR, live_parts_dir
from homewarden.services.retention import segment_file
from homewarden.services.sealed_footage import SEALED_SUFFIX
from homewarden.store.index import Index
from homewarden.store.memory_dir import deployment_dir, memory_root
from homewarden.store.records import NewSegment

log = logging.getLogger(__name__)

#: Where unplayable complete files are moved, under the media dir.
QUARANTINE = ".corrupt"
_NAME = re.compile(
    r"^(?P<start>\d+(?:\.\d+)?)(?P<ext>\.mp4|\.hwseal)(?P<suffix>\.part|\.salvage)?$"
)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOUR = re.compile(r"^\d{2}$")


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """Counts of what :func:`reconcile` repaired.

    Attributes:
        rows_removed: index rows whose file was missing.
        parts_recovered: ``.part`` files kept (renamed or salvaged) and indexed.
        parts_removed: ``.part`` (and ``.salvage``) files removed as unplayable.
        files_indexed: complete files that had no row, now indexed.
        files_quarantined: complete unplayable files moved under ``media/.corrupt``.
        gaps_closed: gaps left open, now closed.
        events_closed: events left open, now closed.
        skipped: files outside the layout, or that could not be handled (each logged).
    """

    rows_removed: int = 0
    parts_recovered: int = 0
    parts_removed: int = 0
    files_indexed: int = 0
    files_quarantined: int = 0
    gaps_closed: int = 0
    events_closed: int = 0
    skipped: int = 0


def _quarantine(media_dir: Path, file: Path, relative: str) -> Path:
    target = media_dir / QUARANTINE / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while target.exists():
        target = target.with_name(f"{file.name}.{n}")
        n += 1
    os.replace(file, target)
    return target


def _index_file(
    index: Index, camera: str, start: float, relative: str, probe: SegmentProbe
) -> None:
    index.add_segment(
        NewSegment(
            camera=camera,
            start=start,
            end=start + probe.duration,
            bytes=probe.bytes,
            keyframes=probe.keyframes,
            motion_score=0.0,
            path=relative,
        )
    )


class _Reconciler:
    def __init__(
        self, index: Index, media_dir: Path, cameras: Collection[str] | None, sealed: bool
    ) -> None:
        self.sealed = sealed
        self.index = index
        self.media_dir = media_dir
        self.cameras = None if cameras is None else frozenset(cameras)
        self.counts: dict[str, int] = {f.name: 0 for f in fields(ReconcileReport)}

    def rows_without_files(self) -> set[str]:
        """Step 1; returns the paths still indexed."""
        stale: list[int] = []
        kept: set[str] = set()
        if self.cameras is None:
            records = self.index.segments()
        else:
            records = [rec for cam in sorted(self.cameras) for rec in self.index.segments(cam)]
        for rec in records:
            path = segment_file(self.media_dir, rec.path)
            if path is None or not path.is_file():
                log.warning("reconcile: %s is indexed but missing; removing its row", rec.path)
                stale.append(rec.id)
            else:
                kept.add(rec.path)
        self.counts["rows_removed"] = self.index.delete_segments(stale)
        return kept

    def files(self) -> list[Path]:
        found: list[Path] = []
        if not self.media_dir.is_dir():
            return found
        for camera_dir in sorted(self.media_dir.iterdir()):
            if self.cameras is not None and camera_dir.name not in self.cameras:
                continue
            if camera_dir.is_dir() and not camera_dir.name.startswith("."):
                found += sorted(p for p in camera_dir.rglob("*") if p.is_file())
        return found

    def handle(self, file: Path, indexed: set[str]) -> None:
        relative = file.relative_to(self.media_dir).as_posix()
        parts = relative.split("/")
        m = _NAME.match(file.name)
        if m is None or len(parts) != 4 or not _DAY.match(parts[1]) or not _HOUR.match(parts[2]):
            log.warning("reconcile: %s does not follow the media layout; left alone", relative)
            self.counts["skipped"] += 1
            return
        camera, start, suffix = parts[0], float(m["start"]), m["suffix"]
        sealed_file = m["ext"] == SEALED_SUFFIX
        if suffix == ".salvage" or (suffix == ".part" and (sealed_file or self.sealed)):
            if suffix == ".part":
                log.info(
                    "reconcile: removing %s (%s)",
                    relative,
                    "sealing cut short" if sealed_file else "plaintext, sealing is on",
                )
            file.unlink()
            self.counts["parts_removed"] += 1
            return
        if sealed_file:
            if relative not in indexed:
                log.warning(
                    "reconcile: sealed %s has no index row; left in place (its duration "
                    "needs the household key)",
                    relative,
                )
                self.counts["skipped"] += 1
            return
        if suffix == ".part":
            self.part(file, camera, start, relative.removesuffix(".part"))
        elif relative not in indexed:
            self.complete(file, camera, start, relative)

    def part(self, file: Path, camera: str, start: float, final_rel: str) -> None:
        final = file.with_name(file.name.removesuffix(".part"))
        if final.exists():
            log.warning("reconcile: %s already has a complete file; removing the .part", final_rel)
            file.unlink()
            self.counts["parts_removed"] += 1
            return
        try:
            probe = probe_segment(file)
            if not probe.playable:
                raise CorruptSegmentError("no whole packet starting on a keyframe")
            salvaged = probe.truncated
            if salvaged:
                probe = salvage_segment(file, final)
        except CorruptSegmentError as exc:
            log.info("reconcile: removing unplayable %s.part (%s)", final_rel, exc)
            file.unlink()
            self.counts["parts_removed"] += 1
            return
        if salvaged:
            file.unlink()  # its whole packets now live in the salvaged copy
        else:
            os.replace(file, final)
        _index_file(self.index, camera, start, final_rel, probe)
        log.info("reconcile: recovered %s (%.2f s)", final_rel, probe.duration)
        self.counts["parts_recovered"] += 1

    def complete(self, file: Path, camera: str, start: float, relative: str) -> None:
        try:
            probe = probe_segment(file)
            playable = probe.playable
        except CorruptSegmentError as exc:
            log.info("reconcile: %s does not parse (%s)", relative, exc)
            playable = False
        if playable:
            _index_file(self.index, camera, start, relative, probe)
            log.info("reconcile: indexed unindexed %s (%.2f s)", relative, probe.duration)
            self.counts["files_indexed"] += 1
            return
        target = _quarantine(self.media_dir, file, relative)
        log.warning("reconcile: %s is unplayable; moved to %s", relative, target)
        self.counts["files_quarantined"] += 1

    def memory_parts(self) -> None:
        """Delete the segments in progress a crash left on the memory file system (see the
        module docstring); a squatted directory there is logged and left alone."""
        root = memory_root()
        if root is None:
            return
        live = deployment_dir(root, self.media_dir) / LIVE_DIR
        try:
            cameras = sorted(os.listdir(live)) if self.cameras is None else sorted(self.cameras)
        except OSError:
            return  # nothing was ever recorded there
        for camera in cameras:
            try:
                parts = live_parts_dir(root, self.media_dir, camera, create=False)
                names = [] if parts is None else sorted(os.listdir(parts))
            except (OSError, HomeWardenError) as exc:
                log.warning("reconcile: cannot look at %s/%s: %s", live, camera, exc)
                self.counts["skipped"] += 1
                continue
            for name in names:
                assert parts is not None
                file = parts / name
                try:
                    file.unlink()
                except OSError as exc:
                    log.warning("reconcile: cannot remove %s: %s", file, exc)
                    self.counts["skipped"] += 1
                    continue
                log.info("reconcile: removed %s (a segment in progress, never sealed)", file)
                self.counts["parts_removed"] += 1

    def close_open(self) -> None:
        last: dict[str, float | None] = {}

        def end_for(camera: str, start: float) -> float:
            if camera not in last:
                last[camera] = self.index.last_segment_end(camera)
            end = last[camera]
            return start if end is None else max(start, end)

        for gap in self.index.open_gaps():
            if self.cameras is not None and gap.camera not in self.cameras:
                continue
            self.index.close_gap(gap.id, end_for(gap.camera, gap.start))
            self.counts["gaps_closed"] += 1
        for ev in self.index.open_events():
            if self.cameras is not None and ev.camera not in self.cameras:
                continue
            self.index.update_event(ev.id, end=end_for(ev.camera, ev.start))
            self.counts["events_closed"] += 1


def reconcile(
    index: Index, media_dir: Path, cameras: Collection[str] | None = None, *, sealed: bool = False
) -> ReconcileReport:
    """Make ``index`` and the segment files under ``media_dir`` agree after a crash.

    See the module docstring for the four steps. ``cameras``: reconcile only these cameras
    (their rows, their ``media/<camera>/`` files, their open gaps and events); None: all.
    One file that cannot be handled (permission, I/O error) is logged and counted in
    ``skipped``; it never stops the others. ``sealed`` (``storage.sealed``): leftover
    plaintext ``.part`` files are deleted, never adopted (see the module docstring). Leftover
    segments in progress on the memory file system (the recorder's under sealing) are
    deleted in any case.

    Raises:
        DatabaseError: the index cannot be read or written.
    """
    r = _Reconciler(index, media_dir, cameras, sealed)
    indexed = r.rows_without_files()
    for file in r.files():
        try:
            r.handle(file, indexed)
        except DatabaseError:
            raise
        except (OSError, HomeWardenError) as exc:
            log.warning("reconcile: cannot handle %s: %s", file, exc)
            r.counts["skipped"] += 1
    r.memory_parts()
    r.close_open()
    report = ReconcileReport(**r.counts)
    if report != ReconcileReport():
        log.info("reconcile: %s", report)
    return report
