"""Person detectors on real footage: HOG fallback and the SSDLite DNN."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from homewarden.detect.models import GRAPH_NAME, MODEL_DIR, find_person_model
from homewarden.detect.person import (
    Detection,
    HogPersonDetector,
    PersonDetecting,
    PersonDetector,
    load_person_detector,
)
from homewarden.errors import InvalidRequestError

BLANK = np.full((360, 640, 3), 128, dtype=np.uint8)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _person_shaped(d: Detection, frame: np.ndarray) -> bool:
    x0, y0, x1, y1 = d.box
    h, w = frame.shape[:2]
    return 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and (y1 - y0) * h > (x1 - x0) * w


def _ms_per_frame(detector: PersonDetecting, frame: np.ndarray, runs: int = 5) -> float:
    detector.detect(frame)  # warm-up: the first call allocates
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        detector.detect(frame)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


# -- HOG fallback ----------------------------------------------------------------------------


def test_hog_finds_pedestrians_in_vtest(vtest_bgr: list[np.ndarray]) -> None:
    hog = HogPersonDetector()
    found = [hog.detect(f) for f in vtest_bgr[:4]]
    assert any(found), "HOG found nobody in 4 frames full of pedestrians"
    for frame, dets in zip(vtest_bgr, found, strict=False):
        for d in dets:
            assert 0.5 <= d.score <= 1.0
            assert _person_shaped(d, frame)
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_hog_finds_nobody_in_a_blank_frame() -> None:
    assert HogPersonDetector().detect(BLANK) == []


def test_hog_upscales_small_frames(vtest_bgr: list[np.ndarray]) -> None:
    small = np.asarray(cv2.resize(vtest_bgr[1], (384, 288)), dtype=np.uint8)
    hog = HogPersonDetector()
    assert hog.detect(small), "the 384 px frame was not upscaled to HOG's working size"
    assert HogPersonDetector(min_width=0).detect(small) == []


def test_bad_frame_raises() -> None:
    with pytest.raises(InvalidRequestError, match="HxWx3 uint8"):
        HogPersonDetector().detect(np.zeros((10, 10), np.uint8))


# -- DNN -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dnn(person_model_cache: Path) -> PersonDetector:
    graph = find_person_model(person_model_cache)
    assert graph is not None
    return PersonDetector(graph)


def test_dnn_finds_pedestrians_in_every_vtest_frame(
    dnn: PersonDetector, vtest_bgr: list[np.ndarray]
) -> None:
    for frame in vtest_bgr:
        dets = dnn.detect(frame)
        assert dets, "no person found in a vtest frame"
        assert all(_person_shaped(d, frame) for d in dets)
        assert all(0.5 <= d.score <= 1.0 for d in dets)


def test_dnn_finds_nobody_in_a_blank_frame(dnn: PersonDetector) -> None:
    assert dnn.detect(BLANK) == []
    assert dnn.detect(np.zeros((576, 768, 3), np.uint8)) == []


def test_dnn_boxes_agree_with_hog(dnn: PersonDetector, vtest_bgr: list[np.ndarray]) -> None:
    """Two independent detectors put their boxes on the same pedestrians (box decoding and
    anchors of the generated text graph are right, not just "something was found")."""
    hog = HogPersonDetector()
    matched = 0
    for frame in vtest_bgr[:6]:
        dnn_boxes = [d.box for d in dnn.detect(frame)]
        for h in hog.detect(frame):
            if max((_iou(h.box, b) for b in dnn_boxes), default=0.0) > 0.3:
                matched += 1
    assert matched >= 3


def test_dnn_min_score(person_model_cache: Path, vtest_bgr: list[np.ndarray]) -> None:
    graph = find_person_model(person_model_cache)
    assert graph is not None
    loose = PersonDetector(graph, min_score=0.3).detect(vtest_bgr[2])
    strict = PersonDetector(graph, min_score=0.9).detect(vtest_bgr[2])
    assert len(strict) < len(loose)
    assert all(d.score >= 0.9 for d in strict)


def test_speed_per_640x360_frame(
    dnn: PersonDetector, vtest_bgr: list[np.ndarray], record_property: Callable[[str, object], None]
) -> None:
    frame = np.asarray(cv2.resize(vtest_bgr[2], (640, 360)), dtype=np.uint8)
    dnn_ms = _ms_per_frame(dnn, frame)
    hog_ms = _ms_per_frame(HogPersonDetector(), frame)
    record_property("ssdlite_ms_per_640x360", round(dnn_ms, 1))
    record_property("hog_ms_per_640x360", round(hog_ms, 1))
    print(f"\nperson detection per 640x360 frame: SSDLite {dnn_ms:.1f} ms, HOG {hog_ms:.1f} ms")
    # Generous bounds for a loaded 2-core machine; a broken backend is 10x slower.
    assert dnn_ms < 400
    assert hog_ms < 1500


# -- load_person_detector ------------------------------------------------------------------


def test_load_without_model_says_why_and_falls_back(tmp_path: Path) -> None:
    detector, reason = load_person_detector(tmp_path)
    assert isinstance(detector, HogPersonDetector)
    assert "not found" in reason
    assert "homewarden models fetch" in reason
    assert str(tmp_path) in reason


def test_load_with_model_uses_dnn(person_model_cache: Path) -> None:
    detector, reason = load_person_detector(person_model_cache)
    assert isinstance(detector, PersonDetector)
    assert detector.name == "ssdlite"
    assert "SSDLite" in reason


def test_load_with_broken_model_falls_back(tmp_path: Path, person_model_cache: Path) -> None:
    broken = tmp_path / MODEL_DIR
    broken.mkdir()
    (broken / GRAPH_NAME).write_bytes(b"not a tensorflow graph")
    src = find_person_model(person_model_cache)
    assert src is not None
    config = src.with_name("ssdlite_person.pbtxt")
    (broken / config.name).write_bytes(config.read_bytes())
    detector, reason = load_person_detector(tmp_path)
    assert isinstance(detector, HogPersonDetector)
    assert "unusable" in reason
