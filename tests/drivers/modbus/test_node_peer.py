"""The Modbus driver against a Modbus TCP server not written in Python: npm modbus-serial's
ServerTCP (tests/drivers/modbus/modbus_serial_server.js)."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.modbus.errors import ModbusExceptionResponse
from gateway.demo.broker import free_port
from tests.drivers.modbus.conftest import build, tcp_device
from tests.peers import require_node_module

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("modbus_serial_server.js")


@pytest.fixture
async def node_server() -> AsyncIterator[int]:
    node_dir = require_node_module("modbus-serial")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": os.path.join(node_dir, "node_modules")},
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        assert line.strip() == b"ready", line
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_word_orders_strings_and_exceptions_from_modbus_serial(node_server: int) -> None:
    tags = [
        {"name": f"f32_{order}", "address": 2 * i, "type": "float32", "word_order": order}
        for i, order in enumerate(("ABCD", "CDAB", "BADC", "DCBA"))
    ]
    tags += [
        {"name": f"i32_{order}", "address": 10 + 2 * i, "type": "int32", "word_order": order}
        for i, order in enumerate(("ABCD", "CDAB", "BADC", "DCBA"))
    ]
    tags += [
        {"name": "f64", "address": 20, "type": "float64"},
        {"name": "f64_swapped", "address": 24, "type": "float64", "word_order": "CDAB"},
        {"name": "name", "address": 30, "type": "string", "length": 10},
        {"name": "answer", "address": 40, "type": "uint16", "writable": True},
        {"name": "missing", "address": 100},
        {"name": "failure", "address": 110},
        {"name": "busy", "address": 120},
        {"name": "temp", "table": "input", "address": 3, "type": "int16", "scale": 0.1},
        {"name": "lamp", "table": "coil", "address": 5, "type": "bool", "writable": True},
    ]
    built = build([tcp_device("node", node_server, tags, max_gap=0, timeout=2.0)])
    driver = built.drivers[0]
    await driver.connect()
    try:
        values = built.values(await driver.poll_once())
        for order in ("ABCD", "CDAB", "BADC", "DCBA"):
            assert values[f"node/f32_{order}"] == 123456.0, order
            assert values[f"node/i32_{order}"] == -2.0, order
        f64 = struct.unpack(">d", bytes.fromhex("40934A4584FCD3C1"))[0]  # 1234.56789...
        assert values["node/f64"] == values["node/f64_swapped"] == f64
        assert values["node/name"] == "NODE-PEER"
        assert values["node/answer"] == 4242.0
        assert values["node/temp"] == pytest.approx(-10.0)
        assert values["node/lamp"] == 1.0
        assert values["node/missing"] == "bad: Modbus exception 2 IllegalDataAddress"
        assert values["node/failure"] == "bad: Modbus exception 4 ServerDeviceFailure"
        assert values["node/busy"] == "bad: Modbus exception 6 ServerDeviceBusy"

        await driver.write(built.info("node/answer"), 77)
        await driver.write(built.info("node/lamp"), False)
        again = built.values(await driver.poll_once())
        assert again["node/answer"] == 77.0 and again["node/lamp"] == 0.0
    finally:
        await driver.close()


async def test_merged_read_over_a_bad_address_is_split_and_good_tags_stay_good(
    node_server: int,
) -> None:
    tags = [{"name": f"r{a}", "address": a} for a in (40, 60, 99, 100, 101, 105)]
    tags.append({"name": "w", "address": 100, "writable": True})
    built = build([tcp_device("node", node_server, tags, max_gap=60, timeout=2.0)])
    driver = built.drivers[0]
    assert [r.describe() for r in driver.plan] == ["holding 40..105 (66 registers, 60 unused)"]
    await driver.connect()
    try:
        values = built.values(await driver.poll_once())
        with pytest.raises(ModbusExceptionResponse, match="write to node/w: Modbus exception 2"):
            await driver.write(built.info("node/w"), 1)
    finally:
        await driver.close()
    bad = "bad: Modbus exception 2 IllegalDataAddress"
    assert values == {
        "node/r40": 4242.0,
        "node/r60": 0.0,
        "node/r99": 0.0,
        "node/r100": bad,
        "node/w": bad,
        "node/r101": 0.0,
        "node/r105": 0.0,
    }
    assert all(not (r.start <= 100 < r.end) or r.count == 1 for r in driver.plan)


async def test_a_unit_the_server_does_not_serve_times_out(node_server: int) -> None:
    built = build([tcp_device("other", node_server, [{"name": "v", "address": 40}], unit=9,
                              timeout=0.3)])  # fmt: skip
    driver = built.drivers[0]
    await driver.connect()
    try:
        assert built.values(await driver.poll_once()) == {"other/v": "bad: timeout"}
    finally:
        await driver.close()
