"""Live view: follow a camera's segment in progress and hand out its fragments as they land.

The recorder writes each ~10 s segment as fragmented MP4 to ``<media>/<camera>/<YYYY-MM-DD>/
<HH>/<start>.mp4.part`` (:func:`homewarden.services.recorder.segment_relpath`): ``ftyp`` +
``moov`` first, then one ``moof`` + ``mdat`` fragment per GOP, each flushed to the file when
the next keyframe arrives (:mod:`homewarden.media.segment_writer`); the file is renamed to
``.mp4`` when the segment closes and the next ``.part`` begins. A live view is therefore a
tail of those files (:class:`LiveFeed`):

1. open the newest ``.part`` and send its init segment with its *newest* complete fragment
   (not its first: that one can be ~10 s old);
2. send every further complete fragment as it appears; a fragment cut short (being written)
   waits for the rest;
3. when the file is renamed (or deleted by retention) read what is left through the open
   handle, then follow the next ``.part`` and send its init segment again (codec parameters
   may have changed; the browser appends in MSE ``sequence`` mode, so timestamps restarting
   at 0 in each file do not matter).

Latency from camera to viewer is about one GOP (a fragment is complete only when the next
keyframe arrives) plus :data:`POLL_SECONDS`.

A camera with no fresh ``.part`` within :data:`WAIT_SECONDS`, or whose file stops growing for
:data:`OFFLINE_SECONDS` with no next one, is offline: :class:`FootageUnavailableError` says
since when and why (the open gap the recorder recorded). Every opened live view and every
snapshot served is an entry of the audit log (snapshots at most one per viewer, camera and
:data:`SNAPSHOT_AUDIT_SECONDS`, so a page refreshing every 2 s does not flood the log).

Sealed footage (``storage.sealed``, DESIGN.md flow 8, issue 6): the segment being recorded is
plaintext for its ~10 s (the recorder seals it when it closes), written to a private
directory on the memory file system, ``<memory root>/homewarden-<uid>-<hash>/live/<camera>/
<start>.mp4.part`` (:func:`homewarden.services.recorder.live_parts_dir`; never on the disk),
where this process finds it by the same deterministic name when the recorder runs on this
machine (a thread, a worker process, a ``--role recorder`` node); a recorder on another
machine writes it to that machine's memory, so its live view is offline here (the latest
frame then comes from its newest sealed segment). A recorder without a usable memory file
system writes it to the media dir as before, so both places are followed. Reading it needs no
key. The live view and the latest frame therefore check the viewer's keys themselves
(:meth:`LiveService.require_keys`), by the rule playback follows: the viewer's session must
hold the household's *current* key version unlocked in this process, the version the footage
being recorded is sealed to when it closes. No session keys (an API token, a session never
unlocked here, a restart since the login) is :class:`~homewarden.errors.KeysLockedError`
(HTTP 401, WebSocket 4423: "sign in again to unlock the household keys"); a person who does
not hold the current version (their access revoked and the key rotated, or their grant still
waiting for an owner's unlock) is :class:`~homewarden.errors.KeyUnavailableError` (403 /
4403). With sealing off nothing of this applies.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from homewarden.config import Settings, SettingsSource, settings_reader
from homewarden.domain.audit import Actor, AuditTag
from homewarden.domain.permissions import Access, CameraAccess, Principal, camera_access
from homewarden.errors import (
    AuditUnavailableError,
    DatabaseError,
    FootageUnavailableError,
    KeysLockedError,
    KeyUnavailableError,
    MediaError,
    NotFoundError,
    SealedDataError,
    StorageError,
)
from homewarden.media import fmp4
from homewarden.services.audit import AuditLog
from homewarden.services.recorder import live_parts_dir
from homewarden.services.sealed_footage import (
    SIGN_IN_AGAIN,
    KeySource,
    RecordingKeySource,
    StoredRecordingKeys,
    open_sealed_segment,
)
from homewarden.store.index import Index
from homewarden.store.memory_dir import memory_root
from homewarden.store.records import SegmentRecord
from homewarden.timefmt import utc_text

#: How often a feed looks for new fragments (s); adds at most this much latency.
POLL_SECONDS = 0.05
#: How long a new feed waits for a camera's first fresh ``.part`` file (s): a recorder that
#: has just (re)connected needs its settling second and a first GOP.
WAIT_SECONDS = 10.0
#: A segment file that has not grown for this long, with no next one, means the camera is
#: offline (s). Longer than any sane GOP, shorter than a viewer's patience.
OFFLINE_SECONDS = 15.0
#: A ``.part`` older than this (mtime) when a feed starts is a leftover, not live footage (s).
FRESH_SECONDS = OFFLINE_SECONDS
#: A file not grown for this long makes the feed check for a newer ``.part`` (s): the
#: recorder lost it (a restart) and writes another.
STALE_SWITCH_SECONDS = 3.0
#: At most one snapshot audit entry per viewer and camera in this many seconds.
SNAPSHOT_AUDIT_SECONDS = 60.0
#: Reason written into the audit entry of a live view.
LIVE_REASON = "live view"

_PART = ".mp4.part"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR = re.compile(r"\d{2}")


@dataclass(frozen=True, slots=True)
class LiveChunk:
    """One message of a live feed.

    Attributes:
        kind: ``init`` (``ftyp`` + ``moov`` of a segment file, sent before its first
            fragment) or ``fragment`` (one ``moof`` + ``mdat``, starting on a keyframe).
        data: the bytes, to append to an MSE ``SourceBuffer`` as they are.
        segment: the segment file's name (``<start>.mp4.part``).
        codec: RFC 6381 ``codecs`` of the segment (e.g. ``avc1.64001f``).
        media_start: UTC epoch seconds of the first frame (init: the segment's start).
        duration: seconds of video in the fragment (init: 0).
    """

    kind: Literal["init", "fragment"]
    data: bytes
    segment: str
    codec: str
    media_start: float
    duration: float


def _part_start(name: str) -> float | None:
    if not name.endswith(_PART):
        return None
    try:
        return float(name[: -len(_PART)])
    except ValueError:
        return None


class _Tail:
    """One segment file being followed through an open handle (which keeps reading the same
    file after it is renamed to ``.mp4`` or unlinked by retention)."""

    def __init__(self, path: Path, start: float, *, newest_only: bool) -> None:
        self.path = path
        self.start = start
        self.fh: BinaryIO = path.open("rb")
        self.newest_only = newest_only  # start at the newest fragment (a feed's first file)
        self.pos = 0  # offset of the next box not yet consumed
        self.size_seen = -1
        self.init: bytes | None = None
        self.init_sent = False
        self.codec = ""
        self.video_track = 0
        self.timescale = 1
        self.trex: dict[int, int] = {}
        self.grown_at = time.monotonic()

    def close(self) -> None:
        self.fh.close()

    def _read(self, pos: int) -> bytes:
        self.fh.seek(pos)
        return self.fh.read()

    def _load_init(self) -> bool:
        data = self._read(0)
        boxes, _ = fmp4.complete_boxes(data)
        moov = next((b for b in boxes if b.type == "moov"), None)
        if moov is None:
            return False
        init = data[: moov.end]
        tracks = fmp4.tracks(init)
        video = next((t for t in tracks if t.handler == "vide"), None)
        if video is None:
            raise fmp4.Fmp4Error(f"{self.path.name} has no video track")
        self.init = init
        self.codec = fmp4.codecs(init)
        self.video_track = video.track_id
        self.timescale = video.timescale or 1
        self.trex = fmp4.trex_defaults(init)
        self.pos = moov.end
        return True

    def poll(self) -> list[LiveChunk]:
        """The chunks that became complete since the last call (possibly none).

        Raises:
            OSError: the file cannot be read; Fmp4Error: it is not fragmented MP4.
        """
        size = os.fstat(self.fh.fileno()).st_size
        if size == self.size_seen:
            return []
        self.size_seen = size
        self.grown_at = time.monotonic()
        if self.init is None and not self._load_init():
            return []
        data = self._read(self.pos)
        boxes, _ = fmp4.complete_boxes(data, base=self.pos)
        fragments: list[tuple[bytes, fmp4.FragmentInfo]] = []
        moof: fmp4.Box | None = None
        consumed = self.pos
        for box in boxes:
            if box.type == "moof":
                moof = box
            elif box.type == "mdat" and moof is not None:
                raw = data[moof.offset - self.pos : box.end - self.pos]
                fragments.append((raw, fmp4.fragment_info(raw[: moof.size], self.trex)))
                moof = None
                consumed = box.end
            elif moof is None:
                consumed = box.end  # mfra, free, sidx: nothing to send
        self.pos = consumed
        return self._chunks(fragments)

    def _chunks(self, fragments: list[tuple[bytes, fmp4.FragmentInfo]]) -> list[LiveChunk]:
        chunks: list[LiveChunk] = []
        track = self.video_track
        if not self.init_sent:
            usable = [i for i, (_, info) in enumerate(fragments) if info.starts_with_sync[track]]
            if not usable:
                return []  # wait for a fragment that starts on a keyframe
            fragments = fragments[usable[-1] if self.newest_only else usable[0] :]
            assert self.init is not None
            chunks.append(LiveChunk("init", self.init, self.path.name, self.codec, self.start, 0))
            self.init_sent = True
        for raw, info in fragments:
            start = self.start + info.decode_time.get(track, 0) / self.timescale
            duration = info.duration.get(track, 0) / self.timescale
            chunks.append(LiveChunk("fragment", raw, self.path.name, self.codec, start, duration))
        return chunks


class LiveFeed:
    """The live feed of one camera; :meth:`poll` returns what is new without blocking.

    Use :meth:`LiveService.stream` or :meth:`LiveService.astream` rather than this directly.
    Call :meth:`close` when done (the wrappers do).
    """

    def __init__(self, service: LiveService, camera: str) -> None:
        self._service = service
        self.camera = camera
        self._dir = service.media_dir / camera
        self._tail: _Tail | None = None
        self._after: float | None = None  # start of the last file followed
        self._waiting_since = time.monotonic()
        self._looked_at = 0.0

    def close(self) -> None:
        """Release the open file."""
        if self._tail is not None:
            self._tail.close()
            self._tail = None

    def poll(self) -> list[LiveChunk]:
        """Chunks that became available since the last call, in order (possibly none).

        Raises:
            FootageUnavailableError: the camera is offline (see the module docstring).
        """
        now = time.monotonic()
        tail = self._tail
        if tail is None:
            tail = self._open_next(now)
            if tail is None:
                return []
        try:
            chunks = tail.poll()
        except (OSError, fmp4.Fmp4Error):
            chunks = []
            self._finish(tail)  # a damaged or vanished file: go on with the next one
            return chunks
        if chunks:
            return chunks
        if not tail.path.exists():
            # Renamed when the segment closed (or deleted): what the recorder wrote last may
            # have landed after the read above, so read once more before moving on.
            try:
                chunks = tail.poll()
            except (OSError, fmp4.Fmp4Error):
                chunks = []
            self._finish(tail)
            return chunks
        idle = now - tail.grown_at
        if idle >= STALE_SWITCH_SECONDS and now - self._looked_at >= 1.0:
            self._looked_at = now
            newer = self._service.newest_part(self.camera, after=tail.start)
            if newer is not None:
                self._finish(tail)
                return []
        if idle >= self._service.offline_seconds:
            raise FootageUnavailableError(self._service.offline_message(self.camera))
        return []

    def _finish(self, tail: _Tail) -> None:
        tail.close()
        self._tail = None
        self._after = tail.start
        self._waiting_since = time.monotonic()

    def _open_next(self, now: float) -> _Tail | None:
        if now - self._looked_at >= POLL_SECONDS:
            self._looked_at = now
            found = self._service.newest_part(
                self.camera, after=self._after, fresh=self._after is None
            )
            if found is not None:
                path, start = found
                try:
                    self._tail = _Tail(path, start, newest_only=self._after is None)
                except OSError:
                    return None  # renamed between listing and opening: look again
                return self._tail
        service = self._service
        limit = service.wait_seconds if self._after is None else service.offline_seconds
        if now - self._waiting_since >= limit:
            raise FootageUnavailableError(self._service.offline_message(self.camera))
        return None


class LiveService:
    """Live view and latest snapshot of cameras (see the module docstring).

    Args:
        settings: for the media dir, cameras and their households (a
            :class:`~homewarden.config.SettingsHolder` when cameras change at run time).
        index: for the camera list and the open gaps quoted when a camera is offline.
        clock: now as UTC epoch seconds (audit entries, the snapshot audit window).
        audit: the audit log every live view and snapshot is written to.
        wait_seconds, offline_seconds: :data:`WAIT_SECONDS` and :data:`OFFLINE_SECONDS`
            (shorter in tests).
        current_keys: where a household's current key version is read under
            ``storage.sealed`` (:meth:`require_keys`); default the index's household key
            tables (:class:`~homewarden.services.sealed_footage.StoredRecordingKeys`).
    """

    def __init__(
        self,
        settings: SettingsSource,
        index: Index,
        clock: Callable[[], float] = time.time,
        *,
        audit: AuditLog,
        wait_seconds: float = WAIT_SECONDS,
        offline_seconds: float = OFFLINE_SECONDS,
        current_keys: RecordingKeySource | None = None,
    ) -> None:
        self._read_settings = settings_reader(settings)
        self._current_keys = current_keys or StoredRecordingKeys(index)
        self.wait_seconds = wait_seconds
        self.offline_seconds = offline_seconds
        self._index = index
        self._clock = clock
        self._audit = audit
        self.media_dir = self._settings.media_dir
        self._memory_root = memory_root()  # where sealed recorders write, if on this machine
        self._snap_lock = threading.Lock()
        self._snap_logged: dict[tuple[str, str, str], float] = {}
        self._jpeg_cache: dict[str, tuple[tuple[Path, int, int], tuple[bytes, float]]] = {}

    @property
    def _settings(self) -> Settings:
        # Read on each use: cameras change at run time (config.SettingsHolder).
        return self._read_settings()

    # cameras and access

    def require_camera(self, camera: str) -> None:
        """Raise unless ``camera`` is configured or has footage in the index.

        Raises:
            NotFoundError: an unknown camera.
        """
        if camera in self._settings.cameras or camera in self._index.camera_names():
            return
        raise NotFoundError(f"no camera named {camera!r}")

    def authorize(self, principal: Principal, camera: str) -> Access:
        """Whether ``principal`` may watch ``camera`` now
        (:func:`homewarden.domain.permissions.camera_access`), and on what ground.

        Raises:
            NotFoundError: an unknown camera, or one of another household.
            PermissionDeniedError: a member without a grant, staff without a support grant.
        """
        access = camera_access(
            principal, self._settings.camera_household(camera), camera, self._clock()
        )
        self.require_camera(camera)
        return access

    def require_keys(self, camera: str, keys: KeySource | None) -> None:
        """Under ``storage.sealed``, raise unless ``keys`` (the viewer's session) opens the
        current key version of ``camera``'s household: the live view and the latest frame
        read the plaintext segment being recorded, which is sealed to that version when it
        closes, so only a viewer who could play it back then may watch it now (see the
        module docstring). Nothing with sealing off.

        Raises:
            KeysLockedError: ``keys`` is None, or the session holds no unlocked keys here.
            KeyUnavailableError: the viewer holds no seal of the current version (revoked
                and rotated, a grant still pending), or the household has no key yet.
        """
        settings = self._settings
        if not settings.storage.sealed:
            return
        household = settings.camera_household(camera)
        if keys is None:
            raise KeysLockedError(
                f"{SIGN_IN_AGAIN}: camera {camera}'s footage is sealed; its live view opens "
                "only in a session signed in with its password on this server"
            )
        try:
            key_id, _public = self._current_keys.recording_key(household)
        except NotFoundError as exc:
            raise KeyUnavailableError(f"camera {camera}'s footage is sealed: {exc}") from exc
        keys(household, bytes(key_id))

    def open_view(self, camera: str, *, actor: Actor, access: Access) -> None:
        """Account for a live view of ``camera`` being opened by ``actor`` (one audit entry,
        ``footage:live:view``, at the moment it opens; written before anything is sent).

        Raises:
            AuditUnavailableError: the entry cannot be written (nothing may be sent).
            LogTamperedError: the audit log cannot be extended.
        """
        now = self._clock()
        self._account(AuditTag.FOOTAGE_LIVE_VIEW, actor, _reason(LIVE_REASON, access), camera, now)

    # the feed

    def feed(self, camera: str) -> LiveFeed:
        """A non-blocking feed of ``camera`` (see :class:`LiveFeed`).

        Raises:
            NotFoundError: an unknown camera.
            FootageUnavailableError: the camera is disabled.
        """
        self.require_camera(camera)
        cam = self._settings.cameras.get(camera)
        if cam is not None and not cam.enabled:
            raise FootageUnavailableError(f"camera {camera} is disabled: there is no live view")
        return LiveFeed(self, camera)

    def stream(self, camera: str) -> Iterator[LiveChunk]:
        """The live feed of ``camera`` as a blocking generator: an init chunk, then fragments,
        an init chunk again at each new segment file, ... until the camera goes offline.

        Raises:
            NotFoundError: an unknown camera.
            FootageUnavailableError: disabled or offline (no fresh segment within
                :data:`WAIT_SECONDS`, or none growing for :data:`OFFLINE_SECONDS`).
        """
        feed = self.feed(camera)
        try:
            while True:
                chunks = feed.poll()
                if not chunks:
                    time.sleep(POLL_SECONDS)
                yield from chunks
        finally:
            feed.close()

    async def astream(self, camera: str) -> AsyncIterator[LiveChunk]:
        """:meth:`stream` for asyncio: file reads run on a worker thread.

        Raises:
            as :meth:`stream`.
        """
        async for chunk in self.afollow(self.feed(camera)):
            yield chunk

    async def afollow(self, feed: LiveFeed) -> AsyncIterator[LiveChunk]:
        """Follow a :meth:`feed` made beforehand (so its checks run where the caller likes);
        closes it at the end.

        Raises:
            FootageUnavailableError: the camera went offline.
        """
        try:
            while True:
                chunks = await asyncio.to_thread(feed.poll)
                if not chunks:
                    await asyncio.sleep(POLL_SECONDS)
                for chunk in chunks:
                    yield chunk
        finally:
            feed.close()

    def newest_part(
        self, camera: str, *, after: float | None = None, fresh: bool = False
    ) -> tuple[Path, float] | None:
        """The newest ``.part`` file of ``camera`` (path, start) that starts after ``after``;
        with ``fresh``, only one written to within :data:`FRESH_SECONDS`. Looks only in the
        two newest hour directories (a segment may have begun in the previous hour), and
        under ``storage.sealed`` in the camera's directory on the memory file system."""
        best: tuple[Path, float] | None = None
        for hour_dir in self._part_dirs(camera):
            try:
                names = os.listdir(hour_dir)
            except OSError:
                continue
            for name in names:
                start = _part_start(name)
                if start is None or (after is not None and start <= after):
                    continue
                if best is None or start > best[1]:
                    best = (hour_dir / name, start)
        if best is not None and fresh:
            try:
                if time.time() - best[0].stat().st_mtime > FRESH_SECONDS:
                    return None
            except OSError:
                return None
        return best

    def _part_dirs(self, camera: str) -> list[Path]:
        dirs = self._newest_hour_dirs(camera, 2)
        root = self._memory_root
        if root is None or not self._settings.storage.sealed:
            return dirs
        try:
            memory = live_parts_dir(root, self.media_dir, camera, create=False)
        except StorageError:
            return dirs  # not this user's private directory: never read from it
        return dirs if memory is None else [memory, *dirs]

    def _newest_hour_dirs(self, camera: str, count: int) -> list[Path]:
        found: list[Path] = []
        root = self.media_dir / camera
        try:
            days = sorted((d for d in os.listdir(root) if _DAY.fullmatch(d)), reverse=True)
        except OSError:
            return found
        for day in days:
            try:
                hours = sorted(
                    (h for h in os.listdir(root / day) if _HOUR.fullmatch(h)), reverse=True
                )
            except OSError:
                continue
            for hour in hours:
                found.append(root / day / hour)
                if len(found) == count:
                    return found
        return found

    def offline_message(self, camera: str) -> str:
        """Why ``camera`` has no live footage, in plain words, with since when."""
        cam = self._settings.cameras.get(camera)
        if cam is not None and not cam.enabled:
            return f"camera {camera} is disabled: there is no live view"
        gaps = self._index.open_gaps(camera)
        if gaps:
            gap = max(gaps, key=lambda g: g.start)
            why = gap.reason + (f": {gap.detail}" if gap.detail else "")
            return f"camera {camera} is offline since {utc_text(gap.start)} ({why})"
        last = self._index.last_segment_end(camera)
        if last is not None:
            return f"camera {camera} is not recording: its newest footage ends at {utc_text(last)}"
        return f"camera {camera} has no footage yet: it is not recording"

    # snapshots

    def latest_jpeg(self, camera: str, keys: KeySource | None = None) -> tuple[bytes, float]:
        """A JPEG of the newest keyframe of ``camera``, and its UTC time (epoch seconds): the
        last complete fragment of the segment in progress, else of the newest finished one.
        Under ``storage.sealed`` ``keys`` (the viewer's unlocked session) must open the
        household's current key version first (:meth:`require_keys`), even for the
        plaintext segment in progress; a finished segment that is sealed is opened in memory
        with them; one that does not open (tampered) is logged by the opener and skipped.

        Raises:
            NotFoundError: an unknown camera.
            KeysLockedError, KeyUnavailableError: sealed footage and ``keys`` does not open
                the current key version (see :meth:`require_keys`).
            FootageUnavailableError: no footage at all, or none that decodes.
        """
        self.require_camera(camera)
        self.require_keys(camera, keys)
        candidates: list[tuple[Path, float, SegmentRecord | None]] = []
        part = self.newest_part(camera)
        if part is not None:
            candidates.append((*part, None))
        last = self._index.last_segment_end(camera)
        if last is not None:
            for seg in reversed(self._index.segments(camera, since=last - 1.0)):
                if seg.sealed and keys is None:
                    continue
                candidates.append((self.media_dir / seg.path, seg.start, seg))
        for path, start, sealed in candidates:
            try:
                st = path.stat()
            except OSError:
                continue  # renamed or deleted meanwhile
            key = (path, st.st_size, st.st_mtime_ns)
            cached = self._jpeg_cache.get(camera)
            if cached is not None and cached[0] == key:
                if sealed is not None and keys is not None:  # this viewer must hold its key
                    keys(self._settings.camera_household(camera), sealed.key_id or b"")
                return cached[1]
            if sealed is not None:
                try:
                    data = open_sealed_segment(
                        self.media_dir, sealed, self._settings.camera_household(camera), keys
                    )
                except (SealedDataError, StorageError):
                    continue
                found = _newest_keyframe_in(data, start)
            else:
                found = _newest_keyframe(path, start)
            if found is not None:
                self._jpeg_cache[camera] = (key, found)  # pages refresh every 2 s
                return found
        raise FootageUnavailableError(self.offline_message(camera))

    def snapshot(
        self,
        camera: str,
        *,
        actor: Actor,
        access: Access,
        reason: str,
        keys: KeySource | None = None,
    ) -> tuple[bytes, float]:
        """:meth:`latest_jpeg` for ``actor``, audited as ``footage:snapshot:view`` (at most
        one entry per actor and camera in :data:`SNAPSHOT_AUDIT_SECONDS`; the entry is
        written before the image is returned).

        Raises:
            as :meth:`latest_jpeg`; AuditUnavailableError: the entry cannot be written.
        """
        image, at = self.latest_jpeg(camera, keys)
        key = (str(actor.kind), actor.id, camera)
        now = self._clock()
        with self._snap_lock:
            logged = self._snap_logged.get(key)
            due = logged is None or not 0 <= now - logged < SNAPSHOT_AUDIT_SECONDS
            if due:
                self._account(
                    AuditTag.FOOTAGE_SNAPSHOT_VIEW, actor, _reason(reason, access), camera, at
                )
                self._snap_logged[key] = now
                if len(self._snap_logged) > 10_000:  # forget old viewers
                    cutoff = now - SNAPSHOT_AUDIT_SECONDS
                    self._snap_logged = {k: v for k, v in self._snap_logged.items() if v > cutoff}
        return image, at

    def _account(self, tag: AuditTag, actor: Actor, reason: str, camera: str, at: float) -> None:
        try:
            self._audit.append(
                tag,
                actor,
                reason,
                camera=camera,
                start=at,
                end=at,
                household=self._settings.camera_household(camera),
            )
        except DatabaseError as exc:
            raise AuditUnavailableError(
                f"footage not served: its access cannot be written to the audit log ({exc})"
            ) from exc


def _reason(reason: str, access: Access) -> str:
    """The audit reason with the ground of access (a support grant names its id)."""
    if access.ground is CameraAccess.SUPPORT_GRANT:
        return f"{reason}; support grant {access.support_grant}"
    return f"{reason}; {access.ground}"


def _newest_keyframe(path: Path, start: float) -> tuple[bytes, float] | None:
    """JPEG and UTC time of the first frame of the last complete fragment of ``path`` that
    starts on a keyframe, or None (no such fragment, unreadable, undecodable)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _newest_keyframe_in(data, start)


def _newest_keyframe_in(data: bytes, start: float) -> tuple[bytes, float] | None:
    """:func:`_newest_keyframe` of a segment's bytes in memory."""
    try:
        boxes, _ = fmp4.complete_boxes(data)
        moov = next((b for b in boxes if b.type == "moov"), None)
        if moov is None:
            return None
        init = data[: moov.end]
        video = next(t for t in fmp4.tracks(init) if t.handler == "vide")
        trex = fmp4.trex_defaults(init)
        for moof, mdat in reversed(list(itertools.pairwise(boxes))):
            if moof.type != "moof" or mdat.type != "mdat":
                continue
            info = fmp4.fragment_info(data[moof.offset : moof.end], trex)
            if not info.starts_with_sync.get(video.track_id):
                continue
            jpeg = fmp4.keyframe_jpeg(init, data[moof.offset : mdat.end])
            at = start + info.decode_time.get(video.track_id, 0) / (video.timescale or 1)
            return jpeg, at
    except (OSError, StopIteration, fmp4.Fmp4Error, MediaError):
        return None
    return None
