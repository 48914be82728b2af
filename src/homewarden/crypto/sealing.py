"""Sealed segments (DESIGN.md flow 8): footage encrypted at rest so that the recorder, which
holds only the household public key, can write it but not read it, while a byte range can be
served by decrypting only the chunks it needs.

Pure: bytes in, bytes out, no I/O (``homewarden.store.sealed_files`` writes and reads the
files). Openers raise a :class:`~homewarden.errors.SealedDataError` subclass naming the chunk
(``chunk_index``; None for the header) and the reason; they never return None or False.

Construction
------------
Each segment gets a fresh random 32-byte segment key ``K``, sealed to the household X25519
public key with libsodium's ``crypto_box_seal`` (an anonymous sealed box: only the household
private key opens it). Two subkeys are derived from ``K`` as libsodium's ``crypto_kdf`` does,
keyed BLAKE2b with a personalisation per purpose (RFC 7693): ``chunk_key`` encrypts chunks,
``header_key`` authenticates the header.

The plaintext is cut into chunks of ``chunk_size`` bytes (the last one 0..``chunk_size``; an
empty segment has one empty chunk; a length that is an exact multiple ends on a full chunk).
libsodium's secretstream state depends on every earlier message, which would force a reader to
decrypt from the start, so every chunk is its own secretstream (XChaCha20-Poly1305,
``crypto_secretstream_xchacha20poly1305``) under ``chunk_key`` with a fresh random 24-byte
stream header, holding one message tagged ``TAG_FINAL``. The message's associated data is::

    context (32) || chunk index (uint32) || is_last (uint8: 1 for the last chunk, else 0)
    context = BLAKE2b-256(header bytes 0..107 || identity), personalised "hwseal-context"

so a chunk opens only at its own index, in its own segment (another segment has another
``K`` and another context), as last only if it was sealed as last (truncating whole chunks or
appending some fails), and only under the identity it was sealed with (segment id, camera,
start: a renamed or moved segment fails). The immutable part of the header (format, chunk
size, key id, sealed key) is in every chunk's context; the fields known only at the end
(length, chunk count) are covered by the header tag, a keyed BLAKE2b-256 under ``header_key``
over header bytes 0..119 and the identity, checked before any chunk is opened.

Identity encoding (bound, never stored in the file: the caller brings it from the index)::

    uint16 length || segment id (UTF-8) || uint16 length || camera (UTF-8)
    || int64 start in microseconds (round(start * 1e6); UTC epoch)

File layout, version 1 (integers big-endian)::

    off  len  field
      0    6  magic b"HWSEAL"
      6    2  version = 1
      8    4  chunk_size: plaintext bytes per chunk (64 KiB .. 1 MiB)
     12   16  household key id (BLAKE2b-128 of the household public key)
     28   80  crypto_box_seal(K): 32 ephemeral public key + 32 + 16 Poly1305 tag
    108    8  plaintext length, bytes          } zero while the segment is being written
    116    4  chunk count (>= 1)               } (the placeholder); set by the writer
    120   32  header tag                       } when it finishes
    152       chunk 0, chunk 1, ... each at 152 + i * (chunk_size + 41):
                 24  secretstream header (random)
                 n+17 ciphertext of the n plaintext bytes + 17-byte tag (1 tag byte + 16 MAC)

Why 256 KiB chunks (:data:`DEFAULT_CHUNK_SIZE`): measured with PyNaCl on the 2-core dev VM
(one core, the same run), 64 KiB chunks opened at ~0.7 GB/s (the per-chunk Python and set-up
cost shows), 256 KiB and 1 MiB ones alike at ~0.9-1.3 GB/s; so 256 KiB is as fast as it gets
while a range read decrypts at most 2 x 256 KiB more than it asks for (1 MiB chunks: 4x
that), a ~10 s segment of a 1-4 Mbit/s camera is 5-20 chunks, and a crash loses at most
about one chunk still in memory. Overhead: 41 bytes per chunk (0.016 %) and a 152-byte
header.

Writing. The header is knowable only at the end, so the writer emits a placeholder header
first (:meth:`SegmentSealer.push` / :meth:`SegmentSealer.push_parts`) and, after
:meth:`SegmentSealer.finish`, writes the final header (:attr:`SealedTail.header`, same size)
over it before making the file durable and renaming it into place. A full chunk is held
back until more data arrives, so that the last chunk is known to be last. A reader following
a file being written (a live view tailing it) therefore sees footage a whole chunk at a time,
0.5-2 s of a 1-4 Mbit/s camera late; live view is better fed from the recorder's memory.

A segment that was never finished (the writer stopped or crashed) keeps the placeholder:
:func:`open_header` reads it (``finished`` False), :class:`SegmentOpener` refuses it with
:class:`~homewarden.errors.UnfinishedSegmentError`, and :meth:`SegmentOpener.unfinished`
opens its complete chunks (all sealed as "not last"). Each is still authenticated (not
changed, reordered or moved), but nothing proves where such a segment ended: whole chunks at
its end could be missing unseen, and the chunk being written plus the bytes still held in the
writer's memory are lost. Use it only for segments the index knows were not finished.

What sealing does not prove: who wrote a segment. Anyone holding the household public key
(it is not secret) can make a valid sealed segment; origin is the index's business.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import NamedTuple

import nacl.bindings
import nacl.exceptions
import nacl.utils

from homewarden.crypto.household_keys import (
    KEY_ID_SIZE,
    HouseholdKeyPair,
    HouseholdPublicKey,
    KeyId,
    household_key_id,
)
from homewarden.errors import (
    InvalidRequestError,
    SealedFormatError,
    SealedTamperedError,
    UnfinishedSegmentError,
    WrongKeyError,
)

MAGIC = b"HWSEAL"
VERSION = 1
#: Plaintext bytes per chunk (see the module docstring for why).
DEFAULT_CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 1024 * 1024

_SS = nacl.bindings
_STREAM_HEADER = _SS.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
_STREAM_TAG = _SS.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
_TAG_FINAL = _SS.crypto_secretstream_xchacha20poly1305_TAG_FINAL
#: Bytes a chunk adds to its plaintext: stream header + secretstream tag.
CHUNK_OVERHEAD = _STREAM_HEADER + _STREAM_TAG
_SEGMENT_KEY_SIZE = 32
_SEALED_KEY_SIZE = _SEGMENT_KEY_SIZE + _SS.crypto_box_SEALBYTES  # 80
_TAG_SIZE = 32

_PREFIX = struct.Struct(f">6sHI{KEY_ID_SIZE}s{_SEALED_KEY_SIZE}s")  # immutable: 108 bytes
_FINAL = struct.Struct(">QI")  # plaintext length, chunk count
#: Bytes of the header; chunk 0 starts here.
HEADER_SIZE = _PREFIX.size + _FINAL.size + _TAG_SIZE  # 152
_TAGGED = _PREFIX.size + _FINAL.size  # header bytes the tag covers (plus the identity)

_PERSON_CONTEXT = b"hwseal-context"
_PERSON_CHUNK_KEY = b"hwseal-chunk-key"
_PERSON_HEADER_KEY = b"hwseal-head-key"
_PERSON_HEADER_TAG = b"hwseal-head-tag"
_MAX_NAME = 1024


def _blake2b(data: bytes, *, person: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key, person=person).digest()


@dataclass(frozen=True, slots=True)
class SegmentIdentity:
    """What a segment is, bound into its seal: ``segment_id`` (a stable name the index keeps,
    known before the first byte is written, e.g. its path relative to the media dir),
    ``camera`` and ``start`` (UTC epoch seconds, bound to the microsecond).

    Raises:
        InvalidRequestError: an empty or over-long (> 1024 UTF-8 bytes) id or camera.
    """

    segment_id: str
    camera: str
    start: float

    def __post_init__(self) -> None:
        for name in ("segment_id", "camera"):
            size = len(getattr(self, name).encode("utf-8"))
            if not 0 < size <= _MAX_NAME:
                raise InvalidRequestError(
                    f"a sealed segment's {name} must be 1-{_MAX_NAME} UTF-8 bytes, got {size}"
                )

    def encoded(self) -> bytes:
        """The canonical bytes bound into the seal (layout in the module docstring)."""
        sid = self.segment_id.encode("utf-8")
        cam = self.camera.encode("utf-8")
        return (
            struct.pack(">H", len(sid))
            + sid
            + struct.pack(">H", len(cam))
            + cam
            + struct.pack(">q", round(self.start * 1_000_000))
        )

    def describe(self) -> str:
        """``segment 'x' of camera 'y' starting at t`` for messages."""
        return f"segment {self.segment_id!r} of camera {self.camera!r} starting at {self.start}"


@dataclass(frozen=True, slots=True)
class SealedHeader:
    """A parsed sealed-segment header. ``raw`` is its 152 bytes; ``finished`` is False for a
    placeholder (the writer never finished), whose ``plaintext_length`` and ``chunk_count``
    are then 0. Nothing here is authenticated until a :class:`SegmentOpener` checks it."""

    raw: bytes
    version: int
    chunk_size: int
    key_id: KeyId
    sealed_key: bytes
    plaintext_length: int
    chunk_count: int
    tag: bytes

    @property
    def finished(self) -> bool:
        """Whether the writer finished the segment and wrote the final header."""
        return self.chunk_count > 0

    @property
    def chunk_stride(self) -> int:
        """File bytes of every chunk but the last: ``chunk_size + CHUNK_OVERHEAD``."""
        return self.chunk_size + CHUNK_OVERHEAD

    @property
    def file_size(self) -> int:
        """Bytes of the whole sealed file of a finished segment.

        Raises:
            UnfinishedSegmentError: the segment was never finished.
        """
        if not self.finished:
            raise _unfinished()
        last_plain = self.plaintext_length - (self.chunk_count - 1) * self.chunk_size
        return (
            HEADER_SIZE + (self.chunk_count - 1) * self.chunk_stride + last_plain + CHUNK_OVERHEAD
        )


def _unfinished() -> UnfinishedSegmentError:
    return UnfinishedSegmentError(
        "the sealed segment was never finished (its writer stopped): its header is the "
        "placeholder; only SegmentOpener.unfinished can salvage its complete chunks",
        reason="unfinished segment",
    )


def _chunk_count(length: int, chunk_size: int) -> int:
    return max(1, -(-length // chunk_size))


def open_header(data: bytes) -> SealedHeader:
    """Parse the header at the start of ``data`` (at least :data:`HEADER_SIZE` bytes of the
    file; more are ignored). Parsing only: :class:`SegmentOpener` authenticates it.

    Raises:
        SealedFormatError: shorter than a header, wrong magic, unknown version, a chunk size
            out of bounds, a length and a chunk count that disagree, or a malformed
            placeholder.
    """
    if len(data) < HEADER_SIZE:
        raise SealedFormatError(
            f"cut short: a sealed segment starts with a {HEADER_SIZE}-byte header; got "
            f"{len(data)} bytes",
            reason="cut short",
        )
    raw = bytes(data[:HEADER_SIZE])
    magic, version, chunk_size, key_id, sealed_key = _PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise SealedFormatError("not a sealed segment (bad magic)", reason="bad magic")
    if version != VERSION:
        raise SealedFormatError(
            f"sealed segment version {version} is not known (this build reads {VERSION})",
            reason="unknown version",
        )
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise SealedFormatError(
            f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}-{MAX_CHUNK_SIZE}",
            reason="bad chunk size",
        )
    length, count = _FINAL.unpack_from(raw, _PREFIX.size)
    tag = raw[_TAGGED:]
    if count == 0:
        if length != 0 or any(tag):
            raise SealedFormatError(
                "malformed placeholder header (chunk count 0 with a length or tag)",
                reason="malformed header",
            )
    elif count != _chunk_count(length, chunk_size):
        raise SealedFormatError(
            f"header says {length} bytes in {count} chunks of {chunk_size}: they disagree",
            reason="malformed header",
        )
    return SealedHeader(raw, version, chunk_size, KeyId(key_id), sealed_key, length, count, tag)


def _ad(context: bytes, index: int, last: bool) -> bytes:
    return context + struct.pack(">IB", index, 1 if last else 0)


@dataclass(frozen=True, slots=True)
class SealedTail:
    """What :meth:`SegmentSealer.finish` returns: ``tail``, the bytes to append (the last
    chunk, preceded by the placeholder header if nothing was emitted before), and ``header``,
    the final :data:`HEADER_SIZE`-byte header to write over the placeholder at offset 0.
    ``plaintext_length``, ``chunk_count`` and ``file_size`` describe the finished file."""

    tail: bytes
    header: bytes
    plaintext_length: int
    chunk_count: int
    file_size: int


class SegmentSealer:
    """Seals one segment as it is written, holding only the household public key.

    Feed plaintext with :meth:`push` (any sizes) and append what it returns to the file; then
    :meth:`finish`, append its ``tail`` and write its ``header`` at offset 0. The output of
    the first call starts with the placeholder header.

    Raises:
        InvalidRequestError: ``chunk_size`` outside 64 KiB..1 MiB.
    """

    def __init__(
        self,
        household_public_key: HouseholdPublicKey,
        identity: SegmentIdentity,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidRequestError(
                f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}-{MAX_CHUNK_SIZE}"
            )
        segment_key = nacl.utils.random(_SEGMENT_KEY_SIZE)
        sealed = _SS.crypto_box_seal(segment_key, bytes(household_public_key))
        self.key_id = household_key_id(household_public_key)
        self.identity = identity
        self.chunk_size = chunk_size
        self._prefix = _PREFIX.pack(MAGIC, VERSION, chunk_size, self.key_id, sealed)
        self._ident = identity.encoded()
        self._context = _blake2b(self._prefix + self._ident, person=_PERSON_CONTEXT)
        self._chunk_key = _blake2b(b"", key=segment_key, person=_PERSON_CHUNK_KEY)
        self._header_key = _blake2b(b"", key=segment_key, person=_PERSON_HEADER_KEY)
        self._state = _SS.crypto_secretstream_xchacha20poly1305_state()
        self._buffer = bytearray()
        self._index = 0
        self._length = 0
        self._started = False
        self._finished = False

    def _seal(self, out: list[bytes], plain: bytes, last: bool) -> None:
        """Append chunk ``self._index`` (stream header, then body) to ``out``."""
        out.append(
            _SS.crypto_secretstream_xchacha20poly1305_init_push(self._state, self._chunk_key)
        )
        out.append(
            _SS.crypto_secretstream_xchacha20poly1305_push(
                self._state, plain, _ad(self._context, self._index, last), _TAG_FINAL
            )
        )
        self._index += 1

    def _start(self) -> list[bytes]:
        if self._finished:
            raise InvalidRequestError("this segment is already finished")
        if self._started:
            return []
        self._started = True
        return [self._prefix + bytes(HEADER_SIZE - len(self._prefix))]

    def push(self, data: bytes) -> bytes:
        """Take ``data`` and return the bytes to append to the file: every chunk completed
        (a full chunk is held back until more data shows it is not the last), after the
        placeholder header on the first call.

        Raises:
            InvalidRequestError: called after :meth:`finish`.
        """
        return b"".join(self.push_parts(data))

    def push_parts(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """:meth:`push`'s bytes as a list of parts, to hand to ``os.writev`` without joining
        them (joining large buffers costs a third as much as the cipher).

        Raises:
            InvalidRequestError: called after :meth:`finish`.
        """
        out = self._start()
        size = self.chunk_size
        with memoryview(data) as view:
            self._length += view.nbytes
            rest = view
            if self._buffer:  # complete the pending chunk first
                take = min(len(rest), size - len(self._buffer))
                self._buffer += rest[:take]
                rest = rest[take:]
                if not rest:
                    return out  # pending, perhaps full: it may be the last
                self._seal(out, bytes(self._buffer), last=False)
                self._buffer.clear()
            while len(rest) > size:  # straight from ``data``: no copy into the buffer
                self._seal(out, bytes(rest[:size]), last=False)
                rest = rest[size:]
            self._buffer += rest
        return out

    def finish(self) -> SealedTail:
        """Seal the last chunk and make the final header.

        Raises:
            InvalidRequestError: called twice.
        """
        out = self._start()
        self._finished = True
        self._seal(out, bytes(self._buffer), last=True)
        self._buffer.clear()
        final = self._prefix + _FINAL.pack(self._length, self._index)
        tag = _blake2b(final + self._ident, key=self._header_key, person=_PERSON_HEADER_TAG)
        header = final + tag
        parsed = open_header(header)
        return SealedTail(b"".join(out), header, self._length, self._index, parsed.file_size)


def seal_segment(
    household_public_key: HouseholdPublicKey,
    identity: SegmentIdentity,
    data: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """The whole sealed file of ``data`` at once (final header in place)."""
    sealer = SegmentSealer(household_public_key, identity, chunk_size=chunk_size)
    body = sealer.push(data)
    done = sealer.finish()
    return done.header + (body + done.tail)[HEADER_SIZE:]


class ChunkSpan(NamedTuple):
    """The chunks a plaintext byte range needs: ``first`` and ``last`` chunk index
    (inclusive) and ``file_range``, the ``[start, end)`` file offsets holding them."""

    first: int
    last: int
    file_range: tuple[int, int]


class SegmentOpener:
    """Opens chunks and byte ranges of one sealed segment with the household key pair.

    Construction authenticates the header: (1) the segment must be finished, (2) sealed to
    this household key (key id), (3) its segment key must open, (4) its tag must verify under
    ``identity``. Chunks are then authenticated one by one as they are opened.

    Raises:
        UnfinishedSegmentError: the header is the placeholder (see :meth:`unfinished`).
        WrongKeyError: the segment is sealed to another household key.
        SealedTamperedError: the header was changed (sealed key or tag fail), or the segment
            is not ``identity`` (renamed or moved); ``chunk_index`` is None.
    """

    def __init__(
        self, header: SealedHeader, household_key: HouseholdKeyPair, identity: SegmentIdentity
    ) -> None:
        # (1) finished
        if not header.finished:
            raise _unfinished()
        self._setup(header, household_key, identity)
        # (4) the header tag binds the final fields and the identity
        expected = _blake2b(
            header.raw[:_TAGGED] + self._ident, key=self._header_key, person=_PERSON_HEADER_TAG
        )
        if not hmac.compare_digest(expected, header.tag):
            raise SealedTamperedError(
                "the sealed segment's header does not authenticate: a header byte was changed, "
                f"or this is not {identity.describe()} (renamed or moved)",
                reason="header tag mismatch",
            )
        self.plaintext_length = header.plaintext_length
        self.chunk_count = header.chunk_count
        self.file_size: int | None = header.file_size
        self.finished = True

    @classmethod
    def unfinished(
        cls,
        header: SealedHeader,
        household_key: HouseholdKeyPair,
        identity: SegmentIdentity,
        available: int,
    ) -> SegmentOpener:
        """An opener of the complete chunks of a segment whose writer never finished it, the
        file being ``available`` bytes long now (it may still grow). Every chunk opens as
        "not last"; nothing proves where the segment ended (see the module docstring).
        ``file_size`` is None.

        Raises:
            InvalidRequestError: the header is not a placeholder (use the constructor).
            WrongKeyError, SealedTamperedError: as the constructor, steps (2) and (3).
        """
        if header.finished:
            raise InvalidRequestError("this segment is finished: open it with SegmentOpener()")
        self = cls.__new__(cls)
        self._setup(header, household_key, identity)
        self.chunk_count = max(0, available - HEADER_SIZE) // header.chunk_stride
        self.plaintext_length = self.chunk_count * header.chunk_size
        self.file_size = None
        self.finished = False
        return self

    def _setup(
        self, header: SealedHeader, household_key: HouseholdKeyPair, identity: SegmentIdentity
    ) -> None:
        # (2) sealed to this household key
        if not hmac.compare_digest(header.key_id, household_key.key_id):
            raise WrongKeyError(
                f"the segment is sealed to household key {header.key_id.hex()}, not to "
                f"{household_key.key_id.hex()}",
                reason="another household key",
            )
        # (3) the segment key opens
        try:
            segment_key = _SS.crypto_box_seal_open(
                header.sealed_key, bytes(household_key.public), bytes(household_key.private)
            )
        except nacl.exceptions.CryptoError as exc:
            raise SealedTamperedError(
                "the sealed segment key does not open although the household key id matches: "
                "the header was changed",
                reason="sealed key does not open",
            ) from exc
        self.header = header
        self.identity = identity
        self.chunk_size = header.chunk_size
        self._stride = header.chunk_stride
        self._ident = identity.encoded()
        self._context = _blake2b(header.raw[: _PREFIX.size] + self._ident, person=_PERSON_CONTEXT)
        self._chunk_key = _blake2b(b"", key=segment_key, person=_PERSON_CHUNK_KEY)
        self._header_key = _blake2b(b"", key=segment_key, person=_PERSON_HEADER_KEY)
        self._state = _SS.crypto_secretstream_xchacha20poly1305_state()  # reused: its buffer too

    def chunk_plain_size(self, index: int) -> int:
        """Plaintext bytes of chunk ``index``."""
        self._check_index(index)
        if index < self.chunk_count - 1 or not self.finished:
            return self.chunk_size
        return self.plaintext_length - index * self.chunk_size

    def chunk_file_range(self, index: int) -> tuple[int, int]:
        """``[start, end)`` file offsets of chunk ``index``."""
        start = HEADER_SIZE + index * self._stride
        return start, start + self.chunk_plain_size(index) + CHUNK_OVERHEAD

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.chunk_count:
            raise InvalidRequestError(
                f"chunk {index} is outside this segment's {self.chunk_count} chunks"
            )

    def check_file_size(self, size: int) -> None:
        """Check that a file of ``size`` bytes holds exactly this finished segment (an
        unfinished one: at least its complete chunks; it may still grow).

        Raises:
            SealedTamperedError: shorter (``chunk_index``: the first chunk not wholly there)
                or, when finished, longer (``chunk_index`` None: bytes after the last chunk).
        """
        whole = HEADER_SIZE + self.chunk_count * self._stride
        expected = self.file_size if self.file_size is not None else whole
        if size < expected:
            cut = min(max(0, size - HEADER_SIZE) // self._stride, self.chunk_count - 1)
            raise SealedTamperedError(
                f"the sealed file of {self.identity.describe()} is {size} bytes, its header "
                f"says {expected}: cut short from chunk {cut} on",
                reason="file cut short",
                chunk_index=cut,
            )
        if self.file_size is not None and size > expected:
            raise SealedTamperedError(
                f"the sealed file of {self.identity.describe()} is {size} bytes, its header "
                f"says {expected}: {size - expected} bytes follow the last chunk",
                reason="trailing bytes",
            )

    def chunk_span(self, start: int, end: int) -> ChunkSpan:
        """The chunks holding plaintext bytes ``[start, end)`` and their file offsets.

        Raises:
            InvalidRequestError: not ``0 <= start < end <= plaintext_length``.
        """
        if not 0 <= start < end <= self.plaintext_length:
            raise InvalidRequestError(
                f"byte range [{start}, {end}) is not inside this segment's "
                f"{self.plaintext_length} bytes"
            )
        first, last = start // self.chunk_size, (end - 1) // self.chunk_size
        return ChunkSpan(
            first, last, (self.chunk_file_range(first)[0], self.chunk_file_range(last)[1])
        )

    def open_chunk(self, index: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of chunk ``index`` from its file bytes (:meth:`chunk_file_range`).

        Raises:
            InvalidRequestError: no such chunk.
            SealedTamperedError: cut short or too long, or it does not authenticate (changed,
                from another index or segment, last-ness or identity differs);
                ``chunk_index`` names it.
        """
        want = self.chunk_plain_size(index) + CHUNK_OVERHEAD
        if len(ciphertext) != want:
            raise SealedTamperedError(
                f"chunk {index} of {self.identity.describe()} is {len(ciphertext)} bytes, "
                f"expected {want} (cut short or changed)",
                reason="chunk cut short" if len(ciphertext) < want else "chunk too long",
                chunk_index=index,
            )
        last = self.finished and index == self.chunk_count - 1
        state = self._state
        with memoryview(ciphertext) as view:  # one copy of the body, not two
            head, body = bytes(view[:_STREAM_HEADER]), bytes(view[_STREAM_HEADER:])
        try:
            _SS.crypto_secretstream_xchacha20poly1305_init_pull(state, head, self._chunk_key)
            plain, tag = _SS.crypto_secretstream_xchacha20poly1305_pull(
                state, body, _ad(self._context, index, last)
            )
        except nacl.exceptions.CryptoError as exc:
            raise SealedTamperedError(
                f"chunk {index} of {self.identity.describe()} does not authenticate: changed, "
                "out of place (swapped, moved from another segment, truncated), or the "
                "segment was renamed",
                reason="chunk does not authenticate",
                chunk_index=index,
            ) from exc
        if tag != _TAG_FINAL:
            raise SealedTamperedError(
                f"chunk {index} is not a complete sealed chunk (secretstream tag {tag})",
                reason="chunk not final",
                chunk_index=index,
            )
        return plain

    def open_range(self, start: int, end: int, ciphertext: bytes | bytearray | memoryview) -> bytes:
        """Plaintext bytes ``[start, end)`` from ``ciphertext``, the file bytes of
        ``chunk_span(start, end).file_range`` (only those chunks are decrypted).

        Raises:
            InvalidRequestError: the range is not inside the segment, or ``ciphertext`` is
                longer than the span.
            SealedTamperedError: a chunk is cut short (``ciphertext`` shorter than the span:
                the file was truncated) or does not authenticate; ``chunk_index`` names it.
        """
        first, last, (lo, hi) = self.chunk_span(start, end)
        if len(ciphertext) > hi - lo:
            raise InvalidRequestError(
                f"{len(ciphertext)} ciphertext bytes given for chunks {first}-{last}, which "
                f"are {hi - lo} bytes"
            )
        view = memoryview(ciphertext)
        parts: list[bytes] = []
        for index in range(first, last + 1):
            a, b = self.chunk_file_range(index)
            parts.append(self.open_chunk(index, view[a - lo : b - lo]))
        skip = start - first * self.chunk_size
        if len(parts) == 1:
            return parts[0][skip : skip + end - start]
        parts[0] = parts[0][skip:]
        parts[-1] = parts[-1][: end - last * self.chunk_size]
        return b"".join(parts)


def open_segment(data: bytes, household_key: HouseholdKeyPair, identity: SegmentIdentity) -> bytes:
    """The whole plaintext of a finished sealed file ``data`` (every chunk checked, so a
    truncated or extended file fails).

    Raises:
        SealedFormatError, UnfinishedSegmentError, WrongKeyError, SealedTamperedError: as
            :func:`open_header`, :class:`SegmentOpener`, :meth:`SegmentOpener.open_chunk`;
            a file cut short or extended is :class:`SealedTamperedError`
            (:meth:`SegmentOpener.check_file_size`).
    """
    opener = SegmentOpener(open_header(data), household_key, identity)
    opener.check_file_size(len(data))
    parts = []
    view = memoryview(data)
    for index in range(opener.chunk_count):
        a, b = opener.chunk_file_range(index)
        parts.append(opener.open_chunk(index, view[a:b]))
    return b"".join(parts)
