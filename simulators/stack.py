"""Every simulator at once on free ports: plant (Modbus, OPC UA, control), ERP, WMS and QMS."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from simulators.service import Service

from .business import BusinessSimulator, ErpSimulator, QmsSimulator, WmsSimulator
from .control import PlantControl
from .faults import Faults, FaultSettings
from .modbus_plc import ModbusPlc
from .opcua_plc import OpcUaPlc
from .plant import Plant
from .scenario import Scenario

__all__ = ["PlantSimulator", "SimulatorStack"]


class PlantSimulator(Service):
    """The plant with its Modbus PLC, OPC UA PLC and HTTP control endpoint."""

    def __init__(
        self,
        scenario: Scenario | str = "demo",
        speed: float = 60.0,
        seed: int = 1,
        host: str = "127.0.0.1",
        *,
        modbus_port: int = 0,
        opcua_port: int = 0,
        control_port: int = 0,
        faults: FaultSettings | None = None,
        paused: bool = False,
    ) -> None:
        if isinstance(scenario, str):
            scenario = Scenario.by_name(scenario)
        self.host = host
        self.paused = paused
        self.plant = Plant(scenario, speed=speed, seed=seed)
        self.modbus = ModbusPlc(self.plant, host, modbus_port, Faults(faults))
        self.opcua = OpcUaPlc(self.plant, host, opcua_port, Faults(faults))
        self.control = PlantControl(
            self.plant,
            {"modbus": self.modbus.faults, "opcua": self.opcua.faults},
            self.stats_json,
            host,
            control_port,
        )

    def stats_json(self) -> dict[str, Any]:
        return {"modbus": self.modbus.stats_json(), "opcua": self.opcua.stats_json()}

    def ports(self) -> dict[str, Any]:
        return {
            "modbus": {"host": self.host, "port": self.modbus.port},
            "opcua": {"endpoint": self.opcua.endpoint},
            "plant_control": self.control.url,
        }

    async def start(self) -> None:
        """Start the servers, then the scenario clock (unless paused: ``/_control/start``)."""
        starters: list[Callable[[], Awaitable[None]]] = [
            self.modbus.start,
            self.opcua.start,
            self.control.start,
        ]
        if not self.paused:
            starters.append(self.plant.start)
        await _start_all(starters, self.stop)

    async def stop(self) -> None:
        await self.control.stop()
        await self.opcua.stop()
        await self.modbus.stop()
        await self.plant.stop()


async def _start_all(
    starters: list[Callable[[], Awaitable[None]]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start in order; if one fails, stop what was started and re-raise."""
    try:
        for start in starters:
            await start()
    except BaseException:
        with contextlib.suppress(OSError, RuntimeError):
            await stop()
        raise


class SimulatorStack(Service):
    """The plant and the ERP, WMS and QMS simulators, each with a control endpoint.

    Example::

        async with SimulatorStack(speed=60.0, seed=1) as stack:
            print(stack.ports())
    """

    def __init__(
        self,
        scenario: Scenario | str = "demo",
        speed: float = 60.0,
        seed: int = 1,
        host: str = "127.0.0.1",
        *,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        drop_rate: float = 0.0,
        down_for_s: float = 0.0,
        paused: bool = False,
    ) -> None:
        faults = FaultSettings(
            latency_ms=latency_ms,
            error_rate=error_rate,
            drop_rate=drop_rate,
            down_for_s=down_for_s,
        )
        self.host = host
        self.plant_simulator = PlantSimulator(
            scenario, speed, seed, host, faults=faults, paused=paused
        )
        self.erp = ErpSimulator(host, 0, control_port=0, faults=Faults(faults))
        self.wms = WmsSimulator(host, 0, control_port=0, faults=Faults(faults))
        self.qms = QmsSimulator(host, 0, control_port=0, faults=Faults(faults))

    @property
    def plant(self) -> Plant:
        return self.plant_simulator.plant

    @property
    def modbus(self) -> ModbusPlc:
        return self.plant_simulator.modbus

    @property
    def opcua(self) -> OpcUaPlc:
        return self.plant_simulator.opcua

    @property
    def business(self) -> tuple[BusinessSimulator, ...]:
        return (self.erp, self.wms, self.qms)

    def ports(self) -> dict[str, Any]:
        """Where everything listens (JSON-able)."""
        return {
            **self.plant_simulator.ports(),
            **{
                sim.SYSTEM: {"url": sim.url, "control_url": sim.control_url}
                for sim in self.business
            },
        }

    async def start(self) -> None:
        await _start_all(
            [self.plant_simulator.start, *(sim.start for sim in self.business)], self.stop
        )

    async def stop(self) -> None:
        for sim in reversed(self.business):
            await sim.stop()
        await self.plant_simulator.stop()
