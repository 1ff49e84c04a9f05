"""OPC UA values and the gateway's: status codes to quality, decoded DataValues to batches, and
values to write coerced to a node's data type."""

from __future__ import annotations

__all__ = [
    "BatchBuilder",
    "coerce_for_write",
    "quality_of_status",
    "variant_type_for",
]

import base64
import binascii
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from asyncua import ua
from numpy.typing import NDArray

from drivers.opcua.codec import EPOCH_TICKS, DataValueColumns
from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.common import TagBase
from gateway.datatypes import DataType
from gateway.errors import WriteRefusedError
from gateway.tags import TagTable

_status_cache: dict[int, int] = {0: quality.GOOD}


def quality_of_status(value: int) -> int:
    """Quality code for an OPC UA StatusCode value, with the status code's name as reason."""
    found = _status_cache.get(value)
    if found is not None:
        return found
    severity = (value >> 30) & 0b11
    try:
        name = ua.StatusCode(ua.UInt32(value & 0xFFFF0000)).name
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


class BatchBuilder:
    """Turns decoded DataValues of a device's items into batches.

    An item is one monitored or read node: a scalar tag, or an array tag whose elements are
    consecutive tag-table indices. `handles` name items by their position.
    """

    def __init__(self, source: str, first: list[int], counts: list[int], table: TagTable) -> None:
        self.source = source
        self._first = np.array(first, np.int32)
        self._counts = np.array(counts, np.int32)
        self._has_arrays = bool((self._counts > 1).any())
        tags = np.array(
            [i for f, c in zip(first, counts, strict=True) for i in range(f, f + c)], np.int32
        )
        self._scale = table.scale
        self._offset = table.offset
        self._scaled = bool(
            len(tags) and ((table.scale[tags] != 1).any() or (table.offset[tags] != 0).any())
        )
        self._seen = np.zeros(len(first), bool)

    def build(
        self, columns: DataValueColumns, handles: NDArray[np.uint32], received_ns: int
    ) -> SampleBatch:
        known = handles < len(self._first)
        if not known.all():
            columns = _select(columns, known)
            handles = handles[known]
        status = columns.status
        values = columns.values
        objects = columns.objects
        if status.any():
            unique, inverse = np.unique(status, return_inverse=True)
            codes = np.array([quality_of_status(int(s)) for s in unique], np.uint16)[inverse]
            bad = (status >> 30) >= 2
            if bad.any():
                values = np.where(bad, np.nan, values)
                if objects is not None:
                    objects = [None if b else o for b, o in zip(bad.tolist(), objects, strict=True)]
        else:
            codes = np.zeros(len(status), np.uint16)
        ticks = np.where(columns.source_ticks != 0, columns.source_ticks, columns.server_ticks)
        stamps = np.where(ticks > 0, (ticks - EPOCH_TICKS) * 100, received_ns)
        if self._has_arrays and (self._counts[handles] > 1).any():
            return self._expand(handles, values, codes, stamps, objects, received_ns)
        tags = self._first[handles]
        if self._scaled:
            values = values * self._scale[tags] + self._offset[tags]
        seen = self._seen
        seen[handles] = True
        unique_tags = int(np.count_nonzero(seen)) == len(handles)
        seen[handles] = False
        return SampleBatch(
            self.source,
            tags,
            values,
            codes,
            stamps,
            _object_column(objects),
            received_ns,
            unique_tags,
        )

    def _expand(
        self,
        handles: NDArray[np.uint32],
        values: NDArray[np.float64],
        codes: NDArray[np.uint16],
        stamps: NDArray[np.int64],
        objects: list[Any] | None,
        received_ns: int,
    ) -> SampleBatch:
        """Rows with array items become one row per element (the rare path)."""
        tags: list[int] = []
        out_values: list[float] = []
        out_codes: list[int] = []
        out_stamps: list[int] = []
        out_objects: list[Any] = []
        missing = quality.bad("array element missing")
        for row, handle in enumerate(handles.tolist()):
            first, count = int(self._first[handle]), int(self._counts[handle])
            raw = objects[row] if objects is not None else None
            if count == 1:
                elements: list[Any] = [raw if raw is not None else float(values[row])]
            elif raw is None:
                elements = [float(values[row])] if not np.isnan(values[row]) else []
            else:
                elements = list(raw.tolist() if isinstance(raw, np.ndarray) else raw)
            for element in range(count):
                tags.append(first + element)
                out_stamps.append(int(stamps[row]))
                value = elements[element] if element < len(elements) else None
                if isinstance(value, bool | int | float):
                    out_values.append(float(value))
                    out_objects.append(None)
                    out_codes.append(int(codes[row]))
                else:
                    out_values.append(math.nan)
                    out_objects.append(value)
                    bad = value is None and quality.severity_of(int(codes[row])) is not (
                        quality.Severity.BAD
                    )
                    out_codes.append(missing if bad else int(codes[row]))
        tag_array = np.array(tags, np.int32)
        value_array = np.array(out_values, np.float64)
        if self._scaled:
            value_array = value_array * self._scale[tag_array] + self._offset[tag_array]
        return SampleBatch(
            self.source,
            tag_array,
            value_array,
            np.array(out_codes, np.uint16),
            np.array(out_stamps, np.int64),
            _object_column(out_objects),
            received_ns,
            len(set(tags)) == len(tags),
        )


def _object_column(objects: list[Any] | None) -> NDArray[np.object_] | None:
    if objects is None or all(o is None for o in objects):
        return None
    column = np.empty(len(objects), object)
    column[:] = objects
    return column


def _select(columns: DataValueColumns, mask: NDArray[np.bool_]) -> DataValueColumns:
    return DataValueColumns(
        columns.values[mask],
        columns.status[mask],
        columns.source_ticks[mask],
        columns.server_ticks[mask],
        None,
        None
        if columns.objects is None
        else [o for o, keep in zip(columns.objects, mask.tolist(), strict=True) if keep],
    )


# --- writes ---------------------------------------------------------------------------------

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
_INTEGER_RANGES = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_FLOAT_MAX = {ua.VariantType.Float: 3.4028234663852886e38, ua.VariantType.Double: math.inf}


def variant_type_for(data_type: DataType) -> ua.VariantType:
    """The variant type of a configured tag type."""
    return _VARIANTS[data_type]


def coerce_for_write(tag_id: str, tag: TagBase, value: object, target: ua.VariantType) -> Any:
    """`value` (engineering units) as the Python value of a `target` Variant, or
    :class:`WriteRefusedError` saying why it does not fit."""
    if target in _INTEGER_RANGES or target in _FLOAT_MAX:
        number = _number(tag_id, value)
        if tag.span is not None and not tag.span[0] <= number <= tag.span[1]:
            raise WriteRefusedError(tag_id, f"{value} is outside the tag's span {list(tag.span)}")
        unscaled = tag.scale == 1 and tag.offset == 0
        raw = number if unscaled else (number - tag.offset) / tag.scale
        if target in _FLOAT_MAX:
            if abs(raw) > _FLOAT_MAX[target]:
                raise WriteRefusedError(tag_id, f"{value} does not fit in a {target.name}")
            return float(raw)
        if isinstance(raw, float) and abs(raw - round(raw)) > 1e-9:
            raise WriteRefusedError(tag_id, f"{value} is not a whole number for a {target.name}")
        low, high = _INTEGER_RANGES[target]
        integer = round(raw)
        if not low <= integer <= high:
            raise WriteRefusedError(tag_id, f"{value} is outside {target.name} [{low}, {high}]")
        return integer
    if target is ua.VariantType.Boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise WriteRefusedError(tag_id, f"{value!r} is not a Boolean")
    if target in (ua.VariantType.String, ua.VariantType.LocalizedText):
        if isinstance(value, str):
            return value if target is ua.VariantType.String else ua.LocalizedText(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise WriteRefusedError(tag_id, f"{value!r} is not a String")
    if target is ua.VariantType.DateTime:
        return _datetime(tag_id, value)
    if target is ua.VariantType.ByteString:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise WriteRefusedError(tag_id, "a ByteString is written as base64 text") from None
        raise WriteRefusedError(tag_id, f"{value!r} is not a ByteString")
    raise WriteRefusedError(tag_id, f"the node's data type {target.name} cannot be written")


def _number(tag_id: str, value: object) -> int | float:
    """A number from a number or numeric text; ints stay ints (64-bit values stay exact)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return int(value) if value.strip().lstrip("+-").isdigit() else number
    raise WriteRefusedError(tag_id, f"expected a number, got {value!r}")


def _datetime(tag_id: str, value: object) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise WriteRefusedError(tag_id, f"{value!r} is not an ISO 8601 time") from None
    else:
        raise WriteRefusedError(tag_id, f"{value!r} is not a time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
