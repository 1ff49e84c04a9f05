"""Decoding a whole poll group at once: its reads' registers laid end to end in one buffer.

A poll cycle copies each read's answer into its slot of a register (or bit) buffer and decodes the
buffer in one pass, so the numpy work per cycle does not grow with the number of reads.
"""

from __future__ import annotations

__all__ = ["GroupDecoder", "ReadSlot"]

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from drivers.modbus.codec import BlockDecoder, DecodedBlock, ElementRef
from drivers.modbus.config import WordOrder
from drivers.modbus.plan import PlannedRead


@dataclass(frozen=True, slots=True)
class ReadSlot:
    """Where one read's answer goes and which output rows it fills."""

    read: PlannedRead
    base: int
    """Offset of the read's first register (or bit) in the group's buffer."""
    rows: slice
    """The read's elements in the group's output."""


class GroupDecoder:
    """Decodes all reads of one poll group from two buffers (registers, bits)."""

    def __init__(self, reads: Sequence[PlannedRead], device_order: WordOrder) -> None:
        register_reads = [r for r in reads if not r.table.is_bits]
        bit_reads = [r for r in reads if r.table.is_bits]
        slots: list[ReadSlot] = []
        register_elements: list[ElementRef] = []
        bit_elements: list[ElementRef] = []
        base = 0
        for read in register_reads:
            rows = slice(len(register_elements), len(register_elements) + len(read.elements))
            slots.append(ReadSlot(read, base, rows))
            register_elements += [
                ElementRef(e.tag_index, e.tag, base + e.offset) for e in read.elements
            ]
            base += read.count
        self.register_count = base
        base = 0
        first_bit_row = len(register_elements)
        for read in bit_reads:
            start = first_bit_row + len(bit_elements)
            slots.append(ReadSlot(read, base, slice(start, start + len(read.elements))))
            bit_elements += [ElementRef(e.tag_index, e.tag, base + e.offset) for e in read.elements]
            base += read.count
        self.bit_count = base
        self.slots = tuple(slots)
        self._registers = BlockDecoder(register_elements, device_order)
        self._bits = BlockDecoder(bit_elements, device_order)
        self._split = len(register_elements)
        self.tag_indices: NDArray[np.int32] = np.concatenate(
            [self._registers.tag_indices, self._bits.tag_indices]
        ).astype(np.int32)
        self.has_strings = any(e.tag.type.value == "string" for e in register_elements)

    def __len__(self) -> int:
        return len(self.tag_indices)

    def decode(self, registers: NDArray[np.uint16], bits: NDArray[np.bool_]) -> DecodedBlock:
        """Values and string objects for every row, in the order of :attr:`tag_indices`."""
        if not self._bits.elements:
            return self._registers.decode_registers(registers)
        words = self._registers.decode_registers(registers)
        flags = self._bits.decode_bits(bits)
        objects = None
        if words.objects is not None:
            objects = np.concatenate([words.objects, np.full(len(flags.values), None, object)])
        return DecodedBlock(np.concatenate([words.values, flags.values]), objects)
