"""Database fixtures: SQLite and PostgreSQL.

``database_url`` is parametrised over both backends, so every test that uses it (or ``index``)
runs twice. PostgreSQL tests get a fresh database ``hw_test_<random>`` on the server named by
``HOMEWARDEN_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432``, trust auth),
created through the admin database ``test`` (or ``postgres``) and dropped afterwards. When the
server is unreachable the PostgreSQL half is skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from functools import cache

import psycopg
import pytest
from psycopg import sql

from homewarden.store.index import Index

_SERVER = os.environ.get("HOMEWARDEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
_ADMIN_DBS = ("test", "postgres")


@cache
def _admin_conninfo() -> tuple[str | None, str]:
    """(conninfo of a reachable admin database, or None; the reason it is unreachable)."""
    reasons = []
    for db in _ADMIN_DBS:
        conninfo = f"{_SERVER}/{db}"
        try:
            with psycopg.connect(conninfo, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return conninfo, ""
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines()
            reasons.append(f"{db}: {lines[0] if lines else type(exc).__name__}")
    return None, "; ".join(reasons)


def in_ci() -> bool:
    """True when ``CI=true`` (any case): then an absent service or file fails the test instead
    of skipping it. The one CI check of the test fixtures (media, jobs and this module)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL at {_SERVER} unreachable ({reason})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """SQLAlchemy URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'homewarden.db'}"
        return
    admin, reason = _admin_conninfo()
    if admin is None:
        _unavailable(reason)
        return
    name = f"hw_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://{_SERVER.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def index(database_url: str) -> Iterator[Index]:
    """A migrated :class:`Index` on ``database_url`` (both backends), closed afterwards."""
    idx = Index(database_url)
    idx.migrate()
    try:
        yield idx
    finally:
        idx.close()
