"""Delivery of stored documents to one destination.

Per destination, the oldest pending delivery of each ordering key (the order number) is eligible,
so one order's documents arrive in sequence while different orders go in parallel, up to the
destination's concurrency. A failed attempt is classified by the connector's
:class:`~gateway.errors.DeliveryError`: retryable ones wait a capped exponential backoff with full
jitter (or the target's Retry-After, when longer); the others go to the dead-letter queue with
the target's reason.
"""

from __future__ import annotations

__all__ = ["Dispatcher"]

import asyncio
import contextlib
import logging
import random

from gateway.batch import now_ns
from gateway.config.destinations import RetryPolicy
from gateway.errors import DeliveryError
from gateway.metrics import Metrics
from gateway.outbox.outbox import DeliveryOutcome, Outbox
from gateway.outbox.store import DeliveryRow
from gateway.runtime.interfaces import Connector

log = logging.getLogger(__name__)

_IDLE_POLL_S = 5.0


class Dispatcher:
    """Runs until cancelled, delivering one destination's backlog."""

    def __init__(
        self,
        outbox: Outbox,
        connector: Connector,
        *,
        concurrency: int,
        retry: RetryPolicy,
        metrics: Metrics,
        rng: random.Random | None = None,
    ) -> None:
        self.name = connector.name
        self._outbox = outbox
        self._connector = connector
        self._concurrency = concurrency
        self._retry = retry
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        """Ordering key → the task delivering its head document."""
        self._done = asyncio.Event()

    async def run(self) -> None:
        stored = self._outbox.stored_event(self.name)
        try:
            while True:
                stored.clear()
                self._done.clear()
                free = self._concurrency - len(self._in_flight)
                if free > 0:
                    rows = await self._outbox.due(self.name, free, set(self._in_flight))
                    for row in rows:
                        key = row.document.ordering_key
                        self._in_flight[key] = asyncio.create_task(self._attempt(row))
                    if len(rows) == free:
                        continue
                await self._wait(stored)
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wait(self, stored: asyncio.Event) -> None:
        """Until something is stored, an attempt ends, or the next retry is due."""
        timeout = _IDLE_POLL_S
        if len(self._in_flight) < self._concurrency:
            due = await self._outbox.next_due_ns(self.name)
            if due is not None:
                timeout = min(timeout, max(0.0, (due - now_ns()) / 1e9) + 0.001)
        waiters = [asyncio.ensure_future(stored.wait()), asyncio.ensure_future(self._done.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _attempt(self, row: DeliveryRow) -> None:
        key = row.document.ordering_key
        try:
            outcome = await self._deliver(row)
            await self._outbox.finish(outcome)
        finally:
            self._in_flight.pop(key, None)
            self._done.set()

    async def _deliver(self, row: DeliveryRow) -> DeliveryOutcome:
        document = row.document.as_document()
        try:
            reference = await self._connector.deliver(document)
        except DeliveryError as exc:
            return self._failed(row, exc)
        self._metrics.deliveries.labels(self.name, "delivered").inc()
        self._metrics.delivery_latency.labels(self.name).observe(
            max(0.0, (now_ns() - document.created_ns) / 1e9)
        )
        return DeliveryOutcome(row.id, "delivered", reference=reference)

    def _failed(self, row: DeliveryRow, exc: DeliveryError) -> DeliveryOutcome:
        if not exc.retryable:
            self._metrics.deliveries.labels(self.name, "dead").inc()
            log.error(
                "%s: document %s (%s, order %s) refused, moved to the dead-letter queue: %s",
                self.name,
                row.document.key,
                row.document.kind,
                row.document.ordering_key,
                exc,
            )
            return DeliveryOutcome(row.id, "dead", error=str(exc))
        self._metrics.deliveries.labels(self.name, "retry").inc()
        cap = min(self._retry.maximum, self._retry.initial * self._retry.multiplier**row.attempts)
        delay = self._rng.uniform(cap / 2, cap)
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, 3600.0))
        log.warning(
            "%s: document %s attempt %d failed, retrying in %.1f s: %s",
            self.name,
            row.document.key,
            row.attempts + 1,
            delay,
            exc,
        )
        return DeliveryOutcome(
            row.id, "pending", error=str(exc), next_attempt_ns=now_ns() + int(delay * 1e9)
        )
