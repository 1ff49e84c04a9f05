"""Delivery of stored documents to one destination.

Per destination, only the oldest undelivered delivery of each ordering key (the order number)
is eligible, so one order's documents arrive in sequence while different orders go in
parallel, up to the destination's concurrency. A failed attempt is classified by the
connector's :class:`~gateway.errors.DeliveryError`: retryable ones wait a capped exponential
backoff with jitter (or the target's Retry-After, when longer); the others go to the
dead-letter queue with the target's reason and, with ``on_dead_letter: hold_order``, hold the
rest of their order until an operator retries or drops them.

A circuit breaker (:mod:`gateway.outbox.breaker`) stops all attempts while the target is down;
its half-open probe ignores the document's own backoff, and when it succeeds every waiting
document becomes due at once, so the backlog drains right after an outage.

Sync strategies: ``immediate`` (each document when stored), ``batched`` (several documents
per request, every `batch_size` documents or `max_wait` seconds; documents of one order stay in
sequence inside a batch), ``scheduled`` (only documents stored before the last release time in
`at` are eligible: the backlog goes out at the shift end).
"""

from __future__ import annotations

__all__ = ["Dispatcher", "Selection", "select_runs"]

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.config.destinations import BreakerPolicy, RetryPolicy, SyncMode, SyncPolicy
from gateway.connectors.base import BatchConnector
from gateway.errors import DeliveryError, OutboxError
from gateway.metrics import Metrics
from gateway.outbox.breaker import BreakerState, CircuitBreaker
from gateway.outbox.clock import SYSTEM_CLOCK, Clock
from gateway.outbox.metrics import collector_for
from gateway.outbox.outbox import DeliveryOutcome, Outbox
from gateway.outbox.schedule import release_window
from gateway.outbox.store import DeliveryRow, OpenRow
from gateway.runtime.interfaces import Connector

log = logging.getLogger(__name__)

_IDLE_POLL_S = 5.0
"""Real seconds between two looks at an idle outbox (changes made by the outbox command)."""
_MAX_RETRY_AFTER_S = 3600.0
_MAX_EXCLUDED_KEYS = 4000


@dataclass
class Selection:
    """What can be sent now, from a window of undelivered rows in id order."""

    runs: list[list[OpenRow]] = field(default_factory=list)
    """Per ordering key, its head and the rows right after it that may go in the same batch."""
    blocked: set[str] = field(default_factory=set)
    """Keys whose head cannot go now (in flight, waiting for a retry, held by a dead letter)."""
    wake_ns: int | None = None
    """When the earliest waiting head becomes due."""


def select_runs(
    rows: Iterable[OpenRow],
    *,
    now_ns: int,
    busy: set[str],
    cutoff_ns: int | None = None,
    hold_dead: bool = True,
    ignore_backoff: bool = False,
    run_limit: int = 1,
    max_runs: int = 1,
) -> Selection:
    """Pick eligible heads (and runs behind them) from rows ordered by id. Pure function."""
    selection = Selection()
    open_runs: dict[str, list[OpenRow]] = {}
    closed: set[str] = set()
    for row in rows:
        key = row.ordering_key
        if key in closed or key in selection.blocked:
            continue
        run = open_runs.get(key)
        due = ignore_backoff or row.next_attempt_ns <= now_ns
        released = cutoff_ns is None or row.created_ns <= cutoff_ns
        if run is None:
            if key in busy:
                selection.blocked.add(key)
            elif row.state == "dead":
                if hold_dead:
                    selection.blocked.add(key)
                # else: skip it, the next row of this key is its head
            elif not released:
                selection.blocked.add(key)
            elif not due:
                selection.blocked.add(key)
                if selection.wake_ns is None or row.next_attempt_ns < selection.wake_ns:
                    selection.wake_ns = row.next_attempt_ns
            elif len(selection.runs) >= max_runs:
                closed.add(key)
            else:
                run = [row]
                open_runs[key] = run
                selection.runs.append(run)
            continue
        if row.state == "dead":
            if hold_dead:
                closed.add(key)
            continue
        if len(run) >= run_limit or not released or row.next_attempt_ns > now_ns:
            closed.add(key)
            continue
        run.append(row)
    return selection


class Dispatcher:
    """Runs until cancelled, delivering one destination's backlog."""

    def __init__(
        self,
        outbox: Outbox,
        connector: Connector,
        *,
        concurrency: int = 4,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        sync: SyncPolicy | None = None,
        hold_on_dead: bool = True,
        metrics: Metrics,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = connector.name
        self._outbox = outbox
        self._connector = connector
        self._concurrency = concurrency
        self._retry = retry or RetryPolicy()
        self._sync = sync or SyncPolicy()
        self._hold_on_dead = hold_on_dead
        self._metrics = metrics
        self._clock = clock or SYSTEM_CLOCK
        self._rng = rng or random.Random()
        self.breaker = CircuitBreaker(breaker or BreakerPolicy())
        self._stats = collector_for(metrics.registry).stats_for(self.name)
        self._count_delivered = metrics.deliveries.labels(self.name, "delivered")
        self._count_retry = metrics.deliveries.labels(self.name, "retry")
        self._count_dead = metrics.deliveries.labels(self.name, "dead")
        self._latency = metrics.delivery_latency.labels(self.name)
        self._stats.breaker_state = lambda: int(self.breaker.state(self._clock.now_ns()))
        self._batching = self._sync.mode is SyncMode.BATCHED
        if self._batching and not isinstance(connector, BatchConnector):
            raise ValueError(f"{self.name}: this connector cannot send batches")
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = 0
        """Requests in flight (a task's outcome may still be being committed after that)."""
        self._done = asyncio.Event()
        self._fatal: BaseException | None = None
        self._reset_backoff = False

    # --- the loop ---

    async def run(self) -> None:
        stored = self._outbox.stored_event(self.name)
        self._fatal = None
        try:
            while True:
                if self._fatal is not None:
                    raise self._fatal
                stored.clear()
                self._done.clear()
                if self._reset_backoff:
                    self._reset_backoff = False
                    await self._outbox.reset_backoff(self.name, self._clock.now_ns())
                delay = await self._dispatch()
                await self._wait(stored, delay)
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wait(self, stored: asyncio.Event, delay: float | None) -> None:
        """Until something is stored, an attempt ends, or `delay` clock seconds passed."""
        timeout = _IDLE_POLL_S
        if delay is not None:
            timeout = min(timeout, max(0.0, self._clock.real_seconds(delay)) + 0.001)
        waiters = [asyncio.ensure_future(stored.wait()), asyncio.ensure_future(self._done.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _dispatch(self) -> float | None:
        """Start what may start now; the clock seconds until something may become due."""
        now = self._clock.now_ns()
        state = self.breaker.state(now)
        if state is BreakerState.OPEN:
            return self.breaker.remaining_s(now)
        probing = state is BreakerState.HALF_OPEN
        limit = 1 if probing else self._concurrency
        free = limit - self._sending
        if free <= 0 or (self._sending and free < max(1, limit // 4)):
            return None
        cutoff = next_release = None
        if self._sync.mode is SyncMode.SCHEDULED:
            cutoff, next_release = release_window(now, self._sync.at, self._sync.timezone)
        run_limit = self._sync.batch_size if self._batching and not probing else 1
        selection = await self._select(
            now,
            cutoff=cutoff,
            ignore_backoff=probing,
            run_limit=run_limit,
            max_runs=free if run_limit == 1 else free * run_limit,
        )
        wake = [t for t in (selection.wake_ns, next_release) if t is not None]
        requests = self._requests(selection.runs, free, run_limit)
        if self._batching and requests and not probing:
            requests, flush_at = self._ripe(requests, now)
            if flush_at is not None:
                wake.append(flush_at)
        if requests:
            rows = {
                r.id: r for r in await self._outbox.rows([o.id for req in requests for o in req])
            }
            for request in requests:
                full = [rows[o.id] for o in request if o.id in rows]
                if full:
                    self._start(full)
        return (min(wake) - now) / 1e9 if wake else None

    async def _select(
        self,
        now: int,
        *,
        cutoff: int | None,
        ignore_backoff: bool,
        run_limit: int,
        max_runs: int,
    ) -> Selection:
        window = min(10_000, max(64, 4 * max_runs * run_limit if run_limit > 1 else 8 * max_runs))
        exclude = sorted(self._busy)
        total = Selection()
        for _ in range(8):
            rows = await self._outbox.window(self.name, window, exclude)
            part = select_runs(
                rows,
                now_ns=now,
                busy=self._busy,
                cutoff_ns=cutoff,
                hold_dead=self._hold_on_dead,
                ignore_backoff=ignore_backoff,
                run_limit=run_limit,
                max_runs=max_runs - len(total.runs),
            )
            total.runs += part.runs
            total.blocked |= part.blocked
            if part.wake_ns is not None and (total.wake_ns is None or part.wake_ns < total.wake_ns):
                total.wake_ns = part.wake_ns
            if len(total.runs) >= max_runs or len(rows) < window:
                break
            exclude = sorted(
                set(exclude) | part.blocked | {run[0].ordering_key for run in part.runs}
            )
            if len(exclude) > _MAX_EXCLUDED_KEYS:
                break
        return total

    @staticmethod
    def _requests(runs: list[list[OpenRow]], free: int, run_limit: int) -> list[list[OpenRow]]:
        """Group runs into at most `free` requests of at most `run_limit` rows (a run is never
        split across requests: requests may complete in any order)."""
        if run_limit == 1:
            return [run[:1] for run in runs[:free]]
        requests: list[list[OpenRow]] = []
        for run in runs:
            if requests and len(requests[-1]) + len(run) <= run_limit:
                requests[-1].extend(run)
            elif len(requests) < free:
                requests.append(list(run))
        return requests

    def _ripe(
        self, requests: list[list[OpenRow]], now: int
    ) -> tuple[list[list[OpenRow]], int | None]:
        """Batched mode: full batches go; a partial one only once its oldest row waited
        `max_wait`."""
        size = self._sync.batch_size
        wait_ns = int(self._sync.max_wait * 1e9)
        ready = [r for r in requests if len(r) >= size]
        partial = [r for r in requests if len(r) < size]
        flush_at = None
        for request in partial:
            oldest = min(row.created_ns for row in request)
            if oldest + wait_ns <= now:
                ready.append(request)
            else:
                flush_at = oldest + wait_ns if flush_at is None else min(flush_at, oldest + wait_ns)
        return ready, flush_at

    def _start(self, rows: list[DeliveryRow]) -> None:
        keys = {row.document.ordering_key for row in rows}
        self._busy |= keys
        task = asyncio.create_task(self._attempt(rows, keys), name=f"deliver:{self.name}")
        self._tasks.add(task)
        self._sending += 1

    # --- one request ---

    async def _attempt(self, rows: list[DeliveryRow], keys: set[str]) -> None:
        """Send, then record the outcome. The request's slot is free once the answer is in;
        the order (its keys) stays busy until the outcome is committed, so the next document
        of the order never overtakes an unrecorded one."""
        task = asyncio.current_task()
        sending = True
        try:
            try:
                if self._batching:
                    outcomes = await self._deliver_batch(rows)
                else:
                    outcomes = [await self._deliver_one(rows[0])]
            finally:
                sending = False
                self._sending -= 1
                self._done.set()
            try:
                await self._outbox.finish_many(outcomes)
            except OutboxError as exc:
                log.error("%s: outcomes not recorded: %s", self.name, exc)
                self._fatal = exc
        finally:
            if sending:
                self._sending -= 1
            self._busy -= keys
            if task is not None:
                self._tasks.discard(task)
            self._done.set()

    async def _deliver_one(self, row: DeliveryRow) -> DeliveryOutcome:
        try:
            reference = await self._connector.deliver(row.document.as_document())
        except DeliveryError as exc:
            return self._failed(row, exc)
        except Exception as exc:  # a connector bug must not spin or stop the destination
            log.exception("%s: connector failed on document %s", self.name, row.document.key)
            error = DeliveryError(self.name, f"connector failure: {exc!r}", retryable=True)
            return self._failed(row, error)
        return self._delivered(row, reference)

    async def _deliver_batch(self, rows: list[DeliveryRow]) -> list[DeliveryOutcome]:
        assert isinstance(self._connector, BatchConnector)
        try:
            results = await self._connector.deliver_batch(
                [row.document.as_document() for row in rows]
            )
        except DeliveryError as exc:
            return [self._failed(row, exc) for row in rows]
        except Exception as exc:
            log.exception("%s: connector failed on a batch of %d", self.name, len(rows))
            error = DeliveryError(self.name, f"connector failure: {exc!r}", retryable=True)
            return [self._failed(row, error) for row in rows]
        outcomes = []
        for row, result in zip(rows, results, strict=False):
            if isinstance(result, DeliveryError):
                outcomes.append(self._failed(row, result))
            else:
                outcomes.append(self._delivered(row, result))
        for row in rows[len(results) :]:
            outcomes.append(
                self._failed(row, DeliveryError(self.name, "no result in batch", retryable=True))
            )
        return outcomes

    def _delivered(self, row: DeliveryRow, reference: str) -> DeliveryOutcome:
        latency = max(0.0, (time.time_ns() - row.document.created_ns) / 1e9)
        self._count_delivered.inc()
        self._latency.observe(latency)
        self._stats.record(ok=True, latency_s=latency)
        if self.breaker.success():
            log.info("%s: destination answers again; the backlog is sent now", self.name)
            self._reset_backoff = True
        return DeliveryOutcome(row.id, "delivered", reference=reference, destination=self.name)

    def _failed(self, row: DeliveryRow, exc: DeliveryError) -> DeliveryOutcome:
        self._stats.record(ok=False)
        document = row.document
        if not exc.retryable:
            self.breaker.success()  # the target answered: it is up
            self._count_dead.inc()
            log.error(
                "%s: document %s (%s, order %s) refused, moved to the dead-letter queue%s: %s",
                self.name,
                document.key,
                document.kind,
                document.ordering_key,
                " (later documents of this order wait for it)" if self._hold_on_dead else "",
                exc,
            )
            return DeliveryOutcome(row.id, "dead", error=str(exc), destination=self.name)
        now = self._clock.now_ns()
        self._count_retry.inc()
        if self.breaker.failure(now, exc.retry_after):
            log.warning(
                "%s: circuit open for %.1f s after %s: %s",
                self.name,
                self.breaker.remaining_s(now),
                "a Retry-After" if exc.retry_after else "repeated failures",
                exc,
            )
        cap = min(self._retry.maximum, self._retry.initial * self._retry.multiplier**row.attempts)
        delay = self._rng.uniform(cap / 2, cap)
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, _MAX_RETRY_AFTER_S))
        log.warning(
            "%s: document %s attempt %d failed, retrying in %.1f s: %s",
            self.name,
            document.key,
            row.attempts + 1,
            delay,
            exc,
        )
        return DeliveryOutcome(
            row.id,
            "pending",
            error=str(exc),
            next_attempt_ns=now + int(delay * 1e9),
            destination=self.name,
        )

    def status(self) -> dict[str, object]:
        """Circuit, requests in flight, recent latency p50/p99 and error ratio (for /status)."""
        return {**self._stats.as_dict(), "in_flight": self._sending}

    @property
    def in_flight(self) -> int:
        """Requests waiting for an answer."""
        return self._sending
