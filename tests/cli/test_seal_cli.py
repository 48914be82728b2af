"""``homewarden footage seal`` on a real index (SQLite and PostgreSQL): real plaintext
segments of bikes.mp4 sealed with a progress bar or ``--quiet``, one summary line, refused
while ``storage.sealed`` is off."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import app
from homewarden.config import Settings
from homewarden.domain.audit import AuditTag
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import attach
from homewarden.store.index import Index
from tests.package_footage import T0, record_bikes
from tests.services.test_sealed_footage import scan


@pytest.fixture(autouse=True)
def _no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("HOMEWARDEN_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def recorded(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, int]]:
    """A data dir holding plaintext footage of camera ``porch``, indexed, and the household
    key the recorder makes at start; (data dir, plaintext bytes)."""
    data = tmp_path / "data"
    monkeypatch.setenv("HOMEWARDEN_DATABASE_URL", database_url)
    index = Index(database_url)
    index.migrate()
    try:
        with AuditLog.open(database_url, data / "keys") as audit:
            settings = Settings(data_dir=data, database_url=database_url)
            accounts = AccountService(index, audit, settings)
            attach(accounts, index, audit, settings.keys_dir)
            accounts.ensure_households()  # as the runtime does at start: the first key
        segs = record_bikes(data, "porch", T0)
        for seg in segs:
            index.add_segment(seg)
        yield data, sum(s.bytes for s in segs)
    finally:
        index.close()


def _seal(data: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["footage", "seal", "--data-dir", str(data), *extra])
    return result.exit_code, result.stdout, result.stderr


def test_footage_seal_quiet_prints_one_summary_line(recorded: tuple[Path, int]) -> None:
    data, size = recorded  # storage.sealed is not set: on by default
    code, out, err = _seal(data, "--quiet")
    assert code == 0, out + err
    assert out.splitlines() == [f"sealed 6 segments, {size} bytes, 0 snapshots, skipped 0"]
    assert "segments" not in err  # no bar
    assert scan(data) == {}
    with AuditLog.open(os.environ["HOMEWARDEN_DATABASE_URL"], data / "keys") as audit:
        actions = [audit.entry(i).action for i in range(audit.size())]
    assert AuditTag.FOOTAGE_EXISTING_SEAL in actions


def test_footage_seal_shows_a_progress_bar(
    recorded: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, size = recorded
    monkeypatch.setenv("HOMEWARDEN_STORAGE__SEALED", "true")
    code, out, err = _seal(data)
    assert code == 0, out + err
    assert "segments 6/6" in err
    assert out.strip() == f"sealed 6 segments, {size} bytes, 0 snapshots, skipped 0"
    assert scan(data) == {}


def test_footage_seal_is_refused_while_sealing_is_off(
    recorded: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _size = recorded
    monkeypatch.setenv("HOMEWARDEN_STORAGE__SEALED", "false")
    code, out, err = _seal(data, "--quiet")
    assert code == 2
    assert "storage.sealed is off" in out + err
    assert len(scan(data / "media")) == 6  # untouched
