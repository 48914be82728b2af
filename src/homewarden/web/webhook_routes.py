"""Webhooks in the JSON API and the web app (owners; see :mod:`homewarden.services.webhooks`).

API (``notify:webhook:read`` to read, ``notify:webhook:manage`` to change; owners hold both,
API tokens only the first: a webhook is a lasting channel out of the home):

- ``GET /api/webhooks``, ``GET /api/webhooks/{id}``: the household's webhooks (never their
  secrets), with their pending and dead-letter counts;
- ``POST /api/webhooks`` ``{"url", "kinds": ["event", "request"]}``: add one (201); the
  answer carries its ``secret`` (``whsec_...``), shown this once;
- ``PUT /api/webhooks/{id}`` ``{"disabled": true|false}`` (nothing else: to change the URL
  or kinds, delete the webhook and add it anew): disable (pending messages become dead
  letters) or enable; ``DELETE /api/webhooks/{id}``: delete it and its deliveries (204);
- ``POST /api/webhooks/{id}/rotate``: a new secret, shown this once;
- ``GET /api/webhooks/deliveries?state=&webhook_id=&limit=``: deliveries, newest first;
- ``POST /api/webhooks/deliveries/{id}/redeliver``: send a dead letter again.

Page: ``/settings/webhooks`` lists the webhooks and dead letters, with forms to add, rotate,
enable, disable and delete a webhook and to send a dead letter again (``csrf_token`` field;
answers 303, except adding and rotating, which show the secret once; a refused form renders
the page again with the reason and 400, or 409 for a delivery that is not a dead letter).

A webhook or delivery of another household is a 404, as everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from homewarden.domain.permissions import Permission, Principal
from homewarden.errors import InvalidRequestError, InvalidTransitionError
from homewarden.services.queries import MAX_ID
from homewarden.services.runtime import AppContext
from homewarden.services.webhooks import (
    BACKOFF,
    KINDS,
    MAX_ATTEMPTS,
    MAX_URL,
    CreatedWebhook,
    DeliveryView,
    WebhookService,
    WebhookView,
)
from homewarden.web.deps import caller
from homewarden.web.pages import Pages, see_other
from homewarden.web.routing import F, gated

Caller = Annotated[Principal, Depends(caller)]
WebhookId = Annotated[int, Path(description="webhook id", ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(description="delivery id", ge=1, le=MAX_ID)]
Kind = Literal["event", "request"]
State = Literal["pending", "delivered", "dead"]
#: Most deliveries one answer lists.
MAX_DELIVERIES = 500
#: Fixed notices of ``?done=`` on the page (never reflected text).
DONE = {
    "deleted": "Webhook deleted.",
    "enabled": "Webhook enabled.",
    "disabled": "Webhook disabled.",
    "redelivered": "The message is queued again; it is sent within seconds.",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookBody(_Strict):
    """A webhook to add: its URL (http or https, no credentials) and what it gets."""

    url: str = Field(max_length=MAX_URL, examples=["http://homeassistant.local:8123/api/webhook/x"])
    kinds: list[Kind] = Field(min_length=1, max_length=len(KINDS), examples=[["event", "request"]])


class WebhookChange(_Strict):
    """Disable or enable a webhook: JSON ``true`` or ``false`` only (a string or a number is
    a 422). The URL and kinds cannot be changed: delete the webhook and add it anew."""

    disabled: StrictBool


def service_of(ctx: AppContext) -> WebhookService:
    """The runtime's webhook service, or one made over the context (tests, tools: it queues
    and lists, and nothing delivers unless a deliverer is run over it)."""
    if ctx.webhooks is not None:
        return ctx.webhooks
    return WebhookService(
        ctx.index, ctx.audit, ctx.current_settings, public_url=ctx.public_url, clock=ctx.clock
    )


def add_routes(app: FastAPI, ctx: AppContext) -> WebhookService:
    """Add the webhook API and page to ``app``; returns the service they use (also kept at
    ``app.state.webhooks``)."""
    service = service_of(ctx)
    app.state.webhooks = service
    _add_api(app, service)
    _add_page(app, ctx, service)
    return service


def _add_api(app: FastAPI, service: WebhookService) -> None:
    read = Permission.NOTIFY_WEBHOOK_READ
    manage = Permission.NOTIFY_WEBHOOK_MANAGE
    tags = ["webhooks"]

    # /deliveries first: it would otherwise be taken for a webhook id.
    @gated(app, "GET", "/api/webhooks/deliveries", read, tags=tags)
    def list_deliveries(
        who: Caller,
        state: Annotated[State | None, Query(description="only deliveries in this state")] = None,
        webhook_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES)] = 100,
    ) -> list[DeliveryView]:
        """Deliveries of the household's webhooks (or of one), newest first: ``pending``
        (waiting for their next attempt), ``delivered`` or ``dead`` (dead letters: every
        attempt failed, or the receiver answered 410 Gone)."""
        return service.deliveries(who, webhook_id=webhook_id, state=state, limit=limit)

    @gated(app, "POST", "/api/webhooks/deliveries/{delivery_id}/redeliver", manage, tags=tags)
    def redeliver(delivery_id: DeliveryId, who: Caller) -> DeliveryView:
        """Send a dead letter again (same message id and body, signed anew), with the whole
        back-off schedule ahead of it. 409 when it is not a dead letter or its webhook is
        disabled."""
        return service.redeliver(who, delivery_id)

    @gated(app, "GET", "/api/webhooks", read, tags=tags)
    def list_webhooks(who: Caller) -> list[WebhookView]:
        """The household's webhooks, by id (never their secrets)."""
        return service.webhooks(who)

    @gated(app, "POST", "/api/webhooks", manage, status_code=201, tags=tags)
    def create_webhook(body: WebhookBody, who: Caller) -> CreatedWebhook:
        """Add a webhook. The answer's ``secret`` (``whsec_`` + base64 of 32 random bytes)
        signs every call (Standard Webhooks); it is shown this once."""
        return service.add(who, body.url, body.kinds)

    @gated(app, "GET", "/api/webhooks/{webhook_id}", read, tags=tags)
    def get_webhook(webhook_id: WebhookId, who: Caller) -> WebhookView:
        """One webhook of the household."""
        return service.webhook(who, webhook_id)

    @gated(app, "PUT", "/api/webhooks/{webhook_id}", manage, tags=tags)
    def change_webhook(webhook_id: WebhookId, body: WebhookChange, who: Caller) -> WebhookView:
        """Disable a webhook (its pending messages become dead letters) or enable it."""
        return service.set_disabled(who, webhook_id, body.disabled)

    @gated(app, "DELETE", "/api/webhooks/{webhook_id}", manage, status_code=204, tags=tags)
    def delete_webhook(webhook_id: WebhookId, who: Caller) -> Response:
        """Delete a webhook and its deliveries."""
        service.remove(who, webhook_id)
        return Response(status_code=204)

    @gated(app, "POST", "/api/webhooks/{webhook_id}/rotate", manage, tags=tags)
    def rotate_secret(webhook_id: WebhookId, who: Caller) -> CreatedWebhook:
        """A new secret for the webhook, shown this once; every call from now on is signed
        with it alone."""
        return service.rotate_secret(who, webhook_id)


def _add_page(app: FastAPI, ctx: AppContext, service: WebhookService) -> None:
    pages = Pages(ctx)
    manage = Permission.NOTIFY_WEBHOOK_MANAGE
    schedule = ", ".join(_span(s) for s in BACKOFF)

    def page(method: str, path: str) -> Callable[[F], F]:
        return gated(
            app, method, path, manage, include_in_schema=False, response_class=HTMLResponse
        )

    def render(
        request: Request,
        who: Principal,
        status: int = 200,
        *,
        error: str | None = None,
        created: CreatedWebhook | None = None,
        form: dict[str, Any] | None = None,
    ) -> Response:
        return pages.render(
            request,
            "settings_webhooks.html",
            status,
            webhooks=service.webhooks(who),
            dead=service.deliveries(who, state="dead", limit=MAX_DELIVERIES),
            recent=service.deliveries(who, limit=20),
            kinds=KINDS,
            created=created,
            error=error,
            done=DONE.get(request.query_params.get("done", "")),
            form=form or {"url": "", "kinds": list(KINDS)},
            schedule=schedule,
            attempts=MAX_ATTEMPTS,
        )

    @page("GET", "/settings/webhooks")
    def webhooks_page(request: Request, who: Caller) -> Response:
        """The household's webhooks and dead letters."""
        return render(request, who)

    @page("POST", "/settings/webhooks")
    def add_webhook(
        request: Request,
        who: Caller,
        url: Annotated[str, Form(max_length=MAX_URL)] = "",
        kinds: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        """Add a webhook; the page shows its secret this once."""
        try:
            created = service.add(who, url, kinds or [])
        except InvalidRequestError as exc:
            form = {"url": url, "kinds": kinds or []}
            return render(request, who, 400, error=str(exc), form=form)
        return render(request, who, created=created)

    @page("POST", "/settings/webhooks/{webhook_id}/rotate")
    def rotate(request: Request, webhook_id: WebhookId, who: Caller) -> Response:
        """A new secret, shown this once."""
        return render(request, who, created=service.rotate_secret(who, webhook_id))

    @page("POST", "/settings/webhooks/{webhook_id}/delete")
    def delete(webhook_id: WebhookId, who: Caller) -> Response:
        """Delete a webhook and its deliveries."""
        service.remove(who, webhook_id)
        return see_other("/settings/webhooks?done=deleted")

    @page("POST", "/settings/webhooks/{webhook_id}/enable")
    def enable(webhook_id: WebhookId, who: Caller) -> Response:
        """Enable a webhook."""
        service.set_disabled(who, webhook_id, False)
        return see_other("/settings/webhooks?done=enabled")

    @page("POST", "/settings/webhooks/{webhook_id}/disable")
    def disable(webhook_id: WebhookId, who: Caller) -> Response:
        """Disable a webhook; its pending messages become dead letters."""
        service.set_disabled(who, webhook_id, True)
        return see_other("/settings/webhooks?done=disabled")

    @page("POST", "/settings/webhooks/deliveries/{delivery_id}/redeliver")
    def redeliver(request: Request, delivery_id: DeliveryId, who: Caller) -> Response:
        """Send a dead letter again."""
        try:
            service.redeliver(who, delivery_id)
        except InvalidTransitionError as exc:
            return render(request, who, 409, error=str(exc))
        return see_other("/settings/webhooks?done=redelivered")


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"
