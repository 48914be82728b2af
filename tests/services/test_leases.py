"""Camera leases on PostgreSQL (issue 7): acquisition with SKIP LOCKED, fair share, expiry,
fencing of a stale holder's segments, and a node that loses its database stopping its
recorders before its leases can be taken. Roles: ``recorder`` refuses SQLite, ``web`` records
and reconciles nothing."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import select, update
from typer.testing import CliRunner

from homewarden.cli import EXIT_ERROR, app
from homewarden.config import Settings
from homewarden.errors import ConfigError, LeaseLostError
from homewarden.services.leases import LeaseManager, fair_share
from homewarden.services.recorder_group import ThreadRecorderGroup
from homewarden.services.runtime import Runtime
from homewarden.store.household_key_store import HouseholdKeyStore
from homewarden.store.index import Index
from homewarden.store.lease_store import LeaseStore
from homewarden.store.lockfile import DataDirLock
from homewarden.store.models import CameraLeaseRow
from homewarden.store.records import NewSegment
from homewarden.web.app import create_app
from tests.fixtures_db import _admin_conninfo

#: The tests that need row locks run on PostgreSQL only (leasing refuses SQLite).
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

CAMERAS = ["a", "b", "c", "d"]


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def _segment(camera: str, start: float) -> NewSegment:
    return NewSegment(
        camera=camera,
        start=start,
        end=start + 2.0,
        bytes=1000,
        keyframes=1,
        motion_score=0.0,
        path=f"{camera}/1970-01-01/00/{start:.3f}.mp4",
    )


class Recorded:
    """What a manager's callback was told: the cameras to record now, and each acquisition."""

    def __init__(self) -> None:
        self.held: frozenset[str] = frozenset()
        self.acquired: list[frozenset[str]] = []

    def __call__(self, held: frozenset[str], acquired: frozenset[str]) -> None:
        assert acquired <= held
        self.held = held
        if acquired:
            self.acquired.append(acquired)


def _manager(store: LeaseStore, name: str, recorded: Recorded, **kw: Any) -> LeaseManager:
    return LeaseManager(store, name, cameras=lambda: CAMERAS, on_change=recorded, **kw)


@on_postgresql
def test_two_nodes_split_four_cameras_fairly(index: Index) -> None:
    store = LeaseStore(index)
    seen_a, seen_b = Recorded(), Recorded()
    a, b = _manager(store, "a", seen_a), _manager(store, "b", seen_b)
    a.register()
    a.round()
    assert a.held == seen_a.held == frozenset(CAMERAS)  # alone: it takes everything
    b.register()
    b.round()
    assert b.held == frozenset()  # none free; its share is 2
    a.round()  # two live nodes now: a stops two recorders, then releases them
    assert len(a.held) == 2 == len(seen_a.held)
    b.round()
    assert len(b.held) == 2 == len(seen_b.held)
    assert a.held.isdisjoint(b.held)
    assert a.held | b.held == frozenset(CAMERAS)
    holders = {lease.camera: lease.node_id for lease in store.leases()}
    assert {c for c, n in holders.items() if n == a.node_id} == a.held
    assert {c for c, n in holders.items() if n == b.node_id} == b.held
    # a third node: ceil(4 / 3) = 2, so nobody gives anything up and it waits its turn
    seen_c = Recorded()
    c = _manager(store, "c", seen_c)
    c.register()
    c.round()
    a.round()
    b.round()
    assert c.held == frozenset()
    assert len(a.held) == len(b.held) == 2
    # a clean stop releases at once: the next round of the others takes the cameras
    a.close()
    b.round()
    c.round()
    assert len(b.held) == len(c.held) == 2
    assert b.held | c.held == frozenset(CAMERAS)


def test_fair_share_is_the_ceiling_per_live_node() -> None:
    assert [fair_share(4, n) for n in (0, 1, 2, 3, 4, 5)] == [4, 4, 2, 2, 1, 1]
    assert fair_share(0, 2) == 0


@on_postgresql
def test_acquisition_skips_rows_locked_by_another_node(index: Index) -> None:
    store = LeaseStore(index)
    one = store.register("one", "h", 1, reclaim=False)
    two = store.register("two", "h", 2, reclaim=False)
    assert store.acquire(one, [], 4, 30.0) == {}
    assert store.acquire(one, CAMERAS, 0, 30.0) == {}
    assert store.acquire(one, CAMERAS, 4, 30.0) == dict.fromkeys(CAMERAS, 1)
    store.release(one, CAMERAS)
    # Node one's acquisition holds a and b locked (FOR UPDATE) while node two acquires: two
    # must get c and d at once, neither waiting for one's transaction nor taking a or b.
    got_two: dict[str, int] = {}
    with index.transaction("lock a and b") as s:
        s.scalars(
            select(CameraLeaseRow).where(CameraLeaseRow.camera.in_(["a", "b"])).with_for_update()
        ).all()
        worker = threading.Thread(target=lambda: got_two.update(store.acquire(two, CAMERAS, 4, 30)))
        worker.start()
        worker.join(10.0)
        assert not worker.is_alive(), "acquisition waited for another node's locked rows"
    assert got_two == {"c": 2, "d": 2}
    assert store.acquire(one, CAMERAS, 4, 30.0) == {"a": 2, "b": 2}
    assert store.acquire(one, CAMERAS, 4, 30.0) == {}  # all held, none expired


@on_postgresql
def test_an_expired_lease_is_taken_with_a_higher_token_and_lost_by_its_holder(
    index: Index,
) -> None:
    store = LeaseStore(index)
    old = store.register("old", "h", 1, reclaim=False)
    new = store.register("new", "h", 2, reclaim=False)
    assert store.acquire(old, ["a"], 1, 1.0) == {"a": 1}
    assert store.acquire(new, ["a"], 1, 1.0) == {}  # not expired yet
    renewal = store.heartbeat(old, 1.0)
    assert renewal.held == {"a": 1}
    assert renewal.live_nodes == 2
    time.sleep(1.2)  # old stops renewing: the lease expires
    assert store.heartbeat(new, 1.0).live_nodes == 1  # old's heartbeat is too old too
    assert store.acquire(new, ["a"], 1, 30.0) == {"a": 2}
    with pytest.raises(LeaseLostError):
        store.token("a", old)
    assert store.token("a", new) == 2
    assert store.heartbeat(old, 1.0).held == {}  # its heartbeat renews nothing now


@on_postgresql
def test_a_stale_holders_segment_commit_is_refused(index: Index) -> None:
    store = LeaseStore(index)
    old = store.register("old", "h", 1, reclaim=False)
    new = store.register("new", "h", 2, reclaim=False)
    store.acquire(old, ["a"], 1, 1.0)
    fence_old = store.fence("a", old)
    index.add_segment(_segment("a", 1000.0), guard=fence_old)
    time.sleep(1.2)
    assert store.acquire(new, ["a"], 1, 30.0) == {"a": 2}
    with pytest.raises(LeaseLostError, match=r"token 1.*lost.*token 2"):
        index.add_segment(_segment("a", 1002.0), guard=fence_old)
    index.add_segment(_segment("a", 1002.0), guard=store.fence("a", new))
    rows = index.segments("a")
    assert [r.start for r in rows] == [1000.0, 1002.0]
    # one segment per camera and start, whoever commits it
    with pytest.raises(Exception, match="index segment"):
        index.add_segment(
            NewSegment("a", 1002.0, 1004.0, 1, 1, 0.0, "a/1970-01-01/00/other.mp4"),
            guard=store.fence("a", new),
        )


@on_postgresql
def test_a_takeover_during_a_segment_commit_waits_for_it(index: Index) -> None:
    # The fence holds the lease row FOR SHARE until the segment is committed: a node taking
    # the (expired) camera in that moment skips it, and takes it once the commit is done.
    store = LeaseStore(index)
    old = store.register("old", "h", 1, reclaim=False)
    new = store.register("new", "h", 2, reclaim=False)
    store.acquire(old, ["a"], 1, 1.0)
    fence_old = store.fence("a", old)
    time.sleep(1.2)  # expired, not yet taken
    during: list[dict[str, int]] = []

    def guard_then_takeover(s: object) -> None:
        fence_old(s)  # type: ignore[arg-type]
        during.append(store.acquire(new, ["a"], 1, 30.0))  # another connection

    index.add_segment(_segment("a", 1000.0), guard=guard_then_takeover)
    assert during == [{}]
    assert len(index.segments("a")) == 1  # committed under the old token
    assert store.acquire(new, ["a"], 1, 30.0) == {"a": 2}


@on_postgresql
def test_a_restarted_node_of_the_same_name_takes_its_cameras_back_at_once(
    index: Index,
) -> None:
    store = LeaseStore(index)
    first = store.register("n1", "h", 1, reclaim=True)
    other = store.register("n2", "h", 2, reclaim=True)
    store.acquire(first, ["a", "b"], 2, 30.0)
    store.acquire(other, ["c"], 1, 30.0)
    again = store.register("n1", "h", 3, reclaim=True)  # the first one was killed
    assert store.acquire(again, CAMERAS, 4, 30.0) == {"a": 2, "b": 2, "d": 1}
    assert {n.name for n in store.nodes()} == {"n1", "n2"}
    assert {lease.camera for lease in store.leases() if lease.node_id == other} == {"c"}


@pytest.fixture
def cut_database(database_url: str) -> Iterator[Callable[[bool], None]]:
    """``cut(True)`` makes the test database refuse connections and ends those open (as a
    lost network would); ``cut(False)`` lets them in again."""
    admin, _ = _admin_conninfo()
    assert admin is not None
    name = database_url.rsplit("/", 1)[1]

    def cut(refuse: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                    sql.Identifier(name), sql.SQL("false" if refuse else "true")
                )
            )
            if refuse:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    yield cut
    cut(False)


@on_postgresql
def test_a_node_that_cannot_renew_stops_recording_before_its_leases_expire(
    index: Index, cut_database: Callable[[bool], None]
) -> None:
    ttl, margin = 3.0, 1.0
    seen = Recorded()
    manager = _manager(LeaseStore(index), "n1", seen, ttl=ttl, heartbeat=0.5, fence_margin=margin)
    manager.start()
    try:
        assert seen.held == frozenset(CAMERAS)
        _wait(lambda: manager.held == frozenset(CAMERAS), "first round")
        cut_database(True)
        cut_at = time.monotonic()
        stopped_after = _wait(lambda: seen.held == frozenset(), "recorders stopped", 3 * ttl)
        # stopped after the last renewal's TTL less the margin, so before anyone could
        # take the cameras (at the TTL)
        assert time.monotonic() - cut_at < ttl
        assert stopped_after > 0
        time.sleep(max(0.0, cut_at + ttl + 0.5 - time.monotonic()))  # the leases expire
        cut_database(False)
        # back: it takes its expired leases again, with new tokens (the callback reconciles
        # the cameras before recording them)
        _wait(lambda: seen.held == frozenset(CAMERAS), "recording again", 5 * ttl)
        assert seen.acquired[-1] == frozenset(CAMERAS)
        assert {lease.token for lease in LeaseStore(index).leases()} == {2}
    finally:
        manager.close()
    assert all(lease.node_id is None for lease in LeaseStore(index).leases())


@on_postgresql
def test_a_recorder_whose_lease_is_taken_discards_its_segment_and_stops(
    index: Index, database_url: str, tmp_path: Path, vtest_h264: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        cameras={
            "x": {
                "url": f"file:{vtest_h264}",
                "loop": True,
                "segment_seconds": 2,
                "motion": {"enabled": False},
            }
        },
        storage={"sealed": False},  # plaintext storage: this test is about lease fencing
    )
    store = LeaseStore(index)
    old = store.register("old", "h", 1, reclaim=False)
    store.acquire(old, ["x"], 1, 60.0)
    group = ThreadRecorderGroup(settings, index, fence_node=old)
    group.start()
    try:
        _wait(lambda: len(index.segments("x")) >= 1, "a first segment")
        # Another node takes the camera as if the lease had expired.
        with index.transaction("expire the lease") as s:
            s.execute(update(CameraLeaseRow).values(expires_at=0.0))
        new = store.register("new", "h", 2, reclaim=False)
        got: dict[str, int] = {}
        _wait(lambda: bool(got.update(store.acquire(new, ["x"], 1, 60.0)) or got), "takeover")
        assert got == {"x": 2}
        committed = index.segments("x")
        _wait(lambda: group.statuses()["x"].state == "stopped", "the old recorder stopped")
    finally:
        group.stop(10.0)
    assert index.segments("x") == committed  # nothing committed after the takeover
    assert "lease" in (group.statuses()["x"].last_error or "")
    media = settings.media_dir
    on_disk = {p.relative_to(media).as_posix() for p in media.rglob("*.mp4*")}
    assert on_disk == {r.path for r in committed}  # the refused segment's file is gone


@on_postgresql
def test_a_recorder_node_started_before_any_web_node_seals_its_footage(
    index: Index, database_url: str, tmp_path: Path, vtest_h264: Path
) -> None:
    """Regression: only the web app's roles gave the households their first key, so with
    footage sealed (the default) a recorder node started on a new database before any web
    node could close no segment ("household 'home' has no key yet") and recorded nothing."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        cameras={
            "x": {
                "url": f"file:{vtest_h264}",
                "loop": True,
                "segment_seconds": 2,
                "motion": {"enabled": False},
            }
        },
    )
    assert settings.storage.sealed
    assert HouseholdKeyStore(index).current("home") is None
    with Runtime(settings, role="recorder", node="n1") as runtime:
        _wait(lambda: len(index.segments("x")) >= 1, "a first segment", 40.0)
        assert runtime.statuses()["x"].last_error is None
    key = HouseholdKeyStore(index).current("home")
    assert key is not None
    segments = index.segments("x")
    assert segments
    assert all(s.sealed and s.key_id == key.key_id for s in segments)


def test_role_recorder_on_sqlite_and_unknown_roles_are_config_errors(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match="PostgreSQL"):
        Runtime(settings, role="recorder")
    with pytest.raises(ConfigError, match="role 'mixer'"):
        Runtime(settings, role="mixer")
    with pytest.raises(ConfigError, match="PostgreSQL"):
        LeaseStore(Index(settings.db_url))


def test_role_web_serves_the_app_and_records_locks_and_reconciles_nothing(
    tmp_path: Path, vtest_h264: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        api={"host": "127.0.0.1", "port": 0},
        cameras={"x": {"url": f"file:{vtest_h264}", "loop": True}},
    )
    # a recorder node's segment in progress, which a web node must leave alone
    part = settings.media_dir / "x" / "2026-11-29" / "10" / "1795860000.000.mp4.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"in progress")
    with Runtime(settings, app_factory=create_app, role="web") as runtime:
        # It serves the web app and API: accounts required, answered over real HTTP.
        address = runtime.address
        assert address is not None
        assert address.port != 0
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{address.url}/api/health", timeout=5)
        assert anonymous.value.code == 401
        (owner,) = runtime.accounts.users()
        token, _ = runtime.accounts.create_token(owner.id, "test")
        request = urllib.request.Request(
            f"{address.url}/api/health", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
            assert json.load(resp)["cameras_connected"] == 0  # and records nothing
        assert runtime.statuses() == {}
        DataDirLock.acquire(settings.data_dir).release()  # web nodes take no lock
        assert runtime.index.segments() == []
        time.sleep(0.5)
        assert part.read_bytes() == b"in progress"
        assert runtime.audit.size() >= 1  # it keeps the audit log (the key's creation)


def test_run_role_recorder_on_sqlite_exits_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.upper().startswith("HOMEWARDEN_"):
            monkeypatch.delenv(key)
    data = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["run", "--data-dir", str(data), "--role", "recorder", "--duration", "1"]
    )
    assert result.exit_code == EXIT_ERROR
    assert "leases cameras from PostgreSQL" in result.output
    assert not (data / "nodes").exists()  # refused before taking anything
