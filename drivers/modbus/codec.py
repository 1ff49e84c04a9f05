"""Decoding register blocks into tag values with numpy, and encoding values for writes.

A :class:`BlockDecoder` is built once per poll group (or planned read). It sorts the elements it
decodes by layout (data type and word order, bit in a register, string length) and keeps, per
layout, the register offsets of every element, so a whole block is decoded with a handful of
vectorised gathers rather than value by value.

Word orders name the bytes of a value from most to least significant as A, B, C, D (…H for 64-bit
values). ABCD is big-endian (the Modbus convention), CDAB swaps the 16-bit words, BADC the bytes
inside each word, DCBA is little-endian. 16-bit values are byte-swapped by BADC and DCBA.
"""

from __future__ import annotations

__all__ = [
    "BlockDecoder",
    "DecodedBlock",
    "ElementRef",
    "decode_string",
    "encode_value",
    "word_permutation",
]

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


def decode_string(raw: bytes, length: int) -> str:
    """A fixed-length ASCII field: up to the first NUL, trailing blanks removed."""
    return raw[:length].split(b"\0", 1)[0].decode("ascii", errors="replace").rstrip()


@dataclass(frozen=True, slots=True)
class ElementRef:
    """One tag element inside a block: where it sits and which table index it fills."""

    tag_index: int
    tag: ModbusTag
    offset: int
    """Register (or bit) offset from the block start."""
    bit: int | None = None
    """For a bool inside a register: its bit (0 = least significant)."""


@dataclass(frozen=True, slots=True)
class DecodedBlock:
    values: NDArray[np.float64]
    objects: NDArray[np.object_] | None


@dataclass(frozen=True, slots=True)
class _Segment:
    """Rows ``[first, stop)`` of a width class, all of one numpy type (or a special kind)."""

    first: int
    stop: int
    kind: str
    """A numpy type (``>f4``), or ``flag`` (register != 0), or ``bit`` (a bit of a register)."""


@dataclass(frozen=True, slots=True)
class _Width:
    """Elements whose values take `width` bytes: one byte gather decodes them all."""

    base: int
    """Output row of the class's first element."""
    gather: NDArray[np.intp]
    """(n, width) byte offsets, most significant byte first (word order folded in)."""
    segments: tuple[_Segment, ...]


@dataclass(slots=True)
class _Strings:
    base: int
    gather: NDArray[np.intp]
    length: int
    last_raw: NDArray[np.void] | None = None
    last_text: list[str] | None = None


def _byte_offsets(offset: int, registers: int, order: WordOrder) -> list[int]:
    return [2 * offset + int(b) for b in word_permutation(order, registers)]


class BlockDecoder:
    """Decodes registers and bits into the values of the tag elements they hold.

    Element offsets of register elements index the register buffer, those of coils and discrete
    inputs the bit buffer. Output rows are ordered by layout, not as the elements were given:
    :attr:`rows` maps each element to its row and :attr:`tag_indices` lists the rows' tags.
    Values of one byte width (2, 4 or 8) are decoded with one gather of their bytes, word and
    byte order folded into the gather offsets, then a view per data type; strings are decoded to
    Python text only when their registers changed since the last call.
    """

    def __init__(self, elements: list[ElementRef], device_order: WordOrder) -> None:
        self.elements = elements
        classes: dict[tuple[int, str], list[int]] = {}
        strings: dict[int, list[int]] = {}
        table_bits: list[int] = []
        for position, element in enumerate(elements):
            tag = element.tag
            if tag.table.is_bits:
                table_bits.append(position)
            elif element.bit is not None:
                classes.setdefault((2, "bit"), []).append(position)
            elif tag.type is DataType.STRING:
                strings.setdefault(tag.length or 0, []).append(position)
            elif tag.type is DataType.BOOL:
                classes.setdefault((2, "flag"), []).append(position)
            else:
                width = 2 * max(1, tag.type.bits // 16)
                classes.setdefault((width, _NUMPY_TYPE[tag.type]), []).append(position)
        order: list[int] = []
        self._widths: list[_Width] = []
        shifts: list[int] = []
        for width in (2, 4, 8):
            kinds = sorted(kind for w, kind in classes if w == width)
            if not kinds:
                continue
            base = len(order)
            segments, gather = [], []
            for kind in kinds:
                positions = classes[(width, kind)]
                first = len(order) - base
                for p in positions:
                    element = elements[p]
                    word_order = element.tag.word_order or device_order
                    if kind in ("bit", "flag"):
                        word_order = WordOrder.ABCD
                    gather.append(_byte_offsets(element.offset, width // 2, word_order))
                    if kind == "bit":
                        shifts.append(element.bit or 0)
                order += positions
                segments.append(_Segment(first, len(order) - base, kind))
            self._widths.append(_Width(base, np.array(gather, np.intp), tuple(segments)))
        self._shifts = np.array(shifts, np.uint16)
        self._bits_base = len(order)
        self._bit_offsets = np.array([elements[p].offset for p in table_bits], np.intp)
        order += table_bits
        self._strings: list[_Strings] = []
        for length, positions in strings.items():
            gather = []
            for p in positions:
                element = elements[p]
                first = 2 * element.offset
                pairs = [(first + 2 * i, first + 2 * i + 1) for i in range((length + 1) // 2)]
                if element.tag.byte_swap:
                    pairs = [(b, a) for a, b in pairs]
                gather.append([offset for pair in pairs for offset in pair])
            self._strings.append(_Strings(len(order), np.array(gather, np.intp), length))
            order += positions
        self.order = np.array(order, np.intp)
        """Element position of each output row."""
        self.rows = np.empty(len(elements), np.intp)
        """Output row of each element position."""
        self.rows[self.order] = np.arange(len(order), dtype=np.intp)
        self.tag_indices = np.array([elements[p].tag_index for p in order], np.int32)
        self.scale = np.array([elements[p].tag.scale for p in order], np.float64)
        self.offset = np.array([elements[p].tag.offset for p in order], np.float64)
        self._scaled = bool((self.scale != 1).any() or (self.offset != 0).any())
        self.has_strings = bool(strings)

    def __len__(self) -> int:
        return len(self.elements)

    def decode(
        self, registers: NDArray[np.uint16], bits: NDArray[np.bool_] | None = None
    ) -> DecodedBlock:
        """Values (scaled) and string objects, one per output row, from a register buffer (in
        either byte order; ``>u2`` straight from the wire is cheapest) and a bit buffer."""
        raw = registers.astype(">u2", copy=False).view(np.uint8)
        values = np.empty(len(self.elements), np.float64)
        with np.errstate(invalid="ignore"):  # a signalling NaN in a float register is a value
            for width in self._widths:
                data = raw[width.gather]
                base = width.base
                for segment in width.segments:
                    part = data[segment.first : segment.stop]
                    rows = slice(base + segment.first, base + segment.stop)
                    if segment.kind == "flag":
                        values[rows] = part.view(">u2")[:, 0] != 0
                    elif segment.kind == "bit":
                        words = part.view(">u2")[:, 0].astype(np.uint16)
                        values[rows] = (words >> self._shifts) & 1
                    else:
                        values[rows] = part.view(segment.kind)[:, 0]
        count = len(self._bit_offsets)
        if count and bits is not None:
            values[self._bits_base : self._bits_base + count] = bits[self._bit_offsets]
        objects = None
        if self._strings:
            objects = np.full(len(self.elements), None, object)
            for strings in self._strings:
                width = strings.gather.shape[1]
                text = np.ascontiguousarray(raw[strings.gather]).view(f"V{width}")[:, 0]
                if (
                    strings.last_text is None
                    or strings.last_raw is None
                    or not np.array_equal(text, strings.last_raw)
                ):
                    strings.last_text = [decode_string(t.tobytes(), strings.length) for t in text]
                    strings.last_raw = text.copy()
                rows = slice(strings.base, strings.base + len(strings.last_text))
                objects[rows] = strings.last_text
                values[rows] = np.nan
        if self._scaled:
            values *= self.scale
            values += self.offset
        return DecodedBlock(values, objects)

    def decode_registers(self, registers: NDArray[np.uint16]) -> DecodedBlock:
        """Values from a register block (no coils or discrete inputs among the elements)."""
        return self.decode(registers, None)

    def decode_bits(self, bits: NDArray[np.bool_]) -> DecodedBlock:
        """Values (0.0 / 1.0) from a coil or discrete-input block."""
        return self.decode(np.empty(0, np.uint16), bits)


def encode_value(tag: ModbusTag, value: object, device_order: WordOrder) -> list[int] | bool:
    """Registers (or a coil state) for writing `value` to one element of `tag`.

    Validates type and range first and raises :class:`WriteRefusedError` naming the tag.
    """
    name = tag.name
    if tag.table is ModbusTable.COIL:
        if not isinstance(value, bool | int) or value not in (0, 1, True, False):
            raise WriteRefusedError(name, f"a coil takes true or false, not {value!r}")
        return bool(value)
    if tag.bit is not None:
        raise WriteRefusedError(name, "a bit inside a register is not writable")
    if tag.type is DataType.STRING:
        return _encode_string(tag, value)
    if tag.type is DataType.BOOL:
        if not isinstance(value, bool | int) or value not in (0, 1, True, False):
            raise WriteRefusedError(name, f"a bool takes true or false, not {value!r}")
        return [int(bool(value))]
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise WriteRefusedError(name, f"expected a number, got {value!r}")
    if tag.span is not None and not tag.span[0] <= value <= tag.span[1]:
        raise WriteRefusedError(name, f"{value} is outside the tag's span {list(tag.span)}")
    if tag.scale == 0:
        raise WriteRefusedError(name, "the tag's scale is 0: no raw value gives a value")
    raw = (float(value) - tag.offset) / tag.scale
    data_type = tag.type
    if data_type.is_integer:
        integer = round(raw)
        if abs(raw - integer) > 1e-9 * max(1.0, abs(raw)):
            raise WriteRefusedError(name, f"{value} is not a whole number of raw units")
        if isinstance(value, int) and tag.scale == 1 and tag.offset == 0:
            integer = value  # exact, even beyond 2**53
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


def _encode_string(tag: ModbusTag, value: object) -> list[int]:
    if not isinstance(value, str):
        raise WriteRefusedError(tag.name, f"expected a string, got {type(value).__name__}")
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError:
        raise WriteRefusedError(tag.name, "only ASCII characters fit in Modbus registers") from None
    length = tag.length or 0
    if len(data) > length:
        raise WriteRefusedError(tag.name, f"{len(data)} characters do not fit in {length}")
    data = data.ljust(2 * tag.registers_per_element, b"\0")
    words = np.frombuffer(data, "<u2" if tag.byte_swap else ">u2")
    return [int(word) for word in words]
