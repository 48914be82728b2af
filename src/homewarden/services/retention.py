"""One retention pass: read the index, plan with the pure rules, delete files, then rows.

The rules and their sources live in :mod:`homewarden.domain.retention`. This use-case only
gathers their inputs (segments, event spans, active holds, per-camera policies from
``settings.cameras[name].retention``, ``settings.storage`` caps and the free disk under the
media dir) and carries out the plan.

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
    SegmentInfo,
    Shortfall,
    Span,
    estimate_bytes_per_hour,
    plan_retention,
)
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord

log = logging.getLogger(__name__)

#: Only directories of hours that ended this long ago are pruned, so a recorder about to
#: write into the current hour's directory never finds it removed under it.
_PRUNE_AFTER = 2 * 3600.0

DiskUsage = Callable[[Path], Any]  # shutil.disk_usage's shape: result has ``.free`` bytes


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
        bytes_per_hour: the recording-rate estimate the disk guard used.
    """

    deleted: int = 0
    bytes_freed: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    missing_files: int = 0
    failed: int = 0
    shortfalls: tuple[Shortfall, ...] = ()
    free_bytes: int | None = None
    bytes_per_hour: int = 0


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


def _free_bytes(media_dir: Path, disk_usage: DiskUsage) -> int | None:
    probe = media_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(disk_usage(probe).free)
    except OSError as exc:
        log.warning(
            "retention: cannot read free disk under %s (%s); disk guard skipped", probe, exc
        )
        return None


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
        disk_usage: ``shutil.disk_usage`` or a stand-in returning an object with ``.free``.

    Returns:
        What was deleted, what failed, and limits only held footage keeps unmet.

    Raises:
        DatabaseError: the index cannot be read or written. A file that cannot be deleted
            never raises: it is logged, counted in ``failed`` and its row kept.
    """
    records = index.segments()
    infos = [SegmentInfo(r.id, r.camera, r.start, r.end, r.bytes) for r in records]
    events = [Span(e.camera, e.start, e.end) for e in index.event_spans()]
    holds = [Span(h.camera, h.start, h.end) for h in index.holds(active_at=now)]
    free = _free_bytes(media_dir, disk_usage)
    rate = estimate_bytes_per_hour(infos, now)
    plan = plan_retention(
        infos,
        events=events,
        holds=holds,
        policies=policies_from(settings),
        now=now,
        max_total_bytes=settings.storage.max_total_bytes,
        free_bytes=free,
        min_free_bytes=settings.storage.min_free_bytes,
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
    if done:
        log.info(
            "retention: deleted %d segments (%d bytes): %s",
            len(done),
            freed,
            ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())),
        )
    for s in plan.shortfalls:
        where = f"camera {s.camera}" if s.camera else "all cameras"
        log.warning(
            "retention: %s for %s still %d bytes short; only held footage is left",
            s.reason.value,
            where,
            s.bytes,
        )
    return RetentionReport(
        deleted=len(done),
        bytes_freed=freed,
        by_reason=dict(reasons),
        missing_files=missing,
        failed=failed,
        shortfalls=plan.shortfalls,
        free_bytes=free,
        bytes_per_hour=rate,
    )
