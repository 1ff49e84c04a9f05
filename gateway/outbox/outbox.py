"""The durable outbox, async: group commit on one SQLite connection in one worker thread.

:meth:`Outbox.store` returns once the documents (and the processor states that produced them)
are committed; requests that arrive while a commit runs are grouped into the next transaction, so
one fsync serves many documents. Delivery outcomes are grouped the same way.
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
from gateway.outbox.store import DeliveryRow, OutboxStore

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
        self._store: OutboxStore | None = None
        self._pending_stores: list[tuple[_StoreRequest, asyncio.Future[int]]] = []
        self._pending_outcomes: list[tuple[DeliveryOutcome, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._stored_events: dict[str, asyncio.Event] = {}
        self._pending_count = 0
        self._alarmed = False

    # --- lifecycle ---

    async def open(self) -> None:
        def _open() -> tuple[OutboxStore, int]:
            store = OutboxStore(self.path, synchronous=self._synchronous)
            return store, store.pending_total()

        self._store, self._pending_count = await self._run(_open, need_store=False)
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")

    async def close(self) -> None:
        """Commit everything queued, then close the database."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._flush()
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.get_running_loop().run_in_executor(self._executor, store.close)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- writing ---

    async def store(
        self, documents: Sequence[Document], states: Mapping[str, Mapping[str, Any]]
    ) -> int:
        """Commit documents and processor states durably.

        Returns how many documents of the commit group were new (a repeated key is ignored).

        Raises :class:`OutboxError` when the database fails or the outbox is full.
        """
        if documents and self._pending_count >= self._config.max_documents:
            raise OutboxError(
                f"outbox full: {self._pending_count} undelivered documents "
                f"(max_documents {self._config.max_documents}); refusing new documents"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_stores.append(((documents, states), future))
        self._wake.set()
        return await future

    async def finish(self, outcome: DeliveryOutcome) -> None:
        """Record a delivery attempt's outcome (grouped with others into one commit)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_outcomes.append((outcome, future))
        self._wake.set()
        await future

    def stored_event(self, destination: str) -> asyncio.Event:
        """Set whenever new deliveries for `destination` were committed."""
        return self._stored_events.setdefault(destination, asyncio.Event())

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
            new_documents, new_deliveries = await self._run(
                lambda store: store.store(requests, self._destinations_for, stamp)
            )
        except OutboxError as exc:
            for _, future in stores:
                if not future.done():
                    future.set_exception(exc)
            return
        destinations: set[str] = set()
        for documents, _ in requests:
            for doc in documents:
                self._metrics.documents_stored.labels(doc.kind).inc()
                destinations.update(self._destinations_for(doc.kind))
        self._pending_count += new_deliveries
        self._check_bound()
        for name in destinations:
            self.stored_event(name).set()
        for _, future in stores:
            if not future.done():
                future.set_result(new_documents)

    async def _commit_outcomes(
        self, outcomes: list[tuple[DeliveryOutcome, asyncio.Future[None]]]
    ) -> None:
        stamp = now_ns()
        rows = [
            (o.delivery_id, o.state, o.reference, o.error, o.next_attempt_ns, stamp)
            for o, _ in outcomes
        ]
        try:
            await self._run(lambda store: store.finish(rows))
        except OutboxError as exc:
            for _, future in outcomes:
                if not future.done():
                    future.set_exception(exc)
            return
        self._pending_count -= sum(1 for o, _ in outcomes if o.state != "pending")
        self._pending_count = max(self._pending_count, 0)
        for _, future in outcomes:
            if not future.done():
                future.set_result(None)

    def _check_bound(self) -> None:
        limit = self._config.max_documents
        if self._pending_count >= 0.8 * limit and not self._alarmed:
            self._alarmed = True
            log.warning(
                "outbox alarm: %d undelivered documents, 80%% of max_documents %d",
                self._pending_count,
                limit,
            )
        elif self._pending_count < 0.7 * limit:
            self._alarmed = False

    # --- reading and operations ---

    async def due(self, destination: str, limit: int, busy_keys: set[str]) -> list[DeliveryRow]:
        stamp = now_ns()
        keys = sorted(busy_keys)
        result: list[DeliveryRow] = await self._run(
            lambda store: store.due(destination, stamp, limit, keys)
        )
        return result

    async def next_due_ns(self, destination: str) -> int | None:
        result: int | None = await self._run(lambda store: store.next_due_ns(destination))
        return result

    async def load_states(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = await self._run(lambda store: store.states())
        return result

    async def counts(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = await self._run(lambda store: store.counts())
        return result

    async def purge(self, retention_s: float | None = None) -> int:
        cut = now_ns() - int((retention_s or self._config.retention) * 1e9)
        result: int = await self._run(lambda store: store.purge(cut))
        return result

    @property
    def pending_count(self) -> int:
        """Undelivered deliveries, as known to this process."""
        return self._pending_count

    async def _run(self, work: Callable[..., T], *, need_store: bool = True) -> T:
        loop = asyncio.get_running_loop()
        if not need_store:
            return await loop.run_in_executor(self._executor, work)
        store = self._store
        if store is None:
            raise OutboxError("the outbox is closed")
        return await loop.run_in_executor(self._executor, work, store)
