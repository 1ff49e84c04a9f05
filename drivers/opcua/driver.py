"""The OPC UA driver: one subscription whose every publish becomes one batch, plus polled reads.

Monitored items are created with the tag index as client handle, and the driver registers its own
publish callback on asyncua's session, so a publish response turns into a batch without a task or
a handler call per value. asyncua's auto-reconnect is off: a lost connection ends :meth:`run`
with :class:`~gateway.errors.NotConnectedError`, and the supervisor reconnects, which re-resolves
namespace URIs and recreates the subscription.
"""

from __future__ import annotations

__all__ = ["OpcUaDriver"]

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.opcua.config import OpcUaDevice, OpcUaTag
from drivers.opcua.values import quality_of_status, timestamp_ns, variant_type_for
from gateway import quality
from gateway.batch import SampleBatch, now_ns
from gateway.errors import DeviceError, NotConnectedError, WriteRefusedError
from gateway.metrics import Metrics
from gateway.runtime.interfaces import BatchSink
from gateway.tags import TagInfo, TagTable

log = logging.getLogger(__name__)

_ITEMS_PER_CALL = 1000
_VALUE_ATTRIBUTE = ua.AttributeIds.Value  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Item:
    tag: OpcUaTag
    indices: tuple[int, ...]
    """Tag-table index of each element (one for a scalar)."""


class OpcUaDriver:
    """Subscribes to (and reads, and writes) one OPC UA server's variables."""

    def __init__(self, config: OpcUaDevice, table: TagTable, metrics: Metrics) -> None:
        self.name = config.name
        self.config = config
        self._metrics = metrics
        self._items: list[_Item] = [
            _Item(tag, tuple(table.indices(f"{config.name}/{tag.name}").tolist()))
            for tag in config.tags
        ]
        self._by_index = {index: item for item in self._items for index in item.indices}
        self.tag_indices = np.array([i for item in self._items for i in item.indices], np.int32)
        self._client: Client | None = None
        self._nodes: dict[int, ua.NodeId] = {}
        """First tag index of an item → its resolved NodeId."""
        self._lost: asyncio.Event = asyncio.Event()
        self._sink: BatchSink | None = None
        self._subscription_id: int | None = None
        self._samples = metrics.samples_read.labels(config.name)

    async def connect(self) -> None:
        c = self.config
        client = Client(c.endpoint, timeout=c.timeout)
        if c.username:
            client.set_user(c.username)
        if c.password is not None:
            client.set_password(c.password.get_secret_value())
        client.connection_lost_callback = self._connection_lost
        self._client = client
        self._lost = asyncio.Event()
        try:
            await asyncio.wait_for(client.connect(auto_reconnect=False), c.timeout * 2)
            namespaces = await asyncio.wait_for(client.get_namespace_array(), c.timeout)
        except (OSError, TimeoutError, UaError) as exc:
            raise NotConnectedError(
                f"{self.name}: cannot connect to {c.endpoint}: {exc!r}"
            ) from exc
        self._nodes = {item.indices[0]: self._resolve(item.tag, namespaces) for item in self._items}

    def _resolve(self, tag: OpcUaTag, namespaces: list[str]) -> ua.NodeId:
        text = tag.node
        if text.startswith("nsu="):
            uri, _, rest = text[4:].partition(";")
            if uri not in namespaces:
                raise DeviceError(
                    self.name,
                    f"tag {tag.name}: namespace {uri!r} is not on the server "
                    f"(it has: {', '.join(namespaces)})",
                )
            text = f"ns={namespaces.index(uri)};{rest}"
        return ua.NodeId.from_string(text)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.config.timeout)

    async def _connection_lost(self, exc: Exception) -> None:
        log.warning("%s: connection lost: %r", self.name, exc)
        self._lost.set()

    async def run(self, sink: BatchSink) -> None:
        client = self._client
        if client is None:
            raise NotConnectedError(f"{self.name}: not connected")
        self._sink = sink
        subscribed = [item for item in self._items if item.tag.mode == "subscribe"]
        polled = [item for item in self._items if item.tag.mode == "poll"]
        async with asyncio.TaskGroup() as tasks:
            if subscribed:
                await self._subscribe(client, subscribed)
            for group in self.config.poll_groups:
                members = [item for item in polled if item.tag.poll_group == group.name]
                if members:
                    tasks.create_task(self._poll_forever(client, members, group.interval, sink))
            tasks.create_task(self._watch())

    async def _watch(self) -> None:
        await self._lost.wait()
        raise NotConnectedError(f"{self.name}: connection to {self.config.endpoint} lost")

    async def _subscribe(self, client: Client, items: list[_Item]) -> None:
        c = self.config
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=c.publishing_interval * 1000,
            RequestedLifetimeCount=max(30, int(60 / c.publishing_interval)),
            RequestedMaxKeepAliveCount=max(3, int(5 / c.publishing_interval)),
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        result = await client.uaclient.create_subscription(params, self._on_publish)
        self._subscription_id = result.SubscriptionId
        sampling = (
            c.sampling_interval * 1000
            if c.sampling_interval is not None
            else c.publishing_interval * 1000
        )
        requests = []
        for item in items:
            monitored = ua.MonitoredItemCreateRequest()
            monitored.ItemToMonitor = ua.ReadValueId(
                NodeId=self._nodes[item.indices[0]], AttributeId=_VALUE_ATTRIBUTE
            )
            monitored.MonitoringMode = ua.MonitoringMode.Reporting
            monitored.RequestedParameters = ua.MonitoringParameters(
                ClientHandle=item.indices[0],
                SamplingInterval=sampling,
                QueueSize=c.queue_size,
                DiscardOldest=True,
            )
            requests.append(monitored)
        for start in range(0, len(requests), _ITEMS_PER_CALL):
            chunk = requests[start : start + _ITEMS_PER_CALL]
            results = await client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=result.SubscriptionId,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                    ItemsToCreate=chunk,
                )
            )
            stamp = now_ns()
            for request, created in zip(chunk, results, strict=True):
                if not created.StatusCode.is_good():
                    handle = request.RequestedParameters.ClientHandle
                    item = self._by_index[handle]
                    log.error(
                        "%s: cannot monitor %s (%s): %s",
                        self.name,
                        item.tag.name,
                        item.tag.node,
                        created.StatusCode.name,
                    )
                    self._emit_bad(item, quality.bad(created.StatusCode.name), stamp)

    def _emit_bad(self, item: _Item, code: int, stamp: int) -> None:
        if self._sink is not None:
            tags = np.array(item.indices, np.int32)
            self._sink(SampleBatch.bad(self.name, tags, code, stamp))

    def _on_publish(self, result: ua.PublishResult) -> None:
        sink = self._sink
        data = result.NotificationMessage.NotificationData
        if sink is None or not data:
            return
        received = now_ns()
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                batch = self._batch_from(notification.MonitoredItems, received)
                if len(batch):
                    self._samples.inc(len(batch))
                    sink(batch)
            elif isinstance(notification, ua.StatusChangeNotification):
                log.warning("%s: subscription status %s", self.name, notification.Status.name)
                if not notification.Status.is_good():
                    self._lost.set()

    def _batch_from(self, items: list[ua.MonitoredItemNotification], received: int) -> SampleBatch:
        tags: list[int] = []
        values: list[float] = []
        codes: list[int] = []
        stamps: list[int] = []
        objects: list[Any] = []
        textual = False
        by_index = self._by_index
        for notification in items:
            item = by_index.get(notification.ClientHandle)
            if item is None:
                continue
            data_value = notification.Value
            code = quality_of_status(data_value.StatusCode.value) if data_value.StatusCode else 0
            stamp = timestamp_ns(data_value.SourceTimestamp or data_value.ServerTimestamp, received)
            raw = data_value.Value.Value if data_value.Value is not None else None
            textual |= _append(item, raw, code, stamp, tags, values, codes, stamps, objects)
        n = len(tags)
        return SampleBatch(
            self.name,
            np.array(tags, np.int32),
            np.array(values, np.float64),
            np.array(codes, np.uint16),
            np.array(stamps, np.int64),
            np.array(objects, object) if textual else None,
            received,
            unique_tags=n == len(set(tags)),
        )

    async def _poll_forever(
        self, client: Client, items: list[_Item], interval: float, sink: BatchSink
    ) -> None:
        read_ids = [
            ua.ReadValueId(NodeId=self._nodes[item.indices[0]], AttributeId=_VALUE_ATTRIBUTE)
            for item in items
        ]
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            elif now - next_at >= interval:
                next_at += (now - next_at) // interval * interval
            params = ua.ReadParameters(
                NodesToRead=read_ids, TimestampsToReturn=ua.TimestampsToReturn.Both
            )
            try:
                results = await client.uaclient.read(params)
            except (OSError, TimeoutError, UaError) as exc:
                raise NotConnectedError(f"{self.name}: read failed: {exc!r}") from exc
            received = now_ns()
            tags: list[int] = []
            values: list[float] = []
            codes: list[int] = []
            stamps: list[int] = []
            objects: list[Any] = []
            textual = False
            for item, data_value in zip(items, results, strict=True):
                code = (
                    quality_of_status(data_value.StatusCode.value) if data_value.StatusCode else 0
                )
                stamp = timestamp_ns(
                    data_value.SourceTimestamp or data_value.ServerTimestamp, received
                )
                raw = data_value.Value.Value if data_value.Value is not None else None
                textual |= _append(item, raw, code, stamp, tags, values, codes, stamps, objects)
            sink(
                SampleBatch(
                    self.name,
                    np.array(tags, np.int32),
                    np.array(values, np.float64),
                    np.array(codes, np.uint16),
                    np.array(stamps, np.int64),
                    np.array(objects, object) if textual else None,
                    received,
                )
            )
            next_at += interval

    async def write(self, tag: TagInfo, value: object) -> None:
        """Write a value coerced to the tag's configured type; refused unless writable."""
        item = self._by_index.get(tag.index)
        if item is None:
            raise WriteRefusedError(tag.id, "the tag does not belong to this device")
        if not item.tag.writable:
            raise WriteRefusedError(tag.id, "the tag is not writable")
        if item.tag.count > 1:
            raise WriteRefusedError(tag.id, "writing array elements is not supported")
        client = self._client
        if client is None:
            raise NotConnectedError(f"{self.name}: not connected")
        data_type = item.tag.type
        if data_type.is_numeric and isinstance(value, bool | int | float):
            coerced: object = (
                bool(value)
                if data_type.value == "bool"
                else (int(value) if data_type.is_integer else float(value))
            )
        elif data_type.value == "string" and isinstance(value, str):
            coerced = value
        else:
            raise WriteRefusedError(tag.id, f"{value!r} does not fit type {data_type.value}")
        variant = ua.Variant(coerced, variant_type_for(data_type))
        try:
            node = client.get_node(self._nodes[item.indices[0]])
            await node.write_value(ua.DataValue(variant))
        except UaStatusCodeError as exc:
            raise DeviceError(self.name, f"write to {tag.id}: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise NotConnectedError(f"{self.name}: write failed: {exc!r}") from exc


def _append(
    item: _Item,
    raw: object,
    code: int,
    stamp: int,
    tags: list[int],
    values: list[float],
    codes: list[int],
    stamps: list[int],
    objects: list[Any],
) -> bool:
    """Add one DataValue's rows (one per element); True when a row holds a non-numeric value."""
    indices = item.indices
    if len(indices) > 1:
        elements = list(raw) if isinstance(raw, list | tuple) else []
        textual = False
        for position, index in enumerate(indices):
            element = elements[position] if position < len(elements) else None
            textual |= _append_one(
                index,
                element,
                code if element is not None else quality.bad("array element missing"),
                stamp,
                tags,
                values,
                codes,
                stamps,
                objects,
            )
        return textual
    return _append_one(indices[0], raw, code, stamp, tags, values, codes, stamps, objects)


def _append_one(
    index: int,
    raw: object,
    code: int,
    stamp: int,
    tags: list[int],
    values: list[float],
    codes: list[int],
    stamps: list[int],
    objects: list[Any],
) -> bool:
    tags.append(index)
    codes.append(code)
    stamps.append(stamp)
    if isinstance(raw, bool | int | float):
        values.append(float(raw))
        objects.append(None)
        return False
    values.append(float("nan"))
    objects.append(raw)
    return raw is not None
