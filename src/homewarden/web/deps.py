"""Route dependencies: who is calling, and the permission gate every route declares.

A route declares what it needs with ``dependencies=[requires(Permission.X)]``. The gate
resolves the caller (:func:`resolve_principal`), checks CSRF on state-changing requests
(:func:`check_csrf`), asks :func:`homewarden.domain.permissions.check_permission` about each
permission and raises :class:`AuthenticationError` (401) for an anonymous caller that needs
more than anonymous callers hold, :class:`PermissionDeniedError` (403) otherwise.
:func:`undeclared_routes` finds routes without a gate; :func:`homewarden.web.app.create_app`
refuses to build an app that has one, and a test walks the routes too, so a route cannot be
added without deciding who may call it.

Callers authenticate with the session cookie :data:`SESSION_COOKIE` (browsers) or an
``Authorization: Bearer hw_...`` API token (scripts). The app keeps its
:class:`~homewarden.services.accounts.AccountService` at ``app.state.accounts``.

CSRF (OWASP CSRF Prevention Cheat Sheet): cookie-authenticated unsafe requests (not GET,
HEAD, OPTIONS) must carry the session's synchronizer token in the ``X-CSRF-Token`` header or
the ``csrf_token`` form field, and an ``Origin`` header, when present, must be this site's.
Anonymous forms (login, setup) use the double-submit pattern: the ``csrf_token`` field must
equal the :data:`CSRF_COOKIE` cookie. Token-authenticated requests carry no ambient
credentials and need no CSRF token. Cookies are ``SameSite=Lax`` too.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute

from homewarden.domain.permissions import (
    ANONYMOUS_GRANTS,
    Permission,
    Principal,
    PrincipalKind,
    check_permission,
)
from homewarden.errors import AuthenticationError, PermissionDeniedError
from homewarden.services.accounts import AccountService
from homewarden.store.accounts_store import SessionRecord

#: The session cookie (HttpOnly, SameSite=Lax, Secure over TLS).
SESSION_COOKIE = "hw_session"
#: The double-submit CSRF cookie for anonymous forms (login, setup).
CSRF_COOKIE = "hw_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def accounts_of(request: Request) -> AccountService:
    """The app's account service."""
    service = getattr(request.app.state, "accounts", None)
    if not isinstance(service, AccountService):
        raise RuntimeError("the app has no account service (app.state.accounts)")
    return service


def client_host(request: Request) -> str:
    """The peer address (after trusted-proxy rewriting by uvicorn), or ``unknown``."""
    return request.client.host if request.client else "unknown"


def is_https(request: Request) -> bool:
    """Whether the request reached us over TLS (directly or via a trusted proxy)."""
    return request.url.scheme in ("https", "wss")


def resolve_principal(request: Request) -> tuple[Principal, SessionRecord | None]:
    """The caller behind ``request`` and its session (None for tokens and anonymous callers).
    Cached on the request. A bearer token that is unknown or revoked is an error, not an
    anonymous call, so scripts learn their token is dead.

    Raises:
        AuthenticationError: an ``Authorization`` header with a bad or revoked token.
    """
    cached = getattr(request.state, "hw_principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    accounts = accounts_of(request)
    host = client_host(request)
    found: tuple[Principal, SessionRecord | None] = (Principal.anonymous(host), None)
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        principal = None
        if scheme.lower() == "bearer":
            principal = accounts.principal_for_token(token.strip(), host)
        if principal is None:
            raise AuthenticationError("the API token is unknown or revoked")
        found = (principal, None)
    else:
        secret = request.cookies.get(SESSION_COOKIE)
        if secret:
            resolved = accounts.principal_for_session(secret, host)
            if resolved is not None:
                found = resolved
    request.state.hw_principal = found
    return found


def _same_origin(request: Request, origin: str) -> bool:
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    return parts.netloc.lower() == request.headers.get("host", "").lower()


async def check_csrf(
    request: Request,
    session: SessionRecord | None,
    principal: Principal,
    *,
    anonymous_route: bool = False,
) -> None:
    """Enforce the CSRF rules of the module docstring on an unsafe request. On a route
    anonymous callers may use (login, setup), the double-submit cookie's token is accepted
    from a signed-in browser too (its login form carries that one).

    Raises:
        PermissionDeniedError: a missing or wrong CSRF token, or a foreign ``Origin``.
    """
    if request.method in _SAFE_METHODS or principal.via_token:
        return
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and not _same_origin(request, origin):
        raise PermissionDeniedError(f"cross-site request from {origin} refused (CSRF)")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = [session.csrf_token] if session is not None else []
    if session is None or anonymous_route:
        expected.append(request.cookies.get(CSRF_COOKIE) or "")
    if session is None and anonymous_route:
        # Between password and TOTP the session is not signed in yet; the token the
        # password step answered with belongs to it (it rides on that session's cookie).
        secret = request.cookies.get(SESSION_COOKIE)
        pending = accounts_of(request).session(secret) if secret else None
        if pending is not None:
            expected.append(pending.csrf_token)
    if not sent or not any(e and hmac.compare_digest(sent, e) for e in expected):
        raise PermissionDeniedError("missing or wrong CSRF token; reload the page and try again")


class PermissionGate:
    """A FastAPI dependency that lets a request through only if its caller holds every
    permission in ``permissions`` (and, for unsafe methods, passes the CSRF check); it
    returns the caller's :class:`Principal`."""

    def __init__(self, permissions: tuple[Permission, ...]) -> None:
        if not permissions:
            raise TypeError("a permission gate needs at least one permission")
        self.permissions = permissions

    async def __call__(self, request: Request) -> Principal:
        """Raises AuthenticationError (anonymous caller needing more) or
        PermissionDeniedError (the first permission the caller lacks; a CSRF failure)."""
        principal, session = resolve_principal(request)
        anonymous_route = set(self.permissions) <= set(ANONYMOUS_GRANTS)
        if principal.kind is PrincipalKind.ANONYMOUS and not anonymous_route:
            raise AuthenticationError("sign in first")
        for permission in self.permissions:
            check_permission(principal, permission)
        await check_csrf(request, session, principal, anonymous_route=anonymous_route)
        return principal

    def __repr__(self) -> str:
        return f"PermissionGate({', '.join(self.permissions)})"


def caller(request: Request) -> Principal:
    """The principal behind ``request``, for use-cases that account for who asked. Declare
    with ``who: Annotated[Principal, Depends(caller)]``; the route's permission gate still
    decides whether it may ask at all (and has resolved the caller already).

    Raises:
        AuthenticationError: as :func:`resolve_principal`.
    """
    return resolve_principal(request)[0]


def current_session(request: Request) -> SessionRecord | None:
    """The caller's session (None for API tokens and anonymous callers)."""
    return resolve_principal(request)[1]


def requires(*permissions: Permission) -> Any:
    """The dependency declaring (and enforcing) that a route needs ``permissions``.

    Use as ``@router.get(path, dependencies=[requires(Permission.X)])``.
    """
    return Depends(PermissionGate(tuple(permissions)))


class WebSocketGate:
    """Base of the permission gates of WebSocket routes (a WebSocket has no ``Request``, so
    :class:`PermissionGate` cannot serve; see :mod:`homewarden.web.live`). A subclass
    enforces ``permissions``; :func:`undeclared_routes` counts it as a declaration."""

    permissions: tuple[Permission, ...]


def _gates(dependant: Dependant) -> Iterable[PermissionGate | WebSocketGate]:
    for dep in dependant.dependencies:
        if isinstance(dep.call, PermissionGate | WebSocketGate):
            yield dep.call
        yield from _gates(dep)


def declared_permissions(route: APIRoute | APIWebSocketRoute) -> frozenset[Permission]:
    """Every permission the gates of ``route`` (and of its sub-dependencies) require."""
    return frozenset(p for gate in _gates(route.dependant) for p in gate.permissions)


def undeclared_routes(app: FastAPI) -> list[str]:
    """Routes of ``app`` that declare no permission (non-API routes and mounts always count),
    as ``"METHODS path"`` strings (``"WEBSOCKET path"`` for a WebSocket route); empty when
    every route is gated."""
    missing: list[str] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            if not declared_permissions(route):
                missing.append(f"{','.join(sorted(route.methods or ()))} {route.path}")
        elif isinstance(route, APIWebSocketRoute):
            if not declared_permissions(route):
                missing.append(f"WEBSOCKET {route.path}")
        else:
            missing.append(f"{type(route).__name__} {getattr(route, 'path', '?')}")
    return missing
