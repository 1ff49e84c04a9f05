"""``bench opcua``: 10,000 subscribed OPC UA variables changing once per second.

A node-opcua server runs in its own process (``tests/peers/node/opcua_server.js``, Node.js) with
``items`` Double variables, each changing once per second. Each client runs in a process of its
own, subscribes to all of them and is measured for ``seconds`` after a warm-up: notifications per
second, CPU (user + system CPU-seconds of the process / wall seconds, which other load on the
machine barely changes), peak RSS, and for the gateway the latency from each value's source
timestamp to the moment its batch was handed to the pipeline.

* ``gateway``: the real :class:`~gateway.runtime.app.Gateway` (OPC UA driver, pipeline with
  change detection and last values) built from a config with one tag per variable.
* baselines, in the same run: a bare asyncua client that only counts, once with asyncua's
  Subscription and a data-change handler (what most asyncua programs do) and once with a raw
  publish callback that counts the decoded notifications (the floor of decoding with asyncua).

Options: ``items=10000 seconds=40 warmup=4 publishing=0.5 baselines=1``.
"""

from __future__ import annotations

__all__ = ["run"]

import asyncio
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.bench import Result
from gateway.bench.process import own_peak_rss_mb

_NODE_DIR = Path(__file__).resolve().parents[2] / "tests" / "peers" / "node"
_NAMESPACE = "urn:edge-gateway:test"


def run(options: dict[str, str]) -> Result:
    items = int(options.get("items", 10_000))
    seconds = float(options.get("seconds", 40))  # the rate is known to about 1 %
    warmup = float(options.get("warmup", 4))
    publishing = float(options.get("publishing", 0.5))
    baselines = options.get("baselines", "1") not in ("0", "false", "no")
    node = shutil.which("node")
    if node is None or not (_NODE_DIR / "node_modules" / "node-opcua").is_dir():
        raise SystemExit(
            "bench opcua needs Node.js and node-opcua in tests/peers/node "
            "(run tests/peers/install.sh)"
        )
    print(
        f"opcua: node-opcua server with {items:,} Doubles changing once per second; each client "
        f"in its own process, measured for {seconds:.0f} s after {warmup:.0f} s of warm-up"
    )
    server, port = _start_server(node, items)
    try:
        runs: dict[str, dict[str, Any]] = {}
        clients = ["gateway"] + (["asyncua-handler", "asyncua-raw"] if baselines else [])
        for client in clients:
            runs[client] = _run_child(client, port, items, seconds, warmup, publishing)
            _print(client, runs[client], items)
            if server.poll() is not None:
                raise SystemExit("the node-opcua server died during the benchmark")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    gateway = runs["gateway"]
    for name, figures in runs.items():
        if name == "gateway":
            continue
        print(
            f"  gateway vs {name}: {gateway['cpu_cores'] / figures['cpu_cores']:.2f}× the CPU, "
            f"{gateway['rss_mb'] / figures['rss_mb']:.2f}× the memory"
        )
    result: Result = {
        "monitored_items": items,
        "notifications_per_s": round(gateway["notifications_per_s"], 1),
        "cpu_cores": round(gateway["cpu_cores"], 3),
        "rss_mb": round(gateway["rss_mb"], 1),
        "latency_p99_ms": round(gateway["latency_p99_ms"], 1),
    }
    for name, figures in runs.items():
        if name != "gateway":
            key = name.replace("-", "_")
            result[f"{key}_cpu_cores"] = round(figures["cpu_cores"], 3)
            result[f"{key}_rss_mb"] = round(figures["rss_mb"], 1)
    return result


def _start_server(node: str, items: int) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [node, "opcua_server.js", json.dumps({"bench": items})],
        cwd=_NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("@@ "):
            info = json.loads(line[3:])
            # keep reading node's stdout so that it never blocks on a full pipe
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, int(info["port"])
    process.kill()
    raise SystemExit("the node-opcua server did not start")


def _run_child(
    client: str, port: int, items: int, seconds: float, warmup: float, publishing: float
) -> dict[str, Any]:
    arguments = json.dumps(
        {
            "client": client,
            "port": port,
            "items": items,
            "seconds": seconds,
            "warmup": warmup,
            "publishing": publishing,
        }
    )
    completed = subprocess.run(
        [sys.executable, "-m", "gateway.bench.opcua", arguments],
        capture_output=True,
        text=True,
        timeout=warmup + seconds + 180,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise SystemExit(f"bench client {client} failed:\n{completed.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def _print(name: str, figures: dict[str, Any], items: int) -> None:
    latency = (
        f"  latency p50 {figures['latency_p50_ms']:4.0f} ms, p99 "
        f"{figures['latency_p99_ms']:4.0f} ms"
        if "latency_p99_ms" in figures
        else ""
    )
    print(
        f"  {name:16} {figures['notifications_per_s']:9,.0f} notifications/s "
        f"({figures['notifications_per_s'] / items:5.1%} of {items:,}/s)  "
        f"{figures['cpu_cores']:5.3f} cores  {figures['rss_mb']:6.1f} MB peak RSS{latency}"
    )


# --- the measured clients (each runs in its own process) -------------------------------------


class _Window:
    """Counts notifications between two publish arrivals, so the rate has no rounding error
    from a window that cuts a publish in two: it opens at the first arrival after the warm-up
    (not counted) and closes at the first arrival after `seconds` (counted)."""

    def __init__(self, seconds: float) -> None:
        self.opens_at = math.inf
        self.seconds = seconds
        self.count = 0
        self.counting = False
        self.started = 0.0
        self.ended = 0.0
        self.cpu_started = 0.0
        self.cpu_ended = 0.0
        self.done = asyncio.Event()

    @staticmethod
    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def arrived(self, notifications: int) -> bool:
        """Note a publish of `notifications`; True while it falls inside the window."""
        now = time.monotonic()
        if self.done.is_set():
            return False
        if not self.counting:
            if now >= self.opens_at:
                self.counting = True
                self.started, self.cpu_started = now, self.cpu()
            return False
        self.count += notifications
        if now - self.started >= self.seconds:
            self.ended, self.cpu_ended = now, self.cpu()
            self.done.set()
        return True

    async def figures(self, warmup: float) -> dict[str, float]:
        """Open the window after `warmup` seconds; the figures once it closed."""
        self.opens_at = time.monotonic() + warmup
        await asyncio.wait_for(self.done.wait(), warmup + self.seconds * 3)
        wall = self.ended - self.started
        return {
            "notifications_per_s": self.count / wall,
            "cpu_cores": (self.cpu_ended - self.cpu_started) / wall,
            "rss_mb": own_peak_rss_mb(),
            "seconds": wall,
        }


async def _gateway_client(args: dict[str, Any]) -> dict[str, float]:
    import logging

    from gateway.batch import SampleBatch, now_ns
    from gateway.config.model import GatewayConfig
    from gateway.runtime.app import Gateway

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    items = int(args["items"])
    with tempfile.TemporaryDirectory() as data_dir:
        config = GatewayConfig.model_validate(
            {
                "gateway": {
                    "id": "bench",
                    "location": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
                    "data_dir": data_dir,
                },
                "devices": [
                    {
                        "name": "bench",
                        "protocol": "opcua",
                        "endpoint": f"opc.tcp://127.0.0.1:{args['port']}/",
                        "namespaces": {"b": _NAMESPACE},
                        "publishing_interval": args["publishing"],
                        "sampling_interval": 0,
                        "queue_size": 1,
                        "tags": [
                            {"name": f"V{i}", "node": f"nsu=b;s=Bench.V{i}"} for i in range(items)
                        ],
                    }
                ],
            }
        )
        gateway = Gateway(config)
        window = _Window(float(args["seconds"]))
        latencies: list[np.ndarray] = []
        forward = gateway.pipeline.sink

        def sink(batch: SampleBatch) -> None:
            if window.arrived(len(batch)):
                latencies.append((now_ns() - batch.timestamps) / 1e6)
            forward(batch)

        gateway.pipeline.sink = sink  # type: ignore[method-assign]
        await gateway.start()
        try:
            figures = await window.figures(float(args["warmup"]))
        finally:
            await gateway.stop()
    every = np.concatenate(latencies) if latencies else np.zeros(1)
    figures["latency_p50_ms"] = float(np.percentile(every, 50))
    figures["latency_p99_ms"] = float(np.percentile(every, 99))
    return figures


async def _asyncua_client(args: dict[str, Any], raw: bool) -> dict[str, float]:
    from asyncua import ua
    from asyncua.client.client import Client

    window = _Window(float(args["seconds"]))
    client = Client(f"opc.tcp://127.0.0.1:{args['port']}/", timeout=10)
    await client.connect()
    namespace = (await client.get_namespace_array()).index(_NAMESPACE)
    nodes = [
        ua.NodeId(f"Bench.V{i}", namespace)  # type: ignore[arg-type]
        for i in range(int(args["items"]))
    ]
    publishing_ms = float(args["publishing"]) * 1000
    if raw:

        def count(result: ua.PublishResult) -> None:
            window.arrived(
                sum(
                    len(data.MonitoredItems)
                    for data in result.NotificationMessage.NotificationData
                    if isinstance(data, ua.DataChangeNotification)
                )
            )

        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms,
            RequestedLifetimeCount=1000,
            RequestedMaxKeepAliveCount=20,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        created = await client.uaclient.create_subscription(params, count)
        requests = []
        for handle, node in enumerate(nodes):
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = ua.ReadValueId(NodeId=node, AttributeId=13)
            request.MonitoringMode = ua.MonitoringMode.Reporting
            request.RequestedParameters = ua.MonitoringParameters(
                ClientHandle=handle,
                SamplingInterval=0,
                QueueSize=1,
                DiscardOldest=True,
            )
            requests.append(request)
        for start in range(0, len(requests), 1000):
            await client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=created.SubscriptionId,
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                    ItemsToCreate=requests[start : start + 1000],
                )
            )
    else:

        class Handler:
            def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
                window.arrived(1)

        subscription = await client.create_subscription(publishing_ms, Handler())
        subscribe: Any = subscription.subscribe_data_change
        await subscribe([client.get_node(n) for n in nodes], sampling_interval=0, queuesize=1)
    try:
        return await window.figures(float(args["warmup"]))
    finally:
        await client.disconnect()


def _child(arguments: str) -> None:
    args = json.loads(arguments)
    client = args["client"]
    if client == "gateway":
        figures = asyncio.run(_gateway_client(args))
    else:
        figures = asyncio.run(_asyncua_client(args, raw=client == "asyncua-raw"))
    print(json.dumps(figures), flush=True)
    os._exit(0)  # skip interpreter teardown: the figures are out


if __name__ == "__main__":
    _child(sys.argv[1])
