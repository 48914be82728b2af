"""Regression: an emergency over sealed footage waiting for two custodians' escrow shares
(``data["awaiting_keys"] == "custodians"``) waited forever once the owner turned emergency
access off, and entering shares failed. Now the next scheduler pass (or
:meth:`DisclosureService.answer_escrow_off` called when the owner turns it off) answers it
"the provider cannot produce this content; the owner holds the keys" - fulfilled with nothing,
counted in ``emergency_owner_held_keys`` - and tells the owner, as an emergency without escrow
is (issue 6; DESIGN.md flows 5 and 8). On SQLite and PostgreSQL over real services and real
sealed footage, with the ``sealed`` world of tests/services/test_disclosure_sealed.py.
"""

from __future__ import annotations

import pytest

from homewarden.crypto.signing import SignedTreeHead
from homewarden.domain import disclosure as d
from homewarden.domain.audit import Actor
from homewarden.errors import InvalidTransitionError, PermissionDeniedError
from homewarden.services.report import TransparencyReport, verify_report
from tests.services import test_disclosure_sealed
from tests.services.disclosure_helpers import DAY, HOME, OPERATOR, OTHER, START
from tests.services.test_disclosure_sealed import (
    CUSTODIANS,
    Sealed,
    _emergency,
    _transitions,
)

#: The world with otto's household keys and the shed's sealed footage (shared fixture).
sealed = test_disclosure_sealed.sealed


def _waiting_for_custodians(s: Sealed) -> tuple[str, list[str]]:
    """Escrow on, an approved emergency over the shed's sealed footage left waiting for the
    custodians' shares by the scheduler; returns its id and the escrow shares."""
    w = s.w
    shares = s.ring.init_escrow(OPERATOR)
    s.ring.enable_escrow(s.session, Actor.of_principal(w.p(w.other_owner)))
    rid = _emergency(s, w.requester("rita"))
    w.svc.run_due()
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package) == ("owner_notified", None)
    assert stored.data["awaiting_keys"] == "custodians"
    # Escrow still on: the pass leaves it waiting.
    assert w.svc.answer_escrow_off() == 0
    assert w.svc.store.request(rid).data["awaiting_keys"] == "custodians"
    return rid, shares


def _turn_escrow_off(s: Sealed) -> None:
    owner = s.w.p(s.w.other_owner)
    s.ring.disable_escrow(owner, Actor.of_principal(owner))
    assert not s.ring.status(OTHER).escrow_enabled


def _assert_answered_owner_holds_keys(s: Sealed, rid: str) -> None:
    w = s.w
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package, stored.next_due) == ("fulfilled", "none", None)
    assert "awaiting_keys" not in stored.data
    assert stored.data["owner_holds_keys"] is True
    assert _transitions(s, rid)[-1] == ("fulfil", f"package none: {d.OWNER_HOLDS_KEYS}")
    assert w.entries_of(rid, "footage:") == []
    (fulfil,) = [e for e in w.entries_of(rid) if str(e.action) == "request:emergency:fulfil"]
    assert "released nothing (cannot produce content: the owner holds the keys)" in fulfil.reason
    # The owner was told "will be released" at approval (escrow was on), then the truth.
    first, second = sorted(w.owner_notices(rid, OTHER), key=lambda n: n.id)
    assert "footage will be released" in first.body
    assert f"was fulfilled: nothing was released, as {d.OWNER_HOLDS_KEYS}" in second.body
    w.assert_audited(rid)


def test_escrow_turned_off_while_an_emergency_waits_for_custodians_is_answered_at_the_next_pass(
    sealed: Sealed,
) -> None:
    s, w = sealed, sealed.w
    rid, shares = _waiting_for_custodians(s)
    _turn_escrow_off(s)
    assert w.svc.run_due() == 1
    _assert_answered_owner_holds_keys(s, rid)
    # Shares are of no use any more, and nothing is fulfilled twice.
    with pytest.raises(PermissionDeniedError, match="has not opted into emergency access"):
        s.ring.open_for_emergency(OTHER, shares[:2], CUSTODIANS, request=rid)
    with pytest.raises(InvalidTransitionError, match="not waiting for fulfilment"):
        w.svc.fulfil_with_keys(rid, s.keys(), CUSTODIANS)
    assert w.svc.run_due() == 0
    assert len(w.owner_notices(rid, OTHER)) == 2

    # Counted as an emergency answered under owner-held keys, recounted from the export.
    reports = TransparencyReport(w.audit)
    report = reports.build(START - 1, START + DAY)
    figures = report["figures"]
    assert figures["outcomes"]["emergency"]["disclosed"] == 1
    assert figures["emergency_owner_held_keys"] == 1
    assert figures["households_affected"] == 0
    export = w.tmp / "log.jsonl"
    with export.open("w", encoding="utf-8") as f:
        reports.export_public(f, SignedTreeHead.from_json(report["tree_head"]))
    assert verify_report(report, export)["ok"] is True


def test_answer_escrow_off_for_the_household_answers_at_once_and_spares_other_households(
    sealed: Sealed,
) -> None:
    """Called when the owner turns escrow off: that household's waiting emergency is answered
    at once; a call for another household leaves it alone."""
    s, w = sealed, sealed.w
    rid, _ = _waiting_for_custodians(s)
    _turn_escrow_off(s)
    assert w.svc.answer_escrow_off(HOME) == 0
    assert w.svc.store.request(rid).data["awaiting_keys"] == "custodians"
    assert w.svc.answer_escrow_off(OTHER) == 1
    _assert_answered_owner_holds_keys(s, rid)
