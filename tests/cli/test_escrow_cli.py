"""``homewarden escrow init`` on a real index (SQLite and PostgreSQL): three custodian shares
printed once, only the public key stored, any two rebuilding it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import app
from homewarden.crypto.household_keys import combine_escrow_shares
from homewarden.domain.audit import AuditTag
from homewarden.errors import KeyShareError
from homewarden.services.audit import AuditLog
from homewarden.store.household_key_store import HouseholdKeyStore
from homewarden.store.index import Index

_SHARE = re.compile(r"custodian (\d): (HWES-\S+)")


@pytest.fixture(autouse=True)
def _no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("HOMEWARDEN_")]:
        monkeypatch.delenv(key)


def test_escrow_init_prints_three_shares_once_and_keeps_only_the_public_key(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    monkeypatch.setenv("HOMEWARDEN_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["escrow", "init", *args])
    assert result.exit_code == 0, result.output
    shares = dict(_SHARE.findall(result.output))
    assert sorted(shares) == ["1", "2", "3"]
    again = CliRunner().invoke(app, ["escrow", "init", *args])
    assert again.exit_code != 0
    assert "already" in again.output
    assert not _SHARE.search(again.output)
    index = Index(database_url)
    try:
        stored = HouseholdKeyStore(index).escrow_key()
        assert stored is not None
        assert stored.key_id.hex() in result.output
        for pair in (("1", "2"), ("2", "3"), ("1", "3")):
            rebuilt = combine_escrow_shares([shares[pair[0]], shares[pair[1]]])
            assert rebuilt.key_id == stored.key_id
            assert bytes(rebuilt.public) == stored.public_key
            # the private key is nowhere in the data dir
            raw = bytes(rebuilt.private)
            for path in data.rglob("*"):
                if path.is_file():
                    assert raw not in path.read_bytes(), path
        with pytest.raises(KeyShareError):
            combine_escrow_shares([shares["1"]])
        with AuditLog.open(database_url, data / "keys") as audit:
            actions = [audit.entry(i).action for i in range(audit.size())]
        assert AuditTag.KEY_ESCROW_CREATE in actions
    finally:
        index.close()
