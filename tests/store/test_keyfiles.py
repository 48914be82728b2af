"""Key files: 0600 secrets created atomically, refused when others can read them."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from homewarden.errors import StorageError
from homewarden.store import keyfiles


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_secret_is_0600_and_never_overwrites(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask cannot widen it
    try:
        path = tmp_path / "keys" / "k"
        assert keyfiles.create_secret(path, b"first") is True
        assert keyfiles.create_secret(path, b"second") is False
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert keyfiles.read_secret(path) == b"first"
    assert [p.name for p in path.parent.iterdir()] == ["k"]  # no temp file left


def test_racing_creators_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "k"
    won: list[bytes] = []

    def create(data: bytes) -> None:
        if keyfiles.create_secret(path, data):
            won.append(data)

    threads = [threading.Thread(target=create, args=(bytes([i]) * 32,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert keyfiles.read_secret(path) == won[0]


def test_read_secret_refuses_loose_modes_and_symlinks(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keyfiles.create_secret(path, b"s")
    path.chmod(0o640)
    with pytest.raises(StorageError, match=r"0640.*0600"):
        keyfiles.read_secret(path)
    path.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(StorageError):
        keyfiles.read_secret(link)
    assert keyfiles.read_secret(tmp_path / "missing") is None


def test_replace_secret_and_json(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keyfiles.replace_secret(path, b"a")
    keyfiles.replace_secret(path, b"b")
    assert keyfiles.read_secret(path) == b"b"
    assert _mode(path) == 0o600
    pub = tmp_path / "p.json"
    assert keyfiles.read_json(pub) is None
    keyfiles.write_json(pub, {"b": 1, "a": [2]})
    assert keyfiles.read_json(pub) == {"a": [2], "b": 1}
    assert _mode(pub) == 0o644
    pub.write_text("{not json")
    with pytest.raises(StorageError, match="not valid JSON"):
        keyfiles.read_json(pub)


def test_locked_serialises(tmp_path: Path) -> None:
    inside = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, peak
        with keyfiles.locked(tmp_path):
            with lock:
                inside += 1
                peak = max(peak, inside)
            threading.Event().wait(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1
