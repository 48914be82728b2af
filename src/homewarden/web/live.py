"""Live view routes: a WebSocket of fMP4 fragments for Media Source Extensions, and the latest
keyframe as a JPEG for browsers (or moments) without it.

``/api/cameras/{name}/live`` (WebSocket, ``footage:live:view`` and access to the camera):

- a text message ``{"type": "init", "codec": "avc1.64001f", "camera": name}`` (the RFC 6381
  ``codecs`` of the segment: ``new MediaSource().addSourceBuffer('video/mp4; codecs="…"')``),
  then a binary message with the init segment (``ftyp`` + ``moov``);
- then binary messages, one per fragment (``moof`` + ``mdat``, starting on a keyframe);
- at each new segment file (~10 s) the text message and an init segment again;
- when the camera goes offline a text message ``{"type": "error", "detail": "…"}`` and a
  close with code 1013 (Try Again Later, RFC 6455 section 7.4.1 / IANA registry).

A refused socket is accepted and at once closed, before anything of the feed is sent or the
view audited, with code 4401 (not signed in), 4423 (keys locked), 4403 (no permission) or 4404 (no
such camera) and the reason in words: a close code sent before the handshake completes never
reaches the client (a server such as uvicorn answers a bare HTTP 403). Browsers send cookies
with a WebSocket handshake to any origin, so a socket without an API token must come with this
site's ``Origin`` when it has one, and a cookie-authenticated socket must always (Cross-Site
WebSocket Hijacking; OWASP WebSocket Security Cheat Sheet); a cross-site socket is refused
*before* it is accepted (the page of another site learns only that the handshake failed, an
HTTP 403). An API token needs no ``Origin``. The caller is
checked again every :data:`RECHECK_SECONDS`, so a logout, a disabled account or a revoked
grant ends the view.

``/api/cameras/{name}/latest.jpg`` (``footage:snapshot:read`` and access to the camera): the
newest keyframe as a JPEG, for the page's fallback that refreshes it every 2 s.

Sealed footage (``storage.sealed``): both need the viewer's password session to hold the
household's current key version unlocked on this server
(:meth:`homewarden.services.live.LiveService.require_keys`), checked before anything is sent
and again at each recheck: an API token, a session whose keys are locked (never
unlocked here, a restart) or were dropped meanwhile is refused or ended with 4423 (the
snapshot: 401 ``keys-locked``), a person without the current version (revoked and rotated,
a grant pending) with 4403 (403 ``key-unavailable``). With sealing off, tokens watch as ever.

Each opened live view is an audit entry (``footage:live:view``); snapshots are audited as
``footage:snapshot:view`` with the reason ``live fallback``, at most once a minute per viewer
and camera (:class:`homewarden.services.live.LiveService`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Path, WebSocket, WebSocketException
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from homewarden.domain.audit import Actor
from homewarden.domain.permissions import (
    Permission,
    Principal,
    PrincipalKind,
    is_allowed,
)
from homewarden.errors import (
    AuthenticationError,
    FootageUnavailableError,
    HomeWardenError,
    KeysLockedError,
    NotFoundError,
    PermissionDeniedError,
)
from homewarden.services.accounts import AccountService
from homewarden.services.household_keys import KeyRing
from homewarden.services.live import LiveChunk, LiveFeed, LiveService
from homewarden.services.runtime import AppContext
from homewarden.services.sealed_footage import SessionKeys
from homewarden.store.accounts_store import SessionRecord
from homewarden.web.deps import SESSION_COOKIE, WebSocketGate, caller, current_session
from homewarden.web.routing import gated

LIVE_PATH = "/api/cameras/{name}/live"
SNAPSHOT_PATH = "/api/cameras/{name}/latest.jpg"
#: Audit reason of a snapshot served for the live view's fallback.
SNAPSHOT_REASON = "live fallback"
#: Close codes (RFC 6455 section 7.4.2: 4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = 4401
#: Signed in, but the session holds no unlocked household keys for sealed footage (423
#: Locked, RFC 4918 section 11.3): kept apart from 4401 because the page must not send a
#: signed-in viewer to the login page, which sends them straight back (a redirect loop).
CLOSE_KEYS_LOCKED = 4423
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
#: RFC 6455 / IANA: "Try Again Later" (the camera is offline).
CLOSE_TRY_AGAIN = 1013
#: RFC 6455: "Internal Error" (the audit log refused the entry, ...).
CLOSE_INTERNAL = 1011
#: How often an open live view checks that its viewer may still watch (s): a revoked grant, a
#: disabled account or a logout ends the view within about this (checked per fragment sent).
RECHECK_SECONDS = 2.0

CameraName = Annotated[str, Path(description="camera name")]
Caller = Annotated[Principal, Depends(caller)]
SESSION = Depends(current_session)


def _reason(text: str) -> str:
    # A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 section 5.5).
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


def _close_code(exc: HomeWardenError) -> int:
    if isinstance(exc, KeysLockedError):
        return CLOSE_KEYS_LOCKED
    if isinstance(exc, AuthenticationError):
        return CLOSE_UNAUTHENTICATED
    if isinstance(exc, PermissionDeniedError):
        return CLOSE_FORBIDDEN
    if isinstance(exc, NotFoundError):
        return CLOSE_NOT_FOUND
    if isinstance(exc, FootageUnavailableError):
        return CLOSE_TRY_AGAIN
    return CLOSE_INTERNAL


def socket_principal(websocket: WebSocket) -> tuple[Principal, bool]:
    """The caller of a WebSocket and whether it came by session cookie, resolved like
    :func:`homewarden.web.deps.resolve_principal` resolves an HTTP request's.

    Raises:
        AuthenticationError: an ``Authorization`` header with a bad or revoked token.
    """
    principal, session = socket_caller(websocket)
    return principal, session is not None


def socket_caller(websocket: WebSocket) -> tuple[Principal, SessionRecord | None]:
    """The caller of a WebSocket and its session (None for an API token or an anonymous
    caller: a session comes only by cookie), as :func:`homewarden.web.deps.resolve_principal`.

    Raises:
        AuthenticationError: an ``Authorization`` header with a bad or revoked token.
    """
    accounts = websocket.app.state.accounts
    if not isinstance(accounts, AccountService):
        raise RuntimeError("the app has no account service (app.state.accounts)")
    host = websocket.client.host if websocket.client else "unknown"
    auth = websocket.headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        principal = None
        if scheme.lower() == "bearer":
            principal = accounts.principal_for_token(token.strip(), host)
        if principal is None:
            raise AuthenticationError("the API token is unknown or revoked")
        return principal, None
    secret = websocket.cookies.get(SESSION_COOKIE)
    if secret:
        resolved = accounts.principal_for_session(secret, host)
        if resolved is not None:
            return resolved
    return Principal.anonymous(host), None


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if not origin:
        return False
    scheme, sep, netloc = origin.partition("://")
    host = websocket.headers.get("host", "")
    return bool(sep) and scheme in ("http", "https") and netloc.lower() == host.lower()


def _cross_site(websocket: WebSocket) -> WebSocketException:
    # Raised unaccepted: the handshake fails (uvicorn: HTTP 403), nothing is disclosed.
    origin = websocket.headers.get("origin", "no origin")
    return WebSocketException(
        CLOSE_FORBIDDEN, _reason(f"cross-site WebSocket from {origin} refused")
    )


async def _refuse(websocket: WebSocket, code: int, detail: str) -> WebSocketException:
    """Accept ``websocket`` and return the exception whose handler (Starlette's) closes it
    with ``code`` and ``detail``: closed after the handshake, the code reaches the client."""
    await websocket.accept()
    return WebSocketException(code, _reason(detail))


class SocketPermissionGate(WebSocketGate):
    """The permission gate of a WebSocket route: lets the handshake through only if its
    caller holds every permission in ``permissions`` and, when signed in by cookie, the
    ``Origin`` is this site; it returns the caller's :class:`Principal`. A refusal accepts and
    closes the socket, a cross-site one is refused unaccepted (see the module docstring)."""

    def __init__(self, permissions: tuple[Permission, ...]) -> None:
        if not permissions:
            raise TypeError("a permission gate needs at least one permission")
        self.permissions = permissions

    async def __call__(self, websocket: WebSocket) -> Principal:
        """Raises WebSocketException (code 4401 or 4403) for a refused caller: unaccepted
        for a cross-site socket (the handshake fails, HTTP 403), else after accepting it so
        that the close code reaches the client."""
        by_token = "authorization" in websocket.headers
        if not by_token and "origin" in websocket.headers and not _same_origin(websocket):
            raise _cross_site(websocket)
        try:
            principal, by_cookie = await asyncio.to_thread(socket_principal, websocket)
        except AuthenticationError as exc:
            raise await _refuse(websocket, CLOSE_UNAUTHENTICATED, str(exc)) from exc
        if by_cookie and not _same_origin(websocket):
            raise _cross_site(websocket)
        if principal.kind is PrincipalKind.ANONYMOUS:
            raise await _refuse(websocket, CLOSE_UNAUTHENTICATED, "sign in first")
        for permission in self.permissions:
            if not is_allowed(principal, permission):
                who = principal.role or principal.kind
                detail = f"{permission} is not granted to {who} callers"
                raise await _refuse(websocket, CLOSE_FORBIDDEN, detail)
        return principal

    def __repr__(self) -> str:
        return f"SocketPermissionGate({', '.join(self.permissions)})"


def requires_socket(*permissions: Permission) -> Any:
    """The dependency declaring (and enforcing) that a WebSocket route needs ``permissions``:
    ``dependencies=[requires_socket(Permission.X)]`` (the WebSocket twin of
    :func:`homewarden.web.deps.requires`)."""
    return Depends(SocketPermissionGate(tuple(permissions)))


LIVE_GATE = requires_socket(Permission.FOOTAGE_LIVE_VIEW)


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the live view WebSocket and the latest-snapshot route to ``app``."""
    live = LiveService(
        ctx.current_settings, ctx.index, ctx.clock, audit=ctx.audit, current_keys=ctx.keys
    )
    app.state.live = live

    async def live_view(
        websocket: WebSocket, name: CameraName, who: Annotated[Principal, LIVE_GATE]
    ) -> None:
        """Live fMP4 fragments of camera ``name`` (see the module docstring)."""

        def start() -> LiveFeed:
            access = live.authorize(who, name)
            _, session = socket_caller(websocket)
            live.require_keys(name, SessionKeys(ctx.keys, session))  # storage.sealed
            feed = live.feed(name)
            live.open_view(name, actor=Actor.of_principal(who), access=access)
            return feed

        try:
            feed = await asyncio.to_thread(start)
        except HomeWardenError as exc:
            # accepted, then closed: nothing of the feed sent, no view audited
            await websocket.accept()
            await websocket.close(_close_code(exc), _reason(str(exc)))
            return
        await websocket.accept()
        await _serve(websocket, live, feed, name, who, ctx.keys)

    app.add_api_websocket_route(LIVE_PATH, live_view, name="live_view", dependencies=[LIVE_GATE])

    @gated(
        app,
        "GET",
        SNAPSHOT_PATH,
        Permission.FOOTAGE_SNAPSHOT_READ,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "the newest keyframe"}},
        tags=["footage"],
    )
    def latest_snapshot(
        name: CameraName, who: Caller, session: Annotated[SessionRecord | None, SESSION]
    ) -> Response:
        """The camera's newest keyframe as a JPEG (the live view's fallback): the last
        complete fragment of the segment being recorded, else of the newest segment (a
        sealed one opens with the caller's unlocked session only). Its UTC time is in
        ``X-Frame-Time``. Audited, at most once a minute per viewer."""
        access = live.authorize(who, name)
        image, at = live.snapshot(
            name,
            actor=Actor.of_principal(who),
            access=access,
            reason=SNAPSHOT_REASON,
            keys=SessionKeys(ctx.keys, session),
        )
        return Response(
            image,
            media_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Frame-Time": f"{at:.3f}"},
        )


async def _serve(
    websocket: WebSocket,
    live: LiveService,
    feed: LiveFeed,
    name: str,
    who: Principal,
    ring: KeyRing | None,
) -> None:
    """Send the feed until the camera goes offline, the viewer leaves or loses access."""
    ending: tuple[int, str] | None = None
    left = False

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal left
        # The browser sends nothing; a receive returns only when it goes away.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        left = True
        scope.cancel()

    async def pump(scope: anyio.CancelScope) -> None:
        nonlocal ending, left
        checked = time.monotonic()
        chunk: LiveChunk
        try:
            async for chunk in live.afollow(feed):
                if chunk.kind == "init":
                    message = {"type": "init", "codec": chunk.codec, "camera": name}
                    await websocket.send_text(json.dumps(message))
                await websocket.send_bytes(chunk.data)
                if time.monotonic() - checked >= RECHECK_SECONDS:
                    checked = time.monotonic()
                    ending = await anyio.to_thread.run_sync(
                        _still_allowed, websocket, live, name, who, ring
                    )
                    if ending is not None:
                        break
        except HomeWardenError as exc:
            ending = (_close_code(exc), str(exc))
        except (WebSocketDisconnect, RuntimeError, OSError):
            left = True  # the viewer left while a message was on its way
        scope.cancel()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch, tasks.cancel_scope)
        tasks.start_soon(pump, tasks.cancel_scope)
    if left:
        return
    code, detail = ending if ending is not None else (CLOSE_TRY_AGAIN, "the live feed ended")
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_text(json.dumps({"type": "error", "detail": detail}))
        await websocket.close(code, _reason(detail))


def _still_allowed(
    websocket: WebSocket, live: LiveService, name: str, who: Principal, ring: KeyRing | None
) -> tuple[int, str] | None:
    """None while the viewer behind ``websocket`` may still watch ``name`` (under
    ``storage.sealed``: still holds the current key version unlocked), else why not."""
    try:
        principal, session = socket_caller(websocket)
        if principal.kind is PrincipalKind.ANONYMOUS or principal.user_id != who.user_id:
            raise AuthenticationError("the session ended")
        if not is_allowed(principal, Permission.FOOTAGE_LIVE_VIEW):
            raise PermissionDeniedError(f"{Permission.FOOTAGE_LIVE_VIEW} is no longer granted")
        live.authorize(principal, name)
        live.require_keys(name, SessionKeys(ring, session))
    except HomeWardenError as exc:
        return _close_code(exc), str(exc)
    return None
