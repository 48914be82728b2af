"""Disclosure over footage sealed at rest (issue 6, DESIGN.md flows 5 and 8), on SQLite and
PostgreSQL over real services and real sealed footage: a consent the owner grants is packaged
at once with the owner's unlocked session keys, a locked session is refused before anything
changes, the scheduler leaves a request waiting for keys alone instead of retrying it every
pass, a search warrant is "cannot produce" even where the owner turned escrow on, and an
emergency is "cannot produce" without escrow and waits for two custodians' shares with it.

The household ``other`` (camera ``shed``, owner ``otto``) holds its own keys: a key ring is
attached to the accounts, otto sets a password through a setup link (which completes the
household's key setup) and signs in, which unlocks the keys into that session.
"""

from __future__ import annotations

import copy
import io
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from homewarden.crypto.household_keys import ARGON2ID_FLOOR, HouseholdKeyPair
from homewarden.crypto.signing import SignedTreeHead
from homewarden.domain import disclosure as d
from homewarden.domain.audit import Actor, ActorKind
from homewarden.errors import (
    InvalidTransitionError,
    KeysLockedError,
    KeyUnavailableError,
    PermissionDeniedError,
    SealedDataError,
    VerificationError,
)
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.services.report import TransparencyReport, verify_report
from homewarden.services.sealed_footage import KeySource, SessionKeys
from homewarden.store.accounts_store import SessionRecord
from homewarden.store.records import SegmentRecord
from tests.fixtures_mail import SmtpTestServer
from tests.package_footage import T0
from tests.services.disclosure_helpers import (
    AGENCY_PHONE,
    DAY,
    HOST,
    OPERATOR,
    OTHER,
    SHED,
    START,
    WARRANT,
    Requester,
    World,
)
from tests.web.helpers import PASSWORD

#: The shed's footage is recorded sealed from here (an hour before the clock starts).
SEALED_AT = T0 + 1000.0
CUSTODIANS = Actor(ActorKind.STAFF, "custodians")


@dataclass
class Sealed:
    """The world, the key ring, otto's unlocked session and the shed's sealed segments."""

    w: World
    ring: KeyRing
    session: SessionRecord
    segments: list[SegmentRecord]

    def keys(self) -> SessionKeys:
        """otto's session keys, as the web app hands them to a route."""
        return SessionKeys(self.ring, self.session)

    def locked(self) -> SessionKeys:
        """The keys of a call without an unlocked session (an API token)."""
        return SessionKeys(self.ring, None)


@pytest.fixture
def sealed(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Iterator[Sealed]:
    w = World(tmp_path, database_url, smtp_server)
    try:
        ring = attach(
            w.accounts, w.index, w.audit, w.settings.keys_dir, clock=w.clock, params=ARGON2ID_FLOOR
        )
        ring.ensure_household_key(OTHER)
        secret = w.accounts.new_setup_link(w.other_owner.id, actor=OPERATOR)
        w.accounts.complete_setup(secret, PASSWORD)
        segments = w.record_sealed(SHED, OTHER, SEALED_AT)
        step = w.accounts.login(w.other_owner.username, PASSWORD, HOST)
        assert ring.is_unlocked(step.session)
        yield Sealed(w, ring, step.session, segments)
    finally:
        w.close()


def _consent(s: Sealed, rita: Requester) -> str:
    r = s.w.svc.file(
        s.w.p(rita.user_id),
        type=d.RequestType.CONSENT,
        start=SEALED_AT - 5,
        end=SEALED_AT + 15,
        description="a parcel thief; the shed camera faces the lane",
        camera=SHED,
    )
    assert r.state == "awaiting_owner"
    return r.id


def _warrant(s: Sealed, rita: Requester) -> str:
    r = s.w.svc.file(
        s.w.p(rita.user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.SEARCH_WARRANT,
        case_number="CR-2026-66",
        court="Town district court",
        start=SEALED_AT - 5,
        end=SEALED_AT + 15,
        description="the shed footage of the night",
        camera=SHED,
        documents=[WARRANT],
    )
    return s.w.svc.act(s.w.p(s.w.legal), r.id, d.Accept("a valid warrant")).id


def _emergency(s: Sealed, rita: Requester) -> str:
    w = s.w
    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.EMERGENCY,
        start=SEALED_AT - 5,
        end=SEALED_AT + 15,
        description="a missing child was last seen walking past this shed",
        camera=SHED,
        cameras=[SHED],
        attested=True,
    )
    w.svc.act(w.p(w.legal), r.id, d.Approve("plausible"))
    w.svc.act(w.p(w.custodian), r.id, d.RecordCallback(AGENCY_PHONE, True, "confirmed"))
    r = w.svc.act(w.p(w.custodian), r.id, d.Approve("confirmed by phone"))
    assert r.state == "owner_notified"
    return r.id


def _transitions(s: Sealed, request_id: str) -> list[tuple[str, str]]:
    return [(t.action, t.reason) for t in s.w.svc.store.transitions(request_id)]


def _check_package(s: Sealed, request_id: str) -> None:
    """The package of ``request_id`` verifies offline against the log's key and its clips
    are real, playable MP4 of the shed (the plaintext of sealed segments)."""
    stored = s.w.svc.store.request(request_id)
    assert stored.state == "fulfilled"
    zip_path = s.w.svc.packages_dir / f"{request_id}.zip"
    assert stored.package == zip_path.name
    trusted = load_public_keys(s.w.audit.keys_dir / "log_public_keys.json")
    report = verify_package_path(zip_path, trusted)
    assert report.trusted
    assert report.files_checked >= 1
    clips = [n for n in s.w.package_names(stored) if n.endswith(".mp4")]
    assert clips
    with zipfile.ZipFile(zip_path) as z, av.open(io.BytesIO(z.read(clips[0]))) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames > 10
    # Nothing of the package's work or the plaintext is left beside it.
    left = sorted(p.name for p in s.w.svc.packages_dir.glob(f"{request_id}*"))
    assert left == [request_id, f"{request_id}.zip"]


# --- consent -------------------------------------------------------------------------------


def test_a_consent_granted_over_sealed_footage_is_packaged_at_once_with_the_owners_keys(
    sealed: Sealed,
) -> None:
    s, w = sealed, sealed.w
    rita = w.requester("rita")
    rid = _consent(s, rita)
    otto = w.p(w.other_owner)
    stored = w.svc.grant(otto, rid, d.OwnerGrant(reason="yes, the lane"), s.keys())
    assert stored.state == "fulfilled"
    assert "awaiting_keys" not in stored.data
    _check_package(s, rid)
    # The export names whose keys opened the footage; the fulfilment is the system's step.
    (export,) = w.entries_of(rid, "footage:")
    assert export.actor.id == str(w.other_owner.id)
    assert [a for a, _ in _transitions(s, rid)][-3:] == ["owner_grant", "notify_owner", "fulfil"]
    w.assert_audited(rid)
    # Nothing more for the scheduler; the requester can fetch it.
    assert stored.next_due is None
    assert w.svc.run_due() == 0
    secret, _ = w.svc.new_link(w.p(rita.user_id), rid)
    assert w.svc.download(w.p(rita.user_id), rid, secret).name == f"{rid}.zip"


def test_a_grant_from_a_locked_session_over_sealed_footage_is_refused_and_nothing_changes(
    sealed: Sealed,
) -> None:
    s, w = sealed, sealed.w
    rita = w.requester("rita")
    rid = _consent(s, rita)
    before = (w.svc.store.request(rid), _transitions(s, rid), w.audit.size())
    otto = w.p(w.other_owner)
    with pytest.raises(KeysLockedError, match="sign in again"):
        w.svc.grant(otto, rid, d.OwnerGrant(), s.locked())
    # A session whose keys were dropped (logged out) is refused the same way.
    s.ring.sessions_ended(session_id=s.session.id)
    with pytest.raises(KeysLockedError):
        w.svc.grant(otto, rid, d.OwnerGrant(), s.keys())
    # Another household's owner's keys do not open the shed's footage: refused too.
    with pytest.raises(KeyUnavailableError):
        w.svc.grant(otto, rid, d.OwnerGrant(), _keys_of_nothing)
    after = (w.svc.store.request(rid), _transitions(s, rid), w.audit.size())
    assert after == before
    assert after[0].state == "awaiting_owner"
    assert not list(w.svc.packages_dir.glob(f"{rid}*"))


def _keys_of_nothing(household: str, key_id: bytes) -> HouseholdKeyPair:
    raise KeyUnavailableError(f"you hold no key of household {household!r}")


def test_run_due_does_not_retry_and_warn_every_pass_for_a_grant_waiting_for_keys(
    sealed: Sealed, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (a consent granted over sealed footage failed with KeysLockedError and was
    retried, with a warning, every 5 s pass forever): it is marked waiting for the owner's
    keys once, taken off the scheduler, and fulfilled when the owner acts."""
    s, w = sealed, sealed.w
    rita = w.requester("rita")
    rid = _consent(s, rita)
    # A grant that bypasses the keys (the plain step): the scheduler meets sealed footage.
    w.svc.act(w.p(w.other_owner), rid, d.OwnerGrant())
    with caplog.at_level(logging.INFO, logger="homewarden.services.disclosure"):
        for _ in range(5):
            w.svc.run_due()
            w.clock.advance(5)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    waits = [r for r in caplog.records if "waiting for the owner's keys" in r.getMessage()]
    assert len(waits) == 1
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package, stored.next_due) == ("owner_notified", None, None)
    assert stored.data["awaiting_keys"] == "owner"
    assert rid not in w.svc.store.due(w.clock() + DAY)
    assert w.entries_of(rid, "footage:") == []
    # The owner's view says it waits; the owner retries from the request page.
    assert w.svc.view(w.p(w.other_owner), stored)["awaiting_keys"] == "owner"
    with pytest.raises(KeysLockedError):
        w.svc.owner_fulfil(w.p(w.other_owner), rid, s.locked())
    assert w.svc.store.request(rid).state == "owner_notified"
    with pytest.raises(PermissionDeniedError):  # staff never bring an owner's keys
        w.svc.owner_fulfil(w.p(w.legal), rid, s.keys())
    done = w.svc.owner_fulfil(w.p(w.other_owner), rid, s.keys())
    assert done.state == "fulfilled"
    assert "awaiting_keys" not in done.data
    _check_package(s, rid)
    with pytest.raises(InvalidTransitionError, match="not waiting for fulfilment"):
        w.svc.fulfil_with_keys(rid, s.keys(), Actor.of_principal(w.p(w.other_owner)))
    w.assert_audited(rid)


def test_a_grant_whose_package_fails_stays_granted_and_waits_for_the_owners_keys(
    sealed: Sealed,
) -> None:
    s, w = sealed, sealed.w
    rita = w.requester("rita")
    rid = _consent(s, rita)
    target = w.tmp / "media" / s.segments[0].path
    good = target.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    target.write_bytes(bytes(bad))
    stored = w.svc.grant(w.p(w.other_owner), rid, d.OwnerGrant(), s.keys())
    assert (stored.state, stored.package, stored.next_due) == ("owner_notified", None, None)
    assert stored.data["awaiting_keys"] == "owner"
    assert not list(w.svc.packages_dir.glob(f"{rid}*"))
    assert w.svc.run_due() == 0
    with pytest.raises(SealedDataError):
        w.svc.owner_fulfil(w.p(w.other_owner), rid, s.keys())
    target.write_bytes(good)
    assert w.svc.owner_fulfil(w.p(w.other_owner), rid, s.keys()).state == "fulfilled"
    _check_package(s, rid)


# --- search warrants -----------------------------------------------------------------------


def test_a_warrant_over_sealed_footage_is_cannot_produce_even_with_escrow_on(
    sealed: Sealed,
) -> None:
    """Escrow is the owner's opt-in for emergencies only (issue 6): a warrant's footage
    sealed under an escrowed key version is still "the owner holds the keys"."""
    s, w = sealed, sealed.w
    s.ring.init_escrow(OPERATOR)
    assert s.ring.enable_escrow(s.session, Actor.of_principal(w.p(w.other_owner))) >= 1
    assert s.ring.status(OTHER).escrow_enabled
    rita = w.requester("rita")
    rid = _warrant(s, rita)
    # Not even keys brought by hand make a warrant's sealed footage producible.
    entries = w.audit.size()
    with pytest.raises(InvalidTransitionError, match="the owner holds the keys"):
        w.svc.fulfil_with_keys(rid, s.keys(), CUSTODIANS)
    assert w.audit.size() == entries
    assert w.svc.run_due() == 1
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package, stored.next_due) == ("fulfilled", "none", None)
    assert _transitions(s, rid)[-1] == ("fulfil", f"package none: {d.OWNER_HOLDS_KEYS}")
    assert w.entries_of(rid, "footage:") == []
    assert w.entries_of(rid, "key:") == []  # no escrow use for a warrant
    # The owner was told once, and truly: nothing is released, they hold the keys.
    (notice,) = w.owner_notices(rid, OTHER)
    assert "will be released" not in notice.body
    assert d.OWNER_HOLDS_KEYS in notice.body
    w.assert_audited(rid)


# --- emergencies ---------------------------------------------------------------------------


def test_an_emergency_over_sealed_footage_without_escrow_is_cannot_produce(
    sealed: Sealed,
) -> None:
    s, w = sealed, sealed.w
    assert not s.ring.status(OTHER).escrow_enabled
    rita = w.requester("rita")
    rid = _emergency(s, rita)
    assert w.svc.run_due() == 1
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package, stored.next_due) == ("fulfilled", "none", None)
    assert _transitions(s, rid)[-1] == ("fulfil", f"package none: {d.OWNER_HOLDS_KEYS}")
    assert w.entries_of(rid, "footage:") == []
    (notice,) = w.owner_notices(rid, OTHER)
    assert "will be released" not in notice.body
    assert f"nothing can be released, as {d.OWNER_HOLDS_KEYS}" in notice.body
    (fulfil,) = [e for e in w.entries_of(rid) if str(e.action) == "request:emergency:fulfil"]
    assert "released nothing (cannot produce content: the owner holds the keys)" in fulfil.reason
    w.assert_audited(rid)
    # Counted: approved, nothing produced as the owner holds the keys; no household affected.
    reports = TransparencyReport(w.audit)
    report = reports.build(START - 1, START + DAY)
    figures = report["figures"]
    assert figures["outcomes"]["emergency"]["disclosed"] == 1
    assert figures["emergency_owner_held_keys"] == 1
    assert figures["legal_owner_held_keys"] == 0
    assert figures["households_affected"] == 0
    export = w.tmp / "log.jsonl"
    with export.open("w", encoding="utf-8") as f:
        reports.export_public(f, SignedTreeHead.from_json(report["tree_head"]))
    assert verify_report(report, export)["ok"] is True
    edited = copy.deepcopy(report)
    edited["figures"]["emergency_owner_held_keys"] = 0
    with pytest.raises(VerificationError, match="emergency_owner_held_keys"):
        verify_report(edited, export)


def test_a_delayed_emergency_notice_says_nothing_was_released_when_the_owner_holds_keys(
    sealed: Sealed,
) -> None:
    """The notice is sent after the fulfilment (the policy's delay): it tells what happened."""
    w = sealed.w
    w.svc.set_policy(
        w.p(w.other_owner), d.Policy(notice_delay=3600.0), notice_email=None, address=None
    )
    rita = w.requester("rita")
    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.EMERGENCY,
        start=SEALED_AT - 5,
        end=SEALED_AT + 15,
        description="a missing child was last seen walking past this shed",
        camera=SHED,
        cameras=[SHED],
        attested=True,
    )
    w.svc.act(w.p(w.legal), r.id, d.Approve("plausible"))
    w.svc.act(w.p(w.custodian), r.id, d.RecordCallback(AGENCY_PHONE, True, "confirmed"))
    assert w.svc.act(w.p(w.custodian), r.id, d.Approve("ok")).state == "notice_scheduled"
    w.svc.run_due()
    assert w.svc.store.request(r.id).state == "fulfilled"
    assert w.owner_notices(r.id, OTHER) == []
    w.clock.advance(3601)
    w.svc.run_due()
    (notice,) = w.owner_notices(r.id, OTHER)
    assert f"was fulfilled: nothing was released, as {d.OWNER_HOLDS_KEYS}" in notice.body


def test_an_emergency_under_escrow_waits_for_two_custodians_and_is_not_retried_each_pass(
    sealed: Sealed, caplog: pytest.LogCaptureFixture
) -> None:
    s, w = sealed, sealed.w
    shares = s.ring.init_escrow(OPERATOR)
    s.ring.enable_escrow(s.session, Actor.of_principal(w.p(w.other_owner)))
    rita = w.requester("rita")
    rid = _emergency(s, rita)
    with caplog.at_level(logging.INFO, logger="homewarden.services.disclosure"):
        for _ in range(4):
            w.svc.run_due()
            w.clock.advance(5)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len([r for r in caplog.records if "custodians' escrow" in r.getMessage()]) == 1
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package, stored.next_due) == ("owner_notified", None, None)
    assert stored.data["awaiting_keys"] == "custodians"
    (notice,) = w.owner_notices(rid, OTHER)
    assert "footage will be released" in notice.body  # escrow on: it can be
    # Two custodians' shares open the escrowed versions; the request is fulfilled with them.
    opened = s.ring.open_for_emergency(OTHER, shares[:2], CUSTODIANS, request=rid)
    keys: KeySource = lambda household, key_id: opened[key_id.hex()]  # noqa: E731
    done = w.svc.fulfil_with_keys(rid, keys, CUSTODIANS)
    assert done.state == "fulfilled"
    _check_package(s, rid)
    w.assert_audited(rid)
