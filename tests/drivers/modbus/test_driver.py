"""The Modbus driver against the simulated devices of simulators.modbus_farm (Modbus TCP)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np
import pytest

from drivers.modbus.errors import ModbusDeviceError, ModbusExceptionResponse
from drivers.modbus.pool import check_shared_links
from gateway.batch import SampleBatch
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError, NotConnectedError, WriteRefusedError
from simulators.modbus_farm import FarmUnit
from tests.drivers.modbus.conftest import FarmFactory, build, tcp_device

F32 = {  # float32 123456.0 = 0x47F12000 in the four word orders
    "ABCD": [0x47F1, 0x2000],
    "CDAB": [0x2000, 0x47F1],
    "BADC": [0xF147, 0x0020],
    "DCBA": [0x0020, 0xF147],
}


def _words(fmt: str, value: object, order: str) -> list[int]:
    """Registers holding `value` packed big-endian with struct, then put in `order`."""
    raw = struct.pack(">" + fmt, value)
    pairs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        pairs.reverse()
    if order in ("BADC", "DCBA"):
        pairs = [p[::-1] for p in pairs]
    return [int.from_bytes(p, "big") for p in pairs]


async def test_every_type_and_word_order(farm: FarmFactory) -> None:
    sim, port = await farm()
    image = sim.image(1)
    tags: list[dict[str, object]] = []
    expected: dict[str, float] = {}
    address = 0
    cases = [
        ("int16", "h", -1234, 1),
        ("uint16", "H", 65000, 1),
        ("int32", "i", -123456789, 2),
        ("uint32", "I", 4000000000, 2),
        ("float32", "f", 123456.0, 2),
        ("int64", "q", -(2**40) - 5, 4),
        ("uint64", "Q", 2**50 + 3, 4),
        ("float64", "d", 1234.5678, 4),
    ]
    for type_name, fmt, value, size in cases:
        for order in ("ABCD", "CDAB", "BADC", "DCBA"):
            if size == 1 and order in ("CDAB",):
                continue
            name = f"{type_name}_{order}"
            tags.append({"name": name, "address": address, "type": type_name, "word_order": order})
            image.set_registers("holding", address, _words(fmt, value, order))
            expected[f"D/{name}"] = float(value)
            address += size
    image.set_registers("holding", 100, [0x4F52, 0x442D, 0x3100, 0])  # "OR" "D-" "1\0"
    image.set_registers("holding", 110, [0x524F, 0x2D44, 0x0031])  # byte-swapped "ORD-1"
    image.set_registers("holding", 120, [0x4142, 0x4344, 0x4546, 0x4700])  # "ABCD", "EFG"
    image.set_registers("input", 5, [215, 0b0000_0100])
    image.set_registers("holding", 200, F32["ABCD"] + _words("f", 2.5, "ABCD"))
    image.coil[7] = True
    image.discrete[3:6] = [True, False, True]
    tags += [
        {"name": "order", "address": 100, "type": "string", "length": 8},
        {"name": "swapped", "address": 110, "type": "string", "length": 6, "byte_swap": True},
        {"name": "codes", "address": 120, "type": "string", "length": 4, "count": 2},
        {"name": "temp", "table": "input", "address": 5, "type": "int16", "scale": 0.1,
         "offset": -1, "unit": "°C"},
        {"name": "alarm", "table": "input", "address": 6, "type": "bool", "bit": 2},
        {"name": "running", "table": "coil", "address": 7, "type": "bool"},
        {"name": "doors", "table": "discrete", "address": 3, "type": "bool", "count": 3},
        {"name": "series", "address": 200, "type": "float32", "count": 2, "poll_group": "slow"},
    ]  # fmt: skip
    built = build(
        [
            tcp_device(
                "D",
                port,
                tags,
                poll_groups=[{"name": "default"}, {"name": "slow", "interval": 5}],
            )
        ]
    )
    driver = built.drivers[0]
    await driver.connect()
    try:
        values = built.values(await driver.poll_once())
    finally:
        await driver.close()
    for tag_id, number in expected.items():
        assert values[tag_id] == pytest.approx(number, rel=1e-12), tag_id
    assert values["D/order"] == "ORD-1"
    assert values["D/swapped"] == "ORD-1"
    assert [values["D/codes[0]"], values["D/codes[1]"]] == ["ABCD", "EFG"]
    assert values["D/temp"] == pytest.approx(20.5)
    assert values["D/alarm"] == 1.0
    assert values["D/running"] == 1.0
    assert [values[f"D/doors[{i}]"] for i in range(3)] == [1.0, 0.0, 1.0]
    assert [values["D/series[0]"], values["D/series[1]"]] == [123456.0, 2.5]
    # the planner merged the whole default group into the fewest reads
    summary = driver.plan_summary()
    default = summary["groups"][0]
    assert default["requests"] == default["minimum_requests"] == 5  # holding ×2, input, coil, di
    assert len(values) == len(built.table)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1, "IllegalFunction"),
        (3, "IllegalDataValue"),
        (4, "ServerDeviceFailure"),
        (6, "ServerDeviceBusy"),
        (10, "GatewayPathUnavailable"),
        (11, "GatewayTargetDeviceFailedToRespond"),
    ],
)
async def test_exception_answers_mark_only_that_reads_tags_bad(
    farm: FarmFactory, code: int, name: str
) -> None:
    sim, port = await farm([FarmUnit(unit=1, faults=[("holding", 50, 50, code)])])
    sim.image(1).set_registers("holding", 0, [7])
    tags = [{"name": "good", "address": 0}, {"name": "failing", "address": 50}]
    built = build([tcp_device("D", port, tags, max_gap=0)])
    driver = built.drivers[0]
    await driver.connect()
    values = built.values(await driver.poll_once())
    values_again = built.values(await driver.poll_once())
    await driver.close()
    assert (
        values
        == values_again
        == {
            "D/good": 7.0,
            "D/failing": f"bad: Modbus exception {code} {name}",
        }
    )


async def test_illegal_address_is_located_remembered_and_retried(farm: FarmFactory) -> None:
    # registers 20..29 are not mapped; the tags around them are merged into one read at first
    sim, port = await farm([FarmUnit(unit=1, holes=[("holding", 20, 29)])])
    sim.image(1).set_registers("holding", 0, list(range(100, 140)))
    tags = [{"name": f"r{a}", "address": a} for a in (0, 5, 12, 18, 25, 31, 38)]
    built = build([tcp_device("D", port, tags, max_gap=10, bad_range_retry=0.5)])
    driver = built.drivers[0]
    assert [r.describe() for r in driver.plan] == ["holding 0..38 (39 registers, 32 unused)"]
    await driver.connect()
    first = built.values(await driver.poll_once())
    assert first["D/r25"] == "bad: Modbus exception 2 IllegalDataAddress"
    assert {k: v for k, v in first.items() if k != "D/r25"} == {
        "D/r0": 100.0,
        "D/r5": 105.0,
        "D/r12": 112.0,
        "D/r18": 118.0,
        "D/r31": 131.0,
        "D/r38": 138.0,
    }
    requests = sim.requests
    second = built.values(await driver.poll_once())
    assert second == first
    # the bad range is remembered: the next poll sends only good reads, no exception
    assert all(r.start + r.count <= 20 or r.start >= 30 or r.count == 1 for r in driver.plan)
    assert sim.requests - requests == len(driver.plan)
    assert driver.plan_summary()["bad_ranges"]
    # the PLC is changed (the range is mapped now): after bad_range_retry it is tried again
    sim.image(1).spec.holes.clear()
    await asyncio.sleep(0.6)
    third = built.values(await driver.poll_once())
    await driver.close()
    assert third["D/r25"] == 125.0
    assert [r.describe() for r in driver.plan] == ["holding 0..38 (39 registers, 32 unused)"]


async def test_dead_unit_on_a_shared_connection_is_backed_off_not_the_others(
    farm: FarmFactory,
) -> None:
    sim, port = await farm([FarmUnit(unit=1), FarmUnit(unit=2, silent=True)])
    sim.image(1).set_registers("holding", 0, [42])
    shared = {
        "timeout": 0.1,
        "share_connection": True,
        "poll_groups": [{"name": "default", "interval": 0.05}],
    }
    built = build(
        [
            tcp_device("alive", port, [{"name": "v", "address": 0}], unit=1, **shared),
            tcp_device("dead", port, [{"name": "v", "address": 0}], unit=2, backoff_max=2.0,
                       **shared),
            tcp_device("alone", port, [{"name": "v", "address": 0}], unit=1),
        ]
    )  # fmt: skip
    alive, dead, alone = built.drivers
    assert alive.link is dead.link  # one TCP connection for both units
    assert alone.link is not alive.link  # devices have their own unless they share
    batches: dict[str, list[SampleBatch]] = {"alive": [], "dead": []}
    for driver in (alive, dead):
        await driver.connect()
    tasks = [
        asyncio.create_task(d.run(lambda b, n=d.name: batches[n].append(b))) for d in (alive, dead)
    ]
    await asyncio.sleep(1.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for driver in (alive, dead):
        await driver.close()
    assert all(t.done() and t.cancelled() for t in tasks)  # nothing raised
    assert built.values(batches["dead"]) == {"dead/v": "bad: timeout"}
    assert built.values(batches["alive"]) == {"alive/v": 42.0}
    dead_stats = dead.poll_stats()["default"]
    assert dead_stats.backed_off > 15  # polled far less often than every 50 ms
    assert len(batches["dead"]) <= 4
    # the live unit kept its rate (every 50 ms for 1.5 s) but for the few cycles in which it
    # waited for the dead unit's timeouts on the shared connection
    assert len(batches["alive"]) >= 22


async def test_a_slow_device_does_not_delay_another_and_misses_are_counted(
    farm: FarmFactory,
) -> None:
    _, fast_port = await farm()
    _, slow_port = await farm([FarmUnit(unit=1, delay=0.25)])
    group = [{"name": "default", "interval": 0.1}]
    built = build(
        [
            tcp_device("fast", fast_port, [{"name": "v", "address": 0}], poll_groups=group),
            tcp_device("slow", slow_port, [{"name": "v", "address": 0}], poll_groups=group),
        ]
    )
    fast, slow = built.drivers
    stamps: dict[str, list[int]] = {"fast": [], "slow": []}
    for driver in built.drivers:
        await driver.connect()
    tasks = [
        asyncio.create_task(d.run(lambda b, n=d.name: stamps[n].append(int(b.timestamps[0]))))
        for d in built.drivers
    ]
    await asyncio.sleep(1.25)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for driver in built.drivers:
        await driver.close()
    assert len(stamps["fast"]) >= 11
    assert fast.poll_stats()["default"].missed == 0
    # polls start on multiples of the interval: no drift
    offsets = (np.array(stamps["fast"]) % 100_000_000) / 1e6
    assert np.all((offsets < 30) | (offsets > 99)), offsets
    # the slow device answers in 250 ms: it skipped cycles instead of piling them up
    assert 3 <= len(stamps["slow"]) <= 5
    assert slow.poll_stats()["default"].missed >= 6


async def test_tcp_timeout_or_lost_connection_raise_for_the_supervisor(farm: FarmFactory) -> None:
    sim, port = await farm()
    built = build([tcp_device("D", port, [{"name": "v", "address": 0}], timeout=0.2)])
    driver = built.drivers[0]
    await driver.connect()
    sink: list[SampleBatch] = []
    task = asyncio.create_task(driver.run(lambda batch: sink.append(batch)))
    await asyncio.sleep(0.2)
    await sim.drop_connections()
    with pytest.raises(NotConnectedError, match=r"D: .*connection"):
        await asyncio.wait_for(task, 3)
    await driver.close()
    # the supervisor calls connect again: polling resumes
    await driver.connect()
    assert built.values(await driver.poll_once()) == {"D/v": 0.0}
    # a device that stops answering: the poll marks its tags bad, then run() raises
    sim.image(1).spec.silent = True
    sink.clear()
    task = asyncio.create_task(driver.run(lambda batch: sink.append(batch)))
    with pytest.raises(NotConnectedError, match="no answer"):
        await asyncio.wait_for(task, 3)
    await driver.close()
    assert built.values(sink) == {"D/v": "bad: timeout"}


async def test_connect_failure_is_not_connected(farm: FarmFactory) -> None:
    sim, port = await farm()
    await sim.stop()
    built = build([tcp_device("D", port, [{"name": "v", "address": 0}])])
    with pytest.raises(NotConnectedError, match=f"cannot connect to 127.0.0.1:{port}"):
        await built.drivers[0].connect()
    await built.drivers[0].close()


async def test_writes_use_the_right_function_and_byte_order(farm: FarmFactory) -> None:
    sim, port = await farm()
    tags = [
        {"name": "setpoint", "address": 10, "type": "float32", "word_order": "CDAB",
         "writable": True, "span": [0, 200000]},
        {"name": "mode", "address": 20, "type": "uint16", "writable": True, "verify_write": True},
        {"name": "recipe", "address": 30, "type": "string", "length": 6, "writable": True},
        {"name": "lamp", "table": "coil", "address": 3, "type": "bool", "writable": True},
        {"name": "valves", "table": "coil", "address": 8, "type": "bool", "count": 4,
         "writable": True},
        {"name": "limits", "address": 40, "type": "int16", "count": 3, "writable": True},
        {"name": "readonly", "address": 50},
    ]  # fmt: skip
    built = build([tcp_device("D", port, tags)])
    driver = built.drivers[0]
    image = sim.image(1)
    await driver.connect()
    await driver.write(built.info("D/setpoint"), 123456.0)
    await driver.write(built.info("D/mode"), 3)
    await driver.write(built.info("D/recipe"), "AB-12")
    await driver.write(built.info("D/lamp"), True)
    await driver.write(built.info("D/valves[1]"), [True, True])
    await driver.write(built.info("D/limits[2]"), -5)
    assert [(fc, address, count) for _, fc, address, count in sim.writes] == [
        (16, 10, 2),
        (6, 20, 1),
        (16, 30, 3),
        (5, 3, 1),
        (15, 9, 2),
        (6, 42, 1),
    ]
    assert image.holding[10:12].tolist() == F32["CDAB"]
    assert image.holding[20] == 3
    assert image.holding[30:33].tobytes() == b"AB-12\0"
    assert image.coil[3] and image.coil[8:12].tolist() == [False, True, True, False]
    assert int(np.int16(image.holding[42])) == -5
    values = built.values(await driver.poll_once())
    assert values["D/setpoint"] == 123456.0 and values["D/recipe"] == "AB-12"
    await driver.close()


async def test_writes_are_validated_before_anything_is_sent(farm: FarmFactory) -> None:
    sim, port = await farm()
    tags = [
        {"name": "speed", "address": 0, "type": "uint16", "writable": True, "span": [1, 120]},
        {"name": "counter", "address": 1, "type": "uint32"},
        {"name": "array", "address": 5, "type": "uint16", "count": 2, "writable": True},
    ]
    built = build([tcp_device("D", port, tags)])
    driver = built.drivers[0]
    await driver.connect()
    refusals = [
        ("D/counter", 1, "not writable"),
        ("D/speed", 121, "outside the tag's span"),
        ("D/speed", "fast", "expected a number"),
        ("D/speed", 7.5, "whole number"),
        ("D/array[1]", [1, 2], "run past"),
    ]
    for tag_id, value, message in refusals:
        with pytest.raises(WriteRefusedError, match=message):
            await driver.write(built.info(tag_id), value)
    other = build([tcp_device("E", port, [{"name": "x", "address": 0, "writable": True}])])
    with pytest.raises(WriteRefusedError, match="does not belong"):
        await driver.write(other.info("E/x"), 1)
    assert sim.writes == []
    await driver.close()


async def test_write_errors_and_read_back_check(farm: FarmFactory) -> None:
    sim, port = await farm(
        [FarmUnit(unit=1, holes=[("holding", 9, 9)], frozen=[("holding", 5, 5)])]
    )
    tags = [
        {"name": "missing", "address": 9, "writable": True},
        {"name": "overridden", "address": 5, "writable": True, "verify_write": True},
        {"name": "single_only", "address": 7, "writable": True},
    ]
    built = build([tcp_device("D", port, tags, multiple_writes_only=True)])
    driver = built.drivers[0]
    await driver.connect()
    with pytest.raises(ModbusExceptionResponse, match="exception 2 IllegalDataAddress") as caught:
        await driver.write(built.info("D/missing"), 1)
    assert caught.value.code == 2
    with pytest.raises(ModbusDeviceError, match="read-back of D/overridden differs"):
        await driver.write(built.info("D/overridden"), 77)
    await driver.write(built.info("D/single_only"), 1)
    assert sim.writes[-1][1] == 16  # FC 16 even for one register: multiple_writes_only
    await driver.close()


def test_devices_sharing_a_port_must_agree_on_its_settings() -> None:
    serial: dict[str, Any] = {"protocol": "modbus_rtu", "port": "/dev/ttyUSB7", "tags": []}
    devices = [{**serial, "name": "A"}, {**serial, "name": "B", "unit": 2, "baudrate": 9600}]
    with pytest.raises(ConfigError, match=r"shares /dev/ttyUSB7 .* baudrate 9600 vs 19200"):
        build(devices)
    config = GatewayConfig.model_validate(
        {
            "gateway": {"id": "g", "location": {"enterprise": "e", "site": "s", "area": "a",
                                                "line": "l"}},
            "devices": [*devices, {**serial, "name": "C", "unit": 3, "port": "/dev/ttyUSB8"}],
        }
    )  # fmt: skip
    issues = check_shared_links(config.devices)
    assert [(i.path, "device B shares /dev/ttyUSB7" in i.message) for i in issues] == [
        ("devices[1]", True)
    ]


async def test_pipelined_requests_with_max_outstanding(farm: FarmFactory) -> None:
    """Up to `max_outstanding` requests are in flight; answers are matched by transaction id."""
    sim, port = await farm([FarmUnit(unit=1, delay=0.02)])
    sim.image(1).set_registers("holding", 0, list(range(2000)))
    tags = [{"name": f"t{i}", "address": 200 * i, "type": "uint16"} for i in range(8)]
    built = build([tcp_device("D", port, tags, max_gap=0, max_outstanding=4)])
    driver = built.drivers[0]
    await driver.connect()
    values = built.values(await driver.poll_once())
    await driver.close()
    assert values == {f"D/t{i}": float(200 * i) for i in range(8)}
    assert sim.max_in_flight == 4
    assert driver.link.requests == sim.requests == 8
