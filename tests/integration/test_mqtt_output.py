"""The MQTT output against a real Mosquitto: UNS topics and payloads, events, status, MQTT 5
and 3.1.1, username/password and TLS with client certificates."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import pytest

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.config.outputs import MqttOutputConfig
from gateway.demo.broker import LocalBroker, free_port
from gateway.documents import Document
from gateway.errors import NotConnectedError
from gateway.metrics import Metrics
from gateway.outputs.mqtt import MqttOutput
from gateway.outputs.mqtt_client import TlsSettings
from gateway.tags import TagTable
from tests.conftest import BROKER_PASSWORD, BROKER_USER
from tests.outputs.certs import TlsFiles
from tests.outputs.helpers import Subscriber, running, values_batch
from tests.unit.helpers import machine_config, table_of

pytestmark = pytest.mark.integration


def make_output(tmp_path: Path, **fields: object) -> MqttOutput:
    config = MqttOutputConfig.model_validate({"type": "mqtt", **fields})
    return MqttOutput(
        config,
        table_of(machine_config()),
        gateway_id="gw1",
        location_path="acme/s/a/l",
        cells={"M1": "press1"},
        metrics=Metrics(),
        data_dir=tmp_path,
    )


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_values_events_and_status(
    mosquitto: LocalBroker, tmp_path: Path, version: str
) -> None:
    subscriber = await Subscriber(mosquitto.port, version=version).start("acme/#")
    output = make_output(tmp_path, port=mosquitto.port, mqtt_version=version)
    table = output.table
    async with running(output):
        await subscriber.wait_for(1)
        topic, status = subscriber.messages[0]
        assert topic == "acme/s/a/l/_gateway/gw1/status"
        assert status["status"] == "online"

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
        await output.write(
            SampleBatch.uniform(
                "M1", np.array([table.index("M1/Good")], np.int32), np.array([7.0]), stamp
            )
        )
        await output.publish_documents(
            [Document("completion", "k1", "press1", {"order": "1000123", "good": 5})]
        )
        await subscriber.wait_for(6)
    await subscriber.wait_for(7)
    by_topic: dict[str, list[object]] = {}
    for topic, payload in subscriber.messages:
        by_topic.setdefault(topic, []).append(payload)
    assert by_topic["acme/s/a/l/press1/edge/Temp"] == [
        {"value": 21.5, "quality": "good", "timestamp": "2023-11-14T22:13:20.123Z", "unit": ""}
    ]
    assert by_topic["acme/s/a/l/press1/edge/Order"][0]["value"] == "1000123"  # type: ignore[index]
    assert by_topic["acme/s/a/l/press1/edge/Good"] == [
        {
            "value": None,
            "quality": "bad: Modbus exception 2 IllegalDataAddress",
            "timestamp": "2023-11-14T22:13:20.123Z",
            "unit": "",
        },
        # an unscaled integer tag is published as an integer
        {"value": 7, "quality": "good", "timestamp": "2023-11-14T22:13:20.123Z", "unit": ""},
    ]
    assert by_topic["acme/s/a/l/press1/mes/completion"] == [
        {"kind": "completion", "key": "k1", "order": "1000123", "good": 5}
    ]
    last_topic, last = subscriber.messages[-1]
    assert last_topic == "acme/s/a/l/_gateway/gw1/status"
    assert last["status"] == "offline"
    await subscriber.close()


async def test_status_is_retained_and_the_will_says_offline(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    output = make_output(tmp_path, port=mosquitto.port, keepalive=5)
    async with running(output):
        late = await Subscriber(mosquitto.port, client_id="late").start("acme/s/a/l/_gateway/#")
        await late.wait_for(1)  # retained: a subscriber arriving later gets it at once
        assert late.messages[0][1]["status"] == "online"
        # the connection dies without DISCONNECT: the broker publishes the will
        assert output.link.client is not None
        output.link.client._sock.shutdown(socket.SHUT_RDWR)
        await late.wait_for(2)
        assert late.messages[1][1] == {"status": "offline"}
        # and the output reconnects by itself, online again
        await late.wait_for(3, timeout=15)
        assert late.messages[2][1]["status"] == "online"
    await late.close()


async def test_many_qos1_messages_arrive_in_order(mosquitto: LocalBroker, tmp_path: Path) -> None:
    subscriber = await Subscriber(mosquitto.port).start("x/+/edge/#")
    output = make_output(tmp_path, port=mosquitto.port, topic_root="x", qos=1, status=False)
    async with running(output):
        for start in range(0, 5000, 500):
            await output.write(
                values_batch(output.table, "M1/Temp", [float(i) for i in range(start, start + 500)])
            )
            await asyncio.sleep(0)
        await subscriber.wait_for(5000, timeout=30)
    assert [m[1]["value"] for m in subscriber.messages] == [float(i) for i in range(5000)]
    await subscriber.close()


async def test_username_and_password(mosquitto_auth: LocalBroker, tmp_path: Path) -> None:
    port = mosquitto_auth.port
    subscriber = await Subscriber(port, username=BROKER_USER, password=BROKER_PASSWORD).start(
        "acme/#"
    )
    output = make_output(
        tmp_path, port=port, username=BROKER_USER, password=BROKER_PASSWORD, status=False
    )
    async with running(output):
        await output.write(values_batch(output.table, "M1/Temp", [1.5]))
        await subscriber.wait_for(1)
    assert subscriber.messages[0][1]["value"] == 1.5
    await subscriber.close()

    wrong = make_output(tmp_path / "w", port=port, username=BROKER_USER, password="wrong")
    await wrong.connect()
    with pytest.raises(NotConnectedError, match="refused"):
        await wrong.maintain_link()
    anonymous = make_output(tmp_path / "a", port=port)
    await anonymous.connect()
    with pytest.raises(NotConnectedError, match="refused"):
        await anonymous.maintain_link()
    await wrong.close()
    await anonymous.close()


async def test_tls_with_client_certificate(
    mosquitto_tls: LocalBroker, tls_files: TlsFiles, tmp_path: Path
) -> None:
    port = mosquitto_tls.port
    client_tls = TlsSettings(tls_files.ca_file, tls_files.client_cert, tls_files.client_key)
    subscriber = await Subscriber(port, tls=client_tls).start("acme/#")
    output = make_output(
        tmp_path,
        port=port,
        status=False,
        tls={
            "ca_file": tls_files.ca_file,
            "cert_file": tls_files.client_cert,
            "key_file": tls_files.client_key,
        },
    )
    async with running(output):
        await output.write(values_batch(output.table, "M1/Temp", [2.5]))
        await subscriber.wait_for(1)
    assert subscriber.messages[0] == (
        "acme/s/a/l/press1/edge/Temp",
        {"value": 2.5, "quality": "good", "timestamp": "2023-11-14T22:13:20.000Z", "unit": ""},
    )
    await subscriber.close()

    # verification is on by default: a broker certificate from another CA is refused
    untrusted = make_output(
        tmp_path / "u",
        port=port,
        tls={
            "ca_file": tls_files.other_ca_file,
            "cert_file": tls_files.client_cert,
            "key_file": tls_files.client_key,
        },
    )
    await untrusted.connect()
    with pytest.raises(NotConnectedError, match=r"(?i)certificate verify failed"):
        await untrusted.maintain_link()
    await untrusted.close()

    # without a client certificate the broker refuses the handshake
    anonymous = make_output(tmp_path / "n", port=port, tls={"ca_file": tls_files.ca_file})
    await anonymous.connect()
    with pytest.raises(NotConnectedError):
        await anonymous.maintain_link()
    await anonymous.close()


async def test_unreachable_broker_is_a_clear_error_and_writes_are_kept(tmp_path: Path) -> None:
    output = make_output(tmp_path, port=free_port(), connect_timeout=2)
    await output.connect()
    with pytest.raises(NotConnectedError, match=r"cannot connect to MQTT broker 127\.0\.0\.1:"):
        await output.maintain_link()
    await output.write(values_batch(output.table, "M1/Temp", [1.0, 2.0, 3.0]))
    assert len(output.buffer) == 3
    await output.close()


async def test_a_value_standing_still_is_published_again_after_max_age(
    mosquitto: LocalBroker, tmp_path: Path
) -> None:
    config = load_config_text(
        """
gateway: {id: gw1, location: {enterprise: acme, site: s, area: a, line: l}}
devices:
  - name: M1
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840/
    tags:
      - {name: Level, node: "ns=2;s=Level", max_age: 1}
      - {name: Other, node: "ns=2;s=Other"}
"""
    )
    table = TagTable((d.name, d.tags) for d in config.devices)
    output = MqttOutput(
        MqttOutputConfig(type="mqtt", port=mosquitto.port, status=False),
        table,
        gateway_id="gw1",
        location_path="acme/s/a/l",
        cells={},
        metrics=Metrics(),
        data_dir=tmp_path,
    )
    subscriber = await Subscriber(mosquitto.port).start("acme/#")
    async with running(output):
        await output.write(values_batch(table, "M1/Level", [3.5]))
        await output.write(values_batch(table, "M1/Other", [1.0]))
        await subscriber.wait_for(3, timeout=5)
    level = subscriber.on("acme/s/a/l/M1/edge/Level")
    assert len(level) >= 2 and all(m == level[0] for m in level), "same value, same timestamp"
    assert len(subscriber.on("acme/s/a/l/M1/edge/Other")) == 1  # no max_age: only once
    await subscriber.close()
