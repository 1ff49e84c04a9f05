"""The durable outbox and its dispatcher: exactly-once storage, ordering per key, retries,
circuit breaker, dead letters, sync strategies, retention and the size bound."""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from gateway.config.destinations import BreakerPolicy, RetryPolicy, SyncMode, SyncPolicy
from gateway.config.model import OutboxConfig
from gateway.documents import Document
from gateway.errors import DeliveryError, OutboxError
from gateway.metrics import Metrics
from gateway.outbox.breaker import BreakerState, CircuitBreaker
from gateway.outbox.dispatcher import Dispatcher, select_runs
from gateway.outbox.outbox import Outbox
from gateway.outbox.schedule import release_window
from gateway.outbox.store import OpenRow, OutboxStore


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
        self.batches: list[list[str]] = []
        self.script = script or {}
        self.gate: asyncio.Event | None = None
        self.active = 0
        self.max_active = 0
        self.down = False

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
            if self.down:
                raise DeliveryError(self.name, "connection refused", retryable=True)
            outcomes = self.script.get(document.key)
            if outcomes:
                error = outcomes.pop(0)
                if error is not None:
                    raise error
            self.delivered.append(document.key)
            return f"ref-{document.key}"
        finally:
            self.active -= 1

    async def deliver_batch(self, documents: Sequence[Document]) -> list[str | DeliveryError]:
        self.batches.append([d.key for d in documents])
        results: list[str | DeliveryError] = []
        for document in documents:
            try:
                results.append(await self.deliver(document))
            except DeliveryError as exc:
                results.append(exc)
        return results

    async def close(self) -> None:
        return None


async def run_until(
    dispatcher: Dispatcher, condition: Callable[[], bool], timeout: float = 5.0
) -> None:
    task = asyncio.create_task(dispatcher.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)
            while dispatcher.in_flight or dispatcher._tasks:  # outcomes committed
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def dispatcher(
    box: Outbox,
    connector: FakeConnector,
    concurrency: int = 4,
    **options: object,
) -> Dispatcher:
    return Dispatcher(
        box,
        connector,
        concurrency=concurrency,
        retry=RetryPolicy(initial=0.01, maximum=0.05),
        metrics=Metrics(),
        rng=random.Random(1),
        **options,  # type: ignore[arg-type]
    )


# --- storage ---


async def test_same_key_is_stored_once(outbox: Outbox) -> None:
    assert await outbox.store([doc("k1")], {}) == 1
    assert await outbox.store([doc("k1")], {}) == 0
    assert (await outbox.counts())["erp"] == {"pending": 1}
    assert outbox.open_counts() == {"erp": {"pending": 1, "dead": 0}}


async def test_documents_no_destination_takes_are_not_kept(outbox: Outbox) -> None:
    assert await outbox.store([doc("k1", kind="oee")], {"p": {"x": 1}}) == 0
    assert await outbox.counts() == {}
    assert await outbox.load_states() == {"p": {"x": 1}}


async def test_states_are_saved_with_documents(outbox: Outbox) -> None:
    await outbox.store([doc("k1")], {"work_report.M1": {"sequence": 1}})
    await outbox.store([], {"work_report.M1": {"sequence": 2}})
    assert await outbox.load_states() == {"work_report.M1": {"sequence": 2}}


async def test_states_keep_infinities(outbox: Outbox) -> None:
    """A running minimum starts at +inf: it must come back as +inf, not null."""
    await outbox.store([], {"lot_quality.M1": {"low": math.inf, "high": -math.inf}})
    assert await outbox.load_states() == {"lot_quality.M1": {"low": math.inf, "high": -math.inf}}


async def test_everything_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = Outbox(path, lambda kind: ["erp"], OutboxConfig(), Metrics())
    await first.open()
    await first.store([doc("k1"), doc("k2")], {"p": {"x": 1}})
    await first.close()
    second = Outbox(path, lambda kind: ["erp"], OutboxConfig(), Metrics())
    await second.open()
    assert second.undelivered == 2
    assert await second.load_states() == {"p": {"x": 1}}
    await second.close()


async def test_concurrent_stores_are_grouped_and_all_durable(outbox: Outbox) -> None:
    results = await asyncio.gather(*(outbox.store([doc(f"k{i}")], {}) for i in range(200)))
    assert sum(results) >= 200  # each caller learns how many of its group were new
    assert (await outbox.counts())["erp"]["pending"] == 200


async def test_a_database_from_the_first_schema_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE documents (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, kind TEXT
          NOT NULL, cell TEXT NOT NULL, ordering_key TEXT NOT NULL, body TEXT NOT NULL,
          created_ns INTEGER NOT NULL);
        CREATE TABLE deliveries (id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL,
          destination TEXT NOT NULL, ordering_key TEXT NOT NULL, state TEXT NOT NULL DEFAULT
          'pending', attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ns INTEGER NOT NULL
          DEFAULT 0, last_error TEXT NOT NULL DEFAULT '', reference TEXT NOT NULL DEFAULT '',
          created_ns INTEGER NOT NULL, finished_ns INTEGER, UNIQUE (document_id, destination));
        CREATE INDEX deliveries_pending ON deliveries (destination, state, ordering_key, id);
        INSERT INTO documents VALUES (1, 'k1', 'completion', 'M1', 'A', '{"good": 3}', 5);
        INSERT INTO deliveries (document_id, destination, ordering_key, created_ns)
          VALUES (1, 'erp', 'A', 5);
        """
    )
    db.close()
    store = OutboxStore(path)
    (row,) = store.listing()
    assert (row.document.body, row.last_attempt_ns, row.state) == ({"good": 3}, None, "pending")
    store.close()


# --- ordering and parallelism ---


async def test_delivery_in_order_per_ordering_key(outbox: Outbox) -> None:
    await outbox.store(
        [doc(f"a{i}", "A") for i in range(5)] + [doc(f"b{i}", "B") for i in range(5)], {}
    )
    connector = FakeConnector()
    await run_until(dispatcher(outbox, connector), lambda: len(connector.delivered) == 10)
    assert [k for k in connector.delivered if k.startswith("a")] == [f"a{i}" for i in range(5)]
    assert [k for k in connector.delivered if k.startswith("b")] == [f"b{i}" for i in range(5)]
    assert (await outbox.counts())["erp"] == {"delivered": 10}
    assert outbox.open_counts()["erp"] == {"pending": 0, "dead": 0}


async def test_different_orders_are_delivered_in_parallel_up_to_the_limit(outbox: Outbox) -> None:
    await outbox.store([doc(f"k{i}", f"order{i}") for i in range(6)], {})
    connector = FakeConnector()
    connector.gate = asyncio.Event()

    async def open_gate() -> None:
        while connector.active < 3:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # a fourth would have started by now
        connector.gate.set()  # type: ignore[union-attr]

    opener = asyncio.create_task(open_gate())
    await run_until(
        dispatcher(outbox, connector, concurrency=3), lambda: len(connector.delivered) == 6
    )
    await opener
    assert connector.max_active == 3


async def test_a_long_backlog_of_blocked_orders_does_not_starve_others(outbox: Outbox) -> None:
    """Heads beyond the first window are found: 300 documents of a blocked order come first."""
    busy = DeliveryError("erp", "HTTP 503", retryable=True)
    await outbox.store([doc(f"a{i}", "A") for i in range(300)] + [doc("b0", "B")], {})
    connector = FakeConnector({"a0": [busy] * 1000})
    await run_until(dispatcher(outbox, connector), lambda: connector.delivered == ["b0"])


# --- failures ---


async def test_retryable_errors_retry_and_keep_the_order(outbox: Outbox) -> None:
    busy = DeliveryError("erp", "HTTP 503", retryable=True)
    await outbox.store([doc("a0"), doc("a1")], {})
    connector = FakeConnector({"a0": [busy, busy, None]})
    await run_until(dispatcher(outbox, connector), lambda: len(connector.delivered) == 2)
    assert connector.attempts == ["a0", "a0", "a0", "a1"]
    assert connector.delivered == ["a0", "a1"]


async def test_retry_after_is_honoured(outbox: Outbox) -> None:
    slow_down = DeliveryError("erp", "HTTP 429", retryable=True, retry_after=0.3)
    await outbox.store([doc("a0")], {})
    connector = FakeConnector({"a0": [slow_down, None]})
    started = time.monotonic()
    await run_until(dispatcher(outbox, connector), lambda: connector.delivered == ["a0"])
    assert time.monotonic() - started >= 0.3


async def test_refused_document_holds_its_order_and_others_go_on(outbox: Outbox) -> None:
    refused = DeliveryError("erp", "HTTP 422: good: must be an integer", retryable=False)
    await outbox.store([doc("a0"), doc("a1"), doc("b0", "B")], {})
    connector = FakeConnector({"a0": [refused]})
    box = dispatcher(outbox, connector)
    await run_until(box, lambda: connector.delivered == ["b0"])
    await asyncio.sleep(0.05)
    assert connector.delivered == ["b0"]  # a1 waits behind the dead a0
    counts = await outbox.counts()
    assert counts["erp"] == {"dead": 1, "pending": 1, "delivered": 1}
    (dead,) = await outbox.listing(state="dead")
    assert (dead.document.key, dead.last_error) == ("a0", "erp: HTTP 422: good: must be an integer")
    assert outbox.open_counts()["erp"] == {"pending": 1, "dead": 1}
    assert await outbox.requeue([dead.id]) == 1
    await run_until(box, lambda: connector.delivered == ["b0", "a0", "a1"])


async def test_continue_mode_sends_later_documents_past_a_dead_letter(outbox: Outbox) -> None:
    refused = DeliveryError("erp", "HTTP 422", retryable=False)
    await outbox.store([doc("a0"), doc("a1")], {})
    connector = FakeConnector({"a0": [refused]})
    await run_until(
        dispatcher(outbox, connector, hold_on_dead=False), lambda: connector.delivered == ["a1"]
    )
    assert (await outbox.counts())["erp"] == {"dead": 1, "delivered": 1}


async def test_a_connector_bug_is_retried_not_fatal(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(FakeConnector):
        calls = 0

        async def deliver(self, document: Document) -> str:
            self.calls += 1
            if self.calls == 1:
                raise KeyError("bug")
            return await super().deliver(document)

    await outbox.store([doc("a0")], {})
    connector = Broken()
    with caplog.at_level(logging.ERROR):
        await run_until(dispatcher(outbox, connector), lambda: connector.delivered == ["a0"])
    assert "connector failed" in caplog.text


async def test_circuit_breaker_stops_attempts_while_down_and_drains_after(outbox: Outbox) -> None:
    await outbox.store([doc(f"k{i}", f"o{i}") for i in range(20)], {})
    connector = FakeConnector()
    connector.down = True
    box = dispatcher(
        outbox,
        connector,
        concurrency=4,
        breaker=BreakerPolicy(failures=3, open_for=0.2, max_open_for=0.2),
    )
    task = asyncio.create_task(box.run())
    await asyncio.sleep(0.5)
    attempts_while_down = len(connector.attempts)
    # 3 failures open it (+ at most 3 more already in flight), then one probe per 0.2 s
    assert attempts_while_down <= 6 + 4, connector.attempts
    assert box.breaker.state(time.time_ns()) in (BreakerState.OPEN, BreakerState.HALF_OPEN)
    connector.down = False
    async with asyncio.timeout(3):
        while len(connector.delivered) < 20:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert box.breaker.state(time.time_ns()) is BreakerState.CLOSED


# --- sync strategies ---


async def test_batched_mode_fills_batches_and_keeps_the_order(outbox: Outbox) -> None:
    await outbox.store([doc(f"a{i}", "A") for i in range(7)] + [doc("b0", "B")], {})
    connector = FakeConnector()
    box = dispatcher(
        outbox, connector, sync=SyncPolicy(mode=SyncMode.BATCHED, batch_size=5, max_wait=0.1)
    )
    await run_until(box, lambda: len(connector.delivered) == 8)
    assert all(len(batch) <= 5 for batch in connector.batches)
    assert [k for k in connector.delivered if k.startswith("a")] == [f"a{i}" for i in range(7)]
    assert len(connector.batches) <= 3


async def test_batched_mode_waits_for_max_wait_with_a_partial_batch(outbox: Outbox) -> None:
    await outbox.store([doc("a0")], {})
    connector = FakeConnector()
    box = dispatcher(
        outbox, connector, sync=SyncPolicy(mode=SyncMode.BATCHED, batch_size=50, max_wait=0.4)
    )
    started = time.monotonic()
    await run_until(box, lambda: connector.delivered == ["a0"])
    assert time.monotonic() - started >= 0.3


async def test_scheduled_mode_holds_documents_stored_after_the_last_release(
    outbox: Outbox,
) -> None:
    await outbox.store([doc("a0")], {})
    connector = FakeConnector()
    now = time.localtime()
    # releases only at a time 12 hours away: nothing stored now may go
    hour = (now.tm_hour + 12) % 24
    box = dispatcher(
        outbox,
        connector,
        sync=SyncPolicy(mode=SyncMode.SCHEDULED, at=[f"{hour:02d}:00"], timezone="UTC"),
    )
    task = asyncio.create_task(box.run())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert connector.attempts == []


def test_release_window_gives_the_last_and_next_release() -> None:
    # 2026-03-29 is the spring change in Europe/Berlin (02:00 → 03:00)
    at = ["06:00", "14:00", "22:00"]
    late_morning = calendar.timegm((2026, 3, 29, 11, 0, 0)) * 10**9  # 13:00 CEST
    last, following = release_window(late_morning, at, "Europe/Berlin")
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(last / 1e9)) == "2026-03-29 04:00"
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(following / 1e9)) == "2026-03-29 12:00"
    before = late_morning - 8 * 3600 * 10**9  # 03:00 UTC, 05:00 CEST: before 06:00 local
    last, following = release_window(before, at, "Europe/Berlin")
    assert time.strftime("%m-%d %H:%M", time.gmtime(last / 1e9)) == "03-28 21:00"  # 22:00 CET
    assert time.strftime("%m-%d %H:%M", time.gmtime(following / 1e9)) == "03-29 04:00"


# --- pure selection and breaker ---


def row(i: int, key: str, state: str = "pending", next_ns: int = 0, created: int = 0) -> OpenRow:
    return OpenRow(i, key, state, next_ns, created)


def test_selection_takes_heads_only_and_respects_blocking() -> None:
    rows = [
        row(1, "A"),
        row(2, "A"),
        row(3, "B", next_ns=500),
        row(4, "B"),
        row(5, "C", state="dead"),
        row(6, "C"),
        row(7, "D"),
        row(8, "E", created=900),
    ]
    picked = select_runs(rows, now_ns=100, busy={"D"}, cutoff_ns=800, max_runs=10)
    assert [[r.id for r in run] for run in picked.runs] == [[1]]
    assert picked.blocked == {"B", "C", "D", "E"}
    assert picked.wake_ns == 500
    released = select_runs(rows, now_ns=100, busy=set(), hold_dead=False, max_runs=10)
    assert [run[0].id for run in released.runs] == [1, 6, 7, 8]
    batched = select_runs(rows, now_ns=1000, busy=set(), run_limit=5, max_runs=10)
    assert [[r.id for r in run] for run in batched.runs] == [[1, 2], [3, 4], [7], [8]]


def test_breaker_opens_probes_and_closes() -> None:
    breaker = CircuitBreaker(BreakerPolicy(failures=2, open_for=1, max_open_for=4))
    s = 10**9
    assert not breaker.failure(0)
    assert breaker.failure(0)  # second consecutive failure opens it
    assert breaker.state(s // 2) is BreakerState.OPEN
    assert breaker.state(s) is BreakerState.HALF_OPEN
    breaker.failure(s)  # the probe failed: open twice as long
    assert breaker.remaining_s(s) == pytest.approx(2.0)
    assert breaker.state(3 * s) is BreakerState.HALF_OPEN
    assert breaker.success()
    assert breaker.state(3 * s) is BreakerState.CLOSED
    assert breaker.failure(3 * s, retry_after_s=30)  # Retry-After opens it at once
    assert breaker.remaining_s(3 * s) == pytest.approx(30.0)


# --- operations: retention, bound, requeue, drop ---


async def test_delivered_entries_are_kept_for_the_retention_then_purged(outbox: Outbox) -> None:
    await outbox.store([doc("a0"), doc("a1")], {})
    connector = FakeConnector()
    await run_until(dispatcher(outbox, connector), lambda: len(connector.delivered) == 2)
    assert await outbox.purge(retention_s=3600) == 0
    assert (await outbox.counts())["erp"] == {"delivered": 2}
    await asyncio.sleep(0.01)
    assert await outbox.purge(retention_s=0.001) == 2
    assert await outbox.counts() == {}


async def test_full_outbox_refuses_new_documents_and_alarms_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    box = Outbox(
        tmp_path / "o.db",
        lambda kind: ["erp"],
        OutboxConfig(max_documents=100, alarm_at=0.8),
        metrics,
    )
    await box.open()
    await box.store([doc(f"k{i}") for i in range(79)], {})
    assert not box.alarm
    with caplog.at_level(logging.WARNING):
        await box.store([doc("k79")], {})
    assert box.alarm
    assert "outbox alarm: 80 undelivered" in caplog.text
    assert metrics.registry.get_sample_value("gateway_outbox_alarm") == 1.0
    await box.store([doc(f"k{i}") for i in range(80, 100)], {})
    with pytest.raises(OutboxError, match="outbox full"):
        await box.store([doc("one-more")], {})
    await box.store([], {"p": {"x": 1}})  # states are still saved
    rows = await box.listing(limit=30)
    assert await box.drop([r.id for r in rows]) == 30
    assert not box.alarm
    assert await box.store([doc("one-more")], {}) == 1
    await box.close()


async def test_backlog_and_dead_letter_metrics(outbox: Outbox) -> None:
    refused = DeliveryError("erp", "HTTP 422", retryable=False)
    await outbox.store([doc("a0"), doc("b0", "B"), doc("c0", "C")], {})
    connector = FakeConnector({"a0": [refused]})
    box = dispatcher(outbox, connector)
    await run_until(box, lambda: len(connector.delivered) == 2)
    registry = outbox._metrics.registry
    assert registry.get_sample_value("gateway_outbox_backlog", {"destination": "erp"}) == 0
    assert registry.get_sample_value("gateway_outbox_dead_letters", {"destination": "erp"}) == 1
    assert registry.get_sample_value("gateway_outbox_undelivered") == 1
