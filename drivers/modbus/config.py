"""Configuration models of the Modbus driver: tags and the three transports.

Addresses are protocol (0-based) addresses: holding register 40001 in the classic notation is
``address: 0`` in table ``holding``. One device entry is one unit (slave) id; several entries
that name the same TCP endpoint or serial port share one connection (see ``docs/modbus.md``).
"""

from __future__ import annotations

__all__ = [
    "ModbusDevice",
    "ModbusDeviceBase",
    "ModbusRtuDevice",
    "ModbusRtuTcpDevice",
    "ModbusTable",
    "ModbusTag",
    "ModbusTcpDevice",
    "Parity",
    "WordOrder",
]

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.config.common import ConfigModel, Name, PollGroup, PositiveSeconds, TagBase
from gateway.datatypes import DataType


class ModbusTable(StrEnum):
    """The four Modbus data tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bits(self) -> bool:
        return self in (ModbusTable.COIL, ModbusTable.DISCRETE)

    @property
    def read_function(self) -> int:
        """The function code that reads this table (1, 2, 3 or 4)."""
        return _READ_FUNCTION[self]


_READ_FUNCTION = {
    ModbusTable.COIL: 1,
    ModbusTable.DISCRETE: 2,
    ModbusTable.HOLDING: 3,
    ModbusTable.INPUT: 4,
}


class WordOrder(StrEnum):
    """Byte order of multi-register values; A is the most significant byte."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


class Parity(StrEnum):
    NONE = "none"
    EVEN = "even"
    ODD = "odd"


class ModbusTag(TagBase):
    """One value (or an array of values) in a Modbus device."""

    type: DataType = DataType.UINT16
    table: ModbusTable = ModbusTable.HOLDING
    address: Annotated[int, Field(ge=0, le=65535)]
    """Protocol (0-based) address: holding register 40001 is address 0."""
    count: Annotated[int, Field(ge=1, le=2000)] = 1
    """Number of elements; more than 1 makes an array tag whose elements are ``name[i]``."""
    length: Annotated[int, Field(ge=1, le=250)] | None = None
    """String length in characters (two per register); required for strings."""
    word_order: WordOrder | None = None
    """Order of multi-register values; the device's `word_order` when not set."""
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    """For a bool in a holding or input register: the bit (0 = least significant). An array
    continues with the next bits, into the next register after bit 15."""
    byte_swap: bool = False
    """Strings only: the first character is in the low byte of each register."""
    verify_write: bool = False
    """After a write, read the registers (or coils) back and fail if they differ."""

    @model_validator(mode="after")
    def _check_shape(self) -> ModbusTag:
        if self.type is DataType.STRING and self.length is None:
            raise ValueError("a string tag needs `length` (characters)")
        if self.type is not DataType.STRING and self.length is not None:
            raise ValueError("`length` applies to string tags only")
        if self.byte_swap and self.type is not DataType.STRING:
            raise ValueError("`byte_swap` applies to string tags; use word_order for numbers")
        if self.type in (DataType.DATETIME, DataType.BYTES):
            raise ValueError(f"type {self.type.value} is not available over Modbus")
        if self.table.is_bits and self.type is not DataType.BOOL:
            raise ValueError(f"{self.table.value} table holds bits: type must be bool")
        if self.bit is not None:
            if self.type is not DataType.BOOL or self.table.is_bits:
                raise ValueError("`bit` selects a bool inside a holding or input register")
            if self.writable:
                raise ValueError(
                    "a bit inside a register cannot be writable: setting it needs a "
                    "read-modify-write that races with the PLC; write the register as uint16"
                )
        if self.writable and self.table in (ModbusTable.INPUT, ModbusTable.DISCRETE):
            raise ValueError(f"the {self.table.value} table is read-only: cannot be writable")
        if self.verify_write and not self.writable:
            raise ValueError("`verify_write` needs `writable: true`")
        if self.address + self.register_count - 1 > 65535:
            raise ValueError("the tag runs past address 65535")
        return self

    @property
    def registers_per_element(self) -> int:
        """Registers (or bits, for bit tables) one element occupies."""
        if self.table.is_bits or self.bit is not None:
            return 1
        if self.type is DataType.STRING:
            return ((self.length or 0) + 1) // 2
        return max(1, self.type.bits // 16)

    @property
    def register_count(self) -> int:
        """Registers (or bits) the whole tag occupies."""
        if self.bit is not None:
            return (self.bit + self.count + 15) // 16
        return self.registers_per_element * self.count

    def element_address(self, element: int) -> int:
        """Address of the first register (or bit) of one element."""
        if self.bit is not None:
            return self.address + (self.bit + element) // 16
        return self.address + element * self.registers_per_element

    def element_bit(self, element: int) -> int | None:
        """The bit inside its register of one element of a bit-in-register tag."""
        return None if self.bit is None else (self.bit + element) % 16


UnitId = Annotated[int, Field(ge=0, le=255)]


class ModbusDeviceBase(ConfigModel):
    """Settings every Modbus device has, whatever its transport."""

    name: Name
    unit: UnitId = 1
    """Unit (slave) id. Modbus TCP devices usually ignore it (1 or 255); behind a gateway or on
    a serial line it selects the device."""
    timeout: PositiveSeconds = 1.0
    """Seconds to wait for a connection or for a response."""
    word_order: WordOrder = WordOrder.ABCD
    """Default word order of the device's multi-register values."""
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    """Largest register read this device accepts (protocol limit 125)."""
    max_bits: Annotated[int, Field(ge=1, le=2000)] = 2000
    """Largest coil or discrete-input read (protocol limit 2000)."""
    max_gap: Annotated[int, Field(ge=0, le=124)] = 16
    """Unused registers a merged read may include to save a request."""
    max_bit_gap: Annotated[int, Field(ge=0, le=1999)] = 128
    """Unused coils or discrete inputs a merged read may include to save a request."""
    backoff_max: PositiveSeconds = 60.0
    """A device that times out is polled less often, up to once per this many seconds, so the
    rest of a shared line keeps its rate."""
    bad_range_retry: PositiveSeconds = 600.0
    """Seconds after which ranges that answered "illegal data address" are tried again."""
    multiple_writes_only: bool = False
    """Use FC 15/16 even for one coil or register (devices without FC 5/6)."""
    cell: Name | None = None
    """ISA-95 work unit this device belongs to (the device name when not set)."""
    poll_groups: list[PollGroup] = Field(default_factory=lambda: [PollGroup(name="default")])
    tags: list[ModbusTag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_tags(self) -> ModbusDeviceBase:
        for index, tag in enumerate(self.tags):
            limit = self.max_bits if tag.table.is_bits else self.max_registers
            if tag.registers_per_element > limit:
                raise ValueError(
                    f"tags[{index}] ({tag.name}): one element takes "
                    f"{tag.registers_per_element} registers, more than max_registers {limit}"
                )
        return self


class ModbusTcpDevice(ModbusDeviceBase):
    """A Modbus TCP device (or a unit behind a Modbus TCP gateway)."""

    protocol: Literal["modbus_tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    max_outstanding: Annotated[int, Field(ge=1, le=16)] = 1
    """Requests sent on the connection before the first answer arrives (Modbus TCP transaction
    ids). More than 1 saves round trips on devices that queue requests; keep 1 for devices that
    do not (many cannot tell two requests apart when they arrive together)."""
    share_connection: bool = False
    """Use one TCP connection for all devices at this host and port that set it too (units
    behind a gateway that accepts few connections). Otherwise each device has its own."""


class ModbusRtuTcpDevice(ModbusDeviceBase):
    """A unit on a serial line reached through a transparent serial-to-TCP gateway (RTU frames,
    CRC included, inside a TCP stream)."""

    protocol: Literal["modbus_rtu_tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    inter_frame_delay: Annotated[float, Field(ge=0, le=1)] = 0.005
    """Seconds of silence between an answer (or a timeout) and the next request."""


class ModbusRtuDevice(ModbusDeviceBase):
    """A unit on a serial line (RS-485/RS-232) read in RTU framing."""

    protocol: Literal["modbus_rtu"]
    port: str
    """Serial port: ``/dev/ttyUSB0``, ``/dev/ttyS1``, ``COM3``, or a pyserial URL."""
    unit: Annotated[int, Field(ge=1, le=247)] = 1
    baudrate: Annotated[int, Field(ge=300, le=1_000_000)] = 19200
    bytesize: Literal[7, 8] = 8
    parity: Parity = Parity.EVEN
    stopbits: Literal[1, 2] = 1
    inter_frame_delay: Annotated[float, Field(ge=0, le=1)] | None = None
    """Seconds of silence between an answer (or a timeout) and the next request. Default: the
    3.5 character times of the standard (1.75 ms above 19,200 baud)."""
    local_echo: bool = False
    """The adapter echoes what it sends (some RS-485 converters): skip the echo."""

    @property
    def frame_gap(self) -> float:
        """The inter-frame delay in seconds (configured, or 3.5 characters)."""
        if self.inter_frame_delay is not None:
            return self.inter_frame_delay
        if self.baudrate > 19200:
            return 0.00175
        bits_per_char = 1 + self.bytesize + (self.parity is not Parity.NONE) + self.stopbits
        return 3.5 * bits_per_char / self.baudrate


ModbusDevice = ModbusTcpDevice | ModbusRtuTcpDevice | ModbusRtuDevice
