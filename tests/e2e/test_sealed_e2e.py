"""Issue 6 acceptance through the browser: "Owner unlocks and plays back real footage through
the web app" with footage sealed at rest (``[storage] sealed = true``, DESIGN.md flow 8).

Debian's Chromium (Playwright) against a real recorder and web app (real footage over real
RTSP, as ``conftest.py`` runs it, here with ``storage.sealed`` set): every segment is written
sealed to the household key. The owner signs in (password + TOTP, which unlocks the household
key into that session only), opens the camera's timeline and plays an event: the <video>
plays (``currentTime`` advances, ``videoWidth`` > 0), and the event's sealed snapshot image
loads. Without unlocked keys footage is refused: a signed-out visitor gets 401, an API token
of the owner (tokens never carry keys) and the owner's own cookie once its session holds no
keys (as after a server restart: keys live in the server's memory only) get the 401 problem
"sign in again", and the camera page says so (live view and timeline) without leaving it;
signing in again plays the footage again.

Screenshots go to ``artifacts/e2e/sealed-*.png``. All tests share one recorder and run on one
xdist worker, in file order. Without Chromium or GStreamer's RTSP server they skip, except
under ``CI=true`` where they fail (``conftest.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import APIResponse, Browser, Page, expect

from homewarden.store.records import EventRecord
from homewarden.web.problems import PROBLEM_MEDIA_TYPE
from tests.e2e.conftest import (
    E2EApp,
    login,
    new_context,
    running_app,
    screenshot,
    wait_for,
)

# A group of its own: it starts its own (sealed) app, and on one worker with the other e2e
# modules it made that worker the run's critical path.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-sealed")]

PLAYBACK = "video[data-testid=playback]"
#: What the problem of a request without unlocked keys says (homewarden.web.problems).
KEYS_LOCKED_TITLE = "Keys locked: sign in again with the password"


@pytest.fixture(scope="module")
def e2e_app(
    vtest_avi: Path, media_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[E2EApp]:
    """``conftest.py``'s running recorder and web app, recording with ``storage.sealed``
    on (this module's own: the footage of the others' runtime is not the point here)."""
    with running_app(
        vtest_avi, media_cache_dir, tmp_path_factory, sealed=True, name="e2e-sealed"
    ) as app:
        yield app


def _event_with_snapshot(app: E2EApp) -> EventRecord:
    """A closed event of the camera whose snapshot was kept (sealed)."""
    return wait_for(
        "a closed event with a snapshot",
        lambda: next((e for e in reversed(app.closed_events()) if e.snapshot_path), None),
        90,
    )


def _press_mark(page: Page, start: float) -> None:
    """Activate the timeline's event mark nearest ``start`` from the keyboard (marks seconds
    apart overlap on the 24 h bar, see test_web_app.py)."""
    marks = page.locator("[data-testid=timeline] [data-testid=event-mark]")
    expect(marks.first).to_be_attached()
    starts = [float(v) for v in marks.evaluate_all("ms => ms.map(m => m.dataset.start)")]
    nearest = min(range(len(starts)), key=lambda i: abs(starts[i] - start))
    assert abs(starts[nearest] - start) < 1.0, f"no mark at {start}: {starts}"
    marks.nth(nearest).press("Enter")


def _assert_plays(page: Page, selector: str) -> None:
    """The video decodes a frame, and its currentTime advances while it plays (muted)."""
    page.wait_for_function(
        "(s) => { const v = document.querySelector(s);"
        " return v && v.readyState >= 2 && v.videoWidth > 0; }",
        arg=selector,
    )
    page.evaluate(
        "(s) => { const v = document.querySelector(s); v.muted = true;"
        " const p = v.play(); if (p) { p.catch(() => {}); } }",
        selector,
    )
    start = float(page.evaluate("(s) => document.querySelector(s).currentTime", selector))
    page.wait_for_function(
        "([s, t]) => document.querySelector(s).currentTime > t + 0.5", arg=[selector, start]
    )
    width = page.evaluate("(s) => document.querySelector(s).videoWidth", selector)
    assert width > 0


def _clip_path(app: E2EApp, event: EventRecord) -> str:
    assert event.end is not None
    return f"/api/cameras/{app.camera}/clip.mp4?start={event.start:.3f}&end={event.end:.3f}"


def _assert_keys_locked(response: APIResponse) -> None:
    """A 401 problem saying to sign in again (keys locked), with no footage in it."""
    assert response.status == 401, response.text()[:300]
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    problem = response.json()
    assert problem["title"] == KEYS_LOCKED_TITLE
    assert "sign in again" in (problem.get("detail") or "")


def test_footage_is_recorded_sealed(e2e_app: E2EApp) -> None:
    """Every segment the recorder wrote is sealed: no MP4 box in the clear on disk."""
    segments = wait_for("a few recorded segments", lambda: e2e_app.segments()[2:], 30)
    assert all(seg.sealed for seg in segments)
    for seg in segments[:3]:
        raw = (e2e_app.media_dir / seg.path).read_bytes()
        assert b"ftyp" not in raw
        assert b"moof" not in raw


def test_owner_unlocks_and_plays_back_sealed_footage(browser: Browser, e2e_app: E2EApp) -> None:
    event = _event_with_snapshot(e2e_app)
    context = new_context(browser, e2e_app)
    page = context.new_page()
    try:
        login(page, e2e_app.owner, shots="sealed-owner-login")
        # The timeline plays the event's sealed footage, opened with the session's keys.
        page.goto(f"/cameras/{e2e_app.camera}")
        expect(page.locator("[data-testid=timeline]")).to_be_visible()
        _press_mark(page, event.start)
        _assert_plays(page, PLAYBACK)
        expect(page.locator("[data-testid=playback-time]")).not_to_have_text("\u2014")
        screenshot(page, "sealed-owner-playback")
        # The event page: its sealed snapshot loads as an image, its clip plays.
        page.goto(f"/events/{event.id}")
        snapshot = page.locator("img[data-testid=event-snapshot]")
        expect(snapshot).to_be_visible()
        page.wait_for_function(
            "() => { const i = document.querySelector('img[data-testid=event-snapshot]');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        size = page.evaluate(
            "() => { const i = document.querySelector('img[data-testid=event-snapshot]');"
            " return [i.naturalWidth, i.naturalHeight]; }"
        )
        assert size[0] > 0
        assert size[1] > 0
        _assert_plays(page, "video[data-testid=event-clip]")
        screenshot(page, "sealed-owner-event")
    finally:
        context.close()


def test_footage_is_refused_without_unlocked_keys(browser: Browser, e2e_app: E2EApp) -> None:
    event = _event_with_snapshot(e2e_app)
    clip = _clip_path(e2e_app, event)
    snapshot = f"/api/events/{event.id}/snapshot.jpg"

    # A signed-out visitor: not signed in at all.
    visitor = new_context(browser, e2e_app)
    try:
        for path in (clip, snapshot):
            response = visitor.request.get(path)
            assert response.status == 401, path
            assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    finally:
        visitor.close()

    # The owner's API token: signed in, but a token never carries the household keys.
    secret, _ = e2e_app.runtime.accounts.create_token(e2e_app.owner.user_id, "sealed e2e")
    scripted = new_context(browser, e2e_app)
    try:
        for path in (clip, snapshot):
            _assert_keys_locked(
                scripted.request.get(path, headers={"Authorization": f"Bearer {secret}"})
            )
    finally:
        scripted.close()

    # The owner's own browser session once the server holds no keys for it (as after a
    # restart: the cookie is still valid, the keys were only ever in memory).
    context = new_context(browser, e2e_app)
    page = context.new_page()
    try:
        login(page, e2e_app.owner)
        assert context.request.get(clip, headers={"Range": "bytes=0-0"}).status == 206
        ring = e2e_app.runtime.app_context().keys
        assert ring is not None
        ring.sessions_ended(user_id=e2e_app.owner.user_id)
        for path in (clip, snapshot):
            _assert_keys_locked(context.request.get(path))
        # The camera page stays put (regression: the live view's keys-locked close sent a
        # signed-in owner to the login page, which sent them back, over and over): the live
        # view says the footage is locked, and so does the timeline.
        page.goto(f"/cameras/{e2e_app.camera}")
        expect(page.locator("[data-live-state=denied]")).to_have_attribute(
            "data-live-detail", re.compile("sign in again")
        )
        expect(page.locator("[data-testid=timeline]")).to_be_visible()
        _press_mark(page, event.start)
        expect(page.locator("[data-testid=timeline-message]")).to_contain_text("sign in again")
        assert "/cameras/" in page.url
        screenshot(page, "sealed-locked-session")
        # Signing out and in again unlocks the keys: the footage plays again.
        page.locator("[data-testid=logout]").click()
        page.wait_for_url("**/login**")
        login(page, e2e_app.owner)
        page.goto(f"/cameras/{e2e_app.camera}")
        _press_mark(page, event.start)
        _assert_plays(page, PLAYBACK)
        screenshot(page, "sealed-signed-in-again")
    finally:
        context.close()
