"""The plant as a Modbus TCP PLC (pymodbus server, SimDevice API).

Unit id k is machine k. Every request refreshes the addressed registers from the plant's
current snapshot of that machine (one consistent image per read), so the server never polls.
Faults (latency, exception 4, dropped connections, down) are injected per request in a small
request-handler subclass; pymodbus' own handler is replaced because it reads the request from
the connection object after awaiting, which a delayed answer would race with.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.service import Service

from .faults import Faults, FaultSettings, supervise_down
from .model import MachineSnapshot, SetpointError
from .plant import Plant
from .registers import (
    HOLDING_REGISTER_COUNT,
    INPUT_REGISTER_COUNT,
    SPEED_SETPOINT_ADDRESS,
    decode_float_abcd,
    holding_registers,
    input_registers,
)

__all__ = ["ModbusPlc", "ModbusStats"]

_log = logging.getLogger(__name__)

_BIT_FUNCTIONS = frozenset({1, 2, 5, 15})
_WRITE_FUNCTIONS = frozenset({6, 16, 22, 23})
_RELISTEN_DELAY_S = 0.2


@dataclass
class ModbusStats:
    """Request counters of a :class:`ModbusPlc`."""

    requests: int = 0
    reads: int = 0
    writes: int = 0
    exceptions: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Image:
    """The registers of one machine, rebuilt when its snapshot changes."""

    __slots__ = ("holding", "inputs", "snapshot")

    def __init__(self, snapshot: MachineSnapshot) -> None:
        self.snapshot = snapshot
        self.holding = holding_registers(snapshot)
        self.inputs = input_registers(snapshot)


class _RequestHandler(ServerRequestHandler):
    """One client connection: injects faults, then lets the datastore answer."""

    server: _PlcServer

    async def handle_request(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is None:
            return
        plc = self.server.plc
        plc.stats.requests += 1
        await plc.faults.delay()
        if plc.faults.roll_drop():
            self.close()
            return
        response: ModbusPDU
        if pdu.dev_id not in plc.unit_ids:
            response = ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        elif plc.faults.roll_error():
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        else:
            try:
                response = await pdu.datastore_update(cast(Any, self.server.context), pdu.dev_id)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                _log.warning("modbus request %s failed: %s", pdu, exc)
                response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        if response.isError():
            plc.stats.exceptions += 1
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if self.transport is not None:
            self.server_send(response, addr)  # type: ignore[no-untyped-call]


class _PlcServer(ModbusTcpServer):
    def __init__(self, plc: ModbusPlc, devices: list[SimDevice], address: tuple[str, int]) -> None:
        super().__init__(devices, address=address)
        self.plc = plc

    def callback_new_connection(self) -> _RequestHandler:
        return _RequestHandler(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


class ModbusPlc(Service):
    """A Modbus TCP server for a :class:`~simulators.plant.Plant`.

    Example::

        async with Plant() as plant, ModbusPlc(plant) as plc:
            print("listening on", plc.host, plc.port)
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
        self.stats = ModbusStats()
        self.unit_ids = frozenset(range(1, len(plant.machines) + 1))
        self._images: dict[int, _Image] = {}
        self._devices = [self._device(unit) for unit in sorted(self.unit_ids)]
        self._server: _PlcServer | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def port(self) -> int:
        """The TCP port (known after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("ModbusPlc is not started")
        return self._port

    @property
    def listening(self) -> bool:
        return self._server is not None

    def stats_json(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "injected": self.faults.stats.as_dict()}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen (unless a down fault is active) and watch the down fault."""
        if self._supervisor is not None:
            return
        self._closing = False
        self._port = self._requested_port if self._requested_port else None
        await self._listen()  # even when down: binds the port so that it is known
        if self.faults.is_down():
            await self._go_down()
        self._supervisor = asyncio.create_task(
            supervise_down(self.faults, self._go_down, self._go_up), name="modbus-down"
        )

    async def stop(self) -> None:
        self._closing = True
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._go_down()

    # ------------------------------------------------------------------ listening
    async def _listen(self) -> None:
        port = self._port if self._port is not None else 0
        server = _PlcServer(self, self._devices, (self.host, port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"Modbus server cannot listen on {self.host}:{port}") from exc
        sockets = cast(asyncio.Server, server.transport).sockets
        self._port = int(sockets[0].getsockname()[1])
        self._server = server

    async def _go_down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def _go_up(self) -> None:
        while not self._closing:
            try:
                await self._listen()
                return
            except OSError as exc:
                _log.warning("%s; retrying", exc)
                await asyncio.sleep(_RELISTEN_DELAY_S)

    # ------------------------------------------------------------------ datastore
    def _device(self, unit_id: int) -> SimDevice:
        holding = [
            SimData(0, count=SPEED_SETPOINT_ADDRESS, datatype=DataType.REGISTERS, readonly=True),
            SimData(
                SPEED_SETPOINT_ADDRESS,
                count=HOLDING_REGISTER_COUNT - SPEED_SETPOINT_ADDRESS,
                datatype=DataType.REGISTERS,
            ),
        ]
        inputs = [SimData(0, count=INPUT_REGISTER_COUNT, datatype=DataType.REGISTERS)]
        # pymodbus needs at least one coil / discrete input block; the action refuses them
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            id=unit_id,
            simdata=(bits, list(bits), holding, inputs),
            action=functools.partial(self._action, unit_id),
        )

    def _image(self, unit_id: int) -> _Image:
        snapshot = self.plant.snapshot(self.plant.machine_name(unit_id))
        image = self._images.get(unit_id)
        if image is None or image.snapshot is not snapshot:
            image = self._images[unit_id] = _Image(snapshot)
        return image

    async def _action(
        self,
        unit_id: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code in _BIT_FUNCTIONS:
            return ExcCodes.ILLEGAL_ADDRESS
        offset = address - start_address
        if set_values and function_code in _WRITE_FUNCTIONS:
            self.stats.writes += 1
            return self._write_setpoint(unit_id, address, [int(v) for v in set_values])
        self.stats.reads += 1
        image = self._image(unit_id)
        source = image.inputs if function_code == 4 else image.holding
        registers[offset : offset + count] = source[address : address + count]
        return None

    def _write_setpoint(self, unit_id: int, address: int, values: list[int]) -> ExcCodes | None:
        """Only 200..201 are writable (pymodbus refuses the others); apply the new float."""
        words = self._image(unit_id).holding[SPEED_SETPOINT_ADDRESS : SPEED_SETPOINT_ADDRESS + 2]
        for i, value in enumerate(values):
            index = address + i - SPEED_SETPOINT_ADDRESS
            if not 0 <= index < 2:
                return ExcCodes.ILLEGAL_ADDRESS
            words[index] = value
        try:
            self.plant.set_speed_setpoint(
                self.plant.machine_name(unit_id), decode_float_abcd(words[0], words[1])
            )
        except SetpointError:
            return ExcCodes.ILLEGAL_VALUE
        return None
