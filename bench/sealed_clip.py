"""Serving a clip from sealed segments vs. plaintext ones (issue 6, "Speed": at most 1.2x).

The same 30 s span of real footage (``bikes.mp4`` looped by the recorder's own segment
writer into ~2 s segments, cut at keyframes) is composed into an MP4 clip
(:func:`homewarden.media.clip.compose_clip`) from plaintext ``.mp4`` segments and from the
same segments sealed to a household key (opened in memory with the key pair, as
:func:`homewarden.services.sealed_footage.open_sealed_segment` does for a session, the
clip composed in a private directory of the memory file system ``Queries`` uses
(:data:`homewarden.services.queries.MEMORY_DIR`), read into memory, the directory removed,
and served whole from memory in :data:`~homewarden.services.queries.CLIP_CHUNK_BYTES`
chunks, as ``Queries`` and the web app serve it), several times each, alternating; the
median wall time of each and their ratio are printed. Both are a first, uncached request
(later range requests of either are served from the cache).

Run from the repo root: ``.venv/bin/python bench/sealed_clip.py [--repeat 5]``.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import av
from bench._common import footage_path

from homewarden.crypto.household_keys import generate_household_key
from homewarden.media.clip import compose_clip
from homewarden.media.segment_writer import SegmentWriter
from homewarden.services.queries import CLIP_CHUNK_BYTES, MEMORY_CLIP_PREFIX, MEMORY_DIR
from homewarden.services.sealed_footage import (
    SegmentSealing,
    open_sealed_segment,
    seal_segment_file,
)
from homewarden.store.records import SegmentRecord

SPAN = 30.0


class _Keys:
    def __init__(self) -> None:
        self.pair = generate_household_key()

    def recording_key(self, household: str) -> tuple[bytes, object]:
        return self.pair.key_id, self.pair.public


def _segments(src: Path, media: Path, seconds: float) -> list[tuple[str, float, float]]:
    """Cut ``src`` (looped) at keyframes into plaintext segments covering ``seconds``."""
    out: list[tuple[str, float, float]] = []
    offset = 0.0
    writer: SegmentWriter | None = None
    start = 0.0
    rel = ""
    while offset < seconds:
        with av.open(str(src)) as container:
            video = container.streams.video[0]
            last = 0.0
            for packet in container.demux(video):
                if packet.dts is None:
                    continue
                t = offset + float(packet.pts * packet.time_base)
                last = t
                if packet.is_keyframe and (writer is None or t - start >= 2.0):
                    if writer is not None:
                        writer.close()
                        out.append((rel, start, t))
                    start = t
                    rel = f"cam/{len(out):04d}.mp4"
                    writer = SegmentWriter(media / rel, video)
                assert writer is not None
                writer.write(packet)
            offset = last + 0.04
        if writer is not None:
            writer.close()
            out.append((rel, start, offset))
            writer = None
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="compositions of each (5)")
    args = parser.parse_args(argv)
    src = footage_path("bikes.mp4")
    with tempfile.TemporaryDirectory(prefix="hw-bench-clip-") as tmp:
        work = Path(tmp)
        plain_dir, sealed_dir = work / "plain", work / "sealed"
        segs = _segments(src, plain_dir, SPAN + 4.0)
        keys = _Keys()
        sealing = SegmentSealing("home", keys)  # type: ignore[arg-type]
        records: dict[Path, SegmentRecord] = {}
        for i, (rel, a, b) in enumerate(segs):
            part = sealed_dir / (rel + ".part")
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes((plain_dir / rel).read_bytes())
            done = seal_segment_file(part, sealed_dir, rel, "cam", a, sealing)
            records[sealed_dir / done.path] = SegmentRecord(
                i, "cam", a, b, b - a, done.bytes, 1, 0.0, done.path, True, done.key_id
            )
        plain_parts = [(plain_dir / rel, a) for rel, a, _ in segs]
        sealed_parts = [(path, rec.start) for path, rec in records.items()]

        def reader(path: Path) -> bytes:
            return open_sealed_segment(sealed_dir, records[path], "home", lambda h, k: keys.pair)

        memory = MEMORY_DIR if MEMORY_DIR.is_dir() else work
        times: dict[str, list[float]] = {"plain": [], "sealed": []}
        for n in range(args.repeat):
            for kind in ("plain", "sealed"):
                out = work / f"{kind}-{n}.mp4"
                t0 = time.perf_counter()
                if kind == "plain":
                    compose_clip(plain_parts, 1.0, 1.0 + SPAN, out)
                    with out.open("rb") as f:  # served whole, as FileResponse reads it
                        while f.read(1024 * 1024):
                            pass
                else:
                    private = Path(tempfile.mkdtemp(prefix=MEMORY_CLIP_PREFIX, dir=memory))
                    try:
                        clip = private / "clip.mp4"
                        compose_clip(sealed_parts, 1.0, 1.0 + SPAN, clip, reader=reader)
                        data = clip.read_bytes()
                    finally:
                        shutil.rmtree(private, ignore_errors=True)
                    view = memoryview(data)
                    for lo in range(0, len(data), CLIP_CHUNK_BYTES):
                        bytes(view[lo : lo + CLIP_CHUNK_BYTES])
                times[kind].append(time.perf_counter() - t0)
                out.unlink(missing_ok=True)
    plain, sealed = statistics.median(times["plain"]), statistics.median(times["sealed"])
    print(f"{len(segs)} segments, {SPAN:.0f} s clip, {args.repeat} compositions each")
    print(f"plaintext: median {plain * 1000:.1f} ms")
    print(f"sealed   : median {sealed * 1000:.1f} ms")
    print(f"ratio sealed/plaintext: {sealed / plain:.2f} (target <= 1.2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
