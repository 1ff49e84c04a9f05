# mypy: disable-error-code="arg-type"
"""Pure parts of the OPC UA driver: addresses, config checks, the binary decoder, batches and
write coercion (no server)."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import ua
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import nodeid_to_binary, struct_to_binary

from drivers.opcua.addressing import (
    UnresolvedAddressError,
    format_node_id,
    parse_browse_path,
    parse_node_id,
    resolve_node_id,
)
from drivers.opcua.codec import (
    EPOCH_TICKS,
    columns_from_data_values,
    decode_publish_response,
    decode_read_response,
)
from drivers.opcua.config import OpcUaTag
from drivers.opcua.values import BatchBuilder, coerce_for_write
from gateway import quality
from gateway.config.load import load_config_text
from gateway.errors import ConfigError, WriteRefusedError
from gateway.tags import TagTable

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:other", "urn:acme:plc"]
MOMENT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
MOMENT_NS = int(MOMENT.timestamp() * 1_000_000) * 1000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ns=2;s=Line1.Press.Count", ua.NodeId("Line1.Press.Count", 2)),
        ("nsu=urn:acme:plc;i=1001", ua.NodeId(1001, 2, ua.NodeIdType.Numeric)),
        ("nsu=plc;s=a;b", ua.NodeId("a;b", 2)),
        ("i=2258", ua.NodeId(2258, 0, ua.NodeIdType.Numeric)),
        (
            "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
            ua.NodeId(uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"), 1, ua.NodeIdType.Guid),
        ),
        ("nsu=urn:other;b=AQIDBA==", ua.NodeId(b"\x01\x02\x03\x04", 1, ua.NodeIdType.ByteString)),
    ],
)
def test_node_ids_resolve_by_index_uri_or_alias(text: str, expected: ua.NodeId) -> None:
    node = resolve_node_id(parse_node_id(text), NAMESPACES, {"plc": "urn:acme:plc"})
    assert node == expected
    assert parse_node_id(format_node_id(node, NAMESPACES)) is not None


def test_a_missing_namespace_does_not_resolve() -> None:
    with pytest.raises(UnresolvedAddressError, match="urn:gone"):
        resolve_node_id(parse_node_id("nsu=urn:gone;s=X"), NAMESPACES, {})
    with pytest.raises(UnresolvedAddressError, match="namespace index 7"):
        resolve_node_id(parse_node_id("ns=7;s=X"), NAMESPACES, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s=", "empty"),
        ("ns=2;i=abc", "not a number"),
        ("ns=2;i=4294967296", "not a number"),
        ("ns=2;g=not-a-guid", "not a GUID"),
        ("ns=2;b=%%%", "not base64"),
        ("Line1.Count", "not a NodeId"),
        ("ns=70000;s=X", "above 65535"),
    ],
)
def test_bad_node_ids_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_node_id(text)


def test_browse_paths_with_prefixes_and_escapes() -> None:
    path = parse_browse_path("Objects/plc:Line1/2:M\\/1/Speed")
    assert [(e.namespace, e.name) for e in path] == [("plc", "Line1"), (2, "M/1"), (0, "Speed")]
    with pytest.raises(ValueError, match="empty element"):
        parse_browse_path("plc:A//B")


def _config(tag: str, extra: str = "") -> str:
    return (
        "gateway: {id: g, location: {enterprise: e, site: s, area: a, line: l}}\n"
        "devices:\n"
        "  - name: P\n    protocol: opcua\n    endpoint: opc.tcp://plc:4840\n"
        f"{extra}    tags:\n      - {tag}\n"
    )


@pytest.mark.parametrize(
    ("tag", "extra", "path", "message"),
    [
        ("{name: A}", "", "devices[0].tags[0]", "exactly one of `node`"),
        ("{name: A, node: 'ns=2;s=A', path: 'x:A'}", "", "devices[0].tags[0]", "exactly one"),
        ("{name: A, node: 'ns=2;g=zz'}", "", "devices[0].tags[0].node", "not a GUID"),
        ("{name: A, path: 'plc:A/B'}", "", "devices[0]", "unknown namespace alias 'plc'"),
        (
            "{name: A, node: 'ns=2;s=A', type: string, "
            "filter: {deadband_type: absolute, deadband_value: 1}}",
            "",
            "devices[0].tags[0]",
            "deadband needs a numeric tag",
        ),
        (
            "{name: A, node: 'ns=2;s=A', filter: {deadband_type: percent, deadband_value: 150}}",
            "",
            "devices[0].tags[0].filter",
            "between 0 and 100",
        ),
        (
            "{name: A, node: 'ns=2;s=A'}",
            "    security: {policy: Basic256Sha256, mode: None}\n",
            "devices[0].security",
            "Sign or SignAndEncrypt",
        ),
        (
            "{name: A, node: 'ns=2;s=A'}",
            "    identity: {password: x}\n",
            "devices[0].identity",
            "a password needs a username",
        ),
    ],
)
def test_config_errors_name_their_path(tag: str, extra: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(_config(tag, extra))
    text = str(caught.value)
    assert path in text and message in text, text


def _publish(items: list[ua.MonitoredItemNotification], *more: object) -> bytes:
    data = [ua.DataChangeNotification(MonitoredItems=items), *more]
    message = ua.NotificationMessage(SequenceNumber=9, PublishTime=MOMENT, NotificationData=data)
    response = ua.PublishResponse()
    response.Parameters.SubscriptionId = 4
    response.Parameters.NotificationMessage = message
    return struct_to_binary(response)


def test_uniform_notifications_decode_in_one_go() -> None:
    items = [
        ua.MonitoredItemNotification(
            ClientHandle=i,
            Value=ua.DataValue(
                ua.Variant(i + 0.5, ua.VariantType.Double),
                SourceTimestamp=MOMENT,
                ServerTimestamp=MOMENT,
            ),
        )
        for i in range(100)
    ]
    message = decode_publish_response(_publish(items))
    assert (message.subscription_id, message.sequence_number) == (4, 9)
    (columns,) = message.data_changes
    assert columns.handles is not None and columns.handles.tolist() == list(range(100))
    assert columns.values.tolist() == [i + 0.5 for i in range(100)]
    assert ((columns.source_ticks - EPOCH_TICKS) * 100 == MOMENT_NS).all()
    assert columns.objects is None


def test_mixed_notifications_and_status_changes_decode() -> None:
    bad = ua.StatusCode(StatusCodes.BadSensorFailure)
    items = [
        ua.MonitoredItemNotification(1, ua.DataValue(ua.Variant("héllo", ua.VariantType.String))),
        ua.MonitoredItemNotification(
            2, ua.DataValue(ua.Variant([1.0, 2.0], ua.VariantType.Double))
        ),
        ua.MonitoredItemNotification(3, ua.DataValue(ua.Variant(MOMENT, ua.VariantType.DateTime))),
        ua.MonitoredItemNotification(
            4, ua.DataValue(ua.Variant(b"\x00", ua.VariantType.ByteString))
        ),
        ua.MonitoredItemNotification(5, ua.DataValue(ua.Variant(["a"], ua.VariantType.String))),
        ua.MonitoredItemNotification(6, ua.DataValue(ua.Variant(7, ua.VariantType.UInt16))),
        ua.MonitoredItemNotification(7, ua.DataValue(StatusCode=bad)),
    ]
    status = ua.StatusChangeNotification(Status=ua.StatusCode(StatusCodes.BadTimeout))
    message = decode_publish_response(_publish(items, status))
    (columns,) = message.data_changes
    assert columns.objects is not None
    assert columns.objects[:5] == ["héllo", pytest.approx([1.0, 2.0]), MOMENT, b"\x00", ["a"]]
    assert columns.values[5] == 7.0
    assert columns.status[6] == StatusCodes.BadSensorFailure
    assert isinstance(message.other[0], ua.StatusChangeNotification)


def test_data_values_follow_the_spec_field_order_with_picoseconds() -> None:
    # Part 6 5.2.2.17: value, status, source time, source picoseconds, server time, server ps
    source, server = EPOCH_TICKS + 10_000_000, EPOCH_TICKS + 20_000_000
    record = (
        bytes([0x01 | 0x04 | 0x08 | 0x10 | 0x20, 11])
        + struct.pack("<d", 3.5)
        + struct.pack("<qH", source, 7)
        + struct.pack("<qH", server, 9)
    )
    header = ua.ResponseHeader()
    body = (
        nodeid_to_binary(ua.NodeId(ObjectIds.ReadResponse_Encoding_DefaultBinary))
        + struct_to_binary(header)
        + struct.pack("<i", 2)
        + record
        + record
        + struct.pack("<i", 0)
    )
    columns = decode_read_response(body)
    assert columns.values.tolist() == [3.5, 3.5]
    assert columns.source_ticks.tolist() == [source, source]
    assert columns.server_ticks.tolist() == [server, server]


def _tags() -> TagTable:
    return TagTable(
        [
            (
                "P",
                [
                    OpcUaTag(name="A", node="ns=2;s=A", scale=2, offset=1),
                    OpcUaTag(name="B", node="ns=2;s=B", type="string"),
                    OpcUaTag(name="C", node="ns=2;s=C", count=3),
                ],
            )
        ]
    )


def test_batches_carry_quality_names_timestamps_and_scaling() -> None:
    builder = BatchBuilder("P", [0, 1, 2], [1, 1, 3], _tags())
    values = [
        ua.DataValue(ua.Variant(10.0), SourceTimestamp=MOMENT),
        ua.DataValue(
            ua.Variant("x"), StatusCode=ua.StatusCode(StatusCodes.UncertainLastUsableValue)
        ),
        ua.DataValue(ua.Variant(5.0), StatusCode=ua.StatusCode(StatusCodes.BadSensorFailure)),
    ]
    batch = builder.build(
        columns_from_data_values(values, [0, 1, 0]), np.array([0, 1, 0], np.uint32), 99
    )
    assert batch.tags.tolist() == [0, 1, 0]
    assert batch.values[0] == 21.0  # 10 × 2 + 1
    assert np.isnan(batch.values[2])  # a bad value carries no number
    assert [quality.describe(int(q)) for q in batch.quality] == [
        "good",
        "uncertain: UncertainLastUsableValue",
        "bad: BadSensorFailure",
    ]
    assert batch.timestamps.tolist() == [MOMENT_NS, 99, 99]
    assert batch.value_of(1) == "x"
    assert not batch.unique_tags  # tag 0 twice: queued values


def test_array_items_become_elements() -> None:
    builder = BatchBuilder("P", [0, 1, 2], [1, 1, 3], _tags())
    values = [ua.DataValue(ua.Variant([1.0, 2.0], ua.VariantType.Double))]
    batch = builder.build(columns_from_data_values(values, [2]), np.array([2], np.uint32), 5)
    assert batch.tags.tolist() == [2, 3, 4]
    assert batch.values[:2].tolist() == [1.0, 2.0]
    assert quality.describe(int(batch.quality[2])) == "bad: array element missing"


def test_write_coercion() -> None:
    tag = OpcUaTag(name="T", node="ns=2;s=T", scale=0.1)
    assert coerce_for_write("P/T", tag, 12.3, ua.VariantType.Int16) == 123
    assert coerce_for_write("P/T", tag, "1.5", ua.VariantType.Double) == pytest.approx(15.0)
    plain = OpcUaTag(name="U", node="ns=2;s=U")
    assert coerce_for_write("P/U", plain, 2**64 - 1, ua.VariantType.UInt64) == 2**64 - 1
    assert coerce_for_write("P/U", plain, "2024-01-02T03:04:05Z", ua.VariantType.DateTime) == (
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    assert coerce_for_write("P/U", plain, "AAE=", ua.VariantType.ByteString) == b"\x00\x01"
    for value, target, message in [
        (2**64, ua.VariantType.UInt64, "outside UInt64"),
        (-1, ua.VariantType.Byte, "outside Byte"),
        (1e39, ua.VariantType.Float, "does not fit"),
        ("abc", ua.VariantType.Double, "expected a number"),
        (float("nan"), ua.VariantType.Double, "expected a number"),
        (2, ua.VariantType.Boolean, "not a Boolean"),
        ("??", ua.VariantType.ByteString, "base64"),
        (1, ua.VariantType.ExtensionObject, "cannot be written"),
    ]:
        with pytest.raises(WriteRefusedError, match=message):
            coerce_for_write("P/U", plain, value, target)
