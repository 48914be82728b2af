"""Decoding helpers: a video decoder that can skip non-key frames, and frame conversions."""

from __future__ import annotations

import threading
from typing import Any

import av
import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from numpy.typing import NDArray

from homewarden.errors import MediaError

# One swscale context per thread, reused: ``frame.reformat`` builds a new one per frame, which
# costs ~5 ms at 720p against ~0.5 ms for the scaling itself.
_local = threading.local()

#: JPEG quality for event snapshots (OpenCV's default is 95; 85 keeps files ~40 % smaller).
JPEG_QUALITY = 85


class Decoder:
    """A video decoder of its own (not the demuxer's), fed packet by packet.

    In keyframes-only mode the codec skips every non-key frame (``skip_frame = "NONKEY"``);
    callers should not even send non-key packets then. Switching back to full mode after a
    keyframe has been decoded lets the following P-frames decode at once.

    Single-threaded on purpose: many cameras give the parallelism, and frame threading would
    hold frames back (a keyframe would not come out of :meth:`decode` until later packets).

    Non-key frames are decoded without the H.264/HEVC in-loop deblocking filter
    (``skip_loop_filter = nokey``): motion is measured on a ~240 px gray copy where block
    edges do not show, and it cuts full decoding of 720p from ~2.2 to ~1.6 ms a frame
    (bench/cameras.py). Keyframes keep the filter, so prediction drift ends at each GOP; a
    snapshot taken from a P-frame may show faint block edges. Recorded segments are copied,
    never decoded, so footage is untouched.
    """

    def __init__(self, template_codec_context: Any) -> None:
        """Build from the demuxer's codec context (codec name, extradata, size).

        Raises:
            MediaError: the codec cannot be opened.
        """
        try:
            ctx: Any = av.CodecContext.create(template_codec_context.name, "r")
            if template_codec_context.extradata:
                ctx.extradata = template_codec_context.extradata
            ctx.thread_count = 1
            ctx.thread_type = "SLICE"
            ctx.skip_frame = "DEFAULT"
            ctx.options = {"skip_loop_filter": "nokey"}
        except (av.error.FFmpegError, ValueError) as exc:
            raise MediaError(f"cannot open decoder {template_codec_context.name}: {exc}") from exc
        self._ctx = ctx
        self.keyframes_only = False

    def set_keyframes_only(self, on: bool) -> None:
        """Skip non-key frames (``NONKEY``) when ``on``; decode all (``DEFAULT``) when not."""
        if on != self.keyframes_only:
            self.keyframes_only = on
            self._ctx.skip_frame = "NONKEY" if on else "DEFAULT"

    def decode(self, packet: Any) -> list[Any]:
        """Decode one packet into zero or more ``av.VideoFrame`` objects.

        A damaged packet yields no frame instead of raising: the next keyframe recovers.
        """
        try:
            return list(self._ctx.decode(packet))
        except av.error.FFmpegError:
            return []

    def flush(self) -> list[Any]:
        """Drain frames the decoder still holds (end of a run of packets)."""
        try:
            return list(self._ctx.decode(None))
        except av.error.FFmpegError:
            return []


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """(w, h) of ``target_width`` wide keeping aspect; both even (swscale chroma), >= 2."""
    w = max(2, min(target_width, width) // 2 * 2)
    h = max(2, round(height * w / width / 2) * 2)
    return w, h


def to_small_gray(frame: Any, width: int) -> NDArray[np.uint8]:
    """A small luma copy of ``frame`` for motion analysis.

    Args:
        frame: ``av.VideoFrame`` of any pixel format.
        width: target width in pixels (never upscaled); height keeps the aspect ratio.

    Returns:
        HxW uint8 array (0-255 luma), scaled with area averaging (no aliasing of sensor noise).
    """
    w, h = scaled_size(frame.width, frame.height, width)
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    # threads=1: swscale's automatic threading starts worker threads per camera thread
    # (hundreds at 64 cameras) for a tiny image; the cameras already run in parallel.
    small = reformatter.reformat(
        frame, width=w, height=h, format="gray", interpolation="AREA", threads=1
    )
    return np.asarray(small.to_ndarray(), dtype=np.uint8)


def to_bgr(frame: Any, width: int) -> NDArray[np.uint8]:
    """A BGR copy of ``frame`` at most ``width`` pixels wide, for a person detector.

    Returns:
        HxWx3 uint8 array (OpenCV's BGR order), aspect ratio kept, never upscaled.
    """
    w, h = scaled_size(frame.width, frame.height, width)
    return np.asarray(frame.reformat(width=w, height=h, format="bgr24").to_ndarray(), np.uint8)


def to_jpeg(frame: Any) -> bytes:
    """Encode ``frame`` (``av.VideoFrame``) as a JPEG (quality :data:`JPEG_QUALITY`).

    Raises:
        MediaError: the encoder failed.
    """
    bgr = frame.to_ndarray(format="bgr24")
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise MediaError("JPEG encoding failed")
    return bytes(buf.tobytes())
