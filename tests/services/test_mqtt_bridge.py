"""The MQTT bridge against real Mosquitto brokers (the machine's, and private ones with
authorization on), real indexes (SQLite and PostgreSQL) and a real runtime recording real
footage (``vtest.avi``: a still scene, then pedestrians, then still again).

Acceptance (issue 7): discovery, motion ON then OFF and the event messages new ... end around
a real event, in recorder threads and in recorder worker processes (with snapshots opted in,
each one audited); a recording command stops the camera's recorder only with commands on;
a broker killed and restarted gets availability, discovery and states again; malformed and
unknown commands are logged and ignored while the bridge goes on."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from homewarden.config import Settings
from homewarden.domain.audit import ActorKind, AuditEntry, AuditTag
from homewarden.errors import ConfigError, InvalidRequestError
from homewarden.media.transcode import make_still_motion_still_clip
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.cameras import CameraAdmin
from homewarden.services.mqtt_bridge import (
    ChangeKind,
    EventChange,
    MqttBridge,
    Switch,
    Topics,
    discovery_configs,
    event_message,
    latest_event_id,
    parse_switch_payload,
)
from homewarden.services.runtime import Runtime
from homewarden.store.index import Index
from homewarden.store.records import EventRecord
from tests.fixtures_media import GOP_SECONDS, _cached
from tests.services.mqtt_broker import (
    Broker,
    PrivateBroker,
    Subscriber,
    clear_retained,
    private_broker,
    system_broker,
    unique_prefix,
)
from tests.services.test_runtime_cameras import _pool

__all__ = ["private_broker", "system_broker"]  # fixtures used here

#: The clip: the first frame of vtest.avi held STILL s, its first MOTION s, the last held
#: STILL s; with a 2 s post-capture the event ends ~2 s before the file does.
STILL, MOTION = 4.0, 6.0
#: Seconds within which the event must have opened and ended (the clip lasts 14 s).
WITHIN = 45.0
DISCOVERY = "homeassistant"


@pytest.fixture(scope="session")
def short_still_motion_still(vtest_avi: Path, media_cache_dir: Path) -> Path:
    """14 s of H.264 (768x576, 10 fps, GOP 2 s): still 4 s, pedestrians 6 s, still 4 s."""
    return _cached(
        media_cache_dir,
        "still-motion-still-4-6.mp4",
        lambda dst: make_still_motion_still_clip(
            vtest_avi, dst, STILL, MOTION, gop_seconds=GOP_SECONDS
        ),
    )


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def _entries(audit: AuditLog) -> list[AuditEntry]:
    return [audit.entry(i) for i in range(audit.size())]


def _filters(prefix: str) -> list[str]:
    return [f"{prefix}/#", f"{DISCOVERY}/+/{prefix}/#"]


# pure parts


def test_switch_payloads() -> None:
    assert parse_switch_payload(b"ON") is True
    assert parse_switch_payload(b" off\n") is False
    for bad in (b"", b"MAYBE", b"\xff\xfe", b"1", b"ON" * 20, b'{"state":"ON"}'):
        with pytest.raises(InvalidRequestError):
            parse_switch_payload(bad)


def test_command_topics_are_parsed_under_a_prefix_with_levels() -> None:
    topics = Topics("home/warden", DISCOVERY)
    assert topics.parse_command("home/warden/front/recording/set") == ("front", Switch.RECORDING)
    assert topics.parse_command(topics.command("yard", Switch.MOTION_DETECTION)) == (
        "yard",
        Switch.MOTION_DETECTION,
    )
    for other in (
        "home/warden/front/recording/state",
        "home/warden/front/zoom/set",
        "home/warden//recording/set",
        "home/warden/a/b/recording/set",
        "home/wardenx/front/recording/set",
        "homewarden/front/recording/set",
    ):
        assert topics.parse_command(other) is None, other
    # Every .../set topic, so a command on an unknown one is heard and logged.
    assert topics.command_filters() == ["home/warden/+/+/set"]


def test_discovery_follows_the_opt_ins_and_keeps_ids_stable() -> None:
    topics = Topics("home/warden", DISCOVERY)
    off = discovery_configs(topics, "front", snapshots=False, commands=False)
    on = discovery_configs(topics, "front", snapshots=True, commands=True)
    assert set(off) == set(on)
    motion = f"{DISCOVERY}/binary_sensor/home_warden/front_motion/config"
    camera = f"{DISCOVERY}/camera/home_warden/front_snapshot/config"
    switches = [
        f"{DISCOVERY}/switch/home_warden/front_recording/config",
        f"{DISCOVERY}/switch/home_warden/front_motion_detection/config",
    ]
    assert off[motion] is not None
    assert off[camera] is None
    assert all(off[s] is None for s in switches)
    configs = [c for c in on.values() if c is not None]
    assert len(configs) == 4
    assert len({c["unique_id"] for c in configs}) == 4
    for c in configs:
        assert c["availability_topic"] == "home/warden/available"
        assert c["device"]["identifiers"] == ["home_warden_front"]
        assert c["unique_id"].startswith("home_warden_front_")
    assert on[motion] == off[motion]
    assert on[motion]["state_topic"] == "home/warden/front/motion"  # type: ignore[index]
    assert on[camera]["topic"] == "home/warden/front/snapshot"  # type: ignore[index]
    rec = on[switches[0]]
    assert rec is not None
    assert rec["command_topic"] == "home/warden/front/recording/set"
    assert rec["state_topic"] == "home/warden/front/recording/state"
    # Stable: the same camera gives the same ids in another run.
    again = discovery_configs(topics, "front", snapshots=True, commands=True)
    assert again == on


def test_event_messages_carry_links_never_footage() -> None:
    before = EventRecord(7, "front", 100.0, None, "motion", 0.25, ("porch",), "front/7.jpg")
    after = EventRecord(7, "front", 100.0, 109.5, "person", 0.5, ("porch",), "front/7.jpg")
    msg = event_message(EventChange(ChangeKind.END, before, after))
    assert msg["type"] == "end"
    assert msg["before"]["end"] is None
    assert msg["after"] == {
        "id": 7,
        "camera": "front",
        "label": "person",
        "zones": ["porch"],
        "start": 100.0,
        "end": 109.5,
        "score": 0.5,
        "has_snapshot": True,
        "links": {
            "event": "/events/7",
            "clip": "/api/events/7/clip.mp4",
            "snapshot": "/api/events/7/snapshot.jpg",
        },
    }
    new = event_message(EventChange(ChangeKind.NEW, None, before), "https://cams.example")
    assert new["before"] == new["after"]
    assert new["after"]["links"]["event"] == "https://cams.example/events/7"


@pytest.mark.parametrize("bad", ["", "a/+/b", "a/#", "/a", "a/", "a//b", "$SYS"])
def test_bad_topic_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="topic prefix"):
        Settings(mqtt={"host": "127.0.0.1", "topic_prefix": bad})


def test_bridge_needs_a_host(index: Index, tmp_path: Path, database_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    with AuditLog.open(database_url, settings.keys_dir) as audit, pytest.raises(ConfigError):
        MqttBridge(settings, index, audit)


def test_latest_event_id_follows_ids_not_starts(index: Index) -> None:
    assert latest_event_id(index) == 0
    first = index.open_event("front", 1000.0, "motion", 0.1, [])
    second = index.open_event("front", 900.0, "motion", 0.1, [])  # refined back in time
    assert second > first
    assert latest_event_id(index) == second


# acceptance 1: a real event from real footage


@pytest.mark.slow
@pytest.mark.parametrize(("group", "snapshots"), [("threads", False), ("processes", True)])
def test_real_event_gives_discovery_motion_on_off_and_event_messages(
    group: str,
    snapshots: bool,
    tmp_path: Path,
    short_still_motion_still: Path,
    system_broker: Broker,
) -> None:
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    sub = Subscriber(system_broker, _filters(prefix)).start()
    settings = Settings(
        data_dir=tmp_path / "data",
        cameras={
            "front": {
                "url": f"file:{short_still_motion_still}",
                "segment_seconds": 2,
                "motion": {"post_capture": 2},
            }
        },
        mqtt={**system_broker.bridge_login(), "topic_prefix": prefix, "snapshots": snapshots},
    )
    runtime = Runtime(settings, recorder_pool_factory=_pool if group == "processes" else None)
    try:
        runtime.start()
        # Discovery and the first states.
        config_topic = topics.config("binary_sensor", "front", "motion")
        i = sub.wait_for(lambda m: m.topic == config_topic and bool(m.payload), "discovery")
        config = json.loads(sub.messages[i].payload)
        assert config["state_topic"] == topics.motion("front")
        assert config["device_class"] == "motion"
        assert config["availability_topic"] == topics.available
        sub.wait_payload(topics.available, "online")
        sub.wait_payload(topics.state("front", Switch.RECORDING), "ON")
        first_off = sub.wait_payload(topics.motion("front"), "OFF")
        # The event: motion ON, new ... end, motion OFF, in that order.
        on = sub.wait_payload(topics.motion("front"), "ON", WITHIN, after=first_off)
        new = sub.wait_for(
            lambda m: m.topic == topics.events and json.loads(m.payload)["type"] == "new",
            "event new",
            WITHIN,
        )
        event_id = json.loads(sub.messages[new].payload)["after"]["id"]
        end = sub.wait_for(
            lambda m: (
                m.topic == topics.events
                and json.loads(m.payload)["type"] == "end"
                and json.loads(m.payload)["after"]["id"] == event_id
            ),
            "event end",
            WITHIN,
        )
        off = sub.wait_payload(topics.motion("front"), "OFF", WITHIN, after=on)
        assert on < new < end < off
        event = runtime.index.event(event_id)
        assert event.end is not None
        ended = json.loads(sub.messages[end].payload)
        assert ended["after"]["end"] == pytest.approx(event.end)
        assert ended["after"]["camera"] == "front"
        assert ended["after"]["links"] == {
            "event": f"/events/{event_id}",
            "clip": f"/api/events/{event_id}/clip.mp4",
            "snapshot": f"/api/events/{event_id}/snapshot.jpg",
        }
        for m in sub.on(topics.events):  # facts and links only
            assert len(m.payload) < 2048
            assert set(json.loads(m.payload)) == {"type", "before", "after"}
        # Snapshots only when opted in, and then each one audited before it left.
        camera_config = topics.config("camera", "front", "snapshot")
        jpegs = [m for m in sub.on(topics.snapshot("front")) if m.payload]
        if snapshots:
            assert any(m.payload.startswith(b"\xff\xd8") for m in jpegs)
            assert json.loads(sub.on(camera_config)[-1].payload)["topic"] == topics.snapshot(
                "front"
            )
            entries = _entries(runtime.audit)
            shown = [
                e
                for e in entries
                if e.action is AuditTag.FOOTAGE_SNAPSHOT_VIEW and e.subject.event == event_id
            ]
            assert shown
            assert all(e.actor.kind is ActorKind.SYSTEM and e.actor.id == "mqtt" for e in shown)
            started = [
                e
                for e in entries
                if e.action is AuditTag.SETTING_CHANGE and "snapshots" in e.reason
            ]
            assert len(started) == 1
            assert started[0].index < shown[0].index
        else:
            assert jpegs == []
            assert not any(m.payload for m in sub.on(camera_config))
            assert not any(
                e.action is AuditTag.FOOTAGE_SNAPSHOT_VIEW for e in _entries(runtime.audit)
            )
        mark = len(sub.messages)
    finally:
        runtime.stop()
    try:
        sub.wait_payload(topics.available, "offline", after=mark)
    finally:
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)


# acceptance 2: commands switch recording, only when opted in


@dataclass
class Recording:
    runtime: Runtime
    topics: Topics
    ha: Subscriber


@pytest.fixture
def recording(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    vtest_h264_4s: Path,
    private_broker: Callable[[str, str], PrivateBroker],
) -> Iterator[Recording]:
    """A runtime recording camera ``front`` (real footage, looped), bridged to a private
    broker with authorization on; ``commands`` from the test's parameter."""
    commands: bool = request.param
    prefix = unique_prefix()
    broker = private_broker(prefix, DISCOVERY).broker
    settings = Settings(
        data_dir=tmp_path / "data",
        cameras={"front": {"url": f"file:{vtest_h264_4s}", "loop": True, "segment_seconds": 2}},
        mqtt={**broker.bridge_login(), "topic_prefix": prefix, "commands": commands},
    )
    runtime = Runtime(settings)
    runtime.start()
    ha = Subscriber(broker, _filters(prefix), broker.ha_login()).start()
    try:
        _wait(lambda: len(runtime.index.segments("front")) >= 1, "front records")
        yield Recording(runtime, Topics(prefix, DISCOVERY), ha)
    finally:
        ha.stop()
        runtime.stop()


@pytest.mark.parametrize("recording", [True], indirect=True)
def test_recording_command_stops_and_restarts_the_recorder(recording: Recording) -> None:
    runtime, topics, ha = recording.runtime, recording.topics, recording.ha
    state = topics.state("front", Switch.RECORDING)
    ha.wait_payload(state, "ON")
    switch = json.loads(ha.on(topics.config("switch", "front", "recording"))[-1].payload)
    assert switch["command_topic"] == topics.command("front", Switch.RECORDING)
    mark = len(ha.messages)
    ha.publish(topics.command("front", Switch.RECORDING), "OFF")
    ha.wait_payload(state, "OFF", after=mark)
    assert runtime.settings.cameras["front"].enabled is False
    _wait(lambda: "front" not in runtime.statuses(), "the recorder stopped")
    stopped = len(runtime.index.segments("front"))
    time.sleep(3.0)
    assert len(runtime.index.segments("front")) == stopped
    change = [e for e in _entries(runtime.audit) if e.action is AuditTag.SETTING_CHANGE][-1]
    assert (change.actor.kind, change.actor.id) == (ActorKind.SYSTEM, "mqtt")
    assert change.reason == "camera front: disabled"
    assert change.subject.camera == "front"
    # Motion sensing, then recording back on.
    ha.publish(topics.command("front", Switch.MOTION_DETECTION), "OFF")
    ha.wait_payload(topics.state("front", Switch.MOTION_DETECTION), "OFF", after=mark)
    assert runtime.settings.cameras["front"].motion.enabled is False
    mark = len(ha.messages)
    ha.publish(topics.command("front", Switch.RECORDING), "ON")
    ha.wait_payload(state, "ON", after=mark)
    _wait(lambda: len(runtime.index.segments("front")) > stopped, "front records again")
    assert runtime.statuses()["front"].decode_mode == "off"  # motion sensing stayed off


@pytest.mark.parametrize("recording", [False], indirect=True)
def test_commands_are_ignored_unless_opted_in(recording: Recording) -> None:
    runtime, topics, ha = recording.runtime, recording.topics, recording.ha
    state = topics.state("front", Switch.RECORDING)
    ha.wait_payload(state, "ON")
    # No switch entity is offered.
    assert not any(m.payload for m in ha.on(topics.config("switch", "front", "recording")))
    mark = len(ha.messages)
    command = topics.command("front", Switch.RECORDING)
    ha.publish(command, "OFF")
    ha.wait_payload(command, "OFF", after=mark)  # it went through the broker
    before = len(runtime.index.segments("front"))
    time.sleep(3.0)
    assert runtime.settings.cameras["front"].enabled is True
    assert "front" in runtime.statuses()
    assert len(runtime.index.segments("front")) > before
    assert not [m for m in ha.messages[mark:] if m.topic == state]
    assert not [
        e
        for e in _entries(runtime.audit)
        if e.action is AuditTag.SETTING_CHANGE and e.actor.id == "mqtt"
    ]


# a bridge over a real index, without a runtime


@dataclass
class Env:
    index: Index
    audit: AuditLog
    make: Callable[..., MqttBridge]
    admin: CameraAdmin | None = None  # the last bridge's

    def cameras(self) -> Settings:
        assert self.admin is not None
        return self.admin.current()


@pytest.fixture
def env(index: Index, database_url: str, tmp_path: Path) -> Iterator[Env]:
    """Camera ``front`` in a real index, its administration, and a bridge factory
    ``make(broker, prefix, **mqtt)`` (bridges are stopped at the end)."""
    bridges: list[MqttBridge] = []
    with AuditLog.open(database_url, tmp_path / "keys") as audit:

        def make(broker: Broker, prefix: str, node: str | None = None, **mqtt: Any) -> MqttBridge:
            settings = Settings(
                data_dir=tmp_path,
                database_url=database_url,
                cameras={"front": {"url": "file:/nonexistent/front.mp4"}},
                mqtt={**broker.bridge_login(), "topic_prefix": prefix, **mqtt},
            )
            admin = CameraAdmin(index, audit, settings)
            admin.load()
            AccountService(index, audit, admin.current).ensure_households()
            made.admin = admin
            bridge = MqttBridge(
                admin.current,
                index,
                audit,
                cameras=admin,
                node=node,
                interval=0.2,
                reconnect_min=1,
                reconnect_max=2,
            )
            bridges.append(bridge)
            bridge.start()
            return bridge

        made = Env(index, audit, make)
        try:
            yield made
        finally:
            for bridge in bridges:
                bridge.stop()


# acceptance 3: the broker dies and comes back


def test_broker_restart_gets_availability_discovery_and_states_again(
    env: Env, private_broker: Callable[[str, str], PrivateBroker]
) -> None:
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    server = private_broker(prefix, DISCOVERY)
    broker = server.broker
    bridge = env.make(broker, prefix)
    sub = Subscriber(broker, _filters(prefix), broker.ha_login()).start()
    sub.wait_payload(topics.available, "online")
    sub.wait_payload(topics.motion("front"), "OFF")
    event = env.index.open_event("front", time.time(), "motion", 0.2, [])
    sub.wait_payload(topics.motion("front"), "ON")
    sub.stop()
    server.kill()
    _wait(lambda: not bridge.connected, "the bridge saw the broker go")
    # While the broker is away the event ends: the state changes with nobody to tell.
    env.index.update_event(event, end=time.time())
    time.sleep(1.0)
    server.start()  # no persistence: it holds no retained message now
    _wait(lambda: bridge.connected, "the bridge reconnected")
    time.sleep(1.0)  # its republishing
    fresh = Subscriber(broker, _filters(prefix), broker.ha_login()).start()
    try:
        for topic, payload in (
            (topics.available, "online"),
            (topics.motion("front"), "OFF"),
            (topics.state("front", Switch.RECORDING), "ON"),
            (topics.state("front", Switch.MOTION_DETECTION), "ON"),
        ):
            i = fresh.wait_payload(topic, payload, timeout=10)
            assert fresh.messages[i].retain, topic
        i = fresh.wait_for(
            lambda m: m.topic == topics.config("binary_sensor", "front", "motion"),
            "discovery again",
            timeout=10,
        )
        assert fresh.messages[i].retain
        assert json.loads(fresh.messages[i].payload)["state_topic"] == topics.motion("front")
    finally:
        fresh.stop()


def test_a_changed_open_event_is_published_as_an_update_with_before_and_after(
    env: Env, system_broker: Broker
) -> None:
    """The recorder's path (``services/recorder.py``): an event opens as ``motion``, then the
    person detector relabels it and the tracker raises its score and zones while it is still
    open; the bridge sends ``update`` with the event as it was and as it is."""
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    sub = Subscriber(system_broker, [topics.events]).start()
    try:
        bridge = env.make(system_broker, prefix)  # its event cursor is before the event
        _wait(lambda: bridge.connected, "the bridge connected")
        event = env.index.open_event("front", time.time(), "motion", 0.2, ["porch"])

        def of(kind: str) -> Callable[[Any], bool]:
            def check(m: Any) -> bool:
                msg = json.loads(m.payload)
                return bool(msg["type"] == kind and msg["after"]["id"] == event)

            return check

        # Changed only once "new" has gone out, or the change would ride in the "new".
        new = sub.wait_for(of("new"), "event new")
        assert json.loads(sub.messages[new].payload)["after"]["label"] == "motion"
        env.index.update_event(event, label="person", peak_score=0.7, zones=["drive", "porch"])
        i = sub.wait_for(of("update"), "event update", timeout=10)
        update = json.loads(sub.messages[i].payload)
        before, after = update["before"], update["after"]
        assert (before["label"], before["score"], before["zones"]) == ("motion", 0.2, ["porch"])
        assert (after["label"], after["score"], after["zones"]) == (
            "person",
            0.7,
            ["drive", "porch"],
        )
        assert before["end"] is None  # still open
        assert after["end"] is None
        assert after["links"]["event"] == f"/events/{event}"
        # An unchanged poll sends nothing more; the end then goes out as "end", once.
        time.sleep(1.0)
        assert len([m for m in sub.messages if of("update")(m)]) == 1
        env.index.update_event(event, end=time.time())
        end = sub.wait_for(of("end"), "event end", timeout=10)
        assert new < i < end
        assert json.loads(sub.messages[end].payload)["before"]["label"] == "person"
    finally:
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)


# acceptance 4: bad commands are logged and ignored


def test_malformed_and_unknown_commands_are_logged_and_ignored(
    env: Env, system_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    sub = Subscriber(system_broker, _filters(prefix)).start()
    try:
        # A stale retained command, handed over when the bridge subscribes: not obeyed
        # (it would be handed over again at every reconnect).
        sub.publish(topics.command("front", Switch.RECORDING), b"OFF", retain=True)
        with caplog.at_level(logging.INFO, logger="homewarden.services.mqtt_bridge"):
            env.make(system_broker, prefix, commands=True)
            state = topics.state("front", Switch.RECORDING)
            sub.wait_payload(state, "ON")
            for topic, payload in (
                (topics.command("front", Switch.RECORDING), b"MAYBE"),
                (topics.command("front", Switch.RECORDING), b"\xff\xfe"),
                (topics.command("front", Switch.RECORDING), b"OFF" * 50),
                (topics.command("ghost", Switch.RECORDING), b"OFF"),
                (topics.command("front", Switch.MOTION_DETECTION), b" "),
            ):
                sub.publish(topic, payload)
            # Still alive: a good command after the bad ones is obeyed.
            mark = len(sub.messages)
            sub.publish(topics.command("front", Switch.RECORDING), b"off")
            sub.wait_payload(state, "OFF", after=mark)
        assert env.cameras().cameras["front"].enabled is False
        assert "ghost" not in env.cameras().cameras
        text = caplog.text
        assert text.count("ignored a malformed command") == 4
        assert text.count("ignored a retained command") == 1
        assert "unknown camera 'ghost'" in text
        assert "front: recording OFF by MQTT command" in text
        # The bad ones changed nothing: one setting change, by the good command.
        changes = [e for e in _entries(env.audit) if e.action is AuditTag.SETTING_CHANGE]
        assert [(e.actor.id, e.reason) for e in changes] == [("mqtt", "camera front: disabled")]
    finally:
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)


# faults found in testing


def test_two_nodes_do_not_knock_each_other_off_the_broker(env: Env, system_broker: Broker) -> None:
    """Two bridges of one deployment (same topic prefix) on two nodes: each has its own
    default client id, so neither takes the other's connection over (MQTT 3.1.1 section
    3.1.4: a second CONNECT with the same client id disconnects the first)."""
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    sub = Subscriber(system_broker, [topics.available]).start()
    try:
        a = env.make(system_broker, prefix, node="web-a")
        b = env.make(system_broker, prefix, node="web-b")
        _wait(lambda: a.connected and b.connected, "both bridges connected")
        # Each bridge announces "online" once it is connected; the announcements can reach the
        # subscriber after ``connected`` is already true, so wait for both before counting.
        _wait(
            lambda: [m.text for m in sub.messages].count("online") >= 2,
            "both bridges announced online",
        )
        mark = len(sub.messages)
        deadline = time.monotonic() + 4.0  # the flapping was every second
        while time.monotonic() < deadline:
            assert a.connected, "node a was knocked off the broker"
            assert b.connected, "node b was knocked off the broker"
            time.sleep(0.05)
        assert [m.text for m in sub.messages[mark:]] == []  # no will ("offline") fired
    finally:
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)


def test_clearing_a_retained_command_is_not_logged_as_malformed(
    env: Env, system_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """``mosquitto_pub -r -n`` (what the retained-command warning asks for) reaches the bridge
    as an empty payload: a deletion (MQTT 3.1.1 section 3.3.1.3), logged at debug only."""
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    command = topics.command("front", Switch.RECORDING)
    state = topics.state("front", Switch.RECORDING)
    sub = Subscriber(system_broker, _filters(prefix)).start()
    try:
        sub.publish(command, b"OFF", retain=True)
        with caplog.at_level(logging.DEBUG, logger="homewarden.services.mqtt_bridge"):
            env.make(system_broker, prefix, commands=True)
            sub.wait_payload(state, "ON")
            sub.publish(command, b"", retain=True)  # the user clears it
            mark = len(sub.messages)
            sub.publish(command, b"OFF")  # handled after the clearing
            sub.wait_payload(state, "OFF", after=mark)
        records = [r for r in caplog.records if r.name == "homewarden.services.mqtt_bridge"]
        assert [r.getMessage() for r in records if "malformed" in r.getMessage()] == []
        assert sum("ignored a retained command" in r.getMessage() for r in records) == 1
        cleared = [r for r in records if "empty payload" in r.getMessage()]
        assert len(cleared) == 1
        assert cleared[0].levelno == logging.DEBUG
    finally:
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)


def test_a_command_on_an_unknown_command_topic_is_logged_once(
    env: Env, system_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)
    state = topics.state("front", Switch.RECORDING)
    nonsense = f"{prefix}/front/nonsense/set"
    sub = Subscriber(system_broker, _filters(prefix)).start()
    try:
        with caplog.at_level(logging.INFO, logger="homewarden.services.mqtt_bridge"):
            env.make(system_broker, prefix, commands=True)
            sub.wait_payload(state, "ON")
            for _ in range(3):
                sub.publish(nonsense, b"ON")
            mark = len(sub.messages)
            sub.publish(topics.command("front", Switch.RECORDING), b"OFF")
            sub.wait_payload(state, "OFF", after=mark)
        named = [r for r in caplog.records if nonsense in r.getMessage()]
        assert len(named) == 1, [r.getMessage() for r in named]
        assert named[0].levelno == logging.INFO
        assert "not a command topic" in named[0].getMessage()
    finally:
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_only_a_web_node_runs_the_mqtt_bridge(
    tmp_path: Path, database_url: str, system_broker: Broker
) -> None:
    """Recorder nodes write events to the shared index; the web node publishes them (one
    event cursor, one connection per deployment)."""
    prefix = unique_prefix()
    topics = Topics(prefix, DISCOVERY)

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        mqtt={**system_broker.bridge_login(), "topic_prefix": prefix},
    )
    sub = Subscriber(system_broker, [topics.available]).start()
    recorder = Runtime(settings, role="recorder", node="rec-a")
    web = Runtime(settings, role="web", node="web-a")
    try:
        recorder.start()
        assert recorder._mqtt is None
        web.start()
        assert web._mqtt is not None
        sub.wait_payload(topics.available, "online")
    finally:
        recorder.stop()
        web.stop()
        sub.stop()
        clear_retained(system_broker, _filters(prefix), None)
