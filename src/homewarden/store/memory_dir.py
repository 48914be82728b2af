"""Private directories on a memory file system, for plaintext that must never reach a disk.

With footage sealed at rest (``storage.sealed``, DESIGN.md flow 8, issue 6) two kinds of
plaintext exist only for moments: the segment being recorded (the live view follows it while
it grows; :mod:`homewarden.services.recorder`) and a clip being composed from sealed segments
(:meth:`homewarden.services.queries.Queries.clip_chunks`). Both are written to a memory file
system instead of the data dir, so no plaintext frame is ever on a disk or left in its free
blocks; after a power cut there is nothing to find.

The memory file system (:func:`memory_root`) is the first of ``/dev/shm`` and
``$XDG_RUNTIME_DIR`` (systemd's per-user ``/run/user/<uid>``) that is a directory this
process may write, on ``tmpfs`` or ``ramfs`` as ``/proc/self/mounts`` says (a plain
directory of that name on a disk does not count). None of them (not Linux, a container
without ``/dev/shm``): callers fall back to the disk and say so.

:func:`deployment_dir` names one directory per deployment and user on it,
``homewarden-<uid>-<first 16 hex of SHA-256 of the resolved data path>``: deterministic, so
every process of a deployment on one machine (the web app, recorder worker processes,
``--role recorder`` nodes sharing the data dir) finds the same one without being told; the
user id keeps two users' deployments apart. ``/dev/shm`` is writable by everyone, so such a
name can be taken first by another user: :func:`private_dir` makes each directory with mode
0700 and accepts it only when it is a real directory (no symlink) owned by this user with no
access for anyone else; a squatted one is refused, never used.

Run the service as a system user: systemd-logind's ``RemoveIPC=yes`` (the default) deletes a
*regular* user's files in ``/dev/shm`` when its last login session ends.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from homewarden.errors import StorageError

#: The shared-memory file system of Linux (``tmpfs``).
SHM_DIR = Path("/dev/shm")  # noqa: S108 (only private 0700 directories are made in it)
#: The environment variable naming the user's runtime directory (a ``tmpfs`` under systemd),
#: used when :data:`SHM_DIR` cannot be.
RUNTIME_DIR_ENV = "XDG_RUNTIME_DIR"
#: File system types that keep their files in memory only (``/proc/self/mounts`` names).
MEMORY_FS_TYPES = frozenset({"tmpfs", "ramfs"})
#: The table of mounted file systems read by :func:`is_memory_fs`.
MOUNTS = Path("/proc/self/mounts")
#: Name prefix of the per-deployment directories of :func:`deployment_dir`.
DEPLOYMENT_PREFIX = "homewarden-"
#: Mode of every private directory.
PRIVATE_MODE = 0o700


def memory_candidates() -> list[Path]:
    """Where a memory file system is looked for, in order: :data:`SHM_DIR`, then
    ``$XDG_RUNTIME_DIR`` when set to an absolute path."""
    found = [SHM_DIR]
    runtime = os.environ.get(RUNTIME_DIR_ENV, "")
    if runtime and os.path.isabs(runtime):
        found.append(Path(runtime))
    return found


def _unescape(field: str) -> str:
    # /proc/self/mounts writes space, tab, newline and backslash as octal escapes (\040 ...)
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def is_memory_fs(path: Path) -> bool:
    """Whether ``path`` (resolved) lies on a :data:`MEMORY_FS_TYPES` file system: the type of
    the longest mount point containing it in :data:`MOUNTS` (the last one mounted there
    wins). False when the table cannot be read (not Linux)."""
    try:
        target = os.path.realpath(path)
        lines = MOUNTS.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    best, kind = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in MEMORY_FS_TYPES


def memory_root() -> Path | None:
    """The first of :func:`memory_candidates` that is a directory this process may write and
    search, on a memory file system; None when there is none."""
    for candidate in memory_candidates():
        if (
            candidate.is_dir()
            and os.access(candidate, os.W_OK | os.X_OK)
            and is_memory_fs(candidate)
        ):
            return candidate
    return None


def deployment_dir(root: Path, data_path: Path) -> Path:
    """``root / homewarden-<uid>-<hash>``: the directory of the deployment whose data lives
    at ``data_path`` (hashed resolved, so every process naming it finds the same one);
    only the name, nothing is made or checked (see :func:`private_dir`)."""
    digest = hashlib.sha256(os.fsencode(data_path.resolve())).hexdigest()[:16]
    return root / f"{DEPLOYMENT_PREFIX}{os.getuid()}-{digest}"


def _check_private(path: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{path} is not a directory (a symlink or a file took its name)")
    if st.st_uid != os.getuid():
        raise StorageError(f"{path} belongs to user {st.st_uid}, not to this one")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, PRIVATE_MODE)  # ours: close it (a umask, an older version)


def private_dir(base: Path, *parts: str, create: bool) -> Path | None:
    """``base / parts...``, each level a private directory of this user (mode 0700, no
    symlink, see the module docstring); with ``create`` the missing levels are made. None
    when, without ``create``, a level does not exist yet.

    Raises:
        StorageError: a level exists but is not this user's private directory (it is never
            used then), or it cannot be made.
    """
    for _attempt in range(3):  # again from the top when a stopping recorder removed a level
        path = base
        try:
            for name in parts:
                path = path / name
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(path, PRIVATE_MODE)
                _check_private(path)
            return path
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            raise StorageError(f"cannot make the private directory {path}: {exc}") from exc
    raise StorageError(f"cannot make the private directory {path}: it keeps vanishing")


def remove_empty(path: Path, *, up_to: Path) -> None:
    """Remove ``path`` and then its parents below ``up_to`` while they are empty (a
    directory another process writes into meanwhile stays; nothing is ever forced)."""
    while path != up_to and up_to in path.parents:
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return  # not empty (or not ours to remove): leave it and its parents
        path = path.parent
