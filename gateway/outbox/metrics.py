"""Per-destination delivery figures for ``/metrics`` and ``/status``.

The counters and the latency histogram live in :class:`gateway.metrics.Metrics`; this module
adds what a histogram cannot say directly, computed when the metrics are scraped:

=============================================  ===============================================
``gateway_delivery_latency_p50_seconds``       median time from a document's creation to the
``gateway_delivery_latency_p99_seconds``       destination's acknowledgement (last 2,048)
``gateway_delivery_error_ratio``               failed attempts / all attempts, last 5 minutes
``gateway_destination_circuit_state``          0 closed, 1 open, 2 half-open
``gateway_outbox_dead_letters``                documents in the dead-letter queue
``gateway_outbox_undelivered``                 pending + dead deliveries, all destinations
``gateway_outbox_alarm``                       1 once undelivered reach the alarm level
=============================================  ===============================================
"""

from __future__ import annotations

__all__ = ["DeliveryStats", "OutboxCollector", "collector_for"]

import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCIES = 2048
_ERROR_WINDOW_S = 300


class DeliveryStats:
    """Recent latencies and outcomes of one destination."""

    def __init__(self) -> None:
        self._latencies = np.zeros(_LATENCIES, np.float64)
        self._count = 0
        self._buckets: deque[list[int]] = deque()
        """[second, attempts, failures], oldest first."""
        self.breaker_state: Callable[[], int] = lambda: 0

    def record(self, *, ok: bool, latency_s: float | None = None, now: float | None = None) -> None:
        if latency_s is not None:
            self._latencies[self._count % _LATENCIES] = latency_s
            self._count += 1
        second = int(now if now is not None else time.monotonic())
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        if not ok:
            bucket[2] += 1
        self._trim(second)

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - _ERROR_WINDOW_S:
            self._buckets.popleft()

    def latency_quantiles(self) -> tuple[float, float] | None:
        """(p50, p99) of the recent latencies, in seconds; None before the first delivery."""
        n = min(self._count, _LATENCIES)
        if n == 0:
            return None
        p50, p99 = np.quantile(self._latencies[:n], [0.5, 0.99])
        return float(p50), float(p99)

    def error_ratio(self, now: float | None = None) -> float:
        self._trim(int(now if now is not None else time.monotonic()))
        attempts = sum(b[1] for b in self._buckets)
        failures = sum(b[2] for b in self._buckets)
        return failures / attempts if attempts else 0.0

    def as_dict(self) -> dict[str, Any]:
        quantiles = self.latency_quantiles()
        return {
            "latency_p50_s": None if quantiles is None else round(quantiles[0], 4),
            "latency_p99_s": None if quantiles is None else round(quantiles[1], 4),
            "error_ratio_5m": round(self.error_ratio(), 4),
            "circuit": ("closed", "open", "half-open")[self.breaker_state()],
        }


class OutboxCollector(Collector):
    """Yields the figures above from the live objects, once per scrape."""

    def __init__(self) -> None:
        self.stats: dict[str, DeliveryStats] = {}
        self.dead_letters: Callable[[], dict[str, int]] = dict
        self.undelivered: Callable[[], int] = lambda: 0
        self.alarm: Callable[[], bool] = lambda: False

    def stats_for(self, destination: str) -> DeliveryStats:
        return self.stats.setdefault(destination, DeliveryStats())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p50 = GaugeMetricFamily(
            "gateway_delivery_latency_p50_seconds",
            "Median time from a document's creation to its acknowledgement (recent deliveries)",
            labels=["destination"],
        )
        p99 = GaugeMetricFamily(
            "gateway_delivery_latency_p99_seconds",
            "99th percentile of the time from creation to acknowledgement (recent deliveries)",
            labels=["destination"],
        )
        errors = GaugeMetricFamily(
            "gateway_delivery_error_ratio",
            "Failed delivery attempts / all attempts over the last 5 minutes",
            labels=["destination"],
        )
        circuit = GaugeMetricFamily(
            "gateway_destination_circuit_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open",
            labels=["destination"],
        )
        for name, stats in sorted(self.stats.items()):
            quantiles = stats.latency_quantiles()
            if quantiles is not None:
                p50.add_metric([name], quantiles[0])
                p99.add_metric([name], quantiles[1])
            errors.add_metric([name], stats.error_ratio())
            circuit.add_metric([name], stats.breaker_state())
        dead = GaugeMetricFamily(
            "gateway_outbox_dead_letters",
            "Documents in the dead-letter queue per destination",
            labels=["destination"],
        )
        for name, count in sorted(self.dead_letters().items()):
            dead.add_metric([name], count)
        yield from (p50, p99, errors, circuit, dead)
        yield GaugeMetricFamily(
            "gateway_outbox_undelivered",
            "Undelivered deliveries (pending and dead) of all destinations",
            value=self.undelivered(),
        )
        yield GaugeMetricFamily(
            "gateway_outbox_alarm",
            "1 when the undelivered documents reached the alarm level of the outbox bound",
            value=1.0 if self.alarm() else 0.0,
        )


_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, OutboxCollector] = (
    weakref.WeakKeyDictionary()
)


def collector_for(registry: CollectorRegistry) -> OutboxCollector:
    """The registry's collector (registered on first use)."""
    collector = _COLLECTORS.get(registry)
    if collector is None:
        collector = OutboxCollector()
        registry.register(collector)
        _COLLECTORS[registry] = collector
    return collector
