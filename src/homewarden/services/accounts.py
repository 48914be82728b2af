"""Accounts use-cases: first-run owner, users, login with TOTP, sessions, API tokens, camera
and support grants. The rules are in :mod:`homewarden.domain.accounts` and
:mod:`homewarden.domain.permissions`; this module stores, hashes and audits.

Secrets:
- Passwords: Argon2id through libsodium (PyNaCl ``nacl.pwhash.argon2id``) at libsodium's
  INTERACTIVE limits (2 passes, 64 MiB), above OWASP's Password Storage Cheat Sheet minimum
  for Argon2id (19 MiB, 2 passes) and fast enough (~0.1 s on this project's 2-core VMs) for a
  login page.
- Session cookies, API tokens, setup links: 256-bit random secrets (``secrets``); only their
  SHA-256 is stored, so a database reader cannot use them.
- TOTP: RFC 6238 (30 s steps, 6 digits, SHA-1, as authenticator apps expect) via pyotp; one
  step of clock skew either side is accepted (RFC 6238 section 5.2), and a step once used is
  never accepted again (replay).

A login costs the same whether or not the user exists: an unknown username is checked
against a dummy Argon2id hash made at start-up.

Audit entries (only services write them): logins that fail or succeed, users created or
disabled, credential changes, tokens, camera and support grants.

Household keys (DESIGN.md flow 8): when :attr:`AccountService.keys` is set (the runtime sets
it to its :class:`~homewarden.services.household_keys.KeyRing`), the account use-cases tell it
what only they see - a password proven at login (to unlock the person's keys into the
session's memory), a session promoted past TOTP, ended or expired, a password set or changed
(to re-wrap the person's key), a member's camera access granted or withdrawn (to seal or
revoke the household keys) - through the small :class:`KeyHooks` protocol, so this module
does not depend on the key service.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import nacl.exceptions
import nacl.pwhash
import pyotp

from homewarden.config import Settings, SettingsSource, settings_reader
from homewarden.domain import accounts as rules
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.permissions import (
    Principal,
    PrincipalKind,
    Role,
    SupportGrant,
)
from homewarden.errors import (
    AuditUnavailableError,
    AuthenticationError,
    HomeWardenError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    TooManyAttemptsError,
)
from homewarden.services.audit import AuditLog
from homewarden.store.accounts_store import (
    AccountStore,
    SessionRecord,
    SupportGrantRecord,
    TokenRecord,
    UserRecord,
)
from homewarden.store.index import Index

log = logging.getLogger(__name__)

#: The ``household`` of audit entries about accounts of no household (staff, requesters):
#: not a valid household id (``@``), so it never names one.
DEPLOYMENT_HOUSEHOLD = "@deployment"

_OPS = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
_MEM = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
#: API tokens start with this, so secret scanners and people can recognise them.
TOKEN_PREFIX = "hw_"  # noqa: S105 (a prefix, not a secret)
#: Session stages.
STAGE_MFA = "mfa"
STAGE_FULL = "full"
#: TOTP issuer shown in authenticator apps.
TOTP_ISSUER = "HomeWarden"


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    """An Argon2id hash string of ``password`` (see the module docstring for parameters)."""
    return nacl.pwhash.argon2id.str(password.encode(), opslimit=_OPS, memlimit=_MEM).decode()


def password_matches(stored: str, password: str) -> bool:
    """Whether ``password`` matches the Argon2id hash string ``stored``."""
    try:
        return bool(nacl.pwhash.argon2id.verify(stored.encode(), password.encode()))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class LoginStep:
    """What a password login produced: a session secret (for the cookie) whose session is
    either complete (``needs_totp`` False) or waiting for the TOTP code."""

    session_secret: str
    session: SessionRecord
    needs_totp: bool


@dataclass(frozen=True, slots=True)
class NewUser:
    """A created account and its one-time setup link secret (None when a password was set)."""

    user: UserRecord
    setup_secret: str | None


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """A new TOTP secret (base32) and its ``otpauth://`` provisioning URI (for a QR code)."""

    secret: str
    uri: str


class KeyHooks(Protocol):
    """What the household key service is told by the account use-cases (see the module
    docstring). A hook about a login never makes the login fail: a key problem leaves the
    session's keys locked and is logged."""

    def households_ensured(self, households: Sequence[str]) -> None:
        """These households exist: give each one without a key its first key."""

    def password_verified(self, user: UserRecord, password: str, session: SessionRecord) -> None:
        """``user`` proved ``password`` and got ``session`` (full, or waiting for TOTP)."""

    def session_promoted(self, pending: SessionRecord, session: SessionRecord) -> None:
        """The TOTP step replaced the waiting session ``pending`` by the full ``session``."""

    def sessions_ended(self, *, session_id: str | None = None, user_id: int | None = None) -> None:
        """A session (``session_id``), or every session of ``user_id``, ended."""

    def password_set(self, user: UserRecord, password: str, old: str | None) -> None:
        """``user``'s password becomes ``password`` (``old``: the previous one, when known).
        Called before the new password is stored; raising aborts the change."""

    def access_changed(self, member: UserRecord, actor: Actor, granter: Principal | None) -> None:
        """A member's camera grants or account state changed (by ``granter``)."""


def user_actor(user: UserRecord) -> Actor:
    """The audit actor of an account (staff, requester or user, by id)."""
    role = Role(user.role)
    if role is Role.REQUESTER:
        return Actor(ActorKind.REQUESTER, str(user.id))
    return Actor(ActorKind.STAFF if role.is_staff else ActorKind.USER, str(user.id))


class AccountService:
    """Accounts over the index's database (see the module docstring).

    Args:
        index: a migrated index (its engine is shared).
        audit: where account events are written.
        settings: for the deployment's household and cameras (a
            :class:`~homewarden.config.SettingsHolder` when cameras change at run time).
        clock: now as UTC epoch seconds.
    """

    def __init__(
        self,
        index: Index,
        audit: AuditLog,
        settings: SettingsSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = AccountStore(index)
        self._audit = audit
        self._read_settings = settings_reader(settings)
        self._clock = clock
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        self._lock = threading.Lock()
        #: Called with a requester account just locked for wrong TOTP codes (staff alert).
        self.on_requester_locked: Callable[[UserRecord], None] | None = None
        #: The household key service (see the module docstring); None: no owner-held keys.
        self.keys: KeyHooks | None = None

    @property
    def _settings(self) -> Settings:
        # Read on each use: cameras change at run time (config.SettingsHolder).
        return self._read_settings()

    @property
    def household(self) -> str:
        """The deployment's own household id (``settings.household``)."""
        return self._settings.household

    @property
    def store(self) -> AccountStore:
        """The account tables (for other services: push subscriptions, preferences)."""
        return self._store

    # households and first run

    def ensure_households(self) -> None:
        """Create the deployment's household and every configured camera's household."""
        now = self._clock()
        ids = {self._settings.household} | {
            self._settings.camera_household(c) for c in self._settings.cameras
        }
        for hid in sorted(ids):
            self._store.ensure_household(hid, hid, now)
        if self.keys is not None:
            self.keys.households_ensured(sorted(ids))

    def bootstrap_owner(self, username: str = "owner") -> str | None:
        """First run: make sure the deployment's household has an owner. When it has none,
        create ``username`` without a password; while the owner has no password, each call
        returns a fresh one-time setup secret (older links stay valid until they expire).
        Returns None once an owner can log in."""
        self.ensure_households()
        household = self._settings.household
        owners = [u for u in self._store.users(household) if u.role == Role.OWNER]
        if any(o.password_hash for o in owners):
            return None
        if owners:
            owner = owners[0]
        else:
            owner = self.add_user(username, Role.OWNER, household, actor=None).user
        return self._new_setup_link(owner.id)

    def _new_setup_link(self, user_id: int) -> str:
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        self._store.add_setup_link(_sha256(secret), user_id, now, now + rules.SETUP_LINK_TTL)
        return secret

    # users

    def add_user(
        self,
        username: str,
        role: Role | str,
        household: str | None,
        *,
        actor: Actor | None,
        password: str | None = None,
        display_name: str = "",
    ) -> NewUser:
        """Create an account. Household roles need a household; staff roles must have none.
        Without ``password`` a one-time setup link secret is returned.

        Raises:
            InvalidRequestError: bad username or role, a weak password, a taken username, or
                a household that does not fit the role.
            NotFoundError: unknown household.
        """
        name = rules.normalise_username(username)
        try:
            role = Role(role)
        except ValueError:
            raise InvalidRequestError(
                f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}"
            ) from None
        if not role.in_household and household is not None:
            raise InvalidRequestError(f"a {role} belongs to no household")
        if role.in_household:
            if household is None:
                raise InvalidRequestError(f"a {role} belongs to a household")
            if household not in {h for h, _ in self._store.households()}:
                raise NotFoundError(f"no household {household!r}")
        if len(display_name) > rules.DISPLAY_NAME_MAX:
            raise InvalidRequestError(
                f"a display name has at most {rules.DISPLAY_NAME_MAX} characters"
            )
        if password is not None:
            rules.check_new_password(password, name)
        if self._store.user_by_name(name) is not None:
            raise InvalidRequestError(f"the username {name!r} is taken")
        hashed = None if password is None else hash_password(password)
        user = self._store.add_user(
            name, role, household, self._clock(), display_name=display_name, password_hash=hashed
        )
        self._audit.append(
            AuditTag.ACCOUNT_USER_CREATE,
            actor or Actor(ActorKind.SYSTEM, "first-run"),
            f"{role} {name}",
            household=household or DEPLOYMENT_HOUSEHOLD,
        )
        setup = None if password is not None else self._new_setup_link(user.id)
        return NewUser(user, setup)

    def users(self, household: str | None = None) -> list[UserRecord]:
        """Accounts (of one household), by id."""
        return self._store.users(household)

    def user(self, user_id: int) -> UserRecord:
        """Raises NotFoundError for an unknown id."""
        return self._store.user(user_id)

    def user_by_name(self, username: str) -> UserRecord:
        """Raises NotFoundError when no account has that name."""
        user = self._store.user_by_name(rules.normalise_username(username))
        if user is None:
            raise NotFoundError(f"no user {username!r}")
        return user

    def set_disabled(self, user_id: int, disabled: bool, *, actor: Actor) -> UserRecord:
        """Disable (ending every session and leaving tokens unusable) or re-enable an account;
        re-enabling also clears its lockouts."""
        user = self._store.update_user(user_id, disabled=disabled, failed_logins=0)
        if disabled:
            self._store.delete_sessions_of(user_id)
            if self.keys is not None:
                self.keys.sessions_ended(user_id=user_id)
        else:
            self._clear_locks(user.username)
            self._store.set_throttle(f"totp:{user_id}", 0, 0.0)
        tag = AuditTag.ACCOUNT_USER_DISABLE if disabled else AuditTag.ACCOUNT_USER_ENABLE
        self._audit.append(tag, actor, user.username, household=self._household_of(user))
        if self.keys is not None and user.role == Role.MEMBER:
            self.keys.access_changed(user, actor, None)
        return user

    def unlock(self, user_id: int, *, actor: Actor) -> None:
        """Clear every lockout of an account (the owner at the shell, after a lock)."""
        user = self._store.user(user_id)
        self._clear_locks(user.username)
        self._store.count_failure(user_id, reset=True)
        self._audit.append(
            AuditTag.ACCOUNT_USER_ENABLE,
            actor,
            f"unlock {user.username}",
            household=self._household_of(user),
        )

    def new_setup_link(self, user_id: int, *, actor: Actor) -> str:
        """A fresh one-time setup link secret for an account (a forgotten password)."""
        user = self._store.user(user_id)
        self._audit.append(
            AuditTag.ACCOUNT_CREDENTIAL_CHANGE,
            actor,
            f"setup link for {user.username}",
            household=self._household_of(user),
        )
        return self._new_setup_link(user_id)

    def _household_of(self, user: UserRecord) -> str:
        # Staff and requesters belong to the deployment, not to a household: their account
        # events stay out of every owner's access log.
        return user.household_id or DEPLOYMENT_HOUSEHOLD

    def _clear_locks(self, username: str) -> None:
        prefix = f"acct:{username}:"
        for key in list(self._known_lock_keys(prefix)):
            self._store.set_throttle(key, 0, 0.0)

    def _known_lock_keys(self, prefix: str) -> list[str]:
        return self._store.throttle_keys(prefix)

    # setup links

    def setup_user(self, secret: str) -> UserRecord:
        """The account an unused, unexpired setup link belongs to.

        Raises:
            AuthenticationError: unknown, used or expired link.
        """
        user_id = self._store.setup_link_user(_sha256(secret), self._clock())
        if user_id is None:
            raise AuthenticationError("this setup link is unknown, used or expired")
        return self._store.user(user_id)

    def complete_setup(
        self,
        secret: str,
        password: str,
        *,
        totp_secret: str | None = None,
        totp_code: str | None = None,
    ) -> UserRecord:
        """Use a setup link: set the password (and, for staff necessarily, the TOTP secret
        proven by a current code). The link cannot be used again.

        Raises:
            AuthenticationError: unknown, used or expired link; a wrong TOTP code.
            InvalidRequestError: a weak password; staff without TOTP.
        """
        user = self.setup_user(secret)
        rules.check_new_password(password, user.username)
        if Role(user.role).needs_totp and not totp_secret:
            raise InvalidRequestError(
                "staff and requester accounts must set up a TOTP second factor"
            )
        step: int | None = None
        if totp_secret:
            step = self._totp_step(totp_secret, totp_code or "", None)
            if step is None:
                raise AuthenticationError("the TOTP code does not match; check the phone's clock")
        if self._store.use_setup_link(_sha256(secret), self._clock()) is None:
            raise AuthenticationError("this setup link is unknown, used or expired")
        if self.keys is not None:
            self.keys.password_set(user, password, None)
        user = self._store.update_user(
            user.id,
            password_hash=hash_password(password),
            totp_secret=totp_secret or None,
            totp_last_step=step,
            failed_logins=0,
        )
        self._store.delete_sessions_of(user.id)
        if self.keys is not None:
            self.keys.sessions_ended(user_id=user.id)
        self._audit.append(
            AuditTag.ACCOUNT_CREDENTIAL_CHANGE,
            user_actor(user),
            "setup link used",
            household=self._household_of(user),
        )
        return user

    # login

    def login(self, username: str, password: str, client_host: str) -> LoginStep:
        """Check a password. On success a session is created: complete, or (when the account
        has TOTP) waiting for :meth:`verify_totp`. Costs one Argon2id verification whatever
        happens, so timing does not tell whether the user exists.

        Raises:
            TooManyAttemptsError: this address, or this username from this address, failed
                too often; the message says when to try again (``retry_after`` seconds).
            AuthenticationError: wrong username or password, or a disabled account (one
                message for all, so accounts cannot be enumerated).
        """
        now = self._clock()
        try:
            name = rules.normalise_username(username)
        except InvalidRequestError:
            name = ""
        user = self._store.user_by_name(name) if name else None
        stored = user.password_hash if user is not None and user.password_hash else None
        ok = password_matches(stored or self._dummy_hash, password[: rules.PASSWORD_MAX])
        self._check_throttle(name, client_host, now)
        if user is None or stored is None or not ok or user.disabled:
            self._fail(user, name, client_host, now, "wrong username or password")
            raise AuthenticationError("wrong username or password")
        self._clear_throttle(name, client_host)
        needs_totp = user.totp_secret is not None
        if Role(user.role).needs_totp and not needs_totp:
            self._fail(user, name, client_host, now, f"{user.role} account without TOTP")
            raise AuthenticationError(
                "staff and requester accounts need TOTP; ask for a new setup link to enrol a phone"
            )
        stage = STAGE_MFA if needs_totp else STAGE_FULL
        secret, session = self._new_session(user, stage, client_host, now)
        if not needs_totp:
            self._succeed(user, client_host)
        if self.keys is not None:
            self.keys.password_verified(user, password[: rules.PASSWORD_MAX], session)
        return LoginStep(secret, session, needs_totp)

    def verify_totp(self, session_secret: str, code: str, client_host: str) -> LoginStep:
        """Finish a login with the TOTP code: the waiting session is replaced by a new, full
        one (a new secret: the session id rotates at login).

        Raises:
            AuthenticationError: no waiting session, or a wrong or reused code.
            TooManyAttemptsError: as for :meth:`login` (TOTP failures count too).
        """
        now = self._clock()
        session = self._store.session(_sha256(session_secret))
        if session is None or session.stage != STAGE_MFA or session.expires_at <= now:
            raise AuthenticationError("the login has expired; enter the password again")
        user = self._store.user(session.user_id)
        self._check_throttle(user.username, client_host, now)
        assert user.totp_secret is not None
        with self._lock:
            step = self._totp_step(user.totp_secret, code, user.totp_last_step)
            if step is not None:
                self._store.update_user(user.id, totp_last_step=step)
        if step is None or user.disabled:
            self._fail(user, user.username, client_host, now, "wrong TOTP code")
            if step is None:
                self._count_totp_failure(user, now)
            raise AuthenticationError("wrong or already used code")
        self._store.set_throttle(f"totp:{user.id}", 0, 0.0)
        self._store.delete_session(session.id)
        self._clear_throttle(user.username, client_host)
        secret, full = self._new_session(user, STAGE_FULL, client_host, now)
        self._succeed(user, client_host)
        if self.keys is not None:
            self.keys.session_promoted(session, full)
        return LoginStep(secret, full, False)

    def _totp_step(self, secret: str, code: str, last_step: int | None) -> int | None:
        code = code.strip().replace(" ", "")
        if not (code.isascii() and code.isdigit() and len(code) == 6):
            return None
        totp = pyotp.TOTP(secret)
        now = self._clock()
        current = int(now // totp.interval)
        for step in (current - 1, current, current + 1):
            if last_step is not None and step <= last_step:
                continue
            if hmac.compare_digest(totp.at(step * totp.interval), code):
                return step
        return None

    def _check_throttle(self, name: str, client_host: str, now: float) -> None:
        ip = self._store.throttle(f"ip:{client_host}")
        if ip is not None:
            failures, since = ip
            if failures >= rules.IP_MAX_FAILURES and now < since + rules.IP_WINDOW:
                wait = since + rules.IP_WINDOW - now
                raise TooManyAttemptsError(
                    f"too many failed logins from {client_host}; try again in {wait:.0f} s",
                    retry_after=wait,
                )
        acct = self._store.throttle(f"acct:{name}:{client_host}")
        if acct is not None:
            failures, last = acct
            until = last + rules.lock_seconds(failures)
            if now < until:
                raise TooManyAttemptsError(
                    f"too many failed logins for this account from {client_host}; try again "
                    f"in {until - now:.0f} s",
                    retry_after=until - now,
                )

    def _fail(
        self, user: UserRecord | None, name: str, client_host: str, now: float, why: str
    ) -> None:
        ip_key = f"ip:{client_host}"
        ip = self._store.throttle(ip_key)
        if ip is None or now >= ip[1] + rules.IP_WINDOW:
            self._store.set_throttle(ip_key, 1, now)
        else:
            self._store.set_throttle(ip_key, ip[0] + 1, ip[1])
        acct_key = f"acct:{name}:{client_host}"
        acct = self._store.throttle(acct_key)
        self._store.set_throttle(acct_key, 1 if acct is None else acct[0] + 1, now)
        if user is not None:
            self._store.count_failure(user.id)
        actor = Actor(ActorKind.SYSTEM, "login") if user is None else user_actor(user)
        self._audit.append(
            AuditTag.AUTH_LOGIN_FAIL,
            actor,
            f"{why} from {client_host}",
            household=self._settings.household if user is None else self._household_of(user),
        )

    def _count_totp_failure(self, user: UserRecord, now: float) -> None:
        """Count a wrong TOTP code; a requester reaching :data:`REQUESTER_TOTP_LIMIT` in a
        row is disabled (staff re-enable it) and :attr:`on_requester_locked` is called."""
        key = f"totp:{user.id}"
        prior = self._store.throttle(key)
        count = (prior[0] if prior is not None else 0) + 1
        self._store.set_throttle(key, count, now)
        if Role(user.role) is not Role.REQUESTER or count < rules.REQUESTER_TOTP_LIMIT:
            return
        if user.disabled:
            return
        self._store.update_user(user.id, disabled=True)
        self._store.delete_sessions_of(user.id)
        self._audit.append(
            AuditTag.REQUEST_REQUESTER_LOCK,
            Actor(ActorKind.SYSTEM, "login"),
            f"requester {user.username} locked after {count} wrong TOTP codes in a row",
            household=DEPLOYMENT_HOUSEHOLD,
        )
        log.warning("requester %s locked after %d wrong TOTP codes", user.username, count)
        if self.on_requester_locked is not None:
            self.on_requester_locked(user)

    def _clear_throttle(self, name: str, client_host: str) -> None:
        self._store.set_throttle(f"acct:{name}:{client_host}", 0, 0.0)

    def _succeed(self, user: UserRecord, client_host: str) -> None:
        self._store.count_failure(user.id, reset=True)
        self._audit.append(
            AuditTag.AUTH_LOGIN_SUCCEED,
            user_actor(user),
            f"from {client_host}",
            household=self._household_of(user),
        )

    def _new_session(
        self, user: UserRecord, stage: str, client_host: str, now: float
    ) -> tuple[str, SessionRecord]:
        secret = secrets.token_urlsafe(32)
        life = rules.session_lifetime(Role(user.role))
        expires = now + (rules.MFA_PENDING if stage == STAGE_MFA else life.idle)
        session = SessionRecord(
            id=_sha256(secret),
            user_id=user.id,
            stage=stage,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen=now,
            expires_at=expires,
            client_host=client_host[:64],
        )
        self._store.add_session(session)
        return secret, session

    # sessions and tokens -> principals

    def session(self, session_secret: str) -> SessionRecord | None:
        """The live session behind a cookie secret (any stage), or None (unknown, expired)."""
        now = self._clock()
        session = self._store.session(_sha256(session_secret))
        if session is None:
            return None
        if session.expires_at <= now:
            self._store.delete_session(session.id)
            if self.keys is not None:
                self.keys.sessions_ended(session_id=session.id)
            return None
        return session

    def principal_for_session(
        self, session_secret: str, client_host: str | None
    ) -> tuple[Principal, SessionRecord] | None:
        """The principal of a complete, live session (sliding its idle expiry), or None."""
        session = self.session(session_secret)
        if session is None or session.stage != STAGE_FULL:
            return None
        user = self._store.user(session.user_id)
        if user.disabled:
            return None
        now = self._clock()
        life = rules.session_lifetime(Role(user.role))
        if now >= session.created_at + life.absolute:
            self._store.delete_session(session.id)
            if self.keys is not None:
                self.keys.sessions_ended(session_id=session.id)
            return None
        if now - session.last_seen > 60:  # write at most once a minute per session
            expires = min(now + life.idle, session.created_at + life.absolute)
            self._store.touch_session(session.id, now, expires)
        return self.principal_of(user, client_host), session

    def principal_for_token(self, token: str, client_host: str | None) -> Principal | None:
        """The principal of a live API token (``hw_...``), or None (unknown, revoked,
        disabled account)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        rec = self._store.token_by_hash(_sha256(token))
        if rec is None or rec.revoked_at is not None:
            return None
        user = self._store.user(rec.user_id)
        if user.disabled:
            return None
        now = self._clock()
        if rec.last_used_at is None or now - rec.last_used_at > 60:
            self._store.update_token(rec.id, last_used_at=now)
        principal = self.principal_of(user, client_host)
        return Principal(
            principal.kind,
            principal.client_host,
            principal.user_id,
            principal.username,
            principal.role,
            principal.household,
            principal.cameras,
            principal.support_grants,
            via_token=True,
        )

    def principal_of(self, user: UserRecord, client_host: str | None = None) -> Principal:
        """The principal of an account now: role, household, granted cameras (members),
        support grants in force (support staff)."""
        role = Role(user.role)
        cameras = self._store.camera_grants(user.id) if role is Role.MEMBER else None
        grants: tuple[SupportGrant, ...] = ()
        if role is Role.SUPPORT:
            grants = tuple(
                SupportGrant(g.id, g.household_id, g.expires_at)
                for g in self._store.support_grants(active_at=self._clock())
            )
        return Principal(
            PrincipalKind.USER,
            client_host,
            user_id=user.id,
            username=user.username,
            role=role,
            household=user.household_id,
            cameras=cameras,
            support_grants=grants,
        )

    def logout(self, session_secret: str) -> None:
        """End the session behind a cookie secret (nothing when it is gone); its unlocked
        keys are dropped."""
        self._store.delete_session(_sha256(session_secret))
        if self.keys is not None:
            self.keys.sessions_ended(session_id=_sha256(session_secret))

    # credentials

    def change_password(self, user_id: int, old: str, new: str) -> None:
        """Change a password, ending every other session.

        Raises:
            AuthenticationError: ``old`` is wrong.
            InvalidRequestError: ``new`` is weak.
        """
        user = self._store.user(user_id)
        if not user.password_hash or not password_matches(user.password_hash, old):
            raise AuthenticationError("the current password is wrong")
        rules.check_new_password(new, user.username)
        if self.keys is not None:
            self.keys.password_set(user, new, old)
        self._store.update_user(user_id, password_hash=hash_password(new))
        self._store.delete_sessions_of(user_id)
        if self.keys is not None:
            self.keys.sessions_ended(user_id=user_id)
        self._audit.append(
            AuditTag.ACCOUNT_CREDENTIAL_CHANGE,
            user_actor(user),
            "password changed",
            household=self._household_of(user),
        )

    def reset_password(self, user_id: int, new: str, *, actor: Actor, why: str) -> UserRecord:
        """Set a password without the old one, ending every session and revoking every API
        token of the account: for the household key service once an owner proved the
        household's recovery code (it re-wraps the keys itself; no :class:`KeyHooks` call is
        made). Whoever held the account before the reset (the reason for one) may have made a
        token, which would outlive the new password; so each live token is revoked first
        (an ``account:token:revoke`` entry each, by ``actor``), then the password set. ``why``
        goes into the audit entries.

        Raises:
            InvalidRequestError: ``new`` is weak (nothing is changed).
            NotFoundError: unknown id.
        """
        user = self._store.user(user_id)
        rules.check_new_password(new, user.username)
        household = self._household_of(user)
        live = [t for t in self._store.tokens(user_id) if t.revoked_at is None]
        for token in live:  # before the password: a failure here leaves the old one
            self._store.update_token(token.id, revoked_at=self._clock())
            self._audit.append(
                AuditTag.ACCOUNT_TOKEN_REVOKE,
                actor,
                f"token {token.id} {token.name}: revoked by the password reset ({why}); "
                "the account may have been taken over",
                household=household,
            )
        user = self._store.update_user(user_id, password_hash=hash_password(new), failed_logins=0)
        self._store.delete_sessions_of(user_id)
        if self.keys is not None:
            self.keys.sessions_ended(user_id=user_id)
        self._audit.append(
            AuditTag.ACCOUNT_CREDENTIAL_CHANGE,
            actor,
            f"password reset: {why}; every session ended, {len(live)} API tokens revoked",
            household=household,
        )
        return user

    def begin_totp(self, user_id: int) -> TotpEnrolment:
        """A new TOTP secret for the account to confirm with :meth:`confirm_totp`."""
        user = self._store.user(user_id)
        secret = pyotp.random_base32()
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)
        return TotpEnrolment(secret, uri)

    def confirm_totp(self, user_id: int, secret: str, code: str) -> None:
        """Turn TOTP on with ``secret`` once ``code`` proves the phone has it.

        Raises:
            AuthenticationError: the code does not match.
        """
        user = self._store.user(user_id)
        step = self._totp_step(secret, code, None)
        if step is None:
            raise AuthenticationError("the code does not match; check the phone's clock")
        self._store.update_user(user_id, totp_secret=secret, totp_last_step=step)
        self._audit.append(
            AuditTag.ACCOUNT_CREDENTIAL_CHANGE,
            user_actor(user),
            "TOTP enabled",
            household=self._household_of(user),
        )

    def disable_totp(self, user_id: int, password: str) -> None:
        """Turn TOTP off (household users only; staff must keep it).

        Raises:
            PermissionDeniedError: a staff account.
            AuthenticationError: wrong password.
        """
        user = self._store.user(user_id)
        if Role(user.role).needs_totp:
            raise PermissionDeniedError("staff and requester accounts must keep TOTP")
        if not user.password_hash or not password_matches(user.password_hash, password):
            raise AuthenticationError("the password is wrong")
        self._store.update_user(user_id, totp_secret=None, totp_last_step=None)
        self._audit.append(
            AuditTag.ACCOUNT_CREDENTIAL_CHANGE,
            user_actor(user),
            "TOTP disabled",
            household=self._household_of(user),
        )

    def create_token(self, user_id: int, name: str) -> tuple[str, TokenRecord]:
        """A new API token for the account: the secret (shown once) and its record.

        Raises:
            InvalidRequestError: an empty or over-long name.
        """
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise InvalidRequestError("a token name has 1-100 characters")
        user = self._store.user(user_id)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        rec = self._store.add_token(user_id, name, secret[:10], _sha256(secret), self._clock())
        self._audit.append(
            AuditTag.ACCOUNT_TOKEN_CREATE,
            user_actor(user),
            f"token {rec.id} {name}",
            household=self._household_of(user),
        )
        return secret, rec

    def tokens(self, user_id: int) -> list[TokenRecord]:
        """An account's tokens, newest first (secrets are never kept)."""
        return self._store.tokens(user_id)

    def revoke_token(self, user_id: int, token_id: int) -> TokenRecord:
        """Revoke one of the account's tokens.

        Raises:
            NotFoundError: no such token of this account.
        """
        user = self._store.user(user_id)
        if not any(t.id == token_id for t in self._store.tokens(user_id)):
            raise NotFoundError(f"no token {token_id}")
        rec = self._store.update_token(token_id, revoked_at=self._clock())
        self._audit.append(
            AuditTag.ACCOUNT_TOKEN_REVOKE,
            user_actor(user),
            f"token {token_id}",
            household=self._household_of(user),
        )
        return rec

    # grants

    def _owned_member(self, owner: Principal, member_id: int) -> UserRecord:
        member = self._store.user(member_id)
        if member.household_id != owner.household or owner.household is None:
            raise NotFoundError(f"no user {member_id}")
        if member.role != Role.MEMBER:
            raise InvalidRequestError(
                f"{member.username} is an {member.role}, not a member"
                if member.role == Role.OWNER
                else f"{member.username} is a {member.role}, not a member"
            )
        return member

    def _owned_camera(self, owner: Principal, camera: str) -> None:
        if camera not in self._settings.cameras or (
            self._settings.camera_household(camera) != owner.household
        ):
            raise NotFoundError(f"no camera {camera!r}")

    def grant_camera(self, owner: Principal, member_id: int, camera: str, actor: Actor) -> None:
        """Let a member of the owner's household see one of its cameras.

        Raises:
            NotFoundError: the member or camera is not of the owner's household.
            InvalidRequestError: the account is not a member.
        """
        member = self._owned_member(owner, member_id)
        self._owned_camera(owner, camera)
        if self._store.grant_camera(member.id, camera, owner.user_id or 0, self._clock()):
            try:
                self._audit.append(
                    AuditTag.ACCOUNT_CAMERA_GRANT,
                    actor,
                    f"{camera} to {member.username}",
                    camera=camera,
                    household=owner.household,
                )
            except HomeWardenError as exc:
                # No access is granted unaccounted for: take the grant back.
                self._store.revoke_camera(member.id, camera)
                raise AuditUnavailableError(
                    f"the grant was not made: it cannot be written to the audit log ({exc})"
                ) from exc
        if self.keys is not None:
            self.keys.access_changed(member, actor, owner)

    def revoke_camera(self, owner: Principal, member_id: int, camera: str, actor: Actor) -> None:
        """Withdraw a member's camera grant (no error when there was none)."""
        member = self._owned_member(owner, member_id)
        if self._store.revoke_camera(member.id, camera):
            self._audit.append(
                AuditTag.ACCOUNT_CAMERA_REVOKE,
                actor,
                f"{camera} from {member.username}",
                camera=camera,
                household=owner.household,
            )
        if self.keys is not None:
            self.keys.access_changed(member, actor, owner)

    def camera_grants(self, user_id: int) -> frozenset[str]:
        """Cameras granted to a member."""
        return self._store.camera_grants(user_id)

    def grant_support(
        self, owner: Principal, hours: float, reason: str, actor: Actor
    ) -> SupportGrantRecord:
        """Let staff support see the owner's household's footage for ``hours``.

        Raises:
            InvalidRequestError: hours not in (0, 168], or no reason.
        """
        if owner.household is None:
            raise PermissionDeniedError("only a household's owner grants support access")
        seconds = hours * 3600.0
        if not 0 < seconds <= rules.SUPPORT_GRANT_MAX:
            raise InvalidRequestError(
                f"a support grant lasts more than 0 and at most "
                f"{rules.SUPPORT_GRANT_MAX / 3600:.0f} hours"
            )
        reason = reason.strip()
        if not reason:
            raise InvalidRequestError("say why support needs access")
        if len(reason) > rules.SUPPORT_REASON_MAX:
            raise InvalidRequestError(
                f"keep the reason to {rules.SUPPORT_REASON_MAX} characters (it has {len(reason)})"
            )
        now = self._clock()
        grant = self._store.add_support_grant(
            owner.household, owner.user_id or 0, reason, now, now + seconds
        )
        try:
            self._audit.append(
                AuditTag.ACCOUNT_SUPPORT_GRANT,
                actor,
                f"grant {grant.id} for {hours:g} h: {reason}",
                start=now,
                end=now + seconds,
                household=owner.household,
            )
        except HomeWardenError as exc:
            # No access is granted unaccounted for: end the grant before anyone can use it.
            self._store.revoke_support_grant(grant.id, now)
            raise AuditUnavailableError(
                f"support access was not granted: it cannot be written to the audit log ({exc})"
            ) from exc
        return grant

    def revoke_support(self, owner: Principal, grant_id: int, actor: Actor) -> SupportGrantRecord:
        """End a support grant of the owner's household now.

        Raises:
            NotFoundError: no such grant of this household.
        """
        grants = self._store.support_grants(owner.household)
        if owner.household is None or not any(g.id == grant_id for g in grants):
            raise NotFoundError(f"no support grant {grant_id}")
        grant = self._store.revoke_support_grant(grant_id, self._clock())
        self._audit.append(
            AuditTag.ACCOUNT_SUPPORT_REVOKE,
            actor,
            f"grant {grant_id}",
            household=owner.household,
        )
        return grant

    def support_grants(self, household: str) -> list[SupportGrantRecord]:
        """A household's support grants, newest first."""
        return self._store.support_grants(household)
