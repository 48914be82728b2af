"""Background jobs: evidence exports (redaction included), retention passes and disclosure
scheduler passes, run by huey workers on SQLite (one machine) or Redis (many).

DESIGN.md "Scale" and issue 7: the same task code runs inside ``homewarden run`` (a consumer of
``jobs.workers`` threads, :class:`JobConsumer`) and in any number of ``homewarden worker``
processes (:func:`run_worker`), on one box or many; only ``[jobs]`` differs.

The queue (:class:`JobQueue`):

* ``jobs.redis_url`` None: huey's ``SqliteHuey`` at ``<data_dir>/jobs.db`` (:func:`jobs_db`);
  else ``PriorityRedisExpireHuey`` at that URL. Either is named ``jobs.name``; passes are
  queued at a higher priority than exports, so a backlog of exports never holds up a notice.
  On Redis, errors of failed jobs are kept for :data:`RESULT_SECONDS`, then expire.
* Messages are pickles (huey's format) authenticated with HMAC-SHA256 (RFC 2104) under the
  deployment's queue key ``<keys_dir>/jobs_queue.key`` (32 random bytes, 0600, made at first
  use): whoever can write to Redis but lacks the key cannot make a worker unpickle anything;
  such a message is dropped. Every process of a deployment reads the same keys dir.
* Library errors (Redis, SQLite, huey) become :class:`~homewarden.errors.JobQueueError`.

The jobs (each opens nothing itself: they run over the process's :class:`JobServices`, opened
once per process - the runtime hands its own; a worker opens them from its settings):

* ``export`` (:meth:`JobQueue.enqueue_export`): :meth:`EvidenceService.export
  <homewarden.services.evidence.EvidenceService.export>` of the cameras over a span, with
  ``redact`` if asked, into ``<data_dir>/exports/<job id>/``; the manifest's reason ends with
  ``(job <job id>)`` and the folder gets a record, ``job.json`` (:class:`ExportRecord`: done
  or failed, the package, the tries, which worker). Retried on errors a retry can cure
  (:class:`~homewarden.errors.DatabaseError`, :class:`~homewarden.errors.StorageError`) up to
  :data:`EXPORT_RETRIES` times, ``EXPORT_RETRY_DELAY`` s apart, doubling; any other error
  fails it at once. A job never makes two packages: it holds a ``flock`` on its folder while
  it runs (a second delivery of the same job waits for it, as a retry), and a try finds the
  package or record of an earlier one (a worker killed between placing the package and
  writing its record) and finishes with that instead of exporting again. A scope holding
  footage sealed at rest fails at once, not retried (:func:`refuse_sealed_scope`: no key may
  cross the queue).
* ``retention_pass``: :func:`~homewarden.services.retention.run_retention_pass` over the
  effective settings (the config file's cameras overlaid by those saved in the app).
* ``disclosure_pass``: :meth:`DisclosureService.run_due
  <homewarden.services.disclosure.DisclosureService.run_due>` (due owner notices, expiries,
  holds ending, fulfilment; each request's state is read from the database, so a pass never
  fulfils a request twice).

Passes are never retried (the next one, a few seconds on, is the retry) and expire unrun after
the interval they were queued for, so a busy queue does not pile them up. Two workers never
run the same pass together (:meth:`JobQueue.pass_lock`): on SQLite the lock is a ``flock``
in the data dir (one machine; the kernel drops it when its holder dies), on Redis a redis-py
lock with a :data:`PASS_LOCK_SECONDS` expiry that its holder renews while the pass runs (a
dead worker's lock expires; a long fulfilment keeps it). huey's own ``lock_task`` is not used:
its SQLite lock cannot expire (a crashed worker would stop every later pass) and a fixed
expiry on Redis would run out under a long fulfilment.

An unreachable queue (Redis down, a wrong ``jobs.redis_url``) stops no one: recording goes
on, and the passes wait until it is reachable. :meth:`JobQueue.probe` says so once, in one
warning naming the queue (password hidden); the runtime's pass loops say nothing more until
the queue takes a pass again (:meth:`JobQueue.note_error`, :meth:`JobQueue.note_ok`, which
logs that it is reachable again). huey's consumer logs a full traceback at each failed read
(once a second or more per thread); :class:`QueueErrorThrottle` lets one such record of each
kind through per :data:`QUEUE_ERROR_LOG_INTERVAL` s, on one line, with the count of those
held back.

Stopping: :meth:`JobConsumer.stop` waits for the jobs running to finish (up to a timeout);
an export still running then is queued again (same job id, so it cannot make a second
package).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import pickle  # huey's message format; every message is authenticated before loads
import secrets
import shutil
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import redis
from huey import PriorityRedisExpireHuey, SqliteHuey
from huey.consumer import Consumer
from huey.exceptions import HueyException, RetryTask
from huey.serializer import Serializer
from huey.signals import SIGNAL_ERROR, SIGNAL_INTERRUPTED
from redis.exceptions import LockError, RedisError

from homewarden.config import Settings
from homewarden.domain.audit import Actor, ActorKind
from homewarden.errors import (
    DatabaseError,
    HomeWardenError,
    InvalidRequestError,
    JobQueueError,
    KeysLockedError,
    StorageError,
)
from homewarden.notify.mail import Mailer
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.cameras import effective_settings
from homewarden.services.disclosure import DisclosureService
from homewarden.services.evidence import EvidenceService
from homewarden.services.notices import NoticeService
from homewarden.services.queries import redact_url
from homewarden.services.retention import run_retention_pass
from homewarden.store.camera_store import CameraStore
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.store.index import Index
from homewarden.store.keyfiles import create_secret, read_secret

log = logging.getLogger(__name__)

#: Name of the SQLite queue file in the data dir.
JOBS_DB = "jobs.db"
#: Name of the queue's message key in the keys dir.
QUEUE_KEY_FILE = "jobs_queue.key"
#: Name of an export job's record in its folder.
RECORD_FILE = "job.json"
#: Tries after the first an export gets for an error a retry can cure.
EXPORT_RETRIES = 3
#: Seconds before an export's first retry; each later one waits twice as long.
EXPORT_RETRY_DELAY = 10.0
#: Priority of passes over exports (huey: higher runs first).
PASS_PRIORITY = 10
#: Seconds a pass lock on Redis lives unless its holder renews it (a third of it apart).
PASS_LOCK_SECONDS = 60.0
#: Seconds Redis keeps the error of a failed job.
RESULT_SECONDS = 7 * 24 * 3600
#: Longest wait, seconds, of an idle worker between two looks at a SQLite queue.
POLL_MAX_DELAY = 1.0
#: Seconds between checks that the consumer's threads are alive (dead ones are replaced).
HEALTH_INTERVAL = 10.0
#: Seconds ``homewarden worker`` waits for running jobs to finish when told to stop.
WORKER_STOP_TIMEOUT = 60.0
#: Seconds between two huey read-error records of one kind let through to the log.
QUEUE_ERROR_LOG_INTERVAL = 60.0
#: huey's consumer loggers whose queue read errors are throttled, and those errors' messages
#: (huey/consumer.py: ``Worker.loop``, ``Scheduler.loop``).
HUEY_CONSUMER_LOGGERS = ("huey.consumer.Worker", "huey.consumer.Scheduler")
HUEY_READ_ERRORS = frozenset({"Error reading from queue", "Error reading schedule."})

PassName = Literal["retention", "disclosure"]
_PASSES: tuple[PassName, ...] = ("retention", "disclosure")
_MAC_SIZE = 32


def refuse_sealed_scope(index: Index, cameras: Sequence[str], start: float, end: float) -> None:
    """Refuse an export job whose scope holds footage sealed at rest (``storage.sealed``):
    the household keys that open it live only in an unlocked session's memory and must
    never be written to the queue or the disk, so no job can carry them (issue 6).

    Raises:
        KeysLockedError: sealed footage in the scope (no retry can cure it).
    """
    if any(s.sealed for cam in cameras for s in index.segments(cam, start, end)):
        raise KeysLockedError(
            "sealed footage: export it from the web app or `homewarden export --user`"
        )


def jobs_db(settings: Settings) -> Path:
    """The SQLite queue file: ``<data_dir>/jobs.db``."""
    return settings.data_dir / JOBS_DB


def worker_id() -> str:
    """This process as ``<host name>:<pid>`` (recorded with each export)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Jobs ``queued`` (waiting for a worker) and ``scheduled`` (waiting for their time: a
    retry's delay)."""

    queued: int
    scheduled: int


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """What an export job did, kept as ``job.json`` in its folder.

    ``state``: ``done`` (``package_id`` and ``zip_path`` name the package) or ``failed``
    (``error`` says why; written when no try is left). ``tries``: the try that ended it (1 for
    the first). ``worker``: :func:`worker_id` of the process that ran it. ``finished_at``: UTC
    epoch seconds.
    """

    job_id: str
    state: Literal["done", "failed"]
    tries: int
    worker: str
    finished_at: float
    package_id: str | None = None
    zip_path: Path | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as JSON (the zip as its file name in the job's folder)."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "tries": self.tries,
            "worker": self.worker,
            "finished_at": self.finished_at,
            "package_id": self.package_id,
            "zip": None if self.zip_path is None else self.zip_path.name,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: Path) -> ExportRecord:
        """The record of ``data`` (as :meth:`to_json` wrote it) kept in ``folder``.

        Raises:
            StorageError: a field is missing or of the wrong type.
        """
        try:
            state = data["state"]
            if state not in ("done", "failed"):
                raise ValueError(f"state {state!r}")
            name = data["zip"]
            return cls(
                job_id=str(data["job_id"]),
                state=state,
                tries=int(data["tries"]),
                worker=str(data["worker"]),
                finished_at=float(data["finished_at"]),
                package_id=data["package_id"],
                zip_path=None if name is None else folder / str(name),
                error=data["error"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"{folder / RECORD_FILE} is not a job record: {exc}") from exc


class QueueErrorThrottle(logging.Filter):
    """A filter for huey's consumer loggers (:data:`HUEY_CONSUMER_LOGGERS`): of the records
    of an unreachable queue (:data:`HUEY_READ_ERRORS`) it lets one per message through per
    ``interval`` seconds, on one line (the exception's type and text instead of the
    traceback) with the count of those held back since the last one; every other record
    passes untouched.

    Args:
        interval: seconds between two records of one message let through.
        clock: a monotonic clock, seconds.
    """

    def __init__(
        self,
        interval: float = QUEUE_ERROR_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # message -> when one was last let through
        self._held: dict[str, int] = {}  # message -> records held back since

    @property
    def failing(self) -> bool:
        """Whether a read error was seen since the start or the last :meth:`reset`."""
        with self._lock:
            return bool(self._last)

    def reset(self) -> None:
        """The queue answers again: the next read error is let through at once."""
        with self._lock:
            self._last.clear()
            self._held.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` goes on to the handlers (rewritten to one line when it is a
        read error let through)."""
        if record.msg not in HUEY_READ_ERRORS:
            return True
        now = self._clock()
        with self._lock:
            last = self._last.get(record.msg)
            if last is not None and now - last < self._interval:
                self._held[record.msg] = self._held.get(record.msg, 0) + 1
                return False
            self._last[record.msg] = now
            held = self._held.pop(record.msg, 0)
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        if exc is not None:
            text += f": {type(exc).__name__}: {exc}"
        text += f" (logged at most once every {self._interval:g} s"
        text += f"; {held} more since the last)" if held else ")"
        record.msg, record.args = text, ()
        record.exc_info = record.exc_text = None
        return True


#: The process's throttle, on huey's consumer loggers from the first :class:`JobConsumer`.
_QUEUE_ERRORS = QueueErrorThrottle()


def _throttle_huey_read_errors() -> None:
    for name in HUEY_CONSUMER_LOGGERS:
        logger = logging.getLogger(name)
        if _QUEUE_ERRORS not in logger.filters:
            logger.addFilter(_QUEUE_ERRORS)


class _SignedSerializer(Serializer):  # type: ignore[misc]  # huey is untyped
    """huey's pickle messages with an HMAC-SHA256 (RFC 2104) of the pickle in front, checked
    before anything is unpickled."""

    def __init__(self, key: bytes) -> None:
        super().__init__()
        self._key = key

    def _serialize(self, data: Any) -> bytes:
        body = pickle.dumps(data, pickle.HIGHEST_PROTOCOL)
        return hmac.new(self._key, body, hashlib.sha256).digest() + body

    def _deserialize(self, data: bytes) -> Any:
        raw = bytes(data)
        mac, body = raw[:_MAC_SIZE], raw[_MAC_SIZE:]
        good = hmac.new(self._key, body, hashlib.sha256).digest()
        if len(raw) < _MAC_SIZE or not hmac.compare_digest(mac, good):
            raise JobQueueError(
                "a queued message does not carry this deployment's queue key MAC: dropped "
                f"(another deployment on the same queue name, or a forgery; {QUEUE_KEY_FILE})"
            )
        return pickle.loads(body)  # noqa: S301 (authenticated above)


def _queue_key(keys_dir: Path) -> bytes:
    """The deployment's queue key (made at first use).

    Raises:
        StorageError: it cannot be made or read, or is short.
    """
    path = keys_dir / QUEUE_KEY_FILE
    create_secret(path, secrets.token_bytes(32))
    key = read_secret(path)
    if key is None or len(key) < 32:
        raise StorageError(f"{path} does not hold a 32-byte key")
    return key


class JobServices:
    """What jobs run over in one process, opened once: the index, the audit log, the current
    settings and (made at first use) the disclosure service.

    Args:
        index: a migrated index.
        audit: the audit log (its signing key made).
        settings: returns the settings now, with the cameras saved in the app.
        disclosure: the process's disclosure service (the runtime's, so the web app and the
            jobs share its lock); None: made at first use.
        clock: now, UTC epoch seconds.
        owned: :meth:`close` closes ``index`` and ``audit``.
    """

    def __init__(
        self,
        index: Index,
        audit: AuditLog,
        settings: Callable[[], Settings],
        *,
        disclosure: DisclosureService | None = None,
        clock: Callable[[], float] = time.time,
        owned: bool = False,
    ) -> None:
        self.index = index
        self.audit = audit
        self.clock = clock
        self._settings = settings
        self._disclosure = disclosure
        self._owned = owned
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings, *, clock: Callable[[], float] = time.time) -> JobServices:
        """Open the index (migrated) and the audit log of ``settings`` for a worker process;
        its current settings are ``settings`` with the cameras saved in the app, read at each
        use (an owner may change them while it runs).

        Raises:
            DatabaseError: the database cannot be opened or migrated.
            StorageError: the audit signing key cannot be made or read.
        """
        index = Index(settings.db_url)
        try:
            index.migrate()
            audit = AuditLog.open(
                settings.db_url, settings.keys_dir, household=settings.household, clock=clock
            )
        except BaseException:
            index.close()
            raise
        try:
            audit.ensure_key()
        except BaseException:
            audit.close()
            index.close()
            raise
        store = CameraStore(index)

        def current() -> Settings:
            return effective_settings(settings, store.all())

        return cls(index, audit, current, clock=clock, owned=True)

    def settings(self) -> Settings:
        """The settings now.

        Raises:
            DatabaseError: the saved cameras cannot be read.
        """
        return self._settings()

    def disclosure(self) -> DisclosureService:
        """The process's disclosure service.

        Raises:
            ConfigError: the mail settings cannot work.
        """
        with self._lock:
            if self._disclosure is None:
                s = self._settings()
                notices = NoticeService(
                    DisclosureStore(self.index), Mailer(s.mail), clock=self.clock
                )
                accounts = AccountService(self.index, self.audit, self._settings, clock=self.clock)
                public = s.api.public_url or f"http://{s.api.host}:{s.api.port}"
                self._disclosure = DisclosureService(
                    self.index,
                    self._settings,
                    self.audit,
                    accounts,
                    notices,
                    public_url=public,
                    clock=self.clock,
                )
            return self._disclosure

    def close(self) -> None:
        """Close the audit log and the index if this object opened them."""
        if self._owned:
            self.audit.close()
            self.index.close()


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[bool]:
    """Try an exclusive ``flock`` on ``path`` (created); yields whether it is held.

    Raises:
        StorageError: the file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open lock {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(f"cannot lock {path}: {exc.strerror or exc}") from exc
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


def read_record(folder: Path) -> ExportRecord | None:
    """The :class:`ExportRecord` in ``folder``, or None when there is none (yet).

    Raises:
        StorageError: it cannot be read or parsed.
    """
    path = folder / RECORD_FILE
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StorageError(f"{path} is not a job record")
    return ExportRecord.from_json(data, folder)


def _write_record(folder: Path, record: ExportRecord) -> None:
    """Write ``record`` atomically as ``folder/job.json``.

    Raises:
        StorageError: it cannot be written.
    """
    tmp = folder / f".{RECORD_FILE}.{secrets.token_hex(4)}.tmp"
    try:
        with tmp.open("x", encoding="utf-8") as fh:
            json.dump(record.to_json(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / RECORD_FILE)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"cannot write {folder / RECORD_FILE}: {exc.strerror or exc}") from exc


def _placed_package(folder: Path) -> tuple[str, Path] | None:
    """The package an earlier try placed in ``folder`` (its zip is placed last but one; the
    folder renames that may not have happened are done now), or None."""
    zips = sorted(folder.glob("*.zip"))
    if not zips:
        return None
    zip_path = zips[0]
    package_id = zip_path.name.removesuffix(".zip")
    for part, final in (
        (folder / f"{package_id}.part", folder / package_id),
        (folder / f"{package_id}.withheld.part", folder / f"{package_id}.withheld"),
    ):
        if part.is_dir() and not final.exists():
            try:
                os.rename(part, final)
            except OSError as exc:
                raise StorageError(f"cannot place {final}: {exc.strerror or exc}") from exc
    return package_id, zip_path


def _clear_leftovers(folder: Path) -> None:
    """Remove what a try killed mid-export left (``*.part``): the folder is this job's alone,
    and the job's lock is held."""
    for path in folder.iterdir():
        if path.name.endswith(".part"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


class JobQueue:
    """The deployment's job queue: enqueue jobs, read its depth and export records, and (with
    :meth:`consumer`) run them in this process.

    Args:
        settings: the deployment's settings (``jobs``, ``data_dir``, keys dir).
        services: what jobs run over in this process; None opens them
            (:meth:`JobServices.open`) at the first job run here.
        export_retries: tries after the first an export gets for an error a retry can cure.
        retry_delay: seconds before an export's first retry (doubling for each later one).

    Raises:
        JobQueueError: the SQLite queue cannot be opened (Redis is reached at first use).
        StorageError: the queue key cannot be made or read.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        services: JobServices | None = None,
        export_retries: int = EXPORT_RETRIES,
        retry_delay: float = EXPORT_RETRY_DELAY,
    ) -> None:
        if export_retries < 0 or not retry_delay >= 0:
            raise InvalidRequestError("export retries and retry delay must not be negative")
        self._settings = settings
        self._services = services
        self._opened: JobServices | None = None
        self._open_lock = threading.Lock()
        self._export_retries = export_retries
        self._retry_delay = retry_delay
        self._down = threading.Event()  # unreachable, as last said in the log
        jobs = settings.jobs
        serializer = _SignedSerializer(_queue_key(settings.keys_dir))
        common: dict[str, Any] = {
            "results": True,
            "store_none": False,
            "utc": True,
            "serializer": serializer,
            "store_intermediate_errors": False,
        }
        self._redis: redis.Redis | None = None
        self.huey: Any
        if jobs.redis_url is None:
            path = jobs_db(settings)
            self.where = f"SQLite {path}"
            with self._errors("open the queue"):
                path.parent.mkdir(parents=True, exist_ok=True)
                self.huey = SqliteHuey(jobs.name, filename=str(path), **common)
        else:
            self.where = f"Redis {redact_url(jobs.redis_url)} queue {jobs.name}"
            with self._errors("open the queue"):
                self.huey = PriorityRedisExpireHuey(
                    jobs.name, url=jobs.redis_url, expire_time=RESULT_SECONDS, **common
                )
                self._redis = redis.Redis.from_url(jobs.redis_url)
        h = self.huey
        self._export: Any = h.task(
            name="export",
            retries=export_retries,
            retry_delay=retry_delay,
            retry_backoff=2.0,
            context=True,
        )(self._export_job)
        self._retention: Any = h.task(name="retention_pass", priority=PASS_PRIORITY)(
            self._retention_job
        )
        self._disclosure: Any = h.task(name="disclosure_pass", priority=PASS_PRIORITY)(
            self._disclosure_job
        )
        h.signal(SIGNAL_ERROR)(self._on_error)
        h.signal(SIGNAL_INTERRUPTED)(self._on_interrupted)

    # --- producing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, sqlite3.Error, HueyException, OSError, ValueError) as exc:
            # ValueError: redis-py's answer to a URL it cannot parse.
            raise JobQueueError(f"job queue ({self.where}): cannot {what}: {exc}") from exc

    @property
    def exports_dir(self) -> Path:
        """Where export jobs write: ``<data_dir>/exports/<job id>/``."""
        return self._settings.data_dir / "exports"

    def enqueue_export(
        self,
        cameras: Sequence[str],
        start: float,
        end: float,
        *,
        actor: Actor,
        reason: str,
        redact: bool = False,
    ) -> str:
        """Queue an evidence export of ``cameras`` over ``[start, end]`` (UTC epoch s) on
        behalf of ``actor`` (the audit entries name them); returns the job id, which names
        its folder (:meth:`export_record`). Everything but the footage is checked again when
        it runs.

        A scope holding sealed footage is refused here when this queue has its process's
        services (:func:`refuse_sealed_scope`), and fails at once when the job runs.

        Raises:
            InvalidRequestError: no camera, ``end <= start``, an empty reason.
            KeysLockedError: sealed footage in the scope (checked when ``services`` was given).
            JobQueueError: the queue cannot take it.
        """
        cams = [str(c) for c in cameras]
        if not cams:
            raise InvalidRequestError("an export names at least one camera")
        if not end > start:
            raise InvalidRequestError(f"export end ({end}) must be after its start ({start})")
        if not reason.strip():
            raise InvalidRequestError("an export needs a reason (it is in the audit log)")
        if self._services is not None:
            refuse_sealed_scope(self._services.index, cams, start, end)
        task = self._export.s(
            cams, float(start), float(end), str(actor.kind), actor.id, reason, bool(redact)
        )
        with self._errors("queue an export"):
            self.huey.enqueue(task)
        return str(task.id)

    def enqueue_pass(self, which: PassName, *, expires: float | None = None) -> str:
        """Queue a ``retention`` or ``disclosure`` pass, dropped unrun when no worker took it
        within ``expires`` seconds (None: never); returns the job id.

        Raises:
            InvalidRequestError: an unknown pass.
            JobQueueError: the queue cannot take it.
        """
        if which not in _PASSES:
            raise InvalidRequestError(f"no pass named {which!r}; passes: {', '.join(_PASSES)}")
        wrapper = self._retention if which == "retention" else self._disclosure
        task = wrapper.s(expires=expires)
        with self._errors(f"queue a {which} pass"):
            self.huey.enqueue(task)
        return str(task.id)

    def depth(self) -> QueueDepth:
        """How many jobs wait.

        Raises:
            JobQueueError: the queue cannot be read.
        """
        with self._errors("read the queue depth"):
            return QueueDepth(int(self.huey.pending_count()), int(self.huey.scheduled_count()))

    @property
    def down(self) -> bool:
        """Whether the queue was last found unreachable (by :meth:`probe` or
        :meth:`note_error`) and not reachable since."""
        return self._down.is_set()

    def probe(self, *, quiet: bool = False) -> bool:
        """Whether the queue answers now (its depth is read). The first time it does not,
        one warning says so, naming the queue (password hidden), and that retention and
        disclosure passes wait until it is reachable; when it answers again after that,
        :meth:`note_ok` logs it. ``quiet``: no warning (a check repeated while down)."""
        try:
            self.depth()
        except JobQueueError as exc:
            if not quiet and not self._down.is_set():
                log.warning(
                    "job queue %s is unreachable (%s): recording goes on; retention and "
                    "disclosure passes and exports wait until it is reachable",
                    self.where,
                    exc.__cause__ or exc,
                )
            self._down.set()
            return False
        self.note_ok()
        return True

    def note_error(self, what: str, exc: HomeWardenError) -> None:
        """Log that ``what`` failed with ``exc``: at error level when the queue was not
        known to be down (it is from now on), else at debug (said already)."""
        if self._down.is_set():
            log.debug("%s: %s", what, exc)
            return
        self._down.set()
        log.error("%s: %s", what, exc)

    def note_ok(self) -> None:
        """The queue answered: when it was down (or huey's reads failed), log that it is
        reachable again (once)."""
        if self._down.is_set() or _QUEUE_ERRORS.failing:
            self._down.clear()
            _QUEUE_ERRORS.reset()
            log.info("job queue %s is reachable again", self.where)

    def export_record(self, job_id: str) -> ExportRecord | None:
        """The record of export job ``job_id``, or None while it has none (queued, running,
        or waiting for a retry).

        Raises:
            InvalidRequestError: ``job_id`` is not a job id.
            StorageError: the record cannot be read.
        """
        if not job_id or not all(c.isalnum() or c == "-" for c in job_id):
            raise InvalidRequestError(f"{job_id!r} is not a job id")
        return read_record(self.exports_dir / job_id)

    def job_error(self, job_id: str) -> str | None:
        """The error a job failed with for good (kept by the queue; read once), or None.

        Raises:
            JobQueueError: the queue cannot be read.
        """
        with self._errors("read a job's result"):
            raw = self.huey.get(job_id, peek=False)
        if raw is None:
            return None
        metadata = getattr(raw, "metadata", None)
        return str(metadata.get("error")) if isinstance(metadata, dict) else None

    def consumer(self, workers: int, *, health_interval: float = HEALTH_INTERVAL) -> JobConsumer:
        """A consumer of ``workers`` threads running this queue's jobs in this process
        (``health_interval``: see :class:`JobConsumer`)."""
        return JobConsumer(self, workers, health_interval=health_interval)

    def close(self) -> None:
        """Close the queue's connections and the services this queue opened itself."""
        with contextlib.suppress(RedisError, sqlite3.Error):
            self.huey.storage.close()
        pool = getattr(self.huey.storage, "pool", None)
        if pool is not None:
            with contextlib.suppress(RedisError):
                pool.disconnect()
        if self._redis is not None:
            with contextlib.suppress(RedisError):
                self._redis.close()
        with self._open_lock:
            opened, self._opened = self._opened, None
        if opened is not None:
            opened.close()

    # --- locks -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def pass_lock(self, which: PassName) -> Iterator[bool]:
        """Try to take the lock of pass ``which`` without waiting; yields whether it is held
        (see the module docstring: a ``flock`` on SQLite, a renewed Redis lock on Redis).

        Raises:
            JobQueueError: Redis cannot be reached.
            StorageError: the lock file cannot be opened.
        """
        if self._redis is None:
            with _flock(self._settings.data_dir / f"jobs-{which}.lock") as held:
                yield held
            return
        lock = self._redis.lock(
            f"huey.lock.{self._settings.jobs.name}.{which}",
            timeout=PASS_LOCK_SECONDS,
            blocking=False,
            thread_local=False,
        )
        with self._errors(f"take the {which} pass lock"):
            held = bool(lock.acquire())
        if not held:
            yield False
            return
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(PASS_LOCK_SECONDS / 3):
                try:
                    lock.reacquire()
                except (LockError, RedisError) as exc:
                    log.warning("%s pass: cannot renew its lock: %s", which, exc)
                    return

        renewer = threading.Thread(target=renew, name=f"{which}-lock", daemon=True)
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            renewer.join()
            try:
                lock.release()
            except (LockError, RedisError) as exc:
                log.warning("%s pass: its lock was lost before the end: %s", which, exc)

    # --- running ---------------------------------------------------------------------------

    def _job_services(self) -> JobServices:
        if self._services is not None:
            return self._services
        with self._open_lock:
            if self._opened is None:
                self._opened = JobServices.open(self._settings)
            return self._opened

    def _export_job(
        self,
        cameras: list[str],
        start: float,
        end: float,
        actor_kind: str,
        actor_id: str,
        reason: str,
        redact: bool,
        task: Any = None,
    ) -> None:
        """The ``export`` job (see the module docstring)."""
        job_id = str(task.id)
        tries = self._export_retries - int(task.retries) + 1
        folder = self.exports_dir / job_id
        try:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {folder}: {exc.strerror or exc}") from exc
            with _flock(folder / ".lock") as held:
                if not held:
                    # The same job runs in another process (delivered twice, or queued again
                    # at a shutdown while it still ran): wait for it, never run beside it.
                    raise RetryTask("running elsewhere", delay=max(self._retry_delay, 1.0))
                self._export_once(
                    job_id, folder, tries, cameras, start, end,
                    Actor(ActorKind(actor_kind), actor_id), reason, redact,
                )  # fmt: skip
        except RetryTask:
            raise
        except (DatabaseError, StorageError) as exc:
            last = not task.retries
            log.warning(
                "export job %s: try %d failed: %s%s", job_id, tries, exc,
                "" if last else "; it will be retried",
            )  # fmt: skip
            if last:
                self._record_failure(folder, job_id, tries, exc)
            raise
        except Exception as exc:
            task.retries = 0  # no retry cures it: a bad scope, unusable footage, a bug
            log.warning("export job %s: failed: %s", job_id, exc)
            self._record_failure(folder, job_id, tries, exc)
            raise

    def _export_once(
        self,
        job_id: str,
        folder: Path,
        tries: int,
        cameras: list[str],
        start: float,
        end: float,
        actor: Actor,
        reason: str,
        redact: bool,
    ) -> None:
        """One try of an export job, its folder's lock held."""
        services = self._job_services()
        record = read_record(folder)
        if record is not None and record.state == "done":
            log.warning("export job %s ran already (package %s)", job_id, record.package_id)
            return
        placed = _placed_package(folder)
        if placed is None:
            _clear_leftovers(folder)
            refuse_sealed_scope(services.index, cameras, start, end)  # no retry: failed at once
            evidence = EvidenceService(
                services.index, services.settings(), services.audit, clock=services.clock
            )
            result = evidence.export(
                cameras, start, end, folder,
                actor=actor, reason=f"{reason} (job {job_id})", redact=redact,
            )  # fmt: skip
            package_id, zip_path = result.package_id, result.zip_path
        else:
            package_id, zip_path = placed
            log.warning(
                "export job %s: package %s was made by an earlier try that stopped before "
                "recording it; recorded now, not made again",
                job_id,
                package_id,
            )
        _write_record(
            folder,
            ExportRecord(
                job_id, "done", tries, worker_id(), services.clock(), package_id, zip_path
            ),
        )
        log.info("export job %s: package %s (try %d)", job_id, package_id, tries)

    def _record_failure(self, folder: Path, job_id: str, tries: int, exc: Exception) -> None:
        record = ExportRecord(job_id, "failed", tries, worker_id(), time.time(), error=str(exc))
        try:
            if folder.is_dir():
                _write_record(folder, record)
        except StorageError as write_error:
            log.error("export job %s: %s", job_id, write_error)

    def _retention_job(self) -> None:
        """The ``retention_pass`` job."""
        try:
            services = self._job_services()
            with self.pass_lock("retention") as held:
                if not held:
                    log.info("retention pass skipped: another worker is running one")
                    return
                settings = services.settings()
                report = run_retention_pass(
                    services.index, settings, settings.media_dir, services.clock()
                )
        except HomeWardenError as exc:
            log.error("retention pass failed: %s", exc)
            return
        if report.deleted or report.failed or report.shortfalls:
            log.info("retention: %s", report)

    def _disclosure_job(self) -> None:
        """The ``disclosure_pass`` job."""
        try:
            services = self._job_services()
            with self.pass_lock("disclosure") as held:
                if not held:
                    log.info("disclosure pass skipped: another worker is running one")
                    return
                handled = services.disclosure().run_due()
        except HomeWardenError as exc:
            log.error("disclosure scheduler: %s", exc)
            return
        if handled:
            log.info("disclosure scheduler: %d request(s) handled", handled)

    def _on_error(self, _signal: str, task: Any, exc: BaseException | None = None) -> None:
        if not task.retries:  # the last try: huey keeps the error as the job's result
            log.error("job %s (%s) failed for good: %s", task.id, task.name, exc)

    def _on_interrupted(self, _signal: str, task: Any) -> None:
        if task.name != "export":
            return  # the next pass comes anyway
        try:
            with self._errors("queue an interrupted export again"):
                self.huey.enqueue(task)
        except JobQueueError as exc:
            log.error("export job %s was interrupted and is lost: %s", task.id, exc)
            return
        log.warning("export job %s was interrupted by the stop; queued again", task.id)


class _Consumer(Consumer):  # type: ignore[misc]  # huey is untyped
    """huey's consumer without its signal handlers: ``homewarden run`` and ``homewarden
    worker`` own SIGINT and SIGTERM."""

    def _set_signal_handlers(self) -> None:
        pass


class JobConsumer:
    """Worker threads running a :class:`JobQueue`'s jobs in this process (huey's consumer
    with thread workers, and its scheduler thread for retries), plus a check every
    ``health_interval`` s (default :data:`HEALTH_INTERVAL`) that replaces a dead thread and,
    while the queue is unreachable, whether it is reachable again (then logged). huey's
    read errors are throttled (:class:`QueueErrorThrottle`).

    Raises:
        InvalidRequestError: ``workers`` below 1.
    """

    def __init__(
        self, queue: JobQueue, workers: int, *, health_interval: float = HEALTH_INTERVAL
    ) -> None:
        if workers < 1:
            raise InvalidRequestError("a job consumer needs at least one worker thread")
        _throttle_huey_read_errors()
        self._queue = queue
        self.workers = workers
        self._health_interval = health_interval
        self._consumer = _Consumer(
            queue.huey,
            workers=workers,
            worker_type="thread",
            periodic=False,
            initial_delay=0.05,
            backoff=1.5,
            max_delay=POLL_MAX_DELAY,
            check_worker_health=True,
        )
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        """Start the threads."""
        _QUEUE_ERRORS.reset()  # another consumer's errors (of another queue) are not ours
        self._consumer.start()
        self._supervisor = threading.Thread(target=self._supervise, name="jobs-health", daemon=True)
        self._supervisor.start()
        log.info("job consumer: %d worker thread(s) on %s", self.workers, self._queue.where)

    def _supervise(self) -> None:
        while not self._stop.wait(self._health_interval):
            self._consumer.check_worker_health()
            if self._queue.down or _QUEUE_ERRORS.failing:
                self._queue.probe(quiet=True)

    def stop(self, timeout: float) -> None:
        """Let the running jobs finish, waiting up to ``timeout`` seconds; an export still
        running then is queued again. Safe to call more than once."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join()
        self._consumer.shutdown_timeout = timeout
        self._consumer.stop(graceful=True)
        self._queue.huey.notify_interrupted_tasks()


def run_worker(
    settings: Settings,
    workers: int,
    *,
    shutdown_timeout: float = WORKER_STOP_TIMEOUT,
    on_ready: Callable[[JobQueue], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """``homewarden worker``: open the services, run ``workers`` job threads until SIGINT or
    SIGTERM (handlers installed only on the main thread) or ``stop`` is set, then stop them
    (:meth:`JobConsumer.stop` with ``shutdown_timeout``).

    Raises:
        DatabaseError: the database cannot be opened or migrated.
        JobQueueError: the queue cannot be opened or reached.
        StorageError: a key cannot be made or read.
        InvalidRequestError: ``workers`` below 1.
    """
    stopping = stop or threading.Event()
    services = JobServices.open(settings)
    try:
        queue = JobQueue(settings, services=services)
        try:
            queue.depth()  # an unreachable queue is an error now, not a log line a second
            consumer = queue.consumer(workers)
            with _stop_on_signals(stopping):
                consumer.start()
                try:
                    if on_ready is not None:
                        on_ready(queue)
                    stopping.wait()
                    log.info("worker %s stopping", worker_id())
                finally:
                    consumer.stop(shutdown_timeout)
        finally:
            queue.close()
    finally:
        services.close()


@contextlib.contextmanager
def _stop_on_signals(stopping: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
