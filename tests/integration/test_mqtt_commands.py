"""Writes requested over MQTT, through the whole gateway to the bundled Modbus PLC and back:
the UNS command topic with its reply topic (and MQTT 5 response topic / correlation data), and
Sparkplug DCMD. Only writable tags, validated; everything else refused and answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config.load import load_config_text
from gateway.demo.broker import LocalBroker
from gateway.outputs.mqtt import MqttOutput
from gateway.outputs.sparkplug import sparkplug_b_pb2 as pb
from gateway.runtime.app import Gateway
from simulators.modbus_plc import ModbusPlc
from simulators.plant import Plant
from simulators.scenario import Scenario
from tests.outputs.helpers import Subscriber

pytestmark = pytest.mark.integration

CONFIG = """
gateway:
  id: gw1
  location: {{enterprise: acme, site: s, area: a, line: l}}
  data_dir: {data_dir}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {plc_port}
    unit: 1
    timeout: 1.0
    poll_groups: [{{name: default, interval: 0.1}}]
    tags:
      - {{name: SpeedSetpoint, address: 200, type: float32, writable: true, span: [1, 120]}}
      - {{name: Temperature, table: input, address: 0, type: float32, deadband: 100}}
outputs:
  - type: mqtt
    name: uns
    port: {mqtt_port}
    status: false
    commands: {{enabled: true}}
  - type: mqtt
    name: spb
    port: {mqtt_port}
    payload: sparkplug
    client_id: gw1-spb
    sparkplug: {{group_id: plant}}
    commands: {{enabled: true, tags: ["M1/SpeedSetpoint"]}}
"""

CMD = "acme/s/a/l/M1/cmd"


@pytest.fixture
async def gateway(mosquitto: LocalBroker, tmp_path: Path) -> AsyncIterator[Gateway]:
    plant = Plant(Scenario.demo(), seed=1)
    async with ModbusPlc(plant) as plc:
        text = CONFIG.format(data_dir=tmp_path, plc_port=plc.port, mqtt_port=mosquitto.port)
        gw = Gateway(load_config_text(text))
        await gw.start()
        try:
            async with asyncio.timeout(10):
                while not all(o.link.ready for o in gw.outputs if isinstance(o, MqttOutput)):
                    await asyncio.sleep(0.05)
            yield gw
        finally:
            await gw.stop()


async def request(
    client: Subscriber, topic: str, payload: bytes, *, properties: Properties | None = None
) -> None:
    client.client.publish(topic, payload, 1, False, properties)


async def test_uns_commands(gateway: Gateway, mosquitto: LocalBroker) -> None:
    client = await Subscriber(mosquitto.port, client_id="operator").start(
        f"{CMD}/+/reply", "replies/#", "acme/s/a/l/M1/edge/SpeedSetpoint"
    )

    def replies() -> list[dict[str, Any]]:
        return [p for t, p in client.messages if t.endswith("/reply")]

    await request(client, f"{CMD}/SpeedSetpoint", b'{"value": 55.5, "id": "r1"}')
    await client.wait_for(1, where=lambda t: t.endswith("/reply"))
    answer = replies()[0]
    assert answer["ok"] is True, answer
    assert answer == {**answer, "id": "r1", "tag": "M1/SpeedSetpoint", "outcome": "written"}
    # the PLC took it: the next poll publishes the new setpoint
    async with asyncio.timeout(5):
        while not any(
            t.endswith("/edge/SpeedSetpoint") and p["value"] == pytest.approx(55.5)
            for t, p in client.messages
        ):
            await asyncio.sleep(0.05)

    refused = [
        (f"{CMD}/SpeedSetpoint", b'{"value": 500, "id": "span"}', "outside the span"),
        (f"{CMD}/SpeedSetpoint", b'{"value": "fast", "id": "type"}', "not a number"),
        (f"{CMD}/Temperature", b'{"value": 20, "id": "ro"}', "not writable"),
        (f"{CMD}/NoSuchTag", b'{"value": 1, "id": "unknown"}', "no such tag"),
        (f"{CMD}/SpeedSetpoint", b"not json", "must be JSON"),
    ]
    for topic, payload, _ in refused:
        await request(client, topic, payload)
    await client.wait_for(1 + len(refused), where=lambda t: t.endswith("/reply"))
    for answer, (_, _, reason) in zip(replies()[1:], refused, strict=True):
        assert answer["ok"] is False and answer["outcome"] == "refused"
        assert reason in answer["error"]

    # MQTT 5 request/response: the reply goes to the response topic with the correlation data
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = "replies/operator"
    properties.CorrelationData = b"\x01\x02"
    await request(client, f"{CMD}/SpeedSetpoint", b"42", properties=properties)
    await client.wait_for(1, where=lambda t: t == "replies/operator")
    answer = next(p for t, p in client.messages if t == "replies/operator")
    assert answer["ok"] is True and answer["value"] == 42
    await client.close()


async def test_sparkplug_dcmd(gateway: Gateway, mosquitto: LocalBroker) -> None:
    client = await Subscriber(mosquitto.port, client_id="scada", decode=bytes).start(
        "spBv1.0/plant/DDATA/#"
    )
    table = gateway.table
    command = pb.Payload()
    command.timestamp = 1
    by_name = command.metrics.add()
    by_name.name = "SpeedSetpoint"
    by_name.datatype = pb.Float
    by_name.float_value = 33.0
    read_only = command.metrics.add()
    read_only.alias = table.index("M1/Temperature") + 1
    read_only.float_value = 10.0
    client.client.publish("spBv1.0/plant/DCMD/gw1/M1", command.SerializeToString(), 0)

    alias = table.index("M1/SpeedSetpoint") + 1

    def setpoints() -> list[float]:
        values = []
        for _, raw in client.raw:
            payload = pb.Payload()
            payload.ParseFromString(raw)
            values += [m.float_value for m in payload.metrics if m.alias == alias]
        return values

    async with asyncio.timeout(5):
        while 33.0 not in setpoints():
            await asyncio.sleep(0.05)
    refused = gateway.metrics.registry.get_sample_value(
        "gateway_commands_total", {"output": "spb", "outcome": "refused"}
    )
    assert refused == 1.0  # Temperature is not writable
    written = gateway.metrics.registry.get_sample_value(
        "gateway_commands_total", {"output": "spb", "outcome": "written"}
    )
    assert written == 1.0
    await client.close()
