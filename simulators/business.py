"""ERP, WMS and QMS simulators: small aiohttp servers that validate, book and replay.

Each simulator serves generic REST/JSON routes (a table of :class:`BookingRoute`) and the
routes of the real products' APIs the gateway's profiles speak:

======  =====================================================  =================================
ERP     ``POST /api/v1/confirmations``                         generic REST
        ``/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV``  SAP S/4HANA (:mod:`.sap`)
        ``/api/resource/Stock Entry``, ``/api/method/...``     ERPNext (:mod:`.erpnext`)
WMS     ``POST /api/v1/goods-receipts``                        generic REST
        ``/api/resource/Stock Entry``                          ERPNext as the WMS
QMS     ``POST /api/v1/inspection-results``                    generic REST
        ``POST /api/v1/nonconformances``                       generic REST (SPC alarms)
        ``POST /b2mml``                                        B2MML BODs (:mod:`.b2mml`)
======  =====================================================  =================================

Generic routes: ``POST <path>`` validates the document and books it in the
:class:`~simulators.ledger.Ledger` under its idempotency key, taken from the
``Idempotency-Key`` header or else the body field ``external_reference``. Answers: ``201
{"id", "status", "received_at"}`` when booked; for a repeated header key ``200`` with the same
body and ``Idempotent-Replayed: true``; for a repeated ``external_reference`` ``409 {"error":
"external_reference: already exists", "id"}``; ``422 {"error": "<field>: <reason>"}`` for bad
JSON or a missing or mistyped field; ``400`` without either key. ``GET <path>`` lists the
collection (``?external_reference=`` / ``?idempotency_key=`` filter it); ``POST
<path>/batch`` takes ``{"documents": [...]}`` (each with ``external_reference``) and answers
``{"results": [{"status", "id"|"error"}]}`` in order.

Generic routes need no credentials unless the simulator is given `auth`; the SAP and ERPNext
routes always check theirs; every server can run TLS (with client certificates) through
`ssl_context`.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from simulators.service import Service

from .b2mml import B2mmlReceiver
from .control import add_control_routes
from .erpnext import FrappeSite
from .faults import Faults, FaultSettings
from .http_faults import CONTROL_PREFIX, HttpListener, fault_middleware
from .ledger import Answer, Ledger
from .plant import iso_utc
from .sap import SapODataService
from .schemas import (
    CONFIRMATION,
    GOODS_RECEIPT,
    INSPECTION_RESULT,
    NONCONFORMANCE,
    Schema,
    validate,
)

__all__ = [
    "BookingRoute",
    "BusinessSimulator",
    "BusinessStats",
    "ErpSimulator",
    "GenericAuth",
    "QmsSimulator",
    "WmsSimulator",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
REFERENCE_FIELD = "external_reference"
REPLAY_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class BookingRoute:
    """``POST path`` books documents of ``schema`` into ``collection``; ``GET path`` lists it."""

    path: str
    collection: str
    schema: Schema
    id_prefix: str


@dataclass(frozen=True)
class GenericAuth:
    """Credentials the generic routes require (any one of them is enough)."""

    bearer: str | None = None
    basic: tuple[str, str] | None = None
    api_key: tuple[str, str] | None = None
    """(header, key)"""

    def allows(self, headers: Mapping[str, str]) -> bool:
        authorization = headers.get("Authorization", "")
        if self.bearer is not None and authorization == f"Bearer {self.bearer}":
            return True
        if self.basic is not None and authorization.startswith("Basic "):
            try:
                given = base64.b64decode(authorization[6:]).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            if given == f"{self.basic[0]}:{self.basic[1]}":
                return True
        return self.api_key is not None and headers.get(self.api_key[0]) == self.api_key[1]


@dataclass
class BusinessStats:
    """Request counters of a business simulator."""

    requests: int = 0
    booked: int = 0
    replays: int = 0
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BusinessSimulator(Service):
    """Shared implementation of the ERP, WMS and QMS simulators.

    Example::

        async with ErpSimulator() as erp:
            print(erp.url)          # http://127.0.0.1:PORT
            print(len(erp.ledger))  # bookings so far
    """

    SYSTEM: ClassVar[str] = "business"
    ROUTES: ClassVar[tuple[BookingRoute, ...]] = ()

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int | None = None,
        faults: Faults | FaultSettings | None = None,
        *,
        extra_routes: Sequence[BookingRoute] = (),
        auth: GenericAuth | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.faults = faults if isinstance(faults, Faults) else Faults(faults)
        self.ledger = Ledger()
        self.stats = BusinessStats()
        self.routes = (*self.ROUTES, *extra_routes)
        self.auth = auth
        self._init_profiles()
        self._main = HttpListener(self._main_app(), host, port, self.faults, ssl_context)
        self._control: HttpListener | None = None
        if control_port is not None:
            control_app = web.Application()
            add_control_routes(control_app, {"http": self.faults}, self.stats_json)
            self._add_control(control_app)
            self._control = HttpListener(control_app, host, control_port)

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        return self._main.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (routes start with ``/api/v1``)."""
        return self._main.url

    @property
    def control_port(self) -> int | None:
        return self._control.port if self._control is not None else None

    @property
    def control_url(self) -> str:
        """Base URL of the control routes (``/_control/...``): the control port if any."""
        return self._control.url if self._control is not None else self.url

    def stats_json(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "injected": self.faults.stats.as_dict()}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self._main.start()
        if self._control is not None:
            await self._control.start()

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.stop()
        await self._main.stop()

    # ------------------------------------------------------------------ application
    def _main_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_middleware, fault_middleware(self.faults)])
        app.router.add_get("/health", self._health)
        for route in self.routes:
            app.router.add_post(route.path, self._booking_handler(route))
            app.router.add_post(route.path + "/batch", self._batch_handler(route))
            app.router.add_get(route.path, self._list_handler(route))
        self._add_profiles(app)
        add_control_routes(app, {"http": self.faults}, self.stats_json)
        self._add_control(app)
        return app

    def _init_profiles(self) -> None:
        """Create the product APIs (SAP, ERPNext, B2MML) over this simulator's ledger."""

    def _add_profiles(self, app: web.Application) -> None:
        """Routes of the product APIs; subclasses add theirs."""

    def _add_control(self, app: web.Application) -> None:
        """Further control routes; subclasses add theirs."""

    @web.middleware
    async def _count_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(CONTROL_PREFIX):
            self.stats.requests += 1
        return await handler(request)

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "system": self.SYSTEM})

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.auth is None or self.auth.allows(request.headers):
            return None
        self.stats.rejected += 1
        return web.json_response(
            {"error": "unauthorised: missing or wrong credentials"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="simulator"'},
        )

    def _list_handler(self, route: BookingRoute) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            refused = self._refused(request)
            if refused is not None:
                return refused
            bookings = self.ledger.by_collection(route.collection)
            for name in (REFERENCE_FIELD, "idempotency_key"):
                wanted = request.query.get(name)
                if wanted is not None:
                    bookings = [b for b in bookings if b.idempotency_key == wanted]
            items = [b.as_dict() for b in bookings]
            return web.json_response({"items": items, "count": len(items)})

        return handler

    def _booking_handler(self, route: BookingRoute) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            refused = self._refused(request)
            if refused is not None:
                return refused
            raw = await request.read()
            header_key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
            status, body, headers = await self._book_once(route, raw, header_key)
            return web.json_response(body, status=status, headers=headers)

        return handler

    def _batch_handler(self, route: BookingRoute) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            refused = self._refused(request)
            if refused is not None:
                return refused
            try:
                data = json.loads(await request.read())
            except (ValueError, UnicodeDecodeError):
                self.stats.rejected += 1
                return web.json_response({"error": "body: invalid JSON"}, status=422)
            documents = data.get("documents") if isinstance(data, dict) else None
            if not isinstance(documents, list):
                self.stats.rejected += 1
                return web.json_response({"error": "documents: must be a list"}, status=422)
            results = []
            for document in documents:
                raw = json.dumps(document).encode()
                status, body, _ = await self._book_once(route, raw, "")
                results.append({**body, "status": status})
            return web.json_response({"results": results})

        return handler

    async def _book_once(
        self, route: BookingRoute, raw: bytes, header_key: str
    ) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        key = header_key
        by_field = False
        if not key:
            try:
                parsed = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                parsed = None
            reference = parsed.get(REFERENCE_FIELD) if isinstance(parsed, dict) else None
            if isinstance(reference, str) and reference.strip():
                key, by_field = reference.strip(), True
        if not key:
            self.stats.rejected += 1
            return (
                400,
                {"error": f"{IDEMPOTENCY_HEADER}: header is required "
                          f"(or an {REFERENCE_FIELD} field)"},
                None,
            )  # fmt: skip

        async def produce() -> Answer:
            return self._book(route, key, raw)

        answer, replayed = await self.ledger.once(route.collection, key, produce)
        if replayed:
            self.stats.replays += 1
            if by_field:
                return (
                    409,
                    {"error": f"{REFERENCE_FIELD}: already exists", "id": answer.body["id"]},
                    None,
                )
            return 200, dict(answer.body), {REPLAY_HEADER: "true"}
        if answer.success:
            self.stats.booked += 1
        else:
            self.stats.rejected += 1
        return answer.status, dict(answer.body), None

    def _book(self, route: BookingRoute, key: str, raw: bytes) -> Answer:
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return Answer(422, {"error": "body: invalid JSON"})
        problem = validate(route.schema, document)
        if problem is not None:
            return Answer(422, {"error": problem})
        booking = self.ledger.book(route.collection, route.id_prefix, key, document)
        return Answer(
            201,
            {"id": booking.id, "status": "booked", "received_at": iso_utc(booking.received_at)},
        )


class ErpSimulator(BusinessSimulator):
    """ERP: production order confirmations, generic (``POST /api/v1/confirmations``), SAP
    S/4HANA OData and ERPNext Stock Entries (Manufacture)."""

    SYSTEM = "erp"
    ROUTES = (BookingRoute("/api/v1/confirmations", "confirmations", CONFIRMATION, "CONF"),)

    sap: SapODataService
    erpnext: FrappeSite

    def _init_profiles(self) -> None:
        self.sap = SapODataService(self.ledger, stats=self.stats)
        self.erpnext = FrappeSite(self.ledger, stats=self.stats)

    def _add_profiles(self, app: web.Application) -> None:
        self.sap.add_routes(app)
        self.erpnext.add_routes(app)

    def _add_control(self, app: web.Application) -> None:
        async def expire(_request: web.Request) -> web.Response:
            self.sap.expire_sessions()
            return web.json_response({"expired": True})

        app.router.add_post(f"{CONTROL_PREFIX}/sap/expire-sessions", expire)


class WmsSimulator(BusinessSimulator):
    """WMS: goods receipts, generic (``POST /api/v1/goods-receipts``) and as ERPNext Stock
    Entries (put-away transfers)."""

    SYSTEM = "wms"
    ROUTES = (BookingRoute("/api/v1/goods-receipts", "goods-receipts", GOODS_RECEIPT, "GR"),)

    erpnext: FrappeSite

    def _init_profiles(self) -> None:
        self.erpnext = FrappeSite(self.ledger, stats=self.stats)

    def _add_profiles(self, app: web.Application) -> None:
        self.erpnext.add_routes(app)


class QmsSimulator(BusinessSimulator):
    """QMS: inspection results and nonconformances (generic), and B2MML BODs (``/b2mml``)."""

    SYSTEM = "qms"
    ROUTES = (
        BookingRoute("/api/v1/inspection-results", "inspection-results", INSPECTION_RESULT, "INSP"),
        BookingRoute("/api/v1/nonconformances", "nonconformances", NONCONFORMANCE, "NC"),
    )

    b2mml: B2mmlReceiver

    def _init_profiles(self) -> None:
        self.b2mml = B2mmlReceiver(self.ledger, stats=self.stats)

    def _add_profiles(self, app: web.Application) -> None:
        self.b2mml.add_routes(app)
