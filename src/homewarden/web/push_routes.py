"""Web Push and the installable app (PWA): subscription API, preferences, the service worker,
the web app manifest and its icons, and the notifications settings page.

API (``notify:push:manage``, held by owners and members; the caller's own data only):

- ``GET /api/push/vapid-public-key``: the ``applicationServerKey`` (RFC 8292 section 3.2);
- ``GET|POST|DELETE /api/push/subscriptions``: list, store (the browser's
  ``PushSubscription.toJSON()``), forget (by ``endpoint``) this user's subscriptions;
- ``GET|PUT /api/push/preferences``: the switch, camera/label/zone allow-lists, quiet hours;
- ``POST /api/push/test``: a test notification to each of the caller's subscriptions.

Public (``system:public:read``; nothing private in them):

- ``GET /sw.js``: the service worker, served from the root so that its default scope is the
  whole site (no ``Service-Worker-Allowed`` header needed);
- ``GET /manifest.webmanifest`` (W3C Web App Manifest) and ``GET /icons/icon-{192,512}.png``
  (drawn with OpenCV at first request, then cached) and ``/icons/icon.svg``.

Page: ``GET /settings/notifications`` (form) and ``POST /settings/notifications`` (the form,
``csrf_token`` field, answers 303). The page's subscribe buttons are driven by
``static/push.js``.

State-changing calls need the session's CSRF token (``X-CSRF-Token`` header or
``csrf_token`` form field) unless made with an API token (:mod:`homewarden.web.deps`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import cv2
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from homewarden.domain.permissions import Permission, Principal, visible_cameras
from homewarden.errors import InvalidRequestError, NotFoundError
from homewarden.services.push import Preferences, PushService, time_zones
from homewarden.services.recorder import MOTION_LABEL, PERSON_LABEL
from homewarden.services.runtime import AppContext
from homewarden.web.deps import caller
from homewarden.web.pages import Pages
from homewarden.web.routing import gated

STATIC_DIR = Path(__file__).resolve().parent / "static"
Caller = Annotated[Principal, Depends(caller)]
#: Labels a user may filter on.
LABELS = (MOTION_LABEL, PERSON_LABEL)
#: Theme colour of the app (manifest, icons).
THEME_COLOR = "#111827"
ICON_SIZES = (192, 512)
_JS_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


class PushKeys(BaseModel):
    """The subscription's keys, base64url (RFC 8291 section 3)."""

    p256dh: str = Field(max_length=255, description="the browser's P-256 public key")
    auth: str = Field(max_length=255, description="the 16-byte authentication secret")


class SubscriptionBody(BaseModel):
    """A browser's ``PushSubscription.toJSON()``."""

    endpoint: str = Field(max_length=2048, description="the push service URL")
    expirationTime: float | None = None  # the Push API spells it so
    keys: PushKeys


class EndpointBody(BaseModel):
    """Which subscription to forget."""

    endpoint: str = Field(max_length=2048)


class SubscriptionView(BaseModel):
    """A stored subscription (the push service's host only; its keys are not shown)."""

    id: int
    push_service: str
    endpoint: str
    created_at: float
    failures: int


class PreferencesBody(BaseModel):
    """Notification preferences. Lists are allow-lists; null means all. Quiet hours are
    ``HH:MM`` in ``timezone`` (an IANA name); equal start and end mean none."""

    enabled: bool = True
    cameras: list[str] | None = Field(default=None, max_length=256)
    labels: list[str] | None = Field(default=None, max_length=256)
    zones: list[str] | None = Field(default=None, max_length=256)
    quiet_start: str = Field(default="00:00", max_length=5, examples=["22:00"])
    quiet_end: str = Field(default="00:00", max_length=5, examples=["07:00"])
    timezone: str = Field(default="UTC", max_length=64, examples=["Europe/Paris"])


class TestResult(BaseModel):
    """Deliveries of a test notification by outcome."""

    delivered: int
    gone: int
    failed: int


def _user_id(who: Principal) -> int:
    if who.user_id is None:
        raise InvalidRequestError("push notifications belong to an account; sign in as a user")
    return who.user_id


def _view(sub: Any) -> SubscriptionView:
    return SubscriptionView(
        id=sub.id,
        push_service=urlsplit(sub.endpoint).hostname or "",
        endpoint=sub.endpoint,
        created_at=sub.created_at,
        failures=sub.failures,
    )


# -- icons and manifest --------------------------------------------------------------------


@cache
def icon_png(size: int) -> bytes:
    """A square app icon of ``size`` pixels: a camera lens on the theme colour (PNG).

    Raises:
        ValueError: ``size`` is not one of :data:`ICON_SIZES`.
    """
    if size not in ICON_SIZES:
        raise ValueError(f"no {size} px icon")
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (39, 24, 17)  # THEME_COLOR in BGR
    c = size // 2
    s = size / 512
    white, blue, dark = (245, 245, 245), (235, 160, 59), (39, 24, 17)
    # camera body, lens ring, lens, recording light
    cv2.rectangle(img, (int(96 * s), int(160 * s)), (int(416 * s), int(384 * s)), white, -1)
    cv2.rectangle(img, (int(200 * s), int(124 * s)), (int(312 * s), int(170 * s)), white, -1)
    cv2.circle(img, (c, int(272 * s)), int(92 * s), dark, -1, cv2.LINE_AA)
    cv2.circle(img, (c, int(272 * s)), int(68 * s), blue, -1, cv2.LINE_AA)
    cv2.circle(img, (c, int(272 * s)), int(28 * s), dark, -1, cv2.LINE_AA)
    cv2.circle(img, (int(372 * s), int(200 * s)), int(14 * s), (60, 60, 230), -1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("cannot encode the icon")
    return bytes(png.tobytes())


def manifest() -> dict[str, Any]:
    """The W3C Web App Manifest of the app."""
    icons: list[dict[str, str]] = [
        {"src": f"/icons/icon-{n}.png", "sizes": f"{n}x{n}", "type": "image/png"}
        for n in ICON_SIZES
    ]
    icons.append({"src": "/icons/icon.svg", "sizes": "any", "type": "image/svg+xml"})
    return {
        "name": "HomeWarden",
        "short_name": "HomeWarden",
        "description": "Your cameras, recorded at home.",
        "id": "/",
        "start_url": "/",
        "scope": "/",
        "display": "standalone",
        "background_color": THEME_COLOR,
        "theme_color": THEME_COLOR,
        "icons": icons,
    }


def _static_bytes(name: str) -> bytes:
    path = STATIC_DIR / name
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NotFoundError(f"{name} is missing from the installation") from exc


# -- routes --------------------------------------------------------------------------------


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add this module's routes to ``app``. The push service is ``ctx.push`` when the runtime
    made one, else one is made over ``ctx`` (its VAPID key is made at first run)."""
    push = (
        ctx.push
        if ctx.push is not None
        else PushService(ctx.accounts, ctx.current_settings, ctx.clock)
    )
    _add_api(app, push)
    _add_public(app)
    _add_page(app, ctx, push)


def _add_api(app: FastAPI, push: PushService) -> None:
    manage = Permission.NOTIFY_PUSH_MANAGE

    @gated(app, "GET", "/api/push/vapid-public-key", manage, tags=["notifications"])
    def vapid_public_key() -> dict[str, str]:
        """The VAPID public key to pass as ``applicationServerKey`` to
        ``pushManager.subscribe`` (base64url, uncompressed P-256 point)."""
        return {"public_key": push.public_key()}

    @gated(app, "GET", "/api/push/subscriptions", manage, tags=["notifications"])
    def list_subscriptions(who: Caller) -> list[SubscriptionView]:
        """The caller's push subscriptions (one per browser)."""
        return [_view(s) for s in push.subscriptions(_user_id(who))]

    @gated(app, "POST", "/api/push/subscriptions", manage, status_code=201, tags=["notifications"])
    def subscribe(body: SubscriptionBody, who: Caller) -> SubscriptionView:
        """Store the browser's push subscription for the caller (again: refresh its keys)."""
        data = {"endpoint": body.endpoint, "keys": body.keys.model_dump()}
        return _view(push.subscribe(_user_id(who), data))

    @gated(
        app, "DELETE", "/api/push/subscriptions", manage, status_code=204, tags=["notifications"]
    )
    def unsubscribe(body: EndpointBody, who: Caller) -> Response:
        """Forget the caller's subscription of ``endpoint`` (404 when the caller has none)."""
        if not push.unsubscribe(_user_id(who), body.endpoint):
            raise NotFoundError("you have no push subscription with that endpoint")
        return Response(status_code=204)

    @gated(app, "GET", "/api/push/preferences", manage, tags=["notifications"])
    def get_preferences(who: Caller) -> Preferences:
        """The caller's notification preferences."""
        return push.preferences(_user_id(who))

    @gated(app, "PUT", "/api/push/preferences", manage, tags=["notifications"])
    def put_preferences(body: PreferencesBody, who: Caller) -> Preferences:
        """Replace the caller's notification preferences."""
        return push.set_preferences(_user_id(who), **body.model_dump())

    @gated(app, "POST", "/api/push/test", manage, tags=["notifications"])
    def send_test(who: Caller) -> TestResult:
        """Send a test notification to each of the caller's subscriptions."""
        return TestResult(**push.send_test(_user_id(who)))


def _add_public(app: FastAPI) -> None:
    public = Permission.SYSTEM_PUBLIC_READ

    @gated(app, "GET", "/sw.js", public, include_in_schema=False)
    def service_worker() -> Response:
        """The service worker (push and notification clicks), scope ``/``."""
        return Response(
            _static_bytes("sw.js"), media_type="application/javascript", headers=_JS_HEADERS
        )

    @gated(app, "GET", "/manifest.webmanifest", public, include_in_schema=False)
    def web_manifest() -> JSONResponse:
        """The web app manifest (installable app)."""
        return JSONResponse(manifest(), media_type="application/manifest+json", headers=_JS_HEADERS)

    @gated(app, "GET", "/icons/icon-{size}.png", public, include_in_schema=False)
    def icon(size: int) -> Response:
        """The app icon, 192 or 512 pixels square."""
        if size not in ICON_SIZES:
            raise NotFoundError(f"no {size} px icon")
        return Response(
            icon_png(size),
            media_type="image/png",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @gated(app, "GET", "/icons/icon.svg", public, include_in_schema=False)
    def icon_svg() -> Response:
        """The app icon as SVG."""
        return Response(
            _static_bytes("icon.svg"),
            media_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )


def _form_list(form: Any, name: str) -> list[str] | None:
    """A checkbox group: None when its ``<name>_all`` box is ticked, else the ticked values."""
    if form.get(f"{name}_all"):
        return None
    return [str(v) for v in form.getlist(name)]


def _add_page(app: FastAPI, ctx: AppContext, push: PushService) -> None:
    pages = Pages(ctx)
    manage = Permission.NOTIFY_PUSH_MANAGE

    def choices(who: Principal) -> dict[str, Any]:
        settings = ctx.current_settings()  # cameras change while running
        names = set(settings.cameras) | set(ctx.index.camera_names())
        households = {c: settings.camera_household(c) for c in names}
        cameras = sorted(visible_cameras(who, households, ctx.clock()))
        zones = sorted(
            {z for c in cameras if c in settings.cameras for z in settings.cameras[c].zones}
        )
        return {"cameras": cameras, "zones": zones, "labels": list(LABELS)}

    def render(request: Request, who: Principal, status: int = 200, error: str = "") -> Response:
        prefs = push.preferences(_user_id(who))
        return pages.render(
            request,
            "notifications.html",
            status,
            prefs=prefs,
            choices=choices(who),
            time_zones=time_zones(),
            subscriptions=[_view(s) for s in push.subscriptions(_user_id(who))],
            saved=request.query_params.get("saved") == "1",
            error=error,
        )

    @gated(
        app,
        "GET",
        "/settings/notifications",
        manage,
        include_in_schema=False,
        response_class=HTMLResponse,
    )
    def notifications_page(request: Request, who: Caller) -> Response:
        """The notification settings: this device's subscription, the switch, filters and
        quiet hours."""
        return render(request, who)

    @gated(
        app,
        "POST",
        "/settings/notifications",
        manage,
        include_in_schema=False,
        response_class=HTMLResponse,
    )
    async def save_notifications(request: Request, who: Caller) -> Response:
        """Save the form; 303 back to the page (a bad value: the page again with 422)."""
        form = await request.form()
        try:
            await run_in_threadpool(
                push.set_preferences,
                _user_id(who),
                enabled=bool(form.get("enabled")),
                cameras=_form_list(form, "cameras"),
                labels=_form_list(form, "labels"),
                zones=_form_list(form, "zones"),
                quiet_start=str(form.get("quiet_start") or "00:00"),
                quiet_end=str(form.get("quiet_end") or "00:00"),
                timezone=str(form.get("timezone") or "UTC"),
            )
        except InvalidRequestError as exc:
            return await run_in_threadpool(render, request, who, 422, str(exc))
        return RedirectResponse(
            "/settings/notifications?saved=1",
            status_code=303,
            headers={"Cache-Control": "no-store"},
        )
