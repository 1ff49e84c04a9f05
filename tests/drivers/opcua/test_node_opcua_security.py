"""Security against node-opcua: Basic256Sha256 SignAndEncrypt with the trust folder on both
sides, user name identity, and the `trust` command."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.opcua.errors import (
    CertificateRejectedError,
    IdentityRejectedError,
    UntrustedServerError,
)
from drivers.opcua.pki import Pki
from gateway.cli.main import main
from tests.drivers.opcua.conftest import NAMESPACE, NodeOpcUa, Running, build

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[NodeOpcUa]]


async def cli(*argv: str) -> int:
    """The command line, in a thread (it runs an event loop of its own)."""
    return await asyncio.to_thread(main, list(argv))


def _secure_device(server: NodeOpcUa, pki: Path, password: str) -> dict[str, Any]:
    return {
        "endpoint": server.endpoint,
        "publishing_interval": 0.1,
        "security": {
            "policy": "Basic256Sha256",
            "mode": "SignAndEncrypt",
            "pki_dir": str(pki),
        },
        "identity": {"username": "operator", "password": password},
        "tags": [{"name": "Counter", "node": f"nsu={NAMESPACE};s=Plant.Counter", "type": "uint32"}],
    }


async def test_sign_and_encrypt_with_trust_folders(
    node_server: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_pki = tmp_path / "server-pki"
    server = await node_server(security="secure", pki=str(server_pki), users={"operator": "s3cret"})
    pki = tmp_path / "pki"
    run: Running = build(_secure_device(server, pki, "s3cret"), tmp_path)

    # 1. nothing is trusted on first use: the server's certificate waits in rejected/
    with pytest.raises(UntrustedServerError, match="edge-gateway trust"):
        await run.driver.connect()
    await run.driver.close()
    assert Pki(pki).own_certificate.is_file()  # ours was made on first use
    assert len(Pki(pki).rejected_certificates()) == 1

    # 2. `edge-gateway trust` shows the fingerprint; a wrong one trusts nothing
    endpoint = server.endpoint
    assert await cli("trust", endpoint, "--pki", str(pki), "--fingerprint", "00:11") == 1
    shown = capsys.readouterr().out
    assert "SHA-256" in shown and "fingerprint does not match" in shown
    fingerprint = Pki(pki).rejected_certificates()[0].sha256
    assert await cli("trust", endpoint, "--pki", str(pki), "--fingerprint", fingerprint) == 0
    assert "trusted: saved as" in capsys.readouterr().out
    assert len(Pki(pki).trusted_certificates()) == 1
    assert not Pki(pki).rejected_certificates()

    # 3. the server does not know our certificate yet: a clear message, not an assertion
    with pytest.raises(CertificateRejectedError, match="server rejected our certificate: trust it"):
        await run.driver.connect()
    await run.driver.close()

    # 4. trusted on the server (node-opcua: rejected/ -> trusted/certs/), it connects
    rejected = [p for p in (server_pki / "rejected").iterdir() if p.is_file()]
    assert len(rejected) == 1
    (server_pki / "trusted" / "certs").mkdir(parents=True, exist_ok=True)
    shutil.move(rejected[0], server_pki / "trusted" / "certs" / rejected[0].name)
    own = Pki(pki).own_certificate.read_bytes()
    # node-opcua notices the move through a file watcher: like the supervisor, try again
    for attempt in range(40):
        try:
            await run.driver.connect()
            break
        except CertificateRejectedError:
            await run.driver.close()
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)
    try:
        run.task = asyncio.create_task(run.driver.run(run.sink))
        await run.wait_for(lambda: len(run.history("Counter")) >= 3)
    finally:
        if run.task is not None:
            run.task.cancel()
        await run.driver.close()
    assert Pki(pki).own_certificate.read_bytes() == own  # reused, not made again

    # 5. a wrong password over the secure channel is an identity error
    wrong = build(_secure_device(server, pki, "wrong"), tmp_path)
    with pytest.raises(IdentityRejectedError, match="rejected the user 'operator'"):
        await wrong.driver.connect()
    await wrong.driver.close()

    # 6. `trust --list` shows what is trusted
    assert await cli("trust", "--list", "--pki", str(pki)) == 0
    assert "trusted in" in capsys.readouterr().out
