"""One retention pass: read the index, plan with the pure rules, delete files, then rows.

The rules and their sources live in :mod:`homewarden.domain.retention`. This use-case only
gathers their inputs (segments, event spans, active holds, per-camera policies from
``settings.cameras[name].retention``, ``settings.storage`` caps, and the free and total disk
under the media dir) and carries out the plan.

Order of deletion: the file first, then its index row. A crash in between leaves rows whose
file is gone, which the next pass (or start-up reconciliation) removes; the reverse order could
leave unindexed files that reconciliation would index again.

Event rows and their snapshot JPEGs are left in place when their footage goes: the event list
stays a record of what happened, and a clip request for it finds no footage
(``NotFoundError``). Pruning old events is for a later issue.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from homewarden.config import Settings
from homewarden.domain.retention import (
    CameraPolicy,
    DeletionReason,
    SegmentInfo,
    Shortfall,
    Span,
    disk_floor,
    estimate_bytes_per_hour,
    plan_retention,
)
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord

log = logging.getLogger(__name__)

#: Only directories of hours that ended this long ago are pruned, so a recorder about to
#: write into the current hour's directory never finds it removed under it.
_PRUNE_AFTER = 2 * 3600.0

DiskUsage = Callable[[Path], Any]  # shutil.disk_usage's shape: ``.total`` and ``.free`` bytes

#: What to do about a limit that only held footage keeps unmet, per rule.
_REMEDY = {
    DeletionReason.CAMERA_CAP: "raise cameras.{camera}.retention.max_bytes",
    DeletionReason.TOTAL_CAP: "raise storage.max_total_bytes",
    DeletionReason.DISK_GUARD: "free space on that disk, or lower storage.min_free_bytes",
}


def _size(n: int) -> str:
    """``n`` bytes in binary units, one decimal (``1.5 MiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one pass did.

    Attributes:
        deleted: segments removed (file and row).
        bytes_freed: bytes of those segments, per the index.
        by_reason: deleted segments per reason (``age``, ``camera_cap``, ``total_cap``,
            ``disk_guard``).
        missing_files: planned segments whose file was already gone (rows deleted anyway).
        failed: planned segments whose file could not be deleted; their rows are kept and
            the next pass tries again.
        shortfalls: limits left unmet because only held footage remains.
        free_bytes: free disk seen before the pass, None when it could not be read.
        total_bytes: size of that file system, None when it could not be read.
        floor_bytes: free bytes the disk guard kept (:func:`~homewarden.domain.retention.
            disk_floor`), None when the disk could not be read.
        bytes_per_hour: the recording-rate estimate the disk guard used.

    ``str(report)`` is a one-line summary for logs.
    """

    deleted: int = 0
    bytes_freed: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    missing_files: int = 0
    failed: int = 0
    shortfalls: tuple[Shortfall, ...] = ()
    free_bytes: int | None = None
    total_bytes: int | None = None
    floor_bytes: int | None = None
    bytes_per_hour: int = 0

    def __str__(self) -> str:
        noun = "segment" if self.deleted == 1 else "segments"
        parts = [f"deleted {self.deleted} {noun} ({_size(self.bytes_freed)}"]
        if self.by_reason:
            parts[0] += ": " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_reason.items()))
        parts[0] += ")"
        if self.missing_files:
            parts.append(f"{self.missing_files} already gone")
        if self.failed:
            parts.append(f"{self.failed} could not be deleted (retried next pass)")
        if self.free_bytes is not None:
            disk = f"{_size(self.free_bytes)} free"
            if self.total_bytes is not None:
                disk += f" of {_size(self.total_bytes)}"
            if self.floor_bytes is not None:
                disk += f", floor {_size(self.floor_bytes)}"
            parts.append(disk)
        for short in self.shortfalls:
            where = f"camera {short.camera}" if short.camera else "all cameras"
            parts.append(
                f"{short.reason.value} for {where} still {_size(short.bytes)} short "
                "(only held footage left)"
            )
        return "; ".join(parts)


def policies_from(settings: Settings) -> dict[str, CameraPolicy]:
    """Per-camera :class:`CameraPolicy` from ``settings.cameras[name].retention``."""
    return {
        name: CameraPolicy(
            continuous_days=cam.retention.continuous_days,
            event_days=cam.retention.event_days,
            max_bytes=cam.retention.max_bytes,
        )
        for name, cam in settings.cameras.items()
    }


def segment_file(media_dir: Path, relative: str) -> Path | None:
    """``media_dir / relative``, or None when ``relative`` would leave the media dir."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    return media_dir.joinpath(*rel.parts)


def _disk(media_dir: Path, disk_usage: DiskUsage) -> tuple[int | None, int | None]:
    """(free, total) bytes of the file system holding ``media_dir``; (None, None) when they
    cannot be read."""
    probe = media_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = disk_usage(probe)
        return int(usage.free), int(usage.total)
    except OSError as exc:
        log.warning(
            "retention: cannot read free disk under %s (%s); disk guard skipped", probe, exc
        )
        return None, None


def _shortfall_warning(short: Shortfall) -> None:
    where = f"camera {short.camera}" if short.camera else "all cameras"
    remedy = _REMEDY[short.reason].format(camera=short.camera)
    log.warning(
        "retention: %s for %s is still %s short, and only held footage (%s) is left to "
        "delete; release holds that are no longer needed, or %s",
        short.reason.value,
        where,
        _size(short.bytes),
        _size(short.held_bytes),
        remedy,
    )


def _prune_dirs(file: Path, relative: str) -> None:
    # Remove the hour and then the day directory once empty (layout
    # <camera>/<YYYY-MM-DD>/<HH>/<start>.mp4); never the camera's or the media dir.
    if len(PurePosixPath(relative).parts) != 4:
        return
    for directory in (file.parent, file.parent.parent):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or already gone): leave it


def run_retention_pass(
    index: Index,
    settings: Settings,
    media_dir: Path,
    now: float,
    disk_usage: DiskUsage = shutil.disk_usage,
) -> RetentionReport:
    """Apply retention once (see the module docstring and :mod:`homewarden.domain.retention`).

    Args:
        index: the migrated index.
        settings: per-camera retention and ``settings.storage`` caps.
        media_dir: root of segment files (``SegmentRecord.path`` is relative to it).
        now: UTC epoch seconds.
        disk_usage: ``shutil.disk_usage`` or a stand-in returning an object with ``.free``
            and ``.total`` (bytes; the total caps the guard's floor on a small disk).

    Returns:
        What was deleted, what failed, and limits only held footage keeps unmet;
        ``str()`` of it is the one-line summary to log.

    Raises:
        DatabaseError: the index cannot be read or written. A file that cannot be deleted
            never raises: it is logged, counted in ``failed`` and its row kept.
    """
    records = index.segments()
    infos = [SegmentInfo(r.id, r.camera, r.start, r.end, r.bytes) for r in records]
    events = [Span(e.camera, e.start, e.end) for e in index.event_spans()]
    holds = [Span(h.camera, h.start, h.end) for h in index.holds(active_at=now)]
    free, total = _disk(media_dir, disk_usage)
    rate = estimate_bytes_per_hour(infos, now)
    min_free = settings.storage.min_free_bytes
    plan = plan_retention(
        infos,
        events=events,
        holds=holds,
        policies=policies_from(settings),
        now=now,
        max_total_bytes=settings.storage.max_total_bytes,
        free_bytes=free,
        total_bytes=total,
        min_free_bytes=min_free,
        bytes_per_hour=rate,
    )
    by_id: dict[int, SegmentRecord] = {r.id: r for r in records}
    done: list[int] = []
    reasons: Counter[str] = Counter()
    freed = missing = failed = 0
    for deletion in plan.deletions:
        rec = by_id[deletion.segment_id]
        path = segment_file(media_dir, rec.path)
        if path is None:
            log.warning(
                "retention: segment %d has a path outside the media dir: %r", rec.id, rec.path
            )
            failed += 1
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            log.info("retention: %s was already gone; removing its index row", rec.path)
            missing += 1
        except OSError as exc:
            log.warning("retention: cannot delete %s (%s); will retry next pass", path, exc)
            failed += 1
            continue
        done.append(rec.id)
        reasons[deletion.reason.value] += 1
        freed += rec.bytes
        if rec.end < now - _PRUNE_AFTER:
            _prune_dirs(path, rec.path)
    index.delete_segments(done)
    report = RetentionReport(
        deleted=len(done),
        bytes_freed=freed,
        by_reason=dict(reasons),
        missing_files=missing,
        failed=failed,
        shortfalls=plan.shortfalls,
        free_bytes=free,
        total_bytes=total,
        floor_bytes=None if free is None else disk_floor(min_free, rate, total),
        bytes_per_hour=rate,
    )
    # The caller logs ``str(report)`` (one line); the runtime's retention loop does.
    for short in plan.shortfalls:
        _shortfall_warning(short)
    return report
