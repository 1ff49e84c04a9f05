"""Request planning (pure, no I/O): the fewest reads that cover a device's tags.

Per table, elements are sorted by address and merged greedily into reads while the read stays
within the size limit (125 registers or 2000 bits, or the device's lower `max_registers` /
`max_bits`), every run of unused registers it has to bridge is at most `max_gap`, and it crosses
no *forbidden* range (addresses the device answered "illegal data address" for; an element lying
across one can only be read alone, so it is). Every element is served by the read whose range
contains it.

Why greedy is optimal: the earliest element must be served by some read, and that read can start
at the element's address without losing feasibility (trimming leading registers neither grows a
gap nor crosses a new range). Among reads starting there, the greedy one serves every element the
others can serve before the first element it had to leave out, and that element starts a read
anyway. The tests check this claim with hypothesis against an exhaustive minimum set cover and
against the dynamic program in :func:`minimum_reads`.
"""

from __future__ import annotations

__all__ = [
    "Element",
    "PlanLimits",
    "PlannedRead",
    "element_interval",
    "minimum_reads",
    "plan_reads",
    "split_read",
]

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from drivers.modbus.codec import ElementRef
from drivers.modbus.config import ModbusTable, ModbusTag

Element = tuple[int, ModbusTag, int]
"""(tag-table index, tag, element number) of one value to read."""

Ranges = Mapping[ModbusTable, Sequence[tuple[int, int]]]
"""Per table, forbidden ``[start, end)`` address ranges; ``start == end`` forbids crossing the
boundary at `start` (two neighbours that read fine apart but not together)."""


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """The per-device planning settings."""

    max_registers: int = 125
    max_bits: int = 2000
    max_gap: int = 0
    max_bit_gap: int = 0

    def limit(self, table: ModbusTable) -> int:
        return self.max_bits if table.is_bits else self.max_registers

    def gap(self, table: ModbusTable) -> int:
        return self.max_bit_gap if table.is_bits else self.max_gap


@dataclass(frozen=True, slots=True)
class PlannedRead:
    """One read request: a table, a start address, a count, and the elements it covers."""

    table: ModbusTable
    start: int
    count: int
    elements: tuple[ElementRef, ...]

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def used(self) -> int:
        """Registers (or bits) that belong to an element; the rest are gap filler."""
        covered: set[int] = set()
        for element in self.elements:
            first = self.start + element.offset
            covered.update(range(first, first + element.tag.registers_per_element))
        return len(covered)

    @property
    def wasted(self) -> int:
        return self.count - self.used

    def describe(self) -> str:
        """``holding 0..124 (125 registers, 3 unused)``."""
        unit = "bits" if self.table.is_bits else "registers"
        return (
            f"{self.table.value} {self.start}..{self.end - 1} "
            f"({self.count} {unit}, {self.wasted} unused)"
        )


@dataclass(frozen=True, slots=True)
class _Item:
    address: int
    stop: int
    tag_index: int
    tag: ModbusTag
    bit: int | None


def element_interval(tag: ModbusTag, element: int) -> tuple[int, int]:
    """The ``[first, end)`` registers (or bits) one element occupies."""
    address = tag.element_address(element)
    return address, address + tag.registers_per_element


def _items(elements: Iterable[Element]) -> dict[ModbusTable, list[_Item]]:
    by_table: dict[ModbusTable, list[_Item]] = {}
    for tag_index, tag, element in elements:
        address, stop = element_interval(tag, element)
        item = _Item(address, stop, tag_index, tag, tag.element_bit(element))
        by_table.setdefault(tag.table, []).append(item)
    for items in by_table.values():
        items.sort(key=lambda item: (item.address, item.stop))
    return by_table


class _Forbidden:
    """Sorted forbidden ranges of one table, for "does [start, end) cross one?" queries."""

    def __init__(self, ranges: Sequence[tuple[int, int]]) -> None:
        self.ranges = sorted(ranges)
        self.starts = [first for first, _ in self.ranges]
        self.reach: list[int] = []  # reach[i]: the largest end among ranges[0..i]
        for _, last in self.ranges:
            self.reach.append(max(last, self.reach[-1] if self.reach else last))

    def crosses(self, start: int, end: int) -> bool:
        """True when the read ``[start, end)`` overlaps a range or crosses a boundary."""
        # a range [first, last) is crossed when start < last and first < end
        index = bisect.bisect_left(self.starts, end) - 1
        return index >= 0 and self.reach[index] > start


def plan_reads(
    elements: Iterable[Element],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 0,
    max_bit_gap: int | None = None,
    forbidden: Ranges | None = None,
) -> list[PlannedRead]:
    """Plan reads for the elements of one device, unit and poll group.

    An element that overlaps a forbidden range is read on its own (never merged with another);
    the caller leaves out elements known to be bad. Raises :class:`ValueError` when one element
    is larger than the read limit.
    """
    limits = PlanLimits(
        max_registers, max_bits, max_gap, max_gap if max_bit_gap is None else max_bit_gap
    )
    reads: list[PlannedRead] = []
    by_table = _items(elements)
    for table in ModbusTable:
        items = by_table.get(table, [])
        if not items:
            continue
        limit, gap = limits.limit(table), limits.gap(table)
        banned = _Forbidden((forbidden or {}).get(table, ()))
        group: list[_Item] = []
        start = end = 0
        first = len(reads)
        for item in items:
            if item.stop - item.address > limit:
                raise ValueError(
                    f"tag {item.tag.name}: {item.stop - item.address} registers exceed "
                    f"the read limit {limit}"
                )
            if banned.crosses(item.address, item.stop):
                # any read holding it crosses the range: it can only be read alone
                reads.append(_read(table, item.address, item.stop, [item]))
                continue
            if group and (
                max(end, item.stop) - start <= limit
                and item.address - end <= gap
                and not banned.crosses(start, max(end, item.stop))
            ):
                group.append(item)
                end = max(end, item.stop)
                continue
            if group:
                reads.append(_read(table, start, end, group))
            group, start, end = [item], item.address, item.stop
        if group:
            reads.append(_read(table, start, end, group))
        reads[first:] = sorted(reads[first:], key=lambda read: (read.start, read.count))
    return reads


def _read(table: ModbusTable, start: int, end: int, group: list[_Item]) -> PlannedRead:
    refs = tuple(
        ElementRef(item.tag_index, item.tag, item.address - start, item.bit) for item in group
    )
    return PlannedRead(table, start, end - start, refs)


def split_read(read: PlannedRead) -> tuple[PlannedRead, PlannedRead] | None:
    """Two reads that serve the elements of `read` between them, cut near the middle where no
    element straddles the cut; None when one element (or overlapping ones) fill the read."""
    items = sorted(
        (
            _Item(
                read.start + e.offset,
                read.start + e.offset + e.tag.registers_per_element,
                e.tag_index,
                e.tag,
                e.bit,
            )
            for e in read.elements
        ),
        key=lambda item: (item.address, item.stop),
    )
    cuts = []
    reach = items[0].stop
    for index in range(1, len(items)):
        if items[index].address >= reach:
            cuts.append(index)
        reach = max(reach, items[index].stop)
    if not cuts:
        return None
    middle = len(items) / 2
    cut = min(cuts, key=lambda index: abs(index - middle))
    left, right = items[:cut], items[cut:]
    return (
        _read(read.table, left[0].address, max(i.stop for i in left), left),
        _read(read.table, right[0].address, max(i.stop for i in right), right),
    )


def minimum_reads(
    elements: Iterable[Element],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 0,
    max_bit_gap: int | None = None,
    forbidden: Ranges | None = None,
) -> int:
    """The minimum number of reads, by dynamic programming over the sorted elements.

    An independent reference for :func:`plan_reads` (used by the benchmark and the tests).
    Elements may share a register (bits of one register) but must not partly overlap: with
    such intervals a read serves a contiguous run of them in address order, which the program
    relies on. Raises :class:`ValueError` otherwise.
    """
    limits = PlanLimits(
        max_registers, max_bits, max_gap, max_gap if max_bit_gap is None else max_bit_gap
    )
    total = 0
    for table, items in _items(elements).items():
        limit, gap = limits.limit(table), limits.gap(table)
        banned = _Forbidden((forbidden or {}).get(table, ()))
        alone = [item for item in items if banned.crosses(item.address, item.stop)]
        total += len(alone)  # each can only be read on its own
        intervals = sorted(
            {(i.address, i.stop) for i in items if not banned.crosses(i.address, i.stop)}
        )
        for (a0, b0), (a1, _) in itertools.pairwise(intervals):
            if a1 < b0:
                raise ValueError(f"{table.value} {a0}..{b0 - 1} overlaps the next element")
        n = len(intervals)
        best = [0] + [n + 1] * n  # best[i]: fewest reads serving the first i intervals
        for i in range(1, n + 1):
            end = intervals[i - 1][1]
            for j in range(i - 1, -1, -1):
                start = intervals[j][0]
                if end - start > limit:
                    break
                if j < i - 1 and intervals[j + 1][0] - intervals[j][1] > gap:
                    break
                if banned.crosses(start, end):
                    break
                best[i] = min(best[i], best[j] + 1)
        if best[n] > n:
            raise ValueError(f"{table.value}: an element cannot be read at all")
        total += best[n]
    return total
