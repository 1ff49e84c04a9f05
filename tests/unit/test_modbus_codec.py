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
