"""Compose one seekable MP4 clip from recorded segments, copying packets (never re-encoding).

How the clip's start is made exact without re-encoding: the clip begins with the keyframe at
or before ``start`` (a decoder needs it), and every timestamp is shifted so that ``start`` is
time 0. The pre-roll packets get negative timestamps, and FFmpeg's mov muxer turns the first
timestamp into an MP4 edit list (``elst``: media time = pre-roll length), so players decode the
pre-roll but present from ``start`` (ISO/IEC 14496-12, 8.6.6 "Edit List Box"). The clip's end
is the last frame shown before ``end``, its duration trimmed so the presentation stops at
``end``. The ``moov`` box is moved to the front (``movflags=faststart``) so browsers can seek
before the whole file has arrived.

Limits, stated honestly:
- with B-frames (reordered streams), the end is exact only to within one frame;
- an outage between segments is not hidden or compressed: the last frame before it stays on
  screen for the outage and the hole is listed in :attr:`ClipInfo.gaps`;
- a segment that cannot be read is skipped and its span listed in :attr:`ClipInfo.gaps`.

Sealed segments (``homewarden.services.sealed_footage``): a ``reader`` hands over a segment's
plaintext in memory (PyAV demuxes it from a ``BytesIO``), so decrypted footage never touches
the disk on the way in; whatever the reader raises (the keys are locked, a segment was
tampered with) ends the composition and reaches the caller: such a segment is never skipped
quietly.

The output file (``out``) is the caller's path, so it is handled with care: nothing that is
not a regular file is ever replaced (``-o /dev/full`` must not turn a device into a file), an
existing file only with ``overwrite=True``, and a missing directory is an error, never
created. The clip is written to ``<out>.part``, created exclusively (``O_EXCL``: a leftover or
planted ``.part``, symlink included, is refused, never written through) in the target's own
directory, so the final rename is atomic. Without ``overwrite`` the rename is a hard link
that fails if ``out`` appeared meanwhile. Errors of the output (cannot create, disk full,
read-only file system) are :class:`~homewarden.errors.StorageError` naming ``out`` and the
OS reason; they are never mistaken for a broken input segment. A limit: FFmpeg reopens the
``.part`` by name after it was created (its ``faststart`` pass rereads the file by name, so
it cannot be handed an open descriptor); whoever can write to the target's directory could
swap it in between, as they could replace ``out`` itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.error

from homewarden.errors import ClipError, InvalidRequestError, NotFoundError, StorageError
from homewarden.timefmt import utc_text

#: A jump between consecutive video frames longer than this (s) is reported as a gap.
GAP_THRESHOLD = 1.0


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """A composed clip.

    Attributes:
        start, end: UTC epoch seconds actually covered (inside the requested span).
        duration: presented seconds, ``end - start``.
        bytes: size of the output file.
        gaps: (start, end) UTC spans without footage inside the clip (outages, unreadable
            segments), ordered.
        skipped: segment files that could not be read.
    """

    start: float
    end: float
    duration: float
    bytes: int
    gaps: tuple[tuple[float, float], ...] = ()
    skipped: tuple[Path, ...] = field(default_factory=tuple)


def _why(exc: OSError) -> str:
    """The OS reason of ``exc`` in words (``strerror``), or its text."""
    return exc.strerror or str(exc)


def _check_target(out: Path, *, overwrite: bool) -> None:
    """Refuse an ``out`` that is not a regular file, exists without ``overwrite``, or whose
    directory does not exist.

    Raises:
        StorageError: one of those, naming ``out``.
    """
    try:
        st: os.stat_result | None = os.lstat(out)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StorageError(f"cannot write clip {out}: {_why(exc)}") from exc
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(
                f"cannot write clip {out}: it exists and is not a regular file "
                "(a device, pipe, directory or link); choose another path"
            )
        if not overwrite:
            raise StorageError(
                f"cannot write clip {out}: it already exists and is not replaced; "
                "choose another path or remove it first"
            )
    if not out.parent.is_dir():
        raise StorageError(f"cannot write clip {out}: directory {out.parent} does not exist")


def _create_part(tmp: Path, out: Path) -> None:
    """Create ``tmp`` empty, exclusively (``O_EXCL``: never an existing file or a symlink).

    Raises:
        StorageError: it exists already, or cannot be created (naming ``out`` and the reason).
    """
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError as exc:
        raise StorageError(
            f"cannot write clip {out}: {tmp} already exists (a clip being written there, or "
            "one left by an interrupted write: remove it if none is running)"
        ) from exc
    except OSError as exc:
        raise StorageError(f"cannot write clip {out}: {_why(exc)} ({tmp})") from exc
    os.close(fd)


def _place(tmp: Path, out: Path, *, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``out``; without ``overwrite`` never replace a file.

    Raises:
        StorageError: ``out`` appeared meanwhile, is no longer a regular file, or the rename
            fails.
    """
    if not overwrite:
        try:
            os.link(tmp, out)  # atomic, and fails when ``out`` exists: nothing is replaced
        except FileExistsError:
            _check_target(out, overwrite=False)  # raises: it exists
            raise
        except OSError:
            pass  # a file system without hard links: check, then rename
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
    _check_target(out, overwrite=overwrite)  # not turned into a device or a link meanwhile
    try:
        os.replace(tmp, out)
    except OSError as exc:
        raise StorageError(f"cannot write clip {out}: {_why(exc)}") from exc


class _Out:
    """The output file ``path`` (the ``.part`` of ``out``): streams created lazily from the
    first segment read. Every error of the file itself is a :class:`StorageError` naming
    ``out``; an FFmpeg error about the packets (``EINVAL``) is left as it is."""

    def __init__(self, path: Path, out: Path) -> None:
        self.path = path
        self.out = out
        self.container: Any | None = None
        self.v: Any = None
        self.a: Any | None = None
        self.last_v = -(2**62)
        self.last_a = -(2**62)
        self.held: Any | None = None  # last video packet, written when the next one comes
        self.held_t = 0.0

    def _failed(self, exc: OSError) -> StorageError:
        return StorageError(f"cannot write clip {self.out}: {_why(exc)}")

    def open(self, vstream: Any, astream: Any | None) -> None:
        try:
            container = av.open(
                str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
        except OSError as exc:
            raise self._failed(exc) from exc
        except av.error.FFmpegError as exc:
            raise StorageError(f"cannot write clip {self.out}: {exc}") from exc
        try:
            self.v = container.add_stream_from_template(vstream)
            self.v.time_base = vstream.time_base
            if astream is not None:
                self.a = container.add_stream_from_template(astream)
                self.a.time_base = astream.time_base
        except BaseException:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                container.close()
            self.v = self.a = None
            raise
        self.container = container

    def put_video(self, packet: Any, t: float, dts_t: float, clip_start: float) -> None:
        tb = packet.time_base
        pts = round((t - clip_start) / tb)
        dts = round((dts_t - clip_start) / tb)
        if dts <= self.last_v:
            pts += self.last_v + 1 - dts
            dts = self.last_v + 1
        self.last_v = dts
        packet.pts = pts
        packet.dts = dts
        packet.stream = self.v
        if self.held is not None:
            self._mux(self.held)
        self.held = packet
        self.held_t = t

    def put_audio(self, packet: Any, t: float, clip_start: float) -> None:
        if self.a is None:
            return
        pts = round((t - clip_start) / packet.time_base)
        if pts < 0 or pts <= self.last_a:
            return
        self.last_a = pts
        packet.pts = pts
        packet.dts = pts
        packet.stream = self.a
        self._mux(packet)

    def finish(self, end: float) -> None:
        if self.held is not None:
            tb = self.held.time_base
            room = round((end - self.held_t) / tb)
            if 0 < room < (self.held.duration or room + 1):
                self.held.duration = room  # stop presenting exactly at ``end``
            self._mux(self.held)
            self.held = None
        if self.container is not None:
            container, self.container = self.container, None
            try:
                container.close()  # the trailer, then the faststart pass over the file
            except OSError as exc:
                raise self._failed(exc) from exc

    def _mux(self, packet: Any) -> None:
        assert self.container is not None
        try:
            self.container.mux(packet)
        except OSError as exc:
            raise self._failed(exc) from exc

    def discard(self) -> None:
        """Close and remove the ``.part``; never raises (it runs while another error is
        on its way to the caller)."""
        container, self.container = self.container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def compose_clip(
    parts: Sequence[tuple[Path, float]],
    start: float,
    end: float,
    out: Path,
    *,
    overwrite: bool = False,
    reader: Callable[[Path], bytes | None] | None = None,
) -> ClipInfo:
    """Remux the footage of ``[start, end]`` from segment files into one MP4 at ``out``.

    Args:
        parts: segment files with the UTC epoch second their first keyframe shows, ordered by
            start; segments that do not overlap the span are skipped cheaply.
        start, end: UTC epoch seconds, ``start < end``.
        out: output path, in an existing directory; written as ``<out>.part`` (created
            exclusively) and renamed when complete. See the module docstring.
        overwrite: replace ``out`` if it is an existing regular file (never anything else).
        reader: the plaintext of a segment file in memory (a sealed one, opened), or None to
            read the file itself; what it raises is raised here (see the module docstring).

    Returns:
        :class:`ClipInfo` of what the clip covers.

    Raises:
        InvalidRequestError: ``end <= start``.
        NotFoundError: no readable footage in the span.
        StorageError: ``out`` is not a regular file, exists without ``overwrite``, its
            directory does not exist, ``<out>.part`` exists, or the output cannot be created
            or written (the message names ``out`` and the OS reason). Nothing is left behind.
        ClipError: FFmpeg cannot mux the footage into an MP4.
    """
    if not end > start:
        raise InvalidRequestError(f"clip end {end} is not after start {start}")
    _check_target(out, overwrite=overwrite)
    tmp = out.with_name(out.name + ".part")
    _create_part(tmp, out)
    sink = _Out(tmp, out)
    try:
        return _compose(parts, start, end, out, sink, overwrite=overwrite, reader=reader)
    except BaseException:
        sink.discard()
        raise


def _compose(
    parts: Sequence[tuple[Path, float]],
    start: float,
    end: float,
    out: Path,
    sink: _Out,
    *,
    overwrite: bool,
    reader: Callable[[Path], bytes | None] | None,
) -> ClipInfo:
    gaps: list[tuple[float, float]] = []
    skipped: list[Path] = []
    clip_start: float | None = None
    last_frame_t: float | None = None  # presentation time of the latest video frame written
    last_frame_end = 0.0
    ordered = sorted(parts, key=lambda p: p[1])
    done = False
    try:
        for i, (path, seg_start) in enumerate(ordered):
            next_start = ordered[i + 1][1] if i + 1 < len(ordered) else None
            if seg_start >= end:
                break
            if next_start is not None and next_start <= start:
                continue  # wholly before the span (the next one starts before ``start``)
            plain = reader(path) if reader is not None else None
            try:
                src = av.open(str(path) if plain is None else io.BytesIO(plain), mode="r")
            except (av.error.FFmpegError, OSError):
                skipped.append(path)
                gaps.append((max(seg_start, start), min(next_start or end, end)))
                continue
            if not src.streams.video:
                src.close()
                skipped.append(path)
                gaps.append((max(seg_start, start), min(next_start or end, end)))
                continue
            try:
                vs = src.streams.video[0]
                aus = src.streams.audio[0] if src.streams.audio else None
                if sink.container is None:
                    sink.open(vs, aus)
                streams = [vs] if aus is None or sink.a is None else [vs, aus]
                zero: float | None = None  # seconds of the first video pts in this file
                preroll: list[tuple[Any, float, float]] = []
                early_audio: list[Any] = []  # audio read before the clip's start is known
                video_done = False
                for pkt in src.demux(streams):
                    pts, dts = pkt.pts, pkt.dts
                    if pts is None or dts is None:
                        continue
                    ptb = pkt.time_base
                    if pkt.stream_index != vs.index:
                        if clip_start is None or zero is None:
                            early_audio.append(pkt)
                            continue
                        t = seg_start + float(pts * ptb) - zero
                        if t < end:
                            sink.put_audio(pkt, t, clip_start)
                        elif video_done:
                            break
                        continue
                    if video_done:
                        continue
                    if zero is None:
                        zero = float(pts * ptb)
                    t = seg_start + float(pts * ptb) - zero
                    dts_t = seg_start + float(dts * ptb) - zero
                    if dts_t >= end:
                        video_done = done = True
                        if sink.a is None:
                            break
                        continue  # audio up to ``end`` may still follow
                    if clip_start is None:
                        if t < start:
                            if pkt.is_keyframe:
                                preroll = []
                            if pkt.is_keyframe or preroll:
                                preroll.append((pkt, t, dts_t))
                            continue
                        if not preroll and not pkt.is_keyframe:
                            continue  # no keyframe yet to decode from
                        clip_start = start if preroll else t
                        for old, ot, odt in preroll:
                            sink.put_video(old, ot, odt, clip_start)
                        preroll = []
                        for apkt in early_audio:
                            at = seg_start + float(apkt.pts * apkt.time_base) - zero
                            if at < end:
                                sink.put_audio(apkt, at, clip_start)
                        early_audio = []
                    elif last_frame_t is not None and t - last_frame_end > GAP_THRESHOLD:
                        gaps.append((last_frame_end, t))
                    sink.put_video(pkt, t, dts_t, clip_start)
                    if last_frame_t is None or t > last_frame_t:
                        last_frame_t = t
                        last_frame_end = t + float((pkt.duration or 0) * ptb)
            except av.error.FFmpegError:
                skipped.append(path)
                gaps.append((max(seg_start, start), min(next_start or end, end)))
                continue
            finally:
                src.close()
            if done:
                break
        if clip_start is None or last_frame_t is None:
            raise NotFoundError(f"no footage between {utc_text(start)} and {utc_text(end)}")
        clip_end = min(end, last_frame_end)
        sink.finish(clip_end)
        _place(sink.path, out, overwrite=overwrite)
        size = out.stat().st_size
    except OSError as exc:  # the output's (input errors are handled per segment above)
        raise StorageError(f"cannot write clip {out}: {_why(exc)}") from exc
    except av.error.FFmpegError as exc:
        raise ClipError(f"cannot write clip {out}: {exc}") from exc
    return ClipInfo(
        start=clip_start,
        end=clip_end,
        duration=clip_end - clip_start,
        bytes=size,
        gaps=tuple(sorted(gaps)),
        skipped=tuple(skipped),
    )
