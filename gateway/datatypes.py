"""Data types of tag values, shared by the config, the drivers and the outputs."""

from __future__ import annotations

__all__ = ["DataType"]

from enum import StrEnum


class DataType(StrEnum):
    """The type of a tag's value as the device holds it."""

    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    DATETIME = "datetime"
    BYTES = "bytes"

    @property
    def is_numeric(self) -> bool:
        """True for the types carried in a batch's float64 value column."""
        return self not in (DataType.STRING, DataType.DATETIME, DataType.BYTES)

    @property
    def is_integer(self) -> bool:
        return self.is_numeric and self not in (DataType.FLOAT32, DataType.FLOAT64)

    @property
    def bits(self) -> int:
        """Width in bits of the numeric types (0 for the others)."""
        return _BITS.get(self, 0)

    @property
    def is_signed(self) -> bool:
        return self in (DataType.INT16, DataType.INT32, DataType.INT64)


_BITS = {
    DataType.BOOL: 1,
    DataType.INT16: 16,
    DataType.UINT16: 16,
    DataType.INT32: 32,
    DataType.UINT32: 32,
    DataType.INT64: 64,
    DataType.UINT64: 64,
    DataType.FLOAT32: 32,
    DataType.FLOAT64: 64,
}
