"""The demo: simulators, a broker and the gateway, an accelerated scenario with an ERP outage,
a live progress view, and at the end a check of everything received against the plant's truth.

The last line printed is one JSON object (see :meth:`Verdict.summary`); the exit code is 0 only
when nothing was lost or duplicated and every count is above zero.
"""

from __future__ import annotations

__all__ = ["demo_environment", "run_demo"]

import asyncio
import json
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.api.server import ApiServer
from gateway.config.load import load_config
from gateway.demo.broker import LocalBroker
from gateway.demo.verify import Verdict, verify
from gateway.outputs.mqtt_client import AsyncMqttClient, MqttSettings
from gateway.runtime.app import Gateway

ERP_OUTAGE_AT_S = 12.0
ERP_OUTAGE_S = 8.0
PRODUCTION_TIMEOUT_S = 70.0
DRAIN_TIMEOUT_S = 30.0
_HTTP = aiohttp.ClientTimeout(total=5)


def demo_environment(ports: dict[str, Any], broker: LocalBroker, data_dir: Path) -> dict[str, str]:
    """The ``${DEMO_...}`` values that ``demo.yaml`` takes, from the simulators' ports (the
    ``ports()`` of :class:`simulators.stack.SimulatorStack`) and the broker."""
    return {
        "DEMO_DATA_DIR": str(data_dir),
        "DEMO_MODBUS_PORT": str(ports["modbus"]["port"]),
        "DEMO_OPCUA_PORT": ports["opcua"]["endpoint"].rsplit(":", 1)[1].strip("/"),
        "DEMO_MQTT_PORT": str(broker.port),
        "DEMO_MQTT_VERSION": broker.mqtt_version,
        "DEMO_ERP_URL": ports["erp"]["url"].rstrip("/"),
        "DEMO_WMS_URL": ports["wms"]["url"].rstrip("/"),
        "DEMO_QMS_URL": ports["qms"]["url"].rstrip("/"),
    }


def run_demo(
    *,
    forever: bool = False,
    speed: float = 60.0,
    seed: int = 1,
    keep_dir: str | None = None,
    quiet: bool = False,
) -> int:
    """Run the demo; returns the exit code."""
    return asyncio.run(_Demo(forever, speed, seed, keep_dir, quiet).run())


class _Subscriber:
    """Counts every MQTT message and keeps the completion events."""

    def __init__(self, port: int, version: str) -> None:
        self.messages = 0
        self.completions: list[dict[str, Any]] = []
        self.client = AsyncMqttClient(
            MqttSettings("127.0.0.1", port, "demo-subscriber", mqtt_version=version),
            "demo-subscriber",
            self._on_message,
        )

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.messages += 1
        if topic.endswith("/mes/completion"):
            self.completions.append(orjson.loads(payload))


class _Demo:
    def __init__(
        self, forever: bool, speed: float, seed: int, keep_dir: str | None, quiet: bool
    ) -> None:
        self.forever = forever
        self.speed = speed
        self.seed = seed
        self.keep_dir = keep_dir
        self.live = not quiet and sys.stdout.isatty()
        self.quiet = quiet
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        if self.live:
            print("\r\033[K", end="")
        print(text, flush=True)

    async def run(self) -> int:
        with tempfile.TemporaryDirectory(prefix="edge-gw-demo-") as tmp:
            data_dir = Path(self.keep_dir) if self.keep_dir else Path(tmp) / "data"
            async with LocalBroker() as broker:
                self.say(
                    f"MQTT broker: {broker.kind} on 127.0.0.1:{broker.port} "
                    f"(MQTT {broker.mqtt_version})"
                )
                simulators = await self._start_simulators(Path(tmp))
                try:
                    return await self._with_simulators(broker, simulators, data_dir)
                finally:
                    await self._stop(simulators)

    async def _start_simulators(
        self, tmp: Path
    ) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
        ports_file = tmp / "ports.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulators",
            "simulate",
            "all",
            "--ports-file",
            str(ports_file),
            "--speed",
            str(self.speed),
            "--seed",
            str(self.seed),
            "--paused",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not ports_file.exists():
            if process.returncode is not None or time.monotonic() > deadline:
                error = b""
                if process.stderr is not None and process.returncode is not None:
                    error = await process.stderr.read()
                raise RuntimeError(f"simulators did not start: {error.decode()[-2000:]}")
            await asyncio.sleep(0.1)
        ports = json.loads(ports_file.read_text())
        self.say(
            f"simulators: Modbus TCP :{ports['modbus']['port']}, OPC UA "
            f"{ports['opcua']['endpoint']}, ERP {ports['erp']['url']}, WMS "
            f"{ports['wms']['url']}, QMS {ports['qms']['url']}"
        )
        return process, ports

    async def _stop(self, simulators: tuple[asyncio.subprocess.Process, dict[str, Any]]) -> None:
        process = simulators[0]
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def _with_simulators(
        self,
        broker: LocalBroker,
        simulators: tuple[asyncio.subprocess.Process, dict[str, Any]],
        data_dir: Path,
    ) -> int:
        ports = simulators[1]
        os.environ.update(demo_environment(ports, broker, data_dir))
        config_path = resources.files("gateway.demo").joinpath("demo.yaml")
        with resources.as_file(config_path) as path:
            config = load_config(path)
        gateway = Gateway(config)
        api = ApiServer(gateway)
        subscriber = _Subscriber(broker.port, broker.mqtt_version)
        await subscriber.client.connect()
        subscriber.client.subscribe(f"{config.gateway.location.path}/#", 1)
        async with aiohttp.ClientSession(timeout=_HTTP) as http:
            await gateway.start()
            await api.start()
            self.say(
                f"gateway {config.gateway.id}: {len(gateway.table)} tags on "
                f"{len(gateway.drivers)} devices; API http://127.0.0.1:{api.port}/status"
            )
            try:
                await self._wait_connected(gateway)
                await self._post(http, f"{ports['plant_control']}/_control/start", {})
                self.started = time.monotonic()
                self.say(
                    "scenario started: 3 machines, 3 orders each, 2 lots per order; "
                    f"ERP goes down at {ERP_OUTAGE_AT_S:.0f} s for {ERP_OUTAGE_S:.0f} s"
                )
                await self._produce(http, ports, gateway, subscriber)
                if self.forever:
                    self.say("--forever: everything keeps running; Ctrl-C to stop")
                    await asyncio.Event().wait()
                await self._drain(http, ports, gateway, subscriber)
            finally:
                await gateway.stop()
                await api.stop()
            verdict = await self._verify(http, ports, subscriber)
        await subscriber.client.close()
        self._report(verdict)
        return 0 if verdict.ok else 1

    async def _wait_connected(self, gateway: Gateway) -> None:
        """Until every device delivered a good first value (or 30 s)."""
        deadline = time.monotonic() + 30
        last = gateway.pipeline.last_values
        while time.monotonic() < deadline:
            if all(
                (last.quality[d.tag_indices] >> 14 == 0).all()  # type: ignore[attr-defined]
                for d in gateway.drivers
            ):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"devices did not connect: {gateway.supervisor.status()}")

    async def _produce(
        self,
        http: aiohttp.ClientSession,
        ports: dict[str, Any],
        gateway: Gateway,
        subscriber: _Subscriber,
    ) -> None:
        outage_done = False
        deadline = time.monotonic() + PRODUCTION_TIMEOUT_S
        while time.monotonic() < deadline:
            elapsed = time.monotonic() - self.started
            if not outage_done and elapsed >= ERP_OUTAGE_AT_S:
                await self._post(
                    http,
                    f"{ports['erp']['control_url']}/_control/faults",
                    {"down_for_s": ERP_OUTAGE_S},
                )
                outage_done = True
                self.say(
                    f"{elapsed:5.1f} s  ERP is down for {ERP_OUTAGE_S:.0f} s "
                    "(completions wait in the outbox)"
                )
            truth = await self._get(http, f"{ports['plant_control']}/_control/truth")
            await self._progress(http, ports, gateway, subscriber, truth)
            if truth.get("finished") and not self.forever:
                self.say(f"{elapsed:5.1f} s  production finished")
                return
            await asyncio.sleep(0.5)
        raise RuntimeError("the scenario did not finish in time")

    async def _drain(
        self,
        http: aiohttp.ClientSession,
        ports: dict[str, Any],
        gateway: Gateway,
        subscriber: _Subscriber,
    ) -> None:
        """Until every document is delivered and nothing new came for 2 s."""
        assert gateway.outbox is not None
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        quiet_since, last_total = time.monotonic(), -1
        while time.monotonic() < deadline:
            counts = await gateway.outbox.counts()
            pending = sum(c.get("pending", 0) for c in counts.values())
            total = sum(sum(c.values()) for c in counts.values())
            if total != last_total or pending:
                quiet_since, last_total = time.monotonic(), total
            elif time.monotonic() - quiet_since > 2.0:
                return
            truth = await self._get(http, f"{ports['plant_control']}/_control/truth")
            await self._progress(http, ports, gateway, subscriber, truth)
            await asyncio.sleep(0.25)
        self.say("warning: the outbox did not drain in time")

    async def _progress(
        self,
        http: aiohttp.ClientSession,
        ports: dict[str, Any],
        gateway: Gateway,
        subscriber: _Subscriber,
        truth: dict[str, Any],
    ) -> None:
        made = sum(int(s["good"]) + int(s["scrap"]) for s in _segments(truth))
        booked = {}
        for system in ("erp", "wms", "qms"):
            stats = await self._get(http, f"{ports[system]['control_url']}/_control/stats")
            booked[system] = stats.get("booked", 0)
        backlog = 0
        if gateway.outbox is not None:
            counts = await gateway.outbox.counts()
            backlog = sum(c.get("pending", 0) for c in counts.values())
        line = (
            f"{time.monotonic() - self.started:5.1f} s  parts made {made:5d} | booked: ERP "
            f"{booked['erp']:3d}  WMS {booked['wms']:3d}  QMS {booked['qms']:3d} | outbox "
            f"backlog {backlog:3d} | MQTT messages {subscriber.messages:6d}"
        )
        if self.live:
            print("\r\033[K" + line, end="", flush=True)
        elif not self.quiet and int((time.monotonic() - self.started) * 2) % 10 == 0:
            print(line, flush=True)

    async def _verify(
        self, http: aiohttp.ClientSession, ports: dict[str, Any], subscriber: _Subscriber
    ) -> Verdict:
        truth = await self._get(http, f"{ports['plant_control']}/_control/truth")
        erp = await self._ledger(http, ports["erp"]["url"], "confirmations")
        wms = await self._ledger(http, ports["wms"]["url"], "goods-receipts")
        qms = await self._ledger(http, ports["qms"]["url"], "inspection-results")
        return verify(_segments(truth), erp, wms, qms, subscriber.completions, subscriber.messages)

    async def _ledger(
        self, http: aiohttp.ClientSession, url: str, name: str
    ) -> list[dict[str, Any]]:
        body = await self._get(http, f"{url.rstrip('/')}/api/v1/{name}")
        items = body.get("items", body) if isinstance(body, dict) else body
        return [item.get("document", item) for item in items]

    def _report(self, verdict: Verdict) -> None:
        if self.live:
            print()
        summary = verdict.summary()
        print(
            f"\nThe plant made {verdict.parts_made} parts in {summary['orders_completed']} orders."
        )
        print(
            f"  ERP booked {summary['erp_confirmations']} confirmations, WMS "
            f"{summary['wms_receipts']} goods receipts, QMS {summary['qms_results']} "
            f"inspection results; an MQTT subscriber received {summary['mqtt_messages']} "
            "messages."
        )
        if verdict.ok:
            print(
                "  Everything the plant made was booked exactly once: "
                "nothing lost, nothing duplicated."
            )
        else:
            print(f"  PROBLEMS: {verdict.lost} lost, {verdict.duplicated} duplicated")
            for problem in verdict.problems[:20]:
                print(f"    {problem}")
        print(json.dumps(summary))

    @staticmethod
    async def _get(http: aiohttp.ClientSession, url: str) -> Any:
        async with http.get(url) as response:
            response.raise_for_status()
            return await response.json()

    @staticmethod
    async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
        async with http.post(url, json=body) as response:
            if response.status >= 300:
                raise RuntimeError(f"POST {url}: HTTP {response.status}: {await response.text()}")


def _segments(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat list of segments, each with its machine name."""
    segments = []
    for machine, entry in truth.get("machines", {}).items():
        listed = entry.get("segments", entry) if isinstance(entry, dict) else entry
        for segment in listed:
            segments.append({"machine": machine, **segment})
    return segments
