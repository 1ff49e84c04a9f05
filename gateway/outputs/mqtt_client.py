"""paho-mqtt driven by the asyncio event loop (no paho thread), with a lean publish path.

paho's external-loop hooks register the socket with the event loop: reads call ``loop_read``,
writes ``loop_write`` while paho has data queued, and a timer calls ``loop_misc`` for keep-alives.
The blocking TCP connect and TLS handshake run in a worker thread; the socket callbacks they
trigger are handed back to the loop thread.

paho stays in charge of the session (CONNECT with the will, CONNACK, SUBSCRIBE, incoming
messages, keep-alive, DISCONNECT). Outgoing PUBLISH packets take a shorter road, because paho's
own publish path costs about 60 µs per QoS 1 message (a message object with a condition
variable, properties and reason-code objects per acknowledgement, one ``send`` and three
``recv`` system calls per message):

* :meth:`AsyncMqttClient.publish_encoded` appends the PUBLISH frame to one buffer; the buffer
  goes to paho's outgoing queue as one entry once per event-loop turn, so a batch of values is
  one ``send``.
* Received bytes are read 64 KiB at a time; PUBACK frames at the head of the buffer are handled
  here (the ``on_ack`` callback gets the packet id and reason code), everything else is passed
  to paho unchanged.

Packet ids come from one counter shared with paho, skipping ids still awaiting acknowledgement.
"""

from __future__ import annotations

__all__ = [
    "AsyncMqttClient",
    "ConnectInfo",
    "MessageHandler",
    "MqttSettings",
    "ReceivedMessage",
    "RequestHandler",
    "TlsSettings",
    "encode_topic",
]

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import NotConnectedError

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]
"""Called on the event loop with each received message's topic and payload."""

_PUBLISH = 0x30
_PUBACK = 0x40
_FLUSH_AT = 256 * 1024
_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A received message with the MQTT 5 request/response properties (None under 3.1.1)."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None


RequestHandler = Callable[[ReceivedMessage], None]


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    verify: bool = True
    """Verify the broker's certificate chain and host name."""


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
    will_qos: int = 1
    tls: TlsSettings | None = None
    clean_start: bool = True
    session_expiry: int = 0
    """MQTT 5 session expiry interval in seconds (0: the session ends with the connection)."""


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What the broker said in its CONNACK."""

    session_present: bool = False
    receive_maximum: int = 65535
    """MQTT 5: QoS 1 messages the broker accepts unacknowledged (65535 when not limited)."""


def encode_topic(topic: str) -> bytes:
    """A topic as it goes into a PUBLISH frame (2-byte length + UTF-8); ValueError if invalid."""
    data = topic.encode("utf-8")
    if not data or len(data) > 65535:
        raise ValueError(f"topic {topic!r}: length must be 1..65535 bytes")
    if b"+" in data or b"#" in data or b"\x00" in data:
        raise ValueError(f"topic {topic!r}: wildcards and NUL are not allowed in a topic")
    return len(data).to_bytes(2, "big") + data


class _Client(mqtt.Client):
    """paho's client with buffered reads, PUBACKs handled by the owner, shared packet ids."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rbuf = b""
        self.rpos = 0
        self.on_ack: Callable[[int, int], None] | None = None
        self.in_use: Container[int] = ()
        self.next_mid = 0

    def _mid_generate(self) -> int:
        mid = self.next_mid
        in_use = self.in_use
        while True:
            mid = mid + 1 if mid < 65535 else 1
            if mid not in in_use:
                self.next_mid = mid
                return mid

    def _sock_recv(self, bufsize: int) -> bytes:
        if self.rpos >= len(self.rbuf):
            data = super()._sock_recv(_READ_SIZE)
            if len(data) <= bufsize:
                return data
            self.rbuf, self.rpos = data, 0
        start = self.rpos
        self.rpos = min(start + bufsize, len(self.rbuf))
        return self.rbuf[start : self.rpos]

    @property
    def buffered(self) -> bool:
        return self.rpos < len(self.rbuf)

    def drain_acks(self) -> None:
        """Handle the PUBACK frames at the head of the read buffer (only between packets)."""
        if self._in_packet["command"] != 0:
            return
        buf, pos, end = self.rbuf, self.rpos, len(self.rbuf)
        on_ack = self.on_ack
        start = pos
        while pos + 4 <= end and buf[pos] == _PUBACK:
            length = buf[pos + 1]
            if length > 127 or pos + 2 + length > end:
                break
            if on_ack is not None:
                on_ack((buf[pos + 2] << 8) | buf[pos + 3], buf[pos + 4] if length > 2 else 0)
            pos += 2 + length
        if pos != start:
            self.rpos = pos
            self._last_bytes_received = mqtt.time_func()

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd == "PUBACK" and len(packet) >= 2:
            if self.on_ack is not None:
                self.on_ack((packet[0] << 8) | packet[1], packet[2] if len(packet) > 2 else 0)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        result: MQTTErrorCode = super()._handle_pubackcomp(cmd)
        return result


class AsyncMqttClient:
    """A paho client whose network I/O runs on the asyncio loop.

    ``on_ack(mid, reason_code)`` is called for every PUBACK of a message published with
    :meth:`publish_encoded` or :meth:`publish` (reason codes >= 0x80 mean the broker refused
    it); ``on_connection_lost(reason)`` once when an established connection ends without
    :meth:`close`.
    """

    def __init__(
        self,
        settings: MqttSettings,
        name: str,
        on_message: MessageHandler | None = None,
        *,
        on_request: RequestHandler | None = None,
        on_ack: Callable[[int, int], None] | None = None,
        on_connection_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._on_message_handler = on_message
        self._on_request = on_request
        self._on_ack = on_ack
        self._on_lost = on_connection_lost
        self._subscriptions: list[tuple[str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._client: _Client | None = None
        self._connected: asyncio.Future[ConnectInfo] | None = None
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        self._wbuf = bytearray()
        self._flush_handle: asyncio.Handle | None = None
        self._v5 = settings.mqtt_version == "5"
        self.in_use: Container[int] = ()
        """Packet ids the owner still waits acknowledgements for (never handed out again)."""
        self.is_connected = False
        self.disconnect_reason = ""
        self.info = ConnectInfo()
        self._closing = False

    # --- connection -----------------------------------------------------------------------------

    async def connect(self) -> ConnectInfo:
        """Open the connection and wait for the broker's CONNACK (with a timeout)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closing = False
        self._wbuf = bytearray()
        s = self.settings
        protocol = mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=protocol,
            clean_session=None if self._v5 else s.clean_start,
        )
        client.on_ack = self._on_ack
        client.in_use = self.in_use
        if log.isEnabledFor(logging.DEBUG):
            client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.will_topic is not None:
            client.will_set(s.will_topic, s.will_payload, qos=s.will_qos, retain=s.will_retain)
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
        where = f"{s.host}:{s.port}"
        try:
            if s.tls is not None:
                context = await self._loop.run_in_executor(None, _tls_context, s.tls)
                client.tls_set_context(context)
                if not s.tls.verify:
                    client.tls_insecure_set(True)
            if self._v5:
                properties = None
                if s.session_expiry:
                    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                    properties.SessionExpiryInterval = s.session_expiry
                client.connect_async(
                    s.host, s.port, s.keepalive, clean_start=s.clean_start, properties=properties
                )
            else:
                client.connect_async(s.host, s.port, s.keepalive)
            await asyncio.wait_for(
                self._loop.run_in_executor(None, client.reconnect), s.connect_timeout
            )
            self.info = await asyncio.wait_for(asyncio.shield(self._connected), s.connect_timeout)
        except ssl.SSLCertVerificationError as exc:
            await self.close()
            raise NotConnectedError(
                f"{self.name}: TLS with MQTT broker {where} failed: certificate verify failed: "
                f"{exc.verify_message or exc.reason} (is tls.ca_file the CA of the broker's "
                "certificate, and is the host name in it?)"
            ) from exc
        except ssl.SSLError as exc:
            await self.close()
            raise NotConnectedError(
                f"{self.name}: TLS with MQTT broker {where} failed: {exc.reason or exc}"
            ) from exc
        except (OSError, TimeoutError, ValueError, mqtt.WebsocketConnectionError) as exc:
            await self.close()
            raise NotConnectedError(
                f"{self.name}: cannot connect to MQTT broker {where}: {exc or 'timed out'}"
            ) from exc
        except NotConnectedError:
            await self.close()
            raise
        self._misc = asyncio.create_task(self._misc_loop(), name=f"{self.name}-mqtt-misc")
        return self.info

    async def close(self) -> None:
        """Send what is buffered, DISCONNECT, and drop the socket. Never raises."""
        self._closing = True
        client = self._client
        if client is not None and self.is_connected:
            with contextlib.suppress(Exception):
                self._flush()
                client.disconnect()
                client.loop_write()
        self._client = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
            self._misc = None
        if client is not None:
            with contextlib.suppress(Exception):
                client._sock_close()
        self._drop_socket()
        self.is_connected = False
        self._wbuf = bytearray()

    # --- publishing -----------------------------------------------------------------------------

    def publish_encoded(
        self, topic: bytes, payload: bytes, qos: int = 0, retain: bool = False
    ) -> int:
        """Queue one PUBLISH (`topic` from :func:`encode_topic`); returns the packet id (0 for
        QoS 0). Never blocks. Raises NotConnectedError when not connected."""
        client = self._client
        if client is None or not self.is_connected:
            raise NotConnectedError(f"{self.name}: not connected ({self.disconnect_reason})")
        out = self._wbuf
        length = len(topic) + len(payload) + self._v5
        if qos:
            mid = client._mid_generate()
            length += 2
            out.append(_PUBLISH | 2 | retain)
        else:
            mid = 0
            out.append(_PUBLISH | retain)
        while length > 127:
            out.append((length & 127) | 128)
            length >>= 7
        out.append(length)
        out += topic
        if qos:
            out.append(mid >> 8)
            out.append(mid & 255)
        if self._v5:
            out.append(0)
        out += payload
        if len(out) >= _FLUSH_AT:
            self._flush()
        elif self._flush_handle is None:
            assert self._loop is not None
            self._flush_handle = self._loop.call_soon(self._flush)
        return mid

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Like :meth:`publish_encoded` with a plain topic and optional MQTT 5 properties."""
        if properties is None or not self._v5:
            return self.publish_encoded(encode_topic(topic), payload, qos, retain)
        packed: bytes = properties.pack()  # type: ignore[no-untyped-call]
        client = self._client
        if client is None or not self.is_connected:
            raise NotConnectedError(f"{self.name}: not connected ({self.disconnect_reason})")
        self._flush()
        mid = client._mid_generate() if qos else 0
        body = bytearray(encode_topic(topic))
        if qos:
            body += mid.to_bytes(2, "big")
        body += packed
        body += payload
        frame = bytearray([_PUBLISH | (qos << 1) | retain])
        length = len(body)
        while length > 127:
            frame.append((length & 127) | 128)
            length >>= 7
        frame.append(length)
        self._wbuf = frame + body
        self._flush()
        return mid

    def _flush(self) -> None:
        self._flush_handle = None
        client = self._client
        if not self._wbuf or client is None:
            return
        data, self._wbuf = bytes(self._wbuf), bytearray()
        client._out_packet.append(
            {
                "command": _PUBLISH,
                "mid": 0,
                "qos": 1,
                "pos": 0,
                "to_process": len(data),
                "packet": data,
                "info": None,
            }
        )
        client.loop_write()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now and again after every reconnect (received messages go to on_message)."""
        self._subscriptions.append((topic, qos))
        if self._client is not None and self.is_connected:
            self._client.subscribe(topic, qos)

    @property
    def write_backlog(self) -> int:
        """Bytes queued and not yet written to the socket."""
        client = self._client
        pending = len(self._wbuf)
        if client is not None:
            for packet in client._out_packet:
                pending += packet["to_process"]
        return pending

    @property
    def backlog(self) -> int:
        """Bytes not yet written to the socket (compatibility name of :attr:`write_backlog`)."""
        return self.write_backlog

    async def flush(self, within: float) -> bool:
        """Wait until everything queued is written to the socket; False on timeout/disconnect."""
        self._flush()
        deadline = asyncio.get_running_loop().time() + within
        while self.write_backlog and self.is_connected:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.005)
        return self.write_backlog == 0

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
        self._loop.add_reader(sock, self._on_readable)

    def _on_readable(self) -> None:
        client = self._client
        if client is None:
            return
        while True:
            client.drain_acks()
            if client._sock is None:
                return
            rc = client.loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS or client._sock is None or self._client is None:
                return
            if not client.buffered:
                pending = getattr(client._sock, "pending", None)
                if pending is None or not pending():
                    return

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
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: ReasonCode, props: Any
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
            client.subscribe(topic, qos)
        receive_maximum = 65535
        if props is not None and hasattr(props, "ReceiveMaximum"):
            receive_maximum = int(props.ReceiveMaximum)
        info = ConnectInfo(bool(getattr(flags, "session_present", False)), receive_maximum)
        if future is not None and not future.done():
            future.set_result(info)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        was_connected = self.is_connected
        self.is_connected = False
        self.disconnect_reason = f"disconnected: {reason}"
        future = self._connected
        if future is not None and not future.done():
            future.set_exception(NotConnectedError(f"{self.name}: {self.disconnect_reason}"))
        if self._closing:
            return
        log.warning("%s: MQTT %s", self.name, self.disconnect_reason)
        if was_connected and self._on_lost is not None:
            self._on_lost(self.disconnect_reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_request is not None:
            props = message.properties
            response = getattr(props, "ResponseTopic", None) if props is not None else None
            correlation = getattr(props, "CorrelationData", None) if props is not None else None
            self._on_request(
                ReceivedMessage(
                    message.topic,
                    bytes(message.payload),
                    response if response else None,
                    bytes(correlation) if correlation is not None else None,
                )
            )
        elif self._on_message_handler is not None:
            self._on_message_handler(message.topic, bytes(message.payload))

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            client = self._client
            if client is not None:
                client.loop_misc()


def _tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Build the TLS context (reads the certificate files: runs in a worker thread)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file, tls.key_password)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
