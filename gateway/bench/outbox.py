"""``bench outbox``: durable enqueues per second, and deliveries per second to the ERP simulator.

Enqueue: 64 producers store one completion each at a time and wait until it is durable
(``synchronous=FULL``: on disk, through power loss); group commit serves many of them with one
fsync. Baseline in the same run: one transaction per document, the way a naive outbox does it.

Delivery: a backlog of completions over 200 orders, delivered by the dispatcher (concurrency 32,
ordering per order, every outcome committed before the next document of its order goes) with
the generic REST connector to the ERP simulator, which runs as its own process and validates,
books and deduplicates every request. Baseline: one request, then one commit, per document,
one after the other. The batched sync mode (100 documents per request) is measured as well.
``latency_ms=5`` adds that much answer time at the ERP (a real ERP answers in milliseconds,
which the sequential baseline pays per document).

CPU figures are the bench process's CPU-seconds per wall-second (user + system), which other
load on the machine barely changes.
"""

from __future__ import annotations

__all__ = ["run"]

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.bench import Result
from gateway.bench.process import own_cpu_seconds
from gateway.config.model import OutboxConfig
from gateway.documents import Document, idempotency_key
from gateway.metrics import Metrics
from gateway.outbox.dispatcher import Dispatcher
from gateway.outbox.outbox import Outbox

PRODUCERS = 64
_CONFIG = OutboxConfig()


def _document(n: int, orders: int = 200) -> Document:
    key = idempotency_key("bench", n)
    order = f"{1_000_000 + n % orders}"
    machine = f"M{n % 10}"
    body: dict[str, Any] = {
        "gateway": "bench",
        "machine": machine,
        "work_center": "WC1",
        "order": order,
        "operation": "0010",
        "material": "FG-4711",
        "lot": f"L{n // 1000:09d}",
        "good": 10 + n % 7,
        "scrap": n % 3,
        "rework": 0,
        "unit": "EA",
        "start": "2026-05-04T08:00:00.000Z",
        "end": "2026-05-04T08:00:10.000Z",
        "sequence": n,
        "final": False,
        "trigger": "container_full",
        "idempotency_key": key,
    }
    return Document("completion", key, machine, body, ordering_key=order)


# --- enqueue -------------------------------------------------------------------------------


async def _enqueue(folder: Path, count: int) -> tuple[float, float]:
    outbox = Outbox(folder / "outbox.db", lambda kind: ["erp"], _CONFIG, Metrics())
    await outbox.open()
    documents = [_document(n) for n in range(count)]
    cursor = iter(documents)

    async def producer() -> None:
        for document in cursor:
            await outbox.store([document], {})

    cpu, started = own_cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    wall = time.perf_counter() - started
    cpu = own_cpu_seconds() - cpu
    stored = outbox.undelivered
    await outbox.close()
    if stored != count:
        raise RuntimeError(f"stored {stored} of {count} documents")
    return count / wall, cpu / wall


def _naive_enqueue(folder: Path, count: int) -> float:
    """One transaction per document: BEGIN, INSERT document, INSERT delivery, COMMIT."""
    db = sqlite3.connect(folder / "naive.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(
        "CREATE TABLE documents (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body TEXT);"
        "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, document_id INTEGER, "
        "destination TEXT, state TEXT DEFAULT 'pending');"
    )
    started = time.perf_counter()
    for n in range(count):
        document = _document(n)
        db.execute("BEGIN IMMEDIATE")
        cursor = db.execute(
            "INSERT INTO documents (key, body) VALUES (?, ?)",
            (document.key, orjson.dumps(document.body).decode()),
        )
        db.execute(
            "INSERT INTO deliveries (document_id, destination) VALUES (?, 'erp')",
            (cursor.lastrowid,),
        )
        db.execute("COMMIT")
    wall = time.perf_counter() - started
    db.close()
    return count / wall


# --- delivery ------------------------------------------------------------------------------


class _ErpProcess:
    """The ERP simulator in a process of its own (a real target on its own CPU)."""

    def __init__(self, folder: Path) -> None:
        self._ports = folder / "erp-ports.json"
        self._process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> _ErpProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators", "simulate", "erp", "--port", "0",
            "--ports-file", str(self._ports),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._ports.exists():
            if time.monotonic() > deadline or self._process.returncode is not None:
                raise RuntimeError("the ERP simulator did not start")
            await asyncio.sleep(0.05)
        self.url = json.loads(self._ports.read_text())["erp"]["url"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 10)
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()

    async def set_latency(self, milliseconds: float) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/_control/faults", json={"latency_ms": milliseconds}),
        ):
            pass

    async def booked(self) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/_control/stats") as response,
        ):
            stats = await response.json()
        return int(stats["booked"])


async def _deliver(folder: Path, url: str, count: int, *, batched: bool) -> tuple[float, float]:
    from gateway.config.destinations import RestDestinationConfig
    from gateway.connectors.rest import RestConnector

    name = "batched" if batched else "immediate"
    metrics = Metrics()
    outbox = Outbox(folder / f"deliver-{name}.db", lambda kind: ["erp"], _CONFIG, metrics)
    await outbox.open()
    offset = 10_000_000 if batched else 0
    documents = [_document(offset + n) for n in range(count)]
    for start in range(0, count, 1000):
        await outbox.store(documents[start : start + 1000], {})
    section: dict[str, Any] = {
        "name": "erp",
        "system": "erp",
        "url": f"{url}/api/v1/confirmations",
        "concurrency": 32 if not batched else 8,
        "timeout": 10,
    }
    if batched:
        section |= {
            "batch_url": f"{url}/api/v1/confirmations/batch",
            "idempotency": {"mode": "field"},
            "sync": {"mode": "batched", "batch_size": 100, "max_wait": 0.05},
        }
    config = RestDestinationConfig.model_validate(section)
    connector = RestConnector(config)
    dispatcher = Dispatcher(
        outbox,
        connector,
        concurrency=config.concurrency,
        retry=config.retry,
        sync=config.sync,
        metrics=metrics,
    )
    cpu, started = own_cpu_seconds(), time.perf_counter()
    task = asyncio.create_task(dispatcher.run())
    try:
        while outbox.open_counts().get("erp", {}).get("pending", count) > 0:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        wall = time.perf_counter() - started
        cpu = own_cpu_seconds() - cpu
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await connector.close()
    counts = await outbox.counts()
    await outbox.close()
    if counts.get("erp", {}).get("delivered") != count:
        raise RuntimeError(f"{name} delivery: {counts}")
    return count / wall, cpu / wall


async def _naive_deliver(folder: Path, url: str, count: int) -> float:
    """One request, then one commit, per document, one after the other."""
    db = sqlite3.connect(folder / "naive.db", isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    documents = [_document(20_000_000 + n) for n in range(count)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        started = time.perf_counter()
        for n, document in enumerate(documents):
            async with session.post(
                f"{url}/api/v1/confirmations",
                json=dict(document.body),
                headers={"Idempotency-Key": document.key},
            ) as response:
                await response.read()
                if response.status >= 300:
                    raise RuntimeError(f"naive delivery answered {response.status}")
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE deliveries SET state='delivered' WHERE id=?", (n + 1,))
            db.execute("COMMIT")
        wall = time.perf_counter() - started
    db.close()
    return count / wall


async def _run(options: dict[str, str]) -> Result:
    enqueue_count = int(options.get("documents", 20_000))
    naive_count = int(options.get("naive", 1_500))
    deliver_count = int(options.get("deliveries", 10_000))
    naive_deliver_count = int(options.get("naive_deliveries", 1_000))
    latency_ms = float(options.get("latency_ms", 0))
    with tempfile.TemporaryDirectory(prefix="edge-gw-bench-outbox-") as tmp:
        folder = Path(tmp)
        print(
            f"outbox: {enqueue_count:,} completions, {PRODUCERS} producers, durable "
            f"(WAL, synchronous=FULL), on {folder} ({os.cpu_count()} CPUs)"
        )
        enqueue_rate, enqueue_cpu = await _enqueue(folder, enqueue_count)
        print(f"  group commit          : {enqueue_rate:10,.0f} enqueues/s   "
              f"(CPU {enqueue_cpu:.2f} s/s)")  # fmt: skip
        naive_rate = _naive_enqueue(folder, naive_count)
        print(f"  one commit per doc    : {naive_rate:10,.0f} enqueues/s   (baseline)")
        print(f"  speedup               : {enqueue_rate / naive_rate:10.1f}x")
        async with _ErpProcess(folder) as erp:
            if latency_ms:
                await erp.set_latency(latency_ms)
            print(f"delivery to the ERP simulator ({erp.url}, its own process, "
                  f"{latency_ms:g} ms added latency), {deliver_count:,} completions "
                  "over 200 orders")  # fmt: skip
            delivered_rate, deliver_cpu = await _deliver(
                folder, erp.url, deliver_count, batched=False
            )
            print(f"  dispatcher, 32 in flight : {delivered_rate:10,.0f} deliveries/s  "
                  f"(CPU {deliver_cpu:.2f} s/s)")  # fmt: skip
            batched_rate, batched_cpu = await _deliver(folder, erp.url, deliver_count, batched=True)
            print(f"  batched, 100 per request : {batched_rate:10,.0f} deliveries/s  "
                  f"(CPU {batched_cpu:.2f} s/s)")  # fmt: skip
            naive_delivered = await _naive_deliver(folder, erp.url, naive_deliver_count)
            print(f"  one request + one commit : {naive_delivered:10,.0f} deliveries/s  "
                  "(baseline)")  # fmt: skip
            booked = await erp.booked()
            expected = 2 * deliver_count + naive_deliver_count
            if booked != expected:
                raise RuntimeError(f"the ERP booked {booked}, expected {expected}")
            print(f"  the ERP booked {booked:,} documents, each once")
    return {
        "enqueue_per_s": round(enqueue_rate),
        "delivered_per_s": round(delivered_rate),
        "speedup_vs_naive": round(enqueue_rate / naive_rate, 1),
        "naive_enqueue_per_s": round(naive_rate),
        "batched_delivered_per_s": round(batched_rate),
        "naive_delivered_per_s": round(naive_delivered),
        "delivery_speedup_vs_naive": round(delivered_rate / naive_delivered, 1),
        "enqueue_cpu_s_per_s": round(enqueue_cpu, 2),
        "delivery_cpu_s_per_s": round(deliver_cpu, 2),
        "latency_ms": latency_ms,
    }


def run(options: dict[str, str]) -> Result:
    return asyncio.run(_run(options))
