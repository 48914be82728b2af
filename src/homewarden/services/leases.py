"""Camera leases: many recorder nodes on one PostgreSQL database share the cameras (issue 7).

Each ``homewarden run --role recorder`` process is a **node**. It registers in
``recorder_nodes`` (a new id at every start) and runs a :class:`LeaseManager`, whose
**rounds** (:meth:`LeaseManager.round`), one every :data:`HEARTBEAT_INTERVAL` s, do in order:

1. **Heartbeat.** Mark the node alive and extend each lease it still holds unexpired to
   now + :data:`LEASE_TTL` (database clock). A lease it believed held but that was not
   renewed (it expired, or another node took it with a higher fencing token) is **lost**: its
   recorder is stopped at once.
2. **Fair share.** With ``n`` live nodes (heartbeat younger than the TTL, this one included)
   and ``c`` enabled cameras, a node holds at most ``ceil(c / n)``: two nodes split four
   cameras 2/2. A node holding more (it started first, or a node joined) stops the extras'
   recorders - each finishing its segment - then releases them; the newcomer takes them at
   its next round. Rebalancing is gentle on purpose: a camera moves only when a node joins,
   and only as many as the share demands.
3. **Acquisition.** Up to its share, take cameras whose lease is free or expired
   (``SELECT ... FOR UPDATE SKIP LOCKED``, :class:`~homewarden.store.lease_store.LeaseStore`),
   raising each one's fencing token. The callback then reconciles the new cameras' rows and
   files - only theirs, only now that nobody else may write them
   (:func:`~homewarden.services.reconcile.reconcile`) - and starts their recorders.

**Failure.** A node killed with ``kill -9`` stops renewing; its leases expire at most
:data:`LEASE_TTL` s after its last heartbeat, and the other nodes' next rounds (within
:data:`HEARTBEAT_INTERVAL` s) count one node fewer and take its cameras, so a camera is
recorded again within ``LEASE_TTL + HEARTBEAT_INTERVAL`` (20 s) plus reconciling and
connecting, inside the 30 s issue 7 asks. A node that cannot renew (the database is out of
reach) stops all its recorders once :data:`FENCE_MARGIN` s remain before its leases could
expire (a watchdog thread, so a hung database call cannot delay it): its recorders finish
before another node may start. Should one still commit a segment after a takeover (a process
paused for longer than the margin), the index refuses it - the fencing token check in the
segment's own transaction (:meth:`~homewarden.store.lease_store.LeaseStore.fence`) - and
the recorder deletes the file and stops. So each second of a camera is written by one node.

A clean stop (SIGTERM) stops the recorders, then releases every lease: the other nodes take
the cameras at their next round, without waiting for the TTL.

Constants and why:

* :data:`LEASE_TTL` = 15 s: the longest a dead node's cameras stay unrecorded before they are
  free. Shorter would move cameras on a database hiccup of a few seconds; 15 s leaves three
  heartbeats per TTL and the takeover inside 30 s.
* :data:`HEARTBEAT_INTERVAL` = 5 s: a third of the TTL, so one lost heartbeat (a slow query,
  a pause) does not cost a lease; it also bounds how soon a node takes a freed camera.
* :data:`FENCE_MARGIN` = 5 s: the time a node's recorders get to finish their segments
  between its decision to stop (two heartbeats missed) and the earliest takeover.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Collection

from homewarden.errors import HomeWardenError, LeaseLostError
from homewarden.store.lease_store import LeaseStore

log = logging.getLogger(__name__)

#: Seconds a lease lasts after each renewal (see the module docstring).
LEASE_TTL = 15.0
#: Seconds between a node's rounds (heartbeat, fair share, acquisition).
HEARTBEAT_INTERVAL = 5.0
#: Seconds before its leases could expire at which a node that could not renew stops its
#: recorders.
FENCE_MARGIN = 5.0
#: Seconds between the watchdog's checks of the renewal deadline.
WATCHDOG_TICK = 0.5

#: ``on_change(held, acquired)``: record exactly the cameras ``held`` from now on; those in
#: ``acquired`` were just taken (reconcile them before their recorders start). Raises a
#: :class:`HomeWardenError` when the acquired cameras cannot be started.
LeaseCallback = Callable[[frozenset[str], frozenset[str]], None]


def fair_share(cameras: int, live_nodes: int) -> int:
    """Most cameras one node may hold: ``ceil(cameras / live_nodes)`` (a node counts itself,
    so ``live_nodes`` below 1 is read as 1)."""
    return math.ceil(cameras / max(1, live_nodes))


class LeaseManager:
    """One node's leases: registration, rounds on a thread, the renewal watchdog.

    Args:
        store: the lease tables (PostgreSQL).
        name: the node's name (logs, ``recorder_nodes.name``; the runtime's lock file).
        cameras: the enabled cameras to share, asked at each round (the runtime reloads the
            cameras saved in the app there, so changes made on a web node arrive).
        on_change: see :data:`LeaseCallback`; called with this manager's lock held, so calls
            never overlap.
        reclaim: no other process runs as ``name`` (the caller holds its lock file), so the
            leases of earlier nodes of that name are freed at registration.
        ttl, heartbeat, fence_margin: see the module constants (tests shorten them).
    """

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        *,
        cameras: Callable[[], Collection[str]],
        on_change: LeaseCallback,
        reclaim: bool = False,
        ttl: float = LEASE_TTL,
        heartbeat: float = HEARTBEAT_INTERVAL,
        fence_margin: float = FENCE_MARGIN,
    ) -> None:
        if not 0 < fence_margin < ttl or not 0 < heartbeat < ttl - fence_margin:
            raise ValueError("need 0 < heartbeat < ttl - fence_margin and 0 < fence_margin")
        self._store = store
        self._name = name
        self._cameras = cameras
        self._on_change = on_change
        self._reclaim = reclaim
        self._ttl = ttl
        self._heartbeat = heartbeat
        self._margin = fence_margin
        self._lock = threading.RLock()
        self._held: frozenset[str] = frozenset()
        self._valid_until = 0.0  # monotonic time by which our recorders must have stopped
        self._node_id: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def node_id(self) -> int:
        """This node's id (``recorder_nodes.id``) once registered.

        Raises:
            RuntimeError: not registered.
        """
        if self._node_id is None:
            raise RuntimeError("recorder node not registered")
        return self._node_id

    @property
    def held(self) -> frozenset[str]:
        """The cameras this node holds and records now."""
        return self._held

    def register(self) -> int:
        """Register the node (see ``reclaim``); returns its id.

        Raises:
            DatabaseError: the database failed.
        """
        self._node_id = self._store.register(
            self._name, socket.gethostname(), os.getpid(), reclaim=self._reclaim
        )
        log.info("recorder node %s registered as node %d", self._name, self._node_id)
        return self._node_id

    def start(self) -> None:
        """Run a first round now, then rounds every ``heartbeat`` s and the watchdog on
        threads (``lease-heartbeat``, ``lease-watchdog``). Registers first if needed.

        Raises:
            DatabaseError: the database failed in registration or the first round.
        """
        if self._node_id is None:
            self.register()
        self.round()
        for target, name in ((self._loop, "lease-heartbeat"), (self._watch, "lease-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the rounds and the watchdog (the leases stay held until :meth:`close`)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def close(self) -> None:
        """Release every lease and deregister (after the recorders stopped: a clean stop);
        a database failure is logged, the leases then expire by themselves."""
        self.stop()
        node_id, self._node_id = self._node_id, None
        with self._lock:
            self._held = frozenset()
        if node_id is None:
            return
        try:
            self._store.deregister(node_id)
        except HomeWardenError as exc:
            log.error("recorder node %s: cannot release its leases: %s", self._name, exc)

    def round(self) -> None:
        """One round: heartbeat, fair share, acquisition (see the module docstring).

        Raises:
            LeaseLostError: the node was no longer registered (its recorders are stopped).
            DatabaseError: the database failed (the watchdog stops the recorders if it
                keeps failing).
        """
        t0 = time.monotonic()
        node_id = self.node_id
        wanted = sorted(set(self._cameras()))
        try:
            renewal = self._store.heartbeat(node_id, self._ttl)
        except LeaseLostError:
            self._fence("the node is no longer registered")
            raise
        with self._lock:
            self._valid_until = t0 + self._ttl - self._margin
            renewed = set(renewal.held)
            lost = self._held - renewed
            if lost:
                log.warning(
                    "recorder node %s lost the lease of %s (expired or taken by another node)",
                    self._name,
                    ", ".join(sorted(lost)),
                )
            adopted = renewed - self._held  # taken in a round whose answer never came
            share = fair_share(len(wanted), renewal.live_nodes)
            keep = sorted(c for c in renewed if c in wanted)[:share]
            extras = renewed - set(keep)
            held = frozenset(keep)
            if held != self._held:
                self._change(held, frozenset(adopted) & held)
            if extras:
                log.info(
                    "recorder node %s releases %s (fair share %d of %d cameras, %d nodes)",
                    self._name,
                    ", ".join(sorted(extras)),
                    share,
                    len(wanted),
                    renewal.live_nodes,
                )
        if extras:  # their recorders have stopped
            self._store.release(node_id, extras)
        free = [c for c in wanted if c not in held]
        got = self._store.acquire(node_id, free, share - len(held), self._ttl)
        if not got:
            return
        with self._lock:
            log.info(
                "recorder node %s acquired %s",
                self._name,
                ", ".join(f"{c} (token {t})" for c, t in sorted(got.items())),
            )
            try:
                self._change(self._held | set(got), frozenset(got))
            except HomeWardenError as exc:
                log.error("recorder node %s cannot start %s: %s", self._name, sorted(got), exc)
                failed = True
            else:
                failed = False
        if failed:  # let any node try again next round
            self._store.release(node_id, got)

    # internals

    def _change(self, held: frozenset[str], acquired: frozenset[str]) -> None:
        """Hand ``held`` to the callback, then make it ours (lock held). When the callback
        fails, the cameras not acquired just now stay recorded as before."""
        try:
            self._on_change(held, acquired)
        except HomeWardenError:
            self._held = held - acquired
            raise
        self._held = held

    def _fence(self, why: str) -> None:
        """Stop recording every camera now (``why`` is logged)."""
        with self._lock:
            if not self._held:
                return
            log.error(
                "recorder node %s stops recording %s: %s",
                self._name,
                ", ".join(sorted(self._held)),
                why,
            )
            try:
                self._change(frozenset(), frozenset())
            except HomeWardenError as exc:  # stopping does not fail; be safe anyway
                log.error("recorder node %s: stopping failed: %s", self._name, exc)
                self._held = frozenset()

    def _loop(self) -> None:
        while not self._stop.wait(self._heartbeat):
            try:
                self.round()
            except LeaseLostError as exc:
                log.error("recorder node %s: %s; registering again", self._name, exc)
                try:
                    self.register()
                except HomeWardenError as again:
                    log.error("recorder node %s cannot register: %s", self._name, again)
            except HomeWardenError as exc:
                log.warning("recorder node %s: lease round failed: %s", self._name, exc)
            except Exception:  # a bug must not end the heartbeat silently
                log.exception("recorder node %s: lease round crashed", self._name)

    def _watch(self) -> None:
        while not self._stop.wait(WATCHDOG_TICK):
            if self._held and time.monotonic() >= self._valid_until:
                self._fence(
                    f"no lease renewal for {self._ttl - self._margin:.0f} s; its leases "
                    f"expire within {self._margin:.0f} s and another node may take them"
                )
