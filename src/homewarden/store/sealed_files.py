"""Sealed segment files on disk: written atomically from a stream, read back by byte range
seeking only to the chunks a range needs.

The format and the cryptography are :mod:`homewarden.crypto.sealing`'s; this adapter only
moves bytes. The layers (DESIGN.md) put ``store`` below ``crypto``, so it does not import
it: the sealer and the opener come in as the small :class:`Sealer` and :class:`RangeOpener`
protocols, which ``SegmentSealer`` and ``SegmentOpener`` satisfy, and the header parser as a
function (``sealing.open_header`` with ``sealing.HEADER_SIZE``). A service wires them::

    sealer = SegmentSealer(household_public_key, identity)
    with SealedFileWriter(path, sealer) as out:   # or write_sealed_file(path, sealer, src)
        out.write(fragment) ...
        out.commit()
    header = read_sealed_header(path, open_header, HEADER_SIZE)
    opener = SegmentOpener(header, household_key, identity)
    data = read_sealed_range(path, opener, start, end)

Writing: the file is ``<path>.part``, created exclusively (``O_EXCL``, never through a
symlink), the sealer's output appended as it comes; :meth:`SealedFileWriter.commit` appends
the last chunk, writes the final header over the placeholder at offset 0, fsyncs the file,
renames it to ``path`` and fsyncs the directory, so ``path`` appears whole or not at all. A
crash leaves the ``.part`` file with the placeholder header: a reader sees an unfinished
segment (see ``sealing``), whose complete chunks can be salvaged with the household key.

Errors: :class:`~homewarden.errors.StorageError` naming the file and the OS's reason (a
full disk said so); what the opener raises (a chunk that does not authenticate, a file cut
short) passes through.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, TypeVar

from homewarden.errors import InvalidRequestError, StorageError

H = TypeVar("H")
#: Bytes read from a source stream at a time by :func:`write_sealed_file`.
READ_BLOCK = 1024 * 1024
#: Buffers per ``writev`` call (Linux's ``IOV_MAX`` is 1024).
_IOV_MAX = 512


class FinishedSeal(Protocol):
    """What a sealer's ``finish`` returns (``sealing.SealedTail``)."""

    @property
    def tail(self) -> bytes:
        """Bytes to append after everything ``push`` returned."""

    @property
    def header(self) -> bytes:
        """The final header, written over the placeholder at offset 0."""

    @property
    def file_size(self) -> int:
        """Bytes of the finished file."""


class Sealer(Protocol):
    """Turns plaintext into sealed file bytes as it comes (``sealing.SegmentSealer``)."""

    def push_parts(self, data: bytes) -> list[bytes]:
        """Bytes to append for ``data``, in parts (the first call's start with the
        placeholder header)."""

    def finish(self) -> FinishedSeal:
        """The last bytes and the final header."""


class RangeOpener(Protocol):
    """Opens plaintext byte ranges of one sealed file (``sealing.SegmentOpener``)."""

    @property
    def plaintext_length(self) -> int:
        """Plaintext bytes the segment holds (readable ones, if unfinished)."""

    @property
    def chunk_size(self) -> int:
        """Plaintext bytes per chunk."""

    def check_file_size(self, size: int) -> None:
        """Raise if a file of ``size`` bytes cannot be this whole segment."""

    def chunk_span(self, start: int, end: int) -> tuple[int, int, tuple[int, int]]:
        """First and last chunk of ``[start, end)`` and their ``[start, end)`` file offsets."""

    def open_range(self, start: int, end: int, ciphertext: bytes) -> bytes:
        """Plaintext ``[start, end)`` from the file bytes of its span."""


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"disk full while {action} {path}")
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_parts(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` in order with ``writev`` (no joined copy); finish a short write."""
    for i in range(0, len(parts), _IOV_MAX):
        batch = parts[i : i + _IOV_MAX]
        written = os.writev(fd, batch)
        for part in batch:
            if written >= len(part):
                written -= len(part)
                continue
            _write_all(fd, part[written:])
            written = 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SealedFileWriter:
    """One sealed file being written to ``<path>.part``; :meth:`commit` puts it in place.

    A file-like sink (:meth:`write`) for whatever produces the plaintext. Leaving the
    ``with`` block without :meth:`commit` (or on an error) calls :meth:`abort`: the ``.part``
    file is removed and nothing appears at ``path``. ``durable=False`` skips both fsyncs, for
    files that may be lost in a power cut (a cache of composed clips): the rename stays
    atomic for readers.

    Raises:
        StorageError: the directory cannot be created, ``<path>.part`` already exists (a
            writer is at work there, or a crash left it for start-up reconciliation), or the
            file cannot be created.
    """

    def __init__(self, path: Path, sealer: Sealer, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self.part_path = path.with_name(path.name + ".part")
        self._sealer = sealer
        self._fd: int | None = None
        self.committed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(
                self.part_path,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o666,
            )
        except FileExistsError as exc:
            raise StorageError(
                f"cannot write {path}: {self.part_path} already exists (being written, or "
                "left by a crash)"
            ) from exc
        except OSError as exc:
            raise _storage_error("create", self.part_path, exc) from exc

    def _open_fd(self) -> int:
        if self._fd is None:
            raise StorageError(f"sealed file {self.path} is already committed or aborted")
        return self._fd

    def write(self, data: bytes) -> int:
        """Seal ``data`` and append the complete chunks; returns ``len(data)``.

        Raises:
            StorageError: the write failed (the ``.part`` file is removed).
        """
        fd = self._open_fd()
        try:
            _write_parts(fd, self._sealer.push_parts(data))
        except OSError as exc:
            self.abort()
            raise _storage_error("write", self.part_path, exc) from exc
        return len(data)

    def commit(self) -> int:
        """Finish: last chunk, final header at offset 0, fsync, rename to ``path``, fsync the
        directory. Returns the file's size in bytes.

        Raises:
            StorageError: finishing failed (the ``.part`` file is removed), or the file is not
                the size the sealer says (it was written to by someone else meanwhile).
        """
        fd = self._open_fd()
        try:
            done = self._sealer.finish()
            _write_all(fd, done.tail)
            os.pwrite(fd, done.header, 0)
            if self.durable:
                os.fsync(fd)
            size = os.fstat(fd).st_size
            if size != done.file_size:
                raise StorageError(
                    f"sealed file {self.part_path} is {size} bytes, expected {done.file_size}"
                )
            os.close(fd)
            self._fd = None
            os.replace(self.part_path, self.path)
            if self.durable:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise _storage_error("finish", self.path, exc) from exc
        except BaseException:
            self.abort()
            raise
        self.committed = True
        return size

    def abort(self) -> None:
        """Stop and remove the ``.part`` file. Safe to call more than once."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if not self.committed:
            with contextlib.suppress(OSError):
                self.part_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            self.abort()


def write_sealed_file(
    path: Path, sealer: Sealer, source: BinaryIO | Iterable[bytes], *, durable: bool = True
) -> int:
    """Seal everything ``source`` yields (a binary file read in 1 MiB blocks, or an iterable
    of byte strings) into ``path`` atomically (fsynced unless ``durable`` is False, see
    :class:`SealedFileWriter`). Returns the file's size in bytes.

    Raises:
        StorageError: as :class:`SealedFileWriter`, or reading ``source`` failed.
    """
    with SealedFileWriter(path, sealer, durable=durable) as out:
        try:
            if hasattr(source, "read"):
                while block := source.read(READ_BLOCK):
                    out.write(block)
            else:
                for block in source:
                    out.write(block)
        except OSError as exc:
            raise StorageError(f"cannot read the footage to seal into {path}: {exc}") from exc
        return out.commit()


def read_sealed_header(path: Path, parse: Callable[[bytes], H], size: int) -> H:
    """``parse`` of the first ``size`` bytes of ``path`` (fewer if the file is shorter: the
    parser says it is cut short).

    Raises:
        StorageError: the file is missing or unreadable.
        What ``parse`` raises (``SealedFormatError``: not a sealed segment, cut short).
    """
    try:
        with path.open("rb") as f:
            data = f.read(size)
    except OSError as exc:
        raise _storage_error("read", path, exc) from exc
    return parse(data)


def _read_exactly(f: BinaryIO, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
    f.seek(offset)
    parts = []
    while length > 0:
        piece = f.read(length)
        if not piece:
            break
        parts.append(piece)
        length -= len(piece)
    return b"".join(parts)


def iter_sealed_range(f: BinaryIO, opener: RangeOpener, start: int, end: int) -> Iterator[bytes]:
    """Plaintext ``[start, end)`` of the open sealed file ``f``, one chunk's worth at a time:
    each piece reads and opens one whole chunk, each needed chunk once, and nothing else of
    the file is read (the header is the caller's, read once). The file's size is checked
    against the header first (``os.fstat``), so a file cut short or extended is refused even
    where the range does not reach its end. Chunk-sized pieces keep memory flat and are the
    fastest way to serve a range (measured: ~1 GB/s of plaintext per core against ~0.4-0.5
    GB/s for the same range read and opened as one piece, whose large fresh buffers cost
    more than the cipher).

    Raises:
        InvalidRequestError: not ``0 <= start <= end <= plaintext_length``.
        StorageError: reading failed.
        SealedTamperedError: the file's size is wrong, or a chunk is cut short or does not
            authenticate (named by ``chunk_index``).
    """
    if not 0 <= start <= end <= opener.plaintext_length:
        raise InvalidRequestError(
            f"byte range [{start}, {end}) is not inside the segment's "
            f"{opener.plaintext_length} bytes"
        )
    try:
        opener.check_file_size(os.fstat(f.fileno()).st_size)
        size = opener.chunk_size
        at = start
        while at < end:
            stop = min(end, at - at % size + size)  # to the end of this chunk
            _first, _last, (lo, hi) = opener.chunk_span(at, stop)
            yield opener.open_range(at, stop, _read_exactly(f, lo, hi - lo))
            at = stop
    except OSError as exc:
        raise StorageError(f"cannot read sealed segment {getattr(f, 'name', f)}: {exc}") from exc


def read_sealed_range(path: Path, opener: RangeOpener, start: int, end: int) -> bytes:
    """Plaintext ``[start, end)`` of sealed file ``path`` as one byte string, seeking only to
    the chunks it needs (see :func:`iter_sealed_range`, better for serving large ranges).

    Raises:
        As :func:`iter_sealed_range`; StorageError also for a missing file.
    """
    try:
        f = path.open("rb")
    except OSError as exc:
        raise _storage_error("read", path, exc) from exc
    with f:
        return b"".join(iter_sealed_range(f, opener, start, end))
