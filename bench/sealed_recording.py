"""Sealing's cost to the recorder: CPU of one camera recorded plaintext vs. sealed.

Issue 6 ("Speed"): sealing may add at most 5 % to the recorder's CPU. Two
:class:`~homewarden.services.recorder.CameraRecorder` threads record the same quiet
1280x720, 30 fps, GOP 2 s clip (``bench._common.quiet_clip``, a paced looping ``file:``
camera, motion on as by default) at the same time for the same seconds, one writing plain
``.mp4`` segments, the other sealing each segment when it closes
(``storage.sealed``: :func:`homewarden.services.sealed_footage.seal_segment_file`). Each
recorder thread reads its own CPU clock (``CameraStatus.cpu_seconds``,
``CLOCK_THREAD_CPUTIME_ID``); sealing runs on that thread, so the ratio sealed / plain is
sealing's cost. The time each seal takes (read, encrypt, write, fsync, rename) is printed
too, per segment and per second of footage.

Run from the repo root: ``.venv/bin/python bench/sealed_recording.py [--seconds 60]``.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import describe_clip, quiet_clip

from homewarden.config import CameraSettings
from homewarden.crypto.household_keys import (
    HouseholdKeyPair,
    HouseholdPublicKey,
    KeyId,
    generate_household_key,
)
from homewarden.services import sealed_footage
from homewarden.services.recorder import CameraRecorder
from homewarden.services.sealed_footage import SegmentSealing
from homewarden.store.index import Index


class _Keys:
    """The household public key of a key pair made for the run (no database needed)."""

    def __init__(self, pair: HouseholdKeyPair) -> None:
        self.pair = pair

    def recording_key(self, household: str) -> tuple[KeyId, HouseholdPublicKey]:
        return self.pair.key_id, self.pair.public


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print it; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds recorded (60)")
    parser.add_argument("--clip", type=Path, help="camera clip (default: the cached quiet clip)")
    args = parser.parse_args(argv)
    clip = args.clip or quiet_clip()
    print(f"clip: {describe_clip(clip)}")
    seal_times: list[float] = []
    original = sealed_footage.seal_segment_file

    def timed(*a: object, **k: object) -> sealed_footage.SealedSegmentFile:
        t0 = time.perf_counter()
        try:
            return original(*a, **k)  # type: ignore[arg-type]
        finally:
            seal_times.append(time.perf_counter() - t0)

    import homewarden.services.recorder as recorder_module

    recorder_module.seal_segment_file = timed  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="hw-bench-seal-") as tmp:
        work = Path(tmp)
        index = Index(f"sqlite:///{work / 'homewarden.db'}")
        index.migrate()
        cam = CameraSettings(url=f"file:{clip}", loop=True)
        sealing = SegmentSealing("home", _Keys(generate_household_key()))
        plain = CameraRecorder("plain", cam, work / "media", work / "snapshots", index)
        sealed = CameraRecorder(
            "sealed", cam, work / "media", work / "snapshots", index, sealing=sealing
        )
        plain.start()
        sealed.start()
        time.sleep(args.seconds)
        plain.stop(timeout=30)
        sealed.stop(timeout=30)
        p, s = plain.status(), sealed.status()
        segs = index.segments("sealed")
        seconds = sum(x.duration for x in segs)
        size = statistics.fmean(x.bytes for x in segs) if segs else 0.0
        index.close()
    print(f"plain : {p.cpu_seconds:.3f} CPU s, {p.segments_written} segments")
    print(
        f"sealed: {s.cpu_seconds:.3f} CPU s, {s.segments_written} segments of "
        f"{size / 1e6:.2f} MB on average"
    )
    print(f"ratio sealed/plain: {s.cpu_seconds / p.cpu_seconds:.3f} (target <= 1.05)")
    if seal_times:
        mean = statistics.fmean(seal_times)
        print(
            f"sealing a segment on close: mean {mean * 1000:.1f} ms, max "
            f"{max(seal_times) * 1000:.1f} ms wall over {len(seal_times)} segments; "
            f"{sum(seal_times) / max(seconds, 1e-9) * 1000:.2f} ms per second of footage"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
