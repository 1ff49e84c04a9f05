"""Payload modes without a broker: UNS topics and JSON, the historical flag, Sparkplug encoding
helpers, command validation, and the MQTT output's configuration errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import numpy as np
import orjson
import pytest

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.config.outputs import CommandsConfig, MqttOutputConfig
from gateway.errors import ConfigError, DeviceError, WriteRefusedError
from gateway.metrics import Metrics
from gateway.outputs.buffer import MemoryBuffer, Record
from gateway.outputs.commands import CommandExecutor, CommandResult, coerce
from gateway.outputs.link import Link
from gateway.outputs.metrics import output_metrics
from gateway.outputs.mqtt import MqttOutput
from gateway.outputs.mqtt_client import encode_topic
from gateway.outputs.sparkplug import sparkplug_b_pb2 as pb
from gateway.outputs.sparkplug.payload import (
    append_seq,
    metric_value,
    set_historical,
    sparkplug_type,
    write_value,
)
from gateway.outputs.uns import UnsMode, json_historical, sanitize
from gateway.tags import TagTable

CONFIG = """
gateway: {id: gw1, location: {enterprise: acme, site: s, area: a, line: l}}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    cell: press1
    tags:
      - {name: Speed, address: 0, type: float32, unit: "parts/min", writable: true,
         span: [1, 120]}
      - {name: Count, address: 2, type: uint16, writable: true}
      - {name: Scaled, address: 3, type: int16, scale: 0.1, writable: true}
      - {name: Running, table: coil, address: 0, type: bool, writable: true}
      - {name: Order, address: 10, type: string, length: 8, writable: true}
      - {name: Temp, address: 20, type: float32, max_age: 60}
      - {name: Ring, address: 30, type: int32, count: 2}
"""


def table() -> TagTable:
    config = load_config_text(CONFIG)
    return TagTable((d.name, d.tags) for d in config.devices)


class Recorder:
    """Stands in for the link: records what the mode sends."""

    ready = True

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, int, bool]] = []
        self.buffer = MemoryBuffer(1 << 20)

    def send(
        self, topic: bytes, payload: bytes, qos: int, retain: bool = False, plain: bool = False
    ) -> None:
        self.sent.append((topic, payload, qos, retain))


def uns(tags: TagTable, **fields: object) -> UnsMode:
    config = MqttOutputConfig.model_validate({"type": "mqtt", **fields})
    output = MqttOutput(
        config,
        tags,
        gateway_id="gw1",
        location_path="acme/s/a/l",
        cells={"M1": "press1"},
        metrics=Metrics(),
        data_dir="/nonexistent",
    )
    assert isinstance(output.mode, UnsMode)
    return output.mode


def test_names_are_sanitized_into_one_topic_level() -> None:
    assert sanitize("a/b+c#d e") == "a_b_c_d_e"
    assert sanitize("$SYS") == "_SYS"
    assert sanitize("Measurements[3]") == "Measurements[3]"
    with pytest.raises(ValueError, match="wildcards"):
        encode_topic("a/+/b")


def test_uns_payloads_by_type() -> None:
    tags = table()
    mode = uns(tags, qos=0, retain=True)
    link = Recorder()
    ids = ["M1/Speed", "M1/Count", "M1/Scaled", "M1/Running", "M1/Order", "M1/Ring[1]"]
    batch = SampleBatch(
        "M1",
        np.array([tags.index(i) for i in ids], np.int32),
        np.array([12.5, 7.0, 3.0, 1.0, np.nan, np.nan]),
        np.array([0, 0, 0, 0, 0, quality.bad("timeout")], np.uint16),
        np.full(6, 1_700_000_000_000_000_000, np.int64),
        np.array([None, None, None, None, "A1", None], object),
    )
    assert mode.write(cast(Link, link), batch) == 6
    topics = [t[2:].decode() for t, _, _, _ in link.sent]
    assert topics == [
        "acme/s/a/l/press1/edge/Speed",
        "acme/s/a/l/press1/edge/Count",
        "acme/s/a/l/press1/edge/Scaled",
        "acme/s/a/l/press1/edge/Running",
        "acme/s/a/l/press1/edge/Order",
        "acme/s/a/l/press1/edge/Ring[1]",
    ]
    payloads = [orjson.loads(p) for _, p, _, _ in link.sent]
    assert [p["value"] for p in payloads] == [12.5, 7, 3.0, True, "A1", None]
    assert payloads[0] == {
        "value": 12.5,
        "quality": "good",
        "timestamp": "2023-11-14T22:13:20.000Z",
        "unit": "parts/min",
    }
    assert payloads[5]["quality"] == "bad: timeout"
    assert {(q, r) for _, _, q, r in link.sent} == {(0, True)}


def test_replayed_messages_are_flagged_historical_and_not_retained() -> None:
    record = Record(encode_topic("x"), b'{"value":1,"unit":""}', 1, True)
    late = json_historical(record)
    assert orjson.loads(late.payload) == {"value": 1, "unit": "", "historical": True}
    assert late.retain is False
    assert json_historical(late) == late


def test_values_not_republished_within_max_age_come_back() -> None:
    tags = table()
    mode = uns(tags)
    link = Recorder()
    temp = tags.index("M1/Temp")
    batch = SampleBatch.uniform("M1", np.array([temp], np.int32), np.array([20.0]), 5)
    mode.write(cast(Link, link), batch)
    watched = np.array([temp], np.int32)
    sent = int(mode.last_sent_ns[temp])
    assert mode.stale_batch(watched, sent + 59 * 10**9) is None
    stale = mode.stale_batch(watched, sent + 60 * 10**9)
    assert stale is not None
    assert stale.tags.tolist() == [temp] and stale.values.tolist() == [20.0]
    assert stale.timestamps.tolist() == [5], "the source timestamp stays"


def test_sparkplug_types_and_values() -> None:
    tags = table()
    assert sparkplug_type(tags[tags.index("M1/Speed")]) == pb.Float
    assert sparkplug_type(tags[tags.index("M1/Count")]) == pb.UInt16
    assert sparkplug_type(tags[tags.index("M1/Scaled")]) == pb.Double  # engineering values
    assert sparkplug_type(tags[tags.index("M1/Running")]) == pb.Boolean
    assert sparkplug_type(tags[tags.index("M1/Ring[0]")]) == pb.Int32
    metric = pb.Payload.Metric()
    write_value(metric, pb.Int32, -5.0)
    assert metric.int_value == 0xFFFFFFFB  # two's complement in the unsigned field
    assert metric_value(metric, pb.Int32) == -5
    null = pb.Payload.Metric()
    write_value(null, pb.Double, float("nan"))
    assert null.is_null


@pytest.mark.parametrize("seq", [0, 5, 127, 128, 255])
def test_seq_is_appended_as_a_valid_field(seq: int) -> None:
    payload = pb.Payload()
    payload.timestamp = 123
    payload.metrics.add(alias=4, double_value=1.5)
    parsed = pb.Payload()
    parsed.ParseFromString(append_seq(payload.SerializeToString(), seq))
    assert parsed.seq == seq and parsed.metrics[0].double_value == 1.5
    historical = pb.Payload()
    historical.ParseFromString(set_historical(append_seq(payload.SerializeToString(), seq)))
    assert not historical.HasField("seq")
    assert historical.metrics[0].is_historical


def test_commands_check_type_span_and_range() -> None:
    tags = table()

    def check(tag: str, value: object) -> object:
        return coerce(tags[tags.index(tag)], value)

    assert check("M1/Speed", 60) == 60.0
    assert check("M1/Count", 7.0) == 7 and isinstance(check("M1/Count", 7.0), int)
    assert check("M1/Scaled", 1.5) == 1.5
    assert check("M1/Running", 1) is True
    assert check("M1/Order", "A1") == "A1"
    for tag, value, reason in [
        ("M1/Speed", 500, "outside the span"),
        ("M1/Speed", "fast", "not a number"),
        ("M1/Speed", True, "not a number"),
        ("M1/Speed", float("inf"), "not a finite"),
        ("M1/Count", 7.5, "whole number"),
        ("M1/Count", 70000, "does not fit uint16"),
        ("M1/Scaled", 1.55, "whole number"),
        ("M1/Running", 2, "not a boolean"),
        ("M1/Order", 5, "not a string"),
    ]:
        with pytest.raises(WriteRefusedError, match=reason):
            check(tag, value)


async def test_command_executor_refuses_and_reports() -> None:
    tags = table()
    written: list[tuple[int, object]] = []

    async def writer(index: int, value: object) -> None:
        if value == 99.0:
            raise DeviceError("M1", "exception 4 ServerDeviceFailure")
        written.append((index, value))

    metrics = output_metrics(Metrics())
    results: list[CommandResult] = []
    off = CommandExecutor(tags, writer, CommandsConfig(), output="o", metrics=metrics)
    off.submit(tags.index("M1/Speed"), 5, results.append)
    executor = CommandExecutor(
        tags, writer, CommandsConfig(enabled=True, tags=["M1/Sp*"]), output="o", metrics=metrics
    )
    executor.submit(tags.index("M1/Count"), 5, results.append)  # writable, not selected
    executor.submit(tags.index("M1/Temp"), 5, results.append)  # not writable
    executor.submit(tags.index("M1/Speed"), 50, results.append, "r1")
    executor.submit(tags.index("M1/Speed"), 99, results.append)
    await executor.close()
    outcomes = [(r.outcome, r.error) for r in results]
    assert outcomes[:3] == [
        ("refused", "commands are disabled for this output"),
        ("refused", "the tag is not in this output's commands.tags"),
        ("refused", "the tag is not writable"),
    ]
    assert ("written", "") in outcomes[3:]
    assert ("failed", "M1: exception 4 ServerDeviceFailure") in outcomes[3:]
    assert written == [(tags.index("M1/Speed"), 50.0)]


async def test_slow_writes_time_out_and_excess_requests_are_busy() -> None:
    tags = table()

    async def slow(index: int, value: object) -> None:
        await asyncio.sleep(10)

    results: list[CommandResult] = []
    executor = CommandExecutor(
        tags,
        slow,
        CommandsConfig(enabled=True, timeout=0.1, max_pending=1),
        output="o",
        metrics=output_metrics(Metrics()),
    )
    executor.submit(tags.index("M1/Speed"), 5, results.append)
    executor.submit(tags.index("M1/Speed"), 6, results.append)
    await executor.close()
    assert [r.outcome for r in results] == ["refused", "failed"]
    assert "too many writes pending" in results[0].error
    assert "no answer within 0.1 s" in results[1].error


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{type: mqtt, password: x}", "outputs[0] (line 3): password needs username"),
        ("{type: mqtt, tls: {ca_file: /no/such.pem}}", "ca_file '/no/such.pem' does not exist"),
        ("{type: mqtt, topic_root: 'a/#'}", "outputs[0].topic_root"),
        ("{type: mqtt, payload: json}", "outputs[0].payload"),
        ("{type: mqtt, store_and_forward: {max_bytes: 10}}", "store_and_forward.max_bytes"),
        ("{type: mqtt, sparkplug: {group_id: 'a/b'}}", "sparkplug.group_id"),
        ("{type: influxdb, url: 'http://x', bucket: b, precision: h}", "outputs[0].precision"),
        ("{type: influxdb, bucket: b}", "outputs[0].url"),
        ("{type: kafka}", "unknown type 'kafka'"),
    ],
)
def test_config_errors_name_their_path(section: str, message: str, tmp_path: Path) -> None:
    text = "gateway: {id: gw1, location: {enterprise: a, site: s, area: r, line: l}}\n"
    text += f"outputs:\n  - {section}\n"
    with pytest.raises(ConfigError) as error:
        load_config_text(text)
    assert message in str(error.value)


async def test_sparkplug_bdseq_counts_per_connect_and_survives_a_restart(tmp_path: Path) -> None:
    from gateway.outputs.sparkplug.node import SparkplugMode

    def mode() -> SparkplugMode:
        config = MqttOutputConfig.model_validate({"type": "mqtt", "payload": "sparkplug"})
        output = MqttOutput(
            config,
            table(),
            gateway_id="gw1",
            location_path="acme/s/a/l",
            cells={},
            metrics=Metrics(),
            data_dir=tmp_path,
        )
        assert isinstance(output.mode, SparkplugMode)
        return output.mode

    def bd_seq_of(will: bytes) -> int:
        payload = pb.Payload()
        payload.ParseFromString(will)
        assert [m.name for m in payload.metrics] == ["bdSeq"]
        return int(payload.metrics[0].long_value)

    first = mode()
    wills = [bd_seq_of((await first.settings()).will_payload) for _ in range(3)]
    assert wills == [0, 1, 2]
    settings = await first.settings()
    assert settings.will_topic == "spBv1.0/s/NDEATH/gw1"
    assert (settings.will_qos, settings.will_retain, settings.clean_start) == (1, False, True)
    restarted = mode()  # a new process: the next connect must not reuse the last bdSeq
    assert bd_seq_of((await restarted.settings()).will_payload) == 4
    first.bd_seq = 255
    assert bd_seq_of((await first.settings()).will_payload) == 0
