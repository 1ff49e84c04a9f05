"""Bundled simulators of the edge gateway: a plant (Modbus TCP and OPC UA PLCs), ERP, WMS, QMS.

They depend only on asyncua, pymodbus, aiohttp and numpy and never import the gateway.
See docs/simulators.md for the register map, node ids, business APIs and fault injection.
"""

from __future__ import annotations

from .business import BookingRoute, BusinessSimulator, ErpSimulator, QmsSimulator, WmsSimulator
from .faults import FaultError, Faults, FaultSettings
from .ledger import Booking, Ledger
from .modbus_plc import ModbusPlc
from .model import MachineSnapshot, PackMLState, PartEvent, Reason, SetpointError
from .opcua_plc import NAMESPACE_URI, OpcUaPlc
from .plant import Plant, PlantUpdate, TruthSegment, UnknownMachineError
from .scenario import MachineSpec, OrderSpec, Scenario, ScenarioError
from .stack import PlantSimulator, SimulatorStack

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
