"""Read use-cases over the index and the live recorder statuses.

The JSON API (``homewarden.web``) and the read commands of the CLI both call these; neither
queries the index directly. Every use-case that hands out footage (a clip, a snapshot) appends
an entry to the audit log - who, which camera and time range, why - before it returns, and
fails (serving nothing) when the entry cannot be written. Every time is float UTC epoch
seconds, every size bytes. Inputs a caller typed (times, cursors, spans) are checked here
and rejected with :class:`InvalidRequestError`; unknown cameras and events raise
:class:`NotFoundError`.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from homewarden import __version__
from homewarden.config import Settings
from homewarden.domain.audit import Actor, AuditTag
from homewarden.errors import InvalidRequestError, NotFoundError, StorageError
from homewarden.media.clip import ClipInfo, compose_clip
from homewarden.services.audit import AuditLog
from homewarden.store.index import Index
from homewarden.store.records import EventRecord, GapRecord, SegmentRecord

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


def parse_time(value: str | float, *, name: str = "time") -> float:
    """Parse a caller's time: float UTC epoch seconds, or ISO 8601.

    ISO 8601 without an offset is read as UTC (never the server's local zone, so the same
    string means the same instant on every machine). ``name`` is the parameter's name for the
    error message.

    Raises:
        InvalidRequestError: neither a finite non-negative number nor ISO 8601.
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
    if not math.isfinite(number) or number < 0:
        raise InvalidRequestError(f"{name}={value!r} is not a time after 1970-01-01")
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
    index; ``fps`` is frames per second in, ``bitrate`` bits per second."""

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
    last_error: str | None
    next_retry_at: float | None
    recorded_bytes: int
    last_recorded_at: float | None


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
    """Liveness: ``status`` is ``"ok"`` when the index answers; disk figures are bytes."""

    status: str
    version: str
    time: float
    cameras_configured: int
    cameras_connected: int
    media_bytes: int
    disk_free_bytes: int | None


@dataclass(frozen=True, slots=True)
class ClipFile:
    """A composed clip on disk; ``[start, end]`` (UTC epoch seconds) is what it really covers
    (inside the requested span), ``duration`` the presented seconds, ``bytes`` its size."""

    path: Path
    camera: str
    start: float
    end: float
    duration: float
    bytes: int


def _no_statuses() -> Mapping[str, CameraStatusLike]:
    return {}


class Queries:
    """Read use-cases over one :class:`Index` (see the module docstring).

    Args:
        index: a migrated index.
        settings: for the configured cameras and the media, snapshot and cache dirs.
        statuses: live recorder statuses (the runtime's recorders); none when no recorder
            runs in this process (CLI read commands).
        clock: returns now as UTC epoch seconds.
        audit: the audit log every footage access is written to (required: there is no way
            to serve footage unaccounted for).
    """

    def __init__(
        self,
        index: Index,
        settings: Settings,
        statuses: StatusSource = _no_statuses,
        clock: Callable[[], float] = time.time,
        *,
        audit: AuditLog,
    ) -> None:
        self._index = index
        self._audit = audit
        self._settings = settings
        self._statuses = statuses
        self._clock = clock
        self._clip_dir = settings.cache_dir / "clips"
        self._clip_lock = threading.Lock()
        self._clip_infos: dict[Path, ClipInfo] = {}

    # cameras

    def camera_names(self) -> list[str]:
        """Cameras that are configured, running, or have anything in the index; sorted."""
        names = set(self._settings.cameras) | set(self._statuses())
        return sorted(names | set(self._index.camera_names()))

    def _require_camera(self, name: str) -> None:
        """Raise NotFoundError unless ``name`` is configured, running, or in the index."""
        if name in self._settings.cameras or name in self._statuses():
            return
        if name in self._index.camera_names():
            return
        raise NotFoundError(f"no camera named {name!r}")

    def cameras(self) -> list[CameraView]:
        """Every camera of :meth:`camera_names`, sorted by name."""
        statuses = self._statuses()
        return [self._camera_view(name, statuses.get(name)) for name in self.camera_names()]

    def camera(self, name: str) -> CameraView:
        """One camera.

        Raises:
            NotFoundError: ``name`` is not configured, not running and not in the index.
        """
        self._require_camera(name)
        return self._camera_view(name, self._statuses().get(name))

    def _camera_view(self, name: str, status: CameraStatusLike | None) -> CameraView:
        cam = self._settings.cameras.get(name)
        open_gaps = len(self._index.open_gaps(name))
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
            last_error=status.last_error,
            next_retry_at=status.next_retry_at,
            recorded_bytes=recorded,
            last_recorded_at=last_end,
        )

    # recordings

    def recordings(
        self, camera: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[RecordingView]:
        """Segments overlapping ``[since, until)``, by camera then start.

        Raises:
            NotFoundError: ``camera`` is given and unknown.
            InvalidRequestError: ``until`` is not after ``since``.
        """
        self._check_span(since, until)
        if camera is not None:
            self._require_camera(camera)
        return [RecordingView.of(s) for s in self._index.segments(camera, since, until)]

    def summary(
        self, camera: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[HourView]:
        """Per-UTC-hour totals over ``[since, until)``; defaults: the last day up to now.

        Raises:
            NotFoundError: ``camera`` is given and unknown.
            InvalidRequestError: ``until`` is not after ``since``.
        """
        hi = until if until is not None else self._clock()
        lo = since if since is not None else hi - DEFAULT_SUMMARY_SECONDS
        self._check_span(lo, hi)
        if camera is not None:
            self._require_camera(camera)
        names = [camera] if camera is not None else self.camera_names()
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
        self, camera: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[GapView]:
        """Outages overlapping ``[since, until)``.

        Raises:
            NotFoundError: ``camera`` is given and unknown.
            InvalidRequestError: ``until`` is not after ``since``.
        """
        self._check_span(since, until)
        if camera is not None:
            self._require_camera(camera)
        return [GapView.of(g) for g in self._index.gaps(camera, since, until)]

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
    ) -> EventPage:
        """A page of events, newest first.

        Raises:
            NotFoundError: ``camera`` is given and unknown.
            InvalidRequestError: bad cursor, ``limit`` outside 1..500, or an empty span.
        """
        if not 1 <= limit <= MAX_EVENT_PAGE:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_EVENT_PAGE}")
        self._check_span(since, until)
        if camera is not None:
            self._require_camera(camera)
        page, nxt = self._index.events(
            camera=camera,
            label=label,
            zone=zone,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )
        return EventPage(events=[EventView.of(e) for e in page], next_cursor=nxt)

    def event(self, event_id: int) -> EventView:
        """One event.

        Raises:
            NotFoundError: no such event.
        """
        return EventView.of(self._index.event(event_id))

    def snapshot(self, event_id: int, *, actor: Actor, reason: str) -> Path:
        """The JPEG snapshot file of an event, for ``actor`` (who asks) because of ``reason``;
        audited as ``footage:snapshot:view`` of the event's camera and span.

        Raises:
            NotFoundError: no such event, the event has no snapshot, or its file is gone.
            DatabaseError: the audit entry cannot be written (nothing is served).
        """
        ev = self._index.event(event_id)
        if ev.snapshot_path is None:
            raise NotFoundError(f"event {event_id} has no snapshot")
        root = self._settings.snapshot_dir.resolve()
        path = Path(ev.snapshot_path)
        path = (path if path.is_absolute() else root / path).resolve()
        # The index is ours, but a path must still not lead outside the data dir.
        if not path.is_relative_to(self._settings.data_dir.resolve()):
            raise NotFoundError(f"event {event_id} snapshot is outside the data dir")
        if not path.is_file():
            raise NotFoundError(f"event {event_id} snapshot file is missing")
        self._audit.append(
            AuditTag.FOOTAGE_SNAPSHOT_VIEW,
            actor,
            reason,
            camera=ev.camera,
            start=ev.start,
            end=ev.end if ev.end is not None else ev.start,
            event=ev.id,
        )
        return path

    # clips

    def event_clip(self, event_id: int, *, actor: Actor, reason: str) -> ClipFile:
        """A clip of an event, from its start to its end (or the newest footage while open),
        for ``actor`` because of ``reason``; audited as ``footage:clip:download``.

        Raises:
            NotFoundError: no such event, or no footage for it.
            InvalidRequestError: the event is longer than :data:`MAX_CLIP_SECONDS`.
            ClipError, StorageError: the segments cannot be remuxed.
            DatabaseError: the audit entry cannot be written (nothing is served).
        """
        ev = self._index.event(event_id)
        end = ev.end
        if end is None:
            segs = self._index.segments(ev.camera, ev.start, None)
            if not segs:
                raise NotFoundError(f"no footage recorded yet for event {event_id}")
            end = max(s.end for s in segs)
        if end <= ev.start:
            raise NotFoundError(f"event {event_id} has no footage span")
        clip = self._cached_clip(ev.camera, ev.start, end)
        self._audit_clip(clip, actor, reason, event=ev.id)
        return clip

    def range_clip(
        self, camera: str, start: float, end: float, *, actor: Actor, reason: str
    ) -> ClipFile:
        """A clip of ``camera`` over ``[start, end]``, remuxed (never re-encoded) from the
        segments into the clip cache and reused for :data:`CLIP_CACHE_SECONDS`, for ``actor``
        because of ``reason``; every call (each Range request of a player too) is audited as
        ``footage:clip:download`` of the span the clip really covers.

        Raises:
            NotFoundError: unknown camera, or no footage in the span.
            InvalidRequestError: ``end <= start`` or longer than :data:`MAX_CLIP_SECONDS`.
            ClipError, StorageError: the segments cannot be remuxed.
            DatabaseError: the audit entry cannot be written (nothing is served).
        """
        clip = self._cached_clip(camera, start, end)
        self._audit_clip(clip, actor, reason)
        return clip

    def _audit_clip(
        self, clip: ClipFile, actor: Actor, reason: str, *, event: int | None = None
    ) -> None:
        self._audit.append(
            AuditTag.FOOTAGE_CLIP_DOWNLOAD,
            actor,
            reason,
            camera=clip.camera,
            start=clip.start,
            end=clip.end,
            event=event,
        )

    def _cached_clip(self, camera: str, start: float, end: float) -> ClipFile:
        self._check_clip_span(start, end)
        self._require_camera(camera)
        segs = self._clip_segments(camera, start, end)
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

    def write_clip(
        self, camera: str, start: float, end: float, out: Path, *, actor: Actor, reason: str
    ) -> ClipFile:
        """Compose a clip of ``camera`` over ``[start, end]`` straight into ``out``, for
        ``actor`` because of ``reason``; audited as ``footage:clip:download``. The entry is
        written before the clip is: if it cannot be, no footage is written.

        Raises:
            NotFoundError, InvalidRequestError, ClipError, StorageError: as :meth:`range_clip`.
            DatabaseError: the audit entry cannot be written.
        """
        self._check_clip_span(start, end)
        self._require_camera(camera)
        segs = self._clip_segments(camera, start, end)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {out.parent}: {exc}") from exc
        # The file lands where the caller said, outside our control: account for the
        # requested span before a byte of it exists.
        self._audit.append(
            AuditTag.FOOTAGE_CLIP_DOWNLOAD,
            actor,
            reason,
            camera=camera,
            start=max(start, min(s.start for s in segs)),
            end=min(end, max(s.end for s in segs)),
        )
        info = self._compose(segs, start, end, out)
        return ClipFile(out, camera, info.start, info.end, info.duration, info.bytes)

    def _check_clip_span(self, start: float, end: float) -> None:
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
        self, segs: Sequence[SegmentRecord], start: float, end: float, out: Path
    ) -> ClipInfo:
        media = self._settings.media_dir
        parts = [(media / s.path, s.start) for s in segs]
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {out.parent}: {exc}") from exc
        return compose_clip(parts, start, end, out)

    def _prune_clip_cache(self) -> None:
        if not self._clip_dir.is_dir():
            return
        cutoff = time.time() - CLIP_CACHE_SECONDS  # file mtimes are real wall-clock time
        for f in self._clip_dir.iterdir():
            try:
                if f.stat().st_mtime < cutoff:
                    # Unlinking a file a response still streams is safe on POSIX.
                    f.unlink()
                    with self._clip_lock:
                        self._clip_infos.pop(f, None)
            except FileNotFoundError:
                continue

    # health

    def health(self) -> HealthView:
        """Liveness of the index, cameras and disk.

        Raises:
            DatabaseError: the index does not answer.
        """
        media_bytes = self._index.total_bytes()
        statuses = self._statuses()
        try:
            free: int | None = shutil.disk_usage(self._settings.data_dir).free
        except OSError:
            free = None
        return HealthView(
            status="ok",
            version=__version__,
            time=self._clock(),
            cameras_configured=len(self._settings.cameras),
            cameras_connected=sum(1 for s in statuses.values() if s.connected_since is not None),
            media_bytes=media_bytes,
            disk_free_bytes=free,
        )

    @staticmethod
    def _check_span(since: float | None, until: float | None) -> None:
        if since is not None and until is not None and until <= since:
            raise InvalidRequestError(f"until ({until}) must be after since ({since})")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
