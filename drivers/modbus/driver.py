"""The Modbus TCP driver: polls planned reads on the clock and emits one batch per group cycle.

Each poll group runs on its own schedule (``start + k × interval``); a cycle that overran its slot
skips the missed slots and counts them rather than piling up. A Modbus exception answer marks the
read's tags bad with the exception's name and polling goes on; a timeout or a lost connection
raises :class:`~gateway.errors.NotConnectedError`, and the supervisor marks the device's tags bad
and reconnects with backoff (pymodbus' own reconnect is off).
"""

from __future__ import annotations

__all__ = ["ModbusTcpDriver"]

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.modbus.codec import BlockDecoder, encode_value
from drivers.modbus.config import ModbusTable, ModbusTag, ModbusTcpDevice
from drivers.modbus.errors import exception_reason
from drivers.modbus.plan import PlannedRead, plan_reads
from gateway import quality
from gateway.batch import SampleBatch, now_ns
from gateway.errors import DeviceError, NotConnectedError, WriteRefusedError
from gateway.metrics import Metrics
from gateway.runtime.interfaces import BatchSink
from gateway.tags import TagInfo, TagTable


@dataclass(frozen=True, slots=True)
class _Read:
    plan: PlannedRead
    decoder: BlockDecoder
    slice: slice
    """Where the read's elements sit in the group's batch."""


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    interval: float
    reads: tuple[_Read, ...]
    tags: NDArray[np.int32]
    has_strings: bool


class ModbusTcpDriver:
    """Reads (and writes) one Modbus TCP device."""

    def __init__(self, config: ModbusTcpDevice, table: TagTable, metrics: Metrics) -> None:
        self.name = config.name
        self.config = config
        self._metrics = metrics
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._tags_by_index: dict[int, ModbusTag] = {}
        groups = []
        for group in config.poll_groups:
            elements: list[tuple[int, ModbusTag, int]] = []
            for tag in config.tags:
                if tag.poll_group != group.name:
                    continue
                indices = table.indices(f"{config.name}/{tag.name}")
                for element, index in enumerate(indices.tolist()):
                    elements.append((index, tag, element))
                    self._tags_by_index[index] = tag
            if not elements:
                continue
            plan = plan_reads(
                elements,
                max_registers=config.max_registers,
                max_bits=config.max_bits,
                max_gap=config.max_gap,
            )
            reads, position = [], 0
            for read in plan:
                decoder = BlockDecoder(list(read.elements), config.word_order)
                n = len(read.elements)
                reads.append(_Read(read, decoder, slice(position, position + n)))
                position += n
            tags = np.concatenate([r.decoder.tag_indices for r in reads])
            has_strings = any(e.tag.type.value == "string" for r in reads for e in r.plan.elements)
            groups.append(_Group(group.name, group.interval, tuple(reads), tags, has_strings))
        self.groups: tuple[_Group, ...] = tuple(groups)
        self.tag_indices = (
            np.concatenate([g.tags for g in groups]) if groups else np.empty(0, np.int32)
        )
        self._poll_duration = metrics.poll_duration.labels(config.name)
        self._samples = metrics.samples_read.labels(config.name)

    @property
    def plan(self) -> list[PlannedRead]:
        """Every planned read of every poll group."""
        return [read.plan for group in self.groups for read in group.reads]

    async def connect(self) -> None:
        c = self.config
        client = AsyncModbusTcpClient(
            c.host, port=c.port, timeout=c.timeout, retries=0, reconnect_delay=0
        )
        self._client = client
        try:
            connected = await asyncio.wait_for(client.connect(), c.timeout + 1)
        except (TimeoutError, OSError, ModbusException) as exc:
            raise NotConnectedError(
                f"{self.name}: cannot connect to {c.host}:{c.port}: {exc}"
            ) from exc
        if not connected:
            raise NotConnectedError(f"{self.name}: cannot connect to {c.host}:{c.port}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def run(self, sink: BatchSink) -> None:
        async with asyncio.TaskGroup() as group_tasks:
            for group in self.groups:
                group_tasks.create_task(self._poll_forever(group, sink))

    async def poll_once(self) -> list[SampleBatch]:
        """Read every poll group once (commissioning: ``edge-gateway read``)."""
        return [await self._poll(group) for group in self.groups]

    async def _poll_forever(self, group: _Group, sink: BatchSink) -> None:
        missed = self._metrics.polls_missed.labels(self.name, group.name)
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            elif now - next_at >= group.interval:
                skipped = int((now - next_at) // group.interval)
                missed.inc(skipped)
                next_at += skipped * group.interval
            started = time.monotonic()
            sink(await self._poll(group))
            self._poll_duration.observe(time.monotonic() - started)
            next_at += group.interval

    async def _poll(self, group: _Group) -> SampleBatch:
        client = self._client
        if client is None:
            raise NotConnectedError(f"{self.name}: not connected")
        stamp = now_ns()
        n = len(group.tags)
        values = np.full(n, np.nan)
        codes = np.zeros(n, np.uint16)
        objects = np.full(n, None, object) if group.has_strings else None
        unit = self.config.unit
        for read in group.reads:
            plan = read.plan
            try:
                async with self._lock:
                    response = await _request(client, plan.table, plan.start, plan.count, unit)
            except ModbusException as exc:
                raise NotConnectedError(f"{self.name}: {exc}") from exc
            if response.isError():
                code = int(getattr(response, "exception_code", 0))
                codes[read.slice] = quality.bad(exception_reason(code))
                continue
            if plan.table.is_bits:
                decoded = read.decoder.decode_bits(
                    np.asarray(response.bits[: plan.count], np.bool_)
                )
            else:
                decoded = read.decoder.decode_registers(np.asarray(response.registers, np.uint16))
            values[read.slice] = decoded.values
            if decoded.objects is not None and objects is not None:
                objects[read.slice] = decoded.objects
        self._samples.inc(n)
        return SampleBatch(
            self.name, group.tags, values, codes, np.full(n, stamp, np.int64), objects
        )

    async def write(self, tag: TagInfo, value: object) -> None:
        """Write one value (FC 5, 6, 15 or 16), validated before anything is sent."""
        config = self._tags_by_index.get(tag.index)
        if config is None:
            raise WriteRefusedError(tag.id, "the tag does not belong to this device")
        if not config.writable:
            raise WriteRefusedError(tag.id, "the tag is not writable")
        encoded = encode_value(config, value, self.config.word_order)
        element = tag.element or 0
        address = config.address + element * config.registers_per_element
        client = self._client
        if client is None:
            raise NotConnectedError(f"{self.name}: not connected")
        unit = self.config.unit
        try:
            async with self._lock:
                if isinstance(encoded, bool):
                    response = await client.write_coil(address, encoded, device_id=unit)
                elif len(encoded) == 1:
                    response = await client.write_register(address, encoded[0], device_id=unit)
                else:
                    response = await client.write_registers(address, encoded, device_id=unit)
        except ModbusException as exc:
            raise NotConnectedError(f"{self.name}: {exc}") from exc
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise DeviceError(self.name, f"write to {tag.id}: {exception_reason(code)}", code=code)


async def _request(
    client: AsyncModbusTcpClient, table: ModbusTable, start: int, count: int, unit: int
) -> ModbusPDU:
    if table is ModbusTable.HOLDING:
        return await client.read_holding_registers(start, count=count, device_id=unit)
    if table is ModbusTable.INPUT:
        return await client.read_input_registers(start, count=count, device_id=unit)
    if table is ModbusTable.COIL:
        return await client.read_coils(start, count=count, device_id=unit)
    return await client.read_discrete_inputs(start, count=count, device_id=unit)
