"""Shared fixtures."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.demo.broker import BrokerTls, LocalBroker, free_port, wait_for_port
from tests.outputs.certs import TlsFiles, make_tls_files
from tests.peers import require_binary


@pytest.fixture
async def mosquitto() -> AsyncIterator[LocalBroker]:
    """A real Mosquitto on a free loopback port, stopped after the test."""
    require_binary("mosquitto", "Debian package mosquitto")
    async with LocalBroker(prefer="mosquitto") as broker:
        assert broker.kind == "mosquitto"
        yield broker


# --- MQTT and historian peers (issue 5) ------------------------------------------------------

BROKER_USER = "gateway"
BROKER_PASSWORD = "s3cret-pw"


@pytest.fixture
async def mosquitto_auth() -> AsyncIterator[LocalBroker]:
    """Mosquitto that refuses anonymous clients; user BROKER_USER / BROKER_PASSWORD."""
    require_binary("mosquitto", "Debian package mosquitto")
    require_binary("mosquitto_passwd", "Debian package mosquitto")
    async with LocalBroker(users={BROKER_USER: BROKER_PASSWORD}) as broker:
        yield broker


@pytest.fixture(scope="session")
def tls_files() -> Iterator[TlsFiles]:
    """A test CA, a server certificate for localhost/127.0.0.1, a client certificate."""
    folder = tempfile.mkdtemp(prefix="edge-gw-tls-")
    try:
        yield make_tls_files(Path(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def mosquitto_tls(tls_files: TlsFiles) -> AsyncIterator[LocalBroker]:
    """Mosquitto with a TLS listener that requires a client certificate from the test CA."""
    require_binary("mosquitto", "Debian package mosquitto")
    tls = BrokerTls(
        tls_files.ca_file, tls_files.server_cert, tls_files.server_key, require_certificate=True
    )
    async with LocalBroker(tls=tls) as broker:
        yield broker


@pytest.fixture
async def victoria_metrics(tmp_path: Path) -> AsyncIterator[str]:
    """VictoriaMetrics (accepts InfluxDB 2 writes on /api/v2/write); yields its base URL."""
    binary = require_binary("victoria-metrics", "Debian package victoria-metrics")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        f"-storageDataPath={tmp_path / 'vm'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=1d",
        "-search.latencyOffset=0s",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_port("127.0.0.1", port, 20.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                process.kill()
                await process.wait()
