"""A small MQTT client over paho-mqtt 2.x: connect with a last will, reconnect by itself,
publish, subscribe. The bridge (:mod:`homewarden.services.mqtt_bridge`) decides what to say.

Protocol: MQTT 3.1.1 (OASIS standard, 2014), which Mosquitto and Home Assistant speak.

- The last will (section 3.1.2.5) is registered with the broker at CONNECT; the broker
  publishes it when the connection ends without a DISCONNECT packet (a crash, a lost
  network). A clean :meth:`MqttClient.stop` sends DISCONNECT, so the broker drops the will:
  ``stop`` publishes its ``final`` message itself first and waits for the broker's PUBACK.
- Sessions are clean (``clean_session``, 3.1.2.4): the broker keeps nothing of ours across
  connections, so subscriptions are made again after every connect. ``on_connect`` is called
  after each successful CONNACK for that (and to publish state again: a broker restarted
  without persistence has lost its retained messages).
- Reconnecting: paho's network thread (``loop_start``) retries the first connection and every
  lost one with a delay doubling from ``reconnect_min`` to ``reconnect_max`` seconds
  (``reconnect_delay_set``).
- QoS (4.3): QoS 1 messages published while disconnected are queued by paho (at most
  ``max_queued``) and sent after the reconnect; QoS 0 messages are dropped then
  (:meth:`MqttClient.publish` returns False). State that is published again on every connect
  uses QoS 0, so an old queued value can never arrive after the fresh one.

Secrets: the password goes to paho only; nothing here logs it. Nothing here raises for a
broker that is down or refuses us: it is logged (once per distinct reason) and retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

#: Seconds between reconnect attempts: the first delay, doubled up to the second.
RECONNECT_MIN = 1
RECONNECT_MAX = 30
#: QoS 1 messages paho keeps for sending while the broker is away.
MAX_QUEUED = 1000
#: Seconds :meth:`MqttClient.stop` waits for the broker to acknowledge the final message.
STOP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message: ``topic`` (UTF-8, no wildcards), ``payload`` bytes (or text, sent as
    UTF-8), ``qos`` 0 or 1, and ``retain`` (the broker keeps the last retained message of a
    topic and hands it to each new subscriber; an empty retained payload deletes it, 3.3.1.3)."""

    topic: str
    payload: bytes | str = b""
    qos: int = 0
    retain: bool = False

    @property
    def data(self) -> bytes:
        """The payload as bytes."""
        return self.payload.encode("utf-8") if isinstance(self.payload, str) else self.payload


class MqttClient:
    """One connection to a broker, kept up by paho's network thread (see the module docstring).

    Args:
        host, port: the broker.
        client_id: the MQTT client identifier (3.1.3.1); a second client with the same id
            takes the connection over (3.1.4), so it must be unique per process.
        username, password: credentials (3.1.3.4-5), or None.
        keepalive: seconds between the client's pings (3.1.2.10).
        will: the last will, or None.
        on_connect: called (on paho's thread; keep it short) after each successful connect.
        on_message: called (on paho's thread; keep it short) with each message received on a
            subscription.
        reconnect_min, reconnect_max: reconnect delays in seconds.
        max_queued: QoS 1 messages kept while disconnected.
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        will: Message | None = None,
        on_connect: Callable[[], None] | None = None,
        on_message: Callable[[Message], None] | None = None,
        reconnect_min: int = RECONNECT_MIN,
        reconnect_max: int = RECONNECT_MAX,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._host = host
        self._port = port
        self._keepalive = keepalive
        self._on_connect = on_connect
        self._on_message = on_message
        self._connected = threading.Event()
        self._started = False
        self._problem: str | None = None  # the last connection problem logged
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will.topic, will.data, will.qos, will.retain)
        client.reconnect_delay_set(reconnect_min, reconnect_max)
        client.max_queued_messages_set(max_queued)
        client.on_connect = self._connected_cb
        client.on_connect_fail = self._connect_failed_cb
        client.on_disconnect = self._disconnected_cb
        client.on_message = self._message_cb
        self._client = client

    @property
    def broker(self) -> str:
        """``host:port`` of the broker (for log lines and audit reasons)."""
        return f"{self._host}:{self._port}"

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and it has not been lost since."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or ``timeout`` seconds; True when connected."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Start connecting in the background (paho's network thread); returns at once.

        Raises:
            RuntimeError: already started.
        """
        if self._started:
            raise RuntimeError("MQTT client already started")
        self._started = True
        self._client.connect_async(self._host, self._port, self._keepalive)
        self._client.loop_start()

    def publish(self, message: Message) -> bool:
        """Send ``message``; True when it was handed to the connection (QoS 0) or to paho's
        queue (QoS 1, sent after a reconnect), False when it was dropped (QoS 0 while
        disconnected, or the QoS 1 queue is full)."""
        if message.qos == 0 and not self.connected:
            return False
        info = self._client.publish(message.topic, message.data, message.qos, message.retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return True
        return message.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN

    def subscribe(self, topics: list[str], qos: int = 1) -> bool:
        """Subscribe to ``topics`` (filters; ``+`` and ``#`` wildcards, 4.7.1); True when the
        request was sent. Subscriptions last for the connection only (clean sessions)."""
        if not topics or not self.connected:
            return False
        result, _ = self._client.subscribe([(t, qos) for t in topics])
        return result == MQTTErrorCode.MQTT_ERR_SUCCESS

    def stop(self, final: Message | None = None, timeout: float = STOP_TIMEOUT) -> None:
        """Publish ``final`` (when connected) and wait up to ``timeout`` s for the broker to
        take it, then disconnect cleanly and end the network thread. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        if final is not None and self.connected:
            info = self._client.publish(final.topic, final.data, max(final.qos, 1), final.retain)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT broker %s: the last message was not sent: %s", self.broker, exc)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # paho callbacks (on paho's network thread)

    def _report(self, problem: str) -> None:
        if problem != self._problem:  # once per distinct reason, not per retry
            self._problem = problem
            log.warning("MQTT broker %s: %s; retrying", self.broker, problem)

    def _connected_cb(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.ConnectFlags,
        reason: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason.is_failure:
            self._report(f"connection refused: {reason}")
            return
        self._problem = None
        self._connected.set()
        log.info("connected to the MQTT broker %s", self.broker)
        if self._on_connect is not None:
            try:
                self._on_connect()
            except Exception:
                log.exception("MQTT on_connect handler failed")

    def _connect_failed_cb(self, _client: paho.Client, _userdata: Any) -> None:
        self._report("cannot connect")

    def _disconnected_cb(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.DisconnectFlags,
        reason: ReasonCode,
        _properties: Any,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and self._started:
            self._report(f"connection lost ({reason})")

    def _message_cb(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
        except Exception:
            log.exception("MQTT message handler failed on %s", msg.topic)
