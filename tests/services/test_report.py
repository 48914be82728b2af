"""The transparency report over a scripted set of disclosure requests (issue 5, "Acceptance":
"A report over a scripted set of requests has the right counts, and `report verify` fails
after one leaf is changed"), on SQLite and PostgreSQL.

Every request is driven through :class:`DisclosureService` (real footage, accounts, mail
through a real SMTP server on loopback, a settable clock; see
tests/services/disclosure_helpers.py), the report is counted by
:class:`TransparencyReport` and checked against the public log export by
:func:`verify_report`, then the export and the report are tampered with one change at a time.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from homewarden.crypto.merkle import leaf_hash
from homewarden.crypto.signing import (
    SignedTreeHead,
    TreeHead,
    generate_log_key,
    key_id,
    log_public_key,
    sign_tree_head,
)
from homewarden.domain import disclosure as d
from homewarden.domain.report import KINDS, figures
from homewarden.errors import (
    InvalidRequestError,
    InvalidSignatureError,
    LogTamperedError,
    VerificationError,
)
from homewarden.services.disclosure import withheld_requests
from homewarden.services.report import (
    TransparencyReport,
    current_half_year,
    half_year,
    to_csv,
    to_html,
    verify_report,
)
from tests.fixtures_mail import SmtpTestServer
from tests.package_footage import T0
from tests.services.disclosure_helpers import (
    AGENCY_PHONE,
    DAY,
    NOTICE_EMAIL,
    PORCH,
    SHED,
    START,
    WARRANT,
    World,
)

#: The report's range: [R0, R1), UTC epoch seconds (whole seconds: filing times are exact).
R0 = START + 3600.0
R1 = R0 + 8 * DAY


@pytest.fixture
def world(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Iterator[World]:
    w = World(tmp_path, database_url, smtp_server)
    try:
        yield w
    finally:
        w.close()


def _order(w: World, who: int, kind: d.OrderKind, camera: str = PORCH, **extra: Any) -> str:
    return w.svc.file(
        w.p(who),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=kind,
        case_number="CR-2026-1",
        court="Town district court",
        start=T0 - 5,
        end=T0 + 15,
        description=f"a {kind} for the porch footage",
        camera=camera,
        documents=[WARRANT],
        **extra,
    ).id


@dataclass
class Scripted:
    """The scripted requests: ids by role in the script, and the requester's account id."""

    ids: dict[str, str]
    requester: int


def script(w: World) -> Scripted:
    """File and drive the scripted requests. Before the range: a subpoena about the other
    household, fulfilled. In ``[R0, R1)``, all filed at R0 exactly: consent granted,
    declined, expired after 7 days, withdrawn; a search warrant with a 30-day
    non-disclosure order (notice still pending at report time); a search warrant about the
    shed, whose scope holds no footage (fulfilled with nothing); a subpoena accepted; a court
    order rejected; an emergency disclosed; an emergency refused by the household's policy; a
    preservation accepted. At R1 exactly (outside): a consent and a court order."""
    legal, custodian, owner = w.p(w.legal), w.p(w.custodian), w.p(w.owner)
    w.svc.set_policy(owner, d.Policy(), notice_email=NOTICE_EMAIL, address="1 Elm Street")
    rita = w.requester("rita")
    rq = rita.user_id
    ids: dict[str, str] = {}

    # Before the range: released, about the other household.
    ids["early"] = _order(w, rq, d.OrderKind.SUBPOENA, SHED, facts=[d.AccountFact.CAMERA_NAMES])
    w.svc.act(legal, ids["early"], d.Accept("in order"))
    w.svc.run_due()
    assert w.svc.store.request(ids["early"]).state == "fulfilled"

    w.clock.now = R0
    ids["granted"] = w.consent(rita).id
    w.svc.act(owner, ids["granted"], d.OwnerGrant(None, "for the neighbours"))
    ids["declined"] = w.consent(rita).id
    w.svc.act(owner, ids["declined"], d.OwnerDecline("not without a warrant"))
    ids["expired"] = w.consent(rita).id
    ids["withdrawn"] = w.consent(rita).id
    w.svc.act(w.p(rq), ids["withdrawn"], d.Withdraw("solved"))
    ids["warrant"] = _order(
        w,
        rq,
        d.OrderKind.SEARCH_WARRANT,
        nondisclosure_order=True,
        nondisclosure_until=R0 + 30 * DAY,
    )
    w.svc.act(legal, ids["warrant"], d.Accept("a valid warrant, particular in scope"))
    ids["warrant_none"] = _order(w, rq, d.OrderKind.SEARCH_WARRANT, SHED)
    w.svc.act(legal, ids["warrant_none"], d.Accept("a valid warrant"))
    ids["subpoena"] = _order(
        w,
        rq,
        d.OrderKind.SUBPOENA,
        facts=[d.AccountFact.OWNER_USERNAME],
    )
    w.svc.act(legal, ids["subpoena"], d.Accept("the subpoena is in order"))
    ids["court_order"] = _order(w, rq, d.OrderKind.COURT_ORDER)
    w.svc.act(legal, ids["court_order"], d.Reject(d.RejectCode.DEFECTIVE, "the order is unsigned"))
    ids["emergency"] = w.emergency(rita).id
    w.svc.act(legal, ids["emergency"], d.Approve("the danger is plausible"))
    w.svc.act(custodian, ids["emergency"], d.Approve("plausible"))
    w.svc.act(custodian, ids["emergency"], d.RecordCallback(AGENCY_PHONE, True, "confirmed"))
    ids["preservation"] = w.svc.file(
        w.p(rq),
        type=d.RequestType.PRESERVATION,
        start=T0 - 5,
        end=T0 + 15,
        description="keep the porch footage while we get a warrant",
        camera=PORCH,
        cameras=[PORCH],
    ).id
    w.svc.act(legal, ids["preservation"], d.Accept("a 2703(f) letter in order"))
    w.svc.run_due()
    w.svc.set_policy(
        owner, d.Policy(emergency_allowed=False), notice_email=NOTICE_EMAIL, address="1 Elm Street"
    )
    ids["emergency_refused"] = w.emergency(rita).id

    w.clock.advance(7 * DAY + 1)
    w.svc.run_due()  # the unanswered consent expires

    w.clock.now = R1  # filed at the range's end: not counted
    ids["late_consent"] = w.consent(rita).id
    ids["late_order"] = _order(w, rq, d.OrderKind.COURT_ORDER)
    w.clock.advance(3600)

    states = {k: w.svc.store.request(v).state for k, v in ids.items()}
    assert states == {
        "early": "fulfilled",
        "granted": "fulfilled",
        "declined": "declined",
        "expired": "expired",
        "withdrawn": "withdrawn",
        "warrant": "fulfilled",
        "warrant_none": "fulfilled",
        "subpoena": "fulfilled",
        "court_order": "rejected",
        "emergency": "fulfilled",
        "preservation": "owner_notified",
        "emergency_refused": "rejected",
        "late_consent": "awaiting_owner",
        "late_order": "under_review",
    }
    assert w.svc.store.request(ids["warrant_none"]).package == "none"
    assert w.svc.store.request(ids["warrant"]).data["notice"] == "scheduled"
    return Scripted(ids, rq)


#: Counted by hand from the script.
EXPECTED: dict[str, Any] = {
    "requests": {
        "consent": 4,
        "subpoena": 1,
        "court_order": 1,
        "search_warrant": 2,
        "preservation": 1,
        "emergency": 2,
    },
    "outcomes": {
        "consent": {"granted": 1, "declined": 1, "expired": 1, "withdrawn": 1, "pending": 0},
        "subpoena": {
            "complete": 1,
            "partial": 0,
            "none": 0,
            "rejected": 0,
            "withdrawn": 0,
            "pending": 0,
        },
        "court_order": {
            "complete": 0,
            "partial": 0,
            "none": 0,
            "rejected": 1,
            "withdrawn": 0,
            "pending": 0,
        },
        "search_warrant": {
            "complete": 1,
            "partial": 0,
            "none": 1,
            "rejected": 0,
            "withdrawn": 0,
            "pending": 0,
        },
        "preservation": {"accepted": 1, "rejected": 0, "withdrawn": 0, "pending": 0},
        "emergency": {"disclosed": 1, "refused": 1, "withdrawn": 0, "pending": 0},
    },
    # granted consent, warrant about the shed, subpoena, emergency, preservation
    "owners_notified": 5,
    # the warrant under a 30-day non-disclosure order, 8 days in
    "notices_delayed": 1,
    "notices_pending": 1,
    # home only: the shed's warrant released nothing, the shed's subpoena is before R0
    "households_affected": 1,
    # no warrant met footage sealed to keys only its household holds (issue 6)
    "legal_owner_held_keys": 0,
    "emergency_owner_held_keys": 0,
}


#: What the public sees while the warrant's 30-day non-disclosure order is in force: the
#: warrant is neither published nor counted (it would tip off the household).
EXPECTED_PUBLIC: dict[str, Any] = copy.deepcopy(EXPECTED)
EXPECTED_PUBLIC["requests"]["search_warrant"] = 1
EXPECTED_PUBLIC["outcomes"]["search_warrant"]["complete"] = 0
EXPECTED_PUBLIC["notices_delayed"] = 0
EXPECTED_PUBLIC["notices_pending"] = 0


def test_a_request_under_a_nondisclosure_order_is_neither_published_nor_counted(
    world: World, tmp_path: Path
) -> None:
    """Regression (the public log gave away a gagged warrant): until the owner is told, the
    warrant's entries are exported as leaf hashes and left out of the report; the report
    still recounts from the export. Once the order ends, both show it."""
    w = world
    s = script(w)
    store = w.svc.store
    reports = TransparencyReport(w.audit, lambda: withheld_requests(store, w.clock()))
    report = reports.build(R0, R1)
    assert report["figures"] == EXPECTED_PUBLIC
    export = tmp_path / "log.jsonl"
    with export.open("w", encoding="utf-8") as f:
        reports.export_public(f, SignedTreeHead.from_json(report["tree_head"]))
    assert s.ids["warrant"] not in export.read_text(encoding="utf-8")
    assert verify_report(report, export)["ok"] is True

    # Day 31: the scheduler tells the owner; now the warrant is public and counted.
    w.clock.advance(31 * DAY)
    w.svc.run_due()
    after = reports.build(R0, R1, head=w.audit.sign_tree_head())
    assert after["figures"]["requests"]["search_warrant"] == 2
    assert after["figures"]["notices_delayed"] == 1
    assert after["figures"]["notices_pending"] == 0
    export2 = tmp_path / "log2.jsonl"
    with export2.open("w", encoding="utf-8") as f:
        reports.export_public(f, SignedTreeHead.from_json(after["tree_head"]))
    assert s.ids["warrant"] in export2.read_text(encoding="utf-8")
    assert verify_report(after, export2)["ok"] is True


def _export(w: World, report: dict[str, Any], path: Path) -> Path:
    head = SignedTreeHead.from_json(report["tree_head"])
    with path.open("w", encoding="utf-8") as f:
        assert TransparencyReport(w.audit).export_public(f, head) == head
    return path


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _leaf_line(lines: list[str], request_id: str, verb: str) -> int:
    """The export line number of the request entry ``request:<kind>:<verb>`` of a request."""
    found = []
    for n, text in enumerate(lines[1:], start=1):
        line = json.loads(text)
        if "leaf" in line:
            leaf = json.loads(line["leaf"])
            if leaf["subject"]["request"] == request_id and leaf["action"].endswith(f":{verb}"):
                found.append(n)
    assert len(found) == 1, found
    return found[0]


def test_scripted_requests_are_counted_and_the_report_verifies(
    world: World, tmp_path: Path
) -> None:
    w = world
    s = script(w)
    reports = TransparencyReport(w.audit)
    report = reports.build(R0, R1)
    assert report["figures"] == EXPECTED
    assert report["range"] == {"start_ms": int(R0 * 1000), "end_ms": int(R1 * 1000)}
    head = SignedTreeHead.from_json(report["tree_head"])
    assert head.tree_size == w.audit.size()
    assert report["index_range"] == {"start": 0, "end": head.tree_size}
    w.audit.verify()

    # The same head, another range: the early subpoena alone; the late ones alone.
    before = reports.build(START, R0, head=head)["figures"]
    assert before["requests"] == {**dict.fromkeys(KINDS, 0), "subpoena": 1}
    assert before["households_affected"] == 1
    after = reports.build(R1, R1 + DAY, head=head)["figures"]
    assert after["requests"] == {**dict.fromkeys(KINDS, 0), "consent": 1, "court_order": 1}
    assert after["outcomes"]["consent"]["pending"] == 1
    assert after["outcomes"]["court_order"]["pending"] == 1

    export = _export(w, report, tmp_path / "log.jsonl")
    summary = verify_report(report, export)
    assert summary["ok"] is True
    assert summary["tree_size"] == head.tree_size
    assert summary["root_hash"] == head.root_hash.hex()
    assert summary["figures_checked"] == len(figures(EXPECTED))
    # Verification needs only the files: a copy that went through JSON text verifies too.
    assert verify_report(json.loads(json.dumps(report)), export)["ok"] is True
    # With the deployment's keys given separately.
    assert verify_report(report, export, w.audit.public_keys())["ok"] is True

    # The export publishes request entries only; everything else is its leaf hash.
    lines = _lines(export)
    assert len(lines) == 1 + head.tree_size
    header = json.loads(lines[0])
    assert header["tree_head"] == report["tree_head"]
    published: list[int] = []
    hashed: list[int] = []
    for n, text in enumerate(lines[1:]):
        line = json.loads(text)
        assert line["i"] == n
        if "leaf" in line:
            leaf = json.loads(line["leaf"])
            kind = leaf["action"].split(":")[1]
            assert leaf["action"].startswith("request:"), leaf["action"]
            assert kind in KINDS, leaf["action"]
            published.append(n)
        else:
            assert set(line) == {"i", "leaf_hash"}
            assert line["leaf_hash"] == leaf_hash(w.audit.entry(n).leaf()).hex()
            hashed.append(n)
    not_requests = [
        e.index
        for e in w.entries()
        if not (str(e.action).startswith("request:") and str(e.action).split(":")[1] in KINDS)
    ]
    assert hashed == not_requests
    # Footage was exported, accounts made, policies set - all in the log, none published.
    actions = {str(w.audit.entry(i).action) for i in hashed}
    assert "footage:export:create" in actions
    assert any(a.startswith("account:") for a in actions)
    assert len(published) == sum(
        1
        for e in w.entries()
        if e.subject.request in s.ids.values() and str(e.action).startswith("request:")
    )
    text = export.read_text(encoding="utf-8")
    assert "rita@" not in text
    assert NOTICE_EMAIL not in text
    assert "Elm Street" not in text

    # Formats.
    rows = to_csv(report).splitlines()
    assert rows[0] == "figure,value"
    assert "requests.consent,4" in rows
    assert "notices_pending,1" in rows
    page = to_html(report)
    assert "<td>outcomes.emergency.refused</td><td>1</td>" in page
    assert head.root_hash.hex() in page


def test_changing_one_leaf_or_the_export_fails_verification(world: World, tmp_path: Path) -> None:
    w = world
    s = script(w)
    report = TransparencyReport(w.audit).build(R0, R1)
    export = _export(w, report, tmp_path / "log.jsonl")
    lines = _lines(export)
    assert verify_report(report, export)["ok"] is True

    # One character of a request entry's reason.
    n = _leaf_line(lines, s.ids["declined"], "decline")
    line = json.loads(lines[n])
    assert "-> declined: owner decline; details hmac:" in line["leaf"]
    assert "not without a warrant" not in line["leaf"]  # the owner's words stay home
    line["leaf"] = line["leaf"].replace("owner decline;", "owner declinE;")
    changed = list(lines)
    changed[n] = json.dumps(line, sort_keys=True, ensure_ascii=False)
    with pytest.raises(LogTamperedError, match="signed root"):
        verify_report(report, _write(tmp_path / "reason.jsonl", changed))

    # The outcome of a request rewritten (declined -> granted): the root no longer matches.
    line = json.loads(lines[n])
    line["leaf"] = line["leaf"].replace("request:consent:decline", "request:consent:grant")
    changed = list(lines)
    changed[n] = json.dumps(line, sort_keys=True, ensure_ascii=False)
    with pytest.raises(LogTamperedError):
        verify_report(report, _write(tmp_path / "verb.jsonl", changed))

    # A request's filing published as its leaf hash: the tree still hashes to the signed
    # root, but the recount misses the request - the figure is named.
    n = _leaf_line(lines, s.ids["granted"], "file")
    line = json.loads(lines[n])
    hidden = list(lines)
    hidden[n] = json.dumps(
        {"i": line["i"], "leaf_hash": leaf_hash(line["leaf"].encode("utf-8")).hex()}
    )
    with pytest.raises(VerificationError, match=r"figure requests\.consent") as caught:
        verify_report(report, _write(tmp_path / "hidden.jsonl", hidden))
    assert not isinstance(caught.value, LogTamperedError)
    assert "says 4, the log counts 3" in str(caught.value)

    # Two lines swapped.
    swapped = list(lines)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(LogTamperedError) as tampered:
        verify_report(report, _write(tmp_path / "swapped.jsonl", swapped))
    assert tampered.value.first_bad_index == 2

    # A line dropped from the middle, and the export cut short.
    dropped = lines[:10] + lines[11:]
    with pytest.raises(LogTamperedError) as tampered:
        verify_report(report, _write(tmp_path / "dropped.jsonl", dropped))
    assert tampered.value.first_bad_index == 9
    with pytest.raises(LogTamperedError, match="holds"):
        verify_report(report, _write(tmp_path / "short.jsonl", lines[:-3]))

    # A request leaf that states another index than its place.
    n = _leaf_line(lines, s.ids["court_order"], "reject")
    line = json.loads(lines[n])
    leaf = json.loads(line["leaf"])
    leaf["index"] += 1
    line["leaf"] = json.dumps(leaf, sort_keys=True, separators=(",", ":"))
    changed = list(lines)
    changed[n] = json.dumps(line)
    with pytest.raises(LogTamperedError, match="another index"):
        verify_report(report, _write(tmp_path / "index.jsonl", changed))

    # The unchanged export still verifies.
    assert verify_report(report, export)["ok"] is True


def test_an_edited_report_or_a_forged_head_fails_verification(world: World, tmp_path: Path) -> None:
    w = world
    script(w)
    report = TransparencyReport(w.audit).build(R0, R1)
    export = _export(w, report, tmp_path / "log.jsonl")

    # A figure edited.
    for path, value in (
        (("outcomes", "emergency", "refused"), 0),
        (("households_affected",), 2),
        (("requests", "search_warrant"), 1),
    ):
        edited = copy.deepcopy(report)
        target = edited["figures"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        name = ".".join(path)
        with pytest.raises(
            VerificationError, match=re.escape(f"figure {name}: the report says {value}")
        ):
            verify_report(edited, export)

    # The range moved: the recount differs.
    moved = copy.deepcopy(report)
    moved["range"]["start_ms"] = int(START * 1000)
    with pytest.raises(VerificationError, match=r"figure requests\.subpoena"):
        verify_report(moved, export)

    # The head's signature changed in one byte.
    forged = copy.deepcopy(report)
    sig = bytearray(base64.b64decode(forged["tree_head"]["signature"]))
    sig[0] ^= 1
    forged["tree_head"]["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(InvalidSignatureError):
        verify_report(forged, export)
    # The head's size changed, the signature kept.
    forged = copy.deepcopy(report)
    forged["tree_head"]["tree_size"] -= 1
    with pytest.raises(InvalidSignatureError):
        verify_report(forged, export)

    # A head signed by a key of someone else, over the true root.
    head = SignedTreeHead.from_json(report["tree_head"])
    mallory = generate_log_key()
    mallory_id = key_id(log_public_key(mallory))
    fake = sign_tree_head(
        TreeHead(head.tree_size, head.root_hash, head.timestamp_ms, mallory_id), mallory
    )
    forged = {**report, "tree_head": fake.to_json()}
    with pytest.raises(InvalidSignatureError, match="unknown key"):
        verify_report(forged, export)
    # ... and an export that lists that key: self-asserted keys accept it; the deployment's
    # key given separately (--public-key) does not.
    lines = _lines(export)
    header = json.loads(lines[0])
    header["public_keys"] = [bytes(log_public_key(mallory)).hex()]
    mallory_export = _write(tmp_path / "mallory.jsonl", [json.dumps(header), *lines[1:]])
    assert verify_report(forged, mallory_export)["ok"] is True
    with pytest.raises(InvalidSignatureError):
        verify_report(forged, mallory_export, w.audit.public_keys())
    # The genuine report with another key trusted.
    with pytest.raises(InvalidSignatureError):
        verify_report(report, export, {mallory_id: log_public_key(mallory)})

    # Malformed reports.
    for broken in (
        {k: v for k, v in report.items() if k != "figures"},
        {**report, "tree_head": {"tree_size": 3}},
        {**report, "range": {"start_ms": "soon", "end_ms": 0}},
        {**report, "range": {"start_ms": int(R1 * 1000), "end_ms": int(R0 * 1000)}},
        {**report, "index_range": {"start": 0, "end": head.tree_size - 1}},
    ):
        with pytest.raises(VerificationError):
            verify_report(broken, export)
    # Not an export.
    other = tmp_path / "other.jsonl"
    other.write_text('{"format": "something-else"}\n', encoding="utf-8")
    with pytest.raises(VerificationError, match="not a HomeWarden public log export"):
        verify_report(report, other)


def test_half_years() -> None:
    assert half_year("2026H1") == (1767225600.0, 1782864000.0)  # 2026-01-01, 2026-07-01
    assert half_year("2026h2") == (1782864000.0, 1798761600.0)  # 2026-07-01, 2027-01-01
    for bad in ("2026H3", "2026", "H1-2026", "26H1", ""):
        with pytest.raises(InvalidRequestError):
            half_year(bad)
    assert current_half_year(1782863999.0) == "2026H1"
    assert current_half_year(1782864000.0) == "2026H2"
    assert current_half_year(START) == "2023H2"
