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
#: Video-range black in YUV.
_BLACK_Y, _BLACK_C = 16, 128

Box = tuple[int, int, int, int]  # x, y, w, h in full-resolution pixels
Polygon = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class RedactionInfo:
    """What :func:`redact_clip` did: ``frames`` encoded, ``detections`` (face boxes found on
    the ``detection_frames``), ``blurred_frames`` (frames with at least one blurred box),
    ``masks`` (polygons filled), ``detect_every``/``hold`` (frames), ``seconds`` (wall time)."""

    frames: int
    detections: int
    detection_frames: int
    blurred_frames: int
    masks: int
    detect_every: int
    hold: int
    seconds: float


class FaceDetector:
    """Haar frontal and profile (both directions) face detection on a luma plane.

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
    ) -> None:
        base = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
        self._frontal = _cascade(base / "haarcascade_frontalface_default.xml")
        self._profile = _cascade(base / "haarcascade_profileface.xml")
        self._width = detect_width
        self._neighbors = min_neighbors
        self._min = (min_size, min_size)

    def detect(self, luma: NDArray[np.uint8]) -> list[Box]:
        """Face boxes in ``luma`` (H x W uint8) as ``(x, y, w, h)`` in its own pixels."""
        h, w = luma.shape
        scale = min(1.0, self._width / w)
        small = (
            luma
            if scale == 1.0
            else cv2.resize(
                luma, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        )
        sw = small.shape[1]
        found: list[Box] = []
        for cascade, mirrored in (
            (self._frontal, False),
            (self._profile, False),
            (self._profile, True),
        ):
            img = cv2.flip(small, 1) if mirrored else small
            boxes = cascade.detectMultiScale(
                img, scaleFactor=SCALE_FACTOR, minNeighbors=self._neighbors, minSize=self._min
            )
            for x, y, bw, bh in boxes:
                x0 = sw - int(x) - int(bw) if mirrored else int(x)
                found.append(
                    (
                        round(x0 / scale),
                        round(int(y) / scale),
                        round(int(bw) / scale),
                        round(int(bh) / scale),
                    )
                )
        return found


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


def redact_clip(
    src: Path,
    dst: Path,
    *,
    masks: Sequence[Polygon] = (),
    detect_every: int = DETECT_EVERY,
    hold: int | None = None,
    margin: float = MARGIN,
    detector: FaceDetector | None = None,
    preset: str = "veryfast",
    crf: int = 23,
    threads: int = 0,
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
        margin: widen each face box by this fraction of its size on every side.
        detector: face detector (default :class:`FaceDetector`).
        preset, crf: libx264 settings; threads: encoder and decoder threads (0: FFmpeg's
            choice, one per core).

    Raises:
        InvalidRequestError-free: bad arguments raise ValueError (programming errors).
        StorageError: ``dst`` exists, its directory is missing, or it cannot be written.
        MediaError: ``src`` cannot be decoded or has no video, or encoding fails.
    """
    if detect_every < 1:
        raise ValueError("detect_every must be >= 1")
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
            src, part, dst, masks, detect_every, held_frames, margin, faces, preset, crf, threads
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
    )


def _redact(
    src: Path,
    part: Path,
    dst: Path,
    masks: Sequence[Polygon],
    detect_every: int,
    hold: int,
    margin: float,
    faces: FaceDetector,
    preset: str,
    crf: int,
    threads: int,
) -> tuple[int, int, int, int]:
    try:
        inp = av.open(str(src), "r")
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot read clip {src}: {exc}") from exc
    with inp:
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
            queue: deque[tuple[int, _Planes, int, float]] = deque()
            boxes_at: dict[int, list[Box]] = {}
            counts = [0, 0, 0, 0]  # frames, detections, detection frames, blurred frames
            n = 0

            def emit(idx: int, planes: _Planes, pts: int) -> None:
                near = [
                    _expand(b, margin, width, height)
                    for k, found in boxes_at.items()
                    if abs(k - idx) <= hold
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
                for k in [k for k in boxes_at if k <= idx - hold]:
                    del boxes_at[k]  # no later frame is that close

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
                        found = faces.detect(planes.y)
                        counts[1] += len(found)
                        counts[2] += 1
                        if found:
                            boxes_at[n] = found
                    queue.append((n, planes, pts, 0.0))
                    while queue and queue[0][0] <= n - hold:
                        idx, pl, qpts, _ = queue.popleft()
                        emit(idx, pl, qpts)
                    n += 1
                while queue:
                    idx, pl, qpts, _ = queue.popleft()
                    emit(idx, pl, qpts)
                if counts[0] == 0:
                    raise MediaError(f"{src}: no frame to redact")
                out.mux(vout.encode(None))
            except av.error.FFmpegError as exc:
                raise MediaError(f"cannot redact {src} into {dst}: {exc}") from exc
            except OSError as exc:
                raise StorageError(f"cannot write redacted clip {dst}: {exc}") from exc
    return counts[0], counts[1], counts[2], counts[3]
