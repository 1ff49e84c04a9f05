"""Generic REST/JSON connector for ERP confirmations, WMS goods receipts and QMS results.

The document's idempotency key travels in the ``Idempotency-Key`` header, so a resend after a
crash between "sent" and "recorded as sent" is recognised by the target.
"""

from __future__ import annotations

__all__ = ["RestConnector", "body_for"]

from collections.abc import Mapping
from typing import Any

import aiohttp

from gateway.config.destinations import RestDestinationConfig, System
from gateway.connectors.http import auth_headers, classify_response
from gateway.documents import Document, DocumentKind
from gateway.errors import DeliveryError

_KINDS: dict[System, frozenset[str]] = {
    System.ERP: frozenset({DocumentKind.COMPLETION}),
    System.WMS: frozenset({DocumentKind.COMPLETION}),
    System.QMS: frozenset({DocumentKind.LOT_RESULT}),
}

_CONFIRMATION_FIELDS = (
    "gateway",
    "work_center",
    "machine",
    "order",
    "operation",
    "material",
    "lot",
    "good",
    "scrap",
    "rework",
    "unit",
    "start",
    "end",
    "sequence",
    "final",
    "trigger",
    "handling_unit",
)


def body_for(system: System, document: Document) -> dict[str, Any] | None:
    """The JSON body a system receives for a document; None when there is nothing to send."""
    body: Mapping[str, Any] = document.body
    if system is System.ERP:
        return {field: body[field] for field in _CONFIRMATION_FIELDS if field in body}
    if system is System.WMS:
        if int(body.get("good", 0)) <= 0:
            return None  # nothing to put away
        return {
            "material": body.get("material", ""),
            "lot": body.get("lot", ""),
            "quantity": body["good"],
            "unit": body.get("unit", "EA"),
            "handling_unit": body.get("handling_unit", ""),
            "order": body.get("order", ""),
            "work_center": body.get("work_center", ""),
        }
    return dict(body)


class RestConnector:
    """Posts JSON documents to one URL with an idempotency key."""

    def __init__(self, config: RestDestinationConfig) -> None:
        self.name = config.name
        self._config = config
        self._headers = {
            "Content-Type": "application/json",
            **config.headers,
            **auth_headers(config.auth),
        }
        self._session: aiohttp.ClientSession | None = None

    def accepts(self, document_kind: str) -> bool:
        return document_kind in _KINDS[self._config.system]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
                connector=aiohttp.TCPConnector(limit=self._config.concurrency),
            )
        return self._session

    async def deliver(self, document: Document) -> str:
        body = body_for(self._config.system, document)
        if body is None:
            return "nothing to send"
        body.update(self._config.constants)
        headers = {**self._headers, "Idempotency-Key": document.key}
        try:
            async with self._client().request(
                self._config.method, self._config.url, json=body, headers=headers
            ) as response:
                text = await response.text()
                error = classify_response(
                    self.name, response.status, text, response.headers.get("Retry-After")
                )
                if error is not None:
                    raise error
                return _reference(text)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DeliveryError(
                self.name, f"{type(exc).__name__}: {exc or 'timed out'}", retryable=True
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reference(text: str) -> str:
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return ""
    if isinstance(data, dict):
        for key in ("id", "name", "confirmation", "reference"):
            if key in data:
                return str(data[key])
    return ""
