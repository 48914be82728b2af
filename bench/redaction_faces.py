"""Whole-clip redaction check: faces left in a redacted copy, and what leaving none costs.

Issue 5 ("Acceptance"): "the redacted copy has no detectable face left where the original
had one". ``tests/media/test_redact.py`` checks that on the stretches of the shared footage
with the most face hits; this script checks every frame of a whole clip (vtest.avi by
default: 795 frames, 768x576, 10 fps), which takes minutes and so stays out of the tests.

The checker is the one the tests use: OpenCV's Haar frontal and profile cascades (both
directions) on every frame at the clip's own resolution, with OpenCV's usual parameters
(scale 1.1, 5 neighbours, faces of 20 px and up). A face is "left" on a frame when the
checker finds one in the redacted copy overlapping (IoU > 0.3) one it found in the original.

Two settings are run on the same clip, and each prints its faces left, its time and its
real-time factor:

* ``default`` - :func:`redact_clip`'s defaults (detection at :data:`DETECT_WIDTH` px, every
  :data:`DETECT_EVERY` frames, regions between full passes); also the baseline of the ratio;
* ``exhaustive`` - detection on every frame at the clip's own resolution, with
  ``exact_regions`` (regions between full passes still, each window in them given the
  answer a whole-frame pass would give it).

Run from the repo root: ``.venv/bin/python bench/redaction_faces.py [--clip PATH]
[--seconds S]`` (``--seconds`` keeps only the clip's first S seconds).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from bench import _common
from homewarden.media.clip import compose_clip
from homewarden.media.redact import DETECT_EVERY, DETECT_WIDTH, FaceDetector, redact_clip
from homewarden.media.transcode import transcode_to_h264

Box = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Result:
    """One setting's run: faces left (frame index, boxes), wall seconds, clip seconds."""

    name: str
    left: list[tuple[int, list[Box]]]
    seconds: float
    clip_seconds: float


def checker() -> list[tuple[Any, bool]]:
    """The checker's cascades: frontal, profile, profile on the mirrored image."""
    base = cv2.data.haarcascades  # type: ignore[attr-defined]
    frontal = cv2.CascadeClassifier(base + "haarcascade_frontalface_default.xml")
    profile = cv2.CascadeClassifier(base + "haarcascade_profileface.xml")
    return [(frontal, False), (profile, False), (profile, True)]


def faces(luma: NDArray[np.uint8], cascades: list[tuple[Any, bool]]) -> list[Box]:
    """Checker hits on one luma plane (H x W uint8), as ``(x, y, w, h)`` px."""
    out: list[Box] = []
    w = luma.shape[1]
    for cascade, mirrored in cascades:
        img = cv2.flip(luma, 1) if mirrored else luma
        for x, y, bw, bh in cascade.detectMultiScale(img, 1.1, 5, minSize=(20, 20)):
            out.append((w - int(x) - int(bw) if mirrored else int(x), int(y), int(bw), int(bh)))
    return out


def same_face(a: Box, b: Box) -> bool:
    """Intersection over union above 0.3 (looser than PASCAL VOC's 0.5)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter) > 0.3


def lumas(path: Path) -> list[NDArray[np.uint8]]:
    """Every frame's luma plane, in decode order."""
    with av.open(str(path)) as c:
        return [np.asarray(f.to_ndarray(), np.uint8)[: f.height].copy() for f in c.decode(video=0)]


def faces_left(
    original: dict[int, list[Box]], redacted: Path, cascades: list[tuple[Any, bool]]
) -> list[tuple[int, list[Box]]]:
    """Frames of ``redacted`` where the checker finds a face on one found in the original."""
    frames = lumas(redacted)
    left: list[tuple[int, list[Box]]] = []
    for k, before in sorted(original.items()):
        after = [f for f in faces(frames[k], cascades) if any(same_face(f, o) for o in before)]
        if after:
            left.append((k, after))
    return left


def run(name: str, clip: Path, out: Path, original: dict[int, list[Box]], **kw: Any) -> Result:
    """Redact ``clip`` with ``kw`` and check every frame the original had a face on."""
    began = time.perf_counter()
    info = redact_clip(clip, out, **kw)
    took = time.perf_counter() - began
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        rate = float(stream.average_rate or 10)
    return Result(name, faces_left(original, out, checker()), took, info.frames / rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=None, help="default: vtest.avi as H.264")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hw-redaction-") as tmp:
        root = Path(tmp)
        clip = args.clip or transcode_to_h264(
            _common.footage_path(), _common.cache_dir() / "vtest-h264.mp4", gop_seconds=2.0
        )
        if args.seconds is not None:
            cut = root / "clip.mp4"
            compose_clip([(clip, 1000.0)], 1000.0, 1000.0 + args.seconds, cut)
            clip = cut
        cascades = checker()
        began = time.perf_counter()
        original = {k: f for k, luma in enumerate(lumas(clip)) if (f := faces(luma, cascades))}
        print(
            f"original: checker hits on {len(original)} frames "
            f"({time.perf_counter() - began:.0f} s to check)"
        )
        with av.open(str(clip)) as c:
            width = c.streams.video[0].codec_context.width
        results = [
            run("default", clip, root / "default.mp4", original),
            run(
                "exhaustive",
                clip,
                root / "exhaustive.mp4",
                original,
                detect_every=1,
                detector=FaceDetector(detect_width=width, exact_regions=True),
            ),
        ]
        base = results[0].seconds
        for r in results:
            verdict = "PASS" if not r.left else "FAIL"
            print(
                f"{r.name}: faces left on {len(r.left)} frames ({verdict}) "
                f"{[k for k, _ in r.left]}; {r.seconds:.1f} s = "
                f"{r.clip_seconds / r.seconds:.2f}x real time, {r.seconds / base:.2f}x the default"
            )
    print(
        f"settings: default detects at <= {DETECT_WIDTH} px every {DETECT_EVERY} frames; "
        f"exhaustive at {width} px every frame"
    )
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} (1 min) during the run")


if __name__ == "__main__":
    main()
