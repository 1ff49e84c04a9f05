"""The supervisor: runs each device, output and dispatcher as a task and restarts failures.

A component is an async callable that runs until cancelled. When it raises, the supervisor logs
the error with the component's name, calls its `on_failure` hook (drivers mark their tags bad
there), waits a capped exponential backoff with full jitter, and starts it again. A component
that ran for longer than `stable_after` seconds before failing starts again from the initial
delay. This is the only retry loop in the gateway: libraries' own reconnect logic is turned off.
"""

from __future__ import annotations

__all__ = ["Backoff", "Supervisor"]

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        cap = min(self.maximum, self.initial * self.multiplier**self.attempt)
        self.attempt += 1
        return self.rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class _Component:
    name: str
    run: Callable[[], Awaitable[None]]
    on_failure: Callable[[BaseException], Awaitable[None] | None] | None
    backoff: Backoff
    task: asyncio.Task[None] | None = None
    failures: int = 0
    last_error: str = ""


class Supervisor:
    """Owns the long-running tasks of a gateway."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_after: float = 30.0,
    ) -> None:
        self._metrics = metrics
        self._initial = initial_backoff
        self._maximum = max_backoff
        self._stable_after = stable_after
        self._components: dict[str, _Component] = {}

    def start(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        on_failure: Callable[[BaseException], Awaitable[None] | None] | None = None,
    ) -> None:
        """Run `run()` as the component `name`, restarting it when it raises."""
        if name in self._components:
            raise ValueError(f"component {name!r} is already supervised")
        component = _Component(name, run, on_failure, Backoff(self._initial, self._maximum))
        component.task = asyncio.create_task(self._keep_running(component), name=name)
        self._components[name] = component

    def status(self) -> dict[str, dict[str, object]]:
        """Per component: running, failures, last error (for the API and the demo)."""
        return {
            name: {
                "running": c.task is not None and not c.task.done(),
                "failures": c.failures,
                "last_error": c.last_error,
            }
            for name, c in self._components.items()
        }

    async def stop(self, *names: str) -> None:
        """Cancel the named components (all when none given) and wait for them to end."""
        chosen = [self._components[n] for n in names] if names else list(self._components.values())
        tasks = [c.task for c in chosen if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for c in chosen:
            self._components.pop(c.name, None)

    async def _keep_running(self, component: _Component) -> None:
        while True:
            started = time.monotonic()
            try:
                await component.run()
                log.warning("%s ended without error; starting it again", component.name)
                error: BaseException | None = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the one place that catches everything: log and restart
                error = exc
                component.failures += 1
                component.last_error = f"{type(exc).__name__}: {exc}"
                self._metrics.component_restarts.labels(component.name).inc()
                log.error(
                    "%s failed: %s",
                    component.name,
                    component.last_error,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            if time.monotonic() - started > self._stable_after:
                component.backoff.reset()
            if error is not None and component.on_failure is not None:
                try:
                    outcome = component.on_failure(error)
                    if outcome is not None:
                        await outcome
                except Exception:
                    log.exception("%s: failure hook raised", component.name)
            await asyncio.sleep(component.backoff.next_delay())
