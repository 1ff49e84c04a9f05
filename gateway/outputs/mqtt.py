"""MQTT output: changed tag values on a Unified Namespace topic tree, and business events.

Topics (``<root>`` is `topic_root`, by default ``enterprise/site/area/line``; ``<cell>`` the
device's ISA-95 work unit, by default the device name):

==========================================  ===============================================
``<root>/<cell>/edge/<tag>``                one tag's value: ``{"value", "quality",
                                            "timestamp", "unit"}``
``<root>/<cell>/mes/completion``            a completion (work report) document
``<root>/<cell>/quality/lot_result``        a lot's quality result
``<root>/_gateway/<gateway id>/status``     ``{"status": "online" | "offline"}``, retained;
                                            "offline" is the last will
==========================================  ===============================================
"""

from __future__ import annotations

__all__ = ["MqttOutput", "event_topic"]

from collections.abc import Mapping, Sequence

import orjson

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.outputs import MqttOutputConfig
from gateway.documents import KINDS, Document
from gateway.metrics import Metrics
from gateway.outputs.mqtt_client import AsyncMqttClient, MqttSettings
from gateway.processors.timefmt import iso_utc
from gateway.tags import TagTable


def event_topic(root: str, cell: str, kind: str) -> str:
    """The topic of a business event (the kind's declared topic, ``mes/<kind>`` otherwise)."""
    spec = KINDS.get(kind)
    return f"{root}/{cell}/{spec.topic if spec else 'mes/' + kind}"


class MqttOutput:
    """Publishes one JSON message per changed tag value (report by exception)."""

    def __init__(
        self,
        config: MqttOutputConfig,
        table: TagTable,
        *,
        gateway_id: str,
        location_path: str,
        cells: Mapping[str, str],
        metrics: Metrics,
    ) -> None:
        self.name = config.name
        self.config = config
        self.root = (config.topic_root or location_path).rstrip("/")
        self._metrics = metrics
        self._cells = cells
        self._topics = [
            f"{self.root}/{cells.get(info.device, info.device)}/edge/{info.name}"
            for info in table.infos
        ]
        self._units = [info.unit for info in table.infos]
        self.status_topic = f"{self.root}/_gateway/{gateway_id}/status"
        self._client = AsyncMqttClient(
            MqttSettings(
                host=config.host,
                port=config.port,
                client_id=config.client_id or f"{gateway_id}-{config.name}",
                mqtt_version=config.mqtt_version,
                username=config.username,
                password=config.password.get_secret_value() if config.password else None,
                keepalive=config.keepalive,
                connect_timeout=config.connect_timeout,
                will_topic=self.status_topic,
                will_payload=orjson.dumps({"status": "offline"}),
            ),
            name=config.name,
        )
        self._published = metrics.values_published.labels(config.name)
        self._messages = metrics.messages_published.labels(config.name)

    async def connect(self) -> None:
        await self._client.connect()
        self._client.publish(self.status_topic, orjson.dumps({"status": "online"}), 1, True)

    async def write(self, batch: SampleBatch) -> None:
        qos, retain = self.config.qos, self.config.retain
        publish = self._client.publish
        topics, units = self._topics, self._units
        tags = batch.tags.tolist()
        values = batch.values.tolist()
        codes = batch.quality.tolist()
        stamps = batch.timestamps.tolist()
        objects = batch.objects
        for row, tag in enumerate(tags):
            value: object = values[row]
            if objects is not None and objects[row] is not None:
                value = objects[row]
            elif value != value:  # NaN
                value = None
            payload = orjson.dumps(
                {
                    "value": value,
                    "quality": quality.describe(codes[row]) if codes[row] else "good",
                    "timestamp": iso_utc(stamps[row]),
                    "unit": units[tag],
                },
                default=str,
            )
            publish(topics[tag], payload, qos, retain)
        self._published.inc(len(tags))
        self._messages.inc(len(tags))

    async def publish_documents(self, documents: Sequence[Document]) -> None:
        if not self.config.events:
            return
        for doc in documents:
            payload = orjson.dumps({"kind": doc.kind, "key": doc.key, **doc.body}, default=str)
            self._client.publish(event_topic(self.root, doc.cell, doc.kind), payload, 1, False)
            self._messages.inc()

    async def close(self) -> None:
        if self._client.is_connected:
            self._client.publish(self.status_topic, orjson.dumps({"status": "offline"}), 1, True)
            await self._client.flush(within=5.0)
        await self._client.close()
