"""ERP, WMS and QMS simulators: small aiohttp servers that validate, book and replay.

Each simulator is a table of :class:`BookingRoute` (path, collection, schema, id prefix) over
one shared implementation: ``POST <path>`` validates the document and books it in the
:class:`~simulators.ledger.Ledger` under its ``Idempotency-Key``; ``GET <path>`` lists the
collection. Another profile (e.g. SAP OData or ERPNext paths and fields) is another route
table passed as ``extra_routes`` or a subclass with more ``ROUTES``.

Answers: ``201 {"id", "status", "received_at"}`` when booked; ``200`` with the same body and
``Idempotent-Replayed: true`` for a repeated key; ``422 {"error": "<field>: <reason>"}`` for
bad JSON or a missing or mistyped field; ``400`` without ``Idempotency-Key``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web

from .control import add_control_routes
from .faults import Faults, FaultSettings
from .http_faults import CONTROL_PREFIX, HttpListener, fault_middleware
from .ledger import Answer, Ledger
from .plant import iso_utc
from .schemas import CONFIRMATION, GOODS_RECEIPT, INSPECTION_RESULT, Schema, validate

__all__ = [
    "BookingRoute",
    "BusinessSimulator",
    "BusinessStats",
    "ErpSimulator",
    "QmsSimulator",
    "WmsSimulator",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class BookingRoute:
    """``POST path`` books documents of ``schema`` into ``collection``; ``GET path`` lists it."""

    path: str
    collection: str
    schema: Schema
    id_prefix: str


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


class BusinessSimulator:
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
    ) -> None:
        self.host = host
        self.faults = faults if isinstance(faults, Faults) else Faults(faults)
        self.ledger = Ledger()
        self.stats = BusinessStats()
        self.routes = (*self.ROUTES, *extra_routes)
        self._main = HttpListener(self._main_app(), host, port, self.faults)
        self._control: HttpListener | None = None
        if control_port is not None:
            control_app = web.Application()
            add_control_routes(control_app, {"http": self.faults}, self.stats_json)
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

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ application
    def _main_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_middleware, fault_middleware(self.faults)])
        app.router.add_get("/health", self._health)
        for route in self.routes:
            app.router.add_post(route.path, self._booking_handler(route))
            app.router.add_get(route.path, self._list_handler(route))
        add_control_routes(app, {"http": self.faults}, self.stats_json)
        return app

    @web.middleware
    async def _count_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(CONTROL_PREFIX):
            self.stats.requests += 1
        return await handler(request)

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "system": self.SYSTEM})

    def _list_handler(self, route: BookingRoute) -> Handler:
        async def handler(_request: web.Request) -> web.Response:
            items = [b.as_dict() for b in self.ledger.by_collection(route.collection)]
            return web.json_response({"items": items, "count": len(items)})

        return handler

    def _booking_handler(self, route: BookingRoute) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
            if not key:
                self.stats.rejected += 1
                return web.json_response(
                    {"error": f"{IDEMPOTENCY_HEADER}: header is required"}, status=400
                )
            raw = await request.read()

            async def produce() -> Answer:
                return self._book(route, key, raw)

            answer, replayed = await self.ledger.once(route.collection, key, produce)
            if replayed:
                self.stats.replays += 1
                return web.json_response(
                    dict(answer.body), status=200, headers={REPLAY_HEADER: "true"}
                )
            if answer.success:
                self.stats.booked += 1
            else:
                self.stats.rejected += 1
            return web.json_response(dict(answer.body), status=answer.status)

        return handler

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
    """ERP: production order confirmations (``POST /api/v1/confirmations``)."""

    SYSTEM = "erp"
    ROUTES = (BookingRoute("/api/v1/confirmations", "confirmations", CONFIRMATION, "CONF"),)


class WmsSimulator(BusinessSimulator):
    """WMS: goods receipts (``POST /api/v1/goods-receipts``)."""

    SYSTEM = "wms"
    ROUTES = (BookingRoute("/api/v1/goods-receipts", "goods-receipts", GOODS_RECEIPT, "GR"),)


class QmsSimulator(BusinessSimulator):
    """QMS: inspection results (``POST /api/v1/inspection-results``)."""

    SYSTEM = "qms"
    ROUTES = (
        BookingRoute("/api/v1/inspection-results", "inspection-results", INSPECTION_RESULT, "INSP"),
    )
