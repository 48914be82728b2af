"""``homewarden clip`` and ``homewarden export`` over footage sealed at rest (issue 6), and
export jobs over it, on SQLite and PostgreSQL with real footage: bikes.mp4 recorded as
segments on camera ``porch`` and sealed to household ``home``'s key, and the same footage in
the clear on camera ``yard``.

``--user NAME`` opens sealed footage with that person's password (asked with getpass, or
read from ``--password-file``); without it, or with a wrong password, nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner, Result

from homewarden.cli import EXIT_ERROR, app
from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag
from homewarden.domain.permissions import Role
from homewarden.errors import KeysLockedError
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import attach
from homewarden.services.jobs import JobQueue, JobServices
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.store.index import Index
from tests.fixtures_jobs import running, wait_for
from tests.package_footage import T0, record_bikes
from tests.services.test_shell_unlock import record_sealed
from tests.web.helpers import PASSWORD, Clock

OPERATOR = Actor(ActorKind.LOCAL_OPERATOR, "cli:test")
HOST = "192.0.2.10"
SEALED_JOB_ERROR = "sealed footage: export it from the web app or `homewarden export --user`"
#: A span inside the recorded footage (bikes.mp4 is 10 s from T0).
LO, HI = T0 + 1.0, T0 + 7.0


@dataclass
class Home:
    settings: Settings
    args: list[str]  # --config FILE

    def audit(self) -> list[AuditEntry]:
        s = self.settings
        with AuditLog.open(s.db_url, s.keys_dir, household=s.household) as log:
            return [log.entry(i) for i in range(log.size())]

    def tags(self, since: int = 0) -> list[AuditTag]:
        return [e.action for e in self.audit()[since:]]


@pytest.fixture(autouse=True)
def _no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("HOMEWARDEN_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def home(tmp_path: Path, database_url: str) -> Home:
    """The owner (password :data:`PASSWORD`) set up; member ``mia`` granted ``porch`` and
    unlocked once (so she holds the keys); ``porch`` sealed, ``yard`` in the clear."""
    data = tmp_path / "data"
    cfg = tmp_path / "hw.toml"
    cfg.write_text(
        f"data_dir = '{data}'\ndatabase_url = '{database_url}'\n"
        "[cameras.porch]\nurl = 'file:/dev/null'\nenabled = false\n"
        "[cameras.yard]\nurl = 'file:/dev/null'\nenabled = false\n"
    )
    settings = Settings(
        data_dir=data,
        database_url=database_url,
        cameras={c: {"url": "file:/dev/null", "enabled": False} for c in ("porch", "yard")},
    )
    data.mkdir()
    index = Index(database_url)
    try:
        index.migrate()
        with AuditLog.open(database_url, settings.keys_dir, household="home") as audit:
            audit.ensure_key()
            accounts = AccountService(index, audit, settings, clock=Clock())
            ring = attach(accounts, index, audit, settings.keys_dir, params=ARGON2ID_FLOOR)
            accounts.ensure_households()
            secret = accounts.bootstrap_owner()
            assert secret is not None
            accounts.complete_setup(secret, PASSWORD)
            accounts.add_user("mia", Role.MEMBER, "home", actor=OPERATOR, password=PASSWORD)
            owner = accounts.principal_of(accounts.user_by_name("owner"))
            mia = accounts.user_by_name("mia").id
            accounts.grant_camera(owner, mia, "porch", Actor.of_principal(owner))
            accounts.login("owner", PASSWORD, HOST)
            accounts.login("mia", PASSWORD, HOST)  # her key pair; the owner grants the keys
            record_sealed(index, ring, data, "porch", "home", T0)
            for seg in record_bikes(data, "yard", T0):
                index.add_segment(seg)
    finally:
        index.close()
    return Home(settings, ["--config", str(cfg)])


def _clip(home: Home, camera: str, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        app,
        ["clip", *home.args, "--camera", camera, "--start", str(LO), "--end", str(HI),
         "-o", str(out), "--json", *extra],
    )  # fmt: skip


def _password_file(path: Path, password: str = PASSWORD, mode: int = 0o600) -> Path:
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


def _error(result: Result) -> str:
    assert result.exit_code == EXIT_ERROR, result.output
    return result.output


def _probe_duration(path: Path) -> float:
    """The MP4's duration (s) as ffprobe reads its container, else PyAV."""
    if shutil.which("ffprobe"):
        got = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
             str(path)],
            capture_output=True, check=True, text=True,
        )  # fmt: skip
        return float(json.loads(got.stdout)["format"]["duration"])
    with av.open(str(path)) as c:
        assert c.duration is not None
        return c.duration / av.time_base


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_a_sealed_clip_with_the_owners_password_plays_like_the_plaintext_path(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def typed(prompt: str = "") -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr("getpass.getpass", typed)
    plain = _clip(home, "yard", tmp_path / "yard.mp4")  # plaintext: no --user, no password
    assert plain.exit_code == 0, plain.output
    assert prompts == []
    mark = len(home.audit())
    sealed = _clip(home, "porch", tmp_path / "porch.mp4", "--user", "owner")
    assert sealed.exit_code == 0, sealed.output
    assert prompts == ["Password of owner: "]
    a, b = json.loads(plain.stdout), json.loads(sealed.stdout)
    assert b["duration"] == pytest.approx(a["duration"], abs=1e-3)
    assert b["duration"] == pytest.approx(HI - LO, abs=0.5)
    assert _probe_duration(tmp_path / "porch.mp4") == pytest.approx(
        _probe_duration(tmp_path / "yard.mp4"), abs=0.05
    )
    assert _frames(tmp_path / "porch.mp4") == _frames(tmp_path / "yard.mp4") > 100
    assert home.tags(mark) == [AuditTag.KEY_SHELL_UNLOCK, AuditTag.FOOTAGE_CLIP_DOWNLOAD]
    unlock = home.audit()[mark]
    assert unlock.actor.kind is ActorKind.LOCAL_OPERATOR
    assert "owner's password opened" in unlock.reason
    # a script: the password from a 0600 file
    again = _clip(
        home, "porch", tmp_path / "porch2.mp4", "--user", "owner",
        "--password-file", str(_password_file(tmp_path / "pw")),
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert _frames(tmp_path / "porch2.mp4") == _frames(tmp_path / "porch.mp4")


def test_sealed_footage_without_user_is_refused_saying_to_pass_it(
    home: Home, tmp_path: Path
) -> None:
    mark = len(home.audit())
    out = tmp_path / "porch.mp4"
    message = _error(_clip(home, "porch", out))
    assert "sealed" in message
    assert "--user" in message
    assert not out.exists()
    package = tmp_path / "pkg"
    refused = CliRunner().invoke(
        app,
        ["export", *home.args, "--camera", "porch", "--start", str(LO), "--end", str(HI),
         "--out", str(package)],
    )  # fmt: skip
    assert "--user" in _error(refused)
    assert not package.exists()
    assert home.tags(mark) == []  # nothing accounted: nothing was handed out


def test_a_wrong_password_is_refused_audited_and_nothing_is_written(
    home: Home, tmp_path: Path
) -> None:
    mark = len(home.audit())
    out = tmp_path / "porch.mp4"
    pw = _password_file(tmp_path / "pw", "not the password")
    message = _error(_clip(home, "porch", out, "--user", "owner", "--password-file", str(pw)))
    assert "wrong username or password" in message
    assert not out.exists()
    (entry,) = home.audit()[mark:]
    assert entry.action is AuditTag.KEY_SHELL_UNLOCK
    assert entry.reason.startswith("refused for owner")


def test_a_password_file_others_can_read_is_refused(home: Home, tmp_path: Path) -> None:
    mark = len(home.audit())
    out = tmp_path / "porch.mp4"
    pw = _password_file(tmp_path / "pw", mode=0o644)
    message = _error(_clip(home, "porch", out, "--user", "owner", "--password-file", str(pw)))
    assert "0644" in message
    assert "chmod 600" in message
    assert not out.exists()
    assert home.tags(mark) == []
    # and --password-file without --user
    message = _error(_clip(home, "yard", out, "--password-file", str(pw)))
    assert "--user" in message


def test_a_revoked_member_cannot_clip_footage_sealed_after_the_revocation(
    home: Home, tmp_path: Path
) -> None:
    pw = str(_password_file(tmp_path / "pw"))
    before = _clip(home, "porch", tmp_path / "before.mp4", "--user", "mia", "--password-file", pw)
    assert before.exit_code == 0, before.output  # granted: she opens it
    s = home.settings
    index = Index(s.db_url)
    try:
        with AuditLog.open(s.db_url, s.keys_dir, household="home") as audit:
            accounts = AccountService(index, audit, s)
            ring = attach(accounts, index, audit, s.keys_dir, params=ARGON2ID_FLOOR)
            owner = accounts.principal_of(accounts.user_by_name("owner"))
            mia = accounts.user_by_name("mia").id
            ring.revoke(owner, mia, Actor.of_principal(owner))  # seals gone, key rotated
            later, _ = record_sealed(index, ring, s.data_dir, "porch", "home", T0 + 3600)
    finally:
        index.close()
    mark = len(home.audit())
    out = tmp_path / "after.mp4"
    refused = CliRunner().invoke(
        app,
        ["clip", *home.args, "--camera", "porch", "--start", str(later[0].start),
         "--end", str(later[-1].end), "-o", str(out), "--user", "mia", "--password-file", pw],
    )  # fmt: skip
    assert "not granted" in _error(refused)
    assert not out.exists()
    assert home.tags(mark) == [AuditTag.KEY_SHELL_UNLOCK]  # the refusal
    # the owner still opens it
    owner_out = tmp_path / "owner.mp4"
    ok = CliRunner().invoke(
        app,
        ["clip", *home.args, "--camera", "porch", "--start", str(later[0].start),
         "--end", str(later[-1].end), "-o", str(owner_out), "--user", "owner",
         "--password-file", pw],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert _frames(owner_out) > 100


def test_export_of_sealed_footage_with_user_makes_a_verifying_package(
    home: Home, tmp_path: Path
) -> None:
    pw = str(_password_file(tmp_path / "pw"))
    out = tmp_path / "pkg"
    result = CliRunner().invoke(
        app,
        ["export", *home.args, "--camera", "porch", "--start", str(LO), "--end", str(HI),
         "--out", str(out), "--user", "owner", "--password-file", pw, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout[result.stdout.index("{") :])
    keys = load_public_keys(home.settings.keys_dir / "log_public_keys.json")
    report = verify_package_path(Path(info["zip"]), keys)
    assert report.trusted
    clips = sorted((Path(info["package"]) / "clips").glob("*.mp4"))
    assert clips
    assert sum(_frames(c) for c in clips) > 100


def test_an_export_job_over_sealed_footage_fails_at_once_with_a_clear_error(
    home: Home,
) -> None:
    s = home.settings
    with running(s, export_retries=3, retry_delay=0.1) as queue:
        job = queue.enqueue_export(["porch"], LO, HI, actor=OPERATOR, reason="r")
        wait_for("the job's record", lambda: queue.export_record(job) is not None, 60)
        record = queue.export_record(job)
    assert record is not None
    assert (record.state, record.tries) == ("failed", 1)  # not retried
    assert record.error == SEALED_JOB_ERROR
    assert record.package_id is None
    assert not list((s.data_dir / "exports" / job).glob("*.zip"))
    # a queue with its process's services refuses it before queueing
    services = JobServices.open(s)
    queue = JobQueue(s, services=services)
    try:
        with pytest.raises(KeysLockedError, match="export it from the web app"):
            queue.enqueue_export(["porch"], LO, HI, actor=OPERATOR, reason="r")
        assert queue.depth().queued == 0
        assert queue.enqueue_export(["yard"], LO, HI, actor=OPERATOR, reason="r")  # plaintext
    finally:
        queue.close()
        services.close()
