"""Decoding register blocks into tag values with numpy, and encoding values for writes.

A :class:`BlockDecoder` is built once per planned read. It groups the block's tags by layout
(data type and word order) and holds, per group, the register offsets of every element, so one
read is decoded with a handful of vectorised gathers rather than value by value.

Word orders name the bytes of a value from most to least significant as A, B, C, D (…H for 64-bit
values). ABCD is big-endian (the Modbus convention), CDAB swaps the 16-bit words, BADC the bytes
inside each word, DCBA is little-endian. 16-bit values are byte-swapped by BADC and DCBA.
"""

from __future__ import annotations

__all__ = ["BlockDecoder", "DecodedBlock", "ElementRef", "encode_value", "word_permutation"]

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from drivers.modbus.config import ModbusTable, ModbusTag, WordOrder
from gateway.datatypes import DataType
from gateway.errors import WriteRefusedError

_NUMPY_TYPE = {
    DataType.UINT16: ">u2",
    DataType.INT16: ">i2",
    DataType.UINT32: ">u4",
    DataType.INT32: ">i4",
    DataType.FLOAT32: ">f4",
    DataType.UINT64: ">u8",
    DataType.INT64: ">i8",
    DataType.FLOAT64: ">f8",
}


def word_permutation(order: WordOrder, registers: int) -> NDArray[np.intp]:
    """Byte positions (in register order) that give the big-endian bytes of a value."""
    words, swap = _word_layout(order, registers)
    perm = [2 * word + (1 - byte if swap else byte) for word in words for byte in (0, 1)]
    return np.asarray(perm, np.intp)


def _word_layout(order: WordOrder, registers: int) -> tuple[list[int], bool]:
    """Register offsets from the most significant word down, and whether bytes are swapped."""
    reverse = order in (WordOrder.CDAB, WordOrder.DCBA) and registers > 1
    words = list(reversed(range(registers))) if reverse else list(range(registers))
    return words, order in (WordOrder.BADC, WordOrder.DCBA)


@dataclass(frozen=True, slots=True)
class ElementRef:
    """One tag element inside a block: where it sits and which table index it fills."""

    tag_index: int
    tag: ModbusTag
    offset: int
    """Register (or bit) offset from the block start."""


@dataclass(frozen=True, slots=True)
class DecodedBlock:
    values: NDArray[np.float64]
    objects: NDArray[np.object_] | None


@dataclass(frozen=True, slots=True)
class _Group:
    positions: NDArray[np.intp]
    """Positions of the elements in the block's output arrays."""
    gather: NDArray[np.intp]
    """(n, registers) offsets of each element's registers, most significant word first."""
    word_type: str
    """``>u2``, or ``<u2`` when the bytes inside each register are swapped."""
    numpy_type: str


class BlockDecoder:
    """Decodes registers (or bits) into the values of the tag elements they hold.

    The block may be one read or several reads' registers laid end to end (see
    :meth:`for_reads`); element offsets are relative to the block's start. The decoder groups
    elements by layout once, with the word order folded into the gather offsets, so decoding is a
    gather, a byte-order cast and a view per layout.
    """

    def __init__(self, elements: list[ElementRef], device_order: WordOrder) -> None:
        self.elements = elements
        self.tag_indices = np.array([e.tag_index for e in elements], np.int32)
        self.scale = np.array([e.tag.scale for e in elements], np.float64)
        self.offset = np.array([e.tag.offset for e in elements], np.float64)
        self._scaled = bool((self.scale != 1).any() or (self.offset != 0).any())
        layouts: dict[tuple[str, WordOrder], list[int]] = {}
        self._strings: list[int] = []
        bits: list[int] = []
        for position, element in enumerate(elements):
            tag = element.tag
            if tag.table.is_bits:
                bits.append(position)
            elif tag.type is DataType.STRING:
                self._strings.append(position)
            elif tag.type is DataType.BOOL:
                layouts.setdefault((DataType.UINT16.value, WordOrder.ABCD), []).append(position)
            else:
                word_order: WordOrder = tag.word_order or device_order
                layouts.setdefault((tag.type.value, word_order), []).append(position)
        self._groups: list[_Group] = []
        for (type_name, order), positions in layouts.items():
            data_type = DataType(type_name)
            registers = max(1, data_type.bits // 16)
            words, swap = _word_layout(order, registers)
            starts = np.array([elements[p].offset for p in positions], np.intp)
            gather = starts[:, None] + np.array(words, np.intp)[None, :]
            self._groups.append(
                _Group(
                    np.array(positions, np.intp),
                    gather,
                    "<u2" if swap else ">u2",
                    _NUMPY_TYPE[data_type],
                )
            )
        self._bit_positions = np.array(bits, np.intp)
        self._bit_offsets = np.array([elements[p].offset for p in bits], np.intp)

    def decode_registers(self, registers: NDArray[np.uint16]) -> DecodedBlock:
        """Values (scaled) and string objects from a register block."""
        values = np.empty(len(self.elements), np.float64)
        for group in self._groups:
            words = registers[group.gather]
            if group.numpy_type == ">u2" and group.word_type == ">u2":
                values[group.positions] = words[:, 0]
            else:
                wire = words.astype(group.word_type)
                values[group.positions] = wire.view(group.numpy_type).reshape(-1)
        objects = None
        if self._strings:
            raw = registers.astype(">u2").view(np.uint8)
            objects = np.full(len(self.elements), None, object)
            for position in self._strings:
                element = self.elements[position]
                length = element.tag.length or 0
                start = 2 * element.offset
                text = bytes(raw[start : start + length]).split(b"\0", 1)[0]
                objects[position] = text.decode("ascii", errors="replace").rstrip()
                values[position] = np.nan
        if self._scaled:
            values = values * self.scale + self.offset
        return DecodedBlock(values, objects)

    def decode_bits(self, bits: NDArray[np.bool_]) -> DecodedBlock:
        """Values (0.0 / 1.0) from a coil or discrete-input block."""
        values = np.empty(len(self.elements), np.float64)
        values[self._bit_positions] = bits[self._bit_offsets]
        return DecodedBlock(values, None)


def encode_value(tag: ModbusTag, value: object, device_order: WordOrder) -> list[int] | bool:
    """Registers (or a coil state) for writing `value` to `tag`; validates type and range."""
    name = tag.name
    if tag.table is ModbusTable.COIL:
        if not isinstance(value, bool | int) or value not in (0, 1, True, False):
            raise WriteRefusedError(name, f"a coil takes true or false, not {value!r}")
        return bool(value)
    if tag.type is DataType.STRING:
        if not isinstance(value, str):
            raise WriteRefusedError(name, f"expected a string, got {type(value).__name__}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError:
            raise WriteRefusedError(name, "only ASCII characters fit in Modbus registers") from None
        length = tag.length or 0
        if len(data) > length:
            raise WriteRefusedError(name, f"{len(data)} characters do not fit in {length}")
        data = data.ljust(2 * tag.registers_per_element, b"\0")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise WriteRefusedError(name, f"expected a number, got {value!r}")
    if tag.span is not None and not tag.span[0] <= value <= tag.span[1]:
        raise WriteRefusedError(name, f"{value} is outside the tag's span {list(tag.span)}")
    raw = (float(value) - tag.offset) / tag.scale
    data_type = tag.type if tag.type is not DataType.BOOL else DataType.UINT16
    if data_type.is_integer:
        if abs(raw - round(raw)) > 1e-9:
            raise WriteRefusedError(name, f"{value} is not a whole number of raw units")
        integer = round(raw)
        bits = data_type.bits
        low, high = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
            if data_type.is_signed
            else (0, (1 << bits) - 1)
        )
        if not low <= integer <= high:
            raise WriteRefusedError(name, f"{value} does not fit in {data_type.value}")
        big_endian = np.array([integer], _NUMPY_TYPE[data_type]).view(np.uint8)
    else:
        big_endian = np.array([raw], _NUMPY_TYPE[data_type]).view(np.uint8)
        if data_type is DataType.FLOAT32 and not math.isfinite(float(big_endian.view(">f4")[0])):
            raise WriteRefusedError(name, f"{value} does not fit in float32")
    registers = max(1, data_type.bits // 16)
    perm = word_permutation(tag.word_order or device_order, registers)
    wire = np.empty(2 * registers, np.uint8)
    wire[perm] = big_endian
    return [int(x) for x in wire.view(">u2")]
