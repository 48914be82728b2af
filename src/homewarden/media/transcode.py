"""Make camera-like H.264 MP4 files from real footage (PyAV + libx264, no subprocess).

A real IP camera sends H.264 with a fixed keyframe interval (1-4 s), no B-frames and 4:2:0
chroma. The footage we test and demo with is not like that (``vtest.avi`` is MS-MPEG4 v3), so
every file served as a test camera is made here first:

* :func:`transcode_to_h264` - any video file to a camera-like H.264 MP4;
* :func:`make_still_motion_still_clip` - still / real motion / still, for motion tests;
* :func:`make_quiet_720p_clip` - a 1280x720 30 fps quiet scene for the idle-cost benchmark.

Every output is encoded with libx264 (shipped in the PyAV wheel): High profile, yuv420p,
``keyint = min-keyint = round(gop_seconds * fps)`` with scene-cut keyframes off so GOPs are
exactly regular, no B-frames, CRF 23. It is written as ``<dst>.<pid>.part`` and renamed into
place, as a plain (non-fragmented) MP4 with the ``moov`` box first (``movflags=+faststart``).
A sidecar ``<dst>.json`` records the parameters and the source's size and mtime; a later call
with the same parameters returns at once (cache-friendly for tests, benchmarks and the demo).
Audio is not copied: the footage we ship has none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

from homewarden.errors import MediaError, UnsupportedStreamError

__all__ = [
    "DEFAULT_CRF",
    "DEFAULT_PRESET",
    "QUIET_CLIP_FPS",
    "QUIET_CLIP_SIZE",
    "make_quiet_720p_clip",
    "make_still_motion_still_clip",
    "transcode_to_h264",
]

#: Bump when the encoding recipe changes, so cached outputs are rebuilt.
_RECIPE_VERSION = 1
#: x264's default constant-rate factor ("crf 23" in the x264 docs): typical camera quality.
DEFAULT_CRF = 23
#: Fast enough to transcode vtest.avi in a few seconds on 2 cores.
DEFAULT_PRESET = "veryfast"
#: The idle-cost benchmark camera of issue 2 ("1280x720, 30 fps, GOP 2 s").
QUIET_CLIP_SIZE = (1280, 720)
QUIET_CLIP_FPS = 30

ProgressFn = Callable[[float], None]


# --------------------------------------------------------------------------------------------
# public functions


def transcode_to_h264(
    src: Path,
    dst: Path,
    *,
    gop_seconds: float = 2.0,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    duration: float | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Transcode the first video stream of ``src`` into a camera-like H.264 MP4 at ``dst``.

    Args:
        src: any file FFmpeg can demux and decode.
        dst: output path (``.mp4``); parent directories are created.
        gop_seconds: keyframe interval in seconds; every ``round(gop_seconds * fps)``-th frame
            is an IDR frame and no other frame is.
        width, height: output size in pixels (even numbers; an odd value is rounded down).
            Given one, the other keeps the source aspect ratio; given neither, source size.
        fps: output frame rate; frames are repeated or dropped by presentation time (a frame is
            shown until the next one starts). Default: the source's average rate.
        duration: seconds of the source to keep from its first frame; default all.
        progress: called with the fraction done, 0.0-1.0, a few times per second of output.

    Returns:
        ``dst``. If ``dst`` and its sidecar ``dst.json`` already record the same parameters
        and the same source (path, size, mtime), nothing is encoded.

    Raises:
        MediaError: the source cannot be opened or decoded, or the output cannot be written.
        UnsupportedStreamError: the source has no video stream.
    """
    params = _params(
        "transcode_to_h264",
        src,
        gop_seconds=gop_seconds,
        width=width,
        height=height,
        fps=fps,
        duration=duration,
    )
    if is_cached(dst, params):
        return dst
    with _open_input(src) as (container, stream):
        out_fps = _fraction(fps) if fps is not None else _stream_rate(stream)
        out_w, out_h = _output_size(stream, width, height)
        total = _expected_frames(stream, out_fps, duration)
        with _H264Writer(dst, out_w, out_h, out_fps, gop_seconds, progress, total) as writer:
            for frame in _resampled(container, stream, out_fps, duration):
                writer.write(frame)
    write_sidecar(dst, params)
    return dst


def make_still_motion_still_clip(
    footage: Path,
    dst: Path,
    still_seconds: float = 20.0,
    motion_seconds: float = 20.0,
    *,
    gop_seconds: float = 2.0,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Make a still / motion / still H.264 MP4 from real footage (acceptance test 2).

    The clip is, in order: the first frame of ``footage`` held for ``still_seconds``; the first
    ``motion_seconds`` of ``footage`` as it is; the last frame shown held for
    ``still_seconds``. So the real motion spans ``[still_seconds, still_seconds +
    motion_seconds)`` of the clip's time, and the total is ``2 * still_seconds +
    motion_seconds`` seconds. Held frames are bit-identical source frames (no added noise),
    so any motion measured in the still parts is the detector's own error.

    Args:
        footage: real footage (e.g. ``vtest.avi``), at least ``motion_seconds`` long.
        dst: output path; see :func:`transcode_to_h264` for size, rate, GOP and caching.

    Returns:
        ``dst``.

    Raises:
        MediaError: as :func:`transcode_to_h264`, or ``footage`` is shorter than
            ``motion_seconds``.
        UnsupportedStreamError: ``footage`` has no video stream.
    """
    params = _params(
        "make_still_motion_still_clip",
        footage,
        still_seconds=still_seconds,
        motion_seconds=motion_seconds,
        gop_seconds=gop_seconds,
        width=width,
        height=height,
        fps=fps,
    )
    if is_cached(dst, params):
        return dst
    with _open_input(footage) as (container, stream):
        out_fps = _fraction(fps) if fps is not None else _stream_rate(stream)
        out_w, out_h = _output_size(stream, width, height)
        still_n = round(still_seconds * out_fps)
        motion_n = round(motion_seconds * out_fps)
        total = 2 * still_n + motion_n
        with _H264Writer(dst, out_w, out_h, out_fps, gop_seconds, progress, total) as writer:
            shown = 0
            last: VideoFrame | None = None
            for frame in _resampled(container, stream, out_fps, float(motion_seconds)):
                if last is None:
                    for _ in range(still_n):
                        writer.write(frame)
                writer.write(frame)
                last = frame
                shown += 1
            if last is None or shown < motion_n:
                raise MediaError(
                    f"{footage}: {float(shown / out_fps):.2f} s of video, need {motion_seconds} s"
                )
            for _ in range(still_n):
                writer.write(last)
    write_sidecar(dst, params)
    return dst


def make_quiet_720p_clip(
    dst: Path,
    seconds: float = 60.0,
    *,
    footage: Path,
    noise_sigma: float = 3.5,
    seed: int = 0,
    gop_seconds: float = 2.0,
    progress: ProgressFn | None = None,
) -> Path:
    """Make the idle-cost benchmark camera: a quiet 1280x720, 30 fps, GOP 2 s H.264 MP4.

    The scene is a real frame - the first frame of ``footage`` (``vtest.avi``: a CCTV view of
    a walkway), scaled to 1280x720 - held for ``seconds``, with zero-mean Gaussian sensor
    noise of ``noise_sigma`` luma levels (0-255 scale) added anew to every frame. A noiseless
    still (or noise under about 2 levels, which x264 quantises away) makes every P-frame a
    ~50-byte run of skip blocks, far cheaper to decode than a real quiet camera. At the
    default 3.5 the P-frames are ~2 KB and the stream ~1 Mbit/s (measured on vtest.avi),
    the order of a 720p IP camera's default bitrate.
    The noise is drawn from ``numpy.random.default_rng(seed)`` into a bank of 16 planes, one
    picked at random for each frame, so the clip is reproducible and quick to make. Chroma is
    left clean.

    Args:
        dst: output path; see :func:`transcode_to_h264` for GOP and caching.
        seconds: clip length in seconds.
        footage: the source of the still frame (any video file; its first frame is used).

    Returns:
        ``dst``.

    Raises:
        MediaError: ``footage`` cannot be read or ``dst`` cannot be written.
        UnsupportedStreamError: ``footage`` has no video stream.
    """
    params = _params(
        "make_quiet_720p_clip",
        footage,
        seconds=seconds,
        noise_sigma=noise_sigma,
        seed=seed,
        gop_seconds=gop_seconds,
    )
    if is_cached(dst, params):
        return dst
    out_w, out_h = QUIET_CLIP_SIZE
    out_fps = Fraction(QUIET_CLIP_FPS)
    with _open_input(footage) as (container, stream):
        first = next(_resampled(container, stream, _stream_rate(stream), None), None)
        if first is None:
            raise MediaError(f"{footage}: no decodable video frame")
        base = first.reformat(width=out_w, height=out_h, format="yuv420p").to_ndarray()
    rng = np.random.default_rng(seed)
    bank = [
        np.rint(rng.normal(0.0, noise_sigma, size=(out_h, out_w))).astype(np.int16)
        for _ in range(16)
    ]
    luma = base[:out_h].astype(np.int16)
    total = round(seconds * out_fps)
    with _H264Writer(dst, out_w, out_h, out_fps, gop_seconds, progress, total) as writer:
        for _ in range(total):
            planes = base.copy()
            noise = bank[int(rng.integers(len(bank)))]
            planes[:out_h] = np.clip(luma + noise, 0, 255).astype(np.uint8)
            writer.write(VideoFrame.from_ndarray(planes, format="yuv420p"))
    write_sidecar(dst, params)
    return dst


# --------------------------------------------------------------------------------------------
# input


@contextmanager
def _open_input(src: Path) -> Iterator[tuple[av.container.InputContainer, VideoStream]]:
    """Open ``src`` and its first video stream; translate PyAV/OS errors to :class:`MediaError`."""
    try:
        container = av.open(str(src), "r")
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{src}: cannot open: {exc}") from exc
    try:
        if not container.streams.video:
            raise UnsupportedStreamError(f"{src}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield container, stream
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{src}: {exc}") from exc
    finally:
        container.close()


def _stream_rate(stream: VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise MediaError("source has no frame rate; pass fps=")
    return Fraction(rate)


def _fraction(fps: float) -> Fraction:
    if fps <= 0:
        raise MediaError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


def _output_size(stream: VideoStream, width: int | None, height: int | None) -> tuple[int, int]:
    sw, sh = stream.codec_context.width, stream.codec_context.height
    if width is None and height is None:
        return _even(sw), _even(sh)
    if width is not None and height is not None:
        return _even(width), _even(height)
    if width is not None:
        return _even(width), _even(round(width * sh / sw))
    assert height is not None
    return _even(round(height * sw / sh)), _even(height)


def _expected_frames(stream: VideoStream, fps: Fraction, duration: float | None) -> int:
    """Best guess of the output frame count, for progress reports only."""
    seconds = [duration] if duration is not None else []
    if stream.duration and stream.time_base:
        seconds.append(float(stream.duration * stream.time_base))
    return max(1, round(min(seconds, default=0.0) * fps))


def _resampled(
    container: av.container.InputContainer,
    stream: VideoStream,
    fps: Fraction,
    duration: float | None,
) -> Iterator[VideoFrame]:
    """Yield decoded frames at ticks ``k / fps`` after the first frame, each being the frame
    on screen at that tick (shown from its own time until the next frame's time; the last
    one for one source frame interval). Stops before ``duration`` seconds if given."""
    src_rate = _stream_rate(stream)
    end = Fraction(duration).limit_denominator(1_000_000) if duration is not None else None
    t0: Fraction | None = None
    prev: VideoFrame | None = None
    prev_t = Fraction(0)
    tick = 0

    def until(limit: Fraction) -> Iterator[VideoFrame]:
        nonlocal tick
        assert prev is not None
        while Fraction(tick) / fps < limit and (end is None or Fraction(tick) / fps < end):
            yield prev
            tick += 1

    for frame in container.decode(stream):
        if frame.pts is None or frame.time_base is None:
            raise MediaError("source frame without a timestamp")
        t = Fraction(frame.pts) * Fraction(frame.time_base)
        if t0 is None:
            t0 = t
        t -= t0
        if prev is not None:
            if t <= prev_t:  # a non-increasing timestamp: keep the newer picture
                prev = frame
                continue
            yield from until(t)
        if end is not None and t >= end:
            return
        prev, prev_t = frame, t
    if prev is not None:
        yield from until(prev_t + 1 / src_rate)


# --------------------------------------------------------------------------------------------
# output


class _H264Writer:
    """Encode frames to ``<dst>.<pid>.part`` and rename it to ``dst`` on a clean close."""

    def __init__(
        self,
        dst: Path,
        width: int,
        height: int,
        fps: Fraction,
        gop_seconds: float,
        progress: ProgressFn | None,
        total_frames: int,
    ) -> None:
        gop = max(1, round(gop_seconds * fps))
        self._dst = dst
        self._part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
        self._width, self._height = width, height
        self._progress = progress
        self._total = max(1, total_frames)
        self._count = 0
        self._report_every = max(1, round(fps))
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(
                str(self._part), "w", format="mp4", options={"movflags": "+faststart"}
            )
            stream = self._out.add_stream(
                "libx264",
                rate=fps,
                options={
                    "preset": DEFAULT_PRESET,
                    "profile": "high",
                    "crf": str(DEFAULT_CRF),
                    # Regular GOPs and no B-frames, like an IP camera (x264 --fullhelp).
                    "x264-params": (
                        f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:open-gop=0"
                    ),
                },
            )
        except (av.error.FFmpegError, OSError) as exc:
            self._part.unlink(missing_ok=True)
            raise MediaError(f"{dst}: cannot create output: {exc}") from exc
        assert isinstance(stream, VideoStream)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        self._time_base = Fraction(1, 1) / fps
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = 0
        # PyAV defaults to slice threads, which makes x264 cut every frame into one slice per
        # core; cameras send one slice per frame, so thread by frames instead.
        stream.codec_context.thread_type = "FRAME"
        self._stream = stream

    def __enter__(self) -> _H264Writer:
        return self

    def write(self, frame: VideoFrame) -> None:
        """Encode ``frame`` as the next frame (pts = frame count in 1/fps units)."""
        if (frame.width, frame.height, frame.format.name) != (
            self._width,
            self._height,
            "yuv420p",
        ):
            frame = frame.reformat(width=self._width, height=self._height, format="yuv420p")
        # The encoder copies pts at send time, so one frame object may be written many times.
        frame.pts = self._count
        # The codec's, not the stream's: the MP4 muxer changes the stream's at its header.
        frame.time_base = self._time_base
        # libx264 obeys a frame's picture type; a decoded source I-frame would force an extra
        # keyframe and break the regular GOP.
        frame.pict_type = PictureType.NONE
        self._mux(self._stream.encode(frame))
        self._count += 1
        if self._progress is not None and self._count % self._report_every == 0:
            self._progress(min(1.0, self._count / self._total))

    def _mux(self, packets: list[av.Packet[Any]]) -> None:
        try:
            self._out.mux(packets)
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{self._dst}: cannot write: {exc}") from exc

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        try:
            if exc_type is None:
                if self._count == 0:
                    raise MediaError(f"{self._dst}: no frame to encode")
                self._mux(self._stream.encode(None))
            self._out.close()
        except (av.error.FFmpegError, OSError) as exc:
            self._part.unlink(missing_ok=True)
            raise MediaError(f"{self._dst}: cannot finish: {exc}") from exc
        except BaseException:
            self._part.unlink(missing_ok=True)
            raise
        if exc_type is not None:
            self._part.unlink(missing_ok=True)
            return
        try:
            self._part.replace(self._dst)
        except OSError as exc:
            self._part.unlink(missing_ok=True)
            raise MediaError(f"{self._dst}: cannot rename into place: {exc}") from exc
        if self._progress is not None:
            self._progress(1.0)


# --------------------------------------------------------------------------------------------
# cache sidecar


def _params(kind: str, src: Path, **kwargs: object) -> dict[str, object]:
    try:
        st = src.stat()
    except OSError as exc:
        raise MediaError(f"{src}: cannot read: {exc}") from exc
    return {
        "kind": kind,
        "recipe": _RECIPE_VERSION,
        "codec": f"libx264 {DEFAULT_PRESET} crf {DEFAULT_CRF} high yuv420p",
        "src": str(src.resolve()),
        "src_size": st.st_size,
        "src_mtime_ns": st.st_mtime_ns,
        **kwargs,
    }


def _sidecar(dst: Path) -> Path:
    return dst.with_name(dst.name + ".json")


def is_cached(dst: Path, params: dict[str, object]) -> bool:
    """True when ``dst`` exists and its ``<dst>.json`` sidecar records exactly ``params``
    (JSON-normalised), i.e. a derived media file need not be made again."""
    try:
        recorded = json.loads(_sidecar(dst).read_text())
    except (OSError, ValueError):
        return False
    return dst.is_file() and bool(recorded == json.loads(json.dumps(params)))


def write_sidecar(dst: Path, params: dict[str, object]) -> None:
    """Record ``params`` as what ``dst`` was made from (``<dst>.json``, written atomically).

    Raises:
        MediaError: the sidecar cannot be written.
    """
    side = _sidecar(dst)
    part = side.with_name(f"{side.name}.{os.getpid()}.part")
    try:
        part.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        part.replace(side)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise MediaError(f"{side}: cannot write: {exc}") from exc
