"""The historian output: tag values as InfluxDB line protocol over ``/api/v2/write``.

Mapping (documented in ``docs/mqtt.md``, section "InfluxDB"):

* one line per device and source timestamp;
* measurement: ``measurement`` from the config (``plc``), with ``{device}`` / ``{cell}``
  replaced;
* tags: ``gateway``, ``enterprise``, ``site``, ``area``, ``line``, ``cell``, ``device`` and the
  configured ``constant_tags``, sorted by key;
* fields: one per PLC tag, named by the tag (``Temperature``, ``Measurements[3]``): numeric
  tags as floats, ``bool`` tags as booleans, strings as strings (datetimes ISO 8601, bytes hex);
  a sample without a value (bad quality) is left out, and a line without fields is not written;
* timestamp: the source timestamp in the configured precision.

Writes are batched (``batch_size`` lines or ``flush_interval`` seconds, whichever first),
gzip-compressed and sent by influxdb-client's asyncio client with a timeout. A write that
fails for a reason that may pass (connection error, timeout, 429, 5xx) is retried with capped,
jittered backoff (``Retry-After`` respected) while new lines keep queueing; lines the server
refuses (other 4xx: bad line protocol, authentication, unknown bucket) are logged with the
server's message, counted as ``rejected`` and not retried. At most ``max_buffered_lines`` wait;
beyond that the oldest are dropped and counted.
"""

from __future__ import annotations

__all__ = ["InfluxOutput", "escape_key", "escape_measurement", "line_value"]

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
import numpy as np
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.write_precision import WritePrecision

from gateway.batch import SampleBatch
from gateway.config.model import Location
from gateway.config.outputs import InfluxOutputConfig
from gateway.datatypes import DataType
from gateway.metrics import Metrics
from gateway.outputs.metrics import output_metrics
from gateway.runtime.supervisor import Backoff
from gateway.tags import TagTable

log = logging.getLogger(__name__)

_DIVISOR = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_PRECISION = {
    "s": WritePrecision.S,
    "ms": WritePrecision.MS,
    "us": WritePrecision.US,
    "ns": WritePrecision.NS,
}
_CLOSE_WITHIN_S = 5.0
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})


def escape_key(text: str) -> str:
    """A tag key, tag value or field key in line protocol."""
    return text.replace("\\", "\\\\").translate(_KEY_ESCAPES)


def escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").translate(_MEASUREMENT_ESCAPES)


def line_value(value: object, kind: int) -> str | None:
    """A field value in line protocol (kind 1: bool tag), or None when there is no value."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        if kind == 1:
            return "true" if value else "false"
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(float(value))
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, bytes | bytearray):
        text = bytes(value).hex()
    else:
        text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


class _Retry(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class InfluxOutput:
    """Batches tag values as line protocol and writes them to InfluxDB (or a compatible TSDB)."""

    def __init__(
        self,
        config: InfluxOutputConfig,
        table: TagTable,
        *,
        gateway_id: str,
        location: Location,
        cells: Mapping[str, str],
        metrics: Metrics,
    ) -> None:
        self.name = config.name
        self.config = config
        self.table = table
        self._divisor = _DIVISOR[config.precision]
        self._fields = [escape_key(info.name) + "=" for info in table.infos]
        self._kinds = [1 if info.type is DataType.BOOL else 0 for info in table.infos]
        devices = sorted({info.device for info in table.infos})
        self._device_index = {name: i for i, name in enumerate(devices)}
        self._device_of = np.array(
            [self._device_index[info.device] for info in table.infos], np.int32
        )
        self._prefixes = [
            self._prefix(device, cells.get(device, device), gateway_id, location)
            for device in devices
        ]
        self.lines: deque[str] = deque()
        self.dropped = 0
        self.rejected = 0
        self.written = 0
        self._metrics = output_metrics(metrics).lines
        self._published = metrics.values_published.labels(config.name)
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._backoff = Backoff(config.retry.initial, config.retry.maximum)
        self.last_error = ""

    def _prefix(self, device: str, cell: str, gateway_id: str, location: Location) -> str:
        measurement = self.config.measurement.format(device=device, cell=cell)
        tags = {
            "gateway": gateway_id,
            "enterprise": location.enterprise,
            "site": location.site,
            "area": location.area,
            "line": location.line,
            "cell": cell,
            "device": device,
            **self.config.constant_tags,
        }
        tag_set = ",".join(
            f"{escape_key(key)}={escape_key(value)}" for key, value in sorted(tags.items()) if value
        )
        return f"{escape_measurement(measurement)},{tag_set} "

    # --- Output ---

    async def connect(self) -> None:
        """Create the HTTP client and start the flusher (no request is made here)."""
        if self._client is None:
            c = self.config
            options: dict[str, Any] = {"verify_ssl": c.verify_ssl}
            if c.ca_file:
                options["ssl_ca_cert"] = c.ca_file
            self._client = InfluxDBClientAsync(
                url=c.url,
                token=c.token.get_secret_value() if c.token else "",
                org=c.org or None,  # type: ignore[arg-type]
                timeout=int(c.timeout * 1000),
                enable_gzip=c.gzip,
                **options,
            )
            self._write_api = self._client.write_api()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"{self.name}-flush")

    async def write(self, batch: SampleBatch) -> None:
        """Turn a batch into lines and queue them (never waits for the server)."""
        lines = self.lines_of(batch)
        if not lines:
            return
        self.lines.extend(lines)
        self._published.inc(len(batch))
        overflow = len(self.lines) - self.config.max_buffered_lines
        if overflow > 0:
            for _ in range(overflow):
                self.lines.popleft()
            self.dropped += overflow
            self._metrics.labels(self.name, "dropped").inc(overflow)
            log.warning(
                "%s: %d lines waiting for InfluxDB: dropped the %d oldest (%s)",
                self.name,
                self.config.max_buffered_lines,
                overflow,
                self.last_error or "server slow",
            )
        if len(self.lines) >= self.config.batch_size:
            self._wake.set()

    def lines_of(self, batch: SampleBatch) -> list[str]:
        """Line protocol for a batch: one line per device and timestamp."""
        n = len(batch)
        if n == 0:
            return []
        tags = batch.tags
        devices = self._device_of[tags]
        stamps = batch.timestamps
        if (devices == devices[0]).all() and (stamps == stamps[0]).all():
            order = None
            starts = [0]
        else:
            order = np.lexsort((stamps, devices))
            devices, stamps, tags = devices[order], stamps[order], tags[order]
            change = np.flatnonzero((devices[1:] != devices[:-1]) | (stamps[1:] != stamps[:-1]))
            starts = [0, *(change + 1).tolist()]
        values = (batch.values if order is None else batch.values[order]).tolist()
        objects = None
        if batch.objects is not None:
            objects = (batch.objects if order is None else batch.objects[order]).tolist()
        tag_list = tags.tolist()
        device_list = devices.tolist()
        stamp_list = stamps.tolist()
        fields, kinds, prefixes, divisor = self._fields, self._kinds, self._prefixes, self._divisor
        lines = []
        bounds = [*starts, n]
        for k in range(len(starts)):
            parts = []
            for row in range(bounds[k], bounds[k + 1]):
                tag = tag_list[row]
                value = values[row]
                if objects is not None and objects[row] is not None:
                    text = line_value(objects[row], 0)
                else:
                    text = line_value(value, kinds[tag])
                if text is not None:
                    parts.append(fields[tag] + text)
            if parts:
                start = bounds[k]
                lines.append(
                    f"{prefixes[device_list[start]]}{','.join(parts)} "
                    f"{stamp_list[start] // divisor}"
                )
        return lines

    async def close(self) -> None:
        """Write what is queued (within a few seconds), then close the client."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self.lines and self._write_api is not None:
            try:
                async with asyncio.timeout(_CLOSE_WITHIN_S):
                    while self.lines:
                        await self._send_batch()
            except (TimeoutError, _Retry) as exc:
                log.warning(
                    "%s: %d lines not written to InfluxDB at shutdown: %s",
                    self.name,
                    len(self.lines),
                    exc or "timed out",
                )
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
            self._write_api = None

    async def flush(self, within: float = 10.0) -> bool:
        """Wait until every queued line is written or refused; False on timeout."""
        try:
            async with asyncio.timeout(within):
                while self.lines:
                    self._wake.set()
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True

    # --- the flusher ---

    async def _flush_loop(self) -> None:
        interval = self.config.flush_interval
        while True:
            if len(self.lines) < self.config.batch_size:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
            if not self.lines:
                continue
            try:
                await self._send_batch()
            except _Retry as exc:
                delay = self._backoff.next_delay()
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                self.last_error = str(exc)
                log.warning(
                    "%s: write to InfluxDB failed (%s): %d lines kept, retry in %.1f s",
                    self.name,
                    exc,
                    len(self.lines),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _send_batch(self) -> None:
        """Send the oldest batch; on success or refusal remove it, on a retryable error keep it."""
        assert self._write_api is not None
        size = min(len(self.lines), self.config.batch_size)
        body = "\n".join(self.lines[i] for i in range(size))
        try:
            await self._post(body)
        except _Rejected as exc:
            self._take(size)
            self.rejected += size
            self._metrics.labels(self.name, "rejected").inc(size)
            log.error(
                "%s: InfluxDB refused %d lines (%s): dropped, not retried", self.name, size, exc
            )
            return
        self._take(size)
        self.written += size
        self._metrics.labels(self.name, "written").inc(size)
        self._backoff.reset()
        if self.last_error:
            log.info("%s: writing to InfluxDB again", self.name)
            self.last_error = ""

    def _take(self, count: int) -> None:
        for _ in range(count):
            self.lines.popleft()

    async def _post(self, body: str) -> None:
        assert self._write_api is not None
        c = self.config
        try:
            await self._write_api.write(
                c.bucket,
                c.org or None,  # type: ignore[arg-type]
                body.encode(),
                write_precision=_PRECISION[c.precision],  # type: ignore[arg-type]
            )
        except InfluxDBError as exc:
            status = int(getattr(exc, "status", 0) or getattr(exc.response, "status", 0) or 0)
            message = str(exc.message).strip() if exc.message else ""
            if status == 429 or status >= 500 or status == 0:
                raise _Retry(f"HTTP {status}: {message}", _seconds(exc.retry_after)) from exc
            raise _Rejected(status, message) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _Retry(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc


def _seconds(value: object) -> float | None:
    try:
        return float(value) if value is not None else None  # type: ignore[arg-type]
    except ValueError:
        return None
