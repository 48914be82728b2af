"""The recorder loop of one camera: record, sense motion cheaply, index, and account for gaps.

One :class:`CameraRecorder` per camera, each on its own daemon thread. Cameras share nothing but
the (thread-safe) :class:`~homewarden.store.index.Index`, so one camera's failure never touches
another. PyAV releases the GIL while demuxing, decoding and muxing, so many cameras run in
parallel; the Python work per packet is kept to a few attribute reads and one mux call.

Per connection (DESIGN.md flows 1-2, issue 2 "Sources", "Recording", "Motion sensing"):

1. Connect (:func:`~homewarden.media.source.open_source`). On any source or storage error log
   one line, open a gap in the index at the end of the last written footage (or now), and retry
   after 1 s, doubling up to 30 s; a packet arriving again closes the gap at the new stream's
   anchor.
2. Anchor the stream to the wall clock: ``t = anchor + (pts - pts0) * time_base``. The anchor
   is the earliest ``arrival - (pts - pts0) * time_base`` over the first
   :data:`SETTLE_SECONDS` of packets: a camera never delivers a frame before it was captured,
   and packets buffered while the connection was probed arrive in a burst, so the earliest
   estimate is the most accurate one.
3. Cut segments only on video keyframes once ``segment_seconds`` have passed; a segment's start
   is the time of its first keyframe and its end the time of the keyframe that starts the next
   one, so segments are exactly contiguous. Index each finished segment.
4. Downtime between recorder lives (a clean stop, ``kill -9``, the camera left out of the
   configuration for a while) is a gap too, with reason :data:`NOT_RECORDING`: the first
   thing that happens to a camera in this recorder's life — its first connection's anchor,
   or its first failed attempt — closes a gap from the end of the camera's earlier footage in
   the index (``Index.last_segment_end``) to that moment, when the hole is longer than one
   frame (:data:`DOWNTIME_TOLERANCE` when the frame rate is unknown). A failed attempt then
   opens its own outage gap from that same moment, so the two meet and never overlap; when
   the hole before a failed attempt is too short for a gap of its own, the outage gap starts
   at the earlier footage's end and covers it.
5. Motion: while quiet only keyframes are decoded (non-key packets never reach the decoder);
   a moving keyframe switches to decoding every frame, sampled at ``detect_fps``, until the
   event closes after ``post_capture`` quiet seconds. The event start is refined by decoding
   the previous GOP (kept as packets) with a second decoder and finding the first frame that
   differs from the background.
6. Sealed footage (``storage.sealed``, DESIGN.md flow 8, issue 6): the segment in progress is
   plaintext fragmented MP4 (the live view follows it as it grows,
   :mod:`homewarden.services.live`), so it is written to a private directory on a memory file
   system, never to the disk: ``<memory root>/homewarden-<uid>-<hash of the media
   dir>/live/<camera>/<start>.mp4.part`` (:func:`live_parts_dir`; the memory root is
   ``/dev/shm``, else ``$XDG_RUNTIME_DIR``, see :mod:`homewarden.store.memory_dir`). The name
   is deterministic, so the live view of the web process finds the segments that recorder
   worker processes and ``--role recorder`` nodes on the same machine write; one on another
   machine is not found (its plaintext would have to cross to the shared disk). When the
   segment closes it is sealed from there into ``media/<...>/<start>.hwseal`` and the
   plaintext deleted at once. Memory: every recording camera's segment in progress, up to
   ``segment_seconds`` x bitrate each (10 s at 4 Mbit/s is 5 MB; 16 such cameras ~80 MB of
   ``tmpfs``, which counts as shared memory). A full memory file system is a storage error
   like a full disk: the segment is lost, an outage gap recorded, and the recorder retries
   with back-off. Without a usable memory file system (not Linux, a container without
   ``/dev/shm``, a squatted directory) the ``.part`` stays in the media dir as before, with
   one warning per process. Start-up reconciliation deletes a ``.part`` a crash left there
   (:mod:`homewarden.services.reconcile`). With sealing off nothing of this applies: the
   ``.part`` is in the media dir, where a crash keeps it for reconciliation to adopt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from homewarden.config import CameraSettings
from homewarden.detect.person import PersonDetecting
from homewarden.domain.events import EventChange, EventTracker
from homewarden.domain.motion import MotionDetector, MotionParams, MotionResult
from homewarden.errors import (
    HomeWardenError,
    LeaseLostError,
    MediaError,
    SourceError,
    StorageError,
    UnsupportedStreamError,
)
from homewarden.media.frames import Decoder, scaled_size, to_bgr, to_jpeg, to_small_gray
from homewarden.media.h264 import picture_count
from homewarden.media.segment_writer import SegmentWriter
from homewarden.media.source import Source, open_source
from homewarden.services.sealed_footage import SegmentSealing, seal_segment_file, seal_snapshot
from homewarden.services.snapshot_tap import PROCESS_TAP, SnapshotTap
from homewarden.store.index import Index, SegmentGuard
from homewarden.store.memory_dir import (
    deployment_dir,
    memory_root,
    private_dir,
    remove_empty,
)
from homewarden.store.records import NewSegment
from homewarden.timefmt import utc_text

log = logging.getLogger(__name__)

State = Literal["starting", "connected", "reconnecting", "failed", "stopped"]
DecodeMode = Literal["off", "keyframes", "full"]

#: Back-off between reconnection attempts: 1 s doubling to 30 s (issue 2, "Sources").
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
#: Wall-clock seconds of packets used to anchor a new connection (see module docstring).
SETTLE_SECONDS = 1.0
#: Stream seconds over which fps and bitrate are measured.
RATE_WINDOW = 2.0
#: Event labels (issue 2, "Events"): plain motion, or a person the detector confirmed.
MOTION_LABEL = "motion"
PERSON_LABEL = "person"
#: While an event is unconfirmed, its best frame goes to the person detector at most this
#: often (seconds): SSDLite costs ~40 ms and HOG ~120 ms a frame on this class of machine.
PERSON_CHECK_INTERVAL = 1.0
#: Width of the frame handed to the person detector (the SSDLite graph itself takes 300x300).
PERSON_FRAME_WIDTH = 640
#: Gap reason of time no recorder was running for the camera (stopped, crashed, or the camera
#: left out of the configuration): from its last footage to the next life's first packet.
NOT_RECORDING = "not_recording"
#: A hole between two lives shorter than this (s) is rounding, not downtime, when the
#: stream's frame duration is unknown; a restart itself takes longer than this.
DOWNTIME_TOLERANCE = 0.5


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """What one camera is doing, for the API and CLI.

    Attributes:
        name: camera name.
        state: ``starting``, ``connected``, ``reconnecting`` (retrying after an error that may
            pass), ``failed`` (retrying after an error that needs a person: unsupported codec,
            unreadable file), or ``stopped``.
        connected_since: UTC epoch seconds where the current connection's footage starts, or None.
        last_packet_at: UTC epoch seconds the last packet arrived, or None.
        fps_in: video frames per second of stream time, measured over the last ~2 s of it.
        bitrate: bits per second of stream time (video and audio), over the same window.
            Both are measured on packet timestamps, not arrival times, so a burst of packets
            buffered while a connection is probed, or a paced file catching up after a
            busy moment, does not read as a faster camera.
        decode_mode: ``keyframes`` (quiet), ``full`` (motion), or ``off`` (motion disabled:
            nothing is decoded).
        segments_written: segments finished and indexed since start.
        fps_recorded: video frames per second written into segments, over the same window as
            ``fps_in`` (lower than it while the recorder waits for a keyframe or drops
            packets a browser could not decode).
        cpu_seconds: CPU seconds (user + system) of the camera's recorder thread since it
            started, read by that thread from its own CPU clock (``time.thread_time``,
            POSIX ``CLOCK_THREAD_CPUTIME_ID``): demuxing, muxing, motion decoding and
            detection run on it; FFmpeg's own helper threads, if it starts any, are not
            counted. Updated once per rate window and when a connection ends.
        gaps_open: 1 while an outage is being recorded as a gap, else 0.
        last_error: the latest error in plain words, or None.
        next_retry_at: UTC epoch seconds of the next connection attempt, or None.
    """

    name: str
    state: State
    connected_since: float | None
    last_packet_at: float | None
    fps_in: float
    bitrate: float
    decode_mode: DecodeMode
    segments_written: int
    gaps_open: int
    last_error: str | None
    next_retry_at: float | None
    fps_recorded: float = 0.0
    cpu_seconds: float = 0.0


def segment_relpath(camera: str, start: float) -> str:
    """``<camera>/<YYYY-MM-DD>/<HH>/<start:.3f>.mp4`` (UTC), relative to the media dir.

    Raises:
        StorageError: ``start`` is no date (a clock gone wild: non-finite, or past what
            ``datetime`` or the platform's ``time_t`` holds), so the segment has no place;
            the recorder records a gap and retries, as for any storage failure.
    """
    try:
        when = datetime.fromtimestamp(start, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise StorageError(
            f"cannot place a segment of camera {camera} starting at {utc_text(start)}: {exc}"
        ) from exc
    return f"{camera}/{when:%Y-%m-%d}/{when:%H}/{start:.3f}.mp4"


#: Directory of the segments in progress under a deployment's memory directory (sealed).
LIVE_DIR = "live"
#: What a full memory file system is called in errors.
MEMORY_MEDIUM = "memory file system"
_warned_media_dirs: set[Path] = set()  # media dirs whose fallback to the disk was logged


def live_parts_dir(root: Path, media_dir: Path, camera: str, *, create: bool) -> Path | None:
    """The private directory (0700) of ``camera``'s segments in progress under sealing, on the
    memory file system ``root``: ``root/homewarden-<uid>-<hash of media_dir>/live/<camera>``
    (see the module docstring, step 6). With ``create`` the missing levels are made; without,
    None when it does not exist yet.

    Raises:
        StorageError: a level is not this user's private directory (squatted), or cannot be
            made.
    """
    name = deployment_dir(root, media_dir).name
    return private_dir(root, name, LIVE_DIR, camera, create=create)


def _memory_root_for(camera: str, media_dir: Path) -> Path | None:
    """:func:`~homewarden.store.memory_dir.memory_root`, checked by making ``camera``'s
    directory (removed again: it is made for each segment); None (logged once per media dir
    and process) when there is none usable."""
    root = memory_root()
    why = "no memory file system (/dev/shm or $XDG_RUNTIME_DIR on tmpfs) is usable"
    if root is not None:
        try:
            parts = live_parts_dir(root, media_dir, camera, create=True)
        except StorageError as exc:
            why = str(exc)
        else:
            assert parts is not None  # made with create
            remove_empty(parts, up_to=root)  # a recorder never started leaves nothing
            return root
    if media_dir not in _warned_media_dirs:
        _warned_media_dirs.add(media_dir)
        log.warning(
            "sealed footage: %s; the segment being recorded is written in the clear to the "
            "media dir %s until it closes and is sealed",
            why,
            media_dir,
        )
    return None


class _Stop(Exception):
    """Internal: the recorder was asked to stop."""


class CameraRecorder:
    """Records one camera on a daemon thread. ``start()``, ``status()``, ``stop()``.

    Args:
        name: camera name (letters, digits, ``-``, ``_``).
        cam: the camera's settings.
        media_dir: root of segment files; files go to ``media_dir/<segment_relpath>``.
        snapshot_dir: event snapshots go to ``snapshot_dir/<camera>/<event_id>.jpg``.
        index: the recording index (thread-safe).
        clock: wall clock, UTC epoch seconds (injectable for tests).
        person_detector: when given (the camera's ``person_detector`` setting), a motion
            event's best frame is checked at most every :data:`PERSON_CHECK_INTERVAL` s until
            a person is found, and the event is then labelled ``person``. Owned by this
            recorder's thread (OpenCV DNN nets are not shared between threads).
        segment_guard: run in each segment's index transaction (a recorder node's lease
            fence, :mod:`homewarden.services.leases`); when it raises
            :class:`~homewarden.errors.LeaseLostError` another node records the camera now:
            the segment's file is deleted and this recorder stops.
        sealing: with ``storage.sealed``, how finished segments are sealed
            (:mod:`homewarden.services.sealed_footage`): each is written in the clear to its
            ``.part`` (the live view tails it), sealed to the household's current public key
            when it closes, and indexed as sealed; the plaintext is then deleted. None: plain
            ``.mp4`` segments. Event snapshots are sealed too
            (``<camera>/<event_id>.jpg.hwseal``), from memory. The ``.part`` is on the
            memory file system (see the module docstring, step 6).
        snapshot_tap: where a sealed snapshot's JPEG is offered from memory to this
            process's MQTT bridge (``mqtt.snapshots``; :mod:`homewarden.services.snapshot_tap`);
            default the process's own.
        memory_dir: with ``sealing``, the memory file system the segment in progress is
            written to (under :func:`live_parts_dir`); default the one
            :func:`~homewarden.store.memory_dir.memory_root` finds, else the media dir
            (logged). Ignored without ``sealing``.
    """

    def __init__(
        self,
        name: str,
        cam: CameraSettings,
        media_dir: Path,
        snapshot_dir: Path,
        index: Index,
        clock: Callable[[], float] = time.time,
        person_detector: PersonDetecting | None = None,
        segment_guard: SegmentGuard | None = None,
        sealing: SegmentSealing | None = None,
        snapshot_tap: SnapshotTap = PROCESS_TAP,
        memory_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.sealing = sealing
        self.memory_dir: Path | None = None  # where the sealed segment in progress goes
        if sealing is not None:
            self.memory_dir = memory_dir or _memory_root_for(name, media_dir)
        self._snapshot_tap = snapshot_tap
        self._segment_guard = segment_guard
        self.cam = cam
        self.media_dir = media_dir
        self.snapshot_dir = snapshot_dir
        self.index = index
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: Source | None = None
        self._lock = threading.Lock()
        # status
        self._state: State = "starting"
        self._connected_since: float | None = None
        self._last_packet_at: float | None = None
        self._fps = 0.0
        self._fps_recorded = 0.0
        self._cpu_seconds = 0.0
        self._bitrate = 0.0
        self._mode: DecodeMode = "keyframes" if cam.motion.enabled else "off"
        self._segments_written = 0
        self._last_error: str | None = None
        self._next_retry_at: float | None = None
        self._logged_error: str | None = None
        # accounting across connections
        self._gap_id: int | None = None
        self._footage_end: float | None = None
        self._earlier_end: float | None = None  # the index's footage end from earlier lives
        self._downtime_settled = False  # the gap since that footage is recorded (or none)
        self._tracker = EventTracker(cam.motion.post_capture)
        self._event_id: int | None = None
        self._best_frame: Any = None
        self._best_saved = True
        self._person_detector = person_detector
        self._person_found = False
        self._person_checked_at = float("-inf")
        self._motion_params = MotionParams(
            threshold=cam.motion.threshold, min_area=cam.motion.min_area, alpha=cam.motion.alpha
        )

    # -- public --------------------------------------------------------------------------

    def start(self) -> None:
        """Start recording on a daemon thread (``camera-<name>``). Calling twice is an error.

        Raises:
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop: finish the segment in progress, close the open event and gap.

        A camera blocked on a silent network read stops once ``stall_timeout`` passes.

        Returns:
            True if the thread ended within ``timeout`` seconds.
        """
        self._stop.set()
        source = self._source
        if source is not None:
            source.interrupt()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        # A camera that gave up earlier (an unusable file) left its gap open until now.
        self._close_gap(self.clock())
        return True

    def status(self) -> CameraStatus:
        """A snapshot of the camera's state (thread-safe)."""
        with self._lock:
            return CameraStatus(
                name=self.name,
                state=self._state,
                connected_since=self._connected_since,
                last_packet_at=self._last_packet_at,
                fps_in=self._fps,
                bitrate=self._bitrate,
                decode_mode=self._mode,
                segments_written=self._segments_written,
                fps_recorded=self._fps_recorded,
                cpu_seconds=self._cpu_seconds,
                gaps_open=0 if self._gap_id is None else 1,
                last_error=self._last_error,
                next_retry_at=self._next_retry_at,
            )

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        try:
            self._earlier_end = self.index.last_segment_end(self.name)
        except HomeWardenError as exc:
            log.error("camera %s: cannot read its earlier footage: %s", self.name, exc)
            self._downtime_settled = True  # the downtime is unknown: nothing to record
        try:
            while not self._stop.is_set():
                try:
                    source = open_source(
                        self.cam.url,
                        rtsp_transport=self.cam.rtsp_transport,
                        stall_timeout=self.cam.stall_timeout,
                        loop=self.cam.loop,
                    )
                except SourceError as exc:
                    if self._failed(exc):
                        return
                else:
                    self._source = source
                    if self._stop.is_set():
                        source.interrupt()
                    try:
                        if source.dropped_audio:
                            log.info(
                                "camera %s: audio codec %s cannot go into MP4; video only",
                                self.name,
                                source.dropped_audio,
                            )
                        ended = _Connection(self, source).run()
                    except (MediaError, StorageError) as exc:
                        if self._failed(exc):
                            return
                        if self._connected_since is not None:
                            backoff = BACKOFF_FIRST  # it worked for a while: start over
                    else:
                        if ended or self._stop.is_set():
                            return
                    finally:
                        source.close()
                        self._source = None
                        with self._lock:
                            self._connected_since = None
                            self._fps = self._fps_recorded = self._bitrate = 0.0
                            self._cpu_seconds = time.thread_time()
                if self._stop.is_set():
                    return
                with self._lock:
                    self._next_retry_at = self.clock() + backoff
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX)
                with self._lock:
                    self._next_retry_at = None
        except Exception as exc:  # a bug must not pass silently; the thread ends with a status
            log.exception("camera %s: recorder crashed", self.name)
            with self._lock:
                self._state = "failed"
                self._last_error = f"internal error: {exc}"
        finally:
            self._remove_live_dir()
            self._finish_event(self.clock() if self._footage_end is None else self._footage_end)
            if self._stop.is_set():
                self._close_gap(self.clock())
            with self._lock:
                if self._state != "failed":
                    self._state = "stopped"
                self._next_retry_at = None
                if self._mode != "off":
                    self._mode = "keyframes"

    def _remove_live_dir(self) -> None:
        """Remove this camera's directory of segments in progress from the memory file
        system when the thread ends (empty by then: the last segment was sealed or lost),
        and the deployment's directories above it once no other camera uses them."""
        root = self.memory_dir
        if root is None:
            return
        try:
            parts = live_parts_dir(root, self.media_dir, self.name, create=False)
        except StorageError:
            return
        if parts is not None:
            remove_empty(parts, up_to=root)

    def _failed(self, exc: HomeWardenError) -> bool:
        """Record a failed or lost connection: status, one log line, a gap.

        Returns:
            True when retrying is pointless: a ``file:`` camera whose file is unsupported or
            unreadable (replaying it would record the same footage again). Network cameras
            are always retried: their owner may fix the camera's settings.
        """
        message = str(exc)
        if isinstance(exc, SourceError):
            reason = exc.reason
        else:
            reason = "storage" if isinstance(exc, StorageError) else "media"
        permanent = isinstance(exc, UnsupportedStreamError) or reason == "unreadable"
        now = self.clock()
        with self._lock:
            self._state = "failed" if permanent else "reconnecting"
            self._last_error = message
        # One warning per outage; a different reason later in the same outage is news worth
        # an info line, the same one again (every retry) only a debug line.
        if self._logged_error is None:
            log.warning("camera %s: %s: %s", self.name, reason, message)
        elif message != self._logged_error:
            log.info("camera %s: still down: %s: %s", self.name, reason, message)
        else:
            log.debug("camera %s: still down: %s", self.name, message)
        self._logged_error = message
        self._finish_event(self._footage_end if self._footage_end is not None else now)
        accounted = self._settle_downtime(now, DOWNTIME_TOLERANCE)
        if self._gap_id is None:
            start = self._footage_end
            if start is None:
                start = accounted if accounted is not None else now
            try:
                gap_id = self.index.open_gap(self.name, start, reason, message)
            except HomeWardenError as db_exc:
                log.error("camera %s: cannot record gap: %s", self.name, db_exc)
            else:
                with self._lock:
                    self._gap_id = gap_id
        return permanent and self.cam.url.startswith("file:")

    def _settle_downtime(self, until: float, tolerance: float) -> float | None:
        """Once per life: record ``[earlier footage end, until]`` as a closed
        :data:`NOT_RECORDING` gap when it is longer than ``tolerance`` seconds.

        Returns:
            Where the index's account of the camera now ends, for an outage gap opened at
            ``until`` to start from: ``until`` when the gap was recorded, the earlier footage
            end when the hole was too short for a gap of its own (the outage then covers
            it), None when nothing earlier is known or this ran before.
        """
        if self._downtime_settled:
            return None
        self._downtime_settled = True
        since = self._earlier_end
        if since is None or since > until:
            return None  # no earlier footage, or a clock that went back: nothing to bridge
        if until - since <= tolerance:
            return since
        try:
            self.index.add_gap(
                self.name, since, until, NOT_RECORDING, "no recorder was running for the camera"
            )
        except HomeWardenError as exc:
            log.error("camera %s: cannot record the downtime gap: %s", self.name, exc)
            return None
        log.info("camera %s: not recorded for %.1f s before this start", self.name, until - since)
        return until

    def _connected(self, anchor: float, source: Source, frame_s: float) -> None:
        """The first segment of a connection starts at ``anchor``: record the downtime before
        this life (once), close the outage gap there, report connected."""
        self._settle_downtime(anchor, frame_s if frame_s > 0 else DOWNTIME_TOLERANCE)
        self._close_gap(anchor)
        with self._lock:
            self._state = "connected"
            self._connected_since = anchor
            self._last_error = None
        if self._logged_error is not None:
            log.info("camera %s: connected again", self.name)
        self._logged_error = None
        log.debug(
            "camera %s: %s %dx%d", self.name, source.codec_context.name, source.width, source.height
        )

    def _close_gap(self, end: float) -> None:
        gap_id = self._gap_id
        if gap_id is None:
            return
        try:
            self.index.close_gap(gap_id, end)
        except HomeWardenError as exc:
            log.error("camera %s: cannot close gap: %s", self.name, exc)
        with self._lock:
            self._gap_id = None

    # -- events --------------------------------------------------------------------------

    def _apply(self, changes: list[EventChange], frame: Any) -> None:
        for ch in changes:
            try:
                if ch.kind == "open":
                    self._event_id = self.index.open_event(
                        self.name, ch.start, MOTION_LABEL, ch.peak_score, sorted(ch.zones)
                    )
                    self._best_frame = frame
                    self._person_found = False
                    self._person_checked_at = float("-inf")
                    self._check_person(frame)
                    self._save_snapshot()
                elif self._event_id is None:
                    continue
                elif ch.kind == "update":
                    if ch.best_frame:
                        self._best_frame = frame
                        self._best_saved = False
                        self._check_person(frame)
                    self.index.update_event(
                        self._event_id, peak_score=ch.peak_score, zones=sorted(ch.zones)
                    )
                elif ch.kind == "close":
                    if not self._best_saved:
                        self._save_snapshot()
                    self.index.update_event(
                        self._event_id,
                        end=ch.end,
                        peak_score=ch.peak_score,
                        zones=sorted(ch.zones),
                    )
                    self._event_id = None
                    self._best_frame = None
            except HomeWardenError as exc:
                log.error("camera %s: cannot record event: %s", self.name, exc)

    def _check_person(self, frame: Any) -> None:
        """Run the person detector on ``frame`` (rate-limited) and relabel the open event."""
        detector = self._person_detector
        if detector is None or self._person_found or frame is None or self._event_id is None:
            return
        now = self.clock()
        if now - self._person_checked_at < PERSON_CHECK_INTERVAL:
            return
        self._person_checked_at = now
        try:
            found = detector.detect(to_bgr(frame, PERSON_FRAME_WIDTH))
        except HomeWardenError as exc:
            log.error("camera %s: person detector failed: %s", self.name, exc)
            return
        if found:
            self._person_found = True
            self.index.update_event(self._event_id, label=PERSON_LABEL)
            log.debug(
                "camera %s: event %s: person (%.2f)",
                self.name,
                self._event_id,
                max(d.score for d in found),
            )

    def _save_snapshot(self) -> None:
        """Write the best frame of the open event as ``<camera>/<event_id>.jpg``."""
        if self._event_id is None or self._best_frame is None:
            return
        rel = f"{self.name}/{self._event_id}.jpg"
        path = self.snapshot_dir / rel
        try:
            data = to_jpeg(self._best_frame)
            if self.sealing is not None:  # sealed in memory: never on disk in the clear
                rel = seal_snapshot(data, self.snapshot_dir, rel, self.name, self.sealing)
                self._snapshot_tap.offer(self.name, self._event_id, rel, data)  # MQTT
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".part")
                tmp.write_bytes(data)
                tmp.replace(path)
            self.index.update_event(self._event_id, snapshot_path=rel)
        except (OSError, MediaError, StorageError) as exc:
            log.error("camera %s: cannot write snapshot %s: %s", self.name, path, exc)
        self._best_saved = True

    def _finish_event(self, ts: float) -> None:
        self._apply(self._tracker.finish(ts), None)

    # -- used by _Connection ---------------------------------------------------------------

    def _segment_done(self, seg: NewSegment) -> None:
        try:
            self.index.add_segment(seg, guard=self._segment_guard)
        except LeaseLostError as exc:
            # Another node holds the camera: its footage is the camera's, never two copies.
            log.error("camera %s: %s; discarding %s and stopping", self.name, exc, seg.path)
            try:
                (self.media_dir / seg.path).unlink(missing_ok=True)
            except OSError as os_exc:
                log.error("camera %s: cannot delete %s: %s", self.name, seg.path, os_exc)
            with self._lock:
                self._last_error = str(exc)
            self._stop.set()
            return
        except HomeWardenError as exc:
            # The file is on disk; start-up reconciliation indexes it.
            log.error("camera %s: cannot index segment %s: %s", self.name, seg.path, exc)
        self._footage_end = seg.end
        with self._lock:
            self._segments_written += 1


class _Connection:
    """The packet loop of one connection. Plain attributes on purpose: this runs per packet."""

    def __init__(self, rec: CameraRecorder, source: Source) -> None:
        self.rec = rec
        self.source = source
        self.vindex = source.video.index
        self.vtb = float(source.video_time_base)
        self.h264 = source.video.codec_context.name == "h264"
        self.footage_started = False
        self.atb = float(source.audio_time_base) if source.audio_time_base is not None else 0.0
        rate = source.video.average_rate
        self.frame_s = 1.0 / float(rate) if rate else 0.0  # fallback packet duration
        self.anchor = 0.0
        self.ref = 0.0  # seconds of the first video pts
        self.writer: SegmentWriter | None = None
        self.seg_start = 0.0
        self.seg_end = 0.0  # end of the latest video frame written to the segment
        self.seg_motion = 0.0
        # motion
        m = rec.cam.motion
        self.motion = m.enabled
        self.decoder: Decoder | None = None
        self.detector: MotionDetector | None = None
        self.full = False
        self.sample_every = 1.0 / m.detect_fps
        self.next_sample = 0.0
        self.gop_prev: list[tuple[Any, float]] = []
        self.gop_cur: list[tuple[Any, float]] = []
        if self.motion:
            self.decoder = Decoder(source.codec_context)
            self.decoder.set_keyframes_only(True)
            w, h = scaled_size(source.width, source.height, m.analysis_width)
            self.gray_w = w
            self.detector = MotionDetector(
                rec._motion_params, h, w, masks=m.masks, zones=rec.cam.zones
            )
        # rates
        self.win_start: float | None = None  # stream seconds (dts) of the window's first frame
        self.win_frames = 0
        self.win_recorded = 0
        self.win_bytes = 0

    def run(self) -> bool:
        """Process packets until the source ends or fails, or the recorder stops.

        Returns:
            True when a ``file:`` source reached its end (nothing more to record).

        Raises:
            SourceError: the source failed; StorageError: a segment could not be written.
        """
        rec = self.rec
        clock = rec.clock
        stop = rec._stop
        pending: list[tuple[Any, float]] = []  # (packet, arrival) while settling
        settling = True
        settle_until: float | None = None
        anchor = float("inf")
        vindex, vtb, atb = self.vindex, self.vtb, self.atb
        ended = False
        try:
            for pkt in self.source.packets():
                if stop.is_set():
                    break
                now = clock()
                if not settling:
                    self._packet(pkt, now)
                    continue
                if settle_until is None:
                    if pkt.stream_index != vindex:
                        continue  # audio before the first video packet has no anchor
                    self.ref = pkt.pts * vtb
                    settle_until = now + SETTLE_SECONDS
                rel = pkt.pts * (vtb if pkt.stream_index == vindex else atb) - self.ref
                anchor = min(anchor, now - rel)
                pending.append((pkt, now))
                if now >= settle_until:
                    settling = False
                    self._flush_pending(anchor, pending)
            else:
                ended = self.source.is_file and not rec.cam.loop and not stop.is_set()
                if ended:
                    log.info(
                        "camera %s: end of file, recording stopped; set loop = true to replay",
                        rec.name,
                    )
            if settling and pending:  # a source shorter than the settling time
                self._flush_pending(anchor, pending)
        finally:
            self._end()
        return ended

    def _flush_pending(self, anchor: float, pending: list[tuple[Any, float]]) -> None:
        self.anchor = anchor
        for pkt, arrived in pending:
            self._packet(pkt, arrived)
        pending.clear()

    def _packet(self, pkt: Any, now: float) -> None:
        rec = self.rec
        rec._last_packet_at = now
        size = pkt.size
        self.win_bytes += size
        if pkt.stream_index != self.vindex:
            if self.writer is not None:
                self.writer.write(pkt)
            return
        t = self.anchor + pkt.pts * self.vtb - self.ref
        key = pkt.is_keyframe
        # decode order: dts is monotonic where pts is reordered by B-frames
        d = (pkt.dts if pkt.dts is not None else pkt.pts) * self.vtb
        if self.win_start is None:
            self.win_start = d
        elif d - self.win_start >= RATE_WINDOW:
            # frames and bytes of [win_start, d): the frame at d opens the next window
            span = d - self.win_start
            with rec._lock:
                rec._fps = self.win_frames / span
                rec._fps_recorded = self.win_recorded / span
                rec._bitrate = (self.win_bytes - size) * 8 / span
                rec._cpu_seconds = time.thread_time()  # this is the camera's thread
            self.win_start = d
            self.win_frames = 0
            self.win_recorded = 0
            self.win_bytes = size
        self.win_frames += 1
        if key:
            if self.writer is None:
                if self.h264 and picture_count(bytes(pkt)) > 1:
                    # Two pictures merged in one packet (RTSP start): browsers refuse to
                    # decode it, so the segment starts at the next clean keyframe.
                    log.debug("camera %s: keyframe packet holds two pictures", rec.name)
                    return
                if not self.footage_started:
                    # The outage (and any downtime) ends where footage resumes: the first
                    # segment's start, not the first packet (which may precede a keyframe).
                    self.footage_started = True
                    rec._connected(t, self.source, self.frame_s)
                self._open_segment(t)
            elif t - self.seg_start >= rec.cam.segment_seconds:
                self._close_segment(t)
                self._open_segment(t)
        elif self.writer is None:
            return  # nothing decodable before the first keyframe
        if self.motion:
            self._sense(pkt, t, key)
        dur = pkt.duration
        end = t + (dur * self.vtb if dur else self.frame_s)
        if end > self.seg_end:
            self.seg_end = end
        assert self.writer is not None
        self.writer.write(pkt)
        self.win_recorded += 1

    # -- segments ------------------------------------------------------------------------

    def _open_segment(self, t: float) -> None:
        rec = self.rec
        rel = segment_relpath(rec.name, t)
        final = rec.media_dir / rel
        if rec.memory_dir is None:
            self.writer = SegmentWriter(final, self.source.video, self.source.audio)
        else:  # sealed: the plaintext in progress only ever on the memory file system
            parts = live_parts_dir(rec.memory_dir, rec.media_dir, rec.name, create=True)
            assert parts is not None  # made with create
            self.writer = SegmentWriter(
                final,
                self.source.video,
                self.source.audio,
                part_path=parts / (final.name + ".part"),
                medium=MEMORY_MEDIUM,
            )
        self.seg_rel = rel
        self.seg_start = t
        self.seg_end = t
        self.seg_motion = 0.0

    def _close_segment(self, end: float) -> None:
        writer = self.writer
        if writer is None:
            return
        self.writer = None
        rec = self.rec
        sealing = rec.sealing
        if sealing is None:
            size = writer.close()
            path, key_id = self.seg_rel, None
        else:
            writer.close(place=False)
            sealed = seal_segment_file(
                writer.part_path, rec.media_dir, self.seg_rel, rec.name, self.seg_start, sealing
            )
            size, path, key_id = sealed.bytes, sealed.path, sealed.key_id
        rec._segment_done(
            NewSegment(
                camera=rec.name,
                start=self.seg_start,
                end=end,
                bytes=size,
                keyframes=writer.keyframes,
                motion_score=self.seg_motion,
                path=path,
                sealed=key_id is not None,
                key_id=key_id,
            )
        )

    def _end(self) -> None:
        """Finish the segment in progress (end = its last frame's end) and any event."""
        if self.writer is not None:
            try:
                self._close_segment(self.seg_end)
            except StorageError as exc:
                log.error("camera %s: last segment lost: %s", self.rec.name, exc)
        if self.motion:
            self.rec._finish_event(self.seg_end if self.seg_end else self.rec.clock())
            self._set_full(False)

    # -- motion --------------------------------------------------------------------------

    def _set_full(self, on: bool) -> None:
        if self.full == on:
            return
        self.full = on
        assert self.decoder is not None
        self.decoder.set_keyframes_only(not on)
        with self.rec._lock:
            self.rec._mode = "full" if on else "keyframes"

    def _sense(self, pkt: Any, t: float, key: bool) -> None:
        if key:
            self.gop_prev = self.gop_cur
            self.gop_cur = [(pkt, t)]
        else:
            self.gop_cur.append((pkt, t))
        decoder = self.decoder
        assert decoder is not None
        if not self.full:
            if not key:
                return  # quiet: non-key packets never reach the decoder
            for frame in decoder.decode(pkt):
                self._observe(frame, t, refine=True)
            return
        for frame in decoder.decode(pkt):
            ft = t if frame.pts is None else self.anchor + frame.pts * self.vtb - self.ref
            if ft + 1e-6 >= self.next_sample:
                every = self.sample_every
                self.next_sample = max(self.next_sample + every, ft + 0.5 * every)
                self._observe(frame, ft, refine=False)

    def _observe(self, frame: Any, t: float, *, refine: bool) -> None:
        detector = self.detector
        assert detector is not None
        gray = to_small_gray(frame, self.gray_w)
        if gray.shape != (detector.height, detector.width):
            # The camera changed resolution mid-stream: start a background at the new size.
            m = self.rec.cam.motion
            detector = self.detector = MotionDetector(
                self.rec._motion_params,
                gray.shape[0],
                gray.shape[1],
                masks=m.masks,
                zones=self.rec.cam.zones,
            )
        result = detector.update(gray)
        if result.score > self.seg_motion:
            self.seg_motion = result.score
        rec = self.rec
        hint = None
        if result.moving and not rec._tracker.is_open and refine:
            hint = self._refine_start(t)
        changes = rec._tracker.observe(t, result, start_hint=hint)
        if changes:
            rec._apply(changes, frame)
        if rec._tracker.is_open:
            if not self.full:
                self._set_full(True)
                self.next_sample = t + self.sample_every
        elif self.full:
            self._set_full(False)

    @staticmethod
    def _gop_frames(decoder: Decoder, gop: list[tuple[Any, float]]) -> Iterator[Any]:
        for pkt, _ in gop:
            yield from decoder.decode(pkt)
        yield from decoder.flush()

    def _refine_start(self, t_key: float) -> float | None:
        """Earliest frame of the previous GOP that differs from the background, or None."""
        gop = self.gop_prev
        if not gop or not gop[0][0].is_keyframe:
            return None
        assert self.detector is not None
        decoder = Decoder(self.source.codec_context)
        times = sorted(ft for _, ft in gop)  # presentation order of the GOP's frames
        next_at = times[0] if times else t_key
        # Decode frame by frame and stop at the first moving one: holding the whole GOP
        # decoded cost ~180 ms and ~90 MB per event start at 720p (bench/cameras.py).
        decoded = 0
        for frame in self._gop_frames(decoder, gop):
            if decoded >= len(times):
                break
            ft = times[decoded]
            decoded += 1
            if ft + 1e-6 < next_at:
                continue
            next_at = ft + self.sample_every
            gray = to_small_gray(frame, self.gray_w)
            if gray.shape != (self.detector.height, self.detector.width):
                return None  # that GOP was at another resolution
            result: MotionResult = self.detector.peek(gray)
            if result.moving:
                return ft
        return None
