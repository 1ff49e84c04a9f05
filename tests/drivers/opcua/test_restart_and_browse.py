"""node-opcua restarting in the middle of a subscription (with other namespace indices), and
`edge-gateway browse` against it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from gateway import quality
from gateway.batch import SampleBatch, now_ns
from gateway.cli.main import main
from gateway.config.load import load_config_text
from gateway.errors import NotConnectedError
from gateway.metrics import Metrics
from gateway.runtime.supervisor import Supervisor
from tests.drivers.opcua.conftest import NAMESPACE, NodeOpcUa, build

pytestmark = pytest.mark.integration

Start = Callable[..., Awaitable[NodeOpcUa]]


async def test_server_restart_with_other_namespace_indices(
    node_server: Start, tmp_path: Path
) -> None:
    server = await node_server(shift=0)
    first_index = server.index
    run = build(
        {
            "endpoint": server.endpoint,
            "timeout": 2,
            "keepalive": 1,
            "publishing_interval": 0.1,
            "namespaces": {"t": NAMESPACE},
            "tags": [
                {"name": "Counter", "node": "nsu=t;s=Plant.Counter", "type": "uint32"},
                {"name": "Speed", "path": "t:Plant/t:Line1/t:Speed"},
            ],
        },
        tmp_path,
    )
    driver = run.driver

    async def device() -> None:  # what the gateway's device runner does
        try:
            await driver.connect()
            await driver.run(run.sink)
        finally:
            await driver.close()

    def mark_bad(error: BaseException) -> None:  # and its failure hook
        reason = "disconnected" if isinstance(error, NotConnectedError) else "driver failure"
        run.batches.append(
            SampleBatch.bad(driver.name, driver.tag_indices, quality.bad(reason), now_ns())
        )

    supervisor = Supervisor(Metrics(), initial_backoff=0.2, max_backoff=1.0)
    supervisor.start("device:P", device, on_failure=mark_bad)
    try:
        await run.wait_for(lambda: len(run.history("Counter")) >= 3)
        assert await server.command(op="stats") == {
            "sessions": 1,
            "subscriptions": 1,
            "monitored_items": 2,
        }
        await server.stop()
        await run.wait_for(lambda: run.latest().get("Counter") == "bad: disconnected")
        await asyncio.sleep(1.5)  # a few failed reconnects while the server is down
        await server.start(shift=3)
        assert server.index != first_index
        before = len(run.batches)
        # the new server's counter starts again from 1: values resume from it
        await run.wait_for(
            lambda: any(
                isinstance(v, float) and v < 30
                for batch in run.batches[before:]
                for v in batch.values[batch.tags == run.info("Counter").index].tolist()
            ),
            timeout=20,
        )
        await run.wait_for(lambda: run.latest().get("Speed") == 12.5)
        assert await server.command(op="stats") == {
            "sessions": 1,
            "subscriptions": 1,
            "monitored_items": 2,
        }
        # one sample per counter change: no second subscription feeding duplicates
        after = [
            v
            for batch in run.batches[before:]
            for v in batch.values[batch.tags == run.info("Counter").index].tolist()
        ]
        good = [v for v in after if v == v]  # not NaN
        assert len(good) == len(set(good))
    finally:
        await supervisor.stop()


async def test_browse_prints_the_tree_and_a_tag_list_to_paste(
    node_server: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await node_server()

    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(main, list(argv))

    assert await cli("browse", server.endpoint, "--depth", "3") == 0
    tree = capsys.readouterr().out
    assert f"Setpoint  Double  read/write  nsu={NAMESPACE};s=Plant.Setpoint" in tree
    assert "DoubleArray  Double[4]  read" in tree
    assert "Speed  Double  read" in tree  # two levels down
    assert "ServerStatus" not in tree  # the Server object only with --all

    plant = f"nsu={NAMESPACE};s=Plant"
    assert await cli("browse", server.endpoint, "--from", plant, "--yaml") == 0
    listing = capsys.readouterr().out
    tags = yaml.safe_load(listing)["tags"]
    by_name = {t["name"]: t for t in tags}
    assert by_name["Setpoint"] == {
        "name": "Setpoint",
        "node": f"nsu={NAMESPACE};s=Plant.Setpoint",
        "type": "float64",
        "writable": True,
    }
    assert by_name["DoubleArray"]["count"] == 4
    assert by_name["Line1.Speed"]["type"] == "float64"
    assert by_name["UInt64"]["type"] == "uint64"
    # ready to paste: a device with exactly this list passes validation
    indented = "\n".join("    " + line for line in listing.splitlines() if not line.startswith("#"))
    config = load_config_text(
        "gateway: {id: g, location: {enterprise: e, site: s, area: a, line: l}}\n"
        "devices:\n"
        f"  - name: P\n    protocol: opcua\n    endpoint: {server.endpoint}\n{indented}\n"
    )
    assert len(config.devices[0].tags) == len(tags)

    assert await cli("browse", "opc.tcp://127.0.0.1:1", "--timeout", "1") == 1
    assert "cannot connect" in capsys.readouterr().err
