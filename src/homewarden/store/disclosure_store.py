"""Disclosure tables (migration 0005): agencies, requesters, requests and their transitions,
documents, household policies, notices and package links.

Rows in, plain records out; what they mean is decided by :mod:`homewarden.domain.disclosure`
and :mod:`homewarden.services.disclosure`. A request's ``data`` is the request as the service
serialises it. Shares the :class:`~homewarden.store.index.Index`'s engine. Times are UTC
epoch seconds.

Errors: :class:`~homewarden.errors.DatabaseError` when the database fails;
:class:`~homewarden.errors.NotFoundError` for an unknown id;
:class:`~homewarden.errors.InvalidTransitionError` when a request changed since it was read.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from homewarden.errors import InvalidTransitionError, NotFoundError
from homewarden.store.index import Index, rowcount
from homewarden.store.models import (
    AgencyRow,
    DisclosureRequestRow,
    HouseholdPolicyRow,
    NoticeRow,
    PackageLinkRow,
    RequestDocumentRow,
    RequesterRow,
    RequestTransitionRow,
)


@dataclass(frozen=True, slots=True)
class AgencyRecord:
    """An agency on the allow-list."""

    id: int
    name: str
    jurisdiction: str
    mail_domains: tuple[str, ...]
    callback_phone: str
    created_at: float
    disabled: bool


@dataclass(frozen=True, slots=True)
class RequesterRecord:
    """A requester account's agency and official mail address."""

    user_id: int
    agency_id: int
    email: str
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A request row: ``data`` is the serialised request, ``version`` its change count."""

    id: str
    household: str
    type: str
    state: str
    requester_id: int
    agency_id: int
    filed_at: float
    updated_at: float
    next_due: float | None
    package: str | None
    data: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One stored step of a request."""

    id: int
    request_id: str
    action: str
    from_state: str | None
    to_state: str
    actor_role: str
    actor_id: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class NewTransition:
    """A step to store (see :class:`TransitionRecord`)."""

    action: str
    from_state: str | None
    to_state: str
    actor_role: str
    actor_id: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document filed with a request; its bytes are stored by SHA-256 (hex)."""

    id: int
    request_id: str
    filename: str
    content_type: str
    sha256: str
    size: int
    uploaded_at: float


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """A household's stored policy (fields of the domain's Policy) and notice address."""

    household: str
    policy: dict[str, Any]
    notice_email: str | None
    address: str | None
    updated_at: float
    updated_by: int | None


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    """A notice in the app (see ``NoticeRow``)."""

    id: int
    audience: str
    household: str | None
    user_id: int | None
    request_id: str | None
    subject: str
    body: str
    created_at: float
    read_at: float | None
    delivery: str


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """A package download link (its secret's SHA-256 only)."""

    id: int
    request_id: str
    requester_id: int
    created_at: float
    expires_at: float
    downloads: int


def _agency(r: AgencyRow) -> AgencyRecord:
    return AgencyRecord(
        r.id,
        r.name,
        r.jurisdiction,
        tuple(str(d) for d in r.mail_domains),
        r.callback_phone,
        r.created_at,
        bool(r.disabled),
    )


def _request(r: DisclosureRequestRow) -> StoredRequest:
    return StoredRequest(
        r.id,
        r.household_id,
        r.type,
        r.state,
        r.requester_id,
        r.agency_id,
        r.filed_at,
        r.updated_at,
        r.next_due,
        r.package,
        copy.deepcopy(dict(r.data)),
        r.version,
    )


def _transition(r: RequestTransitionRow) -> TransitionRecord:
    return TransitionRecord(
        r.id, r.request_id, r.action, r.from_state, r.to_state, r.actor_role, r.actor_id,
        r.at, r.reason,
    )  # fmt: skip


def _notice(r: NoticeRow) -> NoticeRecord:
    return NoticeRecord(
        r.id, r.audience, r.household_id, r.user_id, r.request_id, r.subject, r.body,
        r.created_at, r.read_at, r.delivery,
    )  # fmt: skip


def _link(r: PackageLinkRow) -> LinkRecord:
    return LinkRecord(r.id, r.request_id, r.requester_id, r.created_at, r.expires_at, r.downloads)


def _document(r: RequestDocumentRow) -> DocumentRecord:
    return DocumentRecord(
        r.id, r.request_id, r.filename, r.content_type, r.sha256, r.size, r.uploaded_at
    )


class DisclosureStore:
    """The disclosure tables of ``index``'s database (which must be migrated)."""

    def __init__(self, index: Index) -> None:
        self._index = index

    # agencies

    def add_agency(
        self,
        name: str,
        jurisdiction: str,
        mail_domains: Sequence[str],
        callback_phone: str,
        *,
        now: float,
        by: int | None,
    ) -> AgencyRecord:
        """Put an agency on the allow-list."""
        row = AgencyRow(
            name=name,
            jurisdiction=jurisdiction,
            mail_domains=list(mail_domains),
            callback_phone=callback_phone,
            created_at=now,
            created_by=by,
            disabled=False,
        )
        with self._index.transaction("add agency") as s:
            s.add(row)
            s.flush()
            return _agency(row)

    def update_agency(self, agency_id: int, **fields: Any) -> AgencyRecord:
        """Change an agency's ``name``, ``jurisdiction``, ``mail_domains``,
        ``callback_phone`` or ``disabled``."""
        with self._index.transaction(f"change agency {agency_id}") as s:
            row = s.get(AgencyRow, agency_id)
            if row is None:
                raise NotFoundError(f"no agency {agency_id}")
            for key, value in fields.items():
                if key not in ("name", "jurisdiction", "mail_domains", "callback_phone",
                               "disabled"):  # fmt: skip
                    raise ValueError(f"not an agency field: {key}")
                setattr(row, key, list(value) if key == "mail_domains" else value)
            s.flush()
            return _agency(row)

    def agency(self, agency_id: int) -> AgencyRecord:
        """One agency. Raises NotFoundError."""
        with self._index.transaction(f"read agency {agency_id}") as s:
            row = s.get(AgencyRow, agency_id)
            if row is None:
                raise NotFoundError(f"no agency {agency_id}")
            return _agency(row)

    def agencies(self) -> list[AgencyRecord]:
        """Every agency, by name."""
        with self._index.transaction("list agencies") as s:
            return [_agency(r) for r in s.scalars(select(AgencyRow).order_by(AgencyRow.name))]

    # requesters

    def add_requester(self, user_id: int, agency_id: int, email: str, now: float) -> None:
        """Record that account ``user_id`` is a requester of ``agency_id``."""
        with self._index.transaction("add requester") as s:
            s.add(RequesterRow(user_id=user_id, agency_id=agency_id, email=email, created_at=now))

    def requester(self, user_id: int) -> RequesterRecord | None:
        """The requester record of account ``user_id``, or None."""
        with self._index.transaction(f"read requester {user_id}") as s:
            r = s.get(RequesterRow, user_id)
            return None if r is None else RequesterRecord(r.user_id, r.agency_id, r.email,
                                                          r.created_at)  # fmt: skip

    def requester_by_email(self, email: str) -> RequesterRecord | None:
        """The requester registered with ``email`` (compared case-insensitively), or None."""
        q = select(RequesterRow).where(func.lower(RequesterRow.email) == email.lower())
        with self._index.transaction("find requester") as s:
            r = s.scalars(q).first()
            return None if r is None else RequesterRecord(r.user_id, r.agency_id, r.email,
                                                          r.created_at)  # fmt: skip

    # requests

    def add_request(
        self, req: StoredRequest, transitions: Iterable[NewTransition]
    ) -> StoredRequest:
        """Insert a request (``version`` 1) and its first transitions in one transaction."""
        row = DisclosureRequestRow(
            id=req.id,
            household_id=req.household,
            type=req.type,
            state=req.state,
            requester_id=req.requester_id,
            agency_id=req.agency_id,
            filed_at=req.filed_at,
            updated_at=req.updated_at,
            next_due=req.next_due,
            package=req.package,
            data=req.data,
            version=1,
        )
        with self._index.transaction(f"file request {req.id}") as s:
            s.add(row)
            s.flush()
            self._add_transitions(s, req.id, transitions)
            return _request(row)

    def update_request(
        self,
        request_id: str,
        expected_version: int,
        *,
        state: str,
        next_due: float | None,
        data: dict[str, Any],
        updated_at: float,
        transitions: Iterable[NewTransition],
        package: str | None = None,
    ) -> StoredRequest:
        """Store a step: the new state and data, and its transitions, in one transaction,
        only if the row is still at ``expected_version``.

        Raises:
            InvalidTransitionError: the request changed since it was read.
            NotFoundError: no such request.
        """
        values: dict[str, Any] = {
            "state": state,
            "next_due": next_due,
            "data": data,
            "updated_at": updated_at,
            "version": expected_version + 1,
        }
        if package is not None:
            values["package"] = package
        stmt = (
            update(DisclosureRequestRow)
            .where(DisclosureRequestRow.id == request_id)
            .where(DisclosureRequestRow.version == expected_version)
            .values(**values)
        )
        with self._index.transaction(f"update request {request_id}") as s:
            if rowcount(s.execute(stmt)) != 1:
                if s.get(DisclosureRequestRow, request_id) is None:
                    raise NotFoundError(f"no request {request_id}")
                raise InvalidTransitionError(
                    f"request {request_id} changed meanwhile; reload it and try again"
                )
            self._add_transitions(s, request_id, transitions)
            row = s.get(DisclosureRequestRow, request_id)
            assert row is not None
            s.refresh(row)
            return _request(row)

    @staticmethod
    def _add_transitions(s: Any, request_id: str, transitions: Iterable[NewTransition]) -> None:
        for t in transitions:
            s.add(
                RequestTransitionRow(
                    request_id=request_id,
                    action=t.action,
                    from_state=t.from_state,
                    to_state=t.to_state,
                    actor_role=t.actor_role,
                    actor_id=t.actor_id,
                    at=t.at,
                    reason=t.reason,
                )
            )

    def request(self, request_id: str) -> StoredRequest:
        """One request. Raises NotFoundError."""
        with self._index.transaction(f"read request {request_id}") as s:
            row = s.get(DisclosureRequestRow, request_id)
            if row is None:
                raise NotFoundError(f"no request {request_id}")
            return _request(row)

    def requests(
        self,
        *,
        household: str | None = None,
        requester_id: int | None = None,
        states: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        limit: int = 500,
    ) -> list[StoredRequest]:
        """Requests, newest first, filtered by household, requester, states and types."""
        q = select(DisclosureRequestRow)
        if household is not None:
            q = q.where(DisclosureRequestRow.household_id == household)
        if requester_id is not None:
            q = q.where(DisclosureRequestRow.requester_id == requester_id)
        if states is not None:
            q = q.where(DisclosureRequestRow.state.in_(list(states)))
        if types is not None:
            q = q.where(DisclosureRequestRow.type.in_(list(types)))
        q = q.order_by(DisclosureRequestRow.filed_at.desc(), DisclosureRequestRow.id).limit(limit)
        with self._index.transaction("list requests") as s:
            return [_request(r) for r in s.scalars(q)]

    def due(self, now: float) -> list[str]:
        """Ids of requests with a system step due at ``now``, earliest first."""
        q = (
            select(DisclosureRequestRow.id)
            .where(DisclosureRequestRow.next_due.is_not(None))
            .where(DisclosureRequestRow.next_due <= now)
            .order_by(DisclosureRequestRow.next_due)
        )
        with self._index.transaction("list due requests") as s:
            return [str(i) for i in s.scalars(q)]

    def transitions(self, request_id: str) -> list[TransitionRecord]:
        """A request's steps in the order they were taken."""
        q = (
            select(RequestTransitionRow)
            .where(RequestTransitionRow.request_id == request_id)
            .order_by(RequestTransitionRow.id)
        )
        with self._index.transaction(f"read steps of {request_id}") as s:
            return [_transition(r) for r in s.scalars(q)]

    # documents

    def add_document(
        self, request_id: str, filename: str, content_type: str, sha256: str, size: int,
        now: float,
    ) -> DocumentRecord:  # fmt: skip
        """Record a document of ``size`` bytes filed with a request."""
        row = RequestDocumentRow(
            request_id=request_id, filename=filename, content_type=content_type,
            sha256=sha256, size=size, uploaded_at=now,
        )  # fmt: skip
        with self._index.transaction("add document") as s:
            s.add(row)
            s.flush()
            return _document(row)

    def documents(self, request_id: str) -> list[DocumentRecord]:
        """A request's documents, in filing order."""
        q = (
            select(RequestDocumentRow)
            .where(RequestDocumentRow.request_id == request_id)
            .order_by(RequestDocumentRow.id)
        )
        with self._index.transaction(f"read documents of {request_id}") as s:
            return [_document(r) for r in s.scalars(q)]

    # policies

    def policy(self, household: str) -> PolicyRecord | None:
        """A household's stored policy, or None (the defaults apply)."""
        with self._index.transaction(f"read policy of {household}") as s:
            r = s.get(HouseholdPolicyRow, household)
            if r is None:
                return None
            return PolicyRecord(
                r.household_id, dict(r.policy), r.notice_email, r.address, r.updated_at,
                r.updated_by,
            )  # fmt: skip

    def household_by_address(self, address: str) -> str | None:
        """The household whose stored (normalised) address equals ``address``, or None."""
        q = select(HouseholdPolicyRow.household_id).where(HouseholdPolicyRow.address == address)
        with self._index.transaction("locate household") as s:
            found = [str(h) for h in s.scalars(q)]
            return found[0] if len(found) == 1 else None

    def put_policy(
        self,
        household: str,
        policy: dict[str, Any],
        notice_email: str | None,
        address: str | None,
        *,
        now: float,
        by: int | None,
    ) -> None:
        """Insert or replace a household's policy."""
        with self._index.transaction(f"store policy of {household}") as s:
            row = s.get(HouseholdPolicyRow, household)
            if row is None:
                row = HouseholdPolicyRow(household_id=household)
                s.add(row)
            row.policy = policy
            row.notice_email = notice_email
            row.address = address
            row.updated_at = now
            row.updated_by = by

    # notices

    def add_notice(
        self,
        audience: str,
        subject: str,
        body: str,
        *,
        now: float,
        household: str | None = None,
        user_id: int | None = None,
        request_id: str | None = None,
    ) -> NoticeRecord:
        """Store a notice in the app; returns it (``delivery`` empty)."""
        row = NoticeRow(
            audience=audience, household_id=household, user_id=user_id,
            request_id=request_id, subject=subject, body=body, created_at=now,
            read_at=None, delivery="",
        )  # fmt: skip
        with self._index.transaction("add notice") as s:
            s.add(row)
            s.flush()
            return _notice(row)

    def set_delivery(self, notice_id: int, delivery: str) -> None:
        """Record how a notice went out besides the app."""
        with self._index.transaction(f"update notice {notice_id}") as s:
            row = s.get(NoticeRow, notice_id)
            if row is None:
                raise NotFoundError(f"no notice {notice_id}")
            row.delivery = delivery

    def notices(
        self,
        audience: str,
        *,
        household: str | None = None,
        user_id: int | None = None,
        request_id: str | None = None,
        limit: int = 200,
    ) -> list[NoticeRecord]:
        """Notices of an audience, newest first, filtered."""
        q = select(NoticeRow).where(NoticeRow.audience == audience)
        if household is not None:
            q = q.where(NoticeRow.household_id == household)
        if user_id is not None:
            q = q.where(NoticeRow.user_id == user_id)
        if request_id is not None:
            q = q.where(NoticeRow.request_id == request_id)
        q = q.order_by(NoticeRow.id.desc()).limit(limit)
        with self._index.transaction("list notices") as s:
            return [_notice(r) for r in s.scalars(q)]

    # package links

    def add_link(
        self, request_id: str, requester_id: int, token_hash: str, *, now: float, expires_at: float
    ) -> LinkRecord:
        """Store a download link (its secret's hash)."""
        row = PackageLinkRow(
            request_id=request_id, requester_id=requester_id, token_hash=token_hash,
            created_at=now, expires_at=expires_at, downloads=0,
        )  # fmt: skip
        with self._index.transaction("add package link") as s:
            s.add(row)
            s.flush()
            return _link(row)

    def link(self, token_hash: str) -> LinkRecord | None:
        """The link whose secret hashes to ``token_hash``, or None."""
        q = select(PackageLinkRow).where(PackageLinkRow.token_hash == token_hash)
        with self._index.transaction("read package link") as s:
            r = s.scalars(q).first()
            return None if r is None else _link(r)

    def links(self, request_id: str) -> list[LinkRecord]:
        """A request's links, newest first."""
        q = (
            select(PackageLinkRow)
            .where(PackageLinkRow.request_id == request_id)
            .order_by(PackageLinkRow.id.desc())
        )
        with self._index.transaction(f"list links of {request_id}") as s:
            return [_link(r) for r in s.scalars(q)]

    def count_download(self, link_id: int) -> None:
        """Count one download through a link."""
        stmt = (
            update(PackageLinkRow)
            .where(PackageLinkRow.id == link_id)
            .values(downloads=PackageLinkRow.downloads + 1)
        )
        with self._index.transaction("count download") as s:
            s.execute(stmt)
