"""The paho adapter against real Mosquitto brokers: the last will on an abrupt death (a
process killed with SIGKILL), the final message at a clean stop (and no will then), QoS 0
dropped and QoS 1 queued while disconnected, and a refused login logged once and retried."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from homewarden.notify.mqtt import Message, MqttClient
from tests.services.mqtt_broker import (
    BRIDGE_PASSWORD,
    BRIDGE_USER,
    Broker,
    PrivateBroker,
    Subscriber,
    clear_retained,
    private_broker,
    system_broker,
    unique_prefix,
)

__all__ = ["private_broker", "system_broker"]  # fixtures used here

_CHILD = """
import sys, time
from homewarden.notify.mqtt import Message, MqttClient
host, port, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = MqttClient(host, port, client_id=topic.replace("/", "-"),
               will=Message(topic, "offline", qos=1, retain=True))
c.start()
assert c.wait_connected(10)
c.publish(Message(topic, "online", qos=1, retain=True))
print("ready", flush=True)
time.sleep(120)
"""


def test_last_will_is_published_when_the_process_dies(system_broker: Broker) -> None:
    prefix = unique_prefix()
    topic = f"{prefix}/available"
    sub = Subscriber(system_broker, [f"{prefix}/#"]).start()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, system_broker.host, str(system_broker.port), topic],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        first = sub.wait_payload(topic, "online")
        child.kill()  # no DISCONNECT: the broker sends the will
        child.wait(10)
        sub.wait_payload(topic, "offline", after=first)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
        sub.stop()
        clear_retained(system_broker, [f"{prefix}/#"], None)


def test_clean_stop_sends_the_final_message_and_no_will(system_broker: Broker) -> None:
    prefix = unique_prefix()
    topic = f"{prefix}/available"
    sub = Subscriber(system_broker, [f"{prefix}/#"]).start()
    client = MqttClient(
        system_broker.host,
        system_broker.port,
        client_id=prefix,
        will=Message(topic, "died", qos=1, retain=True),
    )
    client.start()
    try:
        assert client.wait_connected(10)
        assert client.publish(Message(topic, "online", qos=0, retain=True))
        sub.wait_payload(topic, "online")
        client.stop(Message(topic, "bye", qos=1, retain=True))
        assert not client.connected
        sub.wait_payload(topic, "bye")
        time.sleep(1.0)
        assert [m.text for m in sub.on(topic)] == ["online", "bye"]
        client.stop()  # a second stop does nothing
    finally:
        client.stop()
        sub.stop()
        clear_retained(system_broker, [f"{prefix}/#"], None)


def test_qos0_is_dropped_and_qos1_queued_while_the_broker_is_away(
    private_broker: Callable[[str, str], PrivateBroker],
) -> None:
    prefix = unique_prefix()
    server = private_broker(prefix, "homeassistant")
    broker = server.broker
    client = MqttClient(
        broker.host,
        broker.port,
        client_id=prefix,
        username=BRIDGE_USER,
        password=BRIDGE_PASSWORD,
        reconnect_min=1,
        reconnect_max=1,
    )
    client.start()
    try:
        assert client.wait_connected(10)
        server.kill()
        deadline = time.monotonic() + 10
        while client.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.connected
        assert client.publish(Message(f"{prefix}/state", "lost", qos=0, retain=True)) is False
        # Retained, so the subscriber gets it whether it subscribes before or after the
        # client's reconnect.
        assert client.publish(Message(f"{prefix}/queued", "yes", qos=1, retain=True)) is True
        server.start()
        sub = Subscriber(broker, [f"{prefix}/#"], broker.ha_login()).start()
        try:
            assert client.wait_connected(10)
            sub.wait_payload(f"{prefix}/queued", "yes")
            assert not sub.on(f"{prefix}/state")  # the QoS 0 one never left
        finally:
            sub.stop()
    finally:
        client.stop()


def test_refused_login_is_logged_once_and_retried(
    private_broker: Callable[[str, str], PrivateBroker], caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique_prefix()
    broker = private_broker(prefix, "homeassistant").broker
    wrong = MqttClient(
        broker.host,
        broker.port,
        client_id=prefix,
        username=BRIDGE_USER,
        password="not-the-password",
        reconnect_min=1,
        reconnect_max=1,
    )
    with caplog.at_level(logging.WARNING, logger="homewarden.notify.mqtt"):
        wrong.start()
        try:
            time.sleep(3.5)  # three attempts or more at a 1 s back-off
            assert not wrong.connected
        finally:
            wrong.stop()
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, caplog.text
    assert "not authori" in refused[0].getMessage().lower()
    assert "not-the-password" not in caplog.text
    right = MqttClient(
        broker.host,
        broker.port,
        client_id=prefix + "-ok",
        username=BRIDGE_USER,
        password=BRIDGE_PASSWORD,
    )
    right.start()
    try:
        assert right.wait_connected(10)
    finally:
        right.stop()
