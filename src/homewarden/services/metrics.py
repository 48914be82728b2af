"""Prometheus metrics of the cameras, the index, the disk and the owner's disclosure requests.

Values are read when Prometheus scrapes, never kept: :class:`MetricsCollector` is a
``prometheus_client`` custom collector that asks the live recorder statuses
(:meth:`Queries.cameras <homewarden.services.queries.Queries.cameras>`), the index
(:meth:`Index.camera_totals <homewarden.store.index.Index.camera_totals>`) and the disk each
time it is collected, and :meth:`Metrics.exposition` builds a fresh
:class:`~prometheus_client.CollectorRegistry` per scrape (the answer depends on who asks), so
there is no global registry and no mutable module state.

Scoping: a scrape shows only the cameras the caller may see
(:func:`homewarden.domain.permissions.visible_cameras`, through ``Queries.cameras(viewer=)``);
another household's camera never appears, not even as a label. Disclosure request counts are
for an owner only, of their own household, and only of requests the owner has been told of
(a request under a non-disclosure order or in an emergency's notice delay is left out until
its notice is sent, as in the owner's inbox: 18 U.S.C. 2705(b)); they carry type and state
only, no id. ``storage_used_bytes`` sums the footage of the cameras shown; free and total
bytes are of the filesystem holding the media dir (deployment-wide, as ``/api/health``
already shows them to owners). The process metrics (``process_cpu_seconds_total``,
memory, open files) are ``prometheus_client``'s :class:`~prometheus_client.ProcessCollector`
for this process (Linux ``/proc``).

Families (units in the name; times seconds, sizes bytes, rates per second):

- ``homewarden_camera_connected{camera}``: 1 while the recorder has a live connection.
- ``homewarden_camera_fps_in{camera}``, ``homewarden_camera_fps_recorded{camera}`` (frames
  written into segments), ``homewarden_camera_bitrate_bits_per_second{camera}``,
  ``homewarden_camera_segments_written_total{camera}`` (since the recorder started),
  ``homewarden_camera_cpu_seconds_total{camera}`` (the recorder thread's CPU since it started;
  see :class:`~homewarden.services.recorder.CameraStatus`),
  ``homewarden_camera_decode_mode{camera,mode}`` (1 for the current mode of ``off``,
  ``keyframes`` (quiet) and ``full`` (motion), 0 for the others),
  ``homewarden_camera_last_packet_age_seconds{camera}``: only for a camera whose recorder runs
  in this process (no sample otherwise: unknown is not zero).
- ``homewarden_camera_gaps_open{camera}``: outages going on now.
- ``homewarden_camera_recorded_seconds{camera}``, ``homewarden_camera_recorded_bytes{camera}``,
  ``homewarden_camera_segments{camera}``: footage the index holds (gauges: retention deletes).
- ``homewarden_camera_gaps_total{camera}``: outages the index holds, open or closed.
- ``homewarden_camera_events_total{camera,label}``: events the index holds, per label (every
  event starts from motion; ``person`` when the detector saw one).
- ``homewarden_storage_used_bytes``, ``homewarden_storage_free_bytes``,
  ``homewarden_storage_size_bytes``.
- ``homewarden_disclosure_requests{type,state}``: the owner's requests (combinations with
  none are not listed).
- ``homewarden_jobs_queued``, ``homewarden_jobs_scheduled``: background jobs
  (:mod:`homewarden.services.jobs`) waiting for a worker, and waiting for their time (a
  retry's delay). Deployment-wide, like free disk: a count says nothing of whose jobs. When
  the queue cannot be read (Redis down) there is no sample: unknown is not "drained".
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from homewarden.config import Settings
from homewarden.domain.permissions import Principal, PrincipalKind, Role
from homewarden.errors import JobQueueError
from homewarden.services.jobs import QueueDepth
from homewarden.services.queries import CameraView, Queries
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.store.index import CameraTotals, Index

#: The recorder's decode modes (``services.recorder.DecodeMode``), one sample each.
DECODE_MODES = ("off", "keyframes", "full")

#: Most requests of one household counted per scrape (far beyond any household's).
MAX_COUNTED_REQUESTS = 1_000_000

#: Returns the ids of a household's requests its owner has not been told of yet
#: (:meth:`homewarden.services.disclosure.DisclosureService.unnoticed_requests`).
UnnoticedRequests = Callable[[str], frozenset[str]]

#: Returns the job queue's depth (:meth:`homewarden.services.jobs.JobQueue.depth`); raises
#: :class:`~homewarden.errors.JobQueueError` when the queue cannot be read.
JobDepth = Callable[[], QueueDepth]


class MetricsCollector(Collector):
    """The HomeWarden families of the module docstring, as ``viewer`` may see them, read at
    collection time.

    Args:
        queries: camera views with live status, scoped by viewer.
        index: for per-camera totals (one grouped query set per scrape).
        store: disclosure requests (counted for owners only).
        unnoticed: which of a household's requests its owner has not been told of.
        settings: returns the settings now (the media dir).
        clock: now, UTC epoch seconds (for the age of the last packet).
        viewer: who scrapes.
        jobs: the job queue's depth; None: no job families (no queue in this process).

    Raises (from :meth:`collect`):
        DatabaseError: the index does not answer.
    """

    def __init__(
        self,
        queries: Queries,
        index: Index,
        store: DisclosureStore,
        unnoticed: UnnoticedRequests,
        settings: Callable[[], Settings],
        clock: Callable[[], float],
        viewer: Principal,
        jobs: JobDepth | None = None,
    ) -> None:
        self._queries = queries
        self._index = index
        self._store = store
        self._unnoticed = unnoticed
        self._settings = settings
        self._clock = clock
        self._viewer = viewer
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        views = self._queries.cameras(viewer=self._viewer)
        totals = self._index.camera_totals([v.name for v in views])
        yield from _camera_families(views, totals, self._clock())
        yield from _storage_families(self._settings(), totals.values())
        yield from self._request_families()
        yield from self._job_families()

    def _job_families(self) -> Iterator[Metric]:
        if self._jobs is None:
            return
        try:
            depth = self._jobs()
        except JobQueueError:
            return  # unknown is no sample (a zero would read as drained)
        queued = GaugeMetricFamily(
            "homewarden_jobs_queued", "Background jobs waiting for a worker (all households)"
        )
        queued.add_metric([], depth.queued)
        scheduled = GaugeMetricFamily(
            "homewarden_jobs_scheduled",
            "Background jobs waiting for their time, such as a retry's delay (all households)",
        )
        scheduled.add_metric([], depth.scheduled)
        yield queued
        yield scheduled

    def _request_families(self) -> Iterator[Metric]:
        viewer = self._viewer
        if (
            viewer.kind is not PrincipalKind.USER
            or viewer.role is not Role.OWNER
            or viewer.household is None
        ):
            return
        hidden = self._unnoticed(viewer.household)
        rows = self._store.requests(household=viewer.household, limit=MAX_COUNTED_REQUESTS)
        counts = Counter((r.type, r.state) for r in rows if r.id not in hidden)
        family = GaugeMetricFamily(
            "homewarden_disclosure_requests",
            "Disclosure requests of the owner's household the owner has been told of, "
            "by type and state",
            labels=["type", "state"],
        )
        for (kind, state), n in sorted(counts.items()):
            family.add_metric([kind, state], n)
        yield family


def _camera_families(
    views: list[CameraView], totals: dict[str, CameraTotals], now: float
) -> Iterator[Metric]:
    cam = ["camera"]
    connected = GaugeMetricFamily(
        "homewarden_camera_connected", "1 while the camera's recorder is connected", labels=cam
    )
    fps = GaugeMetricFamily("homewarden_camera_fps_in", "Frames per second in", labels=cam)
    fps_recorded = GaugeMetricFamily(
        "homewarden_camera_fps_recorded", "Frames per second written into segments", labels=cam
    )
    bitrate = GaugeMetricFamily(
        "homewarden_camera_bitrate_bits_per_second", "Bits per second in", labels=cam
    )
    cpu = CounterMetricFamily(
        "homewarden_camera_cpu_seconds",
        "CPU seconds of the camera's recorder thread since it started",
        labels=cam,
    )
    written = CounterMetricFamily(
        "homewarden_camera_segments_written",
        "Segments written since the camera's recorder started",
        labels=cam,
    )
    mode = GaugeMetricFamily(
        "homewarden_camera_decode_mode",
        "1 for the current decode mode (off, keyframes: quiet, full: motion), else 0",
        labels=["camera", "mode"],
    )
    age = GaugeMetricFamily(
        "homewarden_camera_last_packet_age_seconds",
        "Seconds since the camera's last packet",
        labels=cam,
    )
    gaps_open = GaugeMetricFamily(
        "homewarden_camera_gaps_open", "Outages of the camera going on now", labels=cam
    )
    seconds = GaugeMetricFamily(
        "homewarden_camera_recorded_seconds",
        "Seconds of the camera's footage in the index",
        labels=cam,
    )
    size = GaugeMetricFamily(
        "homewarden_camera_recorded_bytes", "Bytes of the camera's footage in the index", labels=cam
    )
    segments = GaugeMetricFamily(
        "homewarden_camera_segments", "Segments of the camera in the index", labels=cam
    )
    gaps = CounterMetricFamily(
        "homewarden_camera_gaps", "Outages of the camera in the index, open or closed", labels=cam
    )
    events = CounterMetricFamily(
        "homewarden_camera_events",
        "Events of the camera in the index, by label (every event starts from motion)",
        labels=["camera", "label"],
    )
    for view in views:
        name = view.name
        connected.add_metric([name], 1.0 if view.connected else 0.0)
        if view.fps is not None:
            fps.add_metric([name], view.fps)
        if view.fps_recorded is not None:
            fps_recorded.add_metric([name], view.fps_recorded)
        if view.bitrate is not None:
            bitrate.add_metric([name], view.bitrate)
        if view.cpu_seconds is not None:
            cpu.add_metric([name], view.cpu_seconds)
        if view.segments_written is not None:
            written.add_metric([name], view.segments_written)
        if view.decode_mode is not None:
            for m in DECODE_MODES:
                mode.add_metric([name, m], 1.0 if view.decode_mode == m else 0.0)
        if view.last_packet_at is not None:
            age.add_metric([name], max(0.0, now - view.last_packet_at))
        gaps_open.add_metric([name], view.gaps_open)
        total = totals.get(name)
        seconds.add_metric([name], total.recorded_seconds if total else 0.0)
        size.add_metric([name], total.bytes if total else 0)
        segments.add_metric([name], total.segments if total else 0)
        gaps.add_metric([name], total.gaps if total else 0)
        for label, n in sorted((total.events if total else {}).items()):
            events.add_metric([name, label], n)
    yield from (connected, fps, fps_recorded, bitrate, cpu, written, mode, age, gaps_open)
    yield from (seconds, size, segments, gaps, events)


def _storage_families(settings: Settings, totals: Iterable[CameraTotals]) -> Iterator[Metric]:
    used = GaugeMetricFamily(
        "homewarden_storage_used_bytes", "Bytes of indexed footage of the cameras shown"
    )
    used.add_metric([], sum(t.bytes for t in totals))
    yield used
    probe: Path = settings.media_dir if settings.media_dir.is_dir() else settings.data_dir
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return  # unknown is no sample, not zero; /api/health names the reason
    free = GaugeMetricFamily(
        "homewarden_storage_free_bytes", "Free bytes on the filesystem holding the media"
    )
    free.add_metric([], usage.free)
    total = GaugeMetricFamily(
        "homewarden_storage_size_bytes", "Size in bytes of the filesystem holding the media"
    )
    total.add_metric([], usage.total)
    yield free
    yield total


class Metrics:
    """The ``/metrics`` use-case: one per app, stateless between scrapes (see the module
    docstring). Arguments as :class:`MetricsCollector`'s, less ``viewer``."""

    def __init__(
        self,
        queries: Queries,
        index: Index,
        store: DisclosureStore,
        unnoticed: UnnoticedRequests,
        settings: Callable[[], Settings],
        clock: Callable[[], float],
        jobs: JobDepth | None = None,
    ) -> None:
        self._queries = queries
        self._index = index
        self._store = store
        self._unnoticed = unnoticed
        self._settings = settings
        self._clock = clock
        self._jobs = jobs

    def registry(self, viewer: Principal) -> CollectorRegistry:
        """A fresh registry holding the HomeWarden collector for ``viewer`` and the process
        collector."""
        registry = CollectorRegistry()
        registry.register(
            MetricsCollector(
                self._queries,
                self._index,
                self._store,
                self._unnoticed,
                self._settings,
                self._clock,
                viewer,
                self._jobs,
            )
        )
        ProcessCollector(registry=registry)
        return registry

    def exposition(self, viewer: Principal) -> bytes:
        """The Prometheus text exposition format (version 0.0.4, UTF-8) for ``viewer``.

        Raises:
            DatabaseError: the index does not answer.
        """
        return generate_latest(self.registry(viewer))
