"""Disclosure requests end to end through DisclosureService (issue 4, "Acceptance"), on SQLite
and PostgreSQL, with real footage, a real audit log, accounts, mail through a real SMTP
server on loopback and a settable clock. See tests/services/disclosure_helpers.py for the
deployment every test starts from."""

from __future__ import annotations

import copy
import json
import zipfile
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import pytest

from homewarden.crypto.signing import SignedTreeHead, verify_manifest
from homewarden.domain import disclosure as d
from homewarden.domain.permissions import Principal, Role
from homewarden.errors import (
    AuthenticationError,
    InvalidRequestError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    VerificationError,
)
from homewarden.services.access_log import AccessLog
from homewarden.services.disclosure import LINK_SECONDS, Document
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.services.report import TransparencyReport, verify_report
from homewarden.services.retention import run_retention_pass
from tests.fixtures_mail import SmtpTestServer
from tests.package_footage import T0
from tests.services.disclosure_helpers import (
    AGENCY_DOMAIN,
    AGENCY_PHONE,
    BACK,
    DAY,
    HOME,
    HOST,
    NOTICE_EMAIL,
    OPERATOR,
    OTHER,
    PORCH,
    SHED,
    START,
    WARRANT,
    Requester,
    World,
)
from tests.web.helpers import PASSWORD

Usage = namedtuple("Usage", "total used free")


def plenty(_path: Path) -> Usage:
    """A disk with room to spare, so only the age rules of retention act."""
    return Usage(10**15, 0, 10**15)


@pytest.fixture
def world(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Iterator[World]:
    w = World(tmp_path, database_url, smtp_server)
    try:
        yield w
    finally:
        w.close()


def _state(w: World, request_id: str) -> str:
    return w.svc.store.request(request_id).state


def _reasons(w: World, request_id: str) -> list[str]:
    return [t["reason"] for t in w.svc.transitions(w.p(w.legal), request_id)]


def _set_policy(w: World, policy: d.Policy, household_owner: str = "owner") -> None:
    owner = w.owner if household_owner == "owner" else w.other_owner
    w.svc.set_policy(w.p(owner), policy, notice_email=NOTICE_EMAIL, address="1 Elm Street")


def _packages(w: World, request_id: str) -> list[str]:
    folder = w.svc.packages_dir
    return sorted(p.name for p in folder.glob(f"{request_id}*")) if folder.exists() else []


# --- 1 -------------------------------------------------------------------------------------


def test_owner_declines_consent_and_nothing_is_released(world: World) -> None:
    w = world
    _set_policy(w, d.Policy())
    rita = w.requester("rita")
    r = w.consent(rita)
    assert r.state == "awaiting_owner"
    owner = w.p(w.owner)
    assert [x.id for x in w.svc.requests(owner, ["awaiting_owner"])] == [r.id]
    # Only the household's owner answers a consent request.
    for staff in (w.legal, w.custodian):
        with pytest.raises(PermissionDeniedError):
            w.svc.act(w.p(staff), r.id, d.OwnerGrant())
    r = w.svc.act(owner, r.id, d.OwnerDecline("not without a warrant"))
    assert r.state == "declined"
    # The answer is final.
    with pytest.raises(InvalidTransitionError):
        w.svc.act(owner, r.id, d.OwnerGrant())
    w.svc.run_due()

    stored = w.svc.store.request(r.id)
    assert stored.package is None
    assert stored.data["release"] == "none"
    assert _packages(w, r.id) == []
    with pytest.raises(InvalidTransitionError):
        w.svc.new_link(w.p(rita.user_id), r.id)
    # The requester sees `declined`, and was told so by mail.
    mine = w.svc.get(w.p(rita.user_id), r.id)
    view = w.svc.view(w.p(rita.user_id), mine)
    assert (mine.state, view["state"], view["release"], view["package_ready"]) == (
        "declined",
        "declined",
        "none",
        False,
    )
    assert any(
        "declined" in (m.message["Subject"] or "") and r.id in m.body
        for m in w.mails_to(rita.email)
    )
    # The owner's inbox shows it declined; no notice claims anything leaves.
    assert [(x.id, x.state) for x in w.svc.requests(owner)] == [(r.id, "declined")]
    assert not any("will be released" in n.body for n in w.owner_notices(r.id))
    assert not any("will be released" in m.body for m in w.mails_to(NOTICE_EMAIL))
    w.assert_audited(r.id)

    # Unanswered for 7 days: expired, which counts as declined; nothing released either.
    late = w.consent(rita)
    w.clock.advance(7 * DAY - 60)
    w.svc.run_due()
    assert _state(w, late.id) == "awaiting_owner"
    w.clock.advance(61)
    assert w.svc.run_due() == 1
    expired = w.svc.get(w.p(rita.user_id), late.id)
    assert expired.state == "expired"
    assert expired.package is None
    with pytest.raises(InvalidTransitionError):
        w.svc.act(owner, late.id, d.OwnerGrant())
    w.assert_audited(late.id)
    w.audit.verify()


# --- 2 -------------------------------------------------------------------------------------


def test_warrant_with_30_day_nondisclosure_order_notifies_owner_on_day_30_after_restart(
    world: World,
) -> None:
    w = world
    _set_policy(w, d.Policy())
    rita = w.requester("rita")
    filed_at = w.clock()
    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.SEARCH_WARRANT,
        case_number="CR-2023-118",
        court="Town district court",
        start=T0 - 5,
        end=T0 + 15,
        description="footage of the porch on the night of the robbery",
        address="1 elm street",  # located by the address the requester supplies
        nondisclosure_order=True,
        nondisclosure_until=filed_at + 30 * DAY,
        documents=[WARRANT],
    )
    assert (r.state, r.household) == ("under_review", HOME)
    r = w.svc.act(w.p(w.legal), r.id, d.Accept("a valid warrant, particular in scope"))
    assert r.state == "notice_scheduled"
    assert r.data["notice"] == "scheduled"
    assert r.data["notice_due"] == filed_at + 30 * DAY
    w.svc.run_due()  # the warrant is fulfilled at once: the requester is not held up
    assert _state(w, r.id) == "fulfilled"
    owner = w.p(w.owner)

    def access_log_requests() -> set[str | None]:
        log = AccessLog(w.audit, hidden=w.svc.unnoticed_requests)
        return {e.subject.request for e in log.page(HOME, limit=200).entries}

    def owner_not_told() -> None:
        # Regression (access log told of a gagged warrant): the fulfilment's
        # footage:export:create entries stay out of the owner's access log until the notice.
        assert r.id not in access_log_requests()
        assert w.owner_notices(r.id) == []
        assert w.mails_to(NOTICE_EMAIL) == []
        with pytest.raises(NotFoundError):
            w.svc.get(owner, r.id)
        with pytest.raises(NotFoundError):
            w.svc.transitions(owner, r.id)
        assert r.id not in [x.id for x in w.svc.requests(owner)]

    owner_not_told()
    w.clock.now = filed_at + 29 * DAY
    w.svc.run_due()
    owner_not_told()
    assert w.svc.store.request(r.id).data["notice"] == "scheduled"

    # Restart: every service object is new; only the database and data dir remain.
    w.restart()
    owner = w.p(w.owner)
    owner_not_told()
    w.clock.now = filed_at + 30 * DAY
    assert w.svc.run_due() == 1  # nobody acts: the scheduler sends the notice
    notices = w.owner_notices(r.id)
    assert len(notices) == 1
    assert r.id in notices[0].body
    assert notices[0].delivery == f"mailed to {NOTICE_EMAIL}"
    w.smtp.wait_for(1)
    mail = w.mails_to(NOTICE_EMAIL)
    assert len(mail) == 1
    assert r.id in mail[0].body
    assert r.id in mail[0].message["Subject"]
    assert "footage will be released" in mail[0].body
    assert r.id in access_log_requests()  # told now: the export shows in the access log
    seen = w.svc.get(owner, r.id)
    assert seen.data["notice"] == "sent"
    assert seen.data["notice_sent_at"] == filed_at + 30 * DAY
    notify = [t for t in w.svc.transitions(owner, r.id) if t["action"] == "notify_owner"]
    assert [(t["actor"]["role"], t["at"]) for t in notify] == [("system", filed_at + 30 * DAY)]
    # Once sent, the scheduler has nothing more to do for it.
    assert w.svc.run_due() == 0
    assert len(w.owner_notices(r.id)) == 1
    w.assert_audited(r.id)
    w.audit.verify()


def test_a_nondisclosure_order_without_an_end_date_is_refused(world: World) -> None:
    w = world
    rita = w.requester("rita")
    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.SEARCH_WARRANT,
        case_number="CR-9",
        court="Town district court",
        start=T0 - 5,
        end=T0 + 15,
        description="warrant with a gag order",
        camera=PORCH,
        nondisclosure_order=True,
        documents=[WARRANT],
    )
    assert r.state == "rejected"
    assert r.data["reject_code"] == "indefinite_nondisclosure"
    assert any("without an end date" in x for x in _reasons(w, r.id))
    w.assert_audited(r.id)


# --- 3 -------------------------------------------------------------------------------------


def test_subpoena_for_video_releases_account_facts_only_with_the_reason(world: World) -> None:
    w = world
    rita = w.requester("rita")
    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.SUBPOENA,
        case_number="GJ-2023-7",
        court="County grand jury",
        start=T0 - 5,
        end=T0 + 15,
        description="all video from the porch camera on the night, and the account holder",
        camera=PORCH,
        facts=[d.AccountFact.CAMERA_NAMES, d.AccountFact.OWNER_USERNAME],
        documents=[Document("subpoena.pdf", "application/pdf", b"%PDF-1.4 subpoena")],
    )
    r = w.svc.act(w.p(w.legal), r.id, d.Accept("the subpoena is in order"))
    assert r.data["release"] == "account_facts"
    assert r.data["warrant_accepted"] is False
    assert r.state == "owner_notified"
    w.svc.run_due()
    stored = w.svc.store.request(r.id)
    assert stored.state == "fulfilled"
    names = w.package_names(stored)
    assert names == sorted(
        f"{r.id}/{n}" for n in ("facts.json", "manifest.json", "manifest.sig", "public_key.txt")
    )
    assert not any(n.endswith(".mp4") for n in names)
    with zipfile.ZipFile(w.svc.packages_dir / (stored.package or "")) as z:
        facts = json.loads(z.read(f"{r.id}/facts.json"))
        manifest = z.read(f"{r.id}/manifest.json")
        signature = z.read(f"{r.id}/manifest.sig")
    assert facts == {"camera_names": [BACK, PORCH], "owner_username": ["olive"]}
    assert "no footage" in json.loads(manifest)["contents"]
    (public,) = w.audit.public_keys().values()
    verify_manifest(manifest, signature, public)
    # No footage was exported for it.
    assert w.entries_of(r.id, "footage:") == []
    # The reason, in the transitions the requester and the owner see.
    for who in (w.p(rita.user_id), w.p(w.owner)):
        accept = [t for t in w.svc.transitions(who, r.id) if t["action"] == "accept"]
        assert len(accept) == 1
        assert "yields no footage" in accept[0]["reason"]
        assert "18 U.S.C. 2703(b)" in accept[0]["reason"]
    (notice,) = w.owner_notices(r.id)
    assert "no footage" in notice.body
    # The requester can fetch what was released (the facts) and nothing more.
    secret, _ = w.svc.new_link(w.p(rita.user_id), r.id)
    assert w.svc.download(w.p(rita.user_id), r.id, secret).name == f"{r.id}.zip"
    w.assert_audited(r.id)


# --- 4 -------------------------------------------------------------------------------------


def test_emergency_needs_two_approvers_and_a_confirmed_callback(world: World) -> None:
    w = world
    rita = w.requester("rita")
    legal, custodian = w.p(w.legal), w.p(w.custodian)

    # One approver (with a confirmed call-back): not released.
    one = w.emergency(rita)
    assert one.state == "under_review"
    w.svc.act(legal, one.id, d.Approve("the danger is described and plausible"))
    with pytest.raises(PermissionDeniedError):  # the same person twice
        w.svc.act(legal, one.id, d.Approve("again"))
    lara = w.accounts.add_user("lara", Role.LEGAL_REVIEWER, None, actor=OPERATOR).user
    with pytest.raises(PermissionDeniedError):  # a second legal reviewer is not a custodian
        w.svc.act(w.p(lara), one.id, d.Approve("me too"))
    with pytest.raises(InvalidRequestError):  # a number from the request, not the agency's
        w.svc.act(custodian, one.id, d.RecordCallback("+1 555 0199 999", True, "called"))
    one = w.svc.act(custodian, one.id, d.RecordCallback(AGENCY_PHONE, True, "sergeant confirmed"))
    assert one.state == "under_review"
    w.svc.run_due()
    one = w.svc.store.request(one.id)
    assert (one.state, one.package, one.data["release"]) == ("under_review", None, "none")
    with pytest.raises(InvalidTransitionError):
        w.svc.new_link(w.p(rita.user_id), one.id)

    # Two approvers, no call-back: not released; an unconfirmed call-back: still not.
    two = w.emergency(rita)
    w.svc.act(legal, two.id, d.Approve("plausible"))
    two = w.svc.act(custodian, two.id, d.Approve("plausible"))
    assert (two.state, two.data["release"]) == ("under_review", "none")
    w.svc.run_due()
    assert w.svc.store.request(two.id).package is None
    two = w.svc.act(custodian, two.id, d.RecordCallback(AGENCY_PHONE, False, "no such officer"))
    assert (two.state, two.data["release"]) == ("under_review", "none")
    w.svc.run_due()
    assert w.svc.store.request(two.id).package is None
    assert _packages(w, one.id) == []
    assert _packages(w, two.id) == []
    assert w.entries_of(one.id, "footage:") == []
    assert w.entries_of(two.id, "footage:") == []

    # The control: a confirmed call-back completes it, and only then is footage released.
    two = w.svc.act(legal, two.id, d.RecordCallback(AGENCY_PHONE, True, "lieutenant confirmed"))
    assert two.data["release"] == "footage"
    assert two.state == "owner_notified"
    w.svc.run_due()
    done = w.svc.store.request(two.id)
    assert done.state == "fulfilled"
    assert any(n.endswith(".mp4") for n in w.package_names(done))
    assert any("footage will be released" in n.body for n in w.owner_notices(two.id))

    # A household whose policy refuses emergencies: refused, the policy named - whether the
    # policy was set before filing or between filing and approval.
    pending = w.emergency(rita)
    _set_policy(w, d.Policy(emergency_allowed=False))
    refused = w.emergency(rita)
    assert (refused.state, refused.data["reject_code"]) == ("rejected", "policy_refuses_emergency")
    late = w.svc.act(legal, pending.id, d.Approve("plausible"))
    assert (late.state, late.data["reject_code"]) == ("rejected", "policy_refuses_emergency")
    for rid in (refused.id, pending.id):
        seen = w.svc.transitions(w.p(rita.user_id), rid)
        assert "the household's policy refuses all emergency disclosure" in seen[-1]["reason"]
        assert w.svc.store.request(rid).package is None
    for rid in (one.id, two.id, pending.id, refused.id):
        w.assert_audited(rid)


# --- 5 -------------------------------------------------------------------------------------


def test_emergency_window_of_six_hours_is_capped_or_rejected_never_widened(world: World) -> None:
    w = world
    rita = w.requester("rita")
    end = T0 + 600
    start = end - 6 * 3600
    capped = w.emergency(rita, start, end)
    scope = capped.data["scope"]
    assert (scope["start"], scope["end"], scope["cameras"]) == (end - 2 * 3600, end, [PORCH])
    assert capped.data["original_scope"]["start"] == start
    narrow = [t for t in w.svc.transitions(w.p(rita.user_id), capped.id) if t["action"] == "narrow"]
    assert len(narrow) == 1
    assert "capped from 6 h to the last 2 h" in narrow[0]["reason"]
    assert capped.state == "under_review"

    # A window inside the cap is left exactly as filed.
    short = w.emergency(rita, end - 3600, end)
    assert short.data["scope"] == short.data["original_scope"]
    assert [t["action"] for t in w.svc.transitions(w.p(w.legal), short.id)].count("narrow") == 0

    # The owner tightened the cap to 1 h: capped to 1 h.
    _set_policy(w, d.Policy(emergency_max_window=3600))
    tight = w.emergency(rita, start, end)
    assert (tight.data["scope"]["start"], tight.data["scope"]["end"]) == (end - 3600, end)

    # Policy: reject overlong windows.
    _set_policy(w, d.Policy(emergency_overlong=d.Overlong.REJECT))
    rejected = w.emergency(rita, start, end)
    assert (rejected.state, rejected.data["reject_code"]) == ("rejected", "window_too_long")
    assert rejected.data["scope"] == rejected.data["original_scope"]
    assert "file a shorter window" in _reasons(w, rejected.id)[-1]
    for r in (capped, short, tight, rejected):
        s, o = r.data["scope"], r.data["original_scope"]
        assert o["start"] <= s["start"] < s["end"] <= o["end"]  # never widened
        w.assert_audited(r.id)


# --- 6 -------------------------------------------------------------------------------------


def _fulfilled_consent(w: World, who: Requester, scope: d.Scope | None = None) -> str:
    r = w.consent(who)
    w.svc.act(w.p(w.owner), r.id, d.OwnerGrant(scope, "for the neighbours"))
    w.svc.run_due()
    stored = w.svc.store.request(r.id)
    assert stored.state == "fulfilled"
    assert stored.package == f"{r.id}.zip"
    return r.id


def _denials(w: World, request_id: str) -> list[str]:
    return [e.reason for e in w.entries_of(request_id, "request:package:deny")]


def test_package_download_is_for_its_requester_only_and_links_expire(world: World) -> None:
    w = world
    rita, bob = w.requester("rita"), w.requester("bob")
    part = d.Scope(HOME, (PORCH,), T0 + 1, T0 + 9)
    ra = _fulfilled_consent(w, rita, part)
    rb = _fulfilled_consent(w, bob)
    a, b = w.p(rita.user_id), w.p(bob.user_id)

    # The package holds exactly the scope the owner granted, and verifies.
    zip_path = w.svc.packages_dir / f"{ra}.zip"
    names = w.package_names(w.svc.store.request(ra))
    assert any(n.endswith(".mp4") for n in names)
    with zipfile.ZipFile(zip_path) as z:
        manifest = json.loads(z.read(f"{ra}/manifest.json"))
    assert manifest["request_id"] == ra
    assert manifest["scope"]["cameras"] == [PORCH]
    assert (manifest["scope"]["start_ms"], manifest["scope"]["end_ms"]) == (
        int((T0 + 1) * 1000),
        int((T0 + 9) * 1000),
    )
    assert manifest["legal_basis"] == "owner consent"
    trusted = load_public_keys(w.audit.keys_dir / "log_public_keys.json")
    assert verify_package_path(zip_path, trusted).trusted

    secret_a, expires = w.svc.new_link(a, ra)
    assert expires == w.clock() + LINK_SECONDS
    secret_b, _ = w.svc.new_link(b, rb)
    with pytest.raises(NotFoundError):  # bob cannot even ask for a link to rita's request
        w.svc.new_link(b, ra)

    refused = [
        (b, ra, secret_a),  # another requester with rita's link
        (b, ra, secret_b),  # bob's own link on rita's request
        (a, rb, secret_a),  # rita's link on bob's request
        (a, ra, "not-a-link"),
        (w.p(w.owner), ra, secret_a),  # not a requester
        (Principal.anonymous(HOST), ra, secret_a),
    ]
    for who, rid, token in refused:
        with pytest.raises(PermissionDeniedError):
            w.svc.download(who, rid, token)
    assert len(_denials(w, ra)) == 5
    assert len(_denials(w, rb)) == 1
    assert w.entries_of(ra, "request:package:download") == []

    # The good download: the zip, recorded.
    got = w.svc.download(a, ra, secret_a)
    assert got == zip_path
    assert got.is_file()
    (entry,) = w.entries_of(ra, "request:package:download")
    assert (entry.actor.kind, entry.actor.id) == ("requester", str(rita.user_id))
    assert [link.downloads for link in w.svc.store.links(ra)] == [1]

    # Expired: refused and recorded; a fresh link works again.
    w.clock.advance(LINK_SECONDS + 1)
    with pytest.raises(PermissionDeniedError, match="expired"):
        w.svc.download(a, ra, secret_a)
    assert "expired" in _denials(w, ra)[-1]
    assert len(_denials(w, ra)) == 6
    fresh, _ = w.svc.new_link(a, ra)
    assert w.svc.download(a, ra, fresh) == zip_path
    assert len(w.entries_of(ra, "request:package:download")) == 2
    w.assert_audited(ra)
    w.assert_audited(rb)
    w.audit.verify()


def test_a_granted_consent_over_no_footage_has_nothing_to_download(world: World) -> None:
    w = world
    rita = w.requester("rita")
    r = w.consent(rita, T0 + 600, T0 + 900)  # nothing was recorded then
    w.svc.act(w.p(w.owner), r.id, d.OwnerGrant())
    w.svc.run_due()
    stored = w.svc.get(w.p(rita.user_id), r.id)
    assert (stored.state, stored.package) == ("fulfilled", "none")
    assert w.svc.view(w.p(rita.user_id), stored)["package_ready"] is False
    assert _packages(w, r.id) == []
    with pytest.raises(InvalidTransitionError):
        w.svc.new_link(w.p(rita.user_id), r.id)
    w.assert_audited(r.id)


# --- 7 -------------------------------------------------------------------------------------


def test_signup_needs_an_agency_domain_and_filing_needs_a_verified_requester(
    world: World,
) -> None:
    w = world
    for address in ("mallory@gmail.com", f"mallory@{AGENCY_DOMAIN}.evil.example"):
        with pytest.raises(PermissionDeniedError, match="official mail domains"):
            w.svc.signup(w.agency.id, address, "mallory")
    with pytest.raises(NotFoundError):
        w.accounts.user_by_name("mallory")
    assert w.svc.store.requester_by_email("mallory@gmail.com") is None
    assert w.smtp.messages == []
    assert w.smtp.mail_commands == []

    # A good signup: the setup link goes to the mailbox, and only there.
    user_id, token = w.signup("rita")
    assert isinstance(user_id, int)
    assert w.accounts.user_by_name("rita").id == user_id
    (mail,) = w.smtp.messages
    assert mail.rcpt_tos == (f"rita@{AGENCY_DOMAIN}",)
    assert token in mail.body
    signups = [e for e in w.entries() if str(e.action) == "request:requester:signup"]
    assert [(e.actor.kind, e.actor.id) for e in signups] == [("requester", str(user_id))]
    # Not set up yet: it can file nothing.
    assert "TOTP" in (w.svc.requester_problem(user_id) or "")
    with pytest.raises(PermissionDeniedError, match="unverified"):
        w.svc.file(
            w.p(user_id),
            type=d.RequestType.CONSENT,
            start=T0,
            end=T0 + 10,
            description="please",
            camera=PORCH,
        )

    # A requester with a password but no TOTP can file nothing either.
    nate = w.accounts.add_user("nate", Role.REQUESTER, None, actor=OPERATOR, password=PASSWORD)
    w.svc.store.add_requester(nate.user.id, w.agency.id, f"nate@{AGENCY_DOMAIN}", w.clock())
    assert "TOTP" in (w.svc.requester_problem(nate.user.id) or "")
    with pytest.raises(PermissionDeniedError, match="unverified"):
        w.svc.file(
            w.p(nate.user),
            type=d.RequestType.CONSENT,
            start=T0,
            end=T0 + 10,
            description="please",
            camera=PORCH,
        )
    assert w.svc.requests(w.p(w.legal)) == []

    # Verified through the mailed link (password and TOTP): now it can file.
    verified = w.requester("vera")
    r = w.consent(verified)
    assert r.state == "awaiting_owner"
    # An agency taken off the allow-list: its requesters file nothing.
    a = w.agency
    w.svc.update_agency(
        w.p(w.legal),
        a.id,
        name=a.name,
        jurisdiction=a.jurisdiction,
        mail_domains=a.mail_domains,
        callback_phone=a.callback_phone,
        disabled=True,
    )
    with pytest.raises(PermissionDeniedError, match="allow-list"):
        w.consent(verified)


# --- 8 -------------------------------------------------------------------------------------


def _wrong(r: Requester, now: float) -> str:
    good = {r.totp.at(now + k * 30) for k in (-1, 0, 1)}
    code = 123456
    while f"{code:06d}" in good:
        code += 1
    return f"{code:06d}"


def test_twenty_wrong_totp_codes_lock_the_requester_and_alert_staff(world: World) -> None:
    w = world
    rita = w.requester("rita")
    session = ""
    for attempt in range(1, 21):
        # Past the TOTP step, and past any (username, address) lock so the throttle never
        # answers instead; a fresh password login every 5 codes (the throttle locks after 5
        # failures, the waiting session lives 5 min).
        w.clock.advance(31)
        if attempt % 5 == 1:
            step = w.accounts.login("rita", PASSWORD, HOST)
            assert step.needs_totp
            session = step.session_secret
        with pytest.raises(AuthenticationError, match="wrong"):
            w.accounts.verify_totp(session, _wrong(rita, w.clock()), HOST)
        if attempt < 20:
            assert not w.accounts.user(rita.user_id).disabled, attempt
            assert w.notices.staff_alerts() == []
    assert w.accounts.user(rita.user_id).disabled
    locks = [e for e in w.entries() if str(e.action) == "request:requester:lock"]
    assert len(locks) == 1
    assert "rita" in locks[0].reason
    (alert,) = w.notices.staff_alerts()
    assert "rita" in alert.subject
    # Locked: no login, no filing, even with the right code.
    w.clock.advance(3600)
    with pytest.raises(AuthenticationError):
        w.accounts.login("rita", PASSWORD, HOST)
    assert w.svc.requester_problem(rita.user_id) == "the account is disabled"
    with pytest.raises(PermissionDeniedError):
        w.consent(rita)


# --- 9 -------------------------------------------------------------------------------------


def test_preservation_hold_keeps_footage_from_retention_until_it_expires(world: World) -> None:
    w = world
    rita = w.requester("rita")
    media = w.settings.media_dir
    porch = [s for s in w.index.segments() if s.camera == PORCH]
    assert len(porch) == 6

    def retention() -> tuple[set[int], set[int]]:
        run_retention_pass(w.index, w.settings, media, w.clock(), disk_usage=plenty)
        left = w.index.segments()
        return (
            {s.id for s in left if s.camera == PORCH},
            {s.id for s in left if s.camera == BACK},
        )

    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.PRESERVATION,
        start=T0 - 5,
        end=T0 + 15,
        description="keep the porch footage while we get a warrant",
        camera=PORCH,
        cameras=[PORCH],
    )
    accepted_at = w.clock()
    r = w.svc.act(w.p(w.legal), r.id, d.Accept("a 2703(f) letter in order"))
    assert r.data["release"] == "none"
    assert r.data["hold_expires_at"] == accepted_at + 90 * DAY
    (hold,) = w.index.holds(active_at=w.clock())
    assert (hold.camera, hold.start, hold.end) == (PORCH, T0 - 5, T0 + 15)
    assert hold.expires_at == accepted_at + 90 * DAY
    w.svc.run_due()
    assert w.svc.store.request(r.id).package is None  # discloses nothing
    with pytest.raises(InvalidTransitionError):
        w.svc.new_link(w.p(rita.user_id), r.id)

    # Four days on (past the 3-day continuous retention): held footage stays, the rest goes.
    w.clock.advance(4 * DAY)
    kept, back = retention()
    assert kept == {s.id for s in porch}
    assert back == set()
    assert all((media / s.path).is_file() for s in porch)

    # Renewed once (to 180 days); a second renewal is refused.
    bob = w.requester("bob")
    with pytest.raises(NotFoundError):
        w.svc.act(w.p(bob.user_id), r.id, d.Renew())
    r = w.svc.act(w.p(rita.user_id), r.id, d.Renew("the warrant takes longer"))
    assert r.data["hold_renewed"] is True
    assert r.data["hold_expires_at"] == accepted_at + 180 * DAY
    with pytest.raises(InvalidTransitionError, match="renewed once"):
        w.svc.act(w.p(w.legal), r.id, d.Renew())
    # The open-request hold ended at acceptance; the preservation hold took over.
    assert [h.expires_at for h in w.index.holds() if "preservation" in h.reason] == [
        accepted_at + 180 * DAY
    ]
    assert [h.expires_at for h in w.index.holds() if "open request" in h.reason] == [accepted_at]

    # Past the first 90 days: the renewal holds.
    w.clock.now = accepted_at + 91 * DAY
    w.svc.run_due()
    assert _state(w, r.id) == "owner_notified"
    assert retention()[0] == {s.id for s in porch}

    # After the renewed hold runs out the scheduler closes it, and retention takes the footage.
    w.clock.now = accepted_at + 180 * DAY + 1
    assert w.svc.run_due() == 1
    closed = w.svc.store.request(r.id)
    assert closed.state == "closed"
    assert closed.next_due is None
    assert w.index.holds(active_at=w.clock()) == []
    assert retention()[0] == set()
    assert not any((media / s.path).exists() for s in porch)
    assert [e.actor.kind for e in w.entries_of(r.id, "request:preservation:release")] == ["system"]
    w.assert_audited(r.id)


# --- 10 ------------------------------------------------------------------------------------


def test_every_step_is_an_audit_entry_and_the_log_verifies(world: World) -> None:
    w = world
    rita = w.requester("rita")
    legal = w.p(w.legal)
    granted = _fulfilled_consent(w, rita)
    secret, _ = w.svc.new_link(w.p(rita.user_id), granted)
    w.svc.download(w.p(rita.user_id), granted, secret)
    w.svc.act(legal, granted, d.Close("handed over"))
    withdrawn = w.consent(rita)
    w.svc.act(w.p(rita.user_id), withdrawn.id, d.Withdraw("solved"))
    order = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.COURT_ORDER,
        case_number="CV-1",
        court="Town court",
        start=T0 - 3600,
        end=T0 + 3600,
        description="everything",
        camera=PORCH,
        documents=[WARRANT],
    )
    w.svc.act(legal, order.id, d.Narrow(d.Scope(HOME, (PORCH,), T0 - 5, T0 + 15), "too broad"))
    w.svc.act(legal, order.id, d.Reject(d.RejectCode.OVERBROAD, "still overbroad"))
    emergency = w.emergency(rita)
    w.svc.act(legal, emergency.id, d.Approve("plausible"))
    w.svc.act(w.p(w.custodian), emergency.id, d.RecordCallback(AGENCY_PHONE, True, "confirmed"))
    w.svc.act(w.p(w.custodian), emergency.id, d.Approve("confirmed by phone"))
    w.svc.run_due()
    assert _state(w, emergency.id) == "fulfilled"

    verbs = {}
    for rid in (granted, withdrawn.id, order.id, emergency.id):
        w.assert_audited(rid)
        verbs[rid] = [str(e.action).rsplit(":", 1)[1] for e in w.entries_of(rid, "request:")]
    assert verbs[granted] == [
        "file", "verify", "route", "grant", "notify", "fulfil", "download", "close"
    ]  # fmt: skip
    assert verbs[withdrawn.id] == ["file", "verify", "route", "withdraw"]
    assert verbs[order.id] == ["file", "verify", "route", "narrow", "reject"]
    assert verbs[emergency.id] == [
        "file", "verify", "route", "approve", "callback", "approve", "approve", "notify",
        "fulfil",
    ]  # fmt: skip
    # Each entry names who took the step: the staff who approved, the system for the rest.
    actors = [e.actor.id for e in w.entries_of(emergency.id, "request:emergency:")]
    assert actors[3:6] == [str(w.legal.id), str(w.custodian.id), str(w.custodian.id)]
    assert actors[6:] == ["disclosure"] * 3
    assert w.entries_of(granted, "footage:export:create")  # the package's own entry
    report = w.audit.verify()
    assert report.size == w.audit.size()


# --- 11 ------------------------------------------------------------------------------------


def test_requests_are_seen_only_by_their_requester_household_owner_and_staff(
    world: World,
) -> None:
    w = world
    rita, bob = w.requester("rita"), w.requester("bob")
    ra = w.consent(rita)
    rb = w.consent(bob)
    rc = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.CONSENT,
        start=T0,
        end=T0 + 10,
        description="the shed camera",
        camera=SHED,
    )
    assert rc.household == OTHER
    a, b = w.p(rita.user_id), w.p(bob.user_id)
    owner, other = w.p(w.owner), w.p(w.other_owner)

    # Requesters: their own only.
    assert {x.id for x in w.svc.requests(a)} == {ra.id, rc.id}
    assert [x.id for x in w.svc.requests(b)] == [rb.id]
    for call in (
        lambda: w.svc.get(b, ra.id),
        lambda: w.svc.transitions(b, ra.id),
        lambda: w.svc.act(b, ra.id, d.Withdraw()),
        lambda: w.svc.get(b, "req-20231114-ffffffff"),
    ):
        with pytest.raises(NotFoundError):
            call()
    # Owners: their household's only; another household's owner can neither see nor answer.
    assert {x.id for x in w.svc.requests(owner)} == {ra.id, rb.id}
    assert [x.id for x in w.svc.requests(other)] == [rc.id]
    for call in (
        lambda: w.svc.get(other, ra.id),
        lambda: w.svc.act(other, ra.id, d.OwnerGrant()),
        lambda: w.svc.act(other, rb.id, d.OwnerDecline()),
        lambda: w.svc.get(owner, rc.id),
        lambda: w.svc.act(owner, rc.id, d.OwnerGrant()),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert _state(w, ra.id) == _state(w, rb.id) == _state(w, rc.id) == "awaiting_owner"
    assert w.svc.act(other, rc.id, d.OwnerDecline("no")).state == "declined"
    # Staff see all, with the call-back number; others do not see it.
    for staff in (w.p(w.legal), w.p(w.custodian)):
        assert {x.id for x in w.svc.requests(staff)} == {ra.id, rb.id, rc.id}
        assert w.svc.view(staff, w.svc.get(staff, ra.id))["agency_phone"] == AGENCY_PHONE
    for who in (a, owner):
        seen = w.svc.view(who, w.svc.get(who, ra.id))
        assert "agency_phone" not in seen
        assert "requester_id" not in seen
    # A household is located only by what the requester supplies.
    with pytest.raises(NotFoundError):
        w.svc.file(
            a,
            type=d.RequestType.CONSENT,
            start=T0,
            end=T0 + 10,
            description="x",
            address="99 Nowhere Road",
        )
    with pytest.raises(NotFoundError):  # a camera of another household than the one located
        w.svc.file(
            a,
            type=d.RequestType.CONSENT,
            start=T0,
            end=T0 + 10,
            description="x",
            camera=PORCH,
            cameras=[SHED],
        )


# --- regressions ---------------------------------------------------------------------------


def test_owner_is_told_when_a_consent_request_arrives(world: World) -> None:
    """Regression (owner never heard of a consent request): the owner gets a notice in the
    app and by mail as soon as a consent request reaches their inbox, not only at answers."""
    w = world
    _set_policy(w, d.Policy())
    r = w.consent(w.requester("rita"))
    assert r.state == "awaiting_owner"
    notices = w.owner_notices(r.id)
    assert len(notices) == 1
    assert "awaits your answer" in notices[0].subject
    assert "expires declined after 7 days" in notices[0].body
    w.smtp.wait_for(1)
    assert any(r.id in m.body for m in w.mails_to(NOTICE_EMAIL))


def test_footage_under_an_open_request_survives_retention(world: World) -> None:
    """Regression (retention deleted footage while the owner considered a request): an open
    request holds its scope until it is decided and fulfilled; then retention may act."""
    w = world
    media = w.settings.media_dir
    r = w.consent(w.requester("rita"), start=T0, end=T0 + 3)
    porch = [s for s in w.index.segments() if s.camera == PORCH]
    in_scope = {s.id for s in porch if s.end > T0 and s.start < T0 + 3}
    assert in_scope
    assert {s.id for s in porch} - in_scope  # some of the footage lies outside the scope
    w.clock.advance(4 * DAY)  # past the 3-day continuous retention
    run_retention_pass(w.index, w.settings, media, w.clock(), disk_usage=plenty)
    left = {s.id for s in w.index.segments() if s.camera == PORCH}
    assert left == in_scope  # outside the scope retention acted; inside, nothing went
    # The owner declines: the request is over, and its hold with it.
    w.svc.act(w.p(w.owner), r.id, d.OwnerDecline())
    w.clock.advance(1)
    run_retention_pass(w.index, w.settings, media, w.clock(), disk_usage=plenty)
    assert not {s.id for s in w.index.segments() if s.camera == PORCH}


def test_a_document_name_is_kept_without_its_path_or_control_characters(world: World) -> None:
    """Regression (a filed name like ``../../../etc/passwd`` came back verbatim in the
    download's Content-Disposition)."""
    w = world
    rita = w.requester("rita")
    doc = Document('../../../etc/pa"ss\nwd.pdf', "application/pdf", WARRANT.data)
    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.SEARCH_WARRANT,
        case_number="CR-7",
        court="Town district court",
        start=T0 - 5,
        end=T0 + 15,
        description="warrant",
        camera=PORCH,
        documents=[doc, Document("..", "text/plain", b"x")],
    )
    assert [x.filename for x in w.svc.store.documents(r.id)] == ["passwd.pdf", "document"]


def test_deployment_accounts_stay_out_of_the_owners_access_log(world: World) -> None:
    """Regression (an owner's access log listed every requester sign-up and staff account
    of the deployment): accounts of no household are logged under ``@deployment``."""
    w = world
    w.requester("rita")
    shown = AccessLog(w.audit).page(HOME, limit=200).entries
    created = [e.reason for e in shown if str(e.action) == "account:user:create"]
    assert created  # the household's own accounts are there
    assert not [r for r in created if r.split()[0] in ("requester", "legal_reviewer", "custodian")]
    everything = [w.audit.entry(i) for i in range(w.audit.size())]
    staff = [
        e for e in everything if str(e.action) == "account:user:create" and "custodian" in e.reason
    ]
    assert staff
    assert all(e.subject.household == "@deployment" for e in staff)


def test_a_requester_cannot_flood_an_owner_with_consent_requests(world: World) -> None:
    """Regression (every consent request mails the owner, with no limit)."""
    w = world
    rita = w.requester("rita")
    first = [w.consent(rita) for _ in range(3)]
    with pytest.raises(InvalidRequestError, match="awaiting an answer"):
        w.consent(rita)
    assert len(w.svc.store.requests(household=HOME)) == 3
    w.svc.act(w.p(w.owner), first[0].id, d.OwnerDecline())
    assert w.consent(rita).state == "awaiting_owner"  # answered ones do not count


# --- owner-held keys (issue 6) --------------------------------------------------------------


def test_a_warrant_over_sealed_footage_without_escrow_is_answered_the_owner_holds_the_keys(
    world: World, tmp_path: Path
) -> None:
    """Issue 6: "Under owner-held keys, a legal order for content is answered 'the provider
    cannot produce this content; the owner holds the keys', recorded, and counted in the
    transparency report". The shed's footage is sealed to the other household's key, which
    no escrow wrap reaches (emergency access is off); a warrant over the porch's plaintext
    footage, accepted alongside, is still packaged."""
    w = world
    sealed_at = T0 + 1000.0
    segs = w.record_sealed(SHED, OTHER, sealed_at)
    assert all(s.key_id is not None for s in segs)
    rita = w.requester("rita")

    def warrant(camera: str, start: float) -> str:
        r = w.svc.file(
            w.p(rita.user_id),
            type=d.RequestType.LEGAL_ORDER,
            order_kind=d.OrderKind.SEARCH_WARRANT,
            case_number="CR-2026-6",
            court="Town district court",
            start=start - 5,
            end=start + 15,
            description=f"the {camera} footage of the night",
            camera=camera,
            documents=[WARRANT],
        )
        r = w.svc.act(w.p(w.legal), r.id, d.Accept("a valid warrant, particular in scope"))
        assert r.state == "owner_notified"
        return r.id

    sealed_id = warrant(SHED, sealed_at)
    plain_id = warrant(PORCH, T0)
    assert w.svc.run_due() == 2
    sealed, plain = w.svc.store.request(sealed_id), w.svc.store.request(plain_id)

    # The sealed one is closed out at once with the answer, never retried, nothing written.
    assert (sealed.state, sealed.package, sealed.next_due) == ("fulfilled", "none", None)
    assert _packages(w, sealed_id) == []
    assert w.entries_of(sealed_id, "footage:") == []
    assert _reasons(w, sealed_id)[-1] == f"package none: {d.OWNER_HOLDS_KEYS}"
    assert w.svc.run_due() == 0
    assert w.svc.store.request(sealed_id).state == "fulfilled"
    # The requester is told the answer; the owner's notice at acceptance says nothing can be
    # released as they hold the keys (one notice: not "will be released" and then a retraction).
    w.smtp.wait_for(1)
    told = [m for m in w.mails_to(rita.email) if sealed_id in m.message["Subject"]]
    assert any(d.OWNER_HOLDS_KEYS in m.body and "fulfilled" in m.body for m in told)
    (notice,) = w.owner_notices(sealed_id, OTHER)
    assert "will be released" not in notice.body
    assert f"nothing can be released, as {d.OWNER_HOLDS_KEYS}" in notice.body
    assert w.owner_notices(sealed_id, HOME) == []
    with pytest.raises(InvalidTransitionError, match="no package"):
        w.svc.new_link(w.p(rita.user_id), sealed_id)
    # Recorded: the published fulfilment entry says why nothing was released.
    (fulfil,) = [e for e in w.entries_of(sealed_id) if str(e.action).endswith(":fulfil")]
    assert str(fulfil.action) == "request:search_warrant:fulfil"
    assert "released nothing (cannot produce content: the owner holds the keys)" in fulfil.reason
    w.assert_audited(sealed_id)

    # The plaintext one is packaged as before.
    assert plain.state == "fulfilled"
    assert any(n.endswith(".mp4") for n in w.package_names(plain))
    assert "released footage" in next(
        e.reason for e in w.entries_of(plain_id) if str(e.action).endswith(":fulfil")
    )
    w.assert_audited(plain_id)
    w.audit.verify()

    # Counted in the transparency report, which recounts from the public export.
    reports = TransparencyReport(w.audit)
    report = reports.build(START - 1, START + DAY)
    figures = report["figures"]
    assert figures["requests"]["search_warrant"] == 2
    assert figures["outcomes"]["search_warrant"]["complete"] == 1
    assert figures["outcomes"]["search_warrant"]["none"] == 1
    assert figures["legal_owner_held_keys"] == 1
    assert figures["households_affected"] == 1  # the porch's household only
    export = tmp_path / "log.jsonl"
    with export.open("w", encoding="utf-8") as f:
        reports.export_public(f, SignedTreeHead.from_json(report["tree_head"]))
    assert verify_report(report, export)["ok"] is True
    edited = copy.deepcopy(report)
    edited["figures"]["legal_owner_held_keys"] = 0
    with pytest.raises(VerificationError, match="legal_owner_held_keys"):
        verify_report(edited, export)
