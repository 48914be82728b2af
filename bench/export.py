"""Evidence export speed: one hour of 720p footage to a signed package, and with redaction.

Issue 5 ("Speed"): ``bench/export.py`` - one hour of 720p footage to a signed package, remux
only: seconds per hour of footage (target >= 200x real time); with face redaction on 2 cores
(target >= 1x real time).

Footage: vtest.avi (real pedestrians on a walkway, 79.5 s) transcoded once to a 1280x720
30 fps GOP 2 s H.264 camera clip (cached in ``bench/.cache``), cut on keyframes into ~10 s
fragmented-MP4 segments as the recorder writes them, and looped: the segment files are
hard-linked under new names and indexed back to back until the hour is full (360-ish
segments, one copy of the bytes on disk; after the first loop they are read from the page
cache, as recent footage usually is).

Figures, each with a baseline measured in the same run:

* remux - :meth:`EvidenceService.export` of the hour (remux into <= 1 h files, SHA-256,
  manifest, signature, audit entry with proof, zip, fsync): seconds, real-time factor, and
  the ratio to the baseline of reading and SHA-256-hashing the same segment bytes once (the
  least any package of that footage costs);
* redact - a ``--redact-seconds`` sample (default 60 s) exported with ``redact=True``
  (decode, faces, masks, x264 encode), extrapolated to an hour; baseline: the same decode and
  x264 encode without face detection (``redact_clip`` detecting on the first frame only).

Run from the repo root: ``.venv/bin/python bench/export.py [--hours 1] [--redact-seconds 60]``.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import av

from bench import _common
from homewarden.config import Settings
from homewarden.domain.audit import Actor, ActorKind
from homewarden.media.redact import redact_clip
from homewarden.media.segment_writer import SegmentWriter
from homewarden.media.transcode import transcode_to_h264
from homewarden.services.audit import AuditLog
from homewarden.services.evidence import EvidenceService
from homewarden.services.package_verify import verify_package_path
from homewarden.store.index import Index
from homewarden.store.records import NewSegment

T0 = 1_700_000_000.0
CAMERA = "bench"
SEGMENT_SECONDS = 10.0
REMUX_TARGET = 200.0
REDACT_TARGET = 1.0


def camera_clip() -> Path:
    """vtest.avi as a 1280x720 30 fps GOP 2 s H.264 camera clip (cached)."""
    dst = _common.cache_dir() / "vtest-720p30.mp4"
    return transcode_to_h264(
        _common.footage_path(), dst, gop_seconds=_common.GOP_SECONDS, width=1280, height=720, fps=30
    )


def cut_segments(clip: Path, where: Path) -> list[tuple[Path, float]]:
    """``clip`` cut on keyframes every >= 10 s into fMP4 segments: (file, duration s)."""
    out: list[tuple[Path, float]] = []
    writer: SegmentWriter | None = None
    seg_start = 0.0
    with av.open(str(clip)) as inp:
        video = inp.streams.video[0]
        total = float((video.duration or 0) * (video.time_base or 0))
        for packet in inp.demux(video):
            if packet.dts is None or packet.pts is None or packet.time_base is None:
                continue
            t = float(packet.pts * packet.time_base)
            if packet.is_keyframe and (writer is None or t - seg_start >= SEGMENT_SECONDS):
                if writer is not None:
                    writer.close()
                    out.append((writer.final_path, t - seg_start))
                seg_start = t
                writer = SegmentWriter(where / f"base-{len(out)}.mp4", video)
            assert writer is not None
            writer.write(packet)
        assert writer is not None
        writer.close()
        out.append((writer.final_path, total - seg_start))
    return out


def fill_hours(data_dir: Path, base: list[tuple[Path, float]], seconds: float) -> list[Path]:
    """Index looped copies (hard links) of ``base`` from T0 until ``seconds`` are covered."""
    media = data_dir / "media"
    index = Index(f"sqlite:///{data_dir / 'homewarden.db'}")
    index.migrate()
    files: list[Path] = []
    t = 0.0
    i = 0
    try:
        while t < seconds:
            src, dur = base[i % len(base)]
            start = T0 + t
            d = datetime.fromtimestamp(start, UTC)
            rel = f"{CAMERA}/{d:%Y-%m-%d}/{d:%H}/{start:.3f}.mp4"
            (media / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(src, media / rel)
            index.add_segment(
                NewSegment(CAMERA, start, start + dur, src.stat().st_size, 5, 0.0, rel)
            )
            files.append(media / rel)
            t += dur
            i += 1
    finally:
        index.close()
    return files


def hash_baseline(files: list[Path]) -> float:
    """Seconds to read and SHA-256 every byte of ``files`` once."""
    began = time.perf_counter()
    for f in files:
        h = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return time.perf_counter() - began


def export(data_dir: Path, out: Path, seconds: float, *, redact: bool) -> tuple[float, Path]:
    settings = Settings(data_dir=data_dir, cameras={CAMERA: {"url": "file:/dev/null"}})
    index = Index(settings.db_url)
    actor = Actor(ActorKind.LOCAL_OPERATOR, "cli:bench")
    try:
        with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
            audit.ensure_key()
            began = time.perf_counter()
            result = EvidenceService(index, settings, audit).export(
                [CAMERA], T0, T0 + seconds, out, actor=actor, reason="bench", redact=redact
            )
            took = time.perf_counter() - began
    finally:
        index.close()
    verify_package_path(result.zip_path)  # the package is real: it verifies
    return took, result.folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--redact-seconds", type=float, default=60.0)
    args = parser.parse_args()
    clip = camera_clip()
    print(f"footage: {_common.describe_clip(clip)}")
    with tempfile.TemporaryDirectory(prefix="hw-bench-export-") as tmp:
        root = Path(tmp)
        (root / "base").mkdir()
        base = cut_segments(clip, root / "base")
        seconds = args.hours * 3600.0
        files = fill_hours(root / "data", base, seconds)
        total = sum(f.stat().st_size for f in files)
        print(f"{len(files)} segments, {seconds:.0f} s, {total / 1e6:.0f} MB of footage")
        hash_baseline(files)  # warm the page cache, as for recent footage
        baseline = hash_baseline(files)
        out = root / "out"
        out.mkdir()
        took, _ = export(root / "data", out, seconds, redact=False)
        rate = seconds / took
        print(
            f"remux export: {took:.2f} s for {seconds / 3600:g} h -> {rate:.0f}x real time "
            f"(target >= {REMUX_TARGET:.0f}x: {'PASS' if rate >= REMUX_TARGET else 'FAIL'}); "
            f"{took / baseline:.2f}x the baseline (read + SHA-256 of the footage once: "
            f"{baseline:.2f} s)"
        )
        sample = args.redact_seconds
        took_r, _ = export(root / "data", out, sample, redact=True)
        rate_r = sample / took_r
        # Baseline: the same decode + x264 encode, faces detected on the first frame only.
        original = next((root / "out").glob("*.withheld")) / "clips"
        src = next(original.glob("*.mp4"))
        began = time.perf_counter()
        redact_clip(src, root / "baseline.mp4", detect_every=10**9, hold=10**9)
        base_s = time.perf_counter() - began
        print(
            f"redacted export: {took_r:.1f} s for a {sample:g} s sample -> {rate_r:.2f}x real "
            f"time, about {3600 / rate_r / 60:.0f} min per hour extrapolated (target >= "
            f"{REDACT_TARGET:g}x: {'PASS' if rate_r >= REDACT_TARGET else 'FAIL'}); "
            f"{took_r / base_s:.2f}x the baseline (decode + x264 encode, no face detection: "
            f"{base_s:.1f} s = {sample / base_s:.2f}x real time)"
        )
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} (1 min) during the run")


if __name__ == "__main__":
    main()
