"""``homewarden user ...`` and the demo's owner, on a real index (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import app
from homewarden.config import Settings
from homewarden.domain.permissions import Role
from homewarden.errors import AuthenticationError, TooManyAttemptsError
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.demo import DEMO_OWNER, ensure_demo_owner
from homewarden.store.index import Index

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("HOMEWARDEN_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def home(tmp_path: Path, database_url: str) -> tuple[list[str], Settings]:
    """CLI arguments and settings of a data dir on ``database_url``."""
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
    return ["--config", str(cfg)], settings


@contextlib.contextmanager
def _accounts(settings: Settings) -> Iterator[AccountService]:
    index = Index(settings.db_url)
    try:
        index.migrate()
        with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
            yield AccountService(index, audit, settings)
    finally:
        index.close()


def _link(stdout: str) -> str:
    prefix = "https://cams.example/setup?token="
    assert prefix in stdout, stdout
    return stdout.split(prefix, 1)[1].split()[0]


def test_user_add_prints_a_one_time_setup_link(home: tuple[list[str], Settings]) -> None:
    args, settings = home
    runner = CliRunner()
    added = runner.invoke(app, ["user", "add", "Kid", "--role", "member", *args])
    assert added.exit_code == 0, added.output
    assert "member 'kid' of household home" in added.stdout
    secret = _link(added.stdout)
    with _accounts(settings) as accounts:
        user = accounts.complete_setup(secret, PASSWORD)
        assert (user.username, user.role, user.household_id) == ("kid", "member", "home")
        with pytest.raises(AuthenticationError):
            accounts.complete_setup(secret, PASSWORD)  # used once
        assert accounts.login("kid", PASSWORD, "127.0.0.1").needs_totp is False
    staff = runner.invoke(app, ["user", "add", "helper", "--role", "support", *args])
    assert staff.exit_code == 0, staff.output
    assert "(staff)" in staff.stdout
    listed = runner.invoke(app, ["user", "list", "--json", *args])
    rows = {r["username"]: r for r in json.loads(listed.stdout)}
    assert rows["kid"]["has_password"] is True
    assert rows["kid"]["cameras"] == []
    assert rows["helper"]["household"] is None
    assert rows["helper"]["has_password"] is False
    assert "hash" not in listed.stdout
    assert "$argon2" not in listed.stdout
    table = runner.invoke(app, ["user", "list", *args], terminal_width=200)
    assert "awaiting setup" in table.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["user", "add", "x", "--role", "wizard"], "unknown role"),
        (["user", "add", "bad name!", "--role", "member"], "username"),
        (["user", "disable", "ghost"], "no user"),
        (["user", "add", "y", "--role", "member", "--household", "moon"], "no household"),
    ],
)
def test_user_command_errors_are_one_line(
    home: tuple[list[str], Settings], argv: list[str], needle: str
) -> None:
    args, _ = home
    result = CliRunner().invoke(app, [*argv, *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert "Traceback" not in result.output


def test_disable_enable_unlock_and_a_new_setup_link(home: tuple[list[str], Settings]) -> None:
    args, settings = home
    runner = CliRunner()
    with _accounts(settings) as accounts:
        accounts.ensure_households()
        accounts.add_user("pat", Role.OWNER, "home", actor=None, password=PASSWORD)
    assert runner.invoke(app, ["user", "disable", "pat", *args]).exit_code == 0
    with _accounts(settings) as accounts, pytest.raises(AuthenticationError):
        accounts.login("pat", PASSWORD, "10.0.0.2")
    assert runner.invoke(app, ["user", "enable", "pat", *args]).exit_code == 0
    with _accounts(settings) as accounts:
        for _ in range(5):
            with pytest.raises(AuthenticationError):
                accounts.login("pat", "wrong password!", "10.0.0.2")
        with pytest.raises(TooManyAttemptsError):
            accounts.login("pat", PASSWORD, "10.0.0.2")
    unlocked = runner.invoke(app, ["user", "unlock", "pat", *args])
    assert unlocked.exit_code == 0, unlocked.output
    with _accounts(settings) as accounts:
        assert accounts.login("pat", PASSWORD, "10.0.0.2").needs_totp is False
    link = runner.invoke(app, ["user", "setup-link", "pat", *args])
    with _accounts(settings) as accounts:
        accounts.complete_setup(_link(link.stdout), "another long passphrase")
        assert accounts.login("pat", "another long passphrase", "10.0.0.3")


def test_demo_owner_is_made_once_with_a_printed_password(
    home: tuple[list[str], Settings],
) -> None:
    _, settings = home
    with _accounts(settings) as accounts:
        assert accounts.bootstrap_owner() is not None  # a first run left an owner without one
        first = ensure_demo_owner(accounts)
        assert first.username == DEMO_OWNER
        assert first.password is not None
        assert len(first.password) >= 20
        assert accounts.login(DEMO_OWNER, first.password, "127.0.0.1").needs_totp is False
        again = ensure_demo_owner(accounts)
        assert (again.username, again.password) == (DEMO_OWNER, None)
        assert len([u for u in accounts.users() if u.role == Role.OWNER]) == 1


def test_demo_owner_on_an_empty_database(home: tuple[list[str], Settings]) -> None:
    _, settings = home
    with _accounts(settings) as accounts:
        made = ensure_demo_owner(accounts)
        assert made.password is not None
        assert accounts.login(made.username, made.password, "127.0.0.1")
