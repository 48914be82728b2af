"""Recorder nodes' data dir locks: nodes share a data dir, a node name is one process's, and a
single-node recorder (``--role all``) and recorder nodes exclude each other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from homewarden.errors import ConfigError, StorageError
from homewarden.store.lockfile import LOCK_NAME, NODE_LOCK_DIR, DataDirLock


def test_nodes_share_a_data_dir_but_not_a_name(tmp_path: Path) -> None:
    one = DataDirLock.acquire_node(tmp_path, "n1")
    two = DataDirLock.acquire_node(tmp_path, "n2")
    try:
        assert (tmp_path / NODE_LOCK_DIR / "n1.lock").read_text() == f"{os.getpid()}\n"
        assert len(one.filenos()) == 2
        with pytest.raises(StorageError, match=rf"node 'n1' already runs .*process {os.getpid()}"):
            DataDirLock.acquire_node(tmp_path, "n1")
    finally:
        one.release()
        two.release()
    DataDirLock.acquire_node(tmp_path, "n1").release()  # free again
    with pytest.raises(RuntimeError):
        one.filenos()


def test_a_single_node_recorder_and_recorder_nodes_exclude_each_other(tmp_path: Path) -> None:
    node = DataDirLock.acquire_node(tmp_path, "n1")
    try:
        with pytest.raises(StorageError, match="recorder nodes"):
            DataDirLock.acquire(tmp_path)
    finally:
        node.release()
    single = DataDirLock.acquire(tmp_path)
    try:
        with pytest.raises(StorageError, match=rf"single-node .*process {os.getpid()}"):
            DataDirLock.acquire_node(tmp_path, "n1")
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"  # a node erased nothing
    finally:
        single.release()


def test_a_killed_node_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; "
        "from homewarden.store.lockfile import DataDirLock; "
        "DataDirLock.acquire_node(Path(sys.argv[1]), 'n1'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    DataDirLock.acquire_node(tmp_path, "n1").release()
    DataDirLock.acquire(tmp_path).release()


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-x", "x" * 129, "a b"])
def test_a_node_name_must_be_a_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="node name"):
        DataDirLock.acquire_node(tmp_path, name)
