"""Modbus RTU: over a pseudo-terminal pair (pymodbus' serial transport, real RTU framing and
CRC) and over TCP (a transparent serial gateway), with several units on one line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.batch import SampleBatch
from gateway.errors import NotConnectedError
from simulators.modbus_farm import FarmUnit, ModbusFarm
from tests.drivers.modbus.conftest import FarmFactory, build

pytest.importorskip("serial", reason="Modbus RTU needs pyserial")


@pytest.fixture
async def serial_line() -> AsyncIterator[tuple[ModbusFarm, str]]:
    """Units 1 and 2 answer on a pseudo-terminal; unit 3 is configured but never answers."""
    farm = ModbusFarm([FarmUnit(unit=1), FarmUnit(unit=2), FarmUnit(unit=3, silent=True)])
    path = await farm.serve_pty()
    farm.image(1).set_registers("holding", 0, [0x47F1, 0x2000, 11])
    farm.image(2).set_registers("holding", 0, [0x2000, 0x47F1, 22])
    farm.image(2).coil[4] = True
    yield farm, path
    await farm.stop()


def rtu_device(name: str, port: str, unit: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "modbus_rtu",
        "port": port,
        "unit": unit,
        "parity": "none",  # this kernel's pseudo-terminals refuse PARENB; real ports take "even"
        "stopbits": 2,
        "timeout": 0.3,
        "tags": [
            {"name": "speed", "address": 0, "type": "float32"},
            {"name": "count", "address": 2, "type": "uint16", "writable": True},
            {"name": "coil", "table": "coil", "address": 4, "type": "bool", "writable": True},
        ],
        **fields,
    }


async def test_units_on_one_serial_line(serial_line: tuple[ModbusFarm, str]) -> None:
    farm, path = serial_line
    built = build(
        [
            rtu_device("A", path, 1, inter_frame_delay=0.004),
            rtu_device("B", path, 2, word_order="CDAB", inter_frame_delay=0.004),
        ]
    )
    a, b = built.drivers
    assert a.link is b.link and a.link.settings.describe() == f"{path} 19200 8N2 (RTU)"
    for driver in built.drivers:
        await driver.connect()
    values = built.values(await a.poll_once() + await b.poll_once())
    assert values == {
        "A/speed": 123456.0,
        "A/count": 11.0,
        "A/coil": 0.0,
        "B/speed": 123456.0,
        "B/count": 22.0,
        "B/coil": 1.0,
    }
    await b.write(built.info("B/count"), 500)
    await b.write(built.info("B/coil"), False)
    assert farm.image(2).holding[2] == 500 and not farm.image(2).coil[4]
    assert farm.image(1).holding[2] == 11  # addressed to unit 2 only
    assert [(unit, fc) for unit, fc, _, _ in farm.writes] == [(2, 6), (2, 5)]
    for driver in built.drivers:
        await driver.close()


async def test_dead_unit_is_backed_off_and_the_line_keeps_its_rate(
    serial_line: tuple[ModbusFarm, str],
) -> None:
    _, path = serial_line
    group = [{"name": "default", "interval": 0.1}]
    built = build(
        [
            rtu_device("A", path, 1, poll_groups=group),
            rtu_device("B", path, 2, poll_groups=group),
            rtu_device("C", path, 3, poll_groups=group, backoff_max=1.0, timeout=0.15),
        ]
    )
    batches: dict[str, list[SampleBatch]] = {"A": [], "B": [], "C": []}
    for driver in built.drivers:
        await driver.connect()
    tasks = [
        asyncio.create_task(d.run(lambda batch, n=d.name: batches[n].append(batch)))
        for d in built.drivers
    ]
    await asyncio.sleep(2.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for driver in built.drivers:
        await driver.close()
    dead = built.driver("C").poll_stats()["default"]
    assert built.values(batches["C"]) == {
        f"C/{t}": "bad: timeout" for t in ("speed", "count", "coil")
    }
    # a timeout costs 0.15 s of the line: without back-off unit 3 would take most of it
    assert len(batches["C"]) <= 4 and dead.backed_off + dead.missed >= 14
    for name in ("A", "B"):
        assert built.values(batches[name])[f"{name}/count"] in (11.0, 22.0)
        assert len(batches[name]) >= 14, name  # 20 cycles in 2 s, a few lost to timeouts


async def test_rtu_over_tcp(farm: FarmFactory) -> None:
    sim, port = await farm([FarmUnit(unit=5)], rtu=True)
    sim.image(5).set_registers("input", 10, [0xFF9C])
    built = build(
        [
            {
                "name": "meter",
                "protocol": "modbus_rtu_tcp",
                "host": "127.0.0.1",
                "port": port,
                "unit": 5,
                "timeout": 0.5,
                "tags": [{"name": "power", "table": "input", "address": 10, "type": "int16",
                          "scale": 0.5, "unit": "kW"}],
            }
        ]
    )  # fmt: skip
    driver = built.drivers[0]
    await driver.connect()
    assert built.values(await driver.poll_once()) == {"meter/power": -50.0}
    assert driver.link.settings.describe() == f"127.0.0.1:{port} (RTU over TCP)"
    await driver.close()


def test_default_inter_frame_delay_is_three_and_a_half_characters() -> None:
    built = build([rtu_device("A", "/dev/null", 1, baudrate=9600, parity="even", stopbits=1)])
    assert built.driver("A").link.settings.frame_gap == pytest.approx(3.5 * 11 / 9600)
    fast = build([rtu_device("A", "/dev/null", 1, baudrate=115200)])
    assert fast.driver("A").link.settings.frame_gap == 0.00175


async def test_missing_serial_port_is_not_connected() -> None:
    built = build([rtu_device("A", "/dev/ttyNoSuchPort", 1)])
    with pytest.raises(NotConnectedError, match="cannot connect to /dev/ttyNoSuchPort 19200 8N2"):
        await built.drivers[0].connect()
    await built.drivers[0].close()
