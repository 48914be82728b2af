"""Camera sources: an ``rtsp://`` camera or a ``file:`` clip played at real time, demuxed by PyAV.

:func:`open_source` connects and checks the streams; :meth:`Source.packets` yields the
compressed packets of the video stream (H.264 or H.265) and of the audio stream, if any, with
``pts`` and ``dts`` always set and increasing. Every PyAV/OS error is translated here into the
:class:`~homewarden.errors.SourceError` tree, each with a short ``reason`` word that is stored with
the gap and a message a person can act on.

Stall guard: FFmpeg's RTSP demuxer takes ``timeout`` (microseconds) for socket I/O (the older
``stimeout`` was removed in FFmpeg 5), and PyAV's ``av.open(timeout=(open_s, read_s))`` installs
an interrupt callback that aborts any blocking open or ``av_read_frame`` after that many
seconds. Both are set to ``stall_timeout`` so a server that accepts and never sends ends the
connection within ``stall_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from homewarden.errors import (
    SourceError,
    SourceStalledError,
    SourceUnreachableError,
    UnsupportedStreamError,
)

#: Video codecs we copy into MP4 segments (issue 2: "H.264 and H.265").
RECORDED_VIDEO_CODECS = frozenset({"h264", "hevc"})
#: Audio codecs FFmpeg's mp4 muxer accepts; other audio (e.g. G.711 pcm_mulaw) is left out.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"})

# Probing: a camera's SDP already names the codec, so half a second of analysis is enough and
# keeps the time from PLAY to the first packet short (FFmpeg's default analyzeduration is 5 s,
# which makes the first packets arrive in a burst seconds late).
_ANALYZE_US = "500000"
_PROBE_BYTES = "2000000"
#: file: packets may be yielded this many seconds before they are due, so a paced camera wakes
#: about five times a second instead of at every frame (each wake-up costs ~50 us of CPU).
PACE_SLACK = 0.2
#: A file whose packets end this many seconds before its announced duration is truncated.
TRUNCATION_SLACK = 1.0


def _disconnected(message: str) -> SourceError:
    err = SourceError(message)
    err.reason = "disconnected"
    return err


def _unreadable(message: str) -> SourceError:
    err = SourceError(message)
    err.reason = "unreadable"
    return err


def file_path(url: str) -> Path:
    """The path of a ``file:`` URL: ``file:/abs``, ``file:///abs`` or ``file:relative``."""
    rest = url[len("file:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    return Path(rest)


class Source:
    """An open camera. Build with :func:`open_source`; iterate :meth:`packets`; :meth:`close`.

    Attributes:
        url: the camera URL as configured.
        video: the video stream (``av.video.stream.VideoStream``), H.264 or HEVC.
        audio: the kept audio stream, or None.
        video_time_base: seconds per unit of video ``pts``/``dts`` (Fraction).
        audio_time_base: the same for audio, or None.
        is_file: True for ``file:`` sources (paced at real time by this class).
    """

    def __init__(
        self,
        url: str,
        container: Any,
        *,
        is_file: bool,
        loop: bool,
        stall_timeout: float,
        dropped_audio: str | None = None,
    ) -> None:
        self.url = url
        self._container = container
        self.is_file = is_file
        self._loop = loop
        self._stall_timeout = stall_timeout
        self.video: Any = container.streams.video[0]
        audio = [s for s in container.streams.audio if s.codec_context.name in MP4_AUDIO_CODECS]
        self.audio: Any | None = audio[0] if audio else None
        #: Name of an audio codec present but not recordable in MP4, or None.
        self.dropped_audio = dropped_audio
        self.video_time_base: Fraction = self.video.time_base
        self.audio_time_base: Fraction | None = self.audio.time_base if self.audio else None
        self._closed = False
        self._interrupt = threading.Event()

    def interrupt(self) -> None:
        """Ask :meth:`packets` to end soon (thread-safe): it returns after the packet in hand,
        or at once while pacing a file. A blocked network read still ends only when data comes
        or ``stall_timeout`` passes."""
        self._interrupt.set()

    @property
    def codec_context(self) -> Any:
        """The demuxer's video codec context (codec name, extradata, width, height)."""
        return self.video.codec_context

    @property
    def width(self) -> int:
        """Coded video width in pixels."""
        return int(self.video.codec_context.width)

    @property
    def height(self) -> int:
        """Coded video height in pixels."""
        return int(self.video.codec_context.height)

    def close(self) -> None:
        """Close the connection or file. Safe to call twice."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(av.error.FFmpegError, OSError):
                self._container.close()  # a broken connection: nothing left to save

    def packets(self) -> Iterator[Any]:
        """Yield ``av.Packet`` objects of :attr:`video` and :attr:`audio`, in demux order.

        Every yielded packet has ``pts`` and ``dts`` set and ``dts`` strictly increasing per
        stream: a missing timestamp is taken from the previous packet of its stream plus its
        duration; packets before a stream's first timestamp (RTSP before RTCP sync) take the
        first one's. Video packets with the same ``pts`` are slices of one picture (a camera or
        server that repeats SPS/PPS before every slice makes FFmpeg's parser split the access
        unit) and are joined into one packet, so each MP4 sample is a whole picture; video is
        therefore yielded one packet late.

        ``file:`` sources are paced: each video packet is yielded when its ``dts`` is due
        relative to the wall clock at the first packet (up to :data:`PACE_SLACK` early); with
        ``loop`` the file restarts at its end and timestamps keep increasing.

        Raises:
            SourceStalledError: no packet for ``stall_timeout`` seconds.
            SourceError: (reason ``disconnected``) a live source ended or failed mid-stream;
                (reason ``unreadable``) a file became unreadable mid-stream.
        A ``file:`` source without ``loop`` simply ends at the end of the file, and
        :meth:`interrupt` ends the iteration early.
        """
        vindex = self.video.index
        vtb = float(self.video_time_base)
        held: Any | None = None  # the latest video packet, yielded when the next one differs
        pace_origin: float | None = None  # monotonic time of the first video packet's dts
        first_s = 0.0
        interrupted = self._interrupt
        for packet in self._timed():
            if packet.stream_index != vindex:
                yield packet
                continue
            if held is not None and held.pts == packet.pts:
                held = _join(held, packet)
                continue
            out, held = held, packet
            if out is None:
                continue
            if self.is_file:
                due = out.dts * vtb
                if pace_origin is None:
                    pace_origin, first_s = time.monotonic(), due
                delay = pace_origin + (due - first_s) - time.monotonic()
                if delay > PACE_SLACK and interrupted.wait(delay):
                    return
            yield out
        if held is not None and not interrupted.is_set():
            yield held

    def _check_complete(self, reached: float) -> None:
        """Raise if a file ended well before the duration its header announces (truncated)."""
        announced = self._container.duration
        if announced is None:
            return
        total = announced / 1_000_000  # AV_TIME_BASE
        if reached < total - TRUNCATION_SLACK:
            raise _unreadable(
                f"file ends at {reached:.1f} s of the {total:.1f} s its header announces "
                "(truncated)"
            )

    def _timed(self) -> Iterator[Any]:
        """Demux, drop flush packets, fill and order timestamps, loop files; see packets()."""
        streams = [self.video] if self.audio is None else [self.video, self.audio]
        last_dts: dict[int, int] = {}
        last_dur: dict[int, int] = {}
        untimed: dict[int, list[Any]] = {}
        vindex = self.video.index
        last_vpts: int | None = None
        tbf = {s.index: float(s.time_base) for s in streams}  # floats: cheap per packet
        shifts = dict.fromkeys(tbf, 0)  # loop offset in each stream's time base
        loop_offset = 0.0  # seconds added to file timestamps after each pass
        end_abs = 0.0  # latest packet end (s, offset included) so far
        first_orig: float | None = None  # earliest pts (s) of one pass over the file
        last_packet_at = time.monotonic()
        interrupted = self._interrupt
        while not interrupted.is_set():
            try:
                for packet in self._container.demux(streams):
                    if interrupted.is_set():
                        return
                    if packet.size == 0 and packet.dts is None:
                        continue  # PyAV's end-of-stream flush packet
                    idx = packet.stream_index
                    dts = packet.dts
                    pts = packet.pts
                    prev = last_dts.get(idx)
                    if dts is None:
                        dts = pts
                    if dts is None:
                        if prev is None:
                            untimed.setdefault(idx, []).append(packet)
                            continue
                        dts = prev + last_dur.get(idx, 0)
                    if pts is None:
                        pts = dts
                    if loop_offset:
                        shift = shifts[idx]
                        dts += shift
                        pts += shift
                    if prev is not None and dts <= prev:
                        if idx == vindex and pts == last_vpts:
                            dts = prev  # another slice of the same picture: packets() joins
                        else:
                            pts += prev + 1 - dts  # repeated or backwards dts: nudge forward
                            dts = prev + 1
                    if idx == vindex:
                        last_vpts = pts
                    packet.dts = dts
                    packet.pts = pts
                    dur = packet.duration or last_dur.get(idx, 0)
                    last_dur[idx] = dur
                    last_dts[idx] = dts
                    if self.is_file:
                        tb = tbf[idx]
                        end = (pts + dur) * tb
                        if end > end_abs:
                            end_abs = end
                        start = pts * tb - loop_offset
                        if first_orig is None or start < first_orig:
                            first_orig = start
                    else:
                        last_packet_at = time.monotonic()
                    early = untimed.pop(idx, None)
                    if early:
                        for old in early:
                            old.dts, old.pts = dts, pts
                            yield old
                    yield packet
            except av.error.ExitError as exc:
                raise SourceStalledError(
                    f"no data for {self._stall_timeout:g} s (read timed out)"
                ) from exc
            except av.error.FFmpegError as exc:
                silent = time.monotonic() - last_packet_at
                if not self.is_file and silent >= 0.9 * self._stall_timeout:
                    raise SourceStalledError(f"no data for {silent:.1f} s ({_short(exc)})") from exc
                if self.is_file:
                    raise _unreadable(f"file became unreadable: {_short(exc)}") from exc
                raise _disconnected(f"stream failed: {_short(exc)}") from exc
            except OSError as exc:
                raise _disconnected(f"stream failed: {exc.strerror or exc}") from exc
            # demux() ended: end of file, or a live peer closed the stream.
            if not self.is_file:
                silent = time.monotonic() - last_packet_at
                if silent >= 0.9 * self._stall_timeout:
                    raise SourceStalledError(f"no data for {silent:.1f} s")
                raise _disconnected("the camera closed the stream")
            self._check_complete(end_abs - loop_offset)
            if not self._loop or first_orig is None:
                return
            try:
                self._container.seek(0)
            except av.error.FFmpegError as exc:
                raise _unreadable(f"cannot rewind file to loop: {_short(exc)}") from exc
            # The next pass's first packet lands where this pass ended.
            loop_offset = end_abs - first_orig
            shifts = {i: round(loop_offset / tb) for i, tb in tbf.items()}


def _join(first: Any, second: Any) -> Any:
    """One packet holding both packets' data (slices of one picture), first's timestamps."""
    joined = av.Packet(bytes(first) + bytes(second))
    joined.pts = first.pts
    joined.dts = first.dts
    joined.time_base = first.time_base
    joined.stream = first.stream
    joined.duration = first.duration or second.duration
    joined.is_keyframe = first.is_keyframe or second.is_keyframe
    return joined


def _short(exc: BaseException) -> str:
    """A one-line reason from an FFmpeg error, without the repeated URL."""
    if isinstance(exc, av.error.FFmpegError):
        return str(exc.strerror or exc).strip()
    return str(exc).strip()


def open_source(
    url: str,
    *,
    rtsp_transport: str = "tcp",
    stall_timeout: float,
    loop: bool = False,
) -> Source:
    """Connect to a camera and check its streams.

    Args:
        url: ``rtsp://``/``rtsps://`` camera URL, or ``file:PATH`` (played at real time).
        rtsp_transport: ``"tcp"`` (default; interleaved, no packet loss) or ``"udp"``.
        stall_timeout: seconds of silence (on connect or between packets) that end the
            connection.
        loop: for ``file:`` sources, restart at the end of the file.

    Returns:
        An open :class:`Source`; the caller must :meth:`Source.close` it.

    Raises:
        SourceUnreachableError: refused, unknown host, not found, missing file, no permission.
        SourceStalledError: the peer accepted but sent nothing within ``stall_timeout``.
        UnsupportedStreamError: no video stream, or video neither H.264 nor H.265.
        SourceError: (reason ``unreadable``) a file that is not a readable media file.
    """
    is_file = url.startswith("file:")
    started = time.monotonic()
    try:
        if is_file:
            path = file_path(url)
            if not path.is_file():
                raise SourceUnreachableError(
                    f"camera url {url!r}: file: URL has no path"
                    if not url[len("file:") :].strip("/")
                    else f"file {path} does not exist"
                )
            container = av.open(str(path), mode="r")
        else:
            options = {
                "rtsp_transport": rtsp_transport,
                "timeout": str(int(stall_timeout * 1_000_000)),
                "analyzeduration": _ANALYZE_US,
                "probesize": _PROBE_BYTES,
            }
            container = av.open(
                url, mode="r", options=options, timeout=(stall_timeout, stall_timeout)
            )
    except SourceError:
        raise
    except av.error.ExitError as exc:
        raise SourceStalledError(f"no answer within {stall_timeout:g} s") from exc
    except (av.error.FileNotFoundError, FileNotFoundError) as exc:
        raise SourceUnreachableError("not found: " + _short(exc)) from exc
    except av.error.HTTPError as exc:
        raise SourceUnreachableError("camera answered: " + _short(exc)) from exc
    except av.error.InvalidDataError as exc:
        waited = time.monotonic() - started
        if not is_file and waited >= 0.9 * stall_timeout:
            raise SourceStalledError(f"connected but no answer within {stall_timeout:g} s") from exc
        if is_file:
            raise _unreadable(
                f"{file_path(url)} is not a readable media file (truncated or corrupt?)"
            ) from exc
        raise _disconnected("camera sent invalid data: " + _short(exc)) from exc
    except (av.error.FFmpegError, OSError) as exc:
        waited = time.monotonic() - started
        if not is_file and waited >= 0.9 * stall_timeout:
            raise SourceStalledError(
                f"no answer within {stall_timeout:g} s ({_short(exc)})"
            ) from exc
        code = getattr(exc, "errno", None)
        if code == errno.EIO and not is_file:
            reason = "cannot resolve or reach host"
        else:
            reason = _short(exc)
        raise SourceUnreachableError(reason) from exc
    try:
        return _checked(url, container, is_file=is_file, loop=loop, stall_timeout=stall_timeout)
    except BaseException:
        container.close()
        raise


def _checked(
    url: str, container: Any, *, is_file: bool, loop: bool, stall_timeout: float
) -> Source:
    if not container.streams.video:
        raise UnsupportedStreamError("the source has no video stream")
    codec = container.streams.video[0].codec_context.name
    if codec not in RECORDED_VIDEO_CODECS:
        long_name = container.streams.video[0].codec_context.codec.long_name
        raise UnsupportedStreamError(
            f"video codec {codec} ({long_name}) is not recorded; only H.264 and H.265 are "
            "copied without re-encoding. Set the camera to H.264/H.265, or transcode the file "
            "first (e.g. ffmpeg -i IN -c:v libx264 -g 50 OUT.mp4)"
        )
    dropped = None
    audio = container.streams.audio
    if audio and not any(s.codec_context.name in MP4_AUDIO_CODECS for s in audio):
        dropped = str(audio[0].codec_context.name)
    return Source(
        url,
        container,
        is_file=is_file,
        loop=loop,
        stall_timeout=stall_timeout,
        dropped_audio=dropped,
    )
