"""The Unified Namespace payload mode: one JSON message per changed tag on an ISA-95 topic tree.

Topics (``<root>`` is ``topic_root``, by default ``enterprise/site/area/line``; ``<cell>`` the
device's ISA-95 work unit, by default the device name; names are sanitized so that no ``+``,
``#``, ``/``, NUL or white space lands inside a level):

=============================================  =================================================
``<root>/<cell>/edge/<tag>``                   a tag value: ``{"value", "quality", "timestamp",
                                               "unit"}`` (+ ``"historical": true`` when
                                               replayed from the store-and-forward buffer)
``<root>/<cell>/mes/completion``               a completion (work report) document
``<root>/<cell>/quality/lot_result``           a lot's quality result
``<root>/<cell>/<kind topic>``                 other document kinds (``gateway.documents.KINDS``)
``<root>/_gateway/<gateway id>/status``        ``{"status": "online" | "offline", "timestamp"}``,
                                               retained; "offline" is the last will
``<root>/<cell>/cmd/<tag>``                    write requests (when ``commands.enabled``)
``<root>/<cell>/cmd/<tag>/reply``              their results (or the MQTT 5 response topic)
=============================================  =================================================

The per-message path is lean: topics are encoded once per tag, the unit part of the payload
once per tag, the quality-and-timestamp part once per distinct (quality, timestamp) in a batch,
and only the value goes through ``orjson`` per row.
"""

from __future__ import annotations

__all__ = ["UnsMode", "event_topic", "json_historical", "sanitize"]

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np
import orjson
from numpy.typing import NDArray

from gateway import quality
from gateway.batch import SampleBatch, now_ns
from gateway.config.outputs import MqttOutputConfig
from gateway.datatypes import DataType
from gateway.documents import KINDS, Document
from gateway.outputs.buffer import Record
from gateway.outputs.commands import CommandExecutor, CommandResult
from gateway.outputs.link import Link
from gateway.outputs.mqtt_client import MqttSettings, ReceivedMessage, encode_topic
from gateway.pipeline.last_values import LastValues
from gateway.processors.timefmt import iso_utc
from gateway.tags import TagTable

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[+#/\s\x00]")
_HISTORICAL = b',"historical":true}'


def json_historical(record: Record) -> Record:
    """A JSON message flagged ``"historical": true`` and not retained (it is replayed late)."""
    payload = record.payload
    if payload.endswith(b"}") and not payload.endswith(_HISTORICAL):
        payload = payload[:-1] + _HISTORICAL
    return Record(record.topic, payload, record.qos, False, record.plain)


def sanitize(name: str) -> str:
    """A name made safe as one topic level: ``+ # /``, NUL and white space become ``_``, and a
    leading ``$`` (reserved for broker topics) too."""
    cleaned = _UNSAFE.sub("_", name)
    if cleaned.startswith("$"):
        cleaned = "_" + cleaned[1:]
    return cleaned or "_"


def event_topic(root: str, cell: str, kind: str) -> str:
    """The topic of a business event (the kind's declared topic, ``mes/<kind>`` otherwise)."""
    spec = KINDS.get(kind)
    return f"{root}/{sanitize(cell)}/{spec.topic if spec else 'mes/' + sanitize(kind)}"


class UnsMode:
    """Per-tag JSON messages, events, the retained status and the command topics."""

    def __init__(
        self,
        config: MqttOutputConfig,
        table: TagTable,
        *,
        gateway_id: str,
        location_path: str,
        cells: Mapping[str, str],
        base_settings: MqttSettings,
        commands: CommandExecutor,
        track_last: bool = False,
    ) -> None:
        self.config = config
        self.table = table
        self.root = (config.topic_root or location_path).rstrip("/")
        self._base = base_settings
        self.commands = commands
        self.status_topic = f"{self.root}/_gateway/{sanitize(gateway_id)}/status"
        cell_of = [sanitize(cells.get(info.device, info.device)) for info in table.infos]
        self.topics = [
            f"{self.root}/{cell}/edge/{sanitize(info.name)}"
            for cell, info in zip(cell_of, table.infos, strict=True)
        ]
        self._encoded = [encode_topic(topic) for topic in self.topics]
        self._unit_tail = [b',"unit":' + orjson.dumps(info.unit) + b"}" for info in table.infos]
        self._kind = [
            _value_kind(info.type, info.config.scale, info.config.offset) for info in table.infos
        ]
        self.command_topics = {
            f"{self.root}/{cell}/cmd/{sanitize(info.name)}": info.index
            for cell, info in zip(cell_of, table.infos, strict=True)
        }
        self._quality_names: dict[int, bytes] = {}
        self.last: LastValues | None = LastValues(table) if track_last else None
        """Last published samples, kept when some tag has a ``max_age`` to republish."""
        self.last_sent_ns: NDArray[np.int64] = np.zeros(len(table), np.int64)

    # --- link hooks ---

    prepare = None

    async def settings(self) -> MqttSettings:
        from dataclasses import replace

        if not self.config.status:
            return self._base
        return replace(
            self._base,
            will_topic=self.status_topic,
            will_payload=orjson.dumps({"status": "offline"}),
            will_retain=True,
            will_qos=1,
        )

    async def on_connected(self, link: Link) -> None:
        if self.commands.enabled:
            link.subscribe(f"{self.root}/+/cmd/+", 1)
        if self.config.status:
            link.publish_direct(
                self.status_topic,
                orjson.dumps({"status": "online", "timestamp": iso_utc(now_ns())}),
                1,
                True,
            )
        link.set_ready()

    def before_close(self, link: Link) -> None:
        if self.config.status:
            link.publish_direct(
                self.status_topic,
                orjson.dumps({"status": "offline", "timestamp": iso_utc(now_ns())}),
                1,
                True,
            )

    def historical(self, record: Record) -> Record:
        return json_historical(record)

    # --- data ---

    def write(self, link: Link, batch: SampleBatch) -> int:
        """Publish one message per row; returns the number of messages."""
        qos, retain = self.config.qos, self.config.retain
        send = link.send
        encoded, units, kinds = self._encoded, self._unit_tail, self._kind
        dumps = orjson.dumps
        tags = batch.tags.tolist()
        values = batch.values.tolist()
        codes = batch.quality.tolist()
        stamps = batch.timestamps.tolist()
        objects = batch.objects
        middles: dict[tuple[int, int], bytes] = {}
        for row, tag in enumerate(tags):
            key = (codes[row], stamps[row])
            middle = middles.get(key)
            if middle is None:
                middle = middles[key] = self._middle(*key)
            value = values[row]
            if objects is not None and objects[row] is not None:
                text = dumps(objects[row], default=str)
            elif value != value:  # NaN: no value
                text = b"null"
            else:
                kind = kinds[tag]
                if kind == 1:
                    text = b"true" if value else b"false"
                elif kind == 2 and value.is_integer():
                    text = str(int(value)).encode()
                else:
                    text = dumps(value)
            send(encoded[tag], b'{"value":' + text + middle + units[tag], qos, retain)
        if self.last is not None:
            self.last.update(batch)
            self.last_sent_ns[batch.tags] = now_ns()
        return len(tags)

    def stale_batch(self, watched: NDArray[np.int32], now: int) -> SampleBatch | None:
        """The last samples of the `watched` tags not published for their ``max_age``."""
        last = self.last
        if last is None or not len(watched):
            return None
        sent = self.last_sent_ns[watched]
        due = watched[(sent > 0) & (now - sent >= self.table.max_age_ns[watched])]
        if not len(due):
            return None
        objects = last.objects[due]
        return SampleBatch(
            "max_age",
            due,
            last.values[due],
            last.quality[due],
            last.timestamps[due],
            objects if any(o is not None for o in objects) else None,
        )

    def _middle(self, code: int, stamp: int) -> bytes:
        name = self._quality_names.get(code)
        if name is None:
            name = self._quality_names[code] = orjson.dumps(
                quality.describe(code) if code else "good"
            )
        return b',"quality":' + name + b',"timestamp":"' + iso_utc(stamp).encode() + b'"'

    def publish_documents(self, link: Link, documents: Sequence[Document]) -> int:
        if not self.config.events:
            return 0
        for doc in documents:
            payload = orjson.dumps({"kind": doc.kind, "key": doc.key, **doc.body}, default=str)
            link.send(encode_topic(event_topic(self.root, doc.cell, doc.kind)), payload, 1, False)
        return len(documents)

    # --- commands ---

    def on_message(self, link: Link, message: ReceivedMessage) -> None:
        index = self.command_topics.get(message.topic)
        reply_topic = message.response_topic or f"{message.topic}/reply"

        def reply(result: CommandResult) -> None:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = None
            if message.correlation_data is not None:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.CorrelationData = message.correlation_data
            if not link.publish_direct(
                reply_topic, orjson.dumps(result.as_dict(), default=str), 1, False, properties
            ):
                log.warning(
                    "%s: result of a write to %s not sent: not connected", link.name, result.tag
                )

        try:
            body = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            body = _NOT_JSON
        request_id = body.get("id") if isinstance(body, dict) else None
        if index is None:
            reply(self.commands.refuse(message.topic, None, "no such tag", request_id))
            return
        if body is _NOT_JSON:
            reply(
                self.commands.refuse(
                    self.table[index].id, None, 'payload must be JSON: {"value": ...}', request_id
                )
            )
            return
        value = body.get("value", _MISSING) if isinstance(body, dict) else body
        if value is _MISSING:
            reply(
                self.commands.refuse(
                    self.table[index].id, None, 'payload must be {"value": ...}', request_id
                )
            )
            return
        self.commands.submit(index, value, reply, request_id)


_NOT_JSON = object()
_MISSING = object()


def _value_kind(data_type: DataType, scale: float, offset: float) -> int:
    """0: float, 1: bool, 2: integer (unscaled integer types)."""
    if data_type is DataType.BOOL:
        return 1
    if data_type.is_integer and scale == 1 and offset == 0:
        return 2
    return 0
