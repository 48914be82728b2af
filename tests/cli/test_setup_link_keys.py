"""``homewarden user setup-link`` for an owner who holds household keys (issue 6): a reset
through a setup link drops the owner's key pair, so sealed footage became unreadable without
a word. The command now refuses without ``--yes-lose-footage-access`` and points to the
recovery code. Real index and keys, SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import app
from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.permissions import Role
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import attach
from homewarden.store.index import Index

PASSWORD = "correct horse battery staple"
LINK = "https://cams.example/setup?token="


@pytest.fixture(autouse=True)
def _no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("HOMEWARDEN_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def args(tmp_path: Path, database_url: str) -> list[str]:
    """CLI arguments of a data dir whose owner ``olive`` holds the household keys (sealed at
    her first-run setup) and whose member ``mia`` has no key pair."""
    cfg = tmp_path / "hw.toml"
    cfg.write_text(
        f"data_dir = '{tmp_path / 'data'}'\ndatabase_url = '{database_url}'\n"
        "[api]\npublic_url = 'https://cams.example'\n"
        "[cameras.front]\nurl = 'rtsp://192.0.2.1/s'\n"
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        api={"public_url": "https://cams.example"},
        cameras={"front": {"url": "rtsp://192.0.2.1/s"}},
    )
    index = Index(settings.db_url)
    try:
        index.migrate()
        with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
            accounts = AccountService(index, audit, settings)
            ring = attach(accounts, index, audit, settings.keys_dir, params=ARGON2ID_FLOOR)
            accounts.ensure_households()
            secret = accounts.bootstrap_owner("olive")  # the first run's setup link
            assert secret is not None
            olive = accounts.complete_setup(secret, PASSWORD)
            accounts.add_user("mia", Role.MEMBER, "home", actor=None, password=PASSWORD)
            rec = ring.store.person(olive.id)
            assert rec is not None
            assert ring.store.holder_seals(rec.id)
    finally:
        index.close()
    return ["--config", str(cfg)]


def test_setup_link_for_an_owner_with_keys_is_refused_without_the_flag(args: list[str]) -> None:
    runner = CliRunner()
    refused = runner.invoke(app, ["user", "setup-link", "olive", *args])
    assert refused.exit_code == 2, refused.output
    assert LINK not in refused.stdout  # no link made
    warning = " ".join(refused.stderr.split())
    assert "sealed so far becomes unreadable" in warning
    assert "recovery code" in warning
    assert "POST /api/keys/recovery/use" in warning
    assert '"username"' in warning
    assert '"recovery_code"' in warning
    assert "--yes-lose-footage-access" in warning

    forced = runner.invoke(app, ["user", "setup-link", "olive", "--yes-lose-footage-access", *args])
    assert forced.exit_code == 0, forced.output
    assert LINK in forced.stdout
    assert "recovery code" in forced.stderr  # still warned


def test_setup_link_for_a_member_needs_no_flag(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["user", "setup-link", "mia", *args])
    assert result.exit_code == 0, result.output
    assert LINK in result.stdout
    assert result.stderr == ""
