"""Fragmented-MP4 segment files, written by copying packets (never re-encoding).

A segment is written to ``<final>.part`` and renamed to its final name only when complete, so
a crash leaves at most one ``.part`` file (which is itself playable up to its last fragment:
``frag_keyframe+empty_moov`` puts the ``moov`` first and flushes a ``moof``/``mdat`` fragment at
every keyframe, see FFmpeg's mov muxer documentation, "Fragmentation").

A segment that is sealed when it closes (``storage.sealed``) is written elsewhere instead: the
caller names its ``part_path`` (a private directory on a memory file system,
:mod:`homewarden.store.memory_dir`) and takes the finished file from there
(``close(place=False)``); nothing is then written next to the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

import av
import av.error

from homewarden.errors import StorageError

#: FFmpeg mov muxer flags: fragment at every keyframe, moov up front, self-contained moofs.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
#: Muxer options: those flags, and FFmpeg's I/O buffer flushed after every write so a fragment
#: reaches the file once complete (the live view tails ``.part`` files; without it the
#: ~256 KB buffer held a fragment back by about a GOP).
WRITE_OPTIONS = {"movflags": MOVFLAGS, "flush_packets": "1"}


def _storage_error(
    action: str, path: Path, exc: BaseException, medium: str = "disk"
) -> StorageError:
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return StorageError(f"{medium} full while {action} {path}")
    detail = getattr(exc, "strerror", None) or str(exc)
    return StorageError(f"cannot {action} {path}: {detail}")


class SegmentWriter:
    """One fragmented-MP4 segment file being written.

    Packets are those of the source's demuxer (``av.Packet`` of ``video_template_stream`` or
    ``audio_template_stream``). Timestamps are shifted so that the first video packet written
    has ``dts`` 0; both streams share the same shift in seconds so they stay in sync. ``dts``
    is kept strictly increasing per stream. Audio that would start before 0 (at most one audio
    packet straddling the cut) is left out.

    The packet objects passed to :meth:`write` are modified (their timestamps are rebased and
    their stream reassigned): callers must not rely on ``pts``/``dts`` afterwards.

    Args:
        final_path: the finished file's name.
        video_template_stream, audio_template_stream: the source's streams.
        part_path: where the file is written until it is finished; default
            ``<final_path>.part``. Its directory must exist when given (no directory is made
            then, so a private one keeps its mode).
        medium: what a full file system is called in errors (``disk``, ``memory file
            system``).

    Raises:
        StorageError: the directory or file cannot be written (a full one is said so).
    """

    def __init__(
        self,
        final_path: Path,
        video_template_stream: Any,
        audio_template_stream: Any | None = None,
        *,
        part_path: Path | None = None,
        medium: str = "disk",
    ) -> None:
        self.final_path = final_path
        self.part_path = part_path or final_path.with_name(final_path.name + ".part")
        self._medium = medium
        self._closed = False
        self._out: Any = None
        try:
            if part_path is None:
                final_path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(str(self.part_path), mode="w", format="mp4", options=WRITE_OPTIONS)
            self._v = self._out.add_stream_from_template(video_template_stream)
            self._v.time_base = video_template_stream.time_base
            self._a: Any | None = None
            if audio_template_stream is not None:
                self._a = self._out.add_stream_from_template(audio_template_stream)
                self._a.time_base = audio_template_stream.time_base
        except (av.error.FFmpegError, OSError) as exc:
            self._discard()
            raise _storage_error("create", self.part_path, exc, medium) from exc
        self._vindex = video_template_stream.index
        self._aindex = audio_template_stream.index if audio_template_stream is not None else -1
        self._offset_s: float | None = None
        self._voff = 0
        self._aoff = 0
        self._last_v = -(2**62)
        self._last_a = -(2**62)
        self.video_packets = 0
        self.keyframes = 0

    @property
    def offset_seconds(self) -> float | None:
        """Source time (s) that became 0 in this file, or None before the first video packet."""
        return self._offset_s

    def write(self, packet: Any) -> None:
        """Copy one packet into the file. The first packet must be a video keyframe.

        Raises:
            StorageError: write failed (disk full, I/O error); the ``.part`` file is removed.
            ValueError: the first video packet is not a keyframe, or a foreign stream.
        """
        idx = packet.stream_index
        if idx == self._vindex:
            if self._offset_s is None:
                if not packet.is_keyframe:
                    raise ValueError("a segment must start with a video keyframe")
                tb = packet.time_base
                self._offset_s = float(packet.dts * tb)
                self._voff = packet.dts
                if self._a is not None:
                    self._aoff = round(self._offset_s / self._a.time_base)
            dts = packet.dts - self._voff
            if dts <= self._last_v:
                packet.pts += self._last_v + 1 - dts
                dts = self._last_v + 1
            self._last_v = dts
            packet.pts -= self._voff
            packet.dts = dts
            packet.stream = self._v
            self.video_packets += 1
            if packet.is_keyframe:
                self.keyframes += 1
        elif idx == self._aindex and self._a is not None:
            if self._offset_s is None:
                return  # audio before the first keyframe has no place in this file
            dts = packet.dts - self._aoff
            if dts < 0 or dts <= self._last_a:
                return
            self._last_a = dts
            packet.pts -= self._aoff
            packet.dts = dts
            packet.stream = self._a
        else:
            raise ValueError(f"packet of stream {idx} does not belong to this segment")
        try:
            self._out.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            self._discard()
            raise _storage_error("write", self.part_path, exc, self._medium) from exc

    def close(self, *, place: bool = True) -> int:
        """Finish the file and rename ``.part`` to the final name atomically; with ``place``
        False the finished file is left at :attr:`part_path` for the caller (who seals it).

        Returns:
            The finished file's size in bytes.

        Raises:
            StorageError: nothing was written, or finishing/renaming failed (``.part`` removed).
        """
        if self._closed:
            raise StorageError(f"segment {self.final_path} is already closed")
        if self.video_packets == 0:
            self._discard()
            raise StorageError(f"segment {self.final_path} has no video; not kept")
        try:
            self._out.close()
            self._closed = True
            if not place:
                return self.part_path.stat().st_size
            os.replace(self.part_path, self.final_path)
            return self.final_path.stat().st_size
        except (av.error.FFmpegError, OSError) as exc:
            self._discard()
            raise _storage_error("finish", self.final_path, exc, self._medium) from exc

    def abort(self) -> None:
        """Stop writing and remove the ``.part`` file. Safe to call more than once."""
        self._discard()

    def _discard(self) -> None:
        if not self._closed:
            self._closed = True
            out = self._out
            if out is not None:
                with contextlib.suppress(av.error.FFmpegError, OSError):
                    out.close()  # the file is being thrown away
        with contextlib.suppress(OSError):
            # If even this fails, start-up reconciliation removes the orphan.
            self.part_path.unlink(missing_ok=True)
