"""The Modbus driver (TCP, RTU over a serial line, RTU over TCP): polls planned reads on the clock
and emits one batch per poll group cycle.

* Each poll group runs on its own schedule (``start + k × interval``); a cycle that overran its
  slot skips the missed slots and counts them rather than piling up.
* A poll submits all the group's reads to the device's link at once and is woken once, when all
  answers are in; the answers are decoded together with numpy (:mod:`drivers.modbus.group`).
* A Modbus exception answer marks that read's tags bad with the exception's name. "Illegal data
  address" for a merged read starts a search: the read is split in halves until the bad
  addresses are found; they are remembered (and retried after `bad_range_retry`), the good tags
  are read around them, and tags that are themselves bad stay bad.
* A timeout marks the read's tags bad ("timeout") and backs the device off (polled less often,
  up to `backoff_max`), so the other devices on a shared line keep their rate. A lost connection
  raises :class:`~gateway.errors.NotConnectedError`: the supervisor marks the tags bad and
  reconnects with backoff (there is no other retry loop).
"""

from __future__ import annotations

__all__ = ["GroupStats", "ModbusDriver", "ModbusTcpDriver"]

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from drivers.modbus.config import ModbusDevice, ModbusTable, ModbusTag
from drivers.modbus.errors import (
    exception_reason,
)
from drivers.modbus.group import GroupDecoder
from drivers.modbus.link import ModbusLink
from drivers.modbus.metrics import ModbusMetrics
from drivers.modbus.pdu import exception_code, read_payload, read_pdu, unpack_bits
from drivers.modbus.plan import Element, PlannedRead, minimum_reads, plan_reads, split_read
from drivers.modbus.pool import pool_for
from drivers.modbus.write import write_tag
from gateway import quality
from gateway.batch import SampleBatch, now_ns
from gateway.errors import NotConnectedError, WriteRefusedError
from gateway.metrics import Metrics
from gateway.runtime.interfaces import BatchSink
from gateway.tags import TagInfo, TagTable

log = logging.getLogger(__name__)

_TIMEOUT = quality.bad("timeout")
_MALFORMED = quality.bad("malformed Modbus answer")
_ILLEGAL_ADDRESS = 2
_ILLEGAL_VALUE = 3
_DISCOVERY_BUDGET = 64
"""Requests one search for bad addresses may send."""
_LATENESS_SAMPLES = 4096


@dataclass(slots=True)
class GroupStats:
    """How one poll group keeps its schedule."""

    cycles: int = 0
    missed: int = 0
    backed_off: int = 0
    lateness: NDArray[np.float64] = field(default_factory=lambda: np.zeros(_LATENESS_SAMPLES))
    """Seconds between the scheduled and the actual start of recent cycles (a ring)."""

    def reset(self) -> None:
        self.cycles = self.missed = self.backed_off = 0

    def record(self, late: float) -> None:
        self.lateness[self.cycles % _LATENESS_SAMPLES] = late
        self.cycles += 1

    def recent_lateness(self) -> NDArray[np.float64]:
        return self.lateness[: min(self.cycles, _LATENESS_SAMPLES)]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A poll group's compiled reads."""

    reads: tuple[PlannedRead, ...]
    decoder: GroupDecoder
    pdus: list[bytes]
    fillers: list[bytes]
    """Zero bytes standing in for a failed register read's answer."""
    tags: NDArray[np.int32]
    """Decoded rows first, then the known-bad elements."""
    bad_codes: NDArray[np.uint16]


@dataclass(slots=True)
class _Group:
    name: str
    interval: float
    elements: list[Element]
    plan: _Plan
    stats: GroupStats = field(default_factory=GroupStats)


class ModbusDriver:
    """Reads (and writes) one Modbus device: one unit on a TCP connection or serial line."""

    def __init__(
        self,
        config: ModbusDevice,
        table: TagTable,
        metrics: Metrics,
        *,
        link: ModbusLink | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.link = link or pool_for(table).link(config)
        self._metrics = metrics
        modbus_metrics = ModbusMetrics.of(metrics)
        self._m_ok = modbus_metrics.requests.labels(config.name, "ok")
        self._m_exception = modbus_metrics.requests.labels(config.name, "exception")
        self._m_timeout = modbus_metrics.requests.labels(config.name, "timeout")
        self._m_malformed = modbus_metrics.requests.labels(config.name, "malformed")
        self._m_backoff = modbus_metrics.backoff_skips.labels(config.name)
        self._m_bad_ranges = modbus_metrics.bad_ranges.labels(config.name)
        self._poll_duration = metrics.poll_duration.labels(config.name)
        self._samples = metrics.samples_read.labels(config.name)
        self._acquired = False
        self._tags_by_index: dict[int, ModbusTag] = {}
        self._forbidden: dict[ModbusTable, list[tuple[int, int]]] = {}
        self._bad: dict[int, int] = {}
        """Elements that answered "illegal data address" on their own: tag index → quality."""
        self._forbidden_since: float | None = None
        self._failures = 0
        self._backoff_until = 0.0
        self._hinted = False
        elements_by_group: dict[str, list[Element]] = {g.name: [] for g in config.poll_groups}
        for tag in config.tags:
            indices = table.indices(f"{config.name}/{tag.name}")
            for element, index in enumerate(indices.tolist()):
                elements_by_group[tag.poll_group].append((index, tag, element))
                self._tags_by_index[index] = tag
        self.groups: tuple[_Group, ...] = tuple(
            _Group(
                g.name,
                g.interval,
                elements_by_group[g.name],
                self._compile(elements_by_group[g.name]),
            )
            for g in config.poll_groups
            if elements_by_group[g.name]
        )
        self.tag_indices: NDArray[np.int32] = (
            np.concatenate([g.plan.tags for g in self.groups])
            if self.groups
            else np.empty(0, np.int32)
        )

    # ------------------------------------------------------------------ planning
    def _compile(self, elements: list[Element]) -> _Plan:
        c = self.config
        good = [e for e in elements if e[0] not in self._bad]
        reads = plan_reads(
            good,
            max_registers=c.max_registers,
            max_bits=c.max_bits,
            max_gap=c.max_gap,
            max_bit_gap=c.max_bit_gap,
            forbidden=self._forbidden,
        )
        decoder = GroupDecoder(reads, c.word_order)
        bad = [e[0] for e in elements if e[0] in self._bad]
        return _Plan(
            tuple(reads),
            decoder,
            [_read_pdu(r) for r in reads],
            [b"\0" * (2 * r.count) for r in reads],
            np.concatenate([decoder.tag_indices, np.array(bad, np.int32)]).astype(np.int32),
            np.array([self._bad[i] for i in bad], np.uint16),
        )

    def _replan(self) -> None:
        for group in self.groups:
            group.plan = self._compile(group.elements)
        self._m_bad_ranges.set(sum(len(r) for r in self._forbidden.values()))

    @property
    def plan(self) -> list[PlannedRead]:
        """Every planned read of every poll group."""
        return [read for group in self.groups for read in group.plan.reads]

    def plan_summary(self) -> dict[str, Any]:
        """The request plan per poll group, with the minimum possible number of reads."""
        c = self.config
        groups = []
        for group in self.groups:
            reads = group.plan.reads
            try:
                minimum: int | None = minimum_reads(
                    [e for e in group.elements if e[0] not in self._bad],
                    max_registers=c.max_registers,
                    max_bits=c.max_bits,
                    max_gap=c.max_gap,
                    max_bit_gap=c.max_bit_gap,
                    forbidden=self._forbidden,
                )
            except ValueError:
                minimum = None  # overlapping tags: no independent reference
            groups.append(
                {
                    "name": group.name,
                    "interval": group.interval,
                    "requests": len(reads),
                    "minimum_requests": minimum,
                    "registers": sum(r.count for r in reads),
                    "wasted": sum(r.wasted for r in reads),
                    "reads": [r.describe() for r in reads],
                }
            )
        return {
            "device": self.name,
            "link": self.link.settings.describe(),
            "unit": c.unit,
            "groups": groups,
            "bad_ranges": [
                f"{table.value} {start}..{end - 1}" if end > start else f"{table.value} |{start}"
                for table, ranges in self._forbidden.items()
                for start, end in ranges
            ],
        }

    def describe_plan(self) -> list[str]:
        """The plan as lines of text (``edge-gateway read``)."""
        summary = self.plan_summary()
        lines = [f"{self.name}: unit {summary['unit']} on {summary['link']}"]
        for group in summary["groups"]:
            minimum = group["minimum_requests"]
            best = "" if minimum is None else f" (minimum {minimum})"
            lines.append(
                f"  group {group['name']} every {group['interval']:g} s: "
                f"{group['requests']} requests{best}, {group['registers']} registers/bits read, "
                f"{group['wasted']} wasted to gaps"
            )
            lines += [f"    {read}" for read in group["reads"]]
        for bad in summary["bad_ranges"]:
            lines.append(f"  answers 'illegal data address' for {bad}: left out of reads")
        return lines

    def poll_stats(self) -> dict[str, GroupStats]:
        return {group.name: group.stats for group in self.groups}

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        if not self._acquired:
            await self.link.acquire()
            self._acquired = True
        elif not self.link.connected:
            self.link.release()
            self._acquired = False
            await self.link.acquire()
            self._acquired = True
        self._failures = 0
        self._backoff_until = 0.0

    async def close(self) -> None:
        if self._acquired:
            self._acquired = False
            self.link.release()

    async def run(self, sink: BatchSink) -> None:
        """Poll every group on its schedule until cancelled; raises when the link is lost."""
        tasks = [
            asyncio.create_task(self._poll_forever(group, sink), name=f"{self.name}:{group.name}")
            for group in self.groups
        ]
        if not tasks:
            await asyncio.Event().wait()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first failure
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def poll_once(self) -> list[SampleBatch]:
        """Read every poll group once, ignoring back-off (``edge-gateway read``)."""
        return [await self._poll(group) for group in self.groups]

    async def _poll_forever(self, group: _Group, sink: BatchSink) -> None:
        loop = asyncio.get_running_loop()
        missed = self._metrics.polls_missed.labels(self.name, group.name)
        interval = group.interval
        stats = group.stats
        # cycles start on multiples of the interval on the wall clock (like Telegraf's
        # round_interval): samples of all devices line up, and nothing drifts
        next_at = loop.time() + (-time.time()) % interval
        while True:
            now = loop.time()
            if now < next_at:
                await asyncio.sleep(next_at - now)
                now = loop.time()
            late = now - next_at
            if late >= interval:
                skipped = int(late // interval)
                missed.inc(skipped)
                stats.missed += skipped
                next_at += skipped * interval
                late = now - next_at
            stats.record(late)
            next_at += interval
            if now < self._backoff_until:
                stats.backed_off += 1
                self._m_backoff.inc()
                continue
            batch = await self._poll(group)
            self._poll_duration.observe(loop.time() - now)
            sink(batch)
            if not self.link.connected:  # a TCP link closes itself when nothing answers
                raise NotConnectedError(f"{self.name}: no answer; reconnecting")

    # ------------------------------------------------------------------ polling
    async def _poll(self, group: _Group, *, again: bool = True) -> SampleBatch:
        self._retry_bad_ranges()
        plan = group.plan
        stamp = now_ns()
        c = self.config
        results = await self.link.submit(c.unit, plan.pdus, c.timeout)
        slots = plan.decoder.slots
        chunks: list[bytes] = []
        bit_chunks: list[NDArray[np.bool_]] = []
        codes: NDArray[np.uint16] | None = None
        search: list[PlannedRead] = []
        ok = timeouts = 0
        for index, result in enumerate(results):
            slot = slots[index]
            read = slot.read
            if type(result) is bytes:
                code = exception_code(result)
                if code is None:
                    payload = read_payload(result, read.table, read.count)
                    if payload is not None:
                        ok += 1
                        if read.table.is_bits:
                            bit_chunks.append(unpack_bits(payload, read.count))
                        else:
                            chunks.append(payload)
                        continue
                    self._m_malformed.inc()
                    reason = _MALFORMED
                else:
                    self._m_exception.inc()
                    if code == _ILLEGAL_ADDRESS:
                        search.append(read)
                    elif code == _ILLEGAL_VALUE and read.count > 1:
                        self._hint_read_length(read)
                    reason = quality.bad(exception_reason(code))
            elif isinstance(result, NotConnectedError):
                raise NotConnectedError(f"{self.name}: {result}")
            else:
                timeouts += 1
                reason = _TIMEOUT
            if codes is None:
                codes = np.zeros(len(plan.tags), np.uint16)
            codes[slot.rows] = reason
            if read.table.is_bits:
                bit_chunks.append(np.zeros(read.count, np.bool_))
            else:
                chunks.append(plan.fillers[index])
        if ok:
            self._m_ok.inc(ok)
        if timeouts:
            self._m_timeout.inc(timeouts)
            self._back_off(group)
        elif ok:
            self._failures = 0
        if search and again and await self._search(search):
            self._replan()
            return await self._poll(group, again=False)
        registers = np.frombuffer(b"".join(chunks), ">u2")
        bits = np.concatenate(bit_chunks) if bit_chunks else None
        decoded = plan.decoder.decode(registers, bits)
        values, objects = decoded.values, decoded.objects
        n_bad = len(plan.bad_codes)
        if n_bad:
            values = np.concatenate([values, np.full(n_bad, np.nan)])
            if objects is not None:
                objects = np.concatenate([objects, np.full(n_bad, None, object)])
            if codes is None:
                codes = np.zeros(len(plan.tags), np.uint16)
            codes[len(plan.tags) - n_bad :] = plan.bad_codes
        if codes is None:
            codes = np.zeros(len(plan.tags), np.uint16)
        else:
            failed = codes != 0
            values[failed] = np.nan
            if objects is not None:
                objects[failed] = None
        self._samples.inc(len(plan.tags))
        return SampleBatch(
            self.name,
            plan.tags,
            values,
            codes,
            np.full(len(plan.tags), stamp, np.int64),
            objects,
        )

    def _back_off(self, group: _Group) -> None:
        """Poll a device that keeps timing out less often (at most `backoff_max` apart)."""
        self._failures += 1
        delay = min(self.config.backoff_max, group.interval * 2.0 ** min(self._failures, 30))
        self._backoff_until = time.monotonic() + delay
        log.warning(
            "%s: no answer (%d polls in a row); next poll in %.1f s",
            self.name,
            self._failures,
            delay,
        )

    def _hint_read_length(self, read: PlannedRead) -> None:
        if self._hinted:
            return
        self._hinted = True
        setting = "max_bits" if read.table.is_bits else "max_registers"
        log.warning(
            "%s: 'illegal data value' for a read of %d %s at %d: if the device takes shorter "
            "reads, lower %s",
            self.name,
            read.count,
            "bits" if read.table.is_bits else "registers",
            read.start,
            setting,
        )

    # ------------------------------------------------------------------ bad addresses
    def _retry_bad_ranges(self) -> None:
        since = self._forbidden_since
        if since is not None and time.monotonic() - since > self.config.bad_range_retry:
            log.info("%s: trying the ranges that answered 'illegal data address' again", self.name)
            self._forbidden.clear()
            self._bad.clear()
            self._forbidden_since = None
            self._replan()

    async def _search(self, reads: list[PlannedRead]) -> bool:
        """Find the addresses behind "illegal data address" answers; True when any was found."""
        before = (len(self._bad), sum(len(r) for r in self._forbidden.values()))
        budget = [_DISCOVERY_BUDGET]
        for read in reads:
            halves = split_read(read)
            if halves is None:
                self._mark_bad(read)
            else:
                await self._probe_halves(read, halves, budget)
        return (len(self._bad), sum(len(r) for r in self._forbidden.values())) != before

    async def _probe(self, read: PlannedRead, budget: list[int]) -> bool:
        """True when `read` works (or could not be decided); on "illegal data address" the bad
        part is found and remembered, and False returned."""
        if budget[0] <= 0:
            return True
        budget[0] -= 1
        c = self.config
        result = (await self.link.submit(c.unit, [_read_pdu(read)], c.timeout))[0]
        if isinstance(result, NotConnectedError):
            raise NotConnectedError(f"{self.name}: {result}")
        if type(result) is not bytes or exception_code(result) != _ILLEGAL_ADDRESS:
            return True
        halves = split_read(read)
        if halves is None:
            self._mark_bad(read)
            return False
        return await self._probe_halves(read, halves, budget)

    async def _probe_halves(
        self, read: PlannedRead, halves: tuple[PlannedRead, PlannedRead], budget: list[int]
    ) -> bool:
        left, right = halves
        left_ok = await self._probe(left, budget)
        right_ok = await self._probe(right, budget)
        if left_ok and right_ok:
            # both halves read fine: the registers between them (or reading across the cut)
            # are what the device refuses
            self._forbid(read.table, left.end, right.start, "between tags")
        return False

    def _mark_bad(self, read: PlannedRead) -> None:
        code = quality.bad(exception_reason(_ILLEGAL_ADDRESS))
        names = sorted({e.tag.name for e in read.elements})
        for element in read.elements:
            self._bad[element.tag_index] = code
        self._forbid(read.table, read.start, read.end, ", ".join(names))

    def _forbid(self, table: ModbusTable, start: int, end: int, what: str) -> None:
        ranges = self._forbidden.setdefault(table, [])
        if (start, end) in ranges:
            return
        ranges.append((start, end))
        if self._forbidden_since is None:
            self._forbidden_since = time.monotonic()
        where = f"{start}..{end - 1}" if end > start else f"across {start}"
        log.warning(
            "%s: %s registers %s answer 'illegal data address' (%s); reads leave them out",
            self.name,
            table.value,
            where,
            what,
        )

    # ------------------------------------------------------------------ writes
    async def write(self, tag: TagInfo, value: object) -> None:
        """Write one element (FC 5 or 6; 15 or 16 for multi-register values), or consecutive
        elements of an array tag when `value` is a list, starting at `tag`'s element.

        Validated before anything is sent (:class:`~gateway.errors.WriteRefusedError`); a Modbus
        exception, a timeout or a read-back mismatch raises a
        :class:`~drivers.modbus.errors.ModbusDeviceError`; a lost connection
        :class:`~gateway.errors.NotConnectedError`.
        """
        config = self._tags_by_index.get(tag.index)
        if config is None or tag.device != self.name:
            raise WriteRefusedError(tag.id, f"the tag does not belong to device {self.name}")
        await write_tag(self.link, self.config, config, tag, value)


def _read_pdu(read: PlannedRead) -> bytes:
    return read_pdu(read.table, read.start, read.count)


ModbusTcpDriver = ModbusDriver
"""The name the core used before RTU existed."""
