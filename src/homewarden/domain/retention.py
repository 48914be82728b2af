"""Retention decisions: which recorded segments to delete, and why. Pure: no I/O.

Source of the rules: issue 2 ("Retention") and DESIGN.md flow 4 ("Keep"). Prior art: Frigate's
per-camera ``record.retain.days`` for continuous footage against a longer retention for
footage of events (its ``all`` / ``motion`` / ``active_objects`` retain modes), and its storage
maintainer, which deletes the oldest recordings once free space drops under one hour of
recording at the measured bandwidth, sparing recordings that overlap retained events until
nothing else is left (``frigate/storage.py``).

The rules, applied in this order to the footage still left by the earlier ones:

0. **Holds.** A segment overlapping an active hold (on its camera, or a hold on every camera)
   is never deleted, by any rule below. A hold ends when it expires; callers pass only the
   active ones.
1. **Age** (reason ``age``). *Event footage* — a segment overlapping an event span (an open
   event lasts until now) — is kept ``event_days``; any other footage ``continuous_days``,
   both per camera. A segment goes once its end is older than that.
2. **Camera cap** (``camera_cap``). While a camera's footage (held footage included, since it
   takes disk too) exceeds its ``max_bytes``, delete its oldest non-event footage; only when
   none is left, its oldest event footage.
3. **Total cap** (``total_cap``). The same across all cameras against ``max_total_bytes``,
   oldest first whichever camera it belongs to.
4. **Disk guard** (``disk_guard``). When free disk (plus what rules 1-3 already free) is under
   the floor (:func:`disk_floor`: the issue's max(5 GiB, one hour of recording), but never
   more than :data:`MAX_FLOOR_FRACTION` of the file system), delete the oldest non-event
   footage until the floor would be reached again, and no more. If that is not enough, event
   footage goes next, oldest first: a full disk stops all recording, new events included, so
   old event footage is the lesser loss. Held footage still never goes.

Overlaps are closed-interval: touching counts, erring towards keeping footage.
When a limit cannot be met because only held footage is left, the plan says so in
``shortfalls`` instead of deleting held footage. A limit missed with no held footage left
(a disk filled by other files) is not a shortfall: no footage of ours stands in the way.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

DAY = 86_400.0
#: The emergency guard's floor (issue 2): 5 GiB, or one hour of recording if that is more.
DEFAULT_MIN_FREE_BYTES = 5 * 1024**3
#: The guard's floor never asks for more than this fraction of the file system free. The
#: issue's max(5 GiB, one hour) assumes a disk far larger than either; on a small disk (a
#: 3 MiB tmpfs, a 4 GiB SD card) it exceeds the disk itself, so every pass deleted every
#: segment and no footage could exist. Capped at 20 %, at least 80 % of any disk stays
#: usable for footage, while a large disk keeps the issue's floor unchanged (20 % of a
#: 25 GiB disk is already 5 GiB). 20 % is the order of the reserve file systems keep for
#: themselves (ext4 reserves 5 %) plus room for the other files of a small system.
MAX_FLOOR_FRACTION = 0.2


class DeletionReason(StrEnum):
    """Why a segment is deleted (stable words, logged and reported)."""

    AGE = "age"
    CAMERA_CAP = "camera_cap"
    TOTAL_CAP = "total_cap"
    DISK_GUARD = "disk_guard"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A recorded segment: UTC epoch seconds ``[start, end]``, ``bytes`` on disk."""

    id: int
    camera: str
    start: float
    end: float
    bytes: int


@dataclass(frozen=True, slots=True)
class Span:
    """An event or a hold on ``camera`` (None: every camera), ``end`` None while open."""

    camera: str | None
    start: float
    end: float | None


@dataclass(frozen=True, slots=True)
class CameraPolicy:
    """Per-camera retention; defaults are issue 2's (3 days continuous, 30 days events)."""

    continuous_days: float = 3.0
    event_days: float = 30.0
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Deletion:
    """One segment to delete."""

    segment_id: int
    camera: str
    bytes: int
    reason: DeletionReason


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A limit still not met after the plan, because only held footage is left to delete.

    ``bytes`` is how far over the cap (or under the free-disk floor) it stays; ``camera`` is
    set for a camera cap; ``held_bytes`` is the held footage left in the limit's scope (that
    camera, or all cameras), always more than zero.
    """

    reason: DeletionReason
    camera: str | None
    bytes: int
    held_bytes: int


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """Deletions in the order they were decided, and limits that held footage keeps unmet."""

    deletions: tuple[Deletion, ...] = ()
    shortfalls: tuple[Shortfall, ...] = field(default_factory=tuple)

    @property
    def ids(self) -> list[int]:
        """Segment ids to delete."""
        return [d.segment_id for d in self.deletions]

    @property
    def bytes_freed(self) -> int:
        """Bytes the deletions free."""
        return sum(d.bytes for d in self.deletions)


class _SpanSet:
    """Merged, sorted closed intervals for fast 'does [s, e] touch any span' queries."""

    def __init__(self, spans: Iterable[tuple[float, float]]) -> None:
        starts: list[float] = []
        ends: list[float] = []
        for s, e in sorted(spans):
            if starts and s <= ends[-1]:
                ends[-1] = max(ends[-1], e)
            else:
                starts.append(s)
                ends.append(e)
        self._starts = starts
        self._ends = ends

    def overlaps(self, start: float, end: float) -> bool:
        i = bisect.bisect_right(self._starts, end) - 1
        return i >= 0 and self._ends[i] >= start


def _span_sets(spans: Iterable[Span]) -> tuple[dict[str, _SpanSet], _SpanSet]:
    per_camera: dict[str, list[tuple[float, float]]] = defaultdict(list)
    everywhere: list[tuple[float, float]] = []
    for sp in spans:
        interval = (sp.start, float("inf") if sp.end is None else sp.end)
        if sp.camera is None:
            everywhere.append(interval)
        else:
            per_camera[sp.camera].append(interval)
    return {cam: _SpanSet(iv) for cam, iv in per_camera.items()}, _SpanSet(everywhere)


def _touches(sets: tuple[dict[str, _SpanSet], _SpanSet], seg: SegmentInfo) -> bool:
    per_camera, everywhere = sets
    cam = per_camera.get(seg.camera)
    return everywhere.overlaps(seg.start, seg.end) or (
        cam is not None and cam.overlaps(seg.start, seg.end)
    )


def disk_floor(min_free_bytes: int, bytes_per_hour: int, total_bytes: int | None) -> int:
    """Free bytes the disk guard keeps: ``max(min_free_bytes, bytes_per_hour)`` (issue 2),
    capped at :data:`MAX_FLOOR_FRACTION` of ``total_bytes`` (the file system's size in bytes;
    None: unknown, no cap)."""
    floor = max(min_free_bytes, bytes_per_hour)
    if total_bytes is not None:
        floor = min(floor, int(total_bytes * MAX_FLOOR_FRACTION))
    return max(floor, 0)


def plan_retention(
    segments: Sequence[SegmentInfo],
    *,
    events: Sequence[Span],
    holds: Sequence[Span],
    policies: Mapping[str, CameraPolicy],
    now: float,
    max_total_bytes: int | None = None,
    free_bytes: int | None = None,
    total_bytes: int | None = None,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    bytes_per_hour: int = 0,
    default_policy: CameraPolicy | None = None,
) -> RetentionPlan:
    """Decide which segments to delete (rules 0-4 in the module docstring).

    Args:
        segments: every indexed segment.
        events: event spans (``end`` None while open).
        holds: active holds only (expired ones must be left out by the caller).
        policies: retention per camera name; cameras without one (removed from the
            configuration) get ``default_policy``, so their footage ages out normally.
        now: UTC epoch seconds.
        max_total_bytes: cap over all cameras, None for none.
        free_bytes: free disk where the media lives, None to skip the disk guard.
        total_bytes: size of that file system (``shutil.disk_usage().total``); caps the
            guard's floor (:func:`disk_floor`). None: no cap.
        min_free_bytes: the guard's floor (issue 2: 5 GiB).
        bytes_per_hour: estimated bytes one hour of recording of all cameras takes.
        default_policy: for cameras missing from ``policies``; None: :class:`CameraPolicy`'s
            defaults.

    Returns:
        The plan: deletions (each with its reason) and limits left unmet by held footage.
    """
    fallback = default_policy if default_policy is not None else CameraPolicy()
    hold_sets = _span_sets(holds)
    event_sets = _span_sets(events)
    held = {s.id for s in segments if _touches(hold_sets, s)}
    in_event = {s.id for s in segments if _touches(event_sets, s)}
    deleted: dict[int, Deletion] = {}
    shortfalls: list[Shortfall] = []

    def delete(seg: SegmentInfo, reason: DeletionReason) -> None:
        deleted[seg.id] = Deletion(seg.id, seg.camera, seg.bytes, reason)

    def oldest_first(pool: Iterable[SegmentInfo]) -> list[SegmentInfo]:
        # Non-event footage before event footage; within each, oldest first.
        unheld = (s for s in pool if s.id not in held and s.id not in deleted)
        return sorted(unheld, key=lambda s: (s.id in in_event, s.start, s.id))

    def trim(
        pool: Sequence[SegmentInfo], excess: int, reason: DeletionReason, camera: str | None
    ) -> None:
        for seg in oldest_first(pool):
            if excess <= 0:
                break
            delete(seg, reason)
            excess -= seg.bytes
        held_left = sum(s.bytes for s in pool if s.id in held)
        if excess > 0 and held_left > 0:
            shortfalls.append(Shortfall(reason, camera, excess, held_left))

    # 1. age
    for seg in segments:
        if seg.id in held:
            continue
        policy = policies.get(seg.camera, fallback)
        days = policy.event_days if seg.id in in_event else policy.continuous_days
        if seg.end < now - days * DAY:
            delete(seg, DeletionReason.AGE)

    # 2. per-camera cap
    by_camera: dict[str, list[SegmentInfo]] = defaultdict(list)
    for seg in segments:
        by_camera[seg.camera].append(seg)
    for camera in sorted(by_camera):
        cap = policies.get(camera, fallback).max_bytes
        if cap is None:
            continue
        used = sum(s.bytes for s in by_camera[camera] if s.id not in deleted)
        if used > cap:
            trim(by_camera[camera], used - cap, DeletionReason.CAMERA_CAP, camera)

    # 3. total cap
    if max_total_bytes is not None:
        used = sum(s.bytes for s in segments if s.id not in deleted)
        if used > max_total_bytes:
            trim(segments, used - max_total_bytes, DeletionReason.TOTAL_CAP, None)

    # 4. emergency disk guard
    if free_bytes is not None:
        floor = disk_floor(min_free_bytes, bytes_per_hour, total_bytes)
        projected = free_bytes + sum(d.bytes for d in deleted.values())
        if projected < floor:
            trim(segments, floor - projected, DeletionReason.DISK_GUARD, None)

    return RetentionPlan(deletions=tuple(deleted.values()), shortfalls=tuple(shortfalls))


def estimate_bytes_per_hour(
    segments: Iterable[SegmentInfo], now: float, window: float = 3600.0
) -> int:
    """Bytes one hour of recording takes now, from the segments that ended in the last ``window`` s.

    Each camera's rate is its recent bytes over its recent recorded seconds, scaled to an hour
    (so a camera recording for ten minutes already gives a full-hour figure); the cameras'
    rates add up. Cameras with no recent segment are not recording and add nothing. This is the
    "one hour of recording" of the emergency guard (issue 2; Frigate's storage maintainer
    estimates the same bandwidth from its recent recordings).
    """
    size: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for seg in segments:
        if now - window <= seg.end <= now + window and seg.end > seg.start:
            size[seg.camera] += seg.bytes
            seconds[seg.camera] += seg.end - seg.start
    return round(sum(size[c] / seconds[c] * 3600.0 for c in size if seconds[c] > 0))
