"""The server-rendered pages over the real app, real accounts (Argon2id, TOTP) and real
footage (``bikes.mp4`` cut into indexed segments): sign-in with and without TOTP, setup
links, CSRF on forms, redirects, the page contract the browser tests rely on, static files,
security headers, settings forms and the owner's access log."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.domain.permissions import Role
from homewarden.services.audit import AuditLog
from homewarden.services.runtime import AppContext
from homewarden.store.index import Index
from homewarden.web import pages
from homewarden.web.deps import CSRF_COOKIE, SESSION_COOKIE
from homewarden.web.pages import CONTENT_SECURITY_POLICY, safe_next
from tests.web.conftest import FOOTAGE, T0, Footage
from tests.web.helpers import PASSWORD, Clock, add_user, build, client, make_context

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside each element that
    has a ``data-testid`` (tags stripped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.append((tag, found))
        if tag in ("input", "img", "meta", "link", "br"):
            return
        self._open.append((tag, found.get("data-testid"), []))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, testid, parts = self._open.pop()
            text = "".join(parts)
            if testid:
                self.texts.setdefault(testid, []).append(" ".join(text.split()))
            if self._open:
                self._open[-1][2].append(text)
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2].append(data)


@dataclass
class Html:
    tags: list[tuple[str, dict[str, str]]]
    texts: dict[str, list[str]]

    @classmethod
    def of(cls, text: str) -> Html:
        parser = _Tags()
        parser.feed(text)
        return cls(parser.tags, parser.texts)

    def all(self, tag: str | None = None, **attrs: str) -> list[dict[str, str]]:
        """Start tags named ``tag`` whose attributes include ``attrs`` (``_`` for ``-``)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            a
            for t, a in self.tags
            if (tag is None or t == tag) and all(a.get(k) == v for k, v in want.items())
        ]

    def one(self, tag: str | None = None, **attrs: str) -> dict[str, str]:
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, found)
        return found[0]

    def text(self, testid: str) -> list[str]:
        return self.texts.get(testid, [])


@dataclass
class Site:
    ctx: AppContext
    app: FastAPI
    clock: Clock
    events: dict[str, int]
    footage: Footage

    def client(self, **kwargs: object) -> TestClient:
        return client(self.app, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def site(index: Index, database_url: str, footage: Footage) -> Iterator[Site]:
    for seg in footage.segments:
        index.add_segment(seg)
    gap = index.open_gap("front", T0 - 30.0, "unreachable", "connection refused")
    index.close_gap(gap, T0)
    events = {
        "walk": index.open_event("front", T0 + 1.0, "motion", 0.2, ["porch"]),
        "person": index.open_event("front", T0 + 4.0, "person", 0.6, ["drive"]),
        "bike": index.open_event("front", T0 + 6.5, "motion", 0.3, []),
    }
    index.update_event(events["walk"], end=T0 + 3.0, snapshot_path=footage.snapshot_rel)
    index.update_event(events["person"], end=T0 + 6.0)
    index.update_event(events["bike"], end=T0 + 8.0)
    settings = Settings(
        data_dir=footage.data_dir,
        database_url=database_url,
        cameras={
            "front": {"url": f"file:{FOOTAGE}"},
            "porch": {"url": "rtsp://admin:s3cret-pw@192.0.2.10:554/stream1", "enabled": False},
        },
    )
    clock = Clock(T0 + 600.0)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, clock=clock)
        yield Site(ctx, build(ctx), clock, events, footage)


def form_csrf(html: str) -> str:
    return Html.of(html).all("input", name="csrf_token")[0]["value"]


def sign_in(c: TestClient, username: str, password: str = PASSWORD, next_: str = "/") -> str:
    """Sign in through the login form (no TOTP); returns the session's CSRF token."""
    page = c.get("/login", params={"next": next_})
    assert page.status_code == 200
    resp = c.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "next": next_,
            "csrf_token": form_csrf(page.text),
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == next_
    return form_csrf(c.get("/settings").text)


def set_cookie_headers(resp: httpx.Response) -> list[str]:
    return [v for k, v in resp.headers.multi_items() if k.lower() == "set-cookie"]


def test_safe_next_keeps_only_local_paths() -> None:
    assert safe_next("/cameras/front?until=1") == "/cameras/front?until=1"
    for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "evil", "", None):
        assert safe_next(bad) == "/"
    assert safe_next("/x\r\nSet-Cookie: a=b") == "/"


def test_login_form_contract_cookie_and_headers(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    page = c.get("/login")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    html = Html.of(page.text)
    html.one("input", name="username", data_testid="login-username")
    html.one("input", name="password", data_testid="login-password", type="password")
    html.one("button", data_testid="login-submit")
    assert html.one("input", name="csrf_token")["value"] == c.cookies[CSRF_COOKIE]
    csrf_cookie = next(h for h in set_cookie_headers(page) if h.startswith(CSRF_COOKIE))
    assert "HttpOnly" in csrf_cookie
    # No inline script: every script element loads a same-origin file.
    assert all(a.get("src", "").startswith("/static/") for a in html.all("script"))

    resp = c.post(
        "/login",
        data={"username": "olive", "password": PASSWORD, "csrf_token": form_csrf(page.text)},
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/"
    cookie = next(h for h in set_cookie_headers(resp) if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # plain http
    assert c.get("/", follow_redirects=False).status_code == 200


def test_session_cookie_is_secure_over_https_and_next_is_kept(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client(https=True)
    page = c.get("/login")
    resp = c.post(
        "/login",
        data={
            "username": "olive",
            "password": PASSWORD,
            "csrf_token": form_csrf(page.text),
            "next": "/events?label=person",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/events?label=person"
    cookie = next(h for h in set_cookie_headers(resp) if h.startswith(SESSION_COOKIE))
    assert "Secure" in cookie


def test_offsite_next_is_ignored(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    page = c.get("/login")
    resp = c.post(
        "/login",
        data={
            "username": "olive",
            "password": PASSWORD,
            "csrf_token": form_csrf(page.text),
            "next": "//evil.example/steal",
        },
        follow_redirects=False,
    )
    assert resp.headers["location"] == "/"


def test_login_with_totp_rotates_the_session(site: Site) -> None:
    user = add_user(site.ctx, "olive")
    enrol = site.ctx.accounts.begin_totp(user.id)
    totp = pyotp.TOTP(enrol.secret)
    site.ctx.accounts.confirm_totp(user.id, enrol.secret, totp.at(site.clock.now - 30))
    c = site.client()
    page = c.get("/login")
    resp = c.post(
        "/login",
        data={
            "username": "olive",
            "password": PASSWORD,
            "csrf_token": form_csrf(page.text),
            "next": "/events",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login/totp?next=%2Fevents"
    waiting = c.cookies[SESSION_COOKIE]
    # A password alone is no session: pages still ask to sign in.
    assert c.get("/", follow_redirects=False).status_code == 303

    form = c.get("/login/totp", params={"next": "/events"})
    html = Html.of(form.text)
    html.one("input", name="code", data_testid="totp-code")
    html.one("button", data_testid="totp-submit")
    token = form_csrf(form.text)
    wrong = f"{(int(totp.at(site.clock.now)) + 1) % 1_000_000:06d}"
    bad = c.post("/login/totp", data={"code": wrong, "next": "/events", "csrf_token": token})
    assert bad.status_code == 400
    assert "wrong or already used code" in Html.of(bad.text).text("form-error")[0]

    ok = c.post(
        "/login/totp",
        data={"code": totp.at(site.clock.now), "next": "/events", "csrf_token": token},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert ok.headers["location"] == "/events"
    assert c.cookies[SESSION_COOKIE] != waiting
    assert site.ctx.accounts.session(waiting) is None
    assert c.get("/events").status_code == 200


def test_wrong_password_then_lockout_with_wait_time(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    token = form_csrf(c.get("/login").text)
    for _ in range(5):
        resp = c.post(
            "/login", data={"username": "olive", "password": "nope-nope-nope", "csrf_token": token}
        )
        assert resp.status_code == 400
        assert Html.of(resp.text).text("form-error") == ["wrong username or password"]
    locked = c.post("/login", data={"username": "olive", "password": PASSWORD, "csrf_token": token})
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert re.search(r"try again in \d+ s", Html.of(locked.text).text("form-error")[0])


def test_forms_without_csrf_token_are_refused(site: Site) -> None:
    owner = add_user(site.ctx, "olive")
    c = site.client()
    c.get("/login")
    anon = c.post("/login", data={"username": "olive", "password": PASSWORD})
    assert anon.status_code == 403
    assert "CSRF" in Html.of(anon.text).text("error-detail")[0]
    assert SESSION_COOKIE not in c.cookies
    # Signed in, the session's token is needed; the double-submit cookie is not enough.
    sign_in(c, "olive")
    for data in ({}, {"csrf_token": c.cookies[CSRF_COOKIE]}, {"csrf_token": "x" * 43}):
        resp = c.post("/settings/account/tokens", data={"name": "script", **data})
        assert resp.status_code == 403
    assert site.ctx.accounts.tokens(owner.id) == []


def test_pages_redirect_to_login_when_signed_out(site: Site) -> None:
    c = site.client()
    for path in ("/", "/cameras/front?until=1700003000", "/events", "/settings/users"):
        resp = c.get(path, follow_redirects=False)
        assert resp.status_code == 303, path
        location = urlsplit(resp.headers["location"])
        assert location.path == "/login"
        assert parse_qs(location.query)["next"] == [path]
    # The JSON API keeps answering with a problem document.
    api = c.get("/api/cameras")
    assert api.status_code == 401
    assert api.headers["content-type"].startswith("application/problem+json")


def test_camera_grid_and_page_contract(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    sign_in(c, "olive")
    grid = c.get("/")
    assert grid.status_code == 200
    assert grid.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    html = Html.of(grid.text)
    cards = html.all(data_testid="camera-card")
    assert [a["data-camera"] for a in cards] == ["front", "porch"]
    html.one("video", data_testid="live-video", data_camera="front")
    html.one("a", href="/cameras/front")
    statuses = html.text("camera-status")
    assert statuses[0].startswith("offline since 2023-11-14 23:00:")
    assert statuses[1] == "disabled"

    page = c.get("/cameras/front", params={"until": str(T0 + 3600)})
    assert page.status_code == 200
    html = Html.of(page.text)
    section = html.one("section", id="camera-page")
    assert float(section["data-until"]) == T0 + 3600
    assert float(section["data-since"]) == T0 + 3600 - 86400
    html.one(data_testid="timeline")
    html.one("video", data_testid="live-video", data_camera="front")
    html.one("video", data_testid="playback")
    html.one("button", data_testid="prev-event")
    html.one("button", data_testid="next-event")
    html.one("select", data_testid="speed")
    assert [o["value"] for o in html.all("option")] == ["0.5", "1", "2", "4", "8"]
    html.one("a", data_testid="download-clip")
    html.one(data_testid="playback-time")
    scripts = [a["src"] for a in html.all("script")]
    assert "/static/timeline.js" in scripts
    assert "/static/live.js" in scripts
    assert html.text("camera-status")[0].startswith("camera offline since")


def test_empty_grid_and_hidden_camera_pages(site: Site) -> None:
    add_user(site.ctx, "olive")
    add_user(site.ctx, "mia", Role.MEMBER)
    c = site.client()
    sign_in(c, "mia")
    html = Html.of(c.get("/").text)
    assert html.all(data_testid="camera-card") == []
    assert "Ask the owner" in html.text("empty-state")[0]
    denied = c.get("/cameras/front")
    assert denied.status_code == 403
    assert denied.headers["content-type"].startswith("text/html")
    assert Html.of(denied.text).all(data_testid="error-page")
    missing = c.get("/cameras/nowhere")
    assert missing.status_code == 404
    assert Html.of(missing.text).all(data_testid="error-page")
    assert c.get(f"/events/{site.events['walk']}").status_code == 403
    assert c.get("/no/such/page", headers={"accept": "text/html"}).status_code == 404


def test_member_sees_only_granted_cameras(site: Site) -> None:
    add_user(site.ctx, "olive")
    add_user(site.ctx, "mia", Role.MEMBER, cameras=("front",))
    c = site.client()
    sign_in(c, "mia")
    html = Html.of(c.get("/").text)
    assert [a["data-camera"] for a in html.all(data_testid="camera-card")] == ["front"]
    assert c.get("/cameras/porch").status_code == 403
    assert c.get("/cameras/front").status_code == 200
    # A member may not manage users: a 403 page, not a redirect.
    assert c.get("/settings/users").status_code == 403


def test_events_list_filters_and_paging(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    sign_in(c, "olive")
    html = Html.of(c.get("/events").text)
    rows = html.all("li", data_testid="event-row")
    ids = [int(r["data-event-id"]) for r in rows]
    assert ids == [site.events["bike"], site.events["person"], site.events["walk"]]
    walk = site.events["walk"]
    thumb = html.one("img", src=f"/api/events/{walk}/snapshot.jpg")
    assert thumb["loading"] == "lazy"
    assert html.all("select", name="camera")
    assert html.all("input", name="day")

    person = Html.of(c.get("/events", params={"label": "person"}).text)
    assert [r["data-event-id"] for r in person.all("li", data_testid="event-row")] == [
        str(site.events["person"])
    ]
    zone = Html.of(c.get("/events", params={"zone": "porch"}).text)
    assert [r["data-event-id"] for r in zone.all("li", data_testid="event-row")] == [str(walk)]
    other_day = Html.of(c.get("/events", params={"day": "2023-11-13"}).text)
    assert other_day.all("li", data_testid="event-row") == []
    assert other_day.text("empty-state")
    assert c.get("/events", params={"day": "yesterday"}).status_code == 422

    monkeypatch.setattr(pages, "EVENTS_PAGE", 2)
    first = Html.of(c.get("/events", params={"camera": "front"}).text)
    assert len(first.all("li", data_testid="event-row")) == 2
    link = first.one("a", data_testid="next-page")["href"]
    assert parse_qs(urlsplit(link).query)["camera"] == ["front"]
    second = Html.of(c.get(link).text)
    assert [r["data-event-id"] for r in second.all("li", data_testid="event-row")] == [str(walk)]
    assert second.all("a", data_testid="next-page") == []


def test_event_page_plays_and_downloads_its_clip(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    sign_in(c, "olive")
    walk = site.events["walk"]
    html = Html.of(c.get(f"/events/{walk}").text)
    video = html.one("video", data_testid="event-clip")
    assert video["src"] == f"/api/events/{walk}/clip.mp4"
    link = html.one("a", data_testid="download-clip")
    assert link["href"] == video["src"]
    assert "download" in link
    clip = c.get(video["src"])
    assert clip.status_code == 200
    assert clip.headers["content-type"] == "video/mp4"
    assert c.get("/events/999999").status_code == 404
    assert c.get("/events/abc").status_code == 404


def test_setup_link_with_totp_then_login_needs_the_code(site: Site) -> None:
    secret = site.ctx.accounts.bootstrap_owner("olive")
    assert secret is not None
    c = site.client()
    assert c.get("/setup", params={"token": "bogus"}).status_code == 400
    page = c.get("/setup", params={"token": secret})
    assert page.status_code == 200
    html = Html.of(page.text)
    html.one("input", name="password", data_testid="setup-password")
    html.one("input", data_testid="setup-totp-code")
    html.one(data_testid="setup-submit")
    totp_secret = html.text("totp-secret")[0]
    assert re.fullmatch(r"[A-Z2-7]{32}", totp_secret)
    assert html.one("img", alt="QR code of the two-factor secret")["src"].startswith(
        "data:image/svg+xml"
    )
    form = {
        "token": secret,
        "password": "short",
        "totp_secret": totp_secret,
        "code": "",
        "csrf_token": form_csrf(page.text),
    }
    weak = c.post("/setup", data=form)
    assert weak.status_code == 400
    assert "at least 10" in Html.of(weak.text).text("form-error")[0]
    assert Html.of(weak.text).text("totp-secret") == [totp_secret]  # same secret kept
    form.update(password=PASSWORD, code=pyotp.TOTP(totp_secret).at(site.clock.now))
    done = c.post("/setup", data=form, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/login?done=setup"
    assert c.get("/setup", params={"token": secret}).status_code == 400  # used once
    login = c.post(
        "/login",
        data={"username": "olive", "password": PASSWORD, "csrf_token": form["csrf_token"]},
        follow_redirects=False,
    )
    assert login.headers["location"].startswith("/login/totp")


def test_static_files_types_and_traversal(site: Site) -> None:
    c = site.client()
    css = c.get("/static/app.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    js = c.get("/static/timeline.js")
    assert js.headers["content-type"].startswith("text/javascript")
    # Each reaches the route decoded (``../pages.py``, ``/etc/passwd``) and is refused there,
    # though ``pages.py`` and ``templates/base.html`` exist beside the static dir.
    for path in (
        "/static/..%2fpages.py",
        "/static/%2e%2e/templates/base.html",
        "/static/..%2f..%2f..%2f..%2fpyproject.toml",
        "/static/%2fetc%2fpasswd",
        "/static/",
        "/static/nothing.js",
    ):
        resp = c.get(path)
        assert resp.status_code == 404, path
        assert resp.json()["detail"].startswith("no static file"), path


def test_account_tokens_are_shown_once_and_revocable(site: Site) -> None:
    owner = add_user(site.ctx, "olive")
    c = site.client()
    token = sign_in(c, "olive")
    made = c.post("/settings/account/tokens", data={"name": "script", "csrf_token": token})
    assert made.status_code == 200
    secret = Html.of(made.text).text("new-token")[0]
    assert secret.startswith("hw_")
    api = client(site.app, headers={"Authorization": f"Bearer {secret}"})
    assert api.get("/api/cameras").status_code == 200
    again = Html.of(c.get("/settings/account").text)
    assert again.text("new-token") == []
    row = again.one("tr", data_testid="token-row")
    revoked = c.post(
        f"/settings/account/tokens/{row['data-token-id']}/revoke",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    assert api.get("/api/cameras").status_code == 401
    assert site.ctx.accounts.tokens(owner.id)[0].revoked_at is not None


def test_owner_adds_member_grants_camera_and_disables(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    token = sign_in(c, "olive")
    page = c.post(
        "/settings/users", data={"username": "Mia", "display_name": "Mia", "csrf_token": token}
    )
    assert page.status_code == 200
    link = Html.of(page.text).text("setup-link")[0]
    assert link.startswith("http://testserver/setup?token=")
    mia = site.ctx.accounts.user_by_name("mia")
    assert site.ctx.accounts.setup_user(parse_qs(urlsplit(link).query)["token"][0]).id == mia.id
    saved = c.post(
        f"/settings/users/{mia.id}/cameras",
        data={"camera": ["front", "not-ours"], "csrf_token": token},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert site.ctx.accounts.camera_grants(mia.id) == frozenset({"front"})
    html = Html.of(c.get("/settings/users").text)
    assert "checked" in html.one("input", data_testid="grant-front")
    assert "checked" not in html.one("input", data_testid="grant-porch")
    c.post(f"/settings/users/{mia.id}/cameras", data={"csrf_token": token})
    assert site.ctx.accounts.camera_grants(mia.id) == frozenset()
    c.post(f"/settings/users/{mia.id}/disable", data={"csrf_token": token})
    assert site.ctx.accounts.user(mia.id).disabled
    owner_id = site.ctx.accounts.user_by_name("olive").id
    assert (
        c.post(f"/settings/users/{owner_id}/disable", data={"csrf_token": token}).status_code == 404
    )


def test_support_grant_form(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    token = sign_in(c, "olive")
    bad = c.post("/settings/support", data={"hours": "500", "reason": "x", "csrf_token": token})
    assert bad.status_code == 400
    ok = c.post(
        "/settings/support",
        data={"hours": "2", "reason": "camera keeps dropping", "csrf_token": token},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    row = Html.of(c.get("/settings/support").text).one("tr", data_testid="support-row")
    c.post(f"/settings/support/{row['data-grant-id']}/revoke", data={"csrf_token": token})
    (grant,) = site.ctx.accounts.support_grants("home")
    assert grant.revoked_at is not None


def test_access_log_shows_a_members_clip_download(site: Site) -> None:
    add_user(site.ctx, "olive")
    add_user(site.ctx, "mia", Role.MEMBER, cameras=("front",))
    member = site.client()
    sign_in(member, "mia")
    clip = member.get(
        "/api/cameras/front/clip.mp4", params={"start": str(T0 + 1), "end": str(T0 + 5)}
    )
    assert clip.status_code == 200
    assert member.get("/settings/access-log").status_code == 403

    owner = site.client()
    sign_in(owner, "olive")
    page = owner.get("/settings/access-log")
    assert page.status_code == 200
    html = Html.of(page.text)
    downloads = html.all("tr", data_testid="access-row", data_action="footage:clip:download")
    assert len(downloads) == 1
    actors = html.text("access-actor")
    rows = html.all("tr", data_testid="access-row")
    assert actors[rows.index(downloads[0])] == "mia"
    assert "front" in page.text
    # Account changes are there too (the grant), newest first.
    actions = [r["data-action"] for r in rows]
    assert actions.index("footage:clip:download") < actions.index("account:camera:grant")


def test_logout_ends_the_session(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    token = sign_in(c, "olive")
    secret = c.cookies[SESSION_COOKIE]
    resp = c.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?done=logout"
    assert site.ctx.accounts.session(secret) is None
    assert c.get("/", follow_redirects=False).status_code == 303


def test_settings_pages_render_for_the_owner(site: Site) -> None:
    add_user(site.ctx, "olive")
    c = site.client()
    sign_in(c, "olive")
    index = Html.of(c.get("/settings").text)
    for testid in ("settings-account", "settings-users", "settings-support", "settings-access-log"):
        index.one("a", data_testid=testid)
    for path in ("/settings/account", "/settings/cameras", "/settings/notifications"):
        resp = c.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    cams = Html.of(c.get("/settings/cameras").text)
    assert [r["data-camera"] for r in cams.all("tr", data_testid="camera-row")] == [
        "front",
        "porch",
    ]
    assert "s3cret" not in c.get("/settings/cameras").text


def test_a_mistyped_totp_code_keeps_the_secret_being_enrolled(site: Site) -> None:
    """Regression: one wrong code on Settings -> Account made a new secret, so the code of
    the authenticator the user had already scanned could never match again."""
    add_user(site.ctx, "tess")
    c = site.client()
    token = sign_in(c, "tess")
    page = Html.of(c.get("/settings/account").text)
    secret = page.text("totp-secret")[0]
    wrong = c.post(
        "/settings/account/totp", data={"secret": secret, "code": "000000", "csrf_token": token}
    )
    assert wrong.status_code == 400
    assert Html.of(wrong.text).text("totp-secret") == [secret]
    code = pyotp.TOTP(secret).at(site.clock.now)
    if code == "000000":
        code = pyotp.TOTP(secret).at(site.clock.now + 30)
        site.clock.now += 30
    ok = c.post(
        "/settings/account/totp",
        data={"secret": secret, "code": code, "csrf_token": token},
        follow_redirects=False,
    )
    assert ok.status_code == 303, ok.text
