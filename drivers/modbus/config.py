"""Configuration models of the Modbus driver."""

from __future__ import annotations

__all__ = ["ModbusTable", "ModbusTag", "ModbusTcpDevice", "WordOrder"]

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


class WordOrder(StrEnum):
    """Byte order of multi-register values; A is the most significant byte."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


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

    @model_validator(mode="after")
    def _check_shape(self) -> ModbusTag:
        if self.type is DataType.STRING and self.length is None:
            raise ValueError("a string tag needs `length` (characters)")
        if self.type is not DataType.STRING and self.length is not None:
            raise ValueError("`length` applies to string tags only")
        if self.type in (DataType.DATETIME, DataType.BYTES):
            raise ValueError(f"type {self.type.value} is not available over Modbus")
        if self.table.is_bits and self.type is not DataType.BOOL:
            raise ValueError(f"{self.table.value} table holds bits: type must be bool")
        if self.writable and self.table in (ModbusTable.INPUT, ModbusTable.DISCRETE):
            raise ValueError(f"the {self.table.value} table is read-only: cannot be writable")
        if self.address + self.register_count - 1 > 65535:
            raise ValueError("the tag runs past address 65535")
        return self

    @property
    def registers_per_element(self) -> int:
        """Registers (or bits, for bit tables) one element occupies."""
        if self.table.is_bits:
            return 1
        if self.type is DataType.STRING:
            return ((self.length or 0) + 1) // 2
        return max(1, self.type.bits // 16)

    @property
    def register_count(self) -> int:
        """Registers (or bits) the whole tag occupies."""
        return self.registers_per_element * self.count


class ModbusTcpDevice(ConfigModel):
    """A Modbus TCP device (or a unit behind a Modbus TCP gateway)."""

    protocol: Literal["modbus_tcp"]
    name: Name
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit: Annotated[int, Field(ge=0, le=255)] = 1
    """Unit (slave) id."""
    timeout: PositiveSeconds = 1.0
    """Seconds to wait for a connection or a response."""
    word_order: WordOrder = WordOrder.ABCD
    """Default word order of the device's multi-register values."""
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    """Largest register read this device accepts (protocol limit 125)."""
    max_bits: Annotated[int, Field(ge=1, le=2000)] = 2000
    """Largest coil or discrete-input read (protocol limit 2000)."""
    max_gap: Annotated[int, Field(ge=0, le=124)] = 16
    """Unused registers a merged read may include to save a request."""
    cell: Name | None = None
    """ISA-95 work unit this device belongs to (the device name when not set)."""
    poll_groups: list[PollGroup] = Field(default_factory=lambda: [PollGroup(name="default")])
    tags: list[ModbusTag] = Field(default_factory=list)
