"""``homewarden worker``: real worker processes draining real queues.

Acceptance (issue 7, "Background jobs"): two job workers on Redis drain 50 export jobs with
none run twice - two ``homewarden worker`` processes (two threads each) on one data dir and
one PostgreSQL database, 50 exports of recorded footage queued from here; every job makes
exactly one signed package, recorded once in the audit log, both workers take a share, and
nothing is left in the queue.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import EXIT_ERROR, app
from homewarden.config import Settings
from homewarden.domain import package as pkg
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.services.audit import AuditLog
from homewarden.services.jobs import JobQueue
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.store.index import Index
from tests.fixtures_jobs import forget_queue, queue_name, record_footage, require_redis, wait_for

OWNER = Actor(ActorKind.LOCAL_OPERATOR, "cli:owner")
EXPORTS = 50


def _toml(value: object) -> str:
    # JSON strings, numbers, booleans and arrays are TOML values as they are.
    return json.dumps(value)


def write_config(settings: Settings, path: Path) -> Path:
    """``settings`` (data dir, database, jobs, cameras) as the TOML file a worker reads."""
    lines = [f"data_dir = {_toml(str(settings.data_dir))}"]
    if settings.database_url is not None:
        lines.append(f"database_url = {_toml(settings.database_url)}")
    lines.append("[jobs]")
    for key, value in settings.jobs.model_dump(exclude_none=True).items():
        lines.append(f"{key} = {_toml(value)}")
    for name, cam in settings.cameras.items():
        lines += [
            f"[cameras.{name}]",
            f"url = {_toml(cam.url)}",
            f"enabled = {_toml(cam.enabled)}",
            f"[cameras.{name}.motion]",
            f"masks = {_toml([[list(p) for p in m] for m in cam.motion.masks])}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Worker:
    """A ``homewarden worker`` process and what it printed."""

    proc: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, config: Path, threads: int) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HOMEWARDEN_")}
        env["PYTHONUNBUFFERED"] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-m", "homewarden", "worker", "--config", str(config),
             "--workers", str(threads)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        worker = cls(proc)
        assert proc.stdout is not None
        assert proc.stderr is not None
        for stream, sink in ((proc.stdout, worker.out), (proc.stderr, worker.err)):
            threading.Thread(target=_drain, args=(stream, sink), daemon=True).start()
        return worker

    @property
    def ident(self) -> str:
        """The worker id its exports record."""
        return f"{socket.gethostname()}:{self.proc.pid}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"worker exited with {self.proc.returncode}: {''.join(self.err)}")
        return any(line.startswith(f"Worker {self.ident}: ") for line in self.out)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"worker {self.proc.pid} did not stop on {sig.name}")


def _drain(stream: object, sink: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers a test starts; any still running at the end are killed."""
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_on_redis_drain_50_exports_none_run_twice(
    tmp_path: Path, database_url: str, workers: list[Worker]
) -> None:
    url, name = require_redis(), queue_name()
    try:
        rec = record_footage(tmp_path / "data", database_url, redis_url=url, name=name, workers=0)
        config = write_config(rec.settings, tmp_path / "homewarden.toml")
        workers += [Worker.start(config, threads=2) for _ in range(2)]
        wait_for("two ready workers", lambda: all(w.ready() for w in workers), 120)
        queue = JobQueue(rec.settings)
        try:
            ids = [
                queue.enqueue_export(
                    ["porch"], rec.start + 1, rec.start + 4, actor=OWNER, reason=f"copy {i}"
                )
                for i in range(EXPORTS)
            ]
            assert len(set(ids)) == EXPORTS
            wait_for("50 export records", lambda: all(queue.export_record(i) for i in ids), 600)
            records = {i: queue.export_record(i) for i in ids}
            assert queue.depth().queued == 0
            assert queue.depth().scheduled == 0
        finally:
            queue.close()
        codes = [w.stop() for w in workers]
        assert codes == [0, 0], [w.err for w in workers]
        for w in workers:
            assert "Traceback" not in "".join(w.err), "".join(w.err)
            assert "Stopped." in "".join(w.out)

        # every job ran once, on the first try, and made one package of its own
        exports = rec.settings.data_dir / "exports"
        assert sorted(p.name for p in exports.iterdir()) == sorted(ids)
        packages: dict[str, str] = {}
        for job_id, record in records.items():
            assert record is not None
            assert (record.state, record.tries) == ("done", 1), record
            assert record.package_id is not None
            folder = exports / job_id
            assert [p.name for p in folder.glob("*.zip")] == [f"{record.package_id}.zip"]
            assert not list(folder.glob("*.part"))
            manifest = json.loads((folder / record.package_id / pkg.MANIFEST).read_text())
            assert manifest["reason"].endswith(f"(job {job_id})")
            packages[record.package_id] = job_id
        assert len(packages) == EXPORTS

        # the audit log holds one export entry per package (one camera each), no more
        s = rec.settings
        with AuditLog.open(s.db_url, s.keys_dir, household=s.household) as audit:
            entries = [audit.entry(i) for i in range(audit.size())]
        exported = Counter(
            e.subject.request for e in entries if e.action is AuditTag.FOOTAGE_EXPORT_CREATE
        )
        assert exported == Counter(dict.fromkeys(packages, 1))

        # both workers took a share
        by_worker = Counter(r.worker for r in records.values() if r is not None)
        assert set(by_worker) == {w.ident for w in workers}, by_worker
        assert all(n > 0 for n in by_worker.values())

        # and what they made verifies against the deployment's key
        keys = load_public_keys(s.keys_dir / "log_public_keys.json")
        some = next(r for r in records.values() if r is not None and r.zip_path is not None)
        assert some.zip_path is not None
        assert verify_package_path(some.zip_path, keys).trusted
    finally:
        forget_queue(name)


def test_worker_on_the_default_sqlite_queue_runs_a_pass_and_stops_on_sigint(
    tmp_path: Path, workers: list[Worker]
) -> None:
    rec = record_footage(tmp_path / "data", None)
    config = write_config(rec.settings, tmp_path / "homewarden.toml")
    queue = JobQueue(rec.settings)
    try:
        queue.enqueue_pass("retention")  # queued before any worker runs
    finally:
        queue.close()
    worker = Worker.start(config, threads=1)
    workers.append(worker)
    wait_for("a ready worker", worker.ready, 120)
    assert f"on SQLite {rec.settings.data_dir / 'jobs.db'}" in "".join(worker.out)

    def footage_left() -> int:
        index = Index(rec.settings.db_url)
        try:
            return len(index.segments("porch"))
        finally:
            index.close()

    wait_for("the retention pass", lambda: footage_left() == 0, 60)
    assert worker.stop(signal.SIGINT) == 0
    assert "Stopped." in "".join(worker.out)
    assert "Traceback" not in "".join(worker.err)


def test_worker_with_an_unreachable_redis_exits_2_naming_the_queue(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["worker", "--data-dir", str(tmp_path / "data"), "--quiet"],
        env={"HOMEWARDEN_JOBS__REDIS_URL": "redis://:secret@127.0.0.1:1/0"},
    )
    assert result.exit_code == EXIT_ERROR, result.output
    assert "job queue (Redis redis://:***@127.0.0.1:1/0 queue homewarden)" in result.output
    assert "secret" not in result.output
    assert "Traceback" not in result.output
