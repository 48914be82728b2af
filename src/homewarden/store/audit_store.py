"""Storage of the audit log: append-only rows of entries, tree nodes and signed tree heads.

The schema is the Alembic revision ``0002_audit_log`` (run by
:meth:`homewarden.store.index.Index.migrate`); see :mod:`homewarden.store.models` for the
tables. This adapter knows bytes and integers only - what a leaf means and how nodes are hashed
are the caller's (``homewarden.services.audit`` with ``homewarden.crypto.merkle``).

Append-only: there is no method that updates or deletes an entry, node or tree head. The one
write path is :meth:`AuditStore.writer`, a transaction that

* takes the log's write lock first - SQLite ``BEGIN IMMEDIATE`` (one writer per database,
  across threads and processes; others wait up to the busy timeout), PostgreSQL
  ``SELECT ... FOR UPDATE`` on the single ``audit_state`` row - so the next index is read and
  allocated without a race;
* inserts entries and nodes at the end and advances the size;
* commits durably before :meth:`writer` returns: SQLite connections of this adapter run
  ``PRAGMA synchronous = FULL`` (in WAL mode FULL syncs the WAL on every commit; the index's
  NORMAL does not survive a power cut), PostgreSQL ``SET LOCAL synchronous_commit = on`` (a
  server configured otherwise does not weaken audit commits).

The adapter opens its own connection pool to the same database as the index, because its
transaction and durability settings differ from the index's. An in-memory SQLite database is
refused (a second pool would see a different, empty database).

Errors: every SQLAlchemy error becomes :class:`~homewarden.errors.DatabaseError` naming the
database and the driver's reason.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    TextClause,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from homewarden.errors import DatabaseError, InvalidRequestError
from homewarden.store.index import SQLITE_BUSY_TIMEOUT_MS, normalise_url
from homewarden.store.models import (
    AuditEntryRow,
    AuditNodeRow,
    AuditStateRow,
    AuditTreeHeadRow,
    Base,
)

log = logging.getLogger(__name__)

_entries = Base.metadata.tables[AuditEntryRow.__tablename__]
_nodes = Base.metadata.tables[AuditNodeRow.__tablename__]
_heads = Base.metadata.tables[AuditTreeHeadRow.__tablename__]
_state = Base.metadata.tables[AuditStateRow.__tablename__]

#: Pending rows a bulk writer holds before it sends them to the database.
_FLUSH_ROWS = 5000
#: Leaf ids per SELECT (well under SQLite's bound-parameter limit).
_READ_CHUNK = 400
#: Interior node ids per SELECT (an OR chain; well under SQLite's expression depth limit).
_OR_CHUNK = 100
#: Rows per fetch when streaming the whole log.
STREAM_BATCH = 10_000

#: A node id: ``(level, index)``; level 0 is a leaf (its hash lives in ``audit_entries``).
NodeKey = tuple[int, int]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One stored entry: ``index``, ``leaf`` bytes and the ``leaf_hash`` stored with it."""

    index: int
    leaf: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredTreeHead:
    """A stored signed tree head; ``id`` orders heads by when they were stored."""

    id: int
    tree_size: int
    root: bytes
    timestamp_ms: int
    key_id: bytes
    signature: bytes


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by _sqlite_on_begin, not by the driver's implicit BEGIN, so a
    # writer can ask for BEGIN IMMEDIATE (the write lock before its first read).
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        # FULL in WAL mode fsyncs the WAL at every commit: an appended entry survives a
        # power cut once append returns (sqlite.org/pragma.html#pragma_synchronous).
        cur.execute("PRAGMA synchronous = FULL")
    finally:
        cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get("audit_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class AuditWriter:
    """The one write transaction of the log; only :meth:`AuditStore.writer` makes one.

    :attr:`size` is the log's size when the lock was taken plus what this writer appended.
    """

    def __init__(self, conn: Connection, size: int) -> None:
        self._conn = conn
        self._start = size
        self._size = size
        self._entries: list[dict[str, Any]] = []
        self._nodes: list[dict[str, Any]] = []
        self._pending: dict[NodeKey, bytes] = {}

    @property
    def size(self) -> int:
        """Entries in the log, counting this writer's appends."""
        return self._size

    @property
    def appended(self) -> int:
        """Entries this writer appended."""
        return self._size - self._start

    def node_hashes(self, ids: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """Stored hashes of complete nodes (including this writer's); absent ids are left out."""
        found = {i: self._pending[i] for i in ids if i in self._pending}
        rest = [i for i in ids if i not in found]
        found.update(_read_nodes(self._conn, rest))
        return found

    def append(self, leaf: bytes, leaf_hash: bytes, nodes: Sequence[tuple[NodeKey, bytes]]) -> int:
        """Append one entry at index :attr:`size` with the interior ``nodes`` it completes
        (``((level, index), hash)``, level >= 1); returns its index.

        Raises:
            InvalidRequestError: a hash is not 32 bytes, or a node is at level 0.
        """
        if len(leaf_hash) != 32 or any(len(h) != 32 for _, h in nodes):
            raise InvalidRequestError("audit hashes are 32 bytes")
        index = self._size
        self._entries.append({"idx": index, "leaf": leaf, "leaf_hash": leaf_hash})
        self._pending[(0, index)] = leaf_hash
        for (level, idx), h in nodes:
            if level < 1:
                raise InvalidRequestError("interior audit nodes start at level 1")
            self._nodes.append({"level": level, "idx": idx, "hash": h})
            self._pending[(level, idx)] = h
        self._size = index + 1
        if len(self._entries) + len(self._nodes) >= _FLUSH_ROWS:
            self.flush()
        return index

    def flush(self) -> None:
        """Send pending rows to the database (still inside the transaction)."""
        if self._entries:
            self._conn.execute(insert(_entries), self._entries)
        if self._nodes:
            self._conn.execute(insert(_nodes), self._nodes)
        self._entries, self._nodes = [], []
        self._pending.clear()

    def _finish(self) -> None:
        self.flush()
        if self._size != self._start:
            self._conn.execute(update(_state).where(_state.c.id == 1).values(size=self._size))


@functools.cache
def _node_lookup(terms: int) -> TextClause:
    """``SELECT`` of ``terms`` nodes by key, built once per size.

    An OR of key lookups: SQLite scans the whole table for a row-value ``IN`` (3.40's plan)
    but searches the primary key for each OR term; PostgreSQL does either well. Plain text,
    cached, because building the expression each time costs more than running it.
    """
    where = " OR ".join(f"(level = :l{k} AND idx = :i{k})" for k in range(terms))
    return text(f"SELECT level, idx, hash FROM audit_nodes WHERE {where}")  # noqa: S608


def _read_nodes(conn: Connection, ids: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
    found: dict[NodeKey, bytes] = {}
    leaves = sorted({idx for level, idx in ids if level == 0})
    inner = sorted({(level, idx) for level, idx in ids if level > 0})
    for i in range(0, len(leaves), _READ_CHUNK):
        chunk = leaves[i : i + _READ_CHUNK]
        q = select(_entries.c.idx, _entries.c.leaf_hash).where(_entries.c.idx.in_(chunk))
        for idx, h in conn.execute(q):
            found[(0, int(idx))] = _blob(h)
    for i in range(0, len(inner), _OR_CHUNK):
        chunk2 = inner[i : i + _OR_CHUNK]
        params: dict[str, int] = {}
        for k, (lv, ix) in enumerate(chunk2):
            params[f"l{k}"], params[f"i{k}"] = lv, ix
        for level, idx, h in conn.execute(_node_lookup(len(chunk2)), params):
            found[(int(level), int(idx))] = _blob(h)
    return found


class AuditStore:
    """The audit tables of the database at SQLAlchemy ``url`` (migrated by the index).

    Thread-safe: each call uses its own pooled connection and transaction.

    Raises:
        DatabaseError: bad or unsupported URL, an in-memory SQLite database, or the database
            cannot be reached.
    """

    def __init__(self, url: str) -> None:
        parsed = normalise_url(url)
        self._dialect = parsed.get_backend_name()
        if self._dialect == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise DatabaseError("the audit log needs a database file, not in-memory SQLite")
            self._where = parsed.database
            self._engine = self._sqlite_engine(parsed)
        else:
            self._where = parsed.render_as_string(hide_password=True)
            connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
            self._engine = create_engine(
                parsed, pool_size=4, max_overflow=28, pool_pre_ping=True, connect_args=connect_args
            )
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise DatabaseError(f"cannot open database at {self._where}: {_reason(exc)}") from exc

    @staticmethod
    def _sqlite_engine(url: URL) -> Engine:
        engine = create_engine(
            url, pool_size=4, max_overflow=28, connect_args={"check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @property
    def where(self) -> str:
        """The database, for messages (password hidden)."""
        return self._where

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"database at {self._where} failed to {action}: {_reason(exc)}"
            ) from exc

    @contextmanager
    def writer(self) -> Iterator[AuditWriter]:
        """The log's write transaction (see the module docstring): lock, append, commit.

        The block's appends are committed - durably - when it exits normally and rolled back
        when it raises.

        Raises:
            DatabaseError: the lock, an insert or the commit failed (nothing was appended).
        """
        try:
            with (
                self._engine.connect().execution_options(audit_write=True) as conn,
                conn.begin(),
            ):
                if self._dialect == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                size = conn.execute(
                    select(_state.c.size).where(_state.c.id == 1).with_for_update()
                ).scalar_one_or_none()
                if size is None:
                    raise DatabaseError(
                        f"database at {self._where} has no audit_state row; migrate it"
                    )
                writer = AuditWriter(conn, int(size))
                yield writer
                writer._finish()
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"database at {self._where} failed to append to the audit log: {_reason(exc)}"
            ) from exc

    # reads

    def size(self) -> int:
        """Entries in the log as its writers recorded them (the ``audit_state`` row).

        Raises:
            DatabaseError: unreadable, or the database is not migrated.
        """
        with self._read("read the audit log size") as conn:
            size = conn.execute(select(_state.c.size).where(_state.c.id == 1)).scalar_one_or_none()
        if size is None:
            raise DatabaseError(f"database at {self._where} has no audit_state row; migrate it")
        return int(size)

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Stored entries with ``start <= index < end``, in index order (gaps left out)."""
        q = (
            select(_entries.c.idx, _entries.c.leaf, _entries.c.leaf_hash)
            .where(_entries.c.idx >= start, _entries.c.idx < end)
            .order_by(_entries.c.idx)
        )
        with self._read("read audit entries") as conn:
            return [StoredEntry(int(i), _blob(lf), _blob(h)) for i, lf, h in conn.execute(q)]

    def iter_entries(
        self, start: int = 0, end: int | None = None, batch: int = STREAM_BATCH
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Stored ``(index, leaf, leaf_hash)`` with ``start <= index < end`` (default: all) in
        index order, streamed ``batch`` rows at a time (PostgreSQL: a server-side cursor)
        within one read transaction."""
        q = select(_entries.c.idx, _entries.c.leaf, _entries.c.leaf_hash).where(
            _entries.c.idx >= start
        )
        if end is not None:
            q = q.where(_entries.c.idx < end)
        q = q.order_by(_entries.c.idx)
        with self._read("read the audit log") as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
            for rows in result.partitions():
                for idx, leaf, h in rows:
                    if type(leaf) is bytes and type(h) is bytes:  # the usual case, fast
                        yield idx, leaf, h
                    else:
                        yield idx, _blob(leaf), _blob(h)

    def iter_nodes(self, batch: int = STREAM_BATCH) -> Iterator[tuple[int, int, bytes]]:
        """Every stored interior node ``(level, index, hash)``, by level then index, streamed."""
        q = select(_nodes.c.level, _nodes.c.idx, _nodes.c.hash).order_by(
            _nodes.c.level, _nodes.c.idx
        )
        with self._read("read the audit tree nodes") as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
            for rows in result.partitions():
                for level, idx, h in rows:
                    yield level, idx, _blob(h)

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Stored leaf hashes of indexes ``start <= index < end``, in order (gaps left out)."""
        q = (
            select(_entries.c.leaf_hash)
            .where(_entries.c.idx >= start, _entries.c.idx < end)
            .order_by(_entries.c.idx)
        )
        with self._read("read audit leaf hashes") as conn:
            return [_blob(h) for h in conn.execute(q).scalars()]

    def node_hashes(self, ids: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        """Stored hashes of complete nodes ``(level, index)``; absent ids are left out."""
        with self._read("read audit tree nodes") as conn:
            return _read_nodes(conn, ids)

    # signed tree heads

    def add_tree_head(
        self, tree_size: int, root: bytes, timestamp_ms: int, key_id: bytes, signature: bytes
    ) -> StoredTreeHead:
        """Store a signed tree head (committed durably); returns it with its id.

        Raises:
            DatabaseError: the insert failed.
        """
        row = {
            "tree_size": tree_size,
            "root": root,
            "timestamp_ms": timestamp_ms,
            "key_id": key_id,
            "signature": signature,
        }
        try:
            with (
                self._engine.connect().execution_options(audit_write=True) as conn,
                conn.begin(),
            ):
                if self._dialect == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                new_id = conn.execute(insert(_heads).returning(_heads.c.id), row).scalar_one()
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"database at {self._where} failed to store a tree head: {_reason(exc)}"
            ) from exc
        return StoredTreeHead(int(new_id), tree_size, root, timestamp_ms, key_id, signature)

    def tree_heads(self) -> list[StoredTreeHead]:
        """Every stored signed tree head, by tree size then storage order."""
        q = select(_heads).order_by(_heads.c.tree_size, _heads.c.id)
        with self._read("read audit tree heads") as conn:
            return [_head(r) for r in conn.execute(q).mappings()]

    def latest_tree_head(self) -> StoredTreeHead | None:
        """The head of the largest tree (the last stored among equals), or None."""
        q = select(_heads).order_by(_heads.c.tree_size.desc(), _heads.c.id.desc()).limit(1)
        with self._read("read the latest audit tree head") as conn:
            row = conn.execute(q).mappings().first()
        return _head(row) if row is not None else None


def _blob(value: Any) -> bytes:
    """A BLOB/BYTEA value as bytes. SQLite is dynamically typed: a value someone wrote as TEXT
    comes back as str, and is its UTF-8 bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _head(r: Any) -> StoredTreeHead:
    return StoredTreeHead(
        id=int(r["id"]),
        tree_size=int(r["tree_size"]),
        root=_blob(r["root"]),
        timestamp_ms=int(r["timestamp_ms"]),
        key_id=_blob(r["key_id"]),
        signature=_blob(r["signature"]),
    )


def _reason(exc: BaseException) -> str:
    """The driver's own message (without SQLAlchemy's SQL echo and help link)."""
    orig = getattr(exc, "orig", None)
    msg = str(orig if orig is not None else exc).strip()
    return msg.splitlines()[0] if msg else type(exc).__name__
