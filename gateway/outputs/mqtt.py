"""The MQTT output: tag values and events on a Unified Namespace (JSON) or as Sparkplug B.

One output is one broker connection (:class:`~gateway.outputs.link.Link`) with a
store-and-forward buffer and one payload mode:

``uns`` (:class:`~gateway.outputs.uns.UnsMode`)
    One JSON message per changed tag under ``<root>/<cell>/edge/<tag>``, events under
    ``<root>/<cell>/mes|quality/...``, the retained gateway status, write commands.
``sparkplug`` (:class:`~gateway.outputs.sparkplug.node.SparkplugMode`)
    Sparkplug B 3.0 births, deaths and DDATA by exception, rebirth, primary host STATE, DCMD.
``batched`` (:class:`~gateway.outputs.batched.BatchedMode`)
    One JSON message per device poll with every changed value, for high rates.

A payload mode is an object with the :class:`~gateway.outputs.link.LinkHooks` methods plus
``write(link, batch)``, ``publish_documents(link, documents)`` and ``before_close(link)``;
further modes plug in the same way. Several MQTT outputs (for example a UNS tree and a second
mode under another topic root) run side by side, each with its own connection and buffer.

The output is a :class:`~gateway.runtime.interfaces.LinkedOutput`: :meth:`connect` opens the
buffer; the gateway supervises :meth:`maintain_link` (connect, births, replay, until the
connection drops) as its own component and keeps calling :meth:`write`, which publishes or
buffers and never raises :class:`~gateway.errors.NotConnectedError`.
"""

from __future__ import annotations

__all__ = ["MqttOutput", "PayloadMode", "event_topic"]

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from gateway.batch import SampleBatch, now_ns
from gateway.config.model import Location
from gateway.config.outputs import MqttOutputConfig
from gateway.documents import Document
from gateway.metrics import Metrics
from gateway.outputs.buffer import DiskBuffer, MemoryBuffer, MessageBuffer
from gateway.outputs.commands import CommandExecutor, TagWriter
from gateway.outputs.link import Link, LinkHooks
from gateway.outputs.metrics import output_metrics
from gateway.outputs.mqtt_client import MqttSettings, TlsSettings
from gateway.outputs.uns import UnsMode, event_topic
from gateway.tags import TagTable

log = logging.getLogger(__name__)

_CLOSE_WITHIN_S = 5.0
_HEARTBEAT_S = 1.0


class PayloadMode(LinkHooks, Protocol):
    """A payload mode: the link hooks plus the data path."""

    def write(self, link: Link, batch: SampleBatch) -> int:
        """Publish (or buffer) a batch of changed values; returns the messages made."""

    def publish_documents(self, link: Link, documents: Sequence[Document]) -> int: ...

    def before_close(self, link: Link) -> None:
        """The last words before a clean disconnect (offline status, NDEATH)."""


class MqttOutput:
    """Publishes changed tag values (report by exception) and business events over MQTT."""

    def __init__(
        self,
        config: MqttOutputConfig,
        table: TagTable,
        *,
        gateway_id: str,
        location_path: str,
        cells: Mapping[str, str],
        metrics: Metrics,
        data_dir: str | Path = "./data",
        write_tag: TagWriter | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.table = table
        self._metrics = metrics
        om = output_metrics(metrics)
        self.selected = table.select(config.tags)
        sf = config.store_and_forward
        self.state_dir = Path(sf.directory or Path(data_dir) / f"buffer-{config.name}")
        self.buffer: MessageBuffer
        if sf.disk:
            self.buffer = DiskBuffer(
                self.state_dir, sf.max_bytes, fsync_interval=sf.fsync_interval, name=config.name
            )
        else:
            self.buffer = MemoryBuffer(sf.max_bytes, name=config.name)
        tls = None
        if config.tls is not None:
            t = config.tls
            tls = TlsSettings(
                t.ca_file,
                t.cert_file,
                t.key_file,
                t.key_password.get_secret_value() if t.key_password else None,
                t.verify,
            )
        settings = MqttSettings(
            host=config.host,
            port=config.broker_port,
            client_id=config.client_id or f"{gateway_id}-{config.name}",
            mqtt_version=config.mqtt_version,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            keepalive=config.keepalive,
            connect_timeout=config.connect_timeout,
            tls=tls,
            clean_start=config.clean_start,
            session_expiry=config.session_expiry,
        )
        self.commands = CommandExecutor(
            table, write_tag, config.commands, output=config.name, metrics=om
        )
        self.mode: PayloadMode
        if config.payload == "batched":
            from gateway.outputs.batched import BatchedMode

            self.mode = BatchedMode(
                config, table, location_path=location_path, cells=cells, base_settings=settings
            )
        elif config.payload == "sparkplug":
            from gateway.outputs.sparkplug.node import SparkplugMode

            self.mode = SparkplugMode(
                config,
                table,
                gateway_id=gateway_id,
                location=_location(location_path),
                cells=cells,
                base_settings=settings,
                commands=self.commands,
                selected=self.selected,
                state_dir=self.state_dir,
            )
        else:
            self.mode = UnsMode(
                config,
                table,
                gateway_id=gateway_id,
                location_path=location_path,
                cells=cells,
                base_settings=settings,
                commands=self.commands,
                track_last=bool((table.max_age_ns[self.selected] > 0).any()),
            )
        self.link = Link(
            config.name,
            self.mode,
            self.buffer,
            om,
            max_inflight=config.max_inflight,
            alarm_percent=sf.alarm_percent,
        )
        self._published = metrics.values_published.labels(config.name)
        self._messages = metrics.messages_published.labels(config.name)
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def status_topic(self) -> str:
        return self.mode.status_topic if isinstance(self.mode, UnsMode) else ""

    @property
    def root(self) -> str:
        return self.mode.root if isinstance(self.mode, UnsMode) else ""

    async def connect(self) -> None:
        """Open the store-and-forward buffer (the broker connection is :meth:`maintain_link`)."""
        async with self._open_lock:  # the queue runner and the link may both start here
            if self._opened:
                return
            await self.buffer.open()
            self._opened = True
            if isinstance(self.mode, UnsMode) and self.mode.last is not None:
                self._heartbeat = asyncio.create_task(
                    self._republish_stale(self.mode), name=f"{self.name}-max-age"
                )

    async def maintain_link(self) -> None:
        """Connect and serve until the connection is lost (raises NotConnectedError)."""
        if not self._opened:
            await self.connect()
        await self.link.run()

    async def write(self, batch: SampleBatch) -> None:
        messages = self.mode.write(self.link, batch)
        self._published.inc(len(batch))
        self._messages.inc(messages)

    async def publish_documents(self, documents: Sequence[Document]) -> None:
        self._messages.inc(self.mode.publish_documents(self.link, documents))

    async def close(self) -> None:
        """Publish what can be published, keep the rest in the buffer, say goodbye, close."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self.commands.close()
        await self.link.close(_CLOSE_WITHIN_S, before=lambda: self.mode.before_close(self.link))
        if self._opened:
            await self.buffer.close()
            self._opened = False

    async def _republish_stale(self, mode: UnsMode) -> None:
        """Republish values not published for their tag's ``max_age`` (subscriptions that
        report nothing while a value stands still)."""
        max_age = self.table.max_age_ns
        watched = np.flatnonzero(self.selected & (max_age > 0)).astype(np.int32)
        while True:
            await asyncio.sleep(_HEARTBEAT_S)
            if not self.link.ready:
                continue
            stale = mode.stale_batch(watched, now_ns())
            if stale is not None:
                await self.write(stale)


def _location(path: str) -> Location:
    parts = [p for p in path.split("/") if p]
    parts += ["_"] * (4 - len(parts))
    return Location(
        enterprise=parts[0], site=parts[1], area=parts[2], line="_".join(parts[3:]) or "_"
    )
