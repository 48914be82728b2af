"""The web app's server-rendered pages (Jinja2, autoescaped), their static files, and the
forms behind them.

Pages (every route declared with :func:`homewarden.web.routing.gated`, hidden from OpenAPI):

- ``/login`` (+ ``/login/totp``), ``/logout``, ``/setup?token=`` - anonymous forms use the
  double-submit CSRF cookie :data:`~homewarden.web.deps.CSRF_COOKIE`, set on GET;
- ``/`` camera grid, ``/cameras/{name}`` live view and 24 h timeline, ``/events`` and
  ``/events/{id}``;
- ``/settings`` and its pages: account (password, TOTP, API tokens), users and camera grants,
  support grants, the access log, notifications (template from the push module's author);
  the cameras' settings pages are :mod:`homewarden.web.camera_routes`'s.

Footage itself is never served here: pages point the browser at the JSON API
(``/api/cameras/{name}/clip.mp4``, ``/api/events/{id}/snapshot.jpg``...), which audits every
view. Which cameras a page shows is decided by the services (``viewer=``).

Errors on page routes are pages, not problem documents: :func:`_install_page_errors` wraps
the app's problem handlers (``web/problems.py`` stays the one place for the API) so that, for
a page route, an :class:`~homewarden.errors.AuthenticationError` redirects (303) to
``/login?next=<path>`` and any other error renders ``error.html`` with the problem's status.

Every HTML response carries :data:`CONTENT_SECURITY_POLICY` (no inline script or style, no
third-party origin: pages pass data to the hand-written scripts in ``static/`` through
``data-*`` attributes), ``no-store`` caching (pages hold CSRF tokens and private data) and
``nosniff``. State-changing forms POST with the ``csrf_token`` field and answer 303, except
those that show a secret once (a new API token, a new setup link, and an owner's setup,
which shows the household recovery code made there), which render it.
"""

from __future__ import annotations

import mimetypes
import re
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import pyotp
import segno
from fastapi import FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from homewarden.domain.audit import Actor, ActorKind, AuditEntry
from homewarden.domain.permissions import (
    Permission,
    Principal,
    PrincipalKind,
    Role,
    is_allowed,
)
from homewarden.errors import (
    AuthenticationError,
    HomeWardenError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    TooManyAttemptsError,
)
from homewarden.services.access_log import AccessLog
from homewarden.services.accounts import STAGE_MFA, TOTP_ISSUER, TotpEnrolment
from homewarden.services.queries import CameraView, parse_time
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import SessionRecord
from homewarden.web.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    client_host,
    is_https,
    resolve_principal,
)
from homewarden.web.problems import status_for
from homewarden.web.routing import F, gated

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Sent with every page. The first four directives are the web app's contract (same-origin
#: only; video from blob: for MSE; WebSockets for live view); the rest forbid plugins,
#: ``<base>`` rewriting, cross-site form targets and framing (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
#: Content types of static files by suffix (not the host's mime.types, which varies).
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
#: Events per page of ``/events``.
EVENTS_PAGE = 25
#: Entries per page of the access log.
ACCESS_LOG_PAGE = 50
#: Span of the camera page's timeline, seconds.
TIMELINE_SECONDS = 86400.0
#: Playback speeds offered (``playbackRate``).
SPEEDS = ("0.5", "1", "2", "4", "8")
#: Fixed notices a redirect may ask a page to show (``?done=``): never reflected text.
NOTICES = {
    "setup": "Your password is set. Sign in.",
    "password": "Password changed. Every session was ended: sign in again.",
    "logout": "You are signed out.",
    "totp-on": "Two-factor sign-in is on.",
    "totp-off": "Two-factor sign-in is off.",
    "revoked": "Token revoked.",
    "user": "User updated.",
    "grants": "Camera access saved.",
    "support": "Support access updated.",
}

PageHandler = Callable[[Request, Exception], Awaitable[Response]]

TextField = Annotated[str, Form()]


def safe_next(target: str | None) -> str:
    """A local path to go to after login: ``target`` when it is a path on this site (starts
    with one ``/``, no scheme, no host, no backslash or control character), else ``/``
    (an open redirect would let a link on another site send the user anywhere)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def when(ts: float | None) -> Markup:
    """A ``<time>`` element for UTC epoch seconds ``ts`` (UTC text; ``app.js`` shows it in
    the browser's zone), or an em dash for None."""
    if ts is None:
        return Markup("&mdash;")
    moment = datetime.fromtimestamp(ts, UTC)
    return Markup('<time datetime="{}" data-epoch="{}">{}</time>').format(
        moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
        f"{ts:.3f}",
        moment.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def camera_status(cam: CameraView) -> tuple[str, float | None]:
    """The grid's status of a camera: ``("recording", None)``, ``("disabled", None)``, or
    ``("offline", since)`` with the last packet or recorded second (None when never seen)."""
    if not cam.enabled or cam.state == "disabled":
        return "disabled", None
    if cam.connected:
        return "recording", None
    return "offline", cam.last_packet_at or cam.last_recorded_at


#: A TOTP secret as pyotp makes them (RFC 4648 base32, 32 characters; we accept 16-64).
_TOTP_SECRET = re.compile(r"[A-Z2-7]{16,64}")


def check_totp_secret(secret: str) -> None:
    """Refuse a TOTP secret that did not come from our own form (not base32).

    Raises:
        InvalidRequestError: not 16-64 characters of RFC 4648 base32.
    """
    if not _TOTP_SECRET.fullmatch(secret):
        raise InvalidRequestError("the two-factor secret is malformed; reload the page")


def totp_uri(username: str, secret: str) -> str:
    """The ``otpauth://`` provisioning URI of ``secret`` for ``username`` (RFC 6238 TOTP,
    as :meth:`AccountService.begin_totp` makes it)."""
    return str(pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER))


def qr_data_uri(uri: str) -> str:
    """An SVG QR code of ``uri`` (an ``otpauth://`` provisioning URI) as a ``data:`` URI,
    drawn server-side by segno (no third-party script)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


@dataclass(frozen=True, slots=True)
class _Caller:
    principal: Principal
    session: SessionRecord | None


class Pages:
    """Renders the templates with what every page needs (the caller, its CSRF token, which
    sections it may open) and the page headers (see the module docstring)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["when"] = when
        self.env.globals["speeds"] = SPEEDS

    def caller(self, request: Request) -> _Caller:
        """The caller of ``request`` (anonymous when the API token header is bad)."""
        try:
            principal, session = resolve_principal(request)
        except AuthenticationError:
            return _Caller(Principal.anonymous(client_host(request)), None)
        return _Caller(principal, session)

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """``template`` rendered with ``values`` and the common context, as an HTML response
        carrying the page headers; sets the CSRF cookie when the caller has neither session
        nor cookie yet.

        Raises:
            jinja2.TemplateNotFound: no such template.
        """
        who = self.caller(request)
        new_cookie = None
        if who.session is not None:
            csrf = who.session.csrf_token
        else:
            csrf = request.cookies.get(CSRF_COOKIE) or ""
            if not 20 <= len(csrf) <= 100:
                csrf = new_cookie = secrets.token_urlsafe(32)
        signed_in = who.principal.kind is not PrincipalKind.ANONYMOUS

        def can(permission: str) -> bool:
            return signed_in and is_allowed(who.principal, permission)

        notice = NOTICES.get(request.query_params.get("done", ""))
        html = self.env.get_template(template).render(
            me=who.principal if signed_in else None,
            csrf=csrf,
            can=can,
            path=request.url.path,
            notice=notice,
            **values,
        )
        response = HTMLResponse(
            html, status_code=status, headers={**_PAGE_HEADERS, **(headers or {})}
        )
        if new_cookie is not None:
            response.set_cookie(
                CSRF_COOKIE,
                new_cookie,
                httponly=True,
                samesite="lax",
                secure=is_https(request),
                path="/",
            )
        return response

    def error(self, request: Request, status: int, title: str, detail: str) -> HTMLResponse:
        """The error page (403, 404, ...) with ``status`` kept."""
        return self.render(request, "error.html", status, title=title, detail=detail)


def see_other(url: str) -> RedirectResponse:
    """A 303 to ``url`` after a form POST (never cached)."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _loginsee_other(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if request.method != "GET":
        target = "/"
    return see_other("/login?" + urlencode({"next": target}))


def _install_page_errors(app: FastAPI, pages: Pages, page_endpoints: set[Any]) -> None:
    """Wrap the app's problem handlers so that page routes answer with pages (see the module
    docstring); every other route keeps its RFC 9457 problem document.

    Raises:
        RuntimeError: the problem handlers are not installed yet.
    """

    def is_page(request: Request) -> bool:
        # Pages of this module, and any other module's HTML route (push settings page).
        if request.scope.get("endpoint") in page_endpoints:
            return True
        route = request.scope.get("route")
        return isinstance(route, APIRoute) and route.response_class is HTMLResponse

    def wants_html(request: Request) -> bool:
        return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
            "accept", ""
        )

    def wrap(key: type[Exception], decide: Callable[[Request, Exception], Response | None]) -> None:
        fallback = app.exception_handlers.get(key)
        if fallback is None:
            raise RuntimeError(f"install the problem handlers before the pages ({key.__name__})")

        async def handler(request: Request, exc: Exception) -> Response:
            page = decide(request, exc)
            if page is not None:
                return page
            answer = fallback(request, exc)
            assert not isinstance(answer, Response)
            return await answer

        app.add_exception_handler(key, handler)

    def on_error(request: Request, exc: Exception) -> Response | None:
        if not is_page(request) or not isinstance(exc, HomeWardenError):
            return None
        if isinstance(exc, AuthenticationError) and not isinstance(exc, TooManyAttemptsError):
            return _loginsee_other(request)
        status, title = status_for(exc)
        detail = str(exc) if status < 500 else "something went wrong; try again later"
        return pages.error(request, status, title, detail)

    def on_invalid(request: Request, exc: Exception) -> Response | None:
        if not is_page(request):
            return None
        return pages.error(request, 404, "Not found", "there is no such page")

    def on_http(request: Request, exc: Exception) -> Response | None:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code != 404 or not (is_page(request) or wants_html(request)):
            return None
        return pages.error(request, 404, "Not found", "there is no such page")

    wrap(HomeWardenError, on_error)
    wrap(RequestValidationError, on_invalid)
    wrap(StarletteHTTPException, on_http)


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the pages and ``/static/{path}`` to ``app`` (after the problem handlers are
    installed, see :func:`_install_page_errors`)."""
    pages = Pages(ctx)
    page_endpoints: set[Any] = set()

    def page(method: str, path: str, *permissions: Permission) -> Callable[[F], F]:
        declare = gated(
            app, method, path, *permissions, include_in_schema=False, response_class=HTMLResponse
        )

        def register(endpoint: F) -> F:
            page_endpoints.add(endpoint)
            return declare(endpoint)

        return register

    _install_page_errors(app, pages, page_endpoints)
    _add_static(app)
    _add_login_pages(page, pages, ctx)
    _add_footage_pages(page, pages, ctx)
    service = getattr(app.state, "disclosure", None)
    _add_settings_pages(page, pages, ctx, getattr(service, "unnoticed_requests", None))


Page = Callable[..., Callable[[Callable[..., Any]], Any]]


def _add_static(app: FastAPI) -> None:
    root = STATIC_DIR

    @gated(
        app, "GET", "/static/{path:path}", Permission.SYSTEM_PUBLIC_READ, include_in_schema=False
    )
    def static_file(path: str) -> FileResponse:
        """A file of ``web/static``; anything that resolves outside it (``..``, absolute
        paths, symlinks out) is a 404."""
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise NotFoundError(f"no static file {path!r}")
        media_type = STATIC_TYPES.get(target.suffix.lower()) or (
            mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        )
        return FileResponse(
            target,
            media_type=media_type,
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )


def _cookie(response: Response, request: Request, secret: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path="/",
    )


def _add_login_pages(page: Page, pages: Pages, ctx: AppContext) -> None:
    accounts = ctx.accounts

    def signed_in(request: Request) -> bool:
        return pages.caller(request).principal.kind is not PrincipalKind.ANONYMOUS

    @page("GET", "/login", Permission.ACCOUNTS_SESSION_CREATE)
    def login_form(request: Request, next: str = "/") -> Response:
        """The sign-in form (already signed in: go on)."""
        if signed_in(request):
            return see_other(safe_next(next))
        return pages.render(request, "login.html", next=safe_next(next), error=None)

    @page("POST", "/login", Permission.ACCOUNTS_SESSION_CREATE)
    def login(
        request: Request,
        username: TextField = "",
        password: TextField = "",
        next: TextField = "/",
    ) -> Response:
        """Check the password; on to the TOTP step or the ``next`` page (a new session
        cookie either way: the session id rotates at login)."""
        target = safe_next(next)
        try:
            step = accounts.login(username, password, client_host(request))
        except TooManyAttemptsError as exc:
            return pages.render(
                request,
                "login.html",
                429,
                {"Retry-After": str(max(1, round(exc.retry_after)))},
                next=target,
                error=str(exc),
                username=username,
            )
        except AuthenticationError as exc:
            return pages.render(
                request, "login.html", 400, next=target, error=str(exc), username=username
            )
        if step.needs_totp:
            response = see_other("/login/totp?" + urlencode({"next": target}))
        else:
            response = see_other(landing(target, step.session.user_id))
        _cookie(response, request, step.session_secret)
        return response

    def landing(target: str, user_id: int) -> str:
        """Where a login goes: ``target``, except that the camera grid (the default) is
        no page for requesters and disclosure staff, who see no cameras: their requests."""
        if target != "/":
            return target
        user = accounts.user(user_id)
        if Role(user.role) in (Role.REQUESTER, Role.LEGAL_REVIEWER, Role.CUSTODIAN):
            return "/requests"
        return target

    def pending(request: Request) -> str | None:
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            return None
        session = accounts.session(secret)
        return secret if session is not None and session.stage == STAGE_MFA else None

    @page("GET", "/login/totp", Permission.ACCOUNTS_SESSION_CREATE)
    def totp_form(request: Request, next: str = "/") -> Response:
        """The second step: the authenticator app's code."""
        if pending(request) is None:
            return see_other("/login?" + urlencode({"next": safe_next(next)}))
        return pages.render(request, "totp.html", next=safe_next(next), error=None)

    @page("POST", "/login/totp", Permission.ACCOUNTS_SESSION_CREATE)
    def totp(request: Request, code: TextField = "", next: TextField = "/") -> Response:
        """Check the code; the waiting session is replaced by a new, full one."""
        target = safe_next(next)
        secret = pending(request)
        if secret is None:
            return pages.render(
                request,
                "login.html",
                400,
                next=target,
                error="the sign-in expired; enter the password again",
            )
        try:
            step = accounts.verify_totp(secret, code, client_host(request))
        except TooManyAttemptsError as exc:
            return pages.render(request, "totp.html", 429, next=target, error=str(exc))
        except AuthenticationError as exc:
            return pages.render(request, "totp.html", 400, next=target, error=str(exc))
        response = see_other(landing(target, step.session.user_id))
        _cookie(response, request, step.session_secret)
        return response

    @page("POST", "/logout", Permission.ACCOUNTS_SESSION_CREATE)
    def logout(request: Request) -> Response:
        """End the session and forget the cookie."""
        secret = request.cookies.get(SESSION_COOKIE)
        if secret:
            accounts.logout(secret)
        response = see_other("/login?done=logout")
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
        return response

    def setup_page(
        request: Request,
        token: str,
        status: int = 200,
        error: str | None = None,
        totp: TotpEnrolment | None = None,
    ) -> Response:
        try:
            user = accounts.setup_user(token)
        except AuthenticationError as exc:
            return pages.error(request, 400, "Setup link not valid", str(exc))
        enrolment = totp or accounts.begin_totp(user.id)
        return pages.render(
            request,
            "setup.html",
            status,
            token=token,
            user=user,
            staff=Role(user.role).needs_totp,
            totp_secret=enrolment.secret,
            qr=qr_data_uri(enrolment.uri),
            error=error,
        )

    @page("GET", "/setup", Permission.ACCOUNTS_SESSION_CREATE)
    def setup_form(request: Request, token: str = "") -> Response:
        """Choose a password (and enrol a phone for TOTP) from a one-time setup link."""
        return setup_page(request, token)

    @page("POST", "/setup", Permission.ACCOUNTS_SESSION_CREATE)
    def setup(
        request: Request,
        token: TextField = "",
        password: TextField = "",
        totp_secret: TextField = "",
        code: TextField = "",
    ) -> Response:
        """Use the setup link; TOTP is enrolled when a code is given (staff must)."""
        try:
            user = accounts.setup_user(token)
        except AuthenticationError as exc:
            return pages.error(request, 400, "Setup link not valid", str(exc))
        use_totp = bool(code.strip()) or Role(user.role).needs_totp
        try:
            if use_totp:
                check_totp_secret(totp_secret)
            done = accounts.complete_setup(
                token,
                password,
                totp_secret=totp_secret if use_totp else None,
                totp_code=code if use_totp else None,
            )
        except (AuthenticationError, InvalidRequestError) as exc:
            # Keep the secret the phone may have scanned already, when it is one.
            kept = None
            if _TOTP_SECRET.fullmatch(totp_secret):
                kept = TotpEnrolment(totp_secret, totp_uri(user.username, totp_secret))
            return setup_page(request, token, 400, str(exc), kept)
        # An owner whose setup made the household's recovery code sees it here, once (it is
        # taken from memory; never put in a URL or a log).
        if done.role == Role.OWNER and ctx.keys is not None:
            recovery = ctx.keys.take_setup_recovery_code(done.id)
            if recovery is not None:
                return pages.render(request, "setup_recovery.html", recovery_code=recovery)
        return see_other("/login?done=setup")


def _window(until: str | None, now: float) -> tuple[float, float]:
    end = now if not until else parse_time(until, name="until")
    return end - TIMELINE_SECONDS, end


def _add_footage_pages(page: Page, pages: Pages, ctx: AppContext) -> None:
    queries = ctx.queries

    @page("GET", "/", Permission.CAMERAS_CAMERA_READ, Permission.CAMERAS_STATUS_READ)
    def grid(request: Request) -> Response:
        """The camera grid: every camera the caller may see, live."""
        who = pages.caller(request).principal
        cameras = [(cam, *camera_status(cam)) for cam in queries.cameras(viewer=who)]
        return pages.render(request, "grid.html", cameras=cameras)

    @page(
        "GET",
        "/cameras/{name}",
        Permission.CAMERAS_CAMERA_READ,
        Permission.FOOTAGE_RECORDING_READ,
    )
    def camera(
        request: Request,
        name: str,
        until: Annotated[str | None, Query()] = None,
    ) -> Response:
        """One camera: live view, 24 h timeline, playback from any moment."""
        who = pages.caller(request).principal
        cam = queries.camera(name, viewer=who)
        since, end = _window(until, ctx.clock())
        status, offline_since = camera_status(cam)
        return pages.render(
            request,
            "camera.html",
            cam=cam,
            cam_status=status,
            offline_since=offline_since,
            since=since,
            until=end,
            earlier=end - TIMELINE_SECONDS,
            later=end + TIMELINE_SECONDS if end + 1 < ctx.clock() else None,
        )

    @page("GET", "/events", Permission.EVENTS_EVENT_READ)
    def events(
        request: Request,
        camera: str = "",
        label: str = "",
        zone: str = "",
        day: str = "",
        cursor: str = "",
    ) -> Response:
        """Events newest first, filtered by camera, label, zone and UTC day, paged."""
        who = pages.caller(request).principal
        since = until = None
        if day:
            try:
                start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
            except ValueError:
                raise InvalidRequestError(f"day={day!r} is not a date (YYYY-MM-DD)") from None
            since, until = start, start + 86400.0
        page_ = queries.events(
            camera or None,
            label or None,
            zone or None,
            since,
            until,
            cursor or None,
            EVENTS_PAGE,
            viewer=who,
        )
        filters = {
            k: v
            for k, v in (("camera", camera), ("label", label), ("zone", zone), ("day", day))
            if v
        }
        next_url = None
        if page_.next_cursor:
            next_url = "/events?" + urlencode({**filters, "cursor": page_.next_cursor})
        return pages.render(
            request,
            "events.html",
            events=page_.events,
            cameras=sorted(queries.visible_cameras(who)),
            filters={"camera": camera, "label": label, "zone": zone, "day": day},
            next_url=next_url,
            first_url=("/events?" + urlencode(filters)) if cursor else None,
        )

    @page("GET", "/events/{event_id}", Permission.EVENTS_EVENT_READ)
    def event(request: Request, event_id: int) -> Response:
        """One event: its clip, snapshot and a download link."""
        ev = queries.event(event_id, viewer=pages.caller(request).principal)
        return pages.render(request, "event.html", ev=ev)


def _add_settings_pages(
    page: Page,
    pages: Pages,
    ctx: AppContext,
    hidden: Callable[[str], Collection[str]] | None,
) -> None:
    accounts = ctx.accounts
    # Entries of requests the owner may not be told of yet (a non-disclosure order) stay
    # out of the access log until the notice is sent.
    access_log = AccessLog(ctx.audit, hidden=hidden)

    def me(request: Request) -> Principal:
        return pages.caller(request).principal

    def actor(request: Request) -> Actor:
        return Actor.of_principal(me(request))

    def user_id(request: Request) -> int:
        uid = me(request).user_id
        if uid is None:
            raise PermissionDeniedError("only a signed-in account has these settings")
        return uid

    @page("GET", "/settings", Permission.ACCOUNTS_SELF_MANAGE)
    def settings_index(request: Request) -> Response:
        """The settings sections the caller may open."""
        return pages.render(request, "settings_index.html")

    # account

    def account_page(
        request: Request,
        status: int = 200,
        error: str | None = None,
        new_token: str | None = None,
        keep_totp_secret: str | None = None,
    ) -> Response:
        uid = user_id(request)
        user = accounts.user(uid)
        enrolment: TotpEnrolment | None = None
        if user.totp_secret is None and keep_totp_secret:
            # A mistyped code keeps the secret the phone has already scanned.
            enrolment = TotpEnrolment(keep_totp_secret, totp_uri(user.username, keep_totp_secret))
        elif user.totp_secret is None:
            enrolment = accounts.begin_totp(uid)
        return pages.render(
            request,
            "settings_account.html",
            status,
            user=user,
            staff=Role(user.role).needs_totp,
            totp_secret=enrolment.secret if enrolment else None,
            qr=qr_data_uri(enrolment.uri) if enrolment else None,
            tokens=accounts.tokens(uid),
            new_token=new_token,
            error=error,
        )

    @page("GET", "/settings/account", Permission.ACCOUNTS_SELF_MANAGE)
    def account(request: Request) -> Response:
        """Password, two-factor sign-in and API tokens of the caller's own account."""
        return account_page(request)

    @page("POST", "/settings/account/password", Permission.ACCOUNTS_CREDENTIAL_MANAGE)
    def change_password(request: Request, current: TextField = "", new: TextField = "") -> Response:
        """Change the password; every session ends, so sign in again."""
        try:
            accounts.change_password(user_id(request), current, new)
        except (AuthenticationError, InvalidRequestError) as exc:
            return account_page(request, 400, str(exc))
        response = see_other("/login?done=password")
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
        return response

    @page("POST", "/settings/account/totp", Permission.ACCOUNTS_CREDENTIAL_MANAGE)
    def enable_totp(request: Request, secret: TextField = "", code: TextField = "") -> Response:
        """Turn on TOTP with the secret shown on the page, proven by a current code."""
        try:
            check_totp_secret(secret)
        except InvalidRequestError as exc:
            return account_page(request, 400, str(exc))
        try:
            accounts.confirm_totp(user_id(request), secret, code)
        except (AuthenticationError, InvalidRequestError) as exc:
            message = f"{exc}. Enter the current 6-digit code for the same secret."
            return account_page(request, 400, message, keep_totp_secret=secret)
        return see_other("/settings/account?done=totp-on")

    @page("POST", "/settings/account/totp/disable", Permission.ACCOUNTS_CREDENTIAL_MANAGE)
    def disable_totp(request: Request, password: TextField = "") -> Response:
        """Turn TOTP off (household accounts; the password confirms)."""
        try:
            accounts.disable_totp(user_id(request), password)
        except (AuthenticationError, PermissionDeniedError) as exc:
            return account_page(request, 400, str(exc))
        return see_other("/settings/account?done=totp-off")

    @page("POST", "/settings/account/tokens", Permission.ACCOUNTS_CREDENTIAL_MANAGE)
    def create_token(request: Request, name: TextField = "") -> Response:
        """A new API token, shown once on the page this answers with."""
        try:
            secret, _ = accounts.create_token(user_id(request), name)
        except InvalidRequestError as exc:
            return account_page(request, 400, str(exc))
        return account_page(request, new_token=secret)

    @page(
        "POST", "/settings/account/tokens/{token_id}/revoke", Permission.ACCOUNTS_CREDENTIAL_MANAGE
    )
    def revoke_token(request: Request, token_id: int) -> Response:
        """Revoke one of the caller's tokens."""
        accounts.revoke_token(user_id(request), token_id)
        return see_other("/settings/account?done=revoked")

    # users

    def household_of(request: Request) -> str:
        household = me(request).household
        if household is None:
            raise PermissionDeniedError("only a household's owner manages its users")
        return household

    def household_cameras(household: str) -> list[str]:
        settings = ctx.current_settings()  # cameras change while running
        return sorted(c for c in settings.cameras if settings.camera_household(c) == household)

    def users_page(
        request: Request, status: int = 200, error: str | None = None, setup_link: Any = None
    ) -> Response:
        household = household_of(request)
        users = accounts.users(household)
        grants = {u.id: accounts.camera_grants(u.id) for u in users if u.role == Role.MEMBER}
        return pages.render(
            request,
            "settings_users.html",
            status,
            users=users,
            grants=grants,
            cameras=household_cameras(household),
            setup_link=setup_link,
            error=error,
        )

    def link(request: Request, secret: str) -> str:
        base = ctx.public_url or str(request.base_url)
        return f"{base.rstrip('/')}/setup?{urlencode({'token': secret})}"

    def owned_member(request: Request, member_id: int) -> int:
        household = household_of(request)
        try:
            member = accounts.user(member_id)
        except NotFoundError:
            raise NotFoundError(f"no user {member_id}") from None
        if member.household_id != household or member.role != Role.MEMBER:
            raise NotFoundError(f"no member {member_id} in this household")
        return member.id

    @page("GET", "/settings/users", Permission.ACCOUNTS_USER_MANAGE)
    def users(request: Request) -> Response:
        """The household's accounts, their camera grants, and adding a member."""
        return users_page(request)

    @page("POST", "/settings/users", Permission.ACCOUNTS_USER_MANAGE)
    def add_member(
        request: Request, username: TextField = "", display_name: TextField = ""
    ) -> Response:
        """Add a member; the page shows their one-time setup link."""
        try:
            new = accounts.add_user(
                username,
                Role.MEMBER,
                household_of(request),
                actor=actor(request),
                display_name=display_name.strip(),
            )
        except (InvalidRequestError, NotFoundError) as exc:
            return users_page(request, 400, str(exc))
        assert new.setup_secret is not None
        return users_page(request, setup_link=(new.user.username, link(request, new.setup_secret)))

    @page("POST", "/settings/users/{member_id}/setup-link", Permission.ACCOUNTS_USER_MANAGE)
    def new_setup_link(request: Request, member_id: int) -> Response:
        """A fresh setup link for a member (a forgotten password)."""
        uid = owned_member(request, member_id)
        secret = accounts.new_setup_link(uid, actor=actor(request))
        return users_page(request, setup_link=(accounts.user(uid).username, link(request, secret)))

    @page("POST", "/settings/users/{member_id}/disable", Permission.ACCOUNTS_USER_MANAGE)
    def disable_member(request: Request, member_id: int) -> Response:
        """Disable a member (ends their sessions; tokens stop working)."""
        accounts.set_disabled(owned_member(request, member_id), True, actor=actor(request))
        return see_other("/settings/users?done=user")

    @page("POST", "/settings/users/{member_id}/enable", Permission.ACCOUNTS_USER_MANAGE)
    def enable_member(request: Request, member_id: int) -> Response:
        """Re-enable a member."""
        accounts.set_disabled(owned_member(request, member_id), False, actor=actor(request))
        return see_other("/settings/users?done=user")

    @page("POST", "/settings/users/{member_id}/cameras", Permission.ACCOUNTS_USER_MANAGE)
    def set_grants(
        request: Request,
        member_id: int,
        camera: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        """Set which of the household's cameras a member sees (the checked boxes)."""
        uid = owned_member(request, member_id)
        owner = me(request)
        wanted = set(camera or ()) & set(household_cameras(household_of(request)))
        held = accounts.camera_grants(uid)
        for name in sorted(wanted - held):
            accounts.grant_camera(owner, uid, name, actor(request))
        for name in sorted(held - wanted):
            accounts.revoke_camera(owner, uid, name, actor(request))
        return see_other("/settings/users?done=grants")

    # support

    def support_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        return pages.render(
            request,
            "settings_support.html",
            status,
            grants=accounts.support_grants(household_of(request)),
            now=ctx.clock(),
            error=error,
        )

    @page("GET", "/settings/support", Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE)
    def support(request: Request) -> Response:
        """Time-limited grants letting staff support see the household's footage."""
        return support_page(request)

    @page("POST", "/settings/support", Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE)
    def grant_support(request: Request, hours: TextField = "", reason: TextField = "") -> Response:
        """Grant support access for ``hours`` with a reason."""
        try:
            try:
                span = float(hours)
            except ValueError:
                raise InvalidRequestError("hours must be a number") from None
            accounts.grant_support(me(request), span, reason, actor(request))
        except InvalidRequestError as exc:
            return support_page(request, 400, str(exc))
        return see_other("/settings/support?done=support")

    @page("POST", "/settings/support/{grant_id}/revoke", Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE)
    def revoke_support(request: Request, grant_id: int) -> Response:
        """End a support grant now."""
        accounts.revoke_support(me(request), grant_id, actor(request))
        return see_other("/settings/support?done=support")

    # access log

    def actor_name(entry: AuditEntry, names: dict[str, str]) -> str:
        a = entry.actor
        if a.kind in (ActorKind.USER, ActorKind.STAFF):
            if a.id not in names:
                try:
                    names[a.id] = accounts.user(int(a.id)).username
                except (NotFoundError, ValueError):
                    names[a.id] = f"account {a.id}"
            prefix = "staff " if a.kind is ActorKind.STAFF else ""
            return prefix + names[a.id]
        if a.kind is ActorKind.LOCAL_OPERATOR:
            return f"local operator ({a.id})"
        return f"{a.kind} {a.id}"

    @page("GET", "/settings/access-log", Permission.AUDIT_ACCESS_LOG_READ)
    def access(request: Request, before: Annotated[int | None, Query(ge=0)] = None) -> Response:
        """Who viewed which footage of the household, and account changes, newest first."""
        found = access_log.page(household_of(request), before=before, limit=ACCESS_LOG_PAGE)
        names: dict[str, str] = {}
        rows = [(e, actor_name(e, names)) for e in found.entries]
        next_url = None
        if found.next_before is not None:
            next_url = "/settings/access-log?" + urlencode({"before": found.next_before})
        return pages.render(request, "settings_access_log.html", rows=rows, next_url=next_url)

    # cameras: homewarden.web.camera_routes; notifications: homewarden.web.push_routes
