"""End-to-end fixtures: a real recorder and web app, a real browser.

``e2e_app`` (one per test module) runs a real :class:`~homewarden.services.runtime.Runtime`
with the web app on a free loopback port, on SQLite in a temporary data dir, recording one
camera (:data:`CAMERA`) from a real GStreamer RTSP server that serves real footage in a loop:
``vtest.avi`` as a camera sends it (H.264, 768x576, 10 fps, a keyframe every 2 s), cut into a
21 s loop of still (3 s) / real pedestrians (15 s) / still (3 s), so closed motion events
appear every loop. It makes three accounts through the account service: the owner (with a
TOTP second factor), a member without any camera grant, and a staff support account (TOTP,
as staff must).

``browser`` is Debian's Chromium (``/usr/bin/chromium``; never a downloaded one) driven by
Playwright's sync API, headless with the flags of the machine notes. Without it the tests
skip, except under ``CI=true`` where they fail.

Screenshots go to ``artifacts/e2e/`` (ignored by git).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from homewarden.config import Settings
from homewarden.domain.permissions import Role
from homewarden.media.rtsp_server import RtspTestServer, gst_rtsp_available
from homewarden.media.transcode import make_still_motion_still_clip
from homewarden.services.runtime import Runtime
from homewarden.store.records import EventRecord, SegmentRecord
from homewarden.web.app import create_app
from tests.fixtures_media import GOP_SECONDS, REPO_ROOT, unavailable

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
#: The machine notes' headless flags, and autoplay without a click (players start muted).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"
CAMERA = "porch"
#: Layout of the camera's loop (seconds): still, real motion, still.
STILL_SECONDS = 3.0
MOTION_SECONDS = 15.0
LOOP_SECONDS = 2 * STILL_SECONDS + MOTION_SECONDS
FPS = 10.0
#: Segment length and post-capture (s): short, so footage and closed events come quickly.
SEGMENT_SECONDS = 2.0
POST_CAPTURE = 2.0
#: Playwright's default wait for a page element (ms).
UI_TIMEOUT_MS = 15_000

#: Environment variables that Settings reads (the developer's must not leak in).
_SETTINGS_ENV = ("HOMEWARDEN_DATA_DIR", "HOMEWARDEN_DATABASE_URL", "HOMEWARDEN_API",
                 "HOMEWARDEN_STORAGE", "HOMEWARDEN_CAMERAS", "HOMEWARDEN_HOUSEHOLD",
                 "HOMEWARDEN_RECORDER", "HOMEWARDEN_AUDIT")  # fmt: skip


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, step: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; return that.

    Raises:
        AssertionError: not within ``timeout`` seconds (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


# --------------------------------------------------------------------------------------------
# accounts


@dataclass
class E2EUser:
    """An account the tests log in with. ``totp`` is its authenticator (None: no TOTP)."""

    username: str
    password: str
    user_id: int
    totp: pyotp.TOTP | None = None
    _last_step: int | None = field(default=None, repr=False)

    def totp_code(self) -> str:
        """A TOTP code for now, never from a step already used (the server refuses a replay,
        RFC 6238 section 5.2): waits for the next 30 s step when this one was used.

        Raises:
            AssertionError: the account has no TOTP.
        """
        assert self.totp is not None, f"{self.username} has no TOTP"
        step = int(time.time() // self.totp.interval)
        if self._last_step is not None and step <= self._last_step:
            time.sleep((self._last_step + 1) * self.totp.interval - time.time() + 0.05)
            step = int(time.time() // self.totp.interval)
        self._last_step = step
        return self.totp.at(step * self.totp.interval)


def _enrol_totp(runtime: Runtime, user_id: int) -> pyotp.TOTP:
    """Turn TOTP on for an account as a phone would, with the code of the previous 30 s
    step (inside the server's one-step skew window), so the first login may use the current
    step's code at once."""
    enrolment = runtime.accounts.begin_totp(user_id)
    totp = pyotp.TOTP(enrolment.secret)
    runtime.accounts.confirm_totp(user_id, enrolment.secret, totp.at(time.time() - totp.interval))
    return totp


# --------------------------------------------------------------------------------------------
# the running app


@dataclass
class E2EApp:
    """The running recorder and web app, and its accounts."""

    runtime: Runtime
    base_url: str
    settings: Settings
    owner: E2EUser
    member: E2EUser
    support: E2EUser
    camera: str = CAMERA

    @property
    def media_dir(self) -> Path:
        """Where segments are written."""
        return self.settings.media_dir

    def segments(self) -> list[SegmentRecord]:
        """The camera's indexed segments, oldest first."""
        return self.runtime.index.segments(self.camera)

    def closed_events(self) -> list[EventRecord]:
        """The camera's closed events, oldest first."""
        page, _ = self.runtime.index.events(self.camera, limit=500)
        return sorted((e for e in page if e.end is not None), key=lambda e: e.start)

    def wait_closed_events(
        self, n: int, min_seconds: float = 0.0, timeout: float = 90
    ) -> list[EventRecord]:
        """Wait for ``n`` closed events lasting at least ``min_seconds`` each; return them
        (oldest first)."""

        def enough() -> list[EventRecord] | None:
            long = [
                e
                for e in self.closed_events()
                if e.end is not None and e.end - e.start >= min_seconds
            ]
            return long if len(long) >= n else None

        return wait_for(f"{n} closed event(s) of >= {min_seconds} s", enough, timeout)


def _footage_clip(vtest_avi: Path, media_cache_dir: Path) -> Path:
    dst = media_cache_dir / "e2e-still-motion-still.mp4"
    with (media_cache_dir / "e2e-still-motion-still.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return make_still_motion_still_clip(
                vtest_avi, dst, STILL_SECONDS, MOTION_SECONDS, gop_seconds=GOP_SECONDS
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def running_app(
    vtest_avi: Path,
    media_cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    sealed: bool,
    name: str = "e2e",
) -> Iterator[E2EApp]:
    """A started runtime with the web app, recording :data:`CAMERA` over real RTSP, with
    its accounts (see the module docstring), footage ``sealed`` at rest or not; stopped on
    leaving."""
    ok, reason = gst_rtsp_available()
    if not ok:
        unavailable(f"GStreamer RTSP server unavailable: {reason}")
    clip = _footage_clip(vtest_avi, media_cache_dir)
    data = tmp_path_factory.mktemp(name) / "data"
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(_SETTINGS_ENV)]:
            mp.delenv(key)
        with RtspTestServer(clip, mount="porch") as server:
            settings = Settings(
                data_dir=data,
                api={"host": "127.0.0.1", "port": 0},
                storage={"sealed": sealed},
                cameras={
                    CAMERA: {
                        "url": server.url,
                        "segment_seconds": SEGMENT_SECONDS,
                        "motion": {"post_capture": POST_CAPTURE},
                    }
                },
            )
            runtime = Runtime(settings, app_factory=create_app)
            address = runtime.start()
            try:
                assert address is not None
                yield _make_app(runtime, address.url, settings)
            finally:
                runtime.stop()


@pytest.fixture(scope="module")
def e2e_app(
    vtest_avi: Path, media_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[E2EApp]:
    """:func:`running_app` for a module, with plaintext storage: these tests are about the
    web app's pages and flows; test_sealed_e2e.py drives the same app with footage sealed at
    rest (the default), where support staff and emergencies without escrow see no footage."""
    with running_app(vtest_avi, media_cache_dir, tmp_path_factory, sealed=False) as app:
        yield app


def _make_app(runtime: Runtime, base_url: str, settings: Settings) -> E2EApp:
    accounts = runtime.accounts
    link = runtime.setup_link
    assert link is not None, "a first run must print the owner's setup link"
    secret = parse_qs(urlsplit(link).query)["token"][0]
    owner_pw = "owner-e2e-passphrase-1"
    owner = accounts.complete_setup(secret, owner_pw)
    owner_user = E2EUser(owner.username, owner_pw, owner.id, _enrol_totp(runtime, owner.id))

    member_pw = "member-e2e-passphrase-2"
    member = accounts.add_user(
        "alice", Role.MEMBER, settings.household, actor=None, password=member_pw
    ).user
    support_pw = "support-e2e-passphrase-3"
    support = accounts.add_user("sam", Role.SUPPORT, None, actor=None, password=support_pw).user
    support_user = E2EUser(
        support.username, support_pw, support.id, _enrol_totp(runtime, support.id)
    )
    app = E2EApp(
        runtime,
        base_url,
        settings,
        owner_user,
        E2EUser(member.username, member_pw, member.id),
        support_user,
    )
    wait_for("the camera's first recorded segments", lambda: len(app.segments()) >= 2, 30)
    return app


# --------------------------------------------------------------------------------------------
# the browser


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    """Playwright's driver (shipped inside its wheel; no browser download)."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        unavailable(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium."""
    chromium = playwright_driver.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield chromium
    finally:
        chromium.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``artifacts/e2e/<name>.png``; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def new_context(browser: Browser, app: E2EApp) -> BrowserContext:
    """A fresh browser profile (no cookies) on the app, as a phone-sized desktop window."""
    context = browser.new_context(
        base_url=app.base_url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context


def login(page: Page, user: E2EUser, *, shots: str | None = None) -> None:
    """Log ``user`` in through the login form (and the TOTP form when it has TOTP); waits
    until the browser has left the login pages. ``shots``: save screenshots with this
    prefix.

    Raises:
        AssertionError: the login did not complete (the form's error is in the message).
    """
    page.goto("/login")
    page.locator("[data-testid=login-username]").fill(user.username)
    page.locator("[data-testid=login-password]").fill(user.password)
    if shots:
        screenshot(page, f"{shots}-1-password")
    page.locator("[data-testid=login-submit]").click()
    if user.totp is not None:
        code = page.locator("[data-testid=totp-code]")
        try:
            code.wait_for()
        except Exception as exc:
            raise AssertionError(f"no TOTP form after the password: {_form_error(page)}") from exc
        code.fill(user.totp_code())
        if shots:
            screenshot(page, f"{shots}-2-totp")
        page.locator("[data-testid=totp-submit]").click()
    try:
        page.wait_for_url(lambda url: not urlsplit(url).path.startswith("/login"))
    except Exception as exc:
        raise AssertionError(
            f"{user.username} did not get past the login: {_form_error(page)}"
        ) from exc
    page.wait_for_load_state()


def _form_error(page: Page) -> str:
    errors = page.locator("[data-testid=form-error]")
    if errors.count():
        return f"form error {errors.first.inner_text()!r} at {page.url}"
    return f"no form error shown, at {page.url}"


@pytest.fixture(scope="module")
def owner_context(browser: Browser, e2e_app: E2EApp) -> Iterator[BrowserContext]:
    """A browser profile where the owner logged in once (password + TOTP) for the module."""
    context = new_context(browser, e2e_app)
    page = context.new_page()
    try:
        login(page, e2e_app.owner, shots="owner-login")
        screenshot(page, "owner-login-3-landed")
        page.close()
        yield context
    finally:
        context.close()


@pytest.fixture
def owner_page(owner_context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A new tab in the owner's profile; screenshotted as ``<test name>.png`` at the end."""
    page = owner_context.new_page()
    try:
        yield page
    finally:
        try:
            screenshot(page, request.node.name)
        finally:
            page.close()
