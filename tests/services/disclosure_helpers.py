"""A deployment for the disclosure scenario tests, over real services: the index and audit
log on SQLite or PostgreSQL, accounts, notices mailed through a real SMTP server on loopback
(aiosmtpd), real footage (bikes.mp4 recorded as segments) and a settable clock.

Households: ``home`` (cameras ``porch`` and ``back``, both recorded at :data:`T0`, owner
``olive``) and ``other`` (camera ``shed``, owner ``otto``). Staff: legal reviewer ``lena``
and custodian ``carl``. One agency on the allow-list. Requesters are signed up the way a
real one is: the setup link is read from the mail, the password and TOTP set through it.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyotp

from homewarden.config import Settings
from homewarden.domain import disclosure as d
from homewarden.domain.audit import Actor, ActorKind, AuditEntry
from homewarden.domain.permissions import Principal, Role
from homewarden.notify.mail import Mailer
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.disclosure import AUDIT_VERB, DisclosureService, Document, audit_kind
from homewarden.services.household_keys import KeyRing
from homewarden.services.notices import NoticeService
from homewarden.services.sealed_footage import SegmentSealing, seal_segment_file
from homewarden.store.accounts_store import UserRecord
from homewarden.store.disclosure_store import AgencyRecord, DisclosureStore, StoredRequest
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord
from tests.fixtures_mail import ReceivedMail, SmtpTestServer
from tests.package_footage import T0, record_bikes
from tests.web.helpers import PASSWORD, Clock

HOME, OTHER = "home", "other"
PORCH, BACK, SHED = "porch", "back", "shed"
#: The clock starts an hour after the footage.
START = T0 + 3600.0
DAY = 86400.0
AGENCY_PHONE = "+1 555 0100 200"
AGENCY_DOMAIN = "pd.example.gov"
NOTICE_EMAIL = "olive@home.example.org"
PUBLIC_URL = "http://hw.test"
HOST = "192.0.2.10"
SETUP_LINK = re.compile(r"/setup\?token=([A-Za-z0-9_\-]+)")
WARRANT = Document("warrant.pdf", "application/pdf", b"%PDF-1.4 a signed warrant")
OPERATOR = Actor(ActorKind.LOCAL_OPERATOR, "cli:test")


@dataclass
class Requester:
    """A verified requester: account id, address, TOTP generator."""

    user_id: int
    email: str
    totp: pyotp.TOTP
    username: str


@dataclass
class World:
    """The deployment; :meth:`restart` drops every service object and builds new ones over
    the same database and data directory."""

    tmp: Path
    database_url: str
    smtp: SmtpTestServer
    clock: Clock = field(default_factory=lambda: Clock(START))
    settings: Settings = field(init=False)
    index: Index = field(init=False)
    audit: AuditLog = field(init=False)
    accounts: AccountService = field(init=False)
    notices: NoticeService = field(init=False)
    svc: DisclosureService = field(init=False)
    owner: UserRecord = field(init=False)
    other_owner: UserRecord = field(init=False)
    legal: UserRecord = field(init=False)
    custodian: UserRecord = field(init=False)
    agency: AgencyRecord = field(init=False)
    staff_locked_alerts: bool = False

    def __post_init__(self) -> None:
        self.settings = Settings(
            data_dir=self.tmp,
            database_url=self.database_url,
            mail=self.smtp.settings(),
            cameras={
                PORCH: {"url": "file:/dev/null"},
                BACK: {"url": "file:/dev/null"},
                SHED: {"url": "file:/dev/null", "household": OTHER},
            },
        )
        self._build()
        for camera in (PORCH, BACK):
            for seg in record_bikes(self.tmp, camera):
                self.index.add_segment(seg)
        # Owners and staff act through principals here (no login), so no password is set:
        # each Argon2id hash costs time and these tests do not sign them in.
        add = self.accounts.add_user
        self.owner = add("olive", Role.OWNER, HOME, actor=OPERATOR).user
        self.other_owner = add("otto", Role.OWNER, OTHER, actor=OPERATOR).user
        self.legal = add("lena", Role.LEGAL_REVIEWER, None, actor=OPERATOR).user
        self.custodian = add("carl", Role.CUSTODIAN, None, actor=OPERATOR).user
        self.agency = self.svc.add_agency(
            self.p(self.legal), "Town PD", "Town", [AGENCY_DOMAIN], AGENCY_PHONE
        )

    def _build(self) -> None:
        self.index = Index(self.database_url)
        self.index.migrate()
        self.audit = AuditLog.open(
            self.database_url, self.settings.keys_dir, household=HOME, clock=self.clock
        )
        self.audit.ensure_key()
        self.accounts = AccountService(self.index, self.audit, self.settings, clock=self.clock)
        self.accounts.ensure_households()
        self.notices = NoticeService(
            DisclosureStore(self.index), Mailer(self.settings.mail), clock=self.clock
        )
        settings = self.settings
        self.svc = DisclosureService(
            self.index,
            lambda: settings,
            self.audit,
            self.accounts,
            self.notices,
            public_url=PUBLIC_URL,
            clock=self.clock,
        )
        notices = self.notices

        def locked(user: UserRecord) -> None:  # as services/runtime.py wires it
            notices.alert_staff(
                f"Requester {user.username} locked after too many wrong TOTP codes",
                f"Requester account {user.username} (id {user.id}) was disabled.",
            )

        self.accounts.on_requester_locked = locked

    def restart(self) -> None:
        """Drop the service objects; build new ones over the same database and data dir."""
        self.close()
        self._build()

    def close(self) -> None:
        self.audit.close()
        self.index.close()

    # --- people -----------------------------------------------------------------------------

    def p(self, user: UserRecord | int) -> Principal:
        """The principal of an account as it stands now."""
        uid = user if isinstance(user, int) else user.id
        return self.accounts.principal_of(self.accounts.user(uid), HOST)

    def signup(self, username: str, email: str | None = None) -> tuple[int, str]:
        """Sign a requester up; returns (account id, the setup token read from the mail)."""
        address = email or f"{username}@{AGENCY_DOMAIN}"
        before = len(self.smtp.messages)
        user_id = self.svc.signup(self.agency.id, address, username)
        mails = [m for m in self.smtp.wait_for(before + 1)[before:] if address in m.rcpt_tos]
        assert len(mails) == 1, mails
        found = SETUP_LINK.search(mails[0].body)
        assert found is not None, mails[0].body
        return user_id, found.group(1)

    def requester(self, username: str) -> Requester:
        """A verified requester (agency address, password and TOTP set via the mailed link)."""
        user_id, token = self.signup(username)
        secret = pyotp.random_base32()
        totp = pyotp.TOTP(secret)
        self.accounts.complete_setup(
            token, PASSWORD, totp_secret=secret, totp_code=totp.at(self.clock())
        )
        assert self.svc.requester_problem(user_id) is None
        return Requester(user_id, f"{username}@{AGENCY_DOMAIN}", totp, username)

    # --- filing -----------------------------------------------------------------------------

    def consent(self, who: Requester, start: float = T0 - 5, end: float = T0 + 15) -> StoredRequest:
        return self.svc.file(
            self.p(who.user_id),
            type=d.RequestType.CONSENT,
            start=start,
            end=end,
            description="a burglary next door; the porch camera faces the street",
            camera=PORCH,
        )

    def emergency(
        self, who: Requester, start: float = T0 - 60, end: float = T0 + 600
    ) -> StoredRequest:
        return self.svc.file(
            self.p(who.user_id),
            type=d.RequestType.EMERGENCY,
            start=start,
            end=end,
            description="a missing child was last seen walking past this house",
            camera=PORCH,
            cameras=[PORCH],
            attested=True,
        )

    def record_sealed(self, camera: str, household: str, t0: float) -> list[SegmentRecord]:
        """Record bikes.mp4 on ``camera`` from ``t0`` sealed at rest (``storage.sealed``) to
        ``household``'s key, made here as the runtime makes it at start (held for the first
        owner; no escrow, as emergency access is off by default); returns the indexed
        segments. The plaintext files are gone once sealed."""
        ring = KeyRing(
            self.index, self.audit, self.accounts, self.settings.keys_dir, clock=self.clock
        )
        ring.ensure_household_key(household)
        media = self.tmp / "media"
        recorded = record_bikes(self.tmp, camera, t0)
        for seg in recorded:
            done = seal_segment_file(
                media / seg.path, media, seg.path, camera, seg.start,
                SegmentSealing(household, ring),
            )  # fmt: skip
            sealed = replace(
                seg, path=done.path, bytes=done.bytes, sealed=True, key_id=done.key_id
            )
            self.index.add_segment(sealed)
        out = [s for s in self.index.segments(camera, t0, t0 + 3600) if s.sealed]
        assert len(out) == len(recorded)
        assert not any((media / seg.path).exists() for seg in recorded)
        return out

    # --- reading ----------------------------------------------------------------------------

    def entries(self) -> list[AuditEntry]:
        return [self.audit.entry(i) for i in range(self.audit.size())]

    def entries_of(self, request_id: str, prefix: str = "request:") -> list[AuditEntry]:
        return [
            e
            for e in self.entries()
            if e.subject.request == request_id and str(e.action).startswith(prefix)
        ]

    def mails_to(self, address: str) -> list[ReceivedMail]:
        return [m for m in self.smtp.messages if address in m.rcpt_tos]

    def owner_notices(self, request_id: str, household: str = HOME) -> list[Any]:
        return [n for n in self.notices.owner_notices(household) if n.request_id == request_id]

    def kind(self, request_id: str) -> str:
        """The request's kind in audit tags: its type, or a legal order's kind."""
        data = self.svc.store.request(request_id).data
        order = data["order_kind"]
        return audit_kind(
            d.RequestType(data["type"]), None if order is None else d.OrderKind(order)
        )

    def assert_audited(self, request_id: str) -> None:
        """Every stored transition of the request has its audit entry
        ``request:<kind>:<verb>`` naming the request and the actor, in the same order, and
        no other ``request:<kind>:*`` entry names it."""
        stored = self.svc.store.request(request_id)
        steps = self.svc.store.transitions(request_id)
        assert steps, "a request has transitions"
        prefix = f"request:{self.kind(request_id)}:"

        def public_id(role: str, actor_id: str) -> str:
            party = d.Party(d.PartyRole(role), actor_id, stored.household)
            return self.svc.public_actor(party).id

        expected = [
            (f"{prefix}{AUDIT_VERB[t.action]}", public_id(t.actor_role, t.actor_id)) for t in steps
        ]
        # Requesters and owners appear as pseudonyms, never as account ids.
        assert all(
            public_id(t.actor_role, t.actor_id).startswith("p-")
            for t in steps
            if t.actor_role in ("requester", "owner")
        )
        entries = self.entries_of(request_id, prefix)
        got = [(str(e.action), e.actor.id) for e in entries]
        assert got == expected, (got, expected)
        # Request entries are published: the household appears as its keyed pseudonym only.
        pseudonym = self.svc.household_pseudonym(stored.household)
        assert all(e.subject.household == pseudonym for e in entries)
        assert all(e.subject.camera is None and e.subject.start_ms is None for e in entries)
        assert all(stored.household not in e.reason for e in entries)

    def package_names(self, stored: StoredRequest) -> list[str]:
        assert stored.package is not None
        assert stored.package.endswith(".zip")
        with zipfile.ZipFile(self.svc.packages_dir / stored.package) as z:
            return sorted(z.namelist())
