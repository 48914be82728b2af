"""Event state: when motion opens, extends and closes an event. Pure.

INTERFACE FILE — bodies are being implemented (helper: domain-motion). Signatures are fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from homewarden.domain.motion import MotionResult


@dataclass(frozen=True, slots=True)
class EventChange:
    """kind: "open", "update" or "close". ``end`` is set on close. ``best_frame`` is True when
    this observation is the new peak (the caller keeps that frame for the snapshot)."""

    kind: str
    start: float
    end: float | None
    peak_score: float
    zones: frozenset[str] = field(default_factory=frozenset)
    best_frame: bool = False


class EventTracker:
    """Turns a stream of (time, MotionResult) into event changes.

    An event opens on the first moving observation (at ``start_hint`` if given, the refined
    first changed frame), extends while motion continues, and closes ``post_capture`` seconds
    after the last moving observation (end = last moving time + post_capture... see impl).
    """

    def __init__(self, post_capture: float) -> None:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    def observe(
        self, ts: float, result: MotionResult, start_hint: float | None = None
    ) -> list[EventChange]:
        raise NotImplementedError

    def finish(self, ts: float) -> list[EventChange]:
        """Close any open event at ``ts`` (recorder stopping or camera lost)."""
        raise NotImplementedError
