"""One Modbus connection (a TCP socket or a serial port), shared by the devices that use it.

This is a thin transaction layer over pymodbus' framers (``FramerSocket`` for Modbus TCP,
``FramerRTU`` for RTU over a serial line or over TCP) and pymodbus' serial transport. It replaces
pymodbus' client and ``TransactionManager``, which cost about 200 µs of CPU per request here
(a lock, ``wait_for``, a task wake-up and PDU objects with Python lists per request; see
``docs/modbus.md``), with a callback-driven queue:

* a poll submits all its reads at once as a *batch* and is woken once, when every answer (or
  error) is in; requests are written from the protocol callbacks as earlier answers arrive;
* Modbus TCP matches answers by transaction id and keeps up to `window` requests in flight on
  the connection; RTU keeps one request on the line and waits `frame_gap` seconds of silence
  between frames;
* answers are returned as raw PDU bytes (function code first), decoded by the caller with numpy.

Errors are values, not exceptions, in a batch's results: :class:`ModbusTimeout` (no answer in
time; the rest of that batch is not sent), :class:`~gateway.errors.NotConnectedError` (the
connection is gone). A TCP link that sees only timeouts from every device using it closes
itself, so the supervisor reconnects; a serial port stays open (devices back off instead).
"""

from __future__ import annotations

__all__ = ["Batch", "LinkSettings", "ModbusLink", "Result"]

import asyncio
import collections
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from drivers.modbus.errors import ModbusTimeout
from gateway.errors import NotConnectedError

log = logging.getLogger(__name__)

try:
    import termios

    _TERMIOS_ERRORS: tuple[type[Exception], ...] = (termios.error,)
except ImportError:  # pragma: no cover - Windows
    _TERMIOS_ERRORS = ()

Result = bytes | ModbusTimeout | NotConnectedError
"""An answer's PDU (function code first; an exception answer has bit 7 of it set) or why
there is none."""

_MAX_UNFRAMED = 512
"""Bytes without a frame in them after which a TCP stream is considered garbled."""


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What identifies a connection; devices whose settings are equal share one link."""

    kind: Literal["tcp", "rtu_tcp", "serial"]
    address: str
    """``host:port``, or the serial port."""
    port: int = 0
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "E"
    stopbits: int = 1
    window: int = 1
    """Requests in flight at once (Modbus TCP only)."""
    frame_gap: float = 0.0
    """Silence between frames in seconds (RTU)."""
    local_echo: bool = False

    @property
    def is_rtu(self) -> bool:
        return self.kind != "tcp"

    def describe(self) -> str:
        if self.kind == "serial":
            return (
                f"{self.address} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits} (RTU)"
            )
        return f"{self.address}:{self.port}" + (" (RTU over TCP)" if self.is_rtu else "")


class Batch:
    """Requests of one poll: their results in order, and a future resolved when all are in."""

    __slots__ = ("future", "pending", "results", "unit")

    def __init__(self, unit: int, size: int, future: asyncio.Future[list[Result]]) -> None:
        self.unit = unit
        self.results: list[Result | None] = [None] * size
        self.pending = size
        self.future = future

    def settle(self, index: int, result: Result) -> None:
        if self.results[index] is not None:
            return
        self.results[index] = result
        self.pending -= 1
        if self.pending == 0 and not self.future.done():
            self.future.set_result(self.results)  # type: ignore[arg-type]


class _Request:
    __slots__ = ("batch", "deadline_handle", "function", "index", "pdu", "tid", "timeout")

    def __init__(self, batch: Batch, index: int, pdu: bytes, timeout: float) -> None:
        self.batch = batch
        self.index = index
        self.pdu = pdu
        self.function = pdu[0]
        self.timeout = timeout
        self.tid = 0
        self.deadline_handle: asyncio.TimerHandle | None = None


class ModbusLink(asyncio.Protocol):
    """A shared connection: devices :meth:`acquire` it, :meth:`submit` batches, :meth:`release`."""

    def __init__(self, settings: LinkSettings, connect_timeout: float) -> None:
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.framer: FramerBase = (
            FramerRTU(DecodePDU(False)) if settings.is_rtu else FramerSocket(DecodePDU(False))
        )
        self.users = 0
        self.transport: asyncio.BaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connect_lock = asyncio.Lock()
        self._queue: collections.deque[_Request] = collections.deque()
        self._in_flight: dict[int, _Request] = {}
        self._next_tid = 0
        self._buffer = b""
        self._echo = b""
        self._quiet_until = 0.0
        self._send_handle: asyncio.TimerHandle | None = None
        self._timeouts_in_row = 0
        self._closed_reason = "not connected"
        self.requests = 0
        self.answers = 0
        self.timeouts = 0

    # ------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self.transport is not None

    async def acquire(self) -> None:
        """Count a user and connect unless connected; raises NotConnectedError."""
        self.users += 1
        try:
            await self._ensure_connected()
        except BaseException:
            self.users -= 1
            raise

    def release(self) -> None:
        """One user fewer; the connection closes when nobody uses it."""
        self.users = max(0, self.users - 1)
        if self.users == 0:
            self.close("closed")

    async def _ensure_connected(self) -> None:
        async with self._connect_lock:
            if self.transport is not None:
                return
            self._loop = asyncio.get_running_loop()
            s = self.settings
            try:
                if s.kind == "serial":
                    await self._open_serial()
                else:
                    await asyncio.wait_for(
                        self._loop.create_connection(lambda: self, s.address, s.port),
                        self.connect_timeout,
                    )
            except (TimeoutError, OSError, ValueError) as exc:
                self.transport = None
                detail = str(exc) or type(exc).__name__
                raise NotConnectedError(f"cannot connect to {s.describe()}: {detail}") from exc

    async def _open_serial(self) -> None:
        from pymodbus.transport.serialtransport import SerialTransport

        try:
            import serial
        except ImportError as exc:  # pragma: no cover - pyserial is a dependency
            raise OSError("Modbus RTU needs pyserial (pip install pyserial)") from exc
        s = self.settings
        assert self._loop is not None
        opener = functools.partial(
            SerialTransport, self._loop, self, s.address, s.baudrate, s.bytesize, s.parity,
            s.stopbits, 0,
        )  # fmt: skip
        # opening a port is a blocking system call: do it off the event loop
        opening = self._loop.run_in_executor(None, opener)
        done, _ = await asyncio.wait({opening}, timeout=self.connect_timeout)
        if not done:
            # the thread cannot be stopped: close the port if it opens after all
            opening.add_done_callback(_close_late_port)
            raise TimeoutError(f"opening the port took more than {self.connect_timeout:g} s")
        try:
            transport = opening.result()
        except (serial.SerialException, *_TERMIOS_ERRORS) as exc:
            # pyserial lets termios.error through when the driver refuses a setting
            raise OSError(f"{exc} (does the port support these line settings?)") from exc
        transport.setup()  # registers the reader and calls connection_made soon
        self.transport = transport
        await asyncio.sleep(0)

    def close(self, reason: str = "closed") -> None:
        """Close the connection and fail everything queued or in flight."""
        transport, self.transport = self.transport, None
        self._closed_reason = reason
        if transport is not None:
            transport.close()
        self._fail_all(NotConnectedError(f"{self.settings.describe()}: {reason}"))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._buffer = b""
        self._echo = b""
        self._timeouts_in_row = 0

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.transport = None
        reason = f"connection lost: {exc}" if exc else "connection closed by the peer"
        self._closed_reason = reason
        log.warning("Modbus link %s: %s", self.settings.describe(), reason)
        self._fail_all(NotConnectedError(f"{self.settings.describe()}: {reason}"))

    def _fail_all(self, error: NotConnectedError) -> None:
        if self._send_handle is not None:
            self._send_handle.cancel()
            self._send_handle = None
        requests = list(self._in_flight.values()) + list(self._queue)
        self._in_flight.clear()
        self._queue.clear()
        self._buffer = b""
        for request in requests:
            if request.deadline_handle is not None:
                request.deadline_handle.cancel()
            request.batch.settle(request.index, error)

    # ------------------------------------------------------------------ requests
    def submit(
        self, unit: int, pdus: Sequence[bytes], timeout: float, *, urgent: bool = False
    ) -> asyncio.Future[list[Result]]:
        """Queue requests for `unit`; the future gets one result per PDU, in order.

        `urgent` puts them before requests already queued (writes), never before those in flight.
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[list[Result]] = loop.create_future()
        batch = Batch(unit, len(pdus), future)
        if not pdus:
            future.set_result([])
            return future
        if self.transport is None:
            error = NotConnectedError(f"{self.settings.describe()}: {self._closed_reason}")
            for index in range(len(pdus)):
                batch.settle(index, error)
            return future
        requests = [_Request(batch, i, pdu, timeout) for i, pdu in enumerate(pdus)]
        if urgent:
            self._queue.extendleft(reversed(requests))
        else:
            self._queue.extend(requests)
        self._pump()
        return future

    def _pump(self) -> None:
        """Send queued requests while the window (and, for RTU, the line) allows.

        RTU: one request on the line at a time, `frame_gap` of silence between frames. Modbus
        TCP: up to `window` requests in flight on the connection.
        """
        transport = self.transport
        if transport is None or self._send_handle is not None:
            return
        loop = self._loop
        assert loop is not None
        queue = self._queue
        if self.settings.is_rtu:
            if self._in_flight or not queue:
                return
            wait = self._quiet_until - loop.time()
            if wait > 0:
                self._send_handle = loop.call_later(wait, self._send_later)
                return
            self._send(transport, queue.popleft(), loop)
            return
        window = self.settings.window
        while queue and len(self._in_flight) < window:
            self._send(transport, queue.popleft(), loop)

    def _send_later(self) -> None:
        self._send_handle = None
        self._pump()

    def _send(
        self, transport: asyncio.BaseTransport, request: _Request, loop: asyncio.AbstractEventLoop
    ) -> None:
        unit = request.batch.unit
        if self.settings.is_rtu:
            frame = _rtu_frame(self.framer, request.pdu, unit)
            self._buffer = b""
            if self.settings.local_echo:
                self._echo = frame
            tid = 0
        else:
            tid = self._next_tid = self._next_tid % 0xFFFF + 1
            frame = self.framer.encode(request.pdu, unit, tid)
        request.tid = tid
        self._in_flight[tid] = request
        request.deadline_handle = loop.call_later(request.timeout, self._expire, request)
        self.requests += 1
        transport.write(frame)  # type: ignore[attr-defined]

    def _expire(self, request: _Request) -> None:
        if self._in_flight.get(request.tid) is not request:
            return
        del self._in_flight[request.tid]
        self.timeouts += 1
        self._timeouts_in_row += 1
        batch = request.batch
        error = ModbusTimeout(f"unit {batch.unit}", f"no answer within {request.timeout:g} s")
        batch.settle(request.index, error)
        # the unit is not answering: do not send it the rest of this poll
        if any(queued.batch is batch for queued in self._queue):
            skipped = ModbusTimeout(
                f"unit {batch.unit}", "not sent: the unit did not answer an earlier request"
            )
            kept = collections.deque(q for q in self._queue if q.batch is not batch)
            for queued in self._queue:
                if queued.batch is batch:
                    batch.settle(queued.index, skipped)
            self._queue = kept
        if self.settings.is_rtu:
            self._buffer = b""
            assert self._loop is not None
            self._quiet_until = self._loop.time() + self.settings.frame_gap
        if self.settings.kind != "serial" and self._timeouts_in_row >= max(1, self.users):
            # nobody on this TCP connection answers: it is probably half-open
            self.close(f"{self._timeouts_in_row} requests in a row got no answer")
            return
        self._pump()

    # ------------------------------------------------------------------ answers
    def data_received(self, data: bytes) -> None:
        if self._echo:
            data = self._skip_echo(data)
            if not data:
                return
        buffer = self._buffer + data if self._buffer else data
        framer = self.framer
        rtu = self.settings.is_rtu
        while buffer:
            used, unit, tid, pdu = framer.decode(buffer)
            if not used:
                break
            buffer = buffer[used:]
            if not pdu:
                continue  # garbage skipped by the framer (bad CRC)
            request = self._in_flight.get(tid)
            if request is None or (rtu and request.batch.unit != unit):
                log.debug("Modbus link %s: unexpected answer (tid %d)", self.settings, tid)
                continue
            if pdu[0] & 0x7F != request.function:
                log.debug("Modbus link %s: answer to another function", self.settings)
                continue
            del self._in_flight[tid]
            if request.deadline_handle is not None:
                request.deadline_handle.cancel()
            self.answers += 1
            self._timeouts_in_row = 0
            request.batch.settle(request.index, pdu)
            if rtu:
                assert self._loop is not None
                self._quiet_until = self._loop.time() + self.settings.frame_gap
        self._buffer = buffer
        if len(buffer) > _MAX_UNFRAMED:
            self.close(f"garbled data from the device ({len(buffer)} bytes without a frame)")
            return
        self._pump()

    def _skip_echo(self, data: bytes) -> bytes:
        echo = self._echo
        common = min(len(echo), len(data))
        if data[:common] != echo[:common]:
            self._echo = b""
            return data
        self._echo = echo[common:]
        return data[common:]

    def eof_received(self) -> bool | None:
        return None


def _close_late_port(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().sync_serial.close()


@functools.lru_cache(maxsize=4096)
def _rtu_frame(framer: FramerBase, pdu: bytes, unit: int) -> bytes:
    """An RTU frame (address, PDU, CRC); cached, as a poll sends the same reads every cycle."""
    return framer.encode(pdu, unit, 0)
