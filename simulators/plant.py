"""The plant: a line of simulated machines on a scenario clock.

A :class:`Plant` runs a :class:`~simulators.scenario.Scenario`. Its clock runs ``speed`` times
faster than real time; an asyncio task advances it about every 20 ms (``async with plant:`` or
:meth:`Plant.start` / :meth:`Plant.stop`). :meth:`Plant.advance` moves it by hand, which tests
use to step through a whole scenario in milliseconds. Given a seed, what the machines make
does not depend on how time is sliced: each machine is a discrete-event model with its own
random generator (see :mod:`simulators.machine`).

Servers read :meth:`Plant.snapshot` (a frozen value, replaced when something changes) and
get each tick's news through :meth:`Plant.add_listener`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from simulators.service import Service

from .machine import Machine
from .model import MachineSnapshot, PartEvent, Segment
from .scenario import Scenario

__all__ = [
    "Plant",
    "PlantUpdate",
    "TruthSegment",
    "UnknownMachineError",
    "iso_utc",
]

#: real seconds between two ticks of the plant task
TICK_S = 0.02


class UnknownMachineError(LookupError):
    """No machine of that name (or Modbus unit id) in the scenario."""


def iso_utc(moment: datetime) -> str:
    """``2026-11-22T05:03:00.123Z``: ISO 8601, UTC, milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class TruthSegment:
    """What one machine really made for one (order, operation, material, lot)."""

    machine: str
    order: str
    operation: str
    material: str
    lot: str
    unit: str
    good: int
    scrap: int
    #: scenario seconds since the plant started
    start_s: float
    end_s: float
    #: scenario time, ISO 8601 UTC
    start: str
    end: str
    #: wall-clock time, ISO 8601 UTC
    start_wall: str
    end_wall: str
    #: True once the lot is finished (no more parts will be added)
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PlantUpdate:
    """What happened in one tick (or one command)."""

    version: int
    time_s: float
    #: every part made, in scenario-time order per machine
    parts: tuple[PartEvent, ...]
    #: machines whose snapshot changed
    machines: tuple[str, ...]


Listener = Callable[[PlantUpdate], None]


class Plant(Service):
    """A production line on a scenario clock.

    Example::

        async with Plant(Scenario.demo(), speed=60.0, seed=1) as plant:
            while not plant.finished:
                await asyncio.sleep(0.1)
            print(plant.truth_json())
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        speed: float = 60.0,
        seed: int = 1,
        *,
        tick_s: float = TICK_S,
    ) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be > 0, got {speed}")
        self.scenario = scenario if scenario is not None else Scenario.demo()
        self.speed = speed
        self.seed = seed
        self._tick_s = tick_s
        self._machines = {
            spec.name: Machine(self.scenario, spec, unit_id, seed)
            for unit_id, spec in enumerate(self.scenario.machines, start=1)
        }
        self._by_unit = {m.unit_id: m for m in self._machines.values()}
        self._time_s = 0.0
        self._version = 0
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._epoch = datetime.now(UTC)
        self._wall_anchor = self._epoch
        self._wall_anchor_s = 0.0
        self._finished = asyncio.Event()

    # ------------------------------------------------------------------ queries
    @property
    def line(self) -> str:
        return self.scenario.line

    @property
    def machines(self) -> tuple[str, ...]:
        """Machine names; the k-th (1-based) is Modbus unit id k."""
        return tuple(self._machines)

    @property
    def time_s(self) -> float:
        """Scenario seconds since the start."""
        return self._time_s

    @property
    def version(self) -> int:
        """Incremented whenever any machine's values change."""
        return self._version

    @property
    def finished(self) -> bool:
        """True when every machine is done with its orders (never in an endless scenario)."""
        return all(m.done for m in self._machines.values())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def machine_name(self, unit_id: int) -> str:
        """The machine behind Modbus unit id ``unit_id``."""
        try:
            return self._by_unit[unit_id].name
        except KeyError:
            raise UnknownMachineError(f"no machine with unit id {unit_id}") from None

    def snapshot(self, machine: str) -> MachineSnapshot:
        return self._machine(machine).snapshot()

    def snapshots(self) -> dict[str, MachineSnapshot]:
        return {name: m.snapshot() for name, m in self._machines.items()}

    def scenario_datetime(self, time_s: float) -> datetime:
        """The scenario clock's date and time at ``time_s`` (the epoch is the plant's start)."""
        return self._epoch + timedelta(seconds=time_s)

    def wall_datetime(self, time_s: float) -> datetime:
        """When (real time) the scenario clock reads / read ``time_s``."""
        return self._wall_anchor + timedelta(seconds=(time_s - self._wall_anchor_s) / self.speed)

    def truth(self) -> dict[str, tuple[TruthSegment, ...]]:
        """Per machine, one segment per (order, operation, material, lot) really made."""
        return {
            name: tuple(self._truth_segment(s) for s in machine.segments())
            for name, machine in self._machines.items()
        }

    def truth_json(self) -> dict[str, Any]:
        """:meth:`truth` as JSON-able data, plus the clock and whether the plant is finished."""
        return {
            "line": self.line,
            "time_s": self._time_s,
            "time": iso_utc(self.scenario_datetime(self._time_s)),
            "finished": self.finished,
            "machines": {
                name: [s.as_dict() for s in segments] for name, segments in self.truth().items()
            },
        }

    def state_json(self) -> dict[str, Any]:
        """Every machine's state, order, lot and counters (the control API's ``/state``)."""
        machines = {}
        for name, s in self.snapshots().items():
            machines[name] = {
                "unit_id": s.unit_id,
                "state": s.state,
                "reason": s.reason,
                "order": s.order,
                "operation": s.operation,
                "material": s.material,
                "lot": s.lot,
                "good_count": s.good_count16,
                "good_count32": s.good_count,
                "scrap_count": s.scrap_count,
                "meas_seq": s.meas_seq,
                "speed_setpoint": s.speed_setpoint,
            }
        return {
            "line": self.line,
            "time_s": self._time_s,
            "time": iso_utc(self.scenario_datetime(self._time_s)),
            "speed": self.speed,
            "running": self.running,
            "finished": self.finished,
            "machines": machines,
        }

    # ------------------------------------------------------------------ commands
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns a function that removes it.

        Listeners run inside the plant's tick and must not block.
        """
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def restart_plc(self, machine: str) -> None:
        """Restart ``machine``'s PLC now: counters to 0, order and lot unchanged."""
        self._machine(machine).restart_plc()
        self._publish((), (machine,))

    def set_speed_setpoint(self, machine: str, parts_per_minute: float) -> None:
        """Raises :class:`~simulators.machine.SetpointError` outside 1.0 to 120.0."""
        self._machine(machine).set_speed_setpoint(parts_per_minute)
        self._publish((), (machine,))

    def advance(self, seconds: float) -> PlantUpdate | None:
        """Move the scenario clock forward by ``seconds`` (scenario time)."""
        return self.advance_to(self._time_s + seconds)

    def advance_to(self, time_s: float) -> PlantUpdate | None:
        """Simulate up to scenario time ``time_s``; returns the update if anything changed."""
        if time_s <= self._time_s:
            return None
        parts: list[PartEvent] = []
        changed = tuple(name for name, m in self._machines.items() if m.advance_to(time_s, parts))
        self._time_s = time_s
        if not changed:
            return None
        return self._publish(tuple(parts), changed)

    async def wait_finished(self) -> None:
        """Wait until :attr:`finished` (use with a timeout)."""
        await self._finished.wait()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the clock task (idempotent)."""
        if self.running:
            return
        now = datetime.now(UTC)
        if self._time_s == 0.0:
            self._epoch = now
        self._wall_anchor, self._wall_anchor_s = now, self._time_s
        self._task = asyncio.create_task(self._run(), name="plant-clock")

    async def stop(self) -> None:
        """Stop the clock task; the plant keeps its state."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ internals
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start_loop, start_s = loop.time(), self._time_s
        ticks = 0
        while True:
            ticks += 1
            self.advance_to(start_s + (loop.time() - start_loop) * self.speed)
            # sleep to the next tick boundary so that ticks do not drift
            await asyncio.sleep(max(0.0, start_loop + ticks * self._tick_s - loop.time()))

    def _machine(self, name: str) -> Machine:
        try:
            return self._machines[name]
        except KeyError:
            raise UnknownMachineError(f"no machine {name!r} (have {self.machines})") from None

    def _publish(self, parts: tuple[PartEvent, ...], machines: tuple[str, ...]) -> PlantUpdate:
        self._version += 1
        update = PlantUpdate(self._version, self._time_s, parts, machines)
        for listener in list(self._listeners):
            listener(update)
        if self.finished:
            self._finished.set()
        return update

    def _truth_segment(self, s: Segment) -> TruthSegment:
        return TruthSegment(
            machine=s.machine,
            order=s.order,
            operation=s.operation,
            material=s.material,
            lot=s.lot,
            unit=s.unit,
            good=s.good,
            scrap=s.scrap,
            start_s=s.start_s,
            end_s=s.end_s,
            start=iso_utc(self.scenario_datetime(s.start_s)),
            end=iso_utc(self.scenario_datetime(s.end_s)),
            start_wall=iso_utc(self.wall_datetime(s.start_s)),
            end_wall=iso_utc(self.wall_datetime(s.end_s)),
            complete=s.complete,
        )
