"""OPC UA values → batch columns: status codes to quality, timestamps to ns, types to columns."""

from __future__ import annotations

__all__ = ["quality_of_status", "timestamp_ns", "variant_type_for"]

from datetime import UTC, datetime

from asyncua import ua

from gateway import quality
from gateway.datatypes import DataType

_status_cache: dict[int, int] = {0: quality.GOOD}


def quality_of_status(value: int) -> int:
    """Quality code for an OPC UA StatusCode value, with the status code's name as reason."""
    found = _status_cache.get(value)
    if found is not None:
        return found
    severity = (value >> 30) & 0b11
    try:
        name = ua.StatusCode(ua.UInt32(value)).name
    except Exception:  # asyncua raises on codes it does not know
        name = f"0x{value:08X}"
    if severity == 0:
        code = (
            quality.GOOD
            if (value & 0xFFFF0000) == 0
            else quality.quality_code(quality.Severity.GOOD, name)
        )
    elif severity == 1:
        code = quality.uncertain(name)
    else:
        code = quality.bad(name)
    if len(_status_cache) < 4096:
        _status_cache[value] = code
    return code


def timestamp_ns(moment: datetime | None, fallback_ns: int) -> int:
    """A DataValue timestamp in ns since the epoch (naive datetimes are UTC)."""
    if moment is None:
        return fallback_ns
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


_VARIANTS = {
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.INT16: ua.VariantType.Int16,
    DataType.UINT16: ua.VariantType.UInt16,
    DataType.INT32: ua.VariantType.Int32,
    DataType.UINT32: ua.VariantType.UInt32,
    DataType.INT64: ua.VariantType.Int64,
    DataType.UINT64: ua.VariantType.UInt64,
    DataType.FLOAT32: ua.VariantType.Float,
    DataType.FLOAT64: ua.VariantType.Double,
    DataType.STRING: ua.VariantType.String,
    DataType.DATETIME: ua.VariantType.DateTime,
    DataType.BYTES: ua.VariantType.ByteString,
}


def variant_type_for(data_type: DataType) -> ua.VariantType:
    return _VARIANTS[data_type]
