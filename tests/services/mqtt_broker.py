"""Real Mosquitto brokers for MQTT tests, and a real subscriber.

- ``system_broker``: the machine's Mosquitto at ``127.0.0.1:1883`` (or
  ``$HOMEWARDEN_TEST_MQTT`` as ``host:port``), shared by every test: each test uses its own
  topic prefix (:func:`unique_prefix`) and its retained messages are cleared afterwards.
- ``private_broker``: factory of Mosquitto processes (``/usr/sbin/mosquitto``) on a free
  loopback port, with authorization on: no anonymous clients, a password file (made with
  ``mosquitto_passwd``) and an ACL per user (the bridge may read and write its prefix and the
  discovery prefix; Home Assistant may read them and write only command topics); no
  persistence, so a restart loses every retained message. ``kill()`` ends it with SIGKILL,
  ``start()`` starts it again on the same port.
- :class:`Subscriber`: a paho client that records every message it gets, re-subscribing
  after each reconnect.

A broker that cannot be had skips the test with the reason, and fails it under ``CI=true``.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.fixtures_mail import free_port
from tests.fixtures_media import unavailable

MOSQUITTO = Path("/usr/sbin/mosquitto")
BRIDGE_USER, BRIDGE_PASSWORD = "warden", "bridge-" + secrets.token_hex(8)
HA_USER, HA_PASSWORD = "ha", "ha-" + secrets.token_hex(8)


@dataclass(frozen=True)
class Broker:
    """Where a broker listens and, with authorization on, who may connect."""

    host: str
    port: int
    auth: bool = False

    def bridge_login(self) -> dict[str, Any]:
        """``mqtt`` settings fields for the bridge's connection."""
        fields: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.auth:
            fields |= {"username": BRIDGE_USER, "password": BRIDGE_PASSWORD}
        return fields

    def ha_login(self) -> tuple[str, str] | None:
        """Home Assistant's user name and password, or None without authorization."""
        return (HA_USER, HA_PASSWORD) if self.auth else None


def unique_prefix(name: str = "hwtest") -> str:
    """A topic prefix no other test uses."""
    return f"{name}-{secrets.token_hex(4)}"


def _reachable(host: str, port: int, timeout: float = 2.0) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc)


@dataclass
class Received:
    """One message a :class:`Subscriber` got."""

    topic: str
    payload: bytes
    retain: bool
    at: float

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


@dataclass
class Subscriber:
    """A real MQTT client recording every message of ``filters`` (see the module docstring)."""

    broker: Broker
    filters: list[str]
    login: tuple[str, str] | None = None
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique_prefix("sub"))
        if self.login is not None:
            self._client.username_pw_set(*self.login)
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self._subscribed.set()

    def start(self, timeout: float = 10.0) -> Subscriber:
        self._client.connect_async(self.broker.host, self.broker.port, 30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise AssertionError(f"subscriber did not subscribe within {timeout} s")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(
                Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
            )
            self._cond.notify_all()

    def wait_for(
        self, check: Callable[[Received], bool], what: str, timeout: float = 20.0, after: int = 0
    ) -> int:
        """Index of the first message from ``after`` on for which ``check`` holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self.messages)):
                    if check(self.messages[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self.messages]
                    raise AssertionError(f"not within {timeout:.0f} s: {what}; got {seen}")
                self._cond.wait(left)

    def wait_payload(self, topic: str, payload: str, timeout: float = 20.0, after: int = 0) -> int:
        return self.wait_for(
            lambda m: m.topic == topic and m.payload == payload.encode(),
            f"{payload!r} on {topic}",
            timeout,
            after,
        )

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]


def clear_retained(broker: Broker, filters: list[str], login: tuple[str, str] | None) -> None:
    """Delete every retained message under ``filters`` (an empty retained publish)."""
    sub = Subscriber(broker, filters, login).start()
    time.sleep(0.5)  # retained messages arrive at once after the subscription
    topics = {m.topic for m in sub.messages if m.retain and m.payload}
    for topic in topics:
        sub.publish(topic, b"", retain=True)
    sub.stop()


@pytest.fixture
def system_broker() -> Broker:
    """The machine's Mosquitto (see the module docstring)."""
    configured = os.environ.get("HOMEWARDEN_TEST_MQTT", "127.0.0.1:1883")
    host, _, port = configured.rpartition(":")
    broker = Broker(host, int(port))
    problem = _reachable(broker.host, broker.port)
    if problem is not None:
        unavailable(f"Mosquitto at {configured} unreachable ({problem})")
    return broker


class PrivateBroker:
    """One Mosquitto process with authorization on (see the module docstring)."""

    def __init__(self, directory: Path, prefix: str, discovery: str) -> None:
        self.directory = directory
        self.broker = Broker("127.0.0.1", free_port(), auth=True)
        self._proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        passwords = directory / "passwords"
        for i, (user, password) in enumerate(
            ((BRIDGE_USER, BRIDGE_PASSWORD), (HA_USER, HA_PASSWORD))
        ):
            args = ["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else [])
            subprocess.run([*args, str(passwords), user, password], check=True)
        (directory / "acl").write_text(
            f"user {BRIDGE_USER}\n"
            f"topic readwrite {prefix}/#\n"
            f"topic readwrite {discovery}/#\n"
            f"user {HA_USER}\n"
            f"topic read {prefix}/#\n"
            f"topic read {discovery}/#\n"
            f"topic write {prefix}/+/+/set\n"
        )
        (directory / "mosquitto.conf").write_text(
            f"listener {self.broker.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {directory / 'acl'}\n"
            "persistence false\n"
            f"user {getpass.getuser()}\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def start(self, timeout: float = 10.0) -> PrivateBroker:
        log = (self.directory / "mosquitto.log").open("ab")
        self._proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.directory / "mosquitto.conf")],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while _reachable(self.broker.host, self.broker.port, 0.5) is not None:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                text = (self.directory / "mosquitto.log").read_text(errors="replace")
                raise AssertionError(f"mosquitto did not start: {text[-2000:]}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """End the broker at once (SIGKILL): no clean goodbye to any client."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)
            self._proc = None

    def close(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self._proc = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Callable[[str, str], PrivateBroker]]:
    """Factory ``private_broker(prefix, discovery) -> PrivateBroker`` (started); each is
    stopped when the test ends."""
    if not MOSQUITTO.is_file() or shutil.which("mosquitto_passwd") is None:
        unavailable(f"{MOSQUITTO} or mosquitto_passwd missing (Debian package mosquitto)")
    started: list[PrivateBroker] = []

    def make(prefix: str, discovery: str) -> PrivateBroker:
        broker = PrivateBroker(tmp_path / f"mosquitto-{len(started)}", prefix, discovery)
        started.append(broker)
        return broker.start()

    try:
        yield make
    finally:
        for broker in started:
            broker.close()
