"""The plant as an OPC UA PLC (asyncua server).

Nodes ``Objects/<Line>/<Machine>/<Variable>`` with string NodeIds ``<Line>.<Machine>.<Variable>``
in the namespace ``urn:edge-gateway:simulator:plant``. A writer task receives the plant's
updates and writes only the values that changed, with the scenario's source timestamp;
``LastMeasurement`` (with the counters) is written once per part. ``SpeedSetpoint`` is writable
by clients; out-of-range writes answer ``BadOutOfRange``.

Faults: latency delays reads and writes; the error rate answers reads with ``BadInternalError``;
the drop rate closes the connection that sent a read or write; down stops listening (closing
every connection) and listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from simulators.service import Service

from .faults import Faults, FaultSettings, supervise_down
from .model import (
    MEASUREMENT_SLOTS,
    SPEED_SETPOINT_MAX,
    SPEED_SETPOINT_MIN,
    MachineSnapshot,
    PartEvent,
    SetpointError,
)
from .plant import Plant, PlantUpdate

__all__ = ["NAMESPACE_URI", "VARIABLES", "OpcUaPlc", "OpcUaStats"]

_log = logging.getLogger(__name__)

NAMESPACE_URI = "urn:edge-gateway:simulator:plant"

_V = ua.VariantType


@dataclass(frozen=True)
class _Variable:
    name: str
    variant: ua.VariantType
    value: Callable[[MachineSnapshot], Any]
    changed_at: Callable[[MachineSnapshot], float]


#: every variable of a machine, in browse order
VARIABLES: tuple[_Variable, ...] = (
    _Variable("State", _V.UInt16, lambda s: s.state, lambda s: s.state_since_s),
    _Variable("ReasonCode", _V.UInt16, lambda s: s.reason, lambda s: s.state_since_s),
    _Variable("GoodCount", _V.UInt16, lambda s: s.good_count16, lambda s: s.counts_at_s),
    _Variable("GoodCount32", _V.UInt32, lambda s: s.good_count, lambda s: s.counts_at_s),
    _Variable("ScrapCount", _V.UInt32, lambda s: s.scrap_count, lambda s: s.counts_at_s),
    _Variable("MeasSeq", _V.UInt32, lambda s: s.meas_seq, lambda s: s.counts_at_s),
    _Variable(
        "LastMeasurement", _V.Double, lambda s: s.last_measurement, lambda s: s.measurement_at_s
    ),
    _Variable(
        "Measurements", _V.Float, lambda s: list(s.measurements), lambda s: s.measurement_at_s
    ),
    _Variable("Order", _V.String, lambda s: s.order, lambda s: s.job_since_s),
    _Variable("Operation", _V.String, lambda s: s.operation, lambda s: s.job_since_s),
    _Variable("Material", _V.String, lambda s: s.material, lambda s: s.job_since_s),
    _Variable("Lot", _V.String, lambda s: s.lot, lambda s: s.job_since_s),
    _Variable("Temperature", _V.Double, lambda s: s.temperature, lambda s: s.process_at_s),
    _Variable("Pressure", _V.Double, lambda s: s.pressure, lambda s: s.process_at_s),
    _Variable("Speed", _V.Double, lambda s: s.speed, lambda s: s.process_at_s),
    _Variable("SpeedSetpoint", _V.Double, lambda s: s.speed_setpoint, lambda s: s.time_s),
)
_VARIANTS = {var.name: var.variant for var in VARIABLES}
_SETPOINT = "SpeedSetpoint"
_START_ATTEMPTS = 5


@dataclass
class OpcUaStats:
    """Service counters of an :class:`OpcUaPlc` (client reads and writes only)."""

    reads: int = 0
    writes: int = 0
    values_written: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _node_id(identifier: str, namespace_index: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(namespace_index))


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class OpcUaPlc(Service):
    """An OPC UA server for a :class:`~simulators.plant.Plant` (security None, anonymous).

    Example::

        async with Plant() as plant, OpcUaPlc(plant) as plc:
            print(plc.endpoint)  # opc.tcp://127.0.0.1:PORT/
    """

    def __init__(
        self,
        plant: Plant,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | FaultSettings | None = None,
    ) -> None:
        self.plant = plant
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.faults = faults if isinstance(faults, Faults) else Faults(faults)
        self.stats = OpcUaStats()
        self.namespace_index: int | None = None
        self._server: Server | None = None
        self._nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._setpoints: dict[ua.NodeId, str] = {}
        self._written: dict[tuple[str, str], Any] = {}
        self._pending: deque[PlantUpdate] = deque()
        self._wakeup = asyncio.Event()
        self._rejected_writes: dict[int, set[int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._remove_listener: Callable[[], None] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("OpcUaPlc is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        """``opc.tcp://HOST:PORT/`` (known after :meth:`start`)."""
        return f"opc.tcp://{self.host}:{self.port}/"

    @property
    def listening(self) -> bool:
        return self._server is not None and not self.faults.is_down()

    def node_id(self, machine: str, variable: str) -> ua.NodeId:
        return self._nodes[(machine, variable)]

    def stats_json(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "injected": self.faults.stats.as_dict()}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._server is not None:
            return
        for attempt in range(_START_ATTEMPTS):
            port = self._requested_port or _free_port(self.host)
            server = await self._build(port)
            try:
                await server.start()
            except OSError as exc:
                if self._requested_port or exc.errno != errno.EADDRINUSE:
                    raise
                _log.info("port %s taken (attempt %s), picking another", port, attempt + 1)
                continue
            self._server, self._port = server, port
            break
        else:
            raise OSError(f"OPC UA server found no free port on {self.host}")
        self._remove_listener = self.plant.add_listener(self._on_update)
        # catch up with anything that changed while the server was being built
        plant = self.plant
        self._on_update(PlantUpdate(plant.version, plant.time_s, (), plant.machines))
        if self.faults.is_down():
            await self._go_down()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="opcua-writer"),
            asyncio.create_task(
                supervise_down(self.faults, self._go_down, self._go_up), name="opcua-down"
            ),
        ]

    async def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, self._server = self._server, None
        if server is not None:
            # asyncua's stop() waits up to 1 s for its clock task to wake up: cancel it instead
            clock, server.iserver.time_task = server.iserver.time_task, None
            if clock is not None:
                clock.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await clock
            await server.stop()

    # ------------------------------------------------------------------ address space
    async def _build(self, port: int) -> Server:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{port}/")
        server.set_server_name("edge-gateway plant simulator")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        await server.set_application_uri(f"{NAMESPACE_URI}:server")
        idx = await server.register_namespace(NAMESPACE_URI)
        self.namespace_index = idx
        line = self.plant.line
        line_folder = await server.nodes.objects.add_folder(
            _node_id(line, idx), ua.QualifiedName(line, idx)
        )
        self._nodes.clear()
        self._setpoints.clear()
        self._written.clear()
        for machine in self.plant.machines:
            snapshot = self.plant.snapshot(machine)
            folder = await line_folder.add_folder(
                _node_id(f"{line}.{machine}", idx), ua.QualifiedName(machine, idx)
            )
            for var in VARIABLES:
                value = var.value(snapshot)
                node = await folder.add_variable(
                    _node_id(f"{line}.{machine}.{var.name}", idx),
                    ua.QualifiedName(var.name, idx),
                    ua.Variant(value, var.variant),
                )
                if var.name == "Measurements":
                    await node.write_attribute(
                        AttributeIds.ValueRank,
                        ua.DataValue(ua.Variant(ua.ValueRank.OneDimension, _V.Int32)),
                    )
                    await node.write_attribute(
                        AttributeIds.ArrayDimensions,
                        ua.DataValue(ua.Variant([MEASUREMENT_SLOTS], _V.UInt32)),
                    )
                if var.name == _SETPOINT:
                    await node.set_writable()
                    self._setpoints[node.nodeid] = machine
                self._nodes[(machine, var.name)] = node.nodeid
                self._written[(machine, var.name)] = value
        server.subscribe_server_callback(CallbackType.PreRead, self._pre_read)
        server.subscribe_server_callback(CallbackType.PostRead, self._post_read)
        server.subscribe_server_callback(CallbackType.PreWrite, self._pre_write)
        server.subscribe_server_callback(CallbackType.PostWrite, self._post_write)
        return server

    # ------------------------------------------------------------------ value updates
    def _on_update(self, update: PlantUpdate) -> None:
        self._pending.append(update)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            changed: set[str] = set()
            parts: list[PartEvent] = []
            while self._pending:
                update = self._pending.popleft()
                changed.update(update.machines)
                parts.extend(update.parts)
            for part in parts:
                await self._write_part(part)
            for machine in sorted(changed):
                await self._write_snapshot(self.plant.snapshot(machine))

    async def _write(self, machine: str, name: str, value: Any, time_s: float) -> None:
        key = (machine, name)
        if self._written.get(key) == value or self._server is None:
            return
        self._written[key] = value
        variant = ua.Variant(value, _VARIANTS[name])
        await self._server.write_attribute_value(
            self._nodes[key],
            ua.DataValue(
                Value=variant,
                SourceTimestamp=cast(ua.DateTime, self.plant.wall_datetime(time_s)),
                ServerTimestamp=cast(ua.DateTime, datetime.now(UTC)),
            ),
        )
        self.stats.values_written += 1

    async def _write_part(self, part: PartEvent) -> None:
        machine, t = part.machine, part.time_s
        if part.good:
            await self._write(machine, "GoodCount", part.good_count & 0xFFFF, t)
            await self._write(machine, "GoodCount32", part.good_count, t)
        else:
            await self._write(machine, "ScrapCount", part.scrap_count, t)
        await self._write(machine, "MeasSeq", part.meas_seq, t)
        # written once per part, even if two parts measure the same
        self._written.pop((machine, "LastMeasurement"), None)
        await self._write(machine, "LastMeasurement", part.value, t)

    async def _write_snapshot(self, snapshot: MachineSnapshot) -> None:
        for var in VARIABLES:
            if var.name == "LastMeasurement":
                continue
            value, changed_at = var.value(snapshot), var.changed_at(snapshot)
            await self._write(snapshot.name, var.name, value, changed_at)

    # ------------------------------------------------------------------ service callbacks
    async def _pre_read(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        if event.is_external:
            self.stats.reads += 1
            await self.faults.delay()
            if self.faults.roll_drop():
                self._drop_current_connection()

    async def _post_read(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        if event.is_external and self.faults.roll_error():
            results: list[ua.DataValue] = event.response_params
            results[:] = [
                ua.DataValue(StatusCode=_status(StatusCodes.BadInternalError)) for _ in results
            ]

    async def _pre_write(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        if not event.is_external:
            return
        self.stats.writes += 1
        await self.faults.delay()
        if self.faults.roll_drop():
            self._drop_current_connection()
        rejected: set[int] = set()
        for index, item in enumerate(event.request_params.NodesToWrite):
            value = self._setpoint_value(item)
            if value is None:
                continue
            if not SPEED_SETPOINT_MIN <= value <= SPEED_SETPOINT_MAX:
                # write back the current value instead; PostWrite answers BadOutOfRange
                rejected.add(index)
                item.Value = self._current_setpoint(item.NodeId)
        if rejected:
            self._rejected_writes[id(event.request_params)] = rejected

    async def _post_write(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        if not event.is_external:
            return
        rejected = self._rejected_writes.pop(id(event.request_params), set())
        results: list[ua.StatusCode] = event.response_params
        for index, item in enumerate(event.request_params.NodesToWrite):
            if index in rejected:
                results[index] = _status(StatusCodes.BadOutOfRange)
                continue
            value = self._setpoint_value(item)
            if value is None or not results[index].is_good():
                continue
            machine = self._setpoints[item.NodeId]
            try:
                self.plant.set_speed_setpoint(machine, value)
            except SetpointError:
                results[index] = _status(StatusCodes.BadOutOfRange)
                continue
            self._written[(machine, _SETPOINT)] = value

    def _setpoint_value(self, item: ua.WriteValue) -> float | None:
        """The new setpoint if ``item`` writes a Double to a SpeedSetpoint value, else None."""
        if item.NodeId not in self._setpoints or item.AttributeId != AttributeIds.Value:
            return None
        variant = item.Value.Value if item.Value is not None else None
        if variant is None or variant.VariantType != _V.Double:
            return None  # asyncua answers BadTypeMismatch
        return float(variant.Value)

    def _current_setpoint(self, node_id: ua.NodeId) -> ua.DataValue:
        snapshot = self.plant.snapshot(self._setpoints[node_id])
        return ua.DataValue(Value=ua.Variant(snapshot.speed_setpoint, _V.Double))

    def _drop_current_connection(self) -> None:
        """Close the connection whose message is being processed (the current task's)."""
        server = self._server
        if server is None or server.bserver is None:
            return
        current = asyncio.current_task()
        for protocol in list(server.bserver.clients):
            if getattr(protocol, "_task", None) is current and protocol.transport is not None:
                protocol.transport.close()
                return

    # ------------------------------------------------------------------ down
    async def _go_down(self) -> None:
        if self._server is not None and self._server.bserver is not None:
            await self._server.bserver.stop()

    async def _go_up(self) -> None:
        while self._server is not None and self._server.bserver is not None:
            try:
                await self._server.bserver.start()
                return
            except OSError as exc:
                _log.warning("OPC UA server cannot listen again: %s; retrying", exc)
                await asyncio.sleep(0.2)
