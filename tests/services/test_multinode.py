"""Acceptance (issue 7, scale-out): two recorder nodes on PostgreSQL share four cameras; one is
killed with ``kill -9``; the other takes its cameras within 30 s; index and disk agree.

Two real ``homewarden run --role recorder`` processes share one database and one data dir (as
on a NAS) and record four looping ``file:`` cameras of real footage (vtest.avi as H.264 with
a 2 s GOP, and bikes.mp4), 2 s segments. The takeover time is measured and printed: from the
kill to the survivor holding all four leases, and to it recording the taken cameras again.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import update

from homewarden.config import Settings
from homewarden.services.reconcile import ReconcileReport, reconcile
from homewarden.services.runtime import Runtime
from homewarden.store.index import Index
from homewarden.store.lease_store import LeaseStore
from homewarden.store.models import CameraLeaseRow
from homewarden.store.records import GapRecord, SegmentRecord
from homewarden.workers.camera_worker import RecorderProcessPool, recorder_pool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

#: The acceptance bound (issue 7): a killed node's cameras are taken within this many seconds.
TAKEOVER_LIMIT = 30.0
#: A segment ends where its last frame ends (its capture time plus one frame: 0.1 s at
#: vtest's 10 fps). When a camera moves to another node the instant it was given up, that
#: node's first frame may be captured within the last one's duration (seen: 8 ms); two nodes
#: recording at once would overlap by whole segments. Likewise a hole of up to one frame
#: between two nodes' footage is rounding, recorded as no gap.
FRAME = 0.1
_START = re.compile(r"^(\d+(?:\.\d+)?)\.mp4(?:\.part)?$")


class Node:
    """One ``homewarden run --role recorder --node NAME`` process, its output in a file."""

    def __init__(self, name: str, config: Path, db_url: str, logs: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARDEN_")}
        env["HOMEWARDEN_DATABASE_URL"] = db_url
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "homewarden", "run", "--config", str(config)),
                *("--role", "recorder", "--node", name),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def tail(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-40:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def _config(tmp_path: Path, data: Path, vtest_h264: Path, bikes_mp4: Path) -> Path:
    cameras = {"cam1": vtest_h264, "cam2": bikes_mp4, "cam3": vtest_h264, "cam4": bikes_mp4}
    # plaintext storage: these tests are about leases and takeover, read from the segment files
    text = f'data_dir = "{data}"\n\n[storage]\nsealed = false\n\n[recorder]\nprocesses = 1\n'
    for name, clip in cameras.items():
        text += (
            f'\n[cameras.{name}]\nurl = "file:{clip}"\nloop = true\nsegment_seconds = 2\n'
            f"\n[cameras.{name}.motion]\nenabled = false\n"
        )
    path = tmp_path / "homewarden.toml"
    path.write_text(text)
    return path


def _wait(check: Callable[[], bool], what: str, timeout: float, nodes: list[Node]) -> float:
    start = time.monotonic()
    while not check():
        for node in nodes:
            assert node.proc.poll() is None, f"{node.name} exited\n{node.tail()}"
        if time.monotonic() - start > timeout:
            tails = "\n".join(n.tail() for n in nodes)
            raise AssertionError(f"not within {timeout:.0f} s: {what}\n{tails}")
        time.sleep(0.1)
    return time.monotonic() - start


def _starts_after(media: Path, camera: str, since: float) -> bool:
    """A segment file of ``camera`` (finished or in progress) starts after ``since``."""
    for p in (media / camera).rglob("*.mp4*"):
        m = _START.match(p.name)
        if m is not None and float(m[1]) > since:
            return True
    return False


def _covered(start: float, end: float, gaps: list[GapRecord]) -> bool:
    """[start, end] lies within the union of closed ``gaps`` (to the millisecond)."""
    reach = start
    for g in sorted(gaps, key=lambda g: g.start):
        if g.end is not None and g.start <= reach + 1e-3:
            reach = max(reach, g.end)
    return reach >= end - 1e-3


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.close()


def test_two_recorder_nodes_share_four_cameras_and_one_takes_over_after_kill_9(
    tmp_path: Path,
    database_url: str,
    vtest_h264: Path,
    bikes_mp4: Path,
    nodes: list[Node],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    media = data / "media"
    config = _config(tmp_path, data, vtest_h264, bikes_mp4)
    index = Index(database_url)
    index.migrate()  # the nodes would do it too (under an advisory lock); leases need it now
    store = LeaseStore(index)
    try:
        nodes += [Node(n, config, database_url, tmp_path) for n in ("n1", "n2")]

        # (1) Each node records two cameras: leases split 2/2 and each holder has indexed a
        # segment of each of its cameras since it took it.
        def split_and_recording() -> bool:
            leases = {lease.camera: lease for lease in store.leases()}
            owners = [lease.node_id for lease in leases.values()]
            if (
                len(leases) != 4
                or None in owners
                or sorted(owners.count(o) for o in set(owners)) != [2, 2]
            ):
                return False
            return all(
                any(s.start > (lease.acquired_at or 0) for s in index.segments(camera))
                for camera, lease in leases.items()
            )

        _wait(split_and_recording, "two nodes recording two cameras each", 90.0, nodes)
        by_name = {node.name: node.id for node in store.nodes()}
        victim, survivor = nodes
        taken = {lease.camera for lease in store.leases() if lease.node_id == by_name["n1"]}

        # (2) kill -9 one node; the other must hold and record all four within 30 s.
        killed_at = time.time()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)

        def survivor_holds_all() -> bool:
            now = store.now()
            leases = store.leases()
            return all(
                lease.node_id == by_name["n2"] and lease.expires_at > now for lease in leases
            )

        held_after = _wait(survivor_holds_all, "the survivor holds all four", 60.0, [survivor])
        recording_after = held_after + _wait(
            lambda: all(_starts_after(media, c, killed_at) for c in taken),
            "the survivor records the taken cameras",
            60.0,
            [survivor],
        )
        with capsys.disabled():
            print(
                f"\ntakeover after kill -9 of node n1 ({', '.join(sorted(taken))}): leases held "
                f"by n2 after {held_after:.1f} s, recording again after {recording_after:.1f} s "
                f"(limit {TAKEOVER_LIMIT:.0f} s)"
            )
        assert held_after <= TAKEOVER_LIMIT
        assert recording_after <= TAKEOVER_LIMIT
        # one finished segment of each taken camera, indexed under the survivor's lease
        _wait(
            lambda: all(any(s.start > killed_at for s in index.segments(c)) for c in taken),
            "a segment of each taken camera indexed",
            30.0,
            [survivor],
        )

        # (3) a clean stop releases the leases and leaves no segment in progress
        survivor.proc.send_signal(signal.SIGTERM)
        assert survivor.proc.wait(60) == 0, survivor.tail()
        assert all(lease.node_id is None for lease in store.leases())

        # (4) index and disk agree: nothing for reconcile to do, both ways equal, no segment
        # twice, no overlap, every hole in a camera's footage answered for by a gap
        assert reconcile(index, media) == ReconcileReport()
        assert not list(media.rglob("*.part"))
        on_disk = {
            p.relative_to(media).as_posix()
            for p in media.rglob("*.mp4")
            if not p.relative_to(media).as_posix().startswith(".")
        }
        rows = index.segments()
        assert {r.path for r in rows} == on_disk
        assert len({(r.camera, r.start) for r in rows}) == len(rows)
        assert index.open_gaps() == []
        for camera in ("cam1", "cam2", "cam3", "cam4"):
            mine = [r for r in rows if r.camera == camera]
            gaps = index.gaps(camera)
            assert mine, camera
            for a, b in itertools.pairwise(mine):
                assert b.start >= a.end - FRAME, (camera, a, b)  # never recorded twice
                if b.start - a.end > FRAME:  # a shorter hole is rounding, no gap (recorder.py)
                    assert _covered(a.end, b.start, gaps), (camera, a, b, gaps)
        for camera in taken:  # the kill is a gap of its own, from the footage it cut
            assert any(
                g.reason == "not_recording" and g.end and g.end > killed_at
                for g in index.gaps(camera)
            )
    finally:
        index.close()


def test_a_recorder_node_records_in_worker_processes_and_gives_up_a_taken_camera(
    tmp_path: Path, database_url: str, vtest_h264: Path, bikes_mp4: Path
) -> None:
    camera = {"loop": True, "segment_seconds": 2, "motion": {"enabled": False}}
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        recorder={"processes": 2},
        cameras={
            "p": {"url": f"file:{vtest_h264}", **camera},
            "q": {"url": f"file:{bikes_mp4}", **camera},
        },
        storage={"sealed": False},  # plaintext storage: this test reads the segment files
    )
    runtime = Runtime(settings, recorder_pool_factory=recorder_pool, role="recorder", node="solo")
    runtime.start()
    try:
        index = runtime.index
        store = LeaseStore(index)
        pool = runtime._recorders
        assert isinstance(pool, RecorderProcessPool)
        _wait(lambda: all(index.segments(c) for c in "pq"), "segments of p and q", 30.0, [])
        assert pool.processes == 2
        assert all(pid is not None and pid != os.getpid() for pid in pool.pids().values())
        # Another node takes q, as if this node's lease had expired.
        with index.transaction("expire q") as s:
            s.execute(
                update(CameraLeaseRow).where(CameraLeaseRow.camera == "q").values(expires_at=0.0)
            )
        other = store.register("other", "h", 1, reclaim=False)
        got: dict[str, int] = {}
        _wait(
            lambda: bool(got.update(store.acquire(other, ["q"], 1, 60.0)) or got),
            "take q",
            10.0,
            [],
        )
        taken_at = time.time()
        _wait(lambda: "q" not in runtime.statuses(), "q given up", 20.0, [])
        _wait(
            lambda: any(s.start > taken_at for s in index.segments("p")), "p records on", 20.0, []
        )
    finally:
        runtime.stop()
    assert not any(s.start > taken_at for s in index_segments(database_url, "q"))
    media = settings.media_dir
    assert not list(media.rglob("*.part"))
    on_disk = {p.relative_to(media).as_posix() for p in media.rglob("*.mp4")}
    assert on_disk == {s.path for s in index_segments(database_url, None)}


def index_segments(database_url: str, camera: str | None) -> list[SegmentRecord]:
    index = Index(database_url)
    try:
        return index.segments(camera)
    finally:
        index.close()
