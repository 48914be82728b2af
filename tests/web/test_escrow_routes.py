"""Custodians' escrow shares through the real web app (issue 6), on SQLite and PostgreSQL:
``POST /api/requests/{id}/escrow-share`` and the custodian's page, over the deployment of
tests/services/test_emergency_escrow.py (real footage sealed at rest, the owner's emergency
access on, the escrow key split 2-of-3). Custodians, the legal reviewer and the requester
sign in with a password and TOTP, the owner with a password; API tokens are refused."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from homewarden.services.emergency_escrow import EmergencyShareCollector
from homewarden.services.queries import Queries
from homewarden.services.runtime import AppContext
from homewarden.store.disclosure_store import StoredRequest
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER
from tests.fixtures_mail import SmtpTestServer
from tests.services.disclosure_helpers import PUBLIC_URL
from tests.services.test_emergency_escrow import SEALED_AT, EscrowWorld, password_hash
from tests.web.helpers import PASSWORD, TestClient, client, csrf

WAITING = "waiting for a second custodian"


class Site:
    """The web app over an :class:`EscrowWorld`'s services; signs people in."""

    def __init__(self, world: EscrowWorld) -> None:
        self.w = world
        ctx = AppContext(
            settings=world.settings,
            index=world.index,
            audit=world.audit,
            queries=Queries(world.index, world.settings, clock=world.clock, audit=world.audit),
            accounts=world.accounts,
            clock=world.clock,
            public_url=PUBLIC_URL,
            disclosure=world.svc,
            keys=world.ring,
        )
        self.app: FastAPI = create_app(ctx)
        self.totp: dict[str, str] = {}
        for user in (world.legal, world.custodian, world.cora):
            world.accounts.store.update_user(user.id, password_hash=password_hash())
            secret = pyotp.random_base32()
            world.accounts.confirm_totp(user.id, secret, pyotp.TOTP(secret).at(world.clock()))
            self.totp[user.username] = secret

    @property
    def shares(self) -> EmergencyShareCollector:
        collector: EmergencyShareCollector = self.app.state.escrow_shares
        return collector

    def session(self, username: str, totp: str | None = None) -> TestClient:
        """A client signed in as ``username`` (with TOTP when it has it), sending the
        session's CSRF token on every request."""
        self.w.clock.advance(30)  # a fresh TOTP step: a code is never accepted twice
        c = client(self.app)
        step = c.post(
            "/api/session",
            json={"username": username, "password": PASSWORD},
            headers={CSRF_HEADER: csrf(c)},
        )
        assert step.status_code == 200, step.text
        answer = step.json()
        secret = totp or self.totp.get(username)
        if secret is not None:
            done = c.post(
                "/api/session/totp",
                json={"code": pyotp.TOTP(secret).at(self.w.clock())},
                headers={CSRF_HEADER: answer["csrf_token"]},
            )
            assert done.status_code == 200, done.text
            answer = done.json()
        assert answer["needs_totp"] is False
        c.headers[CSRF_HEADER] = answer["csrf_token"]
        return c


@pytest.fixture
def site(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Iterator[Site]:
    w = EscrowWorld(tmp_path, database_url, smtp_server)
    try:
        yield Site(w)
    finally:
        w.close()


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["type"].endswith(f"/api/problems/{code}"), body
    return body


def _approved(site: Site) -> tuple[StoredRequest, TestClient]:
    """An approved emergency over the sealed porch footage, and its requester signed in."""
    rita = site.w.requester("rita")
    r = site.w.approved_emergency(rita)
    return r, site.session("rita", rita.totp.secret)


def test_two_custodians_enter_their_shares_through_the_api_and_it_is_fulfilled(
    site: Site,
) -> None:
    w = site.w
    r, rita = _approved(site)
    url = f"/api/requests/{r.id}/escrow-share"
    carl, cora = site.session("carl"), site.session("cora")

    first = carl.post(url, json={"share": w.shares[0]})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["state"], body["request_state"], body["package"]) == (
        WAITING,
        "owner_notified",
        None,
    )
    assert body["expires_at"] == pytest.approx(w.clock() + 900)

    # Nobody else enters a share: not the requester, the owner, the legal reviewer, a
    # custodian's API token, or anyone signed out.
    token, _ = w.accounts.create_token(w.custodian.id, "script")
    for other in (
        rita,
        site.session("olive"),
        site.session("lena"),
        client(site.app, headers={"Authorization": f"Bearer {token}"}),
    ):
        _problem(other.post(url, json={"share": w.shares[1]}), 403, "permission-denied")
    _problem(client(site.app).post(url, json={"share": w.shares[1]}), 401, "authentication")
    # A mistyped share: refused with its reason; carl's held share stays.
    typo = w.shares[1][:-3] + ("AAA" if not w.shares[1].endswith("AAA") else "BBB")
    bad = _problem(cora.post(url, json={"share": typo}), 422, "key-share")
    assert "mistyped" in bad["detail"] or "not an escrow share" in bad["detail"]
    held = site.shares.held(r.id)
    assert held is not None
    assert held.user_id == w.custodian.id
    # Not an emergency waiting for shares, or no such request.
    consent = w.consent(w.requester("rick"), SEALED_AT - 5, SEALED_AT + 15)
    _problem(
        carl.post(f"/api/requests/{consent.id}/escrow-share", json={"share": w.shares[0]}),
        409,
        "invalid-transition",
    )
    _problem(carl.post("/api/requests/R-nope/escrow-share", json={"share": "x"}), 404, "not-found")
    w.assert_nothing_released(r.id)

    done = cora.post(url, json={"share": w.shares[1]})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["package"]) == ("fulfilled", f"{r.id}.zip")
    assert carl.get(f"/api/requests/{r.id}").json()["state"] == "fulfilled"
    # The requester downloads what was released.
    link = rita.post(f"/api/requests/{r.id}/links")
    assert link.status_code == 201, link.text
    package = rita.get(link.json()["url"])
    assert package.status_code == 200
    assert package.content[:2] == b"PK"
    _problem(carl.post(url, json={"share": w.shares[2]}), 409, "invalid-transition")


def _form_csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def test_the_custodian_page_takes_shares_and_says_what_they_did(site: Site) -> None:
    w = site.w
    r, _rita = _approved(site)
    path = f"/requests/{r.id}/escrow-share"
    carl, cora = site.session("carl"), site.session("cora")

    # The request page sends custodians (only) here while it waits for their shares.
    detail = carl.get(f"/requests/{r.id}")
    assert f'href="{path}" data-testid="escrow-share-link"' in detail.text
    assert "escrow-share-link" not in site.session("lena").get(f"/requests/{r.id}").text
    page = carl.get(path)
    assert page.status_code == 200, page.text
    assert 'data-testid="share-input"' in page.text
    assert re.search(r'data-testid="share-held">\s*none', page.text)
    held = carl.post(path, data={"share": w.shares[0], "csrf_token": _form_csrf(page.text)})
    assert held.status_code == 200, held.text
    assert f'data-state="{WAITING}"' in held.text
    assert w.shares[0] not in held.text  # the share is never shown back

    seen = cora.get(path)
    assert f"from custodian account {w.custodian.id}" in seen.text
    # The same share from a second custodian: they do not combine; both dropped.
    dup = cora.post(path, data={"share": w.shares[0], "csrf_token": _form_csrf(seen.text)})
    assert dup.status_code == 422, dup.text
    assert "do not combine (duplicate share)" in dup.text
    assert site.shares.held(r.id) is None
    w.assert_nothing_released(r.id)

    again = cora.post(path, data={"share": w.shares[1], "csrf_token": _form_csrf(seen.text)})
    assert f'data-state="{WAITING}"' in again.text
    done = carl.post(path, data={"share": w.shares[2], "csrf_token": _form_csrf(page.text)})
    assert done.status_code == 200, done.text
    assert 'data-state="fulfilled"' in done.text
    assert 'data-testid="share-input"' not in done.text  # nothing more to enter
    assert w.svc.store.request(r.id).state == "fulfilled"

    refused = site.session("olive").get(path)
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]
