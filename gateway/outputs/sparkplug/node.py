"""The Sparkplug B 3.0 payload mode: this gateway as an edge node, each PLC as a device.

Topics: ``spBv1.0/<group>/<type>/<edge node>[/<device>]``. The session, as the specification
orders it:

1. CONNECT (clean start) with the will NDEATH carrying ``bdSeq`` (0-255, one more on every
   connect, kept in a file so a restart does not reuse the last one).
2. Subscribe to NCMD and DCMD of this node and, when ``primary_host_id`` is set, to
   ``spBv1.0/STATE/<host>``; wait until the host says ``{"online": true}`` (stale STATE
   messages, older than the last one seen, are ignored). Meanwhile data goes to the buffer.
3. NBIRTH (``seq`` 0, ``bdSeq``, ``Node Control/Rebirth`` = false), then a DBIRTH per device
   with every metric: name, alias, data type and current value (or ``is_null``).
4. DDATA by exception: only changed metrics, by alias, each with its source timestamp;
   ``seq`` runs 0-255 over every message but NDEATH and is set as a message is written out.
5. On NCMD ``Node Control/Rebirth`` = true: NBIRTH (same ``bdSeq``, ``seq`` 0) and every
   DBIRTH again. On STATE offline of the primary host: NDEATH, disconnect, start over.
6. Data buffered during an outage is replayed after the births with every metric
   ``is_historical`` = true.
7. DCMD metrics (by name or alias) are write requests for the device's tags (see
   :mod:`gateway.outputs.commands`); anything else is refused and logged.

Aliases are the tag's table index + 1. Metric names are the tag names (``Measurements[3]``);
when two PLCs share a Sparkplug device id (``device_id: cell``), ``<device>/<tag>``.
"""

from __future__ import annotations

__all__ = ["SparkplugMode"]

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray

from gateway.batch import SampleBatch, now_ns
from gateway.config.model import Location
from gateway.config.outputs import MqttOutputConfig
from gateway.documents import Document
from gateway.outputs.buffer import Record
from gateway.outputs.commands import CommandExecutor, CommandResult
from gateway.outputs.link import Link
from gateway.outputs.mqtt_client import MqttSettings, ReceivedMessage, encode_topic
from gateway.outputs.sparkplug import sparkplug_b_pb2 as pb
from gateway.outputs.sparkplug.payload import (
    append_seq,
    metric_value,
    set_historical,
    sparkplug_type,
    write_quality,
    write_value,
)
from gateway.outputs.uns import event_topic, json_historical
from gateway.pipeline.last_values import LastValues
from gateway.tags import TagTable

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
_UNSAFE = re.compile(r"[+#/\s]")


def sparkplug_id(name: str) -> str:
    """A group, node or device id without ``+ # /`` or white space."""
    return _UNSAFE.sub("_", name) or "_"


class SparkplugMode:
    """Births, deaths, DDATA by exception, rebirth, primary host STATE, DCMD writes."""

    def __init__(
        self,
        config: MqttOutputConfig,
        table: TagTable,
        *,
        gateway_id: str,
        location: Location,
        cells: Mapping[str, str],
        base_settings: MqttSettings,
        commands: CommandExecutor,
        selected: NDArray[np.bool_],
        state_dir: Path,
    ) -> None:
        sp = config.sparkplug
        self.config = config
        self.table = table
        self.commands = commands
        self.group = sp.group_id or sparkplug_id(location.site)
        self.node = sp.edge_node_id or sparkplug_id(gateway_id)
        self.host = sp.primary_host_id
        prefix = f"{NAMESPACE}/{self.group}"
        self.nbirth_topic = f"{prefix}/NBIRTH/{self.node}"
        self.ndeath_topic = f"{prefix}/NDEATH/{self.node}"
        self.ncmd_topic = f"{prefix}/NCMD/{self.node}"
        self.dcmd_prefix = f"{prefix}/DCMD/{self.node}/"
        self.state_topic = f"{NAMESPACE}/STATE/{self.host}" if self.host else None
        self.events_root = (config.topic_root or location.path).rstrip("/")
        self._base = base_settings
        self._bdseq_file = state_dir / "sparkplug-bdseq"
        self.bd_seq = -1
        self.seq = 0
        self.born = False
        self._host_timestamp = -1

        device_ids: list[str] = []
        device_of = np.full(len(table), -1, np.int32)
        members: dict[str, list[int]] = {}
        for info in table.infos:
            if not selected[info.index]:
                continue
            plc = cells.get(info.device, info.device) if sp.device_id == "cell" else info.device
            device_id = sparkplug_id(plc)
            if device_id not in members:
                members[device_id] = []
                device_ids.append(device_id)
            members[device_id].append(info.index)
            device_of[info.index] = device_ids.index(device_id)
        self.device_ids = device_ids
        self.members = [members[d] for d in device_ids]
        self.device_of = device_of
        self.types = [sparkplug_type(info) for info in table.infos]
        self.names: list[str] = [info.name for info in table.infos]
        for indices in self.members:
            devices_here = {table[i].device for i in indices}
            if len(devices_here) > 1:
                for i in indices:
                    self.names[i] = f"{table[i].device}/{table[i].name}"
        self.by_name = {
            (device_ids[device_of[i]], self.names[i]): i for d in self.members for i in d
        }
        self.dbirth_topics = [f"{prefix}/DBIRTH/{self.node}/{d}" for d in device_ids]
        self.ddata_topics = [encode_topic(f"{prefix}/DDATA/{self.node}/{d}") for d in device_ids]
        self.last = LastValues(table)

    # --- link hooks ---------------------------------------------------------------------------

    def prepare(self, payload: bytes) -> bytes:
        return append_seq(payload, self._next_seq())

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (seq + 1) & 0xFF
        return seq

    async def settings(self) -> MqttSettings:
        """Next bdSeq (persisted), and the NDEATH carrying it as the will."""
        if self.bd_seq < 0:
            self.bd_seq = await asyncio.to_thread(self._load_bdseq)
        else:
            self.bd_seq = (self.bd_seq + 1) & 0xFF
        await asyncio.to_thread(self._save_bdseq, self.bd_seq)
        return replace(
            self._base,
            clean_start=True,
            session_expiry=0,
            will_topic=self.ndeath_topic,
            will_payload=self._ndeath(),
            will_retain=False,
            will_qos=1,
        )

    def _load_bdseq(self) -> int:
        try:
            return (int(self._bdseq_file.read_text("ascii").strip()) + 1) & 0xFF
        except (OSError, ValueError):
            return 0

    def _save_bdseq(self, value: int) -> None:
        try:
            self._bdseq_file.parent.mkdir(parents=True, exist_ok=True)
            self._bdseq_file.write_text(f"{value}\n", "ascii")
        except OSError as exc:
            log.warning("cannot keep the Sparkplug bdSeq in %s: %s", self._bdseq_file, exc)

    def _ndeath(self) -> bytes:
        payload = pb.Payload()
        payload.timestamp = now_ns() // 1_000_000
        metric = payload.metrics.add()
        metric.name = "bdSeq"
        metric.datatype = pb.Int64
        metric.timestamp = payload.timestamp
        metric.long_value = self.bd_seq
        data: bytes = payload.SerializeToString()
        return data

    async def on_connected(self, link: Link) -> None:
        self.born = False
        link.subscribe(self.ncmd_topic, 1)
        link.subscribe(self.dcmd_prefix + "+", 1)
        if self.state_topic is not None:
            link.subscribe(self.state_topic, 1)
            log.info("%s: waiting for primary host %s to be online", link.name, self.host)
            return
        self.birth(link)

    def birth(self, link: Link) -> None:
        """NBIRTH and every DBIRTH (on connect, and on a rebirth request)."""
        stamp_ms = now_ns() // 1_000_000
        self.seq = 0
        node = pb.Payload()
        node.timestamp = stamp_ms
        node.seq = self._next_seq()
        bd = node.metrics.add()
        bd.name, bd.datatype, bd.timestamp, bd.long_value = "bdSeq", pb.Int64, stamp_ms, self.bd_seq
        rebirth = node.metrics.add()
        rebirth.name, rebirth.datatype, rebirth.timestamp = REBIRTH, pb.Boolean, stamp_ms
        rebirth.boolean_value = False
        link.publish_direct(self.nbirth_topic, node.SerializeToString(), 0, False)
        last = self.last
        for topic, indices in zip(self.dbirth_topics, self.members, strict=True):
            device = pb.Payload()
            device.timestamp = stamp_ms
            device.seq = self._next_seq()
            for index in indices:
                metric = device.metrics.add()
                metric.name = self.names[index]
                metric.alias = index + 1
                metric.datatype = self.types[index]
                stamp = int(last.timestamps[index])
                metric.timestamp = stamp // 1_000_000 if stamp else stamp_ms
                value = last.objects[index]
                write_value(
                    metric, self.types[index], value if value is not None else last.values[index]
                )
                if stamp:
                    write_quality(metric, int(last.quality[index]))
            link.publish_direct(topic, device.SerializeToString(), 0, False)
        self.born = True
        link.set_ready()
        log.info(
            "%s: Sparkplug NBIRTH %s (bdSeq %d) and %d DBIRTH",
            link.name,
            self.node,
            self.bd_seq,
            len(self.dbirth_topics),
        )

    def before_close(self, link: Link) -> None:
        link.publish_direct(self.ndeath_topic, self._ndeath(), 1, False)

    def historical(self, record: Record) -> Record:
        if record.plain:
            return json_historical(record)
        return Record(record.topic, set_historical(record.payload), record.qos, False)

    # --- data ---------------------------------------------------------------------------------

    def write(self, link: Link, batch: SampleBatch) -> int:
        """One DDATA per device in the batch; returns the number of messages."""
        self.last.update(batch)
        devices = self.device_of[batch.tags]
        if len(devices) == 0:
            return 0
        first = int(devices[0])
        groups: list[tuple[int, NDArray[np.intp] | None]]
        if (devices == first).all():
            groups = [(first, None)] if first >= 0 else []
        else:
            groups = [(int(d), np.flatnonzero(devices == d)) for d in np.unique(devices) if d >= 0]
        historical = not link.ready
        for device, rows in groups:
            payload = self._ddata(batch, rows, historical)
            if historical:
                link.buffer.append((Record(self.ddata_topics[device], payload, 0, False),))
            else:
                link.send(self.ddata_topics[device], payload, 0, False)
        return len(groups)

    def _ddata(self, batch: SampleBatch, rows: NDArray[np.intp] | None, historical: bool) -> bytes:
        payload = pb.Payload()
        payload.timestamp = now_ns() // 1_000_000
        tags = (batch.tags if rows is None else batch.tags[rows]).tolist()
        values = (batch.values if rows is None else batch.values[rows]).tolist()
        codes = (batch.quality if rows is None else batch.quality[rows]).tolist()
        stamps = (batch.timestamps if rows is None else batch.timestamps[rows]).tolist()
        objects = None
        if batch.objects is not None:
            objects = (batch.objects if rows is None else batch.objects[rows]).tolist()
        types = self.types
        add = payload.metrics.add
        for row, tag in enumerate(tags):
            metric = add()
            metric.alias = tag + 1
            metric.timestamp = stamps[row] // 1_000_000
            if historical:
                metric.is_historical = True
            value = objects[row] if objects is not None and objects[row] is not None else None
            write_value(metric, types[tag], values[row] if value is None else value)
            if codes[row]:
                write_quality(metric, codes[row])
        data: bytes = payload.SerializeToString()
        return data

    def publish_documents(self, link: Link, documents: Sequence[Document]) -> int:
        """Events stay JSON on the UNS event topics (Sparkplug has no event messages)."""
        if not self.config.events:
            return 0
        for doc in documents:
            payload = orjson.dumps({"kind": doc.kind, "key": doc.key, **doc.body}, default=str)
            topic = encode_topic(event_topic(self.events_root, doc.cell, doc.kind))
            link.send(topic, payload, 1, False, plain=True)
        return len(documents)

    # --- received messages ------------------------------------------------------------------

    def on_message(self, link: Link, message: ReceivedMessage) -> None:
        topic = message.topic
        if topic == self.state_topic:
            self._on_state(link, message.payload)
        elif topic == self.ncmd_topic:
            self._on_ncmd(link, message.payload)
        elif topic.startswith(self.dcmd_prefix):
            self._on_dcmd(topic[len(self.dcmd_prefix) :], message.payload)

    def _on_state(self, link: Link, payload: bytes) -> None:
        try:
            state = orjson.loads(payload)
            online = state["online"]
            timestamp = int(state.get("timestamp", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("%s: ignoring a STATE message that is not Sparkplug 3.0 JSON", link.name)
            return
        if timestamp < self._host_timestamp:
            return  # an older state (a late will): ignore
        self._host_timestamp = timestamp
        if online is True and not self.born:
            self.birth(link)
        elif online is False and self.born:
            log.warning(
                "%s: primary host %s went offline: NDEATH and reconnect", link.name, self.host
            )
            link.set_unready()
            self.before_close(link)
            self.born = False
            link.drop_connection(f"primary host {self.host} offline")

    def _on_ncmd(self, link: Link, data: bytes) -> None:
        payload = pb.Payload()
        try:
            payload.ParseFromString(data)
        except Exception:  # protobuf's DecodeError: a library error converted at the boundary
            log.warning("%s: NCMD is not a Sparkplug B payload: refused", link.name)
            return
        for metric in payload.metrics:
            if metric.name == REBIRTH and metric.WhichOneof("value") == "boolean_value":
                if metric.boolean_value:
                    log.info("%s: rebirth requested (NCMD)", link.name)
                    if self.born or self.state_topic is None:
                        self.birth(link)
                continue
            log.warning(
                "%s: NCMD metric %r is not supported: refused",
                link.name,
                metric.name or f"alias {metric.alias}",
            )

    def _on_dcmd(self, device_id: str, data: bytes) -> None:
        payload = pb.Payload()
        try:
            payload.ParseFromString(data)
        except Exception:  # protobuf's DecodeError: a library error converted at the boundary
            self.commands.refuse(device_id, None, "DCMD is not a Sparkplug B payload")
            return
        for metric in payload.metrics:
            index = self._metric_index(device_id, metric)
            label = f"{device_id}/{metric.name or f'alias {metric.alias}'}"
            if index is None:
                self.commands.refuse(label, None, "no such metric on this device")
                continue
            value = metric_value(metric, self.types[index])
            if value is None:
                self.commands.refuse(self.table[index].id, None, "DCMD metric without a value")
                continue
            self.commands.submit(index, value, _log_result)

    def _metric_index(self, device_id: str, metric: pb.Payload.Metric) -> int | None:
        if metric.name:
            return self.by_name.get((device_id, metric.name))
        if metric.HasField("alias"):
            index = int(metric.alias) - 1
            if 0 <= index < len(self.table):
                device = int(self.device_of[index])
                if device >= 0 and self.device_ids[device] == device_id:
                    return index
        return None


def _log_result(result: CommandResult) -> None:
    """Sparkplug has no reply topic: the new value comes back in DDATA; the executor logs."""
    return None
