"""Camera leases of recorder nodes (tables ``recorder_nodes`` and ``camera_leases``, 0007).

Rows in, plain records out; when to renew, take or give up a lease is decided by
:mod:`homewarden.services.leases`. Shares the :class:`~homewarden.store.index.Index`'s engine
and needs PostgreSQL: acquisition locks free rows with ``SELECT ... FOR UPDATE SKIP LOCKED``
(PostgreSQL manual, "The Locking Clause"), so nodes acquiring at once take disjoint cameras
without waiting on each other; SQLite has no row locks.

Every time here is the **database's** clock (``clock_timestamp()`` as UTC epoch seconds), so
nodes whose clocks disagree still agree on whether a lease has expired.

Fencing (Kleppmann, "How to do distributed locking", 2016): each acquisition raises the
camera's ``token`` by one. A recorder reads its lease's token when it starts
(:meth:`LeaseStore.fence`) and each of its segments is indexed only if the lease row still
names its node and token, checked in the very transaction that inserts the segment, with the
row locked ``FOR SHARE`` - a takeover (which needs ``FOR UPDATE``) waits for that commit or is
skipped, so a segment is committed either before the takeover or never.

Errors: :class:`~homewarden.errors.DatabaseError` when the database fails;
:class:`~homewarden.errors.LeaseLostError` when a node does not hold what it claims;
:class:`~homewarden.errors.ConfigError` on a database other than PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from homewarden.errors import ConfigError, LeaseLostError
from homewarden.store.index import Index, SegmentGuard
from homewarden.store.models import CameraLeaseRow, RecorderNodeRow

#: A node whose heartbeat is this old (seconds) is forgotten when another registers; its
#: leases expired long before (a lease lasts seconds).
FORGET_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class Lease:
    """One camera's lease: ``node_id`` None when free; times UTC epoch s (database clock)."""

    camera: str
    node_id: int | None
    token: int
    acquired_at: float | None
    expires_at: float


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One registered recorder node (times UTC epoch s, database clock)."""

    id: int
    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a heartbeat found: ``held`` camera -> token of the leases renewed (those the node
    still held unexpired), ``live_nodes`` counting this one, at database time ``now``."""

    held: dict[str, int]
    live_nodes: int
    now: float


def _now(s: Session) -> float:
    value = s.scalar(select(func.extract("epoch", func.clock_timestamp())))
    assert value is not None  # a clock always answers
    return float(value)


class LeaseStore:
    """The lease tables of ``index``'s database (migrated, PostgreSQL).

    Raises:
        ConfigError: the index is not on PostgreSQL.
    """

    def __init__(self, index: Index) -> None:
        if index.dialect != "postgresql":
            raise ConfigError(
                "leasing cameras to recorder nodes needs PostgreSQL (database_url = "
                "'postgresql://...'); SQLite serves a single node (--role all)"
            )
        self._index = index

    def now(self) -> float:
        """The database's clock, UTC epoch seconds.

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction("read the database clock") as s:
            return _now(s)

    def register(self, name: str, host: str, pid: int, *, reclaim: bool) -> int:
        """Add a running node; returns its id (new at every start).

        ``reclaim``: the caller knows no other process runs as ``name`` (it holds that node's
        lock file), so earlier nodes of that name are dead: their leases are freed at once
        rather than after their TTL. Nodes silent for :data:`FORGET_AFTER` s are removed.

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction(f"register recorder node {name}") as s:
            now = _now(s)
            silent = RecorderNodeRow.heartbeat_at < now - FORGET_AFTER
            gone = or_(silent, RecorderNodeRow.name == name) if reclaim else silent
            old = list(s.scalars(select(RecorderNodeRow.id).where(gone)))
            if old:
                s.execute(
                    update(CameraLeaseRow)
                    .where(CameraLeaseRow.node_id.in_(old))
                    .values(node_id=None, expires_at=0.0)
                )
                s.execute(delete(RecorderNodeRow).where(RecorderNodeRow.id.in_(old)))
            row = RecorderNodeRow(name=name, host=host, pid=pid, started_at=now, heartbeat_at=now)
            s.add(row)
            s.flush()
            return row.id

    def heartbeat(self, node_id: int, ttl: float) -> Renewal:
        """Mark node ``node_id`` alive and extend each lease it holds unexpired to now + ``ttl``
        seconds (an expired one is not renewed: it may be taken any moment, so the node has
        lost it); count the live nodes (heartbeat younger than ``ttl``).

        Raises:
            LeaseLostError: the node is no longer registered (forgotten, or reclaimed by a
                node of the same name): every lease it held is gone.
            DatabaseError: the database failed.
        """
        with self._index.transaction(f"renew the leases of recorder node {node_id}") as s:
            now = _now(s)
            node = s.get(RecorderNodeRow, node_id, with_for_update=True)
            if node is None:
                raise LeaseLostError(f"recorder node {node_id} is no longer registered")
            node.heartbeat_at = now
            renewed = s.execute(
                update(CameraLeaseRow)
                .where(CameraLeaseRow.node_id == node_id, CameraLeaseRow.expires_at > now)
                .values(expires_at=now + ttl)
                .returning(CameraLeaseRow.camera, CameraLeaseRow.token)
            ).all()
            live = s.scalar(
                select(func.count())
                .select_from(RecorderNodeRow)
                .where(RecorderNodeRow.heartbeat_at > now - ttl)
            )
            return Renewal(
                held={str(c): int(t) for c, t in renewed}, live_nodes=int(live or 0), now=now
            )

    def acquire(
        self, node_id: int, cameras: Collection[str], limit: int, ttl: float
    ) -> dict[str, int]:
        """Take up to ``limit`` of ``cameras`` whose lease is free or expired, for ``ttl``
        seconds, raising each one's fencing token; returns camera -> new token.

        Rows locked by another node's acquisition or a segment commit are skipped (``FOR
        UPDATE SKIP LOCKED``), never waited for: they are someone's, or free next round.

        Raises:
            DatabaseError: the database failed.
        """
        wanted = sorted(set(cameras))
        if limit <= 0 or not wanted:
            return {}
        with self._index.transaction(f"acquire cameras for recorder node {node_id}") as s:
            s.execute(
                insert(CameraLeaseRow)
                .values(
                    [{"camera": c, "node_id": None, "token": 0, "expires_at": 0.0} for c in wanted]
                )
                .on_conflict_do_nothing(index_elements=["camera"])
            )
            now = _now(s)
            rows = s.scalars(
                select(CameraLeaseRow)
                .where(
                    CameraLeaseRow.camera.in_(wanted),
                    or_(CameraLeaseRow.node_id.is_(None), CameraLeaseRow.expires_at <= now),
                )
                .order_by(CameraLeaseRow.camera)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                row.node_id = node_id
                row.token += 1
                row.acquired_at = now
                row.expires_at = now + ttl
            return {row.camera: row.token for row in rows}

    def release(self, node_id: int, cameras: Collection[str]) -> None:
        """Give up node ``node_id``'s leases of ``cameras`` (free at once for any node).

        Raises:
            DatabaseError: the database failed.
        """
        if not cameras:
            return
        with self._index.transaction(f"release cameras of recorder node {node_id}") as s:
            s.execute(
                update(CameraLeaseRow)
                .where(
                    CameraLeaseRow.node_id == node_id, CameraLeaseRow.camera.in_(sorted(cameras))
                )
                .values(node_id=None, expires_at=0.0)
            )

    def deregister(self, node_id: int) -> None:
        """Release every lease of node ``node_id`` and remove it (a clean stop).

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction(f"deregister recorder node {node_id}") as s:
            s.execute(
                update(CameraLeaseRow)
                .where(CameraLeaseRow.node_id == node_id)
                .values(node_id=None, expires_at=0.0)
            )
            s.execute(delete(RecorderNodeRow).where(RecorderNodeRow.id == node_id))

    def token(self, camera: str, node_id: int) -> int:
        """The fencing token of node ``node_id``'s unexpired lease of ``camera``.

        Raises:
            LeaseLostError: the node does not hold that lease (never did, expired, or taken).
            DatabaseError: the database failed.
        """
        with self._index.transaction(f"read the lease of {camera}") as s:
            now = _now(s)
            row = s.get(CameraLeaseRow, camera)
            if row is None or row.node_id != node_id or row.expires_at <= now:
                raise LeaseLostError(
                    f"camera {camera}: recorder node {node_id} does not hold its lease"
                )
            return row.token

    def fence(self, camera: str, node_id: int) -> SegmentGuard:
        """A :data:`~homewarden.store.index.SegmentGuard` for ``camera``'s segments recorded
        under node ``node_id``'s current lease (its token read now): it refuses a segment once
        the lease row names another node or token (see the module docstring).

        Raises:
            LeaseLostError: the node does not hold the lease now.
            DatabaseError: the database failed.
        """
        token = self.token(camera, node_id)

        def guard(s: Session) -> None:
            row = s.execute(
                select(CameraLeaseRow.node_id, CameraLeaseRow.token)
                .where(CameraLeaseRow.camera == camera)
                .with_for_update(read=True)
            ).one_or_none()
            if row is None or row.node_id != node_id or row.token != token:
                holder = "nobody" if row is None or row.node_id is None else f"node {row.node_id}"
                raise LeaseLostError(
                    f"the lease of camera {camera} by recorder node {node_id} (token {token}) "
                    f"was lost; {holder} holds it now"
                    + ("" if row is None else f" (token {row.token})")
                )

        return guard

    def leases(self) -> list[Lease]:
        """Every camera's lease row, by camera.

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction("list camera leases") as s:
            rows = s.scalars(select(CameraLeaseRow).order_by(CameraLeaseRow.camera))
            return [Lease(r.camera, r.node_id, r.token, r.acquired_at, r.expires_at) for r in rows]

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, by id.

        Raises:
            DatabaseError: the database failed.
        """
        with self._index.transaction("list recorder nodes") as s:
            rows = s.scalars(select(RecorderNodeRow).order_by(RecorderNodeRow.id))
            return [
                NodeRecord(r.id, r.name, r.host, r.pid, r.started_at, r.heartbeat_at) for r in rows
            ]
