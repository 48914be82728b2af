"""Frames for the end-to-end tests: what the browser shows, and what the recorder recorded.

The browser side draws a ``<video>`` element's current frame onto a canvas at the video's own
size and reads it back with ``getImageData`` (RGBA, 8 bits). The recorder side decodes the
recorded segment covering a wall-clock moment with PyAV. Both become ``(height, width, 3)``
uint8 RGB arrays; :func:`mean_abs_diff` compares them in luma, so a player that converts
YUV to RGB with another matrix (BT.601 against BT.709) does not look like another frame.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from playwright.sync_api import Page

from homewarden.store.index import Index

Frame = npt.NDArray[np.uint8]

#: Draws the element's current frame at its native size; returns the RGBA bytes (base64),
#: the element's currentTime and the page's wall clock (epoch s) right after the draw.
_GRAB_JS = """
(selector) => {
  const v = document.querySelector(selector);
  if (!v) { return null; }
  const w = v.videoWidth || v.naturalWidth, h = v.videoHeight || v.naturalHeight;
  if (!w || !h) { return null; }
  const c = document.createElement('canvas');
  c.width = w; c.height = h;
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(v, 0, 0, w, h);
  const now = Date.now() / 1000;
  const d = g.getImageData(0, 0, w, h).data;
  let s = '';
  const chunk = 0x8000;
  for (let i = 0; i < d.length; i += chunk) {
    s += String.fromCharCode.apply(null, d.subarray(i, i + chunk));
  }
  return {w: w, h: h, t: v.currentTime === undefined ? null : v.currentTime, now: now,
          data: btoa(s)};
}
"""


@dataclass(frozen=True)
class Grab:
    """One frame read back from the page: RGB pixels, the element's ``currentTime`` (s; None
    for an image) and the wall-clock time of the draw (epoch s)."""

    rgb: Frame
    current_time: float | None
    wall: float


def grab(page: Page, selector: str) -> Grab | None:
    """The current frame of the ``<video>`` (or ``<img>``) at ``selector``, or None while it
    has no frame yet."""
    got: dict[str, Any] | None = page.evaluate(_GRAB_JS, selector)
    if got is None:
        return None
    raw = np.frombuffer(base64.b64decode(got["data"]), dtype=np.uint8)
    rgba = raw.reshape(int(got["h"]), int(got["w"]), 4)
    t = got["t"]
    return Grab(rgba[:, :, :3].copy(), None if t is None else float(t), float(got["now"]))


def luma(rgb: Frame) -> npt.NDArray[np.float32]:
    """BT.601 luma of an RGB frame, as float32 0-255."""
    f = rgb.astype(np.float32)
    return 0.299 * f[:, :, 0] + 0.587 * f[:, :, 1] + 0.114 * f[:, :, 2]  # type: ignore[no-any-return]


def mean_abs_diff(a: Frame, b: Frame) -> float:
    """Mean absolute luma difference (0-255) of two frames of the same size.

    Raises:
        AssertionError: the sizes differ.
    """
    assert a.shape == b.shape, f"frame sizes differ: {a.shape} != {b.shape}"
    return float(np.abs(luma(a) - luma(b)).mean())


@dataclass(frozen=True)
class RecordedFrame:
    """A frame decoded from a recorded segment and its wall-clock time (epoch s)."""

    rgb: Frame
    wall: float


def recorded_frames(
    index: Index, media_dir: Path, camera: str, since: float, until: float
) -> list[RecordedFrame]:
    """Every recorded frame of ``camera`` whose wall-clock time is in ``[since, until)``,
    in order. A segment's first frame is at the segment's ``start`` (epoch s, from the index);
    the others follow by their presentation time."""
    frames: list[RecordedFrame] = []
    for seg in index.segments(camera, since, until):
        with av.open(str(media_dir / seg.path)) as container:
            first: float | None = None
            for frame in container.decode(video=0):
                if frame.time is None:
                    continue
                if first is None:
                    first = frame.time
                wall = seg.start + (frame.time - first)
                if since <= wall < until:
                    rgb = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
                    frames.append(RecordedFrame(rgb, wall))
    return frames


def recorded_frame_at(
    index: Index, media_dir: Path, camera: str, moment: float
) -> RecordedFrame | None:
    """The recorded frame of ``camera`` shown at wall-clock ``moment`` (the last frame that
    starts at or before it), or None when no segment covers it."""
    frames = recorded_frames(index, media_dir, camera, moment - 3.0, moment + 0.001)
    shown = [f for f in frames if f.wall <= moment + 1e-3]
    return shown[-1] if shown else None
