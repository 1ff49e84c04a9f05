"""The OPC UA driver against node-opcua, an OPC UA server not written in Python."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.errors import WriteRefusedError
from tests.drivers.opcua.conftest import NAMESPACE, NodeOpcUa, Running

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[NodeOpcUa]]
Run = Callable[[dict[str, Any]], Awaitable[Running]]

TYPES = {
    "Bool": ("bool", 1.0),
    "Int16": ("int16", -1234.0),
    "UInt16": ("uint16", 54321.0),
    "Int32": ("int32", -123456.0),
    "UInt32": ("uint32", 3000000000.0),
    "Int64": ("int64", -1000.0),
    "UInt64": ("uint64", 705032704.0),
    "Float": ("float32", 1.5),
    "Double": ("float64", 2.25),
    "String": ("string", "hello"),
    "DateTime": ("datetime", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
    "ByteString": ("bytes", b"\x01\x02\x03\xfa"),
}


def _device(server: NodeOpcUa, tags: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": server.endpoint,
        "namespaces": {"t": NAMESPACE},
        "publishing_interval": 0.1,
        "tags": tags,
        **extra,
    }


async def test_subscription_delivers_every_type_with_source_timestamps(
    node_server: Start, running: Run
) -> None:
    # the test namespace sits behind two dummies: only its URI finds it
    server = await node_server(shift=2)
    assert server.index == 4
    tags: list[dict[str, Any]] = [
        {"name": name, "node": f"nsu=t;s=Plant.{name}", "type": kind}
        for name, (kind, _) in TYPES.items()
    ]
    tags += [
        {"name": "Numeric", "node": f"nsu={NAMESPACE};i=5001", "type": "int32"},
        {"name": "Guid", "node": "nsu=t;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63"},
        {"name": "Opaque", "node": "nsu=t;b=AQIDBA==", "type": "string"},
        {"name": "Speed", "path": "t:Plant/t:Line1/t:Speed"},
        {"name": "Arr", "node": "nsu=t;s=Plant.DoubleArray", "count": 4},
        {"name": "Counter", "node": "nsu=t;s=Plant.Counter", "type": "uint32"},
        {"name": "Quality", "node": "nsu=t;s=Plant.Quality"},
        {"name": "Missing", "node": "nsu=t;s=Plant.NoSuchNode"},
    ]
    run = await running(_device(server, tags))
    await run.wait_for(lambda: len(run.history("Counter")) >= 5 and "Missing" in run.latest())
    latest = run.latest()
    for name, (_, value) in TYPES.items():
        assert latest[name] == value, name
    assert latest["Numeric"] == 42.0
    assert latest["Guid"] == 7.5
    assert latest["Opaque"] == "opaque"
    assert latest["Speed"] == 12.5
    assert [latest[f"Arr[{i}]"] for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert latest["Missing"] == "bad: BadNodeIdUnknown"
    counter = run.history("Counter")
    values = run.numbers("Counter")
    assert values == sorted(values) and len(set(values)) == len(values)
    stamps = [s for _, _, s in counter]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] / 1e9 - time.time()) < 5  # the server's source timestamps

    # status codes become quality with the code's name; a bad value has no number
    await server.command(op="set", id="Plant.Quality", value=3.5, status="UncertainLastUsableValue")
    await run.wait_for(lambda: run.latest()["Quality"] == "uncertain: UncertainLastUsableValue")
    await server.command(op="set", id="Plant.Quality", value=4.5, status="BadSensorFailure")
    await run.wait_for(lambda: run.latest()["Quality"] == "bad: BadSensorFailure")
    value, _, _ = run.history("Quality")[-1]
    assert value is None


async def test_absolute_deadband_filter_runs_on_the_server(
    node_server: Start, running: Run
) -> None:
    server = await node_server()
    run = await running(
        _device(
            server,
            [
                {
                    "name": "Counter",
                    "node": "nsu=t;s=Plant.Counter",
                    "type": "uint32",
                    "sampling_interval": 0.05,
                    "filter": {"deadband_type": "absolute", "deadband_value": 4},
                },
                {"name": "All", "node": "nsu=t;s=Plant.Counter", "type": "uint32"},
            ],
        )
    )
    await run.wait_for(lambda: len(run.history("Counter")) >= 4, timeout=15)
    filtered = run.numbers("Counter")
    assert all(b - a > 4 for a, b in itertools.pairwise(filtered)), filtered
    unfiltered = run.numbers("All")
    assert any(b - a == 1 for a, b in itertools.pairwise(unfiltered))


async def test_polled_reads_and_items_are_split_by_the_servers_limits(
    node_server: Start, running: Run
) -> None:
    # the server advertises MaxNodesPerRead = MaxMonitoredItemsPerCall = 3 and refuses more
    server = await node_server(max_per_call=3)
    polled = [
        {"name": name, "node": f"nsu=t;s=Plant.{name}", "type": kind, "mode": "poll"}
        for name, (kind, _) in list(TYPES.items())[:8]
    ]
    subscribed = [
        {"name": f"S{name}", "node": f"nsu=t;s=Plant.{name}", "type": kind}
        for name, (kind, _) in list(TYPES.items())[:7]
    ]
    run = await running(
        _device(server, polled + subscribed, poll_groups=[{"name": "default", "interval": 0.2}])
    )
    assert run.driver._session is not None and run.driver._session.limits.read == 3
    await run.wait_for(lambda: len(run.latest()) == 15)
    latest = run.latest()
    for name, (_, value) in list(TYPES.items())[:8]:
        assert latest[name] == value
    for name, (_, value) in list(TYPES.items())[:7]:
        assert latest[f"S{name}"] == value
    # one batch per poll cycle, holding every polled tag (three Read calls of <= 3 nodes)
    polled_indices = {run.info(t["name"]).index for t in polled}

    def cycles() -> int:
        return sum(1 for b in run.batches if set(b.tags.tolist()) == polled_indices)

    await run.wait_for(lambda: cycles() >= 3)


async def test_writes_are_coerced_to_the_nodes_type_or_refused(
    node_server: Start, running: Run
) -> None:
    server = await node_server()
    run = await running(
        _device(
            server,
            [
                {"name": "Setpoint", "node": "nsu=t;s=Plant.Setpoint", "writable": True},
                {"name": "Mode", "node": "nsu=t;s=Plant.Mode", "type": "int16", "writable": True},
                {
                    "name": "Label",
                    "node": "nsu=t;s=Plant.Label",
                    "type": "string",
                    "writable": True,
                },
                {"name": "Flag", "node": "nsu=t;s=Plant.Flag", "type": "bool", "writable": True},
                # configured as float64 and writable, but the node is Int32 and read-only
                {"name": "Numeric", "node": "nsu=t;i=5001", "writable": True},
                {"name": "Double", "node": "nsu=t;s=Plant.Double"},
            ],
        )
    )
    driver = run.driver
    await driver.write(run.info("Setpoint"), 77)  # an int becomes the node's Double
    assert (await server.command(op="get", id="Plant.Setpoint"))["value"] == 77.0
    await driver.write(run.info("Mode"), "12")
    assert (await server.command(op="get", id="Plant.Mode"))["value"] == 12
    await driver.write(run.info("Label"), "running")
    assert (await server.command(op="get", id="Plant.Label"))["value"] == "running"
    await driver.write(run.info("Flag"), True)
    assert (await server.command(op="get", id="Plant.Flag"))["value"] is True
    with pytest.raises(WriteRefusedError, match="outside Int16"):
        await driver.write(run.info("Mode"), 70000)
    with pytest.raises(WriteRefusedError, match="whole number"):
        await driver.write(run.info("Mode"), 1.5)
    with pytest.raises(WriteRefusedError, match="not a Boolean"):
        await driver.write(run.info("Flag"), "maybe")
    with pytest.raises(WriteRefusedError, match="not writable"):
        await driver.write(run.info("Double"), 1.0)
    with pytest.raises(WriteRefusedError, match="access level"):
        await driver.write(run.info("Numeric"), 5)
    assert (await server.command(op="get", id="Plant.Mode"))["value"] == 12


async def test_items_the_server_refuses_are_bad_with_its_status(
    node_server: Start, running: Run
) -> None:
    server = await node_server()
    run = await running(
        _device(
            server,
            [
                {
                    "name": "Double",
                    "node": "nsu=t;s=Plant.Double",
                    "filter": {"deadband_type": "percent", "deadband_value": 10},
                },
                {
                    "name": "Level",
                    "node": "nsu=t;s=Plant.Level",
                    "filter": {"deadband_type": "percent", "deadband_value": 10},
                },
            ],
        )
    )
    # a percent deadband needs an EURange: the plain Double is refused by the server, item by item
    await run.wait_for(lambda: {"Double", "Level"} <= run.latest().keys())
    assert str(run.latest()["Double"]).startswith("bad: Bad")
    assert run.latest()["Level"] == 0.0
