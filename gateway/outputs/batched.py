"""The batched payload mode: one JSON message per device poll (or subscription publish) carrying
every value that changed in it, encoded straight from the columnar batch.

Topics (``<root>`` is ``topic_root``; ``<cell>`` the device's work unit, by default its name):

=====================================  ========================================================
``<root>/<cell>/batch``                the changed values of one poll of one device
``<root>/<cell>/batch/meta``           retained: the device's tags in alias order, with unit
                                       and type, so subscribers can decode aliases and units
``<root>/<cell>/<kind topic>``         business events, as in the UNS mode
=====================================  ========================================================

A data message (``keys: names``, the default)::

    {"device": "M1", "ts": 1764000000123, "names": ["GoodCount", "State"],
     "values": [1042, 6], "quality": {"State": "bad: timeout"}}

* ``ts``: the samples' source timestamp in ms since the epoch (one per message); when the
  samples of a subscription publish carry different timestamps, ``"ts_each"`` lists them.
* ``names`` (or ``aliases``, integers indexing the ``meta`` message's ``tags``, with
  ``keys: aliases``) and ``values`` are parallel arrays; a value is a number, a boolean, a string,
  or ``null`` when the sample has no value.
* ``quality`` lists only the samples that are not good; absent when all are good.
* Replayed messages (store-and-forward) carry ``"historical": true``.

Why JSON of parallel arrays: any subscriber decodes it with its standard JSON library (no schema
compiler, unlike protobuf), and the arrays are produced from the numpy columns in one call of
``orjson`` (no Python object per value), so a message of a thousand values costs tens of
microseconds. Names are encoded once per device and reused while a poll reports the same tags.
"""

from __future__ import annotations

__all__ = ["BatchedMode"]

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from numpy.typing import NDArray

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.outputs import MqttOutputConfig
from gateway.datatypes import DataType
from gateway.documents import Document
from gateway.outputs.buffer import Record
from gateway.outputs.link import Link
from gateway.outputs.mqtt_client import MqttSettings, ReceivedMessage, encode_topic
from gateway.outputs.uns import event_topic, json_historical, sanitize
from gateway.tags import TagTable

log = logging.getLogger(__name__)

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class _Device:
    """What the mode knows of one device: its topic, its tags' keys, the last names sent."""

    name: str
    topic: bytes
    meta_topic: str
    meta: bytes
    cached_tags: NDArray[np.int32] | None = None
    cached_keys: bytes = b""


class BatchedMode:
    """One message per batch; see the module docstring for the payload."""

    prepare = None

    def __init__(
        self,
        config: MqttOutputConfig,
        table: TagTable,
        *,
        location_path: str,
        cells: Mapping[str, str],
        base_settings: MqttSettings,
    ) -> None:
        self.config = config
        self.table = table
        self.root = (config.topic_root or location_path).rstrip("/")
        self._base = base_settings
        self._by_alias = config.batched.keys == "aliases"
        self._key_field = b'"aliases":' if self._by_alias else b'"names":'
        names = [info.name for info in table.infos]
        self._names = np.array(names, dtype=object)
        self._int_like = np.array(
            [_int_like(info.type, info.config.scale, info.config.offset) for info in table.infos],
            bool,
        )
        self._bool_like = np.array([info.type is DataType.BOOL for info in table.infos], bool)
        self._alias = np.zeros(len(table), np.int64)
        self._devices: dict[str, _Device] = {}
        members: dict[str, list[int]] = {}
        for info in table.infos:
            members.setdefault(info.device, []).append(info.index)
        for device, indices in members.items():
            self._alias[indices] = np.arange(len(indices))
            cell = sanitize(cells.get(device, device))
            meta = {
                "device": device,
                "tags": [
                    {"name": table[i].name, "unit": table[i].unit, "type": table[i].type.value}
                    for i in indices
                ],
            }
            self._devices[device] = _Device(
                device,
                encode_topic(f"{self.root}/{cell}/batch"),
                f"{self.root}/{cell}/batch/meta",
                _compact(orjson.dumps(meta)),
            )
        self._quality_names: dict[int, str] = {}

    # --- link hooks ---

    async def settings(self) -> MqttSettings:
        return self._base

    async def on_connected(self, link: Link) -> None:
        for device in self._devices.values():
            link.publish_direct(device.meta_topic, device.meta, 1, True)
        link.set_ready()

    def on_message(self, link: Link, message: ReceivedMessage) -> None:
        log.debug("%s: unexpected message on %s ignored", link.name, message.topic)

    def historical(self, record: Record) -> Record:
        return json_historical(record)

    def before_close(self, link: Link) -> None:
        return None

    # --- data ---

    def write(self, link: Link, batch: SampleBatch) -> int:
        """Publish one message for the batch; returns the number of messages (0 or 1)."""
        if len(batch) == 0:
            return 0
        device = self._devices.get(batch.source)
        if device is None:  # a batch not from one device (e.g. a republish): split it
            return sum(self._write_split(link, batch))
        link.send(device.topic, self.encode(batch, device), self.config.qos, False)
        return 1

    def _write_split(self, link: Link, batch: SampleBatch) -> list[int]:
        devices = np.array([self.table[int(i)].device for i in batch.tags], dtype=object)
        sent = []
        for name in dict.fromkeys(devices.tolist()):
            rows = np.flatnonzero(devices == name)
            part = batch.select(rows)
            device = self._devices[name]
            link.send(device.topic, self.encode(part, device), self.config.qos, False)
            sent.append(1)
        return sent

    def encode(self, batch: SampleBatch, device: _Device | None = None) -> bytes:
        """The JSON payload of one batch (all rows from one device)."""
        if device is None:
            device = self._devices[batch.source]
        tags = batch.tags
        cached = device.cached_tags
        if cached is None or len(cached) != len(tags) or not np.array_equal(cached, tags):
            keys = self._alias[tags] if self._by_alias else self._names[tags].tolist()
            device.cached_keys = _compact(orjson.dumps(keys, option=_NUMPY))
            device.cached_tags = tags.copy()
        stamps = batch.timestamps
        newest = int(stamps.max())
        parts = [
            b'{"device":',
            orjson.dumps(device.name),
            b',"ts":',
            str(newest // 1_000_000).encode(),
        ]
        if int(stamps.min()) != newest:
            parts += [b',"ts_each":', orjson.dumps(stamps // 1_000_000, option=_NUMPY)]
        parts += [b",", self._key_field, device.cached_keys, b',"values":', self._values(batch)]
        codes = batch.quality
        if codes.any():
            parts += [b',"quality":', self._qualities(batch)]
        parts.append(b"}")
        return b"".join(parts)

    def _values(self, batch: SampleBatch) -> bytes:
        values = batch.values
        tags = batch.tags
        if batch.objects is None:
            if self._int_like[tags].all() and not np.isnan(values).any():
                if self._bool_like[tags].any():
                    return orjson.dumps(self._mixed(batch))
                return orjson.dumps(values.astype(np.int64), option=_NUMPY)
            if not self._bool_like[tags].any() and not self._int_like[tags].any():
                return orjson.dumps(values, option=_NUMPY)
        return orjson.dumps(self._mixed(batch), default=str)

    def _mixed(self, batch: SampleBatch) -> list[object]:
        """Values as Python objects (strings, booleans and integers kept as such)."""
        out: list[object] = batch.values.tolist()
        tags = batch.tags.tolist()
        objects = batch.objects
        for row, value in enumerate(out):
            if objects is not None and objects[row] is not None:
                out[row] = objects[row]
            elif value != value:  # NaN: no value
                out[row] = None
            elif self._bool_like[tags[row]]:
                out[row] = bool(value)
            elif self._int_like[tags[row]] and isinstance(value, float) and value.is_integer():
                out[row] = int(value)
        return out

    def _qualities(self, batch: SampleBatch) -> bytes:
        rows = np.flatnonzero(batch.quality)
        marks: dict[object, str] = {}
        keys = batch.tags[rows]
        labels = self._alias[keys].tolist() if self._by_alias else self._names[keys].tolist()
        for label, code in zip(labels, batch.quality[rows].tolist(), strict=True):
            name = self._quality_names.get(code)
            if name is None:
                name = self._quality_names[code] = quality.describe(code)
            marks[str(label)] = name
        return orjson.dumps(marks)

    def publish_documents(self, link: Link, documents: Sequence[Document]) -> int:
        if not self.config.events:
            return 0
        for doc in documents:
            payload = orjson.dumps({"kind": doc.kind, "key": doc.key, **doc.body}, default=str)
            link.send(encode_topic(event_topic(self.root, doc.cell, doc.kind)), payload, 1, False)
        return len(documents)


def _compact(data: bytes) -> bytes:
    """A right-sized copy: orjson's result keeps its whole growth buffer (256 KiB for a 40 KB
    document), which matters for what is kept for the life of the output."""
    return bytes(memoryview(data))


def _int_like(data_type: DataType, scale: float, offset: float) -> bool:
    """Values of this tag are whole numbers (or booleans) as published."""
    return (data_type.is_integer and scale == 1 and offset == 0) or data_type is DataType.BOOL
