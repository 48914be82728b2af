"""The public transparency report pages (issue 5, "Transparency report": "an HTML page served
publicly by the app"), over the real app and real services on SQLite and PostgreSQL, after
the scripted disclosure requests of tests/services/test_report.py. Nobody signs in."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from homewarden.crypto.signing import SignedTreeHead
from homewarden.domain import disclosure as d
from homewarden.domain.report import figures
from homewarden.errors import VerificationError
from homewarden.services.disclosure import withheld_requests
from homewarden.services.queries import Queries
from homewarden.services.report import TransparencyReport, half_year, verify_report
from homewarden.services.runtime import AppContext
from tests.fixtures_mail import SmtpTestServer
from tests.services.disclosure_helpers import PUBLIC_URL, World
from tests.services.test_report import script
from tests.web.helpers import TestClient, build, client

#: The half-year the scripted requests are filed in (the test clock is in November 2023).
HALF = "2023H2"


@pytest.fixture
def world(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Iterator[World]:
    w = World(tmp_path, database_url, smtp_server)
    try:
        yield w
    finally:
        w.close()


def _site(w: World) -> TestClient:
    ctx = AppContext(
        settings=w.settings,
        index=w.index,
        audit=w.audit,
        queries=Queries(w.index, w.settings, clock=w.clock, audit=w.audit),
        accounts=w.accounts,
        clock=w.clock,
        public_url=PUBLIC_URL,
        disclosure=w.svc,
    )
    return client(build(ctx))


def test_public_report_pages_answer_anonymously_and_verify(world: World, tmp_path: Path) -> None:
    w = world
    scripted = script(w)
    head = w.audit.sign_tree_head()  # as the runtime does on its schedule
    assert head.tree_size == w.audit.size()
    c = _site(w)
    assert c.cookies == {}

    got = c.get("/transparency/report.json", params={"half": HALF})
    assert got.status_code == 200, got.text
    report = got.json()
    assert report["tree_head"] == head.to_json()
    # The public report withholds what the owner may not be told of yet, as the app does.
    withheld = withheld_requests(w.svc.store, w.clock())
    expected = TransparencyReport(w.audit, lambda: withheld).build(*half_year(HALF), head=head)
    assert report == json.loads(json.dumps(expected))
    # The scripted requests plus the early subpoena and the two filed at the range's end.
    assert report["figures"]["requests"]["consent"] == 5
    assert report["figures"]["requests"]["subpoena"] == 2
    assert report["figures"]["households_affected"] == 2
    assert report["range"]["start_ms"] == 1_688_169_600_000  # 2023-07-01T00:00:00Z

    # The page (the current half-year by the app's clock) shows every figure and the head.
    page = c.get("/transparency")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    for name, value in figures(report["figures"]):
        assert f"<td>{name}</td><td>{value}</td>" in page.text
    assert head.root_hash.hex() in page.text
    assert "Transparency report 2023H2" in page.text

    # CSV: figure,value rows equal to the JSON's figures, then the range and the head.
    got = c.get("/transparency/report.csv", params={"half": HALF.lower()})
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(got.text)))
    assert rows[0] == ["figure", "value"]
    values = dict((r[0], r[1]) for r in rows[1:])
    for name, value in figures(report["figures"]):
        assert values[name] == str(value)
    assert values["tree_head.root_hash"] == head.root_hash.hex()
    assert values["tree_head.tree_size"] == str(head.tree_size)
    assert values["range.start_ms"] == str(report["range"]["start_ms"])

    # The public log export verifies the report, offline.
    got = c.get("/transparency/log.jsonl")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("application/x-ndjson")
    export = tmp_path / "log.jsonl"
    export.write_bytes(got.content)
    summary = verify_report(report, export)
    assert summary["ok"] is True
    assert summary["tree_size"] == head.tree_size
    # ... and a report whose figure was changed does not.
    edited = json.loads(json.dumps(report))
    edited["figures"]["outcomes"]["consent"]["declined"] += 1
    with pytest.raises(VerificationError, match=r"figure outcomes\.consent\.declined"):
        verify_report(edited, export)
    for line in got.text.splitlines()[1:]:
        entry = json.loads(line)
        if "leaf" in entry:
            assert json.loads(entry["leaf"])["action"].startswith("request:")

    # Visitors do not make the deployment sign a head: the pages stay at the signed head.
    assert w.audit.latest_tree_head() == head
    w.svc.file(
        w.p(scripted.requester),
        type=d.RequestType.CONSENT,
        start=head.timestamp_ms / 1000 - 60,
        end=head.timestamp_ms / 1000,
        description="another one",
        camera="porch",
    )
    again = c.get("/transparency/report.json", params={"half": HALF}).json()
    assert again == report
    assert w.audit.latest_tree_head() == head
    # Once the runtime signs a new head, the pages count at it.
    newer = w.audit.sign_tree_head()
    assert newer.tree_size > head.tree_size
    again = c.get("/transparency/report.json", params={"half": HALF}).json()
    assert SignedTreeHead.from_json(again["tree_head"]) == newer
    assert again["figures"]["requests"]["consent"] == 6
    assert again["figures"]["outcomes"]["consent"]["pending"] == 2


def test_a_bad_half_year_is_a_problem_not_a_crash(world: World) -> None:
    c = _site(world)
    for half in ("2026H3", "H2", "2026-2"):
        got = c.get("/transparency/report.json", params={"half": half})
        assert got.status_code in (400, 422), (half, got.status_code, got.text)
        assert got.headers["content-type"].startswith("application/problem+json")
    got = c.get("/transparency/report.json", params={"half": "2026H1x"})
    assert got.status_code in (400, 422)
    # A half-year without requests: every figure 0, at a signed head.
    got = c.get("/transparency/report.json", params={"half": "2026H1"})
    assert got.status_code == 200, got.text
    assert all(v == 0 for _, v in figures(got.json()["figures"]))
