"""Subscriptions without asyncua's per-notification machinery.

The driver creates its subscriptions and runs the Publish loop itself: each PublishResponse is
decoded by :mod:`drivers.opcua.codec` into columns and handed to one callback, so a publish
becomes one batch with no task, handler call or dataclass per value. Monitored items carry the
driver's item position as client handle and are created in chunks within the server's
MaxMonitoredItemsPerCall. A watchdog ends :meth:`Publisher.run` with
:class:`~gateway.errors.NotConnectedError` when no publish response (not even a keep-alive)
arrived for longer than the subscriptions' keep-alive period allows.
"""

from __future__ import annotations

__all__ = ["ItemSpec", "Publisher", "SubscriptionSpec", "monitored_item_request"]

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.client.ua_client import UASocketProtocol
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.opcua.codec import DataValueColumns, decode_publish_response
from drivers.opcua.concurrency import run_until_first_failure
from drivers.opcua.config import DataChangeFilter
from drivers.opcua.session import Session
from gateway.errors import NotConnectedError

log = logging.getLogger(__name__)

_TRIGGERS = {
    "status": ua.DataChangeTrigger.Status,
    "status_value": ua.DataChangeTrigger.StatusValue,
    "status_value_timestamp": ua.DataChangeTrigger.StatusValueTimestamp,
}
_DEADBANDS = {"none": 0, "absolute": 1, "percent": 2}
_SUBSCRIPTION_LIFETIME_S = 60.0
"""How long the server keeps a subscription without Publish requests (a lost client)."""


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One monitored item."""

    handle: int
    node_id: ua.NodeId
    sampling_interval: float | None
    """Seconds; None = the publishing interval."""
    queue_size: int
    discard_oldest: bool
    filter: DataChangeFilter | None
    label: str
    """The tag's name, for messages."""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """One subscription (a poll group's subscribed tags)."""

    name: str
    publishing_interval: float
    items: Sequence[ItemSpec]


@dataclass(slots=True)
class _Created:
    spec: SubscriptionSpec
    subscription_id: int
    keepalive_s: float
    last_sequence: int = 0


@dataclass(slots=True)
class ItemFailure:
    """A monitored item the server refused."""

    item: ItemSpec
    status: str


def monitored_item_request(item: ItemSpec) -> ua.MonitoredItemCreateRequest:
    """The CreateMonitoredItems entry of one item."""
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = ua.ReadValueId(NodeId=item.node_id, AttributeId=AttributeIds.Value)
    request.MonitoringMode = ua.MonitoringMode.Reporting
    parameters = ua.MonitoringParameters(
        ClientHandle=item.handle,
        SamplingInterval=-1.0 if item.sampling_interval is None else item.sampling_interval * 1000,
        QueueSize=item.queue_size,
        DiscardOldest=item.discard_oldest,
    )
    if item.filter is not None:
        parameters.Filter = ua.DataChangeFilter(
            Trigger=_TRIGGERS[item.filter.trigger],
            DeadbandType=_DEADBANDS[item.filter.deadband_type],
            DeadbandValue=item.filter.deadband_value,
        )
    request.RequestedParameters = parameters
    return request


@dataclass
class Publisher:
    """Creates subscriptions on a session and runs their Publish loop."""

    session: Session
    on_data: Callable[[DataValueColumns, int], None]
    """Called with each DataChangeNotification's columns and the receive time (ns)."""
    label: str = ""
    _created: dict[int, _Created] = field(default_factory=dict)
    _acks: list[ua.SubscriptionAcknowledgement] = field(default_factory=list)
    _last_response: float = field(default_factory=time.monotonic)

    @property
    def subscription_ids(self) -> list[int]:
        return list(self._created)

    async def create(self, spec: SubscriptionSpec) -> list[ItemFailure]:
        """Create the subscription and its monitored items; the items the server refused."""
        keepalive_count = max(3, math.ceil(self.session.timeout / spec.publishing_interval))
        lifetime = max(
            3 * keepalive_count, math.ceil(_SUBSCRIPTION_LIFETIME_S / spec.publishing_interval)
        )
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=spec.publishing_interval * 1000,
            RequestedLifetimeCount=lifetime,
            RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        request = ua.CreateSubscriptionRequest()
        request.Parameters = params
        data = await self._send(request, self.session.timeout)
        response = struct_from_binary(ua.CreateSubscriptionResponse, data)
        response.ResponseHeader.ServiceResult.check()
        result = response.Parameters
        keepalive_s = result.RevisedPublishingInterval / 1000 * result.RevisedMaxKeepAliveCount
        self._created[result.SubscriptionId] = _Created(spec, result.SubscriptionId, keepalive_s)
        failures: list[ItemFailure] = []
        chunk = self.session.limits.monitored_items
        client = self.session.client
        for start in range(0, len(spec.items), chunk):
            items = spec.items[start : start + chunk]
            created = await asyncio.wait_for(
                client.uaclient.create_monitored_items(
                    ua.CreateMonitoredItemsParameters(
                        SubscriptionId=result.SubscriptionId,
                        TimestampsToReturn=ua.TimestampsToReturn.Both,
                        ItemsToCreate=[monitored_item_request(item) for item in items],
                    )
                ),
                self.session.timeout * 4,
            )
            for item, outcome in zip(items, created, strict=True):
                if not outcome.StatusCode.is_good():
                    failures.append(ItemFailure(item, outcome.StatusCode.name))
        log.info(
            "%s: subscription %s (%s): %d monitored items, publishing every %.0f ms",
            self.label,
            result.SubscriptionId,
            spec.name,
            len(spec.items) - len(failures),
            result.RevisedPublishingInterval,
        )
        return failures

    async def run(self) -> None:
        """Publish until the connection fails; raises NotConnectedError then."""
        if not self._created:
            return
        self._last_response = time.monotonic()
        workers = len(self._created) + 1
        await run_until_first_failure(
            self._watchdog(), *(self._publish_forever() for _ in range(workers))
        )

    async def _watchdog(self) -> None:
        longest = max(c.keepalive_s for c in self._created.values())
        allowed = longest * 1.5 + self.session.timeout
        while True:
            await asyncio.sleep(min(allowed / 4, 1.0))
            silent = time.monotonic() - self._last_response
            if silent > allowed:
                raise NotConnectedError(
                    f"{self.label}: no publish response or keep-alive for {silent:.1f} s"
                )

    async def _publish_forever(self) -> None:
        while True:
            acks, self._acks = self._acks, []
            request = ua.PublishRequest()
            request.Parameters.SubscriptionAcknowledgements = acks
            try:
                data = await self._send(request, 0)
                received = time.time_ns()
                self._last_response = time.monotonic()
                message = decode_publish_response(bytes(data))
            except UaStatusCodeError as exc:
                if exc.code == StatusCodes.BadTimeout:
                    continue
                if exc.code == StatusCodes.BadTooManyPublishRequests:
                    return  # the server takes fewer outstanding requests: this worker stops
                raise NotConnectedError(
                    f"{self.label}: publish failed: {ua.StatusCode(exc.code).name}"
                ) from exc
            except (OSError, TimeoutError, UaError, ConnectionError) as exc:
                raise NotConnectedError(f"{self.label}: publish failed: {exc!r}") from exc
            self._handle(message.subscription_id, message.sequence_number, message, received)

    def _handle(self, subscription_id: int, sequence: int, message: Any, received: int) -> None:
        created = self._created.get(subscription_id)
        if created is None:
            log.warning("%s: publish for unknown subscription %s", self.label, subscription_id)
            return
        if message.is_keepalive:
            return
        self._acks.append(ua.SubscriptionAcknowledgement(subscription_id, sequence))
        if created.last_sequence and sequence > created.last_sequence + 1:
            log.warning(
                "%s: subscription %s skipped %d notification messages",
                self.label,
                subscription_id,
                sequence - created.last_sequence - 1,
            )
        created.last_sequence = max(created.last_sequence, sequence)
        for columns in message.data_changes:
            self.on_data(columns, received)
        for other in message.other:
            if isinstance(other, ua.StatusChangeNotification):
                status = other.Status
                log.warning("%s: subscription %s: %s", self.label, subscription_id, status.name)
                if not status.is_good() or status.value == StatusCodes.GoodSubscriptionTransferred:
                    raise NotConnectedError(
                        f"{self.label}: subscription {subscription_id} ended: {status.name}"
                    )

    async def _send(self, request: Any, timeout: float) -> Any:
        protocol: UASocketProtocol | None = self.session.client.uaclient.protocol
        if protocol is None:
            raise NotConnectedError(f"{self.label}: not connected")
        return await protocol.send_request(request, timeout)
