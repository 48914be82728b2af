"""HomeWarden's state and events on an MQTT broker, with Home Assistant discovery, and
commands from it (issue 7).

Topics (``P`` is ``mqtt.topic_prefix``, default ``homewarden``; ``D`` is
``mqtt.discovery_prefix``, default ``homeassistant``; "retained": the broker keeps the last
message and hands it to each new subscriber):

- ``P/available`` (retained): ``online`` while the bridge runs; ``offline`` at a clean stop,
  and as the last will (MQTT 3.1.1 section 3.1.2.5) when the connection dies.
- ``P/<camera>/motion`` (retained): ``ON`` while the camera has an open event, else ``OFF``.
- ``P/events``: ``{"type": "new"/"update"/"end", "before": {...}, "after": {...}}``, as
  Frigate publishes on ``frigate/events`` (Frigate docs, "MQTT"); see :func:`event_json`.
- ``P/<camera>/snapshot`` (retained): the JPEG of the camera's latest event, only with
  ``mqtt.snapshots``.
- ``P/<camera>/recording/state``, ``P/<camera>/motion_detection/state`` (retained):
  ``ON``/``OFF``: the camera is enabled (recorded); its motion sensing is on.
- ``P/<camera>/recording/set``, ``P/<camera>/motion_detection/set``: commands ``ON``/``OFF``,
  honoured only with ``mqtt.commands``.
- ``D/<component>/<node>/<camera>_<entity>/config`` (retained): Home Assistant discovery.

Events come from the index: the recorders may run in worker processes, so the index is the
one place every event is seen. New events are read by the shared
:class:`~homewarden.services.event_follow.EventFollower` (cursor ``mqtt`` in the database; at
the first run it starts at the newest event: the broker hears what happens from then on);
open events are then watched (one query of the open events per poll) until they change or
end, which gives the ``update`` and ``end`` messages and the motion states.
Event messages carry facts and *links* (``/events/ID``, ``/api/events/ID/clip.mp4``,
``/api/events/ID/snapshot.jpg``; absolute under ``api.public_url``), never footage bytes:
following the links needs an account, and each use is in the audit log.

Snapshots are footage. A broker is a third party to the household (often another machine,
often shared with every device of the home), its retained messages go to anyone allowed to
subscribe, and nothing of HomeWarden's access control or audit log follows them there. So
they are published only when the owner opts in (``mqtt.snapshots = true``), and even then
accounted for: at start the bridge writes a ``setting:value:change`` entry per household
saying that its cameras' snapshots go to the broker, and every snapshot image it sends is a
``footage:snapshot:view`` entry of that event (actor ``system:mqtt``), written before the
image leaves (no entry, no image), so the owner's access log shows each one. With snapshots
off, the bridge clears the retained snapshot topics of its cameras (a retained message
with an empty payload deletes it, MQTT 3.1.1 section 3.3.1.3), taking back what an earlier
run left on the broker.

Sealed snapshots (``storage.sealed``): the event snapshot is sealed to the household key
(``<event>.jpg.hwseal``) and the bridge holds no key, so it cannot open the file. The owner's
opt-in still stands, so the image is taken from memory instead: the recorder offers the JPEG
it seals to the process's :class:`~homewarden.services.snapshot_tap.SnapshotTap`, and the
bridge sends that (audited as above; kept in the bridge's memory to be sent again after a
reconnect). This works only where recorder and bridge share a process: the role ``all`` with
recorder threads. A snapshot recorded by a recorder worker process (``recorder.processes >
1``) or a recorder node (``--role recorder``, the bridge on the web node) is not in this
process's memory and is not sent; the bridge logs that once (then at debug level).

Commands are off unless the owner opts in (``mqtt.commands = true``): anyone who may publish
on the broker could otherwise stop recording. With them off the command topics are not even
subscribed. A command goes through :class:`~homewarden.services.cameras.CameraAdmin` like a
change in the app (stored, audited as ``setting:value:change`` by actor ``system:mqtt``,
applied to the recorders by ``Runtime.apply_cameras``). A retained command handed over at
subscription time is ignored: the broker would hand it over again at every reconnect and
undo the owner's later changes (the retain flag is set on delivery only then, MQTT 3.1.1
section 3.3.1.3). So are malformed payloads and unknown cameras, each with a log line. An
empty payload is a retained message being cleared (``mosquitto_pub -r -n``, as that log line
asks; 3.3.1.3), ignored at debug level; a message on an unknown ``P/<camera>/<x>/set`` topic
is logged once per topic at info.

One bridge per deployment: it follows the deployment's events once, so ``homewarden run``
starts it on the roles ``all`` and ``web`` only (recorder nodes write their events to the
shared index, and the web node publishes them). Its default client id names the node
(:func:`default_client_id`), so two processes never take each other's connection over.

Home Assistant discovery (docs "MQTT Discovery"): per camera a ``binary_sensor`` (device
class ``motion``), a ``camera`` (the snapshot topic; only with snapshots) and two ``switch``
entities (only with commands), each with ``availability_topic``, a ``device`` block and a
``unique_id`` stable across restarts (``<node>_<camera>_<entity>``, ``node`` being the topic
prefix with other characters than ``[A-Za-z0-9_-]`` replaced by ``_``). An entity that is
switched off, or whose camera is removed, gets an empty retained config, which deletes it.

Reconnects: paho retries with back-off (:class:`~homewarden.notify.mqtt.MqttClient`); after
each connect the bridge publishes availability, discovery and every current state again and
subscribes again, so a broker that restarted without persistence loses nothing retained.
State is published with QoS 0 and only while connected (it is republished at the next
connect anyway, so an old value queued during an outage can never overtake the fresh one);
event messages with QoS 1, queued during an outage and delivered after it.

Threads: one bridge thread polls the index every ``interval`` seconds, handles commands and
connects (paho's thread only queues them), and is the only one that publishes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from homewarden import __version__
from homewarden.config import (
    CameraSettings,
    MqttSettings,
    Settings,
    SettingsSource,
    settings_reader,
)
from homewarden.domain.audit import MAX_REASON, Actor, ActorKind, AuditTag
from homewarden.domain.permissions import Principal, PrincipalKind, Role
from homewarden.errors import ConfigError, HomeWardenError, InvalidRequestError, NotFoundError
from homewarden.notify.mqtt import Message, MqttClient
from homewarden.services.audit import AuditLog
from homewarden.services.cameras import CameraAdmin
from homewarden.services.event_follow import EventFollower
from homewarden.services.sealed_footage import SEALED_SUFFIX
from homewarden.services.snapshot_tap import PROCESS_TAP, SnapshotTap
from homewarden.store.index import MAX_PAGE, Index
from homewarden.store.records import EventRecord
from homewarden.store.webhook_store import EventCursors

log = logging.getLogger(__name__)

#: Seconds between polls of the index.
POLL_INTERVAL = 1.0
#: Seconds :meth:`MqttBridge.stop` waits for the bridge thread.
STOP_TIMEOUT = 30.0
#: The actor of commands and snapshot publications.
MQTT_ACTOR = Actor(ActorKind.SYSTEM, "mqtt")
ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
#: Largest snapshot published (bytes); larger files are logged and skipped.
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024
#: Longest command payload read (bytes): ``ON``/``OFF`` with some whitespace.
MAX_COMMAND_BYTES = 32
#: The bridge's cursor in the shared ``event_cursors`` table.
CURSOR_NAME = "mqtt"
#: Distinct unknown command topics logged (each once); later ones are logged at debug.
MAX_UNKNOWN_TOPICS_LOGGED = 64
_NODE_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class ChangeKind(StrEnum):
    """What became of an event: first seen, changed while open, ended (Frigate's ``new``,
    ``update`` and ``end``)."""

    NEW = "new"
    UPDATE = "update"
    END = "end"


@dataclass(frozen=True, slots=True)
class EventChange:
    """One change of an event: ``before`` as last reported (None for NEW), ``after`` now. An
    event first seen already ended gives a NEW and then an END of the same record."""

    kind: ChangeKind
    before: EventRecord | None
    after: EventRecord


def latest_event_id(index: Index) -> int:
    """The largest event id in ``index`` (0 when there is none): from the newest event by
    start time forward by id (a start refined back in time can order events differently
    from their ids).

    Raises:
        DatabaseError: the index does not answer.
    """
    newest, _ = index.events(limit=1)
    last = newest[0].id if newest else 0
    while page := index.events_after(last, MAX_PAGE):
        last = page[-1].id
    return last


class OpenEvents:
    """The open events, watched until they end: turns the new events of a poll and the
    index's open events into :class:`EventChange` lists.

    Args:
        index: the index (its open events are read once per :meth:`changes`, and each
            watched event that is no longer open once).
    """

    def __init__(self, index: Index) -> None:
        self._index = index
        self._watch: dict[int, EventRecord] = {}

    def load(self) -> None:
        """Watch the events open now (they are not reported as new).

        Raises:
            DatabaseError: the index does not answer.
        """
        self._watch = {e.id: e for e in self._index.open_events()}

    def events(self) -> list[EventRecord]:
        """The events open as last read."""
        return list(self._watch.values())

    def changes(self, fresh: list[EventRecord]) -> list[EventChange]:
        """The changes of a poll: each of ``fresh`` (new events, by id) as NEW (and END when
        it already ended), then each watched event that changed (UPDATE) or ended (END; an
        event deleted while open is reported ended as last read).

        Raises:
            DatabaseError: the index does not answer (nothing of this poll is applied).
        """
        open_now = {e.id: e for e in self._index.open_events()} if self._watch else {}
        ended: dict[int, EventRecord] = {}
        for event_id, last in self._watch.items():
            if event_id not in open_now:
                try:
                    ended[event_id] = self._index.event(event_id)
                except NotFoundError:
                    ended[event_id] = last
        changes: list[EventChange] = []
        seen = set()
        for event in fresh:
            seen.add(event.id)
            changes.append(EventChange(ChangeKind.NEW, None, event))
            if event.end is None:
                self._watch[event.id] = event
            else:
                self._watch.pop(event.id, None)
                changes.append(EventChange(ChangeKind.END, event, event))
        for event_id in sorted(self._watch):
            before = self._watch[event_id]
            if event_id in seen:
                continue
            if event_id in ended:
                del self._watch[event_id]
                changes.append(EventChange(ChangeKind.END, before, ended[event_id]))
            elif open_now[event_id] != before:
                self._watch[event_id] = open_now[event_id]
                changes.append(EventChange(ChangeKind.UPDATE, before, open_now[event_id]))
        return changes


class Switch(StrEnum):
    """A per-camera switch: its topic level and the camera setting it controls."""

    RECORDING = "recording"  # CameraSettings.enabled
    MOTION_DETECTION = "motion_detection"  # CameraSettings.motion.enabled


def switch_state(cam: CameraSettings, switch: Switch) -> bool:
    """Whether ``switch`` is on for ``cam``."""
    return cam.enabled if switch is Switch.RECORDING else cam.motion.enabled


def switch_changes(switch: Switch, on: bool) -> dict[str, Any]:
    """The :meth:`CameraAdmin.put` changes that turn ``switch`` on or off."""
    if switch is Switch.RECORDING:
        return {"enabled": on}
    return {"motion": {"enabled": on}}


def parse_switch_payload(payload: bytes) -> bool:
    """``ON`` -> True, ``OFF`` -> False (any case, surrounding whitespace ignored; Home
    Assistant's switch sends ``payload_on``/``payload_off``, which discovery sets to these).

    Raises:
        InvalidRequestError: anything else.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        raise InvalidRequestError(f"payload of {len(payload)} bytes is not ON or OFF")
    try:
        text = payload.decode("utf-8").strip().upper()
    except UnicodeDecodeError:
        raise InvalidRequestError(f"payload {payload!r} is not UTF-8") from None
    if text not in (ON, OFF):
        raise InvalidRequestError(f"payload {payload!r} is not ON or OFF")
    return text == ON


def node_id(topic_prefix: str) -> str:
    """The discovery node id (and unique-id stem) of a deployment: ``topic_prefix`` with
    characters other than ``[A-Za-z0-9_-]`` (Home Assistant's rule for discovery topic levels)
    replaced by ``_``."""
    return _NODE_CHARS.sub("_", topic_prefix)


def default_client_id(topic_prefix: str, node: str) -> str:
    """``homewarden-<prefix>-<node>`` (each part as :func:`node_id` makes it): the bridge's
    MQTT client id unless ``mqtt.client_id`` is set. The node name is in it because a second
    CONNECT with a client id already connected takes that connection over (MQTT 3.1.1
    section 3.1.4, step 2): two nodes sharing one id would knock each other off the broker
    at every reconnect. A node keeps its id across restarts, so a restarted bridge takes
    its dead predecessor's connection over at once (instead of that one's last will saying
    ``offline`` a keepalive later)."""
    return f"homewarden-{node_id(topic_prefix)}-{node_id(node)}"


@dataclass(frozen=True, slots=True)
class Topics:
    """The bridge's topic names (see the module docstring's table)."""

    prefix: str
    discovery: str

    @property
    def node(self) -> str:
        """See :func:`node_id`."""
        return node_id(self.prefix)

    @property
    def available(self) -> str:
        """``P/available``."""
        return f"{self.prefix}/available"

    @property
    def events(self) -> str:
        """``P/events``."""
        return f"{self.prefix}/events"

    def motion(self, camera: str) -> str:
        """``P/<camera>/motion``."""
        return f"{self.prefix}/{camera}/motion"

    def snapshot(self, camera: str) -> str:
        """``P/<camera>/snapshot``."""
        return f"{self.prefix}/{camera}/snapshot"

    def state(self, camera: str, switch: Switch) -> str:
        """``P/<camera>/<switch>/state``."""
        return f"{self.prefix}/{camera}/{switch}/state"

    def command(self, camera: str, switch: Switch) -> str:
        """``P/<camera>/<switch>/set``."""
        return f"{self.prefix}/{camera}/{switch}/set"

    def command_filters(self) -> list[str]:
        """Subscription filters of every camera's commands: every ``P/<camera>/<x>/set``,
        so a command on an unknown ``<x>`` is heard (and logged) rather than lost."""
        return [f"{self.prefix}/+/+/set"]

    def parse_command(self, topic: str) -> tuple[str, Switch] | None:
        """(camera, switch) of a command topic, or None when ``topic`` is not one."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 3 or parts[2] != "set" or not parts[0]:
            return None
        try:
            return parts[0], Switch(parts[1])
        except ValueError:
            return None

    def config(self, component: str, camera: str, entity: str) -> str:
        """``D/<component>/<node>/<camera>_<entity>/config``."""
        return f"{self.discovery}/{component}/{self.node}/{node_id(camera)}_{entity}/config"


def event_links(event_id: int, base_url: str = "") -> dict[str, str]:
    """Links of an event: its page, clip and snapshot (``base_url`` prefixed, no slash at
    its end). Following them needs an account; they carry no footage."""
    return {
        "event": f"{base_url}/events/{event_id}",
        "clip": f"{base_url}/api/events/{event_id}/clip.mp4",
        "snapshot": f"{base_url}/api/events/{event_id}/snapshot.jpg",
    }


def event_json(event: EventRecord, base_url: str = "") -> dict[str, Any]:
    """An event as the ``before``/``after`` objects of an event message: ``id``, ``camera``,
    ``label``, ``zones``, ``start`` and ``end`` (UTC epoch seconds; ``end`` null while open),
    ``score`` (peak motion score, 0..1), ``has_snapshot`` and ``links``
    (:func:`event_links`). Never footage bytes."""
    return {
        "id": event.id,
        "camera": event.camera,
        "label": event.label,
        "zones": list(event.zones),
        "start": event.start,
        "end": event.end,
        "score": event.peak_score,
        "has_snapshot": event.snapshot_path is not None,
        "links": event_links(event.id, base_url),
    }


def event_message(change: EventChange, base_url: str = "") -> dict[str, Any]:
    """The ``P/events`` message of ``change``: ``{"type", "before", "after"}``; a new event's
    ``before`` is its ``after``, as Frigate sends it."""
    before = change.before if change.before is not None else change.after
    return {
        "type": str(change.kind),
        "before": event_json(before, base_url),
        "after": event_json(change.after, base_url),
    }


def discovery_configs(
    topics: Topics, camera: str, *, snapshots: bool, commands: bool
) -> dict[str, dict[str, Any] | None]:
    """Home Assistant discovery configs of ``camera``: config topic -> payload, or None for
    an entity that must not exist (published empty, which deletes it)."""
    device = {
        "identifiers": [f"{topics.node}_{node_id(camera)}"],
        "name": camera,
        "manufacturer": "HomeWarden",
        "model": "Camera",
        "sw_version": __version__,
    }

    def entity(key: str, name: str, **fields: Any) -> dict[str, Any]:
        return {
            "name": name,
            "unique_id": f"{topics.node}_{node_id(camera)}_{key}",
            "availability_topic": topics.available,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": device,
            "origin": {"name": "HomeWarden", "sw_version": __version__},
            **fields,
        }

    configs: dict[str, dict[str, Any] | None] = {
        topics.config("binary_sensor", camera, "motion"): entity(
            "motion",
            "Motion",
            state_topic=topics.motion(camera),
            payload_on=ON,
            payload_off=OFF,
            device_class="motion",
        ),
        topics.config("camera", camera, "snapshot"): (
            entity("snapshot", "Snapshot", topic=topics.snapshot(camera)) if snapshots else None
        ),
    }
    names = {Switch.RECORDING: "Recording", Switch.MOTION_DETECTION: "Motion detection"}
    icons = {Switch.RECORDING: "mdi:record-rec", Switch.MOTION_DETECTION: "mdi:motion-sensor"}
    for switch in Switch:
        configs[topics.config("switch", camera, str(switch))] = (
            entity(
                str(switch),
                names[switch],
                command_topic=topics.command(camera, switch),
                state_topic=topics.state(camera, switch),
                payload_on=ON,
                payload_off=OFF,
                state_on=ON,
                state_off=OFF,
                optimistic=False,
                icon=icons[switch],
            )
            if commands
            else None
        )
    return configs


def _on_off(value: bool) -> str:
    return ON if value else OFF


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass
class _Published:
    """A retained snapshot as last sent for a camera (``data``: the image of a sealed one,
    kept to send it again after a reconnect; None: read from its file again)."""

    event: EventRecord
    sha256: str
    data: bytes | None = None


@dataclass
class _State:
    """What the bridge last published (or would have, while disconnected) per topic."""

    retained: dict[str, str] = field(default_factory=dict)  # topic -> text payload
    cameras: set[str] = field(default_factory=set)  # cameras with discovery published
    snapshots: dict[str, _Published] = field(default_factory=dict)


_CONNECTED = object()
_STOP = object()


class MqttBridge:
    """The bridge (see the module docstring): start it once, stop it once.

    Args:
        settings: the deployment's settings (a :class:`~homewarden.config.SettingsHolder`
            when cameras change at run time); ``mqtt`` is read once, at construction.
        index: the open index (events, snapshots).
        audit: where snapshot publications are accounted for.
        cameras: camera management, for commands (None: commands are refused with a log
            line even when ``mqtt.commands`` is on).
        clock: now as UTC epoch seconds (the event cursor's time; the shared follower
            passes over events that started long before they are seen).
        node: the node's name (``homewarden run --node``; default the host name), part of
            the default client id (:func:`default_client_id`).
        interval: seconds between polls of the index.
        reconnect_min, reconnect_max: seconds between reconnect attempts (doubling).
        snapshot_tap: where sealed snapshots' images are taken from memory (see the module
            docstring); default the process's, which this process's recorders offer to.

    Raises:
        ConfigError: ``mqtt.host`` is not set.
    """

    def __init__(
        self,
        settings: SettingsSource,
        index: Index,
        audit: AuditLog,
        *,
        cameras: CameraAdmin | None = None,
        clock: Callable[[], float] = time.time,
        node: str | None = None,
        interval: float = POLL_INTERVAL,
        reconnect_min: int = 1,
        reconnect_max: int = 30,
        snapshot_tap: SnapshotTap = PROCESS_TAP,
    ) -> None:
        self._read_settings = settings_reader(settings)
        self._tap = snapshot_tap
        self._tap_listening = False
        self._missed_logged = False  # a sealed snapshot not in memory: logged once
        cfg = self._read_settings().mqtt
        if cfg.host is None:
            raise ConfigError("mqtt.host is not set: no broker to bridge to")
        self._cfg: MqttSettings = cfg
        self._index = index
        self._audit = audit
        self._cameras = cameras
        self._clock = clock
        self._interval = interval
        self._topics = Topics(cfg.topic_prefix, cfg.discovery_prefix)
        self._fresh: list[EventRecord] = []
        self._follower = EventFollower(index, CURSOR_NAME, self._fresh.append, clock=clock)
        self._open = OpenEvents(index)
        self._primed = False
        self._unknown_topics: set[str] = set()  # unknown command topics logged once
        self._inbox: queue.Queue[object] = queue.Queue()
        self._state = _State()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = MqttClient(
            cfg.host,
            cfg.port,
            client_id=cfg.client_id
            or default_client_id(cfg.topic_prefix, node or socket.gethostname()),
            username=cfg.username,
            password=cfg.password,
            keepalive=cfg.keepalive,
            will=Message(self._topics.available, OFFLINE, qos=1, retain=True),
            on_connect=lambda: self._inbox.put(_CONNECTED),
            on_message=self._inbox.put,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
        )

    @property
    def topics(self) -> Topics:
        """The bridge's topic names."""
        return self._topics

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._client.connected

    @property
    def _settings(self) -> Settings:
        return self._read_settings()

    def start(self) -> None:
        """Start the bridge thread and connecting (returns at once; a broker that is down is
        retried in the background).

        Raises:
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("MQTT bridge already started")
        cfg = self._cfg
        self._guarded("read the open events", self._prime)
        if cfg.snapshots:
            self._audit_snapshot_start()
            self._tap.listen()
            self._tap_listening = True
            if self._settings.storage.sealed:
                log.info(
                    "mqtt: footage is sealed: event snapshots are sent from the memory of this "
                    "process's recorders (role all, recorder threads); those recorded in "
                    "another process are not sent"
                )
        if not cfg.commands:
            log.info("mqtt: commands are off (mqtt.commands): command topics not subscribed")
        self._thread = threading.Thread(target=self._run, name="mqtt-bridge", daemon=True)
        self._thread.start()
        self._client.start()
        log.info(
            "mqtt: publishing to %s under %s/ (discovery %s/, snapshots %s, commands %s)",
            self._client.broker,
            cfg.topic_prefix,
            cfg.discovery_prefix,
            "on" if cfg.snapshots else "off",
            "on" if cfg.commands else "off",
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop: finish the command in hand, publish the events and motion states read in a
        last poll, then ``offline`` (waiting for the broker to take it), and disconnect
        cleanly. Safe to call more than once."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._stop.set()
        self._inbox.put(_STOP)
        thread.join(timeout)
        if not thread.is_alive():
            self._guarded("last poll", self._poll)
        self._client.stop(Message(self._topics.available, OFFLINE, qos=1, retain=True))
        if self._tap_listening:
            self._tap_listening = False
            self._tap.unlisten()
        log.info("mqtt: stopped; %s is offline", self._topics.available)

    # the bridge thread

    def _run(self) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is _CONNECTED:
                self._guarded("republish after connect", self._sync_all)
            elif isinstance(item, Message):
                self._guarded(f"command on {item.topic!r}", functools.partial(self._command, item))
            if time.monotonic() >= next_poll:
                self._guarded("poll", self._poll)
                next_poll = time.monotonic() + self._interval

    @staticmethod
    def _guarded(what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except HomeWardenError as exc:
            log.error("mqtt: %s: %s", what, exc)
        except Exception:
            log.exception("mqtt: %s: unexpected error", what)

    def _prime(self) -> None:
        """At the first run, start the cursor at the newest event; watch the open events."""
        if self._primed:
            return
        cursors = EventCursors(self._index)
        if cursors.get(CURSOR_NAME) is None:
            cursors.set(CURSOR_NAME, latest_event_id(self._index), self._clock())
        self._open.load()
        self._primed = True

    # publishing

    def _retain(self, topic: str, payload: str, *, force: bool = False) -> None:
        """Publish retained ``payload`` on ``topic`` when it differs from the last one (or
        ``force``); it is remembered either way, for the next connect."""
        if not force and self._state.retained.get(topic) == payload:
            return
        self._state.retained[topic] = payload
        self._client.publish(Message(topic, payload, qos=0, retain=True))

    def _base_url(self) -> str:
        return self._settings.api.public_url or ""

    def _sync_all(self) -> None:
        """After a connect: availability, subscriptions, discovery, every state (forced)."""
        cfg = self._cfg
        self._client.publish(Message(self._topics.available, ONLINE, qos=1, retain=True))
        if cfg.commands:
            self._client.subscribe(self._topics.command_filters())
        self._sync_cameras(force=True)
        for camera, published in list(self._state.snapshots.items()):
            self._send_snapshot(camera, published.event, resend=True)
        log.info("mqtt: published availability, discovery and states to %s", self._client.broker)

    def _sync_cameras(self, *, force: bool = False) -> None:
        """Discovery and retained states of every configured camera (only new cameras and
        changed states, unless ``force``); a camera gone from the settings (even while the
        broker was away) is removed from the broker."""
        cfg = self._cfg
        settings = self._settings
        motion = {e.camera for e in self._open.events()}
        for camera, cam in sorted(settings.cameras.items()):
            if force or camera not in self._state.cameras:
                for topic, config in discovery_configs(
                    self._topics, camera, snapshots=cfg.snapshots, commands=cfg.commands
                ).items():
                    self._retain(topic, "" if config is None else _json(config), force=True)
                if not cfg.snapshots:
                    self._retain(self._topics.snapshot(camera), "", force=True)
                self._state.cameras.add(camera)
            self._retain(self._topics.motion(camera), _on_off(camera in motion), force=force)
            for switch in Switch:
                self._retain(
                    self._topics.state(camera, switch),
                    _on_off(switch_state(cam, switch)),
                    force=force,
                )
        for camera in sorted(self._state.cameras - set(settings.cameras)):
            self._remove_camera(camera)

    def _remove_camera(self, camera: str) -> None:
        for topic in discovery_configs(self._topics, camera, snapshots=True, commands=True):
            self._retain(topic, "", force=True)
        topics = [self._topics.motion(camera), self._topics.snapshot(camera)]
        topics += [self._topics.state(camera, s) for s in Switch]
        for topic in topics:
            self._retain(topic, "", force=True)
        self._state.cameras.discard(camera)
        self._state.snapshots.pop(camera, None)
        log.info("mqtt: camera %s is gone: removed its entities from the broker", camera)

    def _poll(self) -> None:
        """Publish the events' changes since the last poll, then the states."""
        self._prime()
        # New events stay in _fresh until their changes are made: a poll that fails half-way
        # (the follower's cursor may have moved) loses none of them.
        self._follower.poll()
        fresh = list({e.id: e for e in self._fresh}.values())
        changes = self._open.changes(fresh)
        self._fresh.clear()
        base = self._base_url()
        for change in changes:
            camera = change.after.camera
            if change.kind is ChangeKind.NEW and camera in self._settings.cameras:
                # ON first, even when the event already ended (it is turned OFF below).
                self._retain(self._topics.motion(camera), ON)
            self._client.publish(
                Message(self._topics.events, _json(event_message(change, base)), qos=1)
            )
            if self._cfg.snapshots and change.after.snapshot_path is not None:
                self._send_snapshot(camera, change.after)
        self._sync_cameras()

    # snapshots

    def _audit_snapshot_start(self) -> None:
        """One ``setting:value:change`` entry per household with cameras: its snapshots go
        to the broker from now on (see the module docstring)."""
        settings = self._settings
        households = sorted({settings.camera_household(c) for c in settings.cameras})
        for household in households or [settings.household]:
            self._audit.append(
                AuditTag.SETTING_CHANGE,
                MQTT_ACTOR,
                f"mqtt: event snapshots are published to the MQTT broker {self._client.broker} "
                f"as {self._topics.prefix}/<camera>/snapshot (mqtt.snapshots = true)"[:MAX_REASON],
                household=household,
            )

    def _snapshot_path(self, event: EventRecord) -> Path | None:
        settings = self._settings
        if event.snapshot_path is None:
            return None
        root = settings.snapshot_dir.resolve()
        path = Path(event.snapshot_path)
        path = (path if path.is_absolute() else root / path).resolve()
        # The index is ours, but a path must still not lead outside the snapshot dir.
        return path if path.is_relative_to(root) else None

    def _send_snapshot(self, camera: str, event: EventRecord, *, resend: bool = False) -> None:
        """Publish ``event``'s snapshot as the camera's retained snapshot when its image is
        not the one last sent (``resend``: send it again as it is), after its audit entry."""
        if camera not in self._settings.cameras:
            return
        path = self._snapshot_path(event)
        if path is None:
            log.warning("mqtt: event %d: snapshot path outside the snapshot dir", event.id)
            return
        last = self._state.snapshots.get(camera)
        sealed = path.name.endswith(SEALED_SUFFIX)
        if sealed:  # storage.sealed: no key here; the recorder's image from memory
            found = self._sealed_snapshot(camera, event, last)
            if found is None:
                return
            data = found
        else:
            try:
                if path.stat().st_size > MAX_SNAPSHOT_BYTES:
                    log.warning(
                        "mqtt: event %d: snapshot larger than %d bytes, not sent",
                        event.id,
                        MAX_SNAPSHOT_BYTES,
                    )
                    return
                data = path.read_bytes()
            except OSError as exc:  # deleted by retention, or not written yet
                log.info("mqtt: event %d: snapshot unreadable: %s", event.id, exc)
                return
        digest = hashlib.sha256(data).hexdigest()
        same = last is not None and last.event.id == event.id and last.sha256 == digest
        if same and not resend:
            return
        if not same:
            self._audit.append(  # raises: then nothing is sent
                AuditTag.FOOTAGE_SNAPSHOT_VIEW,
                MQTT_ACTOR,
                f"published to the MQTT broker {self._client.broker} as "
                f"{self._topics.snapshot(camera)} (mqtt.snapshots = true)"[:MAX_REASON],
                camera=camera,
                start=event.start,
                end=event.end if event.end is not None else event.start,
                event=event.id,
                household=self._settings.camera_household(camera),
            )
        self._state.snapshots[camera] = _Published(event, digest, data if sealed else None)
        self._client.publish(Message(self._topics.snapshot(camera), data, qos=0, retain=True))

    def _sealed_snapshot(
        self, camera: str, event: EventRecord, last: _Published | None
    ) -> bytes | None:
        """The JPEG of ``event``'s sealed snapshot from memory: as the recorder offered it
        to the tap, else as this bridge last sent it; None (logged once, then at debug) when
        neither has it: recorded in another process (see the module docstring)."""
        assert event.snapshot_path is not None
        data = self._tap.take(camera, event.id, event.snapshot_path)
        if data is None and last is not None and last.event.id == event.id:
            return last.data
        if data is None:
            if self._missed_logged:
                level = logging.DEBUG
            else:
                level = logging.WARNING
                self._missed_logged = True
            log.log(
                level,
                "mqtt: event %d: its snapshot is sealed and its image is not in this process's "
                "memory (recorded by a recorder worker process or node): not sent; sealed "
                "snapshots reach the broker only when the recorder runs in the bridge's "
                "process (role all, recorder threads)",
                event.id,
            )
            return None
        if len(data) > MAX_SNAPSHOT_BYTES:
            log.warning(
                "mqtt: event %d: snapshot larger than %d bytes, not sent",
                event.id,
                MAX_SNAPSHOT_BYTES,
            )
            return None
        return data

    # commands

    def _command(self, message: Message) -> None:
        """Apply one command message (see the module docstring); never raises for a bad one."""
        parsed = self._topics.parse_command(message.topic)
        if parsed is None:  # once per topic: a client repeating it cannot flood the log
            seen = message.topic in self._unknown_topics
            if not seen and len(self._unknown_topics) < MAX_UNKNOWN_TOPICS_LOGGED:
                self._unknown_topics.add(message.topic)
                log.info("mqtt: ignored a message on %r: not a command topic", message.topic)
            else:
                log.debug("mqtt: ignored a message on %r: not a command topic", message.topic)
            return
        camera, switch = parsed
        if not message.data:
            # A retained message being deleted (MQTT 3.1.1 section 3.3.1.3), e.g. the owner
            # clearing a stale command with `mosquitto_pub -r -n` as the warning below asks.
            log.debug("mqtt: ignored an empty payload on %r (retained one cleared)", message.topic)
            return
        if message.retain:
            log.warning(
                "mqtt: ignored a retained command on %r (clear it: a retained command would "
                "undo later changes at every reconnect)",
                message.topic,
            )
            return
        if not self._cfg.commands:
            log.warning("mqtt: ignored a command on %r: mqtt.commands is off", message.topic)
            return
        try:
            on = parse_switch_payload(message.data)
        except InvalidRequestError as exc:
            log.warning("mqtt: ignored a malformed command on %r: %s", message.topic, exc)
            return
        settings = self._settings
        if camera not in settings.cameras:
            log.warning("mqtt: ignored a command on %r: unknown camera %r", message.topic, camera)
            return
        if self._cameras is None:
            log.warning("mqtt: ignored a command on %r: no camera administration", message.topic)
            return
        household = settings.camera_household(camera)
        # The owner's authority, exercised by the broker's clients the owner let in by
        # turning mqtt.commands on; the audit entry names the MQTT actor.
        owner = Principal(PrincipalKind.LOCAL_OPERATOR, role=Role.OWNER, household=household)
        try:
            self._cameras.put(owner, camera, switch_changes(switch, on), MQTT_ACTOR)
        except HomeWardenError as exc:
            log.warning("mqtt: command on %r failed: %s", message.topic, exc)
        else:
            log.info("mqtt: camera %s: %s %s by MQTT command", camera, switch, _on_off(on))
        cam = self._settings.cameras.get(camera)
        if cam is not None:  # the real state, forced: a switch showing a refused command
            self._retain(
                self._topics.state(camera, switch), _on_off(switch_state(cam, switch)), force=True
            )
