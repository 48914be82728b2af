"""Sealed segments: layout, round trips, random-access ranges, and every tampering we can think
of detected and named (issue 6, "Tampering with one byte of a sealed segment is detected")."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import av
import cv2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homewarden.crypto.household_keys import generate_household_key
from homewarden.crypto.sealing import (
    CHUNK_OVERHEAD,
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    MIN_CHUNK_SIZE,
    SegmentIdentity,
    SegmentOpener,
    SegmentSealer,
    open_header,
    open_segment,
    seal_segment,
)
from homewarden.errors import (
    InvalidRequestError,
    SealedDataError,
    SealedFormatError,
    SealedTamperedError,
    UnfinishedSegmentError,
    WrongKeyError,
)
from tests.segment_files import make_segment

KEY = generate_household_key()
OTHER_KEY = generate_household_key()
IDENT = SegmentIdentity("front/2026-11-29/10/1764410400.000.mp4", "front", 1764410400.0)
SMALL = MIN_CHUNK_SIZE  # 64 KiB chunks keep the exhaustive tests quick


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _sealed(data: bytes, chunk_size: int = SMALL, ident: SegmentIdentity = IDENT) -> bytes:
    return seal_segment(KEY.public, ident, data, chunk_size=chunk_size)


def _opener(sealed: bytes, ident: SegmentIdentity = IDENT) -> SegmentOpener:
    return SegmentOpener(open_header(sealed), KEY, ident)


def _chunk(sealed: bytes, i: int) -> bytes:
    a, b = _opener(sealed).chunk_file_range(i)
    return sealed[a:b]


# --------------------------------------------------------------------------------------------
# layout


def test_header_layout_is_the_documented_one() -> None:
    data = _data(3 * SMALL + 7)
    sealed = _sealed(data)
    assert sealed[:6] == b"HWSEAL"
    assert struct.unpack(">H", sealed[6:8]) == (1,)
    assert struct.unpack(">I", sealed[8:12]) == (SMALL,)
    assert sealed[12:28] == KEY.key_id
    assert struct.unpack(">QI", sealed[108:120]) == (len(data), 4)
    header = open_header(sealed)
    assert header.finished
    assert (header.plaintext_length, header.chunk_count) == (len(data), 4)
    assert header.file_size == len(sealed) == HEADER_SIZE + len(data) + 4 * CHUNK_OVERHEAD
    assert HEADER_SIZE == 152
    assert CHUNK_OVERHEAD == 41


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        (0, 1),  # an empty segment still has one (empty, last) chunk
        (1, 1),
        (SMALL - 1, 1),
        (SMALL, 1),  # an exact multiple ends on a full last chunk
        (SMALL + 1, 2),
        (2 * SMALL, 2),
        (3 * SMALL + 12345, 4),
    ],
)
def test_round_trip_at_edge_sizes(size: int, chunks: int) -> None:
    data = _data(size)
    sealed = _sealed(data)
    assert open_header(sealed).chunk_count == chunks
    assert open_segment(sealed, KEY, IDENT) == data


def test_round_trip_with_default_chunks_of_real_footage(bikes_mp4: Path) -> None:
    data = bikes_mp4.read_bytes()
    sealed = seal_segment(KEY.public, IDENT, data)
    assert open_header(sealed).chunk_size == DEFAULT_CHUNK_SIZE
    assert open_segment(sealed, KEY, IDENT) == data


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 5 * SMALL),
    cuts=st.lists(st.integers(0, 5 * SMALL), max_size=12),
)
def test_streaming_in_any_pieces_equals_the_plaintext(size: int, cuts: list[int]) -> None:
    data = _data(size, seed=size)
    sealer = SegmentSealer(KEY.public, IDENT, chunk_size=SMALL)
    out = bytearray()
    at = 0
    for cut in sorted(c for c in cuts if c <= size):
        out += sealer.push(data[at:cut])
        at = cut
    out += sealer.push(data[at:])
    done = sealer.finish()
    out += done.tail
    assert bytes(out[:HEADER_SIZE]) != done.header  # the placeholder until rewritten
    assert not open_header(bytes(out)).finished
    out[:HEADER_SIZE] = done.header
    assert len(out) == done.file_size
    assert (done.plaintext_length, done.chunk_count) == (size, max(1, -(-size // SMALL)))
    assert open_segment(bytes(out), KEY, IDENT) == data


def test_push_emits_only_complete_chunks_and_holds_back_a_possible_last_one() -> None:
    sealer = SegmentSealer(KEY.public, IDENT, chunk_size=SMALL)
    first = sealer.push(_data(SMALL))
    assert len(first) == HEADER_SIZE  # a full chunk might be the last: held back
    second = sealer.push(b"x")
    assert len(second) == SMALL + CHUNK_OVERHEAD
    sealer.finish()
    with pytest.raises(InvalidRequestError, match="already finished"):
        sealer.push(b"more")
    with pytest.raises(InvalidRequestError, match="already finished"):
        sealer.finish()


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE - 1, 1024 * 1024 + 1])
def test_chunk_size_out_of_bounds_is_refused(chunk_size: int) -> None:
    with pytest.raises(InvalidRequestError, match="chunk size"):
        SegmentSealer(KEY.public, IDENT, chunk_size=chunk_size)


def test_identity_names_are_checked() -> None:
    with pytest.raises(InvalidRequestError, match="camera"):
        SegmentIdentity("x", "", 1.0)
    with pytest.raises(InvalidRequestError, match="segment_id"):
        SegmentIdentity("x" * 1025, "front", 1.0)


# --------------------------------------------------------------------------------------------
# random access


class _Counting:
    """The file bytes, counting which are asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def read(self, a: int, b: int) -> bytes:
        self.reads.append((a, b))
        return self.data[a:b]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_ranges_equal_the_slice_and_need_only_their_chunks(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 6 * SMALL))
    plain = _data(size, seed=size)
    sealed = _sealed(plain)
    opener = _opener(sealed)
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    first, last, (lo, hi) = opener.chunk_span(start, end)
    assert (first, last) == (start // SMALL, (end - 1) // SMALL)
    counting = _Counting(sealed)
    assert opener.open_range(start, end, counting.read(lo, hi)) == plain[start:end]
    assert counting.reads == [(lo, hi)]
    assert hi - lo <= (last - first + 1) * (SMALL + CHUNK_OVERHEAD)
    assert lo >= HEADER_SIZE  # the header is read once, not per range


def test_range_outside_the_segment_is_refused() -> None:
    opener = _opener(_sealed(_data(100)))
    for start, end in [(-1, 5), (5, 5), (6, 5), (0, 101)]:
        with pytest.raises(InvalidRequestError, match="byte range"):
            opener.chunk_span(start, end)


def test_a_damaged_chunk_spoils_only_the_ranges_that_need_it() -> None:
    plain = _data(3 * SMALL)
    sealed = bytearray(_sealed(plain))
    opener = _opener(bytes(sealed))
    a, _b = opener.chunk_file_range(1)
    sealed[a + 100] ^= 1
    lo, hi = opener.chunk_span(0, SMALL).file_range
    assert opener.open_range(0, SMALL, bytes(sealed[lo:hi])) == plain[:SMALL]
    lo, hi = opener.chunk_span(SMALL - 10, SMALL + 10).file_range
    with pytest.raises(SealedTamperedError) as err:
        opener.open_range(SMALL - 10, SMALL + 10, bytes(sealed[lo:hi]))
    assert err.value.chunk_index == 1


# --------------------------------------------------------------------------------------------
# tampering


def _open_all(sealed: bytes, ident: SegmentIdentity = IDENT) -> bytes:
    return open_segment(sealed, KEY, ident)


def _place(sealed: bytes, pos: int) -> int | None:
    """The chunk holding file offset ``pos`` (None: the header)."""
    return None if pos < HEADER_SIZE else (pos - HEADER_SIZE) // (SMALL + CHUNK_OVERHEAD)


FLIP_SIZE = 2 * SMALL + 1000  # three chunks, the last one short
FLIP_SEALED = _sealed(_data(FLIP_SIZE))


def _flip(pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(FLIP_SEALED)
    out[pos] ^= mask
    return bytes(out)


@pytest.mark.parametrize("pos", range(HEADER_SIZE))
def test_every_header_byte_flipped_is_detected_and_named(pos: int) -> None:
    with pytest.raises(SealedDataError) as err:
        _open_all(_flip(pos))
    assert err.value.chunk_index is None, err.value
    assert err.value.reason


def _chunk_structure_positions() -> list[int]:
    """Every byte of each chunk's stream header and tag area, and chunk boundaries."""
    out = []
    stride = SMALL + CHUNK_OVERHEAD
    for i in range(3):
        a = HEADER_SIZE + i * stride
        end = min(a + stride, len(FLIP_SEALED))
        out += range(a, a + 24 + 1)  # stream header and the encrypted tag byte
        out += range(end - 16, end)  # Poly1305 MAC
    return out


@pytest.mark.parametrize("pos", _chunk_structure_positions())
def test_every_chunk_header_and_tag_byte_flipped_is_detected_and_named(pos: int) -> None:
    with pytest.raises(SealedTamperedError) as err:
        _open_all(_flip(pos))
    assert err.value.chunk_index == _place(FLIP_SEALED, pos)


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(HEADER_SIZE, len(FLIP_SEALED) - 1), mask=st.integers(1, 255))
def test_any_chunk_byte_changed_is_detected_and_named(pos: int, mask: int) -> None:
    with pytest.raises(SealedTamperedError) as err:
        _open_all(_flip(pos, mask))
    assert err.value.chunk_index == _place(FLIP_SEALED, pos)
    assert err.value.reason == "chunk does not authenticate"


def test_swapped_chunks_fail_at_the_first_one_out_of_place() -> None:
    sealed = _sealed(_data(3 * SMALL))
    c0, c1 = _chunk(sealed, 0), _chunk(sealed, 1)
    assert len(c0) == len(c1)
    swapped = sealed[:HEADER_SIZE] + c1 + c0 + sealed[HEADER_SIZE + 2 * len(c0) :]
    with pytest.raises(SealedTamperedError) as err:
        _open_all(swapped)
    assert err.value.chunk_index == 0
    opener = _opener(sealed)
    with pytest.raises(SealedTamperedError) as err:
        opener.open_chunk(1, c0)
    assert err.value.chunk_index == 1


def test_a_full_chunk_cannot_pose_as_the_last_one() -> None:
    # 3 full chunks; the middle one replacing the last (same size) is refused: it was not
    # sealed as last, nor at that index.
    sealed = _sealed(_data(3 * SMALL))
    c1 = _chunk(sealed, 1)
    forged = sealed[: HEADER_SIZE + 2 * len(c1)] + c1
    with pytest.raises(SealedTamperedError) as err:
        _open_all(forged)
    assert err.value.chunk_index == 2


@pytest.mark.parametrize("cut", [1, 17, 1000, SMALL + CHUNK_OVERHEAD])
def test_truncated_file_fails_naming_the_cut_chunk(cut: int) -> None:
    sealed = _sealed(_data(3 * SMALL + 5000))
    with pytest.raises(SealedTamperedError) as err:
        _open_all(sealed[:-cut])
    assert err.value.reason == "file cut short"
    assert err.value.chunk_index == (3 if cut < 5000 + CHUNK_OVERHEAD else 2)
    opener = _opener(sealed)
    a, b = opener.chunk_file_range(3)
    with pytest.raises(SealedTamperedError) as err:
        opener.open_chunk(3, sealed[a : b - 1])
    assert (err.value.chunk_index, err.value.reason) == (3, "chunk cut short")


def test_bytes_appended_after_the_last_chunk_fail() -> None:
    sealed = _sealed(_data(SMALL + 5))
    with pytest.raises(SealedTamperedError) as err:
        _open_all(sealed + b"\0")
    assert (err.value.chunk_index, err.value.reason) == (None, "trailing bytes")


def test_a_chunk_moved_from_another_segment_fails() -> None:
    mine = _sealed(_data(3 * SMALL, seed=1))
    theirs = _sealed(_data(3 * SMALL, seed=2))  # same household, same identity, other key K
    c = _chunk(theirs, 1)
    moved = mine[: HEADER_SIZE + len(c)] + c + mine[HEADER_SIZE + 2 * len(c) :]
    with pytest.raises(SealedTamperedError) as err:
        _open_all(moved)
    assert err.value.chunk_index == 1
    # nor can the other segment's header be grafted onto this one's chunks
    with pytest.raises(SealedTamperedError) as err:
        _open_all(theirs[:HEADER_SIZE] + mine[HEADER_SIZE:])
    assert err.value.chunk_index == 0


@pytest.mark.parametrize(
    "other",
    [
        SegmentIdentity(IDENT.segment_id, "back", IDENT.start),
        SegmentIdentity(IDENT.segment_id, IDENT.camera, IDENT.start + 10.0),
        SegmentIdentity(IDENT.segment_id, IDENT.camera, IDENT.start + 0.000001),
        SegmentIdentity("front/2026-11-29/10/1764410410.000.mp4", IDENT.camera, IDENT.start),
    ],
)
def test_a_renamed_segment_fails(other: SegmentIdentity) -> None:
    sealed = _sealed(_data(SMALL + 1))
    with pytest.raises(SealedTamperedError, match="renamed or moved") as err:
        _open_all(sealed, other)
    assert err.value.chunk_index is None


def test_identity_start_is_bound_to_the_microsecond_not_the_float() -> None:
    # A start read back from the index as a float that differs below 1 us still opens.
    sealed = _sealed(_data(10))
    again = SegmentIdentity(IDENT.segment_id, IDENT.camera, IDENT.start + 1e-8)
    assert _open_all(sealed, again) == _data(10)


def test_wrong_household_key_fails() -> None:
    sealed = _sealed(_data(SMALL + 1))
    with pytest.raises(WrongKeyError, match=KEY.key_id.hex()) as err:
        SegmentOpener(open_header(sealed), OTHER_KEY, IDENT)
    assert err.value.chunk_index is None
    # claiming the other key's id does not help: the segment key stays sealed to ours
    forged = sealed[:12] + OTHER_KEY.key_id + sealed[28:]
    with pytest.raises(SealedTamperedError, match="sealed segment key does not open"):
        SegmentOpener(open_header(forged), OTHER_KEY, IDENT)


def test_not_a_sealed_segment() -> None:
    with pytest.raises(SealedFormatError, match="cut short"):
        open_header(b"HWSEAL")
    with pytest.raises(SealedFormatError, match="bad magic"):
        open_header(b"\0\0\0\x18ftypisom" + bytes(HEADER_SIZE))
    sealed = bytearray(_sealed(b"abc"))
    sealed[7] = 2
    with pytest.raises(SealedFormatError, match="version 2"):
        open_header(bytes(sealed))


# --------------------------------------------------------------------------------------------
# unfinished (crashed) segments


def _crashed(data: bytes, ident: SegmentIdentity = IDENT) -> bytes:
    """What a writer that stopped before ``finish`` left on disk."""
    sealer = SegmentSealer(KEY.public, ident, chunk_size=SMALL)
    return sealer.push(data)


def test_an_unfinished_segment_is_refused_by_the_normal_opener() -> None:
    raw = _crashed(_data(3 * SMALL + 10))
    header = open_header(raw)
    assert not header.finished
    assert (header.plaintext_length, header.chunk_count) == (0, 0)
    with pytest.raises(UnfinishedSegmentError, match="never finished"):
        SegmentOpener(header, KEY, IDENT)
    with pytest.raises(UnfinishedSegmentError):
        open_segment(raw, KEY, IDENT)


def test_an_unfinished_segment_salvages_its_complete_chunks() -> None:
    data = _data(3 * SMALL + 10)
    raw = _crashed(data)
    raw += b"partial chunk bytes"  # a chunk being written when it stopped
    opener = SegmentOpener.unfinished(open_header(raw), KEY, IDENT, len(raw))
    assert not opener.finished
    assert opener.file_size is None
    # the 3 complete chunks are on disk; the held-back bytes are lost
    assert (opener.chunk_count, opener.plaintext_length) == (3, 3 * SMALL)
    lo, hi = opener.chunk_span(0, 3 * SMALL).file_range
    assert opener.open_range(0, 3 * SMALL, raw[lo:hi]) == data[: 3 * SMALL]
    opener.check_file_size(len(raw))
    with pytest.raises(SealedTamperedError, match="cut short") as err:
        opener.check_file_size(lo + 10)
    assert err.value.chunk_index == 0


def test_unfinished_chunks_still_bind_index_segment_and_identity() -> None:
    raw = _crashed(_data(3 * SMALL + 10))
    renamed = SegmentIdentity(IDENT.segment_id, "back", IDENT.start)
    opener = SegmentOpener.unfinished(open_header(raw), KEY, renamed, len(raw))
    with pytest.raises(SealedTamperedError) as err:
        opener.open_chunk(0, raw[slice(*opener.chunk_file_range(0))])
    assert err.value.chunk_index == 0
    good = SegmentOpener.unfinished(open_header(raw), KEY, IDENT, len(raw))
    with pytest.raises(SealedTamperedError) as err:
        good.open_chunk(2, raw[slice(*good.chunk_file_range(1))])
    assert err.value.chunk_index == 2
    with pytest.raises(InvalidRequestError, match="finished"):
        SegmentOpener.unfinished(open_header(_sealed(b"x")), KEY, IDENT, 10_000)


def test_finishing_a_crashed_segment_by_hand_is_refused() -> None:
    # Someone without the key fills in length and count: the tag cannot be made.
    data = _data(2 * SMALL)
    raw = bytearray(_crashed(data + b"x"))  # 2 complete chunks on disk
    raw[108:120] = struct.pack(">QI", 2 * SMALL, 2)
    with pytest.raises(SealedTamperedError, match="does not authenticate"):
        SegmentOpener(open_header(bytes(raw)), KEY, IDENT)


# --------------------------------------------------------------------------------------------
# no plaintext left


def _markers_with_context(plain: bytes, marker: bytes) -> list[bytes]:
    """Each occurrence of ``marker`` in ``plain`` with the 8 bytes before it (box size etc.):
    long enough that finding one in random ciphertext by chance is impossible in practice."""
    out = []
    at = plain.find(marker, 8)
    while at != -1:
        out.append(plain[at - 8 : at + len(marker)])
        at = plain.find(marker, at + 1)
    return out


def test_sealed_footage_holds_no_mp4_boxes_or_jpeg_headers(tmp_path: Path, bikes_mp4: Path) -> None:
    segment = make_segment(tmp_path / "seg.mp4", 0, 3).read_bytes()  # real fMP4 footage
    assert segment[4:8] == b"ftyp"
    with av.open(str(bikes_mp4)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    ok, jpeg = cv2.imencode(".jpg", frame)  # a real snapshot
    assert ok
    snapshot = jpeg.tobytes()
    assert snapshot[:3] == b"\xff\xd8\xff"
    for plain in (segment, snapshot):
        sealed = seal_segment(KEY.public, IDENT, plain)
        patterns = [plain[:16]]  # the file's own first bytes: ftyp box / SOI + APP0
        for marker in (b"moof", b"mdat", b"moov", b"JFIF"):
            patterns += _markers_with_context(plain, marker)
        assert len(patterns) > 1 or plain is snapshot
        for pattern in patterns:
            assert pattern not in sealed, pattern
        assert not sealed.startswith(b"\xff\xd8")
        assert sealed[4:8] != b"ftyp"
        assert open_segment(sealed, KEY, IDENT) == plain
