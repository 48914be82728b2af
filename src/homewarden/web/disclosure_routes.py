"""Disclosure requests in the JSON API: the requester portal, the staff review queue, the
owner's inbox and the household policy.

Each route declares its permission (see :mod:`homewarden.domain.permissions`); the
per-request decision (a requester sees only their own requests, an owner their household's
once told, staff all) is :meth:`DisclosureService.get`'s, and a request one may not see is a
404. Decisions are the domain's (:mod:`homewarden.domain.disclosure`); a step a request's
state does not allow is a 409.

- ``GET /api/agencies`` (anyone): agencies on the allow-list, for the sign-up form.
- ``POST /api/requesters/signup`` (anyone; double-submit CSRF): sign up; the setup link goes
  to the official mail address only.
- ``GET|POST /api/staff/agencies``, ``PUT /api/staff/agencies/{id}`` (legal reviewers,
  custodians): the allow-list with call-back numbers.
- ``POST /api/requests`` (requesters): file, with documents as base64.
- ``GET /api/requests``, ``GET /api/requests/{id}``, ``GET /api/requests/{id}/documents/{n}``.
- ``POST /api/requests/{id}/answer`` (owners): grant (all or part) or decline consent. A
  grant over sealed footage (``storage.sealed``) is packaged at once with the household keys
  of the owner's password session; without unlocked keys it is refused up front (401 "sign
  in again to unlock"), nothing changed.
- ``POST /api/requests/{id}/fulfil`` (owners): retry the package of a consent granted over
  sealed footage that waits for the owner's keys (``awaiting_keys`` ``owner``).
- ``POST /api/requests/{id}/review`` (legal reviewers, custodians): narrow, accept, reject,
  callback, approve, renew, close.
- ``POST /api/requests/{id}/withdraw``, ``POST /api/requests/{id}/renew`` (the requester).
- ``POST /api/requests/{id}/links`` then ``GET /api/requests/{id}/package?token=...``
  (the requester): an expiring download link; every download and refusal is recorded.
- ``GET /api/notices``: the owner's inbox, staff alerts, a requester's notices.
- ``GET /api/holds`` (legal reviewers, custodians): footage held from retention.
- ``GET|PUT /api/policy`` (owners): emergency disclosure allowed or refused, the notice
  delay, the emergency window cap, the notice address, the street address.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from homewarden.domain import disclosure as d
from homewarden.domain.permissions import Permission, Principal, Role
from homewarden.errors import InvalidRequestError, PermissionDeniedError
from homewarden.notify.mail import Mailer
from homewarden.services.disclosure import DisclosureService, Document
from homewarden.services.notices import NoticeService
from homewarden.services.runtime import AppContext
from homewarden.services.sealed_footage import SessionKeys
from homewarden.store.accounts_store import SessionRecord, UserRecord
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.web.deps import caller, current_session
from homewarden.web.routing import gated

Caller = Annotated[Principal, Depends(caller)]
Session = Annotated[SessionRecord | None, Depends(current_session)]
RequestId = Annotated[str, Path(max_length=64, description="request id")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupBody(_Strict):
    """A requester's sign-up."""

    agency_id: int
    email: str = Field(max_length=254)
    username: str = Field(max_length=64)
    display_name: str = Field(default="", max_length=200)


class AgencyBody(_Strict):
    """An agency on the allow-list."""

    name: str = Field(max_length=200)
    jurisdiction: str = Field(max_length=200)
    mail_domains: list[str] = Field(max_length=20)
    callback_phone: str = Field(max_length=64)
    disabled: bool = False


class ScopeBody(_Strict):
    """A narrower scope: cameras and window (UTC epoch seconds)."""

    cameras: list[str] = Field(min_length=1, max_length=64)
    start: float
    end: float


class DocumentBody(_Strict):
    """A document: name, MIME type (PDF, PNG, JPEG, text) and base64 bytes."""

    filename: str = Field(max_length=200)
    content_type: str = Field(max_length=128)
    data_base64: str = Field(max_length=30_000_000)


class FilingBody(_Strict):
    """A request to file. Locate the household by ``camera`` or ``address`` (one)."""

    type: d.RequestType
    start: float
    end: float
    description: str = Field(max_length=d.MAX_TEXT)
    camera: str | None = Field(default=None, max_length=64)
    address: str | None = Field(default=None, max_length=300)
    cameras: list[str] = Field(default_factory=list, max_length=64)
    order_kind: d.OrderKind | None = None
    case_number: str = Field(default="", max_length=200)
    court: str = Field(default="", max_length=200)
    nondisclosure_order: bool = False
    nondisclosure_until: float | None = None
    facts: list[d.AccountFact] = Field(default_factory=list, max_length=10)
    attested: bool = False
    documents: list[DocumentBody] = Field(default_factory=list, max_length=10)


class AnswerBody(_Strict):
    """The owner's answer to a consent request."""

    decision: Literal["grant", "decline"]
    reason: str = Field(default="", max_length=d.MAX_TEXT)
    scope: ScopeBody | None = None


class ReviewBody(_Strict):
    """A staff step. ``code`` for reject; ``number``/``confirmed``/``note`` for callback;
    ``scope`` for narrow and accept."""

    action: Literal["narrow", "accept", "reject", "callback", "approve", "renew", "close"]
    reason: str = Field(default="", max_length=d.MAX_TEXT)
    scope: ScopeBody | None = None
    code: d.RejectCode | None = None
    number: str = Field(default="", max_length=64)
    confirmed: bool = False
    note: str = Field(default="", max_length=d.MAX_TEXT)


class ReasonBody(_Strict):
    """A reason."""

    reason: str = Field(default="", max_length=d.MAX_TEXT)


class PolicyBody(_Strict):
    """A household's disclosure policy (seconds)."""

    emergency_allowed: bool = True
    notice_delay: float = Field(default=0.0, ge=0, le=d.EMERGENCY_NOTICE_MAX_DELAY)
    emergency_max_window: float = Field(
        default=d.EMERGENCY_MAX_WINDOW, ge=60, le=d.EMERGENCY_MAX_WINDOW
    )
    emergency_overlong: d.Overlong = d.Overlong.CAP
    notice_email: str | None = Field(default=None, max_length=254)
    address: str | None = Field(default=None, max_length=300)


def service_of(ctx: AppContext) -> DisclosureService:
    """The runtime's disclosure service, or one made over the context (tests, tools); the
    latter alerts staff when a requester is locked for wrong TOTP codes, as the runtime's
    does (unless the accounts already report lockouts elsewhere)."""
    if ctx.disclosure is not None:
        return ctx.disclosure
    notices = NoticeService(DisclosureStore(ctx.index), Mailer(ctx.settings.mail), clock=ctx.clock)
    if ctx.accounts.on_requester_locked is None:

        def locked(user: UserRecord) -> None:
            notices.alert_staff(
                f"Requester {user.username} locked after too many wrong TOTP codes",
                f"Requester account {user.username} (id {user.id}) entered wrong TOTP codes "
                "too many times in a row and was disabled. Check with the agency before "
                "re-enabling it.",
            )

        ctx.accounts.on_requester_locked = locked
    return DisclosureService(
        ctx.index,
        ctx.current_settings,
        ctx.audit,
        ctx.accounts,
        notices,
        public_url=ctx.public_url,
        clock=ctx.clock,
    )


def _scope(service: DisclosureService, stored_household: str, body: ScopeBody | None) -> Any:
    if body is None:
        return None
    return d.Scope(stored_household, tuple(body.cameras), body.start, body.end)


def _documents(docs: list[DocumentBody]) -> list[Document]:
    out = []
    for doc in docs:
        try:
            data = base64.b64decode(doc.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"document {doc.filename!r} is not base64") from None
        out.append(Document(doc.filename, doc.content_type, data))
    return out


def add_routes(app: FastAPI, ctx: AppContext) -> DisclosureService:
    """Add the disclosure API to ``app``; returns the service it uses."""
    service = service_of(ctx)
    app.state.disclosure = service
    tags = ["disclosure"]

    @gated(app, "GET", "/api/agencies", Permission.ACCOUNTS_REQUESTER_SIGNUP, tags=tags)
    def public_agencies() -> list[dict[str, Any]]:
        """Agencies whose officers may sign up: name, jurisdiction, official mail domains."""
        return [
            {
                "id": a.id,
                "name": a.name,
                "jurisdiction": a.jurisdiction,
                "mail_domains": list(a.mail_domains),
            }
            for a in service.agencies()
            if not a.disabled
        ]

    @gated(
        app,
        "POST",
        "/api/requesters/signup",
        Permission.ACCOUNTS_REQUESTER_SIGNUP,
        tags=tags,
        status_code=202,
    )
    def signup(body: SignupBody) -> dict[str, str]:
        """Sign up as a requester of an agency, with an address at one of its official
        domains. The one-time setup link (password and TOTP) is mailed there only."""
        service.signup(body.agency_id, body.email, body.username, body.display_name)
        return {"status": f"a setup link was mailed to {body.email}"}

    @gated(app, "GET", "/api/staff/agencies", Permission.DISCLOSURE_AGENCY_MANAGE, tags=tags)
    def staff_agencies() -> list[dict[str, Any]]:
        """The allow-list with call-back numbers."""
        return [_agency(a) for a in service.agencies()]

    @gated(
        app,
        "POST",
        "/api/staff/agencies",
        Permission.DISCLOSURE_AGENCY_MANAGE,
        tags=tags,
        status_code=201,
    )
    def add_agency(body: AgencyBody, who: Caller) -> dict[str, Any]:
        """Put an agency on the allow-list."""
        return _agency(
            service.add_agency(
                who, body.name, body.jurisdiction, body.mail_domains, body.callback_phone
            )
        )

    @gated(
        app,
        "PUT",
        "/api/staff/agencies/{agency_id}",
        Permission.DISCLOSURE_AGENCY_MANAGE,
        tags=tags,
    )
    def put_agency(agency_id: int, body: AgencyBody, who: Caller) -> dict[str, Any]:
        """Change an agency; ``disabled`` stops its requesters from filing."""
        return _agency(
            service.update_agency(
                who,
                agency_id,
                name=body.name,
                jurisdiction=body.jurisdiction,
                mail_domains=body.mail_domains,
                callback_phone=body.callback_phone,
                disabled=body.disabled,
            )
        )

    @gated(
        app,
        "POST",
        "/api/requests",
        Permission.DISCLOSURE_REQUEST_FILE,
        tags=tags,
        status_code=201,
    )
    def file_request(body: FilingBody, who: Caller) -> dict[str, Any]:
        """File a request (verified requesters only)."""
        stored = service.file(
            who,
            type=body.type,
            start=body.start,
            end=body.end,
            description=body.description,
            camera=body.camera,
            address=body.address,
            cameras=body.cameras,
            order_kind=body.order_kind,
            case_number=body.case_number,
            court=body.court,
            nondisclosure_order=body.nondisclosure_order,
            nondisclosure_until=body.nondisclosure_until,
            facts=body.facts,
            attested=body.attested,
            documents=_documents(body.documents),
        )
        return service.view(who, stored)

    @gated(app, "GET", "/api/requests", Permission.DISCLOSURE_REQUEST_READ, tags=tags)
    def list_requests(
        who: Caller,
        state: Annotated[list[d.State] | None, Query(max_length=20)] = None,
    ) -> list[dict[str, Any]]:
        """The requests the caller may see, newest first (without their steps)."""
        rows = service.requests(who, states=[str(s) for s in state] if state else None)
        out = []
        for stored in rows:
            view = service.view(who, stored)
            view.pop("transitions", None)
            out.append(view)
        return out

    @gated(app, "GET", "/api/requests/{request_id}", Permission.DISCLOSURE_REQUEST_READ, tags=tags)
    def get_request(request_id: RequestId, who: Caller) -> dict[str, Any]:
        """One request with its steps (actor, time, reason)."""
        return service.view(who, service.get(who, request_id))

    @gated(
        app,
        "GET",
        "/api/requests/{request_id}/documents/{doc_id}",
        Permission.DISCLOSURE_REQUEST_READ,
        tags=tags,
        response_class=FileResponse,
    )
    def get_document(request_id: RequestId, doc_id: int, who: Caller) -> Response:
        """A document filed with a request."""
        name, content_type, path = service.document(who, request_id, doc_id)
        return FileResponse(
            path,
            media_type=content_type,
            filename=name,
            headers={"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"},
        )

    @gated(
        app,
        "POST",
        "/api/requests/{request_id}/answer",
        Permission.DISCLOSURE_REQUEST_ANSWER,
        tags=tags,
    )
    def answer(
        request_id: RequestId, body: AnswerBody, who: Caller, session: Session
    ) -> dict[str, Any]:
        """The owner grants (all, or a narrower ``scope``) or declines a consent request. A
        grant over sealed footage is packaged at once with the household keys of the
        caller's password session (401 "sign in again to unlock" without them, nothing
        changed); should the package fail, the grant stands and ``awaiting_keys`` is
        ``owner`` (retry with ``POST .../fulfil``)."""
        stored = service.get(who, request_id)
        if body.decision == "decline":
            return service.view(who, service.act(who, request_id, d.OwnerDecline(body.reason)))
        grant = d.OwnerGrant(_scope(service, stored.household, body.scope), body.reason)
        keys = SessionKeys(ctx.keys, session)
        return service.view(who, service.grant(who, request_id, grant, keys))

    @gated(
        app,
        "POST",
        "/api/requests/{request_id}/fulfil",
        Permission.DISCLOSURE_REQUEST_ANSWER,
        tags=tags,
    )
    def fulfil(request_id: RequestId, who: Caller, session: Session) -> dict[str, Any]:
        """The owner makes the package of a consent they granted over sealed footage that
        waits for their keys, with the household keys of their password session (401 "sign
        in again to unlock" without them; 409 when it is not waiting)."""
        keys = SessionKeys(ctx.keys, session)
        return service.view(who, service.owner_fulfil(who, request_id, keys))

    @gated(
        app,
        "POST",
        "/api/requests/{request_id}/review",
        Permission.DISCLOSURE_REQUEST_REVIEW,
        tags=tags,
    )
    def review(request_id: RequestId, body: ReviewBody, who: Caller) -> dict[str, Any]:
        """A staff step: narrow, accept (legal orders, preservation), reject (with a code),
        callback (the agency's registered number), approve (emergencies), renew, close."""
        stored = service.get(who, request_id)
        scope = _scope(service, stored.household, body.scope)
        action: d.Action
        match body.action:
            case "narrow":
                if scope is None:
                    raise InvalidRequestError("narrowing needs a scope")
                action = d.Narrow(scope, body.reason)
            case "accept":
                action = d.Accept(body.reason, scope)
            case "reject":
                if body.code is None:
                    raise InvalidRequestError("a rejection needs a code")
                action = d.Reject(body.code, body.reason)
            case "callback":
                action = d.RecordCallback(body.number, body.confirmed, body.note)
            case "approve":
                action = d.Approve(body.reason)
            case "renew":
                action = d.Renew(body.reason)
            case _:
                action = d.Close(body.reason)
        return service.view(who, service.act(who, request_id, action))

    @gated(
        app,
        "POST",
        "/api/requests/{request_id}/withdraw",
        Permission.DISCLOSURE_REQUEST_FILE,
        tags=tags,
    )
    def withdraw(request_id: RequestId, body: ReasonBody, who: Caller) -> dict[str, Any]:
        """The requester withdraws their request (before fulfilment)."""
        return service.view(who, service.act(who, request_id, d.Withdraw(body.reason)))

    @gated(
        app,
        "POST",
        "/api/requests/{request_id}/renew",
        Permission.DISCLOSURE_REQUEST_FILE,
        tags=tags,
    )
    def renew(request_id: RequestId, body: ReasonBody, who: Caller) -> dict[str, Any]:
        """The requester renews a preservation hold once, for another 90 days."""
        return service.view(who, service.act(who, request_id, d.Renew(body.reason)))

    @gated(
        app,
        "POST",
        "/api/requests/{request_id}/links",
        Permission.DISCLOSURE_PACKAGE_DOWNLOAD,
        tags=tags,
        status_code=201,
    )
    def new_link(request_id: RequestId, who: Caller) -> dict[str, Any]:
        """A download link for the requester's fulfilled request (shown once; expires)."""
        secret, expires = service.new_link(who, request_id)
        return {
            "url": f"/api/requests/{request_id}/package?token={secret}",
            "expires_at": expires,
        }

    @gated(
        app,
        "GET",
        "/api/requests/{request_id}/package",
        Permission.DISCLOSURE_PACKAGE_DOWNLOAD,
        tags=tags,
        response_class=FileResponse,
    )
    def package(
        request_id: RequestId,
        who: Caller,
        token: Annotated[str, Query(max_length=128)] = "",
    ) -> Response:
        """The package zip through a download link (the requester's own, unexpired)."""
        path = service.download(who, request_id, token)
        return FileResponse(
            path,
            media_type="application/zip",
            filename=path.name,
            headers={"Cache-Control": "no-store, private"},
        )

    @gated(app, "GET", "/api/holds", Permission.DISCLOSURE_REQUEST_REVIEW, tags=tags)
    def holds(
        active: Annotated[bool, Query(description="only holds in force now")] = True,
    ) -> list[dict[str, Any]]:
        """Footage held from retention (preservation requests, open requests), by start:
        camera, window (UTC epoch s), why, until when (None: until released)."""
        now = ctx.clock()
        return [
            {
                "id": h.id,
                "camera": h.camera,
                "start": h.start,
                "end": h.end,
                "reason": h.reason,
                "created_at": h.created_at,
                "expires_at": h.expires_at,
            }
            for h in ctx.index.holds(active_at=now if active else None)
        ]

    @gated(app, "GET", "/api/notices", Permission.DISCLOSURE_NOTICE_READ, tags=tags)
    def notices(who: Caller) -> list[dict[str, Any]]:
        """The owner's inbox, staff alerts (legal reviewers and custodians), or a
        requester's notices about their requests."""
        if who.role is Role.OWNER and who.household is not None:
            rows = service.notices.owner_notices(who.household)
        elif who.role in (Role.LEGAL_REVIEWER, Role.CUSTODIAN):
            rows = service.notices.staff_alerts()
        elif who.role is Role.REQUESTER and who.user_id is not None:
            rows = service.notices.user_notices(who.user_id)
        else:
            raise PermissionDeniedError("no notices for this account")
        return [
            {
                "id": n.id,
                "subject": n.subject,
                "body": n.body,
                "request_id": n.request_id,
                "created_at": n.created_at,
                "delivery": n.delivery,
            }
            for n in rows
        ]

    @gated(app, "GET", "/api/policy", Permission.DISCLOSURE_POLICY_MANAGE, tags=tags)
    def get_policy(who: Caller) -> PolicyBody:
        """The household's disclosure policy."""
        household = _household(who)
        policy, email, address = service.policy(household)
        return PolicyBody(
            emergency_allowed=policy.emergency_allowed,
            notice_delay=policy.notice_delay,
            emergency_max_window=policy.emergency_max_window,
            emergency_overlong=policy.emergency_overlong,
            notice_email=email,
            address=address,
        )

    @gated(app, "PUT", "/api/policy", Permission.DISCLOSURE_POLICY_MANAGE, tags=tags)
    def put_policy(body: PolicyBody, who: Caller) -> PolicyBody:
        """Set the household's disclosure policy, notice address and street address."""
        _household(who)
        policy = d.Policy(
            emergency_allowed=body.emergency_allowed,
            notice_delay=body.notice_delay,
            emergency_max_window=body.emergency_max_window,
            emergency_overlong=body.emergency_overlong,
        )
        service.set_policy(who, policy, notice_email=body.notice_email, address=body.address)
        return get_policy(who)

    return service


def _household(who: Principal) -> str:
    if who.household is None:
        raise PermissionDeniedError("only a household's owner has a disclosure policy")
    return who.household


def _agency(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "jurisdiction": a.jurisdiction,
        "mail_domains": list(a.mail_domains),
        "callback_phone": a.callback_phone,
        "disabled": a.disabled,
    }
