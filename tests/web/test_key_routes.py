"""Household keys in the JSON API (issue 6), through the real app with authorization on, on
SQLite and PostgreSQL: a browser login unlocks the owner's keys and logout drops them; the
owner reads the key status, takes the setup recovery code once, grants and revokes a
member's keys, rotates and uses the recovery code and switches emergency access; members,
API tokens, other households and anonymous callers are refused."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.permissions import Role
from homewarden.errors import KeyUnavailableError
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.runtime import AppContext
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER, SESSION_COOKIE
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

NEW_PASSWORD = "a new and long passphrase"


@dataclass
class Site:
    app: FastAPI
    ctx: AppContext
    keys: KeyRing

    def session(self, username: str = "owner", password: str = PASSWORD) -> TestClient:
        """A signed-in client sending its CSRF token as a header."""
        c = client(self.app)
        c.headers[CSRF_HEADER] = login(c, username, password)["csrf_token"]
        return c

    def session_id(self, c: TestClient) -> str:
        secret = c.cookies.get(SESSION_COOKIE)
        assert secret
        return hashlib.sha256(secret.encode()).hexdigest()

    def user_id(self, username: str) -> int:
        return self.ctx.accounts.user_by_name(username).id

    def tags(self) -> list[AuditTag]:
        audit = self.ctx.audit
        return [audit.entry(i).action for i in range(audit.size())]


@pytest.fixture
def site(index: Index, database_url: str, tmp_path: Path) -> Iterator[Site]:
    """Households ``home`` (cameras ``front``, ``back``; owner ``owner``, member ``mia``
    granted ``front``, member ``noa`` granted nothing) and ``farm`` (camera ``barn``; owner
    ``farmer``), with household keys managed (cheap Argon2id, passed explicitly)."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": "file:/dev/null"},
            "back": {"url": "file:/dev/null"},
            "barn": {"url": "file:/dev/null", "household": "farm"},
        },
    )
    clock = Clock(1_764_403_200.0)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, clock=clock)
        keys = attach(ctx.accounts, index, audit, settings.keys_dir, clock=clock,
                      params=ARGON2ID_FLOOR)  # fmt: skip
        ctx.accounts.ensure_households()  # the households' first keys
        ctx = dataclasses.replace(ctx, keys=keys)
        add_user(ctx, "owner")
        add_user(ctx, "mia", Role.MEMBER, cameras=("front",))
        add_user(ctx, "noa", Role.MEMBER)
        add_user(ctx, "farmer", Role.OWNER, "farm")
        yield Site(create_app(ctx), ctx, keys)


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["type"].endswith(f"/api/problems/{code}"), body
    return body


def test_login_unlocks_the_owner_and_logout_locks(site: Site) -> None:
    before = site.keys.recording_key("home")[0]
    c = site.session()
    sid = site.session_id(c)
    assert site.keys.is_unlocked(sid)
    # an owner made before (with a password, no key pair) completed the household's setup
    # at this first login: a recovery code waits, and new footage has a new key
    after = site.keys.recording_key("home")[0]
    assert after != before
    assert site.keys.private_key(sid, "home", after).key_id == after
    body = c.get("/api/keys").json()
    assert body["unlocked"] is True
    status = body["status"]
    assert status["household"] == "home"
    assert status["current_key_id"] == after.hex()
    assert [v["version"] for v in status["versions"]] == [1, 2]
    assert status["recovery_code"] is True
    assert status["setup_pending"] is False
    assert status["escrow_enabled"] is False
    assert status["escrow_key_id"] is None
    people = {p["username"]: p for p in status["people"]}
    assert people["owner"]["versions"] == [1, 2]
    assert people["mia"]["has_key_pair"] is False  # made at her first login
    assert people["noa"]["entitled"] is False
    code = c.post("/api/keys/recovery/setup-code")
    assert code.status_code == 200, code.text
    assert len(code.json()["recovery_code"]) == 39
    _problem(c.post("/api/keys/recovery/setup-code"), 404, "not-found")  # once only
    assert c.delete("/api/session").status_code == 204
    assert not site.keys.is_unlocked(sid)


def test_only_the_owners_signed_in_session_manages_keys(site: Site) -> None:
    anonymous = client(site.app)
    _problem(anonymous.get("/api/keys"), 401, "authentication")
    mia = site.session("mia")
    _problem(mia.get("/api/keys"), 403, "permission-denied")
    _problem(mia.post("/api/keys/recovery"), 403, "permission-denied")
    owner = site.ctx.accounts.user_by_name("owner")
    token = token_client(site.app, site.ctx, owner)
    _problem(token.get("/api/keys"), 403, "permission-denied")  # a token never manages keys
    _problem(token.put("/api/keys/escrow", json={"enabled": False}), 403, "permission-denied")
    farmer = site.session("farmer")
    assert farmer.get("/api/keys").json()["status"]["household"] == "farm"
    _problem(farmer.post(f"/api/keys/members/{site.user_id('mia')}"), 404, "not-found")
    _problem(farmer.delete(f"/api/keys/members/{site.user_id('mia')}"), 404, "not-found")
    # without CSRF token a state change is refused
    bare = client(site.app)
    login(bare, "owner")
    _problem(bare.post("/api/keys/recovery"), 403, "permission-denied")


def test_owner_grants_and_revokes_a_members_keys(site: Site) -> None:
    mia = site.session("mia")  # her key pair is made; no owner is unlocked: pending
    mia_sid = site.session_id(mia)
    owner = site.session()  # the owner's unlock completes her pending grant
    current = site.keys.recording_key("home")[0]
    assert site.keys.private_key(mia_sid, "home", current).key_id == current
    granted = owner.post(f"/api/keys/members/{site.user_id('mia')}")
    assert granted.status_code == 200, granted.text
    assert granted.json() == {"sealed": 0}  # she holds every version already
    site.session("noa")
    body = _problem(owner.post(f"/api/keys/members/{site.user_id('noa')}"), 422, "invalid-request")
    assert "grant a camera first" in body["detail"]
    _problem(owner.post(f"/api/keys/members/{site.user_id('farmer')}"), 404, "not-found")

    gone = owner.delete(f"/api/keys/members/{site.user_id('mia')}")
    assert gone.status_code == 204, gone.text
    rotated = site.keys.recording_key("home")[0]
    assert rotated != current
    assert site.ctx.accounts.camera_grants(site.user_id("mia")) == frozenset()
    with pytest.raises(KeyUnavailableError):
        site.keys.private_key(mia_sid, "home", rotated)
    with pytest.raises(KeyUnavailableError):
        site.keys.private_key(mia_sid, "home", current)
    status = owner.get("/api/keys").json()["status"]
    newest = status["versions"][-1]
    assert newest["key_id"] == rotated.hex()
    assert "person:mia" not in newest["holders"]
    assert "person:owner" in newest["holders"]
    tags = site.tags()
    assert AuditTag.KEY_HOUSEHOLD_REVOKE in tags
    assert AuditTag.KEY_HOUSEHOLD_ROTATE in tags


def test_recovery_code_rotation_and_use(site: Site) -> None:
    owner = site.session()
    old = owner.post("/api/keys/recovery/setup-code").json()["recovery_code"]
    made = owner.post("/api/keys/recovery")
    assert made.status_code == 200, made.text
    new = made.json()["recovery_code"]
    assert new != old

    anonymous = client(site.app)
    token = csrf(anonymous)
    use = {"username": "owner", "recovery_code": old, "new_password": NEW_PASSWORD}
    _problem(
        anonymous.post("/api/keys/recovery/use", json=use, headers={CSRF_HEADER: token}),
        401,
        "authentication",
    )
    _problem(anonymous.post("/api/keys/recovery/use", json=use), 403, "permission-denied")
    use["recovery_code"] = new
    done = anonymous.post("/api/keys/recovery/use", json=use, headers={CSRF_HEADER: token})
    assert done.status_code == 200, done.text
    replacement = done.json()["recovery_code"]
    assert replacement not in (old, new)
    # the old session is over; the new password unlocks every version
    _problem(owner.post("/api/keys/recovery"), 401, "authentication")
    again = site.session("owner", NEW_PASSWORD)
    sid = site.session_id(again)
    for version in again.get("/api/keys").json()["status"]["versions"]:
        assert (
            site.keys.private_key(sid, "home", version["key_id"]).key_id.hex()
            == (version["key_id"])
        )
    assert AuditTag.KEY_RECOVERY_USE in site.tags()


def test_emergency_access_switch(site: Site) -> None:
    owner = site.session()
    off = {"enabled": False}
    body = _problem(owner.put("/api/keys/escrow", json={"enabled": True}), 422, "invalid-request")
    assert "escrow init" in body["detail"]
    site.keys.init_escrow(Actor(ActorKind.LOCAL_OPERATOR, "cli:test"))
    on = owner.put("/api/keys/escrow", json={"enabled": True})
    assert on.status_code == 200, on.text
    status = on.json()["status"]
    assert status["escrow_enabled"] is True
    assert all("escrow" in v["holders"] for v in status["versions"])
    before = status["current_key_id"]
    # a session whose keys are gone (a restart) cannot switch it on, but can switch it off
    site.keys.sessions_ended(user_id=site.user_id("owner"))
    _problem(owner.put("/api/keys/escrow", json={"enabled": True}), 401, "keys-locked")
    off_answer = owner.put("/api/keys/escrow", json=off)
    assert off_answer.status_code == 200, off_answer.text
    status = off_answer.json()["status"]
    assert status["escrow_enabled"] is False
    assert off_answer.json()["unlocked"] is False
    assert status["current_key_id"] != before
    assert not any("escrow" in v["holders"] for v in status["versions"])
    tags = site.tags()
    assert AuditTag.KEY_ESCROW_ENABLE in tags
    assert AuditTag.KEY_ESCROW_DISABLE in tags


def test_escrow_switch_refuses_a_lax_boolean(site: Site) -> None:
    # Regression: {"enabled": "yes"} was read as true and turned emergency access on.
    owner = site.session()
    site.keys.init_escrow(Actor(ActorKind.LOCAL_OPERATOR, "cli:test"))
    for lax in ("yes", "true", "on", 1, "1", 0, "false", None):
        _problem(owner.put("/api/keys/escrow", json={"enabled": lax}), 422, "invalid-request")
    assert owner.get("/api/keys").json()["status"]["escrow_enabled"] is False
    assert owner.put("/api/keys/escrow", json={"enabled": True}).status_code == 200
