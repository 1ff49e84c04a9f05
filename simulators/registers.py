"""The Modbus register map of a simulated machine (docs/simulators.md), as pure functions.

Holding registers 0..201 and input registers 0..6 of one machine are built from a
:class:`~simulators.machine.MachineSnapshot` in one go, so a read always sees one consistent
snapshot. 32-bit values are ABCD (high word first) except ``GoodCount32`` (CDAB); strings are
ASCII, two characters per register, first character in the high byte, NUL padded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .model import MEASUREMENT_SLOTS, MachineSnapshot

__all__ = [
    "HOLDING_REGISTERS",
    "HOLDING_REGISTER_COUNT",
    "INPUT_REGISTERS",
    "INPUT_REGISTER_COUNT",
    "SPEED_SETPOINT_ADDRESS",
    "RegisterField",
    "decode_float_abcd",
    "holding_registers",
    "input_registers",
]


@dataclass(frozen=True)
class RegisterField:
    """One entry of the register map."""

    name: str
    address: int
    count: int
    kind: str  # uint16, uint32, uint32_cdab, float32, string, float32[32], int16


HOLDING_REGISTERS: tuple[RegisterField, ...] = (
    RegisterField("State", 0, 1, "uint16"),
    RegisterField("ReasonCode", 1, 1, "uint16"),
    RegisterField("GoodCount", 2, 1, "uint16"),
    RegisterField("ScrapCount", 3, 2, "uint32"),
    RegisterField("GoodCount32", 5, 2, "uint32_cdab"),
    RegisterField("MeasSeq", 7, 2, "uint32"),
    RegisterField("Order", 10, 8, "string"),
    RegisterField("Operation", 18, 2, "string"),
    RegisterField("Material", 20, 8, "string"),
    RegisterField("Lot", 28, 8, "string"),
    RegisterField("Measurements", 40, 2 * MEASUREMENT_SLOTS, "float32[32]"),
    RegisterField("SpeedSetpoint", 200, 2, "float32"),
)
INPUT_REGISTERS: tuple[RegisterField, ...] = (
    RegisterField("Temperature", 0, 2, "float32"),
    RegisterField("Pressure", 2, 2, "float32"),
    RegisterField("Speed", 4, 2, "float32"),
    RegisterField("TemperatureX10", 6, 1, "int16"),
)
HOLDING_REGISTER_COUNT = 202
INPUT_REGISTER_COUNT = 7
SPEED_SETPOINT_ADDRESS = 200

_HEADER = struct.Struct(">HHHIHHI")  # State, Reason, GoodCount, Scrap, GC32 lo, GC32 hi, MeasSeq
_MEASUREMENTS = struct.Struct(f">{MEASUREMENT_SLOTS}f")
_FLOAT = struct.Struct(">f")
_HOLDING = struct.Struct(f">{HOLDING_REGISTER_COUNT}H")
_INPUTS = struct.Struct(">fffh")
_INPUT_WORDS = struct.Struct(f">{INPUT_REGISTER_COUNT}H")


def _ascii(text: str, length: int) -> bytes:
    return text.encode("ascii", errors="replace")[:length].ljust(length, b"\0")


def holding_registers(snapshot: MachineSnapshot) -> list[int]:
    """Holding registers 0..201 of one machine."""
    buf = bytearray(2 * HOLDING_REGISTER_COUNT)
    good = snapshot.good_count
    _HEADER.pack_into(
        buf,
        0,
        snapshot.state,
        snapshot.reason,
        good & 0xFFFF,
        snapshot.scrap_count,
        good & 0xFFFF,
        (good >> 16) & 0xFFFF,
        snapshot.meas_seq,
    )
    buf[20:36] = _ascii(snapshot.order, 16)
    buf[36:40] = _ascii(snapshot.operation, 4)
    buf[40:56] = _ascii(snapshot.material, 16)
    buf[56:72] = _ascii(snapshot.lot, 16)
    _MEASUREMENTS.pack_into(buf, 80, *snapshot.measurements)
    _FLOAT.pack_into(buf, 2 * SPEED_SETPOINT_ADDRESS, snapshot.speed_setpoint)
    return list(_HOLDING.unpack(buf))


def input_registers(snapshot: MachineSnapshot) -> list[int]:
    """Input registers 0..6 of one machine."""
    x10 = round(snapshot.temperature * 10.0)
    x10 = max(-32768, min(32767, x10))
    packed = _INPUTS.pack(snapshot.temperature, snapshot.pressure, snapshot.speed, x10)
    return list(_INPUT_WORDS.unpack(packed))


def decode_float_abcd(high: int, low: int) -> float:
    """A float32 from two registers, high word first."""
    value: float = _FLOAT.unpack(struct.pack(">HH", high, low))[0]
    return value
