"""Metrics of the northbound outputs, registered once per gateway registry."""

from __future__ import annotations

__all__ = ["OutputMetrics", "output_metrics"]

import weakref
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from gateway.metrics import Metrics


@dataclass(frozen=True, slots=True)
class OutputMetrics:
    buffer_messages: Gauge
    buffer_bytes: Gauge
    buffer_dropped: Counter
    buffer_alarm: Gauge
    replayed: Counter
    rejected: Counter
    commands: Counter
    lines: Counter


_by_metrics: weakref.WeakKeyDictionary[Metrics, OutputMetrics] = weakref.WeakKeyDictionary()


def output_metrics(metrics: Metrics) -> OutputMetrics:
    """The output metrics of `metrics`' registry (created on first use)."""
    found = _by_metrics.get(metrics)
    if found is not None:
        return found
    r = metrics.registry
    created = OutputMetrics(
        buffer_messages=Gauge(
            "gateway_buffer_messages",
            "Messages held in an output's store-and-forward buffer",
            ["output"],
            registry=r,
        ),
        buffer_bytes=Gauge(
            "gateway_buffer_bytes",
            "Bytes held in an output's store-and-forward buffer",
            ["output"],
            registry=r,
        ),
        buffer_dropped=Counter(
            "gateway_buffer_dropped",
            "Oldest messages dropped because a store-and-forward buffer was full",
            ["output"],
            registry=r,
        ),
        buffer_alarm=Gauge(
            "gateway_buffer_alarm",
            "1 while a store-and-forward buffer is fuller than its alarm level",
            ["output"],
            registry=r,
        ),
        replayed=Counter(
            "gateway_messages_replayed",
            "Buffered messages published after a reconnect",
            ["output"],
            registry=r,
        ),
        rejected=Counter(
            "gateway_messages_rejected",
            "Messages the broker refused (PUBACK reason code >= 0x80)",
            ["output"],
            registry=r,
        ),
        commands=Counter(
            "gateway_commands",
            "Write commands received over MQTT, by outcome (written, refused, failed)",
            ["output", "outcome"],
            registry=r,
        ),
        lines=Counter(
            "gateway_historian_lines",
            "Lines for the historian by outcome (written, rejected, dropped)",
            ["output", "outcome"],
            registry=r,
        ),
    )
    _by_metrics[metrics] = created
    return created
