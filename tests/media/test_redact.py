"""Redaction of real footage: faces the Haar detectors find in the original are gone from the
redacted copy on every frame, privacy masks are solid, audio is dropped, timing is kept.

bikes.mp4 (a street with cyclists) is the shared clip with the most detector hits: OpenCV's
frontal and profile cascades fire on ~60 of its 250 frames (a cyclist's face, and face-like
patches of a poster the cascades also take for faces). vtest.avi's pedestrians are seen from
above and far away: hits on 19 of 795 frames. The test judges with the same cascades a checker
would use, with OpenCV's usual parameters (scale 1.1, 5 neighbours)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from bench.redaction_faces import checker as _checker
from bench.redaction_faces import faces as _faces
from bench.redaction_faces import same_face as _same_face
from numpy.typing import NDArray

from homewarden.errors import StorageError
from homewarden.media.clip import compose_clip
from homewarden.media.redact import FaceDetector, redact_clip

MASK = [(0.0, 0.0), (0.25, 0.0), (0.25, 0.3), (0.0, 0.3)]
Box = tuple[int, int, int, int]


def _frames(path: Path) -> list[tuple[int, NDArray[np.uint8]]]:
    with av.open(str(path)) as c:
        return [
            (int(f.pts or 0), np.asarray(f.to_ndarray(), dtype=np.uint8)[: f.height].copy())
            for f in c.decode(video=0)
        ]


def _faces_left(original: Path, redacted: Path) -> tuple[int, list[tuple[int, Box]]]:
    """Frames of ``original`` with a checker hit, and the hits left in ``redacted`` on a face
    of the original (frame index, box); the two must hold the same frames, same timing."""
    cascades = _checker()
    before, after = _frames(original), _frames(redacted)
    assert [p for p, _ in before] == [p for p, _ in after]
    hits = 0
    left: list[tuple[int, Box]] = []
    for k, ((_, a), (_, b)) in enumerate(zip(before, after, strict=True)):
        faces = _faces(a, cascades)
        hits += bool(faces)
        left += [(k, f) for f in _faces(b, cascades) if any(_same_face(f, o) for o in faces)]
    return hits, left


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
    hits, left = _faces_left(original, redacted)
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
    hits, left = _faces_left(original, redacted)
    assert hits >= 5, f"the stretch should show detectable faces, found them on {hits} frames"
    assert left == []


def test_thorough_redaction_leaves_no_face_the_default_passes_can_miss(
    tmp_path: Path, vtest_h264: Path
) -> None:
    """vtest.avi 46-47.2 s holds frames 468-469, where a whole-frame checker at 768 px finds a
    face that the default passes (640 px, every 3rd frame, region crops) leave bare on the
    whole clip. The thorough setting (every frame, full resolution, exact region scans)
    leaves none."""
    original = tmp_path / "original.mp4"
    compose_clip([(vtest_h264, 1000.0)], 1046.0, 1047.2, original)
    redacted = tmp_path / "redacted.mp4"
    info = redact_clip(original, redacted, thorough=True, detect_every=5)
    assert info.thorough
    assert info.detect_every == 1  # thorough overrides the interval
    hits, left = _faces_left(original, redacted)
    assert hits >= 2, f"the stretch should show detectable faces, found them on {hits} frames"
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


def test_a_region_scan_sees_what_a_whole_frame_scan_sees(vtest_h264: Path) -> None:
    """Regression: region passes cropped the frame and ran ``detectMultiScale`` on the crop,
    whose image pyramid is resampled on another grid, so a face a whole-frame checker found
    (vtest.avi frames 468-469) was missed inside a region that held it. With
    ``exact_regions`` the region scan walks the whole frame's own pyramid: over the whole
    frame it gives exactly ``detectMultiScale``'s boxes, and around a face (at an odd offset)
    it still finds that face."""
    frames = _frames(vtest_h264)
    det = FaceDetector(detect_width=10_000, min_neighbors=5, exact_regions=True)
    seen = 0
    for k in (468, 469, 618, 620, 656):
        luma = frames[k][1]
        h, w = luma.shape
        whole = sorted(det.detect_scaled(luma, 1.0))
        assert sorted(det.detect_scaled(luma, 1.0, [(0, 0, w, h)])) == whole
        for x, y, bw, bh in whole:
            # A region around the face only, at an odd offset: what the region pass scans.
            region = (max(0, x - 31), max(0, y - 29), bw + 61, bh + 59)
            near = det.detect_scaled(luma, 1.0, [region])
            assert any(_same_face(b, (x, y, bw, bh)) for b in near), (k, (x, y, bw, bh), near)
            seen += 1
    assert seen >= 5


def test_an_existing_output_is_refused(clips: tuple[Path, Path]) -> None:
    original, redacted = clips
    with pytest.raises(StorageError, match="already exists"):
        redact_clip(original, redacted)
    with pytest.raises(ValueError, match="hold"):
        redact_clip(original, redacted.with_name("x.mp4"), detect_every=3, hold=2)
