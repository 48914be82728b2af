"""An exclusive lock on a data dir, so two recorders never share one.

Two ``homewarden run`` processes on one data dir corrupt each other: the second one's start-up
reconciliation takes the first one's segment in progress (``.part``) for a crash leftover and
indexes or renames it under the first recorder's feet, and both write events and gaps for the
same cameras. :class:`DataDirLock` is an advisory ``flock(2)`` on ``<data_dir>/homewarden.lock``
taken without blocking and held for the life of the recorder; the holder's pid is written into
the file so the refusal can name it. The kernel drops the lock when the holder exits, however it
exits (``kill -9`` included), so a stale lock file never blocks a restart. The file itself is
left in place on release: unlinking a lock file lets a third process lock a fresh inode while a
second still waits on the old one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from homewarden.errors import StorageError

#: Name of the lock file inside the data dir.
LOCK_NAME = "homewarden.lock"


class DataDirLock:
    """The held lock of one data dir. Build with :meth:`acquire`; :meth:`release` when done.

    Attributes:
        path: the lock file (``<data_dir>/homewarden.lock``).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Take the lock of ``data_dir`` (which must exist) without waiting; write our pid.

        Raises:
            StorageError: another process holds it (the message names its pid, as written in
                the file), or the lock file cannot be opened or written.
        """
        path = data_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                if holder is None:
                    who = f"another process holds {path}"
                elif _alive(holder):
                    who = f"process {holder} holds {path}"
                else:  # its recorder worker processes, which share the lock, still finish
                    who = f"process {holder} has exited, its recorder processes still hold {path}"
                raise StorageError(
                    f"data dir {data_dir} is in use by another HomeWarden recorder ({who}); "
                    "stop it first, or give this one another --data-dir"
                ) from exc
            raise StorageError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)  # closing drops the lock
            raise StorageError(f"cannot write lock file {path}: {exc.strerror or exc}") from exc
        return cls(path, fd)

    def fileno(self) -> int:
        """The descriptor holding the lock. A process handed a duplicate of it (a recorder
        worker) holds the same lock until it closes it: the lock is released only when every
        duplicate is closed, so no other recorder can start while an orphaned worker still
        finishes its segment.

        Raises:
            RuntimeError: already released.
        """
        if self._fd is None:
            raise RuntimeError(f"lock {self.path} was released")
        return self._fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (the file stays). Safe to call more than once."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):  # the lock goes with the descriptor anyway
                os.ftruncate(fd, 0)
            os.close(fd)


def _alive(pid: int) -> bool:
    """True if a process ``pid`` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(fd: int) -> int | None:
    """The pid written in the lock file, or None if unreadable or not (yet) written."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
