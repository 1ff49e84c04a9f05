"""paho-mqtt driven by the asyncio event loop (no paho thread).

paho's external-loop hooks register the socket with the event loop: reads call ``loop_read``,
writes ``loop_write`` while paho has data queued, and a timer calls ``loop_misc`` for keep-alives.
The blocking TCP connect runs in a worker thread; the socket callbacks it triggers are handed back
to the loop thread.
"""

from __future__ import annotations

__all__ = ["AsyncMqttClient", "MessageHandler", "MqttSettings"]

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import NotConnectedError

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
"""Called on the event loop with each received message's topic and payload."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    mqtt_version: str = "5"
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    connect_timeout: float = 10.0
    will_topic: str | None = None
    will_payload: bytes = b""
    will_retain: bool = True
    max_inflight: int = 1000


class AsyncMqttClient:
    """A paho client whose network I/O runs on the asyncio loop."""

    def __init__(
        self, settings: MqttSettings, name: str, on_message: MessageHandler | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self._on_message_handler = on_message
        self._subscriptions: list[tuple[str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._client: mqtt.Client | None = None
        self._connected: asyncio.Future[None] | None = None
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        self.is_connected = False
        self.disconnect_reason = ""
        self._closing = False

    async def connect(self) -> None:
        """Open the connection and wait for the broker's CONNACK (with a timeout)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closing = False
        s = self.settings
        protocol = mqtt.MQTTv5 if s.mqtt_version == "5" else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=protocol,
            clean_session=None if protocol == mqtt.MQTTv5 else True,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.will_topic is not None:
            client.will_set(s.will_topic, s.will_payload, qos=1, retain=s.will_retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._threadsafe(self._on_socket_open)
        client.on_socket_close = self._threadsafe(self._on_socket_close)
        client.on_socket_register_write = self._threadsafe(self._on_register_write)
        client.on_socket_unregister_write = self._threadsafe(self._on_unregister_write)
        client.connect_timeout = s.connect_timeout
        self._client = client
        self._connected = self._loop.create_future()
        if protocol == mqtt.MQTTv5:
            client.connect_async(s.host, s.port, s.keepalive, clean_start=True)
        else:
            client.connect_async(s.host, s.port, s.keepalive)
        try:
            await asyncio.wait_for(
                self._loop.run_in_executor(None, client.reconnect), s.connect_timeout
            )
            await asyncio.wait_for(asyncio.shield(self._connected), s.connect_timeout)
        except (OSError, TimeoutError, mqtt.WebsocketConnectionError) as exc:
            await self.close()
            raise NotConnectedError(
                f"{self.name}: cannot connect to MQTT broker {s.host}:{s.port}: "
                f"{exc or 'timed out'}"
            ) from exc
        self._misc = asyncio.create_task(self._misc_loop(), name=f"{self.name}-mqtt-misc")

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue one message (non-blocking). Raises NotConnectedError when not connected."""
        client = self._client
        if client is None or not self.is_connected:
            raise NotConnectedError(f"{self.name}: not connected ({self.disconnect_reason})")
        info = client.publish(topic, payload, qos, retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise NotConnectedError(f"{self.name}: publish failed: {mqtt.error_string(info.rc)}")

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now and again after every reconnect (received messages go to on_message)."""
        self._subscriptions.append((topic, qos))
        if self._client is not None and self.is_connected:
            self._client.subscribe(topic, qos)

    @property
    def backlog(self) -> int:
        """Messages paho still holds (unsent packets plus QoS 1 awaiting PUBACK)."""
        client = self._client
        if client is None:
            return 0
        return len(client._out_packet) + len(client._out_messages)

    async def flush(self, within: float) -> bool:
        """Wait until paho's queues are empty; False on timeout or disconnect."""
        deadline = asyncio.get_running_loop().time() + within
        while self.backlog and self.is_connected:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return self.backlog == 0

    async def close(self) -> None:
        self._closing = True
        client, self._client = self._client, None
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
            self._misc = None
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_write()
            self._drop_socket()
        self.is_connected = False

    # --- paho callbacks ---------------------------------------------------------------------------

    def _threadsafe(self, callback: Any) -> Any:
        def wrapper(client: mqtt.Client, userdata: Any, sock: Any) -> None:
            loop = self._loop
            if loop is None:
                return
            if threading.get_ident() == self._loop_thread:
                callback(client, userdata, sock)
            else:
                loop.call_soon_threadsafe(callback, client, userdata, sock)

        return wrapper

    def _on_socket_open(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if self._loop is None or client is not self._client:
            return
        self._sock = sock
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._loop.add_reader(sock, client.loop_read)

    def _on_socket_close(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None

    def _on_register_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if self._loop is not None and sock is self._sock:
            self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, _client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

    def _drop_socket(self) -> None:
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock)
                self._loop.remove_writer(self._sock)
        self._sock = None

    def _on_connect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        future = self._connected
        if reason.is_failure:
            self.disconnect_reason = f"broker refused the connection: {reason}"
            if future is not None and not future.done():
                future.set_exception(NotConnectedError(f"{self.name}: {self.disconnect_reason}"))
            return
        self.is_connected = True
        self.disconnect_reason = ""
        for topic, qos in self._subscriptions:
            _client.subscribe(topic, qos)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self.is_connected = False
        self.disconnect_reason = f"disconnected: {reason}"
        if not self._closing:
            log.warning("%s: MQTT %s", self.name, self.disconnect_reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message_handler is not None:
            self._on_message_handler(message.topic, bytes(message.payload))

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            client = self._client
            if client is not None:
                client.loop_misc()
