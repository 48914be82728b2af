"""Custodians' escrow shares for emergency requests over sealed footage, in the JSON API and a
page (see :mod:`homewarden.services.emergency_escrow` for the rules).

Every route needs ``keys:escrow-share:enter``, which custodians hold and API tokens never do
(:data:`~homewarden.domain.permissions.TOKEN_EXCLUDED`): a share is entered by a custodian
signed in with their password and TOTP.

- ``POST /api/requests/{id}/escrow-share`` ``{"share": "HWES-..."}``: enter one's share;
  answers ``{"state": "waiting for a second custodian", "expires_at": ...}`` while it is the
  first one held, or ``{"state": "fulfilled", "package": ...}`` once a second custodian's
  share fulfilled the request. Errors are RFC 9457 problems
  (:mod:`homewarden.web.problems`): 409 ``invalid-transition`` (not an emergency, not
  approved, fulfilled already, no sealed footage), 422 ``key-share`` (a mistyped share, or
  two that do not combine: both dropped), 403 (not a custodian; the owner has not opted in).
- ``GET /requests/{id}/escrow-share``: the page for custodians: the request, whether a share
  is held for it (by which custodian account, until when; never the share) and the form.
- ``POST /requests/{id}/escrow-share`` (form, ``csrf_token``): the form's step; the page again
  with the outcome, or the reason it was refused (status as for the API).

Without household key management on this server (``AppContext.keys`` None) the routes answer
404.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from homewarden.domain.permissions import Permission, Principal
from homewarden.errors import HomeWardenError, NotFoundError
from homewarden.services.disclosure import DisclosureService
from homewarden.services.emergency_escrow import EmergencyShareCollector, ShareAnswer
from homewarden.services.runtime import AppContext
from homewarden.web.deps import caller
from homewarden.web.disclosure_pages import utc
from homewarden.web.disclosure_routes import service_of
from homewarden.web.pages import Pages
from homewarden.web.problems import status_for
from homewarden.web.routing import gated

Caller = Annotated[Principal, Depends(caller)]
RequestId = Annotated[str, Path(max_length=64, description="request id")]
#: Longest share text accepted (a share is ~100 characters; spaces and dashes are forgiven).
MAX_SHARE = 400


class ShareBody(BaseModel):
    """One custodian's escrow share, as printed by ``homewarden escrow init``."""

    model_config = ConfigDict(extra="forbid")

    share: str = Field(min_length=1, max_length=MAX_SHARE)


class ShareAnswerBody(BaseModel):
    """What entering the share did (:class:`~homewarden.services.emergency_escrow.ShareAnswer`):
    ``state`` ``waiting for a second custodian`` (``expires_at``: UTC epoch s when this
    share is dropped unused) or ``fulfilled`` (``package``: the package's name, ``none``
    when the scope held no footage); ``request_state``: the request's state now;
    ``replaced``: the caller's own earlier share was replaced."""

    state: Literal["waiting for a second custodian", "fulfilled"]
    request_id: str
    request_state: str
    expires_at: float | None = None
    package: str | None = None
    replaced: bool = False


def _answer(answer: ShareAnswer) -> ShareAnswerBody:
    return ShareAnswerBody(
        state=answer.state,
        request_id=answer.request_id,
        request_state=answer.request_state,
        expires_at=answer.expires_at,
        package=answer.package,
        replaced=answer.replaced,
    )


def add_routes(app: FastAPI, ctx: AppContext) -> EmergencyShareCollector | None:
    """Add the escrow share API and page (see the module docstring) to ``app``, over the
    disclosure service of :func:`~homewarden.web.disclosure_routes.add_routes` (add those
    first); returns the collector (also ``app.state.escrow_shares``), None without keys."""
    service: DisclosureService = getattr(app.state, "disclosure", None) or service_of(ctx)
    collector = None
    if ctx.keys is not None:
        collector = EmergencyShareCollector(
            service, ctx.keys, ctx.audit, ctx.index, clock=ctx.clock
        )
    app.state.escrow_shares = collector
    enter = Permission.KEYS_ESCROW_SHARE_ENTER
    pages = Pages(ctx)
    pages.env.globals["utc"] = utc

    def shares() -> EmergencyShareCollector:
        if collector is None:
            raise NotFoundError("household keys are not managed by this server")
        return collector

    @gated(app, "POST", "/api/requests/{request_id}/escrow-share", enter, tags=["keys"])
    def enter_share(request_id: RequestId, body: ShareBody, who: Caller) -> ShareAnswerBody:
        """A custodian enters their escrow share for an approved emergency request over
        sealed footage: the first is held in this server's memory for 15 min; a second
        custodian's fulfils the request (the keys and both shares dropped after)."""
        return _answer(shares().enter(who, request_id, body.share))

    def share_page(
        request: Request,
        request_id: str,
        who: Principal,
        status: int = 200,
        *,
        error: str | None = None,
        outcome: ShareAnswer | None = None,
    ) -> Response:
        view: dict[str, Any] = service.view(who, service.get(who, request_id))
        collector = shares()
        waiting = None
        try:
            collector.check_waiting(request_id)
            waiting = True
        except HomeWardenError as exc:
            waiting = False
            error = error or (None if outcome is not None else str(exc))
        return pages.render(
            request,
            "escrow_share.html",
            status,
            r=view,
            waiting=waiting,
            held=collector.held(request_id),
            error=error,
            outcome=outcome,
        )

    @gated(
        app,
        "GET",
        "/requests/{request_id}/escrow-share",
        enter,
        include_in_schema=False,
        response_class=HTMLResponse,
    )
    def share_form(request: Request, request_id: RequestId, who: Caller) -> Response:
        """The custodian's page: the request, whether a share is held, the form."""
        return share_page(request, request_id, who)

    @gated(
        app,
        "POST",
        "/requests/{request_id}/escrow-share",
        enter,
        include_in_schema=False,
        response_class=HTMLResponse,
    )
    def share_submit(
        request: Request,
        request_id: RequestId,
        who: Caller,
        share: Annotated[str, Form(max_length=MAX_SHARE)] = "",
    ) -> Response:
        """The form's step: enter the share; the page again with what it did."""
        try:
            outcome = shares().enter(who, request_id, share)
        except NotFoundError:
            raise
        except HomeWardenError as exc:
            return share_page(request, request_id, who, status_for(exc)[0], error=str(exc))
        return share_page(request, request_id, who, outcome=outcome)

    return collector
