"""``bench modbus``: 10 devices × 1,000 tags of mixed types polled every 100 ms.

The devices are simulated by :mod:`simulators.modbus_farm` in a separate process (one TCP port
per device, values changing every 100 ms). This process is the gateway side: it builds the
Modbus drivers through the registry, exactly as ``edge-gateway run`` does, and runs them with a
sink that counts the values. Figures for a measurement window after a warm-up:

* values/s: good values whose poll started inside the window, per second of window;
* CPU cores: this process's CPU seconds (user + system) per wall second;
* peak RSS of this process, in MB;
* poll jitter p99: how late poll cycles start against their schedule;
* requests per cycle as sent, and the minimum from the planner's independent reference.

Baseline, same run: pymodbus' own ``AsyncModbusTcpClient`` sending the same planned reads on the
same schedule (decoded with the same numpy decoder), to show what its per-request overhead costs.
Options: ``devices=10 tags=1000 interval=0.1 duration=20 warmup=3 baseline=10 window=1``.
"""

from __future__ import annotations

__all__ = ["run"]

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from drivers.modbus.config import ModbusTcpDevice
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.group import GroupDecoder
from drivers.modbus.plan import minimum_reads
from gateway.batch import SampleBatch
from gateway.bench import Result
from gateway.bench.process import cpu_seconds, own_cpu_seconds, own_peak_rss_mb, stop_child
from gateway.config.model import GatewayConfig
from gateway.metrics import Metrics
from gateway.quality import is_good
from gateway.runtime.registry import DRIVERS, BuildContext
from gateway.tags import TagTable

_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def device_tags(count: int) -> list[dict[str, Any]]:
    """`count` tags of mixed types: 16- to 64-bit numbers in all word orders, bits inside
    registers, strings, coils and discrete inputs, with small gaps (bridged) and large ones."""
    tags: list[dict[str, Any]] = []
    register = coil = discrete = 0
    bit_register, bit = -1, 16
    for i in range(count):
        kind = i % 20
        tag: dict[str, Any] = {"name": f"t{i}"}
        if i % 50 == 49:
            register += 3  # a small gap: worth reading across
        if i % 250 == 249:
            register += 40  # a large gap: not worth it
        if kind <= 5:
            tag |= {"address": register, "type": "uint16"}
            register += 1
        elif kind <= 7:
            tag |= {"address": register, "type": "int16", "scale": 0.1}
            register += 1
        elif kind <= 10:
            tag |= {"address": register, "type": "float32", "word_order": _ORDERS[i % 4]}
            register += 2
        elif kind <= 12:
            tag |= {"address": register, "type": "int32" if i % 2 else "uint32"}
            register += 2
        elif kind == 13:
            tag |= {"address": register, "type": "float64", "word_order": _ORDERS[i % 4]}
            register += 4
        elif kind == 14:
            tag |= {"address": register, "type": "int64" if i % 2 else "uint64"}
            register += 4
        elif kind == 15:
            if bit == 16:
                bit_register, bit = register, 0
                register += 1
            tag |= {"address": bit_register, "type": "bool", "bit": bit}
            bit += 1
        elif kind == 16:
            length = 8 + 2 * (i % 5)
            tag |= {"address": register, "type": "string", "length": length}
            register += (length + 1) // 2
        elif kind <= 18:
            tag |= {"table": "coil", "address": coil, "type": "bool"}
            coil += 1
        else:
            tag |= {"table": "discrete", "address": discrete, "type": "bool"}
            discrete += 1
        tags.append(tag)
    return tags


def _config(ports: list[int], tags: int, interval: float, window: int) -> GatewayConfig:
    tag_list = device_tags(tags)
    devices = [
        {
            "name": f"D{k + 1}",
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "max_outstanding": window,
            "poll_groups": [{"name": "fast", "interval": interval}],
            "tags": [{**t, "poll_group": "fast"} for t in tag_list],
        }
        for k, port in enumerate(ports)
    ]
    return GatewayConfig.model_validate(
        {
            "gateway": {
                "id": "bench",
                "location": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
            },
            "devices": devices,
        }
    )


class _Counter:
    """The sink: counts good values whose poll started inside the window."""

    def __init__(self) -> None:
        self.start_ns = 0
        self.end_ns = 0
        self.values = 0
        self.bad = 0

    def __call__(self, batch: SampleBatch) -> None:
        stamp = int(batch.timestamps[0]) if len(batch) else 0
        if self.start_ns <= stamp < self.end_ns:
            good = int(is_good(batch.quality).sum())
            self.values += good
            self.bad += len(batch) - good


def _start_farm(devices: int) -> tuple[subprocess.Popen[str], list[int]]:
    farm = subprocess.Popen(
        [sys.executable, "-m", "simulators.modbus_farm", "--devices", str(devices), "--changing"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert farm.stdout is not None
    line = farm.stdout.readline()
    if not line:
        farm.kill()
        raise RuntimeError("the Modbus simulator did not start")
    return farm, [int(p) for p in json.loads(line)["ports"]]


async def _measure_gateway(
    config: GatewayConfig, warmup: float, duration: float, farm_pid: int
) -> dict[str, Any]:
    table = TagTable((d.name, d.tags) for d in config.devices)
    ctx = BuildContext(config, table, Metrics())
    drivers = [DRIVERS[d.protocol](d, ctx) for d in config.devices]
    assert all(isinstance(d, ModbusDriver) for d in drivers)
    modbus = [d for d in drivers if isinstance(d, ModbusDriver)]
    sink = _Counter()
    for driver in modbus:
        await driver.connect()
    tasks = [asyncio.create_task(d.run(sink)) for d in modbus]
    await asyncio.sleep(warmup)
    # start the window half-way between two cycles (polls start on multiples of the interval)
    interval = modbus[0].groups[0].interval
    await asyncio.sleep((-time.time()) % interval + interval / 2)
    for driver in modbus:
        for group in driver.groups:
            group.stats.reset()
    requests0 = sum(d.link.requests for d in modbus)
    cpu0, wall0, farm0 = own_cpu_seconds(), time.monotonic(), cpu_seconds(farm_pid)
    sink.start_ns = time.time_ns()
    sink.end_ns = sink.start_ns + int(duration * 1e9)
    await asyncio.sleep(duration)
    cpu1, wall1, farm1 = own_cpu_seconds(), time.monotonic(), cpu_seconds(farm_pid)
    requests1 = sum(d.link.requests for d in modbus)
    cycles = sum(s.cycles for d in modbus for s in d.poll_stats().values()) / len(modbus)
    await asyncio.sleep(0.3)  # let polls started inside the window finish
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for driver in modbus:
        await driver.close()
    wall = wall1 - wall0
    lateness = np.concatenate(
        [s.recent_lateness() for d in modbus for s in d.poll_stats().values()]
    )
    missed = sum(s.missed for d in modbus for s in d.poll_stats().values())
    optimum = 0
    for device in config.devices:
        assert isinstance(device, ModbusTcpDevice)
        elements = [
            (table.index(f"{device.name}/{t.name}"), t, 0) for t in device.tags
        ]  # scalar tags only in this workload
        optimum += minimum_reads(
            elements,
            max_registers=device.max_registers,
            max_bits=device.max_bits,
            max_gap=device.max_gap,
            max_bit_gap=device.max_bit_gap,
        )
    return {
        "values_per_s": sink.values / duration,
        "bad_values": sink.bad,
        "cpu_cores": (cpu1 - cpu0) / wall,
        "rss_mb": own_peak_rss_mb(),
        "jitter_p99_ms": float(np.percentile(lateness, 99) * 1000) if len(lateness) else 0.0,
        "jitter_max_ms": float(lateness.max() * 1000) if len(lateness) else 0.0,
        "requests_per_cycle": round((requests1 - requests0) / cycles) if cycles else 0,
        "planned_requests_per_cycle": sum(len(d.plan) for d in modbus),
        "optimal_requests_per_cycle": optimum,
        "missed_cycles": missed,
        "simulator_cpu_cores": (farm1 - farm0) / wall,
        "registers_per_device": sum(r.count for r in modbus[0].plan),
    }


async def _measure_pymodbus(
    config: GatewayConfig, duration: float, interval: float
) -> dict[str, float]:
    """The baseline: pymodbus' client executing the same planned reads on the same schedule."""
    from pymodbus.client import AsyncModbusTcpClient

    table = TagTable((d.name, d.tags) for d in config.devices)
    metrics = Metrics()
    values = 0

    async def poll_device(device: ModbusTcpDevice, end: float) -> None:
        nonlocal values
        plan = ModbusDriver(device, table, metrics).plan
        decoder = GroupDecoder(plan, device.word_order)
        client = AsyncModbusTcpClient(
            device.host, port=device.port, timeout=device.timeout, retries=0, reconnect_delay=0
        )
        await client.connect()
        next_at = time.monotonic()
        try:
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                registers, bits = [], []
                for read in plan:
                    if read.table.value == "holding":
                        answer = await client.read_holding_registers(read.start, count=read.count)
                    elif read.table.value == "input":
                        answer = await client.read_input_registers(read.start, count=read.count)
                    elif read.table.value == "coil":
                        answer = await client.read_coils(read.start, count=read.count)
                    else:
                        answer = await client.read_discrete_inputs(read.start, count=read.count)
                    if read.table.is_bits:
                        bits.append(np.asarray(answer.bits[: read.count], np.bool_))
                    else:
                        registers.append(np.asarray(answer.registers, np.uint16))
                decoded = decoder.decode(np.concatenate(registers), np.concatenate(bits))
                values += len(decoded.values)
        finally:
            client.close()

    cpu0, wall0 = own_cpu_seconds(), time.monotonic()
    end = wall0 + duration
    devices = [d for d in config.devices if isinstance(d, ModbusTcpDevice)]
    await asyncio.gather(*(poll_device(d, end) for d in devices))
    wall = time.monotonic() - wall0
    return {"values_per_s": values / wall, "cpu_cores": (own_cpu_seconds() - cpu0) / wall}


def run(options: dict[str, str]) -> Result:
    devices = int(options.get("devices", 10))
    tags = int(options.get("tags", 1000))
    interval = float(options.get("interval", 0.1))
    duration = float(options.get("duration", 20))
    warmup = float(options.get("warmup", 3))
    baseline = float(options.get("baseline", 10))
    window = int(options.get("window", 1))
    farm, ports = _start_farm(devices)
    try:
        config = _config(ports, tags, interval, window)
        print(
            f"modbus: {devices} devices × {tags} tags (mixed types) every {interval * 1000:g} ms "
            f"for {duration:g} s, simulator in process {farm.pid}"
        )
        ours = asyncio.run(_measure_gateway(config, warmup, duration, farm.pid))
        print(
            f"  gateway driver  : {ours['values_per_s']:12,.0f} values/s  "
            f"{ours['cpu_cores']:.3f} cores  peak RSS {ours['rss_mb']:.0f} MB  "
            f"jitter p99 {ours['jitter_p99_ms']:.1f} ms (max {ours['jitter_max_ms']:.1f})"
        )
        print(
            f"  requests/cycle  : {ours['requests_per_cycle']} sent, "
            f"{ours['planned_requests_per_cycle']} planned, "
            f"{ours['optimal_requests_per_cycle']} minimum "
            f"({ours['registers_per_device']} registers and bits per device); "
            f"missed cycles {ours['missed_cycles']}, bad values {ours['bad_values']}"
        )
        print(f"  simulator       : {ours['simulator_cpu_cores']:.3f} cores (separate process)")
        result: Result = {
            "tags": devices * tags,
            "values_per_s": round(ours["values_per_s"]),
            "cpu_cores": round(ours["cpu_cores"], 3),
            "rss_mb": round(ours["rss_mb"], 1),
            "jitter_p99_ms": round(ours["jitter_p99_ms"], 2),
            "requests_per_cycle": ours["requests_per_cycle"],
            "optimal_requests_per_cycle": ours["optimal_requests_per_cycle"],
            "simulator_cpu_cores": round(ours["simulator_cpu_cores"], 3),
        }
        if baseline > 0:
            base = asyncio.run(_measure_pymodbus(config, baseline, interval))
            ratio = base["cpu_cores"] / max(ours["cpu_cores"], 1e-9)
            print(
                f"  pymodbus client : {base['values_per_s']:12,.0f} values/s  "
                f"{base['cpu_cores']:.3f} cores  (same reads; {ratio:.1f}× the CPU)"
            )
            result["pymodbus_client_cpu_cores"] = round(base["cpu_cores"], 3)
            result["pymodbus_client_values_per_s"] = round(base["values_per_s"])
        return result
    finally:
        stop_child(farm)
