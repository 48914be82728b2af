"""The audit tables' adapter on SQLite and PostgreSQL: one serialised, durable writer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from homewarden.errors import DatabaseError
from homewarden.store.audit_store import AuditStore
from homewarden.store.index import Index

H = bytes(range(32))


@pytest.fixture
def store(index: Index, database_url: str) -> Iterator[AuditStore]:
    s = AuditStore(database_url)
    yield s
    s.close()


def test_append_read_ranges_and_nodes(store: AuditStore) -> None:
    assert store.size() == 0
    with store.writer() as w:
        assert w.append(b"a", H, []) == 0
        assert w.append(b"b", H[::-1], [((1, 0), b"\x01" * 32)]) == 1
        assert w.node_hashes([(1, 0), (0, 1)]) == {(1, 0): b"\x01" * 32, (0, 1): H[::-1]}
    assert store.size() == 2
    assert [(e.index, e.leaf) for e in store.entries(0, 5)] == [(0, b"a"), (1, b"b")]
    assert list(store.iter_entries(1)) == [(1, b"b", H[::-1])]
    assert store.leaf_hashes(0, 2) == [H, H[::-1]]
    assert store.node_hashes([(1, 0), (0, 0), (3, 3)]) == {(1, 0): b"\x01" * 32, (0, 0): H}
    assert list(store.iter_nodes()) == [(1, 0, b"\x01" * 32)]


def test_a_failed_writer_appends_nothing(store: AuditStore) -> None:
    class Boom(Exception):
        pass

    def append_then_fail() -> None:
        with store.writer() as w:
            w.append(b"a", H, [])
            raise Boom

    with pytest.raises(Boom):
        append_then_fail()
    assert store.size() == 0
    assert store.entries(0, 10) == []


def test_writers_are_serialised(store: AuditStore, database_url: str) -> None:
    other = AuditStore(database_url)  # another pool, as another process would have
    entered = threading.Event()
    order: list[str] = []

    def first() -> None:
        with store.writer() as w:
            entered.set()
            time.sleep(0.4)
            w.append(b"first", H, [])
            order.append("first committed")

    t = threading.Thread(target=first)
    t.start()
    entered.wait(5)
    try:
        with other.writer() as w:
            order.append(f"second saw size {w.size}")
            w.append(b"second", H, [])
    finally:
        t.join()
        other.close()
    assert order == ["first committed", "second saw size 1"]
    assert [e.leaf for e in store.entries(0, 2)] == [b"first", b"second"]


def test_tree_heads_round_trip(store: AuditStore) -> None:
    assert store.latest_tree_head() is None
    a = store.add_tree_head(5, H, 1000, H, b"\x02" * 64)
    b = store.add_tree_head(9, H, 999, H, b"\x03" * 64)
    assert [h.tree_size for h in store.tree_heads()] == [5, 9]
    assert store.latest_tree_head() == b
    assert a.id < b.id


def test_commits_are_durable(store: AuditStore) -> None:
    # The adapter's own connections (private, looked at on purpose).
    if store.dialect == "sqlite":
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    else:
        with store.writer() as w:
            assert w._conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_no_method_rewrites_the_log() -> None:
    public = [n for n in dir(AuditStore) if not n.startswith("_")]
    assert not [n for n in public if any(w in n for w in ("update", "delete", "remove", "set"))]


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(DatabaseError, match="in-memory"):
        AuditStore("sqlite://")
