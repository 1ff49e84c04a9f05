"""SAP S/4HANA production order confirmations: OData V2 ``API_PROD_ORDER_CONFIRMATION_2_SRV``.

What it checks, so that a client's mistakes show (docs/simulators.md, "SAP S/4HANA"):

* Basic authentication (401 with ``WWW-Authenticate`` otherwise).
* The CSRF handshake: a GET or HEAD with ``x-csrf-token: Fetch`` opens a session (cookies
  ``SAP_SESSIONID_<SID>_<client>`` and ``sap-usercontext``) and returns its token; a POST must
  carry that token *and* the session cookie, otherwise 403 with ``x-csrf-token: Required``.
  :meth:`SapODataService.expire_sessions` ends every session (as a server restart or a
  timeout does).
* ``ProdnOrdConf2`` bodies: known properties only; Edm.Decimal as strings (``"480.000"``),
  dates ``/Date(ms)/``, times ``PT10H17M53S``, booleans as JSON booleans, a GUID in
  ``ExternalSystemConfirmation``, consistent final-confirmation flags, and the goods
  movements of ``to_ProdnOrdConfMatlDocItm`` (101 with batch, order reference, positive
  quantity). Errors answer 400 with ``{"error": {"code", "message": {"lang", "value"},
  "innererror": {"errordetails": [...]}}}``.
* Like SAP as far as is known, it does **not** recognise a repeated confirmation: posting the
  same one twice books it twice. A client must look it up first:
  ``GET ProdnOrdConf2?$filter=ExternalSystemConfirmation eq guid'...'`` (``{"d": {"results"}}``).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .ledger import Ledger

__all__ = ["SAP_COLLECTION", "SAP_ROOT", "SapODataService"]

SAP_ROOT = "/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV"
SAP_COLLECTION = "sap-confirmations"
_SID = "S4H"

_DECIMAL = re.compile(r"^-?\d{1,13}(\.\d{1,3})?$")
_DATE = re.compile(r"^/Date\((-?\d+)\)/$")
_TIME = re.compile(r"^PT([01]\d|2[0-3])H[0-5]\dM[0-5]\dS$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_GUID_FILTER = re.compile(r"^ExternalSystemConfirmation eq guid'([0-9a-fA-F-]{36})'$")
_TEXT_FILTER = re.compile(r"^ConfirmationText eq '(.*)'$")


def _string(max_length: int, *, digits: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string (Edm.String)"
        if len(value) > max_length:
            return f"is longer than {max_length} characters"
        if digits and value and not value.isdigit():
            return "must contain digits only"
        return None

    return check


def _decimal(value: Any) -> str | None:
    if not isinstance(value, str) or not _DECIMAL.match(value):
        return 'must be an Edm.Decimal string such as "480.000"'
    return None


def _date(value: Any) -> str | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return 'must be an Edm.DateTime such as "/Date(1714780800000)/"'
    return None


def _time(value: Any) -> str | None:
    if not isinstance(value, str) or not _TIME.match(value):
        return 'must be an Edm.Time such as "PT10H17M53S"'
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be an Edm.Boolean (true or false)"


def _guid(value: Any) -> str | None:
    if not isinstance(value, str) or not _GUID.match(value):
        return 'must be an Edm.Guid such as "6f1c0a3e-2b4d-4c1e-9f00-1a2b3c4d5e6f"'
    return None


def _final_type(value: Any) -> str | None:
    return None if value in ("", "X") else 'must be "X" (final) or "" (partial)'


_HEADER: dict[str, Callable[[Any], str | None]] = {
    "OrderID": _string(12, digits=True),
    "OrderOperation": _string(4, digits=True),
    "OrderSuboperation": _string(4, digits=True),
    "Sequence": _string(6),
    "ConfirmationYieldQuantity": _decimal,
    "ConfirmationScrapQuantity": _decimal,
    "ConfirmationReworkQuantity": _decimal,
    "ConfirmationUnit": _string(3),
    "ConfirmationUnitISOCode": _string(3),
    "ConfirmationUnitSAPCode": _string(3),
    "IsFinalConfirmation": _boolean,
    "FinalConfirmationType": _final_type,
    "OpenReservationsIsCleared": _boolean,
    "PostingDate": _date,
    "ConfirmedExecutionStartDate": _date,
    "ConfirmedExecutionStartTime": _time,
    "ConfirmedExecutionEndDate": _date,
    "ConfirmedExecutionEndTime": _time,
    "Plant": _string(4),
    "WorkCenter": _string(8),
    "Personnel": _string(8, digits=True),
    "ConfirmationText": _string(40),
    "VarianceReasonCode": _string(4),
    "ExternalSystemConfirmation": _guid,
    "EnteredByExternalUser": _string(12),
    **{f"OpConfirmedWorkQuantity{n}": _decimal for n in range(1, 7)},
    **{f"OpWorkQuantityUnit{n}": _string(3) for n in range(1, 7)},
}
_ITEM: dict[str, Callable[[Any], str | None]] = {
    "Material": _string(40),
    "Plant": _string(4),
    "StorageLocation": _string(4),
    "GoodsMovementType": _string(3, digits=True),
    "GoodsMovementRefDocType": _string(1),
    "OrderID": _string(12, digits=True),
    "OrderItem": _string(4, digits=True),
    "Reservation": _string(10, digits=True),
    "ReservationItem": _string(4, digits=True),
    "QuantityInEntryUnit": _decimal,
    "EntryUnit": _string(3),
    "Batch": _string(10),
    "ManufactureDate": _date,
    "ShelfLifeExpirationDate": _date,
    "EWMWarehouse": _string(4),
    "EWMStorageBin": _string(18),
    "StorageType": _string(3),
    "StorageBin": _string(10),
}
_MOVEMENTS = "to_ProdnOrdConfMatlDocItm"


class _SapError(Exception):
    def __init__(self, code: str, message: str, target: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.target = target


def _error_body(error: _SapError) -> dict[str, Any]:
    return {
        "error": {
            "code": error.code,
            "message": {"lang": "en", "value": error.message},
            "innererror": {
                "application": {"component_id": "PP-SFC-EXE-CON", "service_namespace": "/SAP/"},
                "transactionid": secrets.token_hex(16).upper(),
                "errordetails": [
                    {
                        "code": error.code,
                        "message": error.message,
                        "propertyref": error.target,
                        "severity": "error",
                        "target": error.target,
                    }
                ],
            },
        }
    }


def _validate(body: Any) -> dict[str, Any]:
    """The confirmation, or :class:`_SapError` naming the first problem."""
    if not isinstance(body, dict):
        raise _SapError("/IWBEP/CM_MGW_RT/004", "Malformed request body: expected a JSON object")
    for name, value in body.items():
        if name == _MOVEMENTS or name == "__metadata":
            continue
        check = _HEADER.get(name)
        if check is None:
            raise _SapError(
                "/IWBEP/CM_MGW_RT/020",
                f"Property '{name}' is invalid for entity type A_ProdnOrdConf2Type",
                name,
            )
        problem = check(value)
        if problem is not None:
            raise _SapError("/IWBEP/CM_MGW_RT/021", f"Property '{name}' {problem}", name)
    if not body.get("OrderID"):
        raise _SapError("RU/002", "Enter an order number (OrderID)", "OrderID")
    quantities = [
        float(body.get(f, "0") or 0)
        for f in ("ConfirmationYieldQuantity", "ConfirmationScrapQuantity",
                  "ConfirmationReworkQuantity")
    ]  # fmt: skip
    final = body.get("IsFinalConfirmation", False)
    if "FinalConfirmationType" in body and (body["FinalConfirmationType"] == "X") != bool(final):
        raise _SapError(
            "RU/120",
            "FinalConfirmationType and IsFinalConfirmation contradict each other",
            "FinalConfirmationType",
        )
    if any(q < 0 for q in quantities):
        raise _SapError("RU/505", "Quantities must not be negative")
    if sum(quantities) > 0 and not body.get("ConfirmationUnit"):
        raise _SapError("RU/301", "Enter a unit of measure (ConfirmationUnit)", "ConfirmationUnit")
    if sum(quantities) == 0 and not final:
        raise _SapError("RU/011", "Enter a quantity to confirm (yield, scrap or rework)")
    _validate_movements(body)
    return body


def _validate_movements(body: dict[str, Any]) -> None:
    movements = body.get(_MOVEMENTS)
    if movements is None:
        return
    results = movements.get("results") if isinstance(movements, dict) else None
    if not isinstance(results, list):
        raise _SapError(
            "/IWBEP/CM_MGW_RT/004",
            f"Navigation property '{_MOVEMENTS}' must be {{\"results\": [...]}}",
            _MOVEMENTS,
        )
    for index, item in enumerate(results):
        where = f"{_MOVEMENTS}({index + 1})"
        if not isinstance(item, dict):
            raise _SapError("/IWBEP/CM_MGW_RT/004", f"{where}: must be an object", where)
        for name, value in item.items():
            check = _ITEM.get(name)
            if check is None:
                raise _SapError(
                    "/IWBEP/CM_MGW_RT/020",
                    f"Property '{name}' is invalid for entity type A_ProdnOrdConfMatlDocItmType",
                    f"{where}/{name}",
                )
            problem = check(value)
            if problem is not None:
                raise _SapError(
                    "/IWBEP/CM_MGW_RT/021", f"Property '{name}' {problem}", f"{where}/{name}"
                )
        for required in ("Material", "Plant", "StorageLocation", "GoodsMovementType",
                         "QuantityInEntryUnit", "EntryUnit"):  # fmt: skip
            if not item.get(required):
                raise _SapError("M7/018", f"{where}: enter {required}", f"{where}/{required}")
        if item["GoodsMovementType"] not in ("101", "102", "261", "262", "531"):
            raise _SapError(
                "M7/001",
                f"{where}: movement type {item['GoodsMovementType']} is not allowed here",
                f"{where}/GoodsMovementType",
            )
        if float(item["QuantityInEntryUnit"]) <= 0:
            raise _SapError("M7/022", f"{where}: enter a quantity greater than 0", where)
        if item["GoodsMovementType"] == "101":
            if item.get("GoodsMovementRefDocType") != "F":
                raise _SapError(
                    "M7/098",
                    f"{where}: a goods receipt for an order needs GoodsMovementRefDocType F",
                    f"{where}/GoodsMovementRefDocType",
                )
            if item.get("OrderID") != body.get("OrderID"):
                raise _SapError(
                    "M7/099", f"{where}: OrderID must be the confirmed order", f"{where}/OrderID"
                )
            if not item.get("Batch"):
                raise _SapError(
                    "M7/026",
                    f"{where}: material {item['Material']} is handled in batches: enter a batch",
                    f"{where}/Batch",
                )


class SapODataService:
    """The confirmation service's routes, added to a business simulator's application."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        username: str = "GATEWAY",
        password: str = "secret",
        client: str = "100",
        stats: Any = None,
    ) -> None:
        self.ledger = ledger
        self.username = username
        self.password = password
        self.client = client
        self._sessions: dict[str, str] = {}
        """session id → CSRF token"""
        self._groups: dict[tuple[str, str], str] = {}
        self._counts: dict[str, itertools.count[int]] = {}
        self._group_numbers = itertools.count(1)
        self._stats = stats
        self.token_fetches = 0
        self.csrf_refusals = 0

    @property
    def cookie_name(self) -> str:
        return f"SAP_SESSIONID_{_SID}_{self.client}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("GET", f"{SAP_ROOT}/", self._service)
        app.router.add_route("HEAD", f"{SAP_ROOT}/", self._service)
        app.router.add_route("GET", f"{SAP_ROOT}/$metadata", self._metadata)
        app.router.add_route("GET", f"{SAP_ROOT}/ProdnOrdConf2", self._query)
        app.router.add_route("POST", f"{SAP_ROOT}/ProdnOrdConf2", self._create)

    def _count(self, outcome: str) -> None:
        if self._stats is not None and outcome:
            setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)

    def expire_sessions(self) -> None:
        """End every session: the next POST with an old token gets 403 Required."""
        self._sessions.clear()

    # ------------------------------------------------------------------ plumbing
    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user.upper() == self.username.upper() and password == self.password

    def _unauthorised(self) -> web.Response:
        return web.Response(
            status=401,
            text="Logon failed",
            headers={
                "WWW-Authenticate": f'Basic realm="SAP NetWeaver Application Server [{_SID}/'
                f'{self.client}]"'
            },
        )

    def _fetch(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.headers.get("x-csrf-token", "").lower() != "fetch":
            return
        self.token_fetches += 1
        session = request.cookies.get(self.cookie_name)
        if session is None or session not in self._sessions:
            session = secrets.token_urlsafe(24)
            self._sessions[session] = base64.b64encode(secrets.token_bytes(18)).decode()
            response.set_cookie(self.cookie_name, session, path="/", httponly=True)
            response.set_cookie("sap-usercontext", f"sap-client={self.client}", path="/")
        response.headers["x-csrf-token"] = self._sessions[session]

    async def _service(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._unauthorised()
        response = web.json_response(
            {"d": {"EntitySets": ["ProdnOrdConf2", "ProdnOrdConfMatlDocItm"]}}
        )
        self._fetch(request, response)
        return response

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._unauthorised()
        response = web.Response(
            text='<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" '
            'xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"/>',
            content_type="application/xml",
        )
        self._fetch(request, response)
        return response

    # ------------------------------------------------------------------ read
    async def _query(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._unauthorised()
        bookings = self.ledger.by_collection(SAP_COLLECTION)
        query = request.query.get("$filter")
        if query is not None:
            guid = _GUID_FILTER.match(query.strip())
            text = _TEXT_FILTER.match(query.strip())
            if guid is not None:
                wanted = guid.group(1).lower()
                bookings = [
                    b
                    for b in bookings
                    if str(b.document.get("ExternalSystemConfirmation", "")).lower() == wanted
                ]
            elif text is not None:
                wanted = text.group(1).replace("''", "'")
                bookings = [b for b in bookings if b.document.get("ConfirmationText") == wanted]
            else:
                error = _SapError(
                    "/IWBEP/CM_MGW_RT/022",
                    f"Invalid filter expression: '{query}' (this simulator understands "
                    "ExternalSystemConfirmation eq guid'...' and ConfirmationText eq '...')",
                )
                return web.json_response(_error_body(error), status=400)
        top = request.query.get("$top")
        if top is not None and top.isdigit():
            bookings = bookings[: int(top)]
        results = [self._entity(b.id, b.document) for b in bookings]
        response = web.json_response({"d": {"results": results}})
        self._fetch(request, response)
        return response

    def _entity(self, booking_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
        group, count = booking_id.split("/")
        uri = f"{SAP_ROOT}/ProdnOrdConf2(ConfirmationGroup='{group}',ConfirmationCount='{count}')"
        return {
            "__metadata": {
                "id": uri,
                "uri": uri,
                "type": "API_PROD_ORDER_CONFIRMATION_2_SRV.A_ProdnOrdConf2Type",
            },
            "ConfirmationGroup": group,
            "ConfirmationCount": count,
            **{k: v for k, v in document.items() if k != _MOVEMENTS},
        }

    # ------------------------------------------------------------------ create
    async def _create(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._unauthorised()
        session = request.cookies.get(self.cookie_name)
        token = request.headers.get("x-csrf-token", "")
        if session is None or self._sessions.get(session) != token or not token:
            self.csrf_refusals += 1
            self._count("rejected")
            return web.Response(
                status=403,
                text="CSRF token validation failed",
                headers={"x-csrf-token": "Required"},
            )
        raw = await request.read()
        try:
            body = json.loads(raw)
            confirmation = _validate(body)
        except ValueError:
            self._count("rejected")
            error = _SapError("/IWBEP/CM_MGW_RT/004", "Malformed request body: not JSON")
            return web.json_response(_error_body(error), status=400)
        except _SapError as error:
            self._count("rejected")
            return web.json_response(_error_body(error), status=400)
        key = (confirmation["OrderID"], confirmation.get("OrderOperation", ""))
        group = self._groups.get(key)
        if group is None:
            group = f"{next(self._group_numbers):010d}"
            self._groups[key] = group
        count = f"{next(self._counts.setdefault(group, itertools.count(1))):08d}"
        reference = str(confirmation.get("ExternalSystemConfirmation", "")).replace("-", "")
        booking = self.ledger.book_as(SAP_COLLECTION, f"{group}/{count}", reference, confirmation)
        self._count("booked")
        return web.json_response({"d": self._entity(booking.id, booking.document)}, status=201)
