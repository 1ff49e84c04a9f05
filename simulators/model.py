"""Values of the machine model: PackML states, reason codes, snapshots, parts and segments."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "MEASUREMENT_SLOTS",
    "SPEED_SETPOINT_MAX",
    "SPEED_SETPOINT_MIN",
    "MachineSnapshot",
    "PackMLState",
    "PartEvent",
    "Reason",
    "Segment",
    "SetpointError",
]

MEASUREMENT_SLOTS = 32
SPEED_SETPOINT_MIN = 1.0
SPEED_SETPOINT_MAX = 120.0


class PackMLState(enum.IntEnum):
    """The PackML state numbers used by the simulator."""

    IDLE = 4
    SUSPENDED = 5
    EXECUTE = 6
    HELD = 11


class Reason(enum.IntEnum):
    """Reason codes (docs/simulators.md)."""

    NONE = 0
    JAM = 100
    TOOL_BREAKAGE = 101
    ELECTRICAL_FAULT = 102
    OPERATOR_STOP = 103
    BLOCKED = 200
    STARVED = 201
    LOT_CHANGE = 202
    CHANGEOVER = 300
    NO_ORDER = 301


class SetpointError(ValueError):
    """A speed setpoint outside 1.0 to 120.0 parts per minute."""


@dataclass(frozen=True)
class PartEvent:
    """One part made: its measurement and the machine's counters right after it."""

    machine: str
    time_s: float
    meas_seq: int
    value: float
    good: bool
    good_count: int
    scrap_count: int


@dataclass(frozen=True)
class Segment:
    """What a machine really made for one (order, operation, material, lot)."""

    machine: str
    order: str
    operation: str
    material: str
    lot: str
    unit: str
    good: int
    scrap: int
    start_s: float
    end_s: float
    complete: bool


@dataclass(frozen=True)
class MachineSnapshot:
    """The values a machine's PLC shows at one instant."""

    name: str
    unit_id: int
    time_s: float
    state: int
    reason: int
    good_count: int
    scrap_count: int
    meas_seq: int
    order: str
    operation: str
    material: str
    lot: str
    temperature: float
    pressure: float
    speed: float
    speed_setpoint: float
    last_measurement: float
    #: ring buffer of float32 values; part with MeasSeq = s is in slot (s - 1) mod 32
    measurements: tuple[float, ...]
    #: scenario times of the last change of each group of values (for source timestamps)
    state_since_s: float
    job_since_s: float
    counts_at_s: float
    process_at_s: float
    measurement_at_s: float

    @property
    def good_count16(self) -> int:
        """The 16-bit GoodCount register (wraps from 65535 to 0)."""
        return self.good_count & 0xFFFF
