"""Business documents and events that processors emit.

A :class:`Document` is what the outbox stores and the business connectors deliver (a completion,
a lot result), and what the MQTT output publishes as an event. Its `key` is deterministic: the
same business fact always gets the same key, so sending it twice is harmless.
"""

from __future__ import annotations

__all__ = ["Document", "DocumentKind", "idempotency_key"]

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway.batch import now_ns


class DocumentKind(StrEnum):
    COMPLETION = "completion"
    """Good/scrap/rework of one order, operation and lot segment on one machine."""
    LOT_RESULT = "lot_result"
    """Quality summary and decision of a finished lot."""


def idempotency_key(*parts: object) -> str:
    """A stable key from the parts that identify a business fact (32 hex characters)."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Document:
    """One business document."""

    kind: str
    key: str
    """Deterministic idempotency key."""
    cell: str
    """The machine (ISA-95 work unit) it is about; part of its MQTT topic."""
    body: Mapping[str, Any]
    """JSON-able content."""
    ordering_key: str = ""
    """Documents with the same ordering key go to each destination one after another."""
    created_ns: int = field(default_factory=now_ns)
