"""Building the real web app over real services, and signing in to it, for web tests.

Every test runs with authorization on: callers authenticate with an API token
(:func:`token_client`) or a logged-in session cookie (:func:`login`), exactly as scripts and
browsers do.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.domain.permissions import Role
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.queries import CameraStatusLike, Queries
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import UserRecord
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER

with warnings.catch_warnings():
    # Starlette announces a move from httpx to httpx2 for its test client.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient as TestClient

#: A password that passes the account rules (SP 800-63B checks in domain.accounts).
PASSWORD = "correct horse battery staple"
LOOPBACK = ("127.0.0.1", 50123)


@dataclass
class Clock:
    """A settable clock (UTC epoch seconds) for lockouts, grants and TOTP steps."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def make_context(
    index: Index,
    settings: Settings,
    audit: AuditLog,
    *,
    statuses: Callable[[], Mapping[str, CameraStatusLike]] | None = None,
    clock: Callable[[], float] = time.time,
    public_url: str = "http://testserver",
) -> AppContext:
    """An :class:`AppContext` over real services, with the households created."""
    if statuses is None:
        queries = Queries(index, settings, clock=clock, audit=audit)
    else:
        queries = Queries(index, settings, statuses, clock, audit=audit)
    accounts = AccountService(index, audit, settings, clock=clock)
    accounts.ensure_households()
    return AppContext(
        settings=settings,
        index=index,
        audit=audit,
        queries=queries,
        accounts=accounts,
        clock=clock,
        public_url=public_url,
    )


def add_user(
    ctx: AppContext,
    username: str,
    role: Role = Role.OWNER,
    household: str | None = "home",
    *,
    password: str = PASSWORD,
    cameras: tuple[str, ...] = (),
) -> UserRecord:
    """Create an account with a password (members get ``cameras`` granted by an owner of
    the household, who is created when missing)."""
    user = ctx.accounts.add_user(username, role, household, actor=None, password=password).user
    if cameras:
        owners = [u for u in ctx.accounts.users(household) if u.role == Role.OWNER]
        owner = ctx.accounts.principal_of(owners[0])
        from homewarden.domain.audit import Actor

        for camera in cameras:
            ctx.accounts.grant_camera(owner, user.id, camera, Actor.of_principal(owner))
    return user


def client(
    app: FastAPI, *, host: tuple[str, int] = LOOPBACK, https: bool = False, **kwargs: Any
) -> TestClient:
    """A test client of ``app`` from ``host`` (over https when asked)."""
    base = "https://testserver" if https else "http://testserver"
    return TestClient(app, client=host, base_url=base, raise_server_exceptions=False, **kwargs)


def token_client(app: FastAPI, ctx: AppContext, user: UserRecord, **kwargs: Any) -> TestClient:
    """A client authenticated with a fresh API token of ``user``."""
    secret, _ = ctx.accounts.create_token(user.id, "tests")
    return client(app, headers={"Authorization": f"Bearer {secret}"}, **kwargs)


def csrf(c: TestClient) -> str:
    """The double-submit CSRF token (``GET /api/csrf`` sets its cookie on ``c``)."""
    resp = c.get("/api/csrf")
    assert resp.status_code == 200, resp.text
    return str(resp.json()["csrf_token"])


def login(c: TestClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    """Log ``c`` in with a password (no TOTP); returns the answer (``csrf_token``...)."""
    token = csrf(c)
    resp = c.post(
        "/api/session",
        json={"username": username, "password": password},
        headers={CSRF_HEADER: token},
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def build(ctx: AppContext) -> FastAPI:
    """The real app over ``ctx``."""
    return create_app(ctx)
