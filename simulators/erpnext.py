"""ERPNext / Frappe REST: Stock Entries (Manufacture for ERP, transfers for WMS).

What it checks, so that a client's mistakes show (docs/simulators.md, "ERPNext"):

* ``Authorization: token <api_key>:<api_secret>`` (or ``Basic base64(key:secret)``); 401
  ``AuthenticationError`` otherwise.
* Errors are JSON (``exc_type``, ``exception``, ``_server_messages``) only when the request
  says ``Accept: application/json``; otherwise an HTML page, as Frappe does.
* ``POST /api/resource/Stock Entry`` validates like ERPNext would: the Stock Entry Type,
  company and warehouses must exist (``LinkValidationError``, HTTP 417), items are required,
  a Manufacture entry needs a work order, ``fg_completed_qty`` and exactly one finished item
  with a target warehouse and a batch; a transfer needs source and target warehouses;
  ``docstatus`` 0 (draft) or 1 (submitted). Answers ``{"data": {...}}`` with a name like
  ``MAT-STE-2026-00001``.
* No idempotency header: every valid POST is booked. The custom field
  ``custom_mes_event_id`` (by default) is *unique*, as the integration guide tells the user to
  configure it: a second entry with the same value answers 417 ``UniqueValidationError``.
* ``GET /api/resource/Stock Entry?filters=...&fields=...`` lists entries (filters as a JSON
  list of ``[field, "=", value]`` or an object); ``PUT .../{name}`` with ``{"docstatus": 1}``
  submits a draft; ``POST /api/method/erpnext.manufacturing.doctype.work_order.work_order.
  make_stock_entry`` returns an unsaved Manufacture entry for a work order (BOM items).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .ledger import Booking, Ledger

__all__ = ["DOCTYPE", "ERPNEXT_COLLECTION", "FrappeSite"]

DOCTYPE = "Stock Entry"
ERPNEXT_COLLECTION = "erpnext-stock-entries"
MAKE_STOCK_ENTRY = "erpnext.manufacturing.doctype.work_order.work_order.make_stock_entry"
ENTRY_TYPES = (
    "Manufacture",
    "Material Transfer",
    "Material Receipt",
    "Material Issue",
    "Material Transfer for Manufacture",
    "Material Consumption for Manufacture",
    "Repack",
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?$")


class _FrappeError(Exception):
    def __init__(self, exc_type: str, message: str, status: int = 417) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.message = message
        self.status = status


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


class FrappeSite:
    """A Frappe site with ERPNext's Stock Entry, added to a business simulator's application."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        api_key: str = "gateway",
        api_secret: str = "secret",
        company: str = "Edge Manufacturing",
        abbreviation: str = "EM",
        warehouses: Iterable[str] = ("Stores", "Work In Progress", "Finished Goods", "Line Output"),
        unique_field: str | None = "custom_mes_event_id",
        stats: Any = None,
    ) -> None:
        self.ledger = ledger
        self.api_key = api_key
        self.api_secret = api_secret
        self.company = company
        self.warehouses = {f"{w} - {abbreviation}" for w in warehouses}
        self.unique_field = unique_field
        self._stats = stats
        self._numbers = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/method/frappe.auth.get_logged_user", self._whoami)
        app.router.add_post(f"/api/method/{MAKE_STOCK_ENTRY}", self._make_stock_entry)
        app.router.add_get("/api/resource/{doctype}", self._list)
        app.router.add_post("/api/resource/{doctype}", self._insert)
        app.router.add_get("/api/resource/{doctype}/{name}", self._get)
        app.router.add_put("/api/resource/{doctype}/{name}", self._update)

    def warehouse(self, name: str) -> str:
        """The full warehouse name (``Finished Goods - EM``) of a short one."""
        for full in self.warehouses:
            if full.startswith(f"{name} - "):
                return full
        raise KeyError(name)

    # ------------------------------------------------------------------ plumbing
    def _count(self, outcome: str) -> None:
        if self._stats is not None:
            setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        expected = f"{self.api_key}:{self.api_secret}"
        if header.startswith("token "):
            return header[6:].strip() == expected
        if header.startswith("Basic "):
            try:
                return base64.b64decode(header[6:]).decode() == expected
            except (ValueError, UnicodeDecodeError):
                return False
        return False

    def _error(self, request: web.Request, error: _FrappeError) -> web.Response:
        self._count("rejected")
        if "application/json" not in request.headers.get("Accept", ""):
            page = (
                "<!DOCTYPE html><html><head><title>Message</title></head><body>"
                f"<div class='page-content'><h3>{error.exc_type}</h3>"
                f"<p>{error.message}</p></div></body></html>"
            )
            return web.Response(status=error.status, text=page, content_type="text/html")
        message = json.dumps(
            {"message": error.message, "title": "Message", "indicator": "red",
             "raise_exception": 1}
        )  # fmt: skip
        body = {
            "exc_type": error.exc_type,
            "exception": f"frappe.exceptions.{error.exc_type}: {error.message}",
            "_server_messages": json.dumps([message]),
        }
        return web.json_response(body, status=error.status)

    def _check(self, request: web.Request) -> None:
        if not self._authorised(request):
            raise _FrappeError("AuthenticationError", "Invalid API key or secret", 401)
        doctype = unquote(request.match_info.get("doctype", DOCTYPE))
        if doctype != DOCTYPE:
            raise _FrappeError("DoesNotExistError", f"DocType {doctype} not found", 404)

    async def _json(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise _FrappeError("ValidationError", "Request body is not valid JSON") from None
        if isinstance(body, dict) and isinstance(body.get("data"), str):
            try:
                body = json.loads(body["data"])  # Frappe also takes data=<json string>
            except ValueError:
                raise _FrappeError("ValidationError", "data is not valid JSON") from None
        if not isinstance(body, dict):
            raise _FrappeError("ValidationError", "Request body must be a JSON object")
        return body

    # ------------------------------------------------------------------ routes
    async def _whoami(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(request, _FrappeError("AuthenticationError", "Not logged in", 401))
        return web.json_response({"message": f"{self.api_key}@example.com"})

    async def _list(self, request: web.Request) -> web.Response:
        try:
            self._check(request)
            filters = _filters(request.query.get("filters"))
            fields = _fields(request.query.get("fields"))
        except _FrappeError as error:
            return self._error(request, error)
        limit = int(request.query.get("limit_page_length", "20") or 20)
        rows = []
        for booking in self.ledger.by_collection(ERPNEXT_COLLECTION):
            if all(booking.document.get(f) == v for f, v in filters):
                rows.append({f: booking.document.get(f) for f in fields})
        return web.json_response({"data": rows if limit == 0 else rows[:limit]})

    async def _get(self, request: web.Request) -> web.Response:
        try:
            self._check(request)
            booking = self._booking(request.match_info["name"])
        except _FrappeError as error:
            return self._error(request, error)
        return web.json_response({"data": dict(booking.document)})

    def _booking(self, name: str) -> Booking:
        name = unquote(name)
        for booking in self.ledger.by_collection(ERPNEXT_COLLECTION):
            if booking.id == name:
                return booking
        raise _FrappeError("DoesNotExistError", f"Stock Entry {name} not found", 404)

    async def _insert(self, request: web.Request) -> web.Response:
        try:
            self._check(request)
            entry = self._validate(await self._json(request))
        except _FrappeError as error:
            return self._error(request, error)
        name = f"MAT-STE-{datetime.now(UTC).year}-{next(self._numbers):05d}"
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        document = {
            **entry,
            "name": name,
            "doctype": DOCTYPE,
            "owner": f"{self.api_key}@example.com",
            "creation": now,
            "modified": now,
            "purpose": entry["stock_entry_type"],
            "docstatus": entry.get("docstatus", 0),
        }
        reference = str(entry.get(self.unique_field or "", "") or "")
        self.ledger.book_as(ERPNEXT_COLLECTION, name, reference, document)
        self._count("booked")
        return web.json_response({"data": document})

    async def _update(self, request: web.Request) -> web.Response:
        try:
            self._check(request)
            booking = self._booking(request.match_info["name"])
            change = await self._json(request)
            docstatus = booking.document.get("docstatus", 0)
            wanted = change.get("docstatus", docstatus)
            if docstatus == 1 and wanted != 1:
                raise _FrappeError("UpdateAfterSubmitError", "Cannot edit a submitted entry")
            if docstatus == 2:
                raise _FrappeError("DocstatusTransitionError", "Cannot edit a cancelled entry")
            document = self._validate({**booking.document, **change}, updating=booking.id)
        except _FrappeError as error:
            return self._error(request, error)
        updated = self.ledger.replace(booking, document)
        return web.json_response({"data": dict(updated.document)})

    async def _make_stock_entry(self, request: web.Request) -> web.Response:
        try:
            if not self._authorised(request):
                raise _FrappeError("AuthenticationError", "Invalid API key or secret", 401)
            args = await self._json(request)
            work_order = args.get("work_order_id")
            if not isinstance(work_order, str) or not work_order:
                raise _FrappeError("MandatoryError", "work_order_id is required")
            qty = _number(args.get("qty"))
            if qty is None or qty <= 0:
                raise _FrappeError("ValidationError", "qty must be greater than 0")
            purpose = args.get("purpose", "Manufacture")
        except _FrappeError as error:
            return self._error(request, error)
        wip, finished = self.warehouse("Work In Progress"), self.warehouse("Finished Goods")
        entry = {
            "doctype": DOCTYPE,
            "stock_entry_type": purpose,
            "purpose": purpose,
            "work_order": work_order,
            "company": self.company,
            "from_bom": 1,
            "bom_no": f"BOM-{work_order}-001",
            "fg_completed_qty": qty,
            "from_warehouse": wip,
            "to_warehouse": finished,
            "items": [
                {"item_code": "RM-STEEL-BAR", "qty": round(qty * 0.25, 3), "s_warehouse": wip,
                 "is_finished_item": 0, "uom": "Kg"},
                {"item_code": "", "qty": qty, "t_warehouse": finished, "is_finished_item": 1},
            ],
        }  # fmt: skip
        return web.json_response({"message": entry})

    # ------------------------------------------------------------------ validation
    def _validate(self, entry: dict[str, Any], *, updating: str | None = None) -> dict[str, Any]:
        entry_type = entry.get("stock_entry_type")
        if not entry_type:
            raise _FrappeError("MandatoryError", "Value missing for Stock Entry: Stock Entry Type")
        if entry_type not in ENTRY_TYPES:
            raise _FrappeError(
                "LinkValidationError", f"Could not find Stock Entry Type: {entry_type}"
            )
        if entry.get("company") != self.company:
            raise _FrappeError(
                "LinkValidationError", f"Could not find Company: {entry.get('company')}"
            )
        if entry.get("docstatus", 0) not in (0, 1):
            raise _FrappeError("DocstatusTransitionError", "docstatus must be 0 or 1 on insert")
        if entry.get("set_posting_time"):
            if not _DATE.match(str(entry.get("posting_date", ""))):
                raise _FrappeError(
                    "ValidationError",
                    f"Posting Date {entry.get('posting_date')!r} is not YYYY-MM-DD",
                )
            if not _TIME.match(str(entry.get("posting_time", ""))):
                raise _FrappeError(
                    "ValidationError", f"Posting Time {entry.get('posting_time')!r} is not HH:MM:SS"
                )
        for field, label in (("from_warehouse", "Default Source Warehouse"),
                             ("to_warehouse", "Default Target Warehouse")):  # fmt: skip
            if entry.get(field) and entry[field] not in self.warehouses:
                raise _FrappeError("LinkValidationError", f"Could not find {label}: {entry[field]}")
        items = entry.get("items")
        if not isinstance(items, list) or not items:
            raise _FrappeError("MandatoryError", "Value missing for Stock Entry: Items")
        for row, item in enumerate(items, start=1):
            self._validate_item(entry_type, row, item)
        if entry_type == "Manufacture":
            self._validate_manufacture(entry, items)
        if self.unique_field and entry.get(self.unique_field):
            for other in self.ledger.find(
                ERPNEXT_COLLECTION, self.unique_field, entry[self.unique_field]
            ):
                if other.id != updating:
                    label = self.unique_field.removeprefix("custom_").replace("_", " ").title()
                    raise _FrappeError(
                        "UniqueValidationError",
                        f"{label} {entry[self.unique_field]} must be unique (used by {other.id})",
                    )
        return entry

    def _validate_item(self, entry_type: str, row: int, item: Any) -> None:
        if not isinstance(item, dict):
            raise _FrappeError("ValidationError", f"Row #{row}: must be an object")
        if not item.get("item_code"):
            raise _FrappeError("MandatoryError", f"Row #{row}: Item Code is mandatory")
        qty = _number(item.get("qty"))
        if qty is None or qty <= 0:
            raise _FrappeError("ValidationError", f"Row #{row}: Quantity must be greater than 0")
        for field, label in (
            ("s_warehouse", "Source Warehouse"),
            ("t_warehouse", "Target Warehouse"),
        ):
            if item.get(field) and item[field] not in self.warehouses:
                raise _FrappeError(
                    "LinkValidationError", f"Could not find Row #{row}: {label}: {item[field]}"
                )
        if entry_type == "Material Transfer":
            if not item.get("s_warehouse") or not item.get("t_warehouse"):
                raise _FrappeError(
                    "ValidationError",
                    f"Row #{row}: Source and Target Warehouse are mandatory (Material Transfer)",
                )
            if item["s_warehouse"] == item["t_warehouse"]:
                raise _FrappeError(
                    "ValidationError", f"Row #{row}: Source and target warehouse cannot be the same"
                )
        if entry_type == "Material Receipt" and not item.get("t_warehouse"):
            raise _FrappeError("ValidationError", f"Row #{row}: Target Warehouse is mandatory")

    def _validate_manufacture(self, entry: dict[str, Any], items: list[Any]) -> None:
        if not entry.get("work_order"):
            raise _FrappeError("MandatoryError", "Work Order is mandatory for a Manufacture entry")
        qty = _number(entry.get("fg_completed_qty"))
        if qty is None or qty <= 0:
            raise _FrappeError(
                "ValidationError", "For Quantity (Manufactured Qty) is mandatory (fg_completed_qty)"
            )
        finished = [i for i in items if isinstance(i, dict) and i.get("is_finished_item")]
        if len(finished) != 1:
            raise _FrappeError(
                "ValidationError",
                f"Exactly one finished item (is_finished_item) is needed, found {len(finished)}",
            )
        row = finished[0]
        if not row.get("t_warehouse"):
            raise _FrappeError("ValidationError", "The finished item needs a Target Warehouse")
        if not row.get("batch_no"):
            raise _FrappeError(
                "ValidationError", f"Batch No is mandatory for Item {row.get('item_code')}"
            )


def _filters(text: str | None) -> list[tuple[str, Any]]:
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        raise _FrappeError("ValidationError", f"filters is not JSON: {text!r}") from None
    if isinstance(data, Mapping):
        return list(data.items())
    out = []
    if isinstance(data, list):
        for item in data:
            if isinstance(item, list) and len(item) == 3 and item[1] == "=":
                out.append((str(item[0]), item[2]))
            elif isinstance(item, list) and len(item) == 4 and item[2] == "=":
                out.append((str(item[1]), item[3]))  # [doctype, field, op, value]
            else:
                raise _FrappeError("ValidationError", f"unsupported filter {item!r}")
        return out
    raise _FrappeError("ValidationError", "filters must be a list or an object")


def _fields(text: str | None) -> list[str]:
    if not text:
        return ["name"]
    try:
        data = json.loads(text)
    except ValueError:
        raise _FrappeError("ValidationError", f"fields is not JSON: {text!r}") from None
    if not isinstance(data, list) or not all(isinstance(f, str) for f in data):
        raise _FrappeError("ValidationError", "fields must be a JSON list of names")
    return data
