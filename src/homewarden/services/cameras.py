"""Camera management by the household's owner: add, edit, enable/disable, delete, test.

Cameras come from two places. The config file's ``[cameras.NAME]`` tables are the base; the
``camera_settings`` table (:mod:`homewarden.store.camera_store`) holds what owners saved in
the app. The **effective** cameras are the file's overlaid by the stored ones: a stored row
for a camera of the file replaces its settings whole, any other row is a camera added in the
app (:func:`effective_settings`). Every row is validated with
:class:`~homewarden.config.CameraSettings`, so the app obeys the same rules as the file
(polygons of at least 3 points in 0..1, zone names, URL schemes...).

:class:`CameraAdmin` is the use-case: an owner may list, add and edit the cameras of their own
household, and delete those added in the app (a camera of the file is disabled instead). A
camera of another household is a :class:`~homewarden.errors.NotFoundError`, as everywhere.
Each change is stored, written to the audit log as one ``setting:value:change`` entry (field
names only, never values: a URL may hold a password), and handed to ``apply`` - the runtime's
:meth:`~homewarden.services.runtime.Runtime.apply_cameras` - which swaps the settings every
service reads and restarts only the recorders whose camera changed.

Passwords: camera URLs often carry one (``rtsp://user:pass@host/...``). Answers show URLs with
the password replaced by ``***`` (:func:`~homewarden.services.queries.redact_url`); a URL sent
back with ``***`` as its password keeps the stored one, but only while scheme, host, port and
user name are unchanged (else the stored password could be sent to another host).

:meth:`CameraAdmin.test_connection` really opens the source (PyAV, :func:`open_source`) with a
short timeout and reads its first video packet; it answers the codec, size and frame rate, or
what went wrong: unreachable, authentication refused, not a stream, or a codec we do not
record.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from homewarden.config import CameraSettings, Settings
from homewarden.domain.audit import Actor, AuditTag
from homewarden.domain.permissions import Principal, Role
from homewarden.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    SourceError,
    SourceStalledError,
    SourceUnreachableError,
    UnsupportedStreamError,
)
from homewarden.media.source import open_source
from homewarden.services.audit import AuditLog
from homewarden.services.queries import redact_url
from homewarden.store.camera_store import CameraStore, StoredCamera
from homewarden.store.index import Index

log = logging.getLogger(__name__)

#: Seconds :meth:`CameraAdmin.test_connection` waits for a source to answer (connect, then
#: the first video packet); a camera on the home network answers well within it.
TEST_TIMEOUT = 5.0
#: What a password is shown as (the same as :func:`~homewarden.services.queries.redact_url`).
PASSWORD_MASK = "***"  # noqa: S105 (a placeholder, not a password)
#: Longest camera name (the index's ``camera`` columns are 64 characters).
MAX_CAMERA_NAME = 64


def check_camera_name(name: str) -> str:
    """``name`` if it is a valid camera name (the config file's rule: 1-64 letters, digits,
    ``-`` and ``_``; names travel in URLs and file paths).

    Raises:
        InvalidRequestError: any other name.
    """
    if not 0 < len(name) <= MAX_CAMERA_NAME or not all(c.isalnum() or c in "-_" for c in name):
        raise InvalidRequestError(
            f"camera name {name!r} must be 1-{MAX_CAMERA_NAME} letters, digits, - and _"
        )
    if not name.isascii():
        raise InvalidRequestError(f"camera name {name!r} must be ASCII")
    return name


def _dotted(loc: Iterable[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(camera)"


def validate_camera(fields: Mapping[str, Any], *, name: str) -> CameraSettings:
    """:class:`CameraSettings` from JSON ``fields``.

    Raises:
        InvalidRequestError: a field is unknown or invalid; the message names each one by
            its dotted path (``motion.masks.0``) with the reason.
    """
    try:
        return CameraSettings.model_validate(dict(fields))
    except ValidationError as exc:
        problems = "; ".join(f"{_dotted(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRequestError(f"camera {name}: {problems}") from None


def _household_field(household: str, base: Settings) -> str | None:
    # The deployment's own household stays implicit, as in the config file.
    return None if household == base.household else household


def effective_settings(base: Settings, stored: Iterable[StoredCamera]) -> Settings:
    """``base`` (the config file's settings) with the cameras overlaid by ``stored`` rows
    (see the module docstring). A row that no longer validates (the rules changed since it
    was saved) is logged and left out: the file's camera of that name, if any, stays."""
    cameras = dict(base.cameras)
    for row in stored:
        fields = {**row.settings, "household": _household_field(row.household, base)}
        try:
            cameras[row.name] = CameraSettings.model_validate(fields)
        except ValidationError as exc:
            log.error("camera %s: stored settings are invalid, ignored: %s", row.name, exc)
    return base.model_copy(update={"cameras": cameras})


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: nested objects merge key by key, anything else
    (lists, numbers, null) replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def unmask_url(url: str, stored: str | None) -> str:
    """``url`` with a ``***`` password replaced by the one of ``stored`` (see the module
    docstring); any other ``url`` as it is.

    Raises:
        InvalidRequestError: ``url`` has ``***`` as its password but ``stored`` has none,
            or differs in scheme, host, port or user name.
    """
    try:
        parts = urlsplit(url)
        if parts.password != PASSWORD_MASK:
            return url
        old = urlsplit(stored) if stored is not None else None
        same = old is not None and old.password is not None
        if same and old is not None:
            same = (parts.scheme, parts.hostname, parts.port, parts.username) == (
                old.scheme,
                old.hostname,
                old.port,
                old.username,
            )
    except ValueError as exc:  # a port that is not a number, a bad IPv6 literal
        raise InvalidRequestError(f"camera url is malformed: {exc}") from None
    if not same or old is None:
        raise InvalidRequestError(
            f"type the camera's password: {PASSWORD_MASK} keeps the stored one only while "
            "the address and user name stay the same"
        )
    return urlunsplit((parts.scheme, old.netloc, parts.path, parts.query, parts.fragment))


def masked_fields(cam: CameraSettings) -> dict[str, Any]:
    """``cam`` as JSON fields with the URL's password masked (``household`` left out)."""
    fields = cam.model_dump(mode="json", exclude={"household"})
    fields["url"] = redact_url(cam.url)
    return fields


@dataclass(frozen=True, slots=True)
class ManagedCamera:
    """A camera as its owner manages it.

    Attributes:
        name: camera name.
        household: its household id.
        origin: ``config`` (the config file's, unchanged), ``edited`` (the config file's,
            changed in the app) or ``app`` (added in the app).
        settings: the :class:`CameraSettings` fields as JSON; the URL's password masked.
        updated_at: when it was last saved in the app (UTC epoch seconds), or None.
        deletable: whether it may be deleted (added in the app); others are disabled.
    """

    name: str
    household: str
    origin: str
    settings: dict[str, Any]
    updated_at: float | None
    deletable: bool


@dataclass(frozen=True, slots=True)
class ConnectionTest:
    """What :meth:`CameraAdmin.test_connection` found.

    Attributes:
        ok: the source opened and sent a video packet.
        problem: None when ok, else ``unreachable``, ``auth``, ``not-a-stream`` or
            ``unsupported``.
        detail: one sentence for a person.
        url: the URL tested, password masked.
        codec, width, height, fps: the video stream's codec name, size in pixels and frame
            rate (frames per second; 0 when the source does not say); None when not ok.
        seconds: how long the test took.
    """

    ok: bool
    problem: str | None
    detail: str
    url: str
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    seconds: float = 0.0


def _auth_refused(message: str) -> bool:
    # FFmpeg's RTSP/HTTP demuxers report the status line: "Server returned 401 Unauthorized".
    lowered = message.lower()
    return any(s in lowered for s in ("401", "unauthorized", "403", "forbidden"))


def probe_source(
    url: str, *, rtsp_transport: str = "tcp", timeout: float = TEST_TIMEOUT
) -> ConnectionTest:
    """Open ``url`` (at most ``timeout`` s to connect and as long again for the first video
    packet), read its stream facts and close it. Never raises for a source that fails: the
    failure is the answer (see :class:`ConnectionTest`)."""
    shown = redact_url(url)
    started = time.monotonic()

    def failed(problem: str, detail: str) -> ConnectionTest:
        return ConnectionTest(False, problem, detail, shown, seconds=time.monotonic() - started)

    try:
        source = open_source(url, rtsp_transport=rtsp_transport, stall_timeout=timeout)
    except UnsupportedStreamError as exc:
        return failed("unsupported", str(exc))
    except SourceStalledError as exc:
        return failed("unreachable", f"the camera did not answer: {exc}")
    except SourceUnreachableError as exc:
        if _auth_refused(str(exc)):
            return failed(
                "auth", f"the camera refused the user name or password ({exc}); check them"
            )
        return failed("unreachable", f"cannot reach the camera: {exc}")
    except SourceError as exc:
        return failed("not-a-stream", f"not a video stream: {exc}")
    try:
        fps_rate = source.video.average_rate or source.video.guessed_rate
        codec = str(source.codec_context.name)
        try:
            for packet in source.packets():
                if packet.stream_index == source.video.index:
                    break
            else:
                return failed("not-a-stream", "the source ended before sending any video")
        except SourceError as exc:
            return failed("not-a-stream", f"the camera sent no video: {exc}")
        width, height = source.width, source.height
    finally:
        source.close()
    fps = float(fps_rate) if fps_rate else 0.0
    return ConnectionTest(
        True,
        None,
        f"{codec} {width}x{height}" + (f" at {fps:.3g} fps" if fps else ""),
        shown,
        codec=codec,
        width=width,
        height=height,
        fps=fps,
        seconds=time.monotonic() - started,
    )


class CameraAdmin:
    """Camera management for households' owners (see the module docstring).

    Args:
        index: a migrated index (its engine holds ``camera_settings``).
        audit: where each change is written.
        base: the settings of the config file (its cameras are the base of the overlay).
        apply: called with the new effective settings after each change (and by
            :meth:`load`), under this object's lock, so calls never overlap; the runtime
            passes :meth:`~homewarden.services.runtime.Runtime.apply_cameras`.
        clock: now as UTC epoch seconds.
        test_timeout: seconds for :meth:`test_connection`.
    """

    def __init__(
        self,
        index: Index,
        audit: AuditLog,
        base: Settings,
        *,
        apply: Callable[[Settings], None] | None = None,
        clock: Callable[[], float] = time.time,
        test_timeout: float = TEST_TIMEOUT,
    ) -> None:
        self._index = index
        self._store = CameraStore(index)
        self._audit = audit
        self._base = base
        self._apply = apply
        self._clock = clock
        self._test_timeout = test_timeout
        self._lock = threading.RLock()
        self._current = base

    def current(self) -> Settings:
        """The effective settings (file cameras overlaid by stored ones), as last loaded or
        changed; a :data:`~homewarden.config.SettingsSource` for other services."""
        return self._current

    def load(self) -> Settings:
        """Read the stored cameras, make the effective settings and apply them; returns them.

        Raises:
            DatabaseError: the database failed.
        """
        with self._lock:
            return self._refresh()

    def _refresh(self) -> Settings:
        settings = effective_settings(self._base, self._store.all())
        self._current = settings
        if self._apply is not None:
            self._apply(settings)
        return settings

    # reading

    @staticmethod
    def _owner_household(owner: Principal) -> str:
        if owner.role is not Role.OWNER or owner.household is None:
            raise PermissionDeniedError("only the household's owner manages its cameras")
        return owner.household

    def _household_of(self, name: str) -> str | None:
        """The household of camera ``name`` (configured, or only in the index), or None."""
        settings = self._current
        if name in settings.cameras or name in self._index.camera_names():
            return settings.camera_household(name)
        return None

    def _view(self, name: str, stored: StoredCamera | None) -> ManagedCamera:
        settings = self._current
        cam = settings.cameras[name]
        in_file = name in self._base.cameras
        origin = "app" if not in_file else ("edited" if stored is not None else "config")
        return ManagedCamera(
            name=name,
            household=settings.camera_household(name),
            origin=origin,
            settings=masked_fields(cam),
            updated_at=stored.updated_at if stored is not None else None,
            deletable=not in_file,
        )

    def cameras(self, owner: Principal) -> list[ManagedCamera]:
        """The cameras of the owner's household, by name.

        Raises:
            PermissionDeniedError: the caller is not a household's owner.
            DatabaseError: the database failed.
        """
        household = self._owner_household(owner)
        stored = {row.name: row for row in self._store.all()}
        settings = self._current
        return [
            self._view(name, stored.get(name))
            for name in sorted(settings.cameras)
            if settings.camera_household(name) == household
        ]

    def camera(self, owner: Principal, name: str) -> ManagedCamera:
        """One camera of the owner's household.

        Raises:
            NotFoundError: no such camera in the owner's household.
            PermissionDeniedError: the caller is not a household's owner.
        """
        household = self._owner_household(owner)
        if name not in self._current.cameras or self._household_of(name) != household:
            raise NotFoundError(f"no camera named {name!r}")
        return self._view(name, self._store.get(name))

    def settings_of(self, owner: Principal, name: str) -> CameraSettings:
        """The effective settings of one camera of the owner's household (URL unmasked: for
        use-cases, never for answers).

        Raises:
            NotFoundError, PermissionDeniedError: as :meth:`camera`.
        """
        self.camera(owner, name)
        return self._current.cameras[name]

    # changing

    def put(
        self, owner: Principal, name: str, changes: Mapping[str, Any], actor: Actor
    ) -> ManagedCamera:
        """Add camera ``name`` to the owner's household, or change one of its cameras.

        ``changes`` are :class:`CameraSettings` fields as JSON; fields not named keep their
        value (a new camera takes the defaults; ``url`` is then required), nested objects
        (``motion``, ``retention``) merge key by key, lists (masks) and ``zones`` replace.
        ``household`` may only name the camera's own household. An unchanged camera is not
        saved nor audited.

        Raises:
            NotFoundError: ``name`` is a camera (or has footage) of another household.
            InvalidRequestError: a bad name, field or value (message names the field).
            PermissionDeniedError: the caller is not a household's owner.
            DatabaseError: the database failed.
        """
        household = self._owner_household(owner)
        check_camera_name(name)
        changes = dict(changes)
        asked = changes.pop("household", None)
        if asked is not None and asked != household:
            raise InvalidRequestError("a camera stays in its household; household cannot change")
        with self._lock:
            known = self._household_of(name)
            if known is not None and known != household:
                raise NotFoundError(f"no camera named {name!r}")
            existing = self._current.cameras.get(name)
            if "url" in changes:
                if not isinstance(changes["url"], str):
                    raise InvalidRequestError(f"camera {name}: url: must be a string")
                changes["url"] = unmask_url(changes["url"], existing.url if existing else None)
            elif existing is None:
                raise InvalidRequestError(f"camera {name}: url: a new camera needs a url")
            before = existing.model_dump(mode="json", exclude={"household"}) if existing else {}
            fields = _merge(before, changes)
            fields["household"] = _household_field(household, self._base)
            cam = validate_camera(fields, name=name)
            if cam == existing:
                return self._view(name, self._store.get(name))
            stored = self._store.put(
                name,
                household,
                cam.model_dump(mode="json", exclude={"household"}),
                now=self._clock(),
                by=owner.user_id,
            )
            try:
                self._audit.append(
                    AuditTag.SETTING_CHANGE,
                    actor,
                    f"camera {name}: {_describe_change(existing, cam)}",
                    camera=name,
                    household=household,
                )
            finally:
                self._refresh()
            return self._view(name, stored)

    def set_enabled(
        self, owner: Principal, name: str, enabled: bool, actor: Actor
    ) -> ManagedCamera:
        """Enable or disable one camera of the owner's household (see :meth:`put`).

        Raises:
            NotFoundError: no such camera in the owner's household.
        """
        self.camera(owner, name)
        return self.put(owner, name, {"enabled": enabled}, actor)

    def delete(self, owner: Principal, name: str, actor: Actor) -> None:
        """Delete a camera added in the app. Its footage stays (under retention), in its
        household.

        Raises:
            NotFoundError: no such camera in the owner's household.
            InvalidRequestError: the camera is the config file's (disable it instead); or it
                has footage and is of another household than the deployment's (its footage
                would then fall to the deployment's household, so it is disabled instead).
            PermissionDeniedError: the caller is not a household's owner.
            DatabaseError: the database failed.
        """
        household = self._owner_household(owner)
        with self._lock:
            self.camera(owner, name)
            if name in self._base.cameras:
                raise InvalidRequestError(
                    f"camera {name} is set in the config file: disable it here, or remove it "
                    "from the file"
                )
            if household != self._base.household and name in self._index.camera_names():
                raise InvalidRequestError(
                    f"camera {name} has recorded footage: disable it instead, so its footage "
                    "stays in your household until retention removes it"
                )
            if not self._store.delete(name):
                raise NotFoundError(f"no camera named {name!r}")
            try:
                self._audit.append(
                    AuditTag.SETTING_CHANGE,
                    actor,
                    f"camera {name}: deleted",
                    camera=name,
                    household=household,
                )
            finally:
                self._refresh()

    # testing

    def test_connection(
        self,
        owner: Principal,
        url: str,
        *,
        camera: str | None = None,
        rtsp_transport: str = "tcp",
    ) -> ConnectionTest:
        """Open ``url`` as :func:`probe_source` does. With ``camera`` (one of the owner's),
        a ``***`` password stands for that camera's stored one (see :func:`unmask_url`).

        Raises:
            InvalidRequestError: ``url`` is not a camera URL (``rtsp://``, ``rtsps://`` or
                ``file:``), or ``rtsp_transport`` is not ``tcp``/``udp``.
            NotFoundError: ``camera`` is not one of the owner's household.
            PermissionDeniedError: the caller is not a household's owner.
        """
        self._owner_household(owner)
        stored = self.settings_of(owner, camera).url if camera is not None else None
        real = unmask_url(url, stored)
        cam = validate_camera({"url": real, "rtsp_transport": rtsp_transport}, name="test")
        return probe_source(cam.url, rtsp_transport=cam.rtsp_transport, timeout=self._test_timeout)


def _describe_change(old: CameraSettings | None, new: CameraSettings) -> str:
    """What changed, by field name only (values may hold a password): ``added``,
    ``disabled``, ``enabled``, or ``changed url, motion.masks``."""
    if old is None:
        return "added" + ("" if new.enabled else " (disabled)")
    before = old.model_dump(mode="json")
    after = new.model_dump(mode="json")
    names: list[str] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key != "zones":
            names += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            names.append(key)
    if names == ["enabled"]:
        return "enabled" if new.enabled else "disabled"
    return "changed " + ", ".join(names)
