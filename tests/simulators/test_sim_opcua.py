"""The OPC UA PLC through asyncua's client (one server for the whole module: it takes ~2 s)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import BadInternalError, BadOutOfRange, BadTypeMismatch, UaStatusCodeError

from simulators.opcua_plc import NAMESPACE_URI, VARIABLES, OpcUaPlc
from simulators.plant import Plant
from simulators.scenario import Scenario

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT_S = 4.0
DATA_TYPES = {
    "State": ObjectIds.UInt16,
    "ReasonCode": ObjectIds.UInt16,
    "GoodCount": ObjectIds.UInt16,
    "GoodCount32": ObjectIds.UInt32,
    "ScrapCount": ObjectIds.UInt32,
    "MeasSeq": ObjectIds.UInt32,
    "LastMeasurement": ObjectIds.Double,
    "Measurements": ObjectIds.Float,
    "Order": ObjectIds.String,
    "Operation": ObjectIds.String,
    "Material": ObjectIds.String,
    "Lot": ObjectIds.String,
    "Temperature": ObjectIds.Double,
    "Pressure": ObjectIds.Double,
    "Speed": ObjectIds.Double,
    "SpeedSetpoint": ObjectIds.Double,
}


def _continuous() -> Scenario:
    """The demo line making one long lot per machine (no pause to wait for in a test)."""
    demo = Scenario.demo()
    machines = tuple(
        replace(
            spec,
            orders=(replace(spec.orders[0], quantity=90_000, lot_size=90_000),),
            downtime_probability=0.0,
            blocked_probability=0.0,
            plc_restarts_s=(),
        )
        for spec in demo.machines
    )
    return replace(demo, machines=machines)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc() -> AsyncIterator[OpcUaPlc]:
    async with Plant(_continuous(), speed=60.0, seed=1) as plant, OpcUaPlc(plant) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def client(plc: OpcUaPlc) -> AsyncIterator[Client]:
    client = Client(plc.endpoint, timeout=TIMEOUT_S)
    await client.connect()
    try:
        yield client
    finally:
        with contextlib.suppress(OSError, TimeoutError, UaStatusCodeError, ConnectionError):
            await client.disconnect()
        plc.faults.clear()


def _string_node_id(identifier: str, namespace_index: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(namespace_index))


async def _node(client: Client, machine: str, variable: str) -> Node:
    idx = await client.get_namespace_index(NAMESPACE_URI)
    return client.get_node(_string_node_id(f"Line1.{machine}.{variable}", idx))


async def test_address_space_layout_and_data_types(plc: OpcUaPlc, client: Client) -> None:
    idx = await client.get_namespace_index(NAMESPACE_URI)
    assert NAMESPACE_URI in await client.get_namespace_array()
    line = await client.nodes.objects.get_child(f"{idx}:Line1")
    machines = [(await n.read_browse_name()).Name for n in await line.get_children()]
    assert machines == ["M1", "M2", "M3"]
    m2 = await line.get_child(f"{idx}:M2")
    children = await m2.get_children()
    assert [(await n.read_browse_name()).Name for n in children] == [v.name for v in VARIABLES]
    for node in children:
        name = (await node.read_browse_name()).Name
        assert node.nodeid == _string_node_id(f"Line1.M2.{name}", idx)
        assert node.nodeid.NodeIdType == ua.NodeIdType.String
        data_type = await node.read_data_type()
        assert (data_type.NamespaceIndex, data_type.Identifier) == (0, DATA_TYPES[name]), name
        access = await node.read_attribute(AttributeIds.UserAccessLevel)
        assert access.Value is not None
        writable = bool(access.Value.Value & ua.AccessLevel.CurrentWrite.mask)
        assert writable == (name == "SpeedSetpoint"), name
    measurements = await _node(client, "M2", "Measurements")
    assert await measurements.read_value_rank() == ua.ValueRank.OneDimension
    assert await measurements.read_array_dimensions() == [32]
    values = await measurements.read_value()
    assert len(values) == 32
    state = await (await _node(client, "M2", "State")).read_data_value()
    assert state.Value is not None
    assert state.Value.VariantType == ua.VariantType.UInt16


async def test_values_follow_the_plant(plc: OpcUaPlc, client: Client) -> None:
    names = ["Order", "Operation", "Material", "Lot", "SpeedSetpoint"]
    nodes = [await _node(client, "M3", name) for name in names]
    values = await client.read_values(nodes)
    s = plc.plant.snapshot("M3")
    assert values == [s.order, s.operation, s.material, s.lot, s.speed_setpoint]
    assert values[:4] == ["1000301", "0030", "FG-4711", "L100030101"]
    counters = [await _node(client, "M1", n) for n in ("GoodCount", "GoodCount32", "MeasSeq")]
    good16, good32, seq = await client.read_values(counters)
    assert good32 >= 65400
    assert good16 == good32 % 65536
    latest = plc.plant.snapshot("M1").meas_seq
    assert latest - 10 < seq <= latest  # at most a tick behind the plant


async def test_speed_setpoint_write(plc: OpcUaPlc, client: Client) -> None:
    node = await _node(client, "M2", "SpeedSetpoint")
    await node.write_value(ua.Variant(45.0, ua.VariantType.Double))
    assert plc.plant.snapshot("M2").speed_setpoint == 45.0
    assert await node.read_value() == 45.0
    with pytest.raises(BadOutOfRange):
        await node.write_value(ua.Variant(500.0, ua.VariantType.Double))
    with pytest.raises(BadTypeMismatch):
        await node.write_value(ua.Variant(50.0, ua.VariantType.Float))
    assert plc.plant.snapshot("M2").speed_setpoint == 45.0
    assert await node.read_value() == 45.0
    counter = await _node(client, "M2", "GoodCount")
    with pytest.raises(UaStatusCodeError):
        await counter.write_value(ua.Variant(1, ua.VariantType.UInt16))
    await node.write_value(ua.Variant(30.0, ua.VariantType.Double))


class _Collector:
    def __init__(self) -> None:
        self.changes: dict[str, list[tuple[Any, datetime]]] = {}

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        stamp = data.monitored_item.Value.SourceTimestamp
        self.changes.setdefault(str(node.nodeid.Identifier), []).append((value, stamp))


async def test_subscription_receives_every_part_with_wall_clock_timestamps(
    plc: OpcUaPlc, client: Client
) -> None:
    collector = _Collector()
    subscription = await client.create_subscription(50, collector)
    nodes = [await _node(client, "M1", n) for n in ("MeasSeq", "LastMeasurement", "State")]
    await subscription.subscribe_data_change(nodes, queuesize=200, sampling_interval=ua.Double(0))
    await asyncio.sleep(1.5)
    await subscription.delete()
    seqs = [v for v, _ in collector.changes["Line1.M1.MeasSeq"]]
    measurements = collector.changes["Line1.M1.LastMeasurement"]
    assert len(seqs) >= 15, "M1 should make about 30 parts per second"
    new = seqs[1:]  # the first notification is the current value
    assert new == list(range(new[0], new[0] + len(new))), "a part was skipped"
    assert len(measurements) >= len(new)
    assert all(9.9 < v < 10.1 for v, _ in measurements)
    stamps = [t for _, t in measurements]
    assert stamps == sorted(stamps)
    # source timestamps are wall-clock times (when the accelerated scenario clock got there),
    # so consecutive parts are stamped about 1/30 s apart, not 2 s of scenario time
    assert abs((stamps[-1].replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()) < 2
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps[1:])]
    assert max(gaps) < 0.5


async def test_latency_and_error_rate(plc: OpcUaPlc, client: Client) -> None:
    node = await _node(client, "M1", "State")
    loop = asyncio.get_running_loop()
    plc.faults.latency_ms = 300
    started = loop.time()
    await node.read_value()
    assert loop.time() - started >= 0.3
    plc.faults.clear()
    started = loop.time()
    await node.read_value()
    assert loop.time() - started < 0.2
    plc.faults.error_rate = 1.0
    with pytest.raises(BadInternalError):
        await node.read_value()
    plc.faults.clear()
    assert await node.read_value() in (4, 5, 6, 11)
    assert plc.faults.stats.error >= 1
    assert plc.stats_json()["reads"] >= 4


async def test_drop_closes_the_connection(plc: OpcUaPlc) -> None:
    client = Client(plc.endpoint, timeout=1.0)
    await client.connect()
    node = await _node(client, "M1", "State")
    plc.faults.drop_rate = 1.0
    try:
        with pytest.raises((ConnectionError, TimeoutError, UaStatusCodeError, OSError)):
            await node.read_value()
    finally:
        plc.faults.clear()
        with contextlib.suppress(OSError, TimeoutError, UaStatusCodeError, ConnectionError):
            await client.disconnect()
    assert plc.faults.stats.drop >= 1


async def test_down_refuses_connections_then_recovers(plc: OpcUaPlc) -> None:
    plc.faults.down_for(1.0)
    try:
        await asyncio.sleep(0.1)
        with pytest.raises(ConnectionRefusedError):
            await Client(plc.endpoint, timeout=1.0).connect()
        await asyncio.sleep(1.2)
        client = Client(plc.endpoint, timeout=TIMEOUT_S)
        await client.connect()
        try:
            assert await (await _node(client, "M1", "State")).read_value() in (4, 5, 6, 11)
        finally:
            await client.disconnect()
    finally:
        plc.faults.clear()
