"""Plain records the index returns. Times are float UTC epoch seconds; sizes are bytes."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class NewSegment:
    """A finished segment file to index. ``path`` is relative to the media dir; ``sealed``
    when the file is sealed (``homewarden.crypto.sealing``) to household key ``key_id``
    (16 bytes; None for a plaintext file)."""

    camera: str
    start: float
    end: float
    bytes: int
    keyframes: int
    motion_score: float
    path: str
    sealed: bool = False
    key_id: builtins.bytes | None = None

    @property
    def duration(self) -> float:
        """Seconds covered, ``end - start``."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """An indexed segment; ``sealed`` / ``key_id`` as :class:`NewSegment`'s."""

    id: int
    camera: str
    start: float
    end: float
    duration: float
    bytes: int
    keyframes: int
    motion_score: float
    path: str
    sealed: bool = False
    key_id: builtins.bytes | None = None


@dataclass(frozen=True, slots=True)
class GapRecord:
    """No footage for ``camera`` from ``start`` to ``end`` (None while ongoing), and why:
    ``reason`` is the source error's word for an outage (``unreachable``, ``stalled``, ...)
    or ``not_recording`` for time no recorder ran for the camera (stopped, crashed)."""

    id: int
    camera: str
    start: float
    end: float | None
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A motion (or person) event. ``end`` is None while the event is open."""

    id: int
    camera: str
    start: float
    end: float | None
    label: str
    peak_score: float
    zones: tuple[str, ...] = field(default_factory=tuple)
    snapshot_path: str | None = None


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """Footage of ``camera`` (None: every camera) in ``[start, end]`` must not be deleted."""

    id: int
    camera: str | None
    start: float
    end: float
    reason: str
    created_at: float
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class HourSummary:
    """Recorded seconds, bytes, segment and event counts for one UTC hour of one camera."""

    camera: str
    hour_start: float
    recorded_seconds: float
    bytes: int
    segments: int
    events: int
