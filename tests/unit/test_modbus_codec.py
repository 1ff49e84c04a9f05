"""Modbus decoding and encoding: word orders, types, strings, arrays, planning."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.modbus.codec import BlockDecoder, ElementRef, encode_value
from drivers.modbus.config import ModbusTag, WordOrder
from drivers.modbus.plan import plan_reads
from gateway.errors import WriteRefusedError

VECTORS = {  # float32 123456.0 = 0x47F12000 (domain reference test vector)
    WordOrder.ABCD: [0x47F1, 0x2000],
    WordOrder.CDAB: [0x2000, 0x47F1],
    WordOrder.BADC: [0xF147, 0x0020],
    WordOrder.DCBA: [0x0020, 0xF147],
}


def tag(**fields: object) -> ModbusTag:
    return ModbusTag.model_validate({"name": "t", "address": 0, **fields})


def decode(t: ModbusTag, registers: list[int], order: WordOrder = WordOrder.ABCD) -> object:
    decoder = BlockDecoder([ElementRef(0, t, 0)], order)
    block = decoder.decode_registers(np.array(registers, np.uint16))
    return block.objects[0] if block.objects is not None else float(block.values[0])


@pytest.mark.parametrize("order", list(WordOrder))
def test_float32_word_orders(order: WordOrder) -> None:
    assert decode(tag(type="float32", word_order=order.value), VECTORS[order]) == 123456.0


@pytest.mark.parametrize("order", list(WordOrder))
def test_int32_and_uint32_word_orders(order: WordOrder) -> None:
    registers = VECTORS[order]
    assert decode(tag(type="uint32", word_order=order.value), registers) == 0x47F12000
    negative = {
        WordOrder.ABCD: [0xFFFF, 0xFFFE],
        WordOrder.CDAB: [0xFFFE, 0xFFFF],
        WordOrder.BADC: [0xFFFF, 0xFEFF],
        WordOrder.DCBA: [0xFEFF, 0xFFFF],
    }
    assert decode(tag(type="int32", word_order=order.value), negative[order]) == -2


def test_device_default_order_applies() -> None:
    assert decode(tag(type="float32"), VECTORS[WordOrder.CDAB], WordOrder.CDAB) == 123456.0


def test_64_bit_values() -> None:
    value = 0x0102030405060708
    abcd = [0x0102, 0x0304, 0x0506, 0x0708]
    assert decode(tag(type="uint64"), abcd) == float(value)
    assert decode(tag(type="uint64", word_order="CDAB"), list(reversed(abcd))) == float(value)
    assert decode(tag(type="float64"), [0x4093, 0x4A45, 0x84FC, 0xD3C1]) == pytest.approx(1234.5678)


def test_int16_and_scaling() -> None:
    assert decode(tag(type="int16"), [0xFF9C]) == -100
    assert decode(tag(type="int16", scale=0.1, offset=1), [215]) == pytest.approx(22.5)


def test_string_trims_nul_padding() -> None:
    registers = [0x3130, 0x3030, 0x3132, 0x3300, 0, 0]
    assert decode(tag(type="string", length=12), registers) == "1000123"


def test_array_elements_and_mixed_block() -> None:
    a = tag(name="a", type="uint16", count=3)
    f = tag(name="f", address=3, type="float32")
    elements = [ElementRef(i, a, i) for i in range(3)] + [ElementRef(3, f, 3)]
    block = BlockDecoder(elements, WordOrder.ABCD).decode_registers(
        np.array([7, 8, 9, 0x47F1, 0x2000], np.uint16)
    )
    assert block.values.tolist() == [7, 8, 9, 123456.0]


@pytest.mark.parametrize("order", list(WordOrder))
def test_encode_round_trips(order: WordOrder) -> None:
    t = tag(type="float32", word_order=order.value, writable=True)
    assert encode_value(t, 123456.0, WordOrder.ABCD) == VECTORS[order]
    for type_name, value in [
        ("int32", -123456),
        ("uint16", 65535),
        ("int64", -5),
        ("float64", 2.5),
    ]:
        t = tag(type=type_name, word_order=order.value, writable=True)
        registers = encode_value(t, value, WordOrder.ABCD)
        assert isinstance(registers, list)
        assert decode(t, registers) == value


def test_encode_validates_before_sending() -> None:
    with pytest.raises(WriteRefusedError, match="does not fit in uint16"):
        encode_value(tag(type="uint16", writable=True), 70000, WordOrder.ABCD)
    with pytest.raises(WriteRefusedError, match="span"):
        encode_value(tag(type="float32", span=[0, 10], writable=True), 11, WordOrder.ABCD)
    with pytest.raises(WriteRefusedError, match="expected a number"):
        encode_value(tag(type="int16", writable=True), "abc", WordOrder.ABCD)
    with pytest.raises(WriteRefusedError, match="do not fit"):
        encode_value(tag(type="string", length=4, writable=True), "ABCDE", WordOrder.ABCD)


def test_planner_merges_within_gap_and_limit() -> None:
    tags = [tag(name=f"t{a}", address=a, type="uint16") for a in (0, 1, 5, 40, 41)]
    reads = plan_reads([(i, t, 0) for i, t in enumerate(tags)], max_gap=4)
    assert [(r.start, r.count) for r in reads] == [(0, 6), (40, 2)]
    reads = plan_reads([(i, t, 0) for i, t in enumerate(tags)], max_gap=50, max_registers=10)
    assert [(r.start, r.count) for r in reads] == [(0, 6), (40, 2)]
    reads = plan_reads([(i, t, 0) for i, t in enumerate(tags)], max_gap=50)
    assert [(r.start, r.count) for r in reads] == [(0, 42)]


def test_bits_inside_registers_and_bools_in_registers() -> None:
    flags = tag(name="flags", type="bool", bit=14, count=4)
    plain = tag(name="on", address=2, type="bool")
    elements = [ElementRef(i, flags, (14 + i) // 16, (14 + i) % 16) for i in range(4)]
    elements.append(ElementRef(4, plain, 2))
    decoder = BlockDecoder(elements, WordOrder.ABCD)
    block = decoder.decode(np.array([0b1000_0000_0000_0000, 0b10, 0x0100], np.uint16))
    by_tag = dict(zip(decoder.tag_indices.tolist(), block.values.tolist(), strict=True))
    assert by_tag == {0: 0.0, 1: 1.0, 2: 0.0, 3: 1.0, 4: 1.0}


def test_rows_map_back_to_elements_whatever_the_layout_order() -> None:
    types = ["float64", "uint16", "string", "int32", "int16", "bool"]
    elements = []
    offset = 0
    for i, type_name in enumerate(types):
        t = tag(name=f"t{i}", type=type_name, **({"length": 4} if type_name == "string" else {}))
        elements.append(ElementRef(100 + i, t, offset))
        offset += t.registers_per_element
    decoder = BlockDecoder(elements, WordOrder.ABCD)
    assert sorted(decoder.order.tolist()) == list(range(len(types)))
    for position, element in enumerate(elements):
        assert decoder.tag_indices[decoder.rows[position]] == element.tag_index


def test_byte_swapped_string_and_unchanged_strings_are_not_decoded_again() -> None:
    swapped = tag(type="string", length=6, byte_swap=True)
    decoder = BlockDecoder([ElementRef(0, swapped, 0)], WordOrder.ABCD)
    first = decoder.decode(np.array([0x4241, 0x4443, 0x0045], np.uint16)).objects
    assert first is not None and first[0] == "ABCDE"
    again = decoder.decode(np.array([0x4241, 0x4443, 0x0045], np.uint16)).objects
    assert again is not None and again[0] is first[0]
    changed = decoder.decode(np.array([0x4241, 0x4443, 0x0046], np.uint16)).objects
    assert changed is not None and changed[0] == "ABCDF"
    registers = encode_value(
        tag(type="string", length=6, byte_swap=True, writable=True), "ABCDE", WordOrder.ABCD
    )
    assert registers == [0x4241, 0x4443, 0x0045]


def test_coils_and_registers_decode_together() -> None:
    coil = tag(name="c", table="coil", type="bool", count=3)
    word = tag(name="w", type="int16")
    elements = [ElementRef(i, coil, i) for i in range(3)] + [ElementRef(3, word, 0)]
    decoder = BlockDecoder(elements, WordOrder.DCBA)
    block = decoder.decode(np.array([0x9CFF], np.uint16), np.array([True, False, True]))
    by_tag = dict(zip(decoder.tag_indices.tolist(), block.values.tolist(), strict=True))
    assert by_tag == {0: 1.0, 1: 0.0, 2: 1.0, 3: -100.0}  # int16 byte-swapped by DCBA


def test_encode_bools_and_refusals() -> None:
    assert encode_value(tag(table="coil", type="bool", writable=True), True, WordOrder.ABCD) is True
    assert encode_value(tag(type="bool", writable=True), 1, WordOrder.ABCD) == [1]
    with pytest.raises(WriteRefusedError, match="true or false"):
        encode_value(tag(table="coil", type="bool", writable=True), 2, WordOrder.ABCD)
    with pytest.raises(WriteRefusedError, match="whole number"):
        encode_value(tag(type="int16", scale=0.5, writable=True), 0.2, WordOrder.ABCD)
    big = 2**63 - 1
    assert encode_value(tag(type="int64", writable=True), big, WordOrder.ABCD) == [
        0x7FFF,
        0xFFFF,
        0xFFFF,
        0xFFFF,
    ]
