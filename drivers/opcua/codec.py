"""Decoding Publish and Read responses straight into columns.

asyncua decodes every DataValue into a dataclass, a Variant and two datetimes; at 10,000
notifications per second that costs more than everything else the gateway does. This module
reads the binary encoding (Part 6, 5.2) of the two responses that carry many DataValues and
returns numpy columns. A list of DataValues whose records all have the same layout (the usual
case: one numeric type, the same timestamps present) is decoded in one ``np.frombuffer`` call
with a structured dtype; other lists go through a loop that unpacks fixed-size scalars with
:mod:`struct` and hands anything else (arrays of strings, structures, GUIDs) to asyncua's own
Variant decoder. Anything else in a response (status-change notifications, events) is decoded
by asyncua.
"""

from __future__ import annotations

__all__ = [
    "EPOCH_TICKS",
    "DataValueColumns",
    "PublishMessage",
    "columns_from_data_values",
    "decode_publish_response",
    "decode_read_response",
]

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import (
    extensionobject_from_binary,
    nodeid_from_binary,
    struct_from_binary,
    variant_from_binary,
)
from numpy.typing import NDArray

EPOCH_TICKS = 116_444_736_000_000_000
"""OPC UA DateTime (100 ns ticks since 1601-01-01) of the Unix epoch."""
_1601 = datetime(1601, 1, 1, tzinfo=UTC)

_DATA_CHANGE = ua.NodeId(ua.Int32(ObjectIds.DataChangeNotification_Encoding_DefaultBinary))

# DataValue encoding mask bits, in the order the fields follow the mask byte
_VALUE, _STATUS, _SOURCE, _SERVER, _SOURCE_PICO, _SERVER_PICO = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

# Variant built-in types encoded as one fixed-size little-endian number: numpy and struct formats
_NUMERIC_FORMATS = {
    1: ("?", "?"),  # Boolean
    2: ("i1", "b"),  # SByte
    3: ("u1", "B"),  # Byte
    4: ("<i2", "h"),  # Int16
    5: ("<u2", "H"),  # UInt16
    6: ("<i4", "i"),  # Int32
    7: ("<u4", "I"),  # UInt32
    8: ("<i8", "q"),  # Int64
    9: ("<u8", "Q"),  # UInt64
    10: ("<f4", "f"),  # Float
    11: ("<f8", "d"),  # Double
}
_NUMERIC = {kind: numpy for kind, (numpy, _) in _NUMERIC_FORMATS.items()}
_NUMERIC_STRUCT = {kind: struct.Struct("<" + fmt) for kind, (_, fmt) in _NUMERIC_FORMATS.items()}
_STRING, _DATETIME, _BYTESTRING, _XML = 12, 13, 15, 16
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")


@dataclass(slots=True)
class DataValueColumns:
    """A list of DataValues (with their client handles, for notifications) as columns.

    Rows whose value is not a numeric scalar have NaN in `values` and the Python value in
    `objects` (str, bytes, datetime, a list or float64 array for arrays, None when the
    DataValue carried no value).
    """

    values: NDArray[np.float64]
    status: NDArray[np.uint32]
    source_ticks: NDArray[np.int64]
    """Source timestamps as OPC UA ticks; 0 where absent."""
    server_ticks: NDArray[np.int64]
    handles: NDArray[np.uint32] | None = None
    objects: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class PublishMessage:
    """The parts of a PublishResponse the driver uses."""

    subscription_id: int
    sequence_number: int
    more_notifications: bool
    data_changes: list[DataValueColumns] = field(default_factory=list)
    other: list[Any] = field(default_factory=list)
    """Other notifications (StatusChangeNotification, events), decoded by asyncua."""

    @property
    def is_keepalive(self) -> bool:
        return not self.data_changes and not self.other


def decode_publish_response(body: bytes) -> PublishMessage:
    """Decode a PublishResponse body (after the secure-channel header)."""
    buffer = Buffer(body)
    nodeid_from_binary(buffer)  # type id, checked by the caller's request
    header = struct_from_binary(ua.ResponseHeader, buffer)
    header.ServiceResult.check()
    pos = buffer.cur_pos
    (subscription_id,) = _U32.unpack_from(body, pos)
    (available,) = _I32.unpack_from(body, pos + 4)
    pos += 8 + 4 * max(available, 0)
    more = bool(body[pos])
    (sequence,) = _U32.unpack_from(body, pos + 1)
    pos += 1 + 4 + 8  # sequence number, publish time
    (count,) = _I32.unpack_from(body, pos)
    pos += 4
    message = PublishMessage(subscription_id, sequence, more)
    for _ in range(max(count, 0)):
        start = pos
        typed = Buffer(body, pos)
        type_id = nodeid_from_binary(typed)
        pos = typed.cur_pos
        encoding = body[pos]
        pos += 1
        length = 0
        if encoding & 1:
            (length,) = _I32.unpack_from(body, pos)
            pos += 4
        if type_id == _DATA_CHANGE and length > 0:
            (items,) = _I32.unpack_from(body, pos)
            columns, _ = _decode_data_values(body, pos + 4, max(items, 0), with_handles=True)
            message.data_changes.append(columns)
            pos += length
        else:
            whole = Buffer(body, start)
            message.other.append(extensionobject_from_binary(whole))
            pos = whole.cur_pos
    return message


def decode_read_response(body: bytes) -> DataValueColumns:
    """Decode a ReadResponse body into columns, in the order of the request's nodes."""
    buffer = Buffer(body)
    nodeid_from_binary(buffer)
    header = struct_from_binary(ua.ResponseHeader, buffer)
    header.ServiceResult.check()
    pos = buffer.cur_pos
    (count,) = _I32.unpack_from(body, pos)
    columns, _ = _decode_data_values(body, pos + 4, max(count, 0), with_handles=False)
    return columns


def _decode_data_values(
    data: bytes, pos: int, count: int, *, with_handles: bool
) -> tuple[DataValueColumns, int]:
    if count == 0:
        return _empty(with_handles), pos
    uniform = _uniform_dtype(data, pos, with_handles)
    if uniform is not None:
        dtype, masks = uniform
        end = pos + count * dtype.itemsize
        if end <= len(data):
            records = np.frombuffer(data, dtype, count, pos)
            if all(bool((records[name] == value).all()) for name, value in masks):
                return _columns_from_records(records, with_handles), end
    return _decode_loop(data, pos, count, with_handles)


def _empty(with_handles: bool) -> DataValueColumns:
    return DataValueColumns(
        np.empty(0, np.float64),
        np.empty(0, np.uint32),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty(0, np.uint32) if with_handles else None,
    )


def _uniform_dtype(
    data: bytes, pos: int, with_handles: bool
) -> tuple[np.dtype[np.void], list[tuple[str, int]]] | None:
    """The record dtype when the first DataValue has a fixed size, with the mask fields that
    every record must repeat for the whole list to share it."""
    fields: list[tuple[str, str]] = []
    if with_handles:
        fields.append(("handle", "<u4"))
        pos += 4
    if pos >= len(data):
        return None
    mask = data[pos]
    fields.append(("mask", "u1"))
    masks = [("mask", mask)]
    if mask & _VALUE:
        if pos + 1 >= len(data):
            return None
        variant = data[pos + 1]
        numeric = _NUMERIC.get(variant)  # scalar only: the array bits make it unknown
        if numeric is None:
            return None
        fields += [("variant", "u1"), ("value", numeric)]
        masks.append(("variant", variant))
    if mask & _STATUS:
        fields.append(("status", "<u4"))
    if mask & _SOURCE:
        fields.append(("source", "<i8"))
    if mask & _SOURCE_PICO:
        fields.append(("source_pico", "<u2"))
    if mask & _SERVER:
        fields.append(("server", "<i8"))
    if mask & _SERVER_PICO:
        fields.append(("server_pico", "<u2"))
    return np.dtype(fields), masks  # a list of (name, format) is packed, no alignment


def _columns_from_records(records: NDArray[np.void], with_handles: bool) -> DataValueColumns:
    n = len(records)
    names = records.dtype.names or ()
    values = records["value"].astype(np.float64) if "value" in names else np.full(n, np.nan)
    status = records["status"].astype(np.uint32) if "status" in names else np.zeros(n, np.uint32)
    source = records["source"].astype(np.int64) if "source" in names else np.zeros(n, np.int64)
    server = records["server"].astype(np.int64) if "server" in names else np.zeros(n, np.int64)
    handles = records["handle"].astype(np.uint32) if with_handles else None
    objects = None if "value" in names else [None] * n
    return DataValueColumns(values, status, source, server, handles, objects)


def _decode_loop(
    data: bytes, pos: int, count: int, with_handles: bool
) -> tuple[DataValueColumns, int]:
    values = np.full(count, np.nan)
    status = np.zeros(count, np.uint32)
    source = np.zeros(count, np.int64)
    server = np.zeros(count, np.int64)
    handles = np.zeros(count, np.uint32) if with_handles else None
    objects: list[Any] = [None] * count
    has_objects = False
    for row in range(count):
        if handles is not None:
            handles[row] = _U32.unpack_from(data, pos)[0]
            pos += 4
        mask = data[pos]
        pos += 1
        if mask & _VALUE:
            variant = data[pos]
            packer = _NUMERIC_STRUCT.get(variant)
            if packer is not None:
                values[row] = packer.unpack_from(data, pos + 1)[0]
                pos += 1 + packer.size
            else:
                value, pos = _decode_variant(data, pos)
                if isinstance(value, bool | int | float):
                    values[row] = value
                else:
                    objects[row] = value
                    has_objects = True
        if mask & _STATUS:
            status[row] = _U32.unpack_from(data, pos)[0]
            pos += 4
        if mask & _SOURCE:
            source[row] = _I64.unpack_from(data, pos)[0]
            pos += 8
        if mask & _SOURCE_PICO:
            pos += 2
        if mask & _SERVER:
            server[row] = _I64.unpack_from(data, pos)[0]
            pos += 8
        if mask & _SERVER_PICO:
            pos += 2
    columns = DataValueColumns(
        values, status, source, server, handles, objects if has_objects else None
    )
    return columns, pos


def _decode_variant(data: bytes, pos: int) -> tuple[Any, int]:
    """A non-numeric or array Variant at `pos`: (Python value, position after it)."""
    encoding = data[pos]
    kind = encoding & 0x3F
    if not encoding & 0xC0:
        if kind in (_STRING, _XML, _BYTESTRING):
            (length,) = _I32.unpack_from(data, pos + 1)
            start = pos + 5
            if length < 0:
                return None, start
            raw = data[start : start + length]
            if len(raw) != length:
                raise ValueError("string runs past the end of the message")
            return (raw if kind == _BYTESTRING else raw.decode("utf-8", "replace")), start + length
        if kind == _DATETIME:
            (ticks,) = _I64.unpack_from(data, pos + 1)
            return datetime_from_ticks(ticks), pos + 9
    elif encoding & 0x80 and not encoding & 0x40 and kind in _NUMERIC:
        (length,) = _I32.unpack_from(data, pos + 1)
        start = pos + 5
        if length < 0:
            return None, start
        dtype = np.dtype(_NUMERIC[kind])
        end = start + length * dtype.itemsize
        if end > len(data):
            raise ValueError("array runs past the end of the message")
        return np.frombuffer(data, dtype, length, start).astype(np.float64), end
    buffer = Buffer(data, pos)
    variant = variant_from_binary(buffer)
    return variant.Value, buffer.cur_pos


def datetime_from_ticks(ticks: int) -> datetime | None:
    """An OPC UA DateTime as an aware UTC datetime (None for the null value 0)."""
    if ticks <= 0:
        return None
    try:
        return _1601 + timedelta(microseconds=ticks // 10)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def columns_from_data_values(
    data_values: list[ua.DataValue], handles: list[int] | None = None
) -> DataValueColumns:
    """Columns from DataValues asyncua already decoded (the slow path, and for tests)."""
    n = len(data_values)
    values = np.full(n, np.nan)
    status = np.zeros(n, np.uint32)
    source = np.zeros(n, np.int64)
    server = np.zeros(n, np.int64)
    objects: list[Any] = [None] * n
    has_objects = False
    for row, data_value in enumerate(data_values):
        raw = data_value.Value.Value if data_value.Value is not None else None
        if isinstance(raw, bool | int | float):
            values[row] = raw
        elif raw is not None:
            objects[row] = raw
            has_objects = True
        status[row] = data_value.StatusCode.value if data_value.StatusCode is not None else 0
        source[row] = _ticks(data_value.SourceTimestamp)
        server[row] = _ticks(data_value.ServerTimestamp)
    return DataValueColumns(
        values,
        status,
        source,
        server,
        np.array(handles, np.uint32) if handles is not None else None,
        objects if has_objects else None,
    )


def _ticks(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _1601
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
