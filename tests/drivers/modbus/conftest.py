"""Fixtures of the Modbus driver tests: the fast simulator (farm) and drivers built from config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from drivers.modbus.driver import ModbusDriver
from gateway.batch import SampleBatch
from gateway.config.model import GatewayConfig
from gateway.metrics import Metrics
from gateway.quality import describe
from gateway.runtime.registry import DRIVERS, BuildContext
from gateway.tags import TagTable
from simulators.modbus_farm import FarmUnit, ModbusFarm


@dataclass
class Built:
    """Drivers built from one config, as the gateway builds them (registry, shared links)."""

    config: GatewayConfig
    table: TagTable
    metrics: Metrics
    drivers: list[ModbusDriver]

    def driver(self, name: str) -> ModbusDriver:
        return next(d for d in self.drivers if d.name == name)

    def info(self, tag_id: str) -> Any:
        return self.table[self.table.index(tag_id)]

    def values(self, batches: list[SampleBatch]) -> dict[str, object]:
        """Tag id → value (or "bad: reason" for samples that are not good)."""
        out: dict[str, object] = {}
        for batch in batches:
            for row in range(len(batch)):
                tag = self.table[int(batch.tags[row])].id
                code = int(batch.quality[row])
                out[tag] = batch.value_of(row) if code == 0 else describe(code)
        return out


def build(devices: list[dict[str, Any]]) -> Built:
    config = GatewayConfig.model_validate(
        {
            "gateway": {
                "id": "test",
                "location": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
            },
            "devices": devices,
        }
    )
    table = TagTable((d.name, d.tags) for d in config.devices)
    metrics = Metrics()
    ctx = BuildContext(config, table, metrics)
    drivers = [DRIVERS[d.protocol](d, ctx) for d in config.devices]
    assert all(isinstance(d, ModbusDriver) for d in drivers)
    return Built(config, table, metrics, [d for d in drivers if isinstance(d, ModbusDriver)])


def tcp_device(name: str, port: int, tags: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "timeout": 0.5,
        "tags": tags,
        **fields,
    }


FarmFactory = Callable[..., Awaitable[tuple[ModbusFarm, int]]]


@pytest.fixture
async def farm() -> AsyncIterator[FarmFactory]:
    """Start simulated Modbus TCP servers on free ports: ``farm, port = await farm(units)``."""
    started: list[ModbusFarm] = []

    async def start(units: list[FarmUnit] | None = None, **serve: Any) -> tuple[ModbusFarm, int]:
        instance = ModbusFarm(units or [FarmUnit(unit=1)])
        port = await instance.serve_tcp(**serve)
        started.append(instance)
        return instance, port

    yield start
    for instance in started:
        await instance.stop()
