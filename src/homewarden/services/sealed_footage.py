"""Footage sealed at rest (DESIGN.md flow 8; issue 6, step 3), behind ``storage.sealed``.

Writing. The recorder writes each segment as before, as fragmented MP4 to the plaintext
``<start>.mp4.part`` (the live view tails it while it grows), in a private directory on the
memory file system, never on the disk (:func:`homewarden.services.recorder.live_parts_dir`;
the media dir only where no memory file system is usable), and when the segment closes
:func:`seal_segment_file` seals it to the household's current public key
(:meth:`RecordingKeySource.recording_key`: no secret needed, so the recorder can write but
not read) into ``<start>.hwseal`` (written atomically through
:class:`~homewarden.store.sealed_files.SealedFileWriter`: ``<start>.hwseal.part``, fsync,
rename), then deletes the plaintext. The seal binds the segment's identity: its path
relative to the media dir (the index's ``path``), camera and start (the index's ``start``),
so a file renamed, moved or swapped with another does not open. The index records
``sealed`` and the key id (migration 0009). If sealing fails the plaintext is deleted all
the same and the segment is lost (the recorder records the outage as a gap): plaintext
never stays on disk after its segment closes. After a crash, start-up reconciliation
deletes a leftover plaintext ``.part`` (in memory, or in the media dir when sealing is on;
``services.reconcile``).

Why seal on close rather than while writing: the live view follows the plaintext ``.part``
as it grows (sealed chunks would reach it a whole 256 KiB chunk late), and sealing the
finished file costs one read of it (still in the page cache), the cipher and an fsync:
``bench/sealed_recording.py`` measured ~4-5 ms per segment and no CPU difference beyond
the run's noise between a plain and a sealed recorder side by side (ratio 0.88-0.94), so
sealing while writing (a PyAV output to a file object feeding the sealer) would save
nothing worth losing the live view's tail for. The plaintext of the segment being recorded
is in memory for its ~10 s (the recorder holds it in any case); never after it closes, and
never on the disk.

Reading. :func:`open_sealed_segment` opens a sealed segment with the household key version
it is sealed to, as unlocked for the requesting session (:class:`SessionKeys` over
:meth:`~homewarden.services.household_keys.KeyRing.private_key`); the plaintext is returned
in memory, never written to disk; event snapshots likewise (:func:`seal_snapshot`,
:func:`open_sealed_snapshot`: the JPEG is sealed in memory, never written in the clear). No
session (an API token, the CLI, a session whose keys
were never unlocked here) is :class:`~homewarden.errors.KeysLockedError`: "sign in again to
unlock the household keys". A segment that does not open (a byte changed, truncated, renamed,
the wrong key) raises the :class:`~homewarden.errors.SealedDataError` of
:mod:`homewarden.crypto.sealing` with a message naming the segment, and is logged as an
error; nothing of it is played. Clips composed from sealed segments are kept in the
serving process's memory only, never written to disk in the clear
(:meth:`~homewarden.services.queries.Queries.clip_chunks`).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from homewarden.crypto.household_keys import (
    HouseholdKeyPair,
    HouseholdPublicKey,
    KeyId,
    household_public_key_from_bytes,
)
from homewarden.crypto.sealing import (
    HEADER_SIZE,
    SegmentIdentity,
    SegmentOpener,
    SegmentSealer,
    open_header,
)
from homewarden.errors import (
    KeysLockedError,
    NotFoundError,
    SealedDataError,
    StorageError,
)
from homewarden.store.accounts_store import SessionRecord
from homewarden.store.household_key_store import HouseholdKeyStore
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord
from homewarden.store.sealed_files import read_sealed_header, read_sealed_range, write_sealed_file

log = logging.getLogger(__name__)

#: File name suffix of a sealed segment (``<start>.hwseal``; a plaintext one is ``.mp4``).
SEALED_SUFFIX = ".hwseal"
#: The start bound into a sealed snapshot's identity (see :func:`seal_snapshot`).
SNAPSHOT_START = 0.0
#: What a caller without unlocked household keys is told.
SIGN_IN_AGAIN = "sign in again to unlock the household keys"

#: Opens household key version ``key_id`` (16 bytes) of ``household`` for the caller.
#: Raises KeysLockedError (nothing unlocked) or KeyUnavailableError (not held).
KeySource = Callable[[str, bytes], HouseholdKeyPair]


class RecordingKeySource(Protocol):
    """Where the recorder gets the public key new footage is sealed to
    (:class:`~homewarden.services.household_keys.KeyRing`, or :class:`StoredRecordingKeys`)."""

    def recording_key(self, household: str) -> tuple[KeyId, HouseholdPublicKey]:
        """The household's current key id and public key.

        Raises:
            NotFoundError: the household has no key yet.
        """


class StoredRecordingKeys:
    """:meth:`KeyRing.recording_key` straight from the household key tables, for recorder
    worker processes, which hold no key ring (no accounts, no sessions: no secret at all)."""

    def __init__(self, index: Index) -> None:
        self._store = HouseholdKeyStore(index)

    def recording_key(self, household: str) -> tuple[KeyId, HouseholdPublicKey]:
        """The household's current key id (16 bytes) and public key.

        Raises:
            NotFoundError: the household has no key (the runtime makes one at start).
        """
        cur = self._store.current(household)
        if cur is None:
            raise NotFoundError(f"household {household!r} has no key yet")
        return KeyId(cur.key_id), household_public_key_from_bytes(cur.public_key)


@dataclass(frozen=True, slots=True)
class SegmentSealing:
    """How one camera's segments are sealed: to ``household``'s current key from ``keys``."""

    household: str
    keys: RecordingKeySource


@dataclass(frozen=True, slots=True)
class SealedSegmentFile:
    """A sealed segment written: ``path`` relative to the media dir, ``bytes`` on disk and
    the ``key_id`` (16 bytes) it is sealed to."""

    path: str
    bytes: int
    key_id: builtins.bytes


def sealed_relpath(plain_relpath: str) -> str:
    """``<camera>/<day>/<hour>/<start>.hwseal`` for the plaintext ``<start>.mp4`` path."""
    return plain_relpath.removesuffix(".mp4") + SEALED_SUFFIX


def seal_segment_file(
    plaintext: Path,
    media_dir: Path,
    plain_relpath: str,
    camera: str,
    start: float,
    sealing: SegmentSealing,
) -> SealedSegmentFile:
    """Seal the finished plaintext segment file ``plaintext`` to the household's current key
    as ``media_dir / sealed_relpath(plain_relpath)``, bound to that path, ``camera`` and
    ``start`` (UTC epoch s, the index's), then delete ``plaintext`` (also when sealing fails).

    Raises:
        StorageError: the household has no key, or the file cannot be read or written (the
            plaintext is deleted all the same: the segment is lost, never kept in the clear).
    """
    rel = sealed_relpath(plain_relpath)
    try:
        key_id, public = sealing.keys.recording_key(sealing.household)
        sealer = SegmentSealer(public, SegmentIdentity(rel, camera, start))
        with plaintext.open("rb") as source:
            size = write_sealed_file(media_dir / rel, sealer, source)
    except OSError as exc:
        raise StorageError(f"cannot seal segment {rel}: {exc.strerror or exc}") from exc
    except NotFoundError as exc:
        raise StorageError(f"cannot seal segment {rel}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            plaintext.unlink(missing_ok=True)
    return SealedSegmentFile(rel, size, bytes(key_id))


def seal_snapshot(
    jpeg: bytes, snapshot_dir: Path, plain_relpath: str, camera: str, sealing: SegmentSealing
) -> str:
    """Seal an event snapshot ``jpeg`` (bytes, never written in the clear) to the household's
    current key as ``snapshot_dir / (plain_relpath + ".hwseal")`` (atomic, fsynced); returns
    that path relative to ``snapshot_dir``. Same format as a segment (one chunk), bound to
    that path, ``camera`` and :data:`SNAPSHOT_START` (the event's times live in the index and
    may still be refined when the snapshot is written).

    Raises:
        StorageError: the household has no key, or the file cannot be written.
    """
    rel = plain_relpath + SEALED_SUFFIX
    try:
        key_id, public = sealing.keys.recording_key(sealing.household)
    except NotFoundError as exc:
        raise StorageError(f"cannot seal snapshot {rel}: {exc}") from exc
    del key_id  # the header names it; readers take it from there
    sealer = SegmentSealer(public, SegmentIdentity(rel, camera, SNAPSHOT_START))
    write_sealed_file(snapshot_dir / rel, sealer, [jpeg])
    return rel


def open_sealed_snapshot(
    snapshot_dir: Path, relpath: str, camera: str, household: str, keys: KeySource | None
) -> bytes:
    """The JPEG of sealed snapshot ``relpath`` (relative to ``snapshot_dir``) of ``camera``,
    in memory. The key version is the one its header names.

    Raises:
        KeysLockedError, KeyUnavailableError: as :func:`open_sealed_segment`.
        StorageError: the file is missing or unreadable.
        SealedDataError: it does not open (tampered, renamed); logged.
    """
    if keys is None:
        raise KeysLockedError(f"{SIGN_IN_AGAIN}: snapshot {relpath} is sealed")
    path = snapshot_dir / relpath
    try:
        header = read_sealed_header(path, open_header, HEADER_SIZE)
        key = keys(household, header.key_id)
        opener = SegmentOpener(header, key, SegmentIdentity(relpath, camera, SNAPSHOT_START))
        return read_sealed_range(path, opener, 0, opener.plaintext_length)
    except SealedDataError as exc:
        log.error("sealed snapshot %s of camera %s does not open: %s", relpath, camera, exc)
        raise type(exc)(
            f"sealed snapshot {relpath} of camera {camera} does not open and is not shown: {exc}",
            reason=exc.reason,
            chunk_index=exc.chunk_index,
        ) from exc


class SessionKeys:
    """A :data:`KeySource` of one signed-in session: the household keys its password login
    unlocked into this process's memory (``KeyRing.private_key``); ``session`` None (an API
    token, a session never unlocked) or no ring is :class:`KeysLockedError`."""

    def __init__(self, ring: _PrivateKeys | None, session: SessionRecord | str | None) -> None:
        self._ring = ring
        self._session = session

    def __call__(self, household: str, key_id: bytes) -> HouseholdKeyPair:
        """Household key version ``key_id`` of ``household`` for the session.

        Raises:
            KeysLockedError: no session, or its keys are not unlocked here.
            KeyUnavailableError: the session's person holds no such key (revoked, ...).
        """
        if self._ring is None or self._session is None:
            raise KeysLockedError(
                f"{SIGN_IN_AGAIN}: sealed footage opens only in a session signed in with its "
                "password on this server (never with an API token)"
            )
        return self._ring.private_key(self._session, household, key_id)


class _PrivateKeys(Protocol):
    def private_key(
        self, session: SessionRecord | str, household: str, key_id: bytes | str
    ) -> HouseholdKeyPair:
        """``KeyRing.private_key``."""


def locked(reason: str = "") -> KeySource:
    """A :data:`KeySource` that opens nothing (:class:`KeysLockedError` naming ``reason``)."""

    def source(household: str, key_id: bytes) -> HouseholdKeyPair:
        raise KeysLockedError(SIGN_IN_AGAIN + (f": {reason}" if reason else ""))

    return source


def identity_of(seg: SegmentRecord) -> SegmentIdentity:
    """The identity bound into ``seg``'s seal (its path, camera and start)."""
    return SegmentIdentity(seg.path, seg.camera, seg.start)


def open_sealed_segment(
    media_dir: Path, seg: SegmentRecord, household: str, keys: KeySource | None
) -> bytes:
    """The plaintext of sealed segment ``seg`` (of a camera of ``household``), in memory,
    every chunk authenticated.

    Raises:
        KeysLockedError: ``keys`` is None, or the session is not unlocked.
        KeyUnavailableError: the caller holds no key of the version it is sealed to.
        StorageError: the file is missing or unreadable.
        SealedDataError: it does not open (tampered, truncated, renamed, not sealed):
            ``SealedTamperedError`` and its kin, the message naming the segment; logged.
    """
    if not seg.sealed or seg.key_id is None:
        raise StorageError(f"segment {seg.path} is not sealed")
    if keys is None:
        raise KeysLockedError(f"{SIGN_IN_AGAIN}: segment {seg.path} is sealed")
    key = keys(household, seg.key_id)
    path = media_dir / seg.path
    try:
        header = read_sealed_header(path, open_header, HEADER_SIZE)
        opener = SegmentOpener(header, key, identity_of(seg))
        return read_sealed_range(path, opener, 0, opener.plaintext_length)
    except SealedDataError as exc:
        log.error(
            "sealed segment %s of camera %s (id %d) does not open, not played: %s",
            seg.path,
            seg.camera,
            seg.id,
            exc,
        )
        raise type(exc)(
            f"sealed segment {seg.path} of camera {seg.camera} does not open and is not "
            f"played: {exc}",
            reason=exc.reason,
            chunk_index=exc.chunk_index,
        ) from exc


def segment_reader(
    media_dir: Path, household_of: Callable[[str], str], keys: KeySource | None
) -> Callable[[SegmentRecord], bytes]:
    """:func:`open_sealed_segment` bound to a media dir, camera->household and a key
    source, for readers that open many segments."""

    def read(seg: SegmentRecord) -> bytes:
        return open_sealed_segment(media_dir, seg, household_of(seg.camera), keys)

    return read
