"""Fixtures of the OPC UA driver tests: the node-opcua server (tests/peers/node/opcua_server.js)
started on a free port and stopped by pid, and drivers built from config as the gateway builds
them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.opcua.driver import OpcUaDriver
from gateway.batch import SampleBatch
from gateway.config.model import GatewayConfig
from gateway.metrics import Metrics
from gateway.quality import describe
from gateway.runtime.registry import DRIVERS, BuildContext
from gateway.tags import TagTable
from tests.peers import require_node_module

NAMESPACE = "urn:edge-gateway:test"


class NodeOpcUa:
    """The node-opcua test server; `command` talks to it over stdin/stdout."""

    def __init__(self, folder: str, options: dict[str, Any]) -> None:
        self.folder = folder
        self.options = dict(options)
        self.port = 0
        self.index = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    async def start(self, **changes: Any) -> None:
        self.options.update(changes)
        if self.port:
            self.options["port"] = self.port  # a restart listens on the same port
        self._process = await asyncio.create_subprocess_exec(
            "node",
            "opcua_server.js",
            json.dumps(self.options),
            cwd=self.folder,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        ready = await asyncio.wait_for(self._reply(), 30)
        self.port, self.index = int(ready["port"]), int(ready["index"])

    async def _reply(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        while True:
            line = await self._process.stdout.readline()
            if not line:
                raise RuntimeError("the node-opcua server exited")
            if line.startswith(b"@@ "):
                answer: dict[str, Any] = json.loads(line[3:])
                return answer

    async def command(self, **command: Any) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()
        return await asyncio.wait_for(self._reply(), 10)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, 9)
        await process.wait()


@pytest.fixture
async def node_server() -> AsyncIterator[Callable[..., Awaitable[NodeOpcUa]]]:
    """Start node-opcua servers with options; every one is stopped at the end."""
    folder = require_node_module("node-opcua")
    started: list[NodeOpcUa] = []

    async def start(**options: Any) -> NodeOpcUa:
        server = NodeOpcUa(folder, options)
        started.append(server)
        await server.start()
        return server

    yield start
    for server in started:
        await server.stop()


@dataclass
class Running:
    """A driver built from config, running with a sink that keeps every batch."""

    config: GatewayConfig
    table: TagTable
    driver: OpcUaDriver
    batches: list[SampleBatch] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def sink(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def numbers(self, tag: str) -> list[float]:
        """The numeric values of one tag's samples, in order."""
        return [float(v) for v, _, _ in self.history(tag) if isinstance(v, float)]

    def info(self, tag: str) -> Any:
        return self.table[self.table.index(f"{self.driver.name}/{tag}")]

    def latest(self) -> dict[str, object]:
        """Tag name → its latest value (or "bad: reason" / "uncertain: reason")."""
        out: dict[str, object] = {}
        for batch in self.batches:
            for row in range(len(batch)):
                name = self.table[int(batch.tags[row])].name
                code = int(batch.quality[row])
                out[name] = batch.value_of(row) if code == 0 else describe(code)
        return out

    def history(self, tag: str) -> list[tuple[object, str, int]]:
        """Every sample of one tag: (value, quality, timestamp ns)."""
        index = self.table.index(f"{self.driver.name}/{tag}")
        return [
            (batch.value_of(row), describe(int(batch.quality[row])), int(batch.timestamps[row]))
            for batch in self.batches
            for row in range(len(batch))
            if int(batch.tags[row]) == index
        ]

    async def wait_for(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            if self.task is not None and self.task.done():
                self.task.result()  # raise what ended the driver
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; latest values: {self.latest()}")
            await asyncio.sleep(0.05)


def build(device: dict[str, Any], data_dir: Path) -> Running:
    """An OPC UA driver from one device section, through the registry like the gateway."""
    config = GatewayConfig.model_validate(
        {
            "gateway": {
                "id": "test",
                "location": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
                "data_dir": str(data_dir),
            },
            "devices": [{"protocol": "opcua", "name": "P", "timeout": 3, **device}],
        }
    )
    table = TagTable((d.name, d.tags) for d in config.devices)
    driver = DRIVERS["opcua"](config.devices[0], BuildContext(config, table, Metrics()))
    assert isinstance(driver, OpcUaDriver)
    return Running(config, table, driver)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Connect and run drivers built from device sections; stopped and closed at the end."""
    started: list[Running] = []

    async def start(device: dict[str, Any]) -> Running:
        run = build(device, tmp_path)
        started.append(run)
        await run.driver.connect()
        run.task = asyncio.create_task(run.driver.run(run.sink))
        return run

    yield start
    for run in started:
        if run.task is not None:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task
        await run.driver.close()
