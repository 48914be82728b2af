"""Background jobs on real queues (SQLite ``jobs.db``; Redis where it says so) over real
footage (bikes.mp4 recorded as segments): passes and exports run by consumer threads, retries,
failures reported, the pass lock, a job interrupted at shutdown, ``homewarden run``'s own
consumer, and the queue depth in ``/metrics``.

The two-worker acceptance test (Redis, PostgreSQL, two ``homewarden worker`` processes) is in
``tests/cli/test_worker.py``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from homewarden.config import JobSettings, Settings, load_settings
from homewarden.domain import disclosure as d
from homewarden.domain import package as pkg
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.errors import ConfigError, InvalidRequestError, JobQueueError
from homewarden.services.audit import AuditLog
from homewarden.services.disclosure import request_from_json
from homewarden.services.evidence import EvidenceService
from homewarden.services.jobs import JOBS_DB, JobQueue, JobServices, QueueErrorThrottle, jobs_db
from homewarden.services.metrics import Metrics
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.services.runtime import Runtime
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.store.index import Index
from homewarden.web.app import create_app
from tests.fixtures_jobs import (
    Recorded,
    forget_queue,
    queue_name,
    record_footage,
    require_redis,
    running,
    wait_for,
)
from tests.fixtures_mail import SmtpTestServer, free_port
from tests.fixtures_media import unavailable
from tests.services.disclosure_helpers import World

OWNER = Actor(ActorKind.LOCAL_OPERATOR, "cli:owner")


def _segments(settings_url: str) -> int:
    index = Index(settings_url)
    try:
        return len(index.segments("porch"))
    finally:
        index.close()


def _export_entries(rec: Recorded) -> list[str]:
    """The package ids named by the log's ``footage:export:create`` entries, in order."""
    s = rec.settings
    with AuditLog.open(s.db_url, s.keys_dir, household=s.household) as audit:
        entries = [audit.entry(i) for i in range(audit.size())]
    return [str(e.subject.request) for e in entries if e.action is AuditTag.FOOTAGE_EXPORT_CREATE]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """``[jobs]`` settings of a fresh queue: SQLite in the data dir, or a unique Redis name."""
    if request.param == "sqlite":
        yield {}
        return
    url = require_redis()
    name = queue_name()
    try:
        yield {"redis_url": url, "name": name}
    finally:
        forget_queue(name)


def test_a_retention_pass_runs_as_a_job_on_the_default_sqlite_queue(
    tmp_path: Path, database_url: str
) -> None:
    rec = record_footage(tmp_path / "data", database_url)
    assert rec.settings.jobs.redis_url is None
    media = rec.settings.media_dir
    files = sorted(media.rglob("*.mp4"))
    assert len(files) == rec.segments > 0
    with running(rec.settings) as queue:
        assert queue.where == f"SQLite {tmp_path / 'data' / JOBS_DB}"
        queue.enqueue_pass("retention")
        # the footage is from 2023: older than the 3 days kept by default
        wait_for("the retention pass", lambda: _segments(rec.settings.db_url) == 0)
        wait_for("an empty queue", lambda: queue.depth().queued == 0)
    assert jobs_db(rec.settings).is_file()
    assert not any(f.exists() for f in files)


def test_export_jobs_make_signed_packages_recorded_with_their_job_id(
    tmp_path: Path, backend: dict[str, object]
) -> None:
    rec = record_footage(tmp_path / "data", None, **backend)
    with running(rec.settings, workers=2) as queue:
        ids = [
            queue.enqueue_export(
                ["porch"],
                rec.start + 1,
                rec.start + 4,
                actor=OWNER,
                reason="break-in",
                redact=redact,
            )
            for redact in (False, True)
        ]
        wait_for("two export records", lambda: all(queue.export_record(i) for i in ids), 120)
        records = [queue.export_record(i) for i in ids]
    keys = load_public_keys(rec.settings.keys_dir / "log_public_keys.json")
    manifests = []
    for job_id, record in zip(ids, records, strict=True):
        assert record is not None
        assert (record.job_id, record.state, record.tries) == (job_id, "done", 1)
        assert record.zip_path is not None
        assert record.package_id is not None
        folder = tmp_path / "data" / "exports" / job_id
        assert record.zip_path == folder / f"{record.package_id}.zip"
        assert verify_package_path(record.zip_path, keys).trusted
        manifest = json.loads((folder / record.package_id / pkg.MANIFEST).read_text())
        assert manifest["reason"] == f"break-in (job {job_id})"
        manifests.append(manifest)
    assert manifests[0]["redaction"] is None
    assert manifests[1]["redaction"] is not None
    assert sorted(_export_entries(rec)) == sorted(str(r.package_id) for r in records if r)


def test_enqueue_checks_what_it_can_before_queueing(tmp_path: Path) -> None:
    rec = record_footage(tmp_path / "data", None)
    queue = JobQueue(rec.settings)
    try:
        with pytest.raises(InvalidRequestError, match="at least one camera"):
            queue.enqueue_export([], rec.start, rec.end, actor=OWNER, reason="r")
        with pytest.raises(InvalidRequestError, match="must be after"):
            queue.enqueue_export(["porch"], rec.end, rec.start, actor=OWNER, reason="r")
        with pytest.raises(InvalidRequestError, match="reason"):
            queue.enqueue_export(["porch"], rec.start, rec.end, actor=OWNER, reason="  ")
        with pytest.raises(InvalidRequestError, match="no pass named"):
            queue.enqueue_pass("backup")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="not a job id"):
            queue.export_record("../etc")
        assert queue.depth().queued == 0
    finally:
        queue.close()


def test_a_failing_export_is_retried_then_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = record_footage(tmp_path / "data", None)
    exports = tmp_path / "data" / "exports"
    exports.mkdir()
    queue = JobQueue(rec.settings, export_retries=2, retry_delay=0.1)
    try:
        job = queue.enqueue_export(["porch"], rec.start, rec.end, actor=OWNER, reason="r")
        (exports / job).write_text("in the way")  # its folder cannot be made: a StorageError
        consumer = queue.consumer(1)
        with caplog.at_level(logging.INFO, logger="homewarden"):
            consumer.start()
            try:
                wait_for("the final failure", lambda: "failed for good" in caplog.text, 60)
            finally:
                consumer.stop(10)
        tries = [
            r.getMessage().split(": ")[1]
            for r in caplog.records
            if r.getMessage().startswith(f"export job {job}: try")
        ]
        assert tries == ["try 1 failed", "try 2 failed", "try 3 failed"]
        error = queue.job_error(job)
        assert error is not None
        assert "cannot create" in error
        assert queue.export_record(job) is None  # nothing made, no folder to hold a record
        assert queue.depth().queued == queue.depth().scheduled == 0
        assert _export_entries(rec) == []
    finally:
        queue.close()


def test_an_export_retried_after_a_transient_error_succeeds_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = record_footage(tmp_path / "data", None)
    exports = tmp_path / "data" / "exports"
    exports.mkdir()
    queue = JobQueue(rec.settings, export_retries=3, retry_delay=2.0)
    try:
        job = queue.enqueue_export(["porch"], rec.start, rec.end, actor=OWNER, reason="r")
        blocker = exports / job
        blocker.write_text("in the way")
        consumer = queue.consumer(1)
        with caplog.at_level(logging.INFO, logger="homewarden"):
            consumer.start()
            try:
                wait_for("a first failed try", lambda: f"{job}: try 1 failed" in caplog.text)
                blocker.unlink()  # the disk is back
                wait_for("the record", lambda: queue.export_record(job) is not None, 60)
            finally:
                consumer.stop(10)
        record = queue.export_record(job)
        assert record is not None
        assert record.state == "done"
        assert record.tries in (2, 3)
        assert _export_entries(rec) == [record.package_id]
        assert queue.job_error(job) is None
    finally:
        queue.close()


def test_an_export_of_an_unknown_camera_fails_at_once_with_a_record(tmp_path: Path) -> None:
    rec = record_footage(tmp_path / "data", None)
    with running(rec.settings, export_retries=3, retry_delay=0.1) as queue:
        job = queue.enqueue_export(["attic"], rec.start, rec.end, actor=OWNER, reason="r")
        wait_for("the record", lambda: queue.export_record(job) is not None)
        record = queue.export_record(job)
        assert record is not None
        assert (record.state, record.tries, record.package_id) == ("failed", 1, None)
        assert "no camera named 'attic'" in str(record.error)
        wait_for("the reported error", lambda: queue.job_error(job) is not None)
        assert queue.depth().scheduled == 0  # no retry is waiting


def test_two_workers_never_run_the_same_pass_together(
    tmp_path: Path, backend: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    rec = record_footage(tmp_path / "data", None, **backend)
    other = JobQueue(rec.settings)  # another worker of the same queue
    try:
        with caplog.at_level(logging.INFO, logger="homewarden"), running(rec.settings) as queue:
            with other.pass_lock("retention") as held:
                assert held
                with queue.pass_lock("retention") as second:
                    assert not second
                with queue.pass_lock("disclosure") as another_pass:
                    assert another_pass  # one lock per pass
                queue.enqueue_pass("retention")
                wait_for("the skipped pass", lambda: "retention pass skipped" in caplog.text)
                assert _segments(rec.settings.db_url) == rec.segments
            queue.enqueue_pass("retention")  # the lock is free again
            wait_for("the retention pass", lambda: _segments(rec.settings.db_url) == 0)
    finally:
        other.close()


def test_an_export_interrupted_at_shutdown_is_queued_again_and_makes_one_package(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = record_footage(tmp_path / "data", None)
    services = JobServices.open(rec.settings)
    queue = JobQueue(rec.settings, services=services, retry_delay=1.0)
    try:
        with caplog.at_level(logging.INFO, logger="homewarden"):
            first = queue.consumer(1)
            first.start()
            # Redaction re-encodes: long enough to be running when the stop comes.
            job = queue.enqueue_export(
                ["porch"], rec.start + 1, rec.start + 5, actor=OWNER, reason="r", redact=True
            )
            folder = tmp_path / "data" / "exports" / job
            wait_for("the export to start", lambda: any(folder.glob("*.part")))
            first.stop(0.0)  # do not wait: it is interrupted
            assert f"export job {job} was interrupted by the stop; queued again" in caplog.text
            assert queue.depth().queued == 1
            second = queue.consumer(1)
            second.start()
            try:
                wait_for("the record", lambda: queue.export_record(job) is not None, 180)
                wait_for("an empty queue", lambda: queue.depth().queued == 0)
                # the delivery that found the first one running waits for it, then finds it
                wait_for(
                    "the second delivery",
                    lambda: f"export job {job} ran already" in caplog.text,
                    60,
                )
            finally:
                second.stop(10)
        record = queue.export_record(job)
        assert record is not None
        assert record.state == "done"
        assert [p.name for p in folder.glob("*.zip")] == [f"{record.package_id}.zip"]
        assert not list(folder.glob("*.part"))
        assert _export_entries(rec) == [record.package_id]
    finally:
        queue.close()
        services.close()


def test_a_message_without_the_deployments_key_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another deployment (its own keys dir) on the same Redis queue name: what anyone able
    # to write to the queue but without our keys dir could send. Its message is not run.
    url, name = require_redis(), queue_name()
    try:
        rec = record_footage(tmp_path / "data", None, redis_url=url, name=name)
        stranger = record_footage(tmp_path / "other", None, redis_url=url, name=name)
        intruder = JobQueue(stranger.settings)
        try:
            intruder.enqueue_pass("retention")
        finally:
            intruder.close()
        with caplog.at_level(logging.INFO), running(rec.settings) as queue:
            wait_for("the refusal", lambda: "queue key MAC" in caplog.text)
            assert queue.depth().queued == 0
        assert (stranger.settings.keys_dir / "jobs_queue.key").read_bytes() != (
            rec.settings.keys_dir / "jobs_queue.key"
        ).read_bytes()
        assert _segments(rec.settings.db_url) == rec.segments  # the pass never ran
        assert _segments(stranger.settings.db_url) == stranger.segments
    finally:
        forget_queue(name)


def test_run_consumes_its_own_passes_and_stops_its_threads(tmp_path: Path) -> None:
    rec = record_footage(tmp_path / "data", None)
    before = {t.ident for t in threading.enumerate()}
    runtime = Runtime(rec.settings)
    runtime.start()
    try:
        wait_for("the first retention pass", lambda: _segments(rec.settings.db_url) == 0)
    finally:
        runtime.stop()
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not [n for n in left if n.startswith(("Worker-", "Scheduler", "jobs-"))], left


def test_run_without_workers_leaves_jobs_to_a_worker_and_metrics_show_the_depth(
    tmp_path: Path,
) -> None:
    rec = record_footage(tmp_path / "data", None, workers=0)
    # The passes run first (a higher priority): keep the 2023 footage for the exports.
    porch = rec.settings.cameras["porch"].model_dump()
    porch["retention"]["continuous_days"] = 100_000
    settings = rec.settings.model_copy(
        update={
            "api": rec.settings.api.model_copy(update={"port": 0}),
            "cameras": {"porch": rec.settings.cameras["porch"].model_validate(porch)},
        }
    )
    runtime = Runtime(settings, app_factory=create_app)
    address = runtime.start()
    assert address is not None
    try:
        (owner,) = runtime.accounts.users()
        token, _ = runtime.accounts.create_token(owner.id, "prometheus")

        def scrape() -> dict[str, float]:
            request = urllib.request.Request(
                f"{address.url}/metrics", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                text = resp.read().decode()
            return {
                s.name: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name.startswith("homewarden_jobs_")
            }

        producer = JobQueue(settings)
        try:
            ids = [
                producer.enqueue_export(
                    ["porch"], rec.start + 1, rec.start + 3, actor=OWNER, reason=f"n{i}"
                )
                for i in range(3)
            ]
            # the runtime queued a retention and a disclosure pass at start; nobody runs them
            wait_for("queued passes", lambda: producer.depth().queued >= 5)
            samples = scrape()
            assert samples["homewarden_jobs_queued"] >= 5
            assert samples["homewarden_jobs_queued"] <= producer.depth().queued
            assert samples["homewarden_jobs_scheduled"] == 0
            assert all(producer.export_record(i) is None for i in ids)  # nobody ran them
            # a worker comes: it drains the queue, passes and exports alike
            consumer = producer.consumer(2)
            consumer.start()
            try:
                wait_for("the exports", lambda: all(producer.export_record(i) for i in ids), 120)
                assert all(r and r.state == "done" for r in map(producer.export_record, ids))
                wait_for("a drained /metrics", lambda: scrape()["homewarden_jobs_queued"] == 0)
            finally:
                consumer.stop(10)
        finally:
            producer.close()
        # An unreachable queue is no sample, not a zero.
        dead = JobQueue(
            settings.model_copy(
                update={"jobs": JobSettings(redis_url="redis://127.0.0.1:1/0", name="nowhere")}
            )
        )
        try:
            with pytest.raises(JobQueueError, match=r"Redis redis://127\.0\.0\.1:1/0"):
                dead.depth()
            ctx = runtime.app_context()
            metrics = Metrics(
                ctx.queries,
                ctx.index,
                DisclosureStore(ctx.index),
                lambda household: frozenset(),
                ctx.current_settings,
                ctx.clock,
                jobs=dead.depth,
            )
            text = metrics.exposition(runtime.accounts.principal_of(owner)).decode()
            assert "homewarden_storage_used_bytes" in text
            assert "homewarden_jobs_queued" not in text
        finally:
            dead.close()
    finally:
        runtime.stop()


def test_a_disclosure_pass_after_a_crash_fulfils_with_the_package_made_before(
    database_url: str, tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    # A pass made the request's package, then its worker died before the fulfilment was
    # stored: the next pass (a job) must hand out that package, never make a second.
    w = World(tmp_path, database_url, smtp_server)
    try:
        rita = w.requester("rita")
        r = w.consent(rita)
        w.svc.act(w.p(w.owner), r.id, d.OwnerGrant())
        scope = request_from_json(w.svc.store.request(r.id).data).scope
        w.svc.packages_dir.mkdir()
        made = EvidenceService(w.index, w.settings, w.audit, clock=w.clock).export(
            list(scope.cameras),
            scope.start,
            scope.end,
            w.svc.packages_dir,
            actor=Actor(ActorKind.SYSTEM, "disclosure"),
            reason=f"fulfilment of request {r.id}",
            request_id=r.id,
            legal_basis="owner consent",
        )
        assert w.svc.store.request(r.id).package is None  # the step was never stored
        exported = [e for e in w.entries() if e.action is AuditTag.FOOTAGE_EXPORT_CREATE]
        services = JobServices(
            w.index, w.audit, lambda: w.settings, disclosure=w.svc, clock=w.clock
        )
        with running(w.settings, services=services) as queue:
            queue.enqueue_pass("disclosure")
            wait_for("the fulfilment", lambda: w.svc.store.request(r.id).state == "fulfilled")
        stored = w.svc.store.request(r.id)
        assert stored.package == made.zip_path.name
        assert sorted(p.name for p in w.svc.packages_dir.glob("*.zip")) == [made.zip_path.name]
        again = [e for e in w.entries() if e.action is AuditTag.FOOTAGE_EXPORT_CREATE]
        assert again == exported  # no second export was made or logged
        assert verify_package_path(made.zip_path).files_checked > 0
    finally:
        w.close()


def test_jobs_settings_are_checked_where_they_are_read(tmp_path: Path) -> None:
    def load(text: str) -> Settings:
        path = tmp_path / "c.toml"
        path.write_text(text)
        return load_settings(path)

    assert load("").jobs == JobSettings()  # SQLite, queue "homewarden", one thread in run
    assert load('[jobs]\nredis_url = "rediss://h:6380/1"\nworkers = 0\n').jobs.workers == 0
    with pytest.raises(ConfigError, match=r"jobs\.redis_url: .*redis://"):
        load('[jobs]\nredis_url = "http://127.0.0.1:6379"\n')
    with pytest.raises(ConfigError, match=r"jobs\.name: .*letters, digits and _"):
        load('[jobs]\nname = "home-warden"\n')  # huey's Redis storage would drop the "-"
    with pytest.raises(ConfigError, match=r"jobs\.workers"):
        load("[jobs]\nworkers = -1\n")
    with pytest.raises(ConfigError, match=r"jobs\.retries"):
        load("[jobs]\nretries = 3\n")  # unknown keys are refused


def test_a_head_signed_by_another_worker_meanwhile_is_not_taken_for_tampering(
    index: Index, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression (found by the two-worker test): a worker read the log's size, another signed
    # a head over a longer log, and the first then read that head and reported entries
    # missing. Whichever of the two reads comes first, the other worker acts right after it.
    keys = tmp_path / "keys"
    with (
        AuditLog.open(database_url, keys) as first,
        AuditLog.open(database_url, keys) as second,
    ):
        for log_ in (first, second):
            log_.ensure_key()
            log_.append(AuditTag.FOOTAGE_LIVE_VIEW, OWNER, "view", camera="porch")
        second.sign_tree_head()
        store = first._store
        calls: list[str] = []

        def meanwhile(name: str) -> None:
            calls.append(name)
            if len(calls) == 1:
                second.append(AuditTag.FOOTAGE_LIVE_VIEW, OWNER, "view", camera="porch")
                second.sign_tree_head()

        for name in ("size", "latest_tree_head"):
            original = getattr(store, name)

            def wrapped(*args: object, _o: object = original, _n: str = name) -> object:
                result = _o(*args)  # type: ignore[operator]
                meanwhile(_n)
                return result

            monkeypatch.setattr(store, name, wrapped)
        head = first.sign_tree_head()
        monkeypatch.undo()
        assert head.tree_size <= first.size()
        assert first.verify().size == first.size()


# faults found in testing: an unreachable queue


def _raised(exc: BaseException) -> Any:
    try:
        raise exc
    except BaseException:
        return sys.exc_info()


def _huey_record(msg: str, exc: BaseException, *args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "huey.consumer.Worker", logging.ERROR, __file__, 1, msg, args, _raised(exc)
    )


def test_repeated_queue_read_errors_are_let_through_once_a_minute_with_a_count() -> None:
    now = [1000.0]
    throttle = QueueErrorThrottle(interval=60.0, clock=lambda: now[0])
    refused = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    first = _huey_record("Error reading from queue", refused)
    assert throttle.filter(first)
    assert first.exc_info is None  # one line, no traceback
    assert "Connection refused" in first.getMessage()
    assert "Error reading from queue" in first.getMessage()
    assert throttle.failing
    for _ in range(30):
        now[0] += 1.0
        assert not throttle.filter(_huey_record("Error reading from queue", refused))
    # The scheduler's read errors are counted apart.
    assert throttle.filter(_huey_record("Error reading schedule.", refused))
    now[0] = 1060.0  # a minute after the first
    again = _huey_record("Error reading from queue", refused)
    assert throttle.filter(again)
    assert "30 more" in again.getMessage()
    # Anything else from huey passes untouched, traceback and all.
    other = _huey_record("Unhandled error during execution of task %s.", ValueError("x"), "t1")
    assert throttle.filter(other)
    assert other.exc_info is not None
    throttle.reset()
    assert not throttle.failing
    assert throttle.filter(_huey_record("Error reading from queue", refused))


def test_run_with_an_unreachable_job_queue_warns_once_instead_of_flooding_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    secret = "hunter2-" + queue_name()
    settings = Settings(
        data_dir=tmp_path / "data",
        jobs={"redis_url": f"redis://:{secret}@127.0.0.1:{port}/0", "name": queue_name()},
    )
    runtime = Runtime(settings)
    with caplog.at_level(logging.INFO):
        runtime.start()  # recording must go on without the queue
        try:
            time.sleep(6.0)  # before the fix: a traceback or more a second, 1,400 lines
        finally:
            runtime.stop()
    text = caplog.text
    assert secret not in text
    assert "Traceback" not in text
    unreachable = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert len(unreachable) == 1, [r.getMessage() for r in unreachable]
    warning = unreachable[0]
    assert warning.levelno == logging.WARNING
    for part in (f"127.0.0.1:{port}", "retention", "disclosure", "wait"):
        assert part in warning.getMessage(), part
    huey = [r for r in caplog.records if r.name.startswith("huey") and r.levelno > logging.INFO]
    assert len(huey) <= 2, [r.getMessage() for r in huey]  # a worker's and the scheduler's
    passes = [r for r in caplog.records if "not queued" in r.getMessage()]
    assert passes == []  # the warning said it; a pass every 5 s does not repeat it
    assert len(text.splitlines()) < 40


#: redis-server options: nothing written to disk.
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def test_a_job_queue_reachable_again_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server_bin = shutil.which("redis-server")
    if server_bin is None:
        unavailable("redis-server missing (Debian package redis-server)")
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        jobs={"redis_url": f"redis://127.0.0.1:{port}/0", "name": queue_name()},
    )
    queue = JobQueue(settings)
    consumer = queue.consumer(1, health_interval=0.2)
    server: subprocess.Popen[bytes] | None = None
    try:
        with caplog.at_level(logging.INFO):
            assert not queue.probe()
            consumer.start()
            server = subprocess.Popen(
                [server_bin, "--port", str(port), "--bind", "127.0.0.1", *NO_PERSISTENCE],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for("reachable again", lambda: "reachable again" in caplog.text, 20.0)
        assert queue.probe()
        again = [r for r in caplog.records if "reachable again" in r.getMessage()]
        assert len(again) == 1
        assert again[0].levelno == logging.INFO
    finally:
        consumer.stop(5.0)
        queue.close()
        if server is not None:
            server.terminate()
            server.wait(10)
