"""A search warrant over a scope mixing footage in the clear and sealed footage (issue 6): the
shed was recorded in the clear before sealing was turned on, then sealed. The part in the
clear is released, the sealed part answered "the provider cannot produce this content; the
owner holds the keys": the package verifies and holds only the clear part's clips, its
manifest names the withheld range, the fulfilment says so, the owner is told what was released
and what could not be, and the transparency report counts the warrant as ``partial`` and
re-verifies from the public export. On SQLite and PostgreSQL over real services and real
footage (bikes.mp4), with the ``sealed`` world of tests/services/test_disclosure_sealed.py.
"""

from __future__ import annotations

import copy
import io
import json
import math
import zipfile

import av
import pytest

from homewarden.crypto.signing import SignedTreeHead
from homewarden.domain import disclosure as d
from homewarden.domain import package as pkg
from homewarden.domain.report import count, request_entry
from homewarden.errors import InvalidTransitionError, VerificationError
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.services.report import TransparencyReport, verify_report
from tests.package_footage import record_bikes
from tests.segment_files import require_bikes
from tests.services import test_disclosure_sealed
from tests.services.disclosure_helpers import DAY, OTHER, SHED, START, WARRANT
from tests.services.test_disclosure_sealed import (
    CUSTODIANS,
    SEALED_AT,
    Sealed,
    _transitions,
    _warrant,
)

#: The world with otto's household keys and the shed's sealed footage (shared fixture).
sealed = test_disclosure_sealed.sealed


def _record_clear_before(s: Sealed) -> tuple[float, float]:
    """Record bikes.mp4 in the clear on the shed, ending where the sealed recording starts
    (as footage recorded before ``storage.sealed`` was turned on); returns its span."""
    with av.open(str(require_bikes())) as c:
        video = c.streams.video[0]
        length = float((video.duration or 0) * (video.time_base or 0))
    assert length > 5
    start = SEALED_AT - length
    for seg in record_bikes(s.w.tmp, SHED, start):
        s.w.index.add_segment(seg)
    clear = [seg for seg in s.w.index.segments(SHED, start, SEALED_AT) if not seg.sealed]
    assert clear
    assert all(seg.end <= SEALED_AT + 1e-6 for seg in clear)
    return start, SEALED_AT


def _mixed_warrant(s: Sealed) -> tuple[str, float]:
    """A search warrant over the clear part and the sealed part of the shed, accepted;
    returns its id and the clear part's start."""
    clear_start, _ = _record_clear_before(s)
    w = s.w
    r = w.svc.file(
        w.p(w.requester("rita").user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.SEARCH_WARRANT,
        case_number="CR-2026-67",
        court="Town district court",
        start=clear_start,
        end=SEALED_AT + 8,
        description="the shed footage of the night",
        camera=SHED,
        documents=[WARRANT],
    )
    return w.svc.act(w.p(w.legal), r.id, d.Accept("a valid warrant")).id, clear_start


def test_a_warrant_over_clear_and_sealed_footage_releases_the_clear_part_only(
    sealed: Sealed,
) -> None:
    s, w = sealed, sealed.w
    rid, clear_start = _mixed_warrant(s)
    # The owner is told at acceptance what will be released and what cannot be.
    (notice,) = w.owner_notices(rid, OTHER)
    assert "the footage recorded in the clear will be released" in notice.body
    assert f"cannot be released, as {d.OWNER_HOLDS_KEYS}" in notice.body
    sealed_range = d.SealedRange(SHED, SEALED_AT, SEALED_AT + 8)
    assert sealed_range.text() in notice.body
    # No keys brought by anyone open a warrant's sealed part.
    with pytest.raises(InvalidTransitionError, match="the owner holds the keys"):
        w.svc.fulfil_with_keys(rid, s.keys(), CUSTODIANS)

    assert w.svc.run_due() == 1
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package, stored.next_due) == ("fulfilled", f"{rid}.zip", None)
    action, reason = _transitions(s, rid)[-1]
    assert action == "fulfil"
    assert reason == (
        f"package {rid}.zip ready for the requester (footage) in part: "
        f"{d.WITHHELD_IN_PART} ({sealed_range.text()})"
    )
    # Told once: the notice at acceptance already said which part cannot be released.
    assert len(w.owner_notices(rid, OTHER)) == 1
    assert stored.data["sealed_withheld"] == [[SHED, SEALED_AT, SEALED_AT + 8]]
    view = w.svc.view(w.p(w.other_owner), stored)
    assert view["sealed_withheld"] == [[SHED, SEALED_AT, SEALED_AT + 8]]
    assert view["package_ready"] is True

    # The package verifies as a recipient would, and holds the clear part only.
    zip_path = w.svc.packages_dir / f"{rid}.zip"
    report = verify_package_path(
        zip_path, load_public_keys(w.audit.keys_dir / "log_public_keys.json")
    )
    assert report.trusted
    manifest = report.manifest
    assert manifest.withheld_sealed == (
        pkg.WithheldRange(SHED, math.floor(SEALED_AT * 1000), math.ceil((SEALED_AT + 8) * 1000)),
    )
    sealed_ms = math.floor(SEALED_AT * 1000)
    assert manifest.released
    assert all(f.end_ms <= sealed_ms + 1 for f in manifest.released)
    assert min(f.start_ms for f in manifest.released) <= math.ceil(clear_start * 1000)
    with zipfile.ZipFile(zip_path) as z:
        raw = json.loads(z.read(f"{rid}/{pkg.MANIFEST}"))
        (withheld,) = raw["withheld_sealed"]
        assert withheld["camera"] == SHED
        assert withheld["why"] == pkg.WITHHELD_SEALED_WHY
        assert "the owner holds the keys" in z.read(f"{rid}/{pkg.README}").decode()
        clips = [n for n in z.namelist() if n.endswith(".mp4")]
        assert clips
        seconds = 0.0
        for name in clips:
            with av.open(io.BytesIO(z.read(name))) as c:
                frames = sum(1 for _ in c.decode(video=0))
                assert frames > 10
                seconds += frames / 25.0
    # bikes.mp4 is 10 s at 25 fps: the clear part only, none of the sealed 8 s.
    assert seconds <= SEALED_AT - clear_start + 0.5
    # The export's entries and the public fulfilment entry say what happened.
    assert w.entries_of(rid, "footage:export")
    (fulfil,) = [e for e in w.entries_of(rid) if str(e.action) == "request:search_warrant:fulfil"]
    assert "released footage in part (cannot produce sealed content: the owner holds the keys)" in (
        fulfil.reason
    )
    w.assert_audited(rid)

    # Counted as a partial answer to a search warrant, recounted from the public export.
    reports = TransparencyReport(w.audit)
    built = reports.build(START - 1, START + DAY)
    figures = built["figures"]
    assert figures["outcomes"]["search_warrant"]["partial"] == 1
    assert figures["outcomes"]["search_warrant"]["none"] == 0
    assert figures["outcomes"]["search_warrant"]["complete"] == 0
    assert figures["legal_owner_held_keys"] == 1
    assert figures["households_affected"] == 1
    export = w.tmp / "log.jsonl"
    with export.open("w", encoding="utf-8") as f:
        reports.export_public(f, SignedTreeHead.from_json(built["tree_head"]))
    assert verify_report(built, export)["ok"] is True
    edited = copy.deepcopy(built)
    edited["figures"]["outcomes"]["search_warrant"]["partial"] = 0
    edited["figures"]["outcomes"]["search_warrant"]["complete"] = 1
    with pytest.raises(VerificationError, match="search_warrant"):
        verify_report(edited, export)


def test_a_warrant_over_sealed_footage_only_is_still_cannot_produce(sealed: Sealed) -> None:
    """The split applies only where something is in the clear: all sealed stays "none"."""
    s, w = sealed, sealed.w
    rid = _warrant(s, w.requester("rita"))
    assert w.svc.run_due() == 1
    stored = w.svc.store.request(rid)
    assert (stored.state, stored.package) == ("fulfilled", "none")
    assert _transitions(s, rid)[-1] == ("fulfil", f"package none: {d.OWNER_HOLDS_KEYS}")
    figures = TransparencyReport(w.audit).build(START - 1, START + DAY)["figures"]
    assert figures["outcomes"]["search_warrant"]["none"] == 1
    assert figures["outcomes"]["search_warrant"]["partial"] == 0


def _leaf(index: int, verb: str, reason: str, household: str = "h1") -> dict[str, object]:
    return {
        "index": index,
        "time_ms": 1_000 + index,
        "action": f"request:search_warrant:{verb}",
        "subject": {"request": "r1", "household": household},
        "reason": reason,
    }


def _count(reasons: list[tuple[str, str]]) -> dict[str, object]:
    entries = [request_entry(_leaf(i, verb, reason)) for i, (verb, reason) in enumerate(reasons)]
    return count([e for e in entries if e is not None], 0, 10_000)


def test_report_counts_a_warrant_released_in_part_as_partial_and_old_entries_as_before() -> None:
    """Pure: the part-release fulfilment counts ``partial`` and in ``legal_owner_held_keys``;
    the entries written before it existed count as they always did."""
    steps = [
        ("file", "received: file; details hmac:00"),
        ("accept", "received -> approved: accept; details hmac:00"),
        ("notify", "approved -> owner_notified: notify owner; details hmac:00"),
    ]
    part = _count(
        [*steps, ("fulfil", "owner_notified -> fulfilled: released footage in part (cannot "
                  "produce sealed content: the owner holds the keys); details hmac:00")]
    )  # fmt: skip
    assert part["outcomes"]["search_warrant"]["partial"] == 1  # type: ignore[index]
    assert part["legal_owner_held_keys"] == 1
    assert part["households_affected"] == 1
    whole = _count(
        [*steps, ("fulfil", "owner_notified -> fulfilled: released footage; details hmac:00")]
    )
    assert whole["outcomes"]["search_warrant"]["complete"] == 1  # type: ignore[index]
    assert whole["legal_owner_held_keys"] == 0
    none = _count(
        [*steps, ("fulfil", "owner_notified -> fulfilled: released nothing (cannot produce "
                  "content: the owner holds the keys); details hmac:00")]
    )  # fmt: skip
    assert none["outcomes"]["search_warrant"]["none"] == 1  # type: ignore[index]
    assert none["legal_owner_held_keys"] == 1
    assert none["households_affected"] == 0


def test_a_fulfilment_withholding_a_sealed_part_must_release_some_footage() -> None:
    """Pure: ``Fulfil(withheld=...)`` is for a package of footage; with no package it is the
    owner-holds-keys answer instead, and the reason names the withheld ranges."""
    scope = d.Scope(OTHER, (SHED,), START, START + 60)
    requester = d.Party(d.PartyRole.REQUESTER, "7", None)
    req = d.Request(
        id="r1",
        type=d.RequestType.LEGAL_ORDER,
        requester=requester,
        agency_id=1,
        agency_phone="+1 555 0100 200",
        filed_at=START,
        original_scope=scope,
        scope=scope,
        state=d.State.OWNER_NOTIFIED,
        order_kind=d.OrderKind.SEARCH_WARRANT,
        case_number="CR-1",
        court="Town",
        release=d.Release.FOOTAGE,
        warrant_accepted=True,
        notice=d.NoticeStatus.SENT,
        notice_sent_at=START,
    )
    held = (d.SealedRange(SHED, START + 30, START + 60),)
    policy = d.Policy()
    with pytest.raises(InvalidTransitionError, match="a sealed part withheld"):
        d.decide(req, d.Fulfil("none", withheld=held), d.SYSTEM, policy, START + 1)
    out = d.decide(req, d.Fulfil("r1.zip", withheld=held), d.SYSTEM, policy, START + 1)
    assert out.request.state is d.State.FULFILLED
    assert out.request.sealed_withheld == held
    (step,) = out.transitions
    assert held[0].text() in step.reason
    assert d.WITHHELD_IN_PART in step.reason
    # The owner had been told all of it would be released: told again, truly.
    (notice,) = [e for e in out.effects if isinstance(e, d.SendOwnerNotice)]
    assert "the footage recorded in the clear was released" in notice.text
    assert f"{held[0].text()}) was not released, as {d.OWNER_HOLDS_KEYS}" in notice.text
