"""Redaction of real footage: faces the Haar detectors find in the original are gone from the
redacted copy on every frame, privacy masks are solid, audio is dropped, timing is kept.

bikes.mp4 (a street with cyclists) is the shared clip with the most detector hits: OpenCV's
frontal and profile cascades fire on ~60 of its 250 frames (a cyclist's face, and face-like
patches of a poster the cascades also take for faces). vtest.avi's pedestrians are seen from
above and far away: 13 hits in 795 frames. The test judges with the same cascades a checker
would use, with OpenCV's usual parameters (scale 1.1, 5 neighbours)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from homewarden.errors import StorageError
from homewarden.media.clip import compose_clip
from homewarden.media.redact import FaceDetector, redact_clip

MASK = [(0.0, 0.0), (0.25, 0.0), (0.25, 0.3), (0.0, 0.3)]
Box = tuple[int, int, int, int]


def _checker() -> list[tuple[object, bool]]:
    base = cv2.data.haarcascades  # type: ignore[attr-defined]
    frontal = cv2.CascadeClassifier(base + "haarcascade_frontalface_default.xml")
    profile = cv2.CascadeClassifier(base + "haarcascade_profileface.xml")
    return [(frontal, False), (profile, False), (profile, True)]


def _faces(gray: NDArray[np.uint8], cascades: list[tuple[object, bool]]) -> list[Box]:
    out: list[Box] = []
    w = gray.shape[1]
    for cascade, mirrored in cascades:
        img = cv2.flip(gray, 1) if mirrored else gray
        for x, y, bw, bh in cascade.detectMultiScale(img, 1.1, 5, minSize=(20, 20)):  # type: ignore[attr-defined]
            out.append((w - int(x) - int(bw) if mirrored else int(x), int(y), int(bw), int(bh)))
    return out


def _same_face(a: Box, b: Box) -> bool:
    """Boxes on the same face: intersection over union above 0.3 (a looser match than the
    0.5 of the PASCAL VOC criterion, so a face found again slightly shifted counts)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter) > 0.3


def _frames(path: Path) -> list[tuple[int, NDArray[np.uint8]]]:
    with av.open(str(path)) as c:
        return [
            (int(f.pts or 0), np.asarray(f.to_ndarray(), dtype=np.uint8)[: f.height].copy())
            for f in c.decode(video=0)
        ]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, bikes_mp4: Path) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("redact")
    original = where / "original.mp4"
    # 2.5 s .. 6 s of bikes.mp4: the stretch with the most detector hits.
    compose_clip([(bikes_mp4, 1000.0)], 1002.5, 1006.0, original)
    redacted = where / "redacted.mp4"
    info = redact_clip(original, redacted, masks=[MASK])
    assert info.frames > 80
    assert info.detections > 0
    assert info.blurred_frames > 0
    return original, redacted


def test_no_face_is_left_where_the_original_had_one(clips: tuple[Path, Path]) -> None:
    original, redacted = clips
    cascades = _checker()
    before, after = _frames(original), _frames(redacted)
    assert [p for p, _ in before] == [p for p, _ in after]  # same frames, same timing
    hits = 0
    left: list[tuple[int, Box]] = []
    for k, ((_, a), (_, b)) in enumerate(zip(before, after, strict=True)):
        faces = _faces(a, cascades)
        hits += bool(faces)
        left += [(k, f) for f in _faces(b, cascades) if any(_same_face(f, o) for o in faces)]
    assert hits >= 20, f"the footage should show detectable faces, found them on {hits} frames"
    assert left == []


def test_static_camera_no_face_is_left_where_the_original_had_one(
    tmp_path: Path, vtest_h264: Path
) -> None:
    """The same check on a fixed camera (vtest.avi, 768x576, 10 fps): most of each frame does
    not change, so the detection frames between full passes scan only the changed regions
    and the surroundings of live boxes, which bikes.mp4 (a moving view) never exercises.
    59 s .. 64 s holds the footage's longest run of checker hits (6 frames, ~61.7-62.2 s)."""
    original = tmp_path / "original.mp4"
    compose_clip([(vtest_h264, 1000.0)], 1059.0, 1064.0, original)
    redacted = tmp_path / "redacted.mp4"
    redact_clip(original, redacted)
    cascades = _checker()
    before, after = _frames(original), _frames(redacted)
    assert [p for p, _ in before] == [p for p, _ in after]
    hits = 0
    left: list[tuple[int, Box]] = []
    for k, ((_, a), (_, b)) in enumerate(zip(before, after, strict=True)):
        faces = _faces(a, cascades)
        hits += bool(faces)
        left += [(k, f) for f in _faces(b, cascades) if any(_same_face(f, o) for o in faces)]
    assert hits >= 5, f"the stretch should show detectable faces, found them on {hits} frames"
    assert left == []


def test_masks_are_solid_and_audio_is_gone(clips: tuple[Path, Path]) -> None:
    _, redacted = clips
    with av.open(str(redacted)) as c:
        assert not c.streams.audio
        assert c.streams.video[0].codec_context.name == "h264"
    for _, y in _frames(redacted)[::10]:
        h, w = y.shape
        inside = y[2 : int(0.3 * h) - 4, 2 : int(0.25 * w) - 4]
        assert float(inside.mean()) < 20.0  # video-range black is 16
        assert float(y[h // 2 :, w // 2 :].mean()) > 40.0  # the rest is footage


def test_detector_finds_a_face_on_a_face_frame(bikes_mp4: Path) -> None:
    with av.open(str(bikes_mp4)) as c:
        decoded = zip(range(120), c.decode(video=0), strict=False)
        frames = [np.asarray(f.to_ndarray(), dtype=np.uint8)[: f.height] for _, f in decoded]
    det = FaceDetector()
    assert any(det.detect(f) for f in frames[105:120])
    assert det.detect(np.full((272, 640), 128, np.uint8)) == []  # a flat frame has none


def test_an_existing_output_is_refused(clips: tuple[Path, Path]) -> None:
    original, redacted = clips
    with pytest.raises(StorageError, match="already exists"):
        redact_clip(original, redacted)
    with pytest.raises(ValueError, match="hold"):
        redact_clip(original, redacted.with_name("x.mp4"), detect_every=3, hold=2)
