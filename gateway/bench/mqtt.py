"""``bench mqtt``: messages per second from the MQTT output into Mosquitto, counted by a
subscriber, at QoS 0 and QoS 1, and the store-and-forward replay rate.

Workload: 1,000 float tags of one device; every batch changes all of them (1,000 messages on
``bench/<phase>/D1/edge/t<i>``, UNS JSON). Mosquitto runs on a free loopback port; a
``mosquitto_sub`` process (C) subscribes to the phase's topics at the phase's QoS and counts
what it receives. A rate is messages / seconds from the first write until the subscriber has
them all; the gateway's CPU is its process CPU-seconds (user + system, all threads) over the
same time, which other load on the machine barely changes.

* ``qos0`` / ``qos1``: the output connected and ready, batches written as fast as the output
  takes them (it is paced only by its own backlog, as the gateway's queue would be).
* ``replay``: the output first runs with the broker unreachable, so every message goes to the
  disk buffer; then it connects and the time to deliver the whole buffer is measured.
* baseline: the same messages published the way gateways commonly do it, with paho-mqtt's own
  network thread (``loop_start``), ``json.dumps`` of a dict and ``client.publish`` per value,
  measured in the same run on the same broker.

Options: ``messages=N`` (per phase, default 200,000), ``baseline=N`` (default 50,000).
"""

from __future__ import annotations

__all__ = ["run"]

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.batch import SampleBatch
from gateway.bench import Result
from gateway.config.common import TagBase
from gateway.config.outputs import MqttOutputConfig
from gateway.demo.broker import LocalBroker, free_port
from gateway.errors import NotConnectedError
from gateway.metrics import Metrics
from gateway.outputs.mqtt import MqttOutput
from gateway.processors.timefmt import iso_utc
from gateway.tags import TagTable

_TAGS = 1000
_BACKLOG = 1 << 20


def run(options: dict[str, str]) -> Result:
    if not shutil.which("mosquitto", path="/usr/sbin:/usr/bin:/usr/local/sbin"):
        raise SystemExit(
            "bench mqtt needs Mosquitto (Debian packages mosquitto, mosquitto-clients)"
        )
    return asyncio.run(
        _run(int(options.get("messages", 200_000)), int(options.get("baseline", 50_000)))
    )


class _Counter:
    """A mosquitto_sub process counting the messages of one phase."""

    def __init__(self, port: int, topic: str, qos: int) -> None:
        self.port, self.topic, self.qos = port, topic, qos
        self.count = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.target = 0

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            shutil.which("mosquitto_sub") or "mosquitto_sub",
            "-h", "127.0.0.1", "-p", str(self.port), "-t", self.topic, "-q", str(self.qos),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        probe = self.topic.replace("#", "probe")
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            async with asyncio.timeout(10):
                while self.count == 0:
                    client.publish(probe, b"probe", 0)
                    await asyncio.sleep(0.05)
        finally:
            client.loop_stop()
            client.disconnect()
        await asyncio.sleep(0.2)
        self.count = 0

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        while data := await stdout.read(1 << 16):
            self.count += data.count(b"\n")
            if self.target and self.count >= self.target:
                self.done.set()

    async def wait(self, target: int, timeout: float) -> None:
        self.target = target
        if self.count >= target:
            return
        self.done.clear()
        await asyncio.wait_for(self.done.wait(), timeout)

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _table() -> TagTable:
    tags = [TagBase(name=f"t{i}", type="float32") for i in range(_TAGS)]  # type: ignore[arg-type]
    return TagTable([("D1", tags)])


def _batches(count: int) -> list[SampleBatch]:
    tags = np.arange(_TAGS, dtype=np.int32)
    rng = np.random.default_rng(5)
    stamp = time.time_ns()
    return [
        SampleBatch.uniform("D1", tags, np.round(rng.random(_TAGS) * 100, 3), stamp + k * 10**8)
        for k in range(count)
    ]


def _output(
    table: TagTable, port: int, root: str, qos: Literal[0, 1], data_dir: Path, metrics: Metrics
) -> MqttOutput:
    config = MqttOutputConfig(
        type="mqtt",
        name=root.replace("/", "-"),
        port=port,
        topic_root=root,
        qos=qos,
        status=False,
        connect_timeout=2,
        store_and_forward={"max_bytes": 1 << 30},  # type: ignore[arg-type]
    )
    return MqttOutput(
        config,
        table,
        gateway_id="bench",
        location_path="bench/s/a/l",
        cells={},
        metrics=metrics,
        data_dir=data_dir,
    )


async def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Yield to the loop until `condition()` holds (pacing as a queue would)."""
    await asyncio.sleep(0)
    for _ in range(int(timeout * 1000)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise TimeoutError("the output did not drain")


def _socket_backlog(output: MqttOutput) -> int:
    client = output.link.client
    return client.write_backlog if client is not None else 0


async def _keep_linked(output: MqttOutput) -> None:
    while True:
        with contextlib.suppress(NotConnectedError):
            await output.maintain_link()
        await asyncio.sleep(0.1)


async def _live(
    broker: LocalBroker,
    table: TagTable,
    qos: Literal[0, 1],
    batches: list[SampleBatch],
    data_dir: Path,
) -> tuple[float, float]:
    root = f"bench/q{qos}"
    counter = _Counter(broker.port, f"{root}/#", qos)
    await counter.start()
    output = _output(table, broker.port, root, qos, data_dir, Metrics())
    await output.connect()
    link = asyncio.create_task(_keep_linked(output))
    await _until(lambda: output.link.ready)
    total = len(batches) * _TAGS
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        await output.write(batch)
        await _until(
            lambda: output.link.waiting_bytes < _BACKLOG and _socket_backlog(output) < _BACKLOG
        )
    await counter.wait(total, 120)
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    link.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await link
    await output.close()
    await counter.stop()
    assert len(output.buffer) == 0, "nothing may have gone to the buffer in a live phase"
    return total / elapsed, used / elapsed


async def _replay(
    broker: LocalBroker, table: TagTable, batches: list[SampleBatch], data_dir: Path
) -> tuple[float, float]:
    root = "bench/replay"
    offline = _output(table, free_port(), root, 1, data_dir, Metrics())
    await offline.connect()
    for batch in batches:
        await offline.write(batch)
        await asyncio.sleep(0)
    await offline.close()
    total = len(batches) * _TAGS
    counter = _Counter(broker.port, f"{root}/#", 1)
    await counter.start()
    output = _output(table, broker.port, root, 1, data_dir, Metrics())
    await output.connect()
    assert len(output.buffer) == total, f"{len(output.buffer)} buffered, {total} written"
    started, cpu = time.perf_counter(), time.process_time()
    link = asyncio.create_task(_keep_linked(output))
    await counter.wait(total, 300)
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    link.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await link
    await output.close()
    await counter.stop()
    return total / elapsed, used / elapsed


async def _baseline(
    broker: LocalBroker, qos: int, batches: list[SampleBatch]
) -> tuple[float, float]:
    """paho with its own thread, json.dumps and publish per value."""
    root = f"bench/base{qos}"
    counter = _Counter(broker.port, f"{root}/#", qos)
    await counter.start()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-base-{qos}")
    client.max_inflight_messages_set(20)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    topics = [f"{root}/D1/edge/t{i}" for i in range(_TAGS)]
    total = len(batches) * _TAGS
    started, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        stamp = iso_utc(int(batch.timestamps[0]))
        for tag, value in zip(batch.tags.tolist(), batch.values.tolist(), strict=True):
            payload = json.dumps(
                {"value": value, "quality": "good", "timestamp": stamp, "unit": ""}
            )
            client.publish(topics[tag], payload, qos)
        await _until(lambda: len(client._out_messages) < 10_000)
    await counter.wait(total, 300)
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    client.loop_stop()
    client.disconnect()
    await counter.stop()
    return total / elapsed, used / elapsed


async def _run(messages: int, baseline_messages: int) -> Result:
    table = _table()
    batches = _batches(max(1, messages // _TAGS))
    base_batches = batches[: max(1, baseline_messages // _TAGS)]
    total = len(batches) * _TAGS
    print(
        f"mqtt: {total:,} messages per phase ({len(batches)} batches × {_TAGS} tags, UNS JSON) "
        "into Mosquitto, counted by mosquitto_sub"
    )
    folder = Path(tempfile.mkdtemp(prefix="edge-gw-bench-mqtt-"))
    try:
        async with LocalBroker(prefer="mosquitto") as broker:
            q0, q0_cpu = await _live(broker, table, 0, batches, folder / "q0")
            b0, b0_cpu = await _baseline(broker, 0, base_batches)
            print(f"  QoS 0   : {q0:10,.0f} msg/s  gateway CPU {q0_cpu:4.2f} cores")
            print(
                f"  baseline: {b0:10,.0f} msg/s  CPU {b0_cpu:4.2f} cores  "
                f"(paho thread, json.dumps + publish per value)  → {q0 / b0:4.1f}× faster"
            )
            q1, q1_cpu = await _live(broker, table, 1, batches, folder / "q1")
            b1, b1_cpu = await _baseline(broker, 1, base_batches)
            print(f"  QoS 1   : {q1:10,.0f} msg/s  gateway CPU {q1_cpu:4.2f} cores")
            print(
                f"  baseline: {b1:10,.0f} msg/s  CPU {b1_cpu:4.2f} cores  → {q1 / b1:4.1f}× faster"
            )
            replay, replay_cpu = await _replay(broker, table, batches, folder / "replay")
            print(
                f"  replay  : {replay:10,.0f} msg/s  gateway CPU {replay_cpu:4.2f} cores  "
                f"(QoS 1, from the disk buffer after reconnecting)"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    targets_met = q0 >= 30_000 and q1 >= 10_000
    print(f"  targets (>= 30,000 QoS 0, >= 10,000 QoS 1): {'met' if targets_met else 'NOT met'}")
    return {
        "qos0_per_s": round(q0),
        "qos1_per_s": round(q1),
        "replay_per_s": round(replay),
        "qos0_cpu_cores": round(q0_cpu, 2),
        "qos1_cpu_cores": round(q1_cpu, 2),
        "replay_cpu_cores": round(replay_cpu, 2),
        "baseline_qos0_per_s": round(b0),
        "baseline_qos1_per_s": round(b1),
        "speedup_qos0": round(q0 / b0, 1),
        "speedup_qos1": round(q1 / b1, 1),
    }
