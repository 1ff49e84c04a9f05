"""The batched payload mode against a real Mosquitto, through the whole gateway: a Modbus device
polled every 100 ms, one message per poll with every changed value exactly once and nothing for
unchanged values; the per-tag UNS mode running beside it on another topic root."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.demo.broker import LocalBroker
from gateway.outputs.batched import BatchedMode
from gateway.outputs.mqtt import MqttOutput
from gateway.quality import bad
from gateway.runtime.app import Gateway
from simulators.modbus_farm import FarmUnit, ModbusFarm
from tests.outputs.helpers import Subscriber

pytestmark = pytest.mark.integration

TAGS = 200

CONFIG = """
gateway:
  id: gw1
  location: {{enterprise: acme, site: s, area: a, line: l}}
  data_dir: {data_dir}
devices:
  - name: press1
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {plc_port}
    poll_groups: [{{name: default, interval: 0.1}}]
    tags:
{tags}
outputs:
  - {{type: mqtt, name: batches, port: {mqtt_port}, payload: batched, topic_root: fast,
     qos: 1}}
  - {{type: mqtt, name: uns, port: {mqtt_port}, tags: ["press1/r1*"], status: false}}
"""


@pytest.fixture
async def running(
    mosquitto: LocalBroker, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, ModbusFarm, Subscriber]]:
    farm = ModbusFarm([FarmUnit(unit=1, size=1024)])
    image = farm.image(1)
    image.set_registers("holding", 0, range(TAGS))
    plc_port = await farm.serve_tcp()
    tags = "\n".join(f"      - {{name: r{i}, address: {i}, type: uint16}}" for i in range(TAGS))
    config = load_config_text(
        CONFIG.format(data_dir=tmp_path, plc_port=plc_port, mqtt_port=mosquitto.port, tags=tags)
    )
    subscriber = await Subscriber(mosquitto.port).start("fast/#", "acme/#")
    gateway = Gateway(config)
    await gateway.start()
    try:
        yield gateway, farm, subscriber
    finally:
        await gateway.stop()
        await subscriber.close()
        await farm.stop()


def _published(subscriber: Subscriber) -> list[dict[str, Any]]:
    return subscriber.on("fast/press1/batch")


async def _settle(subscriber: Subscriber, quiet: float = 0.6) -> None:
    """Until no new batch message for `quiet` seconds."""
    count, since = -1, time.monotonic()
    async with asyncio.timeout(15):
        while time.monotonic() - since < quiet:
            now = len(_published(subscriber))
            if now != count:
                count, since = now, time.monotonic()
            await asyncio.sleep(0.05)


async def test_every_changed_value_exactly_once(
    running: tuple[Gateway, ModbusFarm, Subscriber],
) -> None:
    _, farm, subscriber = running
    image = farm.image(1)
    await _settle(subscriber)
    first = _published(subscriber)
    assert len(first) == 1, "one message for the first poll, then nothing while nothing changes"
    message = first[0]
    assert set(message) == {"device", "ts", "names", "values"}
    assert message["device"] == "press1"
    assert abs(message["ts"] / 1000 - time.time()) < 10
    assert message["names"] == [f"r{i}" for i in range(TAGS)]
    assert message["values"] == list(range(TAGS))
    meta = subscriber.on("fast/press1/batch/meta")
    assert [t["name"] for t in meta[0]["tags"]] == [f"r{i}" for i in range(TAGS)]
    assert meta[0]["tags"][0]["type"] == "uint16"

    rng = np.random.default_rng(5)
    expected: Counter[tuple[str, int]] = Counter()
    for step in range(1, 9):
        changed = sorted(rng.choice(TAGS, size=int(rng.integers(1, 60)), replace=False).tolist())
        for tag in changed:
            value = 1000 * step + tag
            image.set_registers("holding", tag, [value])
            expected[(f"r{tag}", value)] += 1
        await _settle(subscriber, quiet=0.35)

    later = _published(subscriber)[1:]
    seen: Counter[tuple[str, int]] = Counter()
    last = dict(zip(message["names"], message["values"], strict=True))
    for batch in later:
        assert len(batch["names"]) == len(batch["values"]) > 0
        for name, value in zip(batch["names"], batch["values"], strict=True):
            assert last[name] != value, f"{name} was sent although it did not change"
            last[name] = value
            seen[(name, value)] += 1
    assert seen == expected  # every change exactly once, nothing else
    assert last == {f"r{i}": int(image.table("holding")[i]) for i in range(TAGS)}
    uns = [t for t, _ in subscriber.raw if t.startswith("acme/s/a/l/press1/edge/")]
    assert uns, "the per-tag UNS output runs beside the batched one"


def test_bad_quality_and_types_in_the_payload() -> None:
    config = load_config_text(
        """
gateway: {id: gw1, location: {enterprise: a, site: b, area: c, line: d}}
devices:
  - name: M1
    protocol: modbus_tcp
    host: h
    tags:
      - {name: Count, address: 0, type: uint16}
      - {name: Temp, address: 1, type: float32}
      - {name: Lot, address: 3, type: string, length: 4}
      - {name: Run, table: coil, address: 0, type: bool}
outputs: [{type: mqtt, payload: batched, keys: aliases}]
""".replace(", keys: aliases", ", batched: {keys: aliases}")
    )
    gateway = Gateway(config)
    output = gateway.outputs[0]
    assert isinstance(output, MqttOutput)
    mode = output.mode
    assert isinstance(mode, BatchedMode)
    stamps = np.array([2_000_000, 2_000_000, 1_000_000, 2_000_000], np.int64)
    batch = SampleBatch(
        "M1",
        np.arange(4, dtype=np.int32),
        np.array([7.0, 21.5, np.nan, 1.0]),
        np.array([0, bad("timeout"), 0, 0], np.uint16),
        stamps,
        np.array([None, None, "L1", None], object),
    )
    payload = orjson.loads(mode.encode(batch))
    assert payload == {
        "device": "M1",
        "ts": 2,
        "ts_each": [2, 2, 1, 2],
        "aliases": [0, 1, 2, 3],
        "values": [7, 21.5, "L1", True],
        "quality": {"1": "bad: timeout"},
    }
    assert len(gateway.table) == 4
