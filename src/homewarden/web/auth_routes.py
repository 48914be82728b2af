"""Accounts JSON API under ``/api``: sessions (login, TOTP, logout), the caller's own
account and API tokens, the owner's user and camera-grant management, support grants, and
the one-time setup link.

Every route is declared with :func:`homewarden.web.routing.gated`. Anonymous routes (login,
setup) hold :data:`~homewarden.domain.permissions.Permission.ACCOUNTS_SESSION_CREATE` and are
protected against CSRF by the double-submit cookie :data:`~homewarden.web.deps.CSRF_COOKIE`,
which ``GET /api/csrf`` sets (the permission gate checks it). Request bodies are JSON or an
HTML form (``application/x-www-form-urlencoded``) with the same fields.

Cookies (OWASP Session Management Cheat Sheet, "Cookies"): the session cookie
:data:`~homewarden.web.deps.SESSION_COOKIE` is ``HttpOnly``, ``SameSite=Lax``, ``Path=/``, and
``Secure`` when the request came over TLS (:func:`homewarden.web.deps.is_https`). A login
always issues a new session secret and ends the session the browser presented before, and
the TOTP step replaces the half-logged-in session with a new one (no session fixation).

Answers never carry password hashes, TOTP secrets of enrolled users or token hashes; the one
secret ever returned is a new API token's, once, in the answer that creates it.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from homewarden.domain import accounts as rules
from homewarden.domain.audit import Actor
from homewarden.domain.permissions import (
    Permission,
    Principal,
    PrincipalKind,
    Role,
    held_permissions,
)
from homewarden.errors import AuthenticationError, InvalidRequestError, NotFoundError
from homewarden.services.accounts import AccountService, LoginStep
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import (
    SessionRecord,
    SupportGrantRecord,
    TokenRecord,
    UserRecord,
)
from homewarden.web.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    caller,
    client_host,
    current_session,
    is_https,
)
from homewarden.web.routing import gated

M = TypeVar("M", bound=BaseModel)
Caller = Annotated[Principal, Depends(caller)]
Session = Annotated[SessionRecord | None, Depends(current_session)]
UserId = Annotated[int, Path(description="user id", ge=1, le=2**31 - 1)]
ObjectId = Annotated[int, Path(description="id", ge=1, le=2**31 - 1)]
#: Path of the setup page a one-time setup link opens (the secret follows in ``token``).
SETUP_PATH = "/setup"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


# -- bodies and answers ------------------------------------------------------------------


class LoginBody(BaseModel):
    """A password login."""

    username: str = Field(max_length=256)
    password: str = Field(max_length=rules.PASSWORD_MAX)


class TotpBody(BaseModel):
    """The 6-digit TOTP code (RFC 6238) finishing a login."""

    code: str = Field(max_length=16)


class SessionAnswer(BaseModel):
    """A login step: ``needs_totp`` when the code must follow (``POST /api/session/totp``);
    ``csrf_token`` goes in the ``X-CSRF-Token`` header (or ``csrf_token`` form field) of
    every state-changing request made with the session cookie."""

    needs_totp: bool
    csrf_token: str


class CsrfAnswer(BaseModel):
    """The double-submit token for anonymous forms; send it as ``X-CSRF-Token`` (or the
    ``csrf_token`` form field) together with the ``hw_csrf`` cookie just set."""

    csrf_token: str


class MeAnswer(BaseModel):
    """The caller's account. ``csrf_token`` is the session's (None with an API token);
    ``cameras`` the cameras a member was granted (None for other roles)."""

    id: int
    username: str
    display_name: str
    role: str
    household: str | None
    totp_enabled: bool
    via_token: bool
    csrf_token: str | None
    cameras: list[str] | None
    permissions: list[str]


class TokenBody(BaseModel):
    """A new API token's name (1-100 characters, to recognise it later)."""

    name: str = Field(min_length=1, max_length=100)


class TokenView(BaseModel):
    """An API token (never its secret). Times are UTC epoch seconds."""

    id: int
    name: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @classmethod
    def of(cls, rec: TokenRecord) -> TokenView:
        """From a stored record."""
        return cls(
            id=rec.id,
            name=rec.name,
            prefix=rec.prefix,
            created_at=rec.created_at,
            last_used_at=rec.last_used_at,
            revoked_at=rec.revoked_at,
        )


class NewTokenAnswer(BaseModel):
    """A new API token: ``secret`` (``hw_...``) is shown this once and never again; send it
    as ``Authorization: Bearer <secret>``."""

    token: TokenView
    secret: str


class UserBody(BaseModel):
    """A new member of the owner's household; it gets a one-time setup link. Owners and staff
    are made at the machine's shell (``homewarden user add``), never over the network."""

    username: str = Field(max_length=64)
    role: Literal["member"] = "member"
    display_name: str = Field(default="", max_length=100)


class UserView(BaseModel):
    """An account as the owner sees it. ``cameras``: a member's granted cameras."""

    id: int
    username: str
    display_name: str
    role: str
    household: str | None
    disabled: bool
    totp_enabled: bool
    has_password: bool
    cameras: list[str] | None
    created_at: float


class NewUserAnswer(BaseModel):
    """A created account and its one-time setup link (``setup_path``, and ``setup_url``
    when the public address is known); valid for 24 hours, usable once."""

    user: UserView
    setup_path: str
    setup_url: str


class SupportGrantBody(BaseModel):
    """A support grant: ``hours`` in (0, 168], and why support needs to see footage."""

    hours: float = Field(gt=0, le=rules.SUPPORT_GRANT_MAX / 3600)
    reason: str = Field(min_length=1, max_length=500)


class SupportGrantView(BaseModel):
    """A support grant; ``active`` while not revoked and not expired. Times UTC epoch s."""

    id: int
    household: str
    reason: str
    created_at: float
    expires_at: float
    revoked_at: float | None
    active: bool


class SetupBody(BaseModel):
    """Use a one-time setup link: the new password, and optionally (for staff: necessarily)
    a TOTP secret from ``GET /api/setup/totp`` proven by a current code."""

    token: str = Field(min_length=1, max_length=200)
    password: str = Field(max_length=rules.PASSWORD_MAX)
    totp_secret: str | None = Field(default=None, max_length=64)
    totp_code: str | None = Field(default=None, max_length=16)


class SetupAnswer(BaseModel):
    """The account whose password was set; log in next."""

    username: str
    role: str


class TotpEnrolmentAnswer(BaseModel):
    """A fresh TOTP secret (base32) and its ``otpauth://`` URI (for a QR code)."""

    secret: str
    uri: str


# -- cookies -----------------------------------------------------------------------------


def set_session_cookie(
    response: Response, request: Request, secret: str, max_age: int | None = None
) -> None:
    """Set the session cookie (flags in the module docstring); ``max_age`` None makes it a
    browser-session cookie."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    """Remove the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=is_https(request)
    )


def ensure_csrf_cookie(request: Request, response: Response) -> str:
    """The double-submit CSRF token of this browser: the ``hw_csrf`` cookie it has, or a new
    one set on ``response`` (HttpOnly; the value is handed to the page or script instead)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or not 20 <= len(token) <= 100 or not token.isascii():
        token = secrets.token_urlsafe(32)
    response.set_cookie(
        CSRF_COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    return token


# -- helpers -----------------------------------------------------------------------------


async def read_body(request: Request, model: type[M]) -> M:
    """``model`` from a JSON body or an HTML form with the same fields.

    Raises:
        RequestValidationError: missing or malformed fields (a 422 problem).
    """
    data: Any
    if request.headers.get("content-type", "").startswith(_FORM_TYPES):
        form = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        try:
            data = await request.json()
        except ValueError:
            raise RequestValidationError(
                [{"loc": ("body",), "msg": "the body is not JSON", "type": "json_invalid"}]
            ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }


def _actor(who: Principal) -> Actor:
    return Actor.of_principal(who)


def _user_view(accounts: AccountService, user: UserRecord) -> UserView:
    cameras = sorted(accounts.camera_grants(user.id)) if user.role == Role.MEMBER else None
    return UserView(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        household=user.household_id,
        disabled=user.disabled,
        totp_enabled=user.totp_secret is not None,
        has_password=user.password_hash is not None,
        cameras=cameras,
        created_at=user.created_at,
    )


def _grant_view(grant: SupportGrantRecord, now: float) -> SupportGrantView:
    return SupportGrantView(
        id=grant.id,
        household=grant.household_id,
        reason=grant.reason,
        created_at=grant.created_at,
        expires_at=grant.expires_at,
        revoked_at=grant.revoked_at,
        active=grant.revoked_at is None and now < grant.expires_at,
    )


def _household_user(accounts: AccountService, owner: Principal, user_id: int) -> UserRecord:
    """A user of the owner's household (another household's id is "not found")."""
    try:
        user = accounts.user(user_id)
    except NotFoundError:
        raise NotFoundError(f"no user {user_id}") from None
    if owner.household is None or user.household_id != owner.household:
        raise NotFoundError(f"no user {user_id}")
    return user


def _user_id(who: Principal) -> int:
    if who.kind is not PrincipalKind.USER or who.user_id is None:
        raise AuthenticationError("sign in first")
    return who.user_id


def setup_path(secret: str) -> str:
    """The path of the setup page for a one-time setup link secret."""
    return f"{SETUP_PATH}?token={secret}"


# -- routes ------------------------------------------------------------------------------


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the accounts API (see the module docstring) to ``app``."""
    accounts = ctx.accounts

    def _login_answer(request: Request, response: Response, step: LoginStep) -> SessionAnswer:
        old = request.cookies.get(SESSION_COOKIE)
        if old and old != step.session_secret:
            accounts.logout(old)  # the session presented before login never lives on
        max_age = None
        if not step.needs_totp:
            user = accounts.user(step.session.user_id)
            max_age = int(rules.session_lifetime(Role(user.role)).absolute)
        set_session_cookie(response, request, step.session_secret, max_age)
        return SessionAnswer(needs_totp=step.needs_totp, csrf_token=step.session.csrf_token)

    @gated(app, "GET", "/api/csrf", Permission.SYSTEM_PUBLIC_READ, tags=["accounts"])
    def get_csrf(request: Request, response: Response) -> CsrfAnswer:
        """Set the double-submit CSRF cookie (``hw_csrf``) for anonymous forms and return
        its value (send it back as ``X-CSRF-Token`` when logging in or using a setup link)."""
        return CsrfAnswer(csrf_token=ensure_csrf_cookie(request, response))

    @gated(
        app,
        "POST",
        "/api/session",
        Permission.ACCOUNTS_SESSION_CREATE,
        tags=["accounts"],
        openapi_extra=_body_doc(LoginBody),
        responses={429: {"description": "too many failed logins; see Retry-After"}},
    )
    async def create_session(request: Request, response: Response) -> SessionAnswer:
        """Log in with username and password. Sets the session cookie; when the account has
        TOTP, the session waits for ``POST /api/session/totp`` (``needs_totp``). Failures
        are throttled per (username, client address) and per address (429 with
        Retry-After)."""
        body = await read_body(request, LoginBody)
        step = accounts.login(body.username, body.password, client_host(request))
        return _login_answer(request, response, step)

    @gated(
        app,
        "POST",
        "/api/session/totp",
        Permission.ACCOUNTS_SESSION_CREATE,
        tags=["accounts"],
        openapi_extra=_body_doc(TotpBody),
        responses={429: {"description": "too many failed codes; see Retry-After"}},
    )
    async def verify_totp(request: Request, response: Response) -> SessionAnswer:
        """Finish a login with the TOTP code; the session is replaced by a new one (a new
        cookie and CSRF token)."""
        body = await read_body(request, TotpBody)
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            raise AuthenticationError("the login has expired; enter the password again")
        step = accounts.verify_totp(secret, body.code, client_host(request))
        return _login_answer(request, response, step)

    @gated(
        app,
        "DELETE",
        "/api/session",
        Permission.ACCOUNTS_SELF_MANAGE,
        status_code=204,
        response_class=Response,
        tags=["accounts"],
    )
    def delete_session(request: Request) -> Response:
        """Log out: end the session and clear its cookie."""
        secret = request.cookies.get(SESSION_COOKIE)
        if secret:
            accounts.logout(secret)
        response = Response(status_code=204)
        clear_session_cookie(response, request)
        return response

    @gated(app, "GET", "/api/me", Permission.ACCOUNTS_SELF_MANAGE, tags=["accounts"])
    def me(who: Caller, session: Session) -> MeAnswer:
        """The caller's own account, role, household and the session's CSRF token."""
        user = accounts.user(_user_id(who))
        return MeAnswer(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            role=user.role,
            household=user.household_id,
            totp_enabled=user.totp_secret is not None,
            via_token=who.via_token,
            csrf_token=session.csrf_token if session is not None else None,
            cameras=sorted(who.cameras) if who.cameras is not None else None,
            permissions=sorted(held_permissions(who)),
        )

    # tokens

    @gated(app, "GET", "/api/tokens", Permission.ACCOUNTS_CREDENTIAL_MANAGE, tags=["accounts"])
    def list_tokens(who: Caller) -> list[TokenView]:
        """The caller's API tokens, newest first (never their secrets)."""
        return [TokenView.of(t) for t in accounts.tokens(_user_id(who))]

    @gated(
        app,
        "POST",
        "/api/tokens",
        Permission.ACCOUNTS_CREDENTIAL_MANAGE,
        status_code=201,
        tags=["accounts"],
        openapi_extra=_body_doc(TokenBody),
    )
    async def create_token(request: Request, who: Caller) -> NewTokenAnswer:
        """A new API token for scripts; its secret is in this answer only."""
        body = await read_body(request, TokenBody)
        secret, rec = accounts.create_token(_user_id(who), body.name)
        return NewTokenAnswer(token=TokenView.of(rec), secret=secret)

    @gated(
        app,
        "DELETE",
        "/api/tokens/{token_id}",
        Permission.ACCOUNTS_CREDENTIAL_MANAGE,
        tags=["accounts"],
    )
    def revoke_token(token_id: ObjectId, who: Caller) -> TokenView:
        """Revoke one of the caller's tokens; it stops working at once."""
        return TokenView.of(accounts.revoke_token(_user_id(who), token_id))

    # users (owner)

    @gated(app, "GET", "/api/users", Permission.ACCOUNTS_USER_MANAGE, tags=["users"])
    def list_users(who: Caller) -> list[UserView]:
        """The accounts of the owner's household."""
        if who.household is None:
            return []
        return [_user_view(accounts, u) for u in accounts.users(who.household)]

    @gated(
        app,
        "POST",
        "/api/users",
        Permission.ACCOUNTS_USER_MANAGE,
        status_code=201,
        tags=["users"],
        openapi_extra=_body_doc(UserBody),
    )
    async def create_user(request: Request, who: Caller) -> NewUserAnswer:
        """Add a member to the owner's household; the answer carries the one-time setup link
        to hand to them."""
        body = await read_body(request, UserBody)
        if who.household is None:
            raise InvalidRequestError("only a household's owner adds users")
        created = accounts.add_user(
            body.username,
            body.role,
            who.household,
            actor=_actor(who),
            display_name=body.display_name,
        )
        assert created.setup_secret is not None  # no password given: a setup link
        path = setup_path(created.setup_secret)
        return NewUserAnswer(
            user=_user_view(accounts, created.user),
            setup_path=path,
            setup_url=f"{ctx.public_url}{path}" if ctx.public_url else path,
        )

    def _set_disabled(who: Principal, user_id: int, disabled: bool) -> UserView:
        user = _household_user(accounts, who, user_id)
        if disabled and user.id == who.user_id:
            raise InvalidRequestError("you cannot disable your own account")
        return _user_view(accounts, accounts.set_disabled(user.id, disabled, actor=_actor(who)))

    @gated(
        app, "POST", "/api/users/{user_id}/disable", Permission.ACCOUNTS_USER_MANAGE, tags=["users"]
    )
    def disable_user(user_id: UserId, who: Caller) -> UserView:
        """Disable an account of the household: its sessions end, its tokens stop working."""
        return _set_disabled(who, user_id, True)

    @gated(
        app, "POST", "/api/users/{user_id}/enable", Permission.ACCOUNTS_USER_MANAGE, tags=["users"]
    )
    def enable_user(user_id: UserId, who: Caller) -> UserView:
        """Re-enable an account of the household (and clear its login lockouts)."""
        return _set_disabled(who, user_id, False)

    @gated(
        app,
        "PUT",
        "/api/users/{user_id}/cameras/{camera}",
        Permission.ACCOUNTS_USER_MANAGE,
        tags=["users"],
    )
    def grant_camera(user_id: UserId, camera: str, who: Caller) -> UserView:
        """Let a member of the household see one of its cameras."""
        user = _household_user(accounts, who, user_id)
        accounts.grant_camera(who, user.id, camera, _actor(who))
        return _user_view(accounts, accounts.user(user.id))

    @gated(
        app,
        "DELETE",
        "/api/users/{user_id}/cameras/{camera}",
        Permission.ACCOUNTS_USER_MANAGE,
        tags=["users"],
    )
    def revoke_camera(user_id: UserId, camera: str, who: Caller) -> UserView:
        """Withdraw a member's camera grant (no error when there was none)."""
        user = _household_user(accounts, who, user_id)
        accounts.revoke_camera(who, user.id, camera, _actor(who))
        return _user_view(accounts, accounts.user(user.id))

    # support grants (owner)

    @gated(
        app,
        "GET",
        "/api/support-grants",
        Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE,
        tags=["users"],
    )
    def list_support_grants(who: Caller) -> list[SupportGrantView]:
        """The household's support grants, newest first."""
        if who.household is None:
            return []
        now = ctx.clock()
        return [_grant_view(g, now) for g in accounts.support_grants(who.household)]

    @gated(
        app,
        "POST",
        "/api/support-grants",
        Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE,
        status_code=201,
        tags=["users"],
        openapi_extra=_body_doc(SupportGrantBody),
    )
    async def create_support_grant(request: Request, who: Caller) -> SupportGrantView:
        """Let staff support see the household's footage for ``hours`` (at most a week);
        the grant and every use of it are in the audit log."""
        body = await read_body(request, SupportGrantBody)
        grant = accounts.grant_support(who, body.hours, body.reason, _actor(who))
        return _grant_view(grant, ctx.clock())

    @gated(
        app,
        "DELETE",
        "/api/support-grants/{grant_id}",
        Permission.ACCOUNTS_SUPPORT_GRANT_MANAGE,
        tags=["users"],
    )
    def revoke_support_grant(grant_id: ObjectId, who: Caller) -> SupportGrantView:
        """End a support grant now."""
        return _grant_view(accounts.revoke_support(who, grant_id, _actor(who)), ctx.clock())

    # setup links (anonymous)

    @gated(
        app,
        "POST",
        "/api/setup",
        Permission.ACCOUNTS_SESSION_CREATE,
        tags=["accounts"],
        openapi_extra=_body_doc(SetupBody),
    )
    async def complete_setup(request: Request) -> SetupAnswer:
        """Use a one-time setup link: set the password (and TOTP). The link is then spent."""
        body = await read_body(request, SetupBody)
        user = accounts.complete_setup(
            body.token,
            body.password,
            totp_secret=body.totp_secret or None,
            totp_code=body.totp_code,
        )
        return SetupAnswer(username=user.username, role=user.role)

    @gated(app, "GET", "/api/setup/totp", Permission.ACCOUNTS_SESSION_CREATE, tags=["accounts"])
    def setup_totp(
        token: Annotated[str, Query(description="the setup link's token", max_length=200)],
    ) -> TotpEnrolmentAnswer:
        """A fresh TOTP secret and ``otpauth://`` URI for the account of a valid setup link
        (prove it with a code in ``POST /api/setup``)."""
        user = accounts.setup_user(token)
        enrolment = accounts.begin_totp(user.id)
        return TotpEnrolmentAnswer(secret=enrolment.secret, uri=enrolment.uri)
