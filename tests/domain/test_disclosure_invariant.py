"""Disclosure requests (issue 4): the release invariant over random sequences of actions.

Random requests of every type are driven through :func:`decide` by random parties under
random (and changing) household policies, with random scopes and clock advances. A step that
raises a :class:`HomeWardenError` is refused and the request stays as it was. From the
transition history recorded here (never from the request's own flags) the test checks that
footage leaves only after an owner grant, an accepted search warrant, or an emergency with a
confirmed call-back and two distinct staff approvers under a policy allowing it, and that
nothing leaves without a sent or scheduled owner notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings, target
from hypothesis import strategies as st

from homewarden.domain import disclosure
from homewarden.domain.disclosure import (
    SYSTEM,
    Accept,
    AccountFact,
    Action,
    Approve,
    Close,
    Decision,
    EndPreservation,
    Expire,
    Filing,
    Fulfil,
    Narrow,
    OrderKind,
    Overlong,
    OwnerDecline,
    OwnerGrant,
    Party,
    PartyRole,
    Policy,
    RecordCallback,
    Reject,
    RejectCode,
    Release,
    Renew,
    Request,
    RequestType,
    Scope,
    SendScheduledNotice,
    State,
    Transition,
    Withdraw,
    decide,
    due_actions,
    file_request,
    next_due,
)
from homewarden.errors import HomeWardenError

DAY = 86400.0
HOUR = 3600.0
T0 = 1_700_000_000.0
HOME = "home-1"
OTHER_HOME = "home-2"
CAMERAS = ("door", "garage", "hall", "yard")
PHONE = "+1 (555) 010-0100"

FILER = Party(PartyRole.REQUESTER, "req-1")
OTHER_REQUESTER = Party(PartyRole.REQUESTER, "req-2")
OWNER = Party(PartyRole.OWNER, "owner-1", HOME)
OTHER_OWNER = Party(PartyRole.OWNER, "owner-2", OTHER_HOME)
LEGALS = (Party(PartyRole.LEGAL_REVIEWER, "legal-1"), Party(PartyRole.LEGAL_REVIEWER, "legal-2"))
CUSTODIANS = (
    Party(PartyRole.CUSTODIAN, "cust-1"),
    Party(PartyRole.CUSTODIAN, "cust-2"),
    Party(PartyRole.CUSTODIAN, "legal-1"),  # the same person as the first legal reviewer
)
STAFF = LEGALS + CUSTODIANS
PARTIES = (FILER, OTHER_REQUESTER, OWNER, OTHER_OWNER, *STAFF, SYSTEM)

#: Who would plausibly take each step (drawn three times in four, so paths get somewhere).
LIKELY: dict[str, tuple[Party, ...]] = {
    "grant": (OWNER, OWNER, OTHER_OWNER),
    "decline": (OWNER, OWNER, OTHER_OWNER),
    "narrow": LEGALS,
    "accept": LEGALS,
    "reject": STAFF,
    "callback": STAFF,
    "approve": STAFF,
    "withdraw": (FILER,),
    "expire": (SYSTEM,),
    "send_notice": (SYSTEM,),
    "fulfil": (*STAFF, SYSTEM),
    "renew": (FILER, *LEGALS),
    "end_hold": (SYSTEM,),
    "close": STAFF,
}
STEP_KINDS = (*LIKELY, "policy", "due")
#: Steps on the request's path from where it stands, drawn three times in four.
_DECIDED_STEPS = ("fulfil", "fulfil", "send_notice", "renew", "end_hold", "due", "withdraw")


def useful(req: Request) -> tuple[str, ...]:
    match req.state:
        case State.AWAITING_OWNER:
            return ("grant", "grant", "decline", "expire", "narrow", "due")
        case State.UNDER_REVIEW if req.type is RequestType.EMERGENCY:
            return ("callback", "callback", "approve", "approve", "approve", "narrow", "policy",
                    "policy", "fulfil")  # fmt: skip
        case State.UNDER_REVIEW:
            return ("accept", "accept", "accept", "narrow", "narrow", "reject")
        case State.APPROVED | State.NARROWED | State.NOTICE_SCHEDULED | State.OWNER_NOTIFIED:
            return _DECIDED_STEPS
        case State.FULFILLED:
            return ("close", "send_notice", "due", "withdraw")
    return ("send_notice", "due", "renew", "fulfil")


def likely_actors(kind: str, req: Request) -> tuple[Party, ...]:
    """The parties who would plausibly take ``kind`` on ``req``: for an approval, staff of
    the role and person not yet approving weigh double."""
    if kind == "approve":
        left = tuple(
            p for p in STAFF if all(a.role is not p.role and a.id != p.id for a in req.approvals)
        )
        return left + STAFF
    return LIKELY[kind]


#: Clock advances: none, small, and across every deadline (7 days, NDO ends, 90 days).
ADVANCES = st.one_of(
    st.sampled_from([0.0, 1.0, 600.0, HOUR, DAY, 7 * DAY, 30 * DAY, 90 * DAY, 91 * DAY]),
    st.floats(0.0, 100 * DAY, allow_nan=False),
)
CONFIRMED = "the agency confirmed"

policies = st.builds(
    Policy,
    emergency_allowed=st.sampled_from([True, True, False]),
    notice_delay=st.one_of(st.sampled_from([0.0, 0.0, HOUR, DAY]), st.floats(0.0, DAY)),
    emergency_max_window=st.one_of(
        st.sampled_from([60.0, 1800.0, 2 * HOUR, 2 * HOUR]), st.floats(60.0, 2 * HOUR)
    ),
    emergency_overlong=st.sampled_from([Overlong.CAP] * 3 + [Overlong.REJECT]),
)


@st.composite
def filings(draw: st.DrawFn, kind: RequestType) -> Filing:
    cameras = tuple(draw(st.lists(st.sampled_from(CAMERAS), min_size=1, max_size=4, unique=True)))
    length = draw(st.sampled_from([600.0, HOUR, 2 * HOUR, 2 * HOUR + 1, 3 * HOUR, 6 * HOUR, DAY]))
    start = T0 - length - draw(st.sampled_from([0.0, HOUR, 3 * DAY]))
    scope = Scope(HOME, cameras, start, start + length)
    kw: dict[str, object] = {}
    if kind is RequestType.LEGAL_ORDER:
        order = draw(st.sampled_from(OrderKind))
        kw = {"order_kind": order, "case_number": "CR-1", "court": "Superior Court", "documents": 1}
        ndo = draw(st.sampled_from(["none", "dated", "indefinite"]))
        if ndo != "none":
            kw["nondisclosure_order"] = True
        if ndo == "dated":
            kw["nondisclosure_until"] = T0 + draw(
                st.one_of(st.sampled_from([1.0, 29 * DAY, 30 * DAY]), st.floats(1.0, 60 * DAY))
            )
        if order is not OrderKind.SEARCH_WARRANT:
            kw["facts"] = tuple(draw(st.lists(st.sampled_from(AccountFact), unique=True)))
    if kind is RequestType.EMERGENCY:
        kw["attested"] = True
    return Filing(kind, scope, "what happened", **kw)  # type: ignore[arg-type]


def draw_scope(data: st.DataObject, cur: Scope) -> Scope:
    """A scope near ``cur``: often narrower, sometimes wider or of another household."""
    cams = data.draw(
        st.one_of(
            st.lists(st.sampled_from(cur.cameras), min_size=1, unique=True),
            st.lists(st.sampled_from(CAMERAS), min_size=1, unique=True),
        )
    )
    start = cur.start + data.draw(st.sampled_from([0.0, 60.0, 600.0, -1.0, -HOUR]))
    end = cur.end - data.draw(st.sampled_from([0.0, 60.0, 300.0, -1.0, -HOUR]))
    if end <= start:
        end = start + 60.0
    home = data.draw(st.sampled_from([HOME, HOME, HOME, OTHER_HOME]))
    return Scope(home, tuple(cams), start, end)


def draw_action(data: st.DataObject, kind: str, req: Request) -> Action:
    reason = data.draw(st.sampled_from(["looked at it"] * 8 + ["", "  "]))
    maybe_scope = data.draw(st.one_of(st.none(), st.just(True)))
    match kind:
        case "grant":
            return OwnerGrant(draw_scope(data, req.scope) if maybe_scope else None, reason)
        case "decline":
            return OwnerDecline(reason)
        case "narrow":
            return Narrow(draw_scope(data, req.scope), reason)
        case "accept":
            return Accept(reason, draw_scope(data, req.scope) if maybe_scope else None)
        case "reject":
            return Reject(data.draw(st.sampled_from(RejectCode)), reason)
        case "callback":
            number = data.draw(
                st.sampled_from([PHONE, PHONE, PHONE, "+15550100100", "+1 555 010 0199", "911"])
            )
            note = data.draw(st.sampled_from(["spoke to the duty officer"] * 4 + [""]))
            return RecordCallback(number, data.draw(st.sampled_from([True] * 3 + [False])), note)
        case "approve":
            return Approve(reason)
        case "withdraw":
            return Withdraw(reason.strip())
        case "expire":
            return Expire()
        case "send_notice":
            return SendScheduledNotice()
        case "fulfil":
            return Fulfil("pkg-1")
        case "renew":
            return Renew(reason.strip())
        case "end_hold":
            return EndPreservation()
        case "close":
            return Close(reason.strip())
    raise AssertionError(kind)


def digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


@dataclass
class History:
    """Transitions recorded so far, each with whether the policy in force allowed
    emergencies at the step that made it."""

    steps: list[tuple[Transition, bool]] = field(default_factory=list)

    def add(self, d: Decision, policy: Policy) -> None:
        self.steps += [(t, policy.emergency_allowed) for t in d.transitions]

    @property
    def transitions(self) -> list[Transition]:
        return [t for t, _ in self.steps]


def footage_ground(req: Request, before: list[tuple[Transition, bool]]) -> bool:
    """True when the history before the release shows a ground for footage."""
    ts = [t for t, _ in before]
    household = req.original_scope.household
    owner_grant = any(
        t.action == "owner_grant"
        and t.actor.role is PartyRole.OWNER
        and t.actor.household == household
        for t in ts
    )
    warrant = (
        req.type is RequestType.LEGAL_ORDER
        and req.order_kind is OrderKind.SEARCH_WARRANT
        and any(t.action == "accept" and t.actor.role is PartyRole.LEGAL_REVIEWER for t in ts)
    )
    emergency = False
    if req.type is RequestType.EMERGENCY:
        callback = any(t.action == "callback" and CONFIRMED in t.reason for t in ts)
        approvers = [t.actor for t in ts if t.action == "approve"]
        two = any(
            a.role is PartyRole.LEGAL_REVIEWER and b.role is PartyRole.CUSTODIAN and a.id != b.id
            for a in approvers
            for b in approvers
        )
        allowed = any(t.action == "approve_emergency" and ok for t, ok in before)
        emergency = callback and two and allowed
    return owner_grant or warrant or emergency


def check_released(req: Request, history: History) -> None:
    """The release rule, from the recorded history up to the ``fulfil`` transition."""
    idx = [i for i, t in enumerate(history.transitions) if t.action == "fulfil"]
    assert len(idx) == 1, "fulfilled once"
    before = history.steps[: idx[0]]
    assert req.release is not Release.NONE, "a fulfilment releases something"
    if req.release is Release.FOOTAGE:
        assert footage_ground(req, before), [t for t, _ in history.steps]
    assert any(t.action in ("notify_owner", "schedule_notice") for t, _ in before), (
        "released without a sent or scheduled owner notice"
    )


def check_step(old: Request | None, d: Decision, now: float, history: History) -> None:
    """Invariants of every accepted step."""
    new = d.request
    assert d.transitions, "every step is recorded"
    verbs = getattr(disclosure, "AUDIT_VERB", None)
    prev_state = None if old is None else old.state
    for t in d.transitions:
        assert isinstance(t.actor, Party)
        assert t.at == now
        assert t.reason.strip(), t
        if t.from_state is not None or old is not None:
            assert t.from_state is prev_state, (prev_state, t)
        prev_state = t.to_state
        if verbs is not None:
            assert t.action in verbs, f"no audit verb for {t.action}"
    assert new.state is history.transitions[-1].to_state
    assert new.scope.within(new.original_scope)
    if old is not None:
        assert new.original_scope == old.original_scope
        assert new.scope.within(old.scope), "a scope is never widened"
        if old.state.terminal:
            assert new.state is old.state, f"left terminal {old.state}"
            assert all(t.action == "notify_owner" for t in d.transitions), d.transitions
        if old.state is State.FULFILLED:
            assert new.state in (State.FULFILLED, State.CLOSED)
    if new.type is RequestType.LEGAL_ORDER and new.order_kind is not OrderKind.SEARCH_WARRANT:
        assert new.release is not Release.FOOTAGE
    if new.type is RequestType.PRESERVATION:
        assert new.release is Release.NONE
    # Decided for footage at all (not only once packaged): the ground and the notice are in
    # the history already.
    if new.release is Release.FOOTAGE:
        assert footage_ground(new, history.steps), history.transitions
    if new.release is not Release.NONE:
        assert any(t.action in ("notify_owner", "schedule_notice") for t in history.transitions)
    if new.state is State.FULFILLED or any(t.action == "fulfil" for t in history.transitions):
        check_released(new, history)
    due = next_due(new)
    if due is None:
        assert not due_actions(new, now + 400 * DAY)
    else:
        assert due_actions(new, due), "next_due names a time with nothing due"
        assert not due_actions(new, due - 1.0), "next_due is not the earliest"


@pytest.mark.parametrize("kind", list(RequestType))
@settings(max_examples=100, deadline=None)
@given(policy=policies, data=st.data())
def test_footage_leaves_only_on_a_ground_and_with_a_notice(
    kind: RequestType, policy: Policy, data: st.DataObject
) -> None:
    filing = data.draw(filings(kind), label="filing")
    now = T0
    history = History()
    d = file_request(
        "r1", filing, FILER, requester_verified=True, agency_id=1, agency_phone=PHONE,
        policy=policy, now=now,
    )  # fmt: skip
    history.add(d, policy)
    check_step(None, d, now, history)
    req = d.request
    for _ in range(data.draw(st.integers(5, 25), label="steps")):
        now += data.draw(ADVANCES, label="advance")
        on_path = st.sampled_from(useful(req))
        kind = data.draw(
            st.one_of(on_path, on_path, on_path, st.sampled_from(STEP_KINDS)), label="kind"
        )
        if kind == "policy":
            policy = data.draw(policies, label="policy")
            continue
        if kind == "due":
            for action in due_actions(req, now):
                try:
                    d = decide(req, action, SYSTEM, policy, now)
                except HomeWardenError as exc:
                    raise AssertionError(f"due {action} refused: {exc}") from exc
                history.add(d, policy)
                check_step(req, d, now, history)
                req = d.request
            continue
        likely = st.sampled_from(likely_actors(kind, req))
        actor = data.draw(
            st.one_of(likely, likely, likely, st.sampled_from(PARTIES)), label="actor"
        )
        action = draw_action(data, kind, req)
        try:
            d = decide(req, action, actor, policy, now)
        except HomeWardenError:
            continue  # refused: the request stays as it was
        if isinstance(action, RecordCallback):
            assert digits(action.number) == digits(PHONE), "called a number not on record"
        history.add(d, policy)
        check_step(req, d, now, history)
        req = d.request
    # Steer generation towards long paths ending in a release, not only refusals.
    actions = {t.action for t in history.transitions}
    target(len(actions) + 5.0 * ("fulfil" in actions), label="progress")
