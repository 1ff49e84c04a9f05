"""Sparkplug B 3.0 against a real Mosquitto, every message decoded by Eclipse Tahu's own
JavaScript decoder (npm sparkplug-payload), not by our generated code: births with every
metric, DDATA by alias, seq 0-255, NDEATH with bdSeq (clean and as the will), rebirth on
request, the primary host's STATE, historical replay."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.batch import SampleBatch
from gateway.config.outputs import MqttOutputConfig
from gateway.demo.broker import LocalBroker
from gateway.metrics import Metrics
from gateway.outputs.mqtt import MqttOutput
from gateway.outputs.mqtt_client import AsyncMqttClient, MqttSettings
from gateway.outputs.sparkplug import sparkplug_b_pb2 as pb
from gateway.tags import TagTable
from tests.outputs.helpers import Subscriber, running
from tests.peers import require_node_module
from tests.unit.helpers import machine_config, table_of

pytestmark = pytest.mark.integration

DECODER = Path(__file__).parent.parent / "outputs" / "sparkplug_decode.js"
STAMP = 1_700_000_000_000_000_000


def tahu_decode(messages: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Decode with Eclipse Tahu's sparkplug-payload (Node.js)."""
    node_dir = require_node_module("sparkplug-payload")
    data = json.dumps(
        [{"topic": t, "payload": base64.b64encode(p).decode()} for t, p in messages]
    ).encode()
    result = subprocess.run(
        ["node", str(DECODER)],
        input=data,
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "NODE_PATH": os.path.join(node_dir, "node_modules")},
    )
    decoded: list[dict[str, Any]] = json.loads(result.stdout)
    return decoded


def make_output(tmp_path: Path, port: int, **sparkplug: object) -> MqttOutput:
    config = MqttOutputConfig.model_validate(
        {
            "type": "mqtt",
            "port": port,
            "payload": "sparkplug",
            "keepalive": 5,
            "sparkplug": {"group_id": "plant", **sparkplug},
        }
    )
    return MqttOutput(
        config,
        table_of(machine_config()),
        gateway_id="gw1",
        location_path="acme/dallas/a/l",
        cells={},
        metrics=Metrics(),
        data_dir=tmp_path,
    )


def temp_batch(table: TagTable, values: list[float], stamp: int = STAMP) -> SampleBatch:
    n = len(values)
    return SampleBatch(
        "M1",
        np.full(n, table.index("M1/Temp"), np.int32),
        np.array(values),
        np.zeros(n, np.uint16),
        stamp + np.arange(n, dtype=np.int64) * 1_000_000,
        unique_tags=False,
    )


async def publisher(port: int) -> AsyncMqttClient:
    client = AsyncMqttClient(MqttSettings("127.0.0.1", port, "host-app"), "host")
    await client.connect()
    return client


def rebirth_request() -> bytes:
    payload = pb.Payload()
    payload.timestamp = 1
    metric = payload.metrics.add()
    metric.name = "Node Control/Rebirth"
    metric.datatype = pb.Boolean
    metric.boolean_value = True
    data: bytes = payload.SerializeToString()
    return data


def ours(topic: str) -> bool:
    """Messages of the edge node (not the host's commands)."""
    return "/NCMD/" not in topic and "/DCMD/" not in topic


def metric(message: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in message["decoded"]["metrics"] if m.get("name") == name)


async def test_birth_data_rebirth_and_death(mosquitto: LocalBroker, tmp_path: Path) -> None:
    require_node_module("sparkplug-payload")
    subscriber = await Subscriber(mosquitto.port, decode=bytes).start("spBv1.0/#")
    output = make_output(tmp_path, mosquitto.port)
    table = output.table
    host = await publisher(mosquitto.port)
    async with running(output):
        await subscriber.wait_for(2)  # NBIRTH, DBIRTH
        await output.write(temp_batch(table, [21.5]))
        strings = SampleBatch(
            "M1",
            np.array([table.index("M1/Order"), table.index("M1/Good")], np.int32),
            np.array([np.nan, 65535.0]),
            np.zeros(2, np.uint16),
            np.full(2, STAMP, np.int64),
            np.array(["1000123", None], object),
        )
        await output.write(strings)
        for i in range(300):  # seq wraps at 255
            await output.write(temp_batch(table, [float(i)], STAMP + i * 1_000_000_000))
        await subscriber.wait_for(304)
        host.publish("spBv1.0/plant/NCMD/gw1", rebirth_request(), 1)
        await subscriber.wait_for(306, where=ours)
        # the connection dies: the broker publishes the will (NDEATH), the node comes back
        assert output.link.client is not None
        output.link.client._sock.shutdown(socket.SHUT_RDWR)
        await subscriber.wait_for(309, timeout=20, where=ours)
    await subscriber.wait_for(310, where=ours)
    await host.close()
    await subscriber.close()

    decoded = tahu_decode([(t, p) for t, p in subscriber.raw if ours(t)])
    kinds = [m["topic"].split("/")[2] for m in decoded]
    assert kinds[:2] == ["NBIRTH", "DBIRTH"]
    assert kinds[2:304] == ["DDATA"] * 302
    assert kinds[304:] == ["NBIRTH", "DBIRTH", "NDEATH", "NBIRTH", "DBIRTH", "NDEATH"]
    assert decoded[0]["topic"] == "spBv1.0/plant/NBIRTH/gw1"
    assert decoded[1]["topic"] == "spBv1.0/plant/DBIRTH/gw1/M1"

    nbirth, dbirth = decoded[0], decoded[1]
    assert nbirth["decoded"]["seq"] == "0"
    bd_seq = metric(nbirth, "bdSeq")
    assert bd_seq["type"] == "Int64"
    rebirth = metric(nbirth, "Node Control/Rebirth")
    assert rebirth == {**rebirth, "type": "Boolean", "value": False}
    assert "alias" not in rebirth
    # DBIRTH: every metric with name, alias, type; nothing read yet: null
    metrics = {m["name"]: m for m in dbirth["decoded"]["metrics"]}
    assert set(metrics) == {info.name for info in table.infos}
    assert metrics["Temp"]["type"] == "Float"
    assert metrics["Good"]["type"] == "UInt16"
    assert metrics["Scrap"]["type"] == "UInt32"
    assert metrics["Order"]["type"] == "String"
    assert metrics["Ring[2]"]["alias"] == str(table.index("M1/Ring[2]") + 1)
    assert all(m["value"] is None for m in metrics.values())
    assert len({m["alias"] for m in metrics.values()}) == len(metrics)
    assert dbirth["decoded"]["seq"] == "1"

    # DDATA: alias only (no name, no datatype), the value, the source timestamp
    first = decoded[2]["raw"]["metrics"][0]
    assert first["alias"] == str(table.index("M1/Temp") + 1)
    assert "name" not in first and "datatype" not in first
    assert first["floatValue"] == 21.5
    assert first["timestamp"] == str(STAMP // 1_000_000)
    second = {m["alias"]: m for m in decoded[3]["raw"]["metrics"]}
    assert second[str(table.index("M1/Order") + 1)]["stringValue"] == "1000123"
    assert second[str(table.index("M1/Good") + 1)]["intValue"] == 65535
    seqs = [int(m["decoded"]["seq"]) for m in decoded[:304]]
    assert seqs == [i % 256 for i in range(304)]

    # rebirth: seq starts at 0 again, same bdSeq, DBIRTH carries the current values
    again, dbirth_again = decoded[304], decoded[305]
    assert again["decoded"]["seq"] == "0"
    assert metric(again, "bdSeq")["value"] == bd_seq["value"]
    current = {m["name"]: m for m in dbirth_again["decoded"]["metrics"]}
    assert current["Temp"]["value"] == 299.0
    assert current["Order"]["value"] == "1000123"
    assert dbirth_again["decoded"]["seq"] == "1"

    # the will: NDEATH with the bdSeq of the dead connection, no seq; then bdSeq + 1
    will, reborn, last_death = decoded[306], decoded[307], decoded[309]
    assert will["topic"] == "spBv1.0/plant/NDEATH/gw1"
    assert "seq" not in will["decoded"]
    assert metric(will, "bdSeq")["value"] == bd_seq["value"]
    assert int(metric(reborn, "bdSeq")["value"]) == (int(bd_seq["value"]) + 1) % 256
    # the clean shutdown: NDEATH with the current bdSeq
    assert metric(last_death, "bdSeq")["value"] == metric(reborn, "bdSeq")["value"]


async def test_primary_host_state_and_historical_replay(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    require_node_module("sparkplug-payload")
    host = await publisher(mosquitto.port)
    state_topic = "spBv1.0/STATE/scada"
    host.publish(state_topic, orjson.dumps({"online": False, "timestamp": 100}), 1, True)
    subscriber = await Subscriber(mosquitto.port, decode=bytes).start("spBv1.0/plant/#")
    output = make_output(tmp_path, mosquitto.port, primary_host_id="scada")
    table = output.table
    async with running(output, wait_ready=False):
        await asyncio.sleep(0.5)
        assert subscriber.raw == [], "no birth while the primary host is offline"
        await output.write(temp_batch(table, [1.0, 2.0, 3.0]))
        assert len(output.buffer) == 1  # one DDATA, buffered
        # a stale STATE (older timestamp) is ignored
        host.publish(state_topic, orjson.dumps({"online": True, "timestamp": 50}), 1, True)
        await asyncio.sleep(0.3)
        assert subscriber.raw == []
        host.publish(state_topic, orjson.dumps({"online": True, "timestamp": 200}), 1, True)
        await subscriber.wait_for(3)  # NBIRTH, DBIRTH, the replayed DDATA
        await output.write(temp_batch(table, [4.0]))
        await subscriber.wait_for(4)
        host.publish(state_topic, orjson.dumps({"online": False, "timestamp": 300}), 1, True)
        await subscriber.wait_for(5)  # NDEATH, then it waits again
        await asyncio.sleep(0.5)
        host.publish(state_topic, orjson.dumps({"online": True, "timestamp": 400}), 1, True)
        await subscriber.wait_for(7, timeout=15)
    await host.close()
    await subscriber.close()

    decoded = tahu_decode(subscriber.raw)
    kinds = [m["topic"].split("/")[2] for m in decoded]
    assert kinds[:7] == ["NBIRTH", "DBIRTH", "DDATA", "DDATA", "NDEATH", "NBIRTH", "DBIRTH"]
    replayed = decoded[2]["raw"]["metrics"]
    assert [m["floatValue"] for m in replayed] == [1.0, 2.0, 3.0]
    assert all(m["isHistorical"] for m in replayed)
    assert decoded[2]["decoded"]["seq"] == "2"  # numbered when it went out, after the births
    live = decoded[3]["raw"]["metrics"]
    assert live[0]["floatValue"] == 4.0 and "isHistorical" not in live[0]
    assert metric(decoded[5], "bdSeq")["value"] != metric(decoded[0], "bdSeq")["value"]
