"""Disclosure requests through the JSON API only, over the real app, real accounts (Argon2id,
TOTP), a real SMTP server (aiosmtpd on loopback) and real footage (``bikes.mp4`` cut into
indexed segments), on SQLite and PostgreSQL.

Staff (a legal reviewer and a custodian) sign in with a password and TOTP; requesters sign up
through ``POST /api/requesters/signup``, get their setup link by mail, set a password and
TOTP through ``POST /api/setup`` and sign in with TOTP; owners sign in with a password.
Decisions that let footage leave the home (answer, review, policy, agencies) need a session:
API tokens are refused them (``TOKEN_EXCLUDED``). The scheduler the runtime runs every few
seconds (``DisclosureService.run_due``) is called by hand where a test needs a package.
"""

from __future__ import annotations

import base64
import io
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.domain.audit import Actor, AuditEntry
from homewarden.domain.permissions import Role
from homewarden.errors import NotFoundError
from homewarden.services.accounts import hash_password
from homewarden.services.audit import AuditLog
from homewarden.services.disclosure import DisclosureService
from homewarden.services.runtime import AppContext
from homewarden.store.index import Index
from homewarden.web.deps import CSRF_HEADER
from tests.fixtures_mail import SmtpTestServer
from tests.web.conftest import FOOTAGE, Footage
from tests.web.helpers import (
    PASSWORD,
    Clock,
    TestClient,
    build,
    client,
    csrf,
    make_context,
    token_client,
)

#: The footage's first segment starts here (see tests/web/conftest.py).
T0 = 1_700_002_795.0
PHONE = "+1 555 0100 200"
DOMAIN = "pd.example.gov"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SETUP_LINK = re.compile(r"/setup\?token=([A-Za-z0-9_\-]+)")


def problem(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem document with ``status`` (and type ``code``)."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["detail"]
    if code is not None:
        assert body["type"].endswith(f"/api/problems/{code}"), body
    return body


@dataclass
class Site:
    ctx: AppContext
    app: FastAPI
    clock: Clock
    audit: AuditLog
    smtp: SmtpTestServer
    agency: dict[str, Any]
    totp: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, TestClient] = field(default_factory=dict)

    @property
    def service(self) -> DisclosureService:
        service: DisclosureService = self.app.state.disclosure
        return service

    def scheduler(self) -> int:
        """One pass of the runtime's disclosure scheduler."""
        return self.service.run_due()

    def session(self, username: str, *, fresh: bool = False) -> TestClient:
        """A client signed in as ``username`` (with TOTP when the account has it), sending
        the session's CSRF token on every request; the same one again unless ``fresh``."""
        if not fresh and username in self.sessions:
            return self.sessions[username]
        self.clock.advance(30)  # a fresh TOTP step: a code is never accepted twice
        c = client(self.app)
        token = csrf(c)
        step = c.post(
            "/api/session",
            json={"username": username, "password": PASSWORD},
            headers={CSRF_HEADER: token},
        )
        assert step.status_code == 200, step.text
        answer = step.json()
        if username in self.totp:
            assert answer["needs_totp"] is True
            code = pyotp.TOTP(self.totp[username]).at(self.clock.now)
            # Regression (the token the password step answered with was refused here): the
            # TOTP step takes the pending session's token, as the API documents.
            done = c.post(
                "/api/session/totp",
                json={"code": code},
                headers={CSRF_HEADER: answer["csrf_token"]},
            )
            assert done.status_code == 200, done.text
            answer = done.json()
        assert answer["needs_totp"] is False
        c.headers[CSRF_HEADER] = answer["csrf_token"]
        assert c.get("/api/me").json()["username"] == username
        self.sessions[username] = c
        return c

    def setup_mail(self, address: str, timeout: float = 10.0) -> str:
        """The setup token mailed to ``address``."""
        deadline = time.monotonic() + timeout
        while True:
            for mail in list(self.smtp.messages):
                if address in mail.rcpt_tos and "finish your requester" in mail.message["Subject"]:
                    found = SETUP_LINK.search(mail.body)
                    assert found, mail.body
                    return found.group(1)
            assert time.monotonic() < deadline, f"no setup mail to {address}"
            time.sleep(0.02)

    def requester(self, username: str, domain: str = DOMAIN) -> TestClient:
        """Sign ``username`` up as a requester of the agency, finish the mailed setup link
        with a password and TOTP, and sign in; returns the signed-in client."""
        anon = client(self.app)
        token = csrf(anon)
        address = f"{username}@{domain}"
        resp = anon.post(
            "/api/requesters/signup",
            json={"agency_id": self.agency["id"], "email": address, "username": username},
            headers={CSRF_HEADER: token},
        )
        assert resp.status_code == 202, resp.text
        secret = self.setup_mail(address)
        enrol = anon.get("/api/setup/totp", params={"token": secret})
        assert enrol.status_code == 200, enrol.text
        totp = enrol.json()["secret"]
        done = anon.post(
            "/api/setup",
            json={
                "token": secret,
                "password": PASSWORD,
                "totp_secret": totp,
                "totp_code": pyotp.TOTP(totp).at(self.clock.now),
            },
            headers={CSRF_HEADER: token},
        )
        assert done.status_code == 200, done.text
        assert done.json()["role"] == "requester"
        self.totp[username] = totp
        return self.session(username)

    def entries(self, action: str) -> list[AuditEntry]:
        """Audit entries of ``action``, oldest first."""
        all_ = [self.audit.entry(i) for i in range(self.audit.size())]
        return [e for e in all_ if e.action == action]


@cache
def _password_hash() -> str:
    """One real Argon2id hash of :data:`PASSWORD` per worker (hashing costs ~0.2 s)."""
    return hash_password(PASSWORD)


def _user(ctx: AppContext, username: str, role: Role, household: str | None) -> int:
    """An account whose password is :data:`PASSWORD`."""
    user = ctx.accounts.add_user(username, role, household, actor=None).user
    ctx.accounts.store.update_user(user.id, password_hash=_password_hash())
    return user.id


def _staff(ctx: AppContext, clock: Clock, username: str, role: Role) -> str:
    user_id = _user(ctx, username, role, None)
    secret = pyotp.random_base32()
    ctx.accounts.confirm_totp(user_id, secret, pyotp.TOTP(secret).at(clock.now))
    return secret


@pytest.fixture
def site(
    index: Index, database_url: str, footage: Footage, smtp_server: SmtpTestServer
) -> Iterator[Site]:
    for seg in footage.segments:
        index.add_segment(seg)
    settings = Settings(
        data_dir=footage.data_dir,
        database_url=database_url,
        mail=smtp_server.settings(),
        cameras={
            "front": {"url": f"file:{FOOTAGE}"},
            "back": {"url": "rtsp://192.0.2.11/s", "household": "other"},
        },
    )
    clock = Clock()
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, clock=clock)
        app = build(ctx)
        olive = _user(ctx, "olive", Role.OWNER, "home")
        mia = _user(ctx, "mia", Role.MEMBER, "home")
        owner = ctx.accounts.principal_of(ctx.accounts.user(olive))
        ctx.accounts.grant_camera(owner, mia, "front", Actor.of_principal(owner))
        _user(ctx, "bob", Role.OWNER, "other")
        totp = {
            "lena": _staff(ctx, clock, "lena", Role.LEGAL_REVIEWER),
            "carl": _staff(ctx, clock, "carl", Role.CUSTODIAN),
        }
        s = Site(ctx, app, clock, audit, smtp_server, {}, totp)
        made = s.session("lena").post(
            "/api/staff/agencies",
            json={
                "name": "Town PD",
                "jurisdiction": "Town County",
                "mail_domains": [DOMAIN],
                "callback_phone": PHONE,
            },
        )
        assert made.status_code == 201, made.text
        s.agency = made.json()
        yield s


def _file(c: TestClient, **body: Any) -> httpx.Response:
    base: dict[str, Any] = {
        "type": "consent",
        "start": T0,
        "end": T0 + 6,
        "description": "bicycle theft on the street in front of the house",
        "camera": "front",
    }
    base.update(body)
    resp: httpx.Response = c.post("/api/requests", json=base)
    return resp


def _filed(c: TestClient, **body: Any) -> dict[str, Any]:
    resp = _file(c, **body)
    assert resp.status_code == 201, resp.text
    filed: dict[str, Any] = resp.json()
    return filed


def _warrant(**body: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "legal_order",
        "order_kind": "search_warrant",
        "case_number": "CR-2023-0042",
        "court": "Town County Circuit Court",
        "documents": [
            {
                "filename": "warrant.pdf",
                "content_type": "application/pdf",
                "data_base64": base64.b64encode(PDF).decode(),
            }
        ],
    }
    out.update(body)
    return out


# -- agencies and sign-up ---------------------------------------------------------------


def test_staff_keep_agencies_and_the_public_list_hides_the_phone(site: Site) -> None:
    public = client(site.app).get("/api/agencies")
    assert public.status_code == 200
    assert public.json() == [
        {
            "id": site.agency["id"],
            "name": "Town PD",
            "jurisdiction": "Town County",
            "mail_domains": [DOMAIN],
        }
    ]
    custodian = site.session("carl")
    listed = custodian.get("/api/staff/agencies").json()
    assert [(a["name"], a["callback_phone"], a["disabled"]) for a in listed] == [
        ("Town PD", PHONE, False)
    ]
    bad = custodian.post(
        "/api/staff/agencies",
        json={
            "name": "County",
            "jurisdiction": "X",
            "mail_domains": ["not a domain"],
            "callback_phone": PHONE,
        },
    )
    assert "not a mail domain" in problem(bad, 422, "invalid-request")["detail"]
    # Regression (gmail.com on an agency let anyone become a requester).
    webmail = custodian.post(
        "/api/staff/agencies",
        json={
            "name": "County",
            "jurisdiction": "X",
            "mail_domains": ["Gmail.com"],
            "callback_phone": PHONE,
        },
    )
    assert "public mail service" in problem(webmail, 422, "invalid-request")["detail"]
    body = {
        "name": "County Sheriff",
        "jurisdiction": "Town County",
        "mail_domains": ["sheriff.example.gov"],
        "callback_phone": "+1 555 0100 300",
    }
    rita = site.requester("rita")
    for who in (
        site.session("olive"),
        site.session("mia"),
        rita,
        token_client(site.app, site.ctx, site.ctx.accounts.user_by_name("lena")),
    ):
        problem(who.post("/api/staff/agencies", json=body), 403, "permission-denied")
    problem(rita.get("/api/staff/agencies"), 403, "permission-denied")
    problem(client(site.app).get("/api/staff/agencies"), 401)
    # Disabling an agency takes it off the public list.
    off = custodian.put(f"/api/staff/agencies/{site.agency['id']}", json={**body, "disabled": True})
    assert off.status_code == 200, off.text
    assert off.json()["disabled"] is True
    assert client(site.app).get("/api/agencies").json() == []
    changes = site.entries("request:agency:change")
    assert len(changes) == 2
    assert "disabled" in changes[-1].reason


def test_requester_signup_needs_an_official_domain_csrf_and_totp(site: Site) -> None:
    anon = client(site.app)
    token = csrf(anon)
    body = {"agency_id": site.agency["id"], "email": "eve@gmail.com", "username": "eve"}
    wrong = anon.post("/api/requesters/signup", json=body, headers={CSRF_HEADER: token})
    assert "official mail domains" in problem(wrong, 403, "permission-denied")["detail"]
    # A look-alike domain is no official domain either.
    spoof = anon.post(
        "/api/requesters/signup",
        json={**body, "email": f"eve@{DOMAIN}.evil.example"},
        headers={CSRF_HEADER: token},
    )
    problem(spoof, 403, "permission-denied")
    no_csrf = anon.post("/api/requesters/signup", json={**body, "email": f"eve@{DOMAIN}"})
    problem(no_csrf, 403, "permission-denied")
    unknown = anon.post(
        "/api/requesters/signup",
        json={**body, "agency_id": 9999, "email": f"eve@{DOMAIN}"},
        headers={CSRF_HEADER: token},
    )
    problem(unknown, 404, "not-found")
    assert site.smtp.mail_commands == []  # nothing was mailed
    with pytest.raises(NotFoundError):
        site.ctx.accounts.user_by_name("eve")

    ok = anon.post(
        "/api/requesters/signup",
        json={**body, "email": f"Eve@{DOMAIN.upper()}"},
        headers={CSRF_HEADER: token},
    )
    assert ok.status_code == 202, ok.text
    assert "token" not in ok.text  # the link goes to the mailbox only
    mail = site.smtp.wait_for(1)[0]
    assert mail.rcpt_tos == (f"Eve@{DOMAIN.upper()}",)
    secret = site.setup_mail(f"Eve@{DOMAIN.upper()}")
    assert secret not in ok.text
    # The account cannot sign in before the setup, nor finish it without TOTP.
    before = anon.post(
        "/api/session",
        json={"username": "eve", "password": PASSWORD},
        headers={CSRF_HEADER: token},
    )
    problem(before, 401, "authentication")
    no_totp = anon.post(
        "/api/setup", json={"token": secret, "password": PASSWORD}, headers={CSRF_HEADER: token}
    )
    assert "TOTP" in problem(no_totp, 422, "invalid-request")["detail"]
    totp = anon.get("/api/setup/totp", params={"token": secret}).json()["secret"]
    bad_code = anon.post(
        "/api/setup",
        json={"token": secret, "password": PASSWORD, "totp_secret": totp, "totp_code": "000000"},
        headers={CSRF_HEADER: token},
    )
    problem(bad_code, 401, "authentication")
    done = anon.post(
        "/api/setup",
        json={
            "token": secret,
            "password": PASSWORD,
            "totp_secret": totp,
            "totp_code": pyotp.TOTP(totp).at(site.clock.now),
        },
        headers={CSRF_HEADER: token},
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"username": "eve", "role": "requester"}
    site.totp["eve"] = totp
    eve = site.session("eve")
    assert eve.get("/api/me").json()["role"] == "requester"
    assert _file(eve).status_code == 201  # verified: may file
    # The same address cannot sign up twice, and the answer does not say who is registered
    # (regression: "already has an account" let anyone probe addresses); the mailbox is told.
    before = len(site.smtp.messages)
    again = anon.post(
        "/api/requesters/signup",
        json={**body, "email": f"eve@{DOMAIN}", "username": "eve2"},
        headers={CSRF_HEADER: token},
    )
    assert again.status_code == 202, again.text
    assert len(site.entries("request:requester:signup")) == 1
    told = site.smtp.wait_for(before + 1)[-1]
    assert "already have a requester account" in told.body
    assert f"eve@{DOMAIN}" in told.rcpt_tos


# -- consent ----------------------------------------------------------------------------


def test_owner_declines_consent_and_nobody_else_sees_it(site: Site) -> None:
    rita = site.requester("rita")
    filed = _filed(rita)
    rid = filed["id"]
    assert (filed["type"], filed["state"], filed["household"]) == (
        "consent",
        "awaiting_owner",
        "home",
    )
    assert filed["scope"]["cameras"] == ["front"]
    assert "agency_phone" not in filed
    assert "approvals" not in filed
    assert [t["to"] for t in filed["transitions"]] == [
        "submitted",
        "requester_verified",
        "awaiting_owner",
    ]
    olive = site.session("olive")
    inbox = olive.get("/api/requests").json()
    assert [r["id"] for r in inbox] == [rid]
    assert "transitions" not in inbox[0]
    assert olive.get("/api/requests", params={"state": "declined"}).json() == []
    bob = site.session("bob")  # owner of another household
    assert bob.get("/api/requests").json() == []
    problem(bob.get(f"/api/requests/{rid}"), 404, "not-found")
    problem(bob.post(f"/api/requests/{rid}/answer", json={"decision": "grant"}), 404)
    rob = site.requester("rob")
    assert rob.get("/api/requests").json() == []
    problem(rob.get(f"/api/requests/{rid}"), 404, "not-found")
    problem(rob.post(f"/api/requests/{rid}/withdraw", json={}), 404)
    # Staff cannot answer for the owner; a member cannot answer at all.
    lena = site.session("lena")
    # While it is open, the request's footage is held from retention (staff see the hold).
    held = [h for h in lena.get("/api/holds").json() if h["reason"] == f"open request {rid}"]
    assert [(h["camera"], h["expires_at"]) for h in held] == [("front", None)]
    problem(olive.get("/api/holds"), 403)
    problem(lena.post(f"/api/requests/{rid}/answer", json={"decision": "grant"}), 403)
    problem(
        lena.post(f"/api/requests/{rid}/review", json={"action": "reject", "code": "overbroad",
                                                       "reason": "too wide"}),
        409,
        "invalid-transition",
    )  # fmt: skip
    mia = site.session("mia")
    problem(mia.post(f"/api/requests/{rid}/answer", json={"decision": "grant"}), 403)

    declined = olive.post(
        f"/api/requests/{rid}/answer",
        json={"decision": "decline", "reason": "not without a warrant"},
    )
    assert declined.status_code == 200, declined.text
    assert declined.json()["state"] == "declined"
    seen = rita.get(f"/api/requests/{rid}").json()
    assert (seen["state"], seen["release"], seen["package_ready"]) == ("declined", "none", False)
    last = seen["transitions"][-1]
    assert (last["action"], last["to"], last["reason"]) == (
        "owner_decline",
        "declined",
        "not without a warrant",
    )
    assert last["actor"]["role"] == "owner"
    # Nothing is released, then or later.
    again = olive.post(f"/api/requests/{rid}/answer", json={"decision": "grant"})
    problem(again, 409, "invalid-transition")
    site.scheduler()
    assert rita.get(f"/api/requests/{rid}").json()["package_ready"] is False
    problem(rita.post(f"/api/requests/{rid}/links"), 409, "invalid-transition")
    assert [e.subject.request for e in site.entries("request:consent:decline")] == [rid]
    # Declined: the hold is released.
    assert not [h for h in lena.get("/api/holds").json() if rid in h["reason"]]
    assert not (site.service.packages_dir / f"{rid}.zip").exists()


def test_filing_errors_are_clear_problems(site: Site) -> None:
    rita = site.requester("rita")
    emergency = _file(rita, type="emergency", cameras=["front"])
    assert "attests a danger" in problem(emergency, 422, "invalid-request")["detail"]
    order = _file(rita, **_warrant(documents=[]))
    assert "order document" in problem(order, 422, "invalid-request")["detail"]
    no_case = _file(rita, **_warrant(case_number=""))
    assert "case number" in problem(no_case, 422, "invalid-request")["detail"]
    bad64 = _file(
        rita,
        **_warrant(
            documents=[
                {"filename": "w.pdf", "content_type": "application/pdf", "data_base64": "%%%"}
            ]
        ),
    )
    assert "not base64" in problem(bad64, 422, "invalid-request")["detail"]
    exe = _file(
        rita,
        **_warrant(
            documents=[
                {
                    "filename": "w.exe",
                    "content_type": "application/x-msdownload",
                    "data_base64": base64.b64encode(b"MZ").decode(),
                }
            ]
        ),
    )
    assert "application/pdf" in problem(exe, 422, "invalid-request")["detail"]
    both = _file(rita, address="1 Elm Street")
    assert "(one)" in problem(both, 422, "invalid-request")["detail"]
    backwards = _file(rita, start=T0 + 6, end=T0)
    assert "end must be after" in problem(backwards, 422, "invalid-request")["detail"]
    extra = _file(rita, household="home")
    problem(extra, 422, "invalid-request")  # unknown fields are refused
    # Unknown camera, unknown address, another household's camera named in the scope:
    # one message, so households cannot be probed.
    nowhere = [
        problem(_file(rita, camera="attic"), 404, "not-found")["detail"],
        problem(_file(rita, camera=None, address="1 Elm Street"), 404, "not-found")["detail"],
        problem(_file(rita, cameras=["back"]), 404, "not-found")["detail"],
    ]
    assert nowhere == ["no household found for that camera or address"] * 3
    assert rita.get("/api/requests").json() == []
    # Once the owner records the street address, the household is found by it.
    olive = site.session("olive")
    put = olive.put("/api/policy", json={"address": "1 Elm Street"})
    assert put.status_code == 200, put.text
    found = _filed(rita, camera=None, address="1, ELM   street")
    assert found["household"] == "home"
    # Non-requesters file nothing.
    for who in (olive, site.session("lena")):
        problem(_file(who), 403, "permission-denied")


# -- legal orders -----------------------------------------------------------------------


def test_search_warrant_documents_under_a_nondisclosure_order(site: Site) -> None:
    rita = site.requester("rita")
    until = site.clock.now + 30 * 86400
    filed = _filed(rita, **_warrant(nondisclosure_order=True, nondisclosure_until=until))
    rid = filed["id"]
    assert filed["state"] == "under_review"
    (doc,) = filed["documents"]
    assert (doc["filename"], doc["content_type"], doc["size"]) == (
        "warrant.pdf",
        "application/pdf",
        len(PDF),
    )
    lena, carl, olive = site.session("lena"), site.session("carl"), site.session("olive")
    queue = lena.get("/api/requests", params={"state": "under_review"}).json()
    assert [r["id"] for r in queue] == [rid]
    assert queue[0]["agency_phone"] == PHONE
    # Only a legal reviewer accepts a legal order; the custodian is refused.
    refused = carl.post(f"/api/requests/{rid}/review", json={"action": "accept", "reason": "ok"})
    assert "legal reviewer" in problem(refused, 403, "permission-denied")["detail"]
    no_reason = lena.post(f"/api/requests/{rid}/review", json={"action": "accept"})
    problem(no_reason, 422, "invalid-request")
    accepted = lena.post(
        f"/api/requests/{rid}/review", json={"action": "accept", "reason": "valid warrant"}
    )
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert (body["state"], body["release"], body["notice"]) == (
        "notice_scheduled",
        "footage",
        "scheduled",
    )
    assert body["notice_due"] == pytest.approx(until)
    for who in (lena, rita):
        got = who.get(f"/api/requests/{rid}/documents/{doc['id']}")
        assert got.status_code == 200, got.text
        assert got.content == PDF
        assert got.headers["content-type"] == "application/pdf"
        assert "no-store" in got.headers["cache-control"]
    # The owner is not told while the non-disclosure order lasts: the request is not there.
    problem(olive.get(f"/api/requests/{rid}/documents/{doc['id']}"), 404, "not-found")
    problem(olive.get(f"/api/requests/{rid}"), 404, "not-found")
    assert olive.get("/api/requests").json() == []
    assert olive.get("/api/notices").json() == []
    problem(lena.get(f"/api/requests/{rid}/documents/{doc['id'] + 99}"), 404, "not-found")
    problem(site.session("bob").get(f"/api/requests/{rid}/documents/{doc['id']}"), 404)
    # A second acceptance is a conflict with the request's state.
    twice = lena.post(f"/api/requests/{rid}/review", json={"action": "accept", "reason": "again"})
    problem(twice, 409, "invalid-transition")
    # The scheduler packages the warrant's scope for the requester; the owner still sees nothing.
    site.scheduler()
    fulfilled = rita.get(f"/api/requests/{rid}").json()
    assert (fulfilled["state"], fulfilled["package_ready"]) == ("fulfilled", True)
    assert olive.get("/api/requests").json() == []
    assert [e.subject.request for e in site.entries("request:search_warrant:accept")] == [rid]


def test_subpoena_yields_account_facts_only(site: Site) -> None:
    rita = site.requester("rita")
    subpoena = _warrant(order_kind="subpoena", facts=["owner_username", "camera_names"])
    rid = _filed(rita, **subpoena)["id"]
    lena = site.session("lena")
    done = lena.post(
        f"/api/requests/{rid}/review", json={"action": "accept", "reason": "valid subpoena"}
    ).json()
    assert (done["state"], done["release"], done["notice"]) == (
        "owner_notified",
        "account_facts",
        "sent",
    )
    assert "yields no footage" in done["transitions"][-2]["reason"]
    site.scheduler()
    link = rita.post(f"/api/requests/{rid}/links")
    assert link.status_code == 201, link.text
    got = rita.get(link.json()["url"])
    assert got.status_code == 200, got.text
    with zipfile.ZipFile(io.BytesIO(got.content)) as z:
        names = sorted(n.split("/", 1)[1] for n in z.namelist())
        assert not any(n.endswith(".mp4") for n in names)
        assert "facts.json" in names
        facts = z.read(f"{rid}/facts.json").decode()
    assert '"olive"' in facts
    assert '"front"' in facts
    assert "back" not in facts


# -- emergencies ------------------------------------------------------------------------


def test_emergency_needs_the_registered_callback_and_two_different_staff(site: Site) -> None:
    rita = site.requester("rita")
    olive = site.session("olive")
    filed = _filed(
        rita,
        type="emergency",
        cameras=["front"],
        attested=True,
        start=T0 - 3 * 3600,
        end=T0 + 8,
        description="a child taken from the street, seen passing the house",
    )
    rid = filed["id"]
    assert filed["state"] == "under_review"
    # The 3 h window is capped to the policy's 2 h, said so, never silently widened.
    assert filed["scope"]["end"] - filed["scope"]["start"] == pytest.approx(2 * 3600)
    assert "capped" in filed["transitions"][2]["reason"]
    lena, carl = site.session("lena"), site.session("carl")
    review = f"/api/requests/{rid}/review"
    first = lena.post(review, json={"action": "approve", "reason": "credible"})
    assert first.status_code == 200, first.text
    assert first.json()["state"] == "under_review"
    twice = lena.post(review, json={"action": "approve", "reason": "again"})
    assert "two different staff" in problem(twice, 403, "permission-denied")["detail"]
    problem(olive.post(review, json={"action": "approve", "reason": "mine"}), 403)
    problem(rita.post(review, json={"action": "approve", "reason": "please"}), 403)
    second = carl.post(review, json={"action": "approve", "reason": "agreed"})
    assert second.json()["state"] == "under_review"  # no call-back yet: nothing released
    assert second.json()["release"] == "none"
    # A number from anywhere but the agency record is refused.
    other = lena.post(
        review,
        json={"action": "callback", "number": "+1 555 0199 999", "confirmed": True, "note": "x"},
    )
    assert "registered number" in problem(other, 422, "invalid-request")["detail"]
    assert lena.get(f"/api/requests/{rid}").json()["callback"] is None
    called = lena.post(
        review,
        json={
            "action": "callback",
            "number": "+1 (555) 0100-200",
            "confirmed": True,
            "note": "Sgt. Diaz confirmed the case",
        },
    )
    assert called.status_code == 200, called.text
    body = called.json()
    assert (body["state"], body["release"], body["notice"]) == ("owner_notified", "footage", "sent")
    assert body["callback"]["number"] == PHONE
    assert body["callback"]["confirmed"] is True
    assert sorted(a["role"] for a in body["approvals"]) == ["custodian", "legal_reviewer"]
    assert "approved" in [t["to"] for t in body["transitions"]]
    # The owner was told at once (default policy) and now sees the request.
    assert olive.get(f"/api/requests/{rid}").json()["state"] == "owner_notified"
    inbox = olive.get("/api/notices").json()
    assert [n["request_id"] for n in inbox] == [rid]
    assert "emergency" in inbox[0]["subject"]
    assert len(site.entries("request:emergency:approve")) == 3  # two approvals + the release


# -- download links ---------------------------------------------------------------------


def test_download_links_are_bound_to_request_and_requester_and_expire(site: Site) -> None:
    rita = site.requester("rita")
    granted = _filed(rita)["id"]
    other = _filed(rita, start=T0, end=T0 + 2)["id"]
    problem(rita.post(f"/api/requests/{granted}/links"), 409, "invalid-transition")
    olive = site.session("olive")
    answer = olive.post(f"/api/requests/{granted}/answer", json={"decision": "grant"})
    assert answer.json()["state"] == "owner_notified", answer.text
    assert site.scheduler() == 1
    seen = rita.get(f"/api/requests/{granted}").json()
    assert (seen["state"], seen["package_ready"]) == ("fulfilled", True)
    # Only the requester makes links: staff and owner are refused.
    problem(olive.post(f"/api/requests/{granted}/links"), 403)
    problem(site.session("lena").post(f"/api/requests/{granted}/links"), 403)
    made = rita.post(f"/api/requests/{granted}/links")
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["expires_at"] == pytest.approx(site.clock.now + 24 * 3600)
    token = link["url"].split("token=", 1)[1]
    got = rita.get(link["url"])
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(got.content)) as z:
        names = z.namelist()
        assert any(n.endswith(".mp4") for n in names), names
        manifest = z.read(next(n for n in names if n.endswith("manifest.json"))).decode()
    assert granted in manifest
    assert "owner consent" in manifest
    assert len(site.entries("request:package:download")) == 1
    # Another request's path with this link, another requester with it, no token: refused
    # and recorded.
    denied = rita.get(f"/api/requests/{other}/package", params={"token": token})
    assert "not for this request" in problem(denied, 403, "permission-denied")["detail"]
    rob = site.requester("rob")
    problem(rob.get(link["url"]), 403, "permission-denied")
    problem(rita.get(f"/api/requests/{granted}/package"), 403, "permission-denied")
    problem(olive.get(link["url"]), 403, "permission-denied")
    denies = site.entries("request:package:deny")
    # (the owner holds no download permission: refused at the gate, before any link is read)
    assert [e.subject.request for e in denies] == [other, granted, granted]
    assert "not for this request" in denies[0].reason
    # 25 h later the link has expired (sign in again: the session has timed out too).
    site.clock.advance(25 * 3600)
    rita = site.session("rita", fresh=True)
    late = rita.get(link["url"])
    assert "expired" in problem(late, 403, "permission-denied")["detail"]
    last = site.entries("request:package:deny")[-1]
    assert (last.subject.request, "expired" in last.reason) == (granted, True)
    assert len(site.entries("request:package:download")) == 1
    # A fresh link works again.
    fresh = rita.post(f"/api/requests/{granted}/links").json()["url"]
    assert rita.get(fresh).content == got.content


# -- policy -----------------------------------------------------------------------------


def test_policy_is_the_owners_and_needs_a_session(site: Site) -> None:
    olive = site.session("olive")
    default = olive.get("/api/policy")
    assert default.status_code == 200
    assert default.json() == {
        "emergency_allowed": True,
        "notice_delay": 0.0,
        "emergency_max_window": 7200.0,
        "emergency_overlong": "cap",
        "notice_email": None,
        "address": None,
    }
    wanted = {
        "emergency_allowed": True,
        "notice_delay": 3600.0,
        "emergency_max_window": 1800.0,
        "emergency_overlong": "reject",
        "notice_email": "olive@home.example",
        "address": "12 Elm Street",
    }
    put = olive.put("/api/policy", json=wanted)
    assert put.status_code == 200, put.text
    assert put.json() == {**wanted, "address": "12 elm street"}
    assert olive.get("/api/policy").json() == put.json()
    too_late = olive.put("/api/policy", json={**wanted, "notice_delay": 86401})
    assert "notice_delay" in problem(too_late, 422, "invalid-request")["detail"]
    wide = olive.put("/api/policy", json={**wanted, "emergency_max_window": 3 * 3600})
    problem(wide, 422, "invalid-request")
    bad_mail = olive.put("/api/policy", json={**wanted, "notice_email": "not an address"})
    assert "notice address" in problem(bad_mail, 422, "invalid-request")["detail"]
    assert olive.get("/api/policy").json() == put.json()  # nothing changed
    # The other household's policy is its own.
    assert site.session("bob").get("/api/policy").json()["notice_delay"] == 0.0
    mia = site.session("mia")
    problem(mia.get("/api/policy"), 403, "permission-denied")
    problem(mia.put("/api/policy", json=wanted), 403, "permission-denied")
    problem(site.session("lena").put("/api/policy", json=wanted), 403)
    # An API token of the owner reads requests but decides nothing.
    rita = site.requester("rita")
    rid = _filed(rita)["id"]
    tok = token_client(site.app, site.ctx, site.ctx.accounts.user_by_name("olive"))
    assert [r["id"] for r in tok.get("/api/requests").json()] == [rid]
    problem(tok.put("/api/policy", json=wanted), 403, "permission-denied")
    problem(tok.get("/api/policy"), 403, "permission-denied")
    problem(tok.post(f"/api/requests/{rid}/answer", json={"decision": "grant"}), 403)
    assert rita.get(f"/api/requests/{rid}").json()["state"] == "awaiting_owner"
    # Under this policy a 3 h emergency is rejected (not capped), naming the policy.
    emergency = _filed(
        rita, type="emergency", cameras=["front"], attested=True, start=T0 - 3 * 3600, end=T0
    )
    assert (emergency["state"], emergency["reject_code"]) == ("rejected", "window_too_long")
    assert "30 min" in emergency["transitions"][-1]["reason"]
    # A household refusing emergencies: refused at once, the policy named.
    assert olive.put("/api/policy", json={**wanted, "emergency_allowed": False}).status_code == 200
    refused = _filed(rita, type="emergency", cameras=["front"], attested=True)
    assert (refused["state"], refused["reject_code"]) == ("rejected", "policy_refuses_emergency")
    assert "policy refuses all emergency disclosure" in refused["transitions"][-1]["reason"]
    approve = {"action": "approve", "reason": "urgent"}
    late = site.session("lena").post(f"/api/requests/{refused['id']}/review", json=approve)
    problem(late, 409, "invalid-transition")
    changes = site.entries("request:policy:change")
    assert len(changes) == 2  # the refused changes left no entry
    assert '"emergency_allowed": false' in changes[-1].reason


# -- notices ----------------------------------------------------------------------------


def test_notices_for_owner_staff_and_requester(site: Site) -> None:
    olive = site.session("olive")
    olive.put("/api/policy", json={"notice_email": "olive@home.example"})
    rita = site.requester("rita")
    rid = _filed(rita, **_warrant(order_kind="court_order", facts=["household_name"]))["id"]
    assert olive.get("/api/notices").json() == []
    lena = site.session("lena")
    lena.post(f"/api/requests/{rid}/review", json={"action": "accept", "reason": "valid order"})
    inbox = olive.get("/api/notices").json()
    assert [n["request_id"] for n in inbox] == [rid]
    assert "account facts only" in inbox[0]["body"]
    assert inbox[0]["delivery"] == "mailed to olive@home.example"
    mails = [m for m in site.smtp.wait_for(2) if "olive@home.example" in m.rcpt_tos]
    assert len(mails) == 1
    assert rid in mails[0].body
    assert site.session("bob").get("/api/notices").json() == []
    mine = rita.get("/api/notices").json()  # newest first: accepted, then queued
    assert [(n["request_id"], n["subject"].split(" is ")[-1]) for n in mine] == [
        (rid, "owner notified"),
        (rid, "under review"),
    ]
    assert f"Request {rid} is now owner notified" in mine[0]["body"]
    assert {n["delivery"] for n in mine} == {f"mailed to rita@{DOMAIN}"}
    problem(site.session("mia").get("/api/notices"), 403, "permission-denied")
    # Staff alerts: twenty wrong TOTP codes lock a requester and alert staff.
    c = client(site.app)
    token = csrf(c)
    step = c.post(
        "/api/session",
        json={"username": "rita", "password": PASSWORD},
        headers={CSRF_HEADER: token},
    )
    assert step.json()["needs_totp"] is True
    right = pyotp.TOTP(site.totp["rita"]).at(site.clock.now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for n in range(20):
        # From different addresses, so the per-address throttle does not stop the count.
        other = client(site.app, host=(f"192.0.2.{n + 1}", 4000), cookies=dict(c.cookies))
        bad = other.post("/api/session/totp", json={"code": wrong}, headers={CSRF_HEADER: token})
        problem(bad, 401, "authentication")
    assert site.ctx.accounts.user_by_name("rita").disabled is True
    alerts = lena.get("/api/notices").json()
    assert len(alerts) == 1
    assert "rita" in alerts[0]["subject"]
    assert site.session("carl").get("/api/notices").json() == alerts


# -- OpenAPI ----------------------------------------------------------------------------


def test_openapi_lists_the_disclosure_routes_with_their_permissions(site: Site) -> None:
    doc = site.session("olive").get("/api/openapi.json").json()
    expected = {
        ("get", "/api/agencies"): ["accounts:requester:signup"],
        ("post", "/api/requesters/signup"): ["accounts:requester:signup"],
        ("post", "/api/staff/agencies"): ["disclosure:agency:manage"],
        ("post", "/api/requests"): ["disclosure:request:file"],
        ("post", "/api/requests/{request_id}/answer"): ["disclosure:request:answer"],
        ("post", "/api/requests/{request_id}/fulfil"): ["disclosure:request:answer"],
        ("post", "/api/requests/{request_id}/review"): ["disclosure:request:review"],
        ("get", "/api/requests/{request_id}/package"): ["disclosure:package:download"],
        ("put", "/api/policy"): ["disclosure:policy:manage"],
        ("get", "/api/notices"): ["disclosure:notice:read"],
        ("get", "/api/holds"): ["disclosure:request:review"],
    }
    for (method, path), perms in expected.items():
        assert doc["paths"][path][method]["x-permissions"] == perms, path
    routes = {
        (m.lower(), str(getattr(r, "path", "")))
        for r in site.app.routes
        if getattr(r, "tags", None) == ["disclosure"]
        for m in getattr(r, "methods", ())
    }
    assert len(routes) == 20
    for method, path in routes:
        assert doc["paths"][path][method]["x-permissions"], path
