"""ERPNext (Frappe REST): completions as Stock Entries.

* ERP (``system: erp``): a Stock Entry of type *Manufacture* for the work order: the finished
  good (``is_finished_item``) with its batch into the finished-goods warehouse. With
  ``use_work_order`` (default) the entry is first built by ERPNext's own
  ``work_order.make_stock_entry``, so raw materials are back-flushed by the BOM; the
  gateway sets quantity, batch and warehouse on the finished-goods row.
* WMS (``system: wms``): a put-away of the finished lot, a *Material Transfer* from the line's
  output warehouse to storage (or a *Material Receipt*).

Requests carry ``Authorization: token <key>:<secret>`` and ``Accept: application/json``
(without it Frappe answers errors as HTML pages). Bodies and answers are wrapped in
``{"data": ...}``; method calls answer ``{"message": ...}``; errors carry ``exc_type`` and
``_server_messages``. Validation errors are HTTP 417.

Frappe has no idempotency header: the document's key goes into a custom field
(``custom_mes_event_id``; make it *unique* in the customisation), and the connector looks it
up before posting. A draft found there is submitted; a cancelled one is left alone (somebody
cancelled it on purpose) and counts as delivered.
"""

from __future__ import annotations

__all__ = ["ErpNextConnector", "frappe_reason"]

import json
import re
from typing import Any
from urllib.parse import quote

from gateway.config.destinations import ErpNextDestinationConfig, System
from gateway.connectors.base import SKIPPED, Rendered, apply_mapping
from gateway.connectors.defaults import compile_mappings
from gateway.connectors.http import HttpClient, HttpReply, classify, during, json_reason
from gateway.documents import Document
from gateway.errors import DeliveryError

DOCTYPE = "Stock Entry"
MAKE_STOCK_ENTRY = "erpnext.manufacturing.doctype.work_order.work_order.make_stock_entry"
_DUPLICATE_TYPES = frozenset({"DuplicateEntryError", "UniqueValidationError"})
_TAG = re.compile(r"<[^>]+>")


def _exc_type(reply: HttpReply) -> str:
    data = reply.json()
    if isinstance(data, dict):
        return str(data.get("exc_type", ""))
    return ""


def frappe_reason(body: str) -> str:
    """The message of a Frappe error: ``_server_messages``, else ``exception``/``exc_type``."""
    try:
        data = json.loads(body)
    except ValueError:
        return json_reason(_TAG.sub(" ", body))
    if not isinstance(data, dict):
        return json_reason(body)
    messages: list[str] = []
    raw = data.get("_server_messages")
    if isinstance(raw, str):
        try:
            for item in json.loads(raw):
                entry = json.loads(item) if isinstance(item, str) else item
                text = entry.get("message") if isinstance(entry, dict) else entry
                if text:
                    messages.append(" ".join(_TAG.sub("", str(text)).split()))
        except (ValueError, TypeError):
            messages.append(raw)
    if messages:
        prefix = f"{data['exc_type']}: " if data.get("exc_type") else ""
        return (prefix + "; ".join(messages))[:400]
    for key in ("exception", "exc_type", "message"):
        if data.get(key):
            return str(data[key])[:400]
    return json_reason(body)


class ErpNextConnector:
    """Books completions in ERPNext as Stock Entries."""

    def __init__(self, config: ErpNextDestinationConfig, *, gateway_id: str = "") -> None:
        self.name = config.name
        self._config = config
        self._mappings = compile_mappings(config)
        self._site = config.url.rstrip("/")
        self._resource = f"{self._site}/api/resource/{quote(DOCTYPE)}"
        secret = config.api_secret.get_secret_value()
        self._http = HttpClient(
            config.name,
            timeout=config.timeout,
            concurrency=config.concurrency,
            tls=config.tls,
            headers={
                "Authorization": f"token {config.api_key}:{secret}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )

    def accepts(self, document_kind: str) -> bool:
        return document_kind in self._mappings

    @property
    def _builds_from_work_order(self) -> bool:
        return self._config.system is System.ERP and self._config.use_work_order

    def body(self, document: Document) -> dict[str, Any] | None:
        if int(document.body.get("good", 0) or 0) <= 0:
            return None  # a Stock Entry needs a quantity: nothing to book
        return apply_mapping(self.name, self._mappings, document)

    def render(self, document: Document) -> Rendered | None:
        body = self.body(document)
        if body is None:
            return None
        note = f"GET {DOCTYPE} by {self._config.reference_field} first"
        if self._builds_from_work_order:
            note += f"; the entry is built by {MAKE_STOCK_ENTRY} and these fields set on it"
        return Rendered(
            "POST",
            self._resource,
            "application/json",
            json.dumps(body, indent=2, ensure_ascii=False),
            note,
        )

    async def deliver(self, document: Document) -> str:
        body = self.body(document)
        if body is None:
            return SKIPPED + "no good parts to book"
        found = await self._find(document.key)
        if found is not None:
            return await self._existing(*found)
        if self._builds_from_work_order:
            body = await self._from_work_order(body)
        reply = await self._http.send(
            "POST", self._resource, body=json.dumps(body, separators=(",", ":")).encode()
        )
        duplicate = _exc_type(reply) in _DUPLICATE_TYPES or reply.status == 409
        if duplicate:
            found = await self._find(document.key)
            if found is not None:
                return await self._existing(*found)
        raise_for(self.name, reply)
        data = reply.json()
        entry = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entry, dict) or not entry.get("name"):
            raise DeliveryError(self.name, "answer has no data.name", retryable=True)
        return str(entry["name"])

    async def _find(self, key: str) -> tuple[str, int] | None:
        params = {
            "filters": json.dumps([[self._config.reference_field, "=", key]]),
            "fields": json.dumps(["name", "docstatus"]),
            "limit_page_length": "1",
        }
        reply = await self._http.send("GET", self._resource, params=params)
        error = classify(self.name, reply, reason=frappe_reason)
        if error is not None:
            raise during("look-up before posting failed", error)
        data = reply.json()
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise DeliveryError(self.name, "look-up answer has no data list", retryable=True)
        if not rows:
            return None
        return str(rows[0].get("name", "")), int(rows[0].get("docstatus", 0) or 0)

    async def _existing(self, name: str, docstatus: int) -> str:
        if docstatus == 2:
            return f"{name} (exists, cancelled in ERPNext)"
        if docstatus == 0 and self._config.submit:
            reply = await self._http.send(
                "PUT",
                f"{self._resource}/{quote(name)}",
                body=json.dumps({"docstatus": 1}).encode(),
            )
            raise_for(self.name, reply)
            return f"{name} (draft submitted)"
        return f"{name} (already booked)"

    async def _from_work_order(self, body: dict[str, Any]) -> dict[str, Any]:
        """ERPNext's own entry for the work order (BOM items), with our values on top."""
        finished = (body.get("items") or [{}])[0]
        call = {
            "work_order_id": body.get("work_order"),
            "purpose": self._config.entry_type,
            "qty": finished.get("qty", body.get("fg_completed_qty")),
        }
        reply = await self._http.send(
            "POST",
            f"{self._site}/api/method/{MAKE_STOCK_ENTRY}",
            body=json.dumps(call, separators=(",", ":")).encode(),
        )
        raise_for(self.name, reply)
        data = reply.json()
        template = data.get("message") if isinstance(data, dict) else None
        if not isinstance(template, dict):
            raise DeliveryError(self.name, f"{MAKE_STOCK_ENTRY} answered no entry", retryable=True)
        merged = {**template, **{k: v for k, v in body.items() if k != "items"}}
        items = [dict(item) for item in template.get("items", []) if isinstance(item, dict)]
        for item in items:
            if item.get("is_finished_item") or item.get("item_code") == finished.get("item_code"):
                item.update(finished)
                break
        else:
            items.append(finished)
        merged["items"] = items
        return merged

    async def close(self) -> None:
        await self._http.close()


def raise_for(destination: str, reply: HttpReply) -> None:
    """Raise the DeliveryError a Frappe answer means (DoesNotExistError is the document's fault:
    a work order or item ERPNext does not know)."""
    error = classify(destination, reply, reason=frappe_reason)
    if error is None:
        return
    if _exc_type(reply) == "DoesNotExistError":
        raise DeliveryError(
            destination, str(error).split(": ", 1)[-1], retryable=False, status=reply.status
        )
    raise error
