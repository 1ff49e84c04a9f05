"""Scenario: the static description of a simulated production line.

A scenario says which machines exist, which orders each machine works through (order number,
operation, material, quantity, lot size), how long the pauses between lots and orders last,
how often random downtimes and blocked/starved periods happen, when PLCs restart, and the
counter values the PLCs start with. It holds no runtime state; :class:`simulators.plant.Plant`
runs it. All times are in **scenario seconds**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

__all__ = [
    "MATERIAL_LENGTH",
    "OPERATION_LENGTH",
    "ORDER_LENGTH",
    "MachineSpec",
    "MeasurementSpec",
    "OrderSpec",
    "Scenario",
    "ScenarioError",
]

#: Field lengths in characters, as in the Modbus register map (docs/simulators.md).
ORDER_LENGTH = 16
OPERATION_LENGTH = 4
MATERIAL_LENGTH = 16
LOT_LENGTH = 10


class ScenarioError(ValueError):
    """A scenario is inconsistent (bad lengths, probabilities, names...)."""


def _check_text(what: str, value: str, max_length: int) -> None:
    if not value:
        raise ScenarioError(f"{what}: must not be empty")
    if len(value) > max_length:
        raise ScenarioError(f"{what}: {value!r} is longer than {max_length} characters")
    if not value.isascii() or not value.isprintable():
        raise ScenarioError(f"{what}: {value!r} must be printable ASCII")


def _check_probability(what: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ScenarioError(f"{what}: {value} is not a probability in [0, 1]")


def _check_range(what: str, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not 0.0 <= low <= high:
        raise ScenarioError(f"{what}: ({low}, {high}) must satisfy 0 <= low <= high")


@dataclass(frozen=True)
class OrderSpec:
    """One production order (operation) to run on a machine.

    The order is made in lots of ``lot_size`` parts (the last lot takes the remainder). A lot
    size counts every part made, good and scrap.
    """

    order: str
    operation: str
    material: str
    quantity: int
    lot_size: int
    unit: str = "PCE"

    def __post_init__(self) -> None:
        _check_text("order", self.order, ORDER_LENGTH)
        _check_text("operation", self.operation, OPERATION_LENGTH)
        _check_text("material", self.material, MATERIAL_LENGTH)
        _check_text("unit", self.unit, 8)
        if self.quantity <= 0:
            raise ScenarioError(f"order {self.order}: quantity must be > 0")
        if self.lot_size <= 0:
            raise ScenarioError(f"order {self.order}: lot size must be > 0")
        if len(self.lot_sizes()) > 99:
            raise ScenarioError(f"order {self.order}: more than 99 lots")

    def lot_sizes(self) -> tuple[int, ...]:
        """Parts per lot, in production order."""
        full, rest = divmod(self.quantity, self.lot_size)
        return (self.lot_size,) * full + ((rest,) if rest else ())

    def lot_number(self, index: int) -> str:
        """The lot (batch) number of the ``index``-th lot (0-based), at most 10 characters."""
        return f"L{self.order[-7:]}{index + 1:02d}"


@dataclass(frozen=True)
class MachineSpec:
    """One machine of the line and the work it gets."""

    name: str
    orders: tuple[OrderSpec, ...]
    cycle_time_s: float = 2.0
    initial_good: int = 0
    initial_scrap: int = 0
    initial_meas_seq: int = 0
    plc_restarts_s: tuple[float, ...] = ()
    #: probability, after each part, of an unplanned stop (Held, reason 100..103)
    downtime_probability: float = 0.002
    #: probability, after each part, of a blocked/starved period (Suspended, reason 200/201)
    blocked_probability: float = 0.002

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.isascii():
            raise ScenarioError(f"machine name {self.name!r} must be an ASCII identifier")
        if not self.orders:
            raise ScenarioError(f"machine {self.name}: needs at least one order")
        if not 60.0 / 120.0 <= self.cycle_time_s <= 60.0:
            raise ScenarioError(f"machine {self.name}: cycle time must be 0.5 to 60 s")
        for what, value in (
            ("initial_good", self.initial_good),
            ("initial_scrap", self.initial_scrap),
            ("initial_meas_seq", self.initial_meas_seq),
        ):
            if not 0 <= value < 2**32:
                raise ScenarioError(f"machine {self.name}: {what} must fit in 32 bits")
        if any(t < 0 for t in self.plc_restarts_s):
            raise ScenarioError(f"machine {self.name}: PLC restart times must be >= 0")
        _check_probability(f"machine {self.name}: downtime_probability", self.downtime_probability)
        _check_probability(f"machine {self.name}: blocked_probability", self.blocked_probability)
        if self.downtime_probability + self.blocked_probability > 1.0:
            raise ScenarioError(f"machine {self.name}: stop probabilities add up to more than 1")
        orders = [o.order for o in self.orders]
        if len(set(orders)) != len(orders):
            raise ScenarioError(f"machine {self.name}: duplicate order numbers")


@dataclass(frozen=True)
class MeasurementSpec:
    """The measured characteristic (a diameter in mm) and its tool-wear drift."""

    nominal: float = 10.000
    lower_spec: float = 9.950
    upper_spec: float = 10.050
    sigma: float = 0.008
    #: mean shift per part since the start of the lot (tool wear); reset at each lot change
    drift_per_part: float = 0.00015
    #: probability that a part within spec is still scrap (other defects)
    extra_scrap_probability: float = 0.01

    def __post_init__(self) -> None:
        if not self.lower_spec < self.nominal < self.upper_spec:
            raise ScenarioError("measurement: need lower_spec < nominal < upper_spec")
        if self.sigma <= 0:
            raise ScenarioError("measurement: sigma must be > 0")
        _check_probability("measurement: extra_scrap_probability", self.extra_scrap_probability)


@dataclass(frozen=True)
class Scenario:
    """A production line and its work. Build one with :meth:`demo`, :meth:`endless` or by hand."""

    name: str
    machines: tuple[MachineSpec, ...]
    line: str = "Line1"
    changeover_s: float = 120.0
    lot_change_s: float = 30.0
    downtime_s: tuple[float, float] = (30.0, 120.0)
    blocked_s: tuple[float, float] = (15.0, 60.0)
    #: a scheduled PLC restart stops a running machine this long (Held, reason 102)
    plc_restart_s: float = 30.0
    measurement: MeasurementSpec = field(default_factory=MeasurementSpec)
    #: process values (temperature, pressure, speed) are sampled this often
    process_interval_s: float = 5.0
    #: after its order list, a machine starts over with new order numbers (forever)
    repeat_orders: bool = False

    def __post_init__(self) -> None:
        if not self.line.isidentifier() or not self.line.isascii():
            raise ScenarioError(f"line name {self.line!r} must be an ASCII identifier")
        if not self.machines:
            raise ScenarioError("a scenario needs at least one machine")
        if len(self.machines) > 247:
            raise ScenarioError("at most 247 machines (Modbus unit ids)")
        names = [m.name for m in self.machines]
        if len(set(names)) != len(names):
            raise ScenarioError("duplicate machine names")
        if self.changeover_s <= 0 or self.lot_change_s <= 0 or self.plc_restart_s <= 0:
            raise ScenarioError("changeover, lot change and PLC restart must last > 0 s")
        _check_range("downtime_s", self.downtime_s)
        _check_range("blocked_s", self.blocked_s)
        if not math.isfinite(self.process_interval_s) or self.process_interval_s <= 0:
            raise ScenarioError("process_interval_s must be > 0")

    def machine(self, name: str) -> MachineSpec:
        """The machine called ``name``; :class:`KeyError` if there is none."""
        for spec in self.machines:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def order_for(self, machine: MachineSpec, index: int) -> OrderSpec | None:
        """The ``index``-th order (0-based) of ``machine``, or None when it has no more work.

        In an endless scenario the order list repeats with fresh order numbers.
        """
        count = len(machine.orders)
        if index < count:
            return machine.orders[index]
        if not self.repeat_orders:
            return None
        machine_number = self.machines.index(machine) + 1
        template = machine.orders[index % count]
        return replace(template, order=f"9{index:06d}{machine_number:03d}")

    @classmethod
    def by_name(cls, name: str) -> Scenario:
        """``"demo"`` or ``"endless"``; :class:`ScenarioError` otherwise."""
        if name == "demo":
            return cls.demo()
        if name == "endless":
            return cls.endless()
        raise ScenarioError(f"unknown scenario {name!r} (choose demo or endless)")

    @classmethod
    def demo(cls) -> Scenario:
        """Three machines, three orders of two lots each; about 40 s of real time at speed 60.

        ``M1``'s 16-bit good counter starts at 65 400 so that it wraps during the first order;
        ``M2``'s PLC restarts half-way through.
        """

        def orders(
            base: int, operation: str, lots: tuple[tuple[int, int], ...]
        ) -> tuple[OrderSpec, ...]:
            return tuple(
                OrderSpec(
                    order=str(base + k),
                    operation=operation,
                    material=f"FG-{4711 + k}",
                    quantity=first + second,
                    lot_size=first,
                )
                for k, (first, second) in enumerate(lots)
            )

        return cls(
            name="demo",
            machines=(
                MachineSpec(
                    name="M1",
                    orders=orders(1000101, "0010", ((160, 150), (150, 150), (160, 150))),
                    initial_good=65400,
                ),
                MachineSpec(
                    name="M2",
                    orders=orders(1000201, "0020", ((150, 150), (160, 150), (150, 150))),
                    cycle_time_s=2.0,
                    plc_restarts_s=(1250.0,),
                ),
                MachineSpec(
                    name="M3",
                    orders=orders(1000301, "0030", ((170, 160), (160, 160), (170, 160))),
                    cycle_time_s=1.875,
                    initial_good=1200,
                    initial_scrap=17,
                    initial_meas_seq=1217,
                ),
            ),
        )

    @classmethod
    def endless(cls) -> Scenario:
        """The demo line, but orders keep coming (for exploring and soak tests)."""
        demo = cls.demo()
        machines = tuple(replace(m, plc_restarts_s=()) for m in demo.machines)
        return replace(demo, name="endless", machines=machines, repeat_orders=True)
