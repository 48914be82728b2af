"""The data dir lock: one holder at a time, named when another is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from homewarden.errors import StorageError
from homewarden.store.lockfile import LOCK_NAME, DataDirLock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path)
    try:
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        # flock(2) locks belong to an open file, so a second open in this process conflicts
        # as another process's would.
        with pytest.raises(StorageError, match=rf"in use .*process {os.getpid()} holds"):
            DataDirLock.acquire(tmp_path)
    finally:
        first.release()
    assert not first.held
    first.release()  # twice is fine
    again = DataDirLock.acquire(tmp_path)  # released: free again
    again.release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    # A process that takes the lock and dies without releasing it (as under kill -9).
    code = (
        "import os, sys; from pathlib import Path; "
        "from homewarden.store.lockfile import DataDirLock; "
        "DataDirLock.acquire(Path(sys.argv[1])); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert (tmp_path / LOCK_NAME).read_text().strip().isdigit()  # its pid is still written
    DataDirLock.acquire(tmp_path).release()


def test_an_unusable_data_dir_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open lock file"):
        DataDirLock.acquire(tmp_path / "missing")
