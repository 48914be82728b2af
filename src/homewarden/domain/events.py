"""Event state: when motion opens, extends and closes an event. Pure.

The state machine has two states::

    quiet --moving--> open          emits "open"   (start = start_hint or ts, best_frame)
    open  --moving--> open          emits "update" when the peak or the zones change
    open  --quiet for >= post_capture s--> quiet
                                    emits "close"  (end = last moving ts + post_capture)
    open  --finish(ts)--> quiet     emits "close"  (end = min(ts, last moving + post_capture))

Times are UTC epoch seconds (float). Events of one tracker never overlap: a new event never
starts before the previous one ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from homewarden.domain.motion import MotionResult
from homewarden.errors import InvalidRequestError

OPEN = "open"
UPDATE = "update"
CLOSE = "close"


@dataclass(frozen=True, slots=True)
class EventChange:
    """kind: "open", "update" or "close". ``end`` is set on close. ``best_frame`` is True when
    this observation is the new peak (the caller keeps that frame for the snapshot).

    ``start``/``end`` are UTC epoch seconds; ``peak_score`` is the highest motion score seen
    (0..1); ``zones`` is the union of every zone entered so far.
    """

    kind: str
    start: float
    end: float | None
    peak_score: float
    zones: frozenset[str] = field(default_factory=frozenset)
    best_frame: bool = False


class EventTracker:
    """Turns a stream of (time, MotionResult) into event changes.

    An event opens on the first moving observation, at ``start_hint`` if given (the refined
    first changed frame; clamped to ``[end of the previous event, ts]``) else at ``ts``. Each
    further moving observation extends it; an "update" is emitted when the peak score rises
    (``best_frame=True``) or a new zone is entered. The event closes when an observation
    arrives with no motion for ``post_capture`` seconds or more since the last moving one; its
    end is ``last moving ts + post_capture`` (never after that observation). Only a quiet
    observation closes an event: a moving one extends it whatever the gap since the last
    (quiet is known only from quiet samples; a lost camera ends events through
    :meth:`finish`). ``post_capture`` mirrors Frigate's ``record.alerts.post_capture`` /
    ``record.detections.post_capture`` (seconds kept after the activity; default 5 s).

    Observations are expected in time order; a timestamp earlier than the previous one (camera
    clock jitter) is treated as the previous one so the event times stay ordered.

    Raises :class:`InvalidRequestError` when ``post_capture`` is negative.
    """

    def __init__(self, post_capture: float) -> None:
        if post_capture < 0:
            raise InvalidRequestError(f"post_capture must be >= 0 s, got {post_capture}")
        self.post_capture = float(post_capture)
        self._open = False
        self._start = 0.0
        self._last_moving = 0.0
        self._peak = 0.0
        self._zones: frozenset[str] = frozenset()
        self._last_ts: float | None = None
        self._last_end: float | None = None

    @property
    def is_open(self) -> bool:
        """True while an event is open (opened and not yet closed)."""
        return self._open

    def observe(
        self, ts: float, result: MotionResult, start_hint: float | None = None
    ) -> list[EventChange]:
        """Feed one observation at ``ts``; return the changes it causes (possibly none).

        ``start_hint`` is used only when this observation opens an event.
        """
        ts = self._monotonic(ts)
        changes: list[EventChange] = []
        if not result.moving:
            if self._open and ts - self._last_moving >= self.post_capture:
                changes.append(self._close(self._last_moving + self.post_capture))
            return changes
        if not self._open:
            changes.append(self._begin(ts, result, start_hint))
            return changes
        self._last_moving = ts
        best = result.score > self._peak
        zones = self._zones | result.zones
        if best or zones != self._zones:
            self._peak = max(self._peak, result.score)
            self._zones = zones
            changes.append(
                EventChange(UPDATE, self._start, None, self._peak, self._zones, best_frame=best)
            )
        return changes

    def finish(self, ts: float) -> list[EventChange]:
        """Close any open event at ``ts`` (recorder stopping or camera lost).

        The end is ``min(ts, last moving + post_capture)``, never before the start.
        """
        if not self._open:
            return []
        ts = self._monotonic(ts)
        return [self._close(min(ts, self._last_moving + self.post_capture))]

    # -- internals -------------------------------------------------------------------------

    def _monotonic(self, ts: float) -> float:
        if self._last_ts is not None and ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        return ts

    def _begin(self, ts: float, result: MotionResult, start_hint: float | None) -> EventChange:
        start = ts if start_hint is None else min(start_hint, ts)
        if self._last_end is not None:
            start = max(start, self._last_end)
        self._open = True
        self._start = start
        self._last_moving = ts
        self._peak = result.score
        self._zones = result.zones
        return EventChange(OPEN, start, None, self._peak, self._zones, best_frame=True)

    def _close(self, end: float) -> EventChange:
        end = max(end, self._start)
        self._open = False
        self._last_end = end
        return EventChange(CLOSE, self._start, end, self._peak, self._zones)
