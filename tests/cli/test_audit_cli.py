"""``homewarden audit verify|proof|sth|rotate-key`` on a real SQLite log, tampered directly."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import EXIT_VERIFY_FAILED, app
from homewarden.crypto import merkle
from homewarden.crypto.signing import SignedTreeHead, log_public_key_from_bytes, verify_tree_head
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.services.audit import PUBLIC_KEYS_FILE, AuditLog
from homewarden.store.index import Index

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
def data(tmp_path: Path) -> Path:
    """A data dir whose audit log holds 12 clip entries (plus the key's creation)."""
    data = tmp_path / "data"
    db = data / "homewarden.db"
    index = Index(f"sqlite:///{db}")
    index.migrate()
    index.close()
    with AuditLog.open(f"sqlite:///{db}", data / "keys") as log:
        log.ensure_key()
        op = Actor(ActorKind.LOCAL_OPERATOR, "127.0.0.1")
        for i in range(12):
            log.append(
                AuditTag.FOOTAGE_CLIP_DOWNLOAD, op, "api", camera="front", start=i, end=i + 1
            )
    return data


def run(*args: str) -> tuple[int, dict, str]:
    result = CliRunner().invoke(app, list(args))
    stdout = result.stdout.strip()
    return result.exit_code, (json.loads(stdout) if stdout else {}), result.stderr


def public_keys(data: Path) -> dict:
    listed = json.loads((data / "keys" / PUBLIC_KEYS_FILE).read_text())["log_public_keys"]
    return {
        bytes.fromhex(k["key_id"]): log_public_key_from_bytes(bytes.fromhex(k["public_key"]))
        for k in listed
    }


def test_sth_proof_verify_round_trip(data: Path) -> None:
    code, out, _ = run("audit", "sth", "--data-dir", str(data))
    assert code == 0
    sth = SignedTreeHead.from_json(out["tree_head"])
    assert sth.tree_size == 13
    verify_tree_head(sth, public_keys(data))  # checkable with nothing but the public key

    code, out, _ = run("audit", "proof", "--data-dir", str(data), "--index", "5")
    assert code == 0
    proof = out["proof"]
    assert out["tree_head"] == sth.to_json()
    leaf = base64.b64decode(proof["leaf"])
    assert json.loads(leaf) == proof["entry"]
    assert merkle.leaf_hash(leaf).hex() == proof["leaf_hash"]
    merkle.verify_inclusion(
        5, 13, merkle.leaf_hash(leaf), [bytes.fromhex(h) for h in proof["path"]], sth.root_hash
    )

    code, out, _ = run("audit", "verify", "--data-dir", str(data))
    assert code == 0
    assert out["ok"] is True
    assert out["size"] == 13
    assert out["tree_heads_checked"] == 1


def test_proof_beyond_the_newest_head_signs_a_new_one(data: Path) -> None:
    assert run("audit", "sth", "--data-dir", str(data))[0] == 0
    with AuditLog.open(f"sqlite:///{data / 'homewarden.db'}", data / "keys") as log:
        log.append(AuditTag.FOOTAGE_SNAPSHOT_VIEW, Actor(ActorKind.LOCAL_OPERATOR, "::1"), "api")
    code, out, _ = run("audit", "proof", "--data-dir", str(data), "--index", "13")
    assert code == 0
    assert out["tree_head"]["tree_size"] == 14
    code, out, _ = run("audit", "proof", "--data-dir", str(data), "--index", "2", "--size", "7")
    assert code == 0
    assert out["tree_head"] is None  # no head was signed at size 7; the root is still given
    assert out["proof"]["tree_size"] == 7


def test_verify_fails_after_tampering_with_the_first_bad_index(data: Path) -> None:
    assert run("audit", "sth", "--data-dir", str(data))[0] == 0
    db = sqlite3.connect(data / "homewarden.db")
    (leaf,) = db.execute("SELECT leaf FROM audit_entries WHERE idx = 7").fetchone()
    db.execute(
        "UPDATE audit_entries SET leaf = ? WHERE idx = 7",
        (bytes(leaf).replace(b'"camera":"front"', b'"camera":"attic"'),),
    )
    db.commit()
    db.close()
    code, out, err = run("audit", "verify", "--data-dir", str(data))
    assert code == EXIT_VERIFY_FAILED
    assert out["ok"] is False
    assert out["first_bad_index"] == 7
    assert "first bad index is 7" in err


def test_verify_from_a_saved_head(data: Path, tmp_path: Path) -> None:
    code, out, _ = run("audit", "sth", "--data-dir", str(data))
    saved = tmp_path / "sth.json"
    saved.write_text(json.dumps(out))
    code, out, _ = run("audit", "verify", "--data-dir", str(data), "--from-sth", str(saved))
    assert code == 0
    assert out["from_sth"]["tree_size"] == 13
    # the log loses its last entries and every stored head: only the saved head can tell
    db = sqlite3.connect(data / "homewarden.db")
    db.execute("DELETE FROM audit_entries WHERE idx >= 10")
    db.execute("DELETE FROM audit_nodes WHERE ((idx + 1) << level) > 10")  # no trace left
    db.execute("DELETE FROM audit_tree_heads")
    db.execute("UPDATE audit_state SET size = 10")
    db.commit()
    db.close()
    assert run("audit", "verify", "--data-dir", str(data))[0] == 0
    code, out, _ = run("audit", "verify", "--data-dir", str(data), "--from-sth", str(saved))
    assert code == EXIT_VERIFY_FAILED
    assert out["first_bad_index"] == 10
    saved.write_text('{"tree_size": 1}')
    code, _, err = run("audit", "verify", "--data-dir", str(data), "--from-sth", str(saved))
    assert code == 2
    assert "sth.json" in err


def test_rotate_key_keeps_verification(data: Path) -> None:
    first = run("audit", "sth", "--data-dir", str(data))[1]["tree_head"]
    code, out, _ = run("audit", "rotate-key", "--data-dir", str(data), "--reason", "yearly")
    assert code == 0
    assert out["old_key_id"] == first["key_id"]
    assert out["new_key_id"] != first["key_id"]
    assert out["tree_head"]["key_id"] == out["new_key_id"]
    code, report, _ = run("audit", "verify", "--data-dir", str(data))
    assert code == 0
    assert report["public_keys"] == 2
    assert report["tree_heads_checked"] == 3  # before, at the rotation (old key), after (new)


def test_audit_commands_need_an_index(tmp_path: Path) -> None:
    code, _, err = run("audit", "verify", "--data-dir", str(tmp_path / "none"))
    assert code == 2
    assert "homewarden run" in err
