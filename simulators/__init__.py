"""Bundled simulators of the edge gateway: a plant (Modbus TCP and OPC UA PLCs), ERP, WMS, QMS.

They depend only on asyncua, pymodbus, aiohttp and numpy and never import the gateway.
See docs/simulators.md for the register map, node ids, business APIs and fault injection.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "BookingRoute": "business",
    "BusinessSimulator": "business",
    "ErpSimulator": "business",
    "QmsSimulator": "business",
    "WmsSimulator": "business",
    "FaultError": "faults",
    "Faults": "faults",
    "FaultSettings": "faults",
    "Booking": "ledger",
    "Ledger": "ledger",
    "ModbusPlc": "modbus_plc",
    "MachineSnapshot": "model",
    "PackMLState": "model",
    "PartEvent": "model",
    "Reason": "model",
    "SetpointError": "model",
    "NAMESPACE_URI": "opcua_plc",
    "OpcUaPlc": "opcua_plc",
    "Plant": "plant",
    "PlantUpdate": "plant",
    "TruthSegment": "plant",
    "UnknownMachineError": "plant",
    "MachineSpec": "scenario",
    "OrderSpec": "scenario",
    "Scenario": "scenario",
    "ScenarioError": "scenario",
    "PlantSimulator": "stack",
    "SimulatorStack": "stack",
}


def __getattr__(name: str) -> Any:
    """Import a simulator's module on first use (asyncua's server alone costs ~0.5 s, 30 MB)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'simulators' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


__all__ = [
    "NAMESPACE_URI",
    "Booking",
    "BookingRoute",
    "BusinessSimulator",
    "ErpSimulator",
    "FaultError",
    "FaultSettings",
    "Faults",
    "Ledger",
    "MachineSnapshot",
    "MachineSpec",
    "ModbusPlc",
    "OpcUaPlc",
    "OrderSpec",
    "PackMLState",
    "PartEvent",
    "Plant",
    "PlantSimulator",
    "PlantUpdate",
    "QmsSimulator",
    "Reason",
    "Scenario",
    "ScenarioError",
    "SetpointError",
    "SimulatorStack",
    "TruthSegment",
    "UnknownMachineError",
    "WmsSimulator",
]
