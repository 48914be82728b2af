"""Event state machine: open, extend, close, finish."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homewarden.domain.events import EventChange, EventTracker
from homewarden.domain.motion import MotionResult
from homewarden.errors import InvalidRequestError

QUIET = MotionResult(0.0, False, frozenset(), None)


def moving(score: float = 0.01, *zones: str) -> MotionResult:
    return MotionResult(score, True, frozenset(zones), (0.1, 0.1, 0.2, 0.2))


def test_quiet_observations_change_nothing() -> None:
    t = EventTracker(post_capture=5)
    assert t.observe(100.0, QUIET) == []
    assert not t.is_open
    assert t.finish(200.0) == []


def test_open_at_ts_with_best_frame() -> None:
    t = EventTracker(post_capture=5)
    assert t.observe(100.0, moving(0.02, "porch")) == [
        EventChange("open", 100.0, None, 0.02, frozenset({"porch"}), best_frame=True)
    ]
    assert t.is_open


def test_open_at_start_hint() -> None:
    t = EventTracker(post_capture=5)
    [change] = t.observe(100.0, moving(), start_hint=98.4)
    assert change.kind == "open"
    assert change.start == 98.4
    # A hint later than the observation is clamped to it.
    t2 = EventTracker(post_capture=5)
    assert t2.observe(100.0, moving(), start_hint=101.0)[0].start == 100.0


def test_start_hint_ignored_while_open() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving(0.5))
    assert t.observe(101.0, moving(0.1), start_hint=50.0) == []


def test_update_on_new_peak_and_new_zone_only() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving(0.02, "porch"))
    # Lower score, same zone: nothing to tell.
    assert t.observe(100.2, moving(0.01, "porch")) == []
    # New peak.
    assert t.observe(100.4, moving(0.05, "porch")) == [
        EventChange("update", 100.0, None, 0.05, frozenset({"porch"}), best_frame=True)
    ]
    # New zone without a new peak: zones accumulate, not the best frame.
    assert t.observe(100.6, moving(0.03, "drive")) == [
        EventChange("update", 100.0, None, 0.05, frozenset({"porch", "drive"}), best_frame=False)
    ]
    # Equal peak is not a new best frame.
    assert t.observe(100.8, moving(0.05)) == []


def test_close_after_post_capture_quiet() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving(0.2, "porch"))
    t.observe(102.0, moving(0.1))
    assert t.observe(104.0, QUIET) == []
    assert t.observe(106.9, QUIET) == []  # 4.9 s since the last motion
    [close] = t.observe(107.0, QUIET)
    assert close == EventChange("close", 100.0, 107.0, 0.2, frozenset({"porch"}))
    assert not t.is_open


def test_close_end_is_last_motion_plus_post_capture_even_when_observed_late() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving())
    # Quiet samples come only every few seconds (keyframes): end is not the sample time.
    [close] = t.observe(112.0, QUIET)
    assert close.end == 105.0


def test_motion_within_post_capture_extends() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving())
    t.observe(103.0, QUIET)
    t.observe(104.5, moving())
    assert t.observe(109.0, QUIET) == []
    assert t.observe(109.5, QUIET)[0].end == 109.5


def test_next_event_after_close() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving(0.5, "a"))
    t.observe(106.0, QUIET)
    [opened] = t.observe(110.0, moving(0.1), start_hint=103.0)
    # The hint would overlap the previous event (ended 105.0): clamped to its end.
    assert opened == EventChange("open", 105.0, None, 0.1, frozenset(), best_frame=True)


def test_finish_closes_at_min_of_ts_and_post_capture() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving(0.3))
    [close] = t.finish(102.0)
    assert close == EventChange("close", 100.0, 102.0, 0.3, frozenset())
    assert not t.is_open
    t.observe(110.0, moving())
    t.observe(111.0, QUIET)
    assert t.finish(130.0)[0].end == 115.0
    assert t.finish(131.0) == []


def test_finish_never_ends_before_start() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving())
    assert t.finish(90.0)[0].end == 100.0


def test_zero_post_capture_closes_on_first_quiet() -> None:
    t = EventTracker(post_capture=0)
    t.observe(100.0, moving())
    t.observe(100.2, moving())
    [close] = t.observe(100.4, QUIET)
    assert (close.start, close.end) == (100.0, 100.2)


def test_time_going_backwards_is_clamped() -> None:
    t = EventTracker(post_capture=5)
    t.observe(100.0, moving())
    t.observe(99.0, moving())  # clock jitter: treated as 100.0
    [close] = t.observe(105.0, QUIET)
    assert close.end == 105.0


def test_negative_post_capture_raises() -> None:
    with pytest.raises(InvalidRequestError):
        EventTracker(post_capture=-1)


# -- property test -------------------------------------------------------------------------

observation = st.tuples(
    st.floats(0.0, 8.0, allow_nan=False),  # seconds since the previous observation
    st.booleans(),  # moving
    st.floats(0.0005, 1.0, allow_nan=False),  # score when moving
    st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=2),
    st.one_of(st.none(), st.floats(0.0, 10.0, allow_nan=False)),  # start hint, s before ts
)


@settings(max_examples=300, deadline=None)
@given(st.floats(0.0, 10.0, allow_nan=False), st.lists(observation, max_size=60))
def test_events_are_well_formed(
    post_capture: float,
    observations: list[tuple[float, bool, float, frozenset[str], float | None]],
) -> None:
    t = EventTracker(post_capture)
    ts = 1_700_000_000.0
    changes: list[EventChange] = []
    moving_scores: list[list[float]] = []
    moving_zones: list[frozenset[str]] = []
    for dt, is_moving, score, zones, hint in observations:
        ts += dt
        result = MotionResult(score, True, zones, (0, 0, 1, 1)) if is_moving else QUIET
        was_open = t.is_open
        out = t.observe(ts, result, None if hint is None else ts - hint)
        if is_moving:
            if not was_open:
                assert out[0].kind == "open"
                moving_scores.append([])
                moving_zones.append(frozenset())
            moving_scores[-1].append(score)
            moving_zones[-1] |= zones
        changes.extend(out)
        assert t.is_open == (bool(changes) and changes[-1].kind != "close")
    changes.extend(t.finish(ts + 1.0))
    assert not t.is_open

    events: list[list[EventChange]] = []
    for c in changes:
        if c.kind == "open":
            assert not events or events[-1][-1].kind == "close"
            assert c.best_frame
            events.append([c])
        else:
            assert events
            assert events[-1][-1].kind != "close"
            events[-1].append(c)

    previous_end = float("-inf")
    for ev, scores, zones in zip(events, moving_scores, moving_zones, strict=True):
        opened, closed = ev[0], ev[-1]
        assert closed.kind == "close"
        assert closed.end is not None
        assert all(c.end is None for c in ev[:-1])
        assert all(c.start == opened.start for c in ev)
        assert closed.end >= opened.start
        assert opened.start >= previous_end  # never overlap
        previous_end = closed.end
        assert closed.peak_score == max(scores)
        assert closed.zones == zones
        peaks = [c.peak_score for c in ev]
        assert peaks == sorted(peaks)
        for before, c in itertools.pairwise(ev[:-1]):
            assert c.kind == "update"
            assert c.best_frame == (c.peak_score > before.peak_score)
            assert c.best_frame or c.zones != before.zones
