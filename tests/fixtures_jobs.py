"""Helpers for background-job tests: the real Redis at ``HOMEWARDEN_TEST_REDIS`` (default
``redis://127.0.0.1:6379/0``), a fresh queue name per test, footage recorded into an index,
and waiting with a deadline.

When Redis is unreachable a test that needs it is skipped, except under ``CI=true`` where it
fails (as the PostgreSQL fixtures do).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import redis

from homewarden.config import Settings
from homewarden.services.jobs import JobQueue
from homewarden.store.index import Index
from tests.fixtures_db import in_ci
from tests.package_footage import deploy

REDIS_URL = os.environ.get("HOMEWARDEN_TEST_REDIS", "redis://127.0.0.1:6379/0")


@cache
def _redis_problem() -> str | None:
    """None when Redis answers a PING, else why not."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__
    return None


def require_redis() -> str:
    """The test Redis URL, or skip (fail under CI=true) when it does not answer."""
    problem = _redis_problem()
    if problem is not None:
        message = f"Redis at {REDIS_URL} unreachable ({problem})"
        if in_ci():
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)
    return REDIS_URL


def queue_name() -> str:
    """A queue name no other test uses (tests share one Redis)."""
    return f"hwtest_{secrets.token_hex(6)}"


def forget_queue(name: str) -> None:
    """Delete every Redis key of queue ``name`` (queue, schedule, results, locks)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k for pattern in (f"huey*{name}*",) for k in client.scan_iter(match=pattern)]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Recorded:
    """A data dir with bikes.mp4 recorded as camera ``porch`` (segments ``start``..``end``)
    into the database at ``settings.db_url``; ``settings`` has camera ``porch`` disabled (no
    recorder), so only jobs touch the footage."""

    settings: Settings
    start: float
    end: float
    segments: int


def record_footage(data_dir: Path, database_url: str | None, **jobs: object) -> Recorded:
    """Record the footage and return the deployment's settings with ``[jobs]`` = ``jobs``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{data_dir / 'homewarden.db'}"
    index = Index(url)
    try:
        index.migrate()
        dep = deploy(data_dir, index)
    finally:
        index.close()
    porch = dep.settings.cameras["porch"].model_copy(update={"enabled": False})
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        cameras={"porch": porch.model_dump()},
        jobs=dict(jobs),
    )
    return Recorded(settings, dep.start, dep.end, len(dep.segments))


@contextlib.contextmanager
def running(
    settings: Settings, workers: int = 1, *, stop_timeout: float = 10.0, **options: Any
) -> Iterator[JobQueue]:
    """A queue with a consumer of ``workers`` threads in this process, stopped and closed at
    exit (``options``: :class:`JobQueue` keyword arguments)."""
    queue = JobQueue(settings, **options)
    consumer = queue.consumer(workers)
    consumer.start()
    try:
        yield queue
    finally:
        consumer.stop(stop_timeout)
        queue.close()
