"""Issue 3 acceptance, end to end: Debian's Chromium driven by Playwright against a real
recorder (real footage over real RTSP) and its web app.

The owner logs in with TOTP, sees the camera recording, watches it live (the picture changes;
camera-to-screen latency is measured against the recorded frames), plays an event clip,
scrubs the timeline back and sees the very frame recorded at that moment, and downloads a
clip that decodes. A member without a grant does not see the camera; staff support sees no
footage until the owner grants support in the app, and sees it while the grant lasts.

All tests of this module share one recorder and run on one xdist worker (``loadgroup``), in
file order: the later tests need closed events, which the footage loop makes every 21 s.
Each saves a screenshot to ``artifacts/e2e/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import (
    ARTIFACTS,
    FPS,
    POST_CAPTURE,
    E2EApp,
    login,
    new_context,
    screenshot,
    wait_for,
)
from tests.e2e.frames import (
    Frame,
    Grab,
    grab,
    mean_abs_diff,
    recorded_frame_at,
    recorded_frames,
)
from tests.fixtures_media import GOP_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]

#: Camera to screen on loopback, in GOPs of the footage (issue 3: "under 3 s" with the 2 s
#: GOP of the test camera). Fragments are cut at keyframes, so a GOP is the floor; the bound
#: is relative to it rather than an absolute time (these machines are noisy).
MAX_LIVE_LATENCY_GOPS = 1.5
#: A frame matches the recording when its difference to the recorded frame of that moment is
#: at most this share of its difference to frames of other moments.
MATCH_RATIO = 0.5


def _card(page: Page, camera: str) -> str:
    return f"[data-testid=camera-card][data-camera={camera}]"


def _live_video(camera: str) -> str:
    return f"video[data-testid=live-video][data-camera={camera}]"


def _wait_video_ready(page: Page, selector: str) -> None:
    """Wait until the video has decoded a frame (readyState >= HAVE_CURRENT_DATA)."""
    page.wait_for_function(
        "(s) => { const v = document.querySelector(s);"
        " return v && v.readyState >= 2 && v.videoWidth > 0; }",
        arg=selector,
    )


def _play(page: Page, selector: str) -> None:
    """Start the video muted (autoplay policies allow that), wherever the page left it."""
    page.evaluate(
        "(s) => { const v = document.querySelector(s); v.muted = true;"
        " const p = v.play(); if (p) { p.catch(() => {}); } }",
        selector,
    )


def _current_time(page: Page, selector: str) -> float:
    return float(page.evaluate("(s) => document.querySelector(s).currentTime", selector))


def _resized(frame: Frame, like: Frame) -> Frame:
    if frame.shape == like.shape:
        return frame
    size = (like.shape[1], like.shape[0])
    return np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _record(name: str, value: object) -> None:
    """Keep a measured figure beside the screenshots (``artifacts/e2e/measurements.json``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "measurements.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


# --------------------------------------------------------------------------------------------
# owner


def test_owner_logs_in_with_totp(owner_context: BrowserContext, e2e_app: E2EApp) -> None:
    # The owner_context fixture logged in through /login and /login/totp (screenshots
    # owner-login-*.png); this checks what the browser holds and can do afterwards.
    cookies = {c["name"]: c for c in owner_context.cookies()}
    assert "hw_session" in cookies, f"no session cookie after login: {sorted(cookies)}"
    session = cookies["hw_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] in ("Lax", "Strict")
    page = owner_context.new_page()
    try:
        response = page.goto("/")
        assert response is not None
        assert response.status == 200
        assert not page.url.rstrip("/").endswith("/login")
        expect(page.locator(_card(page, e2e_app.camera))).to_be_visible()
        screenshot(page, "test_owner_logs_in_with_totp")
    finally:
        page.close()


def test_grid_shows_the_camera_recording(owner_page: Page, e2e_app: E2EApp) -> None:
    before = len(e2e_app.segments())
    owner_page.goto("/")
    card = owner_page.locator(_card(owner_page, e2e_app.camera))
    expect(card).to_be_visible()
    status = card.locator("[data-testid=camera-status]")
    expect(status).to_contain_text("recording", ignore_case=True)
    # ... and it is: new segments of real footage keep arriving.
    wait_for("a new recorded segment", lambda: len(e2e_app.segments()) > before, 10)
    seg = e2e_app.segments()[-1]
    with av.open(str(e2e_app.media_dir / seg.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (768, 576)


def _live_grab(page: Page, selector: str) -> Grab:
    return wait_for("a frame of the live video", lambda: grab(page, selector), 10, step=0.1)


def _latency_of(e2e_app: E2EApp, shown: Grab) -> tuple[float, float] | None:
    """(camera-to-screen latency in s, match quality) of a frame grabbed from the live view,
    by finding the recorded frame it shows among those recorded in the 10 s before the grab;
    None when no recorded frame matches it clearly better than frames of other moments (the
    still parts of the loop look alike)."""
    wait_for(
        "the segment recorded while the frame was shown",
        lambda: e2e_app.segments() and e2e_app.segments()[-1].end >= shown.wall + 0.2,
        15,
    )
    frames = recorded_frames(
        e2e_app.runtime.index, e2e_app.media_dir, e2e_app.camera, shown.wall - 10, shown.wall + 1
    )
    if not frames:
        return None
    diffs = [(mean_abs_diff(_resized(shown.rgb, f.rgb), f.rgb), f.wall) for f in frames]
    best, when = min(diffs)
    elsewhere = [d for d, w in diffs if abs(w - when) > 1.0]
    if not elsewhere or best > MATCH_RATIO * min(elsewhere):
        return None
    return shown.wall - when, best / min(elsewhere)


def test_live_view_changes(owner_page: Page, e2e_app: E2EApp) -> None:
    owner_page.goto("/")
    selector = _live_video(e2e_app.camera)
    video = owner_page.locator(selector)
    expect(video).to_be_visible()
    _wait_video_ready(owner_page, selector)
    _play(owner_page, selector)
    first = _live_grab(owner_page, selector)
    assert first.current_time is not None
    # The footage holds still for 3 s of each 21 s loop: grab until the picture moved.
    changed: Grab | None = None
    deadline = time.monotonic() + 12
    while changed is None and time.monotonic() < deadline:
        time.sleep(1.0)
        later = _live_grab(owner_page, selector)
        if mean_abs_diff(first.rgb, later.rgb) > 1.0:
            changed = later
    assert changed is not None, "the live picture did not change in 12 s"
    assert changed.current_time is not None
    assert changed.current_time > first.current_time, "the live video's currentTime stands still"
    screenshot(owner_page, "test_live_view_changes-live")

    # Camera-to-screen latency: which recorded frame is on screen, and when was it recorded?
    latencies: list[float] = []
    deadline = time.monotonic() + 25
    while len(latencies) < 3 and time.monotonic() < deadline:
        measured = _latency_of(e2e_app, _live_grab(owner_page, selector))
        if measured is not None:
            latencies.append(measured[0])
        else:
            time.sleep(0.5)
    assert latencies, "no live frame could be matched to a recorded frame"
    _record("live_latency_s", [round(v, 3) for v in latencies])
    print(f"live view camera-to-screen latency: {', '.join(f'{v:.2f} s' for v in latencies)}")
    # The best of the samples: fragments held back a GOP (the fault this guards against)
    # delay every sample, while a loaded machine delays some (seen: 2.42, 3.16, 3.27 s with
    # other test workers busy, 2.1-2.5 s alone).
    assert min(latencies) < MAX_LIVE_LATENCY_GOPS * GOP_SECONDS, f"live latency {latencies} s"
    assert min(latencies) > -1.0 / FPS - 0.2, (
        f"a frame on screen before it was recorded: {latencies}"
    )


# --------------------------------------------------------------------------------------------
# other people


def test_member_without_grant_cannot_see_the_camera(browser: Browser, e2e_app: E2EApp) -> None:
    context = new_context(browser, e2e_app)
    page = context.new_page()
    try:
        login(page, e2e_app.member)
        response = page.goto("/")
        assert response is not None
        assert response.status == 200
        page.wait_for_load_state("networkidle")
        expect(page.locator(_card(page, e2e_app.camera))).to_have_count(0)
        expect(page.locator(_live_video(e2e_app.camera))).to_have_count(0)
        screenshot(page, "test_member_without_grant-grid")
        response = page.goto(f"/cameras/{e2e_app.camera}")
        assert response is not None
        assert response.status == 403
        seg = e2e_app.segments()[-1]
        api = page.request.get(
            f"/api/cameras/{e2e_app.camera}/clip.mp4",
            params={"start": seg.start, "end": seg.end},
        )
        assert api.status in (403, 404), api.status
        screenshot(page, "test_member_without_grant-camera")
    finally:
        context.close()


def _footage_visible(page: Page, e2e_app: E2EApp) -> tuple[int, int]:
    """(status of the camera page, status of a clip of recent footage) for this browser."""
    response = page.goto(f"/cameras/{e2e_app.camera}")
    assert response is not None
    seg = e2e_app.segments()[-1]
    api = page.request.get(
        f"/api/cameras/{e2e_app.camera}/clip.mp4", params={"start": seg.start, "end": seg.end}
    )
    return response.status, api.status


def test_support_sees_footage_only_while_granted(
    browser: Browser, owner_context: BrowserContext, e2e_app: E2EApp
) -> None:
    context = new_context(browser, e2e_app)
    page = context.new_page()
    owner = owner_context.new_page()
    try:
        login(page, e2e_app.support)  # staff always use TOTP
        assert _footage_visible(page, e2e_app) == (403, 403)
        screenshot(page, "test_support-1-before-grant")

        # The owner grants support access in the app.
        owner.goto("/settings/support")
        owner.locator("[data-testid=support-hours]").fill("1")
        owner.locator("[data-testid=support-reason]").fill("camera keeps dropping (e2e)")
        owner.locator("[data-testid=support-grant]").click()
        expect(owner.locator("[data-testid=support-row]")).to_have_count(1)
        screenshot(owner, "test_support-2-owner-granted")

        status, clip = _footage_visible(page, e2e_app)
        assert (status, clip) == (200, 200)
        expect(page.locator("[data-testid=timeline]")).to_be_visible()
        screenshot(page, "test_support-3-granted")

        # The owner ends the grant: the footage is gone again.
        owner.locator("[data-testid=support-row] [data-testid=support-revoke]").click()
        owner.wait_for_load_state()
        assert _footage_visible(page, e2e_app) == (403, 403)
        screenshot(page, "test_support-4-after-revoke")
    finally:
        owner.close()
        context.close()


# --------------------------------------------------------------------------------------------
# footage of the past (needs closed events: by now the loop has made some)


def _play_event_clip(page: Page, event_id: int) -> None:
    page.goto("/events")
    row = page.locator(f"[data-testid=event-row][data-event-id='{event_id}']")
    if not row.count():  # older events are on later pages
        page.goto(f"/events/{event_id}")
    else:
        row.locator(f"a[href='/events/{event_id}']").first.click()
    page.wait_for_url(f"**/events/{event_id}")
    selector = "video[data-testid=event-clip]"
    _wait_video_ready(page, selector)
    _play(page, selector)
    start = _current_time(page, selector)
    page.wait_for_function(
        "([s, t]) => document.querySelector(s).currentTime > t + 0.5", arg=[selector, start]
    )
    width = page.evaluate("(s) => document.querySelector(s).videoWidth", selector)
    assert width > 0


def test_event_clip_plays(owner_page: Page, e2e_app: E2EApp) -> None:
    events = e2e_app.wait_closed_events(2)
    _play_event_clip(owner_page, events[-1].id)
    screenshot(owner_page, "test_event_clip_plays-latest")
    # The first event's clip begins in the recording's first segment (the camera's first
    # packets): it must play too.
    _play_event_clip(owner_page, events[0].id)


PLAYBACK = "video[data-testid=playback]"


def _motion_windows(e2e_app: E2EApp) -> list[tuple[float, float]]:
    """Wall-clock spans where the recorded pedestrians move (closed events of >= 8 s, less a
    second at the start and the post-capture tail): there, frames 4 s apart all differ."""
    return [
        (e.start + 1.0, e.end - POST_CAPTURE - 1.0)
        for e in e2e_app.closed_events()
        if e.end is not None and e.end - e.start >= 8.0
    ]


def _shown_moment(page: Page) -> float:
    """The wall-clock moment the playback video shows: its clip's start + currentTime."""
    return float(
        page.evaluate(
            "(s) => { const v = document.querySelector(s);"
            " return Number(v.dataset.clipStart) + v.currentTime; }",
            PLAYBACK,
        )
    )


def _pause_on_exact_frame(page: Page) -> None:
    """Pause the playback and seek to where it stands: a player that could not keep up
    (two cores, a live view decoding beside it) may still show an older frame when paused;
    after the seek it shows the frame of ``currentTime``."""
    page.evaluate(
        """(s) => new Promise((done) => {
             const v = document.querySelector(s);
             v.pause();
             v.addEventListener('seeked', () => setTimeout(done, 300), {once: true});
             setTimeout(done, 5000);  // a seek that never ends is caught by the caller
             v.currentTime = v.currentTime;
           })""",
        PLAYBACK,
    )


def _hold_in_motion(
    page: Page, e2e_app: E2EApp, before: float | None = None, timeout: float = 30
) -> tuple[Grab, float]:
    """Let the playback run until it shows a moment inside a motion window (ending before
    ``before`` when given), pause it there and grab the frame; returns (frame, moment)."""
    _wait_video_ready(page, PLAYBACK)
    page.wait_for_function(
        "(s) => document.querySelector(s).dataset.clipStart !== undefined", arg=PLAYBACK
    )
    _play(page, PLAYBACK)
    deadline = time.monotonic() + timeout
    while True:
        windows = [w for w in _motion_windows(e2e_app) if before is None or w[1] < before]
        if any(lo <= _shown_moment(page) <= hi for lo, hi in windows):
            _pause_on_exact_frame(page)
            shown = grab(page, PLAYBACK)
            assert shown is not None
            assert shown.current_time is not None
            clip_start = float(page.locator(PLAYBACK).get_attribute("data-clip-start") or "nan")
            moment = clip_start + shown.current_time
            if any(lo <= moment <= hi for lo, hi in windows):
                return shown, moment
            _play(page, PLAYBACK)
        assert time.monotonic() < deadline, (
            f"playback never showed a motion moment; at {_shown_moment(page):.1f}, "
            f"windows {windows}"
        )
        time.sleep(0.05)


def _assert_recorded_frame(e2e_app: E2EApp, shown: Grab, moment: float, name: str) -> None:
    """The browser's frame is the frame recorded at ``moment``, to one frame: its difference
    to the recorded frames within a frame period of ``moment`` (players differ on which of
    two neighbours a time between them shows) is well under its difference to the frames
    recorded 4 s before and after."""
    index, media = e2e_app.runtime.index, e2e_app.media_dir
    period = 1.0 / FPS
    near = recorded_frames(index, media, e2e_app.camera, moment - period, moment + period)
    assert near, f"nothing recorded at {moment}"
    truth = min(near, key=lambda f: mean_abs_diff(shown.rgb, f.rgb))
    others = [recorded_frame_at(index, media, e2e_app.camera, moment + d) for d in (-4.0, 4.0)]
    other_frames = [o for o in others if o is not None]
    assert other_frames, "no recorded frames around the moment to compare with"
    same = mean_abs_diff(shown.rgb, truth.rgb)
    different = min(mean_abs_diff(shown.rgb, o.rgb) for o in other_frames)
    _record(
        f"{name}_frame_mad",
        {
            "same_moment": round(same, 2),
            "other_moment": round(different, 2),
            "offset_s": round(truth.wall - moment, 3),
        },
    )
    _record(f"{name}_moment_age_s", round(time.time() - moment, 1))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(ARTIFACTS / f"{name}-browser.png"), cv2.cvtColor(shown.rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(ARTIFACTS / f"{name}-recorded.png"), cv2.cvtColor(truth.rgb, cv2.COLOR_RGB2BGR))
    if same >= MATCH_RATIO * different:
        # Say which recorded frame the browser did show, to tell an offset from a bad frame.
        wide = recorded_frames(index, media, e2e_app.camera, moment - 3.0, moment + 3.0)
        best = min(wide, key=lambda f: mean_abs_diff(shown.rgb, f.rgb))
        raise AssertionError(
            f"the browser's frame differs from the recorded frame of {moment:.2f} by "
            f"{same:.2f}, from frames 4 s away by {different:.2f}; the closest recorded "
            f"frame is {best.wall - moment:+.2f} s off (difference "
            f"{mean_abs_diff(shown.rgb, best.rgb):.2f})"
        )


def _press_mark(page: Page, start: float) -> None:
    """Activate the timeline's event mark of the event starting at ``start`` (a mark is a
    button; marks of events seconds apart overlap on a 24 h bar, so a pointer would hit the
    top one: it is activated from the keyboard)."""
    marks = page.locator("[data-testid=timeline] [data-testid=event-mark]")
    expect(marks.first).to_be_attached()
    starts = [float(v) for v in marks.evaluate_all("ms => ms.map(m => m.dataset.start)")]
    nearest = min(range(len(starts)), key=lambda i: abs(starts[i] - start))
    assert abs(starts[nearest] - start) < 1.0, f"no mark at {start}: {starts}"
    marks.nth(nearest).press("Enter")


def _wait_clip_from(page: Page, start: float) -> None:
    page.wait_for_function(
        "([s, t]) => Math.abs(Number(document.querySelector(s).dataset.clipStart) - t) < 3",
        arg=[PLAYBACK, start],
    )


def test_scrub_timeline_to_an_earlier_moment_shows_that_frame(
    owner_page: Page, e2e_app: E2EApp
) -> None:
    # Two motion events (one per 21 s loop), so there is an earlier one to go back to.
    events = e2e_app.wait_closed_events(2, min_seconds=8)
    latest = events[-1]
    page = owner_page
    page.goto(f"/cameras/{e2e_app.camera}")
    expect(page.locator("[data-testid=timeline]")).to_be_visible()

    # 1. The latest event's mark plays from that moment; the frame is the one recorded then.
    _press_mark(page, latest.start)
    _wait_clip_from(page, latest.start)
    shown, moment = _hold_in_motion(page, e2e_app)
    assert latest.start <= moment <= latest.start + 8.0, (
        f"the mark of {latest.start:.1f} played from {moment:.1f}"
    )
    position = float(page.locator(PLAYBACK).get_attribute("data-position") or "nan")
    assert position == pytest.approx(moment, abs=1.0), "data-position is not the moment shown"
    expect(page.locator("[data-testid=playback-time]")).not_to_have_text("\u2014")
    screenshot(page, "test_scrub-1-mark")
    _assert_recorded_frame(e2e_app, shown, moment, "scrub_mark")

    # 2. Back, event by event, to the motion event before it (between them lies the short
    #    event of the loop's jump), and play at 4x: an earlier moment, its recorded frame.
    target = events[-2]
    assert target.end is not None
    page.locator("select[data-testid=speed]").select_option("4")
    for _ in range(4):
        before = float(page.locator(PLAYBACK).get_attribute("data-position") or "nan")
        page.locator("[data-testid=prev-event]").click()
        page.wait_for_function(
            "([s, t]) => { const v = document.querySelector(s);"
            " return Number(v.dataset.position) < t - 1 && v.readyState >= 2; }",
            arg=[PLAYBACK, before],
        )
        if float(page.locator(PLAYBACK).get_attribute("data-position") or "nan") <= (
            target.start + 1.0
        ):
            break
    shown, earlier = _hold_in_motion(page, e2e_app, before=latest.start)
    assert page.evaluate("(s) => document.querySelector(s).playbackRate", PLAYBACK) == 4
    assert target.start <= earlier <= target.end, (
        f"went back to {earlier:.1f}, not into the event of {target.start:.1f}"
    )
    assert time.time() - earlier > 20, "the previous event is not earlier footage"
    screenshot(page, "test_scrub-2-previous-event")
    _assert_recorded_frame(e2e_app, shown, earlier, "scrub_previous")


def _decode(path: Path) -> tuple[int, tuple[int, int], float]:
    """(frames decoded, (width, height), seconds from first to last frame) of a clip."""
    times: list[float] = []
    size = (0, 0)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            size = (frame.width, frame.height)
            if frame.time is not None:
                times.append(frame.time)
            assert np.asarray(frame.to_ndarray(format="gray")).std() > 1.0, "a blank frame"
    return len(times), size, (max(times) - min(times)) if times else 0.0


def test_download_clip_decodes(owner_page: Page, e2e_app: E2EApp, tmp_path: Path) -> None:
    event = e2e_app.wait_closed_events(1)[-1]
    assert event.end is not None
    owner_page.goto(f"/events/{event.id}")
    with owner_page.expect_download() as info:
        owner_page.locator("a[data-testid=download-clip]").click()
    download = info.value
    path = tmp_path / (download.suggested_filename or "clip.mp4")
    download.save_as(path)
    frames, size, span = _decode(path)
    assert size == (768, 576)
    assert frames >= 10
    # Clips are cut on keyframes (2 s apart) around the event, never re-encoded.
    assert span == pytest.approx(event.end - event.start, abs=2.5)

    # A chosen span, from the camera page.
    owner_page.goto(f"/cameras/{e2e_app.camera}")
    with owner_page.expect_download() as info:
        owner_page.locator("a[data-testid=download-clip]").click()
    span_path = tmp_path / ("span-" + (info.value.suggested_filename or "clip.mp4"))
    info.value.save_as(span_path)
    frames, size, _ = _decode(span_path)
    assert size == (768, 576)
    assert frames > 0
