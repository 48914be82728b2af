"""Custodians' escrow shares fulfilling an emergency over sealed footage (issue 6: "Emergency
under escrow needs two different custodians' shares; one share alone fails"), through
EmergencyShareCollector over the real services of tests/services/disclosure_helpers.py, on
SQLite and PostgreSQL: real footage (bikes.mp4) sealed at rest to the household key, the
owner's password login and emergency-access switch, the deployment's escrow key split 2-of-3,
a real emergency request (call-back confirmed, approved by a legal reviewer and a custodian)
and the package verified as a recipient would."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from homewarden.crypto.household_keys import (
    ARGON2ID_FLOOR,
    generate_escrow_key,
    split_escrow_key,
)
from homewarden.domain import disclosure as d
from homewarden.domain.audit import Actor, AuditEntry, AuditTag
from homewarden.domain.permissions import Role
from homewarden.errors import (
    InvalidTransitionError,
    KeyShareError,
    PermissionDeniedError,
    SealedDataError,
)
from homewarden.services.accounts import hash_password
from homewarden.services.emergency_escrow import (
    FULFILLED,
    SHARE_HOLD_SECONDS,
    WAITING,
    EmergencyShareCollector,
)
from homewarden.services.household_keys import KeyRing
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.store.accounts_store import SessionRecord, UserRecord
from homewarden.store.disclosure_store import StoredRequest
from tests.fixtures_mail import SmtpTestServer
from tests.package_footage import T0
from tests.services.disclosure_helpers import (
    AGENCY_PHONE,
    HOME,
    HOST,
    OPERATOR,
    OTHER,
    PORCH,
    SHED,
    Requester,
    World,
)
from tests.web.helpers import PASSWORD

#: The sealed footage starts here (the porch's plaintext footage is at T0).
SEALED_AT = T0 + 1000.0


@cache
def password_hash() -> str:
    """One real Argon2id hash of PASSWORD per worker (hashing costs ~0.2 s)."""
    return hash_password(PASSWORD)


class EscrowWorld(World):
    """The disclosure deployment with household keys managed (cheap Argon2id wraps), the
    porch's footage at :data:`SEALED_AT` sealed at rest to ``home``'s key, the owner
    ``olive`` signed in (unlocking the keys) with emergency access on, the deployment's
    escrow key split into :attr:`shares`, and custodians ``carl`` (who approves), ``cora``
    and ``cruz`` (the three share holders)."""

    ring: KeyRing
    shares: list[str]
    owner_session: SessionRecord
    cora: UserRecord
    cruz: UserRecord
    collector: EmergencyShareCollector

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ring.ensure_household_key(HOME)
        self.sealed = self.record_sealed(PORCH, HOME, SEALED_AT)
        add = self.accounts.add_user
        self.cora = add("cora", Role.CUSTODIAN, None, actor=OPERATOR).user
        self.cruz = add("cruz", Role.CUSTODIAN, None, actor=OPERATOR).user
        self.accounts.store.update_user(self.owner.id, password_hash=password_hash())
        step = self.accounts.login("olive", PASSWORD, HOST)
        assert not step.needs_totp
        self.owner_session = step.session
        assert self.ring.is_unlocked(step.session.id)
        self.shares = self.ring.init_escrow(OPERATOR)
        olive = self.p(self.owner)
        assert self.ring.enable_escrow(step.session, Actor.of_principal(olive)) == 2

    def _build(self) -> None:
        super()._build()
        self.ring = KeyRing(
            self.index,
            self.audit,
            self.accounts,
            self.settings.keys_dir,
            clock=self.clock,
            params=ARGON2ID_FLOOR,
        )
        self.accounts.keys = self.ring
        self.collector = EmergencyShareCollector(
            self.svc, self.ring, self.audit, self.index, clock=self.clock
        )

    def approved_emergency(
        self, who: Requester, camera: str = PORCH, start: float = SEALED_AT
    ) -> StoredRequest:
        """An emergency over ``camera`` from ``start`` for 20 s, approved after a confirmed
        call-back; the scheduler has run."""
        r = self.svc.file(
            self.p(who.user_id),
            type=d.RequestType.EMERGENCY,
            start=start - 5,
            end=start + 15,
            description="a child missing; last seen on this street",
            camera=camera,
            cameras=[camera],
            attested=True,
        )
        self.svc.act(self.p(self.legal), r.id, d.Approve("the danger is plausible"))
        self.svc.act(self.p(self.custodian), r.id, d.RecordCallback(AGENCY_PHONE, True, "ok"))
        done = self.svc.act(self.p(self.custodian), r.id, d.Approve("confirmed by phone"))
        assert (done.state, done.data["release"]) == ("owner_notified", "footage")
        self.svc.run_due()
        return self.svc.store.request(r.id)

    def held_by(self, request_id: str) -> int | None:
        """The account id of the custodian whose share is held for the request, or None."""
        held = self.collector.held(request_id)
        return None if held is None else held.user_id

    def tags_of(self, request_id: str, tag: AuditTag) -> list[AuditEntry]:
        return [e for e in self.entries() if e.action is tag and e.subject.request == request_id]

    def packages(self, request_id: str) -> list[str]:
        folder = self.svc.packages_dir
        return sorted(p.name for p in folder.glob(f"{request_id}*")) if folder.exists() else []

    def assert_nothing_released(self, request_id: str) -> None:
        stored = self.svc.store.request(request_id)
        assert (stored.state, stored.package) == ("owner_notified", None)
        assert self.packages(request_id) == []
        assert self.entries_of(request_id, "footage:") == []


@pytest.fixture
def world(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Iterator[EscrowWorld]:
    w = EscrowWorld(tmp_path, database_url, smtp_server)
    try:
        yield w
    finally:
        w.close()


def _mistyped(share: str) -> str:
    """``share`` with one symbol of its body changed (its checksum no longer matches)."""
    i = len(share) // 2
    while share[i] in "-":
        i += 1
    swap = "A" if share[i] != "A" else "B"
    return share[:i] + swap + share[i + 1 :]


def test_two_different_custodians_fulfil_an_emergency_over_sealed_footage_and_it_verifies(
    world: EscrowWorld,
) -> None:
    w = world
    rita = w.requester("rita")
    r = w.approved_emergency(rita)
    # The scheduler cannot package it: nobody on the server holds the household's keys.
    w.assert_nothing_released(r.id)
    carl, cora = w.p(w.custodian), w.p(w.cora)

    first = w.collector.enter(carl, r.id, w.shares[0])
    assert (first.state, first.request_state, first.package) == (WAITING, "owner_notified", None)
    assert first.expires_at == w.clock() + SHARE_HOLD_SECONDS
    assert w.held_by(r.id) == w.custodian.id
    w.svc.run_due()
    w.assert_nothing_released(r.id)

    done = w.collector.enter(cora, r.id, w.shares[2])
    assert done.state == FULFILLED
    assert done.package == f"{r.id}.zip"
    assert w.collector.held(r.id) is None
    stored = w.svc.store.request(r.id)
    assert (stored.state, stored.package) == ("fulfilled", f"{r.id}.zip")
    clips = [n for n in w.package_names(stored) if n.endswith(".mp4")]
    assert clips, w.package_names(stored)
    zip_path = w.svc.packages_dir / f"{r.id}.zip"
    trusted = load_public_keys(w.audit.keys_dir / "log_public_keys.json")
    assert verify_package_path(zip_path, trusted).trusted
    with zipfile.ZipFile(zip_path) as z:
        name = next(n for n in z.namelist() if n.endswith("manifest.json"))
        manifest = json.loads(z.read(name))
        clip = z.read(clips[0])
    assert manifest["legal_basis"] == "emergency disclosure, 18 U.S.C. 2702(b)(8)"
    assert b"ftyp" in clip[:64]  # a playable MP4, opened from the sealed segments

    # Audited: each share entered, the escrow use, the export, the request's steps.
    shares = w.tags_of(r.id, AuditTag.KEY_ESCROW_SHARE)
    assert [e.actor.id for e in shares] == [str(w.custodian.id), str(w.cora.id)]
    assert all(e.subject.household == HOME for e in shares)
    escrow = w.ring.store.escrow_key()
    assert escrow is not None
    assert all(e.subject.key == escrow.key_id.hex() for e in shares)
    (use,) = w.tags_of(r.id, AuditTag.KEY_ESCROW_USE)
    assert "opened with the shares of two different custodians" in use.reason
    assert w.entries_of(r.id, "footage:export:")
    w.assert_audited(r.id)
    w.audit.verify()
    # No share was written anywhere the log reaches.
    for entry in w.entries():
        leaf = entry.leaf()
        assert not any(s.encode() in leaf for s in w.shares)
    # Once fulfilled, no more shares are taken for it.
    with pytest.raises(InvalidTransitionError, match="fulfilled already"):
        w.collector.enter(w.p(w.cruz), r.id, w.shares[1])


def test_one_share_alone_leaves_it_waiting_and_expires_after_15_minutes(
    world: EscrowWorld,
) -> None:
    w = world
    r = w.approved_emergency(w.requester("rita"))
    carl, cora = w.p(w.custodian), w.p(w.cora)
    assert w.collector.enter(carl, r.id, w.shares[0]).state == WAITING
    w.clock.advance(SHARE_HOLD_SECONDS - 1)
    assert w.collector.held(r.id) is not None
    w.svc.run_due()
    w.assert_nothing_released(r.id)
    w.clock.advance(1)
    assert w.collector.held(r.id) is None  # dropped at 15 min, and the drop audited
    expired = w.tags_of(r.id, AuditTag.KEY_ESCROW_SHARE)[-1]
    assert "expired unused after 15 min" in expired.reason
    # A second custodian now finds no share waiting: theirs is the first again.
    again = w.collector.enter(cora, r.id, w.shares[1])
    assert again.state == WAITING
    assert w.held_by(r.id) == w.cora.id
    w.assert_nothing_released(r.id)
    # The control: a second custodian within the 15 minutes completes it.
    w.clock.advance(SHARE_HOLD_SECONDS - 60)
    assert w.collector.enter(carl, r.id, w.shares[0]).state == FULFILLED
    assert w.svc.store.request(r.id).state == "fulfilled"


def test_the_same_custodian_twice_replaces_their_share_and_does_not_fulfil(
    world: EscrowWorld,
) -> None:
    w = world
    r = w.approved_emergency(w.requester("rita"))
    carl = w.p(w.custodian)
    assert w.collector.enter(carl, r.id, w.shares[0]).replaced is False
    # Carl enters another custodian's share too: still one person, never two.
    second = w.collector.enter(carl, r.id, w.shares[1])
    assert (second.state, second.replaced) == (WAITING, True)
    w.assert_nothing_released(r.id)
    assert w.tags_of(r.id, AuditTag.KEY_ESCROW_USE) == []
    assert w.held_by(r.id) == w.custodian.id
    assert "replaced their own held share" in w.tags_of(r.id, AuditTag.KEY_ESCROW_SHARE)[-1].reason
    # The held one is the latest (shares[1]); with shares[2] from cora it combines.
    assert w.collector.enter(w.p(w.cora), r.id, w.shares[2]).state == FULFILLED


def test_a_wrong_share_fails_with_its_reason_and_nothing_is_released(
    world: EscrowWorld,
) -> None:
    w = world
    r = w.approved_emergency(w.requester("rita"))
    carl, cora = w.p(w.custodian), w.p(w.cora)

    # A mistyped share is refused at once and never held.
    with pytest.raises(KeyShareError, match="mistyped") as typo:
        w.collector.enter(carl, r.id, _mistyped(w.shares[0]))
    assert typo.value.reason == "mistyped share"
    assert w.collector.held(r.id) is None
    # A share of another deployment's escrow key likewise.
    foreign = split_escrow_key(generate_escrow_key(), 2, 3)[0].text
    with pytest.raises(KeyShareError, match="another escrow key") as other:
        w.collector.enter(carl, r.id, foreign)
    assert other.value.reason == "another escrow key"
    # A mistyped second share leaves the first custodian's held share alone.
    assert w.collector.enter(carl, r.id, w.shares[0]).state == WAITING
    with pytest.raises(KeyShareError, match="mistyped"):
        w.collector.enter(cora, r.id, _mistyped(w.shares[1]))
    assert w.held_by(r.id) == w.custodian.id
    # Two custodians entering the same share: the combination fails, both are dropped.
    with pytest.raises(KeyShareError, match="do not combine") as dup:
        w.collector.enter(cora, r.id, w.shares[0])
    assert dup.value.reason == "duplicate share"
    assert w.collector.held(r.id) is None
    (refused,) = w.tags_of(r.id, AuditTag.KEY_ESCROW_USE)
    assert refused.reason == "refused: duplicate share"
    refusals = [e.reason for e in w.tags_of(r.id, AuditTag.KEY_ESCROW_SHARE)]
    assert sum("refused: mistyped share" in x for x in refusals) == 2
    assert sum("refused: another escrow key" in x for x in refusals) == 1
    w.svc.run_due()
    w.assert_nothing_released(r.id)

    # The control: two right shares of two custodians still fulfil it.
    assert w.collector.enter(cora, r.id, w.shares[1]).state == WAITING
    assert w.collector.enter(carl, r.id, w.shares[0]).state == FULFILLED


def test_requesters_owners_legal_reviewers_and_tokens_cannot_enter_a_share(
    world: EscrowWorld,
) -> None:
    w = world
    rita = w.requester("rita")
    r = w.approved_emergency(rita)
    token = replace(w.p(w.custodian), via_token=True)
    for who in (w.p(rita.user_id), w.p(w.owner), w.p(w.legal), token):
        with pytest.raises(PermissionDeniedError):
            w.collector.enter(who, r.id, w.shares[0])
    assert w.collector.held(r.id) is None
    assert w.tags_of(r.id, AuditTag.KEY_ESCROW_SHARE) == []
    w.assert_nothing_released(r.id)


def test_shares_are_refused_for_requests_escrow_cannot_or_need_not_fulfil(
    world: EscrowWorld,
) -> None:
    w = world
    rita = w.requester("rita")
    carl = w.p(w.custodian)

    def refused(request_id: str, match: str) -> None:
        with pytest.raises(InvalidTransitionError, match=match):
            w.collector.enter(carl, request_id, w.shares[0])
        assert w.collector.held(request_id) is None

    # Not an emergency: a consent request over the same sealed footage.
    consent = w.consent(rita, SEALED_AT - 5, SEALED_AT + 15)
    refused(consent.id, "emergency requests only")
    # An emergency not approved yet (one approval, no call-back).
    pending = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.EMERGENCY,
        start=SEALED_AT - 5,
        end=SEALED_AT + 15,
        description="a child missing",
        camera=PORCH,
        cameras=[PORCH],
        attested=True,
    )
    w.svc.act(w.p(w.legal), pending.id, d.Approve("plausible"))
    refused(pending.id, "only once a legal reviewer and a custodian approved")
    # An approved emergency over the porch's plaintext footage: the scheduler packages it.
    plain = w.approved_emergency(rita, PORCH, T0)
    assert plain.state == "fulfilled"
    refused(plain.id, "fulfilled already")

    # A household whose owner has not opted into emergency access: answered at once that
    # the owner holds the keys, nothing for custodians to open.
    w.record_sealed(SHED, OTHER, SEALED_AT)
    shed = w.approved_emergency(rita, SHED, SEALED_AT)
    assert (shed.state, shed.package) == ("fulfilled", "none")
    refused(shed.id, "fulfilled already")

    # The owner turns emergency access off after a first share was held: the next share is
    # refused, the held one dropped, nothing released.
    r = w.approved_emergency(rita)
    assert w.collector.enter(carl, r.id, w.shares[0]).state == WAITING
    olive = w.p(w.owner)
    w.ring.disable_escrow(olive, Actor.of_principal(olive))
    with pytest.raises(PermissionDeniedError, match="has not opted into emergency access"):
        w.collector.enter(w.p(w.cora), r.id, w.shares[1])
    assert w.collector.held(r.id) is None
    w.assert_nothing_released(r.id)


def test_a_failed_fulfilment_drops_the_keys_and_both_shares_and_releases_nothing(
    world: EscrowWorld,
) -> None:
    """A sealed segment with one byte changed: the package cannot be made, so the request
    stays waiting with no share held; with the segment restored two custodians start again."""
    w = world
    r = w.approved_emergency(w.requester("rita"))
    seg = w.sealed[len(w.sealed) // 2]
    path = w.tmp / "media" / seg.path
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    path.write_bytes(bytes(bad))
    assert w.collector.enter(w.p(w.custodian), r.id, w.shares[0]).state == WAITING
    with pytest.raises(SealedDataError, match="does not open"):
        w.collector.enter(w.p(w.cora), r.id, w.shares[1])
    assert w.collector.held(r.id) is None
    w.assert_nothing_released(r.id)
    assert "not fulfilled" in w.tags_of(r.id, AuditTag.KEY_ESCROW_SHARE)[-1].reason

    path.write_bytes(good)
    assert w.collector.enter(w.p(w.cora), r.id, w.shares[1]).state == WAITING
    assert w.collector.enter(w.p(w.cruz), r.id, w.shares[2]).state == FULFILLED
