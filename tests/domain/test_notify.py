"""The pure notification rules: switch, visibility, camera/label/zone filters, quiet hours."""

from __future__ import annotations

import pytest

from homewarden.domain.notify import (
    EventFacts,
    NotifyRules,
    Verdict,
    clean_names,
    decide,
    format_clock,
    in_quiet_hours,
    parse_clock,
)
from homewarden.errors import InvalidRequestError

PORCH = EventFacts("porch", "person", frozenset({"steps"}), frozenset({"steps", "path"}))
GARAGE = EventFacts("garage", "motion", frozenset(), frozenset())
NOON = 12 * 60


def test_defaults_send_everything() -> None:
    assert decide(NotifyRules(), PORCH, NOON, may_see=True) is Verdict.SEND
    assert decide(NotifyRules(), GARAGE, 0, may_see=True) is Verdict.SEND


def test_switch_and_visibility_come_first() -> None:
    assert decide(NotifyRules(enabled=False), PORCH, NOON, True) is Verdict.SWITCHED_OFF
    assert decide(NotifyRules(), PORCH, NOON, may_see=False) is Verdict.NOT_VISIBLE
    # a filter that would allow the camera does not override the camera access rule
    rules = NotifyRules(cameras=frozenset({"porch"}))
    assert decide(rules, PORCH, NOON, may_see=False) is Verdict.NOT_VISIBLE


def test_camera_filter() -> None:
    rules = NotifyRules(cameras=frozenset({"garage"}))
    assert decide(rules, PORCH, NOON, True) is Verdict.CAMERA_FILTERED
    assert decide(rules, GARAGE, NOON, True) is Verdict.SEND
    assert decide(NotifyRules(cameras=frozenset()), GARAGE, NOON, True) is Verdict.CAMERA_FILTERED


def test_label_filter() -> None:
    rules = NotifyRules(labels=frozenset({"person"}))
    assert decide(rules, PORCH, NOON, True) is Verdict.SEND
    assert decide(rules, GARAGE, NOON, True) is Verdict.LABEL_FILTERED


def test_zone_filter_applies_only_to_cameras_with_those_zones() -> None:
    steps = NotifyRules(zones=frozenset({"steps"}))
    path = NotifyRules(zones=frozenset({"path"}))
    assert decide(steps, PORCH, NOON, True) is Verdict.SEND
    assert decide(path, PORCH, NOON, True) is Verdict.ZONE_FILTERED
    # porch has a "path" zone, and an event outside every zone is not in it
    outside = EventFacts("porch", "motion", frozenset(), frozenset({"steps", "path"}))
    assert decide(steps, outside, NOON, True) is Verdict.ZONE_FILTERED
    # garage has none of the listed zones: not filtered by zone
    assert decide(path, GARAGE, NOON, True) is Verdict.SEND


@pytest.mark.parametrize(
    ("minute", "start", "end", "quiet"),
    [
        (NOON, 0, 0, False),  # equal bounds: no quiet hours
        (0, 0, 0, False),
        (9 * 60, 9 * 60, 17 * 60, True),  # start is inside
        (17 * 60, 9 * 60, 17 * 60, False),  # end is outside
        (8 * 60 + 59, 9 * 60, 17 * 60, False),
        (23 * 60, 22 * 60, 7 * 60, True),  # wraps past midnight
        (3 * 60, 22 * 60, 7 * 60, True),
        (7 * 60, 22 * 60, 7 * 60, False),
        (NOON, 22 * 60, 7 * 60, False),
        (1439, 1439, 0, True),
        (0, 1439, 0, False),
    ],
)
def test_quiet_hours(minute: int, start: int, end: int, quiet: bool) -> None:
    assert in_quiet_hours(minute, start, end) is quiet
    rules = NotifyRules(quiet_start=start, quiet_end=end)
    expected = Verdict.QUIET_HOURS if quiet else Verdict.SEND
    assert decide(rules, PORCH, minute, True) is expected


def test_filters_are_checked_before_quiet_hours() -> None:
    rules = NotifyRules(labels=frozenset({"person"}), quiet_start=0, quiet_end=1439)
    assert decide(rules, GARAGE, NOON, True) is Verdict.LABEL_FILTERED
    assert decide(rules, PORCH, NOON, True) is Verdict.QUIET_HOURS


def test_clock_parsing() -> None:
    assert parse_clock("00:00") == 0
    assert parse_clock("7:05") == 425
    assert parse_clock(" 23:59 ") == 1439
    assert format_clock(425) == "07:05"
    assert format_clock(parse_clock("22:30")) == "22:30"
    for bad in (
        "24:00",
        "12:60",
        "12",
        "12:5",
        "ab:cd",
        "",
        "-1:00",
        "\uff11\uff12:\uff10\uff10",
        "12:00:00",
    ):
        with pytest.raises(InvalidRequestError):
            parse_clock(bad)


def test_names_are_cleaned_and_checked() -> None:
    assert clean_names("cameras", None) is None
    assert clean_names("cameras", [" porch ", "", "porch", "garage-2"]) == frozenset(
        {"porch", "garage-2"}
    )
    assert clean_names("zones", []) == frozenset()
    with pytest.raises(InvalidRequestError, match="zones"):
        clean_names("zones", ["a b"])
    with pytest.raises(InvalidRequestError):
        clean_names("labels", ["x" * 65])
    with pytest.raises(InvalidRequestError, match="at most"):
        clean_names("cameras", [f"c{i}" for i in range(257)])
