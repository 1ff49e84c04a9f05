"""A circuit breaker per destination: stop sending while the target is down.

*Closed*: deliveries go out. After `failures` consecutive retryable failures (timeouts,
refused connections, 5xx, 429) it *opens*: nothing is sent for `open_for` seconds. Then it is
*half-open*: one probe goes out; success closes it, failure opens it again for twice as long
(up to `max_open_for`). A Retry-After from the target opens it at once for that long (up to an
hour): the target asked the whole client to wait, not one document. A refused document (4xx)
counts as success here: the target is up.
"""

from __future__ import annotations

__all__ = ["BreakerState", "CircuitBreaker"]

from enum import IntEnum

from gateway.config.destinations import BreakerPolicy

_MAX_RETRY_AFTER_S = 3600.0


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Pure state machine; times are nanoseconds of the dispatcher's clock."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_until_ns = 0
        self._open_s = policy.open_for
        self.opened = 0
        """How many times it opened (for logs and tests)."""

    def state(self, now_ns: int) -> BreakerState:
        if self._state is BreakerState.OPEN and now_ns >= self._open_until_ns:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def remaining_s(self, now_ns: int) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state(now_ns) is not BreakerState.OPEN:
            return 0.0
        return (self._open_until_ns - now_ns) / 1e9

    def success(self) -> bool:
        """Record a delivery that reached the target; True if this closed an open breaker."""
        reopened = self._state is not BreakerState.CLOSED
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_s = self._policy.open_for
        return reopened

    def failure(self, now_ns: int, retry_after_s: float | None = None) -> bool:
        """Record a retryable failure; True if this opened the breaker."""
        self._failures += 1
        state = self.state(now_ns)
        wait: float | None = None
        if retry_after_s is not None and retry_after_s > 0:
            wait = min(retry_after_s, _MAX_RETRY_AFTER_S)
        if state is BreakerState.HALF_OPEN:
            self._open_s = min(self._open_s * 2, self._policy.max_open_for)
            wait = max(wait or 0.0, self._open_s)
        elif self._failures >= self._policy.failures:
            wait = max(wait or 0.0, self._open_s)
        if wait is None:
            return False
        was_open = state is BreakerState.OPEN
        self._state = BreakerState.OPEN
        self._open_until_ns = max(self._open_until_ns, now_ns + int(wait * 1e9))
        if not was_open:
            self.opened += 1
        return not was_open
