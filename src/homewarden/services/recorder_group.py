"""The recorders of every enabled camera, started and stopped together.

:class:`RecorderGroup` is what :class:`~homewarden.services.runtime.Runtime` needs of them:
start, a status per camera, :meth:`~RecorderGroup.update` to new settings while running (only
the cameras whose settings changed are stopped or started), stop. :class:`ThreadRecorderGroup`
runs each camera's :class:`~homewarden.services.recorder.CameraRecorder` as a thread of this
process, sharing the runtime's index; it is the default, and what one camera or
``recorder.processes = 1`` uses.
Recorder worker processes (``homewarden.workers.camera_worker``) implement the same protocol;
the layers above services hand them to the runtime as a :data:`RecorderGroupFactory`, since
services may not import workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from homewarden.config import CameraSettings, Settings
from homewarden.detect.person import load_person_detector
from homewarden.errors import LeaseLostError
from homewarden.services.queries import CameraStatusLike
from homewarden.services.recorder import CameraRecorder
from homewarden.services.sealed_footage import SegmentSealing, StoredRecordingKeys
from homewarden.store.index import Index
from homewarden.store.lease_store import LeaseStore
from homewarden.store.lockfile import DataDirLock

log = logging.getLogger(__name__)

#: Seconds a recorder whose camera changed gets to finish its segment before its successor
#: starts (a stuck one is logged and left to end on its own).
UPDATE_STOP_TIMEOUT = 10.0


class RecorderGroup(Protocol):
    """The cameras' recorders as one thing to start, watch and stop."""

    def start(self) -> None:
        """Start every recorder (returns at once; recording goes on in the background)."""

    def statuses(self) -> Mapping[str, CameraStatusLike]:
        """Live status of every recorder, by camera name (thread-safe)."""

    def update(self, settings: Settings) -> None:
        """Record the enabled cameras of ``settings`` from now on: a camera whose
        :class:`CameraSettings` changed is restarted with the new ones (finishing its segment
        in progress), a removed or disabled one stopped, a new one started; the others go on
        untouched. Thread-safe; may return before a restarted camera records again."""

    def stop(self, timeout: float) -> None:
        """Stop every recorder, each finishing its segment in progress, within ``timeout`` s.

        A recorder that does not stop in time is logged, never waited for beyond ``timeout``.
        """


class RecorderGroupFactory(Protocol):
    """Builds the recorder group of a runtime (:class:`ThreadRecorderGroup` is one).

    Args:
        settings: validated settings.
        index: the runtime's open and migrated index; the group may use it, never closes it.
        clock: UTC epoch seconds.
        lock: the runtime's hold on the data dir; a group running recorders in other
            processes hands it to them, so the data dir stays locked while any of them lives.
        fence_node: on a recorder node (``--role recorder``), its id: every recorder's
            segments are indexed only under the node's lease of the camera (see
            :func:`build_recorders`), and ``settings`` start with the cameras leased so far
            (often none; :meth:`RecorderGroup.update` brings the others). None: no leases.
    """

    def __call__(
        self,
        settings: Settings,
        index: Index,
        clock: Callable[[], float],
        *,
        lock: DataDirLock | None,
        fence_node: int | None = None,
    ) -> RecorderGroup: ...


def enabled_cameras(settings: Settings) -> dict[str, CameraSettings]:
    """The cameras to record: every configured camera not disabled, in configuration order."""
    return {name: cam for name, cam in settings.cameras.items() if cam.enabled}


def changed_cameras(
    old: Mapping[str, CameraSettings], new: Mapping[str, CameraSettings]
) -> tuple[list[str], list[str]]:
    """What to stop and what to start going from recording ``old`` to ``new`` (camera name
    -> settings): ``(stop, start)``; a camera whose settings differ is in both."""
    stop = [name for name, cam in old.items() if new.get(name) != cam]
    start = [name for name, cam in new.items() if old.get(name) != cam]
    return stop, start


def sealed_household(settings: Settings) -> str | None:
    """``settings.household`` when new segments are sealed (``storage.sealed``), else None
    (the ``sealed_household`` of :func:`build_recorders`)."""
    return settings.household if settings.storage.sealed else None


def build_recorders(
    cameras: Mapping[str, CameraSettings],
    *,
    media_dir: Path,
    snapshot_dir: Path,
    models_dir: Path,
    index: Index,
    clock: Callable[[], float] = time.time,
    fence_node: int | None = None,
    sealed_household: str | None = None,
) -> dict[str, CameraRecorder]:
    """One unstarted :class:`CameraRecorder` per camera, with its person detector if enabled.

    Args:
        cameras: camera name -> settings.
        media_dir, snapshot_dir: where segments and snapshots go.
        models_dir: cache of detector models (``<cache_dir>/models``).
        index: the index the recorders write to.
        clock: UTC epoch seconds.
        fence_node: a recorder node's id: each recorder is fenced by the node's current
            lease of its camera (:meth:`~homewarden.store.lease_store.LeaseStore.fence`); a
            camera whose lease the node does not hold is logged and left out.
        sealed_household: with ``storage.sealed``, the deployment's household
            (``settings.household``): each camera's segments are sealed to its own
            household's (this one unless the camera names another) current public key, read
            from the index (:class:`~homewarden.services.sealed_footage.StoredRecordingKeys`);
            None: plaintext segments.

    Raises:
        DatabaseError: with ``fence_node``, the leases cannot be read.
    """
    recorders: dict[str, CameraRecorder] = {}
    leases = LeaseStore(index) if fence_node is not None else None
    keys = StoredRecordingKeys(index) if sealed_household is not None else None
    for name, cam in cameras.items():
        guard = None
        if leases is not None and fence_node is not None:
            try:
                guard = leases.fence(name, fence_node)
            except LeaseLostError as exc:
                log.error("camera %s not started: %s", name, exc)
                continue
        detector = None
        if cam.person_detector:
            detector, why = load_person_detector(models_dir)
            log.info("camera %s: person detector: %s", name, why)
        recorders[name] = CameraRecorder(
            name,
            cam,
            media_dir,
            snapshot_dir,
            index,
            clock=clock,
            person_detector=detector,
            segment_guard=guard,
            sealing=None
            if keys is None or sealed_household is None
            else SegmentSealing(cam.household or sealed_household, keys),
        )
    return recorders


def stop_recorders(recorders: Mapping[str, CameraRecorder], timeout: float) -> list[str]:
    """Ask every recorder to stop at once, then wait up to ``timeout`` s in all for them.

    Returns:
        Names of the recorders still running after ``timeout`` (each is logged).
    """
    for rec in recorders.values():
        rec.stop(0.0)  # ask every camera at once; they finish their segments in parallel
    deadline = time.monotonic() + timeout
    late = []
    for name, rec in recorders.items():
        if not rec.stop(max(0.0, deadline - time.monotonic())):
            log.error("camera %s did not stop within %.0f s", name, timeout)
            late.append(name)
    return late


class ThreadRecorderGroup:
    """Every enabled camera of ``settings`` recorded by a thread of this process.

    Args:
        settings: validated settings (cameras, media and snapshot dirs).
        index: the open index the recorders write to (thread-safe).
        clock: UTC epoch seconds, handed to each recorder.
        lock: the runtime's data dir lock; unused (threads share this process's hold).
        start_spread: seconds over which :meth:`start` spreads the cameras' starts (camera
            ``i`` of ``n`` after ``i * start_spread / n`` s; :meth:`start` blocks that long).
            0, the default: all at once. Benchmarks of paced ``file:`` cameras use one GOP,
            so their keyframes do not all fall at the same instant.
        fence_node: a recorder node's id (see :class:`RecorderGroupFactory`).
    """

    def __init__(
        self,
        settings: Settings,
        index: Index,
        clock: Callable[[], float] = time.time,
        *,
        lock: DataDirLock | None = None,
        start_spread: float = 0.0,
        fence_node: int | None = None,
    ) -> None:
        self._start_spread = start_spread
        for name, cam in settings.cameras.items():
            if not cam.enabled:
                log.info("camera %s is disabled", name)
        self._index = index
        self._clock = clock
        self._fence_node = fence_node
        cameras = enabled_cameras(settings)
        self._recorders = build_recorders(
            cameras,
            media_dir=settings.media_dir,
            snapshot_dir=settings.snapshot_dir,
            models_dir=settings.cache_dir / "models",
            index=index,
            clock=clock,
            fence_node=fence_node,
            sealed_household=sealed_household(settings),
        )
        self._cameras = {n: cam for n, cam in cameras.items() if n in self._recorders}
        self._started = False
        self._update_lock = threading.Lock()  # one update at a time; statuses() never waits

    def start(self) -> None:
        """Start one recorder thread per camera."""
        self._started = True
        for i, (name, rec) in enumerate(self._recorders.items()):
            if i and self._start_spread > 0:
                time.sleep(self._start_spread / len(self._recorders))
            rec.start()
            log.info("camera %s started", name)

    def statuses(self) -> Mapping[str, CameraStatusLike]:
        """Each recorder's :meth:`CameraRecorder.status`, by camera name."""
        return {name: rec.status() for name, rec in self._recorders.items()}

    def update(self, settings: Settings, timeout: float = UPDATE_STOP_TIMEOUT) -> None:
        """See :meth:`RecorderGroup.update`; the changed cameras' recorders are stopped
        (up to ``timeout`` s, or the camera's ``stall_timeout`` and 2 s if longer, finishing
        their segments) before their successors start, so two recorders never write one
        camera: a recorder still running after that is logged and its successor not started
        (the camera records again at the next update or start)."""
        with self._update_lock:
            new = enabled_cameras(settings)
            stop, start = changed_cameras(self._cameras, new)
            if not stop and not start:
                return
            # A recorder blocked on a silent read ends once its stall timeout passes.
            wait = max([timeout] + [self._cameras[n].stall_timeout + 2.0 for n in stop])
            late = set(stop_recorders({n: self._recorders[n] for n in stop}, wait))
            for name in sorted(late & set(start)):
                log.error("camera %s: its old recorder still runs; not starting a second", name)
            started = build_recorders(
                {n: new[n] for n in start if n not in late},
                media_dir=settings.media_dir,
                snapshot_dir=settings.snapshot_dir,
                models_dir=settings.cache_dir / "models",
                index=self._index,
                clock=self._clock,
                fence_node=self._fence_node,
                sealed_household=sealed_household(settings),
            )
            kept = {n: r for n, r in self._recorders.items() if n not in stop}
            recorders = {**kept, **started}
            # a camera left unfenced (its lease lost meanwhile) is not recorded
            self._cameras = {n: cam for n, cam in new.items() if n not in late and n in recorders}
            self._recorders = recorders  # one assignment: statuses() sees old or new
            for name in stop:
                why = "changed" if name in new else "disabled, removed or no longer leased"
                log.info("camera %s stopped (%s)", name, why)
            if self._started:
                for name, rec in started.items():
                    rec.start()
                    log.info("camera %s started", name)

    def stop(self, timeout: float) -> None:
        """Stop every recorder (see :func:`stop_recorders`)."""
        with self._update_lock:
            self._started = False  # an update after this starts nothing
            stop_recorders(self._recorders, timeout)
