"""Recorder worker processes: the cameras split over N processes, each recording its share.

Why processes (issue 2, "Speed": 64 cameras on a 2-core machine, no segment lost): PyAV
releases the interpreter lock while it demuxes, decodes, scales and muxes - ~80 % of a
camera's CPU is H.264 decoding - but the rest runs Python under the lock: ~17 us per packet of
timestamps, segment cuts and remux calls, and, with motion sensing, the motion math on small
frames and the event and index bookkeeping, ~0.2 s per camera-minute in all. 64 camera threads
in one process hold the lock only ~20-30 % of the time, yet each thread coming back from a
decode waits its turn for it (a probe thread's wake-up delay went from p90 0.3 ms / p99 4 ms
at 32 cameras to 7 ms / 39 ms at 64), and the process could not use the second core: it
stayed at ~1.45 cores, fell 11 s behind real time and lost 25 of 192 segments while 0.4 cores
sat idle; the same 64 cameras in two processes lost none (bench/cameras.py, README there).
Frigate likewise runs each camera in a process of its own; here a process runs its share of
the cameras as threads (:class:`~homewarden.services.recorder.CameraRecorder`, unchanged),
since each process costs ~130 MB of its own (an interpreter with PyAV, NumPy, OpenCV and
SQLAlchemy loaded).

:class:`RecorderProcessPool` is a :class:`~homewarden.services.recorder_group.RecorderGroup`:

* **Start.** Enabled cameras are dealt round-robin over ``processes`` workers (default: one
  per CPU core, ``recorder.processes``), each started with the ``spawn`` method (a fresh
  interpreter: forking a process that runs threads can copy a lock held by another thread).
  Each worker opens its own :class:`~homewarden.store.index.Index` on ``db_url`` (the parent
  has migrated it) and starts its cameras' recorders.
* **Status.** Every :data:`STATUS_INTERVAL` s a worker sends its cameras'
  :class:`~homewarden.services.recorder.CameraStatus` snapshots to the parent over a pipe of
  its own; :meth:`RecorderProcessPool.statuses` returns the latest, so the API sees every
  camera as if it ran in the parent (up to :data:`STATUS_INTERVAL` s old).
* **Logging.** A worker's log records travel the same pipe and are handled by the parent's
  logger of the same name: they reach the parent's log as if logged there.
* **The data dir lock.** Each worker is handed a duplicate of the runtime's
  :class:`~homewarden.store.lockfile.DataDirLock` descriptor, so the data dir stays locked
  while any worker lives - an orphaned worker finishing its segment after its parent was
  killed keeps a new ``homewarden run`` from reconciling that segment under it.
* **Stop.** :meth:`RecorderProcessPool.stop` sends SIGTERM; a worker then stops its
  recorders (each finishes its segment in progress), sends a last status and exits. A worker
  still running after the timeout is killed and logged. Workers ignore SIGINT: Ctrl-C reaches
  the whole process group, and the parent stops them in order. A worker whose parent is gone
  (its pipe breaks, or it is re-parented) stops the same way.
* **Update.** :meth:`RecorderProcessPool.update` takes new settings while running: a new
  camera goes to a new worker while there are fewer than ``processes``, else to the worker
  with the fewest cameras; cameras never move between workers. A running worker whose share
  changed is sent its new share over its control pipe and applies it in place, as
  :meth:`~homewarden.services.recorder_group.ThreadRecorderGroup.update` does: the recorders
  of its removed, disabled or changed cameras stop (each finishing its segment), then the new
  and changed ones start; its other cameras' recorders go on untouched - no gap, the same
  connection (restarting the process cost each of them 5-7 s of footage, and with leases a
  recorder node's share changes at every lease change). The worker acknowledges once done;
  one that does not within the time its stopping recorders get plus ``update_timeout`` s, or
  cannot build the new recorders, is stopped as at stop (logged) and started again with its
  new share, as is a worker whose share became empty (it is not started again). A dead
  worker waiting for its restart is started at once with its new share. Workers whose share
  did not change are not touched.
* **Restart.** A worker that dies (a crash in native code, the OOM killer, ``kill -9``) is
  logged, its cameras shown ``reconnecting`` with the reason, and it is restarted after 1 s,
  doubling to 30 s while it keeps dying (reset once it ran :data:`STABLE_SECONDS`). Before
  the restart its cameras - and only those; the others are recording - are reconciled with
  the disk (:func:`~homewarden.services.reconcile.reconcile`): the segment it was writing is
  kept up to its last fragment and indexed, its open gaps and events are closed. The outage
  itself is then recorded by the restarted recorder as a gap from its last footage.

Each worker's pipes are its own, so a worker killed mid-message can garble only its own pipe,
which is closed and replaced on restart (a queue shared by all workers would be left locked).
A worker has two one-way pipes - statuses and logs up, control messages down - rather than
one duplex pipe, so the monitor thread reading from a worker and
:meth:`RecorderProcessPool.update` writing to it never share a connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import multiprocessing.reduction
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from homewarden.config import CameraSettings, Settings
from homewarden.errors import HomeWardenError
from homewarden.services.queries import CameraStatusLike
from homewarden.services.reconcile import reconcile
from homewarden.services.recorder import CameraRecorder, CameraStatus
from homewarden.services.recorder_group import (
    UPDATE_STOP_TIMEOUT,
    RecorderGroup,
    ThreadRecorderGroup,
    build_recorders,
    changed_cameras,
    enabled_cameras,
    sealed_household,
    stop_recorders,
)
from homewarden.store.index import Index
from homewarden.store.lockfile import DataDirLock

log = logging.getLogger(__name__)

#: Seconds between a worker's status snapshots (the API's view is at most this old).
STATUS_INTERVAL = 1.0
#: Restart back-off of a dead worker: 1 s doubling to 30 s, as a camera's reconnection.
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
#: A worker that ran this long before dying is restarted after :data:`RESTART_FIRST` again.
STABLE_SECONDS = 60.0
#: Seconds a stopping worker gives its recorders to finish their segments.
WORKER_STOP_TIMEOUT = 12.0
#: Seconds to wait for a killed worker to be reaped.
KILL_WAIT = 5.0
#: Seconds a worker gets to acknowledge an update, beyond what its stopping recorders get:
#: building the new ones (a lease read, a detector model load) and the pipes' round trip.
UPDATE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker process records; pickled to the spawned interpreter.

    Attributes:
        number: the worker's number (1-based), in its process name ``recorder-<number>``.
        db_url: SQLAlchemy URL of the (already migrated) index.
        media_dir, snapshot_dir: where segments and event snapshots go.
        models_dir: cache of detector models, for cameras with ``person_detector``.
        cameras: camera name -> settings, this worker's share.
        log_level: the parent's root log level; records below it are not sent.
        status_interval: seconds between status snapshots.
        stop_timeout: seconds the recorders get to finish their segments at stop.
        start_delays: camera name -> seconds after the worker is up to start that camera
            (absent: at once); see ``start_spread`` of :class:`RecorderProcessPool`.
        fence_node: a recorder node's id: segments are indexed only under its leases (see
            :func:`~homewarden.services.recorder_group.build_recorders`); None: no leases.
        sealed_household: with ``storage.sealed``, the deployment's household: segments
            are sealed to their camera's household key (see ``build_recorders``); None: not.
    """

    number: int
    db_url: str
    media_dir: Path
    snapshot_dir: Path
    models_dir: Path
    cameras: dict[str, CameraSettings]
    log_level: int = logging.INFO
    status_interval: float = STATUS_INTERVAL
    stop_timeout: float = WORKER_STOP_TIMEOUT
    start_delays: dict[str, float] = dataclasses.field(default_factory=dict)
    fence_node: int | None = None
    sealed_household: str | None = None


def process_count(settings: Settings) -> int:
    """Recorder processes wanted: ``recorder.processes``, or one per CPU core when unset."""
    return settings.recorder.processes or os.cpu_count() or 1


def split_cameras(names: Sequence[str], processes: int) -> list[list[str]]:
    """Deal ``names`` round-robin into ``min(processes, len(names))`` non-empty shares.

    Round-robin keeps the shares within one camera of each other; cameras of one deployment
    cost about the same (bench/cameras.py), so equal counts spread the load evenly.
    """
    k = max(1, min(processes, len(names)))
    return [list(names[i::k]) for i in range(k)] if names else []


def recorder_pool(
    settings: Settings,
    index: Index,
    clock: Callable[[], float] = time.time,
    *,
    lock: DataDirLock | None = None,
    start_spread: float = 0.0,
    fence_node: int | None = None,
) -> RecorderGroup:
    """The :data:`~homewarden.services.recorder_group.RecorderGroupFactory` of ``homewarden
    run``: worker processes for two or more cameras when ``recorder.processes`` (default: the
    CPU count) is above 1; otherwise threads of this process.

    ``clock`` reaches the recorders only when they run in this process; worker processes use
    the system clock. ``lock`` and ``start_spread``: see :class:`RecorderProcessPool`.
    ``fence_node``: a recorder node's id; its cameras come and go with its leases, so the
    choice follows ``recorder.processes`` alone (a pool may start with no camera).
    """
    processes = process_count(settings)
    cameras = enabled_cameras(settings)
    if processes <= 1 if fence_node is not None else min(processes, len(cameras)) <= 1:
        return ThreadRecorderGroup(
            settings, index, clock, start_spread=start_spread, fence_node=fence_node
        )
    for name, cam in settings.cameras.items():
        if not cam.enabled:
            log.info("camera %s is disabled", name)
    return RecorderProcessPool(
        cameras,
        processes=processes,
        db_url=settings.db_url,
        media_dir=settings.media_dir,
        snapshot_dir=settings.snapshot_dir,
        models_dir=settings.cache_dir / "models",
        index=index,
        lock=lock,
        start_spread=start_spread,
        fence_node=fence_node,
        sealed_household=sealed_household(settings),
    )


def _initial_status(name: str, cam: CameraSettings) -> CameraStatus:
    return CameraStatus(
        name=name,
        state="starting",
        connected_since=None,
        last_packet_at=None,
        fps_in=0.0,
        bitrate=0.0,
        decode_mode="keyframes" if cam.motion.enabled else "off",
        segments_written=0,
        gaps_open=0,
        last_error=None,
        next_retry_at=None,
    )


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Worker:
    """The parent's record of one worker process (touched by the monitor thread and stop)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.process: BaseProcess | None = None
        self.reader: Connection | None = None
        self.started_at = 0.0  # monotonic
        self.backoff = RESTART_FIRST
        self.restart_at: float | None = None  # monotonic time of a scheduled restart
        self.last_pid: int | None = None
        #: The spec ``update`` asked for: sent to the live process until it acknowledges,
        #: else run once the current process has ended.
        self.pending: WorkerSpec | None = None
        self.last_exit: int | None = None
        #: Parent -> worker control messages (None while no process runs).
        self.control: Connection | None = None
        #: Number of the last update sent over ``control``; acknowledged with it.
        self.sent = 0
        #: Monotonic time by which the live process must acknowledge update ``sent``.
        self.ack_deadline: float | None = None
        #: Monotonic time to kill a process stopped for an update it did not apply.
        self.kill_at: float | None = None

    @property
    def wanted(self) -> WorkerSpec:
        """The spec this worker is to run: the pending one, else the current one."""
        return self.pending if self.pending is not None else self.spec

    @property
    def name(self) -> str:
        return f"recorder-{self.spec.number}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.exitcode is None

    def describe(self) -> str:
        pid = self.process.pid if self.process is not None else self.last_pid
        return f"recorder process {self.spec.number} (pid {pid}; {', '.join(self.spec.cameras)})"


class RecorderProcessPool:
    """Cameras recorded by worker processes (see the module docstring).

    Args:
        cameras: camera name -> settings of every camera to record (all enabled).
        processes: worker processes wanted; at most one per camera is started.
        db_url: SQLAlchemy URL of the index, already migrated (the workers do not migrate).
        media_dir, snapshot_dir: where segments and snapshots go.
        models_dir: cache of detector models.
        index: the parent's open index, used to reconcile a dead worker's cameras before it
            restarts; None skips that (its ``.part`` file then waits for the next start-up).
        status_interval: seconds between status snapshots of each worker.
        log_level: lowest level workers send; None: the parent's root logger level at start.
        lock: the runtime's hold on the data dir, shared with every worker (see the module
            docstring); None: the workers hold nothing.
        start_spread: seconds over which the cameras' starts are spread, camera ``i`` of
            ``n`` (configuration order) starting ``i * start_spread / n`` s after its worker
            is up. 0 (``homewarden run``): all at once. Benchmarks of paced ``file:`` cameras
            spread them over one GOP, so their keyframes do not all fall at the same instant
            as they would never do for independent cameras.
        fence_node: a recorder node's id, handed to every worker (see :class:`WorkerSpec`);
            a dead worker's cameras are reconciled only while the node still records them.
        sealed_household: see :class:`WorkerSpec` (``storage.sealed``); None: plaintext.
        update_timeout: seconds a running worker gets to acknowledge a change of its share
            beyond what its stopping recorders get (see the module docstring, "Update").
    """

    def __init__(
        self,
        cameras: Mapping[str, CameraSettings],
        *,
        processes: int,
        db_url: str,
        media_dir: Path,
        snapshot_dir: Path,
        models_dir: Path,
        index: Index | None = None,
        status_interval: float = STATUS_INTERVAL,
        log_level: int | None = None,
        lock: DataDirLock | None = None,
        start_spread: float = 0.0,
        fence_node: int | None = None,
        sealed_household: str | None = None,
        update_timeout: float = UPDATE_TIMEOUT,
    ) -> None:
        self._cameras = dict(cameras)
        self._update_timeout = update_timeout
        self._fenced = fence_node is not None
        self._processes = processes
        self._data_lock = lock
        delays = {
            name: i * start_spread / len(self._cameras) for i, name in enumerate(self._cameras)
        }
        self._media_dir = media_dir
        self._sealed = sealed_household is not None
        self._index = index
        self._ctx = multiprocessing.get_context("spawn")  # see the module docstring
        level = logging.getLogger().getEffectiveLevel() if log_level is None else log_level
        self._template = WorkerSpec(  # what a worker added by update() runs, but its cameras
            number=0,
            db_url=db_url,
            media_dir=media_dir,
            snapshot_dir=snapshot_dir,
            models_dir=models_dir,
            cameras={},
            log_level=level,
            status_interval=status_interval,
            fence_node=fence_node,
            sealed_household=sealed_household,
        )
        self._workers = [
            _Worker(
                WorkerSpec(
                    number=i + 1,
                    db_url=db_url,
                    media_dir=media_dir,
                    snapshot_dir=snapshot_dir,
                    models_dir=models_dir,
                    cameras={name: self._cameras[name] for name in share},
                    log_level=level,
                    status_interval=status_interval,
                    start_delays={name: delays[name] for name in share if delays[name] > 0},
                    fence_node=fence_node,
                    sealed_household=sealed_household,
                )
            )
            for i, share in enumerate(split_cameras(list(self._cameras), processes))
        ]
        self._lock = threading.RLock()  # statuses; spawning vs stopping
        self._statuses: dict[str, CameraStatus] = {
            name: _initial_status(name, cam) for name, cam in self._cameras.items()
        }
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._restarts = 0

    # -- public --------------------------------------------------------------------------

    @property
    def processes(self) -> int:
        """Worker processes this pool runs (at most one per camera)."""
        return len(self._workers)

    @property
    def restarts(self) -> int:
        """Workers restarted after dying, since start."""
        return self._restarts

    def pids(self) -> dict[int, int | None]:
        """Worker number -> pid of its current process (None while it waits for a restart)."""
        with self._lock:
            return {
                w.spec.number: (w.process.pid if w.alive and w.process is not None else None)
                for w in self._workers
            }

    def cameras_of(self, number: int) -> list[str]:
        """The cameras worker ``number`` records."""
        return list(self._workers[number - 1].spec.cameras)

    def start(self) -> None:
        """Start every worker and the monitor thread (``recorder-pool``).

        Raises:
            RuntimeError: already started.
        """
        if self._monitor is not None:
            raise RuntimeError("recorder pool already started")
        for w in self._workers:
            self._spawn(w)
        self._monitor = threading.Thread(target=self._watch, name="recorder-pool", daemon=True)
        self._monitor.start()

    def statuses(self) -> Mapping[str, CameraStatusLike]:
        """The latest status of every camera, as its worker last sent it (thread-safe)."""
        with self._lock:
            return dict(self._statuses)

    def update(self, settings: Settings) -> None:
        """Record the enabled cameras of ``settings`` from now on (see the module docstring,
        "Update"; :meth:`RecorderGroup.update`). Returns at once: a running worker applies its
        new share in place and acknowledges it (:meth:`cameras_of` shows the new share from
        then on); the monitor thread falls back to restarting one that does not in time.
        """
        new = enabled_cameras(settings)
        with self._lock:
            if self._stopping.is_set():
                return
            current = {n: c for w in self._workers for n, c in w.wanted.cameras.items()}
            stop, start = changed_cameras(current, new)
            if not stop and not start:
                return
            shares = {w.spec.number: dict(w.wanted.cameras) for w in self._workers}
            for share in shares.values():
                for name in [n for n in share if n in stop]:
                    if name in new:
                        share[name] = new[name]
                    else:
                        del share[name]
            for name in [n for n in start if n not in current]:  # new cameras
                if len(self._workers) < self._processes:
                    number = len(self._workers) + 1
                    self._workers.append(
                        _Worker(dataclasses.replace(self._template, number=number))
                    )
                    shares[number] = {}
                fewest = min(
                    self._workers, key=lambda w: (len(shares[w.spec.number]), w.spec.number)
                )
                shares[fewest.spec.number][name] = new[name]
            for name in stop:
                if name not in new:
                    self._statuses.pop(name, None)
            for name in start:
                self._statuses[name] = _initial_status(name, new[name])
            self._cameras = {n: new[n] for n in new}
            for w in self._workers:
                share = shares[w.spec.number]
                if share == w.wanted.cameras:
                    continue
                spec = dataclasses.replace(w.spec, cameras=share, start_delays={})
                if self._monitor is None:  # not started: nothing runs yet
                    w.spec = spec
                    continue
                old = w.wanted.cameras
                w.pending = spec
                if not (w.alive and w.process is not None):
                    continue  # the monitor starts it with its pending spec
                if share and w.control is not None and w.kill_at is None:
                    self._send_update(w, old, share)
                else:  # nothing left to record, or already stopping: let it end
                    log.info("%s: cameras changed; stopping it", w.describe())
                    w.ack_deadline = None
                    w.process.terminate()  # it finishes its segments; the monitor restarts it

    def _send_update(
        self, w: _Worker, old: Mapping[str, CameraSettings], share: dict[str, CameraSettings]
    ) -> None:
        """Send ``w``'s live process its new ``share`` to apply in place; if the pipe is
        broken (it is dying), let it end and start again. Called holding ``self._lock``."""
        assert w.control is not None
        assert w.process is not None
        stop, _ = changed_cameras(old, share)
        # What its recorders get to stop (as ThreadRecorderGroup.update), then the slack.
        wait = max([UPDATE_STOP_TIMEOUT] + [old[n].stall_timeout + 2.0 for n in stop])
        wait = wait if stop else 0.0
        w.sent += 1
        try:
            w.control.send(("update", w.sent, share))
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot send its new cameras (%s); restarting it", w.describe(), exc)
            w.ack_deadline = None
            w.process.terminate()
            return
        now = time.monotonic()
        # Updates are applied in order: this one after any still unacknowledged.
        w.ack_deadline = max(now, w.ack_deadline or now) + wait + self._update_timeout
        log.info("%s: cameras changed; sent its new share", w.describe())

    def stop(self, timeout: float) -> None:
        """SIGTERM every worker; wait up to ``timeout`` s for them to finish their segments and
        exit; kill (and log) any still running. Safe to call more than once."""
        with self._lock:
            self._stopping.set()
            for w in self._workers:
                w.restart_at = None
                if w.alive and w.process is not None:
                    w.process.terminate()
        deadline = time.monotonic() + timeout
        monitor = self._monitor
        if monitor is not None:
            monitor.join(max(0.0, deadline - time.monotonic()))
        for w in self._workers:
            process = w.process
            if process is not None and process.exitcode is None:
                process.join(max(0.0, deadline - time.monotonic()))  # if the monitor gave up
            if process is not None and process.exitcode is None:
                log.error("%s did not stop within %.0f s; killing it", w.describe(), timeout)
                process.kill()
                process.join(KILL_WAIT)
        if monitor is not None:
            monitor.join(KILL_WAIT)
        for w in self._workers:
            if w.reader is not None:  # no monitor ran (never started), or it gave up
                w.reader.close()
                w.reader = None
            if w.control is not None:
                w.control.close()
                w.control = None
        with self._lock:
            for name, st in self._statuses.items():
                if st.state != "stopped":
                    self._statuses[name] = dataclasses.replace(
                        st, state="stopped", connected_since=None, fps_in=0.0, bitrate=0.0
                    )

    # -- the parent's side -----------------------------------------------------------------

    def _spawn(self, w: _Worker) -> None:
        """Start ``w``'s process with a fresh pipe; a failure is logged and retried later.
        A worker with no camera (all removed) is not started."""
        if not w.spec.cameras:
            return
        reader, writer = self._ctx.Pipe(duplex=False)
        orders, control = self._ctx.Pipe(duplex=False)  # the child reads, we write
        lock = self._data_lock
        held = [_InheritedFd(fd) for fd in lock.filenos()] if lock is not None and lock.held else []
        process = self._ctx.Process(
            target=worker_main, args=(w.spec, writer, held, orders), name=w.name, daemon=True
        )
        with self._lock:
            if self._stopping.is_set():
                for end in (reader, writer, orders, control):
                    end.close()
                return
            try:
                process.start()
            except OSError as exc:
                for end in (reader, writer, orders, control):
                    end.close()
                log.error("cannot start %s: %s", w.describe(), exc)
                self._schedule_restart(w, f"cannot start its recorder process: {exc}")
                return
            writer.close()  # the child holds the write end; EOF on ours means it is gone
            orders.close()  # and the read end of its orders: EOF there means we are gone
            w.process, w.reader, w.control = process, reader, control
            w.last_pid = process.pid
            w.started_at = time.monotonic()
            w.restart_at = None
        log.info("%s started", w.describe())

    def _watch(self) -> None:
        """Monitor thread: take in statuses and log records, restart dead workers."""
        try:
            while True:
                waitables: list[Any] = []
                for w in self._workers:
                    if w.reader is not None:
                        waitables.append(w.reader)
                    elif w.alive and w.process is not None:
                        waitables.append(w.process.sentinel)
                if waitables:
                    ready = multiprocessing.connection.wait(waitables, timeout=0.25)
                else:  # every worker waits for its restart
                    ready = []
                    time.sleep(0.25)
                for w in self._workers:
                    if w.reader is not None and w.reader in ready:
                        self._drain(w)
                for w in self._workers:
                    if w.reader is None and w.process is not None and not w.alive:
                        self._ended(w)
                if self._stopping.is_set():
                    if all(w.reader is None and not w.alive for w in self._workers):
                        return
                    continue
                for w in list(self._workers):
                    if w.pending is not None and w.reader is None and not w.alive:
                        self._replace(w)
                now = time.monotonic()
                for w in self._workers:
                    if w.restart_at is not None and now >= w.restart_at:
                        self._restart(w)
                    self._check_update(w, now)
        except Exception:  # a bug here must not pass silently; cameras keep their last status
            log.exception("recorder pool monitor crashed")

    def _drain(self, w: _Worker) -> None:
        """Handle every message waiting on ``w``'s pipe; close it at EOF or garbage."""
        reader = w.reader
        assert reader is not None
        try:
            while reader.poll():
                self._handle(w, reader.recv())
        except (EOFError, OSError):
            pass  # the worker is gone (a killed one may have cut a message short)
        except Exception as exc:  # an unpicklable or garbled message from a dying worker
            log.warning("%s: unreadable message (%s); closing its pipe", w.describe(), exc)
        else:
            return
        reader.close()
        w.reader = None
        if w.process is not None:
            w.process.join(KILL_WAIT)  # EOF comes as it exits; reap it

    def _check_update(self, w: _Worker, now: float) -> None:
        """Fall back to a restart for a live worker that did not acknowledge its update in
        time; kill one that, stopped for it, did not end in time either."""
        with self._lock:
            process = w.process
            if process is None or not w.alive:
                return
            if w.ack_deadline is not None and now >= w.ack_deadline:
                log.warning("%s did not apply its new cameras in time; restarting it", w.describe())
                self._stop_for_update(w)
            elif w.kill_at is not None and now >= w.kill_at:
                log.error("%s did not stop in time; killing it", w.describe())
                w.kill_at = None
                process.kill()

    def _stop_for_update(self, w: _Worker) -> None:
        """Stop ``w`` (finishing its segments; killed if it does not end in time), to start
        again with its pending spec. Called holding ``self._lock``."""
        w.ack_deadline = None
        w.kill_at = time.monotonic() + w.spec.stop_timeout + KILL_WAIT
        if w.process is not None:
            w.process.terminate()

    def _handle(self, w: _Worker, message: Any) -> None:
        kind, payload = message
        if kind == "status":
            with self._lock:
                for name, status in payload.items():
                    # Not a camera update() removed: a stopping worker's last word on it.
                    if name in w.wanted.cameras and name in self._statuses:
                        self._statuses[name] = status
        elif kind == "updated":
            number, applied = payload
            with self._lock:
                if number != w.sent or w.pending is None or w.ack_deadline is None:
                    return  # an update since superseded, or one given up on
                if not applied:
                    log.warning("%s could not apply its new cameras; restarting it", w.describe())
                    self._stop_for_update(w)
                    return
                w.spec, w.pending, w.ack_deadline = w.pending, None, None
            log.info("%s now records its new share of cameras", w.describe())
        elif kind == "log":
            record: logging.LogRecord = payload
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)

    def _ended(self, w: _Worker) -> None:
        """``w``'s process exited and its pipe is drained: done, or schedule a restart."""
        process = w.process
        assert process is not None
        code = process.exitcode
        w.last_exit = code
        with self._lock:
            w.ack_deadline = w.kill_at = None
            if w.control is not None:
                w.control.close()
                w.control = None
        if w.pending is not None and not self._stopping.is_set():
            if code not in (0, -signal.SIGTERM):
                log.warning("%s %s while restarting", w.describe(), _describe_exit(code))
            with self._lock:
                w.process = None
            return  # the monitor starts it with its pending spec
        if self._stopping.is_set():
            if code == -signal.SIGTERM:  # stopped before it could install its handler
                log.debug("%s ended while starting", w.describe())
            elif code not in (0, None):
                log.warning("%s %s while stopping", w.describe(), _describe_exit(code))
            with self._lock:
                w.process = None
            return
        if time.monotonic() - w.started_at >= STABLE_SECONDS:
            w.backoff = RESTART_FIRST
        how = _describe_exit(code)
        reason = f"recorder process {how}"
        if code == 0:  # a clean stop asked by someone else (SIGTERM from outside the pool)
            log.warning("%s stopped; restarting it in %.0f s", w.describe(), w.backoff)
        else:
            log.error("%s %s; restarting it in %.0f s", w.describe(), how, w.backoff)
        with self._lock:
            w.process = None
        self._schedule_restart(w, reason)

    def _schedule_restart(self, w: _Worker, reason: str) -> None:
        delay = w.backoff
        w.backoff = min(w.backoff * 2, RESTART_MAX)
        w.restart_at = time.monotonic() + delay
        retry = time.time() + delay
        with self._lock:
            for name in [n for n in w.spec.cameras if n in self._statuses]:
                self._statuses[name] = dataclasses.replace(
                    self._statuses[name],
                    state="reconnecting",
                    connected_since=None,
                    fps_in=0.0,
                    bitrate=0.0,
                    last_error=reason,
                    next_retry_at=retry,
                )

    def _replace(self, w: _Worker) -> None:
        """Start ``w`` again with the spec :meth:`update` left pending, at once."""
        with self._lock:
            old, spec = w.spec, w.pending
            if spec is None:
                return
            w.spec, w.pending = spec, None
            w.restart_at = None
            w.backoff = RESTART_FIRST
        if self._index is not None and w.last_exit not in (None, 0, -signal.SIGTERM):
            # A recorder node repairs only cameras it still leases: another node may already
            # record one it gave up, and reconciled it when it took it.
            cams = [c for c in old.cameras if not self._fenced or c in spec.cameras]
            try:  # it died rather than stopped: repair what its cameras left (none runs now)
                reconcile(self._index, self._media_dir, cameras=cams, sealed=self._sealed)
            except HomeWardenError as exc:
                log.error("%s: cannot reconcile its cameras: %s", w.describe(), exc)
        w.last_exit = None
        self._spawn(w)

    def _restart(self, w: _Worker) -> None:
        """Reconcile the dead worker's cameras (only theirs), then start it again."""
        w.restart_at = None
        if self._index is not None:
            try:  # what it repaired, reconcile logs itself
                reconcile(
                    self._index,
                    self._media_dir,
                    cameras=list(w.spec.cameras),
                    sealed=self._sealed,
                )
            except HomeWardenError as exc:
                log.error("%s: cannot reconcile its cameras: %s", w.describe(), exc)
        self._restarts += 1
        self._spawn(w)


# -- the worker's side ---------------------------------------------------------------------


class _InheritedFd:
    """A file descriptor handed to a spawned worker: pickled while the worker is spawned, it
    becomes a duplicate of the same open file there (``multiprocessing.reduction.DupFd``, as
    a ``Connection`` is passed), so a ``flock`` on it is shared, not copied."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[[Any], _InheritedFd], tuple[Any]]:
        return _inherit, (multiprocessing.reduction.DupFd(self.fd),)

    def close(self) -> None:
        """Close this process's duplicate."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _inherit(dup: Any) -> _InheritedFd:
    return _InheritedFd(dup.detach())


class _Outbox:
    """A worker's messages to the parent, sent in order by a thread of their own, so a
    recorder thread that logs never waits on the pipe (an unbounded queue in between)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        #: Set when the pipe broke: the parent is gone.
        self.broken = threading.Event()
        self._thread = threading.Thread(target=self._send, name="worker-outbox", daemon=True)
        self._thread.start()

    def put(self, kind: str, payload: Any) -> None:
        if not self.broken.is_set():
            self._queue.put((kind, payload))

    def _send(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self._conn.send(message)
            except (OSError, ValueError):  # BrokenPipeError: the parent is gone
                self.broken.set()
                return

    def close(self, timeout: float) -> None:
        """Send what is queued (up to ``timeout`` s), then close the pipe."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._conn.close()


class _PipeLogHandler(logging.handlers.QueueHandler):
    """Sends each record (message formatted, arguments and traceback folded into it) to the
    parent, which hands it to its own logger of the same name."""

    def __init__(self, outbox: _Outbox) -> None:
        super().__init__(queue.SimpleQueue())  # unused: enqueue is overridden
        self._outbox = outbox

    def enqueue(self, record: logging.LogRecord) -> None:
        self._outbox.put("log", record)


class _Share:
    """A worker's cameras and their recorders, changed in place by its control thread while
    the main thread sends their statuses (see the module docstring, "Update").

    Raises:
        DatabaseError: with ``spec.fence_node``, the leases cannot be read.
    """

    def __init__(self, spec: WorkerSpec, index: Index) -> None:
        self._spec = spec
        self._index = index
        self._lock = threading.Lock()  # one change at a time; statuses() never waits
        self._closed = False
        #: Camera name -> its recorder; replaced in one assignment, so a reader sees the
        #: old set or the new one.
        self.recorders = self._build(spec.cameras)
        self._cameras = {n: cam for n, cam in spec.cameras.items() if n in self.recorders}

    def _build(self, cameras: Mapping[str, CameraSettings]) -> dict[str, CameraRecorder]:
        spec = self._spec
        return build_recorders(
            cameras,
            media_dir=spec.media_dir,
            snapshot_dir=spec.snapshot_dir,
            models_dir=spec.models_dir,
            index=self._index,
            fence_node=spec.fence_node,
            sealed_household=spec.sealed_household,
        )

    def statuses(self) -> dict[str, CameraStatus]:
        """Each recorder's status, by camera name."""
        return {name: rec.status() for name, rec in self.recorders.items()}

    def update(self, cameras: Mapping[str, CameraSettings]) -> bool:
        """Record ``cameras`` (name -> settings, the worker's new share) from now on, as
        :meth:`~homewarden.services.recorder_group.ThreadRecorderGroup.update` does: the
        recorders of removed and changed cameras stop first (each finishing its segment; one
        still running after that is logged and its successor not started), then those of new
        and changed cameras start; the others are not touched.

        Returns:
            False when closed meanwhile (nothing changed).

        Raises:
            DatabaseError: with ``fence_node``, the leases cannot be read; the stopped
                cameras stay stopped, the new ones are not started.
        """
        number = self._spec.number
        with self._lock:
            if self._closed:
                return False
            stop, start = changed_cameras(self._cameras, cameras)
            if not stop and not start:
                return True
            # A recorder blocked on a silent read ends once its stall timeout passes.
            wait = max([UPDATE_STOP_TIMEOUT] + [self._cameras[n].stall_timeout + 2.0 for n in stop])
            late = set(stop_recorders({n: self.recorders[n] for n in stop}, wait))
            for name in sorted(late & set(start)):
                log.error("camera %s: its old recorder still runs; not starting a second", name)
            kept = {n: r for n, r in self.recorders.items() if n not in stop}
            self._cameras = {n: cam for n, cam in self._cameras.items() if n in kept}
            self.recorders = kept
            for name in stop:
                why = "changed" if name in cameras else "disabled, removed or no longer leased"
                log.info("camera %s stopped (%s; recorder process %d)", name, why, number)
            started = self._build({n: cameras[n] for n in start if n not in late})
            self.recorders = {**kept, **started}
            self._cameras.update({n: cameras[n] for n in started})
            for name, rec in started.items():
                rec.start()
                log.info("camera %s started (recorder process %d)", name, number)
            return True

    def close(self, timeout: float) -> None:
        """Stop every recorder (see :func:`stop_recorders`); no update applies after this."""
        with self._lock:
            self._closed = True
            stop_recorders(self.recorders, timeout)


def _take_orders(
    control: Connection, share: _Share, outbox: _Outbox, orphaned: threading.Event, number: int
) -> None:
    """The worker's control thread: apply each ``("update", serial, cameras)`` from the
    parent, then send the statuses and ``("updated", (serial, applied))``. EOF on ``control``
    means the parent is gone: sets ``orphaned``."""
    while True:
        try:
            kind, serial, cameras = control.recv()
        except (EOFError, OSError):
            orphaned.set()
            return
        if kind != "update":
            log.error("recorder process %d: unknown control message %r", number, kind)
            continue
        try:
            applied = share.update(cameras)
        except HomeWardenError as exc:
            log.error("recorder process %d cannot apply its new cameras: %s", number, exc)
            applied = False
        except Exception:  # a bug: the parent restarts this worker
            log.exception("recorder process %d: applying its new cameras failed", number)
            applied = False
        outbox.put("status", share.statuses())
        outbox.put("updated", (serial, applied))


def worker_main(
    spec: WorkerSpec,
    conn: Connection,
    lock: _InheritedFd | Sequence[_InheritedFd] | None = None,
    control: Connection | None = None,
) -> None:
    """Entry point of a worker process: record ``spec.cameras`` until SIGTERM.

    Sends ``("status", {camera: CameraStatus})`` every ``spec.status_interval`` s and
    ``("log", LogRecord)`` for each record at or above ``spec.log_level`` over ``conn``.
    ``lock``: this worker's duplicates of the data dir lock's descriptors (a recorder node's
    are two), held until it exits. ``control``: the parent's orders, read once the cameras
    are started (see :func:`_take_orders`); None: none.
    Exits 0 after a clean stop, 1 when the index cannot be opened or a bug ends it (logged).
    """
    stop = threading.Event()
    orphaned = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us in order
    outbox = _Outbox(conn)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PipeLogHandler(outbox))
    root.setLevel(spec.log_level)
    parent = os.getppid()
    code = 0
    index: Index | None = None
    share: _Share | None = None
    try:
        index = Index(spec.db_url)
        share = _Share(spec, index)
        up = time.monotonic()
        starts = sorted(share.recorders.items(), key=lambda r: spec.start_delays.get(r[0], 0))
        for name, rec in starts:
            if stop.wait(max(0.0, up + spec.start_delays.get(name, 0.0) - time.monotonic())):
                break
            rec.start()
            log.info("camera %s started (recorder process %d)", name, spec.number)
        if control is not None and not stop.is_set():
            threading.Thread(
                target=_take_orders,
                args=(control, share, outbox, orphaned, spec.number),
                name="worker-control",
                daemon=True,
            ).start()
        while True:
            outbox.put("status", share.statuses())
            if stop.wait(spec.status_interval):
                break
            if outbox.broken.is_set() or orphaned.is_set() or os.getppid() != parent:
                log.error("recorder process %d: its parent is gone; stopping", spec.number)
                break
    except HomeWardenError as exc:
        log.error("recorder process %d cannot record: %s", spec.number, exc)
        code = 1
    except Exception:  # a bug: into the parent's log, then exit for a restart
        log.exception("recorder process %d crashed", spec.number)
        code = 1
    finally:
        if share is not None:
            share.close(spec.stop_timeout)
            outbox.put("status", share.statuses())
        if index is not None:
            with contextlib.suppress(HomeWardenError):
                index.close()
        outbox.close(timeout=5.0)
        for held in [lock] if isinstance(lock, _InheritedFd) else lock or []:
            held.close()  # last: the segments are finished and indexed
    if code:
        raise SystemExit(code)
