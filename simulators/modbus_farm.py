"""A fast Modbus simulator: many devices with full register images, over TCP, RTU over TCP, or
RTU on a pseudo-terminal (a serial line).

Why not pymodbus' server: it costs several hundred µs of CPU per request, so serving 10 devices
with 16 reads every 100 ms would need a core, and a benchmark of the gateway would measure the
simulator. Here a request is a slice of a big-endian numpy image and one write (about 15 µs).
Only the simulator is hand-written this way; the gateway uses pymodbus' framers.

Each unit has 65,536 holding and input registers, coils and discrete inputs (all mapped unless
`size` says less); reading beyond `size` or touching a *hole* answers exception 2, a *fault*
range answers the exception code it names, reads longer than the unit's `max_registers` answer
exception 3, function codes not in `functions` answer exception 1. A *silent* unit never
answers; a *delay* holds answers back. With `changing`, register values change every
`update_interval` (counters count, so change detection has work).

Run it on its own for the benchmark::

    python -m simulators.modbus_farm --devices 10 --changing
    # prints {"ports": [...]} on one line, then serves until SIGTERM
"""

from __future__ import annotations

__all__ = ["FarmUnit", "ModbusFarm", "UnitImage"]

import argparse
import asyncio
import contextlib
import json
import os
import pty
import signal
import struct
import sys
import termios
import tty
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pymodbus.framer import FramerRTU

TABLES = ("coil", "discrete", "holding", "input")
_READS = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


@dataclass
class FarmUnit:
    """One simulated device (unit id) and the faults it shows."""

    unit: int = 1
    size: int = 65536
    """Mapped addresses per table, from 0."""
    holes: list[tuple[str, int, int]] = field(default_factory=list)
    """(table, first, last) addresses that answer exception 2 (illegal data address)."""
    faults: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(table, first, last, code): reads touching these addresses answer exception `code`."""
    frozen: list[tuple[str, int, int]] = field(default_factory=list)
    """(table, first, last): writes are acknowledged but not applied (the PLC overrides them)."""
    max_registers: int = 125
    functions: frozenset[int] = frozenset({1, 2, 3, 4, 5, 6, 15, 16})
    silent: bool = False
    delay: float = 0.0


class UnitImage:
    """The four tables of one unit (registers stored big-endian, as on the wire)."""

    def __init__(self, spec: FarmUnit, seed: int = 0) -> None:
        self.spec = spec
        rng = np.random.default_rng(seed)
        self.holding: NDArray[np.uint16] = np.zeros(65536, ">u2")
        self.input: NDArray[np.uint16] = np.zeros(65536, ">u2")
        self.coil: NDArray[np.bool_] = np.zeros(65536, np.bool_)
        self.discrete: NDArray[np.bool_] = np.zeros(65536, np.bool_)
        if seed:
            self.holding[:] = rng.integers(0, 65536, 65536)
            self.input[:] = rng.integers(0, 65536, 65536)
            self.coil[:] = rng.integers(0, 2, 65536).astype(bool)
            self.discrete[:] = rng.integers(0, 2, 65536).astype(bool)
        self._tick = 0

    def table(self, name: str) -> NDArray[np.generic]:
        image: NDArray[np.generic] = getattr(self, name)
        return image

    def set_registers(self, table: str, address: int, words: Iterable[int]) -> None:
        values = np.array(list(words), ">u2")
        self.table(table)[address : address + len(values)] = values

    def change(self, span: int = 8192, *, everything: bool = False) -> None:
        """Move values: a rotating tenth of the first `span` registers counts up by one, or with
        `everything`, all of them (every register changes at every tick)."""
        if everything:
            self.holding[:span] += 1
            self.input[:span] += 1
            self.coil[:span] ^= True
            return
        step = max(1, span // 10)
        start = (self._tick * step) % span
        self._tick += 1
        self.holding[start : start + step] += 1
        self.input[start : start + step] += 1
        self.coil[start : start + step] ^= True

    # ------------------------------------------------------------------ requests
    def answer(self, pdu: bytes, log: list[tuple[int, int, int, int]] | None) -> bytes:
        """The answer PDU to a request PDU."""
        spec = self.spec
        function = pdu[0]
        if function not in spec.functions or function not in (1, 2, 3, 4, 5, 6, 15, 16):
            return bytes([function | 0x80, 1])
        if len(pdu) < 5:
            return bytes([function | 0x80, 3])
        address, count = struct.unpack_from(">HH", pdu, 1)
        if function in _READS:
            table = _READS[function]
            limit = 2000 if function < 3 else spec.max_registers
            if not 1 <= count <= limit:
                return bytes([function | 0x80, 3])
            code = self._check(table, address, address + count)
            if code:
                return bytes([function | 0x80, code])
            if function >= 3:
                data = self.table(table)[address : address + count].tobytes()
            else:
                bits = self.coil if function == 1 else self.discrete
                data = np.packbits(bits[address : address + count], bitorder="little").tobytes()
            return bytes([function, len(data)]) + data
        return self._write(function, address, count, pdu, log)

    def _check(self, table: str, start: int, end: int) -> int:
        spec = self.spec
        if end > spec.size:
            return 2
        for name, first, last in spec.holes:
            if name == table and first < end and last >= start:
                return 2
        for name, first, last, code in spec.faults:
            if name == table and first < end and last >= start:
                return code
        return 0

    def _frozen(self, table: str, start: int, end: int) -> bool:
        return any(
            name == table and first < end and last >= start
            for name, first, last in self.spec.frozen
        )

    def _write(
        self,
        function: int,
        address: int,
        value: int,
        pdu: bytes,
        log: list[tuple[int, int, int, int]] | None,
    ) -> bytes:
        if function == 5:
            if value not in (0, 0xFF00):
                return bytes([function | 0x80, 3])
            if code := self._check("coil", address, address + 1):
                return bytes([function | 0x80, code])
            if not self._frozen("coil", address, address + 1):
                self.coil[address] = value == 0xFF00
            count, answer = 1, pdu
        elif function == 6:
            if code := self._check("holding", address, address + 1):
                return bytes([function | 0x80, code])
            if not self._frozen("holding", address, address + 1):
                self.holding[address] = value
            count, answer = 1, pdu
        else:
            count = value
            size = pdu[5] if len(pdu) > 5 else -1
            table = "coil" if function == 15 else "holding"
            expected = (count + 7) // 8 if function == 15 else 2 * count
            if size != expected or len(pdu) != 6 + size or count < 1:
                return bytes([function | 0x80, 3])
            if code := self._check(table, address, address + count):
                return bytes([function | 0x80, code])
            data = np.frombuffer(pdu, np.uint8, size, 6)
            if self._frozen(table, address, address + count):
                pass
            elif function == 15:
                self.coil[address : address + count] = np.unpackbits(data, bitorder="little")[
                    :count
                ].astype(bool)
            else:
                self.holding[address : address + count] = data.view(">u2")
            answer = pdu[:5]
        if log is not None:
            log.append((self.spec.unit, function, address, count))
        return answer


class ModbusFarm:
    """Serves units over TCP (socket or RTU framing) or on a pseudo-terminal (RTU).

    Example::

        farm = ModbusFarm([FarmUnit(unit=1), FarmUnit(unit=2, silent=True)])
        port = await farm.serve_tcp()
        ...
        await farm.stop()
    """

    def __init__(self, units: Iterable[FarmUnit], *, seed: int = 0) -> None:
        self.images = {u.unit: UnitImage(u, seed + u.unit if seed else 0) for u in units}
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests received on one connection and not yet answered (pipelining)."""
        self.writes: list[tuple[int, int, int, int]] = []
        """(unit, function code, address, count) of every write answered."""
        self._servers: list[asyncio.Server] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._pty: tuple[int, int] | None = None
        self._changer: asyncio.Task[None] | None = None

    def image(self, unit: int) -> UnitImage:
        return self.images[unit]

    def answer(self, unit: int, pdu: bytes, *, any_unit: bool) -> bytes | None:
        """The answer PDU, or None for silence (no such unit, or a silent one)."""
        self.requests += 1
        image = self.images.get(unit)
        if image is None and any_unit:
            image = next(iter(self.images.values()))
        if image is None or image.spec.silent:
            return None
        return image.answer(pdu, self.writes)

    def delay_of(self, unit: int) -> float:
        image = self.images.get(unit)
        return image.spec.delay if image is not None else 0.0

    async def serve_tcp(
        self, host: str = "127.0.0.1", port: int = 0, *, rtu: bool = False, any_unit: bool = False
    ) -> int:
        """Listen for Modbus TCP (or, with `rtu`, RTU frames over TCP); returns the port."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self, rtu=rtu, any_unit=any_unit), host, port
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def serve_pty(self) -> str:
        """Serve RTU on a new pseudo-terminal pair; returns the path the client opens."""
        master, slave = pty.openpty()
        tty.setraw(slave, termios.TCSANOW)
        os.set_blocking(master, False)
        self._pty = (master, slave)
        connection = _Connection(self, rtu=True, any_unit=False)

        def write(data: bytes) -> None:
            os.write(master, data)

        connection.writer = write
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, OSError):
                return
            connection.data_received(data)

        loop.add_reader(master, readable)
        return os.ttyname(slave)

    def start_changing(
        self, interval: float = 0.1, *, span: int = 8192, everything: bool = False
    ) -> None:
        """Change register values every `interval` seconds, on the clock (no drift)."""

        async def change() -> None:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while True:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                for image in self.images.values():
                    image.change(span, everything=everything)

        self._changer = asyncio.create_task(change())

    async def drop_connections(self) -> None:
        """Close every client connection (the listeners stay)."""
        for transport in self._transports:
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()

    async def stop(self) -> None:
        if self._changer is not None:
            self._changer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._changer
        for server in self._servers:
            server.close()
        await self.drop_connections()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._pty is not None:
            master, slave = self._pty
            asyncio.get_running_loop().remove_reader(master)
            os.close(master)
            os.close(slave)
            self._pty = None


class _Connection(asyncio.Protocol):
    """One client: cuts frames from the stream and answers them."""

    def __init__(self, farm: ModbusFarm, *, rtu: bool, any_unit: bool) -> None:
        self.farm = farm
        self.rtu = rtu
        self.any_unit = any_unit
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.writer = self._write

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.farm._transports.append(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport in self.farm._transports:
            self.farm._transports.remove(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while True:
            size = self._rtu_size(buffer) if self.rtu else self._mbap_size(buffer)
            if size == 0 or len(buffer) < size:
                break
            frame, buffer = buffer[:size], buffer[size:]
            self._handle(frame)
        self.buffer = buffer

    @staticmethod
    def _mbap_size(buffer: bytes) -> int:
        return 6 + int.from_bytes(buffer[4:6], "big") if len(buffer) >= 8 else 0

    @staticmethod
    def _rtu_size(buffer: bytes) -> int:
        if len(buffer) < 2:
            return 0
        if buffer[1] in (15, 16):
            return 9 + buffer[6] if len(buffer) >= 7 else 0
        return 8

    def _handle(self, frame: bytes) -> None:
        if self.rtu:
            if FramerRTU.compute_CRC(frame[:-2]) != int.from_bytes(frame[-2:], "big"):
                self.buffer = b""
                return
            unit, pdu = frame[0], frame[1:-2]
        else:
            unit, pdu = frame[6], frame[7:]
        answer = self.farm.answer(unit, pdu, any_unit=self.any_unit)
        if answer is None:
            return
        if self.rtu:
            body = bytes([unit]) + answer
            out = body + FramerRTU.compute_CRC(body).to_bytes(2, "big")
        else:
            out = frame[:4] + struct.pack(">HB", len(answer) + 1, unit) + answer
        delay = self.farm.delay_of(unit)
        if delay:
            farm = self.farm
            farm.in_flight += 1
            farm.max_in_flight = max(farm.max_in_flight, farm.in_flight)

            def send_late() -> None:
                farm.in_flight -= 1
                self.writer(out)

            asyncio.get_running_loop().call_later(delay, send_late)
        else:
            self.writer(out)


async def _serve(args: argparse.Namespace) -> None:
    farms = [ModbusFarm([FarmUnit(unit=1)], seed=k + 1) for k in range(args.devices)]
    ports = [await farm.serve_tcp(args.host, any_unit=True) for farm in farms]
    if args.changing or args.all_change:
        for farm in farms:
            farm.start_changing(args.update_interval, span=args.span, everything=args.all_change)
    print(json.dumps({"ports": ports}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def report() -> None:  # SIGUSR1: the requests answered so far, for benchmarks
        print(json.dumps({"requests": sum(f.requests for f in farms)}), flush=True)

    loop.add_signal_handler(signal.SIGUSR1, report)
    await stop.wait()
    print(json.dumps({"requests": sum(f.requests for f in farms)}), flush=True)
    for farm in farms:
        await farm.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10, help="one TCP port per device")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--changing", action="store_true", help="values change over time")
    parser.add_argument("--update-interval", type=float, default=0.1)
    parser.add_argument(
        "--all-change",
        action="store_true",
        help="every register below --span changes at every update (instead of a tenth)",
    )
    parser.add_argument("--span", type=int, default=8192, help="registers that change")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
