"""Counting the transparency report from audit log entries. Pure.

The report (issue "transparency report"; DESIGN.md flow 7) counts the disclosure requests
filed in a time range, by what the audit log says happened to them up to a signed tree head.
Anyone holding a public export of the log recounts it with the same function, so the counting
rules live here, in one place, and read only what a public export publishes: the request
entries' leaves (``request:<kind>:<verb>``).

A request entry is counted from its canonical JSON (see :mod:`homewarden.domain.audit`):

- ``action`` ``request:<kind>:<verb>``, where ``kind`` is one of :data:`KINDS` (a legal
  order is counted by its kind: subpoena, court order, search warrant);
- ``subject.request`` the request id, ``subject.household`` the household it concerns;
- ``reason`` of the fixed form ``"<from> -> <to>: <what>; details sha256:<hex>"`` (or
  ``"<to>: ..."`` for the first step) written by the disclosure service: the states the step
  moved between, and what it did (``released footage``, ``released account_facts``,
  ``released nothing``, ``rejected: <code>``, ...), never names or free text.

Counting rules (a request is counted when its ``file`` entry's time is in the range; its
outcome is what the entries up to the head say):

- a request withdrawn before anything was released counts as ``withdrawn``, whatever was
  decided before;
- consent: ``granted`` (a ``grant``), ``declined`` (a ``decline``), ``expired`` (an
  ``expire``: unanswered for 7 days, which declines it), ``withdrawn``, else ``pending``;
- legal orders (subpoena, court order, search warrant): ``rejected`` (a ``reject``);
  accepted and fulfilled with nothing to release (``released nothing``): ``none``; accepted
  narrowed, or fulfilled with only part of the footage (``released footage in part``, the
  rest sealed to keys only the household holds): ``partial``; accepted whole: ``complete``;
  ``withdrawn``; else ``pending``;
- preservation: ``accepted``, ``rejected``, ``withdrawn``, ``pending``;
- emergency: ``disclosed`` (released after the call-back and two approvals), ``refused``
  (a ``reject``, including a household policy refusing emergencies), ``withdrawn``,
  ``pending``;
- owners notified: requests with a ``notify`` entry; notices delayed: requests with a
  ``schedule`` entry (a non-disclosure order, or an emergency notice delay); still pending:
  delayed and not yet notified;
- households affected: distinct households of requests whose fulfilment released something
  (footage or account facts);
- legal orders answered under owner-held keys (``legal_owner_held_keys``): search warrants
  fulfilled with ``released nothing (cannot produce content: the owner holds the keys)``,
  the footage being sealed to keys only the household holds (issue 6), and those fulfilled
  with ``released footage in part (cannot produce sealed content: the owner holds the
  keys)``, footage recorded partly before sealing was turned on. They count as ``none``
  (or ``partial``, in part) among their kind's outcomes too; this figure says why. Logs
  written before the part-release existed hold no such entry and count as they did;
- emergencies answered under owner-held keys (``emergency_owner_held_keys``): emergencies
  approved (so counted ``disclosed``, the approval being what that outcome records) whose
  fulfilment released nothing because the footage is sealed to keys only the household
  holds and the owner had not opted into escrow (issue 6; DESIGN.md flow 5: impossible by
  construction). Nothing of them left the home; they are not among households affected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from homewarden.errors import InvalidRequestError

#: Request kinds the report counts, in report order.
KINDS = ("consent", "subpoena", "court_order", "search_warrant", "preservation", "emergency")
#: Legal-order kinds.
LEGAL_KINDS = ("subpoena", "court_order", "search_warrant")
#: What a fulfilment entry says when the footage is sealed to keys only the household holds.
OWNER_HELD_KEYS_WHAT = "the owner holds the keys"
#: Report schema version.
REPORT_VERSION = 1

_REASON = re.compile(r"^(?:([a-z_]+) -> )?([a-z_]+): ")


@dataclass(frozen=True, slots=True)
class RequestEntry:
    """The parts of one request audit entry the report reads."""

    index: int
    time_ms: int
    kind: str
    verb: str
    request: str
    household: str | None
    to_state: str | None
    reason: str


def request_entry(leaf: Mapping[str, Any]) -> RequestEntry | None:
    """The request entry in a parsed leaf (an audit entry's JSON object), or None when the
    leaf is not a counted request step (another action, or ``request:agency:*`` and the
    like).

    Raises:
        InvalidRequestError: a request entry missing its request id or fields.
    """
    action = leaf.get("action")
    if not isinstance(action, str) or not action.startswith("request:"):
        return None
    parts = action.split(":")
    if len(parts) != 3 or parts[1] not in KINDS:
        return None
    subject = leaf.get("subject")
    if not isinstance(subject, Mapping) or not isinstance(subject.get("request"), str):
        raise InvalidRequestError(f"request entry {leaf.get('index')} names no request")
    reason = leaf.get("reason")
    index, time_ms = leaf.get("index"), leaf.get("time_ms")
    if not isinstance(reason, str) or not isinstance(index, int) or not isinstance(time_ms, int):
        raise InvalidRequestError(f"request entry {index} is malformed")
    m = _REASON.match(reason)
    household = subject.get("household")
    return RequestEntry(
        index=index,
        time_ms=time_ms,
        kind=parts[1],
        verb=parts[2],
        request=str(subject["request"]),
        household=household if isinstance(household, str) else None,
        to_state=m.group(2) if m else None,
        reason=reason,
    )


@dataclass(slots=True)
class _Story:
    kind: str
    filed_ms: int | None = None
    household: str | None = None
    verbs: list[str] = field(default_factory=list)
    accepted_state: str | None = None
    disclosed: bool = False
    released_nothing: bool = False
    owner_held_keys: bool = False
    released_in_part: bool = False
    emergency_released: bool = False


def _outcome(story: _Story) -> str:
    v = set(story.verbs)
    if "withdraw" in v and "fulfil" not in v:
        return "withdrawn"
    if story.kind == "consent":
        for verb, name in (("grant", "granted"), ("decline", "declined"), ("expire", "expired"),
                           ("withdraw", "withdrawn")):  # fmt: skip
            if verb in v:
                return name
        return "pending"
    if story.kind in LEGAL_KINDS:
        if "reject" in v:
            return "rejected"
        if story.accepted_state is not None:
            if story.released_nothing:
                return "none"
            if story.released_in_part or story.accepted_state == "narrowed":
                return "partial"
            return "complete"
        return "withdrawn" if "withdraw" in v else "pending"
    if story.kind == "preservation":
        if "reject" in v:
            return "rejected"
        if "accept" in v:
            return "accepted"
        return "withdrawn" if "withdraw" in v else "pending"
    # emergency
    if story.emergency_released:
        return "disclosed"
    if "reject" in v:
        return "refused"
    return "withdrawn" if "withdraw" in v else "pending"


#: Outcome names per kind, in report order.
OUTCOMES: dict[str, tuple[str, ...]] = {
    "consent": ("granted", "declined", "expired", "withdrawn", "pending"),
    "subpoena": ("complete", "partial", "none", "rejected", "withdrawn", "pending"),
    "court_order": ("complete", "partial", "none", "rejected", "withdrawn", "pending"),
    "search_warrant": ("complete", "partial", "none", "rejected", "withdrawn", "pending"),
    "preservation": ("accepted", "rejected", "withdrawn", "pending"),
    "emergency": ("disclosed", "refused", "withdrawn", "pending"),
}


def count(entries: Iterable[RequestEntry], start_ms: int, end_ms: int) -> dict[str, Any]:
    """The report's figures over requests filed in ``[start_ms, end_ms)`` (UTC epoch ms),
    from request entries in log order (see the module docstring for the rules).

    Returns ``{"requests": {kind: n}, "outcomes": {kind: {outcome: n}},
    "owners_notified": n, "notices_delayed": n, "notices_pending": n,
    "households_affected": n, "legal_owner_held_keys": n, "emergency_owner_held_keys": n}``.

    Raises:
        InvalidRequestError: ``end_ms <= start_ms``.
    """
    if end_ms <= start_ms:
        raise InvalidRequestError("the report's range must end after it starts")
    stories: dict[str, _Story] = {}
    for e in entries:
        story = stories.setdefault(e.request, _Story(e.kind))
        if e.verb == "file" and story.filed_ms is None:
            story.filed_ms = e.time_ms
            story.household = e.household
        story.verbs.append(e.verb)
        if e.verb == "accept":
            story.accepted_state = e.to_state
        if e.verb == "grant":
            story.accepted_state = e.to_state
        if e.verb == "approve" and e.to_state == "approved" and e.kind == "emergency":
            story.emergency_released = True
        if e.verb == "fulfil":
            if ": released nothing" in e.reason:
                story.released_nothing = True
                story.owner_held_keys = OWNER_HELD_KEYS_WHAT in e.reason.split("; details ")[0]
            else:
                story.disclosed = True
                what = e.reason.split("; details ")[0]
                if " in part " in what and OWNER_HELD_KEYS_WHAT in what:
                    story.released_in_part = story.owner_held_keys = True
    counted = [
        s for s in stories.values() if s.filed_ms is not None and start_ms <= s.filed_ms < end_ms
    ]
    requests = {k: 0 for k in KINDS}
    outcomes = {k: dict.fromkeys(OUTCOMES[k], 0) for k in KINDS}
    notified = delayed = pending = owner_held_keys = emergency_held = 0
    households: set[str] = set()
    for s in counted:
        requests[s.kind] += 1
        outcomes[s.kind][_outcome(s)] += 1
        verbs = set(s.verbs)
        notified += "notify" in verbs
        delayed += "schedule" in verbs
        pending += "schedule" in verbs and "notify" not in verbs
        owner_held_keys += s.kind in LEGAL_KINDS and s.owner_held_keys
        emergency_held += s.kind == "emergency" and s.owner_held_keys
        if s.disclosed and s.household is not None:
            households.add(s.household)
    return {
        "requests": requests,
        "outcomes": outcomes,
        "owners_notified": notified,
        "notices_delayed": delayed,
        "notices_pending": pending,
        "households_affected": len(households),
        "legal_owner_held_keys": owner_held_keys,
        "emergency_owner_held_keys": emergency_held,
    }


def figures(report_counts: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The counts flattened to ``(dotted name, value)`` rows, in report order (the CSV and
    the comparison of ``report verify``)."""
    rows: list[tuple[str, int]] = []
    for kind in KINDS:
        rows.append((f"requests.{kind}", int(report_counts["requests"][kind])))
    for kind in KINDS:
        for outcome in OUTCOMES[kind]:
            rows.append(
                (f"outcomes.{kind}.{outcome}", int(report_counts["outcomes"][kind][outcome]))
            )
    for name in ("owners_notified", "notices_delayed", "notices_pending", "households_affected"):
        rows.append((name, int(report_counts[name])))
    # Reports made before this figure existed state none (0): no such entry was written then.
    rows.append(("legal_owner_held_keys", int(report_counts.get("legal_owner_held_keys", 0))))
    rows.append(
        ("emergency_owner_held_keys", int(report_counts.get("emergency_owner_held_keys", 0)))
    )
    return rows
