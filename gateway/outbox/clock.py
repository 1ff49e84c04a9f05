"""The dispatchers' clock: wall time, or a faster one for tests of long outages.

Retry times, circuit-breaker timers and schedules are computed and stored in this clock's
nanoseconds; :meth:`Clock.real_seconds` converts a wait in clock seconds into the real seconds
to sleep. :class:`ScaledClock` runs `factor` times faster than real time, so a 60 s outage
scenario takes 6 s of wall time at factor 10 with every delay in the same proportion.
"""

from __future__ import annotations

__all__ = ["SYSTEM_CLOCK", "Clock", "ScaledClock", "SystemClock"]

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Now, in nanoseconds since the epoch (this clock's)."""
        ...

    def real_seconds(self, seconds: float) -> float:
        """How many real seconds `seconds` of this clock take."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now_ns(self) -> int:
        return time.time_ns()

    def real_seconds(self, seconds: float) -> float:
        return seconds


class ScaledClock:
    """A clock `factor` times faster than real time, starting at the real time of creation."""

    def __init__(self, factor: float) -> None:
        if factor <= 0:
            raise ValueError("factor must be > 0")
        self.factor = factor
        self._origin = time.time_ns()

    def now_ns(self) -> int:
        return self._origin + int((time.time_ns() - self._origin) * self.factor)

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.factor


SYSTEM_CLOCK = SystemClock()
