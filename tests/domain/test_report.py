"""Transparency report counting rules (issue 5, "Transparency report"), pure: synthetic audit
entries, spelled as the disclosure service writes them (``request:<kind>:<verb>``, reason
``"<from> -> <to>: <why>"``), read back through :func:`request_entry` and counted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag, Subject
from homewarden.domain.report import (
    KINDS,
    OUTCOMES,
    RequestEntry,
    count,
    figures,
    request_entry,
)
from homewarden.errors import InvalidRequestError

#: Range of the report: [START, END) in UTC epoch ms.
START = 1_780_000_000_000
END = START + 10_000_000
SYSTEM = Actor(ActorKind.SYSTEM, "disclosure")


@dataclass
class Log:
    """A synthetic audit log: entries appended with consecutive indexes."""

    leaves: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        kind: str,
        verb: str,
        request: str,
        reason: str,
        *,
        at: int = START,
        household: str = "home",
    ) -> None:
        entry = AuditEntry(
            index=len(self.leaves),
            time_ms=at,
            actor=SYSTEM,
            action=AuditTag(f"request:{kind}:{verb}"),
            subject=Subject(household=household, camera="porch", request=request),
            reason=reason,
        )
        self.leaves.append(json.loads(entry.leaf()))

    def other(self, tag: AuditTag, reason: str = "watched") -> None:
        entry = AuditEntry(
            index=len(self.leaves),
            time_ms=START,
            actor=Actor(ActorKind.USER, "1"),
            action=tag,
            subject=Subject(household="home", camera="porch"),
            reason=reason,
        )
        self.leaves.append(json.loads(entry.leaf()))

    def opened(
        self,
        kind: str,
        request: str,
        *,
        at: int = START,
        household: str = "home",
        to: str = "under_review",
    ) -> None:
        """file, verify, route: as a request is filed."""
        self.add(
            kind, "file", request, f"submitted: filed a {kind} request", at=at, household=household
        )
        self.add(
            kind,
            "verify",
            request,
            "submitted -> requester_verified: verified",
            at=at,
            household=household,
        )
        self.add(
            kind,
            "route",
            request,
            f"requester_verified -> {to}: routed",
            at=at,
            household=household,
        )

    def entries(self) -> list[RequestEntry]:
        out = []
        for leaf in self.leaves:
            e = request_entry(leaf)
            if e is not None:
                out.append(e)
        return out

    def count(self, start: int = START, end: int = END) -> dict[str, Any]:
        return count(self.entries(), start, end)


def outcome(report: dict[str, Any], kind: str) -> dict[str, int]:
    """The non-zero outcomes of ``kind``."""
    return {k: v for k, v in report["outcomes"][kind].items() if v}


# --- consent -------------------------------------------------------------------------------


def test_consent_outcomes_granted_declined_expired_withdrawn_pending() -> None:
    log = Log()
    for rid in ("g", "gp", "d", "x", "w", "p"):
        log.opened("consent", rid, to="awaiting_owner")
    log.add("consent", "grant", "g", "awaiting_owner -> approved: granted")
    log.add("consent", "grant", "gp", "awaiting_owner -> narrowed: granted in part")
    log.add("consent", "decline", "d", "awaiting_owner -> declined: not without a warrant")
    log.add(
        "consent",
        "expire",
        "x",
        "awaiting_owner -> expired: the owner did not answer within 7 days: declined",
    )
    log.add("consent", "withdraw", "w", "awaiting_owner -> withdrawn: solved")
    r = log.count()
    assert r["requests"]["consent"] == 6
    assert outcome(r, "consent") == {
        "granted": 2,
        "declined": 1,
        "expired": 1,
        "withdrawn": 1,
        "pending": 1,
    }
    assert sum(r["requests"].values()) == 6


# --- legal orders --------------------------------------------------------------------------


def test_search_warrant_complete_partial_none_rejected() -> None:
    log = Log()
    for rid in ("c", "p", "n", "r", "open"):
        log.opened("search_warrant", rid)
    log.add("search_warrant", "accept", "c", "under_review -> approved: a valid warrant")
    log.add("search_warrant", "narrow", "p", "under_review -> under_review: too broad")
    log.add("search_warrant", "accept", "p", "under_review -> narrowed: narrowed to 20 s")
    log.add("search_warrant", "accept", "n", "under_review -> approved: valid")
    log.add("search_warrant", "reject", "r", "under_review -> rejected: defective: unsigned")
    for rid in ("c", "p", "n"):
        log.add("search_warrant", "notify", rid, "approved -> owner_notified: accepted")
    log.add(
        "search_warrant",
        "fulfil",
        "c",
        "owner_notified -> fulfilled: package req-c.zip ready for the requester (footage)",
    )
    log.add(
        "search_warrant",
        "fulfil",
        "p",
        "owner_notified -> fulfilled: package req-p.zip ready for the requester (footage)",
    )
    log.add(
        "search_warrant",
        "fulfil",
        "n",
        "owner_notified -> fulfilled: released nothing; details sha256:00",
    )
    r = log.count()
    assert r["requests"]["search_warrant"] == 5
    assert outcome(r, "search_warrant") == {
        "complete": 1,
        "partial": 1,
        "none": 1,
        "rejected": 1,
        "pending": 1,
    }
    assert r["owners_notified"] == 3


def test_accepted_subpoena_counts_as_complete_and_court_order_rejected() -> None:
    log = Log()
    log.opened("subpoena", "s")
    log.opened("court_order", "o")
    log.opened("court_order", "ow")
    log.add(
        "subpoena",
        "accept",
        "s",
        "under_review -> approved: in order; a subpoena yields no footage",
    )
    log.add(
        "subpoena",
        "fulfil",
        "s",
        "owner_notified -> fulfilled: package req-s.zip ready for the requester (account_facts)",
    )
    log.add("court_order", "reject", "o", "under_review -> rejected: overbroad: everything")
    log.add("court_order", "withdraw", "ow", "under_review -> withdrawn: no longer needed")
    r = log.count()
    assert outcome(r, "subpoena") == {"complete": 1}
    assert outcome(r, "court_order") == {"rejected": 1, "withdrawn": 1}
    assert r["households_affected"] == 1  # the subpoena released account facts


def test_preservation_outcomes() -> None:
    log = Log()
    for rid in ("a", "r", "w", "p"):
        log.opened("preservation", rid)
    log.add("preservation", "accept", "a", "under_review -> approved: a 2703(f) letter")
    log.add("preservation", "notify", "a", "approved -> owner_notified: accepted")
    log.add(
        "preservation", "release", "a", "owner_notified -> closed: the preservation period ended"
    )
    log.add("preservation", "reject", "r", "under_review -> rejected: defective: no letter")
    log.add("preservation", "withdraw", "w", "under_review -> withdrawn: withdrawn")
    r = log.count()
    assert outcome(r, "preservation") == {
        "accepted": 1,
        "rejected": 1,
        "withdrawn": 1,
        "pending": 1,
    }
    assert r["households_affected"] == 0  # a preservation hold releases nothing


# --- emergency -----------------------------------------------------------------------------


def test_emergency_is_disclosed_only_on_the_approve_that_moves_to_approved() -> None:
    log = Log()
    for rid in ("one", "two", "refused", "policy"):
        log.opened("emergency", rid)
    # One staff approval and a call-back: notes that leave it under review - not disclosed.
    log.add("emergency", "approve", "one", "under_review -> under_review: plausible")
    log.add("emergency", "callback", "one", "under_review -> under_review: called: confirmed")
    # Two approvals, then the system's approve that moves it to approved: disclosed.
    log.add("emergency", "approve", "two", "under_review -> under_review: plausible")
    log.add("emergency", "approve", "two", "under_review -> under_review: plausible")
    log.add(
        "emergency",
        "approve",
        "two",
        "under_review -> approved: call-back confirmed and approved by two staff",
    )
    log.add("emergency", "reject", "refused", "under_review -> rejected: overbroad: no")
    log.add(
        "emergency",
        "reject",
        "policy",
        "requester_verified -> rejected: policy_refuses_emergency: the policy refuses",
    )
    r = log.count()
    assert r["requests"]["emergency"] == 4
    assert outcome(r, "emergency") == {"disclosed": 1, "refused": 2, "pending": 1}


# --- the range -----------------------------------------------------------------------------


def test_a_request_counts_when_filed_in_start_inclusive_end_exclusive() -> None:
    log = Log()
    log.opened("consent", "before", at=START - 1, to="awaiting_owner")
    log.opened("consent", "at-start", at=START, to="awaiting_owner")
    log.opened("consent", "last", at=END - 1, to="awaiting_owner")
    log.opened("consent", "at-end", at=END, to="awaiting_owner")
    # A request filed before the range but answered inside it is not counted.
    log.add("consent", "grant", "before", "awaiting_owner -> approved: granted", at=START + 5)
    # One filed inside and answered after the range is counted with its outcome.
    log.add("consent", "decline", "last", "awaiting_owner -> declined: no", at=END + 5)
    r = log.count()
    assert r["requests"]["consent"] == 2
    assert outcome(r, "consent") == {"declined": 1, "pending": 1}
    assert log.count(START - 1, START)["requests"]["consent"] == 1
    assert log.count(START - 1, END + 1)["requests"]["consent"] == 4


def test_an_empty_or_reversed_range_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        count([], START, START)
    with pytest.raises(InvalidRequestError):
        count([], END, START)


def test_steps_of_a_request_whose_file_entry_is_missing_are_not_counted() -> None:
    log = Log()
    log.add("consent", "grant", "orphan", "awaiting_owner -> approved: granted")
    r = log.count()
    assert r["requests"]["consent"] == 0
    assert r["outcomes"]["consent"]["granted"] == 0


# --- notices and households ----------------------------------------------------------------


def test_owners_notified_notices_delayed_and_still_pending() -> None:
    log = Log()
    for rid in ("now", "delayed-sent", "delayed-open", "never"):
        log.opened("search_warrant", rid)
    log.add("search_warrant", "accept", "now", "under_review -> approved: valid")
    log.add("search_warrant", "notify", "now", "approved -> owner_notified: accepted")
    for rid in ("delayed-sent", "delayed-open"):
        log.add("search_warrant", "accept", rid, "under_review -> approved: valid")
        log.add(
            "search_warrant",
            "schedule",
            rid,
            "approved -> notice_scheduled: a non-disclosure order delays the notice",
        )
    log.add(
        "search_warrant",
        "notify",
        "delayed-sent",
        "fulfilled -> fulfilled: the non-disclosure period ended",
    )
    r = log.count()
    assert (r["owners_notified"], r["notices_delayed"], r["notices_pending"]) == (2, 2, 1)


def test_households_affected_are_distinct_households_with_something_released() -> None:
    log = Log()
    released = "owner_notified -> fulfilled: package req-{}.zip ready for the requester (footage)"
    for rid, home in (("a1", "home"), ("a2", "home"), ("b1", "barn"), ("c1", "cabin")):
        log.opened("consent", rid, household=home, to="awaiting_owner")
        log.add("consent", "grant", rid, "awaiting_owner -> approved: granted", household=home)
    for rid, home in (("a1", "home"), ("a2", "home"), ("b1", "barn")):
        log.add("consent", "fulfil", rid, released.format(rid), household=home)
    # cabin: granted, but nothing was in the scope - nothing left the cabin.
    log.add(
        "consent",
        "fulfil",
        "c1",
        "owner_notified -> fulfilled: released nothing; details sha256:00",
        household="cabin",
    )
    # dell: an emergency approved but not yet fulfilled - nothing has left yet.
    log.opened("emergency", "d1", household="dell")
    log.add("emergency", "approve", "d1", "under_review -> approved: two staff", household="dell")
    r = log.count()
    assert r["households_affected"] == 2
    assert outcome(r, "consent") == {"granted": 4}
    assert outcome(r, "emergency") == {"disclosed": 1}


# --- entries -------------------------------------------------------------------------------


def test_request_entry_reads_the_leaf_and_skips_other_actions() -> None:
    log = Log()
    log.other(AuditTag.FOOTAGE_CLIP_DOWNLOAD)
    log.add("court_order", "reject", "o", "under_review -> rejected: overbroad: all of it")
    log.other(AuditTag.REQUEST_AGENCY_CHANGE, "agency added")
    assert request_entry(log.leaves[0]) is None
    assert request_entry(log.leaves[2]) is None  # request:agency:* is not a request step
    e = request_entry(log.leaves[1])
    assert e == RequestEntry(
        index=1,
        time_ms=START,
        kind="court_order",
        verb="reject",
        request="o",
        household="home",
        to_state="rejected",
        reason="under_review -> rejected: overbroad: all of it",
    )
    log.add("consent", "file", "c", "submitted: filed a consent request")
    first = request_entry(log.leaves[3])
    assert first is not None
    assert first.to_state == "submitted"


@pytest.mark.parametrize(
    "change",
    [
        lambda leaf: leaf["subject"].pop("request"),
        lambda leaf: leaf["subject"].__setitem__("request", 7),
        lambda leaf: leaf.__setitem__("subject", "home"),
        lambda leaf: leaf.pop("reason"),
        lambda leaf: leaf.__setitem__("index", "3"),
        lambda leaf: leaf.__setitem__("time_ms", None),
    ],
    ids=[
        "no-request",
        "request-not-text",
        "subject-not-object",
        "no-reason",
        "index-text",
        "no-time",
    ],
)
def test_a_malformed_request_entry_raises(change: Any) -> None:
    log = Log()
    log.add("consent", "file", "c", "submitted: filed a consent request")
    leaf = log.leaves[0]
    assert request_entry(leaf) is not None
    change(leaf)
    with pytest.raises(InvalidRequestError):
        request_entry(leaf)


# --- figures -------------------------------------------------------------------------------


def test_figures_are_flattened_in_report_order_with_their_names() -> None:
    log = Log()
    log.opened("consent", "g", to="awaiting_owner")
    log.add("consent", "grant", "g", "awaiting_owner -> approved: granted")
    log.opened("emergency", "e")
    log.add("emergency", "reject", "e", "under_review -> rejected: overbroad: no")
    rows = figures(log.count())
    names = [name for name, _ in rows]
    expected = (
        [f"requests.{k}" for k in KINDS]
        + [f"outcomes.{k}.{o}" for k in KINDS for o in OUTCOMES[k]]
        + ["owners_notified", "notices_delayed", "notices_pending", "households_affected"]
        + ["legal_owner_held_keys", "emergency_owner_held_keys"]
    )
    assert names == expected
    assert names[:6] == [
        "requests.consent",
        "requests.subpoena",
        "requests.court_order",
        "requests.search_warrant",
        "requests.preservation",
        "requests.emergency",
    ]
    assert OUTCOMES["consent"][:3] == ("granted", "declined", "expired")
    assert OUTCOMES["search_warrant"][:4] == ("complete", "partial", "none", "rejected")
    assert OUTCOMES["emergency"][:2] == ("disclosed", "refused")
    values = dict(rows)
    assert values["requests.consent"] == 1
    assert values["requests.emergency"] == 1
    assert values["outcomes.consent.granted"] == 1
    assert values["outcomes.emergency.refused"] == 1
    assert (
        sum(
            v
            for n, v in rows
            if n != "requests.consent"
            and n != "requests.emergency"
            and n not in ("outcomes.consent.granted", "outcomes.emergency.refused")
        )
        == 0
    )


def test_a_warrant_answered_under_owner_held_keys_counts_as_none_and_on_its_own() -> None:
    log = Log()
    for rid in ("w1", "w2", "w3"):
        log.opened("search_warrant", rid)
        log.add("search_warrant", "accept", rid, "under_review -> approved: accept; details hmac:0")
    log.add(
        "search_warrant", "fulfil", "w1",
        "owner_notified -> fulfilled: released nothing (cannot produce content: the owner "
        "holds the keys); details hmac:00",
    )  # fmt: skip
    log.add("search_warrant", "fulfil", "w2",
            "owner_notified -> fulfilled: released nothing; details hmac:00")  # fmt: skip
    log.add("search_warrant", "fulfil", "w3",
            "owner_notified -> fulfilled: released footage; details hmac:00")  # fmt: skip
    r = log.count()
    assert outcome(r, "search_warrant") == {"none": 2, "complete": 1}
    assert r["legal_owner_held_keys"] == 1
    assert r["households_affected"] == 1
    assert ("legal_owner_held_keys", 1) in figures(r)
    # A report made before the figure existed states none: it reads as 0.
    old = {k: v for k, v in Log().count().items() if not k.endswith("_owner_held_keys")}
    assert figures(old)[-2:] == [("legal_owner_held_keys", 0), ("emergency_owner_held_keys", 0)]


def test_an_emergency_answered_under_owner_held_keys_is_counted_on_its_own() -> None:
    """Issue 6: an approved emergency over footage sealed to keys only the household holds
    (no escrow) released nothing; the figure says so, and no household counts as affected."""
    log = Log()
    for rid in ("e1", "e2"):
        log.opened("emergency", rid)
        log.add("emergency", "approve", rid, "under_review -> approved: approve; details hmac:0")
    log.add(
        "emergency", "fulfil", "e1",
        "owner_notified -> fulfilled: released nothing (cannot produce content: the owner "
        "holds the keys); details hmac:00",
    )  # fmt: skip
    log.add("emergency", "fulfil", "e2",
            "owner_notified -> fulfilled: released footage; details hmac:00")  # fmt: skip
    r = log.count()
    assert outcome(r, "emergency") == {"disclosed": 2}
    assert (r["emergency_owner_held_keys"], r["legal_owner_held_keys"]) == (1, 0)
    assert r["households_affected"] == 1
    assert ("emergency_owner_held_keys", 1) in figures(r)
