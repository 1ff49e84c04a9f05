"""Business documents and events that processors emit.

A :class:`Document` is what the outbox stores and the business connectors deliver (a completion,
a lot result), and what the MQTT output publishes as an event. Its `key` is deterministic: the
same business fact always gets the same key, so sending it twice is harmless.

Every kind is declared once in :data:`KINDS` with the fields its body carries (name → type name)
and the topic suffix of its MQTT event; field mappings of the business connectors are validated
against these declarations at start-up.
"""

from __future__ import annotations

__all__ = ["KINDS", "Document", "DocumentKind", "KindSpec", "idempotency_key"]

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


@dataclass(frozen=True, slots=True)
class KindSpec:
    """What a document kind carries, and where its MQTT event goes (``<root>/<cell>/<topic>``)."""

    topic: str
    fields: Mapping[str, str]
    """Body field → type name: str, int, float, bool, timestamp (ISO 8601 string), list, dict."""


KINDS: dict[str, KindSpec] = {
    DocumentKind.COMPLETION: KindSpec(
        "mes/completion",
        {
            "gateway": "str",
            "machine": "str",
            "work_center": "str",
            "order": "str",
            "operation": "str",
            "material": "str",
            "lot": "str",
            "good": "int",
            "scrap": "int",
            "rework": "int",
            "unit": "str",
            "start": "timestamp",
            "end": "timestamp",
            "sequence": "int",
            "final": "bool",
            "trigger": "str",
            "handling_unit": "str",
            "idempotency_key": "str",
        },
    ),
    DocumentKind.LOT_RESULT: KindSpec(
        "quality/lot_result",
        {
            "gateway": "str",
            "machine": "str",
            "lot": "str",
            "order": "str",
            "material": "str",
            "start": "timestamp",
            "end": "timestamp",
            "characteristics": "list",
            "decision": "str",
            "idempotency_key": "str",
        },
    ),
}


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
