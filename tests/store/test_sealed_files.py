"""Sealed segment files: atomic writes from a stream, header reads, byte ranges that read only
the chunks they need, a crash that leaves an unfinished ``.part``, tampering on disk."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homewarden.crypto.household_keys import generate_household_key
from homewarden.crypto.sealing import (
    CHUNK_OVERHEAD,
    HEADER_SIZE,
    MIN_CHUNK_SIZE,
    SealedHeader,
    SegmentIdentity,
    SegmentOpener,
    SegmentSealer,
    open_header,
)
from homewarden.errors import (
    InvalidRequestError,
    SealedFormatError,
    SealedTamperedError,
    StorageError,
    UnfinishedSegmentError,
)
from homewarden.store.sealed_files import (
    SealedFileWriter,
    iter_sealed_range,
    read_sealed_header,
    read_sealed_range,
    write_sealed_file,
)
from tests.segment_files import make_segment

KEY = generate_household_key()
IDENT = SegmentIdentity("front/2026-11-29/10/1764410400.000.mp4", "front", 1764410400.0)
SMALL = MIN_CHUNK_SIZE


def _sealer(chunk_size: int = SMALL) -> SegmentSealer:
    return SegmentSealer(KEY.public, IDENT, chunk_size=chunk_size)


def _header(path: Path) -> SealedHeader:
    return read_sealed_header(path, open_header, HEADER_SIZE)


def _opener(path: Path) -> SegmentOpener:
    return SegmentOpener(_header(path), KEY, IDENT)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real fragmented-MP4 segment: all six GOPs of bikes.mp4 (~0.5 MB)."""
    return make_segment(tmp_path_factory.mktemp("seg") / "seg.mp4", 0, 6).read_bytes()


@pytest.fixture(scope="module")
def sealed_file(tmp_path_factory: pytest.TempPathFactory, footage: bytes) -> Path:
    path = tmp_path_factory.mktemp("sealed") / "front" / "1764410400.000.mp4"
    write_sealed_file(path, _sealer(), io.BytesIO(footage))
    return path


def test_write_from_a_stream_is_atomic_and_round_trips(tmp_path: Path, footage: bytes) -> None:
    path = tmp_path / "media" / "front" / "seg.mp4"
    size = write_sealed_file(path, _sealer(), io.BytesIO(footage))
    assert size == path.stat().st_size
    assert sorted(p.name for p in path.parent.iterdir()) == ["seg.mp4"]  # no .part left
    header = _header(path)
    assert header.finished
    assert header.plaintext_length == len(footage)
    assert header.file_size == size
    assert read_sealed_range(path, _opener(path), 0, len(footage)) == footage


def test_write_from_an_iterable_of_fragments(tmp_path: Path, footage: bytes) -> None:
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(1, len(footage)), 40))
    pieces = [footage[a:b] for a, b in zip([0, *cuts], [*cuts, len(footage)], strict=True)]
    path = tmp_path / "seg.mp4"
    write_sealed_file(path, _sealer(), pieces, durable=False)  # a cache: no fsync
    assert read_sealed_range(path, _opener(path), 0, len(footage)) == footage


def test_the_file_holds_no_plaintext_footage_markers(sealed_file: Path, footage: bytes) -> None:
    raw = sealed_file.read_bytes()
    assert footage[:16] not in raw  # ftyp box
    for marker in (b"moof", b"mdat", b"moov"):
        at = footage.find(marker, 8)
        assert at != -1
        assert footage[at - 8 : at + 4] not in raw  # the box with its size and neighbours


class _CountingFile(io.RawIOBase):
    """A read-only file that records every read: (offset, bytes returned)."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self.reads: list[tuple[int, int]] = []

    def fileno(self) -> int:
        return self._f.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        at = self._f.tell()
        data = self._f.read(size)
        self.reads.append((at, len(data)))
        return data

    def close(self) -> None:
        self._f.close()
        super().close()


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_ranges_read_only_the_chunks_they_need(
    sealed_file: Path, footage: bytes, data: st.DataObject
) -> None:
    opener = _opener(sealed_file)
    start = data.draw(st.integers(0, len(footage) - 1))
    end = data.draw(st.integers(start + 1, len(footage)))
    f = _CountingFile(sealed_file)
    with f:
        pieces = list(iter_sealed_range(f, opener, start, end))  # type: ignore[arg-type]
    assert b"".join(pieces) == footage[start:end]
    first, last, (lo, hi) = opener.chunk_span(start, end)
    assert sum(n for _at, n in f.reads) == hi - lo  # each needed chunk once, nothing else
    assert all(lo <= at and at + n <= hi for at, n in f.reads)
    assert len(f.reads) == len(pieces) == last - first + 1  # one read per chunk


def test_an_empty_range_reads_nothing(sealed_file: Path) -> None:
    f = _CountingFile(sealed_file)
    with f:
        assert list(iter_sealed_range(f, _opener(sealed_file), 5, 5)) == []  # type: ignore[arg-type]
    assert f.reads == []
    with pytest.raises(InvalidRequestError, match="byte range"):
        read_sealed_range(sealed_file, _opener(sealed_file), 0, 10**9)


def _copy(src: Path, dst: Path, edit: bytes | None = None, at: int = 0) -> Path:
    raw = bytearray(src.read_bytes())
    if edit is not None:
        raw[at : at + len(edit)] = edit
    dst.write_bytes(bytes(raw))
    return dst


def test_a_flipped_byte_on_disk_is_reported_with_its_chunk(
    sealed_file: Path, tmp_path: Path
) -> None:
    stride = SMALL + CHUNK_OVERHEAD
    pos = HEADER_SIZE + 2 * stride + 1000
    raw = sealed_file.read_bytes()
    bad = _copy(sealed_file, tmp_path / "bad.mp4", bytes([raw[pos] ^ 0x10]), pos)
    opener = _opener(bad)
    assert read_sealed_range(bad, opener, 0, 2 * SMALL) == _footage_of(sealed_file)[: 2 * SMALL]
    with pytest.raises(SealedTamperedError) as err:
        read_sealed_range(bad, opener, 0, 3 * SMALL)
    assert err.value.chunk_index == 2


def _footage_of(path: Path) -> bytes:
    return read_sealed_range(path, _opener(path), 0, _header(path).plaintext_length)


def test_a_truncated_file_is_refused_even_for_ranges_before_the_cut(
    sealed_file: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(sealed_file.read_bytes()[:-100])
    opener = _opener(cut)
    with pytest.raises(SealedTamperedError, match="cut short") as err:
        read_sealed_range(cut, opener, 0, 10)
    assert err.value.chunk_index == opener.chunk_count - 1
    longer = tmp_path / "long.mp4"
    longer.write_bytes(sealed_file.read_bytes() + b"x")
    with pytest.raises(SealedTamperedError, match="follow the last chunk"):
        read_sealed_range(longer, _opener(longer), 0, 10)


def test_a_renamed_file_is_refused(sealed_file: Path) -> None:
    moved = SegmentIdentity(IDENT.segment_id, "back", IDENT.start)
    with pytest.raises(SealedTamperedError, match="renamed or moved"):
        SegmentOpener(_header(sealed_file), KEY, moved)


def test_header_of_a_missing_or_foreign_file(tmp_path: Path, footage: bytes) -> None:
    with pytest.raises(StorageError, match="cannot read"):
        _header(tmp_path / "missing.mp4")
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(footage)
    with pytest.raises(SealedFormatError, match="bad magic"):
        _header(plain)
    short = tmp_path / "short.mp4"
    short.write_bytes(b"HWSEAL")
    with pytest.raises(SealedFormatError, match="cut short"):
        _header(short)


def test_a_crash_leaves_an_unfinished_part_whose_complete_chunks_open(
    tmp_path: Path, footage: bytes
) -> None:
    path = tmp_path / "seg.mp4"
    writer = SealedFileWriter(path, _sealer())
    writer.write(footage[: 3 * SMALL + 500])
    # the process dies here: no commit. What is on disk is the .part file.
    part = writer.part_path
    assert part.name == "seg.mp4.part"
    assert not path.exists()
    header = _header(part)
    assert not header.finished
    with pytest.raises(UnfinishedSegmentError):
        SegmentOpener(header, KEY, IDENT)
    opener = SegmentOpener.unfinished(header, KEY, IDENT, part.stat().st_size)
    assert opener.plaintext_length == 3 * SMALL  # the last 500 bytes were still in memory
    assert read_sealed_range(part, opener, 0, 3 * SMALL) == footage[: 3 * SMALL]
    # a second writer for the same segment is refused while the .part exists
    with pytest.raises(StorageError, match="already exists"):
        SealedFileWriter(path, _sealer())
    writer.abort()
    assert not part.exists()
    assert not path.exists()


def _record_until_the_camera_drops(path: Path) -> None:
    with SealedFileWriter(path, _sealer()) as out:
        out.write(b"x" * 100_000)
        raise RuntimeError("camera dropped")


def test_leaving_the_block_without_commit_discards(tmp_path: Path) -> None:
    path = tmp_path / "seg.mp4"
    with pytest.raises(RuntimeError, match="camera dropped"):
        _record_until_the_camera_drops(path)
    assert list(tmp_path.iterdir()) == []
    with SealedFileWriter(path, _sealer()) as out:
        out.write(b"never committed")
    assert list(tmp_path.iterdir()) == []
    with SealedFileWriter(path, _sealer()) as out:
        out.write(b"y")
        out.commit()
        with pytest.raises(StorageError, match="already committed"):
            out.write(b"late")
    assert [p.name for p in tmp_path.iterdir()] == ["seg.mp4"]
    assert read_sealed_range(path, _opener(path), 0, 1) == b"y"


def test_a_failing_source_leaves_nothing(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("I/O error")
            return b"z" * 1000

    path = tmp_path / "seg.mp4"
    source: BinaryIO = Broken()  # type: ignore[assignment]
    with pytest.raises(StorageError, match="cannot read the footage"):
        write_sealed_file(path, _sealer(), source)
    assert list(tmp_path.iterdir()) == []
