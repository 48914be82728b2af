"""Whether a new event should be pushed to one user now. Pure.

Issue 3 ("Notifications"): Web Push for new events, filtered per camera, zone and label, with
quiet hours and a per-user switch. The rules, in the order :func:`decide` applies them:

1. the user's switch is off: nothing;
2. the user may not see the camera (:func:`homewarden.domain.permissions.camera_access`,
   decided by the caller and passed in as ``may_see``): nothing - a notification names the
   camera and links to its footage, so it is held to the same rule as the footage;
3. ``cameras`` (None: all) does not hold the event's camera: nothing;
4. ``labels`` (None: all) does not hold the event's label (``motion``, ``person``): nothing;
5. ``zones`` (None: all): if the event's camera has a zone named in the list, the event must
   have entered one of the listed zones; a camera with none of the listed zones is not
   filtered by zone (so "only the porch steps" does not silence a camera without zones);
6. the user's local time falls in quiet hours: nothing;
7. otherwise: send.

Quiet hours are ``[quiet_start, quiet_end)`` in minutes of the user's local day (0..1439);
``quiet_start > quiet_end`` wraps past midnight (22:00-07:00); equal values mean no quiet
hours. Local time is computed by the caller (time zones need the tz database, which is I/O).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from homewarden.errors import InvalidRequestError

#: Minutes in a day; quiet-hour bounds are 0..MINUTES_PER_DAY - 1.
MINUTES_PER_DAY = 24 * 60
#: Longest list a preference may hold (cameras, labels or zones), and the longest name in it.
MAX_FILTER_ITEMS = 256
MAX_NAME_LENGTH = 64


class Verdict(StrEnum):
    """The outcome of :func:`decide`: send, or why not."""

    SEND = "send"
    SWITCHED_OFF = "switched_off"
    NOT_VISIBLE = "not_visible"
    CAMERA_FILTERED = "camera_filtered"
    LABEL_FILTERED = "label_filtered"
    ZONE_FILTERED = "zone_filtered"
    QUIET_HOURS = "quiet_hours"


@dataclass(frozen=True, slots=True)
class NotifyRules:
    """A user's notification preferences.

    Attributes:
        enabled: the per-user switch.
        cameras, labels, zones: allow-lists of names; None means all.
        quiet_start, quiet_end: minutes of the local day, 0..1439 (equal: no quiet hours).
    """

    enabled: bool = True
    cameras: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    zones: frozenset[str] | None = None
    quiet_start: int = 0
    quiet_end: int = 0


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What :func:`decide` needs of an event: its camera, label and the zones it entered, and
    ``camera_zones``, the names of every zone configured on that camera."""

    camera: str
    label: str
    zones: frozenset[str]
    camera_zones: frozenset[str] = frozenset()


def in_quiet_hours(minute: int, start: int, end: int) -> bool:
    """Whether local ``minute`` of the day (0..1439) is in ``[start, end)``, wrapping past
    midnight when ``start > end``; never when ``start == end``."""
    if start == end:
        return False
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def decide(rules: NotifyRules, event: EventFacts, local_minute: int, may_see: bool) -> Verdict:
    """Whether to push ``event`` to a user with ``rules`` whose local time is
    ``local_minute`` (0..1439) and who may (``may_see``) or may not see the event's camera.
    The rules and their order are in the module docstring."""
    if not rules.enabled:
        return Verdict.SWITCHED_OFF
    if not may_see:
        return Verdict.NOT_VISIBLE
    if rules.cameras is not None and event.camera not in rules.cameras:
        return Verdict.CAMERA_FILTERED
    if rules.labels is not None and event.label not in rules.labels:
        return Verdict.LABEL_FILTERED
    if (
        rules.zones is not None
        and rules.zones & event.camera_zones
        and not rules.zones & event.zones
    ):
        return Verdict.ZONE_FILTERED
    if in_quiet_hours(local_minute, rules.quiet_start, rules.quiet_end):
        return Verdict.QUIET_HOURS
    return Verdict.SEND


def parse_clock(text: str) -> int:
    """Minutes of the day of ``HH:MM`` (24-hour clock, ``00:00``..``23:59``).

    Raises:
        InvalidRequestError: not of that form.
    """
    hours, sep, minutes = text.strip().partition(":")
    if (
        not sep
        or not (hours.isascii() and hours.isdigit() and 1 <= len(hours) <= 2)
        or not (minutes.isascii() and minutes.isdigit() and len(minutes) == 2)
    ):
        raise InvalidRequestError(f"time {text!r} is not HH:MM")
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise InvalidRequestError(f"time {text!r} is not a time of day (00:00..23:59)")
    return h * 60 + m


def format_clock(minute: int) -> str:
    """``HH:MM`` of a minute of the day (0..1439)."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def check_minute(name: str, value: int) -> int:
    """``value`` when it is a minute of the day (0..1439).

    Raises:
        InvalidRequestError: outside that range.
    """
    if not 0 <= value < MINUTES_PER_DAY:
        raise InvalidRequestError(f"{name} must be a minute of the day (0..1439), got {value}")
    return value


def clean_names(name: str, values: Iterable[str] | None) -> frozenset[str] | None:
    """A filter list as a set (None stays None: all), each name stripped; empty names dropped.

    Raises:
        InvalidRequestError: more than :data:`MAX_FILTER_ITEMS` names, or a name longer than
            :data:`MAX_NAME_LENGTH` or holding characters other than letters, digits, - and _
            (the camera and zone naming rule of the configuration).
    """
    if values is None:
        return None
    out: set[str] = set()
    for raw in values:
        item = raw.strip()
        if not item:
            continue
        if len(item) > MAX_NAME_LENGTH or not all(c.isalnum() or c in "-_" for c in item):
            raise InvalidRequestError(f"{name}: {item[:80]!r} is not a valid name")
        out.add(item)
    if len(out) > MAX_FILTER_ITEMS:
        raise InvalidRequestError(f"{name}: at most {MAX_FILTER_ITEMS} names")
    return frozenset(out)


def sorted_or_none(values: Collection[str] | None) -> list[str] | None:
    """A filter set as a sorted list for storage (None stays None)."""
    return None if values is None else sorted(values)
