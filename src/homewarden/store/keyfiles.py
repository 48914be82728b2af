"""Key files of the deployment: secret files kept at mode 0600, public JSON beside them.

Bytes in, bytes out: what the bytes are (Ed25519 seeds, public keys) is the caller's. Every
write is atomic - a reader sees the old file or the new one, never a torn one:

* :func:`create_secret` writes a temporary file created with ``os.open(O_CREAT | O_EXCL,
  0o600)`` (never readable by anyone else, not even for an instant), fsyncs it, then
  ``link``s it to its name, which fails if the name exists - so two processes starting at once
  cannot both create a key, and a crash never leaves a half-written key;
* :func:`replace_secret` and :func:`write_json` write a temporary file the same way and
  ``rename`` it over the old one, then fsync the directory.

:func:`read_secret` refuses a file that is not a regular file owned by this user with no
group or other permission bits (as OpenSSH refuses a private key readable by others).
:func:`locked` serialises key management across threads and processes (``flock``).

Errors: :class:`~homewarden.errors.StorageError` naming the file and the OS's reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from homewarden.errors import StorageError

#: Mode of secret files and of the keys directory.
SECRET_MODE = 0o600
DIR_MODE = 0o700
#: Mode of public files (anyone may read a public key).
PUBLIC_MODE = 0o644
_LOCK_NAME = ".lock"


def ensure_dir(path: Path) -> None:
    """Create the keys directory (mode 0700) if missing.

    Raises:
        StorageError: it cannot be created, or exists and is not a directory.
    """
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create keys directory {path}: {exc.strerror or exc}") from exc


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<directory>/.lock`` (threads and processes wait).

    Raises:
        StorageError: the lock file cannot be opened.
    """
    ensure_dir(directory)
    path = directory / _LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, SECRET_MODE)
    except OSError as exc:
        raise StorageError(f"cannot open lock {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _write_temp(directory: Path, stem: str, data: bytes, mode: int) -> Path:
    """A fsynced new file in ``directory`` with ``data`` and exactly ``mode``."""
    tmp = directory / f".{stem}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exact, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_secret(path: Path, data: bytes) -> bool:
    """Create secret file ``path`` (mode 0600) holding ``data``, unless it exists.

    Returns:
        True when created, False when ``path`` already existed (left untouched).

    Raises:
        StorageError: the file cannot be written.
    """
    ensure_dir(path.parent)
    try:
        tmp = _write_temp(path.parent, path.name, data, SECRET_MODE)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    return True


def replace_secret(path: Path, data: bytes) -> None:
    """Atomically replace (or create) secret file ``path`` (mode 0600) with ``data``.

    Raises:
        StorageError: the file cannot be written.
    """
    _replace(path, data, SECRET_MODE)


def _replace(path: Path, data: bytes, mode: int) -> None:
    ensure_dir(path.parent)
    try:
        tmp = _write_temp(path.parent, path.name, data, mode)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_secret(path: Path) -> bytes | None:
    """The bytes of secret file ``path``, or None when it does not exist.

    Raises:
        StorageError: not a regular file (a symlink is refused), not owned by this user,
            readable or writable by group or others, or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"{path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise StorageError(f"{path} is owned by uid {st.st_uid}, not this user")
        if st.st_mode & 0o077:
            raise StorageError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; a secret key must be 0600 "
                f"(chmod 600 {path})"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def read_json(path: Path) -> Any | None:
    """The parsed JSON file ``path``, or None when it does not exist.

    Raises:
        StorageError: unreadable or not valid JSON.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"{path} is not valid JSON: {exc}") from exc


def write_json(path: Path, data: Any) -> None:
    """Atomically replace ``path`` (mode 0644) with ``data`` as indented, sorted JSON.

    Raises:
        StorageError: the file cannot be written.
    """
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    _replace(path, text.encode("utf-8"), PUBLIC_MODE)
