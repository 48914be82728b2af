"""The push API, the settings page, the service worker, manifest and icons, over the real app
(real accounts, sessions with CSRF, API tokens) and a real loopback push service that
decrypts what it receives (``tests.services.push_endpoint``)."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.domain.permissions import Role
from homewarden.services.audit import AuditLog
from homewarden.services.push import PushNotifier, PushService
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import UserRecord
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER
from tests.services.push_endpoint import PushEndpoint, push_endpoint
from tests.web.helpers import Clock, add_user, client, login, make_context, token_client

with warnings.catch_warnings():
    # Starlette announces a move from httpx to httpx2 for its test client.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

FULL = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


@dataclass
class Web:
    app: FastAPI
    ctx: AppContext
    push: PushService
    endpoint: PushEndpoint
    owner: UserRecord
    member: UserRecord

    def signed_in(self, user: UserRecord) -> tuple[TestClient, str]:
        """A client with a session of ``user`` and its CSRF token."""
        c = client(self.app)
        token = login(c, user.username)["csrf_token"]
        return c, str(token)


@pytest.fixture
def web(index: Index, database_url: str, tmp_path: Path) -> Iterator[Web]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": "file:/dev/null", "zones": {"steps": FULL}},
            "garage": {"url": "file:/dev/null", "zones": {"door": FULL}},
        },
    )
    clock = Clock()
    with AuditLog.open(database_url, settings.keys_dir) as audit, push_endpoint() as endpoint:
        ctx = make_context(index, settings, audit, clock=clock)
        push = PushService(ctx.accounts, settings, clock, allow_http_endpoints=True)
        ctx = dataclasses.replace(ctx, push=push)
        owner = add_user(ctx, "owner", Role.OWNER)
        member = add_user(ctx, "member", Role.MEMBER, cameras=("garage",))
        yield Web(create_app(ctx), ctx, push, endpoint, owner, member)


# -- public: service worker, manifest, icons ---------------------------------------------


def test_the_app_is_installable_without_signing_in(web: Web) -> None:
    anon = client(web.app)
    sw = anon.get("/sw.js")
    assert sw.status_code == 200
    assert sw.headers["content-type"].startswith("application/javascript")
    assert 'addEventListener("push"' in sw.text
    assert "showNotification" in sw.text

    m = anon.get("/manifest.webmanifest")
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("application/manifest+json")
    doc = m.json()
    assert doc["name"] == "HomeWarden"
    assert doc["start_url"] == "/"
    assert doc["display"] == "standalone"
    sizes = {i["sizes"]: i["src"] for i in doc["icons"]}
    assert {"192x192", "512x512"} <= set(sizes)
    for n in (192, 512):
        resp = anon.get(sizes[f"{n}x{n}"])
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        assert img.shape == (n, n, 3)
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 3  # drawn, not blank
    svg = anon.get("/icons/icon.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert anon.get("/icons/icon-64.png").status_code == 404
    assert anon.get("/static/push.js").status_code == 200


def test_push_api_needs_an_account(web: Web) -> None:
    anon = client(web.app)
    for method, path in [
        ("GET", "/api/push/vapid-public-key"),
        ("GET", "/api/push/subscriptions"),
        ("GET", "/api/push/preferences"),
        ("POST", "/api/push/test"),
    ]:
        resp = anon.request(method, path)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")


# -- the API with a session ----------------------------------------------------------------


def test_subscribe_test_and_unsubscribe_with_a_session(web: Web) -> None:
    c, token = web.signed_in(web.owner)
    key = c.get("/api/push/vapid-public-key")
    assert key.status_code == 200
    assert key.json() == {"public_key": web.push.public_key()}

    sub = web.endpoint.new_subscription("phone").to_json()
    # CSRF: a cookie-authenticated POST without the token is refused, and stores nothing
    refused = c.post("/api/push/subscriptions", json=sub)
    assert refused.status_code == 403
    assert web.push.subscriptions(web.owner.id) == []

    made = c.post("/api/push/subscriptions", json=sub, headers={CSRF_HEADER: token})
    assert made.status_code == 201, made.text
    assert made.json()["endpoint"] == sub["endpoint"]
    assert made.json()["push_service"] == "127.0.0.1"
    listed = c.get("/api/push/subscriptions").json()
    assert [s["endpoint"] for s in listed] == [sub["endpoint"]]
    assert "p256dh" not in listed[0]
    assert "auth" not in listed[0]

    sent = c.post("/api/push/test", headers={CSRF_HEADER: token})
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"delivered": 1, "gone": 0, "failed": 0}
    (got,) = web.endpoint.to("phone")
    assert got.payload is not None
    assert got.payload["test"] is True

    body = {"endpoint": sub["endpoint"]}
    assert c.request("DELETE", "/api/push/subscriptions", json=body).status_code == 403
    gone = c.request("DELETE", "/api/push/subscriptions", json=body, headers={CSRF_HEADER: token})
    assert gone.status_code == 204
    assert web.push.subscriptions(web.owner.id) == []
    again = c.request("DELETE", "/api/push/subscriptions", json=body, headers={CSRF_HEADER: token})
    assert again.status_code == 404


def test_bad_subscriptions_are_422_problems(web: Web) -> None:
    c, token = web.signed_in(web.owner)
    sub = web.endpoint.new_subscription("x").to_json()
    for bad in (
        {**sub, "keys": {"p256dh": "AAAA", "auth": sub["keys"]["auth"]}},
        {**sub, "endpoint": "file:///etc/passwd"},
        {"endpoint": sub["endpoint"]},
    ):
        resp = c.post("/api/push/subscriptions", json=bad, headers={CSRF_HEADER: token})
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json")
    assert web.push.subscriptions(web.owner.id) == []


def test_a_user_cannot_remove_another_users_subscription(web: Web) -> None:
    sub = web.endpoint.new_subscription("owner-phone").to_json()
    web.push.subscribe(web.owner.id, sub)
    c, token = web.signed_in(web.member)
    resp = c.request(
        "DELETE",
        "/api/push/subscriptions",
        json={"endpoint": sub["endpoint"]},
        headers={CSRF_HEADER: token},
    )
    assert resp.status_code == 404
    assert len(web.push.subscriptions(web.owner.id)) == 1
    assert c.get("/api/push/subscriptions").json() == []


def test_preferences_api(web: Web) -> None:
    c, token = web.signed_in(web.member)
    assert c.get("/api/push/preferences").json() == {
        "enabled": True,
        "cameras": None,
        "labels": None,
        "zones": None,
        "quiet_start": "00:00",
        "quiet_end": "00:00",
        "timezone": "UTC",
    }
    wanted = {
        "enabled": True,
        "cameras": ["garage"],
        "labels": ["person"],
        "zones": None,
        "quiet_start": "23:00",
        "quiet_end": "06:00",
        "timezone": "America/New_York",
    }
    assert c.put("/api/push/preferences", json=wanted).status_code == 403  # no CSRF token
    put = c.put("/api/push/preferences", json=wanted, headers={CSRF_HEADER: token})
    assert put.status_code == 200, put.text
    assert put.json() == wanted
    assert c.get("/api/push/preferences").json() == wanted
    bad = c.put(
        "/api/push/preferences",
        json={**wanted, "timezone": "Nowhere/City"},
        headers={CSRF_HEADER: token},
    )
    assert bad.status_code == 422
    assert "time zone" in bad.json()["detail"]


def test_api_tokens_need_no_csrf_token(web: Web) -> None:
    c = token_client(web.app, web.ctx, web.owner)
    sub = web.endpoint.new_subscription("script").to_json()
    assert c.post("/api/push/subscriptions", json=sub).status_code == 201
    assert c.post("/api/push/test").json()["delivered"] == 1


def test_a_subscription_made_over_the_api_gets_event_pushes(web: Web) -> None:
    c, token = web.signed_in(web.member)
    sub = web.endpoint.new_subscription("member").to_json()
    assert (
        c.post("/api/push/subscriptions", json=sub, headers={CSRF_HEADER: token}).status_code == 201
    )
    index = web.ctx.index
    now = web.ctx.clock()
    front = index.open_event("front", now - 3, "person", 0.9, ["steps"])
    garage = index.open_event("garage", now - 2, "person", 0.9, ["door"])
    for e in (front, garage):
        index.update_event(e, end=now - 1)
    assert PushNotifier(web.push, index).poll() == 1  # the member sees only the garage
    (got,) = web.endpoint.to("member")
    assert got.payload is not None
    assert got.payload["event_id"] == garage
    # the links in the payload are routes of this app
    paths = {r.path for r in web.app.routes if hasattr(r, "path")}
    assert "/api/events/{event_id}/clip.mp4" in paths
    assert "/api/events/{event_id}/snapshot.jpg" in paths


# -- the settings page -----------------------------------------------------------------------


def test_settings_page_shows_only_visible_cameras_and_saves_the_form(web: Web) -> None:
    c, token = web.signed_in(web.member)
    page = c.get("/settings/notifications")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'<meta name="csrf-token" content="{token}">' in html
    assert '<script src="/static/push.js" defer></script>' in html
    assert 'value="garage"' in html
    assert 'value="front"' not in html  # not granted to the member
    assert 'value="door"' in html
    assert 'value="steps"' not in html
    assert 'value="Europe/Paris"' in html

    form = {
        "csrf_token": token,
        "enabled": "on",
        "cameras": "garage",
        "labels_all": "on",
        "zones": "door",
        "quiet_start": "22:30",
        "quiet_end": "07:00",
        "timezone": "Europe/Paris",
    }
    saved = c.post("/settings/notifications", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == "/settings/notifications?saved=1"
    prefs = web.push.preferences(web.member.id)
    assert prefs.cameras == ["garage"]
    assert prefs.labels is None
    assert prefs.zones == ["door"]
    assert (prefs.quiet_start, prefs.quiet_end, prefs.timezone) == (
        "22:30",
        "07:00",
        "Europe/Paris",
    )
    again = c.get("/settings/notifications?saved=1").text
    assert re.search(r'value="22:30"', again)
    assert re.search(r'<option value="Europe/Paris" selected>', again)

    # unticking the switch turns it off
    off = {k: v for k, v in form.items() if k != "enabled"}
    assert c.post("/settings/notifications", data=off, follow_redirects=False).status_code == 303
    assert web.push.preferences(web.member.id).enabled is False


def test_settings_form_needs_the_csrf_token_and_valid_values(web: Web) -> None:
    c, token = web.signed_in(web.owner)
    before = web.push.preferences(web.owner.id)
    form = {"enabled": "on", "quiet_start": "01:00", "quiet_end": "02:00", "timezone": "UTC"}
    refused = c.post("/settings/notifications", data=form, follow_redirects=False)
    assert refused.status_code == 403
    bad = c.post(
        "/settings/notifications",
        data={**form, "csrf_token": token, "timezone": "Atlantis/Capital"},
        follow_redirects=False,
    )
    assert bad.status_code == 422
    assert "unknown time zone" in bad.text
    assert web.push.preferences(web.owner.id) == before


def test_settings_page_needs_a_signed_in_user(web: Web) -> None:
    resp = client(web.app).get("/settings/notifications", follow_redirects=False)
    assert resp.status_code in (303, 401)
    assert web.push.preferences(web.owner.id).enabled is True
