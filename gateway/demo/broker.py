"""A local MQTT broker for the demo and the tests: Mosquitto when installed, else amqtt.

The broker runs as a child process on a free loopback port and is stopped by its process id.
"""

from __future__ import annotations

__all__ = ["LocalBroker", "free_port", "wait_for_port"]

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Until something accepts connections on host:port; TimeoutError after `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class LocalBroker:
    """``async with LocalBroker() as broker:`` → ``broker.port``, ``broker.mqtt_version``."""

    def __init__(self, *, prefer: str = "mosquitto", extra_config: str = "") -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.kind = ""
        self.mqtt_version = "5"
        self._prefer = prefer
        self._extra = extra_config
        self._process: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="edge-gw-broker-")

    async def __aenter__(self) -> LocalBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        mosquitto = shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
        for attempt in range(3):
            self.port = free_port()
            if mosquitto and self._prefer == "mosquitto":
                await self._start_mosquitto(mosquitto)
            else:
                await self._start_amqtt()
            try:
                await wait_for_port(self.host, self.port, 10.0)
                return
            except TimeoutError:
                await self.stop()
                if attempt == 2:
                    raise

    async def _start_mosquitto(self, binary: str) -> None:
        self.kind, self.mqtt_version = "mosquitto", "5"
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            f"log_dest stderr\nlog_type error\nmax_queued_messages 100000\n{self._extra}\n"
        )
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def _start_amqtt(self) -> None:
        self.kind, self.mqtt_version = "amqtt", "3.1.1"
        conf = Path(self._dir.name) / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: {self.host}:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        script = "from amqtt.scripts.broker_script import main; main()"
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
