"""Generic REST/JSON connector for ERP confirmations, WMS goods receipts and QMS results.

The body is the destination's mapping applied to the document. A resend after a crash between
"sent" and "recorded as sent" is made harmless by the destination's idempotency mode:

``header`` (default)
    the document's key in the ``Idempotency-Key`` header (or another header name);
``field``
    the key in a body field (``external_reference``); the target refuses a second document
    with the same reference, and that refusal (409, or a configured text) counts as delivered;
``lookup``
    the key in a body field, and a GET of ``lookup_url`` before each POST: when the target
    already has it, nothing is posted.
"""

from __future__ import annotations

__all__ = ["RestConnector"]

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson

from gateway.config.destinations import RestDestinationConfig, System
from gateway.connectors.base import SKIPPED, Rendered, apply_mapping, reference_from
from gateway.connectors.defaults import COMPLETION, compile_mappings
from gateway.connectors.http import HttpClient, HttpReply, classify, during
from gateway.documents import Document
from gateway.errors import DeliveryError


class RestConnector:
    """Posts JSON documents, one per request (or in batches to `batch_url`)."""

    def __init__(self, config: RestDestinationConfig, *, gateway_id: str = "") -> None:
        self.name = config.name
        self._config = config
        self._mappings = compile_mappings(config)
        self._http = HttpClient(
            config.name,
            timeout=config.timeout,
            concurrency=config.concurrency,
            auth=config.auth,
            tls=config.tls,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                **config.headers,
            },
        )
        self._duplicate_texts = [t.lower() for t in config.already_exists.body_contains]

    def accepts(self, document_kind: str) -> bool:
        return document_kind in self._mappings

    def url_for(self, kind: str) -> str:
        return self._config.endpoints.get(kind, self._config.url)

    def body(self, document: Document) -> dict[str, Any] | None:
        """The JSON body; None when there is nothing to send (a receipt of zero parts)."""
        if (
            self._config.system is System.WMS
            and document.kind == COMPLETION
            and int(document.body.get("good", 0) or 0) <= 0
        ):
            return None
        return apply_mapping(self.name, self._mappings, document)

    def _headers(self, document: Document) -> dict[str, str]:
        idempotency = self._config.idempotency
        return {idempotency.header: document.key} if idempotency.mode == "header" else {}

    def render(self, document: Document) -> Rendered | None:
        body = self.body(document)
        if body is None:
            return None
        idempotency = self._config.idempotency
        if idempotency.mode == "header":
            note = f"header {idempotency.header}: {document.key}"
        elif idempotency.mode == "lookup":
            note = f"GET {self._lookup_url(document.key)} first"
        else:
            note = f"key in field {idempotency.field}; a duplicate is refused by the target"
        return Rendered(
            self._config.method,
            self.url_for(document.kind),
            "application/json",
            json.dumps(body, indent=2, ensure_ascii=False),
            note,
        )

    async def deliver(self, document: Document) -> str:
        body = self.body(document)
        if body is None:
            return SKIPPED + "nothing to receive (no good parts)"
        if self._config.idempotency.mode == "lookup":
            found = await self._lookup(document.key)
            if found is not None:
                return found
        reply = await self._http.send(
            self._config.method,
            self.url_for(document.kind),
            body=orjson.dumps(body),
            headers=self._headers(document),
        )
        error = classify(self.name, reply, already_exists=self._already_exists)
        if error is not None:
            raise error
        reference = reference_from(reply.json())
        if not 200 <= reply.status < 300:
            return f"already exists{': ' + reference if reference else ''}"
        return reference

    async def deliver_batch(self, documents: Sequence[Document]) -> list[str | DeliveryError]:
        """POST ``{"documents": [...]}`` to `batch_url`; each document carries its key in the
        idempotency field; the answer has ``results``, one ``{"status", "id"|"error"}`` each."""
        results: list[str | DeliveryError | None] = [None] * len(documents)
        bodies: list[dict[str, Any]] = []
        positions: list[int] = []
        for index, document in enumerate(documents):
            try:
                body = self.body(document)
            except DeliveryError as exc:
                results[index] = exc
                continue
            if body is None:
                results[index] = SKIPPED + "nothing to receive (no good parts)"
                continue
            body[self._config.idempotency.field] = document.key
            bodies.append(body)
            positions.append(index)
        if bodies:
            assert self._config.batch_url is not None
            reply = await self._http.send(
                "POST",
                self._config.batch_url,
                body=json.dumps({"documents": bodies}, separators=(",", ":")).encode(),
            )
            error = classify(self.name, reply)
            if error is not None:
                raise error
            items = _batch_results(reply)
            if len(items) != len(bodies):
                raise DeliveryError(
                    self.name,
                    f"batch answer has {len(items)} results for {len(bodies)} documents",
                    retryable=True,
                )
            for index, item in zip(positions, items, strict=True):
                results[index] = self._item_result(item)
        return [
            r if r is not None else DeliveryError(self.name, "no result", retryable=True)
            for r in results
        ]

    def _item_result(self, item: Any) -> str | DeliveryError:
        if not isinstance(item, dict):
            return DeliveryError(self.name, f"batch result {item!r} is no object", retryable=True)
        status = item.get("status")
        if isinstance(status, bool) or not isinstance(status, int):
            return DeliveryError(
                self.name, f"batch result without a status: {item!r}", retryable=True
            )
        reply = HttpReply(status, {}, json.dumps(item))
        error = classify(self.name, reply, already_exists=self._already_exists)
        return error if error is not None else reference_from(item)

    def _already_exists(self, reply: HttpReply) -> bool:
        if reply.status in self._config.already_exists.statuses:
            return True
        if 400 <= reply.status < 500 and self._duplicate_texts:
            text = reply.text.lower()
            return any(t in text for t in self._duplicate_texts)
        return False

    def _lookup_url(self, key: str) -> str:
        url = self._config.idempotency.lookup_url or ""
        return url.replace("{key}", quote(key, safe=""))

    async def _lookup(self, key: str) -> str | None:
        """The target's reference when it already has the document with this key."""
        reply = await self._http.send("GET", self._lookup_url(key))
        if reply.status == 404:
            return None
        error = classify(self.name, reply)
        if error is not None:
            raise during("look-up before posting failed", error)
        data = reply.json()
        found = data
        if isinstance(data, dict):
            found = next(
                (data[k] for k in ("items", "data", "results", "value") if k in data), None
            )
        if isinstance(found, list) and found:
            reference = reference_from(found[0])
            return f"already exists{': ' + reference if reference else ''}"
        return None

    async def close(self) -> None:
        await self._http.close()


def _batch_results(reply: HttpReply) -> list[Any]:
    data = reply.json()
    if isinstance(data, dict):
        data = data.get("results")
    return data if isinstance(data, list) else []
