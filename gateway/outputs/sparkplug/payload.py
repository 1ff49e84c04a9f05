"""Sparkplug B payloads: the protobuf ``org.eclipse.tahu.protobuf.Payload`` built from our tags.

``sparkplug_b.proto`` is the Eclipse Tahu definition of Sparkplug 3.0 (EPL-2.0, unchanged);
``sparkplug_b_pb2.py`` / ``.pyi`` are generated from it with::

    python -m grpc_tools.protoc -I gateway/outputs/sparkplug \\
        --python_out=gateway/outputs/sparkplug --pyi_out=gateway/outputs/sparkplug sparkplug_b.proto

(grpcio-tools 1.85, protoc 35.1: the generated code needs protobuf >= 7.35.1, < 8).

Data types: ``bool`` → Boolean, ``int16``/``uint16``/``int32``/``uint32``/``int64``/``uint64``
→ the same Sparkplug type (signed values as two's complement in the unsigned field),
``float32`` → Float, ``float64`` → Double, ``string`` → String, ``datetime`` → DateTime (ms),
``bytes`` → Bytes. A tag with a scale or offset carries engineering values: Double.
A sample without a value is ``is_null``; a sample that is not good carries the property
``Quality`` (Int32, OPC DA codes as Ignition reads them: 0 bad, 64 uncertain; absent = good).
"""

from __future__ import annotations

__all__ = [
    "DataType",
    "Payload",
    "append_seq",
    "metric_value",
    "set_historical",
    "sparkplug_type",
    "write_value",
]

import math
from datetime import datetime
from typing import Any

from gateway import quality
from gateway.datatypes import DataType as TagType
from gateway.outputs.sparkplug import sparkplug_b_pb2 as pb
from gateway.tags import TagInfo

Payload = pb.Payload
DataType = pb.DataType

_SIMPLE = {
    TagType.BOOL: pb.Boolean,
    TagType.INT16: pb.Int16,
    TagType.UINT16: pb.UInt16,
    TagType.INT32: pb.Int32,
    TagType.UINT32: pb.UInt32,
    TagType.INT64: pb.Int64,
    TagType.UINT64: pb.UInt64,
    TagType.FLOAT32: pb.Float,
    TagType.FLOAT64: pb.Double,
    TagType.STRING: pb.String,
    TagType.DATETIME: pb.DateTime,
    TagType.BYTES: pb.Bytes,
}
_INT32_TYPES = frozenset({pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32})
_INT64_TYPES = frozenset({pb.Int64, pb.UInt64, pb.DateTime})
_SIGNED_BITS = {pb.Int8: 8, pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}
QUALITY_BAD = 0
QUALITY_UNCERTAIN = 64


def sparkplug_type(info: TagInfo) -> int:
    """The Sparkplug data type of a tag's published values."""
    config = info.config
    scaled = info.type.is_numeric and (config.scale != 1 or config.offset != 0)
    if scaled and info.type is not TagType.BOOL:
        return int(pb.Double)
    return int(_SIMPLE[info.type])


def write_value(metric: Any, datatype: int, value: object) -> None:
    """Put `value` (float from the value column, or the object) into `metric`; None/NaN: null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        metric.is_null = True
        return
    if datatype == pb.Double:
        metric.double_value = float(value)  # type: ignore[arg-type]
    elif datatype == pb.Float:
        metric.float_value = float(value)  # type: ignore[arg-type]
    elif datatype == pb.Boolean:
        metric.boolean_value = bool(value)
    elif datatype in _INT32_TYPES:
        metric.int_value = int(value) & 0xFFFFFFFF  # type: ignore[call-overload]
    elif datatype == pb.DateTime:
        metric.long_value = _millis(value)
    elif datatype in _INT64_TYPES:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF  # type: ignore[call-overload]
    elif datatype == pb.String:
        metric.string_value = value if isinstance(value, str) else str(value)
    elif datatype == pb.Bytes:
        metric.bytes_value = bytes(value) if isinstance(value, bytes | bytearray) else b""
    else:
        metric.is_null = True


def write_quality(metric: Any, code: int) -> None:
    """Add the ``Quality`` property for a sample that is not good."""
    severity = quality.severity_of(code)
    if severity is quality.Severity.GOOD:
        return
    props = metric.properties
    props.keys.append("Quality")
    value = props.values.add()
    value.type = pb.Int32
    value.int_value = QUALITY_BAD if severity is quality.Severity.BAD else QUALITY_UNCERTAIN


def metric_value(metric: Any, datatype: int) -> object:
    """The Python value of a received metric (DCMD), with signed types decoded."""
    kind = metric.WhichOneof("value")
    if kind is None or metric.is_null:
        return None
    raw = getattr(metric, kind)
    bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]
    if bits is not None and kind in ("int_value", "long_value"):
        raw = int(raw) & ((1 << bits) - 1)
        if raw >= 1 << (bits - 1):
            raw -= 1 << bits
    return raw


def _millis(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float):
        return int(value)
    return 0


def append_seq(payload: bytes, seq: int) -> bytes:
    """`payload` with its ``seq`` field (3) set: fields may come in any order, the last wins."""
    if seq < 128:
        return payload + bytes((0x18, seq))
    return payload + bytes((0x18, (seq & 0x7F) | 0x80, seq >> 7))


def set_historical(payload: bytes) -> bytes:
    """The same payload with every metric flagged ``is_historical`` and without ``seq``."""
    message = pb.Payload()
    message.ParseFromString(payload)
    message.ClearField("seq")
    for metric in message.metrics:
        metric.is_historical = True
    data: bytes = message.SerializeToString()
    return data
