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

Many recorder nodes (``homewarden run --role recorder``) share one data dir, as on a NAS,
each recording only the cameras it leases from PostgreSQL (:mod:`homewarden.services.leases`).
A node takes :meth:`DataDirLock.acquire_node`: a *shared* ``flock`` on ``homewarden.lock``
(nodes coexist, but a single-node ``--role all`` recorder, whose start-up reconciles every
camera, is refused while any node runs, and the other way round) and an exclusive one on
``nodes/<node>.lock`` (two processes never run as the same node: its leases would be both
processes'). ``flock`` works across hosts on NFSv4 (Linux emulates it with byte-range locks).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path

from homewarden.errors import ConfigError, StorageError

#: Name of the lock file inside the data dir.
LOCK_NAME = "homewarden.lock"
#: Folder of the recorder nodes' own lock files (``<node>.lock``) inside the data dir.
NODE_LOCK_DIR = "nodes"
#: A node name: a host name's characters, as it names a file (default: the host name).
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DataDirLock:
    """The held lock of one data dir. Build with :meth:`acquire`; :meth:`release` when done.

    Attributes:
        path: the lock file (``<data_dir>/homewarden.lock``, or a node's
            ``<data_dir>/nodes/<node>.lock``).
    """

    def __init__(self, path: Path, fd: int, shared_fd: int | None = None) -> None:
        self.path = path
        self._fd: int | None = fd
        self._shared_fd = shared_fd  # a node's shared hold on homewarden.lock

    @classmethod
    def acquire_node(cls, data_dir: Path, node: str) -> DataDirLock:
        """Take a recorder node's locks on ``data_dir`` (which must exist) without waiting: a
        shared lock on ``homewarden.lock`` and the exclusive lock of ``nodes/<node>.lock``
        (created), which gets our pid. See the module docstring.

        Raises:
            ConfigError: ``node`` is not a valid node name.
            StorageError: a single-node recorder (``--role all``) holds the data dir, another
                process runs as ``node`` (the message names its pid), or a lock file cannot be
                opened or written.
        """
        if not _NODE_NAME.match(node):
            raise ConfigError(
                f"node name {node!r}: use 1-128 letters, digits, '.', '-' or '_' "
                "(a host name), starting with a letter or digit"
            )
        main = data_dir / LOCK_NAME
        shared = _open(main)
        try:
            fcntl.flock(shared, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(shared)
            os.close(shared)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder is not None else "another process"
                raise StorageError(
                    f"data dir {data_dir} is in use by a single-node HomeWarden recorder "
                    f"({who} holds {main}); stop it before starting recorder nodes on it"
                ) from exc
            raise StorageError(f"cannot lock {main}: {exc.strerror or exc}") from exc
        path = data_dir / NODE_LOCK_DIR / f"{node}.lock"
        try:
            path.parent.mkdir(exist_ok=True)
        except OSError as exc:
            os.close(shared)
            raise StorageError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
        try:
            fd = _open(path)
        except StorageError:
            os.close(shared)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            os.close(shared)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder is not None else "another process"
                raise StorageError(
                    f"recorder node {node!r} already runs on data dir {data_dir} ({who} holds "
                    f"{path}); stop it first, or name this one otherwise with --node"
                ) from exc
            raise StorageError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        return cls(path, fd, shared)

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Take the lock of ``data_dir`` (which must exist) without waiting; write our pid.

        Raises:
            StorageError: another process holds it (the message names its pid, as written in
                the file), or the lock file cannot be opened or written.
        """
        path = data_dir / LOCK_NAME
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                if holder is None:  # shared holders write no pid
                    who = (
                        f"another process holds {path}; recorder nodes "
                        f"(see {data_dir / NODE_LOCK_DIR}) share it"
                    )
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

    def filenos(self) -> tuple[int, ...]:
        """Every descriptor this hold consists of (a node's: its own lock and its shared hold
        on ``homewarden.lock``); hand all of them to a recorder worker (see :meth:`fileno`).

        Raises:
            RuntimeError: already released.
        """
        fd = self.fileno()
        return (fd,) if self._shared_fd is None else (fd, self._shared_fd)

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
        shared, self._shared_fd = self._shared_fd, None
        if shared is not None:
            os.close(shared)  # never truncated: it holds a single-node recorder's pid, if any


def _open(path: Path) -> int:
    """Open (create) lock file ``path`` for reading and writing.

    Raises:
        StorageError: it cannot be opened.
    """
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc


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
