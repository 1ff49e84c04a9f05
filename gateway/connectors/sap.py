"""SAP S/4HANA production order confirmations: OData V2 ``API_PROD_ORDER_CONFIRMATION_2_SRV``.

One completion becomes one ``ProdnOrdConf2`` entity (yield, scrap, rework, unit, final flag,
posting and execution dates as ``/Date(ms)/`` and ``PT..H..M..S``), with the finished lot's
goods receipt (movement 101, batch) as a deep insert in ``to_ProdnOrdConfMatlDocItm``.

The OData handshake: a GET with ``x-csrf-token: Fetch`` returns the token and session
cookies; the POST sends the token back with the same cookies. A 403 answering
``x-csrf-token: Required`` (the session expired) fetches a new token and posts once more.

SAP does not recognise a repeated confirmation, so the document's key travels in
``ExternalSystemConfirmation`` (as a GUID) and before each POST the connector looks it up
(``$filter=ExternalSystemConfirmation eq guid'...'``): when SAP has it, nothing is posted.
The look-up also fetches the CSRF token, so a confirmation costs two requests.
"""

from __future__ import annotations

__all__ = ["SapConnector", "sap_reason"]

import asyncio
import json
from typing import Any

from gateway.config.destinations import SapDestinationConfig
from gateway.connectors.base import Rendered, apply_mapping
from gateway.connectors.defaults import compile_mappings
from gateway.connectors.http import HttpClient, HttpReply, classify, during, json_reason
from gateway.documents import Document
from gateway.errors import DeliveryError

ENTITY_SET = "ProdnOrdConf2"
GOODS_MOVEMENTS = "to_ProdnOrdConfMatlDocItm"


def sap_reason(body: str) -> str:
    """``code: message`` from an OData V2 error body ``{"error": {"code", "message":
    {"value"}, "innererror": {"errordetails": [...]}}}``."""
    try:
        data = json.loads(body)
    except ValueError:
        return json_reason(body)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return json_reason(body)
    message = error.get("message")
    text = message.get("value", "") if isinstance(message, dict) else str(message or "")
    code = error.get("code", "")
    details = []
    inner = error.get("innererror")
    if isinstance(inner, dict):
        for detail in inner.get("errordetails", []) or []:
            if isinstance(detail, dict) and detail.get("message") and detail["message"] != text:
                details.append(str(detail["message"]))
    reason = f"{code}: {text}" if code else text
    if details:
        reason += " (" + "; ".join(details[:3]) + ")"
    return reason[:400]


class SapConnector:
    """Posts production order confirmations to SAP S/4HANA."""

    def __init__(self, config: SapDestinationConfig, *, gateway_id: str = "") -> None:
        self.name = config.name
        self._config = config
        self._mappings = compile_mappings(config)
        self._root = config.url.rstrip("/")
        self._params = {"sap-client": config.sap_client} if config.sap_client else {}
        self._http = HttpClient(
            config.name,
            timeout=config.timeout,
            concurrency=config.concurrency,
            auth=config.auth,
            tls=config.tls,
            headers={"Accept": "application/json"},
        )
        self._token: str | None = None
        self._token_lock = asyncio.Lock()

    def accepts(self, document_kind: str) -> bool:
        return document_kind in self._mappings

    def body(self, document: Document) -> dict[str, Any]:
        body = apply_mapping(self.name, self._mappings, document)
        movements = body.get(GOODS_MOVEMENTS)
        if isinstance(movements, dict):
            items = [
                item
                for item in movements.get("results", [])
                if isinstance(item, dict) and _positive(item.get("QuantityInEntryUnit"))
            ]
            if items:
                movements["results"] = items
            else:
                del body[GOODS_MOVEMENTS]  # nothing to receive: confirmation only
        return body

    def render(self, document: Document) -> Rendered:
        body = self.body(document)
        return Rendered(
            "POST",
            f"{self._root}/{ENTITY_SET}",
            "application/json",
            json.dumps(body, indent=2, ensure_ascii=False),
            "GET with x-csrf-token: Fetch (look-up by ExternalSystemConfirmation) first",
        )

    async def deliver(self, document: Document) -> str:
        body = self.body(document)
        guid = str(body.get("ExternalSystemConfirmation", ""))
        if guid:
            found = await self._lookup(guid)
            if found is not None:
                return f"{found} (already booked)"
        elif self._token is None:
            await self._fetch_token(None)
        payload = json.dumps(body, separators=(",", ":")).encode()
        reply = await self._post(payload)
        if reply.status == 403 and _token_required(reply):
            await self._fetch_token(self._token)
            reply = await self._post(payload)
        error = classify(self.name, reply, reason=sap_reason)
        if error is not None:
            if reply.status == 403 and _token_required(reply):
                error = DeliveryError(
                    self.name,
                    "SAP refused the CSRF token twice (session cookies not kept?)",
                    retryable=True,
                    status=403,
                )
            raise error
        return _confirmation(reply.json())

    async def _post(self, payload: bytes) -> HttpReply:
        return await self._http.send(
            "POST",
            f"{self._root}/{ENTITY_SET}",
            body=payload,
            params=self._params,
            headers={"Content-Type": "application/json", "x-csrf-token": self._token or ""},
        )

    async def _lookup(self, guid: str) -> str | None:
        """``group/count`` of the confirmation carrying `guid`, or None; fetches a CSRF token."""
        params = {
            **self._params,
            "$filter": f"ExternalSystemConfirmation eq guid'{guid}'",
            "$select": "ConfirmationGroup,ConfirmationCount",
            "$format": "json",
        }
        reply = await self._http.send(
            "GET",
            f"{self._root}/{ENTITY_SET}",
            params=params,
            headers={"x-csrf-token": "Fetch"},
        )
        error = classify(self.name, reply, reason=sap_reason)
        if error is not None:
            raise during("look-up before posting failed", error)
        token = reply.headers.get("x-csrf-token")
        if token and token.lower() != "required":
            self._token = token
        data = reply.json()
        results = data.get("d", {}).get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise DeliveryError(self.name, "look-up answer has no d.results list", retryable=True)
        if results:
            return _confirmation({"d": results[0]})
        return None

    async def _fetch_token(self, stale: str | None) -> None:
        async with self._token_lock:
            if self._token != stale:
                return  # another delivery fetched a fresh one meanwhile
            self._http.forget_cookies()
            reply = await self._http.send(
                "GET", f"{self._root}/", params=self._params, headers={"x-csrf-token": "Fetch"}
            )
            error = classify(self.name, reply, reason=sap_reason)
            if error is not None:
                raise during("fetching the CSRF token failed", error)
            token = reply.headers.get("x-csrf-token")
            if not token:
                raise DeliveryError(self.name, "SAP sent no x-csrf-token", retryable=True)
            self._token = token

    async def close(self) -> None:
        await self._http.close()


def _token_required(reply: HttpReply) -> bool:
    return reply.headers.get("x-csrf-token", "").lower() == "required"


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def _confirmation(data: Any) -> str:
    entity = data.get("d") if isinstance(data, dict) else None
    if not isinstance(entity, dict):
        return ""
    group = entity.get("ConfirmationGroup", "")
    count = entity.get("ConfirmationCount", "")
    return f"{group}/{count}" if group else ""
