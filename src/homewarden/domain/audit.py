"""Audit entries and their canonical bytes (the leaves of the audit log's Merkle tree). Pure.

An entry says who (:class:`Actor`) did what (:class:`AuditTag`, spelled ``source:subject:action``
and kept sorted, after pypi/warehouse's ``warehouse/events/tags.py``) to which footage or thing
(:class:`Subject`), when, and why. Its leaf is the canonical JSON of the entry
(:func:`canonical_json`): keys sorted, UTF-8, no insignificant whitespace (separators ``,`` and
``:``), no NaN or infinity, integers only - every time is integer UTC epoch milliseconds, so
any language reproduces the bytes exactly. Schema ``v`` 1::

    {"action": "footage:clip:download",
     "actor": {"id": "127.0.0.1", "kind": "local_operator"},
     "index": 41, "reason": "api",
     "subject": {"camera": "front", "end_ms": 1700002805000, "event": null,
                 "household": "home", "key": null, "request": null,
                 "start_ms": 1700002795000},
     "time_ms": 1700003000123, "v": 1}

Every field is always present (null when it does not apply), so an entry has one spelling.
The entry carries its own ``index``: an entry moved, removed or inserted is out of place by
its own account, which lets verification name the first bad index.

A later public export can publish, for entries outside the kinds a transparency report
counts, the leaf hash (``SHA-256(0x00 || leaf)``) instead of the leaf: the tree stays
checkable and the household stays private.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from homewarden.domain.permissions import Principal, PrincipalKind
from homewarden.errors import InvalidRequestError, VerificationError

#: Version of the entry schema written into every leaf as ``v``.
SCHEMA_VERSION = 1
#: Longest ``reason`` text, characters.
MAX_REASON = 500
#: Longest actor id, camera, household, request or key text, characters.
MAX_NAME = 200


class AuditTag(StrEnum):
    """Every action the audit log records: ``source:subject:action``, sorted.

    Disclosure requests are ``request:<kind>:<verb>`` (kind: consent, subpoena, court_order,
    search_warrant, preservation or emergency), one verb per step of
    :mod:`homewarden.domain.disclosure` (``AUDIT_VERB`` in :mod:`homewarden.services.disclosure`).
    """

    #: A member was granted a camera.
    ACCOUNT_CAMERA_GRANT = "account:camera:grant"
    #: A member's camera grant was withdrawn.
    ACCOUNT_CAMERA_REVOKE = "account:camera:revoke"
    #: A user changed their password or second factor.
    ACCOUNT_CREDENTIAL_CHANGE = "account:credential:change"
    #: An owner granted staff support time-limited access to the household's footage.
    ACCOUNT_SUPPORT_GRANT = "account:support:grant"
    #: An owner ended a support grant before it expired.
    ACCOUNT_SUPPORT_REVOKE = "account:support:revoke"
    #: An API token was issued to a user.
    ACCOUNT_TOKEN_CREATE = "account:token:create"  # noqa: S105 (an audit tag)
    #: An API token was revoked.
    ACCOUNT_TOKEN_REVOKE = "account:token:revoke"  # noqa: S105 (an audit tag)
    #: A user account was created.
    ACCOUNT_USER_CREATE = "account:user:create"
    #: A user account was disabled.
    ACCOUNT_USER_DISABLE = "account:user:disable"
    #: A user account was re-enabled (or unlocked after a lockout).
    ACCOUNT_USER_ENABLE = "account:user:enable"
    #: A login failed (wrong password, wrong TOTP code, locked, disabled, unknown user).
    AUTH_LOGIN_FAIL = "auth:login:fail"
    #: A login succeeded (password and, where enrolled, TOTP).
    AUTH_LOGIN_SUCCEED = "auth:login:succeed"
    #: A clip of footage was composed and handed out (API ``clip.mp4``, CLI ``clip``).
    FOOTAGE_CLIP_DOWNLOAD = "footage:clip:download"
    #: Footage recorded before ``storage.sealed`` was sealed at rest (``footage seal``).
    FOOTAGE_EXISTING_SEAL = "footage:existing:seal"
    #: An evidence package of a camera's footage was made (one entry per camera; the owner's
    #: export, or a disclosure request's fulfilment); its reason binds the signed manifest.
    FOOTAGE_EXPORT_CREATE = "footage:export:create"
    #: A live view of a camera was opened.
    FOOTAGE_LIVE_VIEW = "footage:live:view"
    #: Recorded footage was played back in the browser (a playback span).
    FOOTAGE_PLAYBACK_VIEW = "footage:playback:view"
    #: An event's snapshot image was served.
    FOOTAGE_SNAPSHOT_VIEW = "footage:snapshot:view"
    #: The deployment's escrow key was made and split among custodians (its public key kept).
    KEY_ESCROW_CREATE = "key:escrow:create"
    #: The owner turned emergency access off: escrow wraps destroyed (the key is rotated).
    KEY_ESCROW_DISABLE = "key:escrow:disable"
    #: The owner turned emergency access on: household keys sealed to the escrow key.
    KEY_ESCROW_ENABLE = "key:escrow:enable"
    #: A custodian entered their escrow share for an emergency request (held in memory,
    #: replaced, refused, expired or used).
    KEY_ESCROW_SHARE = "key:escrow:share"
    #: Custodians' shares were combined to open a household's escrow wraps (or were refused).
    KEY_ESCROW_USE = "key:escrow:use"
    #: A household key was made (first run, or a household's first key).
    KEY_HOUSEHOLD_CREATE = "key:household:create"
    #: Household keys were sealed to a person (a member's grant, an owner's setup).
    KEY_HOUSEHOLD_GRANT = "key:household:grant"
    #: A person's seals of the household keys were removed.
    KEY_HOUSEHOLD_REVOKE = "key:household:revoke"
    #: A new household key version replaced the current one for new footage.
    KEY_HOUSEHOLD_ROTATE = "key:household:rotate"
    #: A login unlocked household keys into the session's server memory.
    KEY_HOUSEHOLD_UNLOCK = "key:household:unlock"
    #: A person's own key pair was made (wrapped under their password).
    KEY_PERSONAL_CREATE = "key:personal:create"
    #: A person's own key was re-wrapped under a new password.
    KEY_PERSONAL_REWRAP = "key:personal:rewrap"
    #: A household's recovery code was made or replaced (the old one destroyed).
    KEY_RECOVERY_ROTATE = "key:recovery:rotate"
    #: A recovery code was used to open the household keys (or was refused).
    KEY_RECOVERY_USE = "key:recovery:use"
    #: A person's password opened the household keys they hold at the machine's shell, for
    #: one command (``homewarden clip``/``export --user``), or was refused.
    KEY_SHELL_UNLOCK = "key:shell:unlock"
    #: Staff added or changed an agency on the allow-list.
    REQUEST_AGENCY_CHANGE = "request:agency:change"
    #: A consent request: it was closed.
    REQUEST_CONSENT_CLOSE = "request:consent:close"
    #: A consent request: the owner declined it.
    REQUEST_CONSENT_DECLINE = "request:consent:decline"
    #: A consent request: it expired unanswered (7 days).
    REQUEST_CONSENT_EXPIRE = "request:consent:expire"
    #: A consent request: a requester filed it.
    REQUEST_CONSENT_FILE = "request:consent:file"
    #: A consent request: its package was made.
    REQUEST_CONSENT_FULFIL = "request:consent:fulfil"
    #: A consent request: the owner granted it (all or part).
    REQUEST_CONSENT_GRANT = "request:consent:grant"
    #: A consent request: the owner was notified.
    REQUEST_CONSENT_NOTIFY = "request:consent:notify"
    #: A consent request: it was routed (owner inbox or staff review).
    REQUEST_CONSENT_ROUTE = "request:consent:route"
    #: A consent request: its requester was verified.
    REQUEST_CONSENT_VERIFY = "request:consent:verify"
    #: A consent request: the requester withdrew it.
    REQUEST_CONSENT_WITHDRAW = "request:consent:withdraw"
    #: A court order: a legal reviewer accepted it.
    REQUEST_COURT_ORDER_ACCEPT = "request:court_order:accept"
    #: A court order: it was closed.
    REQUEST_COURT_ORDER_CLOSE = "request:court_order:close"
    #: A court order: a requester filed it.
    REQUEST_COURT_ORDER_FILE = "request:court_order:file"
    #: A court order: its package was made.
    REQUEST_COURT_ORDER_FULFIL = "request:court_order:fulfil"
    #: A court order: its scope was narrowed.
    REQUEST_COURT_ORDER_NARROW = "request:court_order:narrow"
    #: A court order: the owner was notified.
    REQUEST_COURT_ORDER_NOTIFY = "request:court_order:notify"
    #: A court order: it was rejected.
    REQUEST_COURT_ORDER_REJECT = "request:court_order:reject"
    #: A court order: it was routed (owner inbox or staff review).
    REQUEST_COURT_ORDER_ROUTE = "request:court_order:route"
    #: A court order: the owner notice was scheduled (delayed).
    REQUEST_COURT_ORDER_SCHEDULE = "request:court_order:schedule"
    #: A court order: its requester was verified.
    REQUEST_COURT_ORDER_VERIFY = "request:court_order:verify"
    #: A court order: the requester withdrew it.
    REQUEST_COURT_ORDER_WITHDRAW = "request:court_order:withdraw"
    #: A emergency request: a staff approval (or the release once both are in).
    REQUEST_EMERGENCY_APPROVE = "request:emergency:approve"
    #: A emergency request: staff called the agency's registered number.
    REQUEST_EMERGENCY_CALLBACK = "request:emergency:callback"
    #: A emergency request: it was closed.
    REQUEST_EMERGENCY_CLOSE = "request:emergency:close"
    #: A emergency request: a requester filed it.
    REQUEST_EMERGENCY_FILE = "request:emergency:file"
    #: A emergency request: its package was made.
    REQUEST_EMERGENCY_FULFIL = "request:emergency:fulfil"
    #: A emergency request: its scope was narrowed.
    REQUEST_EMERGENCY_NARROW = "request:emergency:narrow"
    #: A emergency request: the owner was notified.
    REQUEST_EMERGENCY_NOTIFY = "request:emergency:notify"
    #: A emergency request: it was rejected.
    REQUEST_EMERGENCY_REJECT = "request:emergency:reject"
    #: A emergency request: it was routed (owner inbox or staff review).
    REQUEST_EMERGENCY_ROUTE = "request:emergency:route"
    #: A emergency request: the owner notice was scheduled (delayed).
    REQUEST_EMERGENCY_SCHEDULE = "request:emergency:schedule"
    #: A emergency request: its requester was verified.
    REQUEST_EMERGENCY_VERIFY = "request:emergency:verify"
    #: A emergency request: the requester withdrew it.
    REQUEST_EMERGENCY_WITHDRAW = "request:emergency:withdraw"
    #: A package download was refused (another request's, an expired or unknown link).
    REQUEST_PACKAGE_DENY = "request:package:deny"
    #: A requester downloaded a fulfilled request's package.
    REQUEST_PACKAGE_DOWNLOAD = "request:package:download"
    #: An owner changed the household's disclosure policy.
    REQUEST_POLICY_CHANGE = "request:policy:change"
    #: A preservation request: a legal reviewer accepted it.
    REQUEST_PRESERVATION_ACCEPT = "request:preservation:accept"
    #: A preservation request: a requester filed it.
    REQUEST_PRESERVATION_FILE = "request:preservation:file"
    #: A preservation request: its scope was narrowed.
    REQUEST_PRESERVATION_NARROW = "request:preservation:narrow"
    #: A preservation request: the owner was notified.
    REQUEST_PRESERVATION_NOTIFY = "request:preservation:notify"
    #: A preservation request: it was rejected.
    REQUEST_PRESERVATION_REJECT = "request:preservation:reject"
    #: A preservation request: its preservation hold ended.
    REQUEST_PRESERVATION_RELEASE = "request:preservation:release"
    #: A preservation request: its preservation hold was renewed.
    REQUEST_PRESERVATION_RENEW = "request:preservation:renew"
    #: A preservation request: it was routed (owner inbox or staff review).
    REQUEST_PRESERVATION_ROUTE = "request:preservation:route"
    #: A preservation request: the owner notice was scheduled (delayed).
    REQUEST_PRESERVATION_SCHEDULE = "request:preservation:schedule"
    #: A preservation request: its requester was verified.
    REQUEST_PRESERVATION_VERIFY = "request:preservation:verify"
    #: A preservation request: the requester withdrew it.
    REQUEST_PRESERVATION_WITHDRAW = "request:preservation:withdraw"
    #: A requester account was locked after too many wrong TOTP codes; staff alerted.
    REQUEST_REQUESTER_LOCK = "request:requester:lock"
    #: A requester signed up; the setup link went to the official mail address.
    REQUEST_REQUESTER_SIGNUP = "request:requester:signup"
    #: A search warrant: a legal reviewer accepted it.
    REQUEST_SEARCH_WARRANT_ACCEPT = "request:search_warrant:accept"
    #: A search warrant: it was closed.
    REQUEST_SEARCH_WARRANT_CLOSE = "request:search_warrant:close"
    #: A search warrant: a requester filed it.
    REQUEST_SEARCH_WARRANT_FILE = "request:search_warrant:file"
    #: A search warrant: its package was made.
    REQUEST_SEARCH_WARRANT_FULFIL = "request:search_warrant:fulfil"
    #: A search warrant: its scope was narrowed.
    REQUEST_SEARCH_WARRANT_NARROW = "request:search_warrant:narrow"
    #: A search warrant: the owner was notified.
    REQUEST_SEARCH_WARRANT_NOTIFY = "request:search_warrant:notify"
    #: A search warrant: it was rejected.
    REQUEST_SEARCH_WARRANT_REJECT = "request:search_warrant:reject"
    #: A search warrant: it was routed (owner inbox or staff review).
    REQUEST_SEARCH_WARRANT_ROUTE = "request:search_warrant:route"
    #: A search warrant: the owner notice was scheduled (delayed).
    REQUEST_SEARCH_WARRANT_SCHEDULE = "request:search_warrant:schedule"
    #: A search warrant: its requester was verified.
    REQUEST_SEARCH_WARRANT_VERIFY = "request:search_warrant:verify"
    #: A search warrant: the requester withdrew it.
    REQUEST_SEARCH_WARRANT_WITHDRAW = "request:search_warrant:withdraw"
    #: A subpoena: a legal reviewer accepted it.
    REQUEST_SUBPOENA_ACCEPT = "request:subpoena:accept"
    #: A subpoena: it was closed.
    REQUEST_SUBPOENA_CLOSE = "request:subpoena:close"
    #: A subpoena: a requester filed it.
    REQUEST_SUBPOENA_FILE = "request:subpoena:file"
    #: A subpoena: its package was made.
    REQUEST_SUBPOENA_FULFIL = "request:subpoena:fulfil"
    #: A subpoena: its scope was narrowed.
    REQUEST_SUBPOENA_NARROW = "request:subpoena:narrow"
    #: A subpoena: the owner was notified.
    REQUEST_SUBPOENA_NOTIFY = "request:subpoena:notify"
    #: A subpoena: it was rejected.
    REQUEST_SUBPOENA_REJECT = "request:subpoena:reject"
    #: A subpoena: it was routed (owner inbox or staff review).
    REQUEST_SUBPOENA_ROUTE = "request:subpoena:route"
    #: A subpoena: the owner notice was scheduled (delayed).
    REQUEST_SUBPOENA_SCHEDULE = "request:subpoena:schedule"
    #: A subpoena: its requester was verified.
    REQUEST_SUBPOENA_VERIFY = "request:subpoena:verify"
    #: A subpoena: the requester withdrew it.
    REQUEST_SUBPOENA_WITHDRAW = "request:subpoena:withdraw"
    #: A setting was changed (camera enabled/disabled, notification preferences, ...).
    SETTING_CHANGE = "setting:value:change"
    #: The audit log's signing key was generated (first run).
    SYSTEM_KEY_CREATE = "system:key:create"
    #: The audit log's signing key was replaced; the old public key is kept.
    SYSTEM_KEY_ROTATE = "system:key:rotate"


class ActorKind(StrEnum):
    """Who acted (DESIGN.md "The people who use it"; the local operator until accounts)."""

    LOCAL_OPERATOR = "local_operator"
    REQUESTER = "requester"
    STAFF = "staff"
    SYSTEM = "system"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Actor:
    """An actor: ``kind`` and an ``id`` that names them within the kind (an account id; for
    the local operator the client address or ``cli:<os user>``; for the system a component)."""

    kind: ActorKind
    id: str

    def __post_init__(self) -> None:
        _check_text("actor id", self.id)

    @classmethod
    def of_principal(cls, principal: Principal) -> Actor:
        """The actor behind an API caller (``homewarden.domain.permissions.Principal``).

        Raises:
            InvalidRequestError: an anonymous principal (it can hold no permission, so it
                cannot have been served anything to account for).
        """
        if principal.kind is PrincipalKind.LOCAL_OPERATOR:
            return cls(ActorKind.LOCAL_OPERATOR, principal.client_host or "unknown")
        if principal.kind is PrincipalKind.USER and principal.user_id is not None:
            role = principal.role
            if role is not None and role.value == "requester":
                return cls(ActorKind.REQUESTER, str(principal.user_id))
            staff = role is not None and role.is_staff
            return cls(ActorKind.STAFF if staff else ActorKind.USER, str(principal.user_id))
        raise InvalidRequestError(f"a {principal.kind} caller is never served footage")

    def to_json(self) -> dict[str, Any]:
        """``{"id": ..., "kind": ...}``."""
        return {"id": self.id, "kind": str(self.kind)}


@dataclass(frozen=True, slots=True)
class Subject:
    """What an entry is about; None where it does not apply.

    ``start_ms`` / ``end_ms``: the footage time range, UTC epoch ms (``start_ms <= end_ms``);
    ``event``: an event id; ``request``: a disclosure request id; ``key``: a key id (hex).
    """

    household: str
    camera: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    event: int | None = None
    request: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        _check_text("household", self.household)
        for name in ("camera", "request", "key"):
            value = getattr(self, name)
            if value is not None:
                _check_text(name, value)
        for name in ("start_ms", "end_ms", "event"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidRequestError(f"subject {name} must be an integer, got {value!r}")
        if (self.start_ms is None) != (self.end_ms is None):
            raise InvalidRequestError("a subject time range needs both start and end")
        if self.start_ms is not None and self.end_ms is not None and self.end_ms < self.start_ms:
            raise InvalidRequestError(f"subject range ends ({self.end_ms}) before it starts")

    def to_json(self) -> dict[str, Any]:
        """Every field, None as null."""
        return {
            "camera": self.camera,
            "end_ms": self.end_ms,
            "event": self.event,
            "household": self.household,
            "key": self.key,
            "request": self.request,
            "start_ms": self.start_ms,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit log entry: the ``index``-th (from 0), written at ``time_ms`` (UTC epoch ms)."""

    index: int
    time_ms: int
    actor: Actor
    action: AuditTag
    subject: Subject
    reason: str

    def __post_init__(self) -> None:
        for name in ("index", "time_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidRequestError(f"entry {name} must be a non-negative integer")
        if not self.reason or len(self.reason) > MAX_REASON:
            raise InvalidRequestError(f"an entry's reason must be 1..{MAX_REASON} characters")

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object (schema in the module docstring)."""
        return {
            "action": str(self.action),
            "actor": self.actor.to_json(),
            "index": self.index,
            "reason": self.reason,
            "subject": self.subject.to_json(),
            "time_ms": self.time_ms,
            "v": SCHEMA_VERSION,
        }

    def leaf(self) -> bytes:
        """The canonical JSON bytes of the entry: the Merkle leaf."""
        return canonical_json(self.to_json())

    @classmethod
    def from_leaf(cls, leaf: bytes) -> AuditEntry:
        """Parse a leaf back into an entry, insisting it is the canonical spelling.

        Raises:
            VerificationError: not UTF-8 JSON of a version-1 entry, or not canonical.
        """
        try:
            data = json.loads(leaf.decode("utf-8"))
            if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
                raise ValueError(f"not a version {SCHEMA_VERSION} entry object")
            if set(data) != {"action", "actor", "index", "reason", "subject", "time_ms", "v"}:
                raise ValueError("wrong set of fields")
            actor, subject = data["actor"], data["subject"]
            if not isinstance(actor, dict) or set(actor) != {"id", "kind"}:
                raise ValueError("bad actor")
            if not isinstance(subject, dict):
                raise ValueError("bad subject")
            entry = cls(
                index=data["index"],
                time_ms=data["time_ms"],
                actor=Actor(ActorKind(actor["kind"]), actor["id"]),
                action=AuditTag(data["action"]),
                subject=Subject(**subject),
                reason=data["reason"],
            )
        except (UnicodeDecodeError, ValueError, TypeError, InvalidRequestError) as exc:
            raise VerificationError(f"not an audit entry: {exc}") from exc
        if entry.leaf() != leaf:
            raise VerificationError("audit entry is not in its canonical JSON spelling")
        return entry


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: keys sorted, UTF-8 (not ASCII escapes), separators ``,``/``:``.

    Raises:
        InvalidRequestError: a float (times are integer ms; floats have several spellings
            across languages), NaN/infinity, or a value JSON cannot hold.
    """
    _reject_floats(value)
    try:
        text = json.dumps(
            value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"value has no canonical JSON form: {exc}") from exc
    return text.encode("utf-8")


def _reject_floats(value: Any) -> None:
    if isinstance(value, float):
        what = "NaN/infinity" if not math.isfinite(value) else "a float"
        raise InvalidRequestError(f"canonical JSON holds integers only, not {what} ({value!r})")
    if isinstance(value, dict):
        for v in value.values():
            _reject_floats(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _reject_floats(v)


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise InvalidRequestError(f"{name} must be 1..{MAX_NAME} characters, got {value!r}")


def epoch_ms(seconds: float, *, rounding: str = "nearest") -> int:
    """UTC epoch seconds as integer milliseconds: ``nearest``, ``floor`` or ``ceil``.

    A footage range is widened (start floored, end ceiled) so the entry covers all that was
    served.

    Raises:
        InvalidRequestError: not a finite time at or after 1970, or an unknown rounding.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidRequestError(f"{seconds!r} is not a time after 1970-01-01")
    ms = seconds * 1000.0
    if rounding == "nearest":
        return round(ms)
    if rounding == "floor":
        return math.floor(ms)
    if rounding == "ceil":
        return math.ceil(ms)
    raise InvalidRequestError(f"unknown rounding {rounding!r}")
