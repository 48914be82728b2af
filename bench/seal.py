"""Sealed segments speed: decryption, sealing, and serving a 30 s clip, against plaintext.

Issue 6 ("Speed"): decryption of sealed segments >= 500 MB/s on one core; serving a 30 s clip
from sealed segments costs at most 1.2x the plaintext path. Sealing's share of the
recorder's CPU is ``bench/idle_cost.py``'s to measure once the recorder seals; here its cost
per byte is printed, and what it comes to for the idle-cost camera's bitrate.

Footage: vtest.avi (real pedestrians on a walkway) as the 1280x720 30 fps GOP 2 s H.264
camera clip of ``bench/export.py`` (cached in ``bench/.cache``), cut on keyframes into ~10 s
fragmented-MP4 segments as the recorder writes them; each segment is also sealed
(:mod:`homewarden.crypto.sealing`, 256 KiB chunks) into a file beside it. Everything runs in
this one process, one thread (one core). Figures are CPU time of this process (user +
system, ``time.process_time``), which other programs on a shared machine do not inflate as
they do wall time; the writes, which wait on the disk, show wall time too. Each is the
median of ``--repeat`` rounds, plaintext and sealed measured in turn within each round,
files in the page cache (recent footage usually is):

* decrypt - every sealed segment read whole through ``store.sealed_files`` (header, X25519
  unseal of the segment key, all chunks opened, streamed a chunk at a time as a server sends
  it), MB/s of plaintext, against reading the plaintext files whole in the same run; also
  the opening alone, from memory, and whole segments joined into one byte string each;
* seal - every segment written by ``SealedFileWriter`` (``.part``, fsync, rename, fsync dir)
  with the real sealer, against the same writer and I/O with a pass-through sealer;
* clip - a 30 s clip (``--clip-start`` s into the footage) as a browser gets it: composed by
  ``media.clip.compose_clip`` (remux, faststart) and fetched in 1 MiB Range requests. The
  plaintext path composes from the segment files into a cache directory on disk and serves
  file ranges; the sealed path decrypts the segments it needs into memory-only files
  (``memfd``), composes into ``/dev/shm``, seals the clip into the cache directory (no
  plaintext on disk) and serves each range by reading the header, opening it and
  decrypting only that range's chunks. A second sealed variant keeps the composed clip in
  memory (``/dev/shm``) while it is served instead of sealing it to disk. Each ratio sealed
  / plaintext is judged (target <= 1.2x). The range serving alone is printed too: there
  the baseline is a page-cache ``memcpy``, which no cipher can come within 1.2x of.

Run from the repo root: ``.venv/bin/python bench/seal.py [--repeat 7]``.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import _common, export
from homewarden.crypto.household_keys import HouseholdKeyPair, generate_household_key
from homewarden.crypto.sealing import (
    DEFAULT_CHUNK_SIZE,
    HEADER_SIZE,
    SegmentIdentity,
    SegmentOpener,
    SegmentSealer,
    open_header,
)
from homewarden.media.clip import compose_clip
from homewarden.store.sealed_files import (
    SealedFileWriter,
    iter_sealed_range,
    read_sealed_header,
    read_sealed_range,
    write_sealed_file,
)

DECRYPT_TARGET_MBS = 500.0
CLIP_TARGET_RATIO = 1.2
CLIP_SECONDS = 30.0
RANGE_BYTES = 1024 * 1024
T0 = 1_700_000_000.0
CAMERA = "bench"
#: The idle-cost camera's bitrate (``bench/README.md``: ~1.2 Mbit/s), for the sealing estimate.
IDLE_CAMERA_BITS = 1.2e6


@dataclass(frozen=True, slots=True)
class Segment:
    """One recorded segment: plaintext file, sealed file, identity, first-keyframe time."""

    plain: Path
    sealed: Path
    identity: SegmentIdentity
    start: float
    size: int


def _identity(i: int, start: float) -> SegmentIdentity:
    return SegmentIdentity(f"{CAMERA}/seg-{i}.mp4", CAMERA, start)


def prepare(root: Path, key: HouseholdKeyPair) -> list[Segment]:
    """Cut the camera clip into segments and seal a copy of each."""
    out = []
    start = T0
    for i, (plain, duration) in enumerate(export.cut_segments(export.camera_clip(), root)):
        ident = _identity(i, start)
        sealed = plain.with_name(plain.name + ".sealed")
        with plain.open("rb") as src:
            write_sealed_file(sealed, SegmentSealer(key.public, ident), src)
        out.append(Segment(plain, sealed, ident, start, plain.stat().st_size))
        start += duration
    return out


@dataclass(frozen=True, slots=True)
class Timing:
    """Median CPU seconds of this process (user + system, all threads) and wall seconds."""

    cpu: float
    wall: float


def _once(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _median(samples: list[tuple[float, float]]) -> Timing:
    return Timing(
        statistics.median(c for c, _ in samples), statistics.median(w for _, w in samples)
    )


def _median_time(fn: Callable[[], object], repeat: int) -> Timing:
    return _median([_once(fn) for _ in range(repeat)])


def _in_turn(fns: list[Callable[[], object]], repeat: int) -> list[Timing]:
    """Medians of each of ``fns``, run in turn in each round (so drift hits all alike)."""
    samples: list[list[tuple[float, float]]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, taken in zip(fns, samples, strict=True):
            taken.append(_once(fn))
    return [_median(taken) for taken in samples]


def _paired(a: Callable[[], object], b: Callable[[], object], repeat: int) -> tuple[Timing, Timing]:
    """Medians of ``a`` and ``b``, run in turn in each round."""
    ta, tb = _in_turn([a, b], repeat)
    return ta, tb


# --------------------------------------------------------------------------------------------
# decrypt and seal


def read_plain(segments: list[Segment]) -> int:
    total = 0
    for s in segments:
        with s.plain.open("rb") as f:
            while block := f.read(RANGE_BYTES):
                total += len(block)
    return total


def read_sealed(segments: list[Segment], key: HouseholdKeyPair) -> int:
    """Every segment whole, streamed chunk by chunk as a server sends it."""
    total = 0
    for s in segments:
        header = read_sealed_header(s.sealed, open_header, HEADER_SIZE)
        opener = SegmentOpener(header, key, s.identity)
        with s.sealed.open("rb") as f:
            for piece in iter_sealed_range(f, opener, 0, header.plaintext_length):
                total += len(piece)
    return total


def read_sealed_joined(segments: list[Segment], key: HouseholdKeyPair) -> int:
    """Every segment whole as one byte string each (``read_sealed_range``)."""
    total = 0
    for s in segments:
        header = read_sealed_header(s.sealed, open_header, HEADER_SIZE)
        opener = SegmentOpener(header, key, s.identity)
        total += len(read_sealed_range(s.sealed, opener, 0, header.plaintext_length))
    return total


class PassThrough:
    """A sealer that seals nothing: the same writer and I/O, no cryptography (baseline)."""

    def __init__(self) -> None:
        self.size = 0

    def push_parts(self, data: bytes) -> list[bytes]:
        self.size += len(data)
        return [data]

    def finish(self) -> PassThrough:
        return self

    tail = b""
    header = b""

    @property
    def file_size(self) -> int:
        return self.size


def write_all(segments: list[Segment], where: Path, key: HouseholdKeyPair | None) -> None:
    for i, s in enumerate(segments):
        out = where / f"w-{i}.mp4"
        sealer = SegmentSealer(key.public, s.identity) if key is not None else PassThrough()
        with SealedFileWriter(out, sealer) as w:
            w.write(s.plain.read_bytes())
            w.commit()
        out.unlink()


# --------------------------------------------------------------------------------------------
# the 30 s clip


def _covering(segments: list[Segment], start: float, end: float) -> list[Segment]:
    return [
        s
        for i, s in enumerate(segments)
        if s.start < end and (i + 1 == len(segments) or segments[i + 1].start > start)
    ]


def serve_ranges_plain(path: Path) -> int:
    size = path.stat().st_size
    total = 0
    for at in range(0, size, RANGE_BYTES):
        with path.open("rb") as f:  # one request, one open, as a file response does
            f.seek(at)
            total += len(f.read(min(RANGE_BYTES, size - at)))
    return total


def serve_ranges_sealed(path: Path, key: HouseholdKeyPair, ident: SegmentIdentity) -> int:
    size = read_sealed_header(path, open_header, HEADER_SIZE).plaintext_length
    total = 0
    for at in range(0, size, RANGE_BYTES):
        with path.open("rb") as f:  # one request: header, opener, the range's chunks
            header = open_header(f.read(HEADER_SIZE))
            opener = SegmentOpener(header, key, ident)
            for piece in iter_sealed_range(f, opener, at, min(size, at + RANGE_BYTES)):
                total += len(piece)
    return total


def clip_plain(segments: list[Segment], start: float, cache: Path) -> int:
    parts = [(s.plain, s.start) for s in _covering(segments, start, start + CLIP_SECONDS)]
    out = cache / "clip.mp4"
    compose_clip(parts, start, start + CLIP_SECONDS, out, overwrite=True)
    return serve_ranges_plain(out)


@contextlib.contextmanager
def _decrypted_to_memory(segments: list[Segment], key: HouseholdKeyPair) -> Iterator[list[Path]]:
    """The plaintext of ``segments`` in memory-only files (``memfd_create``: never on disk),
    streamed in chunk-sized pieces, each openable by path (``/proc/self/fd/N``) for PyAV."""
    fds: list[int] = []
    try:
        for s in segments:
            fd = os.memfd_create("hw-segment", os.MFD_CLOEXEC)
            fds.append(fd)
            header = read_sealed_header(s.sealed, open_header, HEADER_SIZE)
            opener = SegmentOpener(header, key, s.identity)
            with s.sealed.open("rb") as f:
                for piece in iter_sealed_range(f, opener, 0, header.plaintext_length):
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(fd, view) :]
        yield [Path(f"/proc/self/fd/{fd}") for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


def clip_sealed(
    segments: list[Segment], start: float, cache: Path, shm: Path, key: HouseholdKeyPair
) -> int:
    needed = _covering(segments, start, start + CLIP_SECONDS)
    ident = SegmentIdentity("clip", CAMERA, start)
    out = cache / "clip.sealed"
    with _decrypted_to_memory(needed, key) as paths:
        plain = shm / "clip.mp4"
        compose_clip(
            list(zip(paths, [s.start for s in needed], strict=True)),
            start,
            start + CLIP_SECONDS,
            plain,
            overwrite=True,
        )
    try:
        out.unlink(missing_ok=True)
        with plain.open("rb") as src:
            write_sealed_file(out, SegmentSealer(key.public, ident), src, durable=False)
    finally:
        plain.unlink()
    return serve_ranges_sealed(out, key, ident)


def clip_sealed_in_memory(
    segments: list[Segment], start: float, shm: Path, key: HouseholdKeyPair
) -> int:
    """The sealed path with the composed clip kept in memory (tmpfs) while it is served."""
    needed = _covering(segments, start, start + CLIP_SECONDS)
    plain = shm / "clip-in-memory.mp4"
    with _decrypted_to_memory(needed, key) as paths:
        compose_clip(
            list(zip(paths, [s.start for s in needed], strict=True)),
            start,
            start + CLIP_SECONDS,
            plain,
            overwrite=True,
        )
    try:
        return serve_ranges_plain(plain)
    finally:
        plain.unlink()


# --------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--clip-start", type=float, default=25.0, help="s into the footage")
    args = parser.parse_args()
    key = generate_household_key()
    clip = export.camera_clip()
    print(f"footage: {_common.describe_clip(clip)}; chunks of {DEFAULT_CHUNK_SIZE // 1024} KiB")
    with (
        tempfile.TemporaryDirectory(prefix="hw-bench-seal-") as tmp,
        tempfile.TemporaryDirectory(prefix="hw-bench-seal-", dir="/dev/shm") as shm_tmp,
    ):
        root = Path(tmp)
        segments = prepare(root, key)
        total = sum(s.size for s in segments)
        seconds = segments[-1].start - T0 + 10.0
        print(
            f"{len(segments)} segments, ~{seconds:.0f} s, {total / 1e6:.1f} MB "
            f"({total * 8 / seconds / 1e6:.1f} Mbit/s)"
        )
        rounds = max(1, round(200e6 / total))  # ~200 MB per measurement
        assert read_sealed(segments, key) == read_plain(segments) == total  # and warm the cache

        def plain_reads() -> None:
            for _ in range(rounds):
                read_plain(segments)

        def sealed_reads() -> None:
            for _ in range(rounds):
                read_sealed(segments, key)

        t_plain, t_sealed = _paired(plain_reads, sealed_reads, args.repeat)
        mb = rounds * total / 1e6
        sealed_mbs = mb / t_sealed.cpu
        print(
            f"decrypt: {sealed_mbs:.0f} MB/s on one core (target >= {DECRYPT_TARGET_MBS:.0f}: "
            f"{_verdict(sealed_mbs >= DECRYPT_TARGET_MBS)}); plaintext read {mb / t_plain.cpu:.0f} "
            f"MB/s; ratio sealed/plaintext CPU {t_sealed.cpu / t_plain.cpu:.2f}x"
        )
        files = [s.sealed.read_bytes() for s in segments]
        openers = [
            SegmentOpener(open_header(f), key, s.identity)
            for f, s in zip(files, segments, strict=True)
        ]

        def open_in_memory() -> None:  # the cipher and its Python glue, chunk by chunk
            for _ in range(rounds):
                for f, o in zip(files, openers, strict=True):
                    view = memoryview(f)
                    for i in range(o.chunk_count):
                        a, b = o.chunk_file_range(i)
                        o.open_chunk(i, view[a:b])

        t_mem = _median_time(open_in_memory, args.repeat)

        def joined_reads() -> None:
            for _ in range(rounds):
                read_sealed_joined(segments, key)

        t_joined = _median_time(joined_reads, args.repeat)
        print(
            f"  chunks opened one by one from memory (no I/O, no header): "
            f"{mb / t_mem.cpu:.0f} MB/s; segments read as one byte string each: "
            f"{mb / t_joined.cpu:.0f} MB/s"
        )

        where = root / "writes"
        where.mkdir()
        t_wplain, t_wsealed = _paired(
            lambda: write_all(segments, where, None),
            lambda: write_all(segments, where, key),
            args.repeat,
        )
        blob = segments[0].plain.read_bytes()

        def seal_in_memory() -> None:
            sealer = SegmentSealer(key.public, segments[0].identity)
            sealer.push_parts(blob)
            sealer.finish()

        seal_mbs = len(blob) / _median_time(seal_in_memory, args.repeat).cpu / 1e6
        extra_per_byte = max(0.0, t_wsealed.cpu - t_wplain.cpu) / total
        per_minute_ms = IDLE_CAMERA_BITS / 8 * 60 * extra_per_byte * 1000
        print(
            f"seal: writing the segments sealed (fsync, rename) costs "
            f"{t_wsealed.cpu * 1000:.0f} ms of CPU vs {t_wplain.cpu * 1000:.0f} ms plain "
            f"({t_wsealed.cpu / t_wplain.cpu:.2f}x; wall {t_wsealed.wall * 1000:.0f} vs "
            f"{t_wplain.wall * 1000:.0f} ms: {t_wsealed.wall / t_wplain.wall:.2f}x): "
            f"{extra_per_byte * 1e9:.2f} ms more CPU per MB, i.e. {per_minute_ms:.1f} ms per "
            f"camera-minute at the idle-cost camera's {IDLE_CAMERA_BITS / 1e6:g} Mbit/s; "
            f"sealing one 10 s segment from memory again and again: {seal_mbs:.0f} MB/s"
        )

        cache = root / "cache"
        cache.mkdir()
        shm = Path(shm_tmp)
        start = T0 + args.clip_start
        n_plain = clip_plain(segments, start, cache)
        n_sealed = clip_sealed(segments, start, cache, shm, key)
        n_memory = clip_sealed_in_memory(segments, start, shm, key)
        assert n_plain == n_sealed == n_memory  # the same clip bytes every way
        t_cplain, t_csealed, t_cmemory = _in_turn(
            [
                lambda: clip_plain(segments, start, cache),
                lambda: clip_sealed(segments, start, cache, shm, key),
                lambda: clip_sealed_in_memory(segments, start, shm, key),
            ],
            args.repeat,
        )
        n_ranges = -(-n_plain // RANGE_BYTES)
        print(
            f"30 s clip ({n_plain / 1e6:.1f} MB, {n_ranges} ranges of 1 MiB, from "
            f"{len(_covering(segments, start, start + CLIP_SECONDS))} segments), CPU: plaintext "
            f"{t_cplain.cpu * 1000:.0f} ms (compose {CLIP_SECONDS:g} s + serve from disk cache)"
        )
        for label, t in (
            ("sealed segments, clip sealed into the disk cache", t_csealed),
            ("sealed segments, clip kept in memory while served", t_cmemory),
        ):
            ratio = t.cpu / t_cplain.cpu
            print(
                f"  {label}: {t.cpu * 1000:.0f} ms, {ratio:.2f}x "
                f"(target <= {CLIP_TARGET_RATIO}: {_verdict(ratio <= CLIP_TARGET_RATIO)})"
            )
        sealed_clip = cache / "clip.sealed"
        ident = SegmentIdentity("clip", CAMERA, start)
        plain_clip = cache / "clip.mp4"
        t_rplain, t_rsealed = _paired(
            lambda: serve_ranges_plain(plain_clip),
            lambda: serve_ranges_sealed(sealed_clip, key, ident),
            args.repeat,
        )
        print(
            f"  of which serving the ranges alone: sealed {t_rsealed.cpu * 1000:.1f} ms vs "
            f"plaintext {t_rplain.cpu * 1000:.1f} ms of CPU "
            f"({t_rsealed.cpu / t_rplain.cpu:.1f}x a page-cache "
            f"copy; {t_rsealed.cpu / n_ranges * 1000:.2f} ms per 1 MiB request)"
        )
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} (1 min) during the run")


if __name__ == "__main__":
    main()
