"""The HTTP control API of the simulators (docs/simulators.md, "Fault injection").

Every simulator: ``GET/POST/DELETE /_control/faults`` and ``GET /_control/stats``. The plant also
has ``GET /_control/truth``, ``POST /_control/restart-plc`` (``{"machine": "M2"}``),
``GET /_control/state`` and ``POST /_control/start`` (starts a plant started paused); its fault
routes take ``"protocol": "modbus" | "opcua" | "all"``.
Invalid fault values answer 400 with ``{"error": "<field>: <reason>"}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from .faults import FaultError, Faults, FaultSettings
from .http_faults import CONTROL_PREFIX, HttpListener
from .plant import Plant, UnknownMachineError

__all__ = ["PlantControl", "add_control_routes", "plant_control_app"]

StatsProvider = Callable[[], Mapping[str, Any]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object body (empty body = ``{}``), or a 400 answer."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body: invalid JSON")
    if not isinstance(body, dict):
        return _error(400, "body: must be a JSON object")
    return body


class _FaultRoutes:
    """Fault and stats handlers over one or several named :class:`Faults` (protocols)."""

    def __init__(self, targets: Mapping[str, Faults], stats: StatsProvider) -> None:
        self._targets = dict(targets)
        self._stats = stats

    @property
    def _multi(self) -> bool:
        return len(self._targets) > 1

    def _state(self) -> dict[str, Any]:
        if self._multi:
            return {name: faults.as_dict() for name, faults in self._targets.items()}
        (faults,) = self._targets.values()
        return faults.as_dict()

    def _select(self, protocol: object) -> list[Faults] | str:
        if not self._multi:
            return "protocol: not supported by this simulator"
        if protocol == "all":
            return list(self._targets.values())
        if isinstance(protocol, str) and protocol in self._targets:
            return [self._targets[protocol]]
        return f"protocol: must be one of {', '.join([*self._targets, 'all'])}"

    async def get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(self._state())

    async def post_faults(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        targets: list[Faults] | str = list(self._targets.values())
        if "protocol" in body:
            targets = self._select(body.pop("protocol"))
        if isinstance(targets, str):
            return _error(400, targets)
        try:
            FaultSettings.from_mapping(body)  # validate before touching anything
        except FaultError as exc:
            return _error(400, str(exc))
        for faults in targets:
            faults.update(body)
        return web.json_response(self._state())

    async def delete_faults(self, request: web.Request) -> web.Response:
        targets: list[Faults] | str = list(self._targets.values())
        if "protocol" in request.query:
            targets = self._select(request.query["protocol"])
        if isinstance(targets, str):
            return _error(400, targets)
        for faults in targets:
            faults.clear()
        return web.json_response(self._state())

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self._stats()))


def add_control_routes(
    app: web.Application, targets: Mapping[str, Faults], stats: StatsProvider
) -> None:
    """Add ``/_control/faults`` and ``/_control/stats`` to ``app``."""
    routes = _FaultRoutes(targets, stats)
    app.router.add_get(f"{CONTROL_PREFIX}/faults", routes.get_faults)
    app.router.add_post(f"{CONTROL_PREFIX}/faults", routes.post_faults)
    app.router.add_delete(f"{CONTROL_PREFIX}/faults", routes.delete_faults)
    app.router.add_get(f"{CONTROL_PREFIX}/stats", routes.get_stats)


class _PlantRoutes:
    def __init__(self, plant: Plant) -> None:
        self._plant = plant

    async def truth(self, _request: web.Request) -> web.Response:
        return web.json_response(self._plant.truth_json())

    async def state(self, _request: web.Request) -> web.Response:
        return web.json_response(self._plant.state_json())

    async def start(self, _request: web.Request) -> web.Response:
        """Start the scenario clock (for a plant started with ``--paused``); idempotent."""
        await self._plant.start()
        return web.json_response({"running": True, "time_s": self._plant.time_s})

    async def restart_plc(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        machine = body.get("machine")
        if not isinstance(machine, str) or not machine:
            return _error(400, "machine: is required (a machine name such as M2)")
        try:
            self._plant.restart_plc(machine)
        except UnknownMachineError:
            return _error(404, f"machine: unknown machine {machine!r}")
        return web.json_response({"machine": machine, "restarted_at_s": self._plant.time_s})


def plant_control_app(
    plant: Plant, targets: Mapping[str, Faults], stats: StatsProvider
) -> web.Application:
    """The plant's control application (faults per protocol, stats, truth, state, restarts)."""
    app = web.Application()
    add_control_routes(app, targets, stats)
    routes = _PlantRoutes(plant)
    app.router.add_get(f"{CONTROL_PREFIX}/truth", routes.truth)
    app.router.add_get(f"{CONTROL_PREFIX}/state", routes.state)
    app.router.add_post(f"{CONTROL_PREFIX}/restart-plc", routes.restart_plc)
    app.router.add_post(f"{CONTROL_PREFIX}/start", routes.start)
    return app


class PlantControl:
    """The plant's HTTP control endpoint on its own port."""

    def __init__(
        self,
        plant: Plant,
        targets: Mapping[str, Faults],
        stats: StatsProvider,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._listener = HttpListener(plant_control_app(plant, targets, stats), host, port)

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (routes are under ``/_control``)."""
        return self._listener.url

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()
