"""The MQTT output against a real Mosquitto: UNS topics, payloads, events, status."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.outputs import MqttOutputConfig
from gateway.demo.broker import LocalBroker
from gateway.documents import Document
from gateway.metrics import Metrics
from gateway.outputs.mqtt import MqttOutput
from gateway.outputs.mqtt_client import AsyncMqttClient, MqttSettings
from tests.unit.helpers import machine_config, table_of

pytestmark = pytest.mark.integration


class Subscriber:
    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict[str, object]]] = []
        self.client = AsyncMqttClient(
            MqttSettings("127.0.0.1", port, "test-subscriber"), "sub", self._on_message
        )

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, orjson.loads(payload)))

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                await asyncio.sleep(0.01)


async def test_values_events_and_status(mosquitto: LocalBroker) -> None:
    config = machine_config()
    table = table_of(config)
    subscriber = Subscriber(mosquitto.port)
    await subscriber.client.connect()
    subscriber.client.subscribe("acme/#", 1)
    output = MqttOutput(
        MqttOutputConfig(type="mqtt", port=mosquitto.port),
        table,
        gateway_id="gw1",
        location_path="acme/s/a/l",
        cells={"M1": "press1"},
        metrics=Metrics(),
    )
    await output.connect()
    await subscriber.wait_for(1)
    assert subscriber.messages[0] == ("acme/s/a/l/_gateway/gw1/status", {"status": "online"})

    tags = np.array(
        [table.index("M1/Temp"), table.index("M1/Order"), table.index("M1/Good")], np.int32
    )
    stamp = 1_700_000_000_123_000_000
    batch = SampleBatch(
        "M1",
        tags,
        np.array([21.5, np.nan, np.nan]),
        np.array([0, 0, quality.bad("Modbus exception 2 IllegalDataAddress")], np.uint16),
        np.full(3, stamp, np.int64),
        np.array([None, "1000123", None], object),
    )
    await output.write(batch)
    await output.publish_documents(
        [Document("completion", "k1", "press1", {"order": "1000123", "good": 5})]
    )
    await subscriber.wait_for(5)
    by_topic = dict(subscriber.messages[1:])
    assert by_topic["acme/s/a/l/press1/edge/Temp"] == {
        "value": 21.5,
        "quality": "good",
        "timestamp": "2023-11-14T22:13:20.123Z",
        "unit": "",
    }
    assert by_topic["acme/s/a/l/press1/edge/Order"]["value"] == "1000123"
    assert by_topic["acme/s/a/l/press1/edge/Good"] == {
        "value": None,
        "quality": "bad: Modbus exception 2 IllegalDataAddress",
        "timestamp": "2023-11-14T22:13:20.123Z",
        "unit": "",
    }
    assert by_topic["acme/s/a/l/press1/mes/completion"] == {
        "kind": "completion",
        "key": "k1",
        "order": "1000123",
        "good": 5,
    }
    await output.close()
    await subscriber.wait_for(6)
    assert subscriber.messages[-1] == ("acme/s/a/l/_gateway/gw1/status", {"status": "offline"})
    await subscriber.client.close()


async def test_many_qos1_messages_arrive(mosquitto: LocalBroker) -> None:
    config = machine_config()
    table = table_of(config)
    subscriber = Subscriber(mosquitto.port)
    await subscriber.client.connect()
    subscriber.client.subscribe("x/+/edge/#", 1)
    output = MqttOutput(
        MqttOutputConfig(type="mqtt", port=mosquitto.port, topic_root="x", qos=1),
        table,
        gateway_id="gw1",
        location_path="unused",
        cells={},
        metrics=Metrics(),
    )
    await output.connect()
    tag = table.index("M1/Temp")
    for i in range(2000):
        await output.write(
            SampleBatch.uniform("M1", np.array([tag], np.int32), np.array([float(i)]), 1)
        )
        if i % 200 == 0:
            await asyncio.sleep(0)
    await subscriber.wait_for(2000, timeout=20)
    assert [m[1]["value"] for m in subscriber.messages] == [float(i) for i in range(2000)]
    await output.close()
    await subscriber.client.close()


async def test_unreachable_broker_is_a_clear_error() -> None:
    from gateway.demo.broker import free_port
    from gateway.errors import NotConnectedError

    output = MqttOutput(
        MqttOutputConfig(type="mqtt", port=free_port(), connect_timeout=2),
        table_of(machine_config()),
        gateway_id="gw1",
        location_path="a/b/c/d",
        cells={},
        metrics=Metrics(),
    )
    with pytest.raises(NotConnectedError, match="cannot connect to MQTT broker"):
        await output.connect()
