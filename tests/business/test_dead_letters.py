"""A refused document lands in the dead-letter queue with the target's reason, and is replayed
with ``edge-gateway outbox retry`` after the mapping is fixed: booked once, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.config.load import load_config
from gateway.config.model import OutboxConfig
from gateway.metrics import Metrics
from gateway.outbox.dispatcher import Dispatcher
from gateway.outbox.outbox import Outbox
from gateway.runtime.registry import CONNECTORS, BuildContext
from gateway.tags import TagTable
from simulators.business import WmsSimulator
from tests.business.documents import completion

CONFIG = """
gateway:
  id: gw
  location: {{enterprise: acme, site: dallas, area: assembly, line: line1}}
  data_dir: {data_dir}
destinations:
  - name: wms
    system: wms
    url: {url}/api/v1/goods-receipts
    retry: {{initial: 0.05, maximum: 0.1}}
    mapping:
      completion:
        fields:
{fields}
"""
BROKEN = "          source_location: null          # nobody noticed the WMS needs it"
FIXED = "          source_location: {value: LINE1-OUT}"


def write(tmp_path: Path, name: str, url: str, fields: str) -> Path:
    path = tmp_path / name
    path.write_text(CONFIG.format(data_dir=tmp_path / "data", url=url, fields=fields))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["outbox", *args])
    return code, capsys.readouterr().out


async def run_until(dispatcher: Dispatcher, condition: Callable[[], bool]) -> None:
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)
            while dispatcher.in_flight or dispatcher._tasks:  # outcomes committed
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_refused_document_is_replayed_after_the_mapping_is_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with WmsSimulator() as wms:
        broken = load_config(write(tmp_path, "broken.yaml", wms.url, BROKEN))
        fixed_path = write(tmp_path, "fixed.yaml", wms.url, FIXED)
        fixed = load_config(fixed_path)
        outbox = Outbox(
            tmp_path / "data" / "outbox.db", lambda kind: ["wms"], broken.outbox, Metrics()
        )
        await outbox.open()
        first, second = completion(1), completion(2)  # one order: second waits for first
        await outbox.store([first, second], {})

        def dispatcher(config: object) -> Dispatcher:
            section = config.destinations[0]  # type: ignore[attr-defined]
            ctx = BuildContext(config, TagTable([]), Metrics())  # type: ignore[arg-type]
            return Dispatcher(outbox, CONNECTORS[section.profile](section, ctx), metrics=Metrics())

        await run_until(dispatcher(broken), lambda: outbox.open_counts()["wms"]["dead"] == 1)
        await asyncio.sleep(0.1)
        assert len(wms.ledger) == 0
        assert outbox.open_counts()["wms"] == {"pending": 1, "dead": 1}  # second holds

        # the operator looks at the dead-letter queue
        code, out = cli(capsys, "list", "--config", str(fixed_path), "--json")
        assert code == 0
        listing = json.loads(out)
        assert listing["destinations"]["wms"] == {
            "pending": 1, "dead": 1, "delivered": 0, "latency_p50_s": None,
            "latency_p99_s": None,
        }  # fmt: skip
        dead = listing["entries"][0]
        assert (dead["state"], dead["key"]) == ("dead", first.key)
        assert dead["last_error"] == "wms: HTTP 422: source_location: is required"

        # ... fixes the mapping, checks what would be sent now, and replays
        code, out = cli(capsys, "show", str(dead["id"]), "--config", str(fixed_path), "--json")
        assert code == 0
        assert json.loads(json.loads(out)["would_send"]["body"])["source_location"] == "LINE1-OUT"
        code, out = cli(capsys, "retry", str(dead["id"]), "--config", str(fixed_path))
        assert code == 0 and out.startswith("1 entries due now (wms: 1)")
        await outbox.refresh()  # what the running gateway's housekeeping does

        # the gateway was restarted with the fixed config
        await run_until(dispatcher(fixed), lambda: len(wms.ledger) == 2)
        assert [b.idempotency_key for b in wms.ledger] == [first.key, second.key]
        assert {b.document["source_location"] for b in wms.ledger} == {"LINE1-OUT"}
        assert (await outbox.counts())["wms"] == {"delivered": 2}
        await outbox.close()


async def test_drop_needs_confirmation_and_removes_only_undelivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "outbox.db"
    outbox = Outbox(database, lambda kind: ["wms"], OutboxConfig(), Metrics())
    await outbox.open()
    await outbox.store([completion(1)], {})
    await outbox.close()
    code, _ = cli(capsys, "drop", "1", "--db", str(database))
    assert code == 2
    code, out = cli(capsys, "drop", "1", "--db", str(database), "--yes")
    assert (code, out) == (0, "dropped 1 (wms, was pending)\n")
    code, out = cli(capsys, "list", "--db", str(database), "--state", "all")
    assert "(the outbox is empty)" in out
    assert cli(capsys, "show", "1", "--db", str(database))[0] == 2
    assert main(["outbox", "list", "--db", str(tmp_path / "missing.db")]) == 2
