"""Decoding a whole poll group at once: its reads' answers laid end to end in two buffers.

A poll cycle puts each read's answer into its slot of a register buffer (or a bit buffer) and
decodes both in one pass, so the numpy work per cycle does not grow with the number of reads.
Each read knows its output rows, so a failed read marks just its own.
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
    """Offset of the read's first register (or bit) in the group's register (bit) buffer."""
    rows: NDArray[np.intp]
    """The output rows of the read's elements."""


class GroupDecoder:
    """Decodes all reads of one poll group from a register buffer and a bit buffer."""

    def __init__(self, reads: Sequence[PlannedRead], device_order: WordOrder) -> None:
        spans: list[tuple[PlannedRead, int, slice]] = []
        elements: list[ElementRef] = []
        register_base = bit_base = 0
        for read in reads:
            positions = slice(len(elements), len(elements) + len(read.elements))
            if read.table.is_bits:
                base, bit_base = bit_base, bit_base + read.count
            else:
                base, register_base = register_base, register_base + read.count
            spans.append((read, base, positions))
            elements += [
                ElementRef(e.tag_index, e.tag, base + e.offset, e.bit) for e in read.elements
            ]
        self.register_count = register_base
        self.bit_count = bit_base
        self._decoder = BlockDecoder(elements, device_order)
        self.slots = tuple(
            ReadSlot(read, base, self._decoder.rows[positions]) for read, base, positions in spans
        )
        self.tag_indices: NDArray[np.int32] = self._decoder.tag_indices
        self.has_strings = self._decoder.has_strings

    def __len__(self) -> int:
        return len(self.tag_indices)

    def decode(
        self, registers: NDArray[np.uint16], bits: NDArray[np.bool_] | None = None
    ) -> DecodedBlock:
        """Values and string objects for every row, in the order of :attr:`tag_indices`."""
        return self._decoder.decode(registers, bits)
