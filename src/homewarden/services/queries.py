"""Read use-cases over the index and the live recorder statuses.

The JSON API (``homewarden.web``) and the read commands of the CLI both call these; neither
queries the index directly. Every use-case that hands out footage (a clip, a snapshot) appends
an entry to the audit log - who, which camera and time range, why - before it returns, and
fails (serving nothing) when the entry cannot be written. Every time is float UTC epoch
seconds, every size bytes. Inputs a caller typed (times, cursors, spans) are checked here
and rejected with :class:`InvalidRequestError`; unknown cameras and events raise
:class:`NotFoundError`.

Scoping: every use-case takes ``viewer``, the :class:`~homewarden.domain.permissions.Principal`
asking (None: the local operator at the CLI, who sees everything). Which cameras a viewer sees
is :func:`homewarden.domain.permissions.camera_access` at the Queries clock: lists keep only
the viewer's visible cameras; a camera or event of another household is
:class:`NotFoundError` (so names and ids cannot be probed); a member without a grant for the
camera, and staff support without a support grant in force, get
:class:`PermissionDeniedError`. Footage audit entries carry the camera's household and the
ground of the access in their reason (``"api; support grant 7"``), so every use of a support
grant is on the record.

Sealed footage (``storage.sealed``, :mod:`homewarden.services.sealed_footage`): clips and
snapshots of sealed files open with ``keys``, the household keys of the caller's unlocked
session, in memory; the clip is composed in a private directory of the memory file system
(:data:`MEMORY_DIR`, removed at once) and kept only in this process's memory, in a cache of
:data:`SEALED_CLIP_CACHE_BYTES` (least recently used evicted first, each clip for
:data:`CLIP_CACHE_SECONDS` after its last use; :attr:`ClipFile.sealed`, served by
:meth:`Queries.clip_chunks`), so no plaintext clip is written to disk and a player's range
requests do not compose it again. One cipher pass (opening the segments) instead of three
(open, seal into a disk cache, open to serve): ``bench/sealed_clip.py`` measured 1.13-1.16x
the plaintext path (issue 6's target: 1.2x), 1.3-1.5x before.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from homewarden import __version__
from homewarden.config import Settings, SettingsSource, settings_reader
from homewarden.domain import permissions
from homewarden.domain.audit import Actor, AuditTag
from homewarden.domain.permissions import Access, CameraAccess, Principal
from homewarden.domain.retention import disk_floor
from homewarden.errors import (
    AuditUnavailableError,
    DatabaseError,
    InvalidRequestError,
    KeysLockedError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)
from homewarden.media.clip import ClipInfo, compose_clip
from homewarden.services.audit import AuditLog
from homewarden.services.sealed_footage import (
    SEALED_SUFFIX,
    SIGN_IN_AGAIN,
    KeySource,
    open_sealed_segment,
    open_sealed_snapshot,
)
from homewarden.store.index import Index
from homewarden.store.memory_dir import SHM_DIR, memory_root
from homewarden.store.records import EventRecord, GapRecord, SegmentRecord
from homewarden.timefmt import utc_text

#: Longest span one clip may cover. A clip is remuxed into a file before it is served; an
#: hour of a 4 Mbit/s camera is ~1.8 GB, which is as much as we want to write per request.
MAX_CLIP_SECONDS = 3600.0

#: Composed clips are kept this long so a player's follow-up Range requests (seeking) reuse
#: the same file instead of remuxing again.
CLIP_CACHE_SECONDS = 600.0

#: Largest page of events one call returns.
MAX_EVENT_PAGE = 500

#: Default span of the per-hour summary when ``since`` is not given: one day.
DEFAULT_SUMMARY_SECONDS = 86400.0

#: First instant no caller's time may reach: 10000-01-01T00:00:00Z (UTC epoch seconds).
#: Python's datetime ends with year 9999, so a later time cannot even be named in a message;
#: no camera has recorded there either.
MAX_TIME = 253_402_300_800.0

#: Largest id a caller may name: a signed 64-bit integer, the widest SQLite and PostgreSQL
#: store (a larger one cannot be bound as a query parameter at all).
MAX_ID = 2**63 - 1

#: Largest id an event can have: ``events.id`` is a SQL ``INTEGER`` (migration 0001), signed
#: 32-bit on PostgreSQL. Ids count up from 1, so a larger one names no event on either backend.
MAX_EVENT_ID = 2**31 - 1

#: A gap that ended less than this many seconds ago still makes :meth:`Queries.health`
#: "degraded": footage was just lost (a disk-full outage that has only now ended, a camera that
#: came back), and a monitor polling every few minutes must not miss it.
RECENT_GAP_SECONDS = 600.0


def parse_time(value: str | float, *, name: str = "time") -> float:
    """Parse a caller's time: float UTC epoch seconds, or ISO 8601.

    ISO 8601 without an offset is read as UTC (never the server's local zone, so the same
    string means the same instant on every machine). ``name`` is the parameter's name for the
    error message.

    Raises:
        InvalidRequestError: neither a number nor ISO 8601, or not in
            ``[0, MAX_TIME)`` (1970-01-01 up to the end of 9999, UTC); the message names
            ``name``.
    """
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidRequestError(
                    f"{name}={value!r} is neither epoch seconds nor an ISO 8601 time "
                    "(e.g. 1700000000 or 2023-11-14T22:13:20Z)"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            number = parsed.timestamp()
    if not (math.isfinite(number) and 0 <= number < MAX_TIME):
        raise InvalidRequestError(
            f"{name}={value!r} is not a time between 1970-01-01 and 9999-12-31 (UTC)"
        )
    return number


def parse_span(
    since: str | float | None, until: str | float | None
) -> tuple[float | None, float | None]:
    """Parse an optional ``since``/``until`` pair.

    Raises:
        InvalidRequestError: a bad time, or ``until`` not after ``since``.
    """
    lo = parse_time(since, name="since") if since is not None else None
    hi = parse_time(until, name="until") if until is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise InvalidRequestError(f"until ({hi}) must be after since ({lo})")
    return lo, hi


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (camera URLs often embed credentials)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class CameraStatusLike(Protocol):
    """What the API shows of a recorder's live status (``services.recorder.CameraStatus``).

    Times are UTC epoch seconds; ``fps_in`` frames per second; ``bitrate`` bits per second.
    """

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def connected_since(self) -> float | None: ...
    @property
    def last_packet_at(self) -> float | None: ...
    @property
    def fps_in(self) -> float: ...
    @property
    def bitrate(self) -> float: ...
    @property
    def decode_mode(self) -> str: ...
    @property
    def segments_written(self) -> int: ...
    @property
    def fps_recorded(self) -> float: ...
    @property
    def cpu_seconds(self) -> float: ...
    @property
    def gaps_open(self) -> int: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def next_retry_at(self) -> float | None: ...


#: Returns the live status of every running recorder, keyed by camera name.
StatusSource = Callable[[], Mapping[str, CameraStatusLike]]


@dataclass(frozen=True, slots=True)
class CameraView:
    """A camera as the API shows it: configuration, live status (when the recorder runs in
    this process) and index facts. ``state`` is the recorder's state, or ``"not-running"``
    / ``"disabled"`` when there is no recorder; ``url`` has its password redacted;
    ``recorded_bytes`` and ``last_recorded_at`` (end of the newest segment) come from the
    index; ``gaps_open`` counts outages going on now, ``gaps_total`` every outage the index
    holds for the camera (open or closed); ``fps`` is frames per second in, ``bitrate`` bits
    per second, ``fps_recorded`` frames per second written into segments, ``cpu_seconds``
    the recorder thread's CPU seconds since it started."""

    name: str
    url: str
    enabled: bool
    configured: bool
    state: str
    connected: bool
    connected_since: float | None
    last_packet_at: float | None
    fps: float | None
    bitrate: float | None
    decode_mode: str | None
    segments_written: int | None
    gaps_open: int
    gaps_total: int
    last_error: str | None
    next_retry_at: float | None
    recorded_bytes: int
    last_recorded_at: float | None
    fps_recorded: float | None = None
    cpu_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class RecordingView:
    """One indexed segment: ``[start, end)`` UTC epoch seconds, ``bytes`` on disk."""

    id: int
    camera: str
    start: float
    end: float
    duration: float
    bytes: int
    keyframes: int
    motion_score: float

    @classmethod
    def of(cls, seg: SegmentRecord) -> RecordingView:
        """From an index record."""
        return cls(
            id=seg.id,
            camera=seg.camera,
            start=seg.start,
            end=seg.end,
            duration=seg.duration,
            bytes=seg.bytes,
            keyframes=seg.keyframes,
            motion_score=seg.motion_score,
        )


@dataclass(frozen=True, slots=True)
class HourView:
    """Recorded seconds, bytes, segments and events in ``[hour_start, hour_end)`` of a camera."""

    camera: str
    hour_start: float
    hour_end: float
    recorded_seconds: float
    bytes: int
    segments: int
    events: int


@dataclass(frozen=True, slots=True)
class GapView:
    """An outage of ``camera``; ``end`` and ``duration`` are None while it lasts."""

    id: int
    camera: str
    start: float
    end: float | None
    duration: float | None
    reason: str
    detail: str

    @classmethod
    def of(cls, gap: GapRecord) -> GapView:
        """From an index record."""
        return cls(
            id=gap.id,
            camera=gap.camera,
            start=gap.start,
            end=gap.end,
            duration=None if gap.end is None else gap.end - gap.start,
            reason=gap.reason,
            detail=gap.detail,
        )


@dataclass(frozen=True, slots=True)
class EventView:
    """A motion or person event; ``end`` is None while it is open."""

    id: int
    camera: str
    start: float
    end: float | None
    label: str
    peak_score: float
    zones: list[str]
    has_snapshot: bool

    @classmethod
    def of(cls, ev: EventRecord) -> EventView:
        """From an index record."""
        return cls(
            id=ev.id,
            camera=ev.camera,
            start=ev.start,
            end=ev.end,
            label=ev.label,
            peak_score=ev.peak_score,
            zones=list(ev.zones),
            has_snapshot=ev.snapshot_path is not None,
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events, newest first; pass ``next_cursor`` back for the next page."""

    events: list[EventView]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class HealthView:
    """Health of the recorder (see :meth:`Queries.health`).

    ``status`` is ``"ok"`` or ``"degraded"``; ``reasons`` holds one plain sentence per
    problem (empty when ok). ``cameras_enabled`` counts cameras that should record (enabled
    in the config, or running), ``cameras_connected`` those of them with a live connection;
    ``gaps_open`` counts outages going on now. Sizes are bytes: ``disk_free_bytes`` is free
    space where the media lives (None when it cannot be read), ``disk_min_free_bytes`` the
    floor of the emergency guard below which the disk counts as low. ``time`` is UTC epoch
    seconds.
    """

    status: str
    reasons: list[str]
    version: str
    time: float
    cameras_configured: int
    cameras_enabled: int
    cameras_connected: int
    gaps_open: int
    media_bytes: int
    disk_free_bytes: int | None
    disk_min_free_bytes: int


@dataclass(frozen=True, slots=True)
class ClipFile:
    """A composed clip on disk; ``[start, end]`` (UTC epoch seconds) is what it really covers
    (inside the requested span), ``duration`` the presented seconds, ``bytes`` its size.
    ``sealed``: composed from sealed segments, the clip is only in this process's memory
    (``data``, the MP4 bytes; ``path`` is just its name, no file): serve it with
    :meth:`Queries.clip_chunks`, never as a file."""

    path: Path
    camera: str
    start: float
    end: float
    duration: float
    bytes: int
    sealed: bool = False
    data: builtins.bytes | None = field(default=None, repr=False, compare=False)


#: Name prefix of the private directories sealed clips are composed in (removed at once).
SEALED_CLIP_PREFIX = "sealed-"
#: Total plaintext bytes of clips of sealed footage kept in memory (least recently used
#: evicted first); a clip larger than this is served but not kept.
SEALED_CLIP_CACHE_BYTES = 256 * 1024 * 1024
#: Name prefix of the private directories of :data:`MEMORY_DIR` sealed clips are composed
#: in (removed at once; one left by a process that died composing is removed later).
MEMORY_CLIP_PREFIX = "homewarden-clip-"
#: A memory-backed file system (tmpfs on Linux) clips of sealed footage are composed in:
#: FFmpeg's ``faststart`` pass rereads its output by name, so it needs a path.
MEMORY_DIR = SHM_DIR  # the first choice of memory_root(); $XDG_RUNTIME_DIR the second
#: Bytes :meth:`Queries.clip_chunks` yields at a time.
CLIP_CHUNK_BYTES = 256 * 1024


@dataclass(slots=True)
class _MemoryClip:
    info: ClipInfo
    data: bytes
    used: float  # time.monotonic() of the last hand-out


def _remove_stale_dirs(parent: Path, prefix: str) -> None:
    """Remove ``parent``'s directories named ``prefix...`` and untouched for
    :data:`CLIP_CACHE_SECONDS` (left by a process that died composing a clip)."""
    cutoff = time.time() - CLIP_CACHE_SECONDS  # mtimes are real wall-clock time
    try:
        found = [d for d in parent.iterdir() if d.name.startswith(prefix)]
    except OSError:
        return
    for d in found:
        with contextlib.suppress(OSError):
            if d.is_dir() and not d.is_symlink() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)


def _no_statuses() -> Mapping[str, CameraStatusLike]:
    return {}


#: A player's byte-range requests of one clip are one viewing: audited once per actor and
#: span within this many seconds (a download is audited every time).
PLAYBACK_AUDIT_SECONDS = 300.0


class Queries:
    """Read use-cases over one :class:`Index` (see the module docstring).

    Args:
        index: a migrated index.
        settings: for the configured cameras and the media, snapshot and cache dirs; a
            :class:`~homewarden.config.SettingsHolder` when cameras change at run time.
        statuses: live recorder statuses (the runtime's recorders); none when no recorder
            runs in this process (CLI read commands).
        clock: returns now as UTC epoch seconds.
        audit: the audit log every footage access is written to (required: there is no way
            to serve footage unaccounted for).
        sealed_clip_cache_bytes: cap (bytes) of the in-memory cache of clips of sealed
            footage.
    """

    def __init__(
        self,
        index: Index,
        settings: SettingsSource,
        statuses: StatusSource = _no_statuses,
        clock: Callable[[], float] = time.time,
        *,
        audit: AuditLog,
        sealed_clip_cache_bytes: int = SEALED_CLIP_CACHE_BYTES,
    ) -> None:
        self._index = index
        self._audit = audit
        self._read_settings = settings_reader(settings)
        self._statuses = statuses
        self._clock = clock
        self._clip_dir = self._settings.cache_dir / "clips"
        self._clip_lock = threading.Lock()
        self._clip_infos: dict[Path, ClipInfo] = {}
        # Clips of sealed footage, only in memory (see _sealed_clip), LRU order.
        self._sealed_clips: OrderedDict[str, _MemoryClip] = OrderedDict()
        self._sealed_clip_bytes = 0
        self._sealed_clip_cap = sealed_clip_cache_bytes
        self._playback_audited: dict[tuple[Actor, str, float, float], float] = {}

    @property
    def _settings(self) -> Settings:
        # Read on each use: cameras change at run time (config.SettingsHolder).
        return self._read_settings()

    # cameras

    def camera_names(self) -> list[str]:
        """Cameras that are configured, running, or have anything in the index; sorted."""
        names = set(self._settings.cameras) | set(self._statuses())
        return sorted(names | set(self._index.camera_names()))

    def camera_households(self) -> dict[str, str]:
        """Every camera of :meth:`camera_names` -> its household id
        (``settings.camera_household``: a camera known only from the index belongs to the
        deployment's household)."""
        return {name: self._settings.camera_household(name) for name in self.camera_names()}

    def visible_cameras(self, viewer: Principal) -> frozenset[str]:
        """The cameras ``viewer`` may see now (see the module docstring)."""
        return permissions.visible_cameras(viewer, self.camera_households(), self._clock())

    def _visible(self, viewer: Principal | None) -> frozenset[str] | None:
        """The viewer's visible cameras; None when unscoped (the local operator)."""
        return None if viewer is None else self.visible_cameras(viewer)

    def _require_camera(self, name: str, viewer: Principal | None = None) -> Access | None:
        """Check that ``name`` exists and ``viewer`` may see it; returns the ground of the
        access (None for an unscoped caller).

        Raises:
            NotFoundError: ``name`` is not configured, not running and not in the index; or
                it belongs to another household than the viewer's.
            PermissionDeniedError: a member without a grant for it; staff support without a
                support grant in force; other staff.
        """
        known = (
            name in self._settings.cameras
            or name in self._statuses()
            or name in self._index.camera_names()
        )
        if not known:
            raise NotFoundError(f"no camera named {name!r}")
        if viewer is None:
            return None
        household = self._settings.camera_household(name)
        try:
            return permissions.camera_access(viewer, household, name, self._clock())
        except NotFoundError:
            raise NotFoundError(f"no camera named {name!r}") from None

    def cameras(self, *, viewer: Principal | None = None) -> list[CameraView]:
        """Every camera of :meth:`camera_names` that ``viewer`` may see, sorted by name."""
        statuses = self._statuses()
        visible = self._visible(viewer)
        return [
            self._camera_view(name, statuses.get(name))
            for name in self.camera_names()
            if visible is None or name in visible
        ]

    def camera(self, name: str, *, viewer: Principal | None = None) -> CameraView:
        """One camera.

        Raises:
            NotFoundError: ``name`` is not configured, not running and not in the index, or
                it is of another household than the viewer's.
            PermissionDeniedError: the viewer may not see it (see the module docstring).
        """
        self._require_camera(name, viewer)
        return self._camera_view(name, self._statuses().get(name))

    def _camera_view(self, name: str, status: CameraStatusLike | None) -> CameraView:
        cam = self._settings.cameras.get(name)
        open_gaps = len(self._index.open_gaps(name))
        all_gaps = len(self._index.gaps(name))
        recorded = self._index.total_bytes(name)
        last_end = self._index.last_segment_end(name)
        if status is None:
            state = "disabled" if cam is not None and not cam.enabled else "not-running"
            return CameraView(
                name=name,
                url=redact_url(cam.url) if cam else "",
                enabled=cam.enabled if cam else False,
                configured=cam is not None,
                state=state,
                connected=False,
                connected_since=None,
                last_packet_at=None,
                fps=None,
                bitrate=None,
                decode_mode=None,
                segments_written=None,
                gaps_open=open_gaps,
                gaps_total=all_gaps,
                last_error=None,
                next_retry_at=None,
                recorded_bytes=recorded,
                last_recorded_at=last_end,
            )
        return CameraView(
            name=name,
            url=redact_url(cam.url) if cam else "",
            enabled=cam.enabled if cam else True,
            configured=cam is not None,
            state=status.state,
            connected=status.connected_since is not None,
            connected_since=status.connected_since,
            last_packet_at=status.last_packet_at,
            fps=status.fps_in,
            bitrate=status.bitrate,
            decode_mode=status.decode_mode,
            segments_written=status.segments_written,
            gaps_open=max(status.gaps_open, open_gaps),
            gaps_total=max(status.gaps_open, all_gaps),
            last_error=status.last_error,
            next_retry_at=status.next_retry_at,
            recorded_bytes=recorded,
            last_recorded_at=last_end,
            fps_recorded=status.fps_recorded,
            cpu_seconds=status.cpu_seconds,
        )

    # recordings

    def recordings(
        self,
        camera: str | None = None,
        since: float | None = None,
        until: float | None = None,
        *,
        viewer: Principal | None = None,
    ) -> list[RecordingView]:
        """Segments overlapping ``[since, until)`` of the cameras ``viewer`` sees, by camera
        then start.

        Raises:
            NotFoundError: ``camera`` is given and unknown (or of another household).
            PermissionDeniedError: ``camera`` is given and the viewer may not see it.
            InvalidRequestError: ``until`` is not after ``since``.
        """
        self._check_span(since, until)
        if camera is not None:
            self._require_camera(camera, viewer)
        visible = None if camera is not None else self._visible(viewer)
        return [
            RecordingView.of(s)
            for s in self._index.segments(camera, since, until)
            if visible is None or s.camera in visible
        ]

    def summary(
        self,
        camera: str | None = None,
        since: float | None = None,
        until: float | None = None,
        *,
        viewer: Principal | None = None,
    ) -> list[HourView]:
        """Per-UTC-hour totals over ``[since, until)`` of the cameras ``viewer`` sees;
        defaults: the last day up to now.

        Raises:
            NotFoundError: ``camera`` is given and unknown (or of another household).
            PermissionDeniedError: ``camera`` is given and the viewer may not see it.
            InvalidRequestError: ``until`` is not after ``since``.
        """
        hi = until if until is not None else self._clock()
        lo = since if since is not None else hi - DEFAULT_SUMMARY_SECONDS
        self._check_span(lo, hi)
        if camera is not None:
            self._require_camera(camera, viewer)
            names = [camera]
        else:
            visible = self._visible(viewer)
            names = [n for n in self.camera_names() if visible is None or n in visible]
        out: list[HourView] = []
        for name in names:
            for h in self._index.hour_summary(name, lo, hi):
                out.append(
                    HourView(
                        camera=h.camera,
                        hour_start=h.hour_start,
                        hour_end=h.hour_start + 3600.0,
                        recorded_seconds=h.recorded_seconds,
                        bytes=h.bytes,
                        segments=h.segments,
                        events=h.events,
                    )
                )
        return out

    def gaps(
        self,
        camera: str | None = None,
        since: float | None = None,
        until: float | None = None,
        *,
        viewer: Principal | None = None,
    ) -> list[GapView]:
        """Outages overlapping ``[since, until)`` of the cameras ``viewer`` sees.

        Raises:
            NotFoundError: ``camera`` is given and unknown (or of another household).
            PermissionDeniedError: ``camera`` is given and the viewer may not see it.
            InvalidRequestError: ``until`` is not after ``since``.
        """
        self._check_span(since, until)
        if camera is not None:
            self._require_camera(camera, viewer)
        visible = None if camera is not None else self._visible(viewer)
        return [
            GapView.of(g)
            for g in self._index.gaps(camera, since, until)
            if visible is None or g.camera in visible
        ]

    # events

    def events(
        self,
        camera: str | None = None,
        label: str | None = None,
        zone: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
        *,
        viewer: Principal | None = None,
    ) -> EventPage:
        """A page of events of the cameras ``viewer`` sees, newest first.

        Raises:
            NotFoundError: ``camera`` is given and unknown (or of another household).
            PermissionDeniedError: ``camera`` is given and the viewer may not see it.
            InvalidRequestError: bad cursor, ``limit`` outside 1..500, or an empty span.
        """
        if not 1 <= limit <= MAX_EVENT_PAGE:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_EVENT_PAGE}")
        self._check_span(since, until)
        if camera is not None:
            self._require_camera(camera, viewer)
        visible = None if camera is not None else self._visible(viewer)
        if visible is not None and not visible:
            return EventPage(events=[], next_cursor=None)
        page, nxt = self._index.events(
            camera=camera,
            label=label,
            zone=zone,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
            cameras=visible,
        )
        return EventPage(events=[EventView.of(e) for e in page], next_cursor=nxt)

    def event(self, event_id: int, *, viewer: Principal | None = None) -> EventView:
        """One event.

        Raises:
            NotFoundError: no such event (also for any id outside ``1..MAX_EVENT_ID``), or
                an event of another household than the viewer's.
            PermissionDeniedError: the viewer may not see the event's camera.
        """
        return EventView.of(self._event(event_id, viewer)[0])

    def _event(
        self, event_id: int, viewer: Principal | None = None
    ) -> tuple[EventRecord, Access | None]:
        # An id the events.id column cannot hold would overflow the driver (SQLite) or the
        # server (PostgreSQL) instead of simply matching no row.
        if not 1 <= event_id <= MAX_EVENT_ID:
            raise NotFoundError(f"no event {event_id}")
        ev = self._index.event(event_id)
        if viewer is None:
            return ev, None
        household = self._settings.camera_household(ev.camera)
        try:
            access = permissions.camera_access(viewer, household, ev.camera, self._clock())
        except NotFoundError:
            # Same answer as an id no row has: other households' ids cannot be probed.
            raise NotFoundError(f"no event {event_id}") from None
        except PermissionDeniedError as exc:
            raise PermissionDeniedError(f"event {event_id}: {exc}") from None
        return ev, access

    def snapshot(
        self, event_id: int, *, actor: Actor, reason: str, viewer: Principal | None = None
    ) -> Path:
        """The JPEG snapshot file of an event, for ``actor`` (who asks) because of ``reason``;
        audited as ``footage:snapshot:view`` of the event's camera and span.

        Raises:
            NotFoundError: no such event (or one of another household), the event has no
                snapshot, or its file is gone.
            PermissionDeniedError: the viewer may not see the event's camera.
            AuditUnavailableError: the audit entry cannot be written (nothing is served).
            LogTamperedError: the audit log cannot be extended (nothing is served).
        """
        ev, access = self._event(event_id, viewer)
        path = self._snapshot_file(ev)
        if path.name.endswith(SEALED_SUFFIX):
            raise KeysLockedError(
                f"{SIGN_IN_AGAIN}: event {event_id}'s snapshot is sealed (use snapshot_jpeg)"
            )
        self._account_snapshot(ev, actor, _grounded(reason, access))
        return path

    def snapshot_jpeg(
        self,
        event_id: int,
        *,
        actor: Actor,
        reason: str,
        viewer: Principal | None = None,
        keys: KeySource | None = None,
    ) -> bytes:
        """The JPEG snapshot of an event in memory, as :meth:`snapshot`; a sealed one
        (``storage.sealed``) is opened with ``keys`` (the caller's unlocked session) before
        the audit entry is written, so one that does not open is never accounted as seen.

        Raises:
            As :meth:`snapshot`; KeysLockedError, KeyUnavailableError: a sealed snapshot and
            no key for it; SealedDataError: it does not open (tampered); StorageError: the
            file cannot be read.
        """
        ev, access = self._event(event_id, viewer)
        path = self._snapshot_file(ev)
        if path.name.endswith(SEALED_SUFFIX):
            root = self._settings.snapshot_dir.resolve()
            if not path.is_relative_to(root):
                raise NotFoundError(f"event {event_id} snapshot is outside the snapshot dir")
            household = self._settings.camera_household(ev.camera)
            rel = path.relative_to(root).as_posix()
            data = open_sealed_snapshot(root, rel, ev.camera, household, keys)
        else:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read event {event_id}'s snapshot: {exc}") from exc
        self._account_snapshot(ev, actor, _grounded(reason, access))
        return data

    def _snapshot_file(self, ev: EventRecord) -> Path:
        if ev.snapshot_path is None:
            raise NotFoundError(f"event {ev.id} has no snapshot")
        root = self._settings.snapshot_dir.resolve()
        path = Path(ev.snapshot_path)
        path = (path if path.is_absolute() else root / path).resolve()
        # The index is ours, but a path must still not lead outside the data dir.
        if not path.is_relative_to(self._settings.data_dir.resolve()):
            raise NotFoundError(f"event {ev.id} snapshot is outside the data dir")
        if not path.is_file():
            raise NotFoundError(f"event {ev.id} snapshot file is missing")
        return path

    def _account_snapshot(self, ev: EventRecord, actor: Actor, reason: str) -> None:
        self._account(
            AuditTag.FOOTAGE_SNAPSHOT_VIEW,
            actor,
            reason,
            camera=ev.camera,
            start=ev.start,
            end=ev.end if ev.end is not None else ev.start,
            event=ev.id,
        )

    # clips

    def event_clip(
        self,
        event_id: int,
        *,
        actor: Actor,
        reason: str,
        viewer: Principal | None = None,
        playback: bool = False,
        keys: KeySource | None = None,
    ) -> ClipFile:
        """A clip of an event, from its start to its end (or the newest footage while open),
        for ``actor`` because of ``reason``; audited as ``footage:clip:download``, or with
        ``playback`` (a player's byte-range request) as ``footage:playback:view`` once per
        viewer and span per :data:`PLAYBACK_AUDIT_SECONDS` (see :meth:`range_clip`).

        Raises:
            NotFoundError: no such event (or one of another household), or no footage for it.
            PermissionDeniedError: the viewer may not see the event's camera.
            InvalidRequestError: the event is longer than :data:`MAX_CLIP_SECONDS`.
            ClipError, StorageError: the segments cannot be remuxed.
            AuditUnavailableError: the audit entry cannot be written (nothing is served).
            LogTamperedError: the audit log cannot be extended (nothing is served).
        """
        ev, access = self._event(event_id, viewer)
        end = ev.end
        if end is None:
            segs = self._index.segments(ev.camera, ev.start, None)
            if not segs:
                raise NotFoundError(f"no footage recorded yet for event {event_id}")
            end = max(s.end for s in segs)
        if end <= ev.start:
            raise NotFoundError(f"event {event_id} has no footage span")
        clip = self._cached_clip(ev.camera, ev.start, end, keys)
        self._audit_clip(clip, actor, _grounded(reason, access), event=ev.id, playback=playback)
        return clip

    def range_clip(
        self,
        camera: str,
        start: float,
        end: float,
        *,
        actor: Actor,
        reason: str,
        viewer: Principal | None = None,
        playback: bool = False,
        keys: KeySource | None = None,
    ) -> ClipFile:
        """A clip of ``camera`` over ``[start, end]``, remuxed (never re-encoded) from the
        segments into the clip cache and reused for :data:`CLIP_CACHE_SECONDS`, for ``actor``
        because of ``reason``. With ``playback`` (a player fetching byte ranges to show the
        footage) the access is audited as ``footage:playback:view``, once per actor and span
        per :data:`PLAYBACK_AUDIT_SECONDS` (a player asks for many ranges of one viewing);
        otherwise every call is audited as
        ``footage:clip:download`` of the span the clip really covers.

        Raises:
            NotFoundError: unknown camera (or of another household), or no footage in the
                span.
            PermissionDeniedError: the viewer may not see the camera.
            InvalidRequestError: ``end <= start``, longer than :data:`MAX_CLIP_SECONDS`, or
                a time outside ``[0, MAX_TIME)``.
            ClipError, StorageError: the segments cannot be remuxed.
            AuditUnavailableError: the audit entry cannot be written (nothing is served).
            LogTamperedError: the audit log cannot be extended (nothing is served).
            KeysLockedError: sealed segments (``storage.sealed``) and ``keys`` is None or
                not unlocked; KeyUnavailableError: the caller holds no key of a segment's
                version; SealedDataError: a sealed segment does not open (tampered: the
                error names it). Such a clip is cached sealed (:attr:`ClipFile.sealed`):
                serve it with :meth:`clip_chunks`.
        """
        self._check_clip_span(start, end)
        access = self._require_camera(camera, viewer)
        clip = self._cached_clip(camera, start, end, keys)
        self._audit_clip(clip, actor, _grounded(reason, access), playback=playback)
        return clip

    def _audit_clip(
        self,
        clip: ClipFile,
        actor: Actor,
        reason: str,
        *,
        event: int | None = None,
        playback: bool = False,
    ) -> None:
        if playback:
            key = (actor, clip.camera, clip.start, clip.end)
            now = self._clock()
            with self._clip_lock:
                last = self._playback_audited.get(key)
                if last is not None and now - last < PLAYBACK_AUDIT_SECONDS:
                    return
                self._playback_audited = {
                    k: t
                    for k, t in self._playback_audited.items()
                    if now - t < PLAYBACK_AUDIT_SECONDS
                }
        self._account(
            AuditTag.FOOTAGE_PLAYBACK_VIEW if playback else AuditTag.FOOTAGE_CLIP_DOWNLOAD,
            actor,
            reason,
            camera=clip.camera,
            start=clip.start,
            end=clip.end,
            event=event,
        )
        if playback:
            with self._clip_lock:
                self._playback_audited[key] = now

    def _cached_clip(
        self, camera: str, start: float, end: float, keys: KeySource | None
    ) -> ClipFile:
        self._check_clip_span(start, end)
        self._require_camera(camera)
        segs = self._clip_segments(camera, start, end)
        if any(s.sealed for s in segs):
            return self._sealed_clip(camera, segs, start, end, keys)
        key = hashlib.sha256(
            repr((camera, start, end, [(s.path, s.bytes, s.end) for s in segs])).encode()
        ).hexdigest()[:24]
        out = self._clip_dir / f"{camera}-{key}.mp4"
        with self._clip_lock:
            known = self._clip_infos.get(out)
        if known is not None and out.is_file():
            os.utime(out)  # keep a clip that is being watched in the cache
            return ClipFile(out, camera, known.start, known.end, known.duration, known.bytes)
        self._prune_clip_cache()
        try:
            self._clip_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the clip cache {self._clip_dir}: {exc}") from exc
        tmp = self._clip_dir / f".{uuid.uuid4().hex}.part.mp4"
        try:
            info = self._compose(segs, start, end, tmp)
            os.replace(tmp, out)
        except OSError as exc:
            raise StorageError(f"cannot write clip {out}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        with self._clip_lock:
            self._clip_infos[out] = info
        return ClipFile(out, camera, info.start, info.end, info.duration, info.bytes)

    def _sealed_clip(
        self,
        camera: str,
        segs: Sequence[SegmentRecord],
        start: float,
        end: float,
        keys: KeySource | None,
    ) -> ClipFile:
        """A clip of sealed segments, from the in-memory cache when handed out within
        :data:`CLIP_CACHE_SECONDS` (a player's range requests), else opened in memory with
        ``keys``, composed in a private directory of :data:`MEMORY_DIR` (0700, removed at
        once) and kept in memory only (:data:`SEALED_CLIP_CACHE_BYTES` in all, least recently
        used evicted first): no plaintext clip is written to disk. A cached clip is handed
        out only when ``keys`` opens every key version its segments are sealed to.

        Raises:
            KeysLockedError, KeyUnavailableError: ``keys`` cannot open them.
            SealedDataError: a segment does not open (tampered).
            StorageError, ClipError, NotFoundError: as :meth:`_compose`.
        """
        if keys is None:
            raise KeysLockedError(f"{SIGN_IN_AGAIN}: the footage of camera {camera} is sealed")
        household = self._settings.camera_household(camera)
        for key_id in sorted({s.key_id for s in segs if s.key_id is not None}):
            keys(household, key_id)  # the caller must hold every version, cached or not
        key = hashlib.sha256(
            repr(
                ("sealed", camera, start, end, [(s.path, s.bytes, s.end, s.key_id) for s in segs])
            ).encode()
        ).hexdigest()[:24]
        name = Path(f"{camera}-{key}.mp4")
        now = time.monotonic()
        with self._clip_lock:
            self._expire_sealed_clips(now)
            known = self._sealed_clips.get(key)
            if known is not None:
                known.used = now  # keep a clip that is being watched in the cache
                self._sealed_clips.move_to_end(key)
        if known is not None:
            return self._memory_clip_file(name, camera, known.info, known.data)
        data, info = self._compose_in_memory(segs, start, end, keys)
        with self._clip_lock:
            self._keep_sealed_clip(key, _MemoryClip(info, data, time.monotonic()))
        return self._memory_clip_file(name, camera, info, data)

    @staticmethod
    def _memory_clip_file(name: Path, camera: str, info: ClipInfo, data: bytes) -> ClipFile:
        return ClipFile(
            name, camera, info.start, info.end, info.duration, len(data), sealed=True, data=data
        )

    def _compose_in_memory(
        self, segs: Sequence[SegmentRecord], start: float, end: float, keys: KeySource
    ) -> tuple[bytes, ClipInfo]:
        """Compose in a private directory (0700) of :data:`MEMORY_DIR`, read the clip into
        memory and remove the directory at once. Without a writable :data:`MEMORY_DIR`
        (not Linux) the private directory is made in the clip cache dir, as before."""
        memory = memory_root()  # /dev/shm or $XDG_RUNTIME_DIR, on tmpfs (store.memory_dir)
        parent = memory
        try:
            if parent is None:
                self._clip_dir.mkdir(parents=True, exist_ok=True)
                parent = self._clip_dir
            if parent is memory:
                _remove_stale_dirs(parent, MEMORY_CLIP_PREFIX)
                prefix = MEMORY_CLIP_PREFIX
            else:
                prefix = SEALED_CLIP_PREFIX
            private = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        except OSError as exc:
            raise StorageError(f"cannot create a clip in {parent}: {exc}") from exc
        try:
            plain = private / "clip.mp4"
            info = self._compose(segs, start, end, plain, keys=keys)
            return plain.read_bytes(), info
        except OSError as exc:
            raise StorageError(f"cannot read the composed clip: {exc}") from exc
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def _expire_sealed_clips(self, now: float) -> None:
        # Called with _clip_lock held; entries are in LRU order, so stop at the first fresh.
        while self._sealed_clips:
            key, oldest = next(iter(self._sealed_clips.items()))
            if now - oldest.used < CLIP_CACHE_SECONDS:
                return
            self._drop_sealed_clip(key)

    def _keep_sealed_clip(self, key: str, entry: _MemoryClip) -> None:
        # Called with _clip_lock held: evict least recently used clips down to the cap; a
        # clip over the cap by itself is served (its ClipFile holds it) but not kept.
        if key in self._sealed_clips:
            self._drop_sealed_clip(key)
        if len(entry.data) > self._sealed_clip_cap:
            return
        while self._sealed_clips and (
            self._sealed_clip_bytes + len(entry.data) > self._sealed_clip_cap
        ):
            self._drop_sealed_clip(next(iter(self._sealed_clips)))
        self._sealed_clips[key] = entry
        self._sealed_clip_bytes += len(entry.data)

    def _drop_sealed_clip(self, key: str) -> None:
        gone = self._sealed_clips.pop(key)
        self._sealed_clip_bytes -= len(gone.data)

    def sealed_clip_cache_usage(self) -> tuple[int, int]:
        """Clips of sealed footage kept in memory now, and their total plaintext bytes."""
        with self._clip_lock:
            return len(self._sealed_clips), self._sealed_clip_bytes

    def clip_chunks(self, clip: ClipFile, start: int, end: int) -> Iterator[bytes]:
        """Plaintext bytes ``[start, end)`` of a :attr:`ClipFile.sealed` clip, in chunks of
        :data:`CLIP_CHUNK_BYTES`, from the memory the clip was handed out with (a clip evicted
        from the cache meanwhile is still served whole).

        Raises:
            NotFoundError: not a clip of sealed footage held in memory.
            InvalidRequestError: not ``0 <= start <= end <= clip.bytes``.
        """
        data = clip.data
        if not clip.sealed or data is None:
            raise NotFoundError(f"no sealed clip {clip.path.name} in this process's memory")
        if not 0 <= start <= end <= len(data):
            raise InvalidRequestError(
                f"byte range [{start}, {end}) is outside the clip's {len(data)} bytes"
            )
        view = memoryview(data)

        def chunks() -> Iterator[bytes]:
            for lo in range(start, end, CLIP_CHUNK_BYTES):
                yield bytes(view[lo : min(end, lo + CLIP_CHUNK_BYTES)])

        return chunks()

    def write_clip(
        self,
        camera: str,
        start: float,
        end: float,
        out: Path,
        *,
        actor: Actor,
        reason: str,
        overwrite: bool = False,
        keys: KeySource | None = None,
    ) -> ClipFile:
        """Compose a clip of ``camera`` over ``[start, end]`` straight into ``out``, for
        ``actor`` because of ``reason``; audited as ``footage:clip:download``. The entry is
        written before the clip is: if it cannot be, no footage is written.

        ``out`` must be in an existing directory (it is never created) and must not exist,
        unless ``overwrite`` is set and it is a regular file. Those are checked before the
        audit entry, so a refused write is not accounted as an access; ``compose_clip``
        checks them again when it writes.

        Raises:
            NotFoundError, InvalidRequestError, ClipError: as :meth:`range_clip`.
            StorageError: ``out`` exists (without ``overwrite``) or is not a regular file,
                its directory does not exist, or it cannot be written.
            AuditUnavailableError: the audit entry cannot be written (nothing is written).
            LogTamperedError: the audit log cannot be extended (nothing is written).
            KeysLockedError: the span holds sealed segments and ``keys`` is None (the CLI
                has no signed-in session); checked before the audit entry.
            KeyUnavailableError, SealedDataError: a sealed segment does not open.
        """
        self._check_clip_span(start, end)
        self._require_camera(camera)
        segs = self._clip_segments(camera, start, end)
        if out.is_symlink() or out.exists():
            if not out.is_file() or out.is_symlink():
                raise StorageError(f"cannot write clip {out}: it exists and is not a regular file")
            if not overwrite:
                raise StorageError(f"cannot write clip {out}: it already exists")
        if not out.parent.is_dir():
            raise StorageError(f"cannot write clip {out}: directory {out.parent} does not exist")
        if keys is None and any(s.sealed for s in segs):  # refused before it is accounted
            raise KeysLockedError(f"{SIGN_IN_AGAIN}: the footage of camera {camera} is sealed")
        # The file lands where the caller said, outside our control: account for the
        # requested span before a byte of it exists.
        self._account(
            AuditTag.FOOTAGE_CLIP_DOWNLOAD,
            actor,
            reason,
            camera=camera,
            start=max(start, min(s.start for s in segs)),
            end=min(end, max(s.end for s in segs)),
        )
        info = self._compose(segs, start, end, out, overwrite=overwrite, keys=keys)
        return ClipFile(out, camera, info.start, info.end, info.duration, info.bytes)

    def _account(
        self,
        action: AuditTag,
        actor: Actor,
        reason: str,
        *,
        camera: str,
        start: float,
        end: float,
        event: int | None = None,
    ) -> None:
        """Append the audit entry of a footage access before the footage is handed out.

        Raises:
            AuditUnavailableError: the database refused the entry; the footage must not be
                served (the reason the caller gets, instead of a bare database error).
            LogTamperedError: the stored tree cannot be extended (see ``AuditLog.append``).
        """
        try:
            self._audit.append(
                action,
                actor,
                reason,
                camera=camera,
                start=start,
                end=end,
                event=event,
                household=self._settings.camera_household(camera),
            )
        except DatabaseError as exc:
            raise AuditUnavailableError(
                f"footage not served: its access cannot be written to the audit log ({exc})"
            ) from exc

    def _check_clip_span(self, start: float, end: float) -> None:
        parse_time(start, name="start")
        parse_time(end, name="end")
        if end <= start:
            raise InvalidRequestError(f"clip end ({end}) must be after start ({start})")
        if end - start > MAX_CLIP_SECONDS:
            raise InvalidRequestError(
                f"clip spans {end - start:.0f} s; at most {MAX_CLIP_SECONDS:.0f} s per clip"
            )

    def _clip_segments(self, camera: str, start: float, end: float) -> list[SegmentRecord]:
        segs = self._index.segments(camera, start, end)
        if not segs:
            raise NotFoundError(
                f"no footage of camera {camera!r} between {_iso(start)} and {_iso(end)}"
            )
        return segs

    def _compose(
        self,
        segs: Sequence[SegmentRecord],
        start: float,
        end: float,
        out: Path,
        *,
        overwrite: bool = False,
        keys: KeySource | None = None,
    ) -> ClipInfo:
        media = self._settings.media_dir
        parts = [(media / s.path, s.start) for s in segs]
        sealed = {media / s.path: s for s in segs if s.sealed}
        if not sealed:
            return compose_clip(parts, start, end, out, overwrite=overwrite)
        settings = self._settings

        def reader(path: Path) -> bytes | None:
            seg = sealed.get(path)
            if seg is None:
                return None
            return open_sealed_segment(media, seg, settings.camera_household(seg.camera), keys)

        return compose_clip(parts, start, end, out, overwrite=overwrite, reader=reader)

    def _prune_clip_cache(self) -> None:
        if not self._clip_dir.is_dir():
            return
        cutoff = time.time() - CLIP_CACHE_SECONDS  # file mtimes are real wall-clock time
        for f in self._clip_dir.iterdir():
            try:
                if f.is_dir():
                    # a sealed clip's private directory left by a process that died composing
                    if f.name.startswith(SEALED_CLIP_PREFIX) and f.stat().st_mtime < cutoff:
                        shutil.rmtree(f, ignore_errors=True)
                    continue
                if f.stat().st_mtime < cutoff:
                    # Unlinking a file a response still streams is safe on POSIX.
                    f.unlink()
                    with self._clip_lock:
                        self._clip_infos.pop(f, None)
            except FileNotFoundError:
                continue

    # health

    def health(self) -> HealthView:
        """Health of the recorder: ``"ok"`` only when every enabled camera is connected, no
        gap is open or ended in the last :data:`RECENT_GAP_SECONDS`, under ``storage.sealed``
        a memory file system takes the segment being recorded (else it is plaintext on the
        disk: :mod:`homewarden.store.memory_dir`), and the disk holding the
        media has at least ``storage.min_free_bytes`` free (the emergency guard's floor);
        ``"degraded"`` otherwise, with one reason per problem. No enabled camera at all is
        degraded too: nothing is being recorded.

        Raises:
            DatabaseError: the index does not answer (that is an error, not a status).
        """
        now = self._clock()
        media_bytes = self._index.total_bytes()
        statuses = self._statuses()
        cameras = self._settings.cameras
        enabled = sorted({n for n, c in cameras.items() if c.enabled} | set(statuses))
        reasons: list[str] = []
        connected = 0
        for name in enabled:
            status = statuses.get(name)
            if status is not None and status.connected_since is not None:
                connected += 1
                continue
            if status is None:
                why = "its recorder is not running"
            else:
                why = status.state + (f": {status.last_error}" if status.last_error else "")
            reasons.append(f"camera {name!r} is not connected ({why})")
        if not enabled:
            reasons.append("no camera is enabled")
        elif self._settings.storage.sealed and memory_root() is None:
            reasons.append(
                "sealed footage: no memory file system (/dev/shm or $XDG_RUNTIME_DIR on tmpfs) "
                "is usable, so the segment being recorded is plaintext in the media dir"
            )
        gaps_open = 0
        recent: dict[str, list[GapRecord]] = {}
        for gap in self._index.gaps(None, now - RECENT_GAP_SECONDS, None):
            if gap.end is None:
                gaps_open += 1
                reasons.append(
                    f"camera {gap.camera!r} has an open gap since {_iso(gap.start)} "
                    f"({gap.reason}{': ' + gap.detail if gap.detail else ''})"
                )
            else:
                recent.setdefault(gap.camera, []).append(gap)
        for name, gaps in sorted(recent.items()):
            last = max(gaps, key=lambda g: g.end or g.start)
            reasons.append(
                f"camera {name!r} lost footage in the last {RECENT_GAP_SECONDS / 60:.0f} min: "
                f"{len(gaps)} gap(s), the latest ended {_iso(last.end or last.start)} "
                f"({last.reason}{': ' + last.detail if last.detail else ''})"
            )
        floor = self._settings.storage.min_free_bytes
        probe = self._settings.media_dir
        if not probe.is_dir():
            probe = self._settings.data_dir
        try:
            usage = shutil.disk_usage(probe)
        except OSError as exc:
            free: int | None = None
            reasons.append(f"free disk under {probe} cannot be read ({exc.strerror or exc})")
        else:
            free = usage.free
            # The guard's own floor: on a small disk it is capped at a fraction of the disk,
            # so a small disk that retention keeps in bounds does not read as degraded.
            floor = disk_floor(floor, 0, usage.total)
        if free is not None and free < floor:
            reasons.append(
                f"low disk: {free} bytes free under {probe}, below the emergency guard's "
                f"floor of {floor} bytes (storage.min_free_bytes, capped for small disks)"
            )
        return HealthView(
            status="degraded" if reasons else "ok",
            reasons=reasons,
            version=__version__,
            time=now,
            cameras_configured=len(cameras),
            cameras_enabled=len(enabled),
            cameras_connected=connected,
            gaps_open=gaps_open,
            media_bytes=media_bytes,
            disk_free_bytes=free,
            disk_min_free_bytes=floor,
        )

    @staticmethod
    def _check_span(since: float | None, until: float | None) -> None:
        parse_span(since, until)  # the checks of typed input, for callers passing floats


def _iso(ts: float) -> str:
    return utc_text(ts)


def _grounded(reason: str, access: Access | None) -> str:
    """``reason`` with the ground of the access appended (``"api; support grant 7"``,
    ``"api; member grant"``, ``"api; owner"``); unchanged for an unscoped caller."""
    if access is None:
        return reason
    if access.ground is CameraAccess.SUPPORT_GRANT:
        return f"{reason}; support grant {access.support_grant}"
    return f"{reason}; {access.ground.value.replace('_', ' ')}"
