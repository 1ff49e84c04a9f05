"""Fault injection shared by every simulator: latency, error rate, dropped connections, down.

:class:`FaultSettings` is the validated value (what the command line and the control API
give); :class:`Faults` is one server's live, mutable state (current settings, the down timer,
the random draws and counters of what was injected). Servers call :meth:`Faults.delay`,
:meth:`Faults.roll_error` and :meth:`Faults.roll_drop` per request and run
:func:`supervise_down` to stop listening while the server is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "FAULT_FIELDS",
    "FaultError",
    "FaultSettings",
    "FaultStats",
    "Faults",
    "supervise_down",
]

#: the fields of a control-API fault body (docs/simulators.md)
FAULT_FIELDS = ("latency_ms", "error_rate", "drop_rate", "down_for_s")


class FaultError(ValueError):
    """An invalid fault setting; the message starts with the field name."""


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{name}: must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise FaultError(f"{name}: must be finite")
    if number < 0:
        raise FaultError(f"{name}: must be >= 0")
    return number


@dataclass(frozen=True)
class FaultSettings:
    """Fault settings of one server. All default to "no fault"."""

    #: every response is delayed by this many milliseconds
    latency_ms: float = 0.0
    #: probability that a request gets an error (HTTP 503, Modbus exception 4, OPC UA Bad)
    error_rate: float = 0.0
    #: probability that a request's connection is closed without an answer
    drop_rate: float = 0.0
    #: the server refuses connections for this many seconds (from when it is applied)
    down_for_s: float = 0.0

    def __post_init__(self) -> None:
        for name in FAULT_FIELDS:
            _number(name, getattr(self, name))
        for name in ("error_rate", "drop_rate"):
            if getattr(self, name) > 1.0:
                raise FaultError(f"{name}: must be a probability between 0 and 1")
        if self.latency_ms > 600_000:
            raise FaultError("latency_ms: must be at most 600000 (10 minutes)")
        if self.down_for_s > 86_400:
            raise FaultError("down_for_s: must be at most 86400 (one day)")

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base: FaultSettings | None = None
    ) -> FaultSettings:
        """Settings from a JSON body; fields not given keep ``base``'s values.

        Unknown fields and bad values raise :class:`FaultError`.
        """
        unknown = sorted(set(data) - set(FAULT_FIELDS))
        if unknown:
            raise FaultError(f"{unknown[0]}: unknown field (allowed: {', '.join(FAULT_FIELDS)})")
        values = {name: _number(name, data[name]) for name in FAULT_FIELDS if name in data}
        return replace(base if base is not None else cls(), **values)


@dataclass
class FaultStats:
    """How many faults a server injected."""

    latency: int = 0
    error: int = 0
    drop: int = 0
    down: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Faults:
    """The live fault state of one server.

    Settings can be changed at any time, by attribute (``faults.error_rate = 0.5``, validated)
    or from a control-API body (:meth:`update`). ``down_for_s`` is not a stored setting but an
    action: the server goes down now for that long.
    """

    def __init__(self, settings: FaultSettings | None = None, *, seed: int | None = None) -> None:
        self._settings = replace(settings or FaultSettings(), down_for_s=0.0)
        self._random = random.Random(seed)
        self._down_until: float | None = None
        self._event = asyncio.Event()
        self.stats = FaultStats()
        if settings is not None and settings.down_for_s > 0:
            self.down_for(settings.down_for_s)

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> FaultSettings:
        """Current settings; ``down_for_s`` is the remaining down time."""
        return replace(self._settings, down_for_s=self.down_remaining_s())

    @property
    def latency_ms(self) -> float:
        return self._settings.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self._settings = replace(self._settings, latency_ms=value)

    @property
    def error_rate(self) -> float:
        return self._settings.error_rate

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        self._settings = replace(self._settings, error_rate=value)

    @property
    def drop_rate(self) -> float:
        return self._settings.drop_rate

    @drop_rate.setter
    def drop_rate(self, value: float) -> None:
        self._settings = replace(self._settings, drop_rate=value)

    @property
    def down_until(self) -> float | None:
        """:func:`time.monotonic` time at which the server comes back, or None when up."""
        if self._down_until is not None and time.monotonic() >= self._down_until:
            return None
        return self._down_until

    def update(self, data: Mapping[str, Any]) -> FaultSettings:
        """Apply a control-API body (any of :data:`FAULT_FIELDS`); all or nothing."""
        new = FaultSettings.from_mapping(data, base=replace(self._settings, down_for_s=0.0))
        self._settings = replace(new, down_for_s=0.0)
        if "down_for_s" in data:
            self.down_for(new.down_for_s)
        return self.settings

    def clear(self) -> None:
        """No faults any more; a down server comes back now."""
        self._settings = FaultSettings()
        self._down_until = None
        self._notify()

    def down_for(self, seconds: float) -> None:
        """Refuse connections for ``seconds`` from now (0 brings the server back)."""
        seconds = FaultSettings(down_for_s=seconds).down_for_s
        if seconds > 0:
            self._down_until = time.monotonic() + seconds
            self.stats.down += 1
        else:
            self._down_until = None
        self._notify()

    def is_down(self) -> bool:
        return self.down_until is not None

    def down_remaining_s(self) -> float:
        until = self.down_until
        return 0.0 if until is None else max(0.0, until - time.monotonic())

    def as_dict(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "latency_ms": settings.latency_ms,
            "error_rate": settings.error_rate,
            "drop_rate": settings.drop_rate,
            "down_for_s": round(settings.down_for_s, 3),
            "down": self.is_down(),
        }

    # ------------------------------------------------------------------ per request
    async def delay(self) -> None:
        """Sleep for the configured latency (no-op without latency)."""
        latency = self._settings.latency_ms
        if latency > 0:
            self.stats.latency += 1
            await asyncio.sleep(latency / 1000.0)

    def roll_error(self) -> bool:
        """True if this request must fail (counts it)."""
        rate = self._settings.error_rate
        if rate > 0 and self._random.random() < rate:
            self.stats.error += 1
            return True
        return False

    def roll_drop(self) -> bool:
        """True if this request's connection must be closed without an answer (counts it)."""
        rate = self._settings.drop_rate
        if rate > 0 and self._random.random() < rate:
            self.stats.drop += 1
            return True
        return False

    # ------------------------------------------------------------------ notification
    def change_event(self) -> asyncio.Event:
        """An event set at the next change of the down state (take it *before* checking)."""
        return self._event

    def _notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


async def supervise_down(
    faults: Faults,
    go_down: Callable[[], Awaitable[None]],
    go_up: Callable[[], Awaitable[None]],
) -> None:
    """Run forever: call ``go_down`` when ``faults`` says down and ``go_up`` when it is over.

    ``go_up`` is expected to retry (or raise) if it cannot listen again.
    """
    down = False
    while True:
        event = faults.change_event()
        if faults.is_down() and not down:
            await go_down()
            down = True
        elif not faults.is_down() and down:
            await go_up()
            down = False
        timeout = faults.down_remaining_s() if down else None
        if down and timeout is not None and timeout <= 0:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
