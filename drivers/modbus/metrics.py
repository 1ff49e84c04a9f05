"""The Modbus driver's own metrics, registered once in a gateway's Prometheus registry."""

from __future__ import annotations

__all__ = ["ModbusMetrics"]

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.metrics import Metrics

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, ModbusMetrics] = (
    weakref.WeakKeyDictionary()
)


class ModbusMetrics:
    """Request outcomes, back-off skips and known bad ranges, per device."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gateway_modbus_requests",
            "Modbus requests by outcome (ok, exception, timeout, malformed)",
            ["device", "outcome"],
            registry=registry,
        )
        self.backoff_skips = Counter(
            "gateway_modbus_backoff_skips",
            "Polls skipped because the device keeps timing out (backed off)",
            ["device"],
            registry=registry,
        )
        self.bad_ranges = Gauge(
            "gateway_modbus_bad_ranges",
            "Address ranges the device answered 'illegal data address' for, left out of reads",
            ["device"],
            registry=registry,
        )

    @classmethod
    def of(cls, metrics: Metrics) -> ModbusMetrics:
        """The instance for the gateway's registry (created on first use)."""
        found = _BY_REGISTRY.get(metrics.registry)
        if found is None:
            found = _BY_REGISTRY[metrics.registry] = cls(metrics.registry)
        return found
