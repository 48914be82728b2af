"""Disclosure requests (issue 4): the pure state machine, one test per rule."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import pytest

from homewarden.domain.disclosure import (
    CONSENT_ANSWER_SECONDS,
    EMERGENCY_MAX_WINDOW,
    EMERGENCY_NOTICE_MAX_DELAY,
    OWNER_HOLDS_KEYS,
    PRESERVATION_SECONDS,
    SYSTEM,
    Accept,
    AccountFact,
    Action,
    Approve,
    Close,
    Decision,
    EndHold,
    EndPreservation,
    Expire,
    ExtendHold,
    Filing,
    Fulfil,
    Narrow,
    NoticeStatus,
    OrderKind,
    Overlong,
    OwnerDecline,
    OwnerGrant,
    Party,
    PartyRole,
    PlaceHold,
    Policy,
    RecordCallback,
    Reject,
    RejectCode,
    Release,
    Renew,
    Request,
    RequestType,
    Scope,
    SendOwnerNotice,
    SendScheduledNotice,
    State,
    Transition,
    Withdraw,
    check_releasable,
    decide,
    due_actions,
    file_request,
    next_due,
    owner_holds_keys,
    release_grounds,
)
from homewarden.errors import (
    HomeWardenError,
    InvalidRequestError,
    InvalidTransitionError,
    PermissionDeniedError,
)

DAY = 86400.0
HOUR = 3600.0
T0 = 1_700_000_000.0
HOME = "home-1"
OTHER_HOME = "home-2"
PHONE = "+1 (555) 010-0100"

FILER = Party(PartyRole.REQUESTER, "req-1")
OTHER_REQUESTER = Party(PartyRole.REQUESTER, "req-2")
OWNER = Party(PartyRole.OWNER, "owner-1", HOME)
OTHER_OWNER = Party(PartyRole.OWNER, "owner-2", OTHER_HOME)
LEGAL = Party(PartyRole.LEGAL_REVIEWER, "legal-1")
LEGAL_B = Party(PartyRole.LEGAL_REVIEWER, "legal-2")
CUSTODIAN = Party(PartyRole.CUSTODIAN, "cust-1")
#: legal-1 again, acting as custodian: the same person.
LEGAL_AS_CUSTODIAN = Party(PartyRole.CUSTODIAN, "legal-1")

SCOPE = Scope(HOME, ("door", "yard"), T0 - 2 * HOUR, T0 - HOUR)
ALLOW = Policy()
REFUSE = Policy(emergency_allowed=False)


def filing(kind: RequestType, **kw: object) -> Filing:
    """A valid filing of ``kind`` unless ``kw`` says otherwise."""
    base: dict[str, object] = {"scope": SCOPE, "description": "burglary on 3 May"}
    if kind is RequestType.LEGAL_ORDER:
        base |= {
            "order_kind": OrderKind.SEARCH_WARRANT,
            "case_number": "CR-2024-17",
            "court": "Superior Court of Alameda County",
            "documents": 1,
        }
    if kind is RequestType.EMERGENCY:
        base |= {"attested": True, "description": "child missing, last seen at the door"}
    base |= kw
    return Filing(kind, **base)  # type: ignore[arg-type]


def file(
    f: Filing,
    *,
    policy: Policy = ALLOW,
    requester: Party = FILER,
    verified: bool = True,
    now: float = T0,
) -> Decision:
    return file_request(
        "r1",
        f,
        requester,
        requester_verified=verified,
        agency_id=7,
        agency_phone=PHONE,
        policy=policy,
        now=now,
    )


def step(
    req: Request, action: Action, actor: Party, *, policy: Policy = ALLOW, now: float = T0
) -> Decision:
    return decide(req, action, actor, policy, now)


def filed(kind: RequestType, *, policy: Policy = ALLOW, **kw: object) -> Request:
    return file(filing(kind, **kw), policy=policy).request


def states(d: Decision) -> list[State]:
    return [t.to_state for t in d.transitions]


def narrower() -> Scope:
    return Scope(HOME, ("door",), T0 - 2 * HOUR + 600, T0 - HOUR)


def emergency_released(order: Sequence[str], policy: Policy = ALLOW) -> Decision:
    """Emergency steps in ``order`` ("cb", "legal", "cust"); returns the last decision."""
    req = filed(RequestType.EMERGENCY, policy=policy)
    d: Decision | None = None
    for what in order:
        if what == "cb":
            d = step(req, RecordCallback(PHONE, True, "duty sergeant confirmed"), CUSTODIAN,
                     policy=policy)  # fmt: skip
        else:
            d = step(req, Approve("credible"), LEGAL if what == "legal" else CUSTODIAN,
                     policy=policy)  # fmt: skip
        req = d.request
    assert d is not None
    return d


# --- filing --------------------------------------------------------------------------------


def test_filing_records_submitted_and_verified_then_routes() -> None:
    d = file(filing(RequestType.LEGAL_ORDER))
    assert [t.action for t in d.transitions] == ["file", "verify_requester", "route"]
    assert states(d) == [State.SUBMITTED, State.REQUESTER_VERIFIED, State.UNDER_REVIEW]
    assert d.transitions[0].actor == FILER
    assert d.request.state is State.UNDER_REVIEW
    assert d.request.release is Release.NONE


def test_unverified_requester_files_nothing() -> None:
    with pytest.raises(PermissionDeniedError, match="unverified"):
        file(filing(RequestType.CONSENT), verified=False)


@pytest.mark.parametrize("party", [OWNER, LEGAL, CUSTODIAN, SYSTEM])
def test_only_a_requester_files(party: Party) -> None:
    with pytest.raises(PermissionDeniedError):
        file(filing(RequestType.CONSENT), requester=party)


@pytest.mark.parametrize(
    ("missing", "match"),
    [
        ({"order_kind": None}, "kind"),
        ({"case_number": ""}, "case number"),
        ({"case_number": "   "}, "case number"),
        ({"court": ""}, "court"),
        ({"documents": 0}, "document"),
    ],
)
def test_legal_order_needs_kind_case_court_and_documents(
    missing: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        file(filing(RequestType.LEGAL_ORDER, **missing))


def test_emergency_needs_attestation() -> None:
    with pytest.raises(InvalidRequestError, match=r"2702\(b\)\(8\)"):
        file(filing(RequestType.EMERGENCY, attested=False))


@pytest.mark.parametrize(
    "f",
    [
        filing(RequestType.LEGAL_ORDER, facts=(AccountFact.OWNER_USERNAME,)),
        filing(RequestType.CONSENT, facts=(AccountFact.OWNER_USERNAME,)),
        filing(RequestType.EMERGENCY, facts=(AccountFact.CAMERA_NAMES,)),
    ],
    ids=["search_warrant", "consent", "emergency"],
)
def test_facts_only_on_subpoena_or_court_order(f: Filing) -> None:
    with pytest.raises(InvalidRequestError, match="account facts"):
        file(f)


@pytest.mark.parametrize("kind", [OrderKind.SUBPOENA, OrderKind.COURT_ORDER])
def test_facts_accepted_on_subpoena_and_court_order(kind: OrderKind) -> None:
    req = filed(RequestType.LEGAL_ORDER, order_kind=kind, facts=(AccountFact.OWNER_USERNAME,))
    assert req.facts == (AccountFact.OWNER_USERNAME,)


# --- consent -------------------------------------------------------------------------------


def test_consent_goes_to_the_owner() -> None:
    d = file(filing(RequestType.CONSENT))
    assert d.request.state is State.AWAITING_OWNER
    assert d.transitions[-1].action == "route"


@pytest.mark.parametrize(
    "actor",
    [OTHER_OWNER, FILER, OTHER_REQUESTER, LEGAL, CUSTODIAN, SYSTEM],
    ids=["other_owner", "filer", "other_requester", "legal", "custodian", "system"],
)
@pytest.mark.parametrize("action", [OwnerGrant(), OwnerDecline()], ids=["grant", "decline"])
def test_only_the_households_owner_answers(actor: Party, action: Action) -> None:
    req = filed(RequestType.CONSENT)
    with pytest.raises(PermissionDeniedError):
        step(req, action, actor)


def test_owner_grants_whole_request() -> None:
    req = filed(RequestType.CONSENT)
    d = step(req, OwnerGrant(), OWNER)
    assert [t.action for t in d.transitions] == ["owner_grant", "notify_owner"]
    assert states(d) == [State.APPROVED, State.OWNER_NOTIFIED]
    assert d.transitions[0].actor == OWNER
    assert d.request.release is Release.FOOTAGE
    assert d.request.scope == SCOPE
    assert d.request.notice is NoticeStatus.SENT
    assert any(isinstance(e, SendOwnerNotice) for e in d.effects)
    assert release_grounds(d.request) == "owner consent"
    f = step(d.request, Fulfil("pkg-1"), CUSTODIAN)
    assert f.request.state is State.FULFILLED
    assert f.request.release is Release.FOOTAGE


def test_owner_grants_narrowed_scope() -> None:
    req = filed(RequestType.CONSENT)
    d = step(req, OwnerGrant(narrower(), "only the door"), OWNER)
    assert d.transitions[0].to_state is State.NARROWED
    assert d.request.scope == narrower()
    assert d.request.original_scope == SCOPE
    assert d.request.release is Release.FOOTAGE


@pytest.mark.parametrize(
    "wider",
    [
        Scope(HOME, ("door", "garage", "yard"), SCOPE.start, SCOPE.end),
        Scope(HOME, SCOPE.cameras, SCOPE.start - 1, SCOPE.end),
        Scope(HOME, SCOPE.cameras, SCOPE.start, SCOPE.end + 1),
        Scope(OTHER_HOME, SCOPE.cameras, SCOPE.start, SCOPE.end),
    ],
    ids=["camera", "earlier", "later", "household"],
)
def test_owner_cannot_widen_scope(wider: Scope) -> None:
    req = filed(RequestType.CONSENT)
    with pytest.raises(InvalidRequestError, match="narrowed"):
        step(req, OwnerGrant(wider), OWNER)


def test_owner_declines_and_nothing_is_released() -> None:
    req = filed(RequestType.CONSENT)
    d = step(req, OwnerDecline("no"), OWNER)
    assert d.request.state is State.DECLINED
    assert d.request.release is Release.NONE
    with pytest.raises(InvalidTransitionError):
        step(d.request, Fulfil("pkg-1"), CUSTODIAN)
    with pytest.raises(InvalidTransitionError):
        step(d.request, OwnerGrant(), OWNER)


@pytest.mark.parametrize(
    ("action", "actor", "default"),
    [
        (OwnerDecline("  "), OWNER, "declined"),
        (OwnerGrant(None, " "), OWNER, "granted"),
        (Withdraw("\t"), FILER, "withdrawn"),
    ],
)
def test_blank_reason_is_recorded_as_the_default(
    action: Action, actor: Party, default: str
) -> None:
    d = step(filed(RequestType.CONSENT), action, actor)
    assert d.transitions[0].reason == default


def test_consent_expires_after_seven_days_only() -> None:
    req = filed(RequestType.CONSENT)
    with pytest.raises(InvalidTransitionError, match="7 days"):
        step(req, Expire(), SYSTEM, now=T0 + CONSENT_ANSWER_SECONDS - 1)
    d = step(req, Expire(), SYSTEM, now=T0 + CONSENT_ANSWER_SECONDS)
    assert d.request.state is State.EXPIRED
    assert d.request.release is Release.NONE
    with pytest.raises(InvalidTransitionError):
        step(d.request, OwnerGrant(), OWNER, now=T0 + CONSENT_ANSWER_SECONDS + 1)


def test_only_the_system_expires() -> None:
    req = filed(RequestType.CONSENT)
    with pytest.raises(PermissionDeniedError):
        step(req, Expire(), LEGAL, now=T0 + 8 * DAY)


def test_staff_cannot_reject_a_consent_request() -> None:
    req = filed(RequestType.CONSENT)
    with pytest.raises(InvalidTransitionError, match="owner"):
        step(req, Reject(RejectCode.OVERBROAD, "too wide"), LEGAL)


# --- legal orders --------------------------------------------------------------------------


def test_search_warrant_accepted_releases_footage_and_tells_owner() -> None:
    req = filed(RequestType.LEGAL_ORDER)
    d = step(req, Accept("valid warrant"), LEGAL)
    assert [t.action for t in d.transitions] == ["accept", "notify_owner"]
    assert d.request.state is State.OWNER_NOTIFIED
    assert d.request.release is Release.FOOTAGE
    assert d.request.notice is NoticeStatus.SENT
    assert [type(e) for e in d.effects] == [SendOwnerNotice]
    assert release_grounds(d.request) == "search warrant"
    assert step(d.request, Fulfil("pkg"), SYSTEM).request.state is State.FULFILLED


def test_a_warrant_the_owner_holds_the_keys_for_is_fulfilled_with_that_answer() -> None:
    """Issue 6: footage sealed to keys only the household holds is answered "the provider
    cannot produce this content; the owner holds the keys", with no package."""
    req = step(filed(RequestType.LEGAL_ORDER), Accept("valid warrant"), LEGAL).request
    with pytest.raises(InvalidTransitionError, match="no package"):
        step(req, Fulfil("pkg", owner_holds_keys=True), SYSTEM)
    f = step(req, Fulfil("none", owner_holds_keys=True), SYSTEM)
    assert f.request.state is State.FULFILLED
    assert [(t.action, t.reason) for t in f.transitions] == [
        ("fulfil", f"package none: {OWNER_HOLDS_KEYS}")
    ]
    # The owner was told footage would be released: they are told now that nothing was.
    (told,) = f.effects
    assert isinstance(told, SendOwnerNotice)
    assert f"was fulfilled: nothing was released, as {OWNER_HOLDS_KEYS}" in told.text
    assert f.request.owner_holds_keys
    # Told so at acceptance already (the service saw the sealed scope): no second notice.
    accepted = owner_holds_keys(step(filed(RequestType.LEGAL_ORDER), Accept("w"), LEGAL))
    (notice,) = accepted.effects
    assert isinstance(notice, SendOwnerNotice)
    assert "will be released" not in notice.text
    assert f"nothing can be released, as {OWNER_HOLDS_KEYS}" in notice.text
    again = step(accepted.request, Fulfil("none", owner_holds_keys=True), SYSTEM)
    assert again.effects == ()
    facts = filed(RequestType.LEGAL_ORDER, order_kind=OrderKind.SUBPOENA)
    facts = step(facts, Accept("valid order"), LEGAL).request
    with pytest.raises(InvalidTransitionError, match="only a request for footage"):
        step(facts, Fulfil("none", owner_holds_keys=True), SYSTEM)


@pytest.mark.parametrize("kind", [OrderKind.SUBPOENA, OrderKind.COURT_ORDER])
def test_subpoena_or_court_order_yields_account_facts_only(kind: OrderKind) -> None:
    req = filed(RequestType.LEGAL_ORDER, order_kind=kind, facts=(AccountFact.OWNER_USERNAME,))
    d = step(req, Accept("valid order"), LEGAL)
    assert d.request.release is Release.ACCOUNT_FACTS
    accept = d.transitions[0]
    assert accept.action == "accept"
    assert "no footage" in accept.reason
    assert "2703" in accept.reason
    assert "owner_username" in accept.reason
    assert release_grounds(d.request) is None
    f = step(d.request, Fulfil("pkg"), CUSTODIAN)
    assert f.request.state is State.FULFILLED
    assert f.request.release is Release.ACCOUNT_FACTS
    assert f.request.release is not Release.FOOTAGE


def test_nondisclosure_order_schedules_notice_until_its_end() -> None:
    until = T0 + 30 * DAY
    req = filed(RequestType.LEGAL_ORDER, nondisclosure_order=True, nondisclosure_until=until)
    d = step(req, Accept("valid warrant"), LEGAL)
    assert [t.action for t in d.transitions] == ["accept", "schedule_notice"]
    assert d.request.state is State.NOTICE_SCHEDULED
    assert d.request.notice is NoticeStatus.SCHEDULED
    assert d.request.notice_due == until
    assert "2705(b)" in d.transitions[-1].reason
    assert not any(isinstance(e, SendOwnerNotice) for e in d.effects)
    req = d.request
    with pytest.raises(InvalidTransitionError, match="not due"):
        step(req, SendScheduledNotice(), SYSTEM, now=until - DAY)
    with pytest.raises(PermissionDeniedError):
        step(req, SendScheduledNotice(), LEGAL, now=until)
    sent = step(req, SendScheduledNotice(), SYSTEM, now=until)
    assert sent.request.state is State.OWNER_NOTIFIED
    assert sent.request.notice is NoticeStatus.SENT
    assert sent.request.notice_sent_at == until
    assert [type(e) for e in sent.effects] == [SendOwnerNotice]


def test_scheduled_notice_after_fulfilment_is_a_note() -> None:
    until = T0 + 30 * DAY
    req = filed(RequestType.LEGAL_ORDER, nondisclosure_order=True, nondisclosure_until=until)
    req = step(req, Accept("valid warrant"), LEGAL).request
    req = step(req, Fulfil("pkg"), CUSTODIAN, now=T0 + DAY).request
    d = step(req, SendScheduledNotice(), SYSTEM, now=until)
    assert d.request.state is State.FULFILLED
    assert [(t.action, t.from_state, t.to_state) for t in d.transitions] == [
        ("notify_owner", State.FULFILLED, State.FULFILLED)
    ]


def test_delayed_notice_of_a_withdrawn_request_says_nothing_was_released() -> None:
    until = T0 + 30 * DAY
    req = filed(RequestType.LEGAL_ORDER, nondisclosure_order=True, nondisclosure_until=until)
    req = step(req, Accept("valid warrant"), LEGAL).request
    req = step(req, Withdraw("case dropped"), FILER, now=T0 + DAY).request
    d = step(req, SendScheduledNotice(), SYSTEM, now=until)
    assert d.request.state is State.WITHDRAWN
    [notice] = d.effects
    assert isinstance(notice, SendOwnerNotice)
    assert "search warrant" in notice.text
    assert "withdr" in notice.text
    assert "will be released" not in notice.text


def test_nondisclosure_order_over_by_acceptance_sends_notice_at_once() -> None:
    req = filed(RequestType.LEGAL_ORDER, nondisclosure_order=True, nondisclosure_until=T0 + DAY)
    d = step(req, Accept("valid warrant"), LEGAL, now=T0 + 2 * DAY)
    assert d.request.state is State.OWNER_NOTIFIED
    assert d.request.notice is NoticeStatus.SENT


@pytest.mark.parametrize(
    ("order", "until", "match"),
    [
        (True, T0 - 1, "in the future"),
        (True, float("inf"), "in the future"),
        (True, T0 + 400 * DAY, "more than a year"),
        (True, 1e300, "more than a year"),
        (False, T0 + DAY, "needs the non-disclosure order"),
    ],
)
def test_nondisclosure_dates_that_cannot_be_kept_are_refused_at_filing(
    order: bool, until: float, match: str
) -> None:
    """Regression (a 1e300 end date crashed the pages and dodged the end-date rule)."""
    with pytest.raises(InvalidRequestError, match=match):
        file(filing(RequestType.LEGAL_ORDER, nondisclosure_order=order, nondisclosure_until=until))


@pytest.mark.parametrize(("start", "end"), [(-100.0, -50.0), (T0 + 3600, T0 + 7200)])
def test_a_scope_outside_recorded_time_is_refused(start: float, end: float) -> None:
    with pytest.raises(InvalidRequestError, match="recorded time"):
        file(filing(RequestType.CONSENT, scope=Scope("home", ("front",), start, end)))


def test_indefinite_nondisclosure_order_is_refused_at_filing() -> None:
    d = file(filing(RequestType.LEGAL_ORDER, nondisclosure_order=True))
    assert d.request.state is State.REJECTED
    assert d.request.reject_code is RejectCode.INDEFINITE_NONDISCLOSURE
    assert d.transitions[-1].action == "reject"
    assert "indefinite_nondisclosure" in d.transitions[-1].reason
    assert "end date" in d.transitions[-1].reason
    with pytest.raises(InvalidTransitionError):
        step(d.request, Accept("ok"), LEGAL)


def test_nondisclosure_order_only_on_legal_orders() -> None:
    with pytest.raises(InvalidRequestError, match="non-disclosure"):
        file(filing(RequestType.CONSENT, nondisclosure_order=True, nondisclosure_until=T0 + DAY))


def test_reject_needs_a_reason() -> None:
    req = filed(RequestType.LEGAL_ORDER)
    with pytest.raises(InvalidRequestError, match="reason"):
        step(req, Reject(RejectCode.DEFECTIVE, "  "), LEGAL)
    d = step(req, Reject(RejectCode.WRONG_JURISDICTION, "out of state court"), LEGAL)
    assert d.request.state is State.REJECTED
    assert d.request.reject_code is RejectCode.WRONG_JURISDICTION
    assert "out of state court" in d.transitions[-1].reason
    assert d.transitions[-1].actor == LEGAL


@pytest.mark.parametrize("actor", [CUSTODIAN, OWNER, FILER, SYSTEM])
def test_only_a_legal_reviewer_accepts(actor: Party) -> None:
    req = filed(RequestType.LEGAL_ORDER)
    with pytest.raises(PermissionDeniedError):
        step(req, Accept("fine"), actor)


def test_accept_needs_a_reason() -> None:
    req = filed(RequestType.LEGAL_ORDER)
    with pytest.raises(InvalidRequestError, match="reason"):
        step(req, Accept(""), LEGAL)


def test_legal_review_narrows_and_cannot_widen() -> None:
    req = filed(RequestType.LEGAL_ORDER)
    d = step(req, Narrow(narrower(), "door only"), LEGAL)
    assert d.request.scope == narrower()
    assert d.request.state is State.UNDER_REVIEW
    with pytest.raises(InvalidRequestError):
        step(d.request, Accept("ok", SCOPE), LEGAL)
    a = step(d.request, Accept("ok"), LEGAL)
    assert a.transitions[0].to_state is State.NARROWED
    assert a.request.scope == narrower()
    with pytest.raises(PermissionDeniedError):
        step(req, Narrow(narrower(), "door only"), CUSTODIAN)


def test_accept_is_only_for_legal_orders_and_preservation() -> None:
    for kind in (RequestType.CONSENT, RequestType.EMERGENCY):
        with pytest.raises(InvalidTransitionError):
            step(filed(kind), Accept("ok"), LEGAL)


# --- preservation --------------------------------------------------------------------------


def preserved() -> Decision:
    return step(filed(RequestType.PRESERVATION), Accept("preserve for 90 days"), LEGAL)


def test_preservation_places_a_hold_and_releases_nothing() -> None:
    d = preserved()
    holds = [e for e in d.effects if isinstance(e, PlaceHold)]
    assert holds == [PlaceHold(SCOPE, T0 + PRESERVATION_SECONDS)]
    assert d.request.hold_expires_at == T0 + 90 * DAY
    assert d.request.release is Release.NONE
    with pytest.raises(InvalidTransitionError, match="discloses nothing"):
        step(d.request, Fulfil("pkg"), CUSTODIAN)


def test_preservation_renews_once() -> None:
    req = preserved().request
    d = step(req, Renew("case still open"), FILER, now=T0 + 80 * DAY)
    assert list(d.effects) == [ExtendHold(T0 + 180 * DAY)]
    assert d.request.hold_expires_at == T0 + 180 * DAY
    assert d.request.state is req.state
    assert d.transitions[0].action == "renew"
    with pytest.raises(InvalidTransitionError, match="once"):
        step(d.request, Renew(), FILER, now=T0 + 100 * DAY)


@pytest.mark.parametrize("actor", [OTHER_REQUESTER, CUSTODIAN, OWNER, SYSTEM])
def test_preservation_renewed_by_filer_or_legal_only(actor: Party) -> None:
    req = preserved().request
    with pytest.raises(PermissionDeniedError):
        step(req, Renew(), actor, now=T0 + DAY)
    assert step(req, Renew(), LEGAL, now=T0 + DAY).request.hold_renewed


def test_preservation_not_renewed_after_it_ran_out() -> None:
    req = preserved().request
    with pytest.raises(InvalidTransitionError):
        step(req, Renew(), FILER, now=T0 + PRESERVATION_SECONDS)


def test_preservation_ends_only_after_expiry() -> None:
    req = step(preserved().request, Renew(), FILER, now=T0 + DAY).request
    end = T0 + 2 * PRESERVATION_SECONDS
    with pytest.raises(InvalidTransitionError, match="not run out"):
        step(req, EndPreservation(), SYSTEM, now=end - 1)
    d = step(req, EndPreservation(), SYSTEM, now=end)
    assert d.request.state is State.CLOSED
    assert list(d.effects) == [EndHold()]
    assert d.transitions[-1].action == "end_hold"


def test_withdrawn_preservation_ends_its_hold() -> None:
    d = step(preserved().request, Withdraw("no longer needed"), FILER, now=T0 + DAY)
    assert d.request.state is State.WITHDRAWN
    assert list(d.effects) == [EndHold()]


# --- emergency -----------------------------------------------------------------------------


def test_emergency_one_approval_releases_nothing() -> None:
    d = emergency_released(["cb", "legal"])
    assert d.request.state is State.UNDER_REVIEW
    assert d.request.release is Release.NONE
    with pytest.raises(InvalidTransitionError):
        step(d.request, Fulfil("pkg"), CUSTODIAN)


@pytest.mark.parametrize("second", [LEGAL, LEGAL_AS_CUSTODIAN], ids=["same", "same_id_as_cust"])
def test_emergency_same_person_cannot_approve_twice(second: Party) -> None:
    req = emergency_released(["cb", "legal"]).request
    with pytest.raises(PermissionDeniedError, match="different"):
        step(req, Approve("again"), second)


def test_emergency_two_legal_reviewers_are_refused() -> None:
    req = emergency_released(["cb", "legal"]).request
    with pytest.raises(PermissionDeniedError, match="custodian"):
        step(req, Approve("me too"), LEGAL_B)


def test_emergency_approvals_are_staff_only() -> None:
    req = filed(RequestType.EMERGENCY)
    for actor in (OWNER, FILER, SYSTEM):
        with pytest.raises(PermissionDeniedError):
            step(req, Approve("yes"), actor)
        with pytest.raises(PermissionDeniedError):
            step(req, RecordCallback(PHONE, True, "ok"), actor)


def test_emergency_two_approvers_without_callback_not_released() -> None:
    d = emergency_released(["legal", "cust"])
    assert d.request.state is State.UNDER_REVIEW
    assert d.request.release is Release.NONE
    with pytest.raises(InvalidTransitionError):
        step(d.request, Fulfil("pkg"), CUSTODIAN)


@pytest.mark.parametrize("number", ["+1 555 010 0199", "555-0100", ""])
def test_emergency_callback_only_to_the_registered_number(number: str) -> None:
    req = filed(RequestType.EMERGENCY)
    with pytest.raises(InvalidRequestError, match="registered number"):
        step(req, RecordCallback(number, True, "called"), CUSTODIAN)


def test_emergency_callback_number_formatting_does_not_matter() -> None:
    req = filed(RequestType.EMERGENCY)
    d = step(req, RecordCallback("+15550100100", True, "called"), CUSTODIAN)
    assert d.request.callback is not None
    assert d.request.callback.number == PHONE


def test_emergency_unconfirmed_callback_not_released() -> None:
    req = filed(RequestType.EMERGENCY)
    cb = step(req, RecordCallback(PHONE, False, "nobody knew of it"), CUSTODIAN)
    assert "did NOT confirm" in cb.transitions[0].reason
    req = step(cb.request, Approve("credible"), LEGAL).request
    d = step(req, Approve("credible"), CUSTODIAN)
    assert d.request.state is State.UNDER_REVIEW
    assert d.request.release is Release.NONE
    assert release_grounds(d.request) is None
    with pytest.raises(InvalidTransitionError):
        step(d.request, Fulfil("pkg"), CUSTODIAN)


@pytest.mark.parametrize(
    "order",
    [["cb", "legal", "cust"], ["legal", "cust", "cb"], ["cust", "cb", "legal"]],
    ids=["callback_first", "callback_last", "callback_between"],
)
def test_emergency_confirmed_callback_and_two_approvals_release(order: list[str]) -> None:
    d = emergency_released(order)
    assert d.request.release is Release.FOOTAGE
    assert d.request.state is State.OWNER_NOTIFIED
    assert [t.action for t in d.transitions][-2:] == ["approve_emergency", "notify_owner"]
    assert d.request.notice_sent_at == T0
    assert [type(e) for e in d.effects] == [SendOwnerNotice]
    assert release_grounds(d.request) == "emergency"
    assert step(d.request, Fulfil("pkg"), CUSTODIAN).request.state is State.FULFILLED


def test_emergency_notice_delayed_per_policy() -> None:
    policy = Policy(notice_delay=3600)
    d = emergency_released(["cb", "legal", "cust"], policy)
    assert d.request.release is Release.FOOTAGE
    assert d.request.state is State.NOTICE_SCHEDULED
    assert d.request.notice is NoticeStatus.SCHEDULED
    assert d.request.notice_due == T0 + 3600
    assert d.effects == ()
    assert "1 h" in d.transitions[-1].reason
    with pytest.raises(InvalidTransitionError):
        step(d.request, SendScheduledNotice(), SYSTEM, policy=policy, now=T0 + 3599)
    sent = step(d.request, SendScheduledNotice(), SYSTEM, policy=policy, now=T0 + 3600)
    assert sent.request.state is State.OWNER_NOTIFIED
    assert sent.request.notice is NoticeStatus.SENT


def test_emergency_refused_by_policy_at_filing() -> None:
    d = file(filing(RequestType.EMERGENCY), policy=REFUSE)
    assert d.request.state is State.REJECTED
    assert d.request.reject_code is RejectCode.POLICY_REFUSES_EMERGENCY
    assert "policy refuses all emergency disclosure" in d.transitions[-1].reason
    assert d.transitions[-1].actor == SYSTEM


def test_emergency_refused_when_policy_changes_before_approval() -> None:
    req = filed(RequestType.EMERGENCY)
    req = step(req, RecordCallback(PHONE, True, "confirmed"), CUSTODIAN).request
    req = step(req, Approve("credible"), LEGAL).request
    d = step(req, Approve("credible"), CUSTODIAN, policy=REFUSE)
    assert d.request.state is State.REJECTED
    assert d.request.release is Release.NONE
    assert d.request.reject_code is RejectCode.POLICY_REFUSES_EMERGENCY
    assert "policy refuses" in d.transitions[-1].reason


def test_emergency_refused_when_policy_changes_before_callback() -> None:
    req = filed(RequestType.EMERGENCY)
    req = step(req, Approve("credible"), LEGAL).request
    req = step(req, Approve("credible"), CUSTODIAN).request
    d = step(req, RecordCallback(PHONE, True, "confirmed"), CUSTODIAN, policy=REFUSE)
    assert d.request.state is State.REJECTED
    assert d.request.release is Release.NONE


def test_emergency_overlong_window_capped() -> None:
    six_h = Scope(HOME, ("door",), T0 - 6 * HOUR, T0)
    d = file(filing(RequestType.EMERGENCY, scope=six_h), policy=Policy())
    assert d.request.scope == Scope(HOME, ("door",), T0 - 2 * HOUR, T0)
    assert d.request.original_scope == six_h
    assert d.request.scope.within(six_h)
    caps = [t for t in d.transitions if t.action == "narrow"]
    assert len(caps) == 1
    assert "capped" in caps[0].reason
    assert "6 h" in caps[0].reason
    assert "2 h" in caps[0].reason
    assert d.request.state is State.UNDER_REVIEW


def test_emergency_window_capped_to_tighter_policy() -> None:
    three_h = Scope(HOME, ("door",), T0 - 3 * HOUR, T0)
    d = file(filing(RequestType.EMERGENCY, scope=three_h), policy=Policy(emergency_max_window=600))
    assert d.request.scope.seconds == 600
    assert d.request.scope.end == T0


def test_emergency_overlong_window_rejected_per_policy() -> None:
    six_h = Scope(HOME, ("door",), T0 - 6 * HOUR, T0)
    d = file(
        filing(RequestType.EMERGENCY, scope=six_h),
        policy=Policy(emergency_overlong=Overlong.REJECT),
    )
    assert d.request.state is State.REJECTED
    assert d.request.reject_code is RejectCode.WINDOW_TOO_LONG
    assert d.request.scope == six_h


def test_emergency_window_within_cap_untouched() -> None:
    d = file(filing(RequestType.EMERGENCY), policy=Policy(emergency_overlong=Overlong.REJECT))
    assert d.request.state is State.UNDER_REVIEW
    assert d.request.scope == SCOPE
    assert "narrow" not in [t.action for t in d.transitions]


@pytest.mark.parametrize(
    "kw",
    [
        {"notice_delay": EMERGENCY_NOTICE_MAX_DELAY + 1},
        {"notice_delay": -1.0},
        {"notice_delay": float("nan")},
        {"emergency_max_window": EMERGENCY_MAX_WINDOW + 1},
        {"emergency_max_window": 59.0},
    ],
)
def test_policy_bounds(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidRequestError):
        Policy(**kw)  # type: ignore[arg-type]


def test_policy_accepts_its_limits() -> None:
    p = Policy(notice_delay=EMERGENCY_NOTICE_MAX_DELAY, emergency_max_window=EMERGENCY_MAX_WINDOW)
    assert p.notice_delay == 24 * HOUR


# --- withdraw ------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [OTHER_REQUESTER, OWNER, LEGAL, CUSTODIAN, SYSTEM])
def test_only_the_filer_withdraws(actor: Party) -> None:
    req = filed(RequestType.CONSENT)
    with pytest.raises(PermissionDeniedError):
        step(req, Withdraw(), actor)


def test_filer_withdraws_before_fulfilment_not_after() -> None:
    req = filed(RequestType.LEGAL_ORDER)
    req = step(req, Accept("valid"), LEGAL).request
    w = step(req, Withdraw("case dropped"), FILER)
    assert w.request.state is State.WITHDRAWN
    assert w.transitions[-1].actor == FILER
    done = step(req, Fulfil("pkg"), CUSTODIAN).request
    with pytest.raises(InvalidTransitionError):
        step(done, Withdraw(), FILER)
    with pytest.raises(InvalidTransitionError):
        step(w.request, Withdraw(), FILER)


def test_close_only_after_fulfilment() -> None:
    req = step(filed(RequestType.LEGAL_ORDER), Accept("valid"), LEGAL).request
    with pytest.raises(InvalidTransitionError):
        step(req, Close(), LEGAL)
    done = step(req, Fulfil("pkg"), CUSTODIAN).request
    with pytest.raises(PermissionDeniedError):
        step(done, Close(), FILER)
    assert step(done, Close("delivered"), LEGAL).request.state is State.CLOSED


# --- release rule --------------------------------------------------------------------------


def test_check_releasable_needs_a_ground_and_a_notice() -> None:
    req = filed(RequestType.LEGAL_ORDER)
    forged = replace(req, release=Release.FOOTAGE, notice=NoticeStatus.SENT)
    with pytest.raises(PermissionDeniedError, match="no ground"):
        check_releasable(forged)
    unnoticed = replace(req, release=Release.FOOTAGE, warrant_accepted=True)
    with pytest.raises(PermissionDeniedError, match="notice"):
        check_releasable(unnoticed)
    check_releasable(replace(unnoticed, notice=NoticeStatus.SCHEDULED))


# --- transitions ---------------------------------------------------------------------------


def _chain(history: list[Transition], final: Request) -> None:
    assert history[0].action == "file"
    assert history[0].from_state is None
    for prev, t in itertools.pairwise(history):
        assert t.from_state is prev.to_state, (prev, t)
    assert history[-1].to_state is final.state
    for t in history:
        assert isinstance(t.actor, Party)
        assert t.at >= T0
        assert t.reason.strip(), t


def _run(kind: RequestType, steps: list[tuple[Action, Party, float]], **kw: object) -> None:
    d = file(filing(kind, **kw))
    history = list(d.transitions)
    req = d.request
    for action, actor, now in steps:
        d = step(req, action, actor, now=now)
        assert all(t.at == now for t in d.transitions)
        history += d.transitions
        req = d.request
    _chain(history, req)


def test_transitions_chain_consent() -> None:
    _run(RequestType.CONSENT, [(OwnerGrant(narrower()), OWNER, T0 + 1),
                               (Fulfil("p"), CUSTODIAN, T0 + 2),
                               (Close(), LEGAL, T0 + 3)])  # fmt: skip


def test_transitions_chain_warrant_with_nondisclosure() -> None:
    _run(
        RequestType.LEGAL_ORDER,
        [
            (Narrow(narrower(), "door only"), LEGAL, T0 + 1),
            (Accept("valid"), LEGAL, T0 + 2),
            (Fulfil("p"), CUSTODIAN, T0 + 3),
            (SendScheduledNotice(), SYSTEM, T0 + 30 * DAY),
            (Close(), CUSTODIAN, T0 + 31 * DAY),
        ],
        nondisclosure_order=True,
        nondisclosure_until=T0 + 30 * DAY,
    )


def test_transitions_chain_emergency_and_preservation() -> None:
    _run(
        RequestType.EMERGENCY,
        [
            (Approve("credible"), CUSTODIAN, T0 + 1),
            (RecordCallback(PHONE, True, "confirmed"), LEGAL, T0 + 2),
            (Approve("credible"), LEGAL, T0 + 3),
            (Fulfil("p"), SYSTEM, T0 + 4),
        ],
    )
    _run(
        RequestType.PRESERVATION,
        [
            (Accept("keep it"), LEGAL, T0 + 1),
            (Renew(), FILER, T0 + 2),
            (EndPreservation(), SYSTEM, T0 + 1 + 2 * PRESERVATION_SECONDS),
        ],
    )


def test_transitions_chain_after_refusals() -> None:
    _run(RequestType.CONSENT, [(Expire(), SYSTEM, T0 + 8 * DAY)])
    _run(RequestType.LEGAL_ORDER, [(Reject(RejectCode.OVERBROAD, "every camera"), LEGAL, T0)])


# --- scheduling ----------------------------------------------------------------------------


def test_due_actions_consent_expiry() -> None:
    req = filed(RequestType.CONSENT)
    assert next_due(req) == T0 + CONSENT_ANSWER_SECONDS
    assert list(due_actions(req, T0 + CONSENT_ANSWER_SECONDS - 1)) == []
    assert list(due_actions(req, T0 + CONSENT_ANSWER_SECONDS)) == [Expire()]
    answered = step(req, OwnerDecline(), OWNER).request
    assert next_due(answered) is None
    assert list(due_actions(answered, T0 + 30 * DAY)) == []


def test_due_actions_scheduled_notice() -> None:
    until = T0 + 30 * DAY
    req = filed(RequestType.LEGAL_ORDER, nondisclosure_order=True, nondisclosure_until=until)
    assert next_due(req) is None
    req = step(req, Accept("valid"), LEGAL).request
    assert next_due(req) == until
    assert list(due_actions(req, until - 1)) == []
    assert list(due_actions(req, until)) == [SendScheduledNotice()]
    req = step(req, SendScheduledNotice(), SYSTEM, now=until).request
    assert next_due(req) is None
    assert list(due_actions(req, until + DAY)) == []


def test_due_actions_preservation_end() -> None:
    req = preserved().request
    assert next_due(req) == T0 + PRESERVATION_SECONDS
    assert list(due_actions(req, T0 + PRESERVATION_SECONDS - 1)) == []
    assert list(due_actions(req, T0 + PRESERVATION_SECONDS)) == [EndPreservation()]
    req = step(req, Renew(), FILER, now=T0 + DAY).request
    assert next_due(req) == T0 + 2 * PRESERVATION_SECONDS
    assert list(due_actions(req, T0 + PRESERVATION_SECONDS)) == []
    for action in due_actions(req, T0 + 2 * PRESERVATION_SECONDS):
        req = step(req, action, SYSTEM, now=T0 + 2 * PRESERVATION_SECONDS).request
    assert req.state is State.CLOSED
    assert next_due(req) is None


def test_due_actions_run_by_the_system_succeed() -> None:
    """What the scheduler finds due, the system can carry out."""
    reqs = [
        filed(RequestType.CONSENT),
        preserved().request,
        emergency_released(["cb", "legal", "cust"], Policy(notice_delay=600)).request,
    ]
    for req in reqs:
        due = next_due(req)
        assert due is not None
        actions = due_actions(req, due)
        assert actions
        for a in actions:
            try:
                req = step(req, a, SYSTEM, now=due).request
            except HomeWardenError as exc:  # pragma: no cover - the failure message
                pytest.fail(f"{a} due at {due} refused: {exc}")
