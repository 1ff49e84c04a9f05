"""``bench e2e``: the workload the peers were measured on, end to end.

10 Modbus TCP devices with 1,000 holding registers each, every value changing every 100 ms
(the bundled ``simulators.modbus_farm``, in its own process), all 10,000 registers polled as
uint16 tags by the gateway's real ``edge-gateway run`` process, published with the batched
payload mode (QoS 1) into a real Mosquitto, and a subscriber in a third process counting the
values inside the payloads. Per poll period (100 ms and 1 s): a warm-up, then a measured window:
values/s delivered, the gateway process's CPU in cores (user + system seconds over the window
divided by its wall time), its peak RSS, the data age p95 (receipt time minus the payload's
source timestamp) and Modbus requests/s (counted by the simulator). The gateway runs without
its HTTP API, as in ``deploy/high-rate.yaml``.

Options: ``periods=0.1,1`` ``warmup=15`` ``window=60`` ``devices=10`` ``registers=1000``.
"""

from __future__ import annotations

__all__ = ["run", "write_config"]

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from gateway.bench import Result
from gateway.bench.process import cpu_seconds, peak_rss_mb, start_child, stop_child
from gateway.demo.broker import LocalBroker

PEERS = {  # measured here on the same workload (issue 6)
    "Node-RED 4.1 + node-red-contrib-modbus, 100 ms": "99,700 values/s, 0.36-0.41 cores, 189 MB",
    "thingsboard-gateway 3.8.5, 125-register reads, 100 ms": "43,300 values/s, 0.84 cores",
}


def write_config(
    path: Path,
    *,
    ports: list[int],
    registers: int,
    period: float,
    mqtt_port: int,
    data_dir: Path,
) -> None:
    """The gateway config of the benchmark (the same settings as deploy/high-rate.yaml)."""
    tags = "\n".join(
        f"      - {{name: r{i}, address: {i}, type: uint16}}" for i in range(registers)
    )
    devices = []
    for k, port in enumerate(ports):
        tag_list = f"&registers\n{tags}" if k == 0 else "*registers"
        devices.append(
            f"  - name: plc{k + 1}\n    protocol: modbus_tcp\n    host: 127.0.0.1\n"
            f"    port: {port}\n    unit: 1\n    timeout: 1.0\n"
            f"    poll_groups: [{{name: default, interval: {period}}}]\n"
            f"    tags: {tag_list}"
        )
    path.write_text(
        "gateway:\n  id: bench-e2e\n"
        "  location: {enterprise: bench, site: s, area: a, line: l}\n"
        f"  data_dir: {data_dir}\n  log_level: warning\n"
        "devices:\n" + "\n".join(devices) + "\n"
        "outputs:\n"
        f"  - {{type: mqtt, name: batches, port: {mqtt_port}, payload: batched, qos: 1,\n"
        "     topic_root: bench, status: false, events: false}\n"
    )


def run(options: dict[str, str]) -> Result:
    periods = [float(p) for p in options.get("periods", "0.1,1").split(",")]
    warmup = float(options.get("warmup", 15))
    window = float(options.get("window", 60))
    devices = int(options.get("devices", 10))
    registers = int(options.get("registers", 1000))
    if shutil.which("mosquitto", path="/usr/sbin:/usr/bin:/usr/local/sbin") is None:
        raise SystemExit("bench e2e needs Mosquitto (Debian package mosquitto)")
    print(
        f"e2e: {devices} Modbus TCP devices × {registers} uint16 registers, every value "
        f"changing every 100 ms → edge-gateway run (batched MQTT, QoS 1) → Mosquitto → "
        f"subscriber; warm-up {warmup:.0f} s, window {window:.0f} s"
    )
    figures = {}
    for period in periods:
        figures[period] = asyncio.run(_measure(period, warmup, window, devices, registers))
        _print(period, figures[period], devices * registers)
    print("peers measured on this workload:")
    for peer, result in PEERS.items():
        print(f"  {peer}: {result}")
    out: Result = {}
    for period, name in ((0.1, "100ms"), (1.0, "1s")):
        found = figures.get(period)
        if found is None:
            continue
        out[f"values_per_s_{name}"] = round(found["values_per_s"])
        out[f"cpu_cores_{name}"] = round(found["cpu_cores"], 4)
        out[f"rss_mb_{name}"] = round(found["rss_mb"], 1)
        if name == "100ms":
            out["age_p95_ms_100ms"] = round(found["age_p95_ms"], 1)
    return out


def _print(period: float, f: dict[str, float], tags: int) -> None:
    expected = tags / period
    print(
        f"  poll {period * 1000:5.0f} ms: {f['values_per_s']:9,.0f} values/s delivered "
        f"({f['values_per_s'] / expected:6.1%} of {expected:,.0f}), gateway CPU "
        f"{f['cpu_cores']:.3f} cores, peak RSS {f['rss_mb']:.1f} MB, data age p50 "
        f"{f['age_p50_ms']:.0f} ms p95 {f['age_p95_ms']:.0f} ms, "
        f"{f['requests_per_s']:,.0f} Modbus requests/s, {f['messages_per_s']:.0f} messages/s"
    )


async def _measure(
    period: float, warmup: float, window: float, devices: int, registers: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="edge-gw-e2e-") as tmp:
        farm = start_child(
            "-m",
            "simulators.modbus_farm",
            "--devices",
            str(devices),
            "--all-change",
            "--span",
            str(registers),
            "--update-interval",
            "0.1",
        )
        gateway: subprocess.Popen[str] | None = None
        subscriber: subprocess.Popen[str] | None = None
        try:
            assert farm.stdout is not None
            ports = [int(p) for p in json.loads(farm.stdout.readline())["ports"]]
            async with LocalBroker(prefer="mosquitto") as broker:
                config = Path(tmp) / "e2e.yaml"
                write_config(
                    config,
                    ports=ports,
                    registers=registers,
                    period=period,
                    mqtt_port=broker.port,
                    data_dir=Path(tmp) / "data",
                )
                gateway = start_child("-m", "gateway.cli.main", "run", "--config", str(config))
                await _until_polling(farm, gateway)
                subscriber = start_child(
                    "-m",
                    "gateway.bench.e2e_subscriber",
                    str(broker.port),
                    "bench/+/batch",
                    str(warmup),
                    str(window),
                )
                await asyncio.sleep(warmup)
                cpu0, wall0 = cpu_seconds(gateway.pid), time.monotonic()
                requests0 = _requests(farm)
                await asyncio.sleep(window)
                cpu1, wall1 = cpu_seconds(gateway.pid), time.monotonic()
                requests1 = _requests(farm)
                rss = peak_rss_mb(gateway.pid)
                out, _ = await asyncio.to_thread(subscriber.communicate, timeout=30)
                received = json.loads(out.strip().splitlines()[-1])
                stop_child(gateway)
                if gateway.returncode != 0:
                    _, err = gateway.communicate()
                    raise RuntimeError(f"the gateway exited with {gateway.returncode}: {err}")
        finally:
            for child in (subscriber, gateway, farm):
                if child is not None:
                    stop_child(child)
    elapsed = wall1 - wall0
    return {
        **received,
        "cpu_cores": (cpu1 - cpu0) / elapsed,
        "rss_mb": rss,
        "requests_per_s": (requests1 - requests0) / elapsed,
    }


async def _until_polling(
    farm: subprocess.Popen[str], gateway: subprocess.Popen[str], timeout: float = 60.0
) -> None:
    """Until the simulator sees the gateway's requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            _, err = gateway.communicate()
            raise RuntimeError(f"the gateway did not start: {err[-3000:]}")
        if _requests(farm) > 0:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not start polling")


def _requests(farm: subprocess.Popen[str]) -> int:
    """Modbus requests the simulator answered so far (it prints them on SIGUSR1)."""
    assert farm.stdout is not None
    farm.send_signal(signal.SIGUSR1)
    count: int = json.loads(farm.stdout.readline())["requests"]
    return count
