"""Many cameras: CPU per camera and lost segments for N = 1, 2, 4 ... paced ``file:`` cameras.

Issue 2 ("Speed"): N paced ``file:`` cameras of the benchmark clip (1280x720, 30 fps, GOP 2 s
H.264) with motion in 10 % of the time; CPU per camera and lost segments; target: 64 cameras
on this 2-core machine with no segment lost.

The clip (``bench._common.make_motion_clip``) is 60 s of the quiet vtest.avi scene with a 3 s
burst of real pedestrians every 30 s, so any 30 s window holds 10 % motion. By default camera
``i`` plays a copy of it rotated to start at a different keyframe (``--phase spread``), so the
cameras' bursts are spread over the period as the cameras of one home are; ``--phase same``
plays every camera in step (the worst case: every camera moving at once). Camera starts are
staggered over one GOP so their keyframes do not all fall at the same instant.

For each N, one child process (a fresh interpreter, as ``homewarden run`` is) opens a SQLite
index and records the N cameras as ``homewarden run`` does: with the recorder pool of
:func:`~homewarden.workers.camera_worker.recorder_pool`, i.e. ``--processes`` recorder worker
processes (default: one per CPU core, like ``homewarden run``), each running its share of the
cameras as :class:`~homewarden.services.recorder.CameraRecorder` threads; with
``--processes 1`` (or N = 1) all are threads of the child itself. Once every camera is
connected it records for ``--seconds`` and measures the CPU time over that window of itself
and of every worker process (user + sys, all threads, from ``/proc/<pid>/stat``). Meanwhile
this process polls the index (SQLite WAL: readers do not block the writer) and notes, for each
new segment, how long after its end it was indexed. Per N it prints:

* CPU seconds per camera per minute, its ratio to N = 1 (same run), and the load (CPU seconds
  / wall seconds / cores);
* segments expected vs written per camera. Expected complete segments are
  ``floor((stop - first segment start) / L)`` with ``L`` the segment length rounded up to whole
  GOPs (cuts happen only on keyframes); the final partial segment closed at the stop is not
  counted. Lost = required - written, where required counts the cuts due ``max_lag`` before
  the stop or before the last segment's start, whichever is later: a cut due less than
  ``max_lag`` before the stop and not made yet is late, not lost (a camera that late is judged
  by its lag instead). Each camera's segments must be contiguous (each starts where the previous
  ended) and no gap may be recorded;
* whether a camera fell behind real time: its last footage ends more than ``--max-lag`` s
  (default one GOP) before the stop, or a segment was indexed more than ``--max-lag`` s (plus
  the poll interval) after its end.

The sweep stops at the first N that loses a segment or falls behind and reports the largest N
without either. Run from the repo root: ``.venv/bin/python bench/cameras.py [--max 64]``.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import itertools
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    GOP_SECONDS,
    CpuTimes,
    MachineLoad,
    cores,
    describe_clip,
    motion_clip_variants,
    read_result,
    reap,
    self_cpu,
    spawn,
)

#: Clip rotations used with ``--phase spread``: one per keyframe of a 30 s motion period.
PHASES = 15
#: Seconds between polls of the index by the parent.
POLL_SECONDS = 0.5
#: Open files a camera may hold: its source, the segment being written, and a pooled SQLite
#: connection (database, WAL and shared-memory files); plus a fixed allowance for the rest.
FDS_PER_CAMERA = 5
FDS_BASE = 64
#: Seconds the child waits for every camera to report ``connected``.
CONNECT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class CameraOutcome:
    """What one camera did in a run.

    Attributes:
        name: camera name.
        expected: complete segments due by the stop (see module docstring).
        required: complete segments due ``max_lag`` seconds before the stop or before the last
            segment's start, whichever is later; fewer written than this is a loss.
        written: complete segments written (the final partial one excluded).
        contiguous: every segment starts exactly where the previous one ended.
        gaps: outages the recorder stored.
        final_lag: seconds between the stop and the end of the camera's last footage.
        index_lag: largest seconds between a segment's end and the parent seeing it indexed
            (includes up to one poll interval), or None if none was seen.
        events: motion events recorded.
        state, last_error: the camera's status just before the stop.
    """

    name: str
    expected: int
    required: int
    written: int
    contiguous: bool
    gaps: int
    final_lag: float
    index_lag: float | None
    events: int
    state: str
    last_error: str | None

    @property
    def lost(self) -> int:
        """Required minus written complete segments (never negative)."""
        return max(0, self.required - self.written)


@dataclass(frozen=True, slots=True)
class RunResult:
    """One N: CPU, wall time, resource use and each camera's outcome."""

    n: int
    seconds: float
    cpu: float
    wall: float
    startup: float
    cameras: list[CameraOutcome]
    fds: int
    threads: int
    max_rss_mb: float
    machine: str
    max_lag: float = GOP_SECONDS
    processes: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_per_camera_minute(self) -> float:
        """CPU seconds per camera per minute of recording."""
        return self.cpu / self.n / (self.wall / 60.0) if self.wall > 0 else math.inf

    @property
    def load(self) -> float:
        """CPU seconds / wall seconds / cores: 1.0 is every core busy."""
        return self.cpu / self.wall / cores() if self.wall > 0 else math.inf

    @property
    def expected(self) -> int:
        """Complete segments expected over all cameras."""
        return sum(c.expected for c in self.cameras)

    @property
    def written(self) -> int:
        """Complete segments written over all cameras."""
        return sum(c.written for c in self.cameras)

    @property
    def lost(self) -> int:
        """Segments lost over all cameras (expected - written, per camera)."""
        return sum(c.lost for c in self.cameras)

    @property
    def contiguous(self) -> bool:
        """Every camera's segments are contiguous and no gap was recorded."""
        return all(c.contiguous and c.gaps == 0 for c in self.cameras)

    @property
    def worst_lag(self) -> float:
        """Largest lag behind real time seen on any camera (seconds)."""
        lags = [c.final_lag for c in self.cameras]
        lags += [c.index_lag - POLL_SECONDS for c in self.cameras if c.index_lag is not None]
        return max(lags, default=0.0)

    @property
    def behind(self) -> bool:
        """Some camera fell more than ``max_lag`` seconds behind real time."""
        return self.worst_lag > self.max_lag

    @property
    def ok(self) -> bool:
        """No segment lost, all contiguous, every camera kept up and connected."""
        return (
            self.lost == 0
            and self.contiguous
            and not self.behind
            and len(self.cameras) == self.n
            and all(c.state == "connected" for c in self.cameras)
        )


def camera_counts(max_n: int) -> list[int]:
    """1, 2, 4, ... up to ``max_n`` (``max_n`` itself last even if not a power of two)."""
    out: list[int] = []
    n = 1
    while n < max_n:
        out.append(n)
        n *= 2
    out.append(max_n)
    return out


def clip_for(i: int, n: int, variants: int) -> int:
    """Which of ``variants`` rotated clips camera ``i`` of ``n`` plays: evenly spread phases."""
    return (i * variants // n) % variants if n <= variants else i % variants


def segment_length(segment_seconds: float, gop_seconds: float) -> float:
    """Length of a complete segment: ``segment_seconds`` rounded up to whole GOPs (seconds)."""
    return gop_seconds * max(1, math.ceil(segment_seconds / gop_seconds - 1e-9))


def assess(
    name: str,
    data: dict[str, Any],
    *,
    t_stop: float,
    length: float,
    max_lag: float,
    index_lag: float | None,
) -> CameraOutcome:
    """Judge one camera from what the child reported (see module docstring for the rules).

    Args:
        name: camera name.
        data: the child's record of the camera: ``segments`` (list of [start, end], UTC epoch
            seconds), ``gaps``, ``events``, ``state``, ``last_error``.
        t_stop: UTC epoch seconds the stop was asked.
        length: seconds of a complete segment (:func:`segment_length`).
        max_lag: seconds of lag tolerated before a segment counts as expected.
        index_lag: the parent's largest indexing delay for this camera, or None.
    """
    segs = sorted((float(s), float(e)) for s, e in data["segments"])
    contiguous = all(abs(b[0] - a[1]) <= 1e-6 for a, b in itertools.pairwise(segs))
    first = segs[0][0] if segs else float(data["started_at"])

    def due(until: float) -> int:
        return max(0, math.floor((until - first) / length + 1e-9))

    return CameraOutcome(
        name=name,
        expected=due(t_stop),
        # A cut the camera evidently made (a later segment starts after it) is due too.
        required=max(due(t_stop - max_lag), due(segs[-1][0]) if segs else 0),
        written=max(0, len(segs) - 1),  # the last one was closed by the stop
        contiguous=contiguous,
        gaps=int(data["gaps"]),
        final_lag=t_stop - segs[-1][1] if segs else math.inf,
        index_lag=index_lag,
        events=int(data["events"]),
        state=str(data["state"]),
        last_error=data["last_error"],
    )


def run_cameras(
    clips: Sequence[Path],
    n: int,
    seconds: float,
    *,
    workdir: Path,
    segment_seconds: float = 10.0,
    gop_seconds: float = GOP_SECONDS,
    max_lag: float = GOP_SECONDS,
    processes: int | None = None,
) -> RunResult:
    """Record ``n`` paced ``file:`` cameras in one child process (and its recorder worker
    processes) for ``seconds`` and judge them.

    Args:
        clips: rotated variants of one clip; camera ``i`` plays ``clips[clip_for(i, n, len)]``.
        n: number of cameras.
        seconds: seconds recorded once every camera is connected (the measured window).
        workdir: an empty directory for the child's data, log and result.
        segment_seconds: the cameras' ``segment_seconds`` setting.
        gop_seconds: the clips' keyframe interval.
        max_lag: seconds a camera may trail real time before it counts as behind.
        processes: recorder worker processes (``recorder.processes``); None: one per CPU core.

    Returns:
        The :class:`RunResult`.

    Raises:
        MediaError: the child failed (the message holds the tail of its log).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    clips_file = workdir / "clips.json"
    clips_file.write_text(json.dumps([str(c) for c in clips]))
    result = workdir / "result.json"
    ready = workdir / "ready.json"
    log = workdir / "child.log"
    args = [
        "--child",
        "--n", str(n),
        "--seconds", str(seconds),
        "--clips", str(clips_file),
        "--workdir", str(workdir),
        "--result", str(result),
        "--ready", str(ready),
        "--segment-seconds", str(segment_seconds),
        "--gop-seconds", str(gop_seconds),
    ]  # fmt: skip
    if processes is not None:
        args += ["--processes", str(processes)]
    machine = MachineLoad().start()
    proc = spawn("bench.cameras", args, log)
    lags = _poll_index(proc, workdir / "homewarden.db", ready, lambda: reap(proc, block=False))
    reaped = lags.reaped if lags.reaped is not None else reap(proc)
    assert reaped is not None
    machine.stop()
    data = read_result(result, log, reaped)
    length = segment_length(segment_seconds, gop_seconds)
    outcomes = [
        assess(
            name,
            cam,
            t_stop=data["t_stop"],
            length=length,
            max_lag=max_lag,
            index_lag=lags.worst.get(name),
        )
        for name, cam in data["cameras"].items()
    ]
    return RunResult(
        n=n,
        seconds=seconds,
        cpu=data["cpu"]["user"] + data["cpu"]["sys"],
        wall=data["wall"],
        startup=data["startup"],
        cameras=outcomes,
        fds=data["peak_fds"],
        threads=data["peak_threads"],
        max_rss_mb=data["max_rss_kb"] / 1024,
        machine=machine.describe(reaped.cpu.total),
        max_lag=max_lag,
        processes=int(data["processes"]),
        notes=data["notes"],
    )


@dataclass
class _Lags:
    worst: dict[str, float]
    reaped: Any = None


def _poll_index(proc: Any, db: Path, ready: Path, done: Callable[[], Any]) -> _Lags:
    """Until the child exits: note how long after its end each new segment appears indexed."""
    from homewarden.errors import HomeWardenError
    from homewarden.store.index import Index

    lags = _Lags(worst={})
    index: Index | None = None
    seen: set[int] = set()
    since: float | None = None
    try:
        while True:
            reaped = done()
            if reaped is not None:
                lags.reaped = reaped
                return lags
            time.sleep(POLL_SECONDS)
            if index is None:
                if not ready.is_file():
                    continue
                index = Index(f"sqlite:///{db}")
                since = time.time()  # segments that ended before polling began are not judged
            assert since is not None
            now = time.time()
            try:
                segments = index.segments(since=since - 60.0)
            except HomeWardenError:
                continue  # the writer held the lock past the busy timeout: try again
            for seg in segments:
                if seg.id in seen:
                    continue
                seen.add(seg.id)
                if seg.end < since:
                    continue
                lag = now - seg.end
                lags.worst[seg.camera] = max(lag, lags.worst.get(seg.camera, -math.inf))
    finally:
        if index is not None:
            index.close()


# --------------------------------------------------------------------------------------------
# the child


def _raise_fd_limit(need: int) -> tuple[int, int]:
    """Raise the soft open-files limit to ``need`` when the hard limit allows; (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


def _proc_status(pid: int) -> dict[str, int]:
    """``Threads`` and ``VmHWM`` (peak RSS, kB) of process ``pid`` (``/proc/<pid>/status``)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("Threads", "VmHWM"):
                    out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def _fds(pid: int) -> int:
    """Open file descriptors of process ``pid`` (0 if it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _proc_cpu(pid: int) -> CpuTimes:
    """CPU seconds (all threads) process ``pid`` has used so far; zero if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # After the parenthesised name (which may hold spaces) utime and stime are the
            # 12th and 13th fields: the 14th and 15th of the line (proc(5)).
            rest = fh.read().rpartition(")")[2].split()
    except OSError:
        return CpuTimes(0.0, 0.0)
    hz = os.sysconf("SC_CLK_TCK")
    return CpuTimes(int(rest[11]) / hz, int(rest[12]) / hz)


def _cpu_of(pids: Sequence[int]) -> CpuTimes:
    """CPU seconds used so far by all of ``pids`` together."""
    times = [_proc_cpu(p) for p in pids]
    return CpuTimes(sum(t.user for t in times), sum(t.sys for t in times))


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cameras --child")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--segment-seconds", type=float, required=True)
    parser.add_argument("--gop-seconds", type=float, required=True)
    parser.add_argument("--processes", type=int, default=None)
    args = parser.parse_args(argv)

    import logging

    from homewarden.config import Settings
    from homewarden.store.index import Index
    from homewarden.workers.camera_worker import RecorderProcessPool, recorder_pool

    # The recorders' warnings and errors (the workers' included) go to the child's log.
    logging.basicConfig(level=logging.WARNING, format="%(processName)s %(name)s: %(message)s")
    n: int = args.n
    notes: list[str] = []
    soft, hard = _raise_fd_limit(FDS_BASE + FDS_PER_CAMERA * n)
    if soft < FDS_BASE + FDS_PER_CAMERA * n:
        notes.append(f"open-files limit {soft} (hard {hard}) may be short for {n} cameras")
    clips = [Path(p) for p in json.loads(args.clips.read_text())]
    cameras = {
        f"cam{i:03d}": {
            "url": f"file:{clips[clip_for(i, n, len(clips))]}",
            "loop": True,
            "segment_seconds": args.segment_seconds,
        }
        for i in range(n)
    }
    settings = Settings(
        data_dir=args.workdir,
        database_url=f"sqlite:///{args.workdir / 'homewarden.db'}",
        cameras=cameras,
        recorder={} if args.processes is None else {"processes": args.processes},
        # plaintext storage: this measures recording cost per camera (README's cameras per
        # core); bench/sealed_recording.py measures what sealing adds
        storage={"sealed": False},
    )
    index = Index(settings.db_url)
    index.migrate()
    cpu_start = self_cpu()
    started_at = time.time()
    # Spread the starts over one GOP so keyframes and segment cuts do not all coincide, as
    # with independent cameras.
    group = recorder_pool(settings, index, start_spread=args.gop_seconds)
    pool = group if isinstance(group, RecorderProcessPool) else None
    group.start()
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while time.monotonic() < deadline:
        statuses = group.statuses()
        if len(statuses) == n and all(st.state == "connected" for st in statuses.values()):
            break
        time.sleep(0.05)
    else:
        notes.append("not every camera connected within the timeout")

    def pids() -> list[int]:
        """This process and every worker process."""
        workers = pool.pids().values() if pool is not None else []
        return [os.getpid(), *(p for p in workers if p is not None)]

    measured = pids()
    t0, cpu0 = time.time(), _cpu_of(measured)
    startup = t0 - started_at
    args.ready.write_text(json.dumps({"t0": t0}))
    peak_fds = peak_threads = 0
    end = t0 + args.seconds
    while (left := end - time.time()) > 0:
        peak_fds = max(peak_fds, sum(_fds(p) for p in measured))
        peak_threads = max(peak_threads, sum(_proc_status(p).get("Threads", 0) for p in measured))
        time.sleep(min(1.0, left))
    cpu1, t_stop = _cpu_of(measured), time.time()
    max_rss_kb = sum(_proc_status(p).get("VmHWM", 0) for p in measured)
    if pids() != measured or (pool is not None and pool.restarts):
        notes.append("a recorder process was restarted: its CPU time is not all counted")
    statuses = dict(group.statuses())
    group.stop(30.0)
    cameras_out: dict[str, Any] = {}
    for name in cameras:
        segs = index.segments(camera=name)
        events, _ = index.events(camera=name, limit=1000)
        st = statuses[name]
        cameras_out[name] = {
            "segments": [[s.start, s.end] for s in segs],
            "gaps": len(index.gaps(camera=name)),
            "events": len(events),
            "state": st.state,
            "last_error": st.last_error,
            "fps_in": st.fps_in,
            "started_at": started_at,
        }
    result = {
        "cpu": (cpu1 - cpu0).as_dict(),
        "cpu_total": (self_cpu() - cpu_start).as_dict(),
        "wall": t_stop - t0,
        "t0": t0,
        "t_stop": t_stop,
        "startup": startup,
        "peak_fds": peak_fds,
        "peak_threads": peak_threads,
        "max_rss_kb": max_rss_kb,
        "processes": pool.processes if pool is not None else 1,
        "cameras": cameras_out,
        "notes": notes,
    }
    args.result.write_text(json.dumps(result))
    index.close()
    return 0


# --------------------------------------------------------------------------------------------
# the sweep and its report


def sweep(
    clips: Sequence[Path],
    counts: Sequence[int],
    seconds: float,
    *,
    workdir: Path,
    segment_seconds: float = 10.0,
    gop_seconds: float = GOP_SECONDS,
    max_lag: float = GOP_SECONDS,
    processes: int | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run :func:`run_cameras` for each N in ``counts``, stopping after the first that fails.

    Returns:
        One :class:`RunResult` per N run, in order; the last one failed if it is not ``ok``.
    """
    results: list[RunResult] = []
    for n in counts:
        run = run_cameras(
            clips,
            n,
            seconds,
            workdir=workdir / f"n{n:03d}",
            segment_seconds=segment_seconds,
            gop_seconds=gop_seconds,
            max_lag=max_lag,
            processes=processes,
        )
        results.append(run)
        if on_result is not None:
            on_result(run)
        if not run.ok:
            break
    return results


#: The table's columns: title and width.
COLUMNS: tuple[tuple[str, int], ...] = (
    ("N", 3),
    ("procs", 5),
    ("CPU s/cam/min", 13),
    ("vs first", 8),
    ("load", 5),
    ("expected", 8),
    ("written", 7),
    ("lost", 4),
    ("contig", 6),
    ("lag s", 5),
    ("events", 6),
    ("fds", 4),
    ("threads", 7),
    ("RSS MB", 6),
    ("start s", 7),
    ("ok", 3),
)


def fields(run: RunResult, first: RunResult) -> list[str]:
    """The values of one table row, one per :data:`COLUMNS` entry; ``first`` is the run the
    per-camera CPU ratio is taken against (N = 1 in a sweep)."""
    ratio = run.cpu_per_camera_minute / first.cpu_per_camera_minute
    return [
        str(run.n),
        str(run.processes),
        f"{run.cpu_per_camera_minute:.2f}",
        f"{ratio:.2f}",
        f"{run.load:.2f}",
        str(run.expected),
        str(run.written),
        str(run.lost),
        "yes" if run.contiguous else "NO",
        f"{run.worst_lag:.2f}",
        str(sum(c.events for c in run.cameras)),
        str(run.fds),
        str(run.threads),
        f"{run.max_rss_mb:.0f}",
        f"{run.startup:.1f}",
        "yes" if run.ok else "NO",
    ]


def header() -> str:
    """Column titles of :func:`row`."""
    return " ".join(f"{title:>{width}}" for title, width in COLUMNS)


def row(run: RunResult, first: RunResult) -> str:
    """One aligned table line for ``run`` (see :func:`fields`)."""
    return " ".join(f"{v:>{w}}" for v, (_, w) in zip(fields(run, first), COLUMNS, strict=True))


def markdown(results: Sequence[RunResult]) -> str:
    """The table as Markdown, ready for the README."""
    lines = [
        "| " + " | ".join(t for t, _ in COLUMNS) + " |",
        "|" + "|".join("---:" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(fields(r, results[0])) + " |" for r in results]
    return "\n".join(lines)


def failures(run: RunResult) -> list[str]:
    """Plain words for what went wrong in ``run`` (empty when it is ``ok``)."""
    out = list(run.notes)
    for c in run.cameras:
        problems = []
        if c.lost:
            problems.append(f"lost {c.lost} of {c.required} segments due")
        if not c.contiguous:
            problems.append("segments not contiguous")
        if c.gaps:
            problems.append(f"{c.gaps} gaps")
        if c.final_lag > run.max_lag:
            problems.append(f"footage ends {c.final_lag:.1f} s before the stop")
        if c.index_lag is not None and c.index_lag - POLL_SECONDS > run.max_lag:
            problems.append(f"a segment indexed {c.index_lag:.1f} s after its end")
        if c.state != "connected":
            problems.append(f"state {c.state} ({c.last_error})")
        if problems:
            out.append(f"{c.name}: " + "; ".join(problems))
    return out


def limits_line(max_n: int) -> str:
    """Open-files and thread limits against what ``max_n`` cameras need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    try:
        threads_max = Path("/proc/sys/kernel/threads-max").read_text().strip()
    except OSError:
        threads_max = "?"

    def fmt(v: int) -> str:
        return "unlimited" if v == resource.RLIM_INFINITY else str(v)

    return (
        f"limits: open files {fmt(soft)} (hard {fmt(hard)}; {max_n} cameras need about "
        f"{FDS_BASE + FDS_PER_CAMERA * max_n}), processes/threads per user {fmt(nproc)}, "
        f"kernel threads-max {threads_max} ({max_n} cameras need about {max_n + 8} threads)"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line: see ``--help``."""
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return _child_main(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--max", type=int, default=64, help="largest N (64)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per N (30)")
    parser.add_argument("--phase", choices=("spread", "same"), default="spread")
    parser.add_argument("--max-lag", type=float, default=GOP_SECONDS, help="seconds (2)")
    parser.add_argument(
        "--counts", help="comma-separated N to run instead of 1, 2, 4 ... --max (e.g. 64)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="recorder worker processes, as recorder.processes (default: one per CPU core, "
        "like homewarden run; 1: every camera a thread of one process)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.max < 1:
        parser.error("--max must be at least 1")
    if args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")
    try:
        counts = (
            [int(c) for c in args.counts.split(",")] if args.counts else camera_counts(args.max)
        )
    except ValueError:
        parser.error("--counts takes numbers separated by commas")
    if min(counts) < 1:
        parser.error("every N must be at least 1")
    args.max = max(counts)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    need = FDS_BASE + FDS_PER_CAMERA * args.max
    if hard != resource.RLIM_INFINITY and hard < need:
        parser.error(f"open-files hard limit {hard} < {need} needed for {args.max} cameras")
    clips = motion_clip_variants(PHASES if args.phase == "spread" else 1)
    procs = args.processes if args.processes is not None else f"{os.cpu_count()} (CPU count)"
    print(
        f"cameras: paced file: cameras of {clips[0].name} ({describe_clip(clips[0])}, 10 % "
        f"motion), phases {args.phase}, {args.seconds:g} s per N, {cores()} cores, "
        f"recorder processes {procs}"
    )
    print(limits_line(args.max))
    print(header(), flush=True)
    results: list[RunResult] = []

    def show(run: RunResult) -> None:
        results.append(run)
        print(row(run, results[0]), flush=True)

    with tempfile.TemporaryDirectory(prefix="homewarden-cameras-") as tmp:
        sweep(
            clips,
            counts,
            args.seconds,
            workdir=Path(tmp),
            max_lag=args.max_lag,
            processes=args.processes,
            on_result=show,
        )
    print()
    print(markdown(results))
    print()
    for run in results:
        print(f"N={run.n}: {run.machine}")
    last = results[-1]
    good = [r.n for r in results if r.ok]
    if not last.ok:
        print(f"N={last.n} failed:")
        for line in failures(last):
            print(f"  {line}")
    print(
        f"largest N without a lost segment or lag: {max(good) if good else 'none'} "
        f"(target 64: {'PASS' if good and max(good) >= 64 else 'FAIL'})"
    )
    if args.json:
        args.json.write_text(json.dumps([_as_json(r) for r in results], indent=2))
    return 0


def _as_json(run: RunResult) -> dict[str, Any]:
    return {
        "n": run.n,
        "processes": run.processes,
        "seconds": run.seconds,
        "cpu": run.cpu,
        "wall": run.wall,
        "cpu_per_camera_minute": run.cpu_per_camera_minute,
        "load": run.load,
        "expected": run.expected,
        "written": run.written,
        "lost": run.lost,
        "contiguous": run.contiguous,
        "worst_lag": run.worst_lag,
        "ok": run.ok,
        "fds": run.fds,
        "threads": run.threads,
        "max_rss_mb": run.max_rss_mb,
        "startup": run.startup,
        "machine": run.machine,
        "problems": failures(run),
    }


if __name__ == "__main__":
    sys.exit(main())
