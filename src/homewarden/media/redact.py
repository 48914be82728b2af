"""Redact a clip for release: blur faces, fill privacy masks, drop audio, re-encode (x264).

Issue 5 "Evidence package", DESIGN.md flow 6 and 8 ("faces are detected only to blur them").

Pipeline, one pass (PyAV decode -> numpy on the YUV planes -> PyAV libx264 encode):

* Frames are worked on in 4:2:0 YUV as decoded, never converted to BGR: the luma plane *is*
  the grey image the Haar cascades want, and masks and blurs are applied to each plane (the
  chroma planes at half size), which saves two colour conversions per frame.
* Faces: OpenCV's Haar frontal cascade (``haarcascade_frontalface_default.xml``) and profile
  cascade (``haarcascade_profileface.xml``, which finds faces turned one way, so it also runs
  on the mirrored image for the other), from ``cv2.data.haarcascades`` (opencv-python 4.x),
  on the luma plane scaled to at most :data:`DETECT_WIDTH` px wide, every ``detect_every``-th
  frame.
* Carrying boxes: a detection at frame ``k`` covers frames ``k - hold .. k + hold`` (frames
  are held back ``hold`` frames before encoding, so a box also reaches back to before the
  face was found) and is widened by ``margin`` on every side. With ``hold >= detect_every`` a
  face found on two consecutive detection frames is covered on every frame between them,
  and a face is covered from ``hold`` frames before its first detection to ``hold`` frames
  after its last. A face a detector finds on no detection frame (one seen for fewer than
  ``detect_every`` frames) can be missed; ``detect_every=1`` detects on every frame.
* Regions (speed; the cascades cost ~10x the decode and x264 encode of 720p): every
  :data:`FULL_EVERY`-th frame or so is a full pass (all three cascades on the whole frame),
  and its boxes are *sticky*: they last until the next full pass plus ``hold``, since a
  still face is not searched again in between. The detection frames in between scan only
  the cells (:data:`REGION_CELL` px at detection scale) whose 5x5-blurred luma differs by
  more than :data:`REGION_THRESHOLD` from what it was when the cell was last scanned (so slow
  change adds up until it is scanned), grown by :data:`REGION_PAD` cells, plus the cells
  under live boxes; above :data:`REGION_FULL_SHARE` of the frame the whole frame is
  scanned. These passes run the frontal cascade every time and the two profile directions
  on alternate passes, so their boxes are held ``hold + detect_every`` frames either side.
  Detection runs in one worker thread (OpenCV releases the GIL) :data:`PIPELINE_FRAMES`
  frames ahead of the encoder. ``full_every=1`` makes every detection frame a full pass.
* Known limit: the cascades see the luma scaled to :data:`DETECT_WIDTH`, on every
  ``detect_every``-th frame, region passes on crops; a checker at full resolution on every
  frame can find a face, on a frame or a few, that these passes do not (vtest.avi at 768 px
  wide: 3 frames of 795 have one left). Leaving none takes detection on every frame at the
  clip's own width with :class:`FaceDetector` ``exact_regions``: ``thorough=True``
  (vtest.avi: none left, at 0.24x real time on 2 cores against 2.8x, ~11x the time);
  ``bench/redaction_faces.py`` measures both.
* Blur: the box is reduced to :data:`BLUR_CELLS` cells across and scaled back up (a coarse
  mosaic with smooth edges): no facial detail survives, and Haar features find no face.
* Privacy masks: the camera's normalised polygons (config ``cameras.<name>.motion.masks``)
  are filled solid black (Y 16, U/V 128: video-range black) on every frame.
* Audio is not written. The output is H.264 (libx264, ``preset``/``crf``), yuv420p, with the
  source frames' timestamps (so the redacted copy presents the same wall-clock span), written
  to ``<dst>.part`` and renamed into place.

Costs on the 2-core development machine are in ``bench/export.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from homewarden.errors import MediaError, StorageError

#: Widest luma image the cascades see (px); wider frames are scaled down for detection.
DETECT_WIDTH = 640
#: Smallest face searched, px at detection scale (the cascades' own window is 24 / 20 px).
MIN_FACE = 20
#: ``detectMultiScale`` pyramid step and neighbour count (OpenCV's tutorial values are 1.1
#: and 3-5; 3 finds more than the usual 5: the safe side for redaction).
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 3
#: Cells across a blurred face.
BLUR_CELLS = 6
#: Default detection interval and hold (frames), and box margin (fraction of its size).
DETECT_EVERY = 3
MARGIN = 0.35
#: Frames between full-frame detection passes (1 s at 30 fps); between them only changed
#: regions and the surroundings of live face boxes are scanned.
FULL_EVERY = 30
#: Region planning, at detection scale: cell size (px), luma change (0-255, after a 5x5
#: box blur) that marks a cell changed, cells added around changed ones, and the share of
#: the frame above which the whole frame is scanned instead.
REGION_CELL = 16
REGION_THRESHOLD = 20
REGION_PAD = 2
REGION_FULL_SHARE = 0.6
#: Extra frames held back so the detection worker runs ahead of the encoder.
PIPELINE_FRAMES = 6
#: Video-range black in YUV.
_BLACK_Y, _BLACK_C = 16, 128

#: The cascades: frontal, profile (faces turned one way) and profile on the mirrored image.
KINDS = ("frontal", "profile", "profile-mirrored")

Box = tuple[int, int, int, int]  # x, y, w, h in full-resolution pixels
Polygon = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class RedactionInfo:
    """What :func:`redact_clip` did: ``frames`` encoded, ``detections`` (face boxes found on
    the ``detection_frames``), ``blurred_frames`` (frames with at least one blurred box),
    ``masks`` (polygons filled), ``detect_every``/``hold`` (frames), ``seconds`` (wall time),
    ``thorough`` (every frame at full resolution, exact region scans)."""

    frames: int
    detections: int
    detection_frames: int
    blurred_frames: int
    masks: int
    detect_every: int
    hold: int
    seconds: float
    thorough: bool = False


class FaceDetector:
    """Haar frontal and profile (both directions) face detection on a luma plane.

    ``detect_width``: widest image the cascades see (px); ``min_neighbors`` and ``min_size``
    (px at detection scale) as for ``detectMultiScale``. ``exact_regions``: region scans
    (:meth:`detect_scaled` with ``regions``) give every window overlapping a region the
    answer a whole-frame pass would give it (:meth:`_scan_regions`; ~2.5x the cost of the
    default crops on busy footage), instead of running the cascades on each region's crop.

    Raises:
        MediaError: the cascade files are missing from the OpenCV wheel (opencv 5 dropped
            them; DESIGN.md pins 4.x).
    """

    def __init__(
        self,
        *,
        detect_width: int = DETECT_WIDTH,
        min_neighbors: int = MIN_NEIGHBORS,
        min_size: int = MIN_FACE,
        exact_regions: bool = False,
    ) -> None:
        base = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
        self._frontal = _cascade(base / "haarcascade_frontalface_default.xml")
        self._profile = _cascade(base / "haarcascade_profileface.xml")
        self._width = detect_width
        self._neighbors = min_neighbors
        self._min = (min_size, min_size)
        self._exact = exact_regions

    @property
    def width(self) -> int:
        """Widest image the cascades see (px); wider luma planes are scaled down."""
        return self._width

    def shrink(self, luma: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], float]:
        """``luma`` scaled (area interpolation) to at most :attr:`width` px wide, and the
        scale (small px per full-resolution px, <= 1)."""
        h, w = luma.shape
        scale = min(1.0, self._width / w)
        if scale == 1.0:
            return luma, 1.0
        size = (round(w * scale), round(h * scale))
        return np.asarray(cv2.resize(luma, size, interpolation=cv2.INTER_AREA)), scale

    def detect(self, luma: NDArray[np.uint8]) -> list[Box]:
        """Face boxes in ``luma`` (H x W uint8) as ``(x, y, w, h)`` in its own pixels."""
        small, scale = self.shrink(luma)
        return self.detect_scaled(small, scale)

    def detect_scaled(
        self,
        small: NDArray[np.uint8],
        scale: float,
        regions: Sequence[Box] | None = None,
        *,
        kinds: Sequence[str] = KINDS,
    ) -> list[Box]:
        """Face boxes in ``small`` (a :meth:`shrink` result at ``scale``), in full-resolution
        pixels. With ``regions`` (``(x, y, w, h)`` in ``small``'s pixels) only part of it is
        searched: with ``exact_regions`` the windows overlapping a region, each given the
        answer a whole-frame search would give it (:meth:`_scan_regions`); without, faces
        lying wholly inside a region, on that region's crop (:meth:`_scan_crops`).
        ``kinds``: which of :data:`KINDS` to run."""
        cascades = [
            (self._frontal if kind == "frontal" else self._profile, kind == "profile-mirrored")
            for kind in KINDS
            if kind in kinds
        ]
        found: list[Box] = []
        sw = small.shape[1]
        for cascade, mirrored in cascades:
            img: NDArray[np.uint8] = np.asarray(cv2.flip(small, 1)) if mirrored else small
            boxes: list[Box]
            if regions is None:
                boxes = [
                    _box(b)
                    for b in cascade.detectMultiScale(
                        img,
                        scaleFactor=SCALE_FACTOR,
                        minNeighbors=self._neighbors,
                        minSize=self._min,
                    )
                ]
            elif self._exact:
                flipped = [(sw - x - w, y, w, h) for x, y, w, h in regions] if mirrored else regions
                boxes = self._scan_regions(cascade, img, flipped)
            else:
                boxes = self._scan_crops(cascade, img, regions, mirrored)
            for x, y, bw, bh in boxes:
                x0 = sw - x - bw if mirrored else x
                found.append(
                    (round(x0 / scale), round(y / scale), round(bw / scale), round(bh / scale))
                )
        return found

    def _scan_crops(
        self, cascade: Any, img: NDArray[np.uint8], regions: Sequence[Box], mirrored: bool
    ) -> list[Box]:
        """``detectMultiScale`` on each region's crop of ``img`` (``regions`` in unmirrored
        px): faces lying wholly inside a region, each crop with its own image pyramid (so not
        quite what a whole-frame pass finds there; see :meth:`_scan_regions`)."""
        sw = img.shape[1]
        boxes: list[Box] = []
        for rx, ry, rw, rh in regions:
            if rw < self._min[0] or rh < self._min[1]:
                continue
            x0 = sw - rx - rw if mirrored else rx
            crop = img[ry : ry + rh, x0 : x0 + rw]
            for b in cascade.detectMultiScale(
                crop, scaleFactor=SCALE_FACTOR, minNeighbors=self._neighbors, minSize=self._min
            ):
                x, y, w, h = _box(b)
                boxes.append((x0 + x, ry + y, w, h))
        return boxes

    def _scan_regions(
        self, cascade: Any, img: NDArray[np.uint8], regions: Sequence[Box]
    ) -> list[Box]:
        """``cascade.detectMultiScale(img, SCALE_FACTOR, self._neighbors, minSize)`` restricted
        to the windows overlapping ``regions``, with the very windows and pixels a
        whole-image call would use there.

        Cropping first and detecting on the crop would not do that: the crop's image pyramid
        is resampled on another grid, and a face found on the whole frame can be missed on the
        crop (or the reverse). So this follows OpenCV 4's ``CascadeClassifierImpl::
        detectMultiScaleNoGrouping`` (modules/objdetect/src/cascadedetect.cpp): scale factors
        ``SCALE_FACTOR ** k`` from 1; each level is the whole image resized to ``round(size /
        factor)`` with ``INTER_LINEAR_EXACT``; windows step 2 px below factor 2 and 1 px from
        there (both on the level's even grid); a window at level ``(x, y)`` is the box
        ``(round(x * factor), round(y * factor))`` of side ``round(window * factor)``. Each
        level's region crops (aligned to that grid) are scanned as one-scale calls, and the
        raw windows of all levels grouped as OpenCV does (``groupRectangles`` with
        ``minNeighbors`` and eps 0.2). ``tests/media/test_redact.py`` checks the whole-frame
        case against ``detectMultiScale`` on real footage."""
        ww, wh = (int(v) for v in cascade.getOriginalWindowSize())
        height, width = img.shape
        candidates: set[tuple[int, int, int, int]] = set()
        factor = 1.0
        while True:
            win = (round(ww * factor), round(wh * factor))
            level_size = (round(width / factor), round(height / factor))
            if level_size[0] - ww <= 0 or level_size[1] - wh <= 0:
                break
            if win[0] < self._min[0] or win[1] < self._min[1]:
                factor *= SCALE_FACTOR
                continue
            level: NDArray[np.uint8] | None = None
            offsets = ((0, 0),) if factor < 2 else ((0, 0), (1, 0), (0, 1), (1, 1))
            # Every window overlapping a region: a change anywhere in a window can change
            # what the cascade says of it.
            crops = _merge(
                [
                    (
                        max(0, int(rx / factor) - ww) & ~1,
                        max(0, int(ry / factor) - wh) & ~1,
                        min(level_size[0], -int(-(rx + rw) // factor) + ww),
                        min(level_size[1], -int(-(ry + rh) // factor) + wh),
                    )
                    for rx, ry, rw, rh in regions
                ]
            )
            for lx0, ly0, lx1, ly1 in crops:
                if lx1 - lx0 < ww or ly1 - ly0 < wh:
                    continue
                if level is None:
                    level = np.asarray(
                        cv2.resize(img, level_size, interpolation=cv2.INTER_LINEAR_EXACT)
                    )
                for ox, oy in offsets:
                    crop = level[ly0 + oy : ly1, lx0 + ox : lx1]
                    if crop.shape[0] < wh or crop.shape[1] < ww:
                        continue
                    hits = cascade.detectMultiScale(
                        crop, scaleFactor=1.5, minNeighbors=0, minSize=(ww, wh), maxSize=(ww, wh)
                    )
                    for x, y, _, _ in hits:
                        candidates.add(
                            (
                                round((lx0 + ox + int(x)) * factor),
                                round((ly0 + oy + int(y)) * factor),
                                win[0],
                                win[1],
                            )
                        )
            factor *= SCALE_FACTOR
        if not candidates:
            return []
        grouped, _ = cv2.groupRectangles(
            [list(c) for c in sorted(candidates)], self._neighbors, 0.2
        )
        return [_box(b) for b in np.asarray(grouped).reshape(-1, 4)]


class _Regions:
    """Which parts of a detection frame the cascades scan (see "Regions" in the module
    docstring): the cells of the detection-scale image that changed since they were last
    scanned, grown by :data:`REGION_PAD` cells, and the cells under live face boxes."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self._h, self._w = shape
        self._gh = -(-self._h // REGION_CELL)
        self._gw = -(-self._w // REGION_CELL)
        self._ref = np.zeros(shape, np.uint8)
        self._pad_kernel = np.ones((2 * REGION_PAD + 1, 2 * REGION_PAD + 1), np.uint8)

    def smooth(self, small: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """``small`` low-passed (5x5 box) so coding noise does not count as change."""
        return np.asarray(cv2.blur(small, (5, 5)))

    def plan(self, smooth: NDArray[np.uint8], live: Sequence[Box], scale: float) -> list[Box]:
        """Rectangles (detection-scale px) to scan on this frame; the whole frame as one
        rectangle when they would cover more than :data:`REGION_FULL_SHARE` of it."""
        changed = cv2.absdiff(smooth, self._ref) > REGION_THRESHOLD
        grid = np.zeros((self._gh * REGION_CELL, self._gw * REGION_CELL), np.uint8)
        grid[: self._h, : self._w] = changed
        cells = grid.reshape(self._gh, REGION_CELL, self._gw, REGION_CELL).max(axis=(1, 3))
        for x, y, w, h in live:
            c0, r0 = int(x * scale) // REGION_CELL, int(y * scale) // REGION_CELL
            c1 = int((x + w) * scale) // REGION_CELL
            r1 = int((y + h) * scale) // REGION_CELL
            cells[max(0, r0) : r1 + 1, max(0, c0) : c1 + 1] = 1
        if not cells.any():
            return []
        cells = cv2.dilate(cells, self._pad_kernel)
        if float(cells.mean()) > REGION_FULL_SHARE:
            return [(0, 0, self._w, self._h)]
        count, _, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
        rects: list[Box] = []
        for i in range(1, count):
            cx, cy, cw, ch = (int(v) for v in stats[i, :4])
            x0, y0 = cx * REGION_CELL, cy * REGION_CELL
            x1 = min(self._w, (cx + cw) * REGION_CELL)
            y1 = min(self._h, (cy + ch) * REGION_CELL)
            rects.append((x0, y0, x1 - x0, y1 - y0))
        return rects

    def scanned(self, smooth: NDArray[np.uint8], rects: Sequence[Box]) -> None:
        """Record that ``rects`` of ``smooth`` were scanned: later change is measured
        against this content."""
        for x, y, w, h in rects:
            self._ref[y : y + h, x : x + w] = smooth[y : y + h, x : x + w]


def _merge(rects: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` rectangles with every overlapping pair replaced by its bounding
    rectangle, until none overlap (so no window is scanned twice)."""
    out = sorted(rects)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out


def _box(values: Any) -> Box:
    x, y, w, h = (int(v) for v in values)
    return x, y, w, h


def _cascade(path: Path) -> Any:
    if not path.is_file():
        raise MediaError(f"Haar cascade {path.name} is missing from OpenCV ({path})")
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise MediaError(f"Haar cascade {path} cannot be loaded")
    return cascade


def _expand(box: Box, margin: float, width: int, height: int) -> Box:
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, x1 - x0, y1 - y0


def _mosaic(plane: NDArray[np.uint8], x: int, y: int, w: int, h: int) -> None:
    if w < 2 or h < 2:
        return
    roi = plane[y : y + h, x : x + w]
    cells_x = max(1, min(BLUR_CELLS, w))
    cells_y = max(1, min(h, round(BLUR_CELLS * h / w)))
    small = cv2.resize(roi, (cells_x, cells_y), interpolation=cv2.INTER_AREA)
    roi[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


class _Planes:
    """Views of the Y, U, V planes of a yuv420p ``to_ndarray()`` array (H*3/2 x W)."""

    def __init__(self, arr: NDArray[np.uint8], width: int, height: int) -> None:
        self.arr = arr
        self.y = arr[:height]
        quarter = height // 4
        self.u = arr[height : height + quarter].reshape(height // 2, width // 2)
        self.v = arr[height + quarter : height + 2 * quarter].reshape(height // 2, width // 2)


def _mask_polygons(masks: Sequence[Polygon], width: int, height: int) -> list[NDArray[np.int32]]:
    return [
        np.array([[round(px * width), round(py * height)] for px, py in poly], dtype=np.int32)
        for poly in masks
    ]


class _Detections:
    """The face detection of one clip, run in order (in one worker thread) on the detection
    frames: a full-frame pass when ``full_every`` frames have gone by since the last one,
    else a pass over the :class:`_Regions` plan. Each pass returns ``(first, last, boxes)``:
    the frames its boxes cover."""

    def __init__(self, faces: FaceDetector, hold: int, full_every: int, detect_every: int) -> None:
        self._faces = faces
        self._hold = hold
        self._full_every = full_every
        self._detect_every = detect_every
        self._regions: _Regions | None = None
        self._last_full = -(10**9)
        self._live: list[tuple[int, int, list[Box]]] = []
        #: Frames a detection reaches back (a profile box of a region pass the furthest).
        self.reach = hold + detect_every

    def run(self, n: int, luma: NDArray[np.uint8]) -> tuple[int, int, list[Box]]:
        """Detect on frame ``n`` (``luma`` is its Y plane, masks already filled)."""
        small, scale = self._faces.shrink(luma)
        if self._regions is None:
            self._regions = _Regions(small.shape)
        smooth = self._regions.smooth(small)
        self._live = [e for e in self._live if e[1] >= n]
        if n - self._last_full >= self._full_every:
            self._last_full = n
            whole: Box = (0, 0, small.shape[1], small.shape[0])
            found = self._faces.detect_scaled(small, scale)
            self._regions.scanned(smooth, [whole])
            # Sticky: a face in a part of the frame that does not change is not searched
            # again before the next full pass, so its box lasts until then.
            last = n + self._full_every + self._detect_every + self._hold
            first = n - self._hold
        else:
            live = [b for _, _, boxes in self._live for b in boxes]
            rects = self._regions.plan(smooth, live, scale)
            # Frontal on every pass, the two profile directions on alternate passes (each
            # every 2 * detect_every frames): their boxes are held detect_every frames longer.
            side = KINDS[1 + (n // self._detect_every) % 2]
            found = (
                self._faces.detect_scaled(small, scale, rects, kinds=("frontal", side))
                if rects
                else []
            )
            self._regions.scanned(smooth, rects)
            last = n + self._hold + self._detect_every
            first = n - self._hold - self._detect_every
        entry = (first, last, found)
        if found:
            self._live.append(entry)
        return entry


def redact_clip(
    src: Path,
    dst: Path,
    *,
    masks: Sequence[Polygon] = (),
    detect_every: int = DETECT_EVERY,
    hold: int | None = None,
    full_every: int = FULL_EVERY,
    margin: float = MARGIN,
    detector: FaceDetector | None = None,
    preset: str = "veryfast",
    crf: int = 23,
    threads: int = 0,
    thorough: bool = False,
) -> RedactionInfo:
    """Write a redacted copy of the video of ``src`` to ``dst`` (see the module docstring).

    Args:
        src: a clip (MP4) with an H.264 (or any decodable) video stream.
        dst: output MP4, must not exist; its directory must.
        masks: privacy masks, normalised polygons (x right, y down, 0..1).
        detect_every: run the face detectors every this many frames (>= 1).
        hold: frames a detection covers before and after its frame (default
            ``detect_every + 1``; at least ``detect_every`` so no frame between detections is
            left bare).
        full_every: frames between full-frame detection passes (>= 1); the detection
            frames between them scan only the regions that changed or hold a face (1: every
            detection frame is a full pass).
        margin: widen each face box by this fraction of its size on every side.
        detector: face detector (default :class:`FaceDetector`).
        preset, crf: libx264 settings; threads: encoder and decoder threads (0: FFmpeg's
            choice, one per core).
        thorough: detect on every frame at the clip's own resolution with exact region scans
            (:class:`FaceDetector` ``exact_regions``), overriding ``detect_every`` and
            ``detector``: a whole-frame checker with the same cascades finds no face left
            on any frame where the original had one (vtest.avi: none of 19), at ~0.24x real
            time on 2 cores for 768x576 10 fps, ~11x the default's time.

    Raises:
        InvalidRequestError-free: bad arguments raise ValueError (programming errors).
        StorageError: ``dst`` exists, its directory is missing, or it cannot be written.
        MediaError: ``src`` cannot be decoded or has no video, or encoding fails.
    """
    if thorough:
        detect_every = 1
        detector = FaceDetector(detect_width=1 << 30, exact_regions=True)
    if detect_every < 1:
        raise ValueError("detect_every must be >= 1")
    if full_every < 1:
        raise ValueError("full_every must be >= 1")
    held_frames = detect_every + 1 if hold is None else hold
    if held_frames < detect_every:
        raise ValueError("hold must be >= detect_every, or faces are left bare between detections")
    if dst.exists() or dst.is_symlink():
        raise StorageError(f"cannot write redacted clip {dst}: it already exists")
    if not dst.parent.is_dir():
        raise StorageError(f"cannot write redacted clip {dst}: {dst.parent} does not exist")
    faces = detector or FaceDetector()
    part = dst.with_name(dst.name + ".part")
    began = time.monotonic()
    try:
        info = _redact(
            src,
            part,
            dst,
            masks,
            _Detections(faces, held_frames, full_every, detect_every),
            detect_every,
            margin,
            (preset, crf, threads),
        )
        os.replace(part, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return RedactionInfo(
        frames=info[0],
        detections=info[1],
        detection_frames=info[2],
        blurred_frames=info[3],
        masks=len(masks),
        detect_every=detect_every,
        hold=held_frames,
        seconds=time.monotonic() - began,
        thorough=thorough,
    )


def _redact(
    src: Path,
    part: Path,
    dst: Path,
    masks: Sequence[Polygon],
    detections: _Detections,
    detect_every: int,
    margin: float,
    encoder: tuple[str, int, int],
) -> tuple[int, int, int, int]:
    preset, crf, threads = encoder
    try:
        inp = av.open(str(src), "r")
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot read clip {src}: {exc}") from exc
    with inp, ThreadPoolExecutor(max_workers=1, thread_name_prefix="redact-faces") as worker:
        if not inp.streams.video:
            raise MediaError(f"{src} has no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vin.codec_context.thread_count = threads
        width, height = vin.codec_context.width, vin.codec_context.height
        if width % 2 or height % 2:
            raise MediaError(f"{src}: {width}x{height} is not a 4:2:0 size (odd)")
        tb = vin.time_base
        if tb is None:
            raise MediaError(f"{src}: the video stream has no time base")
        rate = vin.average_rate or vin.guessed_rate or 25
        try:
            out = av.open(str(part), "w", format="mp4", options={"movflags": "+faststart"})
        except (av.error.FFmpegError, OSError) as exc:
            raise StorageError(f"cannot write redacted clip {dst}: {exc}") from exc
        with out:
            vout = out.add_stream("libx264", rate=rate, options={"preset": preset, "crf": str(crf)})
            assert isinstance(vout, VideoStream)
            vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
            vout.time_base = tb
            vout.codec_context.time_base = tb
            vout.codec_context.thread_count = threads
            vout.codec_context.thread_type = "FRAME"
            polys = _mask_polygons(masks, width, height)
            half = [(p // 2).astype(np.int32) for p in polys]
            queue: deque[tuple[int, _Planes, int]] = deque()
            # Detection frames in flight, oldest first; their results in ``entries``.
            pending: deque[tuple[int, Future[tuple[int, int, list[Box]]]]] = deque()
            entries: list[tuple[int, int, list[Box]]] = []
            counts = [0, 0, 0, 0]  # frames, detections, detection frames, blurred frames
            n = 0

            def settle(upto: int) -> None:
                while pending and pending[0][0] <= upto:
                    first, last, found = pending.popleft()[1].result()
                    counts[1] += len(found)
                    counts[2] += 1
                    if found:
                        entries.append((first, last, found))

            def emit(idx: int, planes: _Planes, pts: int) -> None:
                settle(idx + reach)  # every detection that can cover this frame is in
                entries[:] = [e for e in entries if e[1] >= idx]
                near = [
                    _expand(b, margin, width, height)
                    for first, last, found in entries
                    if first <= idx <= last
                    for b in found
                ]
                for x, y, w, h in near:
                    _mosaic(planes.y, x, y, w, h)
                    cx, cy, cw, ch = x // 2, y // 2, (w + 1) // 2, (h + 1) // 2
                    _mosaic(planes.u, cx, cy, cw, ch)
                    _mosaic(planes.v, cx, cy, cw, ch)
                if near:
                    counts[3] += 1
                frame = VideoFrame.from_ndarray(planes.arr, format="yuv420p")
                frame.pts = pts
                frame.time_base = tb
                frame.pict_type = PictureType.NONE
                out.mux(vout.encode(frame))
                counts[0] += 1

            # Frames wait for the detections that reach back to them, and
            # PIPELINE_FRAMES more so the worker detects while this thread decodes and encodes.
            reach = detections.reach
            lag = reach + PIPELINE_FRAMES
            try:
                last_pts = -1
                for frame in inp.decode(vin):
                    pts = frame.pts
                    if pts is None or pts <= last_pts:
                        continue
                    last_pts = pts
                    if frame.format.name != "yuv420p":
                        frame = frame.reformat(format="yuv420p")
                    planes = _Planes(np.asarray(frame.to_ndarray(), dtype=np.uint8), width, height)
                    for p, hp in zip(polys, half, strict=True):
                        cv2.fillPoly(planes.y, [p], _BLACK_Y)
                        cv2.fillPoly(planes.u, [hp], _BLACK_C)
                        cv2.fillPoly(planes.v, [hp], _BLACK_C)
                    if n % detect_every == 0:
                        # The worker only reads the plane; it is blurred (written) only
                        # after this detection is settled.
                        pending.append((n, worker.submit(detections.run, n, planes.y)))
                    queue.append((n, planes, pts))
                    while queue and queue[0][0] <= n - lag:
                        emit(*queue.popleft())
                    n += 1
                while queue:
                    emit(*queue.popleft())
                if counts[0] == 0:
                    raise MediaError(f"{src}: no frame to redact")
                out.mux(vout.encode(None))
            except av.error.FFmpegError as exc:
                raise MediaError(f"cannot redact {src} into {dst}: {exc}") from exc
            except OSError as exc:
                raise StorageError(f"cannot write redacted clip {dst}: {exc}") from exc
            finally:
                for _, fut in pending:
                    fut.cancel()
    return counts[0], counts[1], counts[2], counts[3]
