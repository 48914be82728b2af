"""Custodians' escrow shares for an emergency disclosure over sealed footage (DESIGN.md flow
8; issue 6: "emergency fulfilment asks two of them for their shares").

An emergency request (:mod:`homewarden.domain.disclosure`: a confirmed call-back, approved by
a legal reviewer and a custodian) over footage sealed at rest cannot be packaged by the
scheduler: nobody on the server holds the household's keys. Where the owner turned emergency
access on, those keys are sealed to the deployment's escrow key, whose private key exists
only as custodian shares (2-of-3, ``homewarden escrow init``). :class:`EmergencyShareCollector`
takes those shares, one custodian at a time:

1. A custodian (role custodian, signed in with their password and TOTP: never an API token)
   enters their share for the request. The request must be an emergency whose release is
   decided (approved; the owner's notice sent or scheduled), not fulfilled yet, over a scope
   holding sealed footage (else :class:`~homewarden.errors.InvalidTransitionError`); the
   owner must have opted into emergency access. The share is checked at once (its checksum,
   and that it is a share of this deployment's escrow key), so a mistyped one is refused
   before anyone waits on it.
2. The first share is held in this server process's memory only (never the database or a
   file), bound to the request and the custodian's account id, for at most
   :data:`SHARE_HOLD_SECONDS` (15 min; then it is dropped unused). The same custodian
   entering a share again replaces their own: one person never counts as two.
3. A share from a *different* custodian completes the pair: the held share is taken out,
   :meth:`~homewarden.services.household_keys.KeyRing.open_for_emergency` combines both and
   opens the household's key versions, and
   :meth:`~homewarden.services.disclosure.DisclosureService.fulfil_with_keys` makes the
   request's package with them in memory. The opened keys and both shares are dropped
   afterwards, whether it worked or not; on failure the request stays waiting and two
   custodians start again. A combination the shares cannot make (the same share twice,
   shares that do not match) is :class:`~homewarden.errors.KeyShareError` naming the reason.

Every share entered (held, replaced, refused, expired, used) is an audit entry
``key:escrow:share`` naming the request, the household and the escrow key id (never a share
byte); the combination itself is ``key:escrow:use`` (written by the key ring) and the package
``footage:export:create`` (written by the evidence service). They reach the owner's access
log once the request's owner notice is sent (:mod:`homewarden.services.access_log`).

Held shares live in the memory of one server process: on a deployment with several web
servers both custodians use the same one (the page they are sent to), and a restart drops a
held share (the first custodian enters it again). Python cannot wipe memory: dropping a share
or a key drops the references only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from homewarden.crypto.household_keys import HouseholdKeyPair, parse_escrow_share
from homewarden.domain import disclosure as d
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.permissions import Principal, PrincipalKind, Role
from homewarden.errors import (
    HomeWardenError,
    InvalidRequestError,
    InvalidTransitionError,
    KeyShareError,
    KeyUnavailableError,
    PermissionDeniedError,
)
from homewarden.services.audit import AuditLog
from homewarden.services.disclosure import DisclosureService, request_from_json
from homewarden.services.household_keys import KeyRing
from homewarden.services.sealed_footage import KeySource
from homewarden.store.disclosure_store import StoredRequest
from homewarden.store.index import Index

log = logging.getLogger(__name__)

#: How long a first custodian's share is held waiting for a second one, seconds (15 min:
#: long enough to reach a second custodian by phone, short enough that a share entered and
#: forgotten does not sit in memory).
SHARE_HOLD_SECONDS = 15 * 60.0
#: The answer while one custodian's share is held.
WAITING: Final = "waiting for a second custodian"
#: The answer once two custodians' shares fulfilled the request.
FULFILLED: Final = "fulfilled"
#: Who drops a held share that expired.
_SYSTEM = Actor(ActorKind.SYSTEM, "emergency-escrow")
#: States of a request whose release is decided and which waits for its package.
_DECIDED = frozenset(
    {d.State.APPROVED, d.State.NARROWED, d.State.NOTICE_SCHEDULED, d.State.OWNER_NOTIFIED}
)


@dataclass(slots=True)
class _Held:
    """One custodian's share held for a request: the text as typed, who entered it (account
    id), when (UTC epoch s), and the timer that drops it at expiry."""

    share: str
    user_id: int
    entered_at: float
    timer: threading.Timer | None = None


@dataclass(frozen=True, slots=True)
class ShareAnswer:
    """What entering a share did.

    ``state``: :data:`WAITING` (this share is held; ``expires_at``, UTC epoch s, is when it
    is dropped unused) or :data:`FULFILLED` (``package``: the zip's name in the disclosure
    service's packages dir, or ``none`` when the scope held no footage after all).
    ``request_state``: the request's state afterwards. ``replaced``: this custodian's own
    earlier share was replaced (it never counts as a second custodian's).
    """

    state: Literal["waiting for a second custodian", "fulfilled"]
    request_id: str
    request_state: str
    expires_at: float | None = None
    package: str | None = None
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class HeldShareView:
    """That a share is held for a request (never the share): by which custodian account,
    since and until when (UTC epoch s)."""

    user_id: int
    entered_at: float
    expires_at: float


class EmergencyShareCollector:
    """Collects custodians' escrow shares for emergency requests over sealed footage and
    fulfils a request once two different custodians' shares are in (see the module
    docstring). One per server process; thread-safe.

    Args:
        disclosure: the disclosure service (reads requests, makes the package).
        keys: the household key ring (combines the shares, opens the escrow seals).
        audit: where every share entry is written.
        index: the footage index (is the request's scope sealed?).
        clock: now as UTC epoch seconds.
        hold_seconds: how long a first share is held (default :data:`SHARE_HOLD_SECONDS`).
    """

    def __init__(
        self,
        disclosure: DisclosureService,
        keys: KeyRing,
        audit: AuditLog,
        index: Index,
        *,
        clock: Callable[[], float] = time.time,
        hold_seconds: float = SHARE_HOLD_SECONDS,
    ) -> None:
        if hold_seconds <= 0:
            raise ValueError("hold_seconds must be positive")
        self._disclosure = disclosure
        self._keys = keys
        self._audit = audit
        self._index = index
        self._clock = clock
        self._hold = hold_seconds
        self._lock = threading.Lock()  # the held shares
        self._entering = threading.Lock()  # one share entry at a time, start to end
        self._held: dict[str, _Held] = {}

    # --- reading ---------------------------------------------------------------------------

    def held(self, request_id: str) -> HeldShareView | None:
        """Whether a share is held for ``request_id`` now (dropping it if it expired)."""
        self.sweep()
        with self._lock:
            held = self._held.get(request_id)
            if held is None:
                return None
            return HeldShareView(held.user_id, held.entered_at, held.entered_at + self._hold)

    def check_waiting(self, request_id: str) -> StoredRequest:
        """The request, if it is one custodians' shares can fulfil now: an emergency, its
        release decided, no package yet, a scope holding sealed footage.

        Raises:
            NotFoundError: no such request.
            InvalidTransitionError: not an emergency, not approved, fulfilled already,
                answered "the owner holds the keys", or no sealed footage in its scope (the
                scheduler packages it without keys).
        """
        stored = self._disclosure.store.request(request_id)
        req = request_from_json(stored.data)
        if req.type is not d.RequestType.EMERGENCY:
            raise InvalidTransitionError(
                f"request {request_id} is a {req.type.replace('_', ' ')} request: escrow "
                "shares are entered for emergency requests only"
            )
        if stored.package is not None or req.state is d.State.FULFILLED:
            raise InvalidTransitionError(f"request {request_id} is fulfilled already")
        if req.owner_holds_keys:
            raise InvalidTransitionError(
                f"request {request_id} is answered: {d.OWNER_HOLDS_KEYS} (the owner has not "
                "opted into emergency access)"
            )
        if (
            req.state not in _DECIDED
            or req.release is not d.Release.FOOTAGE
            or d.release_grounds(req) != "emergency"
        ):
            raise InvalidTransitionError(
                f"request {request_id} is {req.state.replace('_', ' ')}: shares are entered "
                "only once a legal reviewer and a custodian approved it after a confirmed "
                "call-back"
            )
        if not self._sealed(req.scope):
            raise InvalidTransitionError(
                f"request {request_id} covers no sealed footage: it needs no escrow shares "
                "(the scheduler packages it)"
            )
        return stored

    # --- entering a share ------------------------------------------------------------------

    def enter(self, principal: Principal, request_id: str, share: str) -> ShareAnswer:
        """Custodian ``principal`` enters their escrow ``share`` (text as typed) for the
        emergency request ``request_id`` (see the module docstring for what follows).

        Raises:
            PermissionDeniedError: not a custodian signed in with a session (an API token,
                another role); the owner has not opted into emergency access (or turned it
                off: a held share is dropped); the household's policy refuses emergencies
                now (found when combining: both shares dropped).
            NotFoundError: no such request.
            InvalidTransitionError: not an emergency, not approved, fulfilled already,
                answered "the owner holds the keys", or no sealed footage in scope (a share
                held for it is dropped).
            InvalidRequestError: the deployment has no escrow key.
            KeyShareError: this share is malformed, mistyped or of another escrow key (only
                it is refused; a share held for the request stays); or the two shares do not
                combine (both dropped; ``reason`` says why).
            KeyUnavailableError, SealedDataError, StorageError, MediaError: the package
                could not be made (keys and both shares dropped; the request stays waiting).
        """
        user_id = _custodian(principal)
        actor = Actor.of_principal(principal)
        with self._entering:
            try:
                stored = self.check_waiting(request_id)
            except InvalidTransitionError:
                if self.drop(request_id):  # fulfilled, withdrawn, ... meanwhile
                    log.info("request %s: a held escrow share dropped", request_id)
                raise
            escrow_hex = self._check_share(share, actor, stored)
            self.sweep()
            with self._lock:
                held = self._held.get(request_id)
                if held is not None and held.user_id != user_id:
                    del self._held[request_id]
            if held is None or held.user_id == user_id:
                return self._hold_share(actor, user_id, stored, escrow_hex, share, held)
            try:
                return self._complete(actor, stored, escrow_hex, held, share)
            finally:
                _cancel(held)
                held.share = ""
                log.info("request %s: both escrow shares dropped", request_id)

    def sweep(self) -> int:
        """Drop every held share that has expired (each an audit entry); returns how many."""
        now = self._clock()
        with self._lock:
            gone = {rid: h for rid, h in self._held.items() if h.entered_at + self._hold <= now}
            for rid in gone:
                del self._held[rid]
        for rid, held in gone.items():
            _cancel(held)
            self._audit_expired(rid, held)
        return len(gone)

    def drop(self, request_id: str) -> bool:
        """Drop the share held for ``request_id``, if any (no audit entry: the caller's step
        is audited); returns whether one was held."""
        with self._lock:
            held = self._held.pop(request_id, None)
        _cancel(held)
        return held is not None

    # --- internals -------------------------------------------------------------------------

    def _sealed(self, scope: d.Scope) -> bool:
        return any(
            seg.sealed
            for camera in scope.cameras
            for seg in self._index.segments(camera, scope.start, scope.end)
        )

    def _check_share(self, share: str, actor: Actor, stored: StoredRequest) -> str:
        """The escrow key id (hex) ``share`` belongs to, once it is known to be a share of
        this deployment's escrow key and the household opted in; a refusal is audited."""
        household = stored.household
        ring = self._keys.store
        escrow = ring.escrow_key()
        if escrow is None:
            raise InvalidRequestError(
                "this deployment has no escrow key; its operator runs `homewarden escrow init`"
            )
        escrow_hex = escrow.key_id.hex()
        if not ring.escrow_enabled(household):
            reason = (
                "the household has not opted into emergency access (or turned it off): "
                f"{d.OWNER_HOLDS_KEYS}"
            )
            self._audit_share(actor, stored, escrow_hex, f"refused: {reason}")
            self.drop(stored.id)  # switched off since the first share: it opens nothing
            raise PermissionDeniedError(reason)
        try:
            parsed = parse_escrow_share(share)
            if parsed.escrow_key_id != escrow.key_id:
                raise KeyShareError(
                    "this share is of another escrow key than this deployment's "
                    f"({parsed.escrow_key_id.hex()}, not {escrow_hex})",
                    reason="another escrow key",
                )
        except KeyShareError as exc:
            self._audit_share(actor, stored, escrow_hex, f"refused: {exc.reason}; not held")
            raise
        return escrow_hex

    def _hold_share(
        self,
        actor: Actor,
        user_id: int,
        stored: StoredRequest,
        escrow_hex: str,
        share: str,
        mine: _Held | None,
    ) -> ShareAnswer:
        """Hold ``share`` as the request's first (replacing ``mine``, this custodian's own)."""
        now = self._clock()
        replaced = mine is not None
        minutes = round(self._hold / 60)
        self._audit_share(
            actor,
            stored,
            escrow_hex,
            ("replaced their own held share" if replaced else "first share")
            + f" held in server memory for {minutes} min, waiting for a second custodian",
        )
        held = _Held(share, user_id, now)
        timer = threading.Timer(self._hold + 1.0, self.sweep)
        timer.daemon = True
        held.timer = timer
        with self._lock:
            self._held[stored.id] = held
        _cancel(mine)
        timer.start()
        return ShareAnswer(
            WAITING, stored.id, stored.state, expires_at=now + self._hold, replaced=replaced
        )

    def _complete(
        self, actor: Actor, stored: StoredRequest, escrow_hex: str, first: _Held, second: str
    ) -> ShareAnswer:
        """Combine ``first`` and ``second``, open the keys and fulfil; keys dropped after."""
        household = stored.household
        self._audit_share(
            actor,
            stored,
            escrow_hex,
            f"second share entered (the first held by custodian account {first.user_id}): "
            "combining the two",
        )
        opened: dict[str, HouseholdKeyPair] = {}
        try:
            try:
                opened = self._keys.open_for_emergency(
                    household, [first.share, second], actor, request=stored.id
                )
            except KeyShareError as exc:
                raise KeyShareError(
                    f"the two custodians' shares do not combine ({exc.reason}): {exc}; both "
                    "were dropped: two custodians enter their shares again",
                    reason=exc.reason,
                    share_position=exc.share_position,
                ) from exc
            done = self._disclosure.fulfil_with_keys(
                stored.id, _escrow_keys(household, opened), actor
            )
        except HomeWardenError as exc:
            if not isinstance(exc, KeyShareError):
                self._audit_share(
                    actor,
                    stored,
                    escrow_hex,
                    f"not fulfilled: {type(exc).__name__}: {exc}; keys and both shares dropped",
                )
            raise
        finally:
            opened.clear()
        return ShareAnswer(FULFILLED, stored.id, done.state, package=done.package)

    def _audit_share(self, actor: Actor, stored: StoredRequest, key: str | None, what: str) -> None:
        self._audit.append(
            AuditTag.KEY_ESCROW_SHARE,
            actor,
            f"escrow share for emergency request {stored.id}: {what}"[:500],
            request=stored.id,
            key=key,
            household=stored.household,
        )

    def _audit_expired(self, request_id: str, held: _Held) -> None:
        try:
            stored = self._disclosure.store.request(request_id)
            escrow = self._keys.store.escrow_key()
            self._audit_share(
                _SYSTEM,
                stored,
                None if escrow is None else escrow.key_id.hex(),
                f"the share custodian account {held.user_id} entered expired unused after "
                f"{round(self._hold / 60)} min and was dropped",
            )
        except HomeWardenError as exc:
            log.warning("request %s: expired escrow share not audited: %s", request_id, exc)


def _custodian(principal: Principal) -> int:
    """The account id of a custodian signed in with a session.

    Raises:
        PermissionDeniedError: anyone else, or an API token.
    """
    if (
        principal.kind is not PrincipalKind.USER
        or principal.role is not Role.CUSTODIAN
        or principal.user_id is None
    ):
        raise PermissionDeniedError("only custodians enter escrow shares")
    if principal.via_token:
        raise PermissionDeniedError(
            "an escrow share is entered by a custodian signed in with their second factor, "
            "never with an API token"
        )
    return principal.user_id


def _escrow_keys(household: str, opened: dict[str, HouseholdKeyPair]) -> KeySource:
    """A :data:`KeySource` over the key versions the escrow opened for ``household``."""

    def source(asked: str, key_id: bytes) -> HouseholdKeyPair:
        pair = opened.get(bytes(key_id).hex()) if asked == household else None
        if pair is None:
            raise KeyUnavailableError(
                f"key version {bytes(key_id).hex()} of household {asked!r} is not sealed to "
                "the escrow key: the owner holds it alone"
            )
        return pair

    return source


def _cancel(held: _Held | None) -> None:
    if held is not None and held.timer is not None:
        held.timer.cancel()
