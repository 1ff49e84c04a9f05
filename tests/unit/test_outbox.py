"""The durable outbox: exactly-once storage, ordering per key, retries, dead letters."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config.destinations import RetryPolicy
from gateway.config.model import OutboxConfig
from gateway.documents import Document
from gateway.errors import DeliveryError, OutboxError
from gateway.metrics import Metrics
from gateway.outbox.dispatcher import Dispatcher
from gateway.outbox.outbox import Outbox


def doc(key: str, order: str = "A", kind: str = "completion") -> Document:
    return Document(kind, key, "M1", {"order": order, "good": 1}, ordering_key=order)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox(
        tmp_path / "outbox.db",
        lambda kind: ["erp"] if kind == "completion" else [],
        OutboxConfig(commit_interval=0),
        Metrics(),
    )
    await box.open()
    yield box
    await box.close()


class FakeConnector:
    """Records deliveries; fails per a script of outcomes."""

    name = "erp"

    def __init__(self, script: dict[str, list[DeliveryError | None]] | None = None) -> None:
        self.delivered: list[str] = []
        self.attempts: list[str] = []
        self.script = script or {}
        self.gate: asyncio.Event | None = None
        self.active = 0
        self.max_active = 0

    def accepts(self, kind: str) -> bool:
        return kind == "completion"

    async def deliver(self, document: Document) -> str:
        self.attempts.append(document.key)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0.001)
            outcomes = self.script.get(document.key)
            if outcomes:
                error = outcomes.pop(0)
                if error is not None:
                    raise error
            self.delivered.append(document.key)
            return f"ref-{document.key}"
        finally:
            self.active -= 1

    async def close(self) -> None:
        return None


async def run_until(dispatcher: Dispatcher, condition: object, timeout: float = 5.0) -> None:
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # type: ignore[operator]
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def dispatcher(box: Outbox, connector: FakeConnector, concurrency: int = 4) -> Dispatcher:
    return Dispatcher(
        box,
        connector,
        concurrency=concurrency,
        retry=RetryPolicy(initial=0.01, maximum=0.05),
        metrics=Metrics(),
        rng=random.Random(1),
    )


async def test_same_key_is_stored_once(outbox: Outbox) -> None:
    assert await outbox.store([doc("k1")], {}) == 1
    assert await outbox.store([doc("k1")], {}) == 0
    assert (await outbox.counts())["erp"] == {"pending": 1}


async def test_states_are_saved_with_documents(outbox: Outbox) -> None:
    await outbox.store([doc("k1")], {"work_report.M1": {"sequence": 1}})
    await outbox.store([], {"work_report.M1": {"sequence": 2}})
    assert await outbox.load_states() == {"work_report.M1": {"sequence": 2}}


async def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = Outbox(path, lambda kind: ["erp"], OutboxConfig(), Metrics())
    await first.open()
    await first.store([doc("k1"), doc("k2")], {"p": {"x": 1}})
    await first.close()
    second = Outbox(path, lambda kind: ["erp"], OutboxConfig(), Metrics())
    await second.open()
    assert second.pending_count == 2
    assert await second.load_states() == {"p": {"x": 1}}
    await second.close()


async def test_concurrent_stores_are_grouped_and_all_durable(outbox: Outbox) -> None:
    results = await asyncio.gather(*(outbox.store([doc(f"k{i}")], {}) for i in range(200)))
    assert sum(results) >= 200  # each caller learns how many of its group were new
    assert (await outbox.counts())["erp"]["pending"] == 200


async def test_delivery_in_order_per_ordering_key(outbox: Outbox) -> None:
    await outbox.store(
        [doc(f"a{i}", "A") for i in range(5)] + [doc(f"b{i}", "B") for i in range(5)], {}
    )
    connector = FakeConnector()
    await run_until(dispatcher(outbox, connector), lambda: len(connector.delivered) == 10)
    assert [k for k in connector.delivered if k.startswith("a")] == [f"a{i}" for i in range(5)]
    assert [k for k in connector.delivered if k.startswith("b")] == [f"b{i}" for i in range(5)]
    assert (await outbox.counts())["erp"] == {"delivered": 10}


async def test_different_orders_are_delivered_in_parallel(outbox: Outbox) -> None:
    await outbox.store([doc(f"k{i}", f"order{i}") for i in range(6)], {})
    connector = FakeConnector()
    connector.gate = asyncio.Event()

    async def open_gate() -> None:
        while connector.active < 3:
            await asyncio.sleep(0.001)
        connector.gate.set()  # type: ignore[union-attr]

    opener = asyncio.create_task(open_gate())
    await run_until(
        dispatcher(outbox, connector, concurrency=3), lambda: len(connector.delivered) == 6
    )
    await opener
    assert connector.max_active == 3


async def test_retryable_errors_retry_and_keep_the_order(outbox: Outbox) -> None:
    busy = DeliveryError("erp", "HTTP 503", retryable=True)
    await outbox.store([doc("a0"), doc("a1")], {})
    connector = FakeConnector({"a0": [busy, busy, None]})
    await run_until(dispatcher(outbox, connector), lambda: len(connector.delivered) == 2)
    assert connector.attempts == ["a0", "a0", "a0", "a1"]
    assert connector.delivered == ["a0", "a1"]


async def test_validation_error_goes_to_dead_letters(outbox: Outbox) -> None:
    refused = DeliveryError("erp", "HTTP 422: good: must be an integer", retryable=False)
    await outbox.store([doc("a0"), doc("a1")], {})
    connector = FakeConnector({"a0": [refused]})
    await run_until(dispatcher(outbox, connector), lambda: connector.delivered == ["a1"])
    counts = await outbox.counts()
    assert counts["erp"] == {"dead": 1, "delivered": 1}


async def test_full_outbox_refuses_new_documents(tmp_path: Path) -> None:
    box = Outbox(
        tmp_path / "o.db", lambda kind: ["erp"], OutboxConfig(max_documents=100), Metrics()
    )
    await box.open()
    await box.store([doc(f"k{i}") for i in range(100)], {})
    with pytest.raises(OutboxError, match="outbox full"):
        await box.store([doc("one-more")], {})
    await box.store([], {"p": {"x": 1}})  # states are still saved
    await box.close()
