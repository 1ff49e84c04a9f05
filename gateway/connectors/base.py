"""What business connectors offer beyond :class:`~gateway.runtime.interfaces.Connector`.

Optional abilities, each a one-method protocol checked with ``isinstance``:

* :class:`PreviewConnector` renders what would be sent for a document, without sending it
  (``edge-gateway outbox show``, and to check a mapping on a dead letter before replaying it).
* :class:`BatchConnector` delivers several documents in one request (sync mode ``batched``).
"""

from __future__ import annotations

__all__ = [
    "SKIPPED",
    "BatchConnector",
    "PreviewConnector",
    "Rendered",
    "apply_mapping",
    "reference_from",
]

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gateway.connectors.mapping import CompiledMapping, MappingError
from gateway.documents import Document
from gateway.errors import DeliveryError

SKIPPED = "skipped: "
"""Prefix of the reference recorded for a document the target does not need (e.g. a goods
receipt of zero parts); it counts as delivered."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """The request a connector would send for one document."""

    method: str
    url: str
    content_type: str
    body: str
    note: str = ""
    """What else happens (a look-up before posting, a CSRF token fetch...)."""


@runtime_checkable
class PreviewConnector(Protocol):
    def render(self, document: Document) -> Rendered | None:
        """The request for `document`, or None when nothing would be sent. Raises
        :class:`~gateway.errors.DeliveryError` (not retryable) when the mapping fails."""
        ...


@runtime_checkable
class BatchConnector(Protocol):
    async def deliver_batch(self, documents: Sequence[Document]) -> list[str | DeliveryError]:
        """Deliver several documents in one request; one result per document, in order
        (the target's reference, or the error of that document). Raises
        :class:`~gateway.errors.DeliveryError` when the whole request failed."""
        ...


def apply_mapping(
    destination: str, mappings: Mapping[str, CompiledMapping], document: Document
) -> dict[str, Any]:
    """The mapped body of `document`; a mapping failure is a non-retryable DeliveryError
    (the document goes to the dead-letter queue until the mapping is fixed)."""
    mapping = mappings.get(document.kind)
    if mapping is None:
        raise DeliveryError(
            destination, f"no mapping for {document.kind!r} documents", retryable=False
        )
    try:
        return mapping.apply(document.body)
    except MappingError as exc:
        raise DeliveryError(destination, f"mapping: {exc}", retryable=False) from exc


def reference_from(data: Any) -> str:
    """The target's id of what it booked, from a JSON answer (``id``, ``name``...)."""
    if isinstance(data, dict):
        for wrapper in ("d", "data"):
            inner = data.get(wrapper)
            if isinstance(inner, dict):
                data = inner
                break
        for key in ("id", "name", "reference", "confirmation", "ID"):
            value = data.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
    return ""
