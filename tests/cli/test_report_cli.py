"""``homewarden report make|verify`` and ``homewarden audit export`` (issue 5, "Transparency
report" and "Acceptance": "`report verify` fails after one leaf is changed"), run through
Typer's CliRunner on a data dir holding the scripted disclosure requests of
tests/services/test_report.py, on SQLite and PostgreSQL (``HOMEWARDEN_DATABASE_URL``)."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from homewarden.cli import EXIT_VERIFY_FAILED, app
from homewarden.crypto.signing import SignedTreeHead, generate_log_key, log_public_key
from homewarden.domain.report import figures
from homewarden.services.audit import PUBLIC_KEYS_FILE
from tests.fixtures_mail import SmtpTestServer
from tests.services.disclosure_helpers import World
from tests.services.test_report import EXPECTED_PUBLIC, R0, R1, script

_SETTINGS_ENV = tuple(
    f"HOMEWARDEN_{k}"
    for k in ("DATA_DIR", "DATABASE_URL", "API", "STORAGE", "CAMERAS", "HOUSEHOLD", "AUDIT")
)


@pytest.fixture(autouse=True)
def _no_homewarden_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(_SETTINGS_ENV)]:
            mp.delenv(key)
        yield


@pytest.fixture
def deployment(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> tuple[Path, str]:
    """(data dir, database URL) after the scripted requests; the services are closed."""
    data = tmp_path / "data"
    data.mkdir()
    w = World(data, database_url, smtp_server)
    try:
        script(w)
    finally:
        w.close()
    return data, database_url


def run(deployment: tuple[Path, str], *args: str) -> tuple[int, str, str]:
    data, url = deployment
    argv = list(args)
    if args[0] != "report" or args[1] != "verify":  # verify reads files only
        argv += ["--data-dir", str(data)]
    result = CliRunner().invoke(app, argv, env={"HOMEWARDEN_DATABASE_URL": url})
    return result.exit_code, result.stdout, result.stderr


def make(deployment: tuple[Path, str], out: Path, *extra: str) -> dict[str, Any]:
    code, stdout, stderr = run(
        deployment, "report", "make", "--start", str(R0), "--end", str(R1), *extra
    )
    assert code == 0, stderr
    out.write_text(stdout, encoding="utf-8")
    report: dict[str, Any] = json.loads(stdout)
    return report


def export(deployment: tuple[Path, str], out: Path) -> dict[str, Any]:
    code, stdout, stderr = run(deployment, "audit", "export", "--out", str(out))
    assert code == 0, stderr
    answer: dict[str, Any] = json.loads(stdout)
    assert answer["export"] == str(out)
    return answer


def test_make_export_verify_and_a_changed_leaf_fails(
    deployment: tuple[Path, str], tmp_path: Path
) -> None:
    report_file, log_file = tmp_path / "report.json", tmp_path / "log.jsonl"
    report = make(deployment, report_file, "--format", "json")
    assert report["figures"] == EXPECTED_PUBLIC
    exported = export(deployment, log_file)
    assert exported["tree_head"]["tree_size"] >= report["tree_head"]["tree_size"]

    code, stdout, stderr = run(
        deployment, "report", "verify", str(report_file), "--log", str(log_file)
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["ok"] is True
    assert summary["tree_size"] == report["tree_head"]["tree_size"]
    assert summary["figures_checked"] == len(figures(EXPECTED_PUBLIC))

    # The deployment's public keys given separately: still fine; another key: refused.
    keys = deployment[0] / "keys" / PUBLIC_KEYS_FILE
    code, _, stderr = run(
        deployment,
        "report",
        "verify",
        str(report_file),
        "--log",
        str(log_file),
        "--public-key",
        str(keys),
    )
    assert code == 0, stderr
    other = tmp_path / "other.pub"
    other.write_text(bytes(log_public_key(generate_log_key())).hex() + "\n")
    code, stdout, stderr = run(
        deployment,
        "report",
        "verify",
        str(report_file),
        "--log",
        str(log_file),
        "--public-key",
        str(other),
    )
    assert code == EXIT_VERIFY_FAILED
    assert json.loads(stdout)["error"] == "invalid-signature"
    assert "unknown key" in stderr

    # One leaf changed: one character of the declined consent's entry.
    lines = log_file.read_text(encoding="utf-8").split("\n")
    assert not any("not without a warrant" in t for t in lines)  # free text stays home
    (n,) = [i for i, t in enumerate(lines) if "request:consent:decline" in t]
    lines[n] = lines[n].replace("owner decline;", "owner declinE;")
    json.loads(lines[n])  # still a well-formed line
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join(lines), encoding="utf-8")
    code, stdout, stderr = run(
        deployment, "report", "verify", str(report_file), "--log", str(changed)
    )
    assert code == EXIT_VERIFY_FAILED
    failure = json.loads(stdout)
    assert failure["ok"] is False
    assert failure["error"] == "log-tampered"
    assert "not to the signed root" in failure["reason"]
    assert "report verification FAILED" in stderr
    assert "signed root" in stderr

    # Two lines swapped: the index is named.
    lines = log_file.read_text(encoding="utf-8").split("\n")
    lines[5], lines[6] = lines[6], lines[5]
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text("\n".join(lines), encoding="utf-8")
    code, stdout, stderr = run(
        deployment, "report", "verify", str(report_file), "--log", str(swapped)
    )
    assert code == EXIT_VERIFY_FAILED
    assert json.loads(stdout)["first_bad_index"] == 4
    assert "entry 5 where 4 was expected" in stderr

    # A figure edited in the report: named.
    edited = json.loads(report_file.read_text(encoding="utf-8"))
    edited["figures"]["notices_pending"] = 1
    edited_file = tmp_path / "edited.json"
    edited_file.write_text(json.dumps(edited), encoding="utf-8")
    code, stdout, stderr = run(
        deployment, "report", "verify", str(edited_file), "--log", str(log_file)
    )
    assert code == EXIT_VERIFY_FAILED
    assert json.loads(stdout)["error"] == "verification"
    assert "figure notices_pending: the report says 1, the log counts 0" in stderr

    # The export is never overwritten.
    code, _, stderr = run(deployment, "audit", "export", "--out", str(log_file))
    assert code != 0
    assert "exists" in stderr


def test_report_formats_and_half_years(deployment: tuple[Path, str], tmp_path: Path) -> None:
    code, stdout, stderr = run(deployment, "report", "make", "--half", "2023H2")
    assert code == 0, stderr
    half = json.loads(stdout)
    assert half["range"] == {"start_ms": 1_688_169_600_000, "end_ms": 1_704_067_200_000}
    assert half["figures"]["requests"]["consent"] == 5  # with the one filed at R1
    SignedTreeHead.from_json(half["tree_head"])

    code, stdout, stderr = run(deployment, "report", "make", "--half", "2023H2", "--format", "csv")
    assert code == 0, stderr
    rows = list(csv.reader(io.StringIO(stdout)))
    assert rows[0] == ["figure", "value"]
    values = dict((r[0], r[1]) for r in rows[1:])
    for name, value in figures(half["figures"]):
        assert values[name] == str(value)

    code, stdout, stderr = run(deployment, "report", "make", "--half", "2023H2", "--format", "html")
    assert code == 0, stderr
    assert stdout.startswith("<!doctype html>")
    assert "<td>requests.consent</td><td>5</td>" in stdout

    # Errors: a clear message, a non-zero exit, nothing on stdout.
    for args, words in (
        (("--half", "2026H3"), "2026H3"),
        (("--start", str(R0)), "both --start and --end"),
        (("--half", "2023H2", "--start", str(R0), "--end", str(R1)), "not both"),
        (("--half", "2023H2", "--format", "pdf"), "json, csv or html"),
        (("--start", str(R1), "--end", str(R0)), "end after it starts"),
    ):
        code, stdout, stderr = run(deployment, "report", "make", *args)
        assert code != 0, args
        assert code != EXIT_VERIFY_FAILED
        assert words in stderr, (args, stderr)
        assert stdout == ""
    code, _, stderr = run(deployment, "report", "make", "--half", "2026H3")
    assert "error: a half-year is like 2026H2" in stderr

    # verify: unreadable inputs are errors, not a crash.
    missing = tmp_path / "missing.json"
    code, _, stderr = run(
        deployment, "report", "verify", str(missing), "--log", str(tmp_path / "none.jsonl")
    )
    assert code != 0
    assert "cannot read" in stderr
