"""Disclosure requests in the web app: the requester portal, the owner's inbox, the staff
review queue, the agencies' allow-list and the household's disclosure policy.

Pages (every route declared with :func:`homewarden.web.routing.gated`, hidden from OpenAPI;
forms POST with the ``csrf_token`` field and answer 303, except the one showing a download
link once; a form the service refuses re-renders with the reason and 400, or 409 for a step
the request's state does not allow, 403 for a step the caller may not take):

- ``/requesters/signup`` (anyone; the anonymous double-submit CSRF token, like ``/login``):
  an officer picks their agency, gives their official mail address and a username; the
  one-time setup link (password and TOTP) goes to that mailbox only.
- ``/requests``: a requester's requests and the form to file one (documents as a multipart
  upload); an owner's inbox (the requests they may see, and their notices); the legal
  reviewers' and custodians' review queue (and staff alerts).
- ``/requests/{id}``: one request, its full history (time, actor, from -> to, reason) and the
  steps the caller may take: the owner grants (whole or narrowed) or declines (a grant over
  sealed footage is packaged at once with the keys of the owner's session, 401 "sign in again
  to unlock" without them; one whose package failed waits for the owner's keys and offers
  "make the package"); staff narrow,
  accept, reject, record the call-back to the agency's registered number, approve, renew,
  close; the requester withdraws, renews, or gets a download link (shown once).
- ``/staff/agencies``: the allow-list (legal reviewers, custodians).
- ``/settings/policy``: the owner's household policy (emergency disclosure allowed or
  refused, notice delay up to 24 h, the emergency window cap, notice address, street address).

The rules are :class:`~homewarden.services.disclosure.DisclosureService`'s and
:mod:`homewarden.domain.disclosure`'s (18 U.S.C. 2702(b)(8), 2703, 2705(b)); which requests a
caller sees is :meth:`DisclosureService.get`'s (another's request is a 404). Times are shown
and entered in UTC (ISO 8601; ``datetime-local`` inputs are read as UTC).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Path, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from homewarden.domain import disclosure as d
from homewarden.domain.permissions import Permission, Principal, Role
from homewarden.errors import (
    HomeWardenError,
    InvalidRequestError,
    InvalidTransitionError,
    KeysLockedError,
    KeyUnavailableError,
    NotFoundError,
    NoticeDeliveryError,
    PermissionDeniedError,
    SealedDataError,
)
from homewarden.services.disclosure import MAX_DOCUMENT_BYTES, DisclosureService, Document
from homewarden.services.runtime import AppContext
from homewarden.services.sealed_footage import SessionKeys
from homewarden.store.disclosure_store import StoredRequest
from homewarden.timefmt import utc_seconds_text
from homewarden.web.disclosure_routes import service_of
from homewarden.web.pages import Pages, see_other
from homewarden.web.routing import F, gated

TextField = Annotated[str, Form()]
ListField = Annotated[list[str] | None, Form()]
RequestId = Annotated[str, Path(max_length=64, description="request id")]

#: Errors a form step may meet that re-render the form with their reason.
FORM_ERRORS = (InvalidRequestError, InvalidTransitionError, PermissionDeniedError)
#: Errors of opening sealed footage with the owner's session keys (re-render, with reason).
KEY_ERRORS = (KeysLockedError, KeyUnavailableError, SealedDataError)
#: Fixed notices of ``?done=`` on these pages (never reflected text).
DONE = {
    "filed": "Request filed.",
    "answered": "Your answer is recorded.",
    "packaged": "The package was made with your keys.",
    "step": "Step recorded.",
    "withdrawn": "Request withdrawn.",
    "renewed": "Preservation renewed for another 90 days.",
    "agency": "Agency saved.",
    "policy": "Disclosure policy saved.",
    "mailed": "A setup link was mailed to the official address you gave. Open it to choose "
    "a password and enrol a TOTP app; until then the account can file nothing.",
}
#: States in which staff have something to decide.
_QUEUE = frozenset({d.State.UNDER_REVIEW})
_DECIDED = frozenset(
    {d.State.APPROVED, d.State.NARROWED, d.State.NOTICE_SCHEDULED, d.State.OWNER_NOTIFIED}
)
_OPEN = frozenset({d.State.UNDER_REVIEW, d.State.AWAITING_OWNER})


def iso(ts: float | None) -> str:
    """UTC epoch seconds as ISO 8601 with a ``Z`` (``2024-05-01T12:00:00Z``); ``-`` for None."""
    return "-" if ts is None else utc_seconds_text(ts)


def utc(ts: float | None) -> Markup:
    """A ``<time>`` element showing ``ts`` in UTC ISO 8601 (no ``data-epoch``: ``app.js``
    leaves it in UTC), or an em dash for None."""
    if ts is None:
        return Markup("&mdash;")
    text = iso(ts)
    return Markup('<time datetime="{}">{}</time>').format(text, text)


def input_value(ts: float | None) -> str:
    """``ts`` as a ``datetime-local`` input value in UTC (``YYYY-MM-DDTHH:MM:SS``)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def span(seconds: float) -> str:
    """A length of time, seconds, for people: ``2 h``, ``1 h 30 min``, ``45 min``, ``20 s``."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    hours, rest = divmod(total, 3600)
    minutes = rest // 60
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


def parse_utc(value: str, what: str) -> float:
    """A ``datetime-local`` value (or any ISO 8601 date-time) read as UTC, to epoch seconds.

    Raises:
        InvalidRequestError: empty or not a date-time.
    """
    text = value.strip()
    if not text:
        raise InvalidRequestError(f"the {what} is required (UTC)")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"the {what} {text!r} is not a date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_date(value: str, what: str) -> float:
    """A ``date`` input value (``YYYY-MM-DD``) as midnight UTC, epoch seconds.

    Raises:
        InvalidRequestError: not a date.
    """
    try:
        moment = datetime.strptime(value.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequestError(f"the {what} {value!r} is not a date (YYYY-MM-DD)") from None
    return moment.timestamp()


def _number(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequestError(f"the {what} must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidRequestError(f"the {what} must be a number")
    return number


def _names(text: str) -> list[str]:
    """Names typed into one field, separated by commas or spaces."""
    return [n for n in re.split(r"[\s,;]+", text.strip()) if n]


def _choice(enum: type[Any], value: str, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise InvalidRequestError(f"{value!r} is not a {what}") from None


def _scope(stored: StoredRequest, cameras: list[str] | None, start: str, end: str) -> d.Scope:
    """The narrower scope a form asks for (the request's household).

    Raises:
        InvalidRequestError: no camera ticked, or a window that is not one.
    """
    if not cameras:
        raise InvalidRequestError("tick at least one camera")
    return d.Scope(
        stored.household,
        tuple(cameras),
        parse_utc(start, "window start"),
        parse_utc(end, "window end"),
    )


def actions_for(who: Principal, view: dict[str, Any], package: str | None) -> set[str]:
    """The steps the request page offers ``who`` on a request shown as ``view`` (the
    service's JSON view); the domain still decides each step when it is taken."""
    state = d.State(view["state"])
    kind = d.RequestType(view["type"])
    out: set[str] = set()
    role = who.role
    if role is Role.OWNER:
        if kind is d.RequestType.CONSENT and state is d.State.AWAITING_OWNER:
            out |= {"grant", "decline"}
        if (
            kind is d.RequestType.CONSENT
            and state in _DECIDED
            and view.get("awaiting_keys") == "owner"
            and package is None
        ):
            out.add("fulfil")
    elif role in (Role.LEGAL_REVIEWER, Role.CUSTODIAN):
        legal = role is Role.LEGAL_REVIEWER
        if legal and state in _OPEN:
            out.add("narrow")
        if (
            legal
            and state is d.State.UNDER_REVIEW
            and kind in (d.RequestType.LEGAL_ORDER, d.RequestType.PRESERVATION)
        ):
            out.add("accept")
        if state in _OPEN and kind is not d.RequestType.CONSENT:
            out.add("reject")
        if kind is d.RequestType.EMERGENCY and state is d.State.UNDER_REVIEW:
            out.add("callback")
            approvers = {a["id"] for a in view.get("approvals", [])}
            if str(who.user_id) not in approvers:
                out.add("approve")
        if (
            legal
            and kind is d.RequestType.PRESERVATION
            and state in _DECIDED
            and not view["hold_renewed"]
        ):
            out.add("renew")
        if state is d.State.FULFILLED:
            out.add("close")
    elif role is Role.REQUESTER:
        if not state.terminal and state is not d.State.FULFILLED:
            out.add("withdraw")
        if kind is d.RequestType.PRESERVATION and state in _DECIDED and not view["hold_renewed"]:
            out.add("renew")
        if package not in (None, "none"):
            out.add("link")
    return out


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the disclosure pages to ``app`` (after :func:`disclosure_routes.add_routes`, whose
    service they share through ``app.state.disclosure``)."""
    service: DisclosureService = getattr(app.state, "disclosure", None) or service_of(ctx)
    pages = Pages(ctx)
    pages.env.globals.update(utc=utc, input_value=input_value, span=span, iso=iso)

    def page(method: str, path: str, *permissions: Permission) -> Callable[[F], F]:
        return gated(
            app, method, path, *permissions, include_in_schema=False, response_class=HTMLResponse
        )

    def me(request: Request) -> Principal:
        return pages.caller(request).principal

    def done(request: Request) -> str | None:
        return DONE.get(request.query_params.get("done", ""))

    def keys(request: Request) -> SessionKeys:
        return SessionKeys(ctx.keys, pages.caller(request).session)

    _add_signup(page, pages, service, done)
    _add_request_pages(page, pages, service, me, done, keys)
    _add_staff_pages(page, pages, service, me, done)
    _add_policy_pages(page, pages, service, me, done)


Page = Callable[..., Callable[[Callable[..., Any]], Any]]
Me = Callable[[Request], Principal]
Keys = Callable[[Request], SessionKeys]
Done = Callable[[Request], str | None]


def _status(exc: HomeWardenError) -> int:
    """The status of a form the service refused: 403 for a step the caller may not take, 409
    for one the request's state does not allow, else 400 (a malformed form, an unknown
    household or agency, mail that could not be sent)."""
    if isinstance(exc, KeysLockedError):
        return 401
    if isinstance(exc, PermissionDeniedError | KeyUnavailableError):
        return 403
    if isinstance(exc, InvalidTransitionError):
        return 409
    return 400


# --- sign-up -------------------------------------------------------------------------------


def _add_signup(page: Page, pages: Pages, service: DisclosureService, done: Done) -> None:
    def signup_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        return pages.render(
            request,
            "signup_requester.html",
            status,
            agencies=[a for a in service.agencies() if not a.disabled],
            error=error,
            form=form or {},
            done=done(request),
        )

    @page("GET", "/requesters/signup", Permission.ACCOUNTS_REQUESTER_SIGNUP)
    def signup_form(request: Request) -> Response:
        """The requester sign-up form: agency, official mail address, username."""
        return signup_page(request)

    @page("POST", "/requesters/signup", Permission.ACCOUNTS_REQUESTER_SIGNUP)
    def signup(
        request: Request,
        agency_id: TextField = "",
        email: TextField = "",
        username: TextField = "",
        display_name: TextField = "",
    ) -> Response:
        """Sign up; the setup link is mailed to the official address only."""
        form = {
            "agency_id": agency_id,
            "email": email,
            "username": username,
            "display_name": display_name,
        }
        try:
            try:
                agency = int(agency_id)
            except ValueError:
                raise InvalidRequestError("choose your agency") from None
            service.signup(agency, email.strip(), username.strip(), display_name.strip()[:200])
        except (*FORM_ERRORS, NotFoundError, NoticeDeliveryError) as exc:
            return signup_page(request, _status(exc), str(exc), form)
        return see_other("/requesters/signup?done=mailed")


# --- requests ------------------------------------------------------------------------------


def _add_request_pages(
    page: Page, pages: Pages, service: DisclosureService, me: Me, done: Done, keys: Keys
) -> None:
    def list_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        form: dict[str, Any] | None = None,
    ) -> Response:
        who = me(request)
        rows = [(s, service.view(who, s)) for s in service.requests(who)]
        values: dict[str, Any] = {
            "rows": rows,
            "error": error,
            "form": form or {},
            "done": done(request),
            "types": list(d.RequestType),
            "order_kinds": list(d.OrderKind),
            "facts": list(d.AccountFact),
            "problem": None,
            "notices": [],
            "queue": [],
        }
        if who.role is Role.REQUESTER and who.user_id is not None:
            values["problem"] = service.requester_problem(who.user_id)
            values["notices"] = service.notices.user_notices(who.user_id, limit=20)
            template = "requests_requester.html"
        elif who.role is Role.OWNER and who.household is not None:
            values["notices"] = service.notices.owner_notices(who.household, limit=50)
            template = "requests_owner.html"
        elif who.role in (Role.LEGAL_REVIEWER, Role.CUSTODIAN):
            values["queue"] = [r for r in rows if d.State(r[1]["state"]) in _QUEUE]
            values["notices"] = service.notices.staff_alerts(limit=50)
            template = "requests_staff.html"
        else:
            raise PermissionDeniedError("this account has no disclosure requests")
        return pages.render(request, template, status, **values)

    def detail_page(
        request: Request,
        request_id: str,
        status: int = 200,
        error: str | None = None,
        link: tuple[str, float] | None = None,
    ) -> Response:
        who = me(request)
        stored = service.get(who, request_id)
        view = service.view(who, stored)
        agency = None
        if who.role in (Role.LEGAL_REVIEWER, Role.CUSTODIAN):
            try:
                agency = service.store.agency(stored.agency_id)
            except NotFoundError:
                agency = None
        return pages.render(
            request,
            "request_detail.html",
            status,
            r=view,
            actions=actions_for(who, view, stored.package),
            agency=agency,
            error=error,
            link=link,
            done=done(request),
            reject_codes=[
                c for c in d.RejectCode if c is not d.RejectCode.INDEFINITE_NONDISCLOSURE
            ],
            role=str(who.role),
        )

    @page("GET", "/requests", Permission.DISCLOSURE_REQUEST_READ)
    def requests(request: Request) -> Response:
        """A requester's requests and filing form, an owner's inbox, or the review queue."""
        return list_page(request)

    @page("POST", "/requests", Permission.DISCLOSURE_REQUEST_FILE)
    def file_request(
        request: Request,
        type: TextField = "",
        order_kind: TextField = "",
        case_number: TextField = "",
        court: TextField = "",
        camera: TextField = "",
        address: TextField = "",
        cameras: TextField = "",
        start: TextField = "",
        end: TextField = "",
        description: TextField = "",
        attested: TextField = "",
        nondisclosure_order: TextField = "",
        nondisclosure_until: TextField = "",
        facts: ListField = None,
        documents: Annotated[list[UploadFile] | None, File()] = None,
    ) -> Response:
        """File a request (multipart: its documents as files); on to its page."""
        who = me(request)
        form: dict[str, Any] = {
            "type": type,
            "order_kind": order_kind,
            "case_number": case_number,
            "court": court,
            "camera": camera,
            "address": address,
            "cameras": cameras,
            "start": start,
            "end": end,
            "description": description,
            "attested": bool(attested),
            "nondisclosure_order": bool(nondisclosure_order),
            "nondisclosure_until": nondisclosure_until,
            "facts": facts or [],
        }
        try:
            kind = _choice(d.RequestType, type, "request type")
            docs = []
            for upload in documents or []:
                if not upload.filename:
                    continue  # an empty file input
                data = upload.file.read(MAX_DOCUMENT_BYTES + 1)
                docs.append(Document(upload.filename, upload.content_type or "", data))
            stored = service.file(
                who,
                type=kind,
                start=parse_utc(start, "window start"),
                end=parse_utc(end, "window end"),
                description=description,
                camera=camera.strip() or None,
                address=address.strip() or None,
                cameras=_names(cameras),
                order_kind=_choice(d.OrderKind, order_kind, "kind of order")
                if order_kind
                else None,
                case_number=case_number,
                court=court,
                nondisclosure_order=bool(nondisclosure_order),
                nondisclosure_until=parse_date(nondisclosure_until, "non-disclosure end date")
                if nondisclosure_until.strip()
                else None,
                facts=[_choice(d.AccountFact, f, "account fact") for f in facts or []],
                attested=bool(attested),
                documents=docs,
            )
        except (*FORM_ERRORS, NotFoundError) as exc:
            return list_page(request, _status(exc), str(exc), form)
        return see_other(f"/requests/{stored.id}?done=filed")

    @page("GET", "/requests/{request_id}", Permission.DISCLOSURE_REQUEST_READ)
    def detail(request: Request, request_id: RequestId) -> Response:
        """One request: its scope, documents, history, and the caller's possible steps."""
        return detail_page(request, request_id)

    def step(request: Request, request_id: str, action: d.Action, note: str) -> Response:
        try:
            service.act(me(request), request_id, action)
        except FORM_ERRORS as exc:
            return detail_page(request, request_id, _status(exc), str(exc))
        return see_other(f"/requests/{request_id}?done={note}")

    @page("POST", "/requests/{request_id}/answer", Permission.DISCLOSURE_REQUEST_ANSWER)
    def answer(
        request: Request,
        request_id: RequestId,
        decision: TextField = "",
        reason: TextField = "",
        part: TextField = "",
        camera: ListField = None,
        start: TextField = "",
        end: TextField = "",
    ) -> Response:
        """The owner grants a consent request (whole, or the ticked cameras and window when
        ``part`` is set) or declines it."""
        stored = service.get(me(request), request_id)
        if decision == "decline":
            return step(request, request_id, d.OwnerDecline(reason), "answered")
        try:
            if decision != "grant":
                raise InvalidRequestError("grant or decline")
            scope = _scope(stored, camera, start, end) if part else None
        except InvalidRequestError as exc:
            return detail_page(request, request_id, 400, str(exc))
        try:
            service.grant(me(request), request_id, d.OwnerGrant(scope, reason), keys(request))
        except (*FORM_ERRORS, *KEY_ERRORS) as exc:
            return detail_page(request, request_id, _status(exc), str(exc))
        return see_other(f"/requests/{request_id}?done=answered")

    @page("POST", "/requests/{request_id}/fulfil", Permission.DISCLOSURE_REQUEST_ANSWER)
    def fulfil(request: Request, request_id: RequestId) -> Response:
        """The owner makes the package of a consent they granted over sealed footage that
        waits for their keys, with their session's keys."""
        try:
            service.owner_fulfil(me(request), request_id, keys(request))
        except (*FORM_ERRORS, *KEY_ERRORS) as exc:
            return detail_page(request, request_id, _status(exc), str(exc))
        return see_other(f"/requests/{request_id}?done=packaged")

    @page("POST", "/requests/{request_id}/review", Permission.DISCLOSURE_REQUEST_REVIEW)
    def review(
        request: Request,
        request_id: RequestId,
        action: TextField = "",
        reason: TextField = "",
        code: TextField = "",
        number: TextField = "",
        confirmed: TextField = "",
        note: TextField = "",
        part: TextField = "",
        camera: ListField = None,
        start: TextField = "",
        end: TextField = "",
    ) -> Response:
        """A staff step: narrow, accept (whole or narrowed), reject with a code, record the
        call-back, approve, renew, close."""
        stored = service.get(me(request), request_id)
        try:
            step_: d.Action
            match action:
                case "narrow":
                    step_ = d.Narrow(_scope(stored, camera, start, end), reason)
                case "accept":
                    scope = _scope(stored, camera, start, end) if part else None
                    step_ = d.Accept(reason, scope)
                case "reject":
                    step_ = d.Reject(_choice(d.RejectCode, code, "rejection code"), reason)
                case "callback":
                    step_ = d.RecordCallback(number, bool(confirmed), note)
                case "approve":
                    step_ = d.Approve(reason)
                case "renew":
                    step_ = d.Renew(reason)
                case "close":
                    step_ = d.Close(reason)
                case _:
                    raise InvalidRequestError(f"no step {action!r}")
        except InvalidRequestError as exc:
            return detail_page(request, request_id, 400, str(exc))
        return step(request, request_id, step_, "step")

    @page("POST", "/requests/{request_id}/withdraw", Permission.DISCLOSURE_REQUEST_FILE)
    def withdraw(request: Request, request_id: RequestId, reason: TextField = "") -> Response:
        """The requester withdraws their request."""
        return step(request, request_id, d.Withdraw(reason), "withdrawn")

    @page("POST", "/requests/{request_id}/renew", Permission.DISCLOSURE_REQUEST_FILE)
    def renew(request: Request, request_id: RequestId, reason: TextField = "") -> Response:
        """The requester renews a preservation hold once."""
        return step(request, request_id, d.Renew(reason), "renewed")

    @page("POST", "/requests/{request_id}/link", Permission.DISCLOSURE_PACKAGE_DOWNLOAD)
    def new_link(request: Request, request_id: RequestId) -> Response:
        """A download link for the package, shown once on the page this answers with."""
        try:
            secret, expires = service.new_link(me(request), request_id)
        except FORM_ERRORS as exc:
            return detail_page(request, request_id, _status(exc), str(exc))
        url = f"/api/requests/{request_id}/package?token={secret}"
        return detail_page(request, request_id, link=(url, expires))


# --- staff: agencies -----------------------------------------------------------------------


def _add_staff_pages(
    page: Page, pages: Pages, service: DisclosureService, me: Me, done: Done
) -> None:
    def agencies_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        return pages.render(
            request,
            "agencies.html",
            status,
            agencies=service.agencies(),
            error=error,
            form=form or {},
            done=done(request),
        )

    @page("GET", "/staff/agencies", Permission.DISCLOSURE_AGENCY_MANAGE)
    def agencies(request: Request) -> Response:
        """The allow-list of agencies, with their call-back numbers."""
        return agencies_page(request)

    @page("POST", "/staff/agencies", Permission.DISCLOSURE_AGENCY_MANAGE)
    def add_agency(
        request: Request,
        name: TextField = "",
        jurisdiction: TextField = "",
        mail_domains: TextField = "",
        callback_phone: TextField = "",
    ) -> Response:
        """Put an agency on the allow-list."""
        try:
            service.add_agency(
                me(request), name, jurisdiction, _names(mail_domains), callback_phone
            )
        except FORM_ERRORS as exc:
            form = {
                "name": name,
                "jurisdiction": jurisdiction,
                "mail_domains": mail_domains,
                "callback_phone": callback_phone,
            }
            return agencies_page(request, _status(exc), str(exc), form)
        return see_other("/staff/agencies?done=agency")

    @page("POST", "/staff/agencies/{agency_id}", Permission.DISCLOSURE_AGENCY_MANAGE)
    def edit_agency(
        request: Request,
        agency_id: int,
        name: TextField = "",
        jurisdiction: TextField = "",
        mail_domains: TextField = "",
        callback_phone: TextField = "",
        disabled: TextField = "",
    ) -> Response:
        """Change an agency; disabling it stops its requesters from filing."""
        try:
            service.update_agency(
                me(request),
                agency_id,
                name=name,
                jurisdiction=jurisdiction,
                mail_domains=_names(mail_domains),
                callback_phone=callback_phone,
                disabled=bool(disabled),
            )
        except FORM_ERRORS as exc:
            return agencies_page(request, _status(exc), str(exc))
        return see_other("/staff/agencies?done=agency")


# --- owner: policy -------------------------------------------------------------------------


def _add_policy_pages(
    page: Page, pages: Pages, service: DisclosureService, me: Me, done: Done
) -> None:
    def household(request: Request) -> str:
        found = me(request).household
        if found is None:
            raise PermissionDeniedError("only a household's owner has a disclosure policy")
        return found

    def policy_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        policy, email, address = service.policy(household(request))
        values = {
            "emergency": "allowed" if policy.emergency_allowed else "refused",
            "notice_delay_hours": f"{policy.notice_delay / 3600:g}",
            "window_minutes": f"{policy.emergency_max_window / 60:g}",
            "overlong": str(policy.emergency_overlong),
            "notice_email": email or "",
            "address": address or "",
        }
        return pages.render(
            request,
            "policy.html",
            status,
            policy=policy,
            v={**values, **(form or {})},
            max_hours=d.EMERGENCY_NOTICE_MAX_DELAY / 3600,
            max_minutes=d.EMERGENCY_MAX_WINDOW / 60,
            error=error,
            done=done(request),
        )

    @page("GET", "/settings/policy", Permission.DISCLOSURE_POLICY_MANAGE)
    def policy(request: Request) -> Response:
        """The household's disclosure policy."""
        return policy_page(request)

    @page("POST", "/settings/policy", Permission.DISCLOSURE_POLICY_MANAGE)
    def set_policy(
        request: Request,
        emergency: TextField = "",
        notice_delay_hours: TextField = "0",
        window_minutes: TextField = "",
        overlong: TextField = "cap",
        notice_email: TextField = "",
        address: TextField = "",
    ) -> Response:
        """Save the policy, the notice address and the street address."""
        form = {
            "emergency": emergency,
            "notice_delay_hours": notice_delay_hours,
            "window_minutes": window_minutes,
            "overlong": overlong,
            "notice_email": notice_email,
            "address": address,
        }
        try:
            if emergency not in ("allowed", "refused"):
                raise InvalidRequestError("choose whether emergency disclosure is allowed")
            rule = d.Policy(
                emergency_allowed=emergency == "allowed",
                notice_delay=_number(notice_delay_hours, "notice delay") * 3600,
                emergency_max_window=_number(window_minutes, "emergency window") * 60,
                emergency_overlong=_choice(d.Overlong, overlong, "choice for longer windows"),
            )
            service.set_policy(me(request), rule, notice_email=notice_email, address=address)
        except FORM_ERRORS as exc:
            return policy_page(request, _status(exc), str(exc), form)
        return see_other("/settings/policy?done=policy")
