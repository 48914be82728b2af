"""Webhooks in the JSON API and on /settings/webhooks (issue 7), through the real app with
authorization on, on SQLite and PostgreSQL, with real HTTP receivers on loopback and a
settable clock: adding, rotating, disabling and deleting; bad input; other households; dead
letters visible through the API and the page, then sent again once the receiver is back."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.crypto.webhook_signature import parse_secret, verify
from homewarden.domain.permissions import Role
from homewarden.errors import WebhookMismatchError
from homewarden.services.audit import AuditLog
from homewarden.services.runtime import AppContext
from homewarden.services.webhooks import BACKOFF, MAX_ATTEMPTS, WebhookService
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER
from tests.services.webhook_receiver import Receiver
from tests.web.helpers import Clock, TestClient, add_user, client, login, make_context, token_client
from tests.web.test_pages import Html


@dataclass
class Site:
    app: FastAPI
    ctx: AppContext
    svc: WebhookService
    clock: Clock

    def session(self, username: str = "owner", *, header: bool = True) -> tuple[TestClient, str]:
        """A signed-in client and its CSRF token, sent as a header (scripts) unless
        ``header`` is False (a browser's forms send it as the ``csrf_token`` field)."""
        c = client(self.app)
        token = login(c, username)["csrf_token"]
        if header:
            c.headers[CSRF_HEADER] = token
        return c, token


@pytest.fixture
def site(index: Index, database_url: str, tmp_path: Path) -> Iterator[Site]:
    """Households ``home`` (camera ``front``; owner ``owner``, member ``mia``) and ``farm``
    (camera ``barn``; owner ``farmer``)."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": "file:/dev/null"},
            "barn": {"url": "file:/dev/null", "household": "farm"},
        },
    )
    clock = Clock(1_764_403_200.0)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, clock=clock)
        svc = WebhookService(
            index, audit, settings, public_url="http://hw.test", clock=clock, rng=lambda: 0.5
        )
        ctx = dataclasses.replace(ctx, webhooks=svc)
        add_user(ctx, "owner")
        add_user(ctx, "mia", Role.MEMBER, cameras=("front",))
        add_user(ctx, "farmer", Role.OWNER, "farm")
        yield Site(create_app(ctx), ctx, svc, clock)


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["type"].endswith(f"/api/problems/{code}")
    return body


def test_owner_manages_webhooks_through_the_api(site: Site) -> None:
    c, _ = site.session()
    made = c.post("/api/webhooks", json={"url": "http://192.168.1.20:8123/api/webhook/k1"})
    _problem(made, 422, "invalid-request")  # kinds are required
    made = c.post(
        "/api/webhooks",
        json={"url": "http://192.168.1.20:8123/api/webhook/k1", "kinds": ["event", "request"]},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    secret = body["secret"]
    hook = body["webhook"]
    assert secret.startswith("whsec_")
    assert len(parse_secret(secret)) == 32
    assert (hook["url"], hook["kinds"], hook["disabled"]) == (
        "http://192.168.1.20:8123/api/webhook/k1",
        ["event", "request"],
        False,
    )
    listed = c.get("/api/webhooks")
    assert [h["id"] for h in listed.json()] == [hook["id"]]
    assert secret not in listed.text  # shown once only
    assert "whsec_" not in listed.text
    assert secret not in c.get(f"/api/webhooks/{hook['id']}").text

    rotated = c.post(f"/api/webhooks/{hook['id']}/rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret

    off = c.put(f"/api/webhooks/{hook['id']}", json={"disabled": True})
    assert off.json()["disabled"] is True
    assert (
        c.put(f"/api/webhooks/{hook['id']}", json={"disabled": False}).json()["disabled"] is False
    )

    # A script's token reads webhooks but cannot add, change or remove one.
    owner = next(u for u in site.ctx.accounts.users() if u.username == "owner")
    t = token_client(site.app, site.ctx, owner)
    assert t.get("/api/webhooks").status_code == 200
    assert t.get("/api/webhooks/deliveries").status_code == 200
    _problem(t.post("/api/webhooks", json={"url": "http://a.b/", "kinds": ["event"]}), 403,
             "permission-denied")  # fmt: skip
    _problem(t.delete(f"/api/webhooks/{hook['id']}"), 403, "permission-denied")
    _problem(t.post(f"/api/webhooks/{hook['id']}/rotate"), 403, "permission-denied")
    # Members and anonymous callers: nothing.
    m, _ = site.session("mia")
    _problem(m.get("/api/webhooks"), 403, "permission-denied")
    _problem(m.post("/api/webhooks", json={"url": "http://a.b/", "kinds": ["event"]}), 403,
             "permission-denied")  # fmt: skip
    _problem(client(site.app).get("/api/webhooks"), 401, "authentication")

    assert c.delete(f"/api/webhooks/{hook['id']}").status_code == 204
    _problem(c.get(f"/api/webhooks/{hook['id']}"), 404, "not-found")
    reasons = [
        site.ctx.audit.entry(i).reason
        for i in range(site.ctx.audit.size())
        if f"webhook {hook['id']} " in site.ctx.audit.entry(i).reason
    ]
    assert [r.split(": ", 1)[1] for r in reasons] == [
        "added (event, request)",
        "secret rotated",
        "disabled",
        "enabled",
        "deleted",
    ]
    assert all("/api/webhook/k1" not in r for r in reasons)  # the receiver's path is secret


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("not a url", "printable ASCII"),
        ("htp//example.org", "http:// or https://"),
        ("ftp://example.org/hook", "http:// or https://"),
        ("mqtt://broker.local/x", "http:// or https://"),
        ("https://admin:pw@example.org/hook", "no user name or password"),
        ("http://example.org:70000/", "malformed"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ],
)
def test_bad_urls_are_refused(site: Site, url: str, detail: str) -> None:
    c, _ = site.session()
    resp = c.post("/api/webhooks", json={"url": url, "kinds": ["event"]})
    assert detail in _problem(resp, 422, "invalid-request")["detail"]
    assert c.get("/api/webhooks").json() == []


def test_bad_bodies_are_refused(site: Site) -> None:
    c, _ = site.session()
    for body in (
        {"url": "http://a.example/", "kinds": []},
        {"url": "http://a.example/", "kinds": ["everything"]},
        {"url": "http://a.example/", "kinds": ["event"], "secret": "whsec_mine"},
        {"url": 5, "kinds": ["event"]},
    ):
        _problem(c.post("/api/webhooks", json=body), 422, "invalid-request")
    _problem(c.get("/api/webhooks/deliveries?state=lost"), 422, "invalid-request")
    _problem(c.get("/api/webhooks/0"), 422, "invalid-request")


def test_another_households_webhook_is_not_found(site: Site) -> None:
    c, _ = site.session()
    hook = c.post("/api/webhooks", json={"url": "http://10.0.0.9/h", "kinds": ["event"]}).json()
    wid = hook["webhook"]["id"]
    site.ctx.index.open_event("front", site.clock(), "person", 0.9, [])
    site.svc.follower().poll()
    (delivery,) = c.get("/api/webhooks/deliveries").json()
    f, _ = site.session("farmer")
    assert f.get("/api/webhooks").json() == []
    assert f.get("/api/webhooks/deliveries").json() == []
    _problem(f.get(f"/api/webhooks/{wid}"), 404, "not-found")
    _problem(f.put(f"/api/webhooks/{wid}", json={"disabled": True}), 404, "not-found")
    _problem(f.post(f"/api/webhooks/{wid}/rotate"), 404, "not-found")
    _problem(f.delete(f"/api/webhooks/{wid}"), 404, "not-found")
    _problem(f.get(f"/api/webhooks/deliveries?webhook_id={wid}"), 404, "not-found")
    _problem(f.post(f"/api/webhooks/deliveries/{delivery['id']}/redeliver"), 404, "not-found")
    assert f.post(f"/settings/webhooks/{wid}/delete").status_code == 404
    # Untouched.
    assert c.get(f"/api/webhooks/{wid}").json()["disabled"] is False


def _fail_until_dead(site: Site) -> None:
    """Run the deliverer at each due time until every delivery is dead."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        site.svc.deliver_due()
        if attempt < MAX_ATTEMPTS:
            site.clock.advance(BACKOFF[attempt - 1])


def test_dead_letters_show_in_the_api_and_on_the_page_and_are_sent_again(site: Site) -> None:
    down, failing = Receiver(), Receiver()
    down.start()
    failing.start()
    try:
        down.stop()  # a closed port: connections refused
        failing.status["/hook"] = 500
        c, _ = site.session()
        secrets: dict[str, str] = {}
        for rx in (down, failing):
            made = c.post("/api/webhooks", json={"url": rx.url(), "kinds": ["event"]})
            assert made.status_code == 201, made.text
            secrets[rx.url()] = made.json()["secret"]
        event = site.ctx.index.open_event("front", site.clock(), "person", 0.9, ["steps"])
        assert site.svc.follower().poll() == 1

        site.svc.deliver_due()  # first attempts
        pending = c.get("/api/webhooks/deliveries", params={"state": "pending"}).json()
        errors = sorted(p["last_error"] for p in pending)
        assert errors[0].startswith("cannot connect: ")
        assert "Connection refused" in errors[0]
        assert errors[1] == "the receiver answered 500"
        assert all(p["next_attempt_at"] == site.clock() + BACKOFF[0] for p in pending)
        site.clock.advance(BACKOFF[0])
        _fail_until_dead(site)
        assert len(failing.calls) == MAX_ATTEMPTS

        dead = c.get("/api/webhooks/deliveries", params={"state": "dead"}).json()
        assert len(dead) == 2
        assert all(x["attempts"] == MAX_ATTEMPTS for x in dead)
        assert all(x["type"] == "event.created" for x in dead)
        assert all(x["message_id"] == f"msg_event_{event}" for x in dead)
        assert c.get("/api/webhooks/deliveries", params={"state": "pending"}).json() == []
        assert sorted(h["dead"] for h in c.get("/api/webhooks").json()) == [1, 1]

        page = c.get("/settings/webhooks")
        assert page.status_code == 200
        html = Html.of(page.text)
        rows = html.all("tr", data_testid="dead-letter")
        assert sorted(int(r["data-delivery-id"]) for r in rows) == sorted(x["id"] for x in dead)
        assert "Connection refused" in page.text
        assert "gave up after 6 attempts" in page.text

        # The receivers are back: one dead letter is sent again from the page, one by API.
        down.start()
        failing.status["/hook"] = 200
        by_url = {x["webhook_id"]: x for x in dead}
        hooks = {h["url"]: h["id"] for h in c.get("/api/webhooks").json()}
        from_page = by_url[hooks[down.url()]]
        from_api = by_url[hooks[failing.url()]]
        browser, form_token = site.session(header=False)
        again = browser.post(
            f"/settings/webhooks/deliveries/{from_page['id']}/redeliver",
            data={"csrf_token": form_token},
            follow_redirects=False,
        )
        assert again.status_code == 303
        assert again.headers["location"] == "/settings/webhooks?done=redelivered"
        api = c.post(f"/api/webhooks/deliveries/{from_api['id']}/redeliver")
        assert api.status_code == 200, api.text
        assert (api.json()["state"], api.json()["attempts"]) == ("pending", 0)
        assert site.svc.deliver_due().delivered == 2
        (call,) = down.wait_for(1)
        verify(parse_secret(secrets[down.url()]), call.headers, call.body, now=site.clock())
        raw = base64.b64decode(secrets[down.url()].removeprefix("whsec_"))
        signed = f"msg_event_{event}.{int(site.clock())}.".encode() + call.body
        mac = base64.b64encode(hmac.new(raw, signed, hashlib.sha256).digest()).decode()
        assert call.headers["webhook-signature"] == f"v1,{mac}"
        assert call.headers["webhook-id"] == f"msg_event_{event}"
        with pytest.raises(WebhookMismatchError):  # the other webhook's secret
            verify(parse_secret(secrets[failing.url()]), call.headers, call.body, now=site.clock())
        assert failing.calls[-1].status == 200

        page = Html.of(c.get("/settings/webhooks?done=redelivered").text)
        assert page.all("tr", data_testid="dead-letter") == []
        assert page.all(data_testid="no-dead-letters")
        assert len(page.all("tr", data_testid="delivery", data_state="delivered")) == 2
        # A delivered message is no dead letter.
        _problem(
            c.post(f"/api/webhooks/deliveries/{from_api['id']}/redeliver"),
            409,
            "invalid-transition",
        )
    finally:
        down.stop()
        failing.stop()


def test_the_page_adds_a_webhook_and_shows_its_secret_once(site: Site) -> None:
    c, token = site.session(header=False)  # a browser: forms carry the token
    index = Html.of(c.get("/settings").text)
    assert index.all("a", href="/settings/webhooks")
    m, _ = site.session("mia")
    assert not Html.of(m.get("/settings").text).all("a", href="/settings/webhooks")
    assert m.get("/settings/webhooks").status_code == 403

    bad = c.post(
        "/settings/webhooks",
        data={"url": "ftp://nas.local/x", "kinds": "event", "csrf_token": token},
    )
    assert bad.status_code == 400
    assert "http:// or https://" in bad.text
    made = c.post(
        "/settings/webhooks",
        data={
            "url": "http://homeassistant.local:8123/api/webhook/a1",
            "kinds": ["event", "request"],
            "csrf_token": token,
        },
    )
    assert made.status_code == 200, made.text
    html = Html.of(made.text)
    (row,) = html.all("tr", data_testid="webhook-row")
    shown = html.text("webhook-secret")
    assert len(shown) == 1
    assert shown[0].startswith("whsec_")
    (hook,) = c.get("/api/webhooks").json()
    assert hook["kinds"] == ["event", "request"]
    assert int(row["data-webhook-id"]) == hook["id"]
    later = c.get("/settings/webhooks")
    assert shown[0] not in later.text
    assert Html.of(later.text).text("webhook-secret") == []
    assert later.headers["cache-control"] == "no-store"

    off = c.post(
        f"/settings/webhooks/{hook['id']}/disable",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert off.status_code == 303
    assert c.get(f"/api/webhooks/{hook['id']}").json()["disabled"] is True
    gone = c.post(
        f"/settings/webhooks/{hook['id']}/delete",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert gone.status_code == 303
    assert c.get("/api/webhooks").json() == []


def test_openapi_declares_the_webhook_permissions(site: Site) -> None:
    c, _ = site.session()
    doc = c.get("/api/openapi.json").json()
    read, manage = ["notify:webhook:read"], ["notify:webhook:manage"]
    expected = {
        ("/api/webhooks", "get"): read,
        ("/api/webhooks", "post"): manage,
        ("/api/webhooks/{webhook_id}", "get"): read,
        ("/api/webhooks/{webhook_id}", "put"): manage,
        ("/api/webhooks/{webhook_id}", "delete"): manage,
        ("/api/webhooks/{webhook_id}/rotate", "post"): manage,
        ("/api/webhooks/deliveries", "get"): read,
        ("/api/webhooks/deliveries/{delivery_id}/redeliver", "post"): manage,
    }
    for (path, method), perms in expected.items():
        assert doc["paths"][path][method]["x-permissions"] == perms, (path, method)


def test_webhook_switch_refuses_a_lax_boolean(site: Site) -> None:
    # Regression: pydantic's lax mode read "yes", "on" and 1 as true.
    c, _ = site.session()
    made = c.post("/api/webhooks", json={"url": "http://a.example/", "kinds": ["event"]})
    hook = made.json()["webhook"]
    for lax in ("yes", "true", "on", 1, "1", 0, None):
        resp = c.put(f"/api/webhooks/{hook['id']}", json={"disabled": lax})
        _problem(resp, 422, "invalid-request")
    assert c.get(f"/api/webhooks/{hook['id']}").json()["disabled"] is False
