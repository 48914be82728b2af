"""Security of the web app (issue 3 acceptance), against the real app over real services on
SQLite and PostgreSQL: CSRF on every state-changing route, session fixation, cookie flags,
path traversal on media routes, other households' ids, brute-force lockout, revoked tokens,
members' camera grants, support grants, and the cost of a login for unknown users.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx
import nacl.pwhash
import pyotp
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from homewarden.config import Settings
from homewarden.domain import accounts as rules
from homewarden.domain.audit import AuditEntry
from homewarden.domain.permissions import GRANTS, Role
from homewarden.services.audit import AuditLog
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import UserRecord
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER, SESSION_COOKIE, declared_permissions
from tests.web.conftest import FOOTAGE, T0, Footage
from tests.web.helpers import (
    PASSWORD,
    Clock,
    TestClient,
    add_user,
    client,
    csrf,
    login,
    make_context,
    token_client,
)

UNSAFE = {"POST", "PUT", "DELETE", "PATCH"}


@dataclass
class Site:
    app: FastAPI
    ctx: AppContext
    clock: Clock
    owner: UserRecord
    events: dict[str, int]
    audit: AuditLog

    def owner_client(self) -> TestClient:
        return token_client(self.app, self.ctx, self.owner)

    def owner_session(self) -> TestClient:
        """The owner signed in with a session (API tokens cannot manage grants)."""
        c = client(self.app)
        c.headers[CSRF_HEADER] = login(c, self.owner.username)["csrf_token"]
        return c


@pytest.fixture
def site(index: Index, database_url: str, footage: Footage) -> Iterator[Site]:
    """Households ``home`` (cameras front, porch) and ``farm`` (camera barn), footage and
    events on front, one event on barn; the clock is settable."""
    for seg in footage.segments:
        index.add_segment(seg)
    events = {
        "front": index.open_event("front", T0 + 1.0, "motion", 0.2, []),
        "barn": index.open_event("barn", T0 + 2.0, "motion", 0.3, []),
    }
    index.update_event(events["front"], end=T0 + 3.0, snapshot_path=footage.snapshot_rel)
    index.update_event(events["barn"], end=T0 + 4.0, snapshot_path=footage.snapshot_rel)
    settings = Settings(
        data_dir=footage.data_dir,
        database_url=database_url,
        cameras={
            "front": {"url": f"file:{FOOTAGE}"},
            "porch": {"url": f"file:{FOOTAGE}", "enabled": False},
            "barn": {"url": f"file:{FOOTAGE}", "household": "farm"},
        },
    )
    clock = Clock(T0 + 3600)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, clock=clock)
        owner = add_user(ctx, "owner")
        yield Site(create_app(ctx), ctx, clock, owner, events, audit)


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["type"].endswith(f"/api/problems/{code}")
    return body


def _path(route: APIRoute, site: Site) -> str:
    values = {
        "name": "front",
        "camera": "front",
        "event_id": str(site.events["front"]),
        "user_id": str(site.owner.id),
    }
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: values.get(m.group(1), "1"), route.path)


def _unsafe_routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    found = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue  # WebSocket routes: no unsafe HTTP method
        for method in sorted((route.methods or set()) & UNSAFE):
            found.append((method, route.path, route))
    # Logging out (API or page) ends the session the walk uses: last.
    found.sort(
        key=lambda r: (
            (r[1] == "/api/session" and r[0] == "DELETE") or "logout" in r[1],
            r[1],
            r[0],
        )
    )
    return found


def _session_client(site: Site, **kwargs: Any) -> tuple[TestClient, str]:
    c = client(site.app, **kwargs)
    return c, login(c, "owner")["csrf_token"]


# -- CSRF --------------------------------------------------------------------------------


def test_every_unsafe_route_refuses_a_cookie_request_without_the_csrf_token(site: Site) -> None:
    c, token = _session_client(site)
    routes = _unsafe_routes(site.app)
    assert len(routes) >= 12
    for method, _, route in routes:
        resp = c.request(method, _path(route, site), json={})
        assert resp.status_code == 403, (method, route.path, resp.status_code)
        # Routes the owner may not use at all are refused for that first.
        if route.path.startswith("/api/") and declared_permissions(route) <= GRANTS[Role.OWNER]:
            assert "CSRF" in _problem(resp, 403, "permission-denied")["detail"]
        wrong = c.request(method, _path(route, site), json={}, headers={CSRF_HEADER: "x" * 43})
        assert wrong.status_code == 403, (method, route.path)
    assert c.get("/api/me").status_code == 200  # still signed in: nothing was done
    for method, _, route in routes:
        if c.get("/api/me").status_code == 401:  # a logout route ran: sign in again
            token = login(c, "owner")["csrf_token"]
        resp = c.request(method, _path(route, site), json={}, headers={CSRF_HEADER: token})
        assert resp.status_code != 403 or "CSRF" not in resp.text, (method, route.path)


def test_a_foreign_origin_is_refused_even_with_the_token(site: Site) -> None:
    c, token = _session_client(site)
    resp = c.post(
        "/api/tokens",
        json={"name": "x"},
        headers={CSRF_HEADER: token, "Origin": "https://evil.example"},
    )
    assert "cross-site" in _problem(resp, 403, "permission-denied")["detail"]
    same = c.post(
        "/api/tokens",
        json={"name": "x"},
        headers={CSRF_HEADER: token, "Origin": "http://testserver"},
    )
    assert same.status_code == 201, same.text


def test_login_needs_the_double_submit_token(site: Site) -> None:
    c = client(site.app)
    creds = {"username": "owner", "password": PASSWORD}
    no_cookie = c.post("/api/session", json=creds, headers={CSRF_HEADER: "a" * 43})
    _problem(no_cookie, 403, "permission-denied")
    token = csrf(c)
    _problem(c.post("/api/session", json=creds), 403, "permission-denied")
    wrong = token[:-1] + ("B" if token.endswith("A") else "A")  # never the token itself
    other = c.post("/api/session", json=creds, headers={CSRF_HEADER: wrong})
    _problem(other, 403, "permission-denied")
    ok = c.post("/api/session", json=creds, headers={CSRF_HEADER: token})
    assert ok.status_code == 200, ok.text
    # the form variant carries it as a field
    f = client(site.app)
    token = csrf(f)
    form = f.post("/api/session", data={**creds, "csrf_token": token})
    assert form.status_code == 200, form.text


def test_token_requests_need_no_csrf_token(site: Site) -> None:
    resp = site.owner_client().put("/api/push/preferences", json={"enabled": False})
    assert resp.status_code == 200, resp.text
    assert resp.json()["enabled"] is False


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/tokens", {"name": "another"}),
        ("GET", "/api/tokens", None),
        ("POST", "/api/users", {"username": "eve"}),
        ("GET", "/api/users", None),
        ("POST", "/api/support-grants", {"hours": 1, "reason": "help"}),
    ],
)
def test_an_api_token_cannot_mint_tokens_accounts_or_grants(
    site: Site, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Regression: a bearer token could create another token (which outlived the first one's
    revocation) and a second owner; tokens never manage credentials, accounts or grants."""
    resp = site.owner_client().request(method, path, json=body)
    _problem(resp, 403, "permission-denied")


def test_the_api_adds_members_only(site: Site) -> None:
    """Owners and staff are made at the machine's shell, never over the network."""
    c = client(site.app)
    me = login(c, "owner")
    owner = c.post(
        "/api/users",
        json={"username": "eve", "role": "owner"},
        headers={CSRF_HEADER: me["csrf_token"]},
    )
    assert owner.status_code == 422, owner.text
    member = c.post("/api/users", json={"username": "eve"}, headers={CSRF_HEADER: me["csrf_token"]})
    assert member.status_code == 201, member.text
    assert member.json()["user"]["role"] == "member"


# -- sessions and cookies ----------------------------------------------------------------


def _set_cookie(resp: httpx.Response, name: str) -> dict[str, str]:
    for header in resp.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            flags = {k.lower(): str(v) for k, v in morsel.items() if v}
            return {"value": morsel.value, **flags}
    raise AssertionError(f"no Set-Cookie for {name}")


@pytest.mark.parametrize("https", [False, True])
def test_session_cookie_flags(site: Site, https: bool) -> None:
    c = client(site.app, https=https)
    token = csrf(c)
    resp = c.post(
        "/api/session",
        json={"username": "owner", "password": PASSWORD},
        headers={CSRF_HEADER: token},
    )
    assert resp.status_code == 200, resp.text
    cookie = _set_cookie(resp, SESSION_COOKIE)
    assert cookie["httponly"]
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert bool(cookie.get("secure")) is https
    raw = [h for h in resp.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)]
    assert ("Secure" in raw[0]) is https
    assert c.get("/api/me").json()["username"] == "owner"
    out = c.delete("/api/session", headers={CSRF_HEADER: resp.json()["csrf_token"]})
    assert out.status_code == 204
    assert _set_cookie(out, SESSION_COOKIE)["value"] == ""
    _problem(c.get("/api/me"), 401, "authentication")


def test_a_cookie_planted_before_login_is_not_the_session_after(site: Site) -> None:
    c = client(site.app)
    c.cookies.set(SESSION_COOKIE, "attacker-chosen-value")
    token = csrf(c)
    resp = c.post(
        "/api/session",
        json={"username": "owner", "password": PASSWORD},
        headers={CSRF_HEADER: token},
    )
    issued = _set_cookie(resp, SESSION_COOKIE)["value"]
    assert issued != "attacker-chosen-value"
    planted = client(site.app, cookies={SESSION_COOKIE: "attacker-chosen-value"})
    _problem(planted.get("/api/me"), 401, "authentication")


def test_session_id_rotates_at_every_login_and_the_old_one_dies(site: Site) -> None:
    c = client(site.app)
    login(c, "owner")
    first = c.cookies[SESSION_COOKIE]
    login(c, "owner")
    second = c.cookies[SESSION_COOKIE]
    assert first != second
    _problem(
        client(site.app, cookies={SESSION_COOKIE: first}).get("/api/me"), 401, "authentication"
    )
    assert client(site.app, cookies={SESSION_COOKIE: second}).get("/api/me").status_code == 200


def test_session_rotates_at_the_totp_step(site: Site) -> None:
    secret = pyotp.random_base32()
    user = add_user(site.ctx, "alice", Role.MEMBER)
    site.ctx.accounts.confirm_totp(user.id, secret, pyotp.TOTP(secret).at(site.clock()))
    site.clock.advance(60)  # the enrolment code's step is spent
    c = client(site.app)
    token = csrf(c)
    step = c.post(
        "/api/session",
        json={"username": "alice", "password": PASSWORD},
        headers={CSRF_HEADER: token},
    )
    assert step.json()["needs_totp"] is True
    pending = c.cookies[SESSION_COOKIE]
    # a half-finished login is no session
    _problem(
        client(site.app, cookies={SESSION_COOKIE: pending}).get("/api/me"), 401, "authentication"
    )
    bad = c.post("/api/session/totp", json={"code": "000000"}, headers={CSRF_HEADER: token})
    _problem(bad, 401, "authentication")
    code = pyotp.TOTP(secret).at(site.clock())
    done = c.post("/api/session/totp", json={"code": code}, headers={CSRF_HEADER: token})
    assert done.status_code == 200, done.text
    full = c.cookies[SESSION_COOKIE]
    assert full != pending
    assert c.get("/api/me").json()["username"] == "alice"
    # the pending session is gone: it cannot be finished twice
    again = client(site.app, cookies={SESSION_COOKIE: pending})
    again_token = csrf(again)
    replay = again.post(
        "/api/session/totp", json={"code": code}, headers={CSRF_HEADER: again_token}
    )
    _problem(replay, 401, "authentication")


# -- path traversal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/cameras/..%2F..%2F..%2Fetc%2Fpasswd/clip.mp4",
        "/api/cameras/%2e%2e/clip.mp4",
        "/api/cameras/%2e%2e%2f%2e%2e%2fhomewarden.db/clip.mp4",
        "/api/cameras/%2Fetc%2Fpasswd/clip.mp4",
        "/api/cameras/..%5C..%5Cwindows/clip.mp4",
        "/api/cameras/front%00/clip.mp4",
        "/api/cameras/..%2Ffront",
        "/api/events/..%2F1/snapshot.jpg",
        "/api/events/%2e%2e/clip.mp4",
        "/api/events/%2Fetc%2Fpasswd",
    ],
)
def test_path_traversal_on_media_routes_serves_nothing(site: Site, path: str) -> None:
    c = site.owner_client()
    resp = c.get(path, params={"start": T0, "end": T0 + 3})
    assert resp.status_code in (404, 405, 422), (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert b"root:" not in resp.content
    assert not [e for e in _footage_entries(site)]


@pytest.mark.parametrize("camera", ["../front", "..", "/etc/passwd", "front/../front", "%2e%2e"])
def test_traversal_in_camera_query_parameters_is_not_found(site: Site, camera: str) -> None:
    c = site.owner_client()
    for url in ("/api/recordings", "/api/gaps", "/api/events", "/api/recordings/summary"):
        _problem(c.get(url, params={"camera": camera}), 404, "not-found")


def test_a_snapshot_path_leading_outside_the_data_dir_is_not_served(
    site: Site, index: Index
) -> None:
    index.update_event(site.events["front"], snapshot_path="../../../../../../etc/passwd")
    resp = site.owner_client().get(f"/api/events/{site.events['front']}/snapshot.jpg")
    _problem(resp, 404, "not-found")
    assert b"root:" not in resp.content


# -- households --------------------------------------------------------------------------


def test_another_households_event_and_camera_read_as_not_found(site: Site) -> None:
    c = site.owner_client()
    barn = site.events["barn"]
    missing = _problem(c.get("/api/events/999999"), 404, "not-found")["detail"]
    for tail in ("", "/snapshot.jpg", "/clip.mp4"):
        body = _problem(c.get(f"/api/events/{barn}{tail}"), 404, "not-found")
        assert body["detail"] == missing.replace("999999", str(barn))
        assert "barn" not in body["detail"]
    _problem(c.get("/api/cameras/barn"), 404, "not-found")
    clip = c.get("/api/cameras/barn/clip.mp4", params={"start": T0, "end": T0 + 3})
    _problem(clip, 404, "not-found")
    listed = [e["id"] for e in c.get("/api/events").json()["events"]]
    assert listed == [site.events["front"]]
    assert {cam["name"] for cam in c.get("/api/cameras").json()} == {"front", "porch"}
    # the event exists: the farm's owner reads it
    farmer = add_user(site.ctx, "farmer", Role.OWNER, "farm")
    farm = token_client(site.app, site.ctx, farmer)
    assert farm.get(f"/api/events/{barn}").json()["camera"] == "barn"
    _problem(farm.get(f"/api/events/{site.events['front']}"), 404, "not-found")
    assert [cam["name"] for cam in farm.get("/api/cameras").json()] == ["barn"]


# -- brute force -------------------------------------------------------------------------


def _login(c: TestClient, password: str, username: str = "owner") -> httpx.Response:
    token = csrf(c)
    resp: httpx.Response = c.post(
        "/api/session",
        json={"username": username, "password": password},
        headers={CSRF_HEADER: token},
    )
    return resp


def test_brute_force_locks_the_pair_temporarily_and_not_other_addresses(site: Site) -> None:
    attacker = client(site.app, host=("198.51.100.9", 4000))
    for _ in range(rules.LOCK_AFTER):
        _problem(_login(attacker, "wrong password!"), 401, "authentication")
    locked = _login(attacker, "wrong password!")
    body = _problem(locked, 429, "too-many-attempts")
    assert int(locked.headers["retry-after"]) == int(rules.LOCK_BASE)
    assert "try again" in body["detail"]
    # the right password is refused too while the lock lasts
    _problem(_login(attacker, PASSWORD), 429, "too-many-attempts")
    # the owner at home is not locked out by an attacker elsewhere
    home = client(site.app, host=("192.168.1.20", 5000))
    assert _login(home, PASSWORD).status_code == 200
    site.clock.advance(rules.LOCK_BASE + 1)
    assert _login(attacker, PASSWORD).status_code == 200


# -- tokens ------------------------------------------------------------------------------


def test_a_revoked_token_is_401(site: Site) -> None:
    c, token = _session_client(site)
    made = c.post("/api/tokens", json={"name": "backup script"}, headers={CSRF_HEADER: token})
    assert made.status_code == 201
    secret, token_id = made.json()["secret"], made.json()["token"]["id"]
    assert "hash" not in made.text
    script = client(site.app, headers={"Authorization": f"Bearer {secret}"})
    assert script.get("/api/cameras").status_code == 200
    listed = c.get("/api/tokens").json()
    assert [t["id"] for t in listed] == [token_id]
    assert secret not in c.get("/api/tokens").text
    gone = c.delete(f"/api/tokens/{token_id}", headers={CSRF_HEADER: token})
    assert gone.json()["revoked_at"] is not None
    body = _problem(script.get("/api/cameras"), 401, "authentication")
    assert "revoked" in body["detail"]


# -- members -----------------------------------------------------------------------------


def test_member_without_a_grant_does_not_see_the_camera(site: Site) -> None:
    member = add_user(site.ctx, "kid", Role.MEMBER, cameras=("porch",))
    m = token_client(site.app, site.ctx, member)
    assert [cam["name"] for cam in m.get("/api/cameras").json()] == ["porch"]
    front = site.events["front"]
    for url in (
        "/api/cameras/front",
        f"/api/events/{front}",
        f"/api/events/{front}/snapshot.jpg",
        f"/api/events/{front}/clip.mp4",
        "/api/recordings?camera=front",
        "/api/gaps?camera=front",
        "/api/events?camera=front",
    ):
        _problem(m.get(url), 403, "permission-denied")
    _problem(
        m.get("/api/cameras/front/clip.mp4", params={"start": T0, "end": T0 + 3}),
        403,
        "permission-denied",
    )
    assert m.get("/api/recordings").json() == []
    assert m.get("/api/events").json()["events"] == []
    _problem(m.get("/api/cameras/barn"), 404, "not-found")  # another household
    _problem(m.get("/api/users"), 403, "permission-denied")  # owners manage users
    # the owner grants front: now it is visible
    owner = site.owner_session()
    granted = owner.put(f"/api/users/{member.id}/cameras/front")
    assert granted.status_code == 200, granted.text
    assert granted.json()["cameras"] == ["front", "porch"]
    assert m.get(f"/api/events/{front}/snapshot.jpg").status_code == 200
    assert {cam["name"] for cam in m.get("/api/cameras").json()} == {"front", "porch"}
    owner.delete(f"/api/users/{member.id}/cameras/front")
    _problem(m.get(f"/api/events/{front}"), 403, "permission-denied")


# -- support -----------------------------------------------------------------------------


def _footage_entries(site: Site) -> list[AuditEntry]:
    entries = [site.audit.entry(i) for i in range(site.audit.size())]
    return [e for e in entries if e.action.startswith("footage:")]


def test_support_sees_footage_only_while_the_owner_grants_it(site: Site) -> None:
    staff = add_user(site.ctx, "helpdesk", Role.SUPPORT, None)
    s = token_client(site.app, site.ctx, staff)
    front = site.events["front"]
    snapshot = f"/api/events/{front}/snapshot.jpg"
    clip = ("/api/cameras/front/clip.mp4", {"start": T0, "end": T0 + 3})
    assert s.get("/api/cameras").json() == []
    _problem(s.get(snapshot), 403, "permission-denied")
    _problem(s.get(clip[0], params=clip[1]), 403, "permission-denied")
    _problem(s.get("/api/cameras/front"), 403, "permission-denied")
    assert _footage_entries(site) == []
    made = site.owner_session().post(
        "/api/support-grants", json={"hours": 1, "reason": "camera keeps dropping"}
    )
    assert made.status_code == 201, made.text
    grant = made.json()
    assert grant["active"] is True
    assert s.get(snapshot).status_code == 200
    assert s.get(clip[0], params=clip[1]).status_code == 200
    assert [cam["name"] for cam in s.get("/api/cameras").json()] == ["front", "porch"]
    _problem(s.get(f"/api/events/{site.events['barn']}"), 403, "permission-denied")
    uses = _footage_entries(site)
    assert [e.action for e in uses] == ["footage:snapshot:view", "footage:clip:download"]
    for entry in uses:
        assert (entry.actor.kind, entry.actor.id) == ("staff", str(staff.id))
        assert entry.reason == f"api; support grant {grant['id']}"
        assert entry.subject.household == "home"
    site.clock.advance(3600 + 1)
    _problem(s.get(snapshot), 403, "permission-denied")
    _problem(s.get(clip[0], params=clip[1]), 403, "permission-denied")
    assert s.get("/api/cameras").json() == []
    assert len(_footage_entries(site)) == 2
    listed = site.owner_session().get("/api/support-grants").json()
    assert [(g["id"], g["active"]) for g in listed] == [(grant["id"], False)]


def test_a_revoked_support_grant_ends_access_at_once(site: Site) -> None:
    staff = add_user(site.ctx, "helpdesk", Role.SUPPORT, None)
    s = token_client(site.app, site.ctx, staff)
    owner = site.owner_session()
    grant = owner.post("/api/support-grants", json={"hours": 2, "reason": "help"}).json()
    assert s.get(f"/api/events/{site.events['front']}").status_code == 200
    assert owner.delete(f"/api/support-grants/{grant['id']}").json()["active"] is False
    _problem(s.get(f"/api/events/{site.events['front']}"), 403, "permission-denied")


# -- login cost --------------------------------------------------------------------------


def test_unknown_user_and_wrong_password_each_cost_one_argon2id_verify(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = nacl.pwhash.argon2id.verify

    def counting(hashed: bytes, password: bytes) -> bool:
        calls.append(hashed)
        return bool(real(hashed, password))

    monkeypatch.setattr(nacl.pwhash.argon2id, "verify", counting)
    answers = {}
    for name, username, password in (
        ("unknown", "nobody", PASSWORD),
        ("wrong", "owner", "not the password"),
        ("malformed", "Not A Valid Name!", PASSWORD),
    ):
        calls.clear()
        resp = _login(client(site.app, host=("192.0.2.50", 1)), password, username)
        answers[name] = _problem(resp, 401, "authentication")["detail"]
        assert len(calls) == 1, name
        params = calls[0].split(b"$")[1:4]
        assert params[0] == b"argon2id"
        # the dummy hash has the cost of a real one
        assert params == site.owner.password_hash.encode().split(b"$")[1:4]  # type: ignore[union-attr]
    assert len(set(answers.values())) == 1
