"""Pure retention rules (issue 2 "Retention"): table tests and properties."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from homewarden.domain.retention import (
    DAY,
    DEFAULT_MIN_FREE_BYTES,
    MAX_FLOOR_FRACTION,
    CameraPolicy,
    DeletionReason,
    RetentionPlan,
    SegmentInfo,
    Shortfall,
    Span,
    disk_floor,
    estimate_bytes_per_hour,
    plan_retention,
)

NOW = 100 * DAY
GIB = 1024**3


def segs(camera: str, *starts_days: float, size: int = 100, first_id: int = 1) -> list[SegmentInfo]:
    """Ten-second segments of ``camera`` starting at ``NOW - d days`` for each d."""
    return [
        SegmentInfo(first_id + i, camera, NOW - d * DAY, NOW - d * DAY + 10, size)
        for i, d in enumerate(starts_days)
    ]


def plan(segments: list[SegmentInfo], **kw: object) -> RetentionPlan:
    kw.setdefault("events", [])
    kw.setdefault("holds", [])
    kw.setdefault("policies", {})
    return plan_retention(segments, now=NOW, **kw)  # type: ignore[arg-type]


def reasons(p: RetentionPlan) -> dict[int, str]:
    return {d.segment_id: d.reason.value for d in p.deletions}


# -- age --------------------------------------------------------------------------------------


def test_age_keeps_event_footage_longer() -> None:
    s = segs("a", 40, 10, 5, 1)  # ids 1..4
    events = [Span("a", s[1].start + 2, s[1].start + 4), Span("a", s[2].start, s[2].end)]
    p = plan(s, events=events, policies={"a": CameraPolicy(continuous_days=3, event_days=30)})
    # 40 d: past both windows; 10 d and 5 d: event footage within 30 d; 1 d: within 3 d
    assert reasons(p) == {1: "age"}
    p = plan(s, policies={"a": CameraPolicy(continuous_days=3, event_days=30)})
    assert reasons(p) == {1: "age", 2: "age", 3: "age"}


def test_unconfigured_camera_gets_default_policy() -> None:
    # defaults: 3 days continuous, 30 days events (issue 2)
    p = plan(segs("gone", 4, 2))
    assert reasons(p) == {1: "age"}
    p = plan(segs("gone", 4, 2), default_policy=CameraPolicy(continuous_days=1))
    assert reasons(p) == {1: "age", 2: "age"}


def test_open_event_makes_later_footage_event_footage() -> None:
    s = segs("a", 10, 9)
    p = plan(s, events=[Span("a", s[0].start + 5, None)], policies={"a": CameraPolicy(3, 30)})
    assert p.deletions == ()


def test_event_on_another_camera_does_not_count() -> None:
    s = segs("a", 10)
    p = plan(s, events=[Span("b", s[0].start, s[0].end)], policies={"a": CameraPolicy(3, 30)})
    assert reasons(p) == {1: "age"}


def test_touching_spans_count_as_overlap() -> None:
    s = segs("a", 10)
    touching = Span("a", s[0].end, s[0].end + 5)
    assert plan(s, events=[touching]).deletions == ()
    assert plan(s, holds=[touching]).deletions == ()


# -- holds ------------------------------------------------------------------------------------


def test_holds_beat_every_rule() -> None:
    s = segs("a", 50, 40, 0.5, size=GIB)
    holds = [Span("a", s[0].start, s[0].end), Span(None, s[1].start + 1, s[1].start + 2)]
    p = plan(
        s,
        holds=holds,
        policies={"a": CameraPolicy(continuous_days=0, event_days=0, max_bytes=1)},
        max_total_bytes=1,
        free_bytes=0,
        bytes_per_hour=10 * GIB,
    )
    assert reasons(p) == {3: "age"}
    # caps and the guard stay unmet: only held footage is left
    assert {(x.reason, x.camera) for x in p.shortfalls} == {
        (DeletionReason.CAMERA_CAP, "a"),
        (DeletionReason.TOTAL_CAP, None),
        (DeletionReason.DISK_GUARD, None),
    }


# -- caps -------------------------------------------------------------------------------------


def test_camera_cap_deletes_oldest_non_event_first_and_stops_under_cap() -> None:
    s = segs("a", 2.9, 2.5, 2.0, 1.5, 1.0, 0.5)  # ids 1..6, 100 bytes each
    events = [Span("a", s[0].start, s[0].end), Span("a", s[3].start, s[3].end)]  # ids 1, 4
    p = plan(s, events=events, policies={"a": CameraPolicy(max_bytes=350)})
    # 600 bytes > 350: drop oldest non-event ids 2, 3, then 5 -> 300 bytes
    assert [d.segment_id for d in p.deletions] == [2, 3, 5]
    assert set(reasons(p).values()) == {"camera_cap"}
    p = plan(s, events=events, policies={"a": CameraPolicy(max_bytes=150)})
    # non-event 2, 3, 5, 6 go first, then the oldest event footage (id 1)
    assert [d.segment_id for d in p.deletions] == [2, 3, 5, 6, 1]
    assert p.shortfalls == ()


def test_camera_cap_counts_held_bytes_but_never_deletes_them() -> None:
    s = segs("a", 2, 1, size=100)
    p = plan(s, holds=[Span("a", s[0].start, s[0].end)], policies={"a": CameraPolicy(max_bytes=50)})
    assert [d.segment_id for d in p.deletions] == [2]
    assert p.shortfalls == (Shortfall(DeletionReason.CAMERA_CAP, "a", 50, 100),)


def test_total_cap_deletes_oldest_across_cameras() -> None:
    s = segs("a", 2.0, 1.0, first_id=1) + segs("b", 2.5, 1.5, 0.5, first_id=10)
    p = plan(s, max_total_bytes=250)
    assert [(d.segment_id, d.reason.value) for d in p.deletions] == [
        (10, "total_cap"),
        (1, "total_cap"),
        (11, "total_cap"),
    ]


def test_caps_count_age_deletions_first() -> None:
    s = segs("a", 5, 1, 0.5)
    p = plan(s, policies={"a": CameraPolicy(max_bytes=200)})
    assert reasons(p) == {1: "age"}  # after the age rule 200 bytes remain: at the cap


# -- emergency disk guard ------------------------------------------------------------------


def test_disk_guard_frees_up_to_the_floor() -> None:
    s = segs("a", 2.0, 1.5, 1.0, 0.5, size=GIB)
    events = [Span("a", s[0].start, s[0].end)]
    # floor = max(5 GiB, 1 GiB/h) = 5 GiB; free 3.5 GiB -> free 2 GiB: non-event ids 2, 3
    p = plan(s, events=events, free_bytes=int(3.5 * GIB), bytes_per_hour=GIB)
    assert reasons(p) == {2: "disk_guard", 3: "disk_guard"}
    # one hour of recording above 5 GiB sets the floor: 7 GiB -> needs 3.5 GiB: all
    # non-event footage (3 GiB), then the event footage
    p = plan(s, events=events, free_bytes=int(3.5 * GIB), bytes_per_hour=7 * GIB)
    assert [d.segment_id for d in p.deletions] == [2, 3, 4, 1]
    assert p.shortfalls == ()


def test_disk_guard_idle_above_floor_and_credits_earlier_deletions() -> None:
    assert plan(segs("a", 2, 1, size=GIB), free_bytes=5 * GIB, bytes_per_hour=GIB).deletions == ()
    s = segs("a", 10, 1, size=GIB)
    # the age rule already frees 1 GiB, enough to lift 4.5 GiB free over the 5 GiB floor
    p = plan(s, free_bytes=int(4.5 * GIB))
    assert reasons(p) == {1: "age"}
    assert plan(s[1:], free_bytes=None).deletions == ()  # no disk figure: guard skipped


def test_min_free_bytes_configurable() -> None:
    s = segs("a", 1, size=100)
    assert plan(s, free_bytes=150, min_free_bytes=200).ids == [1]
    assert plan(s, free_bytes=250, min_free_bytes=200).ids == []


MIB = 1024**2


def test_disk_guard_floor_is_capped_on_a_small_disk() -> None:
    # Regression: on a 3 MiB disk the floor max(5 GiB, one hour of recording) exceeded the
    # whole disk, so every pass deleted every segment. The floor is capped at a fraction of
    # the disk: 20 % of 3 MiB = 614.4 KiB.
    total = 3 * MIB
    s = segs("a", 0.05, 0.04, 0.03, 0.02, 0.01, size=500 * 1024)  # 2.5 MiB of footage
    free = total - 5 * 500 * 1024 - 100 * 1024  # the rest: 100 KiB of other files
    p = plan(s, free_bytes=free, total_bytes=total, bytes_per_hour=900 * MIB)
    # 472 KiB free, 614.4 KiB wanted: the oldest one goes, the other four stay
    assert reasons(p) == {1: "disk_guard"}
    assert p.shortfalls == ()
    assert disk_floor(DEFAULT_MIN_FREE_BYTES, 900 * MIB, total) == int(total * MAX_FLOOR_FRACTION)
    # the same with min_free_bytes=0: one hour of recording is capped just the same
    assert plan(
        s, free_bytes=free, total_bytes=total, min_free_bytes=0, bytes_per_hour=900 * MIB
    ).ids == [1]


def test_disk_floor_is_the_larger_of_min_free_and_an_hour_below_the_cap() -> None:
    assert disk_floor(5 * GIB, GIB, None) == 5 * GIB
    assert disk_floor(5 * GIB, 7 * GIB, None) == 7 * GIB
    assert disk_floor(5 * GIB, 7 * GIB, 100 * GIB) == 7 * GIB  # 20 % of 100 GiB is more
    assert disk_floor(5 * GIB, 7 * GIB, 10 * GIB) == 2 * GIB
    assert disk_floor(0, 0, 10 * GIB) == 0


def test_no_shortfall_when_there_is_no_footage_at_all() -> None:
    # Regression: "still N bytes short; only held footage is left" with no footage at all
    # (the disk is full of other files). Nothing of ours is left to delete or to blame.
    p = plan([], free_bytes=0, total_bytes=100 * GIB, bytes_per_hour=GIB)
    assert p == RetentionPlan()
    s = segs("a", 1, size=100)
    p = plan(s, free_bytes=0, total_bytes=100 * GIB)
    assert p.ids == [1]
    assert p.shortfalls == ()  # short, but no held footage is what keeps it short


def test_shortfall_names_the_held_footage_that_blocks_it() -> None:
    s = segs("a", 2, 1, size=100)
    p = plan(s, holds=[Span("a", s[0].start, s[0].end)], free_bytes=0, total_bytes=100 * GIB)
    assert p.ids == [2]
    assert p.shortfalls == (Shortfall(DeletionReason.DISK_GUARD, None, 5 * GIB - 100, 100),)


# -- properties -----------------------------------------------------------------------------

CAMERAS = ["a", "b", "c"]


def _touch(seg: SegmentInfo, spans: list[Span]) -> bool:
    for sp in spans:
        end = float("inf") if sp.end is None else sp.end
        if (
            (sp.camera is None or sp.camera == seg.camera)
            and seg.start <= end
            and sp.start <= seg.end
        ):
            return True
    return False


@dataclass(frozen=True)
class Scenario:
    segments: list[SegmentInfo]
    events: list[Span]
    holds: list[Span]
    policies: dict[str, CameraPolicy]
    max_total_bytes: int | None
    free_bytes: int | None
    total_bytes: int | None
    min_free_bytes: int
    bytes_per_hour: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(0, 40))
    segments = []
    for i in range(n):
        start = draw(st.floats(0, 10 * DAY, allow_nan=False))
        segments.append(
            SegmentInfo(
                id=i + 1,
                camera=draw(st.sampled_from(CAMERAS)),
                start=NOW - start,
                end=NOW - start + draw(st.floats(1, 600)),
                bytes=draw(st.integers(0, 1000)),
            )
        )

    def spans(cameras: list[str | None], open_ok: bool) -> list[Span]:
        out = []
        for _ in range(draw(st.integers(0, 6))):
            start = NOW - draw(st.floats(0, 10 * DAY))
            length = draw(st.floats(0, DAY / 4))
            end = None if open_ok and draw(st.booleans()) else start + length
            out.append(Span(draw(st.sampled_from(cameras)), start, end))
        return out

    policies = {
        cam: CameraPolicy(
            continuous_days=draw(st.floats(0, 8)),
            event_days=draw(st.floats(0, 12)),
            max_bytes=draw(st.none() | st.integers(1, 10_000)),
        )
        for cam in CAMERAS
        if draw(st.booleans())
    }
    return Scenario(
        segments=segments,
        events=spans([*CAMERAS], open_ok=True),
        holds=spans([*CAMERAS, None], open_ok=False),
        policies=policies,
        max_total_bytes=draw(st.none() | st.integers(1, 20_000)),
        free_bytes=draw(st.none() | st.integers(0, 20_000)),
        total_bytes=draw(st.none() | st.integers(0, 100_000)),
        min_free_bytes=draw(st.integers(0, 20_000)),
        bytes_per_hour=draw(st.integers(0, 20_000)),
    )


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_retention_properties(sc: Scenario) -> None:
    segments, events, holds, policies = sc.segments, sc.events, sc.holds, sc.policies
    p = plan_retention(
        segments,
        events=events,
        holds=holds,
        policies=policies,
        now=NOW,
        max_total_bytes=sc.max_total_bytes,
        free_bytes=sc.free_bytes,
        total_bytes=sc.total_bytes,
        min_free_bytes=sc.min_free_bytes,
        bytes_per_hour=sc.bytes_per_hour,
    )

    by_id = {s.id: s for s in segments}
    ids = p.ids
    assert len(ids) == len(set(ids))
    assert set(ids) <= set(by_id)
    held = {s.id for s in segments if _touch(s, holds)}
    in_event = {s.id for s in segments if _touch(s, events)}
    # held footage is never in the plan
    assert held.isdisjoint(ids)

    kept = [s for s in segments if s.id not in set(ids)]
    unheld_kept = [s for s in kept if s.id not in held]

    # age: exactly the unheld segments past their window are gone (by some rule); the age
    # rule itself never takes footage still inside its window
    for s in segments:
        pol = policies.get(s.camera, CameraPolicy())
        days = pol.event_days if s.id in in_event else pol.continuous_days
        too_old = s.end < NOW - days * DAY
        if too_old and s.id not in held:
            assert s.id in ids
    for d in p.deletions:
        if d.reason is DeletionReason.AGE:
            s = by_id[d.segment_id]
            pol = policies.get(s.camera, CameraPolicy())
            days = pol.event_days if s.id in in_event else pol.continuous_days
            assert s.end < NOW - days * DAY

    # caps are met whenever the held footage alone fits under them
    for cam in CAMERAS:
        cap = policies.get(cam, CameraPolicy()).max_bytes
        if cap is None:
            continue
        held_bytes = sum(s.bytes for s in segments if s.camera == cam and s.id in held)
        if held_bytes <= cap:
            assert sum(s.bytes for s in kept if s.camera == cam) <= cap
    total = sc.max_total_bytes
    if total is not None and sum(by_id[i].bytes for i in held) <= total:
        assert sum(s.bytes for s in kept) <= total

    # the guard reaches its floor whenever unheld footage can pay for it, and deletes no
    # more than it needs: without its last deletion the floor would not be reached
    if sc.free_bytes is not None:
        floor = max(sc.min_free_bytes, sc.bytes_per_hour)
        if sc.total_bytes is not None:
            floor = min(floor, int(sc.total_bytes * MAX_FLOOR_FRACTION))
        if sc.free_bytes + sum(s.bytes for s in segments if s.id not in held) >= floor:
            assert sc.free_bytes + p.bytes_freed >= floor
        guard = [d for d in p.deletions if d.reason is DeletionReason.DISK_GUARD]
        if guard:
            assert sc.free_bytes + p.bytes_freed - guard[-1].bytes < floor
    else:
        assert all(d.reason is not DeletionReason.DISK_GUARD for d in p.deletions)

    # a shortfall is only ever blamed on held footage that is really there
    for short in p.shortfalls:
        assert short.bytes > 0
        assert 0 < short.held_bytes <= sum(by_id[i].bytes for i in held)

    # size rules take event footage only once no unheld non-event footage is left in scope
    for d in p.deletions:
        if d.reason is DeletionReason.AGE or d.segment_id not in in_event:
            continue
        scope = [
            s
            for s in unheld_kept
            if d.reason is not DeletionReason.CAMERA_CAP or s.camera == d.camera
        ]
        assert all(s.id in in_event for s in scope)

    # ... and within non-event footage, the oldest goes first
    deleted_by: dict[DeletionReason, set[int]] = defaultdict(set)
    for d in p.deletions:
        deleted_by[d.reason].add(d.segment_id)
    for d in p.deletions:
        if d.reason is DeletionReason.AGE or d.segment_id in in_event:
            continue
        s = by_id[d.segment_id]
        for other in unheld_kept:
            if other.id in in_event:
                continue
            if d.reason is DeletionReason.CAMERA_CAP and other.camera != s.camera:
                continue
            assert (other.start, other.id) > (s.start, s.id)


def test_estimate_bytes_per_hour_sums_camera_rates() -> None:
    recent = [
        SegmentInfo(1, "a", NOW - 20, NOW - 10, 1000),  # 100 B/s
        SegmentInfo(2, "a", NOW - 10, NOW, 1000),
        SegmentInfo(3, "b", NOW - 10, NOW, 50),  # 5 B/s
        SegmentInfo(4, "c", NOW - 2 * 3600, NOW - 2 * 3600 + 10, 10**9),  # too old to count
    ]
    assert estimate_bytes_per_hour(recent, NOW) == 105 * 3600
    assert estimate_bytes_per_hour([], NOW) == 0
