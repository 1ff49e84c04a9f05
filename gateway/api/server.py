"""The gateway's HTTP API (aiohttp), bound to loopback by default.

=====================================  ==========================================================
``GET /health``                        ``{"status": "ok"}`` while the gateway runs
``GET /status``                        components (running, failures, last error), queue drops,
                                       outbox backlog per destination; per destination its
                                       circuit, requests in flight, latency p50/p99, error ratio
``GET /tags``                          every tag's last value, quality, timestamp
``GET /tags/{device}/{tag}``           one tag
``POST /tags/{device}/{tag}``          write ``{"value": ...}`` (writable tags only)
``POST /processors/{name}/complete``   close the current work-report segment now
``POST /genealogy/lots/{lot}/components``  record consumed component lots
                                       ``{"components": [{"lot", "material", "quantity", "unit"}]}``
``GET /genealogy/lots/{lot}``          backward: where and when the lot was made, what went in
``GET /genealogy/lots/{lot}/where-used``  forward: the lots that consumed it (``?depth=N``)
``GET /metrics``                       Prometheus metrics
=====================================  ==========================================================
"""

from __future__ import annotations

__all__ = ["ApiServer"]

import json
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import DeviceError, NotConnectedError, WriteRefusedError
from gateway.runtime.app import Gateway
from gateway.runtime.interfaces import WritableDriver

log = logging.getLogger(__name__)


class ApiServer:
    """Serves the API of one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        api = gateway.config.gateway.api
        self._host = api.host if api else "127.0.0.1"
        self._port = api.port if api else 0
        self.gateway = gateway
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/status", self._status)
        app.router.add_get("/tags", self._tags)
        app.router.add_get("/tags/{device}/{tag}", self._tag)
        app.router.add_post("/tags/{device}/{tag}", self._write)
        app.router.add_post("/processors/{name}/complete", self._complete)
        app.router.add_post("/genealogy/lots/{lot}/components", self._genealogy_post)
        app.router.add_get("/genealogy/lots/{lot}", self._genealogy_backward)
        app.router.add_get("/genealogy/lots/{lot}/where-used", self._genealogy_forward)
        app.router.add_get("/metrics", self._metrics)
        self.app = app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("API listening on http://%s:%d/", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if self.gateway.started else "stopped"})

    async def _status(self, _request: web.Request) -> web.Response:
        gateway = self.gateway
        body: dict[str, Any] = {
            "gateway": gateway.config.gateway.id,
            "components": gateway.supervisor.status(),
            "pipeline": {
                "batches": gateway.pipeline.batches,
                "dropped": gateway.pipeline.queue.dropped,
            },
            "outputs": {
                name: {"queued": len(q), "dropped": q.dropped}
                for name, q in gateway.output_queues.items()
            },
        }
        if gateway.outbox is not None:
            body["outbox"] = await gateway.outbox.counts()
            body["destinations"] = {
                name: dispatcher.status() for name, dispatcher in gateway.dispatchers.items()
            }
        return web.json_response(body)

    async def _tags(self, _request: web.Request) -> web.Response:
        last = self.gateway.pipeline.last_values
        return web.json_response([last.as_dict(i) for i in range(len(self.gateway.table))])

    def _index(self, request: web.Request) -> int:
        tag_id = f"{request.match_info['device']}/{request.match_info['tag']}"
        try:
            return self.gateway.table.index(tag_id)
        except KeyError:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"unknown tag {tag_id}"}),
                content_type="application/json",
            ) from None

    async def _tag(self, request: web.Request) -> web.Response:
        return web.json_response(self.gateway.pipeline.last_values.as_dict(self._index(request)))

    async def _write(self, request: web.Request) -> web.Response:
        info = self.gateway.table[self._index(request)]
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": 'body must be JSON: {"value": ...}'}, status=400)
        if not isinstance(body, dict) or "value" not in body:
            return web.json_response({"error": 'body must be {"value": ...}'}, status=400)
        driver = self.gateway.driver(info.device)
        if not isinstance(driver, WritableDriver):
            return web.json_response({"error": f"{info.device} cannot write"}, status=409)
        try:
            await driver.write(info, body["value"])
        except WriteRefusedError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        except DeviceError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        except NotConnectedError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.json_response({"written": info.id, "value": body["value"]})

    async def _complete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for processor in self.gateway.processors:
            if processor.name == name and hasattr(processor, "request_completion"):
                processor.request_completion()
                return web.json_response({"requested": name})
        return web.json_response({"error": f"no work-report processor {name}"}, status=404)

    # --- lot genealogy (see gateway/processors/genealogy_store.py) ---

    def _genealogy_store(self) -> Any:
        for processor in self.gateway.processors:
            store = getattr(processor, "genealogy_store", None)
            if store is not None:
                return store
        raise web.HTTPNotFound(
            text=json.dumps({"error": "no genealogy processor is configured"}),
            content_type="application/json",
        )

    async def _genealogy_post(self, request: web.Request) -> web.Response:
        from gateway.batch import now_ns
        from gateway.processors.genealogy_store import parse_components

        store = self._genealogy_store()
        lot = request.match_info["lot"]
        try:
            components = parse_components(await request.json())
        except ValueError as exc:  # bad JSON or a bad field
            return web.json_response({"error": str(exc) or "body must be JSON"}, status=422)
        count = await store.add_components(lot, components, now_ns())
        return web.json_response({"lot": lot, "components": count}, status=201)

    async def _genealogy_query(self, request: web.Request, *, forward: bool) -> web.Response:
        store = self._genealogy_store()
        lot = request.match_info["lot"]
        try:
            depth = int(request.query.get("depth", "10"))
        except ValueError:
            return web.json_response({"error": "depth must be an integer"}, status=400)
        found = await (store.forward(lot, depth) if forward else store.backward(lot, depth))
        if found is None:
            return web.json_response({"error": f"lot {lot} is not known"}, status=404)
        return web.json_response(found)

    async def _genealogy_backward(self, request: web.Request) -> web.Response:
        return await self._genealogy_query(request, forward=False)

    async def _genealogy_forward(self, request: web.Request) -> web.Response:
        return await self._genealogy_query(request, forward=True)

    async def _metrics(self, _request: web.Request) -> web.Response:
        data = generate_latest(self.gateway.metrics.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
