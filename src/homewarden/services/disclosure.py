"""Disclosure requests, end to end: verified requesters file, staff review, owners answer,
the scheduler keeps time, and what is released is packaged for the requester alone.

The decisions are :mod:`homewarden.domain.disclosure`'s; this module stores requests and
their transitions, writes an audit entry for every step (``request:<type>:<verb>``, see
:data:`AUDIT_VERB`) before the step is stored, carries out the effects (preservation holds
in the index, owner notices in the app and by mail), packages released scopes (footage
through :class:`~homewarden.services.evidence.EvidenceService`; account facts as a signed
JSON package) and hands them out through expiring links, recording every download and every
refused attempt.

Requesters (DESIGN.md "The people who use it", flow 5) belong to an agency on the staff's
allow-list, sign up with an address at one of its official mail domains (the setup link is
mailed there, which proves the mailbox), and must enrol TOTP; until all of that holds they
can file nothing. An emergency is confirmed by calling the agency's registered number from
the agency record, never a number from the request.

Scheduling: every request stores when its next system step falls due (consent expiry, a
delayed owner notice, a preservation hold's end, a fulfilment). :meth:`DisclosureService.run_due`
performs what is due; ``homewarden run`` calls it every few seconds, and because the due time
is in the database a restart loses nothing. Times are UTC epoch seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homewarden import __version__
from homewarden.config import Settings
from homewarden.domain import disclosure as d
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.permissions import Principal, PrincipalKind, Role
from homewarden.errors import (
    HomeWardenError,
    InvalidRequestError,
    InvalidTransitionError,
    NotFoundError,
    NoticeDeliveryError,
    PermissionDeniedError,
    StorageError,
)
from homewarden.notify.mail import check_address
from homewarden.services.accounts import DEPLOYMENT_HOUSEHOLD, AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.evidence import EvidenceService, sealed_ranges
from homewarden.services.notices import NoticeService
from homewarden.services.sealed_footage import KeySource
from homewarden.store.disclosure_store import (
    AgencyRecord,
    DisclosureStore,
    NewTransition,
    StoredRequest,
)
from homewarden.store.household_key_store import HouseholdKeyStore
from homewarden.store.index import Index
from homewarden.store.keyfiles import create_secret, read_secret
from homewarden.timefmt import utc_seconds_text

log = logging.getLogger(__name__)

#: Audit verb of each transition action (tags are ``request:<type>:<verb>``).
AUDIT_VERB: dict[str, str] = {
    "file": "file",
    "verify_requester": "verify",
    "route": "route",
    "narrow": "narrow",
    "owner_grant": "grant",
    "owner_decline": "decline",
    "accept": "accept",
    "reject": "reject",
    "callback": "callback",
    "approve": "approve",
    "approve_emergency": "approve",
    "schedule_notice": "schedule",
    "notify_owner": "notify",
    "withdraw": "withdraw",
    "expire": "expire",
    "fulfil": "fulfil",
    "renew": "renew",
    "end_hold": "release",
    "close": "close",
}

#: A package download link lasts this long, seconds.
LINK_SECONDS = 24 * 3600.0
#: Largest document filed with a request, bytes.
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
#: Documents a request may carry (an order as PDF or a scan).
DOCUMENT_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "text/plain"})
#: A requester may have at most this many consent requests awaiting one household's answer
#: (each notifies the owner; more would be a way to pester them).
MAX_OPEN_CONSENT = 3
#: At most this many documents per request.
MAX_DOCUMENTS = 10
#: Public mail services: an address there proves nothing about an agency.
FREE_MAIL_DOMAINS = frozenset(
    {
        "aol.com",
        "gmail.com",
        "googlemail.com",
        "hotmail.com",
        "icloud.com",
        "live.com",
        "mail.com",
        "me.com",
        "msn.com",
        "outlook.com",
        "proton.me",
        "protonmail.com",
        "yahoo.com",
        "zoho.com",
    }
)

#: States in which a request that releases something is fulfilled by making its package.
_AWAITS_PACKAGE = frozenset(
    {d.State.APPROVED, d.State.NARROWED, d.State.NOTICE_SCHEDULED, d.State.OWNER_NOTIFIED}
)

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_PHONE = re.compile(r"^\+?[0-9 ()\-.]{7,32}$")


def audit_kind(request_type: d.RequestType, order_kind: d.OrderKind | None) -> str:
    """The request kind audit tags and the transparency report use: the request type, or
    for a legal order its kind (subpoena, court order, search warrant)."""
    if request_type is d.RequestType.LEGAL_ORDER and order_kind is not None:
        return str(order_kind)
    return str(request_type)


def audit_tag(req: d.Request, action: str) -> AuditTag:
    """The audit tag ``request:<kind>:<verb>`` of a transition ``action`` of ``req`` (kind:
    :func:`audit_kind`; verb: :data:`AUDIT_VERB`).

    Raises:
        KeyError, ValueError: an action or kind without a tag (a programming error).
    """
    return AuditTag(f"request:{audit_kind(req.type, req.order_kind)}:{AUDIT_VERB[action]}")


def normalise_address(address: str) -> str:
    """A street address as compared: case-folded, punctuation dropped, spaces collapsed.

    Raises:
        InvalidRequestError: empty or longer than 300 characters.
    """
    text = re.sub(r"[^\w\s]", " ", address.casefold())
    text = " ".join(text.split())
    if not text or len(address) > 300:
        raise InvalidRequestError("an address has 1 to 300 characters")
    return text


@dataclass(frozen=True, slots=True)
class Document:
    """A document filed with a request: name, MIME type, bytes."""

    filename: str
    content_type: str
    data: bytes


# --- (de)serialising requests --------------------------------------------------------------


def _party_json(p: d.Party) -> dict[str, Any]:
    return {"role": str(p.role), "id": p.id, "household": p.household}


def _party(data: dict[str, Any]) -> d.Party:
    return d.Party(d.PartyRole(data["role"]), str(data["id"]), data.get("household"))


def request_to_json(r: d.Request) -> dict[str, Any]:
    """A request as JSON values (the ``data`` column)."""
    cb = r.callback
    return {
        "id": r.id,
        "type": str(r.type),
        "requester": _party_json(r.requester),
        "agency_id": r.agency_id,
        "agency_phone": r.agency_phone,
        "filed_at": r.filed_at,
        "original_scope": r.original_scope.to_json(),
        "scope": r.scope.to_json(),
        "state": str(r.state),
        "order_kind": None if r.order_kind is None else str(r.order_kind),
        "case_number": r.case_number,
        "court": r.court,
        "nondisclosure_until": r.nondisclosure_until,
        "facts": [str(f) for f in r.facts],
        "description": r.description,
        "attested": r.attested,
        "release": str(r.release),
        "owner_granted": r.owner_granted,
        "warrant_accepted": r.warrant_accepted,
        "callback": None
        if cb is None
        else {
            "staff": _party_json(cb.staff),
            "number": cb.number,
            "confirmed": cb.confirmed,
            "at": cb.at,
            "note": cb.note,
        },
        "approvals": [_party_json(a) for a in r.approvals],
        "emergency_allowed_at_approval": r.emergency_allowed_at_approval,
        "notice": str(r.notice),
        "notice_due": r.notice_due,
        "notice_sent_at": r.notice_sent_at,
        "hold_expires_at": r.hold_expires_at,
        "hold_renewed": r.hold_renewed,
        "reject_code": None if r.reject_code is None else str(r.reject_code),
        "owner_holds_keys": r.owner_holds_keys,
        "sealed_withheld": [w.to_json() for w in r.sealed_withheld],
    }


def request_from_json(data: dict[str, Any]) -> d.Request:
    """Inverse of :func:`request_to_json`."""
    cb = data.get("callback")
    return d.Request(
        id=data["id"],
        type=d.RequestType(data["type"]),
        requester=_party(data["requester"]),
        agency_id=int(data["agency_id"]),
        agency_phone=data["agency_phone"],
        filed_at=float(data["filed_at"]),
        original_scope=d.Scope.from_json(data["original_scope"]),
        scope=d.Scope.from_json(data["scope"]),
        state=d.State(data["state"]),
        order_kind=None if data["order_kind"] is None else d.OrderKind(data["order_kind"]),
        case_number=data["case_number"],
        court=data["court"],
        nondisclosure_until=data["nondisclosure_until"],
        facts=tuple(d.AccountFact(f) for f in data["facts"]),
        description=data["description"],
        attested=bool(data["attested"]),
        release=d.Release(data["release"]),
        owner_granted=bool(data["owner_granted"]),
        warrant_accepted=bool(data["warrant_accepted"]),
        callback=None
        if cb is None
        else d.Callback(
            _party(cb["staff"]), cb["number"], bool(cb["confirmed"]), cb["at"], cb["note"]
        ),
        approvals=tuple(_party(a) for a in data["approvals"]),
        emergency_allowed_at_approval=bool(data["emergency_allowed_at_approval"]),
        notice=d.NoticeStatus(data["notice"]),
        notice_due=data["notice_due"],
        notice_sent_at=data["notice_sent_at"],
        hold_expires_at=data["hold_expires_at"],
        hold_renewed=bool(data["hold_renewed"]),
        reject_code=None if data["reject_code"] is None else d.RejectCode(data["reject_code"]),
        owner_holds_keys=bool(data.get("owner_holds_keys", False)),
        sealed_withheld=tuple(
            d.SealedRange.from_json(w) for w in data.get("sealed_withheld") or ()
        ),
    )


def policy_to_json(p: d.Policy) -> dict[str, Any]:
    """A policy as JSON values."""
    return {
        "emergency_allowed": p.emergency_allowed,
        "notice_delay": p.notice_delay,
        "emergency_max_window": p.emergency_max_window,
        "emergency_overlong": str(p.emergency_overlong),
    }


def policy_from_json(data: dict[str, Any]) -> d.Policy:
    """Inverse of :func:`policy_to_json`. Raises InvalidRequestError on bad values."""
    try:
        return d.Policy(
            emergency_allowed=bool(data["emergency_allowed"]),
            notice_delay=float(data["notice_delay"]),
            emergency_max_window=float(data["emergency_max_window"]),
            emergency_overlong=d.Overlong(data["emergency_overlong"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"malformed policy: {exc}") from exc


# --- the service ---------------------------------------------------------------------------


class DisclosureService:
    """Disclosure requests over the index's database.

    Args:
        index: the migrated index (requests, holds, segments).
        settings: returns the settings now (cameras and their households change at run time).
        audit: the audit log every step is written to.
        accounts: accounts (requesters are accounts of role requester).
        notices: owner notices, staff alerts, requester mail.
        public_url: where users reach the app (setup links in mail).
        clock: now, UTC epoch seconds.
    """

    def __init__(
        self,
        index: Index,
        settings: Callable[[], Settings],
        audit: AuditLog,
        accounts: AccountService,
        notices: NoticeService,
        *,
        public_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = index
        self._settings = settings
        self._audit = audit
        self._accounts = accounts
        self._notices = notices
        self._store = DisclosureStore(index)
        self._public_url = public_url.rstrip("/")
        self._clock = clock
        self._lock = threading.RLock()
        self._pseudonym_key: bytes | None = None

    @property
    def store(self) -> DisclosureStore:
        """The disclosure tables."""
        return self._store

    @property
    def notices(self) -> NoticeService:
        """Owner notices and staff alerts."""
        return self._notices

    @property
    def packages_dir(self) -> Path:
        """Where fulfilled requests' packages are written."""
        return self._settings().data_dir / "packages"

    @property
    def documents_dir(self) -> Path:
        """Where filed documents are kept, by SHA-256."""
        return self._settings().data_dir / "request-documents"

    # --- agencies (staff) ------------------------------------------------------------------

    def add_agency(
        self,
        principal: Principal,
        name: str,
        jurisdiction: str,
        mail_domains: Sequence[str],
        callback_phone: str,
    ) -> AgencyRecord:
        """Put an agency on the allow-list (legal reviewer or custodian).

        Raises:
            PermissionDeniedError: not a legal reviewer or custodian.
            InvalidRequestError: an empty name or jurisdiction, no or malformed mail
                domains, a malformed phone number.
        """
        staff = self._staff(principal)
        fields = self._agency_fields(name, jurisdiction, mail_domains, callback_phone)
        self._audit.append(
            AuditTag.REQUEST_AGENCY_CHANGE,
            staff,
            f"add agency {fields['name']}"[:500],
            household=DEPLOYMENT_HOUSEHOLD,
        )
        return self._store.add_agency(
            fields["name"],
            fields["jurisdiction"],
            fields["mail_domains"],
            fields["callback_phone"],
            now=self._clock(),
            by=principal.user_id,
        )

    def update_agency(
        self,
        principal: Principal,
        agency_id: int,
        *,
        name: str,
        jurisdiction: str,
        mail_domains: Sequence[str],
        callback_phone: str,
        disabled: bool,
    ) -> AgencyRecord:
        """Change an agency (legal reviewer or custodian). Disabling it stops its
        requesters from filing.

        Raises:
            as :meth:`add_agency`; NotFoundError: no such agency.
        """
        staff = self._staff(principal)
        self._store.agency(agency_id)
        fields = self._agency_fields(name, jurisdiction, mail_domains, callback_phone)
        self._audit.append(
            AuditTag.REQUEST_AGENCY_CHANGE,
            staff,
            f"change agency {agency_id} ({fields['name']}){' disabled' if disabled else ''}"[:500],
            household=DEPLOYMENT_HOUSEHOLD,
        )
        return self._store.update_agency(agency_id, disabled=disabled, **fields)

    @staticmethod
    def _agency_fields(
        name: str, jurisdiction: str, mail_domains: Sequence[str], callback_phone: str
    ) -> dict[str, Any]:
        name, jurisdiction = name.strip(), jurisdiction.strip()
        if not name or len(name) > 200 or not jurisdiction or len(jurisdiction) > 200:
            raise InvalidRequestError("an agency has a name and a jurisdiction (1-200 chars)")
        domains = sorted({m.strip().lower().lstrip("@") for m in mail_domains if m.strip()})
        if not domains:
            raise InvalidRequestError("an agency has at least one official mail domain")
        for dom in domains:
            if not _DOMAIN.match(dom):
                raise InvalidRequestError(f"{dom!r} is not a mail domain (like police.example.gov)")
            if dom in FREE_MAIL_DOMAINS or dom.split(".")[0] in ("gmx", "yandex"):
                raise InvalidRequestError(
                    f"{dom} is a public mail service: anyone can have an address there, so it "
                    "proves nothing about an officer; list the agency's own domain"
                )
        phone = callback_phone.strip()
        if not _PHONE.match(phone) or sum(c.isdigit() for c in phone) < 7:
            raise InvalidRequestError(
                "the call-back number has at least 7 digits (+, spaces, dashes allowed)"
            )
        return {
            "name": name,
            "jurisdiction": jurisdiction,
            "mail_domains": domains,
            "callback_phone": phone,
        }

    def agencies(self) -> list[AgencyRecord]:
        """Every agency on the allow-list."""
        return self._store.agencies()

    # --- requesters ------------------------------------------------------------------------

    def signup(self, agency_id: int, email: str, username: str, display_name: str = "") -> int:
        """Sign a requester up: the account is made without a password and its one-time
        setup link is mailed to ``email``, which must be at one of the agency's official
        domains. The link is never returned: only the mailbox owner gets it. Returns the
        account id.

        Raises:
            NotFoundError: no such agency (or it is disabled).
            PermissionDeniedError: the address is not at one of the agency's domains.
            InvalidRequestError: a malformed address or username, either already taken.
            NoticeDeliveryError: mail is not configured or the mail could not be sent (the
                account is then disabled: sign up again with another username, or ask staff).
        """
        agency = self._store.agency(agency_id)
        if agency.disabled:
            raise NotFoundError(f"no agency {agency_id}")
        address = check_address(email.strip(), what="the mail address")
        domain = address.rsplit("@", 1)[1].lower()
        if domain not in agency.mail_domains:
            raise PermissionDeniedError(
                f"the address must be at one of {agency.name}'s official mail domains: "
                f"{', '.join(agency.mail_domains)}"
            )
        mailer = self._notices.mailer
        existing = self._store.requester_by_email(address)
        if existing is not None and mailer.enabled:
            # Answer as for a new sign-up (the caller learns nothing of who is registered);
            # the mailbox's owner is told instead.
            mailer.send(
                address,
                "HomeWarden: you already have a requester account",
                "Someone (we hope you) tried to sign up again with this address. You already "
                "have a requester account; sign in, or ask staff for a new setup link if you "
                "lost your password or phone.\n",
            )
            return existing.user_id
        if not mailer.enabled:
            raise NoticeDeliveryError(
                "requesters sign up by mail, and mail is not configured ([mail] smtp_host)"
            )
        system = Actor(ActorKind.SYSTEM, "requester-signup")
        with self._lock:
            created = self._accounts.add_user(
                username, Role.REQUESTER, None, actor=system, display_name=display_name
            )
            user = created.user
            self._store.add_requester(user.id, agency.id, address, self._clock())
        assert created.setup_secret is not None
        self._audit.append(
            AuditTag.REQUEST_REQUESTER_SIGNUP,
            Actor(ActorKind.REQUESTER, str(user.id)),
            f"{user.username} of agency {agency.id} ({agency.name}); link mailed to {address}"[
                :500
            ],
            household=DEPLOYMENT_HOUSEHOLD,
        )
        link = f"{self._public_url}/setup?token={created.setup_secret}"
        try:
            mailer.send(
                address,
                "HomeWarden: finish your requester account",
                f"Someone (we hope you) signed up as a requester of {agency.name} with this "
                f"address.\n\nSet your password and enrol a TOTP phone app here (the link "
                f"works once, for 24 hours):\n\n{link}\n\nIf this was not you, ignore this "
                "mail; the account stays unusable.\n",
            )
        except HomeWardenError:
            self._accounts.set_disabled(user.id, True, actor=system)
            raise
        return user.id

    def requester_problem(self, user_id: int) -> str | None:
        """Why account ``user_id`` may not file requests now, or None when it is a
        verified requester (an active account of role requester with a password and TOTP,
        of an agency still on the allow-list, at an address of one of its domains)."""
        try:
            user = self._accounts.user(user_id)
        except NotFoundError:
            return "no such account"
        if user.role != Role.REQUESTER:
            return "not a requester account"
        if user.disabled:
            return "the account is disabled"
        if not user.password_hash or user.totp_secret is None:
            return "the account has not been set up with a password and TOTP"
        req = self._store.requester(user_id)
        if req is None:
            return "the account belongs to no agency"
        try:
            agency = self._store.agency(req.agency_id)
        except NotFoundError:
            return "the agency is gone"
        if agency.disabled:
            return "the agency is no longer on the allow-list"
        if req.email.rsplit("@", 1)[1].lower() not in agency.mail_domains:
            return "the mail address is no longer at one of the agency's domains"
        return None

    # --- household policy ------------------------------------------------------------------

    def policy(self, household: str) -> tuple[d.Policy, str | None, str | None]:
        """``household``'s policy (defaults when none is stored), notice address, address."""
        rec = self._store.policy(household)
        if rec is None:
            return d.Policy(), None, None
        return policy_from_json(rec.policy), rec.notice_email, rec.address

    def set_policy(
        self,
        principal: Principal,
        policy: d.Policy,
        *,
        notice_email: str | None,
        address: str | None,
    ) -> None:
        """The owner sets their household's policy, notice address and street address.

        Raises:
            PermissionDeniedError: not a household owner.
            InvalidRequestError: a malformed notice address or street address.
        """
        if principal.role is not Role.OWNER or principal.household is None:
            raise PermissionDeniedError("only a household's owner sets its disclosure policy")
        email = (notice_email or "").strip() or None
        if email is not None:
            check_address(email, what="the notice address")
        where = normalise_address(address) if address and address.strip() else None
        self._audit.append(
            AuditTag.REQUEST_POLICY_CHANGE,
            Actor.of_principal(principal),
            json.dumps(policy_to_json(policy), sort_keys=True)[:500],
            household=principal.household,
        )
        self._store.put_policy(
            principal.household,
            policy_to_json(policy),
            email,
            where,
            now=self._clock(),
            by=principal.user_id,
        )

    # --- filing ----------------------------------------------------------------------------

    def file(
        self,
        principal: Principal,
        *,
        type: d.RequestType,
        start: float,
        end: float,
        description: str,
        camera: str | None = None,
        address: str | None = None,
        cameras: Sequence[str] = (),
        order_kind: d.OrderKind | None = None,
        case_number: str = "",
        court: str = "",
        nondisclosure_order: bool = False,
        nondisclosure_until: float | None = None,
        facts: Sequence[d.AccountFact] = (),
        attested: bool = False,
        documents: Sequence[Document] = (),
    ) -> StoredRequest:
        """A requester files a request. The household is located by a camera name or a
        street address the requester supplies (never by browsing); ``cameras`` narrows to
        those of its cameras (an emergency must name them), else all of them.

        Raises:
            PermissionDeniedError: not a verified requester (the message says why).
            NotFoundError: no household found for that camera or address, or a named camera
                not of it (one message, so households cannot be probed).
            InvalidRequestError: a malformed filing or document (see
                :func:`homewarden.domain.disclosure.file_request`).
        """
        if principal.role is not Role.REQUESTER or principal.user_id is None:
            raise PermissionDeniedError("only a requester files disclosure requests")
        problem = self.requester_problem(principal.user_id)
        rec = self._store.requester(principal.user_id)
        if problem is not None or rec is None:
            raise PermissionDeniedError(f"an unverified requester can file nothing: {problem}")
        agency = self._store.agency(rec.agency_id)
        household = self._locate(camera, address)
        scope = self._scope(household, cameras, start, end, type)
        if type is d.RequestType.CONSENT:
            waiting = self._store.requests(
                household=household,
                requester_id=principal.user_id,
                states=[str(d.State.AWAITING_OWNER)],
            )
            if len(waiting) >= MAX_OPEN_CONSENT:
                raise InvalidRequestError(
                    f"you have {len(waiting)} consent requests to this household awaiting an "
                    "answer; wait for them (each one notifies the owner)"
                )
        docs = [self._check_document(doc) for doc in documents]
        if len(docs) > MAX_DOCUMENTS:
            raise InvalidRequestError(f"at most {MAX_DOCUMENTS} documents per request")
        filing = d.Filing(
            type=type,
            scope=scope,
            description=description,
            order_kind=order_kind,
            case_number=case_number,
            court=court,
            nondisclosure_order=nondisclosure_order,
            nondisclosure_until=nondisclosure_until,
            facts=tuple(facts),
            attested=attested,
            documents=len(docs),
        )
        now = self._clock()
        request_id = f"req-{time.strftime('%Y%m%d', time.gmtime(now))}-{secrets.token_hex(4)}"
        policy, _, _ = self.policy(household)
        decision = d.file_request(
            request_id,
            filing,
            d.Party(d.PartyRole.REQUESTER, str(principal.user_id)),
            requester_verified=True,
            agency_id=agency.id,
            agency_phone=agency.callback_phone,
            policy=policy,
            now=now,
        )
        data = request_to_json(decision.request)
        if not decision.request.state.terminal:
            data["open_holds"] = self._hold_open(request_id, decision.request.scope)
        with self._lock:
            self._log_steps(decision)
            stored = self._store.add_request(
                StoredRequest(
                    id=request_id,
                    household=household,
                    type=str(type),
                    state=str(decision.request.state),
                    requester_id=principal.user_id,
                    agency_id=agency.id,
                    filed_at=now,
                    updated_at=now,
                    next_due=self._next_due(decision.request, None, now),
                    package=None,
                    data=data,
                    version=1,
                ),
                [_new(t) for t in decision.transitions],
            )
            for doc, (digest, size) in zip(documents, docs, strict=True):
                self._keep_document(doc, digest)
                self._store.add_document(
                    request_id, _safe_filename(doc.filename), doc.content_type, digest, size, now
                )
        self._after(stored, decision)
        return stored

    def _locate(self, camera: str | None, address: str | None) -> str:
        nowhere = NotFoundError("no household found for that camera or address")
        if bool(camera) == bool(address):
            raise InvalidRequestError("locate the household by a camera id or an address (one)")
        if camera:
            settings = self._settings()
            if camera not in settings.cameras:
                raise nowhere
            return settings.camera_household(camera)
        assert address is not None
        found = self._store.household_by_address(normalise_address(address))
        if found is None:
            raise nowhere
        return found

    def _scope(
        self,
        household: str,
        cameras: Sequence[str],
        start: float,
        end: float,
        type: d.RequestType,
    ) -> d.Scope:
        settings = self._settings()
        own = sorted(c for c in settings.cameras if settings.camera_household(c) == household)
        if type is d.RequestType.EMERGENCY and not cameras:
            raise InvalidRequestError("an emergency request names its cameras")
        chosen = list(cameras) or own
        if any(c not in own for c in chosen) or not chosen:
            raise NotFoundError("no household found for that camera or address")
        return d.Scope(household, tuple(chosen), start, end)

    @staticmethod
    def _check_document(doc: Document) -> tuple[str, int]:
        if doc.content_type not in DOCUMENT_TYPES:
            raise InvalidRequestError(
                f"a document is one of {', '.join(sorted(DOCUMENT_TYPES))}, not "
                f"{doc.content_type!r}"
            )
        if not doc.data:
            raise InvalidRequestError(f"document {doc.filename!r} is empty")
        if len(doc.data) > MAX_DOCUMENT_BYTES:
            raise InvalidRequestError(
                f"a document has at most {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB"
            )
        return hashlib.sha256(doc.data).hexdigest(), len(doc.data)

    def _keep_document(self, doc: Document, digest: str) -> None:
        folder = self.documents_dir
        target = folder / digest
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                part = folder / f"{digest}.part"
                part.write_bytes(doc.data)
                part.replace(target)
        except OSError as exc:
            raise StorageError(f"cannot keep the document in {folder}: {exc.strerror}") from exc

    def document(self, principal: Principal, request_id: str, doc_id: int) -> tuple[str, str, Path]:
        """A filed document (name, type, path) for someone who may see the request.

        Raises:
            NotFoundError: no such request or document, or not visible to ``principal``.
        """
        stored = self.get(principal, request_id)
        for doc in self._store.documents(stored.id):
            if doc.id == doc_id:
                return doc.filename, doc.content_type, self.documents_dir / doc.sha256
        raise NotFoundError(f"no document {doc_id} in request {request_id}")

    # --- reading ---------------------------------------------------------------------------

    def get(self, principal: Principal, request_id: str) -> StoredRequest:
        """A request ``principal`` may see: a requester their own; an owner their
        household's, once told of it (a consent request at once, others once the owner notice
        is sent: a non-disclosure order keeps it from them until then); legal reviewers and
        custodians all.

        Raises:
            NotFoundError: no such request, or not visible to ``principal``.
        """
        try:
            stored = self._store.request(request_id)
        except NotFoundError:
            raise NotFoundError(f"no request {request_id}") from None
        if not self._visible(principal, stored):
            raise NotFoundError(f"no request {request_id}")
        return stored

    def _visible(self, principal: Principal, stored: StoredRequest) -> bool:
        role = principal.role
        if principal.kind is not PrincipalKind.USER or role is None:
            return False
        if role is Role.REQUESTER:
            return stored.requester_id == principal.user_id
        if role is Role.OWNER:
            return stored.household == principal.household and (
                stored.type == d.RequestType.CONSENT or stored.data["notice"] == "sent"
            )
        return role in (Role.LEGAL_REVIEWER, Role.CUSTODIAN)

    def unnoticed_requests(self, household: str) -> frozenset[str]:
        """Ids of ``household``'s requests its owner has not been told of yet (a legal
        order under a non-disclosure order, 18 U.S.C. 2705(b), or an emergency within the
        policy's notice delay): their entries stay out of the owner's access log until the
        notice is sent."""
        return frozenset(
            r.id
            for r in self._store.requests(household=household, limit=100_000)
            if r.type != d.RequestType.CONSENT and r.data.get("notice") != "sent"
        )

    def requests(
        self, principal: Principal, states: Sequence[str] | None = None
    ) -> list[StoredRequest]:
        """The requests ``principal`` may see (see :meth:`get`), newest first."""
        role = principal.role
        if role is Role.REQUESTER:
            rows = self._store.requests(requester_id=principal.user_id, states=states)
        elif role is Role.OWNER and principal.household is not None:
            rows = self._store.requests(household=principal.household, states=states)
        elif role in (Role.LEGAL_REVIEWER, Role.CUSTODIAN):
            rows = self._store.requests(states=states)
        else:
            return []
        return [r for r in rows if self._visible(principal, r)]

    def transitions(self, principal: Principal, request_id: str) -> list[dict[str, Any]]:
        """A visible request's steps as JSON values."""
        stored = self.get(principal, request_id)
        return [
            {
                "action": t.action,
                "from": t.from_state,
                "to": t.to_state,
                "actor": {"role": t.actor_role, "id": t.actor_id},
                "at": t.at,
                "reason": t.reason,
            }
            for t in self._store.transitions(stored.id)
        ]

    def view(self, principal: Principal, stored: StoredRequest) -> dict[str, Any]:
        """A visible request as JSON values for ``principal`` (the call-back number and
        approvers are shown to staff only)."""
        r = request_from_json(stored.data)
        out: dict[str, Any] = {
            "id": r.id,
            "type": str(r.type),
            "state": str(r.state),
            "household": r.scope.household,
            "order_kind": None if r.order_kind is None else str(r.order_kind),
            "case_number": r.case_number,
            "court": r.court,
            "description": r.description,
            "attested": r.attested,
            "scope": r.scope.to_json(),
            "original_scope": r.original_scope.to_json(),
            "facts": [str(f) for f in r.facts],
            "filed_at": r.filed_at,
            "release": str(r.release),
            "notice": str(r.notice),
            "notice_due": r.notice_due,
            "reject_code": None if r.reject_code is None else str(r.reject_code),
            "nondisclosure_until": r.nondisclosure_until,
            "hold_expires_at": r.hold_expires_at,
            "hold_renewed": r.hold_renewed,
            "package_ready": stored.package not in (None, "none"),
            "awaiting_keys": stored.data.get("awaiting_keys"),
            "owner_holds_keys": r.owner_holds_keys,
            "sealed_withheld": [w.to_json() for w in r.sealed_withheld],
            "documents": [
                {
                    "id": doc.id,
                    "filename": doc.filename,
                    "content_type": doc.content_type,
                    "size": doc.size,
                    "sha256": doc.sha256,
                }
                for doc in self._store.documents(stored.id)
            ],
            "transitions": self.transitions(principal, stored.id),
        }
        if principal.role in (Role.LEGAL_REVIEWER, Role.CUSTODIAN):
            out["agency_id"] = r.agency_id
            out["agency_phone"] = r.agency_phone
            out["callback"] = (
                None
                if r.callback is None
                else {
                    "by": r.callback.staff.id,
                    "number": r.callback.number,
                    "confirmed": r.callback.confirmed,
                    "at": r.callback.at,
                    "note": r.callback.note,
                }
            )
            out["approvals"] = [_party_json(a) for a in r.approvals]
            out["requester_id"] = stored.requester_id
        return out

    # --- acting ----------------------------------------------------------------------------

    def act(self, principal: Principal, request_id: str, action: d.Action) -> StoredRequest:
        """``principal`` takes ``action`` on request ``request_id``.

        Raises:
            NotFoundError: no such request, or not visible to ``principal``.
            PermissionDeniedError, InvalidTransitionError, InvalidRequestError: the step is
                refused (see :func:`homewarden.domain.disclosure.decide`).
            AuditUnavailableError: the audit log cannot take the step (nothing changes).
        """
        party = self._party(principal)
        with self._lock:
            stored = self.get(principal, request_id)
            return self._step(stored, action, party)

    def _step(self, stored: StoredRequest, action: d.Action, party: d.Party) -> StoredRequest:
        req = request_from_json(stored.data)
        policy, _, _ = self.policy(stored.household)
        now = self._clock()
        decision = d.decide(req, action, party, policy, now)
        if (
            not decision.request.owner_holds_keys
            and any(isinstance(e, d.SendOwnerNotice) for e in decision.effects)
            and self._awaits_package(decision.request, stored.package)
        ):
            plan = self._fulfilment_plan(decision.request)
            if plan == "owner_holds_keys":
                # Issue 6: the owner is told nothing can be released, not "will be released".
                decision = d.owner_holds_keys(decision)
            elif plan == "clear_part":
                # ... or which part will be released and which cannot be.
                decision = d.owner_holds_keys_in_part(
                    decision, self._sealed_ranges(decision.request.scope)
                )
        self._log_steps(decision)
        data = request_to_json(decision.request)
        data["holds"] = self._holds(stored, decision, now)
        open_holds: list[int] = list(stored.data.get("open_holds", []))
        nr = decision.request
        # The open-request hold ends when the request does, is fulfilled, or when a
        # preservation hold of its own takes over.
        if open_holds and (
            nr.state.terminal or nr.state is d.State.FULFILLED or nr.hold_expires_at is not None
        ):
            for hold in open_holds:
                self._index.set_hold_expiry(hold, now)
            open_holds = []
        data["open_holds"] = open_holds
        package = action.package if isinstance(action, d.Fulfil) else None
        awaiting = stored.data.get("awaiting_keys")
        if awaiting and package is None and self._awaits_package(nr, stored.package):
            data["awaiting_keys"] = awaiting
        updated = self._store.update_request(
            stored.id,
            stored.version,
            state=str(decision.request.state),
            next_due=self._next_due(
                decision.request,
                package or stored.package,
                now,
                awaiting=bool(data.get("awaiting_keys")),
            ),
            data=data,
            updated_at=now,
            transitions=[_new(t) for t in decision.transitions],
            package=package,
        )
        self._after(updated, decision)
        return updated

    def _hold_open(self, request_id: str, scope: d.Scope) -> list[int]:
        """Keep an open request's footage from retention until it is decided (DESIGN.md
        flow 4: footage under an open request is never deleted); returns the hold ids."""
        return [
            self._index.add_hold(cam, scope.start, scope.end, f"open request {request_id}", None)
            for cam in scope.cameras
        ]

    def _holds(self, stored: StoredRequest, decision: d.Decision, now: float) -> list[int]:
        ids: list[int] = list(stored.data.get("holds", []))
        for effect in decision.effects:
            match effect:
                case d.PlaceHold(scope=scope, expires_at=expires):
                    for cam in scope.cameras:
                        ids.append(
                            self._index.add_hold(
                                cam,
                                scope.start,
                                scope.end,
                                f"preservation request {stored.id}",
                                expires,
                            )
                        )
                case d.ExtendHold(expires_at=expires):
                    for hold in ids:
                        self._index.set_hold_expiry(hold, expires)
                case d.EndHold():
                    for hold in ids:
                        self._index.set_hold_expiry(hold, now)
                case _:
                    pass
        return ids

    def _after(self, stored: StoredRequest, decision: d.Decision) -> None:
        r = decision.request
        if any(t.to_state is d.State.AWAITING_OWNER for t in decision.transitions):
            s = r.scope
            self._notices.notify_owner(
                s.household,
                f"HomeWarden: a request for your footage ({r.id}) awaits your answer",
                f"A verified requester asks for footage of {', '.join(s.cameras)} from "
                f"{utc_seconds_text(s.start)} to {utc_seconds_text(s.end)}.\n\n"
                "Only you can grant it, in whole or in "
                f"part, or decline it. Unanswered, it expires declined after 7 days.\n\n"
                f"Answer in the app: {self._public_url}/requests/{r.id}\n",
                request_id=r.id,
            )
        for effect in decision.effects:
            if isinstance(effect, d.SendOwnerNotice):
                self._notices.notify_owner(
                    r.scope.household,
                    f"HomeWarden: disclosure request {r.id} ({r.type.replace('_', ' ')})",
                    effect.text + f"\n\nSee it in the app: {self._public_url}/requests/{r.id}\n",
                    request_id=r.id,
                )
        changed = decision.transitions[-1] if decision.transitions else None
        if changed is not None and changed.actor.role is not d.PartyRole.REQUESTER:
            rec = self._store.requester(stored.requester_id)
            self._notices.notify_user(
                stored.requester_id,
                f"HomeWarden: request {r.id} is {r.state.replace('_', ' ')}",
                f"Request {r.id} is now {r.state.replace('_', ' ')}: {changed.reason}\n\n"
                f"{self._public_url}/requests/{r.id}\n",
                request_id=r.id,
                email=None if rec is None else rec.email,
            )

    def _log_steps(self, decision: d.Decision) -> None:
        """One audit entry per transition. Request entries are published in the public log
        export once the owner has been told (the transparency report is recounted from
        them), so they carry no camera, footage times, household name, account id or free
        text: the household and the requester or owner as keyed pseudonyms
        (:meth:`pseudonym`), and the reason as ``"<from> -> <to>: <what>; details
        hmac:<hex>"`` where ``what`` is the step (a rejection's code, what a fulfilment
        released) and the keyed hash binds the full reason kept with the request without
        letting anyone confirm a guess of it."""
        r = decision.request
        household = self.pseudonym("household", r.scope.household)
        for t in decision.transitions:
            frm = "" if t.from_state is None else f"{t.from_state} -> "
            digest = self._mac(f"details:{r.id}:{t.reason}")[:32]
            self._audit.append(
                audit_tag(r, t.action),
                self.public_actor(t.actor),
                f"{frm}{t.to_state}: {_public_what(r, t)}; details hmac:{digest}",
                request=r.id,
                household=household,
            )

    def public_actor(self, party: d.Party) -> Actor:
        """The audit actor of a request step: staff and the system by id; a requester or
        an owner as a keyed pseudonym (their account ids would link requests across
        households in the public export)."""
        actor = _actor(party)
        if party.role in (d.PartyRole.REQUESTER, d.PartyRole.OWNER):
            return Actor(actor.kind, self.pseudonym(str(actor.kind), actor.id))
        return actor

    def household_pseudonym(self, household: str) -> str:
        """The pseudonym request entries carry for ``household`` (see :meth:`pseudonym`)."""
        return self.pseudonym("household", household)

    def pseudonym(self, kind: str, value: str) -> str:
        """A stable pseudonym of ``value``: ``hh-`` (households) or ``p-`` (people) and 16
        hex digits of HMAC-SHA256 (RFC 2104) under the deployment's pseudonym key (made at
        first use, 0600 in the keys dir). The same value always maps to the same pseudonym,
        which says nothing of who it is to anyone without the key.

        Raises:
            StorageError: the key cannot be made or read.
        """
        prefix = "hh-" if kind == "household" else "p-"
        return prefix + self._mac(f"{kind}:{value}")[:16]

    def _mac(self, text: str) -> str:
        if self._pseudonym_key is None:
            path = self._audit.keys_dir / "household_pseudonym.key"
            create_secret(path, secrets.token_bytes(32))
            key = read_secret(path)
            if key is None or len(key) < 32:
                raise StorageError(f"{path} does not hold a 32-byte key")
            self._pseudonym_key = key
        return hmac.new(self._pseudonym_key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def _next_due(
        self, req: d.Request, package: str | None, now: float, *, awaiting: bool = False
    ) -> float | None:
        """When the scheduler next acts on ``req``: its domain steps' due time, or now for
        a package to make, unless the request is ``awaiting`` keys (:meth:`_await_keys`)."""
        due = d.next_due(req)
        if awaiting:
            return due
        if (
            req.state
            in (
                d.State.APPROVED,
                d.State.NARROWED,
                d.State.NOTICE_SCHEDULED,
                d.State.OWNER_NOTIFIED,
            )
            and req.release is not d.Release.NONE
            and package is None
        ):
            due = now if due is None else min(due, now)
        return due

    def _party(self, principal: Principal) -> d.Party:
        role = principal.role
        if principal.kind is not PrincipalKind.USER or principal.user_id is None or role is None:
            raise PermissionDeniedError("disclosure steps are taken by signed-in people")
        uid = str(principal.user_id)
        match role:
            case Role.REQUESTER:
                return d.Party(d.PartyRole.REQUESTER, uid)
            case Role.OWNER:
                assert principal.household is not None
                return d.Party(d.PartyRole.OWNER, uid, principal.household)
            case Role.LEGAL_REVIEWER:
                return d.Party(d.PartyRole.LEGAL_REVIEWER, uid)
            case Role.CUSTODIAN:
                return d.Party(d.PartyRole.CUSTODIAN, uid)
        raise PermissionDeniedError(f"a {role} takes no step in a disclosure request")

    def _staff(self, principal: Principal) -> Actor:
        if principal.role not in (Role.LEGAL_REVIEWER, Role.CUSTODIAN):
            raise PermissionDeniedError("only legal reviewers and custodians keep agencies")
        return Actor.of_principal(principal)

    # --- the scheduler ---------------------------------------------------------------------

    def run_due(self) -> int:
        """Perform every system step due now (expiries, delayed owner notices, holds
        ending, fulfilments); returns how many requests were handled. A request that fails
        is logged and retried at the next call; the others go on. A fulfilment over sealed
        footage the deployment cannot open is never retried (issue 6): a search warrant, or
        an emergency where the owner has not turned escrow on, is answered "the provider
        cannot produce this content; the owner holds the keys"; a granted consent (the
        owner's keys) or an emergency under escrow (two custodians' shares) is left waiting
        for those keys (:meth:`_await_keys`, logged once) until someone calls
        :meth:`fulfil_with_keys` - or, for an emergency, until the owner turns escrow off:
        each pass then answers it as one without escrow (:meth:`answer_escrow_off`)."""
        now = self._clock()
        handled = 0
        for request_id in self._store.due(now):
            try:
                with self._lock:
                    self._run_one(request_id)
                handled += 1
            except HomeWardenError as exc:
                log.warning("request %s: due step failed, will retry: %s", request_id, exc)
        try:
            handled += self.answer_escrow_off()
        except HomeWardenError as exc:
            log.warning("emergencies waiting for escrow shares not checked, will retry: %s", exc)
        return handled

    def answer_escrow_off(self, household: str | None = None) -> int:
        """Answer the emergencies waiting for custodians' escrow shares
        (``data["awaiting_keys"]`` ``custodians``, :meth:`_await_keys`) whose household's
        owner has since turned emergency access off (the escrow seals are destroyed, so no
        shares can open the footage any more): each is fulfilled with nothing, "the provider
        cannot produce this content; the owner holds the keys", and the owner told so, as an
        emergency over sealed footage without escrow is (issue 6; DESIGN.md flow 5). Run by
        every :meth:`run_due` pass; call it with the ``household`` when its owner turns
        escrow off to answer at once. Returns how many were answered; one that fails is
        logged and tried again at the next pass.

        Raises:
            DatabaseError: the waiting requests cannot be listed.
        """
        waiting = self._store.requests(
            household=household,
            types=[str(d.RequestType.EMERGENCY)],
            states=sorted(str(s) for s in _AWAITS_PACKAGE),
            limit=10_000,
        )
        answered = 0
        for candidate in waiting:
            if candidate.data.get("awaiting_keys") != "custodians" or candidate.package:
                continue
            try:
                with self._lock:
                    stored = self._store.request(candidate.id)
                    req = request_from_json(stored.data)
                    if not (
                        stored.data.get("awaiting_keys") == "custodians"
                        and self._awaits_package(req, stored.package)
                        and self._fulfilment_plan(req) == "owner_holds_keys"
                    ):
                        continue  # escrow still on (or answered meanwhile): it waits
                    log.info(
                        "request %s: emergency access was turned off while it waited for the "
                        "custodians' shares: %s",
                        req.id,
                        d.OWNER_HOLDS_KEYS,
                    )
                    self._step(stored, d.Fulfil("none", owner_holds_keys=True), d.SYSTEM)
                answered += 1
            except HomeWardenError as exc:
                log.warning("request %s: answering it failed, will retry: %s", candidate.id, exc)
        return answered

    def _run_one(self, request_id: str) -> None:
        stored = self._store.request(request_id)
        now = self._clock()
        for action in d.due_actions(request_from_json(stored.data), now):
            stored = self._step(stored, action, d.SYSTEM)
        req = request_from_json(stored.data)
        if stored.package is None and self._awaits_package(req, None):
            plan = self._fulfilment_plan(req)
            if plan == "owner_holds_keys":
                log.info("request %s: %s", req.id, d.OWNER_HOLDS_KEYS)
                stored = self._step(stored, d.Fulfil("none", owner_holds_keys=True), d.SYSTEM)
            elif plan == "package":
                package = self._package(stored, req)
                stored = self._step(stored, d.Fulfil(package), d.SYSTEM)
            elif plan == "clear_part":
                withheld = self._sealed_ranges(req.scope)
                package = self._package(stored, req, skip_sealed=True)
                if package == "none":  # nothing in the clear after all
                    log.info("request %s: %s", req.id, d.OWNER_HOLDS_KEYS)
                    action = d.Fulfil("none", owner_holds_keys=True)
                else:
                    log.info("request %s: released in part; %s", req.id, d.WITHHELD_IN_PART)
                    action = d.Fulfil(package, withheld=withheld)
                stored = self._step(stored, action, d.SYSTEM)
            elif stored.data.get("awaiting_keys") != plan:
                self._await_keys(stored, req, plan)
        elif stored.next_due is not None and stored.next_due <= now:
            # Nothing was due after all (a stale time): recompute it.
            self._store.update_request(
                stored.id,
                stored.version,
                state=stored.state,
                next_due=self._next_due(
                    req, stored.package, now, awaiting=bool(stored.data.get("awaiting_keys"))
                ),
                data=stored.data,
                updated_at=now,
                transitions=[],
            )

    def _await_keys(self, stored: StoredRequest, req: d.Request, who: str) -> StoredRequest:
        """Leave a decided request over sealed footage waiting for ``who``'s keys
        (``owner``: the owner's unlocked session, :meth:`fulfil_with_keys` from the request
        page; ``custodians``: two custodians' escrow shares for an emergency): marked
        ``data["awaiting_keys"]`` and taken off the scheduler (its next due time is only
        that of another system step, a scheduled notice or the like), so :meth:`run_due`
        neither retries nor warns every pass. Logged once."""
        log.info(
            "request %s: its scope holds sealed footage; waiting for the %s keys (%s)",
            req.id,
            "owner's" if who == "owner" else "custodians' escrow",
            "the owner fulfils it from the request page"
            if who == "owner"
            else "two custodians enter their shares",
        )
        data = dict(stored.data)
        data["awaiting_keys"] = who
        now = self._clock()
        return self._store.update_request(
            stored.id,
            stored.version,
            state=stored.state,
            next_due=self._next_due(req, stored.package, now, awaiting=True),
            data=data,
            updated_at=now,
            transitions=[],
        )

    # --- fulfilment with keys --------------------------------------------------------------

    def fulfil_with_keys(self, request_id: str, keys: KeySource, actor: Actor) -> StoredRequest:
        """Fulfil request ``request_id`` now with ``keys`` opening its sealed footage.

        The request must be waiting for its package: its release decided (an owner's
        grant, an accepted search warrant, an approved emergency: the states the scheduler
        fulfils, :meth:`run_due`), releasing something, and not yet fulfilled. Its package is
        made as :meth:`run_due` makes it, except that sealed segments (``storage.sealed``) are
        opened with ``keys`` (a :data:`~homewarden.services.sealed_footage.KeySource`: an
        owner's unlocked session, :class:`~homewarden.services.sealed_footage.SessionKeys`,
        or the household key versions two custodians' escrow shares opened for an
        emergency). The keys are used in memory for this call only and kept nowhere; the
        export's audit entry names ``actor`` as whose keys opened the footage. The fulfilment
        step itself is the system's (``request:<kind>:fulfil``), as in :meth:`run_due`.

        Who may call it is the caller's to check (the owner's grant route checks the request
        is of their household; emergency share entry checks the custodians); this method
        checks the request's state and the release rule only.

        Raises:
            NotFoundError: no such request.
            InvalidTransitionError: the request is not waiting for fulfilment (undecided,
                declined, rejected, preservation only, fulfilled already, ...), or it is one
                the provider answers it cannot produce as the owner holds the keys (a search
                warrant over sealed footage, escrowed or not, whether or not part of its
                scope is in the clear; an emergency over sealed footage where the owner has
                not turned escrow on): no keys are used then.
            PermissionDeniedError: nothing may be released yet
                (:func:`homewarden.domain.disclosure.check_releasable`).
            KeysLockedError, KeyUnavailableError: ``keys`` cannot open a sealed segment of the
                scope; SealedDataError: a sealed segment does not open (tampered);
            StorageError, MediaError, ClipError, AuditUnavailableError: the package cannot be
                made. On any error nothing is fulfilled and no package is left; the request
                stays waiting.
        """
        with self._lock:
            stored = self._store.request(request_id)
            req = request_from_json(stored.data)
            if not self._awaits_package(req, stored.package):
                raise InvalidTransitionError(
                    f"request {request_id} is not waiting for fulfilment (it is {req.state}"
                    f"{', fulfilled' if stored.package is not None else ''})"
                )
            if self._fulfilment_plan(req) in ("owner_holds_keys", "clear_part"):
                # A warrant over sealed footage, or an emergency without the owner's escrow
                # opt-in: no keys brought by anyone make it producible (issue 6).
                raise InvalidTransitionError(
                    f"request {request_id} is answered that {d.OWNER_HOLDS_KEYS}; no keys "
                    "are used for it"
                )
            package = self._package(stored, req, keys=keys, actor=actor)
            stored = self._store.request(request_id)
            return self._step(stored, d.Fulfil(package), d.SYSTEM)

    def grant(
        self, principal: Principal, request_id: str, action: d.OwnerGrant, keys: KeySource
    ) -> StoredRequest:
        """The owner grants consent request ``request_id`` (all of it, or ``action.scope``)
        with their session's household ``keys`` (:class:`SessionKeys`) at hand.

        When the granted scope holds sealed footage (``storage.sealed``) the package is made
        at once with ``keys`` (:meth:`fulfil_with_keys`): only the owner's unlocked session
        opens it, and it is never kept for later. Before anything changes, ``keys`` must
        open every key version the sealed segments are sealed to, so a locked session is
        refused up front and nothing half-happens. If making the package fails after the
        grant (a tampered segment, a disk error), the grant stands and the request waits for
        the owner's keys (``awaiting_keys`` ``owner``: retried with :meth:`owner_fulfil`);
        the returned request says so. A scope in the clear is granted as with :meth:`act`
        and packaged by :meth:`run_due`.

        Raises:
            NotFoundError, PermissionDeniedError, InvalidTransitionError, InvalidRequestError:
                as :meth:`act`.
            KeysLockedError: sealed footage in the granted scope and the session holds no
                unlocked keys ("sign in again to unlock"); nothing changed.
            KeyUnavailableError: the session cannot open a key version of the scope; nothing
                changed.
        """
        with self._lock:
            stored = self.get(principal, request_id)
            req = request_from_json(stored.data)
            scope = action.scope or req.scope
            sealed = self._sealed_key_ids(scope)
            if req.state is d.State.AWAITING_OWNER:  # else act() refuses it as it stands
                for key_id in sorted(k for k in sealed if k is not None):
                    keys(stored.household, key_id)
            stored = self.act(principal, request_id, action)
            req = request_from_json(stored.data)
            if not sealed or not self._awaits_package(req, stored.package):
                return stored
            try:
                return self.fulfil_with_keys(request_id, keys, Actor.of_principal(principal))
            except HomeWardenError as exc:
                log.warning(
                    "request %s: granted, but its package could not be made: %s", request_id, exc
                )
                return self._await_keys(self._store.request(request_id), req, "owner")

    def owner_fulfil(self, principal: Principal, request_id: str, keys: KeySource) -> StoredRequest:
        """The owner retries the package of a consent request they granted over sealed
        footage that waits for their keys (see :meth:`grant`), with their session's
        ``keys``.

        Raises:
            NotFoundError: no such request visible to ``principal``.
            PermissionDeniedError: not the household's owner, or not a consent request
                (escrow and owner keys are never used for a legal order; an emergency's
                keys come from two custodians).
            InvalidTransitionError, KeysLockedError, KeyUnavailableError, SealedDataError,
                ...: as :meth:`fulfil_with_keys` (the request stays waiting).
        """
        if principal.role is not Role.OWNER:
            raise PermissionDeniedError("only the household's owner fulfils with their keys")
        with self._lock:
            stored = self.get(principal, request_id)
            if stored.type != d.RequestType.CONSENT:
                raise PermissionDeniedError(
                    "an owner's keys fulfil only a consent request the owner granted"
                )
            return self.fulfil_with_keys(request_id, keys, Actor.of_principal(principal))

    @staticmethod
    def _awaits_package(req: d.Request, package: str | None) -> bool:
        """Whether ``req`` is decided, releases something and has no package yet (what
        :meth:`run_due` fulfils)."""
        releases = req.release is not d.Release.NONE
        return req.state in _AWAITS_PACKAGE and releases and package is None

    # --- packages --------------------------------------------------------------------------

    def _sealed_key_ids(self, scope: d.Scope) -> set[bytes | None]:
        """The household key versions (16-byte ids; None if unrecorded) the sealed segments
        (``storage.sealed``) in ``scope`` are sealed to; empty when all of it is in the
        clear or there is none."""
        return {
            None if seg.key_id is None else bytes(seg.key_id)
            for cam in scope.cameras
            for seg in self._index.segments(cam, scope.start, scope.end)
            if seg.sealed
        }

    def _fulfilment_plan(self, req: d.Request) -> str:
        """How a decided request that releases something is fulfilled (issue 6, DESIGN.md
        flows 5 and 8):

        - ``package``: account facts, or footage all in the clear: the scheduler packages it;
        - ``owner_holds_keys``: footage sealed to keys only the household holds, for a search
          warrant (escrow is the owner's opt-in for emergencies alone, never for a legal
          order, so even an escrowed key version does not make it producible) or for an
          emergency where the owner has not turned emergency access (escrow) on: answered
          "the provider cannot produce this content; the owner holds the keys";
        - ``clear_part``: a search warrant whose scope holds footage in the clear (recorded
          before sealing was turned on) as well as sealed footage: the scheduler packages the
          part in the clear and the sealed ranges (:meth:`_sealed_ranges`) are answered as
          ``owner_holds_keys`` (:meth:`run_due`);
        - ``custodians``: an emergency over sealed footage where the owner turned escrow on:
          it waits for two custodians' shares (:meth:`fulfil_with_keys`);
        - ``owner``: a consent the owner granted over sealed footage: it waits for the owner's
          unlocked session (:meth:`grant`, :meth:`owner_fulfil`).

        Only a search warrant is split: an emergency or a consent over a mix is treated as
        sealed as a whole (the keys that open the sealed part are needed, or none is used).
        """
        if req.release is d.Release.FOOTAGE and req.owner_holds_keys:
            return "owner_holds_keys"  # what the owner was told stays the answer
        if req.release is not d.Release.FOOTAGE:
            return "package"
        sealed, clear = self._sealed_and_clear(req.scope)
        if not sealed:
            return "package"
        ground = d.release_grounds(req)
        if ground == "emergency":
            escrow = HouseholdKeyStore(self._index).escrow_enabled(req.scope.household)
            return "custodians" if escrow else "owner_holds_keys"
        if ground == "owner consent":
            return "owner"
        return "clear_part" if clear else "owner_holds_keys"

    def _sealed_and_clear(self, scope: d.Scope) -> tuple[bool, bool]:
        """Whether ``scope`` holds sealed segments, and whether it holds segments in the
        clear."""
        segs = [
            seg
            for cam in scope.cameras
            for seg in self._index.segments(cam, scope.start, scope.end)
            if seg.end > scope.start and seg.start < scope.end
        ]
        return any(s.sealed for s in segs), any(not s.sealed for s in segs)

    def _sealed_ranges(self, scope: d.Scope) -> tuple[d.SealedRange, ...]:
        """The ranges of ``scope`` (per camera, clipped to it) its sealed segments cover,
        segments less than :data:`~homewarden.services.evidence.SEALED_MERGE_SECONDS` apart
        merged: what a search warrant over a mix withholds
        (:func:`homewarden.services.evidence.sealed_ranges`, which the package's manifest
        lists)."""
        out: list[d.SealedRange] = []
        for cam in scope.cameras:
            segs = self._index.segments(cam, scope.start, scope.end)
            spans = sealed_ranges(segs, scope.start, scope.end)
            out += [d.SealedRange(cam, a, b) for a, b in spans]
        return tuple(out)

    def _package(
        self,
        stored: StoredRequest,
        req: d.Request,
        *,
        keys: KeySource | None = None,
        actor: Actor | None = None,
        skip_sealed: bool = False,
    ) -> str:
        """Write the package of a decided request; returns its zip's name in
        :attr:`packages_dir` (or ``none`` when no footage exists in the scope). ``keys``
        open sealed segments (see :meth:`fulfil_with_keys`; ``actor`` is whose they are);
        without them sealed footage in scope is KeysLockedError. ``skip_sealed``: package
        only the footage in the clear; the manifest lists the sealed ranges withheld
        (:meth:`EvidenceService.export`)."""
        d.check_releasable(req)
        out = self.packages_dir
        out.mkdir(parents=True, exist_ok=True)
        if (out / f"{req.id}.zip").is_file():
            # An earlier pass made it and stopped before the fulfilment was stored (a worker
            # killed, a job retried): that one is the request's package, never a second.
            log.warning("request %s: its package exists already; fulfilled with it", req.id)
            return f"{req.id}.zip"
        for stale in (out / req.id, out / f"{req.id}.part", out / f"{req.id}.withheld"):
            if stale.exists() and not (out / f"{req.id}.zip").exists():
                shutil.rmtree(stale, ignore_errors=True)
        if req.release is d.Release.ACCOUNT_FACTS:
            return self._facts_package(req, out)
        ground = d.release_grounds(req) or "none"
        basis = {
            "owner consent": "owner consent",
            "search warrant": f"search warrant, case {req.case_number}, {req.court}",
            "emergency": "emergency disclosure, 18 U.S.C. 2702(b)(8)",
        }.get(ground, ground)
        evidence = EvidenceService(self._index, self._settings(), self._audit, clock=self._clock)
        try:
            result = evidence.export(
                list(req.scope.cameras),
                req.scope.start,
                req.scope.end,
                out,
                actor=actor or Actor(ActorKind.SYSTEM, "disclosure"),
                reason=f"fulfilment of request {req.id}"
                + ("" if keys is None else ", sealed footage opened with the keys of the actor"),
                request_id=req.id,
                legal_basis=basis,
                keys=keys,
                skip_sealed=skip_sealed,
            )
        except NotFoundError as exc:
            log.info("request %s: %s; fulfilled with nothing to release", req.id, exc)
            return "none"
        return result.zip_path.name

    def _facts_package(self, req: d.Request, out: Path) -> str:
        facts = self._facts(req)
        folder = out / f"{req.id}.part"
        folder.mkdir()
        body = json.dumps(facts, indent=2, sort_keys=True).encode()
        (folder / "facts.json").write_bytes(body)
        manifest = json.dumps(
            {
                "request_id": req.id,
                "legal_basis": f"{req.order_kind}, case {req.case_number}, {req.court}",
                "contents": "account facts only; no footage (content needs a search warrant, "
                "18 U.S.C. 2703(b))",
                "files": {"facts.json": hashlib.sha256(body).hexdigest()},
                "software_version": __version__,
                "created_at": self._clock(),
            },
            indent=2,
            sort_keys=True,
        ).encode()
        (folder / "manifest.json").write_bytes(manifest)
        sig, key = self._audit.sign_manifest(manifest)
        (folder / "manifest.sig").write_bytes(sig)
        (folder / "public_key.txt").write_text(bytes(key).hex() + "\n")
        final = out / req.id
        folder.replace(final)
        zip_path = out / f"{req.id}.zip"
        with zipfile.ZipFile(out / f"{req.id}.zip.part", "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(final.iterdir()):
                z.write(f, f"{req.id}/{f.name}")
        (out / f"{req.id}.zip.part").replace(zip_path)
        return zip_path.name

    def _facts(self, req: d.Request) -> dict[str, Any]:
        household = req.scope.household
        facts: dict[str, Any] = {}
        owners = [u for u in self._accounts.users(household) if u.role == Role.OWNER]
        names = dict(self._accounts.store.households())
        for fact in req.facts:
            match fact:
                case d.AccountFact.HOUSEHOLD_NAME:
                    facts[fact] = names.get(household, household)
                case d.AccountFact.OWNER_USERNAME:
                    facts[fact] = [u.username for u in owners]
                case d.AccountFact.ACCOUNT_CREATED:
                    facts[fact] = min((u.created_at for u in owners), default=None)
                case d.AccountFact.CAMERA_NAMES:
                    settings = self._settings()
                    facts[fact] = sorted(
                        c for c in settings.cameras if settings.camera_household(c) == household
                    )
        return facts

    def new_link(self, principal: Principal, request_id: str) -> tuple[str, float]:
        """A download link secret for the requester's own fulfilled request, and when it
        expires. The secret is shown once; only its hash is kept.

        Raises:
            NotFoundError: not the requester's request.
            InvalidTransitionError: the request has no package (yet).
        """
        if principal.role is not Role.REQUESTER or principal.user_id is None:
            raise PermissionDeniedError("only the requester downloads a package")
        stored = self.get(principal, request_id)
        if stored.package is None or stored.package == "none":
            raise InvalidTransitionError(f"request {request_id} has no package to download")
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        expires = now + LINK_SECONDS
        self._store.add_link(
            stored.id, principal.user_id, _sha256(secret), now=now, expires_at=expires
        )
        return secret, expires

    def download(self, principal: Principal, request_id: str, token: str) -> Path:
        """The package zip behind a download link, for the requester it was made for.
        Every download and every refused attempt is an audit entry.

        Raises:
            PermissionDeniedError: not a requester, an unknown or expired link, or a link of
                another request or requester (the attempt is recorded).
            StorageError: the package file is missing.
        """
        actor = (
            Actor.of_principal(principal)
            if principal.kind is not PrincipalKind.ANONYMOUS
            else Actor(ActorKind.SYSTEM, f"anonymous {principal.client_host or 'unknown'}")
        )
        link = self._store.link(_sha256(token)) if token else None
        now = self._clock()
        problem = None
        stored: StoredRequest | None = None
        if principal.role is not Role.REQUESTER:
            problem = "only the requester downloads a package"
        elif link is None:
            problem = "unknown download link"
        elif link.request_id != request_id or link.requester_id != principal.user_id:
            problem = "the link is not for this request and requester"
        elif now >= link.expires_at:
            problem = "the download link expired; ask for a new one"
        else:
            stored = self._store.request(request_id)
        household = None
        with contextlib.suppress(NotFoundError):
            household = self._store.request(request_id).household
        if problem is not None or stored is None or link is None:
            self._audit.append(
                AuditTag.REQUEST_PACKAGE_DENY,
                actor,
                f"download of {request_id[:64]} refused: {problem}"[:500],
                request=request_id[:200] or None,
                household=household,
            )
            raise PermissionDeniedError(problem or "download refused")
        path = self.packages_dir / (stored.package or "")
        if stored.package in (None, "none") or not path.is_file():
            raise StorageError(f"the package of request {request_id} is missing")
        self._audit.append(
            AuditTag.REQUEST_PACKAGE_DOWNLOAD,
            actor,
            f"package {stored.package} via link {link.id}"[:500],
            request=request_id,
            household=household,
        )
        self._store.count_download(link.id)
        return path


def withheld_requests(store: DisclosureStore, now: float) -> frozenset[str]:
    """Requests the public may not hear of yet: those whose owner notice is scheduled (a
    non-disclosure order, 18 U.S.C. 2705(b), or an emergency within the policy's notice
    delay) or that carry a non-disclosure order still in force, whatever became of them (an
    order binds even when the request was rejected). The public log export publishes their
    entries as leaf hashes only, and the transparency report counts them once the notice is
    sent or the order ends, so neither can tip off a household before the law lets the
    deployment do so. ``now``: UTC epoch seconds."""
    out: set[str] = set()
    for r in store.requests(limit=1_000_000):
        if r.data.get("notice") == "sent":
            continue
        until = r.data.get("nondisclosure_until")
        if r.data.get("notice") == "scheduled" or (until is not None and now < float(until)):
            out.add(r.id)
    return frozenset(out)


def _public_what(req: d.Request, t: d.Transition) -> str:
    """What a step did, in words safe to publish (no names, places or free text)."""
    if t.action == "reject" and req.reject_code is not None:
        return f"rejected: {req.reject_code}"
    if t.action == "fulfil":
        if t.reason == f"package none: {d.OWNER_HOLDS_KEYS}":
            return "released nothing (cannot produce content: the owner holds the keys)"
        if t.reason.startswith("package none "):
            return "released nothing"
        if f" in part: {d.WITHHELD_IN_PART}" in t.reason:
            return (
                f"released {req.release} in part (cannot produce sealed content: "
                "the owner holds the keys)"
            )
        return f"released {req.release}"
    if t.action == "callback":
        return (
            "call-back confirmed"
            if req.callback and req.callback.confirmed
            else "call-back not confirmed"
        )
    return t.action.replace("_", " ")


def _safe_filename(name: str) -> str:
    """A document's name as kept and offered for download: the last path component, no
    control or quoting characters, at most 200 characters (``document`` if nothing is left)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isprintable() and c not in '"<>|:*?')
    cleaned = cleaned.strip(" .")[:200]
    return cleaned or "document"


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _actor(p: d.Party) -> Actor:
    kind = {
        d.PartyRole.REQUESTER: ActorKind.REQUESTER,
        d.PartyRole.OWNER: ActorKind.USER,
        d.PartyRole.LEGAL_REVIEWER: ActorKind.STAFF,
        d.PartyRole.CUSTODIAN: ActorKind.STAFF,
        d.PartyRole.SYSTEM: ActorKind.SYSTEM,
    }[p.role]
    return Actor(kind, p.id)


def _new(t: d.Transition) -> NewTransition:
    return NewTransition(
        t.action,
        None if t.from_state is None else str(t.from_state),
        str(t.to_state),
        str(t.actor.role),
        t.actor.id,
        t.at,
        t.reason,
    )
