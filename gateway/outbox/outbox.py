"""The durable outbox, async: group commit on one SQLite connection in one worker thread.

:meth:`Outbox.store` returns once the documents (and the processor states that produced them)
are committed; requests that arrive while a commit runs are grouped into the next transaction,
so one fsync serves many documents. Delivery outcomes are grouped the same way. Every other
database call also runs in that one thread, so the event loop never waits for SQLite.

The outbox is bounded: when the undelivered deliveries (pending and dead letters) reach
``max_documents`` new documents are refused (the pipeline keeps the processors' state and
derives them again later); at ``alarm_at`` of the bound an alarm is logged and exported.
"""

from __future__ import annotations

__all__ = ["DeliveryOutcome", "Outbox"]

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.batch import now_ns
from gateway.config.model import OutboxConfig
from gateway.documents import Document
from gateway.errors import OutboxError
from gateway.metrics import Metrics
from gateway.outbox.metrics import collector_for
from gateway.outbox.store import DeliveryRow, OpenRow, OutboxStore, Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What happened to one delivery attempt."""

    delivery_id: int
    state: str
    """``delivered``, ``pending`` (retry at `next_attempt_ns`) or ``dead``."""
    reference: str = ""
    error: str = ""
    next_attempt_ns: int = 0
    destination: str = ""


_StoreRequest = tuple[Sequence[Document], Mapping[str, Mapping[str, Any]]]


class Outbox:
    """Durable store of business documents and their deliveries."""

    def __init__(
        self,
        path: str | Path,
        destinations_for: Callable[[str], Sequence[str]],
        config: OutboxConfig,
        metrics: Metrics,
        *,
        synchronous: str = "FULL",
    ) -> None:
        self.path = Path(path)
        self._destinations_for = destinations_for
        self._config = config
        self._metrics = metrics
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-read")
        self._store: OutboxStore | None = None
        self._read_store: OutboxStore | None = None
        """A second connection for the dispatchers' reads: WAL lets them run while a commit
        waits for its fsync, instead of queueing behind it."""
        self._pending_stores: list[tuple[_StoreRequest, asyncio.Future[int]]] = []
        self._pending_outcomes: list[tuple[Sequence[DeliveryOutcome], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stored_events: dict[str, asyncio.Event] = {}
        self._open: dict[str, dict[str, int]] = {}
        """Per destination: pending and dead deliveries, kept up to date in memory."""
        self._alarmed = False
        collector = collector_for(metrics.registry)
        collector.dead_letters = lambda: {k: v.get("dead", 0) for k, v in self._open.items()}
        collector.undelivered = lambda: self.undelivered
        collector.alarm = lambda: self._alarmed

    # --- lifecycle ---

    async def open(self) -> None:
        def _open() -> tuple[OutboxStore, dict[str, dict[str, int]]]:
            store = OutboxStore(self.path, synchronous=self._synchronous)
            return store, store.open_counts()

        self._store, counts = await self._run(_open, need_store=False)
        loop = asyncio.get_running_loop()
        self._read_store = await loop.run_in_executor(
            self._reader, lambda: OutboxStore(self.path, synchronous=self._synchronous)
        )
        self._set_counts(counts)
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")

    async def close(self) -> None:
        """Commit everything queued, then close the database."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._flush()
        loop = asyncio.get_running_loop()
        if self._read_store is not None:
            reader, self._read_store = self._read_store, None
            await loop.run_in_executor(self._reader, reader.close)
        if self._store is not None:
            store, self._store = self._store, None
            await loop.run_in_executor(self._executor, store.close)
        self._reader.shutdown(wait=True)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- counts, bound, alarm ---

    def _set_counts(self, counts: dict[str, dict[str, int]]) -> None:
        for name in set(self._open) - set(counts):
            counts[name] = {"pending": 0, "dead": 0}
        self._open = {
            name: {"pending": c.get("pending", 0), "dead": c.get("dead", 0)}
            for name, c in counts.items()
        }
        for name in self._open:
            self._publish(name)
        self._check_bound()

    def _add(self, destination: str, state: str, delta: int) -> None:
        counts = self._open.setdefault(destination, {"pending": 0, "dead": 0})
        counts[state] = max(0, counts[state] + delta)

    def _publish(self, destination: str) -> None:
        counts = self._open.get(destination, {})
        self._metrics.outbox_backlog.labels(destination).set(counts.get("pending", 0))

    @property
    def undelivered(self) -> int:
        """Pending and dead deliveries of every destination."""
        return sum(c["pending"] + c["dead"] for c in self._open.values())

    @property
    def pending_count(self) -> int:
        """Undelivered deliveries (pending and dead), as known to this process."""
        return self.undelivered

    def open_counts(self) -> dict[str, dict[str, int]]:
        """Per destination, pending and dead deliveries (from memory, no database access)."""
        return {name: dict(counts) for name, counts in self._open.items()}

    @property
    def alarm(self) -> bool:
        return self._alarmed

    def _check_bound(self) -> None:
        limit = self._config.max_documents
        level = self._config.alarm_at * limit
        count = self.undelivered
        if count >= level and not self._alarmed:
            self._alarmed = True
            log.warning(
                "outbox alarm: %d undelivered documents, %.0f%% of max_documents %d; "
                "new documents are refused at 100%% (check the destinations and the "
                "dead-letter queue: edge-gateway outbox list)",
                count,
                100 * count / limit,
                limit,
            )
        elif count < 0.9 * level and self._alarmed:
            self._alarmed = False
            log.info("outbox alarm cleared: %d undelivered documents", count)

    # --- writing ---

    async def store(
        self, documents: Sequence[Document], states: Mapping[str, Mapping[str, Any]]
    ) -> int:
        """Commit documents and processor states durably.

        Returns how many documents of the commit group were new (a repeated key is ignored).

        Raises :class:`OutboxError` when the database fails or the outbox is full.
        """
        if documents and self.undelivered >= self._config.max_documents:
            raise OutboxError(
                f"outbox full: {self.undelivered} undelivered documents "
                f"(max_documents {self._config.max_documents}); refusing new documents"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_stores.append(((documents, states), future))
        self._wake.set()
        return await future

    async def finish(self, outcome: DeliveryOutcome) -> None:
        """Record a delivery attempt's outcome (grouped with others into one commit)."""
        await self.finish_many([outcome])

    async def finish_many(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Record several outcomes; returns once they are durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_outcomes.append((outcomes, future))
        self._wake.set()
        await future

    def stored_event(self, destination: str) -> asyncio.Event:
        """Set whenever deliveries for `destination` became due (stored, requeued)."""
        return self._stored_events.setdefault(destination, asyncio.Event())

    def wake(self, destination: str | None = None) -> None:
        """Tell the dispatchers (of `destination`, or all) to look at the outbox again."""
        for name, event in self._stored_events.items():
            if destination is None or name == destination:
                event.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._config.commit_interval:
                await asyncio.sleep(self._config.commit_interval)
            await self._flush()

    async def _flush(self) -> None:
        self._wake.clear()
        stores, self._pending_stores = self._pending_stores, []
        outcomes, self._pending_outcomes = self._pending_outcomes, []
        if stores:
            await self._commit_stores(stores)
        if outcomes:
            await self._commit_outcomes(outcomes)

    async def _commit_stores(self, stores: list[tuple[_StoreRequest, asyncio.Future[int]]]) -> None:
        requests = [request for request, _ in stores]
        stamp = now_ns()
        try:
            new_documents, per_destination = await self._run(
                lambda store: store.store(requests, self._destinations_for, stamp)
            )
        except OutboxError as exc:
            for _, future in stores:
                if not future.done():
                    future.set_exception(exc)
            return
        for documents, _ in requests:
            for doc in documents:
                self._metrics.documents_stored.labels(doc.kind).inc()
        for name, count in per_destination.items():
            self._add(name, "pending", count)
            self._publish(name)
            self.stored_event(name).set()
        self._check_bound()
        for _, future in stores:
            if not future.done():
                future.set_result(new_documents)

    async def _commit_outcomes(
        self, outcomes: list[tuple[Sequence[DeliveryOutcome], asyncio.Future[None]]]
    ) -> None:
        stamp = now_ns()
        rows = [
            Outcome(o.delivery_id, o.state, o.reference, o.error, o.next_attempt_ns)
            for group, _ in outcomes
            for o in group
        ]
        try:
            await self._run(lambda store: store.finish(rows, stamp))
        except OutboxError as exc:
            for _, future in outcomes:
                if not future.done():
                    future.set_exception(exc)
            return
        touched: set[str] = set()
        for group, _ in outcomes:
            for o in group:
                if o.state == "pending" or not o.destination:
                    continue
                self._add(o.destination, "pending", -1)
                if o.state == "dead":
                    self._add(o.destination, "dead", 1)
                touched.add(o.destination)
        for name in touched:
            self._publish(name)
        self._check_bound()
        for _, future in outcomes:
            if not future.done():
                future.set_result(None)

    # --- the dispatchers' reads ---

    async def window(
        self, destination: str, limit: int, exclude_keys: Sequence[str] = ()
    ) -> list[OpenRow]:
        keys = list(exclude_keys)
        result: list[OpenRow] = await self._read(
            lambda store: store.open_window(destination, limit, keys)
        )
        return result

    async def rows(self, delivery_ids: Sequence[int]) -> list[DeliveryRow]:
        ids = list(delivery_ids)
        result: list[DeliveryRow] = await self._read(lambda store: store.rows(ids))
        return result

    async def _read(self, work: Callable[[OutboxStore], T]) -> T:
        store = self._read_store
        if store is None:
            raise OutboxError("the outbox is closed")
        return await asyncio.get_running_loop().run_in_executor(self._reader, work, store)

    async def reset_backoff(self, destination: str, now: int) -> int:
        result: int = await self._run(lambda store: store.reset_backoff(destination, now))
        return result

    # --- operations ---

    async def load_states(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = await self._run(lambda store: store.states())
        return result

    async def counts(self) -> dict[str, dict[str, int]]:
        """Per destination, deliveries per state, delivered ones kept for audit included."""
        result: dict[str, dict[str, int]] = await self._run(lambda store: store.counts())
        return result

    async def refresh(self) -> dict[str, dict[str, int]]:
        """Re-read the undelivered counts (after changes by ``edge-gateway outbox``) and wake
        the dispatchers."""
        counts: dict[str, dict[str, int]] = await self._run(lambda store: store.open_counts())
        self._set_counts(counts)
        self.wake()
        return self.open_counts()

    async def listing(
        self, *, state: str | None = None, destination: str | None = None, limit: int = 100
    ) -> list[DeliveryRow]:
        result: list[DeliveryRow] = await self._run(
            lambda store: store.listing(state=state, destination=destination, limit=limit)
        )
        return result

    async def get(self, delivery_id: int) -> DeliveryRow | None:
        result: DeliveryRow | None = await self._run(lambda store: store.get(delivery_id))
        return result

    async def requeue(
        self, delivery_ids: Sequence[int] | None = None, *, destination: str | None = None
    ) -> int:
        """Replay dead letters (by id, or all of a destination): pending and due now."""
        ids = None if delivery_ids is None else list(delivery_ids)
        moved: dict[str, tuple[int, int]] = await self._run(
            lambda store: store.requeue(ids, destination=destination, include_pending=True)
        )
        for name, (_, dead) in moved.items():
            self._add(name, "dead", -dead)
            self._add(name, "pending", dead)
            self._publish(name)
            self.wake(name)
        return sum(total for total, _ in moved.values())

    async def drop(self, delivery_ids: Sequence[int]) -> int:
        ids = list(delivery_ids)
        removed: list[tuple[int, str, str]] = await self._run(lambda store: store.drop(ids))
        for _, name, state in removed:
            self._add(name, state, -1)
            self._publish(name)
            self.wake(name)
        self._check_bound()
        return len(removed)

    async def purge(self, retention_s: float | None = None) -> int:
        """Remove delivered entries older than the retention (in chunks, so that stores go on
        in between). Returns how many were removed."""
        cut = now_ns() - int((retention_s or self._config.retention) * 1e9)
        removed = 0
        while True:
            count: int = await self._run(lambda store: store.purge(cut))
            removed += count
            if count == 0:
                return removed

    async def _run(self, work: Callable[..., T], *, need_store: bool = True) -> T:
        loop = asyncio.get_running_loop()
        if not need_store:
            return await loop.run_in_executor(self._executor, work)
        store = self._store
        if store is None:
            raise OutboxError("the outbox is closed")
        return await loop.run_in_executor(self._executor, work, store)
