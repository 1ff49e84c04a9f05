"""A local MQTT broker for the demo and the tests: Mosquitto when installed, else amqtt.

The broker runs as a child process on a free loopback port and is stopped by its process id.
"""

from __future__ import annotations

__all__ = ["BrokerTls", "LocalBroker", "free_port", "wait_for_port"]

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """PEM files for a TLS listener (Mosquitto only)."""

    ca_file: str
    cert_file: str
    key_file: str
    require_certificate: bool = False
    """Clients must present a certificate signed by `ca_file` (its CN becomes the username)."""


class LocalBroker:
    """``async with LocalBroker() as broker:`` → ``broker.port``, ``broker.mqtt_version``.

    Options (Mosquitto only): `users` (name → password: anonymous access is then refused),
    `tls` (a TLS listener), `persistence` (keep retained messages and sessions across
    :meth:`restart`). :meth:`restart` stops the broker and starts it again on the same port.
    """

    def __init__(
        self,
        *,
        prefer: str = "mosquitto",
        extra_config: str = "",
        users: Mapping[str, str] | None = None,
        tls: BrokerTls | None = None,
        persistence: bool = False,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.kind = ""
        self.mqtt_version = "5"
        self._prefer = prefer
        self._extra = extra_config
        self._users = dict(users or {})
        self._tls = tls
        self._persistence = persistence
        self._process: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="edge-gw-broker-")
        # Mosquitto started as root reads its files as user mosquitto: let it into the folder
        os.chmod(self._dir.name, 0o755)

    async def __aenter__(self) -> LocalBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, same_port: bool = False) -> None:
        mosquitto = shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
        if (self._users or self._tls or self._persistence) and not mosquitto:
            raise RuntimeError("users, TLS and persistence need Mosquitto (Debian mosquitto)")
        for attempt in range(3):
            if not same_port or not self.port:
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

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop the broker, wait `down_for` seconds, start it again on the same port."""
        await self.stop()
        if down_for:
            await asyncio.sleep(down_for)
        await self.start(same_port=True)

    async def _start_mosquitto(self, binary: str) -> None:
        self.kind, self.mqtt_version = "mosquitto", "5"
        folder = Path(self._dir.name)
        conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} {self.host}"]
        if self._tls is not None:
            lines += [
                f"cafile {self._tls.ca_file}",
                f"certfile {self._tls.cert_file}",
                f"keyfile {self._tls.key_file}",
            ]
            if self._tls.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if self._users:
            passwords = folder / "passwords"
            passwords.write_text("")
            for user, password in self._users.items():
                process = await asyncio.create_subprocess_exec(
                    shutil.which("mosquitto_passwd") or "mosquitto_passwd",
                    "-b",
                    str(passwords),
                    user,
                    password,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                if await process.wait() != 0:
                    raise RuntimeError("mosquitto_passwd failed (Debian mosquitto)")
            os.chmod(passwords, 0o644)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if self._persistence:
            os.chmod(folder, 0o777)  # the broker (as user mosquitto) writes its database here
            lines += ["persistence true", f"persistence_location {folder}/"]
        else:
            lines.append("persistence false")
        lines += [
            "log_dest stderr",
            "log_type error",
            "max_queued_messages 100000",
            self._extra,
        ]
        conf.write_text("\n".join(lines) + "\n")
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
