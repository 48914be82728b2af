"""MQTT snapshots under sealed footage (``storage.sealed`` with ``mqtt.snapshots = true``,
issue 6), against the machine's Mosquitto and real indexes (SQLite and PostgreSQL).

The event snapshot is sealed to the household key and the bridge holds no key: before this
fix it sent nothing ("not sent while sealed") although the owner opted in. Now the recorder
offers the JPEG it seals, from memory, to the process's snapshot tap and the bridge sends that
(audited as a snapshot view, as ever); no plaintext JPEG is written. A snapshot recorded in
another process (a worker or a recorder node: not in this process's memory) is not sent, and
that is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import ActorKind, AuditEntry, AuditTag
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.mqtt_bridge import MqttBridge, Topics
from homewarden.services.runtime import Runtime
from homewarden.services.sealed_footage import SEALED_SUFFIX, SegmentSealing, seal_snapshot
from homewarden.services.snapshot_tap import SnapshotTap
from homewarden.store.index import Index
from tests.services.mqtt_broker import (
    Broker,
    Subscriber,
    clear_retained,
    system_broker,
    unique_prefix,
)
from tests.services.test_mqtt_bridge import (
    DISCOVERY,
    WITHIN,
    _entries,
    _filters,
    short_still_motion_still,
)

__all__ = ["short_still_motion_still", "system_broker"]  # fixtures used here

JPEG_SOI = b"\xff\xd8\xff"


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


def _plain_jpegs(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and JPEG_SOI in p.read_bytes()]


@dataclass
class Env:
    index: Index
    audit: AuditLog
    keys: KeyRing
    settings: Settings
    tap: SnapshotTap
    topics: Topics
    sub: Subscriber

    def event(self, jpeg: bytes, *, offered: bool) -> int:
        """An event whose snapshot is sealed as a recorder seals it; ``offered``: by a
        recorder of this process (its image handed to the tap), else by another process."""
        event_id = self.index.open_event("front", time.time(), "motion", 0.4, [])
        sealing = SegmentSealing("home", self.keys)
        snapshot_dir = self.settings.snapshot_dir
        rel = seal_snapshot(jpeg, snapshot_dir, f"front/{event_id}.jpg", "front", sealing)
        if offered:
            self.tap.offer("front", event_id, rel, jpeg)
        self.index.update_event(event_id, snapshot_path=rel)
        return event_id

    def shown(self, event_id: int) -> list[AuditEntry]:
        return [
            e
            for e in _entries(self.audit)
            if e.action is AuditTag.FOOTAGE_SNAPSHOT_VIEW and e.subject.event == event_id
        ]


@pytest.fixture
def env(index: Index, database_url: str, tmp_path: Path, system_broker: Broker) -> Iterator[Env]:
    prefix = unique_prefix()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage={"sealed": True},
        cameras={"front": {"url": "file:/nonexistent/front.mp4"}},
        mqtt={**system_broker.bridge_login(), "topic_prefix": prefix, "snapshots": True},
    )
    topics = Topics(prefix, DISCOVERY)
    sub = Subscriber(system_broker, _filters(prefix)).start()
    tap = SnapshotTap()
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        accounts = AccountService(index, audit, settings)
        keys = attach(accounts, index, audit, settings.keys_dir, params=ARGON2ID_FLOOR)
        accounts.ensure_households()  # the household's first key: snapshots seal to it
        bridge = MqttBridge(settings, index, audit, interval=0.2, snapshot_tap=tap)
        bridge.start()
        try:
            sub.wait_payload(topics.available, "online")
            yield Env(index, audit, keys, settings, tap, topics, sub)
        finally:
            bridge.stop()
            sub.stop()
            clear_retained(system_broker, _filters(prefix), None)
    assert not tap.listening  # the bridge stopped listening: the tap keeps nothing


def test_a_sealed_snapshot_is_sent_from_memory_and_audited(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    jpeg = _jpeg(1)
    event_id = env.event(jpeg, offered=True)
    snapshot = env.topics.snapshot("front")
    env.sub.wait_for(lambda m: m.topic == snapshot and m.payload == jpeg, "sealed snapshot")
    (entry,) = env.shown(event_id)  # audited before it left, once
    assert entry.actor.kind is ActorKind.SYSTEM
    assert entry.actor.id == "mqtt"
    assert entry.subject.camera == "front"
    # nothing in the clear at rest: only the sealed file
    snapshots = env.settings.snapshot_dir
    assert [p.name for p in snapshots.rglob("*") if p.is_file()] == [
        f"{event_id}.jpg{SEALED_SUFFIX}"
    ]
    assert _plain_jpegs(env.settings.data_dir) == []

    # recorded in another process: not in memory, not sent; logged once, not per event
    caplog.set_level(logging.DEBUG, logger="homewarden.services.mqtt_bridge")
    elsewhere = [env.event(_jpeg(seed), offered=False) for seed in (2, 3)]
    for other in elsewhere:
        env.sub.wait_for(
            lambda m, other=other: (
                m.topic == env.topics.events and f'"id":{other},' in m.payload.decode()
            ),
            f"event {other} message",
        )
    time.sleep(1.0)  # a few more polls
    assert [m.payload for m in env.sub.on(snapshot) if m.payload][-1] == jpeg
    assert all(env.shown(other) == [] for other in elsewhere)
    missed = [r for r in caplog.records if "not in this process's memory" in r.getMessage()]
    assert [r.levelno for r in missed if r.levelno >= logging.WARNING] == [logging.WARNING]
    named = {o for o in elsewhere if any(f"event {o}:" in r.getMessage() for r in missed)}
    assert named == set(elsewhere)


def test_the_tap_keeps_nothing_nobody_listens_for() -> None:
    tap = SnapshotTap()
    tap.offer("front", 1, "front/1.jpg.hwseal", b"\xff\xd8\xff jpeg")
    assert tap.take("front", 1, "front/1.jpg.hwseal") is None
    tap.listen()
    tap.offer("front", 1, "front/1.jpg.hwseal", b"\xff\xd8\xff one")
    tap.offer("front", 2, "front/2.jpg.hwseal", b"\xff\xd8\xff two")  # the newest only
    assert tap.take("front", 1, "front/1.jpg.hwseal") is None
    assert tap.take("front", 2, "front/2.jpg.hwseal") == b"\xff\xd8\xff two"
    assert tap.take("front", 2, "front/other.jpg.hwseal") is None
    tap.unlisten()
    assert tap.take("front", 2, "front/2.jpg.hwseal") is None


@pytest.mark.slow
def test_a_real_recorder_sends_its_sealed_snapshot(
    tmp_path: Path, short_still_motion_still: Path, system_broker: Broker
) -> None:
    """The whole path in one process (role all, recorder threads): a real event of real
    footage, its snapshot sealed on disk and its image on the broker."""
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    sub = Subscriber(system_broker, _filters(prefix)).start()
    settings = Settings(
        data_dir=tmp_path / "data",
        storage={"sealed": True},
        cameras={
            "front": {
                "url": f"file:{short_still_motion_still}",
                "segment_seconds": 2,
                "motion": {"post_capture": 2},
            }
        },
        mqtt={**system_broker.bridge_login(), "topic_prefix": prefix, "snapshots": True},
    )
    runtime = Runtime(settings)
    try:
        runtime.start()
        snapshot = topics.snapshot("front")
        i = sub.wait_for(
            lambda m: m.topic == snapshot and m.payload.startswith(JPEG_SOI), "snapshot", WITHIN
        )
        jpeg = sub.messages[i].payload
        (event,) = [e for e in runtime.index.events(limit=10)[0] if e.snapshot_path]
        assert event.snapshot_path is not None
        assert event.snapshot_path.endswith(SEALED_SUFFIX)
        shown = [
            e
            for e in _entries(runtime.audit)
            if e.action is AuditTag.FOOTAGE_SNAPSHOT_VIEW and e.subject.event == event.id
        ]
        assert shown
        assert jpeg.startswith(JPEG_SOI)
    finally:
        runtime.stop()
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)
    assert _plain_jpegs(settings.snapshot_dir) == []
