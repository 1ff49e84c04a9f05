"""The OPC UA driver: subscriptions by default, batched reads for polled tags, writes.

At every connect it opens a session (security, identity: :mod:`drivers.opcua.session`),
resolves every tag's address against the server's current namespace array (browse paths with
TranslateBrowsePathsToNodeIds), and learns the data type and access level of writable tags.
:meth:`OpcUaDriver.run` creates one subscription per poll group with subscribed tags (items in
chunks within the server's limits) and runs the Publish loop of
:mod:`drivers.opcua.subscription`, where one publish response becomes one batch; polled tags are
read on their group's clock with one Read per chunk of MaxNodesPerRead nodes.

asyncua's auto-reconnect is off. A lost channel (asyncua's keep-alive probe, every `keepalive`
seconds), a silent subscription (no publish response or keep-alive in time) or a subscription
the server ended makes :meth:`run` raise :class:`~gateway.errors.NotConnectedError`; the
supervisor marks the tags bad, closes the driver and connects again with backoff, which
re-resolves namespaces and recreates every subscription in a new session.
"""

from __future__ import annotations

__all__ = ["OpcUaDriver"]

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from asyncua import ua
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.opcua.addressing import (
    UnresolvedAddressError,
    parse_browse_path,
    parse_node_id,
    resolve_browse_path,
    resolve_node_id,
)
from drivers.opcua.codec import DataValueColumns, decode_read_response
from drivers.opcua.concurrency import run_until_first_failure
from drivers.opcua.config import OpcUaDevice, OpcUaPollGroup, OpcUaTag
from drivers.opcua.session import ConnectionSettings, Session, good_status, open_session
from drivers.opcua.subscription import ItemSpec, Publisher, SubscriptionSpec
from drivers.opcua.values import BatchBuilder, coerce_for_write, variant_type_for
from gateway import quality
from gateway.batch import SampleBatch, now_ns
from gateway.errors import DeviceError, NotConnectedError, WriteRefusedError
from gateway.metrics import Metrics
from gateway.runtime.interfaces import BatchSink
from gateway.tags import TagInfo, TagTable

log = logging.getLogger(__name__)

_NOT_ON_SERVER = quality.bad("not on server")


@dataclass(frozen=True, slots=True)
class _Item:
    handle: int
    """Position in the driver's item list; the monitored item's client handle."""
    tag: OpcUaTag
    indices: tuple[int, ...]
    """Tag-table index of each element (one for a scalar)."""
    group: OpcUaPollGroup


@dataclass(frozen=True, slots=True)
class _WriteTarget:
    variant: ua.VariantType
    writable: bool


class OpcUaDriver:
    """Subscribes to, reads and writes one OPC UA server's variables."""

    def __init__(
        self,
        config: OpcUaDevice,
        table: TagTable,
        metrics: Metrics,
        *,
        data_dir: str | Path = "./data",
    ) -> None:
        self.name = config.name
        self.config = config
        self.settings = ConnectionSettings.for_device(config, data_dir)
        self._metrics = metrics
        groups = {group.name: group for group in config.poll_groups}
        self._items = [
            _Item(
                handle,
                tag,
                tuple(table.indices(f"{config.name}/{tag.name}").tolist()),
                groups[tag.poll_group],
            )
            for handle, tag in enumerate(config.tags)
        ]
        self._by_index = {index: item for item in self._items for index in item.indices}
        self.tag_indices = np.array([i for item in self._items for i in item.indices], np.int32)
        self._builder = BatchBuilder(
            config.name,
            [item.indices[0] for item in self._items],
            [len(item.indices) for item in self._items],
            table,
        )
        self._session: Session | None = None
        self._nodes: list[ua.NodeId | None] = []
        self._problems: dict[int, str] = {}
        """Handle → why the item's address did not resolve at the last connect."""
        self._write_targets: dict[int, _WriteTarget] = {}
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._sink: BatchSink | None = None
        self._samples = metrics.samples_read.labels(config.name)

    # --- connect ------------------------------------------------------------------------

    async def connect(self) -> None:
        self._lost = asyncio.Event()
        self._session = await open_session(
            self.settings,
            max_items_per_call=self.config.max_items_per_call,
            on_connection_lost=self._connection_lost,
        )
        try:
            await self._resolve(self._session)
            await self._learn_write_targets(self._session)
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            raise NotConnectedError(
                f"{self.name}: resolving tag addresses failed: {exc!r}"
            ) from exc
        log.info(
            "%s: connected to %s (%s/%s); %d tags resolved, %d not",
            self.name,
            self.config.endpoint,
            self.config.security.policy.value,
            self.config.security.effective_mode.value,
            len(self._items) - len(self._problems),
            len(self._problems),
        )

    async def _resolve(self, session: Session) -> None:
        namespaces, aliases = session.namespaces, self.config.namespaces
        nodes: list[ua.NodeId | None] = [None] * len(self._items)
        problems: dict[int, str] = {}
        paths: list[tuple[_Item, ua.BrowsePath]] = []
        for item in self._items:
            try:
                if item.tag.node is not None:
                    nodes[item.handle] = resolve_node_id(
                        parse_node_id(item.tag.node), namespaces, aliases
                    )
                else:
                    assert item.tag.path is not None
                    path = resolve_browse_path(
                        parse_browse_path(item.tag.path), namespaces, aliases
                    )
                    paths.append((item, path))
            except UnresolvedAddressError as exc:
                problems[item.handle] = str(exc)
        chunk = session.limits.translate
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            results = await asyncio.wait_for(
                session.client.uaclient.translate_browsepaths_to_nodeids([p for _, p in part]),
                session.timeout * 2,
            )
            for (item, _), result in zip(part, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    target = result.Targets[0].TargetId
                    nodes[item.handle] = ua.NodeId(
                        target.Identifier, target.NamespaceIndex, target.NodeIdType
                    )
                else:
                    problems[item.handle] = f"browse path not found ({result.StatusCode.name})"
        for handle, reason in problems.items():
            tag = self._items[handle].tag
            log.error("%s: tag %s (%s): %s", self.name, tag.name, tag.node or tag.path, reason)
        self._nodes, self._problems = nodes, problems

    async def _learn_write_targets(self, session: Session) -> None:
        """Data type and access level of writable tags, so a write is coerced to the node's
        type, or refused, before anything is sent."""
        writable = [
            item
            for item in self._items
            if item.tag.writable and self._nodes[item.handle] is not None
        ]
        targets: dict[int, _WriteTarget] = {}
        attributes = (AttributeIds.DataType, AttributeIds.UserAccessLevel)
        for start in range(0, len(writable), max(1, session.limits.read // 2)):
            part = writable[start : start + max(1, session.limits.read // 2)]
            reads = [
                ua.ReadValueId(NodeId=self._nodes[item.handle], AttributeId=attribute)
                for item in part
                for attribute in attributes
            ]
            results = await asyncio.wait_for(
                session.client.uaclient.read(ua.ReadParameters(NodesToRead=reads)),
                session.timeout,
            )
            for position, item in enumerate(part):
                data_type, access = results[2 * position], results[2 * position + 1]
                variant = variant_type_for(item.tag.type)
                if good_status(data_type) and data_type.Value is not None:
                    type_node = session.client.get_node(data_type.Value.Value)
                    found = await asyncio.wait_for(
                        data_type_to_variant_type(type_node), session.timeout
                    )
                    if found is not ua.VariantType.Variant:
                        variant = found
                level = access.Value.Value if good_status(access) and access.Value else 0
                can_write = bool(int(level or 0) & ua.AccessLevel.CurrentWrite.mask)
                if not can_write:
                    log.warning(
                        "%s: tag %s is writable in the config but not on the server",
                        self.name,
                        item.tag.name,
                    )
                targets[item.handle] = _WriteTarget(variant, can_write)
        self._write_targets = targets

    async def close(self) -> None:
        session, self._session = self._session, None
        self._sink = None
        if session is not None:
            await session.close()

    async def _connection_lost(self, exc: Exception) -> None:
        log.warning("%s: connection lost: %r", self.name, exc)
        self._lost_reason = repr(exc)
        self._lost.set()

    # --- run ----------------------------------------------------------------------------

    async def run(self, sink: BatchSink) -> None:
        session = self._session
        if session is None:
            raise NotConnectedError(f"{self.name}: not connected")
        self._sink = sink
        if self._problems:
            handles = list(self._problems)
            tags = np.array([i for h in handles for i in self._items[h].indices], np.int32)
            sink(SampleBatch.bad(self.name, tags, _NOT_ON_SERVER, now_ns()))
        publisher = Publisher(session, self._on_data, self.name)
        loops = []
        for group in self.config.poll_groups:
            members = [
                item
                for item in self._items
                if item.group.name == group.name and item.handle not in self._problems
            ]
            subscribed = [item for item in members if item.tag.mode == "subscribe"]
            polled = [item for item in members if item.tag.mode == "poll"]
            if subscribed:
                await self._subscribe(publisher, group, subscribed)
            if polled:
                loops.append(self._poll_forever(session, group, polled, sink))
        await run_until_first_failure(publisher.run(), self._watch_lost(), *loops)

    async def _subscribe(
        self, publisher: Publisher, group: OpcUaPollGroup, items: list[_Item]
    ) -> None:
        c = self.config
        specs = [
            ItemSpec(
                handle=item.handle,
                node_id=self._nodes[item.handle],  # type: ignore[arg-type]
                sampling_interval=next(
                    (
                        s
                        for s in (item.tag.sampling_interval, group.sampling_interval)
                        if s is not None
                    ),
                    c.sampling_interval,
                ),
                queue_size=_first(item.tag.queue_size, group.queue_size, c.queue_size),
                discard_oldest=_first(
                    item.tag.discard_oldest, group.discard_oldest, c.discard_oldest
                ),
                filter=item.tag.filter or group.filter or c.filter,
                label=item.tag.name,
            )
            for item in items
        ]
        spec = SubscriptionSpec(
            group.name, group.publishing_interval or c.publishing_interval, specs
        )
        try:
            failures = await publisher.create(spec)
        except UaStatusCodeError as exc:
            raise DeviceError(
                self.name, f"cannot create a subscription: {ua.StatusCode(exc.code).name}"
            ) from exc
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            raise NotConnectedError(
                f"{self.name}: creating the subscription failed: {exc!r}"
            ) from exc
        stamp = now_ns()
        for failure in failures:
            item = self._items[failure.item.handle]
            log.error(
                "%s: cannot monitor %s (%s): %s",
                self.name,
                item.tag.name,
                item.tag.node or item.tag.path,
                failure.status,
            )
            if self._sink is not None:
                tags = np.array(item.indices, np.int32)
                self._sink(SampleBatch.bad(self.name, tags, quality.bad(failure.status), stamp))

    def _on_data(self, columns: DataValueColumns, received: int) -> None:
        sink = self._sink
        if sink is None or columns.handles is None or not len(columns):
            return
        batch = self._builder.build(columns, columns.handles, received)
        if len(batch):
            self._samples.inc(len(batch))
            sink(batch)

    async def _watch_lost(self) -> None:
        await self._lost.wait()
        raise NotConnectedError(
            f"{self.name}: connection to {self.config.endpoint} lost ({self._lost_reason})"
        )

    async def _poll_forever(
        self, session: Session, group: OpcUaPollGroup, items: list[_Item], sink: BatchSink
    ) -> None:
        chunk = session.limits.read
        requests = []
        handles = []
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            request = ua.ReadRequest()
            request.Parameters = ua.ReadParameters(
                MaxAge=0,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[
                    ua.ReadValueId(NodeId=self._nodes[i.handle], AttributeId=AttributeIds.Value)
                    for i in part
                ],
            )
            requests.append(request)
            handles.append(np.array([i.handle for i in part], np.uint32))
        interval = group.interval
        missed = self._metrics.polls_missed.labels(self.name, group.name)
        duration = self._metrics.poll_duration.labels(self.name)
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            elif now - next_at >= interval:
                skipped = int((now - next_at) // interval)
                missed.inc(skipped)
                next_at += skipped * interval
            started = time.monotonic()
            batches = await asyncio.gather(
                *(
                    self._read(session, request, h)
                    for request, h in zip(requests, handles, strict=True)
                )
            )
            # every polled item once per cycle: the tags are unique
            batch = replace(
                SampleBatch.concat(self.name, [b for b in batches if len(b)]), unique_tags=True
            )
            duration.observe(time.monotonic() - started)
            if len(batch):
                self._samples.inc(len(batch))
                sink(batch)
            next_at += interval

    async def _read(
        self, session: Session, request: ua.ReadRequest, handles: np.ndarray
    ) -> SampleBatch:
        protocol = session.client.uaclient.protocol
        if protocol is None:
            raise NotConnectedError(f"{self.name}: not connected")
        try:
            data = await protocol.send_request(request, session.timeout)
            columns = decode_read_response(bytes(data))
        except UaStatusCodeError as exc:
            name = ua.StatusCode(exc.code).name
            if exc.code in (StatusCodes.BadSessionIdInvalid, StatusCodes.BadSessionClosed):
                raise NotConnectedError(f"{self.name}: read failed: {name}") from exc
            log.warning("%s: read of %d nodes failed: %s", self.name, len(handles), name)
            tags = np.array([i for h in handles.tolist() for i in self._items[h].indices], np.int32)
            return SampleBatch.bad(self.name, tags, quality.bad(name), now_ns())
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            raise NotConnectedError(f"{self.name}: read failed: {exc!r}") from exc
        if len(columns) != len(handles):
            raise DeviceError(self.name, f"read answered {len(columns)} of {len(handles)} nodes")
        return self._builder.build(columns, handles, now_ns())

    # --- write --------------------------------------------------------------------------

    async def write(self, tag: TagInfo, value: object) -> None:
        """Write `value` (engineering units) coerced to the node's data type; refused unless
        the tag is writable in the config and on the server."""
        item = self._by_index.get(tag.index)
        if item is None:
            raise WriteRefusedError(tag.id, "the tag does not belong to this device")
        if not item.tag.writable:
            raise WriteRefusedError(tag.id, "the tag is not writable")
        session = self._session
        if session is None:
            raise NotConnectedError(f"{self.name}: not connected")
        node = self._nodes[item.handle] if item.handle < len(self._nodes) else None
        if node is None:
            reason = self._problems.get(item.handle, "not resolved")
            raise WriteRefusedError(tag.id, f"the node is not on the server: {reason}")
        target = self._write_targets.get(item.handle)
        if target is not None and not target.writable:
            raise WriteRefusedError(tag.id, "the server's access level does not allow writing")
        variant_type = target.variant if target is not None else variant_type_for(item.tag.type)
        coerced = coerce_for_write(tag.id, item.tag, value, variant_type)
        write = ua.WriteValue(NodeId=node, AttributeId=AttributeIds.Value)
        if tag.element is not None:
            write.IndexRange = str(tag.element)
            write.Value = ua.DataValue(ua.Variant([coerced], variant_type, is_array=True))
        else:
            write.Value = ua.DataValue(ua.Variant(coerced, variant_type))
        try:
            results = await asyncio.wait_for(
                session.client.uaclient.write(ua.WriteParameters(NodesToWrite=[write])),
                session.timeout,
            )
        except UaStatusCodeError as exc:
            raise DeviceError(
                self.name, f"write to {tag.id}: {ua.StatusCode(exc.code).name}", code=exc.code
            ) from exc
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            raise NotConnectedError(f"{self.name}: write failed: {exc!r}") from exc
        status = results[0]
        if not status.is_good():
            raise DeviceError(self.name, f"write to {tag.id}: {status.name}", code=status.value)


_T = TypeVar("_T")


def _first(*values: _T | None) -> _T:
    """The first value that is set (the device's own default is always set)."""
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value set")
