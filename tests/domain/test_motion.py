"""Motion math on generated frames and on real footage (vtest.avi)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homewarden.domain.motion import MotionDetector, MotionParams, MotionResult, polygon_mask
from homewarden.errors import InvalidRequestError

H, W = 180, 240
FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "vtest.avi"

LEFT = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]
RIGHT = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]


def scene(seed: int = 0) -> np.ndarray:
    """A still, textured HxW uint8 scene: a gradient plus mild fixed texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = 60 + 0.4 * xx + 0.3 * yy + rng.normal(0, 6, (H, W))
    out: np.ndarray = np.clip(base, 0, 255).astype(np.uint8)
    return out


def with_square(frame: np.ndarray, x: int, y: int, size: int = 20, value: int = 250) -> np.ndarray:
    out = frame.copy()
    out[y : y + size, x : x + size] = value
    return out


def seeded(params: MotionParams | None = None, **kw: object) -> tuple[MotionDetector, np.ndarray]:
    det = MotionDetector(params or MotionParams(), H, W, **kw)  # type: ignore[arg-type]
    bg = scene()
    for _ in range(3):
        det.update(bg)
    return det, bg


# -- MotionDetector on generated frames ---------------------------------------------------


def test_first_frame_seeds_and_reports_nothing() -> None:
    det = MotionDetector(MotionParams(), H, W)
    assert not det.seeded
    r = det.update(with_square(scene(), 100, 80))
    assert r == MotionResult(0.0, False, frozenset(), None)
    assert det.seeded


def test_still_scene_has_no_motion() -> None:
    det, bg = seeded()
    for _ in range(30):
        r = det.update(bg)
        assert r.score == 0.0
        assert not r.moving
        assert r.bbox is None
        assert r.zones == frozenset()


def test_moving_square_gives_motion_bbox_and_zone() -> None:
    det, bg = seeded(MotionParams(blur_radius=0), zones={"left": LEFT, "right": RIGHT})
    r = det.update(with_square(bg, 150, 60))
    assert r.moving
    assert r.score == pytest.approx(400 / (H * W))
    assert r.bbox == pytest.approx((150 / W, 60 / H, 170 / W, 80 / H))
    assert r.zones == frozenset({"right"})
    # Next sample the square has moved left, across the zone border.
    r = det.update(with_square(bg, 110, 60))
    assert r.moving
    assert r.zones == frozenset({"left", "right"})


def test_blur_widens_bbox_by_at_most_one_pixel() -> None:
    det, bg = seeded(zones={"left": LEFT, "right": RIGHT})
    r = det.update(with_square(bg, 150, 60))
    assert r.moving
    assert r.bbox is not None
    x0, y0, x1, y1 = r.bbox
    assert 149 / W <= x0 <= 150 / W
    assert 59 / H <= y0 <= 60 / H
    assert 170 / W <= x1 <= 171 / W
    assert 80 / H <= y1 <= 81 / H
    assert r.zones == frozenset({"right"})


def test_mask_hides_motion() -> None:
    mask = [(140 / W, 50 / H), (180 / W, 50 / H), (180 / W, 90 / H), (140 / W, 90 / H)]
    det, bg = seeded(masks=[mask])
    r = det.update(with_square(bg, 150, 60))
    assert r.score == 0.0
    assert not r.moving
    # The same square outside the mask is seen.
    r = det.update(with_square(bg, 40, 60))
    assert r.moving


def test_noise_below_threshold_is_ignored() -> None:
    det, bg = seeded()
    rng = np.random.default_rng(7)
    for _ in range(40):
        noisy = np.clip(bg + rng.normal(0, 8, bg.shape), 0, 255).astype(np.uint8)
        r = det.update(noisy)
        assert not r.moving, r.score
        assert r.score < 0.0005


def test_noise_without_blur_scatters_pixels_but_small_motion_still_counts() -> None:
    det, bg = seeded()
    rng = np.random.default_rng(8)
    noisy = np.clip(bg + rng.normal(0, 8, bg.shape), 0, 255).astype(np.uint8)
    r = det.update(with_square(noisy, 60, 100, size=10))
    assert r.moving  # 100 px of 43,200 = 0.23 % >= min_area 0.2 %


def test_small_change_below_min_area_is_not_moving() -> None:
    det, bg = seeded(MotionParams(blur_radius=0))
    r = det.update(with_square(bg, 60, 100, size=8))  # 64 px = 0.15 %
    assert 0 < r.score < 0.002
    assert not r.moving
    assert r.zones == frozenset()
    assert r.bbox == pytest.approx((60 / W, 100 / H, 68 / W, 108 / H))


def test_zone_needs_a_few_pixels() -> None:
    det, bg = seeded(MotionParams(blur_radius=0), zones={"right": RIGHT})
    # A 3-row bar whose last column is the zone's first column (centre 120.5/240 > 0.5).
    frame = bg.copy()
    frame[40:43, 90:121] = 250  # 93 px, 3 of them in the zone
    r = det.peek(frame)
    assert r.moving
    assert r.zones == frozenset()
    frame[40:43, 121] = 250  # 6 px in the zone
    assert det.peek(frame).zones == frozenset({"right"})


def test_peek_does_not_change_background() -> None:
    det, bg = seeded()
    moved = with_square(bg, 100, 80)
    first = det.peek(moved)
    for _ in range(50):
        assert det.peek(moved) == first
    assert det.update(bg).score == 0.0


def test_peek_before_seed_is_no_motion() -> None:
    det = MotionDetector(MotionParams(), H, W)
    assert not det.peek(scene()).moving
    assert not det.seeded


def test_global_brightness_jump_reseeds_and_reports_no_motion() -> None:
    det, bg = seeded()
    bright = np.clip(bg.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    r = det.update(bright)
    assert r.illumination_change
    assert not r.moving
    assert r.score == 0.0
    # Re-seeded: the bright scene is now the background ...
    assert det.update(bright).score == 0.0
    # ... and a square on it is motion again.
    assert det.update(with_square(bright, 30, 30, value=0)).moving


def test_illumination_is_not_reseeded_by_peek() -> None:
    det, bg = seeded()
    bright = np.clip(bg.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    assert det.peek(bright).illumination_change
    assert det.update(bg).score == 0.0


def test_moving_object_is_learned_slowly_but_a_stopped_one_is_absorbed() -> None:
    params = MotionParams()
    det, bg = seeded(params)
    # An object that keeps moving stays "moving" for many samples ...
    for i in range(40):
        r = det.update(with_square(bg, 10 + 4 * i, 60))
        assert r.moving
    # ... the background stayed the empty scene (no smear along its path).
    assert det.peek(bg).score < 0.001
    # An object that stops is reported for absorb_after samples, then absorbed.
    stopped = with_square(bg, 100, 100)
    moving = [det.update(stopped).moving for _ in range(params.absorb_after + 3)]
    assert moving[: params.absorb_after] == [True] * params.absorb_after
    assert not any(moving[params.absorb_after + 1 :])


def test_without_absorption_a_stopped_object_lingers() -> None:
    det, bg = seeded(MotionParams(absorb_after=0))
    stopped = with_square(bg, 100, 100)
    assert all(det.update(stopped).moving for _ in range(40))


def test_all_masked_is_never_moving() -> None:
    det, bg = seeded(masks=[[(0, 0), (1, 0), (1, 1), (0, 1)]])
    assert det.update(with_square(bg, 100, 80)) == MotionResult(0.0, False, frozenset(), None)


def test_wrong_frame_shape_or_type_raises() -> None:
    det = MotionDetector(MotionParams(), H, W)
    with pytest.raises(InvalidRequestError, match="180x240 uint8"):
        det.update(np.zeros((H, W + 1), np.uint8))
    with pytest.raises(InvalidRequestError):
        det.update(np.zeros((H, W), np.float32))


@pytest.mark.parametrize(
    "kw",
    [
        {"threshold": 0},
        {"threshold": 256},
        {"min_area": 0.0},
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"changed_alpha_factor": 2.0},
        {"absorb_after": -1},
        {"illumination_fraction": 0.001},
        {"blur_radius": 6},
        {"zone_min_pixels": 0},
    ],
)
def test_bad_params_raise(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidRequestError):
        MotionParams(**kw)  # type: ignore[arg-type]


# -- polygon_mask --------------------------------------------------------------------------


def test_polygon_mask_square_quarter() -> None:
    m = polygon_mask([[(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)]], 4, 4)
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(m, expected)


def test_polygon_mask_triangle() -> None:
    # Pixel centres ((c+.5)/4, (r+.5)/4) are inside x + y < 1  <=>  r + c < 3.
    m = polygon_mask([[(0, 0), (1, 0), (0, 1)]], 4, 4)
    expected = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(m, expected)


def test_polygon_mask_non_square_frame_uses_pixel_centres() -> None:
    # 2 rows x 5 cols; x in [0.15, 0.65] covers centres 0.3 and 0.5 (cols 1, 2) only,
    # y in [0, 0.5] covers row 0 (centre 0.25) only.
    m = polygon_mask([[(0.15, 0), (0.65, 0), (0.65, 0.5), (0.15, 0.5)]], 2, 5)
    expected = np.array([[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(m, expected)


def test_polygon_mask_even_odd_self_intersecting() -> None:
    # A pentagram: its inner pentagon is crossed twice, so even-odd leaves it outside.
    angles = np.deg2rad(-90 + 144 * np.arange(5))
    star = [(0.5 + 0.5 * np.cos(a), 0.5 + 0.5 * np.sin(a)) for a in angles]
    m = polygon_mask([star], 9, 9)
    assert not m[4, 4]  # centre: inside the inner pentagon
    assert m[1, 4]  # upper point of the star
    assert not m[0, 0]


def test_polygon_mask_union_and_vertex_order() -> None:
    a = [(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)]
    b = [(1, 1), (1, 0.5), (0.5, 0.5), (0.5, 1)]  # clockwise, bottom-right quarter
    m = polygon_mask([a, b], 4, 4)
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(m, expected)


def test_polygon_mask_empty_and_bad() -> None:
    assert not polygon_mask([], 3, 3).any()
    with pytest.raises(InvalidRequestError, match="at least 3"):
        polygon_mask([[(0, 0), (1, 1)]], 3, 3)
    with pytest.raises(InvalidRequestError):
        polygon_mask([[(0, 0), (1, float("nan")), (0, 1)]], 3, 3)
    with pytest.raises(InvalidRequestError):
        polygon_mask([], 0, 3)


def _pnpoly(poly: list[tuple[float, float]], x: float, y: float) -> bool:
    """Franklin's scalar PNPOLY, the reference for the vectorised version."""
    inside = False
    j = len(poly) - 1
    for i in range(len(poly)):
        xi, yi = poly[i]
        xj, yj = poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-0.2, 1.2, allow_nan=False), st.floats(-0.2, 1.2, allow_nan=False)),
        min_size=3,
        max_size=8,
    ),
    st.integers(1, 12),
    st.integers(1, 12),
)
def test_polygon_mask_matches_scalar_pnpoly(
    poly: list[tuple[float, float]], h: int, w: int
) -> None:
    m = polygon_mask([poly], h, w)
    for r in range(h):
        for c in range(w):
            assert m[r, c] == _pnpoly(poly, (c + 0.5) / w, (r + 0.5) / h), (r, c)


# -- real footage ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vtest_gray() -> list[np.ndarray]:
    """The first 30 s of vtest.avi (768x576, 10 fps) as 240x180 gray frames."""
    av = pytest.importorskip("av")
    if not FOOTAGE.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real footage missing at {FOOTAGE}")
        pytest.skip(f"real footage not present at {FOOTAGE}")
    frames: list[np.ndarray] = []
    with av.open(str(FOOTAGE)) as container:
        for frame in container.decode(video=0):
            gray = frame.reformat(width=W, height=H, format="gray").to_ndarray()
            frames.append(np.ascontiguousarray(gray[:, :W]))
            if len(frames) >= 300:
                break
    assert len(frames) == 300
    assert frames[0].shape == (H, W)
    return frames


def test_real_footage_with_pedestrians_is_moving(vtest_gray: list[np.ndarray]) -> None:
    det = MotionDetector(MotionParams(), H, W, zones={"left": LEFT, "right": RIGHT})
    results = [det.update(f) for f in vtest_gray[::2]]  # 5 fps, the default detect_fps
    moving = [r for r in results[5:] if r.moving]
    # Pedestrians cross the square all the time in this clip.
    assert len(moving) >= 0.9 * len(results[5:])
    assert all(r.bbox is not None and r.zones for r in moving)
    assert max(r.score for r in moving) < 0.3


def test_real_still_frame_repeated_is_not_moving(vtest_gray: list[np.ndarray]) -> None:
    det = MotionDetector(MotionParams(), H, W)
    still = vtest_gray[0]
    assert [det.update(still).moving for _ in range(20)] == [False] * 20
    # Sensor-like noise on the real still frame stays below the motion threshold too.
    rng = np.random.default_rng(3)
    for _ in range(20):
        noisy = np.clip(still + rng.normal(0, 4, still.shape), 0, 255).astype(np.uint8)
        assert not det.update(noisy).moving


def test_real_still_then_footage_then_still(vtest_gray: list[np.ndarray]) -> None:
    """The shape of the recorder's acceptance clip: still, footage, still again."""
    det = MotionDetector(MotionParams(), H, W)
    first, last = vtest_gray[0], vtest_gray[299]
    assert not any(det.update(first).moving for _ in range(10))
    during = [det.update(f).moving for f in vtest_gray[2:300:2]]
    assert any(during[:5])  # motion is seen within the first second of footage
    after = [det.update(last).moving for _ in range(25)]
    # A frozen frame stops being motion within absorb_after (+1) samples, about a second.
    assert not any(after[MotionParams().absorb_after + 1 :])
