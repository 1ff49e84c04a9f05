"""Configuration models of the processors (work reports, lot quality and SPC, OEE, genealogy)."""

from __future__ import annotations

__all__ = [
    "CharacteristicConfig",
    "ComponentScanConfig",
    "ControlLimits",
    "CounterConfig",
    "GenealogyConfig",
    "LotQualityConfig",
    "OeeConfig",
    "ProcessorConfig",
    "SpcConfig",
    "StateCategory",
    "TagRef",
    "Trigger",
    "WorkReportConfig",
]

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gateway.config.common import ConfigModel, Name, PositiveSeconds

NelsonRule = Annotated[int, Field(ge=1, le=8)]
ALL_RULES = [1, 2, 3, 4, 5, 6, 7, 8]

TagRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*/[A-Za-z0-9_][^/+#\s]*$")]
"""A tag by its id: ``device/tag`` (``M1/GoodCount``)."""


class Trigger(StrEnum):
    """Events that close a work-report segment and emit a completion."""

    ORDER_CHANGE = "order_change"
    LOT_CHANGE = "lot_change"
    CONTAINER_FULL = "container_full"
    SHIFT_END = "shift_end"


class CounterConfig(ConfigModel):
    """A PLC part counter."""

    tag: TagRef
    rollover: Annotated[int, Field(ge=2)] | None = None
    """The counter wraps to 0 at this value (65536 for 16 bits); from the tag's type when unset."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"tag": data} if isinstance(data, str) else data


class WorkReportConfig(ConfigModel):
    """Turns a machine's counters and order/lot tags into completion documents."""

    type: Literal["work_report"]
    name: Name | None = None
    """Unique processor name (``work_report.<machine>`` when not set); keys its saved state."""
    machine: Name
    """The machine (work unit) reported on; usually the device name."""
    work_center: str | None = None
    """The ERP work centre; the machine name when not set."""
    good: CounterConfig
    scrap: CounterConfig | None = None
    rework: CounterConfig | None = None
    order: TagRef
    """Tag holding the current order number (empty when no order is active)."""
    operation: TagRef | None = None
    material: TagRef | None = None
    lot: TagRef | None = None
    unit: str = "EA"
    """Unit of measure of the quantities (ERP's unit, ``EA`` = each)."""
    triggers: list[Trigger] = Field(
        default_factory=lambda: [Trigger.ORDER_CHANGE, Trigger.LOT_CHANGE]
    )
    container_quantity: Annotated[int, Field(ge=1)] | None = None
    """Good parts per container, for the ``container_full`` trigger."""
    checkpoint_interval: PositiveSeconds = 5.0
    """Seconds between two saves of the running totals (documents are always saved at once)."""

    @property
    def key(self) -> str:
        return self.name or f"work_report.{self.machine}"

    @model_validator(mode="after")
    def _check_container(self) -> WorkReportConfig:
        if Trigger.CONTAINER_FULL in self.triggers and self.container_quantity is None:
            raise ValueError("the container_full trigger needs container_quantity")
        return self


class ControlLimits(ConfigModel):
    """Fixed control limits of a characteristic's chart (instead of a baseline period).

    Give `center` and `sigma` (the within-subgroup standard deviation of single measurements,
    as from R̄/d₂ or MR̄/1.128), or the chart's own `ucl` and `lcl` (`center` then defaults to
    their midpoint).
    """

    center: float | None = None
    """Centre line of the plotted points (the process mean)."""
    sigma: Annotated[float, Field(gt=0)] | None = None
    """Within-subgroup sigma of single measurements; the chart uses sigma / sqrt(subgroup)."""
    ucl: float | None = None
    lcl: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ControlLimits:
        if self.sigma is not None:
            if self.center is None:
                raise ValueError("control_limits with sigma also needs center")
            if self.ucl is not None or self.lcl is not None:
                raise ValueError("give either center and sigma, or ucl and lcl, not both")
        elif self.ucl is None or self.lcl is None:
            raise ValueError("control_limits needs center and sigma, or ucl and lcl")
        elif not self.lcl < self.ucl:
            raise ValueError("lcl must be below ucl")
        elif self.center is not None and not self.lcl < self.center < self.ucl:
            raise ValueError("center must lie between lcl and ucl")
        return self


class CharacteristicConfig(ConfigModel):
    """A measured quality characteristic, its specification and its control chart."""

    name: Name
    values: TagRef
    """A measurement tag, or with `sequence`, an array tag used as a ring buffer."""
    sequence: TagRef | None = None
    """Counter of measured parts: part number s sits in slot (s - 1) mod len(values)."""
    nominal: float | None = None
    lsl: float | None = None
    """Lower specification limit."""
    usl: float | None = None
    """Upper specification limit."""
    unit: str = ""
    subgroup: Annotated[int, Field(ge=1, le=10)] = 1
    """Measurements per plotted point: 1 = individuals / moving-range chart, 2..10 = X̄/R chart
    of consecutive measurements."""
    control_limits: ControlLimits | None = None
    """Fixed limits; when not set, they are computed from the first `baseline` points."""
    baseline: Annotated[int, Field(ge=2, le=10_000)] = 25
    """Plotted points (subgroups) that establish the control limits when none are configured."""
    rules: list[NelsonRule] = Field(default_factory=lambda: list(ALL_RULES))
    """Nelson rules that raise an SPC alarm (all eight are always evaluated and counted)."""

    @model_validator(mode="after")
    def _check_limits(self) -> CharacteristicConfig:
        if self.lsl is not None and self.usl is not None and not self.lsl < self.usl:
            raise ValueError("lsl must be below usl")
        return self


class LotQualityConfig(ConfigModel):
    """Summarises each lot's measurements and emits a lot result when the lot ends.

    Every characteristic also runs its control chart: Nelson rule violations raise SPC alarms
    and are counted in the lot result.
    """

    type: Literal["lot_quality"]
    name: Name | None = None
    machine: Name
    lot: TagRef
    order: TagRef | None = None
    material: TagRef | None = None
    characteristics: Annotated[list[CharacteristicConfig], Field(min_length=1)]
    reject_out_of_spec_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Reject the lot when more than this fraction of its measurements is out of spec."""
    hold_cpk_below: Annotated[float, Field(ge=0)] = 1.0
    """Hold the lot (for a quality engineer) when a characteristic's Cpk is below this."""
    hold_on_rules: list[NelsonRule] = Field(default_factory=lambda: [1])
    """Hold the lot when a point plotted during it violates one of these Nelson rules."""
    checkpoint_interval: PositiveSeconds = 5.0
    """Seconds between two saves of the running statistics (documents are saved at once)."""

    @property
    def key(self) -> str:
        return self.name or f"lot_quality.{self.machine}"


class SpcConfig(ConfigModel):
    """Control charts of characteristics without lot results: SPC alarms only."""

    type: Literal["spc"]
    name: Name | None = None
    machine: Name
    characteristics: Annotated[list[CharacteristicConfig], Field(min_length=1)]
    lot: TagRef | None = None
    """Optional: the lot named in alarms."""
    order: TagRef | None = None
    material: TagRef | None = None
    checkpoint_interval: PositiveSeconds = 5.0

    @property
    def key(self) -> str:
        return self.name or f"spc.{self.machine}"


class StateCategory(StrEnum):
    """What a machine state means for OEE."""

    RUNNING = "running"
    """Producing: run time."""
    MINOR_STOP = "minor_stop"
    """Blocked, starved, short stops: counted in run time, a performance loss."""
    UNPLANNED_STOP = "unplanned_stop"
    """Down (fault, jam, held): an availability loss and a downtime event."""
    PLANNED_STOP = "planned_stop"
    """Planned (maintenance, no order planned): removed from planned time; a downtime event."""


class OeeConfig(ConfigModel):
    """OEE per shift and per order, and downtime events, from a machine's state and counters."""

    type: Literal["oee"]
    name: Name | None = None
    machine: Name
    state: TagRef
    """The machine-state tag (PackML state number or the PLC's own codes)."""
    reason: TagRef | None = None
    """Stop reason code; reported with each downtime event."""
    good: CounterConfig
    scrap: CounterConfig | None = None
    rework: CounterConfig | None = None
    """Rework parts are not good: they count in total, not in good."""
    order: TagRef | None = None
    """Current order number; OEE per order needs it."""
    material: TagRef | None = None
    """Current material, to pick its ideal cycle time."""
    ideal_cycle_time: Annotated[float, Field(gt=0)] | None = None
    """Seconds per part at rated speed (for materials not in `ideal_cycle_times`)."""
    ideal_cycle_times: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Seconds per part by material number."""
    state_model: Literal["packml", "custom"] = "packml"
    """``packml``: PackML state numbers (6 Execute running, 5 Suspended minor stop, the rest
    unplanned stops); ``custom``: only `states` counts."""
    states: dict[int, StateCategory] = Field(default_factory=dict)
    """State code → category; overrides the model's mapping."""
    reasons: dict[int, StateCategory] = Field(default_factory=dict)
    """Reason code → category while the machine is not running (``301: planned_stop`` turns
    "no order" into planned time)."""
    unknown_state: StateCategory = StateCategory.UNPLANNED_STOP
    """Category of state codes not in the mapping."""
    min_downtime: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    """Stops shorter than this many seconds count in the times but raise no downtime event."""
    checkpoint_interval: PositiveSeconds = 5.0

    @property
    def key(self) -> str:
        return self.name or f"oee.{self.machine}"

    @model_validator(mode="after")
    def _check_ideal(self) -> OeeConfig:
        if self.ideal_cycle_time is None and not self.ideal_cycle_times:
            raise ValueError("set ideal_cycle_time (seconds per part) or ideal_cycle_times")
        if self.ideal_cycle_times and self.material is None and self.ideal_cycle_time is None:
            raise ValueError("ideal_cycle_times by material needs the material tag")
        if self.state_model == "custom" and not self.states:
            raise ValueError("state_model custom needs the states mapping")
        return self


class ComponentScanConfig(ConfigModel):
    """A tag holding the lot number of a consumed component (a scanner, the PLC's feeder)."""

    tag: TagRef
    material: str = ""
    """The component's material number, when the tag is dedicated to one material."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"tag": data} if isinstance(data, str) else data


class GenealogyConfig(ConfigModel):
    """Lot genealogy: each produced lot's order, machine, time window, consumed component lots
    and process values, stored in SQLite (``<data_dir>/genealogy.db``) for backward and forward
    queries."""

    type: Literal["genealogy"]
    name: Name | None = None
    machine: Name
    lot: TagRef
    order: TagRef | None = None
    operation: TagRef | None = None
    material: TagRef | None = None
    components: list[ComponentScanConfig] = Field(default_factory=list)
    """Scan tags: every new non-empty value while a lot runs is a consumed component lot."""
    process: list[TagRef] = Field(default_factory=list)
    """Process tags whose min / mean / max over each lot are recorded (numeric tags)."""
    checkpoint_interval: PositiveSeconds = 5.0

    @property
    def key(self) -> str:
        return self.name or f"genealogy.{self.machine}"


ProcessorConfig = Annotated[
    WorkReportConfig | LotQualityConfig | SpcConfig | OeeConfig | GenealogyConfig,
    Field(discriminator="type"),
]
