"""Disclosure requests: the state machine deciding whether footage leaves the home. Pure.

A request for footage is one of four types (DESIGN.md flow 5):

- ``consent``: asks the household's owner; only the owner grants (all or part) or declines.
  Unanswered after :data:`CONSENT_ANSWER_SECONDS` (7 days) it expires, which counts as
  declined.
- ``legal_order``: a subpoena, court order or search warrant. A legal reviewer accepts it
  (whole or narrowed) or rejects it with a reason. Content (footage) is released only under a
  search warrant: 18 U.S.C. 2703(a)-(b) require a warrant for the contents of communications,
  and the large camera providers publish the same rule for video. A subpoena or court order
  (2703(c)-(d)) yields only the account facts it lists. The owner is told at acceptance,
  unless a non-disclosure order (18 U.S.C. 2705(b)) with an end date is recorded; then the
  notice is scheduled for that date. A 2705(b) order without an end date is refused.
- ``preservation``: 18 U.S.C. 2703(f): the scope is kept (a hold against retention) for
  :data:`PRESERVATION_SECONDS` (90 days), renewable once for another 90 (2703(f)(2));
  nothing is disclosed.
- ``emergency``: 18 U.S.C. 2702(b)(8) lets a provider disclose voluntarily when it believes
  in good faith that an emergency involving danger of death or serious physical injury
  requires it. Here that belief needs: the requester's attestation and description; a staff
  call-back to the agency's registered number (never one from the request), confirmed; and
  approvals by two different staff, one legal reviewer and one custodian. The scope is capped
  by the household's :class:`Policy` (named cameras, at most 2 h); the policy may refuse all
  emergency disclosure, and sets the owner-notice delay (at most 24 h).

:func:`file_request` makes a request; :func:`decide` applies one :class:`Action` and returns
the new request, the :class:`Transition` records (actor, time, reason) and the
:class:`Effect` values the caller must carry out (holds, notices). Every path goes through
:func:`decide`, so the release rule lives in one place: :func:`release_grounds` (footage
leaves only after an owner grant, an accepted search warrant, or an emergency with a
confirmed call-back and two distinct approvers on a household whose policy allows it) and
:func:`check_releasable` (and never without a sent or scheduled owner notice).

Times are UTC epoch seconds (float).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from homewarden.errors import InvalidRequestError, InvalidTransitionError, PermissionDeniedError
from homewarden.timefmt import utc_seconds_text

#: An unanswered consent request expires (declined) after this long, seconds.
CONSENT_ANSWER_SECONDS = 7 * 86400.0
#: A preservation hold lasts this long, seconds; renewable once (18 U.S.C. 2703(f)(2)).
PRESERVATION_SECONDS = 90 * 86400.0
#: Default and largest emergency window, seconds (DESIGN.md: "a short window").
EMERGENCY_MAX_WINDOW = 2 * 3600.0
#: Latest the owner is told of an emergency disclosure, seconds after approval.
EMERGENCY_NOTICE_MAX_DELAY = 24 * 3600.0
#: Longest non-disclosure order accepted, seconds (U.S. DOJ, "Policy Regarding Applications
#: for Protective Orders Pursuant to 18 U.S.C. 2705(b)", 19 Oct 2017: one year at most).
MAX_NONDISCLOSURE_SECONDS = 366 * 86400.0
#: How far past ``now`` a scope may end (clock skew between requester and deployment), s.
CLOCK_SLACK_SECONDS = 300.0
#: Longest free-text fields (reasons, descriptions), characters.
MAX_TEXT = 4000
#: The answer to a request for footage sealed to keys only the household holds (issue 6).
OWNER_HOLDS_KEYS = "the provider cannot produce this content; the owner holds the keys"
#: What a fulfilment releasing only the part of the footage in the clear says of the rest.
WITHHELD_IN_PART = (
    f"the footage sealed to the household's keys was not produced, as {OWNER_HOLDS_KEYS}"
)


class RequestType(StrEnum):
    """What the requester asks for (DESIGN.md flow 5)."""

    CONSENT = "consent"
    LEGAL_ORDER = "legal_order"
    PRESERVATION = "preservation"
    EMERGENCY = "emergency"


class OrderKind(StrEnum):
    """The kind of a legal order (18 U.S.C. 2703): only a search warrant reaches content."""

    SUBPOENA = "subpoena"
    COURT_ORDER = "court_order"
    SEARCH_WARRANT = "search_warrant"


class State(StrEnum):
    """Where a request stands. Terminal: declined, rejected, expired, withdrawn, closed."""

    SUBMITTED = "submitted"
    REQUESTER_VERIFIED = "requester_verified"
    UNDER_REVIEW = "under_review"
    AWAITING_OWNER = "awaiting_owner"
    APPROVED = "approved"
    NARROWED = "narrowed"
    NOTICE_SCHEDULED = "notice_scheduled"
    OWNER_NOTIFIED = "owner_notified"
    FULFILLED = "fulfilled"
    DECLINED = "declined"
    REJECTED = "rejected"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"

    @property
    def terminal(self) -> bool:
        """No step leads out of this state (a scheduled owner notice may still be sent)."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {State.DECLINED, State.REJECTED, State.EXPIRED, State.WITHDRAWN, State.CLOSED}
)
#: Decided in the requester's favour, waiting for fulfilment.
_DECIDED = frozenset({State.APPROVED, State.NARROWED, State.NOTICE_SCHEDULED, State.OWNER_NOTIFIED})
_OPEN = frozenset({State.UNDER_REVIEW, State.AWAITING_OWNER})


class Release(StrEnum):
    """What a decided request lets leave: footage, the account facts an order lists, or
    nothing (preservation)."""

    NONE = "none"
    ACCOUNT_FACTS = "account_facts"
    FOOTAGE = "footage"


class NoticeStatus(StrEnum):
    """The owner notice of a request."""

    NONE = "none"
    SCHEDULED = "scheduled"
    SENT = "sent"


class RejectCode(StrEnum):
    """Why a request was rejected (the transparency report counts them)."""

    OVERBROAD = "overbroad"
    DEFECTIVE = "defective"
    WRONG_JURISDICTION = "wrong_jurisdiction"
    POLICY_REFUSES_EMERGENCY = "policy_refuses_emergency"
    INDEFINITE_NONDISCLOSURE = "indefinite_nondisclosure"
    WINDOW_TOO_LONG = "window_too_long"
    NOT_AN_EMERGENCY = "not_an_emergency"
    CALLBACK_FAILED = "callback_failed"


class AccountFact(StrEnum):
    """Account facts a subpoena or court order may list (never footage)."""

    HOUSEHOLD_NAME = "household_name"
    OWNER_USERNAME = "owner_username"
    ACCOUNT_CREATED = "account_created"
    CAMERA_NAMES = "camera_names"


class PartyRole(StrEnum):
    """Who takes a step."""

    REQUESTER = "requester"
    OWNER = "owner"
    LEGAL_REVIEWER = "legal_reviewer"
    CUSTODIAN = "custodian"
    SYSTEM = "system"


_STAFF = frozenset({PartyRole.LEGAL_REVIEWER, PartyRole.CUSTODIAN})


class Overlong(StrEnum):
    """What a household's policy does with an emergency window longer than its cap."""

    CAP = "cap"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Party:
    """An actor in a request: ``role``, an ``id`` naming them (an account id; ``system``
    components by name), and for an owner their ``household``."""

    role: PartyRole
    id: str
    household: str | None = None

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > 200:
            raise InvalidRequestError("a party needs an id of 1 to 200 characters")
        if self.role is PartyRole.OWNER and not self.household:
            raise InvalidRequestError("an owner party names its household")


#: The party of steps nobody takes by hand (expiry, scheduled notices, policy refusals).
SYSTEM = Party(PartyRole.SYSTEM, "disclosure")


@dataclass(frozen=True, slots=True)
class Scope:
    """What footage a request concerns: one ``household``, its ``cameras`` (names, sorted,
    at least one) over ``[start, end]`` (UTC epoch seconds)."""

    household: str
    cameras: tuple[str, ...]
    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.household:
            raise InvalidRequestError("a scope names a household")
        if not self.cameras:
            raise InvalidRequestError("a scope names at least one camera")
        if len(set(self.cameras)) != len(self.cameras):
            raise InvalidRequestError("a scope names each camera once")
        if tuple(sorted(self.cameras)) != self.cameras:
            object.__setattr__(self, "cameras", tuple(sorted(self.cameras)))
        if not (_finite(self.start) and _finite(self.end)):
            raise InvalidRequestError("a scope's start and end are finite numbers (UTC epoch s)")
        if not self.end > self.start:
            raise InvalidRequestError("a scope's end must be after its start")

    @property
    def seconds(self) -> float:
        """Length of the window, seconds."""
        return self.end - self.start

    def within(self, other: Scope) -> bool:
        """True when this scope asks for nothing ``other`` does not (same household, a
        subset of cameras, a window inside)."""
        return (
            self.household == other.household
            and set(self.cameras) <= set(other.cameras)
            and self.start >= other.start
            and self.end <= other.end
        )

    def to_json(self) -> dict[str, Any]:
        """``{"household", "cameras", "start", "end"}``."""
        return {
            "household": self.household,
            "cameras": list(self.cameras),
            "start": self.start,
            "end": self.end,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scope:
        """Inverse of :meth:`to_json`. Raises InvalidRequestError on a malformed value."""
        try:
            return cls(
                str(data["household"]),
                tuple(str(c) for c in data["cameras"]),
                float(data["start"]),
                float(data["end"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequestError(f"malformed scope: {exc}") from exc


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


@dataclass(frozen=True, slots=True)
class SealedRange:
    """Footage of ``camera`` over ``[start, end]`` (UTC epoch s) sealed to keys only the
    household holds, which the provider cannot produce (issue 6)."""

    camera: str
    start: float
    end: float

    def text(self) -> str:
        """``<camera> from <UTC> to <UTC>``, as the owner notice and reasons say it."""
        return f"{self.camera} from {utc_seconds_text(self.start)} to {utc_seconds_text(self.end)}"

    def to_json(self) -> list[Any]:
        """``[camera, start, end]``."""
        return [self.camera, self.start, self.end]

    @classmethod
    def from_json(cls, data: Any) -> SealedRange:
        """Inverse of :meth:`to_json`. Raises InvalidRequestError on a malformed value."""
        try:
            camera, start, end = data
            return cls(str(camera), float(start), float(end))
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"malformed sealed range: {exc}") from exc


def sealed_ranges_text(ranges: Sequence[SealedRange]) -> str:
    """The ranges as one phrase (``shed from ... to ...; porch from ... to ...``)."""
    return "; ".join(r.text() for r in ranges)


@dataclass(frozen=True, slots=True)
class Policy:
    """A household's disclosure policy (set by its owner).

    Attributes:
        emergency_allowed: False refuses every emergency request, naming this policy.
        notice_delay: seconds between an emergency approval and the owner's notice,
            0 to :data:`EMERGENCY_NOTICE_MAX_DELAY` (24 h).
        emergency_max_window: the longest emergency window, seconds, 60 to
            :data:`EMERGENCY_MAX_WINDOW` (an owner may tighten it, never widen it).
        emergency_overlong: a longer window is capped to its last ``emergency_max_window``
            seconds, or rejected.
    """

    emergency_allowed: bool = True
    notice_delay: float = 0.0
    emergency_max_window: float = EMERGENCY_MAX_WINDOW
    emergency_overlong: Overlong = Overlong.CAP

    def __post_init__(self) -> None:
        if not (_finite(self.notice_delay) and self.notice_delay >= 0):
            raise InvalidRequestError("the notice delay is a number of seconds, 0 or more")
        if self.notice_delay > EMERGENCY_NOTICE_MAX_DELAY:
            raise InvalidRequestError(
                "the owner is told of an emergency disclosure within 24 h at most "
                f"(notice delay {self.notice_delay:.0f} s > {EMERGENCY_NOTICE_MAX_DELAY:.0f} s)"
            )
        if (
            not (_finite(self.emergency_max_window) and self.emergency_max_window >= 60)
            or self.emergency_max_window > EMERGENCY_MAX_WINDOW
        ):
            raise InvalidRequestError(
                f"the emergency window cap is between 60 s and {EMERGENCY_MAX_WINDOW:.0f} s (2 h)"
            )

    def describe(self) -> str:
        """One line naming the policy, for refusals."""
        if not self.emergency_allowed:
            return "the household's policy refuses all emergency disclosure"
        return (
            f"the household's policy allows emergency disclosure of at most "
            f"{_span(self.emergency_max_window)} of named cameras"
        )


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


@dataclass(frozen=True, slots=True)
class Callback:
    """A staff member's call to the agency's registered number: who called, the number
    dialled (always the agency record's), whether the agency confirmed the request, when."""

    staff: Party
    number: str
    confirmed: bool
    at: float
    note: str


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded step: ``action``, states before and after, who, when, why."""

    action: str
    from_state: State | None
    to_state: State
    actor: Party
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Request:
    """A disclosure request as it stands. Build with :func:`file_request`; change only
    through :func:`decide`.

    Attributes:
        id: the request id (also the evidence package id).
        type: :class:`RequestType`.
        requester: the filing requester (role REQUESTER).
        agency_phone: the agency's registered call-back number, copied from the agency
            record at filing (never from the request).
        original_scope: the scope as filed; ``scope``: as it stands (only ever narrowed).
        order_kind, case_number, court: for a legal order.
        nondisclosure_until: end of a recorded 2705(b) non-disclosure order, or None.
        facts: account facts a subpoena or court order lists.
        description: the requester's description (for an emergency, the attested danger).
        attested: for an emergency, the requester attested danger of death or serious
            physical injury.
        release: what a decision lets leave (NONE until decided).
        owner_granted: the household's owner granted a consent request.
        warrant_accepted: a legal reviewer accepted a search warrant.
        callback: the latest staff call-back, or None.
        approvals: staff approving an emergency (distinct people).
        emergency_allowed_at_approval: the policy allowed emergencies when it was approved.
        notice, notice_due, notice_sent_at: the owner notice.
        hold_expires_at, hold_renewed: a preservation hold.
        reject_code: why it was rejected, if it was.
        owner_holds_keys: the footage released is sealed to keys only the household holds
            and is answered "the provider cannot produce this content; the owner holds the
            keys" (issue 6): set when the owner is told so (:func:`owner_holds_keys`) or at
            such a fulfilment; the owner notice then says nothing is released.
        sealed_withheld: part of the footage released is sealed to keys only the household
            holds (a search warrant over footage recorded partly before sealing was turned
            on): that part, these ranges, is answered "the provider cannot produce this
            content; the owner holds the keys" and the part in the clear is released. Set when
            the owner is told so (:func:`owner_holds_keys_in_part`) or at such a fulfilment;
            the owner notice then says which part is released and which cannot be.
    """

    id: str
    type: RequestType
    requester: Party
    agency_id: int
    agency_phone: str
    filed_at: float
    original_scope: Scope
    scope: Scope
    state: State
    order_kind: OrderKind | None = None
    case_number: str = ""
    court: str = ""
    nondisclosure_until: float | None = None
    facts: tuple[AccountFact, ...] = ()
    description: str = ""
    attested: bool = False
    release: Release = Release.NONE
    owner_granted: bool = False
    warrant_accepted: bool = False
    callback: Callback | None = None
    approvals: tuple[Party, ...] = ()
    emergency_allowed_at_approval: bool = False
    notice: NoticeStatus = NoticeStatus.NONE
    notice_due: float | None = None
    notice_sent_at: float | None = None
    hold_expires_at: float | None = None
    hold_renewed: bool = False
    reject_code: RejectCode | None = None
    owner_holds_keys: bool = False
    sealed_withheld: tuple[SealedRange, ...] = ()


# --- effects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendOwnerNotice:
    """Tell the household's owner now (in the app and by their notice channels)."""

    text: str


@dataclass(frozen=True, slots=True)
class PlaceHold:
    """Keep ``scope``'s footage from retention until ``expires_at``."""

    scope: Scope
    expires_at: float


@dataclass(frozen=True, slots=True)
class ExtendHold:
    """Move the request's hold's expiry to ``expires_at``."""

    expires_at: float


@dataclass(frozen=True, slots=True)
class EndHold:
    """Let retention have the request's held footage again."""


Effect = SendOwnerNotice | PlaceHold | ExtendHold | EndHold


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` returns: the request after the step, its transitions (in order)
    and the effects to carry out."""

    request: Request
    transitions: tuple[Transition, ...]
    effects: tuple[Effect, ...] = ()


# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerGrant:
    """The owner grants a consent request: all of it, or ``scope`` (narrower)."""

    scope: Scope | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OwnerDecline:
    """The owner declines a consent request."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Narrow:
    """A legal reviewer narrows an open request's scope before deciding."""

    scope: Scope
    reason: str


@dataclass(frozen=True, slots=True)
class Accept:
    """A legal reviewer accepts a legal order or preservation request, whole or narrowed to
    ``scope``."""

    reason: str
    scope: Scope | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """Staff reject a request with a code and a reason."""

    code: RejectCode
    reason: str


@dataclass(frozen=True, slots=True)
class RecordCallback:
    """Staff record the call to the agency's registered ``number``."""

    number: str
    confirmed: bool
    note: str


@dataclass(frozen=True, slots=True)
class Approve:
    """One staff approval of an emergency request."""

    reason: str


@dataclass(frozen=True, slots=True)
class Withdraw:
    """The requester withdraws the request before it is fulfilled."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Expire:
    """The system expires a consent request unanswered for 7 days."""


@dataclass(frozen=True, slots=True)
class SendScheduledNotice:
    """The system sends a scheduled owner notice that has fallen due."""


@dataclass(frozen=True, slots=True)
class Fulfil:
    """The released scope was packaged for the requester; ``package`` names it (``none``
    when nothing was found to release).

    ``owner_holds_keys``: the footage of an accepted search warrant, or of an emergency
    where the owner did not opt into escrow, is sealed to the household's own keys (issue 6,
    "Under owner-held keys, a legal order for content is answered 'the provider cannot
    produce this content; the owner holds the keys'"; DESIGN.md flow 5: an emergency under
    owner-held keys is impossible by construction): fulfilled with package ``none`` and that
    answer. If the owner was already told footage would be released, they are told again
    that nothing was.

    ``withheld``: the package holds the footage of the scope recorded in the clear, and these
    ranges of it, sealed to the household's own keys, were not produced (a search warrant
    over footage recorded partly before sealing was turned on; issue 6). The transition's
    reason names them; if the owner was told before that all of it would be released, they
    are told again what was released and what could not be.
    """

    package: str
    owner_holds_keys: bool = False
    withheld: tuple[SealedRange, ...] = ()


@dataclass(frozen=True, slots=True)
class Renew:
    """Renew a preservation hold for another 90 days (once)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class EndPreservation:
    """The system ends a preservation hold that ran out."""


@dataclass(frozen=True, slots=True)
class Close:
    """Staff close a fulfilled request."""

    reason: str = ""


Action = (
    OwnerGrant
    | OwnerDecline
    | Narrow
    | Accept
    | Reject
    | RecordCallback
    | Approve
    | Withdraw
    | Expire
    | SendScheduledNotice
    | Fulfil
    | Renew
    | EndPreservation
    | Close
)


# --- filing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filing:
    """What a requester files. See :class:`Request` for the fields; ``nondisclosure_order``
    says a 2705(b) order was filed (with or without ``nondisclosure_until``)."""

    type: RequestType
    scope: Scope
    description: str
    order_kind: OrderKind | None = None
    case_number: str = ""
    court: str = ""
    nondisclosure_order: bool = False
    nondisclosure_until: float | None = None
    facts: tuple[AccountFact, ...] = ()
    attested: bool = False
    documents: int = 0


def file_request(
    request_id: str,
    filing: Filing,
    requester: Party,
    *,
    requester_verified: bool,
    agency_id: int,
    agency_phone: str,
    policy: Policy,
    now: float,
) -> Decision:
    """File a request: checks the filing, then records ``submitted`` and
    ``requester_verified``, and routes it (consent to the owner, others to review). An
    emergency on a household refusing emergencies, an emergency window over the policy's cap
    when the policy rejects those, and a legal order with an open-ended non-disclosure order
    are refused at once, with the reason recorded.

    Raises:
        PermissionDeniedError: the requester is not verified (agency, mail domain, TOTP), or
            ``requester`` is not a requester.
        InvalidRequestError: a malformed filing (missing case number, order kind or
            documents for a legal order; no attestation for an emergency; empty description;
            account facts on anything but a subpoena or court order).
    """
    if requester.role is not PartyRole.REQUESTER:
        raise PermissionDeniedError("only a requester files disclosure requests")
    if not requester_verified:
        raise PermissionDeniedError(
            "an unverified requester can file nothing: confirm the agency mail address and "
            "enrol TOTP first"
        )
    if not _digits(agency_phone):
        raise InvalidRequestError("the agency has no registered call-back number")
    f = filing
    _text("description", f.description, required=True)
    _text("case number", f.case_number)
    _text("court", f.court)
    if f.type is RequestType.LEGAL_ORDER:
        if f.order_kind is None:
            raise InvalidRequestError("a legal order names its kind (subpoena, court order, "
                                      "search warrant)")  # fmt: skip
        if not f.case_number.strip() or not f.court.strip():
            raise InvalidRequestError("a legal order gives its case number and issuing court")
        if f.documents < 1:
            raise InvalidRequestError("a legal order comes with the order document uploaded")
    elif f.order_kind is not None or f.nondisclosure_order or f.nondisclosure_until is not None:
        raise InvalidRequestError("only a legal order has an order kind or non-disclosure order")
    if f.facts and not (
        f.type is RequestType.LEGAL_ORDER and f.order_kind is not OrderKind.SEARCH_WARRANT
    ):
        raise InvalidRequestError("account facts are asked for by a subpoena or court order")
    if f.type is RequestType.EMERGENCY and not f.attested:
        raise InvalidRequestError(
            "an emergency request attests a danger of death or serious physical injury "
            "(18 U.S.C. 2702(b)(8))"
        )
    if f.type is not RequestType.EMERGENCY and f.attested:
        raise InvalidRequestError("only an emergency request carries an attestation")
    if f.nondisclosure_until is not None:
        if not f.nondisclosure_order:
            raise InvalidRequestError(
                "a non-disclosure end date needs the non-disclosure order itself (say it was filed)"
            )
        if not _finite(f.nondisclosure_until) or f.nondisclosure_until <= now:
            raise InvalidRequestError(
                "the non-disclosure order's end date must be a time in the future (an order "
                "that has ended delays nothing: file without it)"
            )
        if f.nondisclosure_until > now + MAX_NONDISCLOSURE_SECONDS:
            raise InvalidRequestError(
                "a non-disclosure order of more than a year is refused: orders under 18 U.S.C. "
                "2705(b) should not exceed one year (U.S. DOJ policy of 19 Oct 2017); file "
                "the court's extension when it is granted"
            )
    if f.scope.start < 0 or f.scope.end > now + CLOCK_SLACK_SECONDS:
        raise InvalidRequestError("a scope covers recorded time: after 1970 and not in the future")
    req = Request(
        id=request_id,
        type=f.type,
        requester=requester,
        agency_id=agency_id,
        agency_phone=agency_phone.strip(),
        filed_at=now,
        original_scope=f.scope,
        scope=f.scope,
        state=State.SUBMITTED,
        order_kind=f.order_kind,
        case_number=f.case_number.strip(),
        court=f.court.strip(),
        nondisclosure_until=f.nondisclosure_until,
        facts=tuple(dict.fromkeys(f.facts)),
        description=f.description.strip(),
        attested=f.attested,
    )
    out = _Out(req)
    name = _type_name(req)
    article = "an" if name[0] in "aeiou" else "a"
    out.move("file", State.SUBMITTED, requester, now, f"filed {article} {name} request")
    out.move("verify_requester", State.REQUESTER_VERIFIED, SYSTEM, now,
             "agency, mail domain and TOTP verified")  # fmt: skip
    if (
        f.type is RequestType.LEGAL_ORDER
        and f.nondisclosure_order
        and (f.nondisclosure_until is None)
    ):
        return out.reject(
            RejectCode.INDEFINITE_NONDISCLOSURE,
            "a non-disclosure order under 18 U.S.C. 2705(b) without an end date is refused: "
            "the owner must be told some day; file the order with its end date",
            now,
        )
    if f.type is RequestType.EMERGENCY:
        if not policy.emergency_allowed:
            return out.reject(RejectCode.POLICY_REFUSES_EMERGENCY, policy.describe(), now)
        if f.scope.seconds > policy.emergency_max_window:
            if policy.emergency_overlong is Overlong.REJECT:
                return out.reject(
                    RejectCode.WINDOW_TOO_LONG,
                    f"the window of {_span(f.scope.seconds)} is longer than "
                    f"{policy.describe()}; file a shorter window",
                    now,
                )
            capped = replace(f.scope, start=f.scope.end - policy.emergency_max_window)
            out.req = replace(out.req, scope=capped)
            out.move(
                "narrow", State.REQUESTER_VERIFIED, SYSTEM, now,
                f"window capped from {_span(f.scope.seconds)} to the last "
                f"{_span(policy.emergency_max_window)} before its end: {policy.describe()}",
            )  # fmt: skip
    if f.type is RequestType.CONSENT:
        out.move("route", State.AWAITING_OWNER, SYSTEM, now,
                 "sent to the owner's inbox; only the owner can answer")  # fmt: skip
    else:
        out.move("route", State.UNDER_REVIEW, SYSTEM, now, "queued for staff review")
    return out.done()


def _type_name(req: Request) -> str:
    if req.type is RequestType.LEGAL_ORDER and req.order_kind is not None:
        return req.order_kind.replace("_", " ")
    return req.type.replace("_", " ")


def _text(what: str, value: str, *, required: bool = False) -> None:
    if required and not value.strip():
        raise InvalidRequestError(f"the {what} is required")
    if len(value) > MAX_TEXT:
        raise InvalidRequestError(f"the {what} has at most {MAX_TEXT} characters")


@dataclass(slots=True)
class _Out:
    """Accumulates a decision."""

    req: Request
    transitions: list[Transition] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)

    def move(self, action: str, to: State, actor: Party, at: float, reason: str) -> None:
        frm = None if action == "file" else self.req.state
        self.transitions.append(Transition(action, frm, to, actor, at, reason))
        self.req = replace(self.req, state=to)

    def note(self, action: str, actor: Party, at: float, reason: str) -> None:
        """A step that leaves the state as it is."""
        self.transitions.append(
            Transition(action, self.req.state, self.req.state, actor, at, reason)
        )

    def reject(self, code: RejectCode, reason: str, at: float, actor: Party = SYSTEM) -> Decision:
        self.req = replace(self.req, reject_code=code, release=Release.NONE)
        self.move("reject", State.REJECTED, actor, at, f"{code}: {reason}")
        if self.req.hold_expires_at is not None:
            self.effects.append(EndHold())
        return self.done()

    def done(self) -> Decision:
        return Decision(self.req, tuple(self.transitions), tuple(self.effects))


# --- deciding ------------------------------------------------------------------------------


def decide(req: Request, action: Action, actor: Party, policy: Policy, now: float) -> Decision:
    """Apply ``action`` by ``actor`` to ``req`` at ``now`` under the household's ``policy``.

    Raises:
        PermissionDeniedError: ``actor`` may not take this step (the wrong role, another
            household's owner, another requester, the same staff member approving twice).
        InvalidTransitionError: the step is not open in the request's state (or not on its
            type's path), or it is not yet due (expiry, scheduled notice, hold end).
        InvalidRequestError: a malformed step (a scope that widens, an empty reason, a
            call-back to a number other than the agency's registered one).
    """
    out = _Out(req)
    match action:
        case OwnerGrant() | OwnerDecline():
            _owner_answer(out, action, actor, now)
        case Narrow():
            _need(actor, _STAFF_LEGAL, "narrow a request")
            _in(req, _OPEN, "narrowed")
            _text("reason", action.reason, required=True)
            out.req = replace(req, scope=_narrower(action.scope, req.scope))
            out.note("narrow", actor, now, action.reason)
        case Accept():
            _accept(out, action, actor, now)
        case Reject():
            _need(actor, _STAFF, "reject a request")
            _in(req, _OPEN, "rejected")
            if req.type is RequestType.CONSENT:
                raise InvalidTransitionError("a consent request is answered by its owner only")
            _text("reason", action.reason, required=True)
            return out.reject(action.code, action.reason, now, actor)
        case RecordCallback():
            _callback(out, action, actor, policy, now)
        case Approve():
            _approve(out, action, actor, policy, now)
        case Withdraw():
            if actor.role is not PartyRole.REQUESTER or actor.id != req.requester.id:
                raise PermissionDeniedError("only the requester who filed it withdraws a request")
            if req.state.terminal or req.state is State.FULFILLED:
                raise InvalidTransitionError(f"a {req.state} request cannot be withdrawn")
            _text("reason", action.reason)
            out.move("withdraw", State.WITHDRAWN, actor, now, action.reason.strip() or "withdrawn")
            if req.hold_expires_at is not None:
                out.effects.append(EndHold())
        case Expire():
            _need(actor, {PartyRole.SYSTEM}, "expire a request")
            _in(req, {State.AWAITING_OWNER}, "expired")
            if now < req.filed_at + CONSENT_ANSWER_SECONDS:
                raise InvalidTransitionError("the owner has 7 days to answer; not yet expired")
            out.move("expire", State.EXPIRED, actor, now,
                     "the owner did not answer within 7 days: declined")  # fmt: skip
        case SendScheduledNotice():
            _need(actor, {PartyRole.SYSTEM}, "send a scheduled notice")
            if req.notice is not NoticeStatus.SCHEDULED or req.notice_due is None:
                raise InvalidTransitionError("no owner notice is scheduled")
            if now < req.notice_due:
                raise InvalidTransitionError("the scheduled owner notice is not due yet")
            _send_notice(out, actor, now, "the non-disclosure period ended"
                         if req.type is not RequestType.EMERGENCY
                         else "the policy's notice delay passed")  # fmt: skip
        case Fulfil():
            _need(actor, _STAFF | {PartyRole.SYSTEM}, "fulfil a request")
            _in(req, _DECIDED, "fulfilled")
            check_releasable(req)
            if req.release is Release.NONE:
                raise InvalidTransitionError("a preservation request discloses nothing")
            if action.owner_holds_keys:
                if req.release is not Release.FOOTAGE or action.package != "none":
                    raise InvalidTransitionError(
                        "only a request for footage is answered that the owner holds the "
                        "keys, and then with no package"
                    )
                told = req.notice is NoticeStatus.SENT and not req.owner_holds_keys
                out.req = replace(out.req, owner_holds_keys=True)
                out.move("fulfil", State.FULFILLED, actor, now,
                         f"package none: {OWNER_HOLDS_KEYS}")  # fmt: skip
                if told:
                    out.effects.append(SendOwnerNotice(owner_notice_text(out.req)))
            elif action.withheld:
                if req.release is not Release.FOOTAGE or action.package == "none":
                    raise InvalidTransitionError(
                        "only a package of footage is released with a sealed part withheld"
                    )
                told = req.notice is NoticeStatus.SENT and not req.sealed_withheld
                out.req = replace(out.req, sealed_withheld=action.withheld)
                out.move("fulfil", State.FULFILLED, actor, now,
                         f"package {action.package} ready for the requester ({req.release}) "
                         f"in part: {WITHHELD_IN_PART} "
                         f"({sealed_ranges_text(action.withheld)})")  # fmt: skip
                if told:
                    out.effects.append(SendOwnerNotice(owner_notice_text(out.req)))
            else:
                out.move("fulfil", State.FULFILLED, actor, now,
                         f"package {action.package} ready for the requester "
                         f"({req.release})")  # fmt: skip
        case Renew():
            _renew(out, action, actor, now)
        case EndPreservation():
            _need(actor, {PartyRole.SYSTEM}, "end a preservation hold")
            if req.type is not RequestType.PRESERVATION or req.hold_expires_at is None:
                raise InvalidTransitionError("no preservation hold to end")
            _in(req, _DECIDED, "ended")
            if now < req.hold_expires_at:
                raise InvalidTransitionError("the preservation hold has not run out")
            out.move("end_hold", State.CLOSED, actor, now, "the preservation period ended")
            out.effects.append(EndHold())
        case Close():
            _need(actor, _STAFF, "close a request")
            _in(req, {State.FULFILLED}, "closed")
            _text("reason", action.reason)
            out.move("close", State.CLOSED, actor, now, action.reason.strip() or "closed")
    return out.done()


_STAFF_LEGAL = frozenset({PartyRole.LEGAL_REVIEWER})


def _need(actor: Party, roles: frozenset[PartyRole] | set[PartyRole], what: str) -> None:
    if actor.role not in roles:
        names = " or ".join(sorted(str(r).replace("_", " ") for r in roles))
        raise PermissionDeniedError(f"only a {names} may {what}")


def _in(req: Request, states: frozenset[State] | set[State], what: str) -> None:
    if req.state not in states:
        raise InvalidTransitionError(f"a {req.state} request cannot be {what}")


def _narrower(new: Scope, old: Scope) -> Scope:
    if not new.within(old):
        raise InvalidRequestError(
            "a scope may only be narrowed: the same household, fewer cameras, a window inside"
        )
    return new


def _owner_answer(out: _Out, action: OwnerGrant | OwnerDecline, actor: Party, now: float) -> None:
    req = out.req
    if actor.role is not PartyRole.OWNER or actor.household != req.scope.household:
        raise PermissionDeniedError("only the household's owner answers a consent request")
    if req.type is not RequestType.CONSENT:
        raise InvalidTransitionError("only a consent request is answered by the owner")
    _in(req, {State.AWAITING_OWNER}, "answered")
    if now >= req.filed_at + CONSENT_ANSWER_SECONDS:
        raise InvalidTransitionError("the 7 days to answer have passed: the request expired")
    _text("reason", action.reason)
    if isinstance(action, OwnerDecline):
        out.move("owner_decline", State.DECLINED, actor, now, action.reason.strip() or "declined")
        return
    scope = req.scope if action.scope is None else _narrower(action.scope, req.scope)
    partial = scope != req.original_scope
    out.req = replace(req, scope=scope, owner_granted=True, release=Release.FOOTAGE)
    out.move(
        "owner_grant", State.NARROWED if partial else State.APPROVED, actor, now,
        action.reason.strip() or ("granted in part" if partial else "granted"),
    )  # fmt: skip
    # The owner answered: they know. The notice confirms what they granted.
    _send_notice(out, SYSTEM, now, "the owner answered the request")


def _accept(out: _Out, action: Accept, actor: Party, now: float) -> None:
    req = out.req
    _need(actor, _STAFF_LEGAL, "accept a legal order or preservation request")
    if req.type not in (RequestType.LEGAL_ORDER, RequestType.PRESERVATION):
        raise InvalidTransitionError(
            f"a {req.type} request is not accepted by legal review "
            "(consent: the owner answers; emergency: two staff approve)"
        )
    _in(req, {State.UNDER_REVIEW}, "accepted")
    _text("reason", action.reason, required=True)
    scope = req.scope if action.scope is None else _narrower(action.scope, req.scope)
    partial = scope != req.original_scope
    reason = action.reason
    if req.type is RequestType.PRESERVATION:
        release = Release.NONE
    elif req.order_kind is OrderKind.SEARCH_WARRANT:
        release = Release.FOOTAGE
    else:
        release = Release.ACCOUNT_FACTS
        facts = ", ".join(req.facts) or "none listed"
        reason = (
            f"{reason}; a {_type_name(req)} yields no footage: content needs a search warrant "
            f"(18 U.S.C. 2703(b)); released account facts only: {facts}"
        )
    out.req = replace(
        req,
        scope=scope,
        release=release,
        warrant_accepted=release is Release.FOOTAGE,
    )
    out.move("accept", State.NARROWED if partial else State.APPROVED, actor, now, reason)
    if req.type is RequestType.PRESERVATION:
        expires = now + PRESERVATION_SECONDS
        out.req = replace(out.req, hold_expires_at=expires)
        out.effects.append(PlaceHold(scope, expires))
    until = req.nondisclosure_until
    if until is not None and until > now:
        out.req = replace(out.req, notice=NoticeStatus.SCHEDULED, notice_due=until)
        out.move(
            "schedule_notice", State.NOTICE_SCHEDULED, SYSTEM, now,
            "a non-disclosure order (18 U.S.C. 2705(b)) delays the owner's notice to its end",
        )  # fmt: skip
    else:
        _send_notice(out, SYSTEM, now, "accepted")


def _callback(out: _Out, action: RecordCallback, actor: Party, policy: Policy, now: float) -> None:
    req = out.req
    _need(actor, _STAFF, "record a call-back")
    if req.type is not RequestType.EMERGENCY:
        raise InvalidTransitionError("only an emergency request needs a call-back")
    _in(req, {State.UNDER_REVIEW}, "called back")
    _text("note", action.note, required=True)
    if _digits(action.number) != _digits(req.agency_phone):
        raise InvalidRequestError(
            "call the agency's registered number from the agency record, never one given in "
            "the request"
        )
    cb = Callback(actor, req.agency_phone, action.confirmed, now, action.note)
    out.req = replace(req, callback=cb)
    verdict = "confirmed the request" if action.confirmed else "did NOT confirm the request"
    out.note("callback", actor, now, f"called {req.agency_phone}: the agency {verdict}; "
             f"{action.note}")  # fmt: skip
    if req.approvals:
        if not policy.emergency_allowed:
            out.reject(RejectCode.POLICY_REFUSES_EMERGENCY, policy.describe(), now)
            return
        _maybe_release_emergency(out, policy, now)


def _digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


def _approve(out: _Out, action: Approve, actor: Party, policy: Policy, now: float) -> None:
    req = out.req
    _need(actor, _STAFF, "approve an emergency request")
    if req.type is not RequestType.EMERGENCY:
        raise InvalidTransitionError("only an emergency request is approved by two staff")
    _in(req, {State.UNDER_REVIEW}, "approved")
    _text("reason", action.reason, required=True)
    if any(a.id == actor.id for a in req.approvals):
        raise PermissionDeniedError("an approval comes from two different staff members")
    if any(a.role is actor.role for a in req.approvals):
        raise PermissionDeniedError(
            f"the second approval comes from a "
            f"{'custodian' if actor.role is PartyRole.LEGAL_REVIEWER else 'legal reviewer'}"
        )
    if not policy.emergency_allowed:
        out.reject(RejectCode.POLICY_REFUSES_EMERGENCY, policy.describe(), now)
        return
    approvals = (*req.approvals, actor)
    out.req = replace(req, approvals=approvals)
    out.note("approve", actor, now, action.reason)
    _maybe_release_emergency(out, policy, now)


def _maybe_release_emergency(out: _Out, policy: Policy, now: float) -> None:
    req = out.req
    cb = req.callback
    if cb is None or not cb.confirmed or len({a.id for a in req.approvals}) < 2:
        return
    out.req = replace(
        req, release=Release.FOOTAGE, emergency_allowed_at_approval=policy.emergency_allowed
    )
    out.move("approve_emergency", State.APPROVED, SYSTEM, now,
             "call-back confirmed and approved by a legal reviewer and a custodian "
             "(18 U.S.C. 2702(b)(8))")  # fmt: skip
    if policy.notice_delay > 0:
        due = now + policy.notice_delay
        out.req = replace(out.req, notice=NoticeStatus.SCHEDULED, notice_due=due)
        out.move("schedule_notice", State.NOTICE_SCHEDULED, SYSTEM, now,
                 "the household's policy delays the notice by "
                 f"{_span(policy.notice_delay)}")  # fmt: skip
    else:
        _send_notice(out, SYSTEM, now, "emergency disclosure approved")


def _send_notice(out: _Out, actor: Party, now: float, why: str) -> None:
    req = out.req
    out.req = replace(req, notice=NoticeStatus.SENT, notice_sent_at=now)
    text = owner_notice_text(out.req)
    out.effects.append(SendOwnerNotice(text))
    if req.state in (State.APPROVED, State.NARROWED, State.NOTICE_SCHEDULED):
        out.move("notify_owner", State.OWNER_NOTIFIED, actor, now, why)
    else:
        out.note("notify_owner", actor, now, why)


def owner_notice_text(req: Request) -> str:
    """The owner notice's text: what was asked, by whom, what was decided."""
    s = req.scope
    what = {
        Release.FOOTAGE: "footage will be released",
        Release.ACCOUNT_FACTS: "account facts only (no footage) will be released: "
        + (", ".join(req.facts) or "none"),
        Release.NONE: "footage is preserved (kept from deletion), nothing is released",
    }[req.release]
    if req.release is Release.FOOTAGE and req.owner_holds_keys:
        what = (
            f"{'nothing was' if req.state is State.FULFILLED else 'nothing can be'} released, "
            f"as {OWNER_HOLDS_KEYS} (the footage is sealed to your household's keys, which the "
            "provider does not hold)"
        )
    elif req.release is Release.FOOTAGE and req.sealed_withheld:
        done = req.state is State.FULFILLED
        what = (
            f"the footage recorded in the clear {'was' if done else 'will be'} released; the "
            f"footage sealed to your household's keys ({sealed_ranges_text(req.sealed_withheld)}) "
            f"{'was not' if done else 'cannot be'} released, as {OWNER_HOLDS_KEYS} (the "
            "provider does not hold them)"
        )
    if req.state is State.WITHDRAWN:  # a delayed notice of a request withdrawn meanwhile
        what = "the requester withdrew it before anything was released"
    return (
        f"Disclosure request {req.id} ({_type_name(req)}) about cameras "
        f"{', '.join(s.cameras)} from {utc_seconds_text(s.start)} to "
        f"{utc_seconds_text(s.end)} (UTC) was "
        f"{req.state.replace('_', ' ')}: {what}."
    )


def _renew(out: _Out, action: Renew, actor: Party, now: float) -> None:
    req = out.req
    _text("reason", action.reason)
    if actor.role is PartyRole.REQUESTER:
        if actor.id != req.requester.id:
            raise PermissionDeniedError("only the requester who filed it renews a hold")
    else:
        _need(actor, _STAFF_LEGAL | {PartyRole.REQUESTER}, "renew a preservation hold")
    if req.type is not RequestType.PRESERVATION:
        raise InvalidTransitionError("only a preservation request is renewed")
    _in(req, _DECIDED, "renewed")
    if req.hold_renewed:
        raise InvalidTransitionError(
            "a preservation hold is renewed once (18 U.S.C. 2703(f)(2)); file a legal order"
        )
    assert req.hold_expires_at is not None
    if now >= req.hold_expires_at:
        raise InvalidTransitionError("the preservation hold has already run out")
    expires = req.hold_expires_at + PRESERVATION_SECONDS
    out.req = replace(req, hold_expires_at=expires, hold_renewed=True)
    out.note("renew", actor, now, action.reason.strip() or "renewed for another 90 days")
    out.effects.append(ExtendHold(expires))


def owner_holds_keys(decision: Decision) -> Decision:
    """``decision`` for a request whose footage the provider cannot produce, as the owner
    holds the keys (issue 6): the request is marked :attr:`Request.owner_holds_keys` and any
    owner notice it sends says nothing can be released instead of "footage will be
    released". The caller (the disclosure service, which can see whether the scope is
    sealed) applies it to the step that tells the owner; the fulfilment that follows is
    ``Fulfil("none", owner_holds_keys=True)``."""
    req = replace(decision.request, owner_holds_keys=True)
    effects = tuple(
        SendOwnerNotice(owner_notice_text(req)) if isinstance(e, SendOwnerNotice) else e
        for e in decision.effects
    )
    return Decision(req, decision.transitions, effects)


def owner_holds_keys_in_part(decision: Decision, withheld: Sequence[SealedRange]) -> Decision:
    """``decision`` for a request of footage part of which, the ``withheld`` ranges, is
    sealed to keys only the household holds while the rest is in the clear (issue 6): the
    request is marked :attr:`Request.sealed_withheld` and any owner notice it sends says what
    will be released and what cannot be. Applied by the disclosure service as
    :func:`owner_holds_keys` is; the fulfilment that follows is ``Fulfil(package,
    withheld=...)``."""
    req = replace(decision.request, sealed_withheld=tuple(withheld))
    effects = tuple(
        SendOwnerNotice(owner_notice_text(req)) if isinstance(e, SendOwnerNotice) else e
        for e in decision.effects
    )
    return Decision(req, decision.transitions, effects)


# --- the release rule ----------------------------------------------------------------------


def release_grounds(req: Request) -> str | None:
    """The ground on which ``req``'s footage may leave, or None when none holds:

    - ``owner consent``: a consent request its owner granted;
    - ``search warrant``: a legal order of kind search warrant a legal reviewer accepted;
    - ``emergency``: an emergency with a confirmed call-back to the agency's registered
      number, approved by two distinct staff (a legal reviewer and a custodian), on a
      household whose policy allowed emergencies at approval.
    """
    if req.type is RequestType.CONSENT and req.owner_granted:
        return "owner consent"
    if (
        req.type is RequestType.LEGAL_ORDER
        and req.order_kind is OrderKind.SEARCH_WARRANT
        and req.warrant_accepted
    ):
        return "search warrant"
    if req.type is RequestType.EMERGENCY:
        cb = req.callback
        roles = {a.role for a in req.approvals}
        if (
            cb is not None
            and cb.confirmed
            and len({a.id for a in req.approvals}) >= 2
            and roles >= _STAFF
            and req.emergency_allowed_at_approval
        ):
            return "emergency"
    return None


def check_releasable(req: Request) -> None:
    """Raise unless what ``req`` releases may leave now: footage needs a
    :func:`release_grounds`; anything released needs a sent or scheduled owner notice.

    Raises:
        PermissionDeniedError: no ground for footage, or no owner notice sent or scheduled.
    """
    if req.release is Release.FOOTAGE and release_grounds(req) is None:
        raise PermissionDeniedError(
            "no ground to release footage: it needs the owner's grant, an accepted search "
            "warrant, or a verified emergency approved by two staff"
        )
    if req.release is not Release.NONE and req.notice is NoticeStatus.NONE:
        raise PermissionDeniedError("nothing is released before the owner's notice is sent "
                                    "or scheduled")  # fmt: skip


def due_actions(req: Request, now: float) -> Sequence[Action]:
    """The system steps that have fallen due for ``req`` at ``now`` (the scheduler runs
    these): consent expiry, a scheduled notice, a preservation hold's end."""
    due: list[Action] = []
    if req.state is State.AWAITING_OWNER and now >= req.filed_at + CONSENT_ANSWER_SECONDS:
        due.append(Expire())
    if (
        req.notice is NoticeStatus.SCHEDULED
        and req.notice_due is not None
        and (now >= req.notice_due)
    ):
        due.append(SendScheduledNotice())
    if (
        req.type is RequestType.PRESERVATION
        and req.state in _DECIDED
        and req.hold_expires_at is not None
        and now >= req.hold_expires_at
    ):
        due.append(EndPreservation())
    return due


def next_due(req: Request) -> float | None:
    """When the next system step of ``req`` falls due (UTC epoch s), or None."""
    times: list[float] = []
    if req.state is State.AWAITING_OWNER:
        times.append(req.filed_at + CONSENT_ANSWER_SECONDS)
    if req.notice is NoticeStatus.SCHEDULED and req.notice_due is not None:
        times.append(req.notice_due)
    if req.type is RequestType.PRESERVATION and req.state in _DECIDED and req.hold_expires_at:
        times.append(req.hold_expires_at)
    return min(times) if times else None
