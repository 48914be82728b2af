"""Probe a recorded segment file by demuxing it with PyAV (no decoding).

Used at start-up to decide whether a segment left behind by a crash can be kept (issue 2,
"Crash safety"): a file is *playable* when it parses, its first video packet is a keyframe and
its whole packets cover more than zero seconds. A file cut off mid-write (``kill -9``) keeps
its whole packets; the packet the cut went through is flagged corrupt by FFmpeg's MP4 demuxer
and marks the file ``truncated``. :func:`salvage_segment` rewrites such a file with only its
whole packets, so it decodes to its end.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from homewarden.errors import CorruptSegmentError, StorageError

#: Fragmented MP4 flags for salvaged files: a fragment per keyframe, the index up front, so a
#: file cut off again still parses (the same layout recording uses, issue 2 "Recording").
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


@dataclass(frozen=True, slots=True)
class SegmentProbe:
    """What demuxing a segment file found.

    Attributes:
        duration: seconds covered by the whole video packets (pts range plus the last
            packet's duration).
        keyframes: whole video keyframe packets.
        bytes: file size.
        starts_with_keyframe: the first video packet (decode order) is a keyframe.
        playable: parses, starts with a keyframe and ``duration > 0``.
        truncated: the file ends inside a packet; the counts above cover only whole packets.
        packets: whole video packets.
    """

    duration: float
    keyframes: int
    bytes: int
    starts_with_keyframe: bool
    playable: bool
    truncated: bool = False
    packets: int = 0


def _open(path: Path) -> Any:
    try:
        return av.open(str(path))
    except FileNotFoundError as exc:
        raise StorageError(f"no segment file at {path}") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise CorruptSegmentError(f"segment {path} does not parse: {exc}") from exc


def probe_segment(path: Path) -> SegmentProbe:
    """Demux the video stream of ``path`` and measure it.

    Raises:
        StorageError: the file does not exist.
        CorruptSegmentError: the file does not parse as media or has no video stream.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise StorageError(f"no segment file at {path}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read segment {path}: {exc}") from exc
    container = _open(path)
    try:
        if not container.streams.video:
            raise CorruptSegmentError(f"segment {path} has no video stream")
        stream = container.streams.video[0]
        time_base: Fraction | None = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        default_dur = int(1 / (Fraction(rate) * time_base)) if rate and time_base else 0
        packets = keyframes = 0
        first_key = False
        truncated = False
        lo: int | None = None
        hi: int | None = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream flush packet
                    continue
                if packet.is_corrupt:
                    truncated = True
                    break
                if packets == 0:
                    first_key = bool(packet.is_keyframe)
                packets += 1
                keyframes += int(bool(packet.is_keyframe))
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    continue
                end = ts + (packet.duration or default_dur)
                lo = ts if lo is None else min(lo, ts)
                hi = end if hi is None else max(hi, end)
        except av.FFmpegError as exc:
            if packets == 0:
                raise CorruptSegmentError(f"segment {path} does not demux: {exc}") from exc
            truncated = True
    finally:
        container.close()
    duration = (
        float((hi - lo) * time_base) if lo is not None and hi is not None and time_base else 0.0
    )
    return SegmentProbe(
        duration=duration,
        keyframes=keyframes,
        bytes=size,
        starts_with_keyframe=first_key,
        playable=packets > 0 and first_key and duration > 0,
        truncated=truncated,
        packets=packets,
    )


def salvage_segment(src: Path, dst: Path) -> SegmentProbe:
    """Copy the whole packets of every stream of ``src`` into a new fragmented MP4 at ``dst``.

    Stops at the first packet FFmpeg flags corrupt (the one a crash cut through). No packet is
    re-encoded. ``dst`` appears atomically (written beside it, then renamed); ``src`` is left
    as it is. Returns the probe of ``dst``.

    Raises:
        StorageError: ``src`` is missing or ``dst`` cannot be written.
        CorruptSegmentError: ``src`` does not parse, or no playable footage could be copied.
    """
    tmp = dst.with_name(dst.name + ".salvage")
    container = _open(src)
    try:
        if not container.streams.video:
            raise CorruptSegmentError(f"segment {src} has no video stream")
        try:
            out = av.open(str(tmp), "w", format="mp4", options=FRAGMENTED_MP4)
        except (av.FFmpegError, OSError) as exc:
            raise StorageError(f"cannot write {tmp}: {exc}") from exc
        try:
            mapping = {
                s.index: out.add_stream_from_template(s)
                for s in container.streams
                if s.type in ("video", "audio")
            }
            copied = 0
            try:
                for packet in container.demux(*[container.streams[i] for i in mapping]):
                    if packet.size == 0:
                        continue
                    if packet.is_corrupt:
                        break
                    if packet.dts is None:
                        continue
                    packet.stream = mapping[packet.stream.index]
                    out.mux(packet)
                    copied += 1
            except av.FFmpegError:
                pass  # the rest of the file is what the crash cut off
            if copied == 0:
                raise CorruptSegmentError(f"segment {src} holds no whole packet to salvage")
        except av.FFmpegError as exc:
            raise CorruptSegmentError(f"cannot remux {src}: {exc}") from exc
        finally:
            with contextlib.suppress(av.FFmpegError):
                out.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        container.close()
    try:
        probe = probe_segment(tmp)
    except CorruptSegmentError:
        tmp.unlink(missing_ok=True)
        raise
    if not probe.playable:
        tmp.unlink(missing_ok=True)
        raise CorruptSegmentError(f"segment {src} holds no playable footage to salvage")
    try:
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {dst}: {exc}") from exc
    return probe
