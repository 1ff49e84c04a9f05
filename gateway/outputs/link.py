"""One MQTT connection with store-and-forward: live messages first, buffered ones replayed behind.

The link owns the client of the current connection, a store-and-forward buffer
(:mod:`gateway.outputs.buffer`) and the bookkeeping that makes "nothing lost" hold:

* A live message is published at once when the link is *ready* (connected, and the payload
  mode has done its births), the in-flight window has room and nothing older is waiting.
  Otherwise it waits in a short in-memory queue, which spills its oldest messages into the
  buffer when it holds more than :data:`WAITING_BYTES`. While not ready, messages go straight
  to the buffer.
* Every QoS 1 message stays in the in-flight table until its PUBACK. When the connection is
  lost, the live ones among them and the waiting queue go to the buffer, oldest first.
* After a reconnect, buffered messages are replayed in order in chunks; a chunk is committed
  (removed from the buffer) only once all its messages are acknowledged. Live messages take
  the window first; the replay uses what is left.
* Messages that go to the buffer from the live path pass through the payload mode's
  ``historical`` hook (UNS: ``"historical": true``, never retained; Sparkplug: every metric
  ``is_historical``). Every data payload passes through the mode's ``prepare`` hook just before
  it is published (Sparkplug: its ``seq``, so that numbers follow the order on the wire).

The window is ``max_inflight``, capped by the broker's MQTT 5 receive maximum.
"""

from __future__ import annotations

__all__ = ["WAITING_BYTES", "Link", "LinkHooks"]

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from paho.mqtt.properties import Properties

from gateway.errors import NotConnectedError
from gateway.outputs.buffer import Chunk, MessageBuffer, Position, Record
from gateway.outputs.metrics import OutputMetrics
from gateway.outputs.mqtt_client import AsyncMqttClient, MqttSettings, ReceivedMessage

log = logging.getLogger(__name__)

WAITING_BYTES = 8 << 20
"""Bytes of live messages held in memory for the window before the oldest spill to the buffer."""
_WRITE_BACKLOG = 4 << 20
"""Bytes queued for the socket beyond which live QoS 0 messages wait too."""
_CHUNK = 500
_READ_AHEAD = 4
_ALARM_CHECK_S = 1.0


class LinkHooks(Protocol):
    """What the payload mode (UNS JSON, Sparkplug B) tells the link."""

    async def settings(self) -> MqttSettings:
        """Connection settings for the next connect (the will may change per connection)."""

    async def on_connected(self, link: Link) -> None:
        """Subscribe and publish births; call :meth:`Link.set_ready` when data may flow."""

    def on_message(self, link: Link, message: ReceivedMessage) -> None:
        """A message on one of the mode's subscriptions."""

    def historical(self, record: Record) -> Record:
        """The form of a live message that will be replayed later."""

    @property
    def prepare(self) -> Callable[[bytes], bytes] | None:
        """Applied to every data payload as it is published (live or replayed): Sparkplug adds its
        ``seq`` there. None when payloads go out as they are."""


@dataclass
class _Replay:
    chunk: Chunk
    sent: int = 0
    outstanding: int = 0

    @property
    def done(self) -> bool:
        return self.sent == len(self.chunk.records) and self.outstanding == 0


_DIRECT = _Replay(Chunk([], 0, Position(0)))
"""The origin of messages published outside the data flow (births, status, replies)."""


@dataclass
class Link:
    """The connection of one MQTT output. See the module docstring for the rules."""

    name: str
    hooks: LinkHooks
    buffer: MessageBuffer
    metrics: OutputMetrics
    max_inflight: int = 2000
    alarm_percent: float = 80.0
    client: AsyncMqttClient | None = None
    ready: bool = False
    window: int = 0
    inflight: dict[int, tuple[Record, _Replay | None]] = field(default_factory=dict)
    waiting: deque[Record] = field(default_factory=deque)
    waiting_bytes: int = 0
    rejected: int = 0
    replayed: int = 0
    _replays: deque[_Replay] = field(default_factory=deque)
    _lost: asyncio.Event = field(default_factory=asyncio.Event)
    _lost_reason: str = ""
    _wake_replay: asyncio.Event = field(default_factory=asyncio.Event)
    _replay_task: asyncio.Task[None] | None = None
    _alarm_on: bool = False
    _closing: bool = False
    _reported_drops: int = 0

    # --- the connection (supervised: runs until the connection is lost) ---------------------------

    async def run(self) -> None:
        """Connect, do the births, replay, and return (raise) only when the connection is lost.

        Raises :class:`NotConnectedError`; the supervisor calls it again with backoff.
        Cancelling it leaves an established connection to :meth:`close`.
        """
        self._lost.clear()
        self._lost_reason = ""
        client = AsyncMqttClient(
            await self.hooks.settings(),
            self.name,
            on_request=self._on_request,
            on_ack=self._on_ack,
            on_connection_lost=self._on_lost,
        )
        client.in_use = self.inflight
        failed = True
        try:
            info = await client.connect()
            self.client = client
            self.window = max(1, min(self.max_inflight, info.receive_maximum))
            await self.hooks.on_connected(self)
            self._replay_task = asyncio.create_task(self._replay(), name=f"{self.name}-replay")
            alarm = asyncio.create_task(self._watch_buffer(), name=f"{self.name}-buffer-alarm")
            try:
                await self._lost.wait()
            finally:
                alarm.cancel()
            raise NotConnectedError(f"{self.name}: {self._lost_reason or 'connection lost'}")
        except asyncio.CancelledError:
            # an established connection is left to close() (it says goodbye); a half-open one
            # is dropped here
            failed = self.client is not client
            raise
        finally:
            if failed:
                await self._teardown(client)

    def set_ready(self) -> None:
        """Let data flow (after the births). Sends what waited and wakes the replay."""
        if self.client is None or not self.client.is_connected:
            return
        self.ready = True
        self._pump()
        self._wake_replay.set()

    def set_unready(self) -> None:
        """Stop data (a Sparkplug rebirth in progress, or the primary host went offline)."""
        self.ready = False

    def drop_connection(self, reason: str) -> None:
        """End the current connection on purpose (the supervisor reconnects)."""
        self._on_lost(reason)

    async def _teardown(self, client: AsyncMqttClient) -> None:
        self._harvest()
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        await client.close()
        if self.client is client:
            self.client = None

    # --- publishing -------------------------------------------------------------------------------

    def send(
        self, topic: bytes, payload: bytes, qos: int, retain: bool = False, plain: bool = False
    ) -> None:
        """Publish a live message now, or keep it (window full, not ready, not connected).

        `plain` messages skip the mode's ``prepare`` hook (JSON events in Sparkplug mode)."""
        client = self.client
        if not self.ready or client is None:
            self.buffer.append((self.hooks.historical(Record(topic, payload, qos, retain, plain)),))
            return
        if (
            self.waiting
            or (qos and len(self.inflight) >= self.window)
            or (client.write_backlog > _WRITE_BACKLOG)
        ):
            self._wait(Record(topic, payload, qos, retain, plain))
            return
        prepare = self.hooks.prepare
        try:
            mid = client.publish_encoded(
                topic, payload if prepare is None or plain else prepare(payload), qos, retain
            )
        except NotConnectedError:
            self.buffer.append((self.hooks.historical(Record(topic, payload, qos, retain, plain)),))
            return
        if qos:
            self.inflight[mid] = (Record(topic, payload, qos, retain, plain), None)

    def publish_direct(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> bool:
        """Publish outside the data flow (births, status, replies); False when not connected."""
        client = self.client
        if client is None or not client.is_connected:
            return False
        mid = client.publish(topic, payload, qos, retain, properties)
        if qos:  # its packet id stays taken until the PUBACK; it is never buffered
            self.inflight[mid] = (Record(b"", payload, qos), _DIRECT)
        return True

    def subscribe(self, topic: str, qos: int = 1) -> None:
        if self.client is not None:
            self.client.subscribe(topic, qos)

    def _wait(self, record: Record) -> None:
        self.waiting.append(record)
        self.waiting_bytes += record.size
        if self.waiting_bytes > WAITING_BYTES:
            spill = []
            while self.waiting_bytes > WAITING_BYTES // 2 and self.waiting:
                oldest = self.waiting.popleft()
                self.waiting_bytes -= oldest.size
                spill.append(self.hooks.historical(oldest))
            self.buffer.append(spill)
            self._wake_replay.set()

    def _pump(self) -> None:
        """Fill the window: waiting live messages first, then the replay."""
        client = self.client
        if client is None or not self.ready or not client.is_connected:
            return
        inflight, window, waiting = self.inflight, self.window, self.waiting
        publish = client.publish_encoded
        prepare = self.hooks.prepare
        while waiting and len(inflight) < window:
            record = waiting.popleft()
            self.waiting_bytes -= record.size
            payload = record.payload if prepare is None or record.plain else prepare(record.payload)
            mid = publish(record.topic, payload, record.qos, record.retain)
            if record.qos:
                inflight[mid] = (record, None)
        if waiting or self._closing:
            return
        for replay in self._replays:
            records = replay.chunk.records
            while replay.sent < len(records) and len(inflight) < window:
                record = records[replay.sent]
                replay.sent += 1
                payload = record.payload
                if prepare is not None and not record.plain:
                    payload = prepare(payload)
                mid = publish(record.topic, payload, record.qos, False)
                if record.qos:
                    replay.outstanding += 1
                    inflight[mid] = (record, replay)
            if replay.sent < len(records):
                return
        if self._replays and self._replays[0].done:
            self._wake_replay.set()

    # --- client callbacks (on the loop) -----------------------------------------------------------

    def _on_ack(self, mid: int, reason: int) -> None:
        entry = self.inflight.pop(mid, None)
        if entry is None:
            return
        record, replay = entry
        if reason >= 0x80:
            self.rejected += 1
            self.metrics.rejected.labels(self.name).inc()
            if self.rejected == 1 or self.rejected % 1000 == 0:
                log.warning(
                    "%s: broker refused a message on %s (reason code 0x%02x); %d refused so far",
                    self.name,
                    record.topic[2:].decode("utf-8", "replace"),
                    reason,
                    self.rejected,
                )
        if replay is not None:
            replay.outstanding -= 1
        if self.waiting or self._replays:
            self._pump()

    def _on_request(self, message: ReceivedMessage) -> None:
        self.hooks.on_message(self, message)

    def _on_lost(self, reason: str) -> None:
        self.ready = False
        self._harvest()
        self._lost_reason = reason
        self._lost.set()

    def _harvest(self) -> None:
        """Keep what was not acknowledged: live in-flight and waiting messages to the buffer."""
        self.ready = False
        if self.inflight or self.waiting:
            historical = self.hooks.historical
            keep = [historical(record) for record, replay in self.inflight.values() if not replay]
            keep.extend(historical(record) for record in self.waiting)
            self.inflight.clear()
            self.waiting.clear()
            self.waiting_bytes = 0
            if keep:
                self.buffer.append(keep)
        self._replays.clear()
        self.buffer.rewind()

    # --- replay -----------------------------------------------------------------------------------

    async def _replay(self) -> None:
        replays = self._replays
        while True:
            while replays and replays[0].done:
                finished = replays.popleft()
                await self.buffer.commit(finished.chunk)
                self.replayed += len(finished.chunk.records)
                self.metrics.replayed.labels(self.name).inc(len(finished.chunk.records))
            if self.ready and len(replays) < _READ_AHEAD and len(self.buffer):
                chunk = await self.buffer.read(_CHUNK)
                if chunk is not None:
                    if not self.ready:  # lost while reading: the rewind already happened
                        continue
                    replays.append(_Replay(chunk))
                    self._pump()
                    continue
            self._wake_replay.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_replay.wait(), 0.5)

    async def _watch_buffer(self) -> None:
        while True:
            self.check_buffer()
            await asyncio.sleep(_ALARM_CHECK_S)

    def check_buffer(self) -> None:
        """Update the buffer gauges and the alarm (logged when it starts and ends)."""
        buffer = self.buffer
        m = self.metrics
        m.buffer_messages.labels(self.name).set(len(buffer))
        m.buffer_bytes.labels(self.name).set(buffer.bytes)
        if buffer.dropped > self._reported_drops:
            m.buffer_dropped.labels(self.name).inc(buffer.dropped - self._reported_drops)
            self._reported_drops = buffer.dropped
        full = buffer.bytes >= buffer.max_bytes * self.alarm_percent / 100
        if full != self._alarm_on:
            self._alarm_on = full
            m.buffer_alarm.labels(self.name).set(1 if full else 0)
            if full:
                log.error(
                    "%s: ALARM store-and-forward buffer above %.0f %% (%d of %d bytes, %d "
                    "messages); the oldest are dropped when it is full",
                    self.name,
                    self.alarm_percent,
                    buffer.bytes,
                    buffer.max_bytes,
                    len(buffer),
                )
            else:
                log.info("%s: store-and-forward buffer back below its alarm level", self.name)

    # --- shutdown ---------------------------------------------------------------------------------

    async def close(self, within: float, before: Callable[[], None] | None = None) -> None:
        """Publish what can be published within `within` s, keep the rest in the buffer, close.

        `before` runs last while still connected (the offline status, NDEATH).
        """
        client = self.client
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        self._closing = True
        if client is not None and client.is_connected:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            while (self.inflight or self.waiting or client.write_backlog) and client.is_connected:
                if loop.time() > deadline:
                    log.warning(
                        "%s: %d messages not acknowledged at shutdown: kept in the buffer",
                        self.name,
                        len(self.inflight) + len(self.waiting),
                    )
                    break
                self._pump()
                await asyncio.sleep(0.01)
            if before is not None and client.is_connected:
                before()
                await client.flush(within=1.0)
        while self._replays and self._replays[0].done:
            await self.buffer.commit(self._replays.popleft().chunk)
        self._harvest()
        if client is not None:
            await client.close()
        self.client = None
        self._closing = False
        self.check_buffer()
