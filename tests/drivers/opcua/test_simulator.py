"""The OPC UA driver against the bundled asyncua PLC simulator (the demo's OPC UA machine)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.errors import DeviceError, WriteRefusedError
from simulators.model import MEASUREMENT_SLOTS
from simulators.opcua_plc import NAMESPACE_URI, OpcUaPlc
from simulators.plant import Plant
from tests.drivers.opcua.conftest import Running

Run = Callable[[dict[str, Any]], Awaitable[Running]]


@pytest.fixture
async def plc() -> AsyncIterator[OpcUaPlc]:
    async with Plant(speed=60.0, seed=3) as plant, OpcUaPlc(plant) as server:
        yield server


async def test_subscribes_reads_and_writes_the_simulated_plc(plc: OpcUaPlc, running: Run) -> None:
    line = plc.plant.line
    machine = plc.plant.machines[-1]

    def node(variable: str) -> str:
        return f"nsu=plc;s={line}.{machine}.{variable}"

    run = await running(
        {
            "endpoint": plc.endpoint,
            "namespaces": {"plc": NAMESPACE_URI},
            "publishing_interval": 0.1,
            "sampling_interval": 0,
            "queue_size": 100,
            "poll_groups": [{"name": "default"}, {"name": "slow", "interval": 0.3}],
            "tags": [
                {"name": "State", "node": node("State"), "type": "uint16"},
                {"name": "GoodCount32", "node": node("GoodCount32"), "type": "uint32"},
                {"name": "Order", "node": node("Order"), "type": "string"},
                {"name": "Temperature", "path": f"plc:{line}/plc:{machine}/plc:Temperature"},
                {
                    "name": "Measurements",
                    "node": node("Measurements"),
                    "type": "float32",
                    "count": MEASUREMENT_SLOTS,
                    "mode": "poll",
                    "poll_group": "slow",
                },
                {
                    "name": "SpeedSetpoint",
                    "node": node("SpeedSetpoint"),
                    "writable": True,
                    "span": [0, 500],
                },
            ],
        }
    )
    await run.wait_for(
        lambda: (
            {"State", "Order", "Temperature", "Measurements[31]", "SpeedSetpoint"}
            <= run.latest().keys()
            and len(run.history("GoodCount32")) >= 2
        ),
        timeout=20,
    )
    latest = run.latest()
    assert isinstance(latest["Order"], str) and latest["Order"]
    assert isinstance(latest["Temperature"], float)
    counts = run.numbers("GoodCount32")
    assert counts == sorted(counts)
    snapshot = plc.plant.snapshot(machine)
    assert latest["State"] in {float(s) for s in range(10)} and snapshot is not None

    await run.driver.write(run.info("SpeedSetpoint"), 42)
    assert plc.plant.snapshot(machine).speed_setpoint == 42.0
    await run.wait_for(lambda: run.latest()["SpeedSetpoint"] == 42.0)
    # the PLC refuses out-of-range setpoints with BadOutOfRange
    with pytest.raises(DeviceError, match="BadOutOfRange"):
        await run.driver.write(run.info("SpeedSetpoint"), 300)
    # the config's span refuses before anything is sent
    with pytest.raises(WriteRefusedError, match="span"):
        await run.driver.write(run.info("SpeedSetpoint"), 600)
    with pytest.raises(WriteRefusedError, match="not writable"):
        await run.driver.write(run.info("Order"), "X")
