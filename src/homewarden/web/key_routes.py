"""Household keys in the JSON API (owners; see :mod:`homewarden.services.household_keys`).

Every owner route needs ``keys:household:manage``, which owners hold and API tokens never do
(a token has no session, so no unlocked keys). Routes that use household keys need the
owner's session to be unlocked (a password login on this server): a locked one is a 401
``keys-locked`` problem, a cure for which is signing in again.

- ``GET /api/keys``: the household's key versions (key ids, who holds a seal of each), its
  people (key pair, entitled, versions held, pending grant), recovery code and escrow state,
  and whether the caller's session is unlocked;
- ``POST /api/keys/members/{user_id}``: seal the household keys to a member who has a camera
  grant now (completes a pending grant; needs the unlocked session);
- ``DELETE /api/keys/members/{user_id}``: withdraw the member's camera grants and keys: their
  seals are destroyed and the household key rotated;
- ``POST /api/keys/recovery``: a new recovery code (answered once; the old one destroyed);
- ``POST /api/keys/recovery/setup-code``: the recovery code made when the caller's setup (or
  first login) completed the household's keys, once; 404 afterwards;
- ``PUT /api/keys/escrow`` ``{"enabled": true|false}`` (JSON booleans only): the
  emergency-access switch (on needs the unlocked session and ``homewarden escrow init``; off
  destroys the escrow seals and rotates);
- ``POST /api/keys/recovery/use`` (anyone, CSRF double-submit like the login form)
  ``{"username", "recovery_code", "new_password"}``: a forgotten owner password; answers the
  replacement recovery code, once.

A member of another household is a 404, as everywhere.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from homewarden.domain import accounts as rules
from homewarden.domain.audit import Actor
from homewarden.domain.permissions import Permission, Principal
from homewarden.errors import KeysLockedError, NotFoundError, PermissionDeniedError
from homewarden.services.household_keys import KeyRing, KeyStatus
from homewarden.services.queries import MAX_ID
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import SessionRecord
from homewarden.web.deps import caller, client_host, current_session
from homewarden.web.routing import gated

Caller = Annotated[Principal, Depends(caller)]
Session = Annotated[SessionRecord | None, Depends(current_session)]
UserId = Annotated[int, Path(description="user id", ge=1, le=MAX_ID)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeysAnswer(BaseModel):
    """The household's keys (:class:`~homewarden.services.household_keys.KeyStatus`) and
    whether the caller's session holds them unlocked."""

    status: KeyStatus
    unlocked: bool


class GrantAnswer(BaseModel):
    """How many key versions were sealed to the member now (0: they held them all)."""

    sealed: int


class RecoveryCodeAnswer(BaseModel):
    """A recovery code, shown this once: keep it offline; it opens the household's keys."""

    recovery_code: str


class EscrowBody(_Strict):
    """The owner's emergency-access switch: JSON ``true`` or ``false`` only (a string or a
    number is a 422, never read as a switch position)."""

    enabled: StrictBool


class RecoverBody(_Strict):
    """A forgotten owner password, with the household's recovery code."""

    username: str = Field(max_length=64)
    recovery_code: str = Field(max_length=100)
    new_password: str = Field(max_length=rules.PASSWORD_MAX)


def _ring(ctx: AppContext) -> KeyRing:
    if ctx.keys is None:
        raise NotFoundError("household keys are not managed by this server")
    return ctx.keys


def _owner_session(who: Principal, session: SessionRecord | None) -> SessionRecord:
    if who.household is None:
        raise PermissionDeniedError("only a household's owner manages its keys")
    if session is None:
        raise KeysLockedError("household keys are unlocked by a password login, not a token")
    return session


def add_routes(app: FastAPI, ctx: AppContext) -> None:
    """Add the household key API (see the module docstring) to ``app``."""
    manage = Permission.KEYS_HOUSEHOLD_MANAGE
    tags = ["keys"]

    @gated(app, "GET", "/api/keys", manage, tags=tags)
    def key_status(who: Caller, session: Session) -> KeysAnswer:
        """The household's keys: versions (current last) and who holds a seal of each, its
        people, the recovery code and escrow state (never a secret)."""
        ring = _ring(ctx)
        if who.household is None:
            raise PermissionDeniedError("only a household's owner manages its keys")
        unlocked = session is not None and ring.is_unlocked(session)
        return KeysAnswer(status=ring.status(who.household), unlocked=unlocked)

    @gated(app, "POST", "/api/keys/members/{user_id}", manage, tags=tags)
    def grant_member(user_id: UserId, who: Caller, session: Session) -> GrantAnswer:
        """Seal every household key version to the member now (they need a camera grant and
        a key pair, made at their first login). Needs the caller's unlocked session."""
        ring = _ring(ctx)
        sealed = ring.grant(_owner_session(who, session), user_id, Actor.of_principal(who))
        return GrantAnswer(sealed=sealed)

    @gated(
        app,
        "DELETE",
        "/api/keys/members/{user_id}",
        manage,
        status_code=204,
        response_class=Response,
        tags=tags,
    )
    def revoke_member(user_id: UserId, who: Caller) -> Response:
        """Withdraw the member's camera grants and keys: their seals are destroyed and the
        household key rotated for new footage (they hold no seal of the new version)."""
        _ring(ctx).revoke(who, user_id, Actor.of_principal(who))
        return Response(status_code=204)

    @gated(app, "POST", "/api/keys/recovery", manage, tags=tags)
    def rotate_recovery(who: Caller, session: Session) -> RecoveryCodeAnswer:
        """A new recovery code, answered this once; the old one no longer opens anything.
        Needs the caller's unlocked session."""
        ring = _ring(ctx)
        code = ring.rotate_recovery(_owner_session(who, session), Actor.of_principal(who))
        return RecoveryCodeAnswer(recovery_code=code)

    @gated(app, "POST", "/api/keys/recovery/setup-code", manage, tags=tags)
    def setup_recovery_code(who: Caller) -> RecoveryCodeAnswer:
        """The recovery code made when the caller's setup completed the household's keys,
        this once (404 afterwards, or after a restart: make a new one then)."""
        code = _ring(ctx).take_setup_recovery_code(who.user_id or 0)
        if code is None:
            raise NotFoundError("no recovery code is waiting to be shown; make a new one")
        return RecoveryCodeAnswer(recovery_code=code)

    @gated(app, "PUT", "/api/keys/escrow", manage, tags=tags)
    def set_escrow(body: EscrowBody, who: Caller, session: Session) -> KeysAnswer:
        """Turn emergency access on (the household keys are sealed to the deployment's escrow
        key, which two custodians together can open for an emergency disclosure; needs the
        unlocked session) or off (the escrow seals are destroyed and the key rotated)."""
        ring = _ring(ctx)
        actor = Actor.of_principal(who)
        if body.enabled:
            ring.enable_escrow(_owner_session(who, session), actor)
        else:
            ring.disable_escrow(who, actor)
            if ctx.disclosure is not None and who.household is not None:
                # Emergencies waiting for custodians' shares can no longer be opened: answer
                # them now rather than at the scheduler's next pass.
                ctx.disclosure.answer_escrow_off(who.household)
        assert who.household is not None
        unlocked = session is not None and ring.is_unlocked(session)
        return KeysAnswer(status=ring.status(who.household), unlocked=unlocked)

    @gated(
        app,
        "POST",
        "/api/keys/recovery/use",
        Permission.ACCOUNTS_SESSION_CREATE,
        tags=tags,
    )
    def use_recovery_code(body: RecoverBody, request: Request) -> RecoveryCodeAnswer:
        """A forgotten owner password: the household's recovery code sets a new one and
        re-wraps the owner's keys; every session of the owner ends. The code is replaced:
        the answer carries the new one, this once."""
        code = _ring(ctx).recover(
            body.username, body.recovery_code, body.new_password, client_host(request)
        )
        return RecoveryCodeAnswer(recovery_code=code)
