"""Store-and-forward against a real Mosquitto: a broker restart in the middle of a stream, a
gateway restart with a full buffer, live values ahead of the replay."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gateway.config.outputs import MqttOutputConfig
from gateway.demo.broker import LocalBroker, free_port
from gateway.metrics import Metrics
from gateway.outputs.mqtt import MqttOutput
from tests.outputs.helpers import Subscriber, keep_linked, running, values_batch
from tests.peers import require_binary
from tests.unit.helpers import machine_config, table_of

pytestmark = pytest.mark.integration

TOPIC = "sf/press1/edge/Temp"


def make_output(data_dir: Path, port: int, **fields: object) -> MqttOutput:
    config = MqttOutputConfig.model_validate(
        {
            "type": "mqtt",
            "port": port,
            "topic_root": "sf",
            "qos": 1,
            "status": False,
            "connect_timeout": 2,
            **fields,
        }
    )
    return MqttOutput(
        config,
        table_of(machine_config()),
        gateway_id="gw1",
        location_path="acme/s/a/l",
        cells={"M1": "press1"},
        metrics=Metrics(),
        data_dir=data_dir,
    )


def first_seen(values: list[float]) -> list[float]:
    return list(dict.fromkeys(values))


def split(subscriber: Subscriber) -> tuple[list[float], list[float]]:
    """Values received live and replayed (``"historical": true``), in arrival order."""
    live: list[float] = []
    replayed: list[float] = []
    for _, payload in subscriber.messages:
        (replayed if payload.get("historical") else live).append(payload["value"])
    return live, replayed


async def test_broker_restart_mid_stream_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    require_binary("mosquitto", "Debian package mosquitto")
    async with LocalBroker(persistence=True) as broker:
        subscriber = Subscriber(broker.port, clean_start=False, session_expiry=600)
        await subscriber.start("sf/#")
        output = make_output(tmp_path, broker.port)
        total, step = 6000, 200
        async with running(output):

            async def stream() -> None:
                for start in range(0, total, step):
                    batch = values_batch(
                        output.table, "M1/Temp", [float(i) for i in range(start, start + step)]
                    )
                    await output.write(batch)
                    await asyncio.sleep(0.01)

            streaming = asyncio.create_task(stream())
            await asyncio.sleep(0.1)
            await broker.restart(down_for=0.5)  # SIGTERM: Mosquitto saves its sessions
            await streaming
            # the subscriber's session survived the restart: reconnect it as any client would
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(Exception):
                        await subscriber.client.connect()
                        break
                    await asyncio.sleep(0.2)
            await subscriber.wait_for(total, timeout=30)
            async with asyncio.timeout(10):
                while len(output.buffer):
                    await asyncio.sleep(0.05)
        live, replayed = split(subscriber)
        assert set(live) | set(replayed) == {float(i) for i in range(total)}
        assert replayed, "the restart happened in the middle: some values were buffered"
        # at least once: the broker may deliver its in-flight messages to the subscriber again
        # after its restart; the first deliveries are in order
        assert first_seen(live) == sorted(set(live))
        assert first_seen(replayed) == sorted(set(replayed))
        assert output.link.rejected == 0
        await subscriber.close()


async def test_gateway_restart_with_a_full_buffer(tmp_path: Path) -> None:
    require_binary("mosquitto", "Debian package mosquitto")
    port = free_port()  # the broker is down while the first gateway runs
    sf = {"max_bytes": 256 * 1024, "alarm_percent": 50}
    first = make_output(tmp_path, port, store_and_forward=sf)
    await first.connect()
    link = asyncio.create_task(keep_linked(first))
    total = 6000
    for start in range(0, total, 500):
        await first.write(
            values_batch(first.table, "M1/Temp", [float(i) for i in range(start, start + 500)])
        )
        await asyncio.sleep(0)
    link.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await link
    await first.buffer.flush()
    first.link.check_buffer()
    assert first.buffer.dropped > 0, "the buffer was filled beyond its bound"
    assert first.link._alarm_on
    kept = len(first.buffer)
    assert 0 < kept == total - first.buffer.dropped
    assert first.buffer.bytes <= 256 * 1024
    await first.close()  # the gateway stops

    async with LocalBroker() as broker:
        subscriber = await Subscriber(broker.port).start("sf/#")
        second = make_output(tmp_path, broker.port, store_and_forward=sf)  # same data_dir
        async with running(second):
            await subscriber.wait_for(kept, timeout=30)
            async with asyncio.timeout(10):
                while len(second.buffer):
                    await asyncio.sleep(0.05)
        live, replayed = split(subscriber)
        assert live == []
        # the newest survived, oldest first, nothing twice
        assert replayed == [float(i) for i in range(total - kept, total)]
        await subscriber.close()


async def test_live_values_go_ahead_of_the_replay(mosquitto: LocalBroker, tmp_path: Path) -> None:
    offline = make_output(tmp_path, free_port())
    await offline.connect()
    backlog = 20000
    for start in range(0, backlog, 1000):
        await offline.write(
            values_batch(offline.table, "M1/Temp", [float(i) for i in range(start, start + 1000)])
        )
    await offline.close()

    subscriber = await Subscriber(mosquitto.port).start("sf/#")
    output = make_output(tmp_path, mosquitto.port)
    async with running(output):
        live = [float(i) for i in range(100_000, 100_010)]
        await output.write(values_batch(output.table, "M1/Temp", live))
        await subscriber.wait_for(backlog + len(live), timeout=30)
    values = [payload["value"] for _, payload in subscriber.messages]
    first_live = values.index(100_000.0)
    assert first_live < backlog / 2, "live values were sent while the replay was running"
    got_live, replayed = split(subscriber)
    assert got_live == live
    assert replayed == [float(i) for i in range(backlog)]
    await subscriber.close()
