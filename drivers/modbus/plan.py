"""Request planning (pure, no I/O): the fewest reads that cover a device's tags.

Per table, tags are sorted by address and merged greedily into reads while the read stays within
the size limit (125 registers or 2000 bits, or the device's lower `max_registers`/`max_bits`) and
every gap it has to bridge is at most `max_gap` unused registers. Because any sub-range of a
feasible read is feasible, extending each read as far as possible gives the minimum number of
reads for this cost model.
"""

from __future__ import annotations

__all__ = ["PlannedRead", "plan_reads"]

from dataclasses import dataclass

from drivers.modbus.codec import ElementRef
from drivers.modbus.config import ModbusTable, ModbusTag


@dataclass(frozen=True, slots=True)
class PlannedRead:
    """One read request: a table, a start address, a count, and the elements it covers."""

    table: ModbusTable
    start: int
    count: int
    elements: tuple[ElementRef, ...]

    @property
    def used(self) -> int:
        """Registers (or bits) that belong to a tag; the rest are gap filler."""
        covered: set[int] = set()
        for element in self.elements:
            size = element.tag.registers_per_element
            covered.update(range(self.start + element.offset, self.start + element.offset + size))
        return len(covered)


def plan_reads(
    elements: list[tuple[int, ModbusTag, int]],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 0,
) -> list[PlannedRead]:
    """Plan reads for (tag index, tag, element number) triples of one device and unit."""
    by_table: dict[ModbusTable, list[tuple[int, int, int, ModbusTag]]] = {}
    for tag_index, tag, element in elements:
        size = tag.registers_per_element
        address = tag.address + element * size
        by_table.setdefault(tag.table, []).append((address, address + size, tag_index, tag))
    reads: list[PlannedRead] = []
    for table in ModbusTable:
        items = sorted(by_table.get(table, []), key=lambda item: (item[0], item[1]))
        limit = max_bits if table.is_bits else max_registers
        group: list[tuple[int, int, int, ModbusTag]] = []
        start = end = 0
        for item in items:
            address, stop, _, tag = item
            if stop - address > limit:
                raise ValueError(
                    f"tag {tag.name}: {stop - address} registers exceed the read limit {limit}"
                )
            if group and max(end, stop) - start <= limit and address - end <= max_gap:
                group.append(item)
                end = max(end, stop)
                continue
            if group:
                reads.append(_read(table, start, end, group))
            group, start, end = [item], address, stop
        if group:
            reads.append(_read(table, start, end, group))
    return reads


def _read(
    table: ModbusTable, start: int, end: int, group: list[tuple[int, int, int, ModbusTag]]
) -> PlannedRead:
    refs = tuple(
        ElementRef(tag_index, tag, address - start) for address, _, tag_index, tag in group
    )
    return PlannedRead(table, start, end - start, refs)
