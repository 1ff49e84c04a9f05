"""Writes requested over MQTT: validated, limited to writable tags, answered with a result.

The payload modes parse requests (UNS: a JSON command topic; Sparkplug: DCMD metrics) and hand
them to :class:`CommandExecutor`, which

1. refuses unless commands are enabled, the tag exists, it is ``writable: true`` in the config
   and matches the output's ``commands.tags`` patterns;
2. checks the value against the tag's type (numbers for numeric tags, integral and in range for
   integer types, true/false/0/1 for bool, text for strings) and its engineering ``span``;
3. calls the owning driver's ``write`` through the gateway (at most ``max_pending`` at once,
   each bounded by ``timeout``), and
4. reports the outcome (``written``, ``refused`` or ``failed``) to the mode, which publishes it
   on the reply topic. Every request is logged: refusals as warnings.
"""

from __future__ import annotations

__all__ = ["CommandExecutor", "CommandResult", "Reply", "TagWriter"]

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.batch import now_ns
from gateway.config.outputs import CommandsConfig
from gateway.datatypes import DataType
from gateway.errors import DeviceError, NotConnectedError, WriteRefusedError
from gateway.outputs.metrics import OutputMetrics
from gateway.processors.timefmt import iso_utc
from gateway.runtime.interfaces import TagWriter
from gateway.tags import TagInfo, TagTable

log = logging.getLogger(__name__)


_INT_RANGES = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1),
    DataType.UINT32: (0, (1 << 32) - 1),
    DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT64: (0, (1 << 64) - 1),
}


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The answer to one write request."""

    tag: str
    value: object
    outcome: str
    """``written``, ``refused`` (nothing was sent to the device) or ``failed``."""
    error: str = ""
    request_id: object = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.request_id,
            "tag": self.tag,
            "value": self.value,
            "ok": self.outcome == "written",
            "outcome": self.outcome,
            "error": self.error or None,
            "timestamp": iso_utc(now_ns()),
        }


Reply = Callable[[CommandResult], None]


class CommandExecutor:
    """Validates and runs write requests for one output."""

    def __init__(
        self,
        table: TagTable,
        writer: TagWriter | None,
        config: CommandsConfig,
        *,
        output: str,
        metrics: OutputMetrics,
    ) -> None:
        self.table = table
        self.config = config
        self.output = output
        self._writer = writer
        self._allowed = table.select(config.tags) & table.writable
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def refuse(
        self, tag: str, value: object, reason: str, request_id: object = None
    ) -> CommandResult:
        """Log and count a refused request (also for requests that name no known tag)."""
        log.warning("%s: write to %s refused: %s", self.output, tag or "?", reason)
        self._metrics.commands.labels(self.output, "refused").inc()
        return CommandResult(tag, value, "refused", reason, request_id)

    def check(self, index: int, value: object) -> object:
        """The value to write, or WriteRefusedError saying why not."""
        info = self.table[index]
        if not self.config.enabled:
            raise WriteRefusedError(info.id, "commands are disabled for this output")
        if not info.writable:
            raise WriteRefusedError(info.id, "the tag is not writable")
        if not self._allowed[index]:
            raise WriteRefusedError(info.id, "the tag is not in this output's commands.tags")
        if self._writer is None:
            raise WriteRefusedError(info.id, "no driver can write it")
        return coerce(info, value)

    def submit(self, index: int, value: object, reply: Reply, request_id: object = None) -> None:
        """Validate and start one write; `reply` gets the result (at once when refused)."""
        info = self.table[index]
        try:
            coerced = self.check(index, value)
        except WriteRefusedError as exc:
            reply(self.refuse(info.id, value, exc.reason, request_id))
            return
        if len(self._tasks) >= self.config.max_pending:
            reply(self.refuse(info.id, value, "too many writes pending: try again", request_id))
            return
        task = asyncio.get_running_loop().create_task(
            self._write(info, coerced, reply, request_id), name=f"{self.output}-write-{info.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, info: TagInfo, value: object, reply: Reply, request_id: object) -> None:
        assert self._writer is not None
        try:
            await asyncio.wait_for(self._writer(info.index, value), self.config.timeout)
        except WriteRefusedError as exc:
            reply(self.refuse(info.id, value, exc.reason, request_id))
            return
        except (DeviceError, NotConnectedError) as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no answer within {self.config.timeout:g} s"
        else:
            log.info("%s: wrote %r to %s (MQTT command)", self.output, value, info.id)
            self._metrics.commands.labels(self.output, "written").inc()
            reply(CommandResult(info.id, value, "written", "", request_id))
            return
        log.warning("%s: write of %r to %s failed: %s", self.output, value, info.id, error)
        self._metrics.commands.labels(self.output, "failed").inc()
        reply(CommandResult(info.id, value, "failed", error, request_id))

    async def close(self) -> None:
        """Let running writes finish (they are bounded by the timeout)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def coerce(info: TagInfo, value: object) -> object:
    """`value` as the tag's type, or WriteRefusedError."""
    data_type = info.type
    config = info.config
    if data_type is DataType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise WriteRefusedError(info.id, f"{value!r} is not a boolean (true/false or 0/1)")
    if data_type.is_numeric:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WriteRefusedError(info.id, f"{value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise WriteRefusedError(info.id, f"{value!r} is not a finite number")
        if config.span is not None and not config.span[0] <= number <= config.span[1]:
            raise WriteRefusedError(
                info.id, f"{value!r} is outside the span [{config.span[0]:g}, {config.span[1]:g}]"
            )
        if data_type.is_integer:
            raw = (number - config.offset) / config.scale
            if abs(raw - round(raw)) > 1e-9 * max(1.0, abs(raw)):
                raise WriteRefusedError(
                    info.id, f"{value!r} is not a whole number of {data_type.value} steps"
                )
            low, high = _INT_RANGES[data_type]
            if not low <= round(raw) <= high:
                raise WriteRefusedError(info.id, f"{value!r} does not fit {data_type.value}")
            if config.scale == 1 and config.offset == 0:
                return round(raw)
        return number
    if data_type is DataType.STRING:
        if not isinstance(value, str):
            raise WriteRefusedError(info.id, f"{value!r} is not a string")
        return value
    raise WriteRefusedError(info.id, f"writing {data_type.value} tags over MQTT is not supported")
