"""The gateway's metrics, in a Prometheus registry of its own (one per gateway instance).

Components get the :class:`Metrics` object and update the metric they own; the API serves
``/metrics`` from the same registry.
"""

from __future__ import annotations

__all__ = ["Metrics"]

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.samples_read = Counter(
            "gateway_samples_read", "Samples read from devices", ["device"], registry=r
        )
        self.batches_dropped = Counter(
            "gateway_batches_dropped",
            "Batches dropped because a queue was full (oldest first)",
            ["queue"],
            registry=r,
        )
        self.component_restarts = Counter(
            "gateway_component_restarts",
            "Restarts of a device, output or dispatcher after a failure",
            ["component"],
            registry=r,
        )
        self.polls_missed = Counter(
            "gateway_polls_missed",
            "Poll cycles skipped because the previous one overran",
            ["device", "group"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "gateway_poll_duration_seconds",
            "Duration of one poll cycle",
            ["device"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.values_published = Counter(
            "gateway_values_published", "Tag values handed to an output", ["output"], registry=r
        )
        self.messages_published = Counter(
            "gateway_messages_published", "Messages published by an output", ["output"], registry=r
        )
        self.documents_stored = Counter(
            "gateway_documents_stored",
            "Business documents committed to the outbox",
            ["kind"],
            registry=r,
        )
        self.deliveries = Counter(
            "gateway_deliveries",
            "Delivery attempts by outcome (delivered, retry, dead)",
            ["destination", "outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "gateway_delivery_latency_seconds",
            "Time from a document's creation to its acknowledgement by the destination",
            ["destination"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "gateway_outbox_backlog",
            "Undelivered documents per destination",
            ["destination"],
            registry=r,
        )
        self.processor_warnings = Counter(
            "gateway_processor_warnings",
            "Conditions a processor noticed (counter reset, rollover, parts without order)",
            ["processor", "kind"],
            registry=r,
        )
