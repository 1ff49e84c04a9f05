"""Fault injection for the aiohttp servers: a middleware and a listener that can go down.

:func:`fault_middleware` delays every response (latency), answers 503 (error rate) or closes
the connection without an answer after the request was processed (drop rate: the nasty case
where a booking happened but the client never hears of it). Paths under ``/_control`` are exempt
so that faults can always be changed and cleared. While the server is down, requests that
still arrive on old keep-alive connections are dropped too.

:class:`HttpListener` serves an aiohttp application on one TCP port and, driven by
:func:`~simulators.faults.supervise_down`, stops listening while the server is down and
listens again on the same port afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from .faults import Faults, supervise_down

__all__ = ["CONTROL_PREFIX", "HttpListener", "fault_middleware"]

_log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_control"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.close()
    # nothing reaches the client: the transport is closed
    return web.Response(status=503)


def fault_middleware(faults: Faults, *, exempt_prefix: str = CONTROL_PREFIX) -> Middleware:
    """An aiohttp middleware applying ``faults`` to every request outside ``exempt_prefix``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if faults.is_down():
            faults.stats.refused += 1
            return _drop(request)
        if request.path.startswith(exempt_prefix):
            return await handler(request)
        await faults.delay()
        if faults.roll_error():
            return web.json_response({"error": "service unavailable (injected fault)"}, status=503)
        response = await handler(request)
        if faults.roll_drop():
            return _drop(request)
        return response

    return middleware


class HttpListener:
    """An aiohttp application on ``host:port`` that follows a :class:`Faults`' down state."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        faults: Faults | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._app = app
        self._ssl = ssl_context
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._faults = faults
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("HttpListener is not started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        await self._listen(self._requested_port)
        if self._faults is not None:
            if self._faults.is_down():
                await self._go_down()
            self._supervisor = asyncio.create_task(
                supervise_down(self._faults, self._go_down, self._go_up), name="http-down"
            )

    async def stop(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runner, self._runner = self._runner, None
        self._site = None
        if runner is not None:
            await runner.cleanup()

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, port, ssl_context=self._ssl)
        await site.start()
        self._site, self._port = site, site.port

    async def _go_down(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        if self._runner is not None and self._runner.server is not None:
            for connection in self._runner.server.connections:
                connection.force_close()

    async def _go_up(self) -> None:
        while self._runner is not None:
            try:
                await self._listen(self.port)
                return
            except OSError as exc:
                _log.warning(
                    "cannot listen again on %s:%s: %s; retrying", self.host, self.port, exc
                )
                await asyncio.sleep(0.2)
