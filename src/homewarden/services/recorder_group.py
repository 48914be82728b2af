"""The recorders of every enabled camera, started and stopped together.

:class:`RecorderGroup` is what :class:`~homewarden.services.runtime.Runtime` needs of them:
start, a status per camera, stop. :class:`ThreadRecorderGroup` runs each camera's
:class:`~homewarden.services.recorder.CameraRecorder` as a thread of this process, sharing the
runtime's index; it is the default, and what one camera or ``recorder.processes = 1`` uses.
Recorder worker processes (``homewarden.workers.camera_worker``) implement the same protocol;
the layers above services hand them to the runtime as a :data:`RecorderGroupFactory`, since
services may not import workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from homewarden.config import CameraSettings, Settings
from homewarden.detect.person import load_person_detector
from homewarden.services.queries import CameraStatusLike
from homewarden.services.recorder import CameraRecorder
from homewarden.store.index import Index
from homewarden.store.lockfile import DataDirLock

log = logging.getLogger(__name__)


class RecorderGroup(Protocol):
    """The cameras' recorders as one thing to start, watch and stop."""

    def start(self) -> None:
        """Start every recorder (returns at once; recording goes on in the background)."""

    def statuses(self) -> Mapping[str, CameraStatusLike]:
        """Live status of every recorder, by camera name (thread-safe)."""

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
    """

    def __call__(
        self,
        settings: Settings,
        index: Index,
        clock: Callable[[], float],
        *,
        lock: DataDirLock | None,
    ) -> RecorderGroup: ...


def enabled_cameras(settings: Settings) -> dict[str, CameraSettings]:
    """The cameras to record: every configured camera not disabled, in configuration order."""
    return {name: cam for name, cam in settings.cameras.items() if cam.enabled}


def build_recorders(
    cameras: Mapping[str, CameraSettings],
    *,
    media_dir: Path,
    snapshot_dir: Path,
    models_dir: Path,
    index: Index,
    clock: Callable[[], float] = time.time,
) -> dict[str, CameraRecorder]:
    """One unstarted :class:`CameraRecorder` per camera, with its person detector if enabled.

    Args:
        cameras: camera name -> settings.
        media_dir, snapshot_dir: where segments and snapshots go.
        models_dir: cache of detector models (``<cache_dir>/models``).
        index: the index the recorders write to.
        clock: UTC epoch seconds.
    """
    recorders: dict[str, CameraRecorder] = {}
    for name, cam in cameras.items():
        detector = None
        if cam.person_detector:
            detector, why = load_person_detector(models_dir)
            log.info("camera %s: person detector: %s", name, why)
        recorders[name] = CameraRecorder(
            name, cam, media_dir, snapshot_dir, index, clock=clock, person_detector=detector
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
    """

    def __init__(
        self,
        settings: Settings,
        index: Index,
        clock: Callable[[], float] = time.time,
        *,
        lock: DataDirLock | None = None,
        start_spread: float = 0.0,
    ) -> None:
        self._start_spread = start_spread
        for name, cam in settings.cameras.items():
            if not cam.enabled:
                log.info("camera %s is disabled", name)
        self._recorders = build_recorders(
            enabled_cameras(settings),
            media_dir=settings.media_dir,
            snapshot_dir=settings.snapshot_dir,
            models_dir=settings.cache_dir / "models",
            index=index,
            clock=clock,
        )

    def start(self) -> None:
        """Start one recorder thread per camera."""
        for i, (name, rec) in enumerate(self._recorders.items()):
            if i and self._start_spread > 0:
                time.sleep(self._start_spread / len(self._recorders))
            rec.start()
            log.info("camera %s started", name)

    def statuses(self) -> Mapping[str, CameraStatusLike]:
        """Each recorder's :meth:`CameraRecorder.status`, by camera name."""
        return {name: rec.status() for name, rec in self._recorders.items()}

    def stop(self, timeout: float) -> None:
        """Stop every recorder (see :func:`stop_recorders`)."""
        stop_recorders(self._recorders, timeout)
