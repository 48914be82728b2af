"""Motion sensing math: pure numpy on small grayscale frames.

The media layer hands us each sampled frame already scaled down to a small ``HxW`` uint8 luma
image (about 160-320 px wide). :class:`MotionDetector` keeps a float32 running average of the
scene (the background) and compares every frame with it — the running average of OpenCV's
``cv2.accumulateWeighted`` (imgproc, "Motion Analysis") as taught by the running-average
background-subtraction tutorial that Frigate's docs cite for ``frame_alpha``, and the scheme
of Frigate's own motion detector (``frigate/motion/improved_motion.py``):

1. blur the frame with a 3x3 box (sensor noise and compression speckle are one-pixel events;
   Frigate uses a 3x3 Gaussian);
2. a pixel has *changed* when ``|frame - background| > threshold``;
3. pixels inside mask polygons never count;
4. ``score`` = changed / unmasked pixels; ``moving`` = ``score >= min_area``;
5. ``zones`` = names of zones holding at least ``zone_min_pixels`` changed pixels;
6. the frame is folded into the background with learning rate ``alpha`` (``update`` only).

Everything here is pure: no I/O, no clocks, no OpenCV, so it is tested on generated frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from homewarden.errors import InvalidRequestError

Polygon = Sequence[tuple[float, float]]
GrayFrame = NDArray[np.uint8]  # HxW uint8 luma

_NO_ZONES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MotionParams:
    """Thresholds of the motion detector; every default names its origin.

    threshold: per-pixel luma change 0-255 that marks a pixel as changed. 30 is Frigate's
        documented motion default (reference config ``motion.threshold: 30``, "the threshold
        passed to cv2.threshold to determine if a pixel is different enough to be counted as
        motion").
    min_area: fraction of unmasked pixels that must change for the frame to count as moving.
        Frigate's documented ``contour_area`` default is 10 px of the resized motion image,
        whose height is ``frame_height`` 100 (about 0.06 % of a 16:9 frame); we count all
        changed pixels without tracing contours, so scattered noise adds up, and ask for
        0.2 % (86 px of 240x180) — between Frigate's "high" (10) and "low" (50) sensitivity.
    alpha: background learning rate per sample, as in ``cv2.accumulateWeighted(frame, bg,
        alpha)``. Frigate's documented ``frame_alpha`` default is 0.01 per frame at its 5 fps
        detect rate (time constant ~20 s); while the scene is quiet we sample only
        keyframes (one every ~2 s), so a per-sample rate of 0.05 keeps a similar wall-clock
        memory (~40 s quiet, ~4 s at 5 fps while moving).
    changed_alpha_factor: changed pixels that are still moving learn at ``alpha *
        changed_alpha_factor`` (0.25 by default). Learning a walking person into the average
        at the full rate leaves a smear behind them and lets a slow walker fade; learning them
        slowly keeps the background the empty scene.
    absorb_after: a changed pixel that stays put — within ``threshold`` of the previous sample
        for this many consecutive samples — is copied into the background (0 disables it).
        This answers what background-subtraction benchmarks call "intermittent object motion"
        (a category of changedetection.net): a person who stops, a parked car or a frozen
        frame stays "moving" for 5 samples (1 s at ``detect_fps`` 5) instead of vanishing at
        once, then stops holding the event open — the event's ``post_capture`` covers the
        pause, and the recorder's acceptance clip (footage, then a still frame) needs motion to
        end within one GOP of the scene freezing. The price: the uniform inside of a slow
        object can settle early and leave a short ghost, itself absorbed 5 samples later.
        Without it, slow learning would keep a stopped scene "moving" for ~20 s (a luma step
        of 100 decays under 30 after ``ln(0.3)/ln(1-0.0125)`` = 96 samples).
    illumination_fraction: when more than this fraction of unmasked pixels changes at once the
        cause is global (an IR-cut filter switching, lights going on, the camera's
        auto-exposure) rather than something moving; the background is re-seeded from the frame
        and no motion is reported. Frigate's documented ``lightning_threshold`` (default 0.8) is
        the same rule; we use 0.6 because an IR switch leaves dark and saturated regions
        unchanged and so rarely changes 80 % of the pixels. The cost, as Frigate's docs warn
        for lowering it: a person filling most of a doorbell camera's view reads as a light
        change for that one sample (the next sample is compared with the re-seeded scene).
    blur_radius: radius of the box blur applied to the frame before differencing (0 disables
        it). Frigate blurs with a Gaussian before ``absdiff``; a 3x3 box (radius 1) is the
        cheapest numpy equivalent.
    zone_min_pixels: changed pixels a zone must hold to be reported, so one noisy pixel at a
        zone's edge does not "enter" it.
    """

    threshold: int = 30
    min_area: float = 0.002
    alpha: float = 0.05
    changed_alpha_factor: float = 0.25
    absorb_after: int = 5
    illumination_fraction: float = 0.6
    blur_radius: int = 1
    zone_min_pixels: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= 255:
            raise InvalidRequestError(f"motion threshold must be 1-255, got {self.threshold}")
        if not 0.0 < self.min_area < 1.0:
            raise InvalidRequestError(f"motion min_area must be in (0, 1), got {self.min_area}")
        if not 0.0 < self.alpha <= 1.0:
            raise InvalidRequestError(f"motion alpha must be in (0, 1], got {self.alpha}")
        if not 0.0 <= self.changed_alpha_factor <= 1.0:
            raise InvalidRequestError(
                f"changed_alpha_factor must be in [0, 1], got {self.changed_alpha_factor}"
            )
        if not 0 <= self.absorb_after <= 254:
            raise InvalidRequestError(f"absorb_after must be 0-254, got {self.absorb_after}")
        if not self.min_area < self.illumination_fraction <= 1.0:
            raise InvalidRequestError(
                f"illumination_fraction must be in (min_area, 1], got {self.illumination_fraction}"
            )
        if not 0 <= self.blur_radius <= 5:  # (2r+1)^2 * 255 must fit int16 differences
            raise InvalidRequestError(f"blur_radius must be 0-5, got {self.blur_radius}")
        if self.zone_min_pixels < 1:
            raise InvalidRequestError(f"zone_min_pixels must be >= 1, got {self.zone_min_pixels}")


@dataclass(frozen=True, slots=True)
class MotionResult:
    """score: fraction of unmasked pixels changed (0..1); moving: score >= min_area;
    zones: names of zones containing changed pixels (only reported while moving); bbox:
    normalised (x0, y0, x1, y1) of the changed pixels or None (x1, y1 exclusive: a change in
    the last column gives x1 == 1.0). ``illumination_change`` is True when the frame was judged
    a global light change (IR switch, lights) and so reported as not moving."""

    score: float
    moving: bool
    zones: frozenset[str]
    bbox: tuple[float, float, float, float] | None
    illumination_change: bool = False


def _check_polygon(polygon: Polygon) -> NDArray[np.float64]:
    pts = np.asarray(polygon, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3:
        raise InvalidRequestError(
            f"a polygon needs at least 3 (x, y) points, got {len(polygon)}: {polygon!r}"
        )
    if not np.all(np.isfinite(pts)):
        raise InvalidRequestError(f"polygon points must be finite numbers: {polygon!r}")
    return pts


def polygon_mask(polygons: Sequence[Polygon], height: int, width: int) -> NDArray[np.bool_]:
    """Rasterise normalised polygons into an HxW boolean mask (True inside any polygon).

    Points are ``(x, y)`` with 0..1 across the frame's width and height. A pixel ``(row, col)``
    is inside when its centre ``((col + 0.5) / width, (row + 0.5) / height)`` is inside by the
    even-odd (crossing number) rule — the rule of SVG ``fill-rule: evenodd`` and of the classic
    W. Randolph Franklin PNPOLY test. Each polygon is tested edge by edge, vectorised over all
    pixels (O(edges x H x W)), and polygons are united.

    Raises :class:`InvalidRequestError` for a polygon with fewer than 3 points or non-finite
    coordinates, or a non-positive size.
    """
    if height <= 0 or width <= 0:
        raise InvalidRequestError(f"mask size must be positive, got {height}x{width}")
    out = np.zeros((height, width), dtype=np.bool_)
    ys = ((np.arange(height, dtype=np.float64) + 0.5) / height)[:, None]  # Hx1
    xs = ((np.arange(width, dtype=np.float64) + 0.5) / width)[None, :]  # 1xW
    for polygon in polygons:
        pts = _check_polygon(polygon)
        inside = np.zeros((height, width), dtype=np.bool_)
        x_prev, y_prev = pts[-1]
        for x_cur, y_cur in pts:
            # Rows whose centre line the edge crosses (half-open in y, so a vertex shared by
            # two edges is counted once).
            crosses = (y_cur > ys) != (y_prev > ys)  # Hx1
            if crosses.any() and y_cur != y_prev:
                x_at = x_cur + (ys - y_cur) * (x_prev - x_cur) / (y_prev - y_cur)  # Hx1
                inside ^= crosses & (xs < x_at)
            x_prev, y_prev = x_cur, y_cur
        out |= inside
    return out


class MotionDetector:
    """Compares each HxW uint8 gray frame against a running background.

    ``masks`` are normalised polygons whose pixels never count as motion; ``zones`` maps a zone
    name to a normalised polygon. The first frame given to :meth:`update` seeds the background
    and reports no motion.

    Cost, measured with ``timeit`` (2,000 calls, best of 5) on the 2-core build machine while
    it was busy (load ~1.9), with two zones: a 240x180 :meth:`update` takes ~120 µs on a
    quiet scene and ~190 µs with a person-sized blob moving (160x120: 70 / 110 µs; 320x240:
    210 / 380 µs). 64 cameras sampled at 5 fps while all of them move cost ~60 ms of CPU per
    second, 6 % of one core; quiet cameras sample only keyframes and cost far less.

    Raises :class:`InvalidRequestError` for a frame of the wrong shape or type.
    """

    def __init__(
        self,
        params: MotionParams,
        height: int,
        width: int,
        masks: Sequence[Polygon] = (),
        zones: Mapping[str, Polygon] | None = None,
    ) -> None:
        if height < 2 or width < 2:
            raise InvalidRequestError(f"motion frame must be at least 2x2, got {height}x{width}")
        self.params = params
        self.height = height
        self.width = width
        masked = polygon_mask(masks, height, width)
        self._unmasked: NDArray[np.bool_] = ~masked
        self._has_mask = bool(masked.any())
        self._unmasked_count = int(np.count_nonzero(self._unmasked))
        self._zones: list[tuple[str, NDArray[np.bool_]]] = [
            (name, polygon_mask([poly], height, width) & self._unmasked)
            for name, poly in (zones or {}).items()
        ]
        self._background: NDArray[np.float32] | None = None
        r = params.blur_radius
        # Scratch buffers reused per frame: allocation is a visible share of the cost here.
        self._padded = np.empty((height + 2 * r, width + 2 * r), dtype=np.uint16)
        self._rows = np.empty((height, width + 2 * r), dtype=np.uint16)
        self._sums = np.empty((height, width), dtype=np.uint16)
        self._scaled_threshold = np.float32(params.threshold * (2 * r + 1) ** 2)
        self._window = (0, height, 0, width)
        self._previous = np.zeros((height, width), dtype=np.uint16)
        self._step = np.empty((height, width), dtype=np.int16)
        self._stable = np.empty((height, width), dtype=np.bool_)
        self._still_count = np.zeros((height, width), dtype=np.uint8)
        self._scaled_threshold_int = np.int16(params.threshold * (2 * r + 1) ** 2)
        # An array, not a scalar: numpy's minimum() against a broadcast scalar is 10x slower.
        self._absorb_cap = np.full((height, width), params.absorb_after, dtype=np.uint8)
        self._delta = np.empty((height, width), dtype=np.float32)
        self._absdelta = np.empty((height, width), dtype=np.float32)
        self._changed = np.empty((height, width), dtype=np.bool_)

    @property
    def seeded(self) -> bool:
        """True once a background exists (after the first :meth:`update`)."""
        return self._background is not None

    def reset(self) -> None:
        """Forget the background; the next :meth:`update` re-seeds it (e.g. after a reconnect)."""
        self._background = None

    def update(self, gray: GrayFrame) -> MotionResult:
        """Measure ``gray`` against the background, then fold it into the background.

        ``gray`` is HxW uint8 (the detector's size). The first call seeds the background and
        returns no motion. A global light change re-seeds the background (see
        :attr:`MotionParams.illumination_fraction`); changed pixels that stopped moving are
        absorbed (see :attr:`MotionParams.absorb_after`).
        """
        frame = self._prepare(gray)
        background = self._background
        if background is None:
            self._seed(frame)
            return MotionResult(0.0, False, _NO_ZONES, None)
        result = self._measure(frame, background)
        if result.illumination_change:
            self._seed(frame)
            return result
        p = self.params
        absorb = p.absorb_after > 0
        if absorb:
            # Count, per pixel, consecutive samples within threshold of the previous sample.
            step, stable, still = self._step, self._stable, self._still_count
            # uint16 wrap-around then int16 view is exact: |difference| < 32768 for r <= 5.
            np.subtract(frame, self._previous, out=step, casting="unsafe")
            np.abs(step, out=step)
            np.less_equal(step, self._scaled_threshold_int, out=stable)
            np.minimum(still, self._absorb_cap, out=still)
            still += 1
            still *= stable
            np.copyto(self._previous, frame)
        # Running average (cv2.accumulateWeighted): bg += alpha * (frame - bg).
        delta = self._delta  # still holds frame - background from _measure
        delta *= np.float32(p.alpha)
        background += delta
        if result.bbox is not None:
            y0, y1, x0, x1 = self._window
            changed = self._changed[y0:y1, x0:x1]
            bg = background[y0:y1, x0:x1]
            # Undo part of the step for changed pixels: they learn at alpha * factor.
            bg -= delta[y0:y1, x0:x1] * changed * np.float32(1.0 - p.changed_alpha_factor)
            if absorb:
                settled = changed & (self._still_count[y0:y1, x0:x1] >= p.absorb_after)
                bg[settled] = frame[y0:y1, x0:x1][settled]
        return result

    def peek(self, gray: GrayFrame) -> MotionResult:
        """Measure ``gray`` against the background without changing it.

        Used to refine an event's start over frames decoded after the fact. Before the first
        :meth:`update` there is no background and the result is no motion.
        """
        frame = self._prepare(gray)
        if self._background is None:
            return MotionResult(0.0, False, _NO_ZONES, None)
        return self._measure(frame, self._background)

    # -- internals -------------------------------------------------------------------------

    def _seed(self, frame: NDArray[np.uint16] | GrayFrame) -> None:
        if self._background is None:
            self._background = frame.astype(np.float32)
        else:
            np.copyto(self._background, frame, casting="unsafe")
        np.copyto(self._previous, frame)
        self._still_count.fill(0)

    def _prepare(self, gray: GrayFrame) -> NDArray[np.uint16] | GrayFrame:
        """The frame as the detector compares it: box sums over (2r+1)^2 pixels (uint16), or
        the frame itself when blurring is off. The background is kept in the same units, so
        the blur needs no division (the threshold is scaled instead)."""
        if gray.shape != (self.height, self.width) or gray.dtype != np.uint8:
            raise InvalidRequestError(
                f"motion frame must be {self.height}x{self.width} uint8, "
                f"got {gray.shape} {gray.dtype}"
            )
        r = self.params.blur_radius
        if r == 0:
            return gray
        # Separable box sum with edge replication; (2r+1)^2 * 255 fits uint16.
        h, w = self.height, self.width
        pad, rows, total = self._padded, self._rows, self._sums
        pad[r : r + h, r : r + w] = gray
        pad[:r, r : r + w] = gray[:1]
        pad[r + h :, r : r + w] = gray[-1:]
        pad[:, :r] = pad[:, r : r + 1]
        pad[:, r + w :] = pad[:, r + w - 1 : r + w]
        np.add(pad[0:h], pad[1 : 1 + h], out=rows)
        for k in range(2, 2 * r + 1):
            rows += pad[k : k + h]
        np.add(rows[:, 0:w], rows[:, 1 : 1 + w], out=total)
        for k in range(2, 2 * r + 1):
            total += rows[:, k : k + w]
        return total

    def _measure(
        self, frame: NDArray[np.uint16] | GrayFrame, background: NDArray[np.float32]
    ) -> MotionResult:
        p = self.params
        delta, absdelta, changed = self._delta, self._absdelta, self._changed
        np.subtract(frame, background, out=delta)
        np.abs(delta, out=absdelta)
        np.greater(absdelta, self._scaled_threshold, out=changed)
        if self._has_mask:
            changed &= self._unmasked
        if self._unmasked_count == 0:
            return MotionResult(0.0, False, _NO_ZONES, None)
        count = int(np.count_nonzero(changed))
        if count == 0:
            return MotionResult(0.0, False, _NO_ZONES, None)
        score = count / self._unmasked_count
        if score > p.illumination_fraction:
            return MotionResult(0.0, False, _NO_ZONES, None, illumination_change=True)
        rows = np.flatnonzero(changed.any(axis=1))
        cols = np.flatnonzero(changed.any(axis=0))
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        self._window = (y0, y1, x0, x1)
        bbox = (x0 / self.width, y0 / self.height, x1 / self.width, y1 / self.height)
        moving = score >= p.min_area
        zones = _NO_ZONES
        if moving and self._zones:
            # Zones are only tested inside the bounding box of the change.
            window = changed[y0:y1, x0:x1]
            zones = frozenset(
                name
                for name, zone in self._zones
                if np.count_nonzero(window & zone[y0:y1, x0:x1]) >= p.zone_min_pixels
            )
        return MotionResult(score, moving, zones, bbox)
