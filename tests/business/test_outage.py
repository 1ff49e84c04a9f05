"""A 60 s ERP outage while completions keep coming: the backlog grows, the circuit breaker
keeps the gateway from hammering the ERP, and afterwards the backlog drains, every order in
sequence and every document once.

The scenario runs on a clock ten times faster than real time (retry delays, breaker timers and
the outage all scaled alike), so the 60 s outage takes 6 s of wall time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.config.model import OutboxConfig
from gateway.documents import Document
from gateway.metrics import Metrics
from gateway.outbox.breaker import BreakerState
from gateway.outbox.clock import ScaledClock
from gateway.outbox.dispatcher import Dispatcher
from gateway.outbox.outbox import Outbox
from simulators.business import ErpSimulator
from tests.business.documents import completion
from tests.business.profiles import build, validate

SPEED = 10.0
OUTAGE_S = 60.0
ORDERS = ["1000201", "1000202", "1000203", "1000204", "1000205"]


@pytest.mark.slow
async def test_erp_outage_backlog_grows_then_drains_in_order(tmp_path: Path) -> None:
    clock = ScaledClock(SPEED)
    metrics = Metrics()
    async with ErpSimulator() as erp:
        config = validate(
            {
                "name": "erp",
                "system": "erp",
                "url": f"{erp.url}/api/v1/confirmations",
                "timeout": 2,
                "concurrency": 4,
                "retry": {"initial": 1, "maximum": 30},
                "breaker": {"failures": 5, "open_for": 5, "max_open_for": 20},
            }
        )
        outbox = Outbox(
            tmp_path / "outbox.db", lambda kind: ["erp"], OutboxConfig(commit_interval=0), metrics
        )
        await outbox.open()
        connector = build(config)
        dispatcher = Dispatcher(
            outbox,
            connector,
            concurrency=config.concurrency,
            retry=config.retry,
            breaker=config.breaker,
            metrics=metrics,
            clock=clock,
        )
        task = asyncio.create_task(dispatcher.run())
        sequence: dict[str, int] = defaultdict(int)
        made: list[Document] = []

        async def produce(clock_seconds: float) -> None:
            """Two completions per clock second, round robin over five orders."""
            end = time.monotonic() + clock_seconds / SPEED
            while time.monotonic() < end:
                order = ORDERS[len(made) % len(ORDERS)]
                sequence[order] += 1
                doc = completion(len(made) + 1, order=order, sequence=sequence[order])
                made.append(doc)
                await outbox.store([doc], {})
                await asyncio.sleep(0.5 / SPEED)

        def backlog() -> float:
            value = metrics.registry.get_sample_value(
                "gateway_outbox_backlog", {"destination": "erp"}
            )
            return value or 0.0

        def attempts(outcome: str) -> float:
            value = metrics.registry.get_sample_value(
                "gateway_deliveries_total", {"destination": "erp", "outcome": outcome}
            )
            return value or 0.0

        await produce(10)  # normal operation
        assert backlog() <= 4
        erp.faults.down_for(OUTAGE_S / SPEED)
        await produce(OUTAGE_S)
        during = backlog()
        failed_during = attempts("retry")
        breaker_during = dispatcher.breaker.state(clock.now_ns())
        assert erp.faults.is_down() or erp.faults.down_remaining_s() < 0.3
        assert during >= 100  # ~120 completions made while the ERP was away
        assert breaker_during is not BreakerState.CLOSED
        # the breaker let a handful of probes through, not one attempt per document
        assert failed_during <= 20, failed_during
        await produce(10)  # the ERP is back; production goes on
        async with asyncio.timeout(30 / SPEED * 3):
            while backlog() > 0 or len(erp.ledger) < len(made):
                await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await connector.close()
        await outbox.close()

    assert len(erp.ledger) == len(made)
    assert len({b.idempotency_key for b in erp.ledger}) == len(made)  # once each
    booked: dict[str, list[int]] = defaultdict(list)
    for booking in erp.ledger:
        booked[booking.document["order"]].append(booking.document["sequence"])
    for order in ORDERS:
        assert booked[order] == list(range(1, sequence[order] + 1)), order  # in sequence
    assert dispatcher.breaker.state(clock.now_ns()) is BreakerState.CLOSED
