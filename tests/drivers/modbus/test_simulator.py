"""The Modbus driver against the bundled plant simulator (pymodbus server, docs/simulators.md),
the ``edge-gateway read`` command, and the gateway's supervisor around the driver."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from gateway.config.model import GatewayConfig
from gateway.quality import describe
from gateway.runtime.app import Gateway
from simulators.modbus_plc import ModbusPlc
from simulators.plant import Plant
from simulators.scenario import Scenario
from tests.drivers.modbus.conftest import build, tcp_device

MACHINE_TAGS: list[dict[str, Any]] = [
    {"name": "State", "address": 0, "type": "uint16"},
    {"name": "GoodCount", "address": 2, "type": "uint16", "unit": "EA"},
    {"name": "ScrapCount", "address": 3, "type": "uint32", "unit": "EA"},
    {"name": "GoodCount32", "address": 5, "type": "uint32", "word_order": "CDAB"},
    {"name": "MeasSeq", "address": 7, "type": "uint32"},
    {"name": "Order", "address": 10, "type": "string", "length": 16},
    {"name": "Lot", "address": 28, "type": "string", "length": 16},
    {"name": "Measurements", "address": 40, "type": "float32", "count": 32, "unit": "mm"},
    {"name": "SpeedSetpoint", "address": 200, "type": "float32", "writable": True,
     "verify_write": True, "span": [1, 120]},
    {"name": "Temperature", "table": "input", "address": 0, "type": "float32"},
    {"name": "TemperatureX10", "table": "input", "address": 6, "type": "int16", "scale": 0.1},
]  # fmt: skip


@pytest_asyncio.fixture
async def plc() -> AsyncIterator[tuple[Plant, ModbusPlc]]:
    """The demo plant stepped to 300 s by hand: values stay put during the test."""
    plant = Plant(Scenario.demo(), seed=1)
    plant.advance_to(300.0)
    async with ModbusPlc(plant) as server:
        yield plant, server


async def test_reads_the_plant_as_the_register_map_says(plc: tuple[Plant, ModbusPlc]) -> None:
    plant, server = plc
    devices = [
        tcp_device(name, server.port, MACHINE_TAGS, unit=unit, max_gap=12, share_connection=True)
        for unit, name in enumerate(plant.machines, start=1)
    ]
    built = build(devices)
    assert len({id(d.link) for d in built.drivers}) == 1  # units share one connection
    for driver in built.drivers:
        await driver.connect()
    for driver in built.drivers:
        values = built.values(await driver.poll_once())
        truth = plant.snapshot(driver.name)
        name = driver.name
        assert values[f"{name}/State"] == truth.state
        assert values[f"{name}/GoodCount"] == truth.good_count16
        assert values[f"{name}/GoodCount32"] == truth.good_count
        assert values[f"{name}/ScrapCount"] == truth.scrap_count
        assert values[f"{name}/MeasSeq"] == truth.meas_seq
        assert values[f"{name}/Order"] == truth.order
        assert values[f"{name}/Lot"] == truth.lot
        measured = [values[f"{name}/Measurements[{i}]"] for i in range(32)]
        assert measured == pytest.approx(list(truth.measurements), rel=1e-6)
        assert values[f"{name}/Temperature"] == pytest.approx(truth.temperature, rel=1e-6)
        assert values[f"{name}/TemperatureX10"] == pytest.approx(truth.temperature, abs=0.051)
        assert values[f"{name}/SpeedSetpoint"] == pytest.approx(truth.speed_setpoint)
        # State..Lot and Measurements in one read: 104 registers, one consistent snapshot
        assert driver.plan[0].describe() == "holding 0..103 (104 registers, 16 unused)"
    machine = plant.machines[0]
    driver = built.driver(machine)
    await driver.write(built.info(f"{machine}/SpeedSetpoint"), 42.5)
    assert plant.snapshot(machine).speed_setpoint == 42.5
    for driver in built.drivers:
        await driver.close()


async def test_read_command_prints_values_quality_and_plan(
    plc: tuple[Plant, ModbusPlc], tmp_path: Path
) -> None:
    plant, server = plc
    machine = plant.machines[1]
    config = {
        "gateway": {
            "id": "gw",
            "location": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
        },
        "devices": [
            tcp_device(machine, server.port, [*MACHINE_TAGS, {"name": "Beyond", "address": 202}],
                       unit=2),
            tcp_device("Other", server.port, [{"name": "x", "address": 0}], unit=1),
        ],
    }  # fmt: skip
    path = tmp_path / "plant.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    text = await _cli("read", "--config", str(path), "--device", machine)
    assert text.returncode == 1  # "Beyond" answers illegal data address
    lines = text.stdout.splitlines()
    assert lines[0] == f"{machine}: unit 2 on 127.0.0.1:{server.port}"
    assert "requests (minimum" in lines[1] and "wasted to gaps" in lines[1]
    truth = plant.snapshot(machine)
    assert f"{machine}/Order" in text.stdout and json.dumps(truth.order) in text.stdout
    beyond = next(line for line in lines if f"{machine}/Beyond" in line)
    assert beyond.split()[1:] == ["-", "bad:", "Modbus", "exception", "2", "IllegalDataAddress"]
    assert "illegal data address" in text.stderr
    assert "Other" not in text.stdout

    good = await _cli("read", "-c", str(path), "-d", machine, "-t", "Good*", "--json")
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)["devices"][0]
    assert {t["tag"]: t["value"] for t in report["tags"]} == {
        f"{machine}/GoodCount": truth.good_count16,
        f"{machine}/GoodCount32": truth.good_count,
    }
    assert report["plan"]["groups"][0]["requests"] == 1

    missing = await _cli("read", "-c", str(path), "-d", "Nope")
    assert missing.returncode == 2 and "unknown device Nope" in missing.stderr


async def test_gateway_marks_tags_bad_when_the_plc_goes_down_and_reconnects(
    plc: tuple[Plant, ModbusPlc], tmp_path: Path
) -> None:
    _, server = plc
    config = GatewayConfig.model_validate(
        {
            "gateway": {
                "id": "gw",
                "data_dir": str(tmp_path),
                "location": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
            },
            "devices": [
                tcp_device(
                    "M1",
                    server.port,
                    MACHINE_TAGS[:3],
                    timeout=0.3,
                    poll_groups=[{"name": "default", "interval": 0.1}],
                )
            ],
        }
    )
    gateway = Gateway(config)
    seen: list[str] = []
    sink = gateway.pipeline.sink

    def spy(batch: Any) -> None:
        seen.extend(describe(int(q)) for q in np.unique(batch.quality))
        sink(batch)

    gateway.pipeline.sink = spy  # type: ignore[method-assign]
    await gateway.start()
    try:
        await asyncio.sleep(0.5)
        assert seen and set(seen) == {"good"}
        server.faults.down_for(1.5)  # the PLC stops listening and drops its connections
        await _until(lambda: "bad: disconnected" in seen)
        seen.clear()
        await _until(lambda: "good" in seen, timeout=10)
        status = gateway.supervisor.status()["device:M1"]
        assert int(str(status["failures"])) >= 1 and status["running"]
    finally:
        await gateway.stop()


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class _Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


async def _cli(*args: str) -> _Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return _Ran(process.returncode, out.decode(), err.decode())
